// The Status tab of an endpoint: 15-minute charts, the worker replicas and the alert rules
// watching the endpoint.

import { get, poll, series } from './api.js';
import { LineChart } from './charts.js';
import { announceError, fill, h, pill } from './dom.js';
import * as fmt from './format.js';
import { queueDepth } from './overview.js';

const SERIES_MS = 5000;
const ALERTS_MS = 5000;

export function mount(panel, ctx) {
  const charts = {
    rps: new LineChart({ title: 'Requests per second', format: fmt.rate }),
    p95: new LineChart({ title: 'p95 latency', format: fmt.ms, unit: ' ms', minTop: 100 }),
    inflight: new LineChart({ title: 'In flight and queued', format: (v) => fmt.number(v), integer: true }),
    workers: new LineChart({ title: 'Workers', format: (v) => fmt.number(v), integer: true }),
  };
  const chartNote = h('p', { class: 'hint', hidden: true });
  const workersBody = h('tbody');
  const alertsBody = h('div');

  panel.append(h('div', { class: 'stack' },
    h('div', { class: 'grid-2 charts' }, Object.values(charts).map((c) => c.el)),
    chartNote,
    h('div', { class: 'card table-card' },
      h('div', { class: 'card-head padded' }, h('h2', { text: 'Workers' })),
      h('table', { class: 'table' },
        h('caption', { class: 'visually-hidden', text: 'Worker replicas' }),
        h('thead', {}, h('tr', {},
          ['Replica', 'State', 'Health', 'Address', 'PID'].map((t) => h('th', { scope: 'col', text: t })),
          ['In flight', 'Uptime', 'Restarts'].map((t) => h('th', { scope: 'col', class: 'num', text: t })))),
        workersBody)),
    h('div', { class: 'card' }, h('h2', { text: 'Alerts' }), alertsBody)));

  const unsubscribe = ctx.subscribe((endpoint) => renderWorkers(workersBody, endpoint));

  const seriesPoller = poll(async (signal) => {
    const answer = await series(`${ctx.path}/series?minutes=15`, signal);
    chartNote.hidden = answer !== null;
    chartNote.textContent = 'This Portico does not keep a 15-minute history (/admin/series): the charts stay empty.';
    const points = answer ? answer.points : [];
    const times = points.map((p) => Date.parse(p.time));
    const pick = (key) => points.map((p) => p[key]);
    charts.rps.update(times, [{ name: 'requests/s', values: pick('rps') }]);
    charts.p95.update(times, [{ name: 'p95', values: pick('p95_ms') }]);
    charts.inflight.update(times, [
      { name: 'in flight', values: pick('inflight') },
      { name: 'queued (held + async)', values: points.map(queueDepth), dashed: true },
    ]);
    charts.workers.update(times, [
      { name: 'ready', values: pick('ready') },
      { name: 'desired', values: pick('desired'), dashed: true },
    ]);
  }, SERIES_MS, (error) => announceError(`Could not load the history: ${error.message}`));

  const alertsPoller = poll(async (signal) => {
    const { alerts } = await get('/admin/alerts', signal);
    renderAlerts(alertsBody, alerts.filter((a) => a.endpoint === ctx.id));
  }, ALERTS_MS, (error) => announceError(`Could not load the alerts: ${error.message}`));

  return () => {
    unsubscribe();
    seriesPoller.stop();
    alertsPoller.stop();
  };
}

function renderWorkers(tbody, endpoint) {
  const replicas = endpoint.workers.replicas;
  if (!replicas.length) {
    const why = endpoint.kind === 'static'
      ? 'Static workers: Portico does not run them, so there are no replicas to show.'
      : endpoint.kind === 'command'
        ? `Workers run elsewhere (scale_command); ${endpoint.workers.ready} found and ready.`
      : endpoint.mode === 'stopped' ? 'Stopped: no workers run.' : 'No workers run now (scaled to zero).';
    fill(tbody, h('tr', {}, h('td', { colspan: 8, class: 'empty-row', text: why })));
    return;
  }
  fill(tbody, replicas.map((r) => h('tr', { dataset: { replica: r.id, state: r.state } },
    h('th', { scope: 'row', text: `#${r.id}` }),
    h('td', {}, pill(r.state)),
    h('td', {}, r.health ? pill(r.health) : '—'),
    h('td', {}, h('code', { text: r.address || '—' })),
    h('td', { text: r.pid ?? '—' }),
    h('td', { class: 'num', text: fmt.number(r.inflight) }),
    h('td', { class: 'num', text: fmt.duration(r.uptime_seconds) }),
    h('td', { class: 'num', text: fmt.number(r.restarts) }))));
}

const METRIC_NAMES = {
  error_rate: 'error rate', p95_latency_ms: 'p95 latency (ms)', pending_requests: 'held requests',
  async_queue_depth: 'async queue depth', ready_workers: 'ready workers', worker_restarts: 'worker restarts',
};

function alertValue(alert, value) {
  if (value === null || value === undefined) return 'no data';
  if (alert.metric === 'error_rate') return fmt.percent(value);
  if (alert.metric === 'p95_latency_ms') return fmt.ms(value);
  return fmt.number(value, value % 1 ? 2 : 0);
}

function renderAlerts(el, alerts) {
  if (!alerts.length) {
    fill(el, h('p', { class: 'hint', text: 'No alert rule watches this endpoint ([[alert]] in the config).' }));
    return;
  }
  fill(el, h('table', { class: 'table' },
    h('caption', { class: 'visually-hidden', text: 'Alert rules' }),
    h('thead', {}, h('tr', {}, ['Rule', 'Condition', 'State', 'Value', 'Since', 'Last notified']
      .map((t) => h('th', { scope: 'col', text: t })))),
    h('tbody', {}, alerts.map((a) => h('tr', {},
      h('th', { scope: 'row', text: a.name }),
      h('td', { text: `${METRIC_NAMES[a.metric] || a.metric} ${a.operator} ${alertValue(a, a.threshold)}${a.for_seconds ? ` for ${fmt.duration(a.for_seconds)}` : ''}` }),
      h('td', {}, pill(a.state)),
      h('td', { text: alertValue(a, a.value) }),
      h('td', { title: a.since || '', text: a.since ? fmt.ago(a.since) : 'start-up' }),
      h('td', { title: a.last_notified || '', text: a.last_notified ? fmt.ago(a.last_notified) : 'never' }))))));
}
