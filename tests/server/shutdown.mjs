// shutdown.mjs - SIGTERM drains: the answer being streamed finishes whole, new connections are
// refused at once, the disk cache is flushed (a restarted server resumes the conversation from
// it), and the server exits 0. With --drain-timeout, what still runs is cancelled instead.
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MOE, IMG, imagePart, startServer, post, parseSse, sleep, runCases } from './lib.mjs';

const body = (extra) => ({
  model: 'tiny', temperature: 0, max_tokens: 200, chat_template_kwargs: { enable_thinking: false },
  messages: [{ role: 'user', content: [imagePart(IMG.b), { type: 'text', text: 'Describe it at length.' }] }], ...extra,
});

async function openStream(url, extra) {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body({ stream: true, ...extra })),
  });
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  const first = await reader.read(); // the first event is out: the request is in flight
  let text = new TextDecoder().decode(first.value);
  const rest = (async () => {
    for (;;) {
      const { value, done } = await reader.read().catch(() => ({ done: true }));
      if (done) return text;
      text += new TextDecoder().decode(value);
    }
  })();
  return { rest }; /* wrapped: an async function returning a promise would wait for it */
}

async function refused(url) {
  try {
    await fetch(`${url}/health`);
    return false;
  } catch (e) {
    return e.cause && e.cause.code === 'ECONNREFUSED';
  }
}

const failed = await runCases([
  ['drain finishes the running answer, refuses new connections, flushes the disk cache', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'qvlm-cache-'));
    try {
      const srv = await startServer(['-m', MOE, '--cache-dir', dir]);
      // 1200 tokens take a second or more: the drain has work to wait for.
      const { rest: streamed } = await openStream(srv.url, { max_tokens: 1200, temperature: 1, seed: 7 });
      srv.proc.kill('SIGTERM');
      await sleep(100);
      assert.equal(srv.proc.exitCode, null, 'still draining');
      assert.ok(await refused(srv.url), 'a new connection during the drain must be refused');
      const { events, done } = parseSse(await streamed);
      assert.ok(done, 'the running stream completes with [DONE]');
      assert.equal(events.at(-1).choices[0].finish_reason, 'length');
      assert.equal(events.at(-1).timings.predicted_n, 1200, 'the whole answer');
      await srv.stop(); // exit 0, no sanitizer report
      assert.ok(readdirSync(dir, { recursive: true }).length > 0, 'the cache directory holds the flushed entries');
      // A new server on the same directory resumes the prompt from disk: nothing is recomputed.
      const again = await startServer(['-m', MOE, '--cache-dir', dir]);
      const r = await post(`${again.url}/v1/chat/completions`, body({ max_tokens: 2, temperature: 1, seed: 7 }));
      assert.equal(r.status, 200, r.text);
      console.log(`  after restart: prompt ${r.json.usage.prompt_tokens}, cached ${r.json.usage.prompt_tokens_details.cached_tokens}, ` +
                  `images encoded ${r.json.timings.images_encoded}`);
      assert.equal(r.json.usage.prompt_tokens_details.cached_tokens, r.json.usage.prompt_tokens);
      assert.equal(r.json.timings.images_encoded, 0);
      await again.stop();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }],
  ['the drain timeout cancels what still runs', async () => {
    const srv = await startServer(['-m', MOE, '--drain-timeout', '0.3']);
    const { rest: streamed } = await openStream(srv.url, { max_tokens: 3900, temperature: 1, seed: 7 }); // 2770 tokens before EOS
    const t0 = Date.now();
    srv.proc.kill('SIGTERM');
    const err = await srv.stop();
    assert.ok(Date.now() - t0 < 20000, 'stopped soon after the timeout');
    const { events } = parseSse(await streamed);
    assert.match(err, /cancelling them/);
    assert.ok(!events.some((e) => e.choices?.[0]?.finish_reason), 'the cancelled answer has no finish');
  }],
]);
process.exit(failed ? 1 : 0);
