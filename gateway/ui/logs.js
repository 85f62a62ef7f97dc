// The Logs tab: worker process output, filtered by replica, count, age and a regular
// expression, and optionally followed live. Following reads the admin API's event stream
// with fetch (EventSource cannot send the admin token) and is aborted when the user turns
// it off, changes the query, or leaves the page.

import { adminFetch, errorOf } from './api.js';
import { announce, fill, h, nextId } from './dom.js';
import * as fmt from './format.js';
import { readEvents } from './sse.js';

const KEEP = 5000; // lines kept on screen; older ones are dropped

export function mount(panel, ctx) {
  const ids = {
    replica: nextId('replica'), lines: nextId('lines'), since: nextId('since'),
    filter: nextId('filter'), follow: nextId('follow'),
  };
  const replica = h('select', { id: ids.replica, name: 'replica' }, h('option', { value: '', text: 'All replicas' }));
  const lines = h('input', { id: ids.lines, name: 'lines', type: 'number', min: 1, max: 10000, step: 1, value: '200' });
  const since = h('input', { id: ids.since, name: 'since_seconds', type: 'number', min: 1, step: 1, placeholder: 'any age' });
  const filter = h('input', {
    id: ids.filter, name: 'filter', type: 'text', placeholder: 'e.g. error|panic', spellcheck: 'false',
    'aria-describedby': `${ids.filter}-error`,
  });
  const follow = h('input', { id: ids.follow, name: 'follow', type: 'checkbox', role: 'switch' });
  const error = h('p', { class: 'field-error', id: `${ids.filter}-error`, role: 'alert' });
  const state = h('span', { class: 'hint log-state' });
  const view = h('div', {
    class: 'log-view', role: 'log', 'aria-label': 'Worker output', tabindex: '0', 'aria-live': 'off',
  });
  const form = h('form', { class: 'log-controls', 'aria-label': 'Log query', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: ids.replica, text: 'Replica' }), replica),
    h('div', { class: 'field' }, h('label', { for: ids.lines, text: 'Lines' }), lines),
    h('div', { class: 'field' }, h('label', { for: ids.since, text: 'Since (seconds)' }), since),
    h('div', { class: 'field grow' }, h('label', { for: ids.filter, text: 'Filter (regular expression)' }), filter),
    h('div', { class: 'button-row log-buttons' },
      h('button', { type: 'submit', class: 'button button-primary' }, 'Load'),
      h('label', { class: 'check follow-toggle', for: ids.follow }, follow, 'Follow live'),
      h('button', { type: 'button', class: 'button', onclick: () => { fill(view); count(); } }, 'Clear')));

  const staticNote = h('p', {
    class: 'notice', hidden: true,
    text: 'Portico does not run these workers (static or command), so it holds none of their output.',
  });
  panel.append(h('div', { class: 'card' },
    h('div', { class: 'card-head' }, h('h2', { text: 'Worker logs' }), state),
    staticNote, form, error, view));

  let active = null; // the AbortController of the latest query (a stream while following)
  let following = false;
  let note = ''; // how the lines came: " · following", " · stream ended", …
  let pending = [];
  let flushing = false;

  function query() {
    const params = new URLSearchParams();
    if (replica.value !== '') params.set('replica', replica.value);
    params.set('lines', lines.value || '200');
    if (since.value.trim()) params.set('since_seconds', since.value.trim());
    if (filter.value) params.set('filter', filter.value);
    if (follow.checked) params.set('follow', 'true');
    return `${ctx.path}/logs?${params}`;
  }

  function count() {
    state.textContent = `${view.children.length} line${view.children.length === 1 ? '' : 's'}${note}`;
  }

  function lineEl(line) {
    return h('div', { class: `log-line ${line.stream}`, dataset: { replica: line.replica } },
      h('time', { datetime: line.time, title: fmt.dateTime(line.time), text: fmt.clock(line.time) }),
      h('span', { class: 'log-replica', text: `#${line.replica}` }),
      h('span', { class: 'log-text', text: line.line }));
  }

  // Lines are added once per frame: a follow stream can deliver hundreds at once.
  function push(line) {
    pending.push(line);
    if (flushing) return;
    flushing = true;
    requestAnimationFrame(() => {
      flushing = false;
      const atBottom = view.scrollHeight - view.scrollTop - view.clientHeight < 40;
      const fragment = document.createDocumentFragment();
      for (const l of pending) fragment.append(lineEl(l));
      pending = [];
      view.append(fragment);
      while (view.children.length > KEEP) view.firstElementChild.remove();
      if (atBottom) view.scrollTop = view.scrollHeight;
      count();
    });
  }

  /** Aborts the query or stream in flight, if any. */
  function cancel() {
    if (active) active.abort();
    active = null;
    following = false;
  }

  /** Runs the query of the form; a newer query replaces an older one still running. */
  async function load() {
    cancel();
    error.textContent = '';
    filter.removeAttribute('aria-invalid');
    const mine = new AbortController();
    active = mine;
    const streaming = follow.checked;
    try {
      const response = await adminFetch(query(), { signal: mine.signal });
      if (!response.ok) throw await errorOf(response);
      fill(view);
      pending = [];
      note = streaming ? ' · following' : '';
      if (!streaming) {
        const { lines: found } = await response.json();
        found.forEach(push);
        count();
        return;
      }
      following = true;
      count();
      announce('Following the logs');
      await readEvents(response, (data) => push(JSON.parse(data)));
      // The stream ended on the server's side (Portico stopping).
      if (active === mine) {
        following = false;
        follow.checked = false;
        note = ' · stream ended';
        count();
      }
    } catch (failure) {
      if (failure.name === 'AbortError' || active !== mine) return;
      following = false;
      follow.checked = false;
      note = '';
      error.textContent = failure.message;
      if (failure.code === 'invalid_query' && /filter/i.test(failure.message)) {
        filter.setAttribute('aria-invalid', 'true');
      }
      count();
    } finally {
      if (active === mine) active = null;
    }
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    load();
  });
  follow.addEventListener('change', () => {
    if (follow.checked) load();
    else if (active || following) {
      cancel();
      note = ' · not following';
      count();
      announce('Stopped following the logs');
    }
  });

  // The replica list follows the endpoint's replicas; a chosen one stays listed.
  const unsubscribe = ctx.subscribe((endpoint) => {
    const isStatic = endpoint.kind !== 'process';
    staticNote.hidden = !isStatic;
    follow.disabled = isStatic; // Portico refuses to follow what it does not read
    const wanted = new Set(endpoint.workers.replicas.map((r) => String(r.id)));
    if (replica.value) wanted.add(replica.value);
    const have = [...replica.options].slice(1).map((o) => o.value);
    const sorted = [...wanted].sort((a, b) => a - b);
    if (sorted.join() !== have.join()) {
      const chosen = replica.value;
      fill(replica, h('option', { value: '', text: 'All replicas' }),
        sorted.map((r) => h('option', { value: r, text: `Replica ${r}` })));
      replica.value = chosen;
    }
  });

  load();
  return () => {
    unsubscribe();
    cancel();
  };
}
