// The admin API client. The console is served by the admin listener, so calls are
// same-origin paths. The admin token lives in sessionStorage (this tab only, gone when it
// closes) and goes on every call; a 401 asks the user for it and retries.

const TOKEN_KEY = 'portico.adminToken';

/** An error answer of the admin API (`{"error": {"message", "type", "code", "problems"?}}`). */
export class ApiError extends Error {
  constructor(status, error = {}) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || null;
    this.problems = Array.isArray(error.problems) ? error.problems : [];
  }
}

export function adminToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setAdminToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  document.dispatchEvent(new Event('portico:token'));
}

export function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  document.dispatchEvent(new Event('portico:token'));
}

// Set by app.js: shows the token dialog and resolves once the user submitted a token.
let promptForToken = async () => {
  throw new ApiError(401, { message: 'an admin token is needed' });
};
// One dialog for every call that got a 401 at the same time.
let prompting = null;

export function onTokenNeeded(prompt) {
  promptForToken = prompt;
}

/** Asks for the admin token now (after a sign-out, or when a call was refused). */
export function askForToken(reason) {
  if (!prompting) prompting = promptForToken(reason).finally(() => { prompting = null; });
  return prompting;
}

/**
 * fetch() on the admin API with the token; on 401 asks for a token and tries again.
 * Returns the Response (any other status); `signal` aborts it, the wait included.
 */
export async function adminFetch(path, { method = 'GET', body, signal } = {}) {
  for (;;) {
    const headers = {};
    const token = adminToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
    });
    if (response.status !== 401) return response;
    const refused = await errorOf(response);
    await askForToken(refused);
    if (signal && signal.aborted) throw new DOMException('aborted', 'AbortError');
  }
}

/** The ApiError an error response carries (its JSON body, or the bare status). */
export async function errorOf(response) {
  let error;
  try {
    error = (await response.json()).error;
  } catch {
    error = undefined;
  }
  return new ApiError(response.status, error);
}

async function call(method, path, body, signal) {
  const response = await adminFetch(path, { method, body, signal });
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

export const get = (path, signal) => call('GET', path, undefined, signal);
export const post = (path, body) => call('POST', path, body);
export const patch = (path, body) => call('PATCH', path, body);

export const endpointPath = (id) => `/admin/endpoints/${encodeURIComponent(id)}`;

/**
 * The 15-minute history; null when this Portico has no `/admin/series` (an older
 * build), so pages show their charts empty instead of failing.
 */
export async function series(path, signal) {
  try {
    return await get(path, signal);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404 && error.code === 'not_found') return null;
    throw error;
  }
}

/**
 * The endpoint's base URLs as a browser elsewhere can use them: a listener bound to every
 * address (0.0.0.0, [::]) is reached by the host name this console was loaded from.
 */
export function endpointUrls(endpoint) {
  return (endpoint.urls || []).map((raw) => {
    try {
      const url = new URL(raw);
      if (url.hostname === '0.0.0.0' || url.hostname === '[::]') {
        url.hostname = location.hostname;
      }
      return url.href.replace(/\/$/, '');
    } catch {
      return raw;
    }
  });
}

/**
 * Runs `task(signal)` now and then every `ms` after it settles, until the returned stop
 * function is called (which also aborts the task in flight). Skipped while the tab is
 * hidden; runs at once when it shows again.
 */
export function poll(task, ms, onError) {
  let timer = null;
  let stopped = false;
  let controller = null;
  const run = async () => {
    timer = null;
    if (stopped) return;
    if (!document.hidden) {
      controller = new AbortController();
      try {
        await task(controller.signal);
      } catch (error) {
        if (error.name !== 'AbortError' && !stopped && onError) onError(error);
      }
    }
    if (!stopped) timer = setTimeout(run, ms);
  };
  const wake = () => {
    if (!document.hidden && timer !== null) {
      clearTimeout(timer);
      run();
    }
  };
  document.addEventListener('visibilitychange', wake);
  run();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      if (controller) controller.abort();
      document.removeEventListener('visibilitychange', wake);
    },
    /** Runs the task now (e.g. after an action changed the state). */
    now() {
      if (timer !== null) {
        clearTimeout(timer);
        run();
      }
    },
  };
}
