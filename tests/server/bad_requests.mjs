// bad_requests.mjs - every kind of bad request gets an OpenAI-style JSON error
// ({"error": {"message", "type", "param", "code"}}) with the right status, and the server keeps
// serving: each case is followed by a good request that must succeed. Also: clients that leave
// (mid-stream or while queued) free their slot, and a full queue answers 503.
// Usage: node bad_requests.mjs [CASE]   (ctest runs one case per test)
import assert from 'node:assert/strict';
import net from 'node:net';
import { MOE, IMG, dataUri, imagePart, startServer, post, metrics, parseSse, sleep, runCases } from './lib.mjs';
import { readFileSync } from 'node:fs';

const GOOD = { model: 'tiny', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, seed: 1 };
const LONG = { model: 'tiny', messages: [{ role: 'user', content: 'talk' }], max_tokens: 3000, temperature: 1, seed: 9, // 1415 tokens before EOS
               chat_template_kwargs: { enable_thinking: false } };

async function expectError(res, status, code, param) {
  assert.equal(res.status, status, `status ${res.status}: ${res.text}`);
  assert.ok(res.json && res.json.error, `not an OpenAI error body: ${res.text}`);
  const e = res.json.error;
  assert.equal(typeof e.message, 'string');
  assert.ok(e.message.length > 0);
  assert.equal(typeof e.type, 'string');
  assert.ok('param' in e && 'code' in e, res.text);
  if (code !== undefined) assert.equal(e.code, code, res.text);
  if (param !== undefined) assert.equal(e.param, param, res.text);
  assert.match(res.headers.get('content-type'), /application\/json/);
}

async function expectGood(srv, headers = {}) {
  const r = await post(`${srv.url}/v1/chat/completions`, GOOD, { headers });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.object, 'chat.completion');
  assert.equal(r.json.usage.completion_tokens, 4);
}

/* A case: a server with `args`, the bad requests in `fn`, then a good request, then SIGTERM. */
const withServer = (args, fn, headers = {}) => async () => {
  const srv = await startServer(['-m', MOE, ...args]);
  try {
    await fn(srv, (body, opts) => post(`${srv.url}/v1/chat/completions`, body, opts));
    await expectGood(srv, headers);
  } finally {
    await srv.stop();
  }
};

const userWith = (...parts) => ({ ...GOOD, messages: [{ role: 'user', content: parts }] });
const text = (t) => ({ type: 'text', text: t });

/* Raw HTTP over a socket, for what fetch cannot send (chunked bodies of a set size). */
function rawRequest(port, head, chunks) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.write(head);
      for (const c of chunks) s.write(`${c.length.toString(16)}\r\n${c}\r\n`);
      s.write('0\r\n\r\n');
    });
    let got = '';
    s.on('data', (d) => { got += d; });
    s.on('error', (e) => (got ? resolve(got) : reject(e)));
    s.on('close', () => resolve(got));
    setTimeout(() => s.destroy(), 10000);
  });
}

/* Start a long streamed request; resolves after `n` chunks with a way to abort it. */
async function longStream(srv, n = 3) {
  const ac = new AbortController();
  const res = await fetch(`${srv.url}/v1/chat/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ ...LONG, stream: true }), signal: ac.signal,
  });
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  for (let got = 0; got < n;) {
    const { value, done } = await reader.read();
    assert.ok(!done, 'the stream ended early');
    got += (new TextDecoder().decode(value).match(/^data: /gm) || []).length;
  }
  return { abort: () => ac.abort() };
}

async function waitFor(what, fn, ms = 20000) {
  for (const t0 = Date.now(); Date.now() - t0 < ms; await sleep(50)) if (await fn()) return;
  throw new Error(`timed out waiting for ${what}`);
}

const CASES = [
  ['malformed_json', withServer([], async (srv, chat) => {
    await expectError(await chat('{"messages": [', { raw: true }), 400, 'invalid_json');
    await expectError(await chat('', { raw: true }), 400, 'invalid_json');
  })],
  ['wrong_types', withServer([], async (srv, chat) => {
    await expectError(await chat('[1,2]', { raw: true }), 400, 'invalid_type', 'body');
    await expectError(await chat({ ...GOOD, messages: 'hi' }), 400, 'invalid_type', 'messages');
    await expectError(await chat({ ...GOOD, messages: [{ role: 'user', content: 5 }] }), 400, 'invalid_type', 'messages[0].content');
    await expectError(await chat({ ...GOOD, messages: [{ content: 'x' }] }), 400, 'invalid_type', 'messages[0].role');
    await expectError(await chat({ ...GOOD, messages: [{ role: 'robot', content: 'x' }] }), 400, 'invalid_value', 'messages[0].role');
    await expectError(await chat({ ...GOOD, temperature: 'hot' }), 400, 'invalid_type', 'temperature');
    await expectError(await chat({ ...GOOD, temperature: 7 }), 400, 'invalid_value', 'temperature');
    await expectError(await chat({ ...GOOD, max_tokens: 1.5 }), 400, 'invalid_type', 'max_tokens');
    await expectError(await chat({ ...GOOD, max_tokens: 0 }), 400, 'invalid_value', 'max_tokens');
    await expectError(await chat({ ...GOOD, stream: 'yes' }), 400, 'invalid_type', 'stream');
    await expectError(await chat({ ...GOOD, stop: 5 }), 400, 'invalid_type', 'stop');
    await expectError(await chat({ ...GOOD, stop: ['a', 3] }), 400, 'invalid_type', 'stop[1]');
    await expectError(await chat({ ...GOOD, tools: {} }), 400, 'invalid_type', 'tools');
    await expectError(await chat({ ...GOOD, tool_choice: 'sometimes', tools: [] }), 400, 'invalid_value', 'tool_choice');
    await expectError(await chat({ ...GOOD, seed: 'x' }), 400, 'invalid_type', 'seed');
    await expectError(await chat({ ...GOOD, chat_template_kwargs: { enable_thinking: 'no' } }), 400, 'invalid_type',
                      'chat_template_kwargs.enable_thinking');
    await expectError(await chat(userWith({ type: 'image_url', image_url: { url: 42 } })), 400, 'invalid_type',
                      'messages[0].content[0].image_url.url');
    await expectError(await chat({ ...GOOD, n: 2 }), 400, 'invalid_value', 'n');
    await expectError(await chat({ ...GOOD, logprobs: true }), 400, 'unsupported', 'logprobs');
  })],
  ['empty_messages', withServer([], async (srv, chat) => {
    await expectError(await chat({ ...GOOD, messages: [] }), 400, 'invalid_value', 'messages');
    await expectError(await chat({ model: 'tiny' }), 400, 'missing_field', 'messages');
    // Only a system message: the template itself refuses (no user query).
    await expectError(await chat({ ...GOOD, messages: [{ role: 'system', content: 'x' }] }), 400, 'invalid_request');
  })],
  ['bad_base64', withServer([], async (srv, chat) => {
    const r = await chat(userWith(text('look'), { type: 'image_url', image_url: { url: 'data:image/png;base64,@@not base64@@' } }));
    await expectError(r, 400, 'invalid_request', 'messages[0].content[1].image_url.url');
    assert.match(r.json.error.message, /invalid base64/);
    // The same through the streaming path: still a JSON error, before any event.
    const s = await chat({ ...userWith({ type: 'image_url', image_url: { url: 'data:image/png;base64,%%%' } }), stream: true });
    await expectError(s, 400, 'invalid_request', 'messages[0].content[0].image_url.url');
  })],
  ['corrupt_image', withServer([], async (srv, chat) => {
    const junk = `data:image/png;base64,${Buffer.from('this is not an image at all').toString('base64')}`;
    const r1 = await chat(userWith(text('a'), { type: 'image_url', image_url: { url: junk } }));
    await expectError(r1, 400, 'invalid_image', 'messages[0].content[1].image_url.url');
    const png = readFileSync(IMG.a);
    const cut = `data:image/png;base64,${png.subarray(0, png.length / 2).toString('base64')}`;
    const r2 = await chat(userWith(imagePart(IMG.b), { type: 'image_url', image_url: { url: cut } }));
    await expectError(r2, 400, 'invalid_image', 'messages[0].content[1].image_url.url');
  })],
  ['oversized_image', withServer(['--max-image-pixels', '4000'], async (srv, chat) => {
    // A PNG header claiming 100000 x 100000 pixels is refused before anything is decoded...
    const r = await chat(userWith(text('big'), imagePart(IMG.bomb)));
    await expectError(r, 400, 'image_too_large', 'messages[0].content[1].image_url.url');
    // ...and so is a real 128 x 96 image over --max-image-pixels 4000.
    await expectError(await chat(userWith(imagePart(IMG.b))), 400, 'image_too_large', 'messages[0].content[0].image_url.url');
  })],
  ['too_many_images', withServer(['--max-images', '2'], async (srv, chat) => {
    const r = await chat(userWith(imagePart(IMG.a), imagePart(IMG.c), text('x'), imagePart(IMG.d)));
    await expectError(r, 400, 'too_many_images', 'messages[0].content[3]');
    const ok = await chat(userWith(imagePart(IMG.a), imagePart(IMG.c), text('two is fine')));
    assert.equal(ok.status, 200, ok.text);
  })],
  ['body_too_large', withServer(['--max-body', '64K'], async (srv, chat) => {
    const big = { ...GOOD, messages: [{ role: 'user', content: 'x'.repeat(100 * 1024) }] };
    await expectError(await chat(big), 413, 'request_too_large');
    // Without a Content-Length (chunked), the limit holds as the body arrives.
    const head = `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
                 `Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n`;
    const chunks = Array.from({ length: 20 }, () => 'y'.repeat(8192));
    const raw = await rawRequest(srv.port, head, chunks);
    assert.match(raw, /^HTTP\/1\.1 413/);
    assert.match(raw, /"code":"request_too_large"/);
  })],
  ['prompt_over_context', withServer(['--ctx', '64'], async (srv, chat) => {
    const long = { ...GOOD, messages: [{ role: 'user', content: 'word '.repeat(200) }] };
    await expectError(await chat(long), 400, 'context_length_exceeded', 'messages');
    await expectError(await chat({ ...long, stream: true }), 400, 'context_length_exceeded');
    // Images count with their expanded tokens: one fits, four do not.
    assert.equal((await chat(userWith(imagePart(IMG.b), text('x')))).status, 200);
    const four = [IMG.b, IMG.b, IMG.b, IMG.b].map(imagePart);
    await expectError(await chat(userWith(...four, text('x'))), 400,
                      'context_length_exceeded');
    // A short prompt's answer stops when the context is full.
    const r = await chat({ ...GOOD, max_tokens: 1000 });
    assert.equal(r.status, 200);
    assert.equal(r.json.choices[0].finish_reason === 'length' || r.json.choices[0].finish_reason === 'stop', true);
    assert.ok(r.json.usage.total_tokens <= 64, `${r.json.usage.total_tokens} tokens in a context of 64`);
  })],
  ['unknown_route', withServer([], async (srv) => {
    for (const path of ['/v2/chat', '/v1/completions', '/v1/chat/completions/x']) {
      const res = await fetch(`${srv.url}${path}`);
      await expectError({ status: res.status, text: await res.clone().text(), json: await res.json(), headers: res.headers }, 404,
                        'not_found');
    }
  })],
  ['wrong_method', withServer([], async (srv) => {
    for (const [method, path, allow] of [['GET', '/v1/chat/completions', 'POST'], ['PUT', '/v1/chat/completions', 'POST'],
                                         ['POST', '/health', 'GET'], ['DELETE', '/v1/models', 'GET']]) {
      const res = await fetch(`${srv.url}${path}`, { method });
      const body = await res.text();
      await expectError({ status: res.status, text: body, json: JSON.parse(body), headers: res.headers }, 405, 'method_not_allowed');
      assert.equal(res.headers.get('allow'), allow);
    }
  })],
  ['auth', withServer(['--api-key', 's3cret'], async (srv, chat) => {
    await expectError(await chat(GOOD), 401, 'invalid_api_key');
    await expectError(await chat(GOOD, { headers: { Authorization: 'Bearer wrong' } }), 401, 'invalid_api_key');
    await expectError(await chat(GOOD, { headers: { Authorization: 'Bearer s3cre' } }), 401, 'invalid_api_key');
    await expectError(await chat(GOOD, { headers: { Authorization: 's3cret' } }), 401, 'invalid_api_key');
    const m = await fetch(`${srv.url}/metrics`);
    assert.equal(m.status, 401);
    assert.equal((await fetch(`${srv.url}/v1/models`)).status, 401);
    assert.equal((await fetch(`${srv.url}/health`)).status, 200, '/health needs no key');
    assert.equal((await fetch(`${srv.url}/`)).status, 200, 'the page needs no key');
    assert.equal((await fetch(`${srv.url}/v1/models`, { headers: { Authorization: 'Bearer s3cret' } })).status, 200);
  }, { Authorization: 'Bearer s3cret' })],
  ['auth_from_env', async () => {
    const srv = await startServer(['-m', MOE], { env: { QVLM_API_KEY: 'from-env' } });
    try {
      await expectError(await post(`${srv.url}/v1/chat/completions`, GOOD), 401, 'invalid_api_key');
      await expectGood(srv, { Authorization: 'Bearer from-env' });
    } finally {
      await srv.stop();
    }
  }],
  ['local_paths', withServer(['--allow-dir', `${MOE}/../images`], async (srv, chat) => {
    const at = (url) => userWith({ type: 'image_url', image_url: { url } }, text('x'));
    await expectError(await chat(at('/etc/passwd')), 400, 'invalid_request', 'messages[0].content[0].image_url.url');
    await expectError(await chat(at(`${MOE}/../images/../model/config.json`)), 400, 'invalid_request');
    await expectError(await chat(at('https://example.com/a.png')), 400, 'unsupported', 'messages[0].content[0].image_url.url');
    const ok = await chat(at(`file://${IMG.a}`));
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json.timings.images_encoded, 1);
  })],
  ['queue_full', withServer(['--parallel', '1', '--queue', '0'], async (srv, chat) => {
    const first = await longStream(srv);
    const r = await chat(GOOD);
    await expectError(r, 503, 'overloaded');
    assert.equal(r.headers.get('retry-after'), '1');
    first.abort();
    await waitFor('the slot to free', async () => (await metrics(srv.url)).qvlm_slots_busy === 0);
  })],
  ['disconnect_midstream', withServer(['--parallel', '1'], async (srv) => {
    const s = await longStream(srv, 5);
    s.abort();
    await waitFor('the cancel', async () => (await metrics(srv.url)).qvlm_requests_cancelled_total === 1);
    const m = await metrics(srv.url);
    assert.equal(m.qvlm_slots_busy, 0);
    assert.ok(m.qvlm_generated_tokens_total < 1000, 'the generation stopped long before max_tokens');
  })],
  ['disconnect_while_queued', withServer(['--parallel', '1', '--queue', '4'], async (srv) => {
    const first = await longStream(srv);
    const ac = new AbortController();
    const queued = fetch(`${srv.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(LONG), signal: ac.signal,
    }).catch((e) => e);
    await waitFor('the request to queue', async () => (await metrics(srv.url)).qvlm_queue_length === 1);
    ac.abort();
    assert.equal((await queued).name, 'AbortError');
    first.abort();
    await waitFor('both cancels', async () => (await metrics(srv.url)).qvlm_requests_cancelled_total === 2);
    assert.equal((await metrics(srv.url)).qvlm_requests_total, 0, 'neither was answered');
  })],
  ['nul_in_strings', withServer([], async (srv, chat) => {
    // Models can generate U+0000; clients send such answers back in the next turn.
    const msgs = [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'x\u0000y' }, { role: 'user', content: 'b' }];
    const r = await chat({ ...GOOD, messages: msgs });
    assert.equal(r.status, 200, r.text);
  })],
  ['metrics', withServer([], async (srv, chat) => {
    const req = userWith(imagePart(IMG.c), text('x'));
    for (let i = 0; i < 2; i++) assert.equal((await chat(req)).status, 200);
    await expectError(await chat('{', { raw: true }), 400, 'invalid_json');
    const m = await metrics(srv.url);
    assert.equal(m.qvlm_requests_total, 2);
    assert.equal(m.qvlm_generated_tokens_total, 8);
    assert.equal(m.qvlm_images_encoded_total, 1, 'the second request reuses the image');
    assert.equal(m.qvlm_images_reused_total, 1);
    assert.ok(m.qvlm_prompt_tokens_reused_total > 0 && m.qvlm_cache_hits_total >= 1 && m.qvlm_cache_bytes > 0);
    assert.equal(m['qvlm_http_responses_total{class="2xx"}'], 2);
    assert.equal(m['qvlm_http_responses_total{class="4xx"}'], 1);
    // The time-to-first-token histogram: cumulative buckets ending in +Inf = count.
    const buckets = Object.entries(m).filter(([k]) => k.startsWith('qvlm_time_to_first_token_seconds_bucket'));
    assert.equal(buckets.length, 12);
    for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i][1] >= buckets[i - 1][1], 'cumulative');
    assert.equal(m['qvlm_time_to_first_token_seconds_bucket{le="+Inf"}'], 2);
    assert.equal(m.qvlm_time_to_first_token_seconds_count, 2);
    assert.ok(m.qvlm_time_to_first_token_seconds_sum > 0);
  })],
  ['sse_stream_shape', withServer([], async (srv, chat) => {
    const r = await chat({ ...GOOD, stream: true, max_tokens: 6 });
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /text\/event-stream/);
    const { events, done } = parseSse(r.text);
    assert.ok(done, 'ends with data: [DONE]');
    assert.equal(events[0].choices[0].delta.role, 'assistant');
    assert.ok(events.every((e) => e.object === 'chat.completion.chunk' && e.id === events[0].id));
    assert.equal(events.at(-1).choices[0].finish_reason, 'length');
    assert.equal(events.at(-1).timings.predicted_n, 6);
  })],
];

const only = process.argv[2];
process.exit((await runCases(CASES, { only })) ? 1 : 0);
