// The endpoint detail page: its header, URLs, key numbers and orders (scale, autoscale,
// stop, start, restart), above tabs for status, events, scaling, logs and access. The
// endpoint is polled every 2 s; the tabs get each new state through ctx.subscribe().

import { ApiError, endpointPath, endpointUrls, get, poll, post } from './api.js';
import { confirmAction } from './dialogs.js';
import { announce, announceError, copyButton, fill, h, nextId } from './dom.js';
import * as fmt from './format.js';
import { lastMinute, queueDepth, statePills } from './overview.js';
import * as statusTab from './status.js';
import * as eventsTab from './events.js';
import * as scalingTab from './scaling.js';
import * as logsTab from './logs.js';
import * as accessTab from './access.js';

const REFRESH_MS = 2000;

const TABS = [
  { id: 'status', label: 'Status', module: statusTab },
  { id: 'events', label: 'Events', module: eventsTab },
  { id: 'scaling', label: 'Scaling', module: scalingTab },
  { id: 'logs', label: 'Logs', module: logsTab },
  { id: 'access', label: 'Access', module: accessTab },
];

export function mount(root, { id, query }) {
  let endpoint = null;
  const listeners = new Set();
  const ctx = {
    id,
    path: endpointPath(id),
    endpoint: () => endpoint,
    /** Calls fn(endpoint) now (if loaded) and on every refresh; returns the unsubscribe. */
    subscribe(fn) {
      listeners.add(fn);
      if (endpoint) fn(endpoint);
      return () => listeners.delete(fn);
    },
    refresh: () => poller.now(),
  };

  const title = h('h1', { text: id });
  const pills = h('div', { class: 'pills' });
  const meta = h('p', { class: 'subtitle' });
  const urls = h('div', { class: 'urls' });
  const tiles = h('div', { class: 'tiles' });
  const actions = makeActions(ctx, (updated) => setEndpoint(updated));
  const tabList = h('div', { class: 'tabs', role: 'tablist', 'aria-label': 'Endpoint sections' });
  const panel = h('div', { class: 'tab-panel', role: 'tabpanel', tabindex: '0' });
  const missing = h('div', { class: 'notice bad', hidden: true });

  const content = h('div', {},
    h('div', { class: 'endpoint-head' },
      h('div', { class: 'endpoint-title' }, h('div', { class: 'title-row' }, title, pills), meta, urls),
      actions.el),
    tiles,
    tabList,
    panel);
  root.append(h('section', { class: 'page' },
    h('p', { class: 'crumbs' }, h('a', { href: '#/', text: 'Endpoints' }), ' / ', id),
    missing,
    content));

  const tabButtons = TABS.map((tab) => h('button', {
    type: 'button', role: 'tab', id: `tab-${tab.id}`, class: 'tab',
    'aria-controls': 'endpoint-tab-panel', onclick: () => select(tab.id, true),
    onkeydown: (event) => arrowKeys(event, tab.id),
  }, tab.label));
  panel.id = 'endpoint-tab-panel';
  tabList.append(...tabButtons);

  let unmountTab = null;
  let current = null;
  function select(tabId, focus) {
    if (tabId === current) return;
    leaveTab();
    current = tabId;
    TABS.forEach((tab, i) => {
      const active = tab.id === tabId;
      tabButtons[i].setAttribute('aria-selected', String(active));
      tabButtons[i].tabIndex = active ? 0 : -1;
      if (active && focus) tabButtons[i].focus();
    });
    panel.setAttribute('aria-labelledby', `tab-${tabId}`);
    panel.replaceChildren();
    unmountTab = TABS.find((t) => t.id === tabId).module.mount(panel, ctx);
    // Remember the tab in the address (reload, back/forward) without a new route.
    const hash = `#/endpoints/${encodeURIComponent(id)}${tabId === 'status' ? '' : `?tab=${tabId}`}`;
    if (location.hash !== hash) history.replaceState(null, '', hash);
  }
  function leaveTab() {
    if (unmountTab) unmountTab();
    unmountTab = null;
    current = null;
  }
  function arrowKeys(event, tabId) {
    const i = TABS.findIndex((t) => t.id === tabId);
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (step) select(TABS[(i + step + TABS.length) % TABS.length].id, true);
  }

  function setEndpoint(next) {
    endpoint = next;
    missing.hidden = true;
    if (content.hidden) {
      // It is back (a reload added it again): show it, from the first tab.
      content.hidden = false;
      select('status', false);
    }
    fill(pills, statePills(next));
    fill(meta, `Project ${next.project} · ${next.kind} workers · ${next.reason}`);
    renderUrls(urls, next);
    renderTiles(tiles, next);
    actions.update(next);
    for (const fn of listeners) fn(next);
  }

  const poller = poll(async (signal) => {
    try {
      setEndpoint(await get(ctx.path, signal));
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        missing.textContent = `There is no endpoint “${id}” (it may have been removed by a reload).`;
        missing.hidden = false;
        content.hidden = true;
        leaveTab(); // its tabs would only fail
        return;
      }
      throw error;
    }
  }, REFRESH_MS, (error) => announceError(`Could not load ${id}: ${error.message}`));

  const wanted = query.get('tab');
  select(TABS.some((t) => t.id === wanted) ? wanted : 'status', false);

  return () => {
    poller.stop();
    leaveTab();
  };
}

function renderUrls(el, endpoint) {
  const list = endpointUrls(endpoint);
  // Rebuilt only when they change: a refresh must not take the focus off a Copy button.
  if (el.dataset.urls === list.join(' ')) return;
  el.dataset.urls = list.join(' ');
  fill(el, list.map((url) => h('div', { class: 'url-row' },
    h('code', { class: 'url', text: url }),
    copyButton(() => url, 'Copy', `Copy ${url}`))),
  h('a', {
    class: 'button button-small', href: `#/playground?endpoint=${encodeURIComponent(endpoint.id)}`,
  }, 'Open in playground'));
}

function renderTiles(el, e) {
  const minute = lastMinute(e);
  const tile = (key, label, value, sub) => h('div', { class: 'tile', dataset: { kpi: key } },
    h('div', { class: 'tile-label', text: label }),
    h('div', { class: 'tile-value', text: value }),
    h('div', { class: 'tile-sub', text: sub || '\u00a0' }));
  const w = e.workers;
  const workerParts = [
    w.starting && `${w.starting} starting`, w.draining && `${w.draining} draining`, w.failed && `${w.failed} failed`,
  ].filter(Boolean);
  fill(el,
    tile('workers', 'Workers', `${w.ready} / ${w.desired}`,
      ['ready / desired', ...workerParts].join(' · ')),
    tile('inflight', 'In flight', fmt.number(e.inflight), `${fmt.number(e.pending)} held for a worker`),
    tile('rps', 'Requests/s', fmt.rate(minute.rps), `${fmt.number(minute.requests)} in the last minute`),
    tile('errors', 'Error rate (5xx)', fmt.percent(minute.error_rate), 'last minute'),
    tile('p95', 'p95 latency', fmt.ms(minute.p95_ms), `p50 ${fmt.ms(minute.p50_ms)}`),
    tile('queue', 'Queue depth', fmt.number(queueDepth(e)),
      e.async_jobs === null ? 'held requests' : `${e.pending} held · ${e.async_jobs} async jobs`));
}

/** The orders card. `applied(endpoint)` gets the endpoint state each order answers. */
function makeActions(ctx, applied) {
  const inputId = nextId('workers');
  const input = h('input', { id: inputId, type: 'number', min: 0, step: 1, inputmode: 'numeric' });
  let edited = false; // the user typed a count: stop overwriting it with the desired count
  input.addEventListener('input', () => { edited = true; });
  const note = h('p', { class: 'hint actions-note' });
  const error = h('p', { class: 'field-error', role: 'alert' });
  const button = (label, onclick, cls = 'button') => h('button', { type: 'button', class: cls, onclick }, label);

  const order = async (what, body, done) => {
    error.textContent = '';
    try {
      const updated = await post(`${ctx.path}/${what}`, body);
      applied(updated);
      announce(done);
      // The answer is the state as the order was taken (workers still stopping, say):
      // look again soon rather than at the next 2 s tick.
      setTimeout(ctx.refresh, 400);
      return true;
    } catch (failure) {
      error.textContent = failure.message;
      announceError(`${ctx.id}: ${failure.message}`);
      return false;
    }
  };

  const scale = button('Scale', async () => {
    const workers = Number(input.value);
    if (!Number.isInteger(workers) || workers < 0) {
      error.textContent = 'Enter a whole number of workers.';
      input.focus();
      return;
    }
    const yes = await confirmAction({
      title: `Scale ${ctx.id} to ${workers} worker${workers === 1 ? '' : 's'}?`,
      message: 'The count is pinned (mode manual) until you choose Autoscale.',
      confirm: `Scale to ${workers}`,
    });
    if (yes && await order('scale', { workers }, `${ctx.id}: scaling to ${workers} workers`)) edited = false;
  }, 'button button-primary');
  const autoscale = button('Autoscale', async () => {
    const yes = await confirmAction({
      title: `Autoscale ${ctx.id}?`,
      message: 'The pin is removed and the autoscaler chooses the worker count again.',
      confirm: 'Autoscale',
    });
    if (yes) await order('autoscale', undefined, `${ctx.id}: autoscaled`);
  });
  const restart = button('Restart', async () => {
    const yes = await confirmAction({
      title: `Restart ${ctx.id}?`,
      message: 'Every worker process is replaced, one at a time; requests keep being served.',
      confirm: 'Restart',
    });
    if (yes) await order('restart', undefined, `${ctx.id}: rolling restart started`);
  });
  const stop = button('Stop', async () => {
    const yes = await confirmAction({
      title: `Stop ${ctx.id}?`,
      message: 'Every worker is stopped and every request is answered 503 endpoint_stopped until you start the endpoint again.',
      confirm: 'Stop endpoint',
      danger: true,
    });
    if (yes) await order('stop', undefined, `${ctx.id}: stopped`);
  }, 'button button-danger');
  const start = button('Start', async () => {
    const yes = await confirmAction({
      title: `Start ${ctx.id}?`,
      message: 'The endpoint serves again, autoscaled.',
      confirm: 'Start endpoint',
    });
    if (yes) await order('start', undefined, `${ctx.id}: started`);
  }, 'button button-primary');

  const el = h('div', { class: 'card actions', role: 'group', 'aria-label': 'Orders' },
    h('div', { class: 'button-row' },
      h('label', { for: inputId, text: 'Workers' }), input, scale, autoscale, restart, stop, start),
    note, error);

  return {
    el,
    update(e) {
      const isStatic = e.kind === 'static';
      const stopped = e.mode === 'stopped';
      input.min = e.scaling.min_workers;
      input.max = e.scaling.max_workers;
      if (!edited && document.activeElement !== input) input.value = e.workers.desired;
      input.disabled = isStatic || stopped;
      scale.disabled = isStatic || stopped;
      autoscale.disabled = e.mode !== 'manual';
      // Command workers are restarted by the system that runs them.
      restart.disabled = isStatic || e.kind === 'command' || stopped || e.restarting;
      stop.disabled = stopped;
      start.disabled = !stopped;
      note.textContent = isStatic
        ? 'Static workers: their count is the configured URLs; it cannot be scaled or restarted.'
        : stopped
          ? 'Stopped: requests are answered 503. Start the endpoint to serve again.'
          : e.kind === 'command'
            ? `Scale pins a count between ${e.scaling.min_workers} and ${e.scaling.max_workers}; scale_command carries it out.`
            : `Scale pins a count between ${e.scaling.min_workers} and ${e.scaling.max_workers}.`;
    },
  };
}
