// The endpoints overview: one row per endpoint with its state, workers and last-minute
// traffic, each number over a sparkline of its last 15 minutes. Refreshed every 5 s.

import { get, poll, series } from './api.js';
import { sparkline } from './charts.js';
import { announceError, fill, h, pill } from './dom.js';
import * as fmt from './format.js';

const REFRESH_MS = 5000;

/** Pending requests plus async jobs: everything waiting for a worker. */
export function queueDepth(point) {
  return (point.pending || 0) + (point.async_jobs || 0);
}

/** The mode pill, with the flags that matter more than the mode when set. */
export function statePills(endpoint) {
  return [
    pill(endpoint.mode, endpoint.mode, modeTitle(endpoint.mode)),
    endpoint.panicking ? pill('panicking', 'panic', 'a burst above the panic threshold') : null,
    endpoint.restarting ? pill('restarting', 'restarting', 'a rolling restart is under way') : null,
  ];
}

function modeTitle(mode) {
  return {
    auto: 'autoscaled',
    manual: 'worker count pinned by hand',
    stopped: 'stopped by an operator: requests get 503',
  }[mode];
}

/** Column definitions: the current value and the history of one metric. */
const METRICS = [
  {
    head: 'Workers', label: 'Ready workers',
    now: (e) => `${e.workers.ready} / ${e.workers.desired}`,
    detail: (e) => workerDetail(e.workers),
    past: (p) => p.ready, format: (v) => fmt.number(v),
  },
  { head: 'In flight', label: 'Requests in flight', now: (e) => fmt.number(e.inflight), past: (p) => p.inflight, format: (v) => fmt.number(v) },
  { head: 'Requests/s', label: 'Requests per second', now: (e) => fmt.rate(lastMinute(e).rps), past: (p) => p.rps, format: fmt.rate },
  { head: 'Errors', label: 'Error rate (5xx)', now: (e) => fmt.percent(lastMinute(e).error_rate), past: (p) => p.error_rate, format: fmt.percent },
  { head: 'p95', label: 'p95 latency', now: (e) => fmt.ms(lastMinute(e).p95_ms), past: (p) => p.p95_ms, format: fmt.ms },
  {
    head: 'Queue', label: 'Queue depth (pending and async jobs)',
    now: (e) => fmt.number(queueDepth(e)),
    detail: (e) => (e.async_jobs === null ? null : `${e.pending} held · ${e.async_jobs} async`),
    past: queueDepth, format: (v) => fmt.number(v),
  },
];

export function lastMinute(endpoint) {
  return endpoint.last_minute || { rps: null, error_rate: null, p95_ms: null };
}

function workerDetail(workers) {
  const parts = [];
  if (workers.starting) parts.push(`${workers.starting} starting`);
  if (workers.draining) parts.push(`${workers.draining} draining`);
  if (workers.failed) parts.push(`${workers.failed} failed`);
  return parts.length ? parts.join(' · ') : null;
}

export function mount(root) {
  const tbody = h('tbody');
  const note = h('p', { class: 'hint', hidden: true });
  const updated = h('p', { class: 'hint', 'aria-live': 'off' });
  const table = h('table', { class: 'table endpoints-table' },
    h('caption', { class: 'visually-hidden', text: 'Endpoints, with the last minute of traffic and 15-minute sparklines' }),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col', text: 'Endpoint' }),
      h('th', { scope: 'col', text: 'State' }),
      METRICS.map((m) => h('th', { scope: 'col', class: 'num', text: m.head })))),
    tbody);
  root.append(h('section', { class: 'page' },
    h('div', { class: 'page-head' },
      h('div', {},
        h('h1', { text: 'Endpoints' }),
        h('p', { class: 'subtitle', text: 'Every endpoint of this Portico. Numbers are over the last minute; the lines show the last 15 minutes.' })),
      updated),
    h('div', { class: 'card table-card' }, table),
    note));

  const rows = new Map();

  async function refresh(signal) {
    const [list, history, alerts] = await Promise.all([
      get('/admin/endpoints', signal),
      series('/admin/series?minutes=15', signal),
      get('/admin/alerts', signal).catch(() => ({ alerts: [] })),
    ]);
    note.hidden = history !== null;
    note.textContent = 'This Portico does not keep a 15-minute history (/admin/series): the charts stay empty.';
    const pointsOf = new Map((history ? history.endpoints : []).map((s) => [s.endpoint, s.points]));
    const firing = new Map();
    for (const alert of alerts.alerts) {
      if (alert.state === 'firing') firing.set(alert.endpoint, (firing.get(alert.endpoint) || 0) + 1);
    }
    const seen = new Set();
    for (const stale of tbody.querySelectorAll('tr:not([data-endpoint])')) stale.remove();
    for (const endpoint of list.endpoints) {
      seen.add(endpoint.id);
      let row = rows.get(endpoint.id);
      if (!row) {
        row = makeRow(endpoint.id);
        rows.set(endpoint.id, row);
      }
      tbody.append(row.tr); // keeps the API's order; moving a node keeps its focus state
      row.update(endpoint, pointsOf.get(endpoint.id) || [], firing.get(endpoint.id) || 0);
    }
    for (const [id, row] of rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        rows.delete(id);
      }
    }
    if (!list.endpoints.length) {
      fill(tbody, h('tr', {}, h('td', { colspan: 2 + METRICS.length, class: 'empty-row', text: 'No endpoints are configured.' })));
    }
    updated.textContent = `Updated ${fmt.clock(new Date().toISOString())}`;
  }

  const poller = poll(refresh, REFRESH_MS, (error) => announceError(`Could not load the endpoints: ${error.message}`));
  return () => poller.stop();
}

function makeRow(id) {
  const href = `#/endpoints/${encodeURIComponent(id)}`;
  const link = h('a', { href, class: 'endpoint-link', text: id });
  const sub = h('div', { class: 'cell-sub' });
  const state = h('td', { class: 'state-cell' });
  const cells = METRICS.map(() => h('td', { class: 'num metric-cell' }));
  const tr = h('tr', { class: 'clickable', dataset: { endpoint: id } },
    h('th', { scope: 'row' }, link, sub), state, cells);
  // The whole row opens the endpoint; the link alone is what the keyboard reaches.
  tr.addEventListener('click', (event) => {
    if (!event.target.closest('a, button')) location.hash = href;
  });
  return {
    tr,
    update(endpoint, points, firing) {
      fill(sub, `${endpoint.project} · ${endpoint.kind}`);
      fill(state,
        h('div', { class: 'pills' }, statePills(endpoint),
          firing ? pill('firing', `${firing} alert${firing > 1 ? 's' : ''}`) : null),
        h('div', { class: 'cell-sub', text: endpoint.reason }));
      const times = points.map((p) => Date.parse(p.time));
      METRICS.forEach((metric, i) => {
        const detail = metric.detail ? metric.detail(endpoint) : null;
        fill(cells[i],
          h('div', { class: 'metric-now', text: metric.now(endpoint) }),
          sparkline(times, points.map(metric.past), { label: `${id} ${metric.label}`, format: metric.format }),
          detail ? h('div', { class: 'cell-sub', text: detail }) : null);
      });
    },
  };
}
