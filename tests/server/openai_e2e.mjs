// openai_e2e.mjs - a 3-turn image conversation through the official `openai` npm client,
// non-streaming and streaming, against `qvlm serve` on the tiny MoE model (2 slots sharing one
// cache, so turns may land on either session).
//
// Each turn resends the whole conversation. Turn N+1 must reuse all of turn N's prompt but its
// last 2 tokens: the generation prompt ends "<|im_start|>assistant\n<think>\n", and the template
// re-renders a past answer without its "<think>\n" ("<|im_start|>assistant\n" + content), so
// the two prompts part exactly there. The vision tower runs only for images new in the turn.
import assert from 'node:assert/strict';
import { MOE, IMG, imagePart, startServer, runCases, requireNode } from './lib.mjs';

const { OpenAI } = requireNode('openai');

const server = await startServer(['-m', MOE, '--parallel', '2']);
const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
const SAMPLING = { temperature: 1.0, top_p: 1.0, seed: 11, max_tokens: 24 };

async function askPlain(messages, extra = {}) {
  const r = await client.chat.completions.create({ model: 'tiny', messages, ...SAMPLING, ...extra });
  const m = r.choices[0].message;
  assert.equal(r.object, 'chat.completion');
  assert.equal(m.role, 'assistant');
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  return { content: m.content ?? '', reasoning: m.reasoning_content ?? '', usage: r.usage, timings: r.timings };
}

async function askStream(messages, extra = {}) {
  const stream = await client.chat.completions.create({
    model: 'tiny', messages, ...SAMPLING, ...extra, stream: true, stream_options: { include_usage: true },
  });
  let content = '', reasoning = '', usage = null, timings = null, finish = null, chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    const c = chunk.choices[0];
    if (c) {
      content += c.delta?.content ?? '';
      reasoning += c.delta?.reasoning_content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
    if (chunk.usage) usage = chunk.usage;
    if (chunk.timings) timings = chunk.timings;
  }
  assert.ok(chunks >= 3, `only ${chunks} chunks`);
  assert.ok(['stop', 'length'].includes(finish));
  assert.ok(usage, 'no usage chunk (stream_options.include_usage)');
  return { content, reasoning, usage, timings };
}

/* Three turns; images[t] are the images new in turn t. */
async function conversation(ask, images, label) {
  const messages = [{ role: 'system', content: `You describe pictures (${label}).` }];
  const texts = ['What is in this picture?', 'And how does this one differ?', 'Which of them is brighter?'];
  let prev = null;
  for (let t = 0; t < 3; t++) {
    messages.push({ role: 'user', content: [...images[t].map(imagePart), { type: 'text', text: texts[t] }] });
    const r = await ask(messages);
    const cached = r.usage.prompt_tokens_details.cached_tokens;
    console.log(`  ${label} turn ${t + 1}: prompt ${r.usage.prompt_tokens}, cached ${cached}, images encoded ` +
                `${r.timings.images_encoded}, cached ${r.timings.images_cached}, answer ${r.usage.completion_tokens} tokens`);
    assert.equal(r.timings.images_encoded, images[t].length, 'vision tower runs for new images only');
    assert.equal(r.timings.cached_n, cached);
    assert.equal(r.timings.prompt_n + cached, r.usage.prompt_tokens);
    assert.equal(r.timings.predicted_n, r.usage.completion_tokens);
    assert.ok(r.usage.completion_tokens > 0 && r.usage.completion_tokens <= SAMPLING.max_tokens);
    if (prev) {
      assert.ok(cached >= prev.usage.prompt_tokens - 2,
                `turn ${t + 1} reused ${cached} tokens of the previous prompt's ${prev.usage.prompt_tokens}`);
      const earlier = images.slice(0, t).flat().length;
      assert.equal(r.timings.images_cached, earlier, 'earlier images are reused');
    } else {
      assert.equal(cached, 0);
    }
    assert.ok(r.reasoning.length + r.content.length > 0, 'an answer of some text');
    messages.push({ role: 'assistant', content: r.content }); // clients send back the answer only
    prev = r;
  }
}

const failed = await runCases([
  ['plain 3-turn image conversation', () => conversation(askPlain, [[IMG.a], [IMG.b], []], 'plain')],
  ['streamed 3-turn image conversation (PNG, JPEG, WebP)', () => conversation(askStream, [[IMG.c], [IMG.d], [IMG.e]], 'stream')],
  ['thinking off per request (chat_template_kwargs and top level)', async () => {
    const msgs = [{ role: 'user', content: 'Say something.' }];
    const on = await askPlain(msgs, { seed: 5 });
    const off = await askPlain(msgs, { seed: 5, chat_template_kwargs: { enable_thinking: false } });
    const off2 = await askStream(msgs, { seed: 5, enable_thinking: false });
    // The thinking-off prompt closes an empty <think></think> block: 2 tokens longer here.
    assert.ok(off.usage.prompt_tokens > on.usage.prompt_tokens);
    assert.equal(off2.usage.prompt_tokens, off.usage.prompt_tokens);
    assert.ok(on.reasoning.length > 0 && on.content === '', 'thinking on: the answer stays inside <think>');
    assert.ok(off.content.length > 0, 'thinking off: an answer');
    assert.equal(off2.content, off.content, 'same seed, same answer, streamed or not');
  }],
  ['tools go to the template; stop strings cut the answer', async () => {
    const msgs = [{ role: 'user', content: 'Weather in Oslo?' }];
    const tools = [{ type: 'function', function: { name: 'get_weather', description: 'Weather for a city',
                     parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
    const plain = await askPlain(msgs, { chat_template_kwargs: { enable_thinking: false } });
    const withTools = await askPlain(msgs, { tools, chat_template_kwargs: { enable_thinking: false } });
    assert.ok(withTools.usage.prompt_tokens > plain.usage.prompt_tokens + 20, 'the tool schema is in the prompt');
    const none = await askPlain(msgs, { tools, tool_choice: 'none', chat_template_kwargs: { enable_thinking: false } });
    assert.equal(none.usage.prompt_tokens, plain.usage.prompt_tokens, 'tool_choice none leaves the tools out');
    // A stop string taken from the unstopped answer cuts it right before.
    const full = plain.content;
    assert.ok(full.length > 6);
    const stop = full.slice(3, 6);
    const cut = await askPlain(msgs, { stop: [stop], chat_template_kwargs: { enable_thinking: false } });
    assert.equal(cut.content, full.slice(0, full.indexOf(stop)).trimEnd());
  }],
]);
await server.stop();
process.exit(failed ? 1 : 0);
