// Small DOM helpers shared by every page: element building, pills, status messages,
// clipboard. Everything is built with DOM calls (never innerHTML with data), so values
// from the API cannot inject markup.

/**
 * Builds an element. `attrs`: `class`, `text`, `on<event>` handlers, `dataset`, boolean
 * properties (`disabled`, `checked`, `hidden`, …), `value`, anything else as an attribute.
 * Children may be nodes, strings, numbers, arrays, or null/false (skipped).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key in PROPERTIES) el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

// Set as properties: their attribute only gives the initial state.
const PROPERTIES = { value: 1, checked: 1, disabled: 1, hidden: 1, selected: 1, open: 1 };

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// Which colour a state gets: green is serving, amber is on its way, red needs a look.
const TONES = {
  ready: 'good', healthy: 'good', auto: 'good', ok: 'good',
  starting: 'warn', draining: 'warn', manual: 'info', pending: 'warn', unhealthy: 'warn',
  restarting: 'warn', panicking: 'warn',
  failed: 'bad', stopped: 'bad', ejected: 'bad', firing: 'bad',
  // The tones themselves, for callers that pick one directly.
  good: 'good', warn: 'warn', bad: 'bad', info: 'info',
};

/** A coloured status pill: `pill('ready')`, or with another label. */
export function pill(state, label = state, title) {
  return h('span', { class: `pill pill-${TONES[state] || 'neutral'}`, title }, label ?? '—');
}

let statusTimer;

/** Tells the user something happened (polite live region, fades after a while). */
export function announce(message) {
  show(document.getElementById('status'), message);
}

/** Tells the user something failed (assertive live region). */
export function announceError(message) {
  show(document.getElementById('alert'), message);
}

function show(region, message) {
  region.textContent = message;
  region.classList.add('visible');
  clearTimeout(statusTimer);
  statusTimer = setTimeout(() => {
    for (const r of document.querySelectorAll('.toasts > div')) r.classList.remove('visible');
  }, 6000);
}

/**
 * Copies text. `navigator.clipboard` exists only in secure contexts (https, localhost),
 * and a console reached over plain http on another host is not one: fall back to a
 * selected textarea and the legacy copy command.
 */
async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // permission refused: try the fallback
    }
  }
  const area = h('textarea', { class: 'offscreen', 'aria-hidden': 'true', readonly: true });
  area.value = text;
  document.body.append(area);
  area.select();
  let copied = false;
  try {
    copied = document.execCommand('copy');
  } catch {
    copied = false;
  }
  area.remove();
  return copied;
}

/** A "Copy" button for `getText()`, announcing the outcome. */
export function copyButton(getText, label = 'Copy', ariaLabel) {
  return h('button', {
    type: 'button',
    class: 'button button-small',
    'aria-label': ariaLabel,
    onclick: async () => {
      const ok = await copyText(getText());
      if (ok) announce('Copied to the clipboard');
      else announceError('Could not copy: select the text and press Ctrl+C');
    },
  }, label);
}

let uid = 0;

/** A unique element id, for label `for` and aria references. */
export function nextId(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}
