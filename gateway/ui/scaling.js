// The Scaling tab: the settings in force, editable. Saving sends only the keys that
// changed (PATCH …/scaling); Portico checks them like the config and answers every
// problem, which is shown at the top and beside the field it names.

import { ApiError, patch } from './api.js';
import { announce, fill, h, nextId } from './dom.js';

// kind: int (whole number), float, metric (select), text. Hints say what the key does.
const FIELDS = [
  { key: 'min_workers', label: 'Min workers', kind: 'int', hint: 'Kept even when idle (0 = scale to zero).' },
  { key: 'max_workers', label: 'Max workers', kind: 'int', hint: 'At least 1 and at least min workers.' },
  { key: 'metric', label: 'Metric', kind: 'metric', hint: 'What the target is measured in.' },
  { key: 'custom_metric', label: 'Custom metric', kind: 'text', hint: 'A Prometheus metric of the workers; only with metric “custom”.' },
  { key: 'target', label: 'Target per worker', kind: 'float', hint: 'Desired metric value per worker (> 0).' },
  { key: 'idle_timeout_seconds', label: 'Idle timeout (s)', kind: 'int', hint: 'Idle this long before scaling to zero.' },
  { key: 'initial_cooldown_seconds', label: 'Initial cooldown (s)', kind: 'int', hint: 'After a wake, no scale to zero before this.' },
  { key: 'stable_window_seconds', label: 'Stable window (s)', kind: 'int', hint: 'Averaging window (≥ 1).' },
  { key: 'panic_window_seconds', label: 'Panic window (s)', kind: 'int', hint: 'Burst window (1 to the stable window).' },
  { key: 'panic_threshold', label: 'Panic threshold', kind: 'float', hint: 'Burst demand, in multiples of ready workers (≥ 1).' },
  { key: 'max_pending', label: 'Max held requests', kind: 'int', hint: 'Held while no worker is ready (429 beyond).' },
  { key: 'cold_start_timeout_seconds', label: 'Cold-start timeout (s)', kind: 'int', hint: 'How long a held request waits (≥ 1).' },
  { key: 'waking_keepalive_seconds', label: 'Waking keep-alive (s)', kind: 'int', hint: 'SSE comment interval for held streams (0 = off).' },
];

export function mount(panel, ctx) {
  const problems = h('div', { class: 'problems', role: 'alert', hidden: true });
  const inputs = new Map();
  const errors = new Map();
  const fields = FIELDS.map((field) => {
    const id = nextId(field.key);
    const hintId = `${id}-hint`;
    const errorId = `${id}-error`;
    const input = field.kind === 'metric'
      ? h('select', { id, name: field.key, 'aria-describedby': `${hintId} ${errorId}` },
        ['concurrency', 'rps', 'custom'].map((m) => h('option', { value: m, text: m })))
      : h('input', {
        id, name: field.key, 'aria-describedby': `${hintId} ${errorId}`,
        type: field.kind === 'text' ? 'text' : 'number',
        step: field.kind === 'float' ? 'any' : 1,
        min: field.kind === 'text' ? undefined : 0,
        spellcheck: field.kind === 'text' ? 'false' : undefined,
      });
    input.addEventListener('input', () => {
      dirty = true;
      syncCustom();
    });
    inputs.set(field.key, input);
    const error = h('p', { class: 'field-error', id: errorId });
    errors.set(field.key, error);
    return h('div', { class: 'field' },
      h('label', { for: id, text: field.label }), input,
      h('p', { class: 'hint', id: hintId, text: field.hint }), error);
  });

  const save = h('button', { type: 'submit', class: 'button button-primary' }, 'Save changes');
  const reset = h('button', { type: 'button', class: 'button', onclick: () => { dirty = false; load(ctx.endpoint()); clearProblems(); } }, 'Discard changes');
  const form = h('form', { class: 'card', 'aria-labelledby': 'scaling-title', novalidate: true },
    h('div', { class: 'card-head' }, h('h2', { id: 'scaling-title', text: 'Scaling settings' }),
      h('p', { class: 'hint', text: 'Applied live; only changed keys are sent. A reload of the config file replaces them.' })),
    problems,
    h('div', { class: 'form-grid' }, fields),
    h('div', { class: 'button-row section-gap' }, save, reset));
  panel.append(form);

  let dirty = false;
  let settings = null;

  function syncCustom() {
    inputs.get('custom_metric').disabled = inputs.get('metric').value !== 'custom';
  }

  function load(endpoint) {
    if (!endpoint) return;
    settings = endpoint.scaling;
    const fixed = endpoint.kind === 'static';
    for (const field of FIELDS) {
      const value = settings[field.key];
      inputs.get(field.key).value = value === null || value === undefined ? '' : String(value);
    }
    syncCustom();
    // Portico refuses scaling changes on static workers (409 fixed_workers).
    save.disabled = fixed;
    if (fixed) {
      problems.hidden = false;
      fill(problems, 'Static workers: their count is the configured URLs, so these settings cannot be changed.');
    }
  }

  function clearProblems() {
    problems.hidden = true;
    problems.replaceChildren();
    for (const [key, error] of errors) {
      error.textContent = '';
      inputs.get(key).removeAttribute('aria-invalid');
    }
  }

  /** The keys whose input differs from the settings in force, parsed; or the local problems. */
  function changes() {
    const body = {};
    const local = [];
    for (const field of FIELDS) {
      const input = inputs.get(field.key);
      const raw = input.value.trim();
      let value;
      if (field.kind === 'int' || field.kind === 'float') {
        value = Number(raw);
        if (raw === '' || !Number.isFinite(value) || (field.kind === 'int' && !Number.isInteger(value))) {
          local.push([field.key, field.kind === 'int' ? 'must be a whole number' : 'must be a number']);
          continue;
        }
      } else if (field.key === 'custom_metric') {
        value = inputs.get('metric').value === 'custom' ? raw || null : null;
      } else {
        value = raw;
      }
      if (value !== settings[field.key]) body[field.key] = value;
    }
    return { body, local };
  }

  /** Shows problems: "scaling.<key>: message" lines go under their field too. */
  function showProblems(list) {
    problems.hidden = false;
    fill(problems, h('strong', { text: 'The settings were not changed:' }),
      h('ul', {}, list.map((p) => h('li', { text: p }))));
    for (const problem of list) {
      const match = /^(?:scaling\.)?([a-z_]+):\s*(.*)$/.exec(problem);
      if (match && errors.has(match[1])) {
        errors.get(match[1]).textContent = match[2];
        inputs.get(match[1]).setAttribute('aria-invalid', 'true');
      }
    }
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearProblems();
    const { body, local } = changes();
    if (local.length) {
      showProblems(local.map(([key, message]) => `${key}: ${message}`));
      return;
    }
    if (!Object.keys(body).length) {
      announce('Nothing changed');
      return;
    }
    save.disabled = true;
    try {
      const endpoint = await patch(`${ctx.path}/scaling`, body);
      dirty = false;
      load(endpoint);
      announce(`Scaling settings saved: ${Object.keys(body).join(', ')}`);
      ctx.refresh();
    } catch (error) {
      showProblems(error instanceof ApiError && error.problems.length ? error.problems : [error.message]);
    } finally {
      save.disabled = false;
    }
  });

  // Follow the settings in force (another operator, a reload) until the user edits.
  const unsubscribe = ctx.subscribe((endpoint) => {
    if (!dirty) load(endpoint);
  });
  return unsubscribe;
}
