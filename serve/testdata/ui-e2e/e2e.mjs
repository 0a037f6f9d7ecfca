// End-to-end test of the chat page of deepseek-run serve in headless
// Chromium, driven with playwright-core. ../../ui_test.go starts the
// servers and runs:
//
//   node e2e.mjs CONFIG_JSON
//
// CONFIG_JSON: {"chromium": path, "userDataDir": dir, "screenshot": path,
// "keyed": url of a server with --api-key, "key": that key, "open": url
// of a server without one, "guarded": the keyed server behind a proxy
// that wants the key for /metrics too}. The keyed server serves "stories260k" (the
// real engine) and "fake-r1" (a slow fake reasoning model whose reply
// holds <script>, HTML and Markdown). It prints one line per check and
// "all N checks passed" at the end, or exits 1 at the first failure.

import { chromium } from "playwright-core";

const cfg = JSON.parse(process.argv[2]);
const WAIT = { timeout: 20000 };
let checks = 0;

function check(cond, what, detail) {
  if (!cond) throw new Error(`FAIL: ${what}${detail === undefined ? "" : ": " + JSON.stringify(detail)}`);
  checks++;
  console.log(`ok ${checks} - ${what}`);
}

// metric reads one sample from a server's /metrics (null when absent).
async function metric(base, name, labels) {
  const text = await (await fetch(base + "/metrics")).text();
  for (const line of text.split("\n")) {
    if (line.startsWith(name + "{") && labels.every((l) => line.includes(l))) return Number(line.split(" ").pop());
  }
  return null;
}

// waitMetric polls a sample until it equals want (the server updates its
// counters just after the generation ends); it returns the last value.
async function waitMetric(base, name, labels, want) {
  let v = null;
  for (let i = 0; i < 100 && v !== want; i++) {
    if (i) await new Promise((r) => setTimeout(r, 100));
    v = await metric(base, name, labels);
  }
  return v;
}

// watchErrors records console errors and uncaught exceptions of a page.
function watchErrors(page) {
  const errors = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`console: ${m.text()} (${m.location().url})`);
  });
  page.on("pageerror", (e) => errors.push(`uncaught: ${e.message}`));
  return errors;
}

// lengthsOf records, in the page, the text lengths that the last
// assistant message body goes through (to see text arrive in pieces).
async function recordLengths(page) {
  await page.evaluate(() => {
    window.__lengths = [];
    const log = document.getElementById("log");
    new MutationObserver(() => {
      const bodies = log.querySelectorAll(".msg.assistant .body");
      const b = bodies[bodies.length - 1];
      if (b && b.textContent.length !== window.__lengths[window.__lengths.length - 1]) window.__lengths.push(b.textContent.length);
    }).observe(log, { childList: true, subtree: true, characterData: true });
  });
}

// send types a message, presses Enter and returns the request the page
// made.
async function send(page, text) {
  await page.fill("#input", text);
  const [req] = await Promise.all([
    page.waitForRequest((r) => r.url().endsWith("/v1/chat/completions") && r.method() === "POST", WAIT),
    page.press("#input", "Enter"),
  ]);
  return req;
}

const lastReply = ".msg.assistant >> nth=-1";

const ctx = await chromium.launchPersistentContext(cfg.userDataDir, {
  executablePath: cfg.chromium,
  headless: true,
  viewport: { width: 1280, height: 860 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
try {
  // ---- a server with --api-key ----
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  const errors = watchErrors(page);
  const resp = await page.goto(cfg.keyed + "/");
  check(resp.status() === 200, "GET / answers 200 without the key", resp.status());
  await page.waitForSelector("#key-dialog[open]", WAIT);
  check(true, "the page asks for the API key");
  // The status strip reads /metrics, which the server leaves open.
  await page.waitForFunction(() => document.getElementById("st-running").textContent === "0", null, WAIT);
  check(true, "the status strip shows 0 running requests before the key is given");
  // A wrong key: the server refuses it and the page asks again, saying so.
  await page.fill("#key-input", "not-the-key");
  await page.click("#key-save");
  await page.waitForFunction(() => !document.getElementById("key-error").hidden, null, WAIT);
  const refused = await page.textContent("#key-error");
  check(await page.isVisible("#key-dialog") && refused.includes("refused") && refused.includes("invalid API key"),
    "a wrong key is refused and asked for again", refused);
  const [modelsReq] = await Promise.all([
    page.waitForRequest((r) => r.url().endsWith("/v1/models"), WAIT),
    page.fill("#key-input", cfg.key).then(() => page.click("#key-save")),
  ]);
  check(modelsReq.headers()["authorization"] === "Bearer " + cfg.key, "the key is sent as Bearer", modelsReq.headers()["authorization"]);
  await page.waitForSelector("body[data-ready=true]", WAIT);
  const models = await page.$$eval("#model option", (os) => os.map((o) => o.value));
  check(models.includes("stories260k") && models.includes("fake-r1"), "the model picker lists /v1/models", models);

  // Settings: system prompt and sampling go into the request.
  await page.selectOption("#model", "stories260k");
  await page.click("#settings-button");
  await page.fill("#system", "You are a storyteller.");
  await page.fill("#temperature", "0");
  await page.fill("#max_tokens", "40");
  await recordLengths(page);
  let req = await send(page, "Once upon a time");
  let body = req.postDataJSON();
  check(req.headers()["authorization"] === "Bearer " + cfg.key, "the chat request carries the key");
  check(body.model === "stories260k" && body.stream === true && body.temperature === 0 && body.max_tokens === 40,
    "the request streams with the chosen model and settings", body);
  check(JSON.stringify(body.messages) === JSON.stringify([{ role: "system", content: "You are a storyteller." },
    { role: "user", content: "Once upon a time" }]), "system prompt then the user's message", body.messages);
  await page.waitForSelector(".msg.assistant[data-finish]", WAIT);
  let reply = page.locator(lastReply);
  let text = await reply.locator(".body").textContent();
  check(text.trim().length > 20, "the real engine's streamed reply arrives", text);
  check((await reply.getAttribute("data-finish")) === "length", "it ends at max_tokens");
  const meta = await reply.locator(".meta").textContent();
  check(meta.includes("40 tokens"), "usage is shown", meta);
  check(await page.isVisible("#send") && !(await page.isVisible("#stop")), "Send is back and Stop hidden after the reply");

  // A second turn sends the history.
  req = await send(page, "What happened next?");
  body = req.postDataJSON();
  check(body.messages.length === 4 && body.messages[2].role === "assistant" && body.messages[2].content.trim() === text.trim() &&
    body.messages[3].content === "What happened next?", "the second turn sends the history", body.messages);
  await page.waitForFunction(() => document.querySelectorAll(".msg.assistant[data-finish]").length === 2, null, WAIT);
  check(true, "the second reply finishes");

  // ---- the fake reasoning model: thinking apart, HTML shown as text, Stop ----
  await page.fill("#max_tokens", "");
  await page.selectOption("#model", "fake-r1");
  await recordLengths(page);
  req = await send(page, "Show me some HTML");
  check(req.postDataJSON().max_tokens === undefined, "an empty field leaves the model's default");
  reply = page.locator(lastReply);
  await page.waitForFunction(() => {
    const b = [...document.querySelectorAll(".msg.assistant .body")].pop();
    return b.textContent.includes("lazy dog");
  }, null, WAIT);
  const thinking = reply.locator("details.thinking");
  check(await thinking.isVisible(), "the thinking is shown apart from the answer");
  check(!(await thinking.evaluate((d) => d.open)), "the thinking is folded by default");
  check(!(await reply.locator(".body").textContent()).includes("Let me think"), "the thinking is not in the answer");
  const answer = await reply.locator(".body").textContent();
  check(answer.includes("<script>window.__xss=1</script>") && answer.includes('<img src=x onerror="window.__xss=2">'),
    "<script> and HTML in the reply are shown as text", answer.slice(0, 200));
  const injected = await page.evaluate(() => ({
    scripts: document.querySelectorAll("#log script").length,
    imgs: document.querySelectorAll("#log img").length,
    iframes: document.querySelectorAll("#log iframe").length,
    handlers: [...document.querySelectorAll("#log *")].filter((e) => [...e.attributes].some((a) => a.name.startsWith("on"))).length,
    xss: window.__xss,
  }));
  check(injected.scripts === 0 && injected.imgs === 0 && injected.iframes === 0 && injected.handlers === 0 && injected.xss === undefined,
    "no element or handler from the reply reached the page", injected);
  check((await reply.locator(".body strong").first().textContent()) === "bold", "Markdown bold is rendered");
  const code = await reply.locator(".body .code pre code").first().textContent();
  check(code === '<script>alert("code")</script>\n<b>not bold</b>', "a fenced code block keeps its text verbatim", code);
  const links = await reply.locator(".body a").evaluateAll((as) => as.map((a) => [a.getAttribute("href"), a.rel, a.textContent]));
  check(JSON.stringify(links) === JSON.stringify([["https://example.com/docs", "noopener noreferrer nofollow", "docs"]]),
    "only the https link became a link (javascript: stays text)", links);

  // The status strip sees the running request, Stop aborts it, and the
  // server frees the sequence.
  await page.waitForFunction(() => document.getElementById("st-running").textContent === "1", null, WAIT);
  check(true, "the status strip shows the running request");
  check(await page.isVisible("#stop"), "Stop is offered while the reply streams");
  await page.click("#stop");
  await page.waitForSelector(".msg.assistant[data-finish=stopped]", WAIT);
  check(true, "Stop ends the reply");
  const lengths = await page.evaluate(() => window.__lengths);
  check(lengths.length >= 5, "the text arrived in pieces while streaming", lengths.length);
  const stoppedAt = (await reply.locator(".body").textContent()).length;
  await page.waitForFunction(() => document.getElementById("st-running").textContent === "0", null, WAIT);
  check(true, "the status strip shows the running requests back at 0");
  check(await waitMetric(cfg.keyed, "deepseek_requests_running", ['model="fake-r1"'], 0) === 0, "the server's running gauge is 0");
  check(await waitMetric(cfg.keyed, "deepseek_requests_total", ['finish_reason="cancelled"', 'model="fake-r1"'], 1) === 1,
    "the server counted the request as cancelled");
  await page.waitForTimeout(300);
  check((await reply.locator(".body").textContent()).length === stoppedAt, "no text arrives after Stop");
  const tps = await page.textContent("#st-tps");
  check(/^\d+(\.\d)?$/.test(tps), "the status strip shows tokens/s", tps);
  const ttft = await page.textContent("#st-ttft");
  check(/^\d+ ms$|^\d+\.\d\d s$/.test(ttft), "the status strip shows the P99 time to first token", ttft);
  const kv = await page.textContent("#st-kv");
  check(/^\d+(\.\d\d)?%$/.test(kv), "the status strip shows the KV-cache usage", kv);

  await thinking.locator("summary").click();
  check(await thinking.evaluate((d) => d.open), "the thinking unfolds on a click");
  const thought = await thinking.locator(".think-body").textContent();
  check(thought.includes("Let me think about <b>tags</b>."), "the thinking is shown as text", thought);

  // ---- the renderer, fed the hostile inputs directly ----
  const cases = await page.evaluate(async () => {
    const { renderMarkdown } = await import("/ui/markdown.js");
    const html = (md) => {
      const d = document.createElement("div");
      d.appendChild(renderMarkdown(md));
      return d.innerHTML;
    };
    const t = [
      ["<script>alert(1)</script>", "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"],
      ["<img src=x onerror=alert(1)>", "<p>&lt;img src=x onerror=alert(1)&gt;</p>"],
      ['a "q" & <b>b</b>', "<p>a \"q\" &amp; &lt;b&gt;b&lt;/b&gt;</p>"],
      ["[x](javascript:alert(1))", "<p>[x](javascript:alert(1))</p>"],
      ["[x](data:text/html,<script>1</script>)", "<p>[x](data:text/html,&lt;script&gt;1&lt;/script&gt;)</p>"],
      ["[x](https://a.example/?q=<b>)", '<p><a href="https://a.example/?q=%3Cb%3E" target="_blank" rel="noopener noreferrer nofollow">x</a></p>'],
      ["**<i>b</i>**", "<p><strong>&lt;i&gt;b&lt;/i&gt;</strong></p>"],
      ["`<i>` and *em* and snake_case_name", "<p><code>&lt;i&gt;</code> and <em>em</em> and snake_case_name</p>"],
      ["# Title <x>", "<h3>Title &lt;x&gt;</h3>"],
      ["- a\n- **b**\n  - c", "<ul><li>a</li><li><p><strong>b</strong></p><ul><li>c</li></ul></li></ul>"],
      ["3. a\n4. b", '<ol start="3"><li>a</li><li>b</li></ol>'],
      ["> <q>", "<blockquote><p>&lt;q&gt;</p></blockquote>"],
      ["~~gone~~\n\n---", "<p><del>gone</del></p><hr>"],
      ["line one\nline two", "<p>line one<br>line two</p>"],
    ];
    const code = html("```js\nif (a < b) {}\n```");
    const open = html("```\nstill streaming <b>");
    return { results: t.map(([md, want]) => [md, html(md), want]), code, open };
  });
  for (const [md, got, want] of cases.results) check(got === want, `renderer: ${JSON.stringify(md)}`, { got, want });
  check(cases.code.includes('<code data-lang="js">if (a &lt; b) {}</code>'), "renderer: a fenced block with a language", cases.code);
  check(cases.open.includes("<code>still streaming &lt;b&gt;</code>"), "renderer: an unclosed fence is a code block", cases.open);

  // ---- the status strip's arithmetic ----
  const q = await page.evaluate(async () => {
    const m = await import("/ui/metrics.js");
    const s = m.parseMetrics('# HELP x\ndeepseek_requests_running{model="a"} 2\ndeepseek_requests_running{model="b"} 1\n' +
      'deepseek_time_to_first_token_seconds_bucket{model="a",le="0.1"} 50\ndeepseek_time_to_first_token_seconds_bucket{model="a",le="0.2"} 100\n' +
      'deepseek_time_to_first_token_seconds_bucket{model="a",le="+Inf"} 100\ngo_goroutines 7\n');
    return { a: m.sum(s, "deepseek_requests_running", "a"), all: m.sum(s, "deepseek_requests_running", ""), n: s.length,
      p99: m.quantile(0.99, m.buckets(s, "deepseek_time_to_first_token_seconds", "a")),
      p50: m.quantile(0.5, m.buckets(s, "deepseek_time_to_first_token_seconds", "a")) };
  });
  check(q.a === 2 && q.all === 3 && q.n === 5, "metrics: samples parsed and summed per model", q);
  check(Math.abs(q.p99 - 0.198) < 1e-9 && Math.abs(q.p50 - 0.1) < 1e-9, "metrics: quantiles interpolate as histogram_quantile", q);

  await page.screenshot({ path: cfg.screenshot });
  check(true, "screenshot saved");
  // Chromium logs the refused request of the wrong key; that one only.
  const refusals = errors.filter((e) => /Failed to load resource: the server responded with a status of 401 .*\/v1\/models/.test(e));
  check(refusals.length === 1, "the wrong key's 401 was logged once by the browser", errors);
  check(errors.length === refusals.length, "no other console errors on the keyed server's page", errors);

  // ---- a server without --api-key ----
  const page2 = await ctx.newPage();
  const errors2 = watchErrors(page2);
  await page2.goto(cfg.open + "/");
  await page2.waitForSelector("body[data-ready=true]", WAIT);
  check(!(await page2.isVisible("#key-dialog")) && !(await page2.isVisible("#key-button")), "without --api-key no key is asked");
  await page2.click("#settings-button");
  await page2.fill("#max_tokens", "8");
  req = await send(page2, "Once upon a time");
  check(req.headers()["authorization"] === undefined, "no Authorization header without a key");
  await page2.waitForSelector(".msg.assistant[data-finish=length]", WAIT);
  check((await page2.locator(lastReply).locator(".body").textContent()).trim() !== "", "a reply arrives without a key");
  await page2.waitForFunction(() => document.getElementById("st-running").textContent === "0", null, WAIT);
  check(true, "the status strip works without a key");
  await page2.click("#clear");
  check(await page2.locator("#log .msg").count() === 0, "New chat empties the log");
  check(errors2.length === 0, "no console errors on the open server's page", errors2);

  // ---- /metrics behind a proxy that wants the key too ----
  const page3 = await ctx.newPage();
  const errors3 = watchErrors(page3);
  await page3.goto(cfg.guarded + "/");
  await page3.waitForSelector("#key-dialog[open]", WAIT);
  await page3.waitForFunction(() => document.getElementById("st-conn").title === "/metrics: needs an API key", null, WAIT);
  check(true, "a protected /metrics shows as needing the key");
  await page3.fill("#key-input", cfg.key);
  await page3.click("#key-save");
  await page3.waitForSelector("body[data-ready=true]", WAIT);
  await page3.waitForFunction(() => document.getElementById("st-running").textContent === "0" &&
    document.getElementById("st-conn").className === "conn ok", null, WAIT);
  check(true, "with the key the status strip reads the protected /metrics");
  const metrics401 = errors3.filter((e) => /status of 401 .*\/metrics/.test(e));
  check(metrics401.length === 1 && errors3.length === 1, "one 401 from /metrics before the key, no other console error", errors3);

  console.log(`all ${checks} checks passed`);
} catch (e) {
  console.log(e.message);
  process.exitCode = 1;
} finally {
  await ctx.close();
}
