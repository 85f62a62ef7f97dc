// The Access tab: requests per UTC hour by caller (project token name), as a stacked bar
// chart and tables, from …/access/hourly. Refreshed every 15 s.

import { get, poll } from './api.js';
import { PALETTE, stackedBars } from './charts.js';
import { announceError, fill, h, nextId } from './dom.js';
import * as fmt from './format.js';

const REFRESH_MS = 15000;
const SHOWN_CALLERS = 6; // the busiest get their own colour; the rest are "other callers"

export function mount(panel, ctx) {
  const selectId = nextId('hours');
  const hours = h('select', { id: selectId },
    [[6, 'Last 6 hours'], [24, 'Last 24 hours'], [48, 'Last 2 days'], [168, 'Last 7 days'], [720, 'Last 30 days']]
      .map(([value, text]) => h('option', { value, text, selected: value === 24 })));
  const chart = h('div', { class: 'bar-chart' });
  const legend = h('ul', { class: 'chart-legend' });
  const callers = h('div');
  const table = h('div', { class: 'table-scroll' });
  panel.append(h('div', { class: 'stack' },
    h('div', { class: 'card' },
      h('div', { class: 'card-head' },
        h('h2', { text: 'Requests per hour by caller' }),
        h('div', { class: 'inline-field' }, h('label', { for: selectId, text: 'Period' }), hours)),
      chart, legend,
      h('p', { class: 'hint', text: 'Callers are project token names; “anonymous” is a request without a token. Hours are UTC, shown in local time.' })),
    h('div', { class: 'card' }, h('h2', { text: 'Callers over the period' }), callers),
    h('div', { class: 'card table-card' },
      h('div', { class: 'card-head padded' }, h('h2', { text: 'Hour by hour' })), table)));

  const poller = poll(async (signal) => {
    const data = await get(`${ctx.path}/access/hourly?hours=${hours.value}`, signal);
    render(data);
  }, REFRESH_MS, (error) => announceError(`Could not load the access breakdown: ${error.message}`));
  hours.addEventListener('change', () => poller.now());

  function render(data) {
    const top = data.total.callers.slice(0, SHOWN_CALLERS).map((c) => c.caller);
    const rest = data.total.callers.length > SHOWN_CALLERS;
    const perHour = (name) => data.hours.map((hour) => {
      const found = hour.callers.find((c) => c.caller === name);
      return found ? found.requests : 0;
    });
    const stacks = top.map((name) => ({ name, values: perHour(name) }));
    if (rest) {
      stacks.push({
        name: 'other callers',
        values: data.hours.map((hour) => hour.callers
          .filter((c) => !top.includes(c.caller)).reduce((sum, c) => sum + c.requests, 0)),
      });
    }
    const labels = data.hours.map((hour) => hourLabel(hour.hour, data.hours.length > 24));
    fill(chart, stackedBars({
      title: `Requests per hour by caller, ${hours.selectedOptions[0].text.toLowerCase()}`,
      labels, stacks, format: (v) => fmt.number(v),
    }));
    fill(legend, stacks.map((s, i) => {
      const swatch = h('span', { class: 'swatch box' });
      swatch.style.background = PALETTE[i % PALETTE.length];
      return h('li', {}, swatch, s.name);
    }));
    renderCallers(callers, data.total);
    renderHours(table, data);
  }

  return () => poller.stop();
}

/** "14:00", or "Nov 24 14:00" over more than a day. */
function hourLabel(iso, withDay) {
  const date = new Date(iso);
  const time = date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', hour12: false });
  return withDay ? `${date.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${time}` : time;
}

function renderCallers(el, total) {
  if (!total.callers.length) {
    fill(el, h('p', { class: 'hint', text: 'No requests in this period.' }));
    return;
  }
  fill(el, h('table', { class: 'table' },
    h('caption', { class: 'visually-hidden', text: 'Requests by caller over the period' }),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: 'Caller' }),
      ['Requests', 'Errors (4xx+5xx)', 'Prompt tokens', 'Completion tokens'].map((t) => h('th', { scope: 'col', class: 'num', text: t })))),
    h('tbody', {}, total.callers.map((c) => h('tr', {},
      h('th', { scope: 'row', text: c.caller }),
      h('td', { class: 'num', text: fmt.number(c.requests) }),
      h('td', { class: 'num', text: fmt.number(c.errors) }),
      h('td', { class: 'num', text: fmt.number(c.prompt_tokens) }),
      h('td', { class: 'num', text: fmt.number(c.completion_tokens) }))))));
}

function summaryCells(s) {
  return [
    h('td', { class: 'num', text: fmt.number(s.requests) }),
    h('td', { class: 'num', text: fmt.number(s.errors['4xx']) }),
    h('td', { class: 'num', text: fmt.number(s.errors['5xx']) }),
    h('td', { class: 'num', text: fmt.ms(s.p50_ms) }),
    h('td', { class: 'num', text: fmt.ms(s.p95_ms) }),
    h('td', { class: 'num', text: `${fmt.bytes(s.bytes_in)} / ${fmt.bytes(s.bytes_out)}` }),
    h('td', { class: 'num', text: `${fmt.number(s.usage.prompt_tokens)} / ${fmt.number(s.usage.completion_tokens)}` }),
  ];
}

function renderHours(el, data) {
  const busy = data.hours.filter((hour) => hour.requests > 0).reverse();
  fill(el, h('table', { class: 'table' },
    h('caption', { class: 'visually-hidden', text: 'Traffic per hour, newest first' }),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col', text: 'Hour' }),
      ['Requests', '4xx', '5xx', 'p50', 'p95', 'Bytes in / out', 'Tokens prompt / completion']
        .map((t) => h('th', { scope: 'col', class: 'num', text: t })),
      h('th', { scope: 'col', text: 'Callers' }))),
    h('tbody', {}, busy.length
      ? busy.map((hour) => h('tr', {},
        h('th', { scope: 'row', text: hourLabel(hour.hour, true) }),
        summaryCells(hour),
        h('td', { class: 'callers-cell', text: hour.callers.map((c) => `${c.caller} ${fmt.number(c.requests)}`).join(', ') })))
      : h('tr', {}, h('td', { colspan: 9, class: 'empty-row', text: 'No requests in this period.' }))),
    h('tfoot', {}, h('tr', {}, h('th', { scope: 'row', text: 'Total' }), summaryCells(data.total),
      h('td', { text: `${data.total.callers.length} caller${data.total.callers.length === 1 ? '' : 's'}` })))));
}
