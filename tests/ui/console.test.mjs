// End-to-end test of the web console, through a real browser: Portico (with its embedded
// console) and fakeworker processes, driven by headless Chromium with playwright-core.
//
//   node --test tests/ui/
//
// Environment: PORTICO_BIN_DIR (where portico and fakeworker are; default target/debug),
// PORTICO_UI_NODE (where `npm ci` installed tests/ui/package.json; default
// target/ui-node), PORTICO_CHROMIUM (default /usr/bin/chromium). Screenshots of every
// page go to target/ui-shots/.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import {
  binDir, configHead, launchChromium, repo, sha256, startPortico as start, stop, toml,
} from './harness.mjs';

const shotsDir = path.join(repo, 'target', 'ui-shots');
const ADMIN_TOKEN = `adm_${randomBytes(24).toString('hex')}`;
const PROJECT_TOKEN = `ptk_${randomBytes(32).toString('hex')}`;
const WAIT = 30_000; // the longest wait for any one thing the page should show

let work;
let portico;
let output = ''; // Portico's stdout and stderr, printed when the test fails
let browser;
let page;
let admin;
let dataUrl;
const pageErrors = [];

/** Starts Portico on a fresh config and waits for its `listening on …` lines. */
async function startPortico() {
  work = mkdtempSync(path.join(tmpdir(), 'portico-ui-'));
  const config = path.join(work, 'config.toml');
  writeFileSync(config, `${configHead(work, ADMIN_TOKEN)}
[[project]]
id = "uitest"
tokens = [{ name = "browser", sha256 = "${sha256(PROJECT_TOKEN)}" }]

[[endpoint]]
id = "chat"
project = "uitest"
cors_origins = ["*"]

[endpoint.workers]
kind = "process"
command = [${toml(path.join(binDir, 'fakeworker'))}, "--port", "{port}", "--tokens-per-second", "20", "--boot-delay-ms", "300"]
health_path = "/health"
startup_timeout_seconds = 30

[endpoint.scaling]
min_workers = 0
max_workers = 2
idle_timeout_seconds = 600
initial_cooldown_seconds = 600
`);
  const started = await start(config, (chunk) => { output = (output + chunk).slice(-200_000); });
  portico = started.child;
  admin = started.admin;
  dataUrl = `${started.data}/project/uitest/endpoint/chat`;
}

/** SIGTERM, then the wait for Portico to stop its workers and exit. */
const stopPortico = () => stop(portico, 15_000);

async function adminApi(route) {
  const response = await fetch(`${admin}${route}`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
  assert.equal(response.status, 200, `${route}: ${response.status}`);
  return response.json();
}

function dataApi(route, init = {}) {
  return fetch(`${dataUrl}${route}`, {
    ...init,
    headers: { Authorization: `Bearer ${PROJECT_TOKEN}`, 'Content-Type': 'application/json', ...init.headers },
  });
}

async function shot(name) {
  await page.evaluate(() => window.scrollTo(0, 0)); // the sticky header at the top of the picture
  await page.screenshot({ path: path.join(shotsDir, `${name}.png`), fullPage: true });
}

/** Confirms the open <dialog> after checking what it asks. */
async function confirm(title) {
  const dialog = page.locator('#confirm-dialog');
  await dialog.waitFor({ state: 'visible', timeout: WAIT });
  assert.match(await dialog.locator('h2').textContent(), title);
  await dialog.locator('#confirm-ok').click();
  await dialog.waitFor({ state: 'hidden', timeout: WAIT });
}

async function openTab(name) {
  await page.getByRole('tab', { name }).click();
  await page.waitForSelector(`[role=tab][aria-selected=true]:text-is("${name}")`, { timeout: WAIT });
}

/** Sends the playground's prompt and returns the distinct answer lengths seen while it streamed. */
async function sendAndSample() {
  await page.getByRole('button', { name: 'Send', exact: true }).click();
  return page.evaluate(async (limit) => {
    const answer = document.getElementById('pg-answer');
    const send = document.getElementById('pg-send');
    const lengths = [];
    const started = performance.now();
    // Sampled every 10 ms until the Send button is enabled again (the request ended).
    for (;;) {
      const length = answer.textContent.length;
      if (length !== lengths[lengths.length - 1]) lengths.push(length);
      if (!send.disabled) break;
      if (performance.now() - started > limit) throw new Error(`no answer in ${limit} ms`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return lengths;
  }, WAIT);
}

const stat = (key) => page.locator(`[data-stat="${key}"]`).textContent();

before(async () => {
  mkdirSync(shotsDir, { recursive: true });
  await startPortico();
  browser = await launchChromium();
  const context = await browser.newContext({ viewport: { width: 1366, height: 768 } });
  page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on('pageerror', (error) => pageErrors.push(error.message));
});

after(async () => {
  if (browser) await browser.close();
  await stopPortico();
  if (work) rmSync(work, { recursive: true, force: true });
});

// The steps run in order on one page; after a failure the rest are skipped rather than
// failing for the same reason.
let broken = false;
function step(name, fn) {
  test(name, { timeout: 60_000 }, async (t) => {
    if (broken) {
      t.skip('an earlier step failed');
      return;
    }
    try {
      await fn();
    } catch (error) {
      broken = true;
      if (page) await page.screenshot({ path: path.join(shotsDir, 'failure.png'), fullPage: true }).catch(() => {});
      process.stderr.write(`--- Portico output (last lines) ---\n${output.split('\n').slice(-60).join('\n')}\n`);
      throw error;
    }
  });
}

/** Waits until none of these processes exists any more. */
async function waitGone(pids, what) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const alive = pids.filter((pid) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    });
    if (!alive.length) return;
    if (Date.now() > deadline) assert.fail(`${what}: ${alive.join(', ')} still running`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

step('sign in and see the endpoint in the overview', async () => {
  await page.goto(`${admin}/ui/`);
  const token = page.getByLabel('Token', { exact: true });
  await token.waitFor({ state: 'visible' });
  await token.fill(ADMIN_TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  const row = page.locator('tr[data-endpoint="chat"]');
  await row.waitFor({ state: 'visible' });
  assert.match(await row.textContent(), /uitest · process/);
  assert.equal(await row.locator('.pill').first().textContent(), 'auto');
  await page.waitForSelector('tr[data-endpoint="chat"] svg.sparkline[role=img]');
  assert.ok(await page.getByRole('button', { name: 'Sign out' }).isVisible());
  await shot('overview');
});

step('scale the endpoint to 2 workers from its page', async () => {
  await page.getByRole('link', { name: 'chat', exact: true }).click();
  await page.waitForURL(/#\/endpoints\/chat$/);
  await page.getByRole('heading', { name: 'chat', exact: true }).waitFor();
  const urls = page.locator('code.url');
  await urls.first().waitFor();
  assert.equal(await urls.first().textContent(), dataUrl);
  await page.getByLabel('Workers', { exact: true }).fill('2');
  await page.getByRole('button', { name: 'Scale', exact: true }).click();
  await confirm(/Scale chat to 2 workers/);
  await page.waitForFunction(() => {
    const tile = document.querySelector('[data-kpi="workers"] .tile-value');
    return tile && tile.textContent === '2 / 2'
      && document.querySelectorAll('tr[data-state="ready"]').length === 2;
  });
  assert.equal(await page.locator('.endpoint-title .pill').first().textContent(), 'manual');
  await shot('endpoint');
});

step('stream an answer in the playground', async () => {
  await page.locator('nav').getByRole('link', { name: 'Playground' }).click();
  await page.waitForURL(/#\/playground/);
  // The route is mounted on hashchange, a moment after the URL changed.
  await page.waitForFunction(() => {
    const base = document.querySelector('input[name=base]');
    return base && base.value !== '';
  });
  assert.equal(await page.getByLabel('Base URL').inputValue(), `${dataUrl}/v1`);
  const token = page.getByLabel('Project token');
  await token.fill(PROJECT_TOKEN);
  await token.press('Tab'); // a changed token lists the models
  await page.waitForFunction(() => {
    const model = document.querySelector('input[name=model]');
    return model && model.value === 'fake-model';
  });
  await page.getByLabel('Max tokens value').fill('32');
  await page.getByLabel('User message').fill('Count to thirty-two, slowly.');
  assert.ok(await page.getByLabel('Stream the answer').isChecked());

  const lengths = await sendAndSample();
  const error = page.locator('.pg-error');
  assert.equal(await error.isVisible(), false, await error.textContent());
  const steps = lengths.filter((n) => n > 0);
  assert.ok(steps.length >= 3, `the answer grew in ${steps.length} steps: ${lengths}`);
  assert.deepEqual(steps, [...steps].sort((a, b) => a - b), 'the answer only grows');
  assert.equal(await stat('completion'), '32');
  assert.notEqual(await stat('prompt'), '—');
  assert.notEqual(await stat('usage_total'), '—');
  assert.match(await stat('ttft'), /\d (ms|s)$/);
  assert.match(await stat('tps'), /^\d+(\.\d)?$/);
  const long = (await page.locator('#pg-answer').textContent()).length;
  assert.match(await page.locator('.snippet').textContent(), /curl -N .*\/chat\/completions/);
  await shot('playground');

  await page.getByLabel('Max tokens value').fill('4');
  await sendAndSample();
  assert.equal(await stat('completion'), '4');
  const short = (await page.locator('#pg-answer').textContent()).length;
  assert.ok(short > 0 && short < long, `4 tokens (${short} chars) are shorter than 32 (${long})`);

  await page.getByRole('button', { name: 'Python' }).click();
  const python = await page.locator('.snippet').textContent();
  assert.match(python, /extra_body=\{"repetition_penalty": 1\}/);
  assert.match(python, /max_tokens=4,/);
  assert.ok(!python.includes(PROJECT_TOKEN), 'a snippet never holds the token');
});

step('a wrong project token shows the 401', async () => {
  const token = page.getByLabel('Project token');
  await token.fill('ptk_not-a-real-token');
  await sendAndSample();
  const error = page.locator('.pg-error');
  await error.waitFor({ state: 'visible' });
  const text = await error.textContent();
  assert.match(text, /HTTP 401/);
  assert.match(text, /invalid_token/);
  await shot('playground-error');
  await token.fill(PROJECT_TOKEN);
});

step('follow the logs and see a new request arrive', async () => {
  await page.locator('nav').getByRole('link', { name: 'Endpoints' }).click();
  await page.locator('tr[data-endpoint="chat"]').click();
  await page.waitForURL(/#\/endpoints\/chat$/);
  await openTab('Logs');
  await page.getByLabel('Follow live').check();
  await page.waitForSelector('.log-state:has-text("following")');
  const marker = `ui-test-${randomBytes(6).toString('hex')}`;
  const answer = await dataApi(`/echo/${marker}`);
  assert.equal(answer.status, 200);
  await page.locator('.log-line', { hasText: marker }).first().waitFor({ state: 'visible' });
  await shot('logs');
  await page.getByLabel('Follow live').uncheck();
  await page.waitForSelector('.log-state:has-text("not following")');
});

step('events and access show what happened', async () => {
  await openTab('Events');
  await page.locator('.event[data-type="pinned"]').first().waitFor();
  await shot('events');
  await openTab('Access');
  await page.waitForFunction(() => {
    const chart = document.querySelector('.chart.bars[role=img]');
    return chart && /browser/.test(chart.getAttribute('aria-label'));
  });
  await shot('access');
  await openTab('Status');
});

step('stop the endpoint, then start it again', async () => {
  const before = (await adminApi('/admin/endpoints/chat')).workers.replicas.map((r) => r.pid);
  await page.getByRole('button', { name: 'Stop', exact: true }).click();
  await confirm(/Stop chat/);
  await page.locator('.endpoint-title .pill', { hasText: 'stopped' }).waitFor();
  const refused = await dataApi('/v1/models');
  assert.equal(refused.status, 503);
  assert.equal((await refused.json()).error.code, 'endpoint_stopped');
  await waitGone(before, 'workers of a stopped endpoint');
  await page.waitForSelector('[data-kpi="workers"] .tile-value:text-is("0 / 0")');
  await shot('stopped');

  await page.getByRole('button', { name: 'Start', exact: true }).click();
  await confirm(/Start chat/);
  await page.locator('.endpoint-title .pill', { hasText: 'auto' }).waitFor();
  const served = await dataApi('/v1/models');
  assert.equal(served.status, 200);
  await page.waitForFunction(() => {
    const tile = document.querySelector('[data-kpi="workers"] .tile-value');
    return tile && Number(tile.textContent.split(' / ')[0]) >= 1;
  });
});

step('sign out asks for the token again', async () => {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.locator('#auth-dialog').waitFor({ state: 'visible' });
  assert.equal(await page.evaluate(() => sessionStorage.getItem('portico.adminToken')), null);
  await page.getByLabel('Token', { exact: true }).fill(ADMIN_TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#auth-dialog').waitFor({ state: 'hidden' });
});

step('the page raised no uncaught error', async () => {
  assert.deepEqual(pageErrors, []);
});

step('Portico stops its workers on SIGTERM', async () => {
  const { workers } = await adminApi('/admin/endpoints/chat');
  const pids = workers.replicas.map((r) => r.pid).filter(Boolean);
  assert.ok(pids.length >= 1, 'a worker runs before the shutdown');
  await stopPortico();
  await waitGone(pids, 'workers after Portico exited');
});
