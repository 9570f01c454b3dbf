// The official openai client (npm `openai`) against a running fp4lab serve: completions and chat, streamed
// and not, usage, stop strings, and the errors it must surface as its APIError classes.
// Usage: node openai_client_test.mjs BASE_URL MODEL API_KEY PROMPT
// Prints one line per check and exits 1 at the first failure.
import OpenAI from "openai";

const [baseURL, model, apiKey, prompt] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60000 });
let checks = 0;

function check(cond, what, detail) {
  if (!cond) {
    console.log(`FAIL ${what}: ${JSON.stringify(detail)}`);
    process.exit(1);
  }
  checks++;
  console.log(`ok ${what}`);
}

async function expectError(what, fn, status, code) {
  try {
    await fn();
  } catch (e) {
    check(e instanceof OpenAI.APIError, `${what}: APIError`, String(e));
    check(e.status === status, `${what}: status ${status}`, { status: e.status, message: e.message });
    if (code) check(e.code === code, `${what}: code ${code}`, { code: e.code, error: e.error });
    return;
  }
  check(false, `${what}: an error`, "the call succeeded");
}

const models = await client.models.list();
check(models.data.some((m) => m.id === model), "models.list lists the served model", models.data);

// Completions: whole and streamed give the same greedy text and usage.
const whole = await client.completions.create({ model, prompt, max_tokens: 6, temperature: 0 });
check(typeof whole.choices[0].text === "string" && whole.choices[0].text.length > 0, "completion text", whole);
check(["length", "stop"].includes(whole.choices[0].finish_reason), "completion finish_reason", whole.choices[0]);
check(whole.usage.completion_tokens >= 1 && whole.usage.completion_tokens <= 6, "completion usage", whole.usage);
check(whole.usage.total_tokens === whole.usage.prompt_tokens + whole.usage.completion_tokens, "usage total",
      whole.usage);

const stream = await client.completions.create({
  model, prompt, max_tokens: 6, temperature: 0, stream: true, stream_options: { include_usage: true },
});
let text = "", finish = null, usage = null;
for await (const chunk of stream) {
  if (chunk.usage) usage = chunk.usage;
  for (const c of chunk.choices) {
    text += c.text;
    if (c.finish_reason) finish = c.finish_reason;
  }
}
check(text === whole.choices[0].text, "streamed completion = whole completion", { text, whole: whole.choices[0].text });
check(finish === whole.choices[0].finish_reason, "streamed finish_reason", finish);
check(usage && usage.completion_tokens === whole.usage.completion_tokens &&
      usage.prompt_tokens === whole.usage.prompt_tokens, "stream_options.include_usage chunk", usage);

// Token-id prompts, as benchmarks send them.
const ids = await client.completions.create({ model, prompt: [1, 2, 3, 4], max_tokens: 3, temperature: 0 });
check(ids.usage.prompt_tokens === 4, "token-id prompt", ids.usage);

// Sampling with a seed repeats itself.
const s1 = await client.completions.create({ model, prompt, max_tokens: 8, temperature: 0.9, top_p: 0.95, seed: 7 });
const s2 = await client.completions.create({ model, prompt, max_tokens: 8, temperature: 0.9, top_p: 0.95, seed: 7 });
check(s1.choices[0].text === s2.choices[0].text, "seeded sampling is reproducible", [s1.choices[0].text, s2.choices[0].text]);

// A stop string cuts the text before it.
const long = await client.completions.create({ model, prompt, max_tokens: 12, temperature: 0 });
const full = long.choices[0].text;
if (full.length >= 4) {
  const stop = full.slice(2, 4);
  const cut = await client.completions.create({ model, prompt, max_tokens: 12, temperature: 0, stop: [stop] });
  check(cut.choices[0].text === full.slice(0, full.indexOf(stop)), "stop string cuts the text", {
    full, stop, got: cut.choices[0].text,
  });
  check(cut.choices[0].finish_reason === "stop", "stop string finish_reason", cut.choices[0]);
}

// Chat: whole and streamed.
const messages = [{ role: "user", content: prompt }];
const chat = await client.chat.completions.create({ model, messages, max_completion_tokens: 5, temperature: 0 });
check(chat.object === "chat.completion" && chat.choices[0].message.role === "assistant", "chat completion", chat);
check(typeof chat.choices[0].message.content === "string", "chat content", chat.choices[0]);
const chatStream = await client.chat.completions.create({
  model, messages, max_tokens: 5, temperature: 0, stream: true, stream_options: { include_usage: true },
});
let content = "", role = null, chatUsage = null;
for await (const chunk of chatStream) {
  if (chunk.usage) chatUsage = chunk.usage;
  for (const c of chunk.choices) {
    if (c.delta.role) role = c.delta.role;
    if (c.delta.content) content += c.delta.content;
  }
}
check(role === "assistant", "streamed chat role", role);
check(content === chat.choices[0].message.content, "streamed chat = whole chat", { content, whole: chat.choices[0].message });
check(chatUsage && chatUsage.completion_tokens === chat.usage.completion_tokens, "chat usage chunk", chatUsage);

// Errors.
await expectError("prompt past the context", () => client.completions.create({ model, prompt, max_tokens: 1 << 20 }),
                  400, "context_length_exceeded");
await expectError("wrong type", () => client.completions.create({ model, prompt, max_tokens: "many" }), 400);
await expectError("unknown model", () => client.completions.create({ model: "no-such-model", prompt, max_tokens: 2 }),
                  404, "model_not_found");
const wrongKey = new OpenAI({ baseURL, apiKey: "wrong-key", maxRetries: 0 });
await expectError("wrong API key", () => wrongKey.completions.create({ model, prompt, max_tokens: 2 }), 401,
                  "invalid_api_key");
console.log(`all ${checks} checks passed`);
