// Number, duration and time formatting, in one place so every page reads the same.

const DASH = '—';

export function number(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return DASH;
  return value.toLocaleString(undefined, {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

/** Requests per second: two decimals below 10, one below 100, whole above. */
export function rate(value) {
  if (value === null || value === undefined) return DASH;
  return number(value, value < 10 ? 2 : value < 100 ? 1 : 0);
}

export function percent(fraction) {
  if (fraction === null || fraction === undefined) return DASH;
  return `${number(fraction * 100, fraction > 0 && fraction < 0.1 ? 2 : 1)} %`;
}

export function ms(value) {
  if (value === null || value === undefined) return DASH;
  return value >= 10000 ? `${number(value / 1000, 1)} s` : `${number(value, value < 10 ? 1 : 0)} ms`;
}

/** A duration in seconds as "3 s", "4 min 10 s", "2 h 5 min", "3 d 4 h". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return DASH;
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function bytes(value) {
  if (value === null || value === undefined) return DASH;
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = value;
  let unit = 0;
  while (v >= 1024 && unit < units.length - 1) {
    v /= 1024;
    unit += 1;
  }
  return `${number(v, unit === 0 || v >= 100 ? 0 : 1)} ${units[unit]}`;
}

/** Local wall-clock time, e.g. "14:03:07". */
export function clock(iso) {
  if (!iso) return DASH;
  return new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
}

/** Local date and time, e.g. "Nov 24, 14:03:07". */
export function dateTime(iso) {
  if (!iso) return DASH;
  return new Date(iso).toLocaleString([], {
    month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false,
  });
}

/** "12 s ago", "5 min ago": how long before now. */
export function ago(iso) {
  if (!iso) return DASH;
  const seconds = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 60) return `${Math.floor(seconds)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}
