// The Events tab: the endpoint's event timeline, newest first. The newest 100 are loaded,
// then only those after the last sequence number seen are asked for every 3 s.

import { get, poll } from './api.js';
import { announceError, h, pill } from './dom.js';
import * as fmt from './format.js';

const REFRESH_MS = 3000;
const KEEP = 500;

// Green: capacity came; amber: capacity is changing; red: something stopped or broke.
const TONE = {
  started: 'good', woke: 'good', scaled_up: 'good', replica_ready: 'good', restarted: 'good',
  replica_restarted: 'good',
  restarting: 'warn', scaled_down: 'warn', replica_starting: 'warn', replica_draining: 'warn',
  stopped: 'bad', replica_crashed: 'bad', replica_stopped: 'warn',
  // Blue: an operator's order or a new configuration.
  pinned: 'info', autoscaled: 'info', updated: 'info', config_reloaded: 'info', created: 'info',
};

export function mount(panel, ctx) {
  const list = h('ol', { class: 'timeline', 'aria-label': 'Events, newest first' });
  const empty = h('p', { class: 'hint', text: 'No events yet.' });
  panel.append(h('div', { class: 'card' },
    h('div', { class: 'card-head' }, h('h2', { text: 'Events' }),
      h('p', { class: 'hint', text: 'Newest first; kept 1,000 per endpoint. New events appear as they happen.' })),
    empty, list));

  let since = 0;
  const poller = poll(async (signal) => {
    const query = since ? `since=${since}&limit=100` : 'limit=100';
    const { events } = await get(`${ctx.path}/events?${query}`, signal);
    for (const event of events) {
      since = Math.max(since, event.seq);
      list.prepend(row(event));
    }
    while (list.children.length > KEEP) list.lastElementChild.remove();
    empty.hidden = list.children.length > 0;
  }, REFRESH_MS, (error) => announceError(`Could not load the events: ${error.message}`));
  return () => poller.stop();
}

function row(event) {
  const details = [
    event.replica !== undefined && event.replica !== null ? `replica ${event.replica}` : null,
    event.workers !== undefined && event.workers !== null ? `→ ${event.workers} workers` : null,
    event.reason || null,
  ].filter(Boolean);
  return h('li', { class: 'event', dataset: { seq: event.seq, type: event.type } },
    h('time', { datetime: event.time, title: fmt.dateTime(event.time), text: fmt.clock(event.time) }),
    h('div', { class: 'event-body' },
      h('div', { class: 'event-line' }, pill(TONE[event.type] || 'neutral', event.type.replace(/_/g, ' ')),
        h('span', { text: event.message })),
      details.length ? h('div', { class: 'cell-sub', text: details.join(' · ') }) : null));
}
