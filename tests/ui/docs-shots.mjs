// Screenshots of the web console for its guide, docs/console.md (docs/img/console-*.png).
//
//   node tests/ui/docs-shots.mjs
//
// Not a test: it starts Portico (with its embedded console) on a temporary config — project
// `demo` with two callers (tokens `web-app` and `batch-jobs`), a process endpoint `chat` on
// fakeworker (0–3 workers, autoscaled), a static endpoint `embeddings` on a fakeworker this
// script starts, and an alert rule — drives a few minutes of varying traffic through the
// data listener (streamed chat completions, model lists, some 401s and 5xx; `chat` pinned to
// 2 workers midway, then autoscaled again), and then photographs each page of the console
// with headless Chromium (playwright-core) at 1366×768. Everything it started is stopped at
// the end, also on failure.
//
// Environment:
//   PORTICO_BIN_DIR   where portico and fakeworker are (default target/debug; build first:
//                     cargo build --workspace --bins)
//   PORTICO_UI_NODE   where `npm ci` installed tests/ui/package.json (default target/ui-node)
//   PORTICO_CHROMIUM  the Chromium binary (default /usr/bin/chromium)
//   SHOTS_SECONDS     how long the traffic runs before the screenshots (default 150); the
//                     charts show the last 15 minutes, so longer runs fill more of them
//   SHOTS_DIR         where the pictures go (default docs/img)

import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import {
  binDir, configHead, launchChromium, repo, sha256, spawnAndWait, startPortico as start, stop,
  toml,
} from './harness.mjs';

const outDir = process.env.SHOTS_DIR || path.join(repo, 'docs', 'img');
const LOAD_SECONDS = Number(process.env.SHOTS_SECONDS || 150);
if (!(LOAD_SECONDS >= 10)) throw new Error(`SHOTS_SECONDS must be a number ≥ 10, not ${process.env.SHOTS_SECONDS}`);

const ADMIN_TOKEN = `adm_${randomBytes(24).toString('hex')}`;
const TOKENS = {
  'web-app': `ptk_${randomBytes(32).toString('hex')}`,
  'batch-jobs': `ptk_${randomBytes(32).toString('hex')}`,
};
const WAIT = 30_000; // the longest wait for any one thing a page should show
const VIEWPORT = { width: 1366, height: 768 };
const MAX_SHOT_HEIGHT = 1500; // longer pages are cut there (the rest is more of the same)

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const between = (low, high) => low + Math.random() * (high - low);
const log = (message) => process.stdout.write(`[${new Date().toISOString().slice(11, 19)}] ${message}\n`);

let work; // the temporary directory
let portico;
let porticoOutput = ''; // the last of Portico's output, printed on failure
let embedder; // the fakeworker behind the static endpoint
let browser;
let admin; // http://127.0.0.1:<port> of the admin listener
let dataBase; // http://127.0.0.1:<port> of the data listener
const endpointUrl = (id) => `${dataBase}/project/demo/endpoint/${id}`;

async function startEmbedder() {
  const started = spawnAndWait(path.join(binDir, 'fakeworker'),
    ['--port', '0', '--ttft-ms', '30', '--tokens-per-second', '400', '--model', 'fake-embedder'],
    (text) => /listening on (\S+)/.exec(text)?.[1],
    { env: { ...process.env, RUST_LOG: 'info' }, what: 'fakeworker (embeddings)' });
  embedder = started.child;
  return started.found;
}

async function startPortico(embedderAddress) {
  const config = path.join(work, 'config.toml');
  writeFileSync(config, `${configHead(work, ADMIN_TOKEN)}
[[project]]
id = "demo"
tokens = [
  { name = "web-app", sha256 = "${sha256(TOKENS['web-app'])}" },
  { name = "batch-jobs", sha256 = "${sha256(TOKENS['batch-jobs'])}" },
]

[[endpoint]]
id = "chat"
project = "demo"
cors_origins = ["*"]

[endpoint.workers]
kind = "process"
command = [${toml(path.join(binDir, 'fakeworker'))}, "--port", "{port}", "--tokens-per-second", "25", "--boot-delay-ms", "1500"]
health_path = "/health"
startup_timeout_seconds = 30

[endpoint.scaling]
min_workers = 0
max_workers = 3
target = 2
idle_timeout_seconds = 300

[[endpoint]]
id = "embeddings"
project = "demo"
cors_origins = ["*"]

[endpoint.workers]
kind = "static"
urls = ["http://${embedderAddress}"]

[[alert]]
name = "chat-slow"
endpoint = "chat"
metric = "p95_latency_ms"
operator = ">"
threshold = 2000
for_seconds = 30
notify = []
`);
  const started = await start(config, (chunk) => { porticoOutput = (porticoOutput + chunk).slice(-50_000); });
  portico = started.child;
  admin = started.admin;
  dataBase = started.data;
}

async function adminApi(method, route, body) {
  const response = await fetch(`${admin}${route}`, {
    method,
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!response.ok) throw new Error(`${method} ${route}: HTTP ${response.status} ${await response.text()}`);
  return response.json();
}

/** Polls `check()` until it returns something truthy. */
async function until(what, check, ms = WAIT) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check().catch(() => null);
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

// --- traffic ---

let loadStopped = false;
const aborter = new AbortController(); // aborts every request in flight when the load stops
const counts = { ok: 0, '4xx': 0, '5xx': 0, failed: 0 };
let loadStart = 0;
let tail = false; // after the main phase: a steady trickle while the pictures are taken

/** How busy the chat clients are at `fraction` of the run: up, a plateau, down again. */
function chatUsers(fraction) {
  if (tail) return 2;
  const shape = [[0, 1], [0.15, 2], [0.35, 6], [0.6, 7], [0.8, 3], [1, 2]];
  for (let i = 1; i < shape.length; i += 1) {
    const [x1, y1] = shape[i];
    const [x0, y0] = shape[i - 1];
    if (fraction <= x1) return Math.round(y0 + ((fraction - x0) / (x1 - x0)) * (y1 - y0));
  }
  return 2;
}

/** Requests per second on the embeddings endpoint: a hump later than chat's. */
function embeddingsRate(fraction) {
  if (tail) return 2;
  return 1.5 + 6 * Math.exp(-(((fraction - 0.55) / 0.18) ** 2));
}

const fraction = () => Math.min(1, (Date.now() - loadStart) / (LOAD_SECONDS * 1000));

async function send(url, { token, body, method = body ? 'POST' : 'GET' } = {}) {
  try {
    const response = await fetch(url, {
      method,
      headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), ...(body ? { 'Content-Type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
      signal: aborter.signal,
    });
    // Read the whole answer (a stream to its end), as a client would.
    if (response.body) for await (const _ of response.body) { /* drained */ }
    if (response.status >= 500) counts['5xx'] += 1;
    else if (response.status >= 400) counts['4xx'] += 1;
    else counts.ok += 1;
  } catch (error) {
    if (!loadStopped) counts.failed += 1;
  }
}

const PROMPTS = [
  'Summarise this support ticket in one sentence.',
  'Translate "good morning" into French, Spanish and German.',
  'Suggest three names for a coffee shop run by robots.',
  'What is the capital of Australia?',
  'Write a haiku about autumn rain.',
];

function chatBody(stream, maxTokens) {
  return {
    model: 'fake-model',
    messages: [
      { role: 'system', content: 'You are a helpful assistant.' },
      { role: 'user', content: PROMPTS[Math.floor(Math.random() * PROMPTS.length)] },
    ],
    max_tokens: maxTokens,
    stream,
    ...(stream ? { stream_options: { include_usage: true } } : {}),
  };
}

/** One simulated chat client; it works while the current load needs more than `index` clients. */
async function chatClient(index) {
  // Two in three clients are the web app (streaming chat); the others are batch jobs.
  const caller = index % 3 === 2 ? 'batch-jobs' : 'web-app';
  const token = TOKENS[caller];
  const base = `${endpointUrl('chat')}/v1`;
  while (!loadStopped) {
    if (index >= chatUsers(fraction())) {
      await sleep(300);
      continue;
    }
    const dice = Math.random();
    if (caller === 'web-app') {
      if (dice < 0.8) await send(`${base}/chat/completions`, { token, body: chatBody(true, Math.round(between(20, 60))) });
      else await send(`${base}/models`, { token });
    } else if (dice < 0.85) {
      await send(`${base}/chat/completions`, { token, body: chatBody(false, Math.round(between(10, 30))) });
    } else {
      await send(`${base}/models`, { token });
    }
    await sleep(between(100, 700));
  }
}

async function embeddingsClient() {
  const base = `${endpointUrl('embeddings')}/v1`;
  let turn = 0;
  while (!loadStopped) {
    turn += 1;
    const token = turn % 4 === 0 ? TOKENS['web-app'] : TOKENS['batch-jobs'];
    // Not awaited: the rate holds whatever the answer time.
    if (turn % 10 === 0) send(`${base}/models`, { token });
    else send(`${base}/completions`, { token, body: { model: 'fake-embedder', prompt: 'vectorise me', max_tokens: 4 } });
    await sleep(1000 / embeddingsRate(fraction()) * between(0.6, 1.4));
  }
}

/** Now and then a request with a wrong token (401) or one a worker answers 500. */
async function troubleMaker() {
  let turn = 0;
  while (!loadStopped) {
    await sleep(between(2500, 4500));
    if (loadStopped) break;
    turn += 1;
    const id = turn % 3 === 0 ? 'embeddings' : 'chat';
    if (turn % 2) {
      await send(`${endpointUrl(id)}/v1/models`, { token: 'ptk_not-a-real-token' });
    } else {
      await send(`${endpointUrl(id)}/status/500`, { token: TOKENS['web-app'], method: 'POST', body: {} });
    }
  }
}

/** The operator's part: chat pinned to 2 workers midway, then given back to the autoscaler. */
async function operator() {
  const at = async (share) => {
    while (!loadStopped && fraction() < share) await sleep(250);
    return !loadStopped;
  };
  if (!await at(0.5)) return;
  await adminApi('POST', '/admin/endpoints/chat/scale', { workers: 2 });
  log('chat pinned to 2 workers');
  if (!await at(0.72)) return;
  await adminApi('POST', '/admin/endpoints/chat/autoscale');
  log('chat autoscaled again');
}

function startLoad() {
  loadStart = Date.now();
  const tasks = [
    ...Array.from({ length: 7 }, (_, i) => chatClient(i)),
    embeddingsClient(),
    troubleMaker(),
    operator(),
  ];
  return Promise.allSettled(tasks);
}

// --- pictures ---

/** Waits until no toast shows (they fade after 6 s), then hides any left (an error toast from a poll). */
async function noToasts(page) {
  await page.waitForFunction(() => !document.querySelector('.toasts > div.visible:not(:empty)'), null, { timeout: 8000 })
    .catch(() => {});
  await page.evaluate(() => {
    for (const toast of document.querySelectorAll('.toasts > div')) toast.classList.remove('visible');
  });
}

async function shot(page, name, { full = true } = {}) {
  await noToasts(page);
  await page.mouse.move(0, VIEWPORT.height - 1); // no hover read-out on a chart
  await page.evaluate(() => window.scrollTo(0, 0));
  const height = await page.evaluate(() => document.documentElement.scrollHeight);
  // A page too long is cut below the last whole row (event, table row) that fits.
  const cut = full && height > MAX_SHOT_HEIGHT ? await page.evaluate(([max, min]) => {
    const bottoms = [...document.querySelectorAll('.event, tbody tr, .card')]
      .map((el) => el.getBoundingClientRect().bottom + window.scrollY)
      .filter((bottom) => bottom <= max - 12);
    return Math.round(Math.max(min, ...bottoms) + 12);
  }, [MAX_SHOT_HEIGHT, VIEWPORT.height]) : null;
  const file = path.join(outDir, `${name}.png`);
  await page.screenshot({
    path: file,
    fullPage: full,
    clip: cut ? { x: 0, y: 0, width: VIEWPORT.width, height: cut } : undefined,
  });
  log(`${name}.png: ${Math.round(statSync(file).size / 1024)} KB (page ${height} px high${cut ? `, cut at ${cut}` : ''})`);
}

async function openTab(page, name) {
  await page.getByRole('tab', { name }).click();
  await page.waitForSelector(`[role=tab][aria-selected=true]:text-is("${name}")`);
}

async function newPage() {
  const context = await browser.newContext({ viewport: VIEWPORT });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on('pageerror', (error) => log(`page error: ${error.message}`));
  return page;
}

async function signIn(page) {
  await page.getByLabel('Token', { exact: true }).fill(ADMIN_TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#auth-dialog').waitFor({ state: 'hidden' });
}

async function pictures() {
  const page = await newPage();

  // The overview: both endpoints, every sparkline drawn.
  await page.goto(`${admin}/ui/`);
  await page.getByLabel('Token', { exact: true }).waitFor({ state: 'visible' });
  await signIn(page);
  await page.waitForFunction(() => ['chat', 'embeddings'].every((id) => {
    const row = document.querySelector(`tr[data-endpoint="${id}"]`);
    return row && row.querySelectorAll('svg.sparkline polyline').length >= 5;
  }));
  await shot(page, 'console-overview');

  // chat, Status tab: the four charts with lines, the replicas and the alert rule.
  await page.goto(`${admin}/ui/#/endpoints/chat`);
  await page.waitForFunction(() => document.querySelectorAll('.charts svg polyline').length >= 4
    && document.querySelectorAll('tr[data-state="ready"]').length >= 1
    && document.querySelector('.card table th[scope=row]')
    && [...document.querySelectorAll('h2')].some((h) => h.textContent === 'Alerts'
      && h.parentElement.querySelector('table')));
  await sleep(1000);
  await shot(page, 'console-endpoint');

  await openTab(page, 'Events');
  await page.locator('.event[data-type="autoscaled"]').first().waitFor();
  await shot(page, 'console-events');

  await openTab(page, 'Scaling');
  await page.waitForFunction(() => document.querySelector('input[name=max_workers]')?.value === '3');
  await shot(page, 'console-scaling');

  // Logs, filtered and followed while the trickle of requests goes on.
  await openTab(page, 'Logs');
  await page.getByLabel('Filter (regular expression)').fill('chat/completions');
  await page.getByLabel('Follow live').check();
  await page.waitForSelector('.log-state:has-text("following")');
  const before = await until('followed log lines', async () => {
    const n = await page.locator('.log-line').count();
    return n >= 20 ? n : null;
  });
  await until('a new log line', async () => (await page.locator('.log-line').count()) > before);
  await sleep(1500);
  await shot(page, 'console-logs');
  await page.getByLabel('Follow live').uncheck();

  await openTab(page, 'Access');
  await page.waitForFunction(() => {
    const chart = document.querySelector('.chart.bars[role=img]');
    const label = chart ? chart.getAttribute('aria-label') : '';
    return /web-app/.test(label) && /batch-jobs/.test(label);
  });
  await shot(page, 'console-access');

  // The playground: a streamed answer, its numbers, the Python snippet.
  await page.goto(`${admin}/ui/#/playground?endpoint=chat`);
  await page.waitForFunction(() => document.querySelector('input[name=base]')?.value.endsWith('/endpoint/chat/v1'));
  const token = page.getByLabel('Project token');
  await token.fill(TOKENS['web-app']);
  await token.press('Tab'); // a changed token lists the models
  await page.waitForFunction(() => document.querySelector('input[name=model]')?.value === 'fake-model');
  await page.getByLabel('Max tokens value').fill('48');
  await page.getByLabel('User message').fill('In two sentences, what does a reverse proxy in front of an inference server do?');
  await page.getByRole('button', { name: 'Send', exact: true }).click();
  await page.waitForFunction(() => !document.getElementById('pg-send').disabled
    && document.querySelector('[data-stat="completion"]').textContent === '48', null, { timeout: WAIT });
  await page.getByRole('button', { name: 'Python', exact: true }).click();
  await page.locator('.snippet', { hasText: 'from openai import' }).waitFor().catch(() => {});
  await page.locator('#pg-answer').evaluate((el) => el.blur());
  await shot(page, 'console-playground');
  await page.context().close();

  // The first visit: the token dialog, before anything loaded.
  const fresh = await newPage();
  await fresh.goto(`${admin}/ui/`);
  await fresh.locator('#auth-dialog').waitFor({ state: 'visible' });
  await sleep(500);
  await shot(fresh, 'console-token', { full: false });
  await fresh.context().close();
}

// --- the run ---

let cleaning = null;
function cleanup() {
  if (!cleaning) {
    cleaning = (async () => {
      loadStopped = true;
      aborter.abort();
      if (browser) await browser.close().catch(() => {});
      await stop(portico, 15_000);
      await stop(embedder, 5_000);
      if (work) rmSync(work, { recursive: true, force: true });
    })();
  }
  return cleaning;
}

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    log(`${signal}: stopping`);
    cleanup().finally(() => process.exit(130));
  });
}

async function main() {
  const began = Date.now();
  mkdirSync(outDir, { recursive: true });
  work = mkdtempSync(path.join(tmpdir(), 'portico-shots-'));
  const embedderAddress = await startEmbedder();
  await startPortico(embedderAddress);
  log(`Portico: admin ${admin}, data ${dataBase}`);
  browser = await launchChromium();

  log(`traffic for ${LOAD_SECONDS} s`);
  const load = startLoad();
  const progress = setInterval(() => {
    log(`${Math.round(fraction() * 100)} %: ${chatUsers(fraction())} chat clients; answers ${JSON.stringify(counts)}`);
  }, 15_000);
  try {
    while (fraction() < 1) await sleep(500);
  } finally {
    clearInterval(progress);
  }
  tail = true;
  log(`traffic done (${JSON.stringify(counts)}); a trickle goes on while the pictures are taken`);
  await pictures();
  loadStopped = true;
  aborter.abort();
  await load;
  log(`done in ${Math.round((Date.now() - began) / 1000)} s; pictures in ${path.relative(repo, outDir) || '.'}/`);
}

let failed = false;
try {
  await main();
} catch (error) {
  failed = true;
  process.stderr.write(`${error.stack || error}\n--- Portico output (last lines) ---\n${porticoOutput.split('\n').slice(-40).join('\n')}\n`);
} finally {
  await cleanup();
}
process.exit(failed ? 1 : 0);
