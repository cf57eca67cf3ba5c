// lib.mjs - shared helpers of the server tests: start `qvlm serve` on a free port, stop it
// with SIGTERM and check it exits 0 with no sanitizer report, data: URIs of fixture images,
// and a tiny test runner that prints each case.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import assert from 'node:assert/strict';

export const [qvlm, fixtures] = [process.env.QVLM_BIN, process.env.QVLM_FIXTURES];
if (!qvlm || !fixtures) throw new Error('QVLM_BIN and QVLM_FIXTURES must be set (ctest does)');
/* Node packages live in the build tree (npm_setup.sh), found through QVLM_NODE_MODULES. */
export const requireNode = createRequire(`${process.env.QVLM_NODE_MODULES || '.'}/`);
export const MOE = `${fixtures}/tiny-moe/model`;
export const DENSE = `${fixtures}/tiny-dense/model`;
export const IMG = {
  a: `${fixtures}/tiny-moe/images/img0.png`,
  b: `${fixtures}/tiny-moe/images/img1.png`,
  c: `${fixtures}/tiny-moe/images/img2.png`,
  d: `${fixtures}/tiny-moe/images/img3.jpg`,
  e: `${fixtures}/../fuzz/corpus/image/lossy.webp`,
  f: `${fixtures}/tiny-dense/images/img0.png`,
  g: `${fixtures}/tiny-dense/images/img1.png`,
  h: `${fixtures}/tiny-dense/images/img2.png`,
  bomb: `${fixtures}/../fuzz/corpus/image/bomb_header.png`,
};
const MIME = { '.png': 'image/png', '.jpg': 'image/jpeg', '.webp': 'image/webp' };

export function dataUri(path) {
  return `data:${MIME[extname(path)]};base64,${readFileSync(path).toString('base64')}`;
}
export const imagePart = (path) => ({ type: 'image_url', image_url: { url: dataUri(path) } });

/* Start `qvlm serve` with args on a free loopback port; resolves once it listens. */
export async function startServer(args, { env = {}, timeoutMs = 60000 } = {}) {
  const proc = spawn(qvlm, ['serve', '--port', '0', '--threads', '1', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ...env },
  });
  let stderr = '';
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${stderr}`)), timeoutMs);
    proc.stderr.on('data', (d) => {
      stderr += d;
      const m = /listening on http:\/\/[^:]+:(\d+)/.exec(stderr);
      if (m) clearTimeout(timer), resolve(Number(m[1]));
    });
    exited.then(({ code }) => reject(new Error(`server exited (${code}) before listening:\n${stderr}`)));
  });
  const url = `http://127.0.0.1:${port}`;
  return {
    proc, port, url,
    stderr: () => stderr,
    /* SIGTERM; the server must drain and exit 0 with no sanitizer (leak) report. */
    async stop({ timeoutMs = 120000 } = {}) {
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
      const { code, signal } = await exited;
      clearTimeout(timer);
      assert.ok(!/(Address|Leak|UndefinedBehavior)Sanitizer|runtime error:/.test(stderr), `sanitizer report:\n${stderr}`);
      assert.equal(code, 0, `server exit code ${code} (signal ${signal}):\n${stderr}`);
      return stderr;
    },
  };
}

export async function post(url, body, { headers = {}, raw = false } = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: raw ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, json, text, headers: res.headers };
}

/* Parse an SSE body into its JSON events; returns {events, done}. */
export function parseSse(text) {
  const events = [];
  let done = false;
  for (const block of text.split('\n\n')) {
    if (!block.startsWith('data: ')) continue;
    const data = block.slice(6);
    if (data === '[DONE]') done = true;
    else events.push(JSON.parse(data));
  }
  return { events, done };
}

/* Metrics as {name{labels}: value}. */
export async function metrics(url, headers = {}) {
  const res = await fetch(`${url}/metrics`, { headers });
  assert.equal(res.status, 200);
  const out = {};
  for (const line of (await res.text()).split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out[line.slice(0, i)] = Number(line.slice(i + 1));
  }
  return out;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/* Run named cases in order; report each; exit non-zero if any failed. */
export async function runCases(cases, { only } = {}) {
  let failed = 0;
  for (const [name, fn] of cases) {
    if (only && name !== only) continue;
    const t0 = Date.now();
    try {
      await fn();
      console.log(`ok ${name} (${Date.now() - t0} ms)`);
    } catch (e) {
      failed++;
      console.log(`not ok ${name}\n  ${(e && e.stack) || e}`);
    }
  }
  if (only && !cases.some(([n]) => n === only)) throw new Error(`no case ${only}`);
  return failed;
}
