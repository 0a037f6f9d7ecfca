// Drives a deepseek-run server with the official openai npm package.
// Usage: node openai.mjs http://127.0.0.1:PORT   (run by ../../openai_node_test.go)
// Exits non-zero with a message on the first failed check.
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const base = process.argv[2];
if (!base) {
  console.error('usage: node openai.mjs BASE_URL');
  process.exit(2);
}
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'test-key', maxRetries: 0, timeout: 60_000 });
const model = 'stories260k';
const messages = [{ role: 'user', content: 'Once upon a time' }];
let checks = 0;
const check = (name, fn) => fn().then(() => { checks++; console.log(`ok ${name}`); });

// Joins a streamed chat reply; returns the text, finish reason and usage.
async function chatStream(params) {
  const stream = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  let text = '', finish = null, usage = null, role = null;
  const logprobs = [];
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      if (c.delta.role) role = c.delta.role;
      if (c.delta.content) text += c.delta.content;
      if (c.logprobs?.content) logprobs.push(...c.logprobs.content);
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  return { text, finish, usage, role, logprobs };
}

async function completionStream(params) {
  const stream = await client.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  let text = '', finish = null, usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.text;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  return { text, finish, usage };
}

await check('models.list', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.ok(ids.includes(model), `models: ${ids}`);
});

const sampled = { model, messages, max_tokens: 24, temperature: 0.8, seed: 42 };
let whole;
await check('chat, not streamed', async () => {
  whole = await client.chat.completions.create(sampled);
  assert.equal(whole.object, 'chat.completion');
  assert.equal(whole.choices.length, 1);
  assert.equal(whole.choices[0].message.role, 'assistant');
  assert.ok(whole.choices[0].message.content.length > 0);
  assert.equal(whole.choices[0].finish_reason, 'length');
  assert.deepEqual([whole.usage.prompt_tokens, whole.usage.completion_tokens, whole.usage.total_tokens], [5, 24, 29]);
});

await check('chat, streamed, same seed, usage', async () => {
  const s = await chatStream(sampled);
  assert.equal(s.role, 'assistant');
  assert.equal(s.text, whole.choices[0].message.content);
  assert.equal(s.finish, 'length');
  assert.equal(s.usage.completion_tokens, 24);
  assert.equal(s.usage.prompt_tokens, 5);
});

await check('completions, streamed and not', async () => {
  const params = { model, prompt: 'Once upon a time', max_tokens: 16, temperature: 0.7, seed: 7 };
  const c = await client.completions.create(params);
  assert.equal(c.object, 'text_completion');
  assert.equal(c.choices[0].finish_reason, 'length');
  assert.equal(c.usage.completion_tokens, 16);
  const s = await completionStream(params);
  assert.equal(s.text, c.choices[0].text);
  assert.equal(s.usage.total_tokens, c.usage.total_tokens);
});

await check('stop strings, streamed and not', async () => {
  // temperature 0: greedy (the model's generation_config samples by default).
  const greedy = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 30, temperature: 0 });
  const text = greedy.choices[0].text;
  const at = text.indexOf(' was ');
  assert.ok(at > 0, text);
  const stop = text.slice(at + 2, at + 6); // spans two tokens
  const c = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 30, temperature: 0, stop: [stop, 'zzz'] });
  assert.equal(c.choices[0].text, text.slice(0, at + 2));
  assert.equal(c.choices[0].finish_reason, 'stop');
  const s = await completionStream({ model, prompt: 'Once upon a time', max_tokens: 30, temperature: 0, stop });
  assert.equal(s.text, text.slice(0, at + 2));
  assert.equal(s.finish, 'stop');
  const chat = await client.chat.completions.create({ model, messages, max_tokens: 30, temperature: 0, stop });
  assert.equal(chat.choices[0].message.content, text.slice(0, at + 2));
  assert.equal(chat.choices[0].finish_reason, 'stop');
});

await check('logprobs, chat and completions', async () => {
  const c = await client.chat.completions.create({ model, messages, max_tokens: 6, logprobs: true, top_logprobs: 2, seed: 11 });
  const lps = c.choices[0].logprobs.content;
  assert.equal(lps.length, 6);
  for (const lp of lps) {
    assert.ok(lp.logprob <= 0);
    assert.equal(lp.top_logprobs.length, 2);
    assert.ok(lp.top_logprobs[0].logprob >= lp.top_logprobs[1].logprob);
  }
  assert.equal(lps.map((lp) => lp.token).join(''), c.choices[0].message.content);
  const s = await chatStream({ model, messages, max_tokens: 6, logprobs: true, top_logprobs: 2, seed: 11 });
  assert.deepEqual(s.logprobs.map((lp) => lp.logprob), lps.map((lp) => lp.logprob));
  const k = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 5, logprobs: 3 });
  assert.equal(k.choices[0].logprobs.tokens.length, 5);
  assert.equal(k.choices[0].logprobs.token_logprobs.length, 5);
  assert.equal(Object.keys(k.choices[0].logprobs.top_logprobs[0]).length, 3);
});

await check('n choices', async () => {
  const c = await client.chat.completions.create({ model, messages, max_tokens: 5, n: 3, temperature: 1, seed: 3 });
  assert.deepEqual(c.choices.map((x) => x.index), [0, 1, 2]);
  assert.equal(c.usage.completion_tokens, 15);
});

await check('errors are typed', async () => {
  await assert.rejects(client.chat.completions.create({ model: 'nope', messages }), (e) => e instanceof OpenAI.NotFoundError && e.status === 404);
  await assert.rejects(client.chat.completions.create({ model, messages, max_tokens: 100000 }),
    (e) => e instanceof OpenAI.BadRequestError && /max_tokens 100000/.test(e.message) && /512/.test(e.message));
  await assert.rejects(client.chat.completions.create({ model, messages, temperature: 5 }), (e) => e instanceof OpenAI.BadRequestError);
});

console.log(`all ${checks} checks passed`);
