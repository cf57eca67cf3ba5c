// load.mjs - a bounded load test on loopback: 8 clients x 25 requests with images, streamed
// and not, greedy and seeded sampling, single- and multi-turn, against 4 slots sharing one
// cache. Every answer must equal the one the same request got from a 1-slot server run
// sequentially, nothing may fail, and the server must exit 0 on SIGTERM with no leak (in the
// sanitizer build LeakSanitizer is on, and lib.mjs fails on any report).
import assert from 'node:assert/strict';
import { MOE, IMG, imagePart, startServer, post, parseSse, metrics } from './lib.mjs';

const CLIENTS = 8, PER_CLIENT = 25;
const POOL = [IMG.a, IMG.b, IMG.c, IMG.d, IMG.e, IMG.f, IMG.g, IMG.h];
const env = process.env.QVLM_SANITIZE ? { ASAN_OPTIONS: `${process.env.ASAN_OPTIONS || ''}:detect_leaks=1` } : {};

function request(c, i) {
  const img = POOL[(c * 7 + i) % POOL.length], img2 = POOL[(c + 3 * i) % POOL.length];
  const messages = [{ role: 'system', content: `Client ${c % 3}.` },
                    { role: 'user', content: [imagePart(img), { type: 'text', text: `Question ${i % 5}?` }] }];
  if (i % 3 === 2)
    messages.push({ role: 'assistant', content: `An earlier answer ${i % 4}.` },
                  { role: 'user', content: [{ type: 'text', text: 'And this?' }, imagePart(img2)] });
  const body = { model: 'tiny', messages, max_tokens: 12, stream: (c + i) % 2 === 0 };
  if (i % 2 === 0) body.temperature = 0; // greedy
  else Object.assign(body, { temperature: 1.0, top_p: 0.9, seed: 1000 + 13 * i + c });
  if (i % 4 === 3) body.chat_template_kwargs = { enable_thinking: false };
  return body;
}

async function ask(url, body) {
  const r = await post(`${url}/v1/chat/completions`, body);
  assert.equal(r.status, 200, r.text);
  if (!body.stream) {
    const c = r.json.choices[0];
    return { content: c.message.content, reasoning: c.message.reasoning_content ?? '', finish: c.finish_reason,
             n: r.json.usage.completion_tokens };
  }
  const { events, done } = parseSse(r.text);
  assert.ok(done, 'stream ends with [DONE]');
  let content = '', reasoning = '', finish = null, n = 0;
  for (const e of events) {
    assert.ok(!e.error, JSON.stringify(e));
    const ch = e.choices[0];
    content += ch.delta.content ?? '';
    reasoning += ch.delta.reasoning_content ?? '';
    if (ch.finish_reason) (finish = ch.finish_reason), (n = e.timings.predicted_n);
  }
  return { content, reasoning, finish, n };
}

const key = (c, i) => `${c}/${i}`;
const t0 = Date.now();

// Reference: one slot, one request at a time.
const ref = new Map();
{
  const srv = await startServer(['-m', MOE, '--parallel', '1'], { env });
  for (let c = 0; c < CLIENTS; c++)
    for (let i = 0; i < PER_CLIENT; i++) ref.set(key(c, i), await ask(srv.url, request(c, i)));
  await srv.stop();
}
console.log(`sequential reference: ${ref.size} requests in ${Date.now() - t0} ms`);

// Load: 8 clients at once on 4 slots.
const t1 = Date.now();
const srv = await startServer(['-m', MOE, '--parallel', '4', '--queue', '64'], { env });
let mismatches = 0;
await Promise.all(Array.from({ length: CLIENTS }, async (_, c) => {
  for (let i = 0; i < PER_CLIENT; i++) {
    const got = await ask(srv.url, request(c, i)), want = ref.get(key(c, i));
    if (JSON.stringify(got) !== JSON.stringify(want)) {
      mismatches++;
      console.log(`mismatch ${key(c, i)}:\n  got  ${JSON.stringify(got)}\n  want ${JSON.stringify(want)}`);
    }
  }
}));
const m = await metrics(srv.url);
await srv.stop();
console.log(`load: ${CLIENTS * PER_CLIENT} requests in ${Date.now() - t1} ms; cache reused ${m.qvlm_prompt_tokens_reused_total} ` +
            `of ${m.qvlm_prompt_tokens_total} prompt tokens, ${m.qvlm_images_reused_total} images reused, ` +
            `${m.qvlm_images_encoded_total} encoded`);
assert.equal(mismatches, 0, `${mismatches} answers differ from the sequential run`);
assert.equal(m.qvlm_requests_total, CLIENTS * PER_CLIENT);
assert.equal(m.qvlm_requests_failed_total, 0);
assert.equal(m['qvlm_http_responses_total{class="5xx"}'], 0);
assert.ok(m.qvlm_images_reused_total > 0 && m.qvlm_prompt_tokens_reused_total > 0, 'the cache was used');
console.log('ok load');
