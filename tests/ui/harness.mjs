// What the console's browser test (console.test.mjs) and the screenshot script
// (docs-shots.mjs) share: where the binaries and playwright-core are, starting and stopping
// processes, the common head of their Portico configs, and the browser.

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const binDir = process.env.PORTICO_BIN_DIR || path.join(repo, 'target', 'debug');
const nodeDir = process.env.PORTICO_UI_NODE || path.join(repo, 'target', 'ui-node');
// playwright-core is installed outside the source tree (see tests/ui/package.json).
const { chromium } = createRequire(path.join(nodeDir, 'package.json'))('playwright-core');

export const sha256 = (text) => createHash('sha256').update(text).digest('hex');
/** A TOML basic string. */
export const toml = (value) => JSON.stringify(value);

/**
 * Spawns a program; `found` resolves with what `pattern(output so far)` first returns
 * truthy, and rejects when the program exits first or after 20 s. `onOutput` sees every
 * chunk (the pipes are always read: a full pipe would stall the child).
 */
export function spawnAndWait(command, args, pattern, { env, onOutput, what }) {
  const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const found = new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`${what} did not start in 20 s:\n${seen.slice(-4000)}`)), 20_000);
    const read = (chunk) => {
      if (onOutput) onOutput(chunk);
      if (seen === null) return;
      seen = (seen + chunk).slice(-100_000);
      const match = pattern(seen);
      if (match) {
        seen = null;
        clearTimeout(timer);
        resolve(match);
      }
    };
    child.stdout.on('data', read);
    child.stderr.on('data', read);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${code ?? signal}) before it was ready:\n${(seen || '').slice(-4000)}`));
    });
  });
  return { child, found };
}

/** `[server]`, the `public` listener and `[object_store]` of a Portico living in `work`. */
export function configHead(work, adminToken) {
  return `
[server]
admin_listen = "127.0.0.1:0"
state_dir = ${toml(path.join(work, 'state'))}
admin_token_sha256 = "${sha256(adminToken)}"
grace_period_seconds = 2

[[listener]]
name = "public"
address = "127.0.0.1:0"

[object_store]
url = ${toml(`file://${path.join(work, 'results')}`)}
`;
}

/**
 * Runs `portico run --config config` with the console embedded in the binary (never
 * PORTICO_UI_DIR) and resolves, once it listens, with `{ child, admin, data }`: the
 * process and the `http://IP:PORT` of its admin and data listeners.
 */
export function startPortico(config, onOutput) {
  const env = { ...process.env, RUST_LOG: 'info' };
  delete env.PORTICO_UI_DIR;
  const addresses = {};
  const started = spawnAndWait(path.join(binDir, 'portico'), ['run', '--config', config],
    (text) => {
      for (const match of text.matchAll(/listening on \[?(\w+)\]? (\S+)/g)) addresses[match[1]] = match[2];
      return addresses.admin && addresses.public ? addresses : null;
    },
    { env, what: 'Portico', onOutput });
  return started.found.then(() => ({
    child: started.child,
    admin: `http://${addresses.admin}`,
    data: `http://${addresses.public}`,
  }), (error) => {
    started.child.kill('SIGKILL');
    throw error;
  });
}

/** SIGTERM, then the wait for the process to exit (SIGKILL after `ms`). */
export async function stop(child, ms) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), ms);
  await exited;
  clearTimeout(timer);
}

/** Headless Debian Chromium (never a downloaded browser). */
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.PORTICO_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // This machine has no network but loopback: keep Chromium from calling home.
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
}
