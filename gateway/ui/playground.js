// The playground: chat completions against an endpoint's data listener, straight from the
// browser. The project token stays in memory (the input and one variable): it is never
// stored and never sent to the admin API. The data listener is another origin, so the
// endpoint's cors_origins must admit this console's origin.

import { endpointUrls, get } from './api.js';
import { announce, copyButton, fill, h, nextId } from './dom.js';
import * as fmt from './format.js';
import { readEvents } from './sse.js';
import { FORMATS } from './snippets.js';

// The project token, kept so that it survives a visit to another page of the console (not
// a reload: it is never written to storage).
let rememberedToken = '';

// Sampling settings: range and number input side by side, with the request key they set.
const SETTINGS = [
  { key: 'max_tokens', label: 'Max tokens', min: 1, max: 4096, step: 1, value: 256, hint: 'Longest answer, in tokens.' },
  { key: 'temperature', label: 'Temperature', min: 0, max: 2, step: 0.01, value: 0.7, hint: '0 is deterministic; higher is more varied.' },
  { key: 'top_p', label: 'Top p', min: 0, max: 1, step: 0.01, value: 1, hint: 'Nucleus sampling: 1 considers every token.' },
  { key: 'top_k', label: 'Top k', min: -1, max: 200, step: 1, value: -1, hint: 'Only the k likeliest tokens; −1 is off (not sent).' },
  { key: 'repetition_penalty', label: 'Repetition penalty', min: 1, max: 2, step: 0.01, value: 1, hint: '1 is no penalty (vLLM parameter).' },
];

export function mount(root, { query }) {
  const ids = {
    endpoint: nextId('pg-endpoint'), base: nextId('pg-base'), token: nextId('pg-token'),
    model: nextId('pg-model'), models: nextId('pg-models'), system: nextId('pg-system'),
    user: nextId('pg-user'), stream: nextId('pg-stream'),
  };
  let inFlight = null; // the AbortController of the request being answered
  let endpoints = [];

  // Connection
  const endpointSelect = h('select', { id: ids.endpoint, name: 'endpoint' });
  const base = h('input', { id: ids.base, name: 'base', type: 'url', spellcheck: 'false', placeholder: 'http://host:port/project/p/endpoint/e/v1' });
  const baseHint = h('p', { class: 'hint' });
  const token = h('input', {
    id: ids.token, name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false',
    placeholder: 'ptk_…', 'aria-describedby': `${ids.token}-hint`,
  });
  token.value = rememberedToken;
  token.addEventListener('input', () => { rememberedToken = token.value; });
  const tokenHint = h('p', { class: 'hint', id: `${ids.token}-hint`, text: 'Kept in this tab’s memory only: never stored, never sent to the admin API.' });
  const model = h('input', { id: ids.model, name: 'model', type: 'text', list: ids.models, spellcheck: 'false', placeholder: 'model name' });
  const modelList = h('datalist', { id: ids.models });
  const modelHint = h('p', { class: 'hint', 'aria-live': 'polite' });
  const corsNote = h('p', { class: 'notice warn', hidden: true });

  // Sampling
  const settings = new Map();
  const sliders = SETTINGS.map((s) => slider(s, settings));
  const stream = h('input', { id: ids.stream, name: 'stream', type: 'checkbox', checked: true, role: 'switch' });

  // Messages and answer
  const system = h('textarea', { id: ids.system, name: 'system', rows: 2 });
  system.value = 'You are a helpful assistant.';
  const user = h('textarea', { id: ids.user, name: 'user', rows: 4, required: true, placeholder: 'Ask something…' });
  user.value = 'Write a short poem about load balancers.';
  const send = h('button', { type: 'submit', class: 'button button-primary', id: 'pg-send' }, 'Send');
  const stop = h('button', { type: 'button', class: 'button', id: 'pg-stop', disabled: true }, 'Stop');
  const answer = h('div', { class: 'pg-answer', id: 'pg-answer', 'aria-live': 'off', 'aria-label': 'Answer', role: 'region', tabindex: '0' });
  const answerState = h('p', { class: 'hint', role: 'status' });
  const error = h('div', { class: 'notice bad pg-error', role: 'alert', hidden: true });
  const stat = (key, label) => {
    const dd = h('dd', { dataset: { stat: key }, text: '—' });
    return { key, dd, el: h('div', {}, h('dt', { text: label }), dd) };
  };
  const stats = [
    stat('ttft', 'First token'), stat('tps', 'Tokens/s'), stat('total', 'Total time'),
    stat('prompt', 'Prompt tokens'), stat('completion', 'Completion tokens'), stat('usage_total', 'Total tokens'),
  ];
  const statOf = Object.fromEntries(stats.map((s) => [s.key, s.dd]));

  // Copy as
  let format = FORMATS[0];
  const snippet = h('pre', { class: 'snippet', tabindex: '0', 'aria-label': 'Code snippet' });
  const formatButtons = FORMATS.map((f) => h('button', {
    type: 'button', class: 'button button-small segment', 'aria-pressed': String(f === format),
    onclick: () => {
      format = f;
      formatButtons.forEach((b, i) => b.setAttribute('aria-pressed', String(FORMATS[i] === f)));
      renderSnippet();
    },
  }, f.label));

  const settingsForm = h('form', { class: 'card pg-settings', 'aria-label': 'Connection and generation settings', novalidate: true },
    h('h2', { text: 'Connection' }),
    h('div', { class: 'field' }, h('label', { for: ids.endpoint, text: 'Endpoint' }), endpointSelect),
    h('div', { class: 'field' }, h('label', { for: ids.base, text: 'Base URL' }), base, baseHint),
    corsNote,
    h('div', { class: 'field' }, h('label', { for: ids.token, text: 'Project token' }), token, tokenHint),
    h('div', { class: 'field' }, h('label', { for: ids.model, text: 'Model' }),
      h('div', { class: 'inline-field' }, model,
        h('button', { type: 'button', class: 'button button-small', onclick: () => loadModels(true) }, 'Load models')),
      modelList, modelHint),
    h('h2', { class: 'section-gap', text: 'Generation' }),
    sliders,
    h('label', { class: 'check', for: ids.stream }, stream, 'Stream the answer'));
  settingsForm.addEventListener('submit', (event) => event.preventDefault());

  const chatForm = h('form', { class: 'card pg-chat', 'aria-label': 'Messages', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: ids.system, text: 'System message' }), system),
    h('div', { class: 'field' }, h('label', { for: ids.user, text: 'User message' }), user),
    h('div', { class: 'button-row' }, send, stop, h('span', { class: 'hint', text: 'Ctrl+Enter sends' })));

  root.append(h('section', { class: 'page' },
    h('div', { class: 'page-head' }, h('div', {},
      h('h1', { text: 'Playground' }),
      h('p', { class: 'subtitle', text: 'Chat with an endpoint through Portico, as a client would: the request goes from this browser to the data listener.' }))),
    h('div', { class: 'playground' },
      settingsForm,
      h('div', { class: 'stack' },
        chatForm,
        h('div', { class: 'card pg-result' },
          h('div', { class: 'card-head' }, h('h2', { text: 'Answer' }), answerState),
          error, answer,
          h('dl', { class: 'pg-stats', 'aria-label': 'Request statistics' }, stats.map((s) => s.el))),
        h('div', { class: 'card' },
          h('div', { class: 'card-head' }, h('h2', { text: 'Copy as' }),
            h('div', { class: 'button-row' },
              h('div', { class: 'segments', role: 'group', 'aria-label': 'Snippet language' }, formatButtons),
              copyButton(() => snippet.textContent, 'Copy', 'Copy the snippet'))),
          snippet,
          h('p', { class: 'hint', text: 'Set PORTICO_TOKEN in the environment first; the token typed above is not included.' }))))));

  // --- behaviour ---

  function selectedEndpoint() {
    return endpoints.find((e) => e.id === endpointSelect.value) || null;
  }

  function chatUrl() {
    return `${base.value.trim().replace(/\/+$/, '')}/chat/completions`;
  }

  /** The JSON body of the request the form describes. */
  function requestBody() {
    const messages = [];
    if (system.value.trim()) messages.push({ role: 'system', content: system.value });
    messages.push({ role: 'user', content: user.value });
    const body = { model: model.value.trim(), messages };
    for (const s of SETTINGS) {
      const value = settings.get(s.key)();
      if (s.key === 'top_k' && value <= 0) continue; // off: let the server default apply
      body[s.key] = value;
    }
    body.stream = stream.checked;
    if (stream.checked) body.stream_options = { include_usage: true };
    return body;
  }

  function renderSnippet() {
    snippet.textContent = format.render({ baseUrl: base.value.trim().replace(/\/+$/, '') || '<base URL>', body: requestBody() });
  }

  /** Warns before sending when the endpoint's cors_origins will not admit this page. */
  function checkCors() {
    const endpoint = selectedEndpoint();
    let target = null;
    try {
      target = new URL(base.value.trim()).origin;
    } catch {
      target = null;
    }
    const origins = endpoint && endpoint.cors_origins;
    const refused = Array.isArray(origins) && target && target !== location.origin
      && !origins.includes('*') && !origins.includes(location.origin);
    corsNote.hidden = !refused;
    if (refused) {
      corsNote.textContent = `This endpoint’s cors_origins does not list this console’s origin (${location.origin}): the browser will not be allowed to read its answers. Add it to the endpoint’s cors_origins.`;
    }
  }

  function choose(id) {
    endpointSelect.value = id;
    const endpoint = selectedEndpoint();
    const urls = endpoint ? endpointUrls(endpoint) : [];
    base.value = urls.length ? `${urls[0]}/v1` : '';
    baseHint.textContent = urls.length > 1
      ? `Also served at: ${urls.slice(1).map((u) => `${u}/v1`).join(', ')}`
      : urls.length ? '' : 'Portico reports no URL for this endpoint: enter its base URL (…/project/<p>/endpoint/<e>/v1).';
    history.replaceState(null, '', `#/playground?endpoint=${encodeURIComponent(id)}`);
    checkCors();
    renderSnippet();
    loadModels(false);
  }

  let modelsFor = null; // the base URL and token the model list came from
  async function loadModels(asked) {
    const url = base.value.trim().replace(/\/+$/, '');
    if (!url) return;
    const key = `${url}\n${token.value}`;
    if (!asked && key === modelsFor) return;
    modelsFor = key;
    modelHint.textContent = 'Loading models…';
    try {
      const response = await fetch(`${url}/models`, { headers: authHeaders() });
      if (!response.ok) throw new Error(await httpError(response));
      const { data } = await response.json();
      const names = (data || []).map((m) => m.id);
      fill(modelList, names.map((name) => h('option', { value: name })));
      if (names.length && (!model.value || !names.includes(model.value))) model.value = names[0];
      modelHint.textContent = names.length
        ? `${names.length} model${names.length === 1 ? '' : 's'} served: ${names.join(', ')}`
        : 'The endpoint lists no model: type its name.';
      renderSnippet();
    } catch (failure) {
      modelsFor = null;
      modelHint.textContent = `Could not list the models (${failure instanceof TypeError ? 'network or CORS error' : failure.message}): type the model name.`;
    }
  }

  function authHeaders() {
    const value = token.value.trim();
    return value ? { Authorization: `Bearer ${value}` } : {};
  }

  /** "HTTP 401 · invalid bearer token (invalid_token)" from an OpenAI-style error body. */
  async function httpError(response) {
    const text = await response.text();
    let detail = text.trim();
    try {
      const json = JSON.parse(text);
      const e = json.error || json;
      detail = typeof e === 'string' ? e : `${e.message || text}${e.code ? ` (${e.code})` : ''}`;
    } catch {
      // not JSON: the text as it came
    }
    return `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ''}${detail ? ` · ${detail}` : ''}`;
  }

  function showError(message) {
    error.hidden = false;
    fill(error, message);
  }

  function resetAnswer() {
    error.hidden = true;
    error.replaceChildren();
    answer.replaceChildren();
    answer.classList.remove('placeholder');
    for (const s of stats) s.dd.textContent = '—';
  }

  async function run() {
    if (inFlight) return;
    if (!base.value.trim()) {
      showError('Enter the base URL of the endpoint (…/v1).');
      base.focus();
      return;
    }
    if (!user.value.trim()) {
      showError('Write a user message first.');
      user.focus();
      return;
    }
    resetAnswer();
    const url = chatUrl();
    const body = requestBody();
    const aborter = new AbortController();
    inFlight = aborter;
    send.disabled = true;
    stop.disabled = false;
    answerState.textContent = 'Waiting for the first token…';
    const text = document.createTextNode('');
    answer.append(text);
    const started = performance.now();
    let first = null;
    let chunks = 0;
    let usage = null;
    const live = () => {
      const now = performance.now();
      statOf.total.textContent = fmt.ms(now - started);
      if (first !== null) {
        statOf.ttft.textContent = fmt.ms(first - started);
        const tokens = usage ? usage.completion_tokens : chunks;
        // Tokens after the first over the time since it: the generation rate, without TTFT.
        if (tokens > 1 && now > first) statOf.tps.textContent = fmt.number((tokens - 1) / ((now - first) / 1000), 1);
      }
    };
    try {
      let response;
      try {
        response = await fetch(url, {
          method: 'POST',
          headers: { ...authHeaders(), 'Content-Type': 'application/json' },
          body: JSON.stringify(body),
          signal: aborter.signal,
        });
      } catch (failure) {
        if (failure.name === 'AbortError') throw failure;
        showError(`The browser could not reach ${url}; if the data listener is reachable, add this console’s origin (${location.origin}) to the endpoint’s cors_origins.`);
        answerState.textContent = 'Failed';
        return;
      }
      if (!response.ok) {
        showError(await httpError(response));
        answerState.textContent = 'Failed';
        statOf.total.textContent = fmt.ms(performance.now() - started);
        return;
      }
      if (body.stream) {
        answerState.textContent = 'Streaming…';
        await readEvents(response, (data) => {
          if (data === '[DONE]') return;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message || 'the stream reported an error');
          const content = chunk.choices && chunk.choices[0] && chunk.choices[0].delta
            ? chunk.choices[0].delta.content : null;
          if (content) {
            if (first === null) first = performance.now();
            chunks += 1;
            const atBottom = answer.scrollHeight - answer.scrollTop - answer.clientHeight < 30;
            text.appendData(content);
            if (atBottom) answer.scrollTop = answer.scrollHeight; // follow the text unless scrolled up
          }
          if (chunk.usage) usage = chunk.usage;
          live();
        });
      } else {
        const json = await response.json();
        const message = json.choices && json.choices[0] && json.choices[0].message;
        text.appendData((message && message.content) || '');
        usage = json.usage || null;
      }
      const total = performance.now() - started;
      statOf.total.textContent = fmt.ms(total);
      if (body.stream) live();
      else if (usage && usage.completion_tokens) {
        statOf.tps.textContent = fmt.number(usage.completion_tokens / (total / 1000), 1);
      }
      if (usage) {
        statOf.prompt.textContent = fmt.number(usage.prompt_tokens);
        statOf.completion.textContent = fmt.number(usage.completion_tokens);
        statOf.usage_total.textContent = fmt.number(usage.total_tokens);
      }
      answerState.textContent = 'Done';
      announce('The answer is complete');
    } catch (failure) {
      if (failure.name === 'AbortError') {
        answerState.textContent = 'Stopped';
        announce('Stopped');
      } else {
        showError(`The answer broke off: ${failure.message}`);
        answerState.textContent = 'Failed';
      }
      live();
    } finally {
      aborter.abort(); // a stream left unread (an error mid-way) is closed
      inFlight = null;
      send.disabled = false;
      stop.disabled = true;
    }
  }

  chatForm.addEventListener('submit', (event) => {
    event.preventDefault();
    run();
  });
  user.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      run();
    }
  });
  stop.addEventListener('click', () => inFlight && inFlight.abort());
  endpointSelect.addEventListener('change', () => choose(endpointSelect.value));
  base.addEventListener('change', () => {
    checkCors();
    loadModels(false);
  });
  token.addEventListener('change', () => loadModels(false));
  for (const form of [settingsForm, chatForm]) form.addEventListener('input', renderSnippet);

  answer.classList.add('placeholder');
  answer.textContent = 'The answer appears here.';
  renderSnippet();

  get('/admin/endpoints').then(({ endpoints: list }) => {
    endpoints = list;
    fill(endpointSelect, list.map((e) => h('option', { value: e.id, text: `${e.id} (${e.project})` })));
    if (!list.length) {
      modelHint.textContent = 'No endpoints are configured.';
      return;
    }
    const wanted = query.get('endpoint');
    choose(list.some((e) => e.id === wanted) ? wanted : list[0].id);
  }).catch((failure) => {
    if (failure.name !== 'AbortError') showError(`Could not list the endpoints: ${failure.message}`);
  });

  return () => {
    if (inFlight) inFlight.abort();
  };
}

/** A range and a number input kept in step; registers a getter for its value. */
function slider(setting, getters) {
  const id = nextId(setting.key);
  const range = h('input', {
    id, type: 'range', min: setting.min, max: setting.max, step: setting.step,
    value: String(setting.value), 'aria-describedby': `${id}-hint`,
  });
  const number = h('input', {
    type: 'number', min: setting.min, max: setting.max, step: setting.step,
    value: String(setting.value), 'aria-label': `${setting.label} value`, name: setting.key,
  });
  const off = h('span', { class: 'hint slider-off' });
  const clamp = (value) => Math.min(setting.max, Math.max(setting.min, value));
  const sync = (value) => {
    // Top k has no 0: from −1 (off) the next step up is 1.
    if (setting.key === 'top_k' && value === 0) value = Number(range.dataset.last) > 0 ? -1 : 1;
    range.value = String(value);
    range.dataset.last = String(value);
    off.textContent = setting.key === 'top_k' && value <= 0 ? 'off' : '';
  };
  range.addEventListener('input', () => {
    sync(Number(range.value));
    number.value = range.value;
  });
  number.addEventListener('input', () => {
    const value = Number(number.value);
    if (number.value !== '' && value >= setting.min && value <= setting.max) sync(value);
  });
  number.addEventListener('change', () => {
    const value = Number(number.value);
    if (number.value === '' || !Number.isFinite(value)) sync(setting.value);
    else if (value < setting.min || value > setting.max) sync(clamp(value));
    number.value = range.value;
    number.dispatchEvent(new Event('input', { bubbles: true })); // the snippet follows
  });
  sync(setting.value);
  getters.set(setting.key, () => Number(range.value));
  return h('div', { class: 'field slider' },
    h('div', { class: 'slider-head' }, h('label', { for: id, text: setting.label }), off),
    h('div', { class: 'slider-row' }, range, number),
    h('p', { class: 'hint', id: `${id}-hint`, text: setting.hint }));
}
