// Hand-drawn SVG charts: a sparkline for table cells, a time line chart with a hover
// read-out, and a stacked bar chart. Each is role="img" with an aria-label that says in
// words what the picture shows. Colours come from console.css classes (series-N) or, for
// the open-ended caller palette, from PALETTE.

import { clock } from './format.js';

const NS = 'http://www.w3.org/2000/svg';
const WINDOW_MS = 15 * 60 * 1000;
export const PALETTE = ['#2563eb', '#16a34a', '#d97706', '#9333ea', '#dc2626', '#0891b2', '#64748b'];

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) el.setAttribute(key, String(value));
  }
  for (const child of children) if (child) el.append(child);
  return el;
}

/** The smallest of `steps` × 10^n that is ≥ value. */
function roundUp(value, steps) {
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of steps) {
    if (value <= step * magnitude) return step * magnitude;
  }
  return 10 * magnitude;
}

/**
 * The top of an axis with four gridline steps: a round number ≥ value. Counts (integer)
 * get whole-number steps, so a chart of 0–2 workers does not read 0.5, 1.5.
 */
function axisTop(value, integer = false, minTop = 0) {
  const v = Math.max(value, minTop);
  if (!(v > 0)) return integer ? 4 : 1;
  // Steps of 0.25, 0.5, 1 or 2 × 10^n: axis labels need at most two more decimals.
  if (!integer) return roundUp(v, [1, 2, 4, 8, 10]);
  return v <= 40 ? Math.max(4, Math.ceil(v / 4) * 4) : roundUp(v / 4, [1, 2, 5, 10]) * 4;
}

/** Polyline point lists for runs of non-null values (a null is a gap in the line). */
function segments(points, x, y) {
  const runs = [];
  let run = [];
  for (const p of points) {
    if (p.v === null || p.v === undefined || Number.isNaN(p.v)) {
      if (run.length) runs.push(run);
      run = [];
    } else {
      run.push(`${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`);
    }
  }
  if (run.length) runs.push(run);
  return runs;
}

/** An axis label: as many decimals as the step needs, then the unit. */
function tickLabel(value, step, unit) {
  let decimals = 0;
  while (decimals < 6 && Math.abs(step * 10 ** decimals - Math.round(step * 10 ** decimals)) > 1e-9) {
    decimals += 1;
  }
  return `${value.toLocaleString(undefined, { minimumFractionDigits: decimals, maximumFractionDigits: decimals })}${unit}`;
}

/** A polyline, or a dot for a lone sample (a one-point line would not show). */
function line(run, cls) {
  if (run.length > 1) return svg('polyline', { class: cls, points: run.join(' ') });
  const [cx, cy] = run[0].split(',');
  return svg('circle', { class: `${cls} dot`, cx, cy, r: 1.5 });
}

function numbers(values) {
  return values.filter((v) => v !== null && v !== undefined && !Number.isNaN(v));
}

/** Words for a screen reader: latest, peak and average of a series. */
function summary(values, format) {
  const present = numbers(values);
  if (!present.length) return 'no data yet';
  const peak = Math.max(...present);
  const mean = present.reduce((a, b) => a + b, 0) / present.length;
  return `now ${format(present[present.length - 1])}, peak ${format(peak)}, average ${format(mean)}`;
}

/**
 * A tiny line over the last 15 minutes (x by time, so a short history sits at the right).
 * `times` are epoch milliseconds, `values` numbers or null.
 */
export function sparkline(times, values, { label, format = String, width = 100, height = 26 }) {
  const el = svg('svg', {
    class: 'sparkline', viewBox: `0 0 ${width} ${height}`, width, height,
    role: 'img', 'aria-label': `${label}, last 15 minutes: ${summary(values, format)}`,
  });
  const present = numbers(values);
  // The whole window's baseline, so a short history reads as "recent", not as "all".
  el.append(svg('line', {
    class: present.length ? 'spark-base' : 'spark-empty', x1: 0, x2: width, y1: height - 1, y2: height - 1,
  }));
  if (!present.length) return el;
  const end = times[times.length - 1];
  const top = Math.max(...present) || 1;
  const x = (t) => ((t - (end - WINDOW_MS)) / WINDOW_MS) * (width - 2) + 1;
  const y = (v) => height - 2 - (v / top) * (height - 4);
  const points = times.map((t, i) => ({ t, v: values[i] }));
  for (const run of segments(points, x, y)) el.append(line(run, 'spark-line'));
  return el;
}

/**
 * A line chart of one or more series over the last 15 minutes, with axes, a legend and a
 * hover read-out. Create once, then update() with new data; the element stays in place.
 */
export class LineChart {
  constructor({ title, format = String, unit = '', integer = false, minTop = 0, width = 560, height = 190 }) {
    this.title = title;
    this.unit = unit;
    this.integer = integer;
    this.minTop = minTop;
    this.format = format;
    this.width = width;
    this.height = height;
    this.pad = { left: 62, right: 12, top: 10, bottom: 22 };
    this.svg = svg('svg', {
      class: 'chart', viewBox: `0 0 ${width} ${height}`, role: 'img',
      preserveAspectRatio: 'xMidYMid meet',
    });
    this.readout = document.createElement('div');
    this.readout.className = 'chart-readout';
    this.readout.hidden = true;
    this.legend = document.createElement('ul');
    this.legend.className = 'chart-legend';
    const heading = document.createElement('h3');
    heading.className = 'chart-title';
    heading.textContent = title;
    const frame = document.createElement('div');
    frame.className = 'chart-frame';
    frame.append(this.svg, this.readout);
    this.el = document.createElement('figure');
    this.el.className = 'chart-card';
    this.el.append(heading, frame, this.legend);
    this.svg.addEventListener('mousemove', (event) => this.hover(event));
    this.svg.addEventListener('mouseleave', () => this.unhover());
    this.update([], []);
  }

  /** `times`: epoch ms, oldest first; `series`: [{ name, values, dashed? }]. */
  update(times, series) {
    this.times = times;
    this.series = series;
    const { width, height, pad } = this;
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const end = times.length ? times[times.length - 1] : Date.now();
    const start = end - WINDOW_MS;
    const all = series.flatMap((s) => numbers(s.values));
    const top = axisTop(all.length ? Math.max(...all) : 0, this.integer, this.minTop);
    this.x = (t) => pad.left + ((t - start) / WINDOW_MS) * plotW;
    this.y = (v) => pad.top + plotH - (v / top) * plotH;
    this.start = start;

    const parts = [];
    for (let i = 0; i <= 4; i += 1) {
      const value = (top * i) / 4;
      const y = this.y(value);
      parts.push(svg('line', { class: 'grid', x1: pad.left, x2: width - pad.right, y1: y, y2: y }));
      const text = svg('text', { class: 'axis', x: pad.left - 6, y: y + 4, 'text-anchor': 'end' });
      text.textContent = tickLabel(value, top / 4, this.unit);
      parts.push(text);
    }
    for (const minutes of [15, 10, 5, 0]) {
      const text = svg('text', {
        class: 'axis', x: this.x(end - minutes * 60000), y: height - 6,
        'text-anchor': minutes === 15 ? 'start' : minutes === 0 ? 'end' : 'middle',
      });
      text.textContent = minutes ? `−${minutes} min` : 'now';
      parts.push(text);
    }
    series.forEach((s, index) => {
      const points = times.map((t, i) => ({ t, v: s.values[i] }));
      for (const run of segments(points, this.x, this.y)) {
        parts.push(line(run, `line series-${index}${s.dashed ? ' dashed' : ''}`));
      }
    });
    if (!all.length) {
      const text = svg('text', {
        class: 'empty', x: pad.left + plotW / 2, y: pad.top + plotH / 2, 'text-anchor': 'middle',
      });
      text.textContent = 'no data yet';
      parts.push(text);
    }
    this.cursor = svg('line', { class: 'cursor', y1: pad.top, y2: pad.top + plotH, visibility: 'hidden' });
    parts.push(this.cursor);
    this.svg.replaceChildren(...parts);

    const words = series.map((s) => `${s.name}: ${summary(s.values, this.format)}`).join('; ');
    this.svg.setAttribute('aria-label', `${this.title}, last 15 minutes. ${words || 'no data yet'}`);
    this.legend.replaceChildren(...(series.length > 1 ? series.map((s, index) => {
      const item = document.createElement('li');
      const swatch = document.createElement('span');
      swatch.className = `swatch series-${index}${s.dashed ? ' dashed' : ''}`;
      item.append(swatch, s.name);
      return item;
    }) : []));
    if (!this.readout.hidden && this.lastHover) this.hover(this.lastHover);
  }

  /** Shows the values at the sample nearest the pointer. */
  hover(event) {
    this.lastHover = event;
    if (!this.times.length) return;
    const box = this.svg.getBoundingClientRect();
    const scale = this.width / box.width;
    const px = (event.clientX - box.left) * scale;
    let best = 0;
    for (let i = 1; i < this.times.length; i += 1) {
      if (Math.abs(this.x(this.times[i]) - px) < Math.abs(this.x(this.times[best]) - px)) best = i;
    }
    const cx = this.x(this.times[best]);
    this.cursor.setAttribute('x1', cx);
    this.cursor.setAttribute('x2', cx);
    this.cursor.setAttribute('visibility', 'visible');
    const when = clock(new Date(this.times[best]).toISOString());
    const values = this.series.map((s) => `${s.name} ${this.format(s.values[best])}`);
    this.readout.textContent = `${when} · ${values.join(' · ')}`;
    this.readout.hidden = false;
  }

  unhover() {
    this.lastHover = null;
    this.readout.hidden = true;
    if (this.cursor) this.cursor.setAttribute('visibility', 'hidden');
  }
}

/**
 * Stacked bars: one bar per label, one stack per series (e.g. requests per hour by
 * caller). `stacks`: [{ name, values }], coloured from PALETTE in order.
 */
export function stackedBars({ title, labels, stacks, format = String, width = 1100, height = 230 }) {
  const pad = { left: 52, right: 8, top: 10, bottom: 26 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const totals = labels.map((_, i) => stacks.reduce((sum, s) => sum + (s.values[i] || 0), 0));
  const top = axisTop(Math.max(0, ...totals), true);
  const y = (v) => pad.top + plotH - (v / top) * plotH;
  const slot = plotW / Math.max(labels.length, 1);
  const barW = Math.max(2, Math.min(40, slot * 0.7));
  const grand = totals.reduce((a, b) => a + b, 0);
  const busiest = totals.indexOf(Math.max(...totals));
  const words = grand
    ? `${format(grand)} in total; busiest ${labels[busiest]} with ${format(totals[busiest])}; `
      + stacks.map((s) => `${s.name} ${format(s.values.reduce((a, b) => a + b, 0))}`).join(', ')
    : 'no requests in this period';
  const el = svg('svg', {
    class: 'chart bars', viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': `${title}: ${words}`,
  });
  for (let i = 0; i <= 4; i += 1) {
    const value = (top * i) / 4;
    el.append(svg('line', { class: 'grid', x1: pad.left, x2: width - pad.right, y1: y(value), y2: y(value) }));
    const text = svg('text', { class: 'axis', x: pad.left - 6, y: y(value) + 4, 'text-anchor': 'end' });
    text.textContent = tickLabel(value, top / 4, '');
    el.append(text);
  }
  // Label every bar when they fit, else every n-th.
  const every = Math.ceil(labels.length / Math.floor(plotW / 44));
  labels.forEach((label, i) => {
    const x = pad.left + slot * i + (slot - barW) / 2;
    let base = 0;
    stacks.forEach((s, k) => {
      const v = s.values[i] || 0;
      if (v > 0) {
        const rect = svg('rect', {
          x, width: barW, y: y(base + v), height: Math.max(1, y(base) - y(base + v)),
          fill: PALETTE[k % PALETTE.length],
        });
        const tip = svg('title');
        tip.textContent = `${label} · ${s.name}: ${format(v)}`;
        rect.append(tip);
        el.append(rect);
      }
      base += v;
    });
    // Counted back from the newest bar, so that the current hour is always labelled.
    if ((labels.length - 1 - i) % every === 0) {
      const text = svg('text', { class: 'axis', x: x + barW / 2, y: height - 8, 'text-anchor': 'middle' });
      text.textContent = label;
      el.append(text);
    }
  });
  if (!grand) {
    const text = svg('text', { class: 'empty', x: pad.left + plotW / 2, y: pad.top + plotH / 2, 'text-anchor': 'middle' });
    text.textContent = 'no requests in this period';
    el.append(text);
  }
  return el;
}
