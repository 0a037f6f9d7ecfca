// The chat page of deepseek-run serve. It talks only to the server's
// OpenAI API (/v1/models, /v1/chat/completions, streamed) and /metrics.
// Model output is rendered by markdown.js, which builds DOM nodes and
// never parses text as HTML.

import { renderMarkdown } from "./markdown.js";
import { parseMetrics, Status } from "./metrics.js";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "deepseek-go.api-key"; // sessionStorage: this tab only
const MODEL_STORE = "deepseek-go.model";
const METRICS_EVERY_MS = 1000;

const state = {
  key: sessionStorage.getItem(KEY_STORE) || "",
  authRequired: false,
  history: [], // {role, content} of finished turns, without the system prompt
  busy: null, // the AbortController of the reply being streamed
  status: new Status(),
};

class AuthError extends Error {}

function headers(extra = {}) {
  const h = { ...extra };
  if (state.key) h.Authorization = "Bearer " + state.key;
  return h;
}

// apiError reads an OpenAI error body into a message.
async function apiError(resp) {
  let msg = `${resp.status} ${resp.statusText}`;
  try {
    const j = await resp.json();
    if (j && j.error && j.error.message) msg = j.error.message;
  } catch {
    // not JSON: keep the status line
  }
  return resp.status === 401 ? new AuthError(msg) : new Error(msg);
}

// ---- API key ----

function askKey(message) {
  const dlg = $("key-dialog");
  $("key-button").hidden = false; // to change the key later
  $("key-error").hidden = !message;
  $("key-error").textContent = message || "";
  $("key-input").value = state.key;
  if (!dlg.open) dlg.showModal();
  $("key-input").focus();
}

$("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.key = $("key-input").value.trim();
  sessionStorage.setItem(KEY_STORE, state.key);
  $("key-dialog").close();
  loadModels();
});
$("key-button").addEventListener("click", () => askKey(""));

// ---- models ----

async function loadModels() {
  let resp;
  try {
    resp = await fetch("/v1/models", { headers: headers() });
  } catch (e) {
    showNotice("The server is not reachable: " + e.message);
    return;
  }
  if (!resp.ok) {
    const err = await apiError(resp);
    if (err instanceof AuthError) askKey(state.key ? "The server refused this key: " + err.message : "");
    else showNotice("Listing the models failed: " + err.message);
    return;
  }
  const list = await resp.json();
  const sel = $("model");
  const keep = sel.value || localStorage.getItem(MODEL_STORE);
  sel.replaceChildren();
  for (const m of list.data || []) {
    const o = document.createElement("option");
    o.value = m.id;
    o.textContent = m.id;
    sel.appendChild(o);
  }
  if (keep && [...sel.options].some((o) => o.value === keep)) sel.value = keep;
  $("empty").textContent = sel.options.length ? "Pick a model and say something." : "The server lists no models.";
  document.body.dataset.ready = "true";
  refreshStatus();
}

$("model").addEventListener("change", () => {
  localStorage.setItem(MODEL_STORE, $("model").value);
  refreshStatus();
});

// ---- status strip ----

function fmt(v, f) {
  return v === null || v === undefined || Number.isNaN(v) ? "–" : f(v);
}

function paintStatus() {
  const v = state.status.view($("model").value);
  $("st-running").textContent = fmt(v.running, String);
  $("st-waiting").textContent = fmt(v.waiting, String);
  $("st-kv").textContent = fmt(v.kv, (x) => (x * 100).toFixed(x > 0 && x < 0.01 ? 2 : 0) + "%");
  $("st-tps").textContent = fmt(v.tps, (x) => x.toFixed(x < 10 ? 1 : 0));
  $("st-ttft").textContent = fmt(v.ttft, (x) => (x < 1 ? (x * 1000).toFixed(0) + " ms" : x.toFixed(2) + " s"));
}

let statusTimer = 0;
async function refreshStatus() {
  clearTimeout(statusTimer);
  const conn = $("st-conn");
  try {
    // /metrics is open on this server; the key goes along in case a
    // proxy in front protects it.
    const resp = await fetch("/metrics", { headers: headers(), cache: "no-store" });
    if (resp.status === 401 || resp.status === 403) {
      // Protected (by a proxy: this server leaves /metrics open) and the
      // key does not open it: ask again only after a new key, not every
      // second.
      conn.className = "conn down";
      conn.title = "/metrics: needs an API key";
      return;
    }
    if (!resp.ok) throw new Error(`${resp.status} ${resp.statusText}`);
    state.status.add(Date.now(), parseMetrics(await resp.text()));
    conn.className = "conn ok";
    conn.title = "/metrics: up";
    paintStatus();
  } catch (e) {
    conn.className = "conn down";
    conn.title = "/metrics: " + e.message;
  }
  // Poll only while the tab is visible.
  if (!document.hidden) statusTimer = setTimeout(refreshStatus, METRICS_EVERY_MS);
}
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) refreshStatus();
});

// ---- settings ----

$("settings-button").addEventListener("click", () => {
  const s = $("settings");
  s.hidden = !s.hidden;
  $("settings-button").setAttribute("aria-expanded", String(!s.hidden));
});

function numberField(id, parse) {
  const raw = $(id).value.trim();
  if (raw === "") return undefined;
  const v = parse(raw);
  if (!Number.isFinite(v)) throw new Error(`${id}: "${raw}" is not a number`);
  return v;
}

function sampling() {
  const out = {};
  const set = (k, v) => { if (v !== undefined) out[k] = v; };
  set("temperature", numberField("temperature", parseFloat));
  set("top_p", numberField("top_p", parseFloat));
  set("top_k", numberField("top_k", (s) => parseInt(s, 10)));
  set("max_tokens", numberField("max_tokens", (s) => parseInt(s, 10)));
  set("seed", numberField("seed", (s) => parseInt(s, 10)));
  return out;
}

$("clear").addEventListener("click", () => {
  if (state.busy) state.busy.abort();
  state.history = [];
  $("log").replaceChildren($("empty"));
  $("empty").hidden = false;
});

// ---- chat ----

function showNotice(text) {
  const p = document.createElement("p");
  p.className = "notice error";
  p.textContent = text;
  $("log").appendChild(p);
  scrollDown();
}

function scrollDown() {
  const log = $("log");
  log.scrollTop = log.scrollHeight;
}

function addUserMessage(text) {
  $("empty").hidden = true;
  const div = document.createElement("div");
  div.className = "msg user";
  const body = document.createElement("div");
  body.className = "body";
  body.textContent = text; // the user's words, shown as typed
  div.appendChild(body);
  $("log").appendChild(div);
}

// Reply is an assistant message being streamed into the log.
class Reply {
  constructor(model) {
    this.el = document.createElement("div");
    this.el.className = "msg assistant streaming";
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = model;
    this.think = document.createElement("details");
    this.think.className = "thinking";
    this.think.hidden = true;
    const sum = document.createElement("summary");
    sum.textContent = "Thinking";
    this.thinkBody = document.createElement("div");
    this.thinkBody.className = "think-body";
    this.think.append(sum, this.thinkBody);
    this.body = document.createElement("div");
    this.body.className = "body";
    this.meta = document.createElement("div");
    this.meta.className = "meta";
    this.el.append(who, this.think, this.body, this.meta);
    $("log").appendChild(this.el);
    this.content = "";
    this.reasoning = "";
    this.pending = false;
    this.t0 = performance.now();
    this.tFirst = 0;
  }

  add(content, reasoning) {
    if (!this.tFirst && (content || reasoning)) this.tFirst = performance.now();
    this.content += content || "";
    this.reasoning += reasoning || "";
    // Render at most once a frame: a fast model sends many deltas.
    if (!this.pending) {
      this.pending = true;
      requestAnimationFrame(() => this.render());
    }
  }

  render() {
    this.pending = false;
    const stick = atBottom();
    if (this.reasoning) {
      this.think.hidden = false;
      this.thinkBody.textContent = this.reasoning;
    }
    this.body.replaceChildren(renderMarkdown(this.content));
    if (stick) scrollDown();
  }

  finish(how, usage) {
    this.render();
    this.el.classList.remove("streaming");
    this.el.dataset.finish = how;
    const parts = [];
    const now = performance.now();
    if (usage) {
      parts.push(`${usage.completion_tokens} tokens`);
      // Over a short reply the deltas arrive in a few network reads and
      // a rate would be noise.
      const gen = this.tFirst ? (now - this.tFirst) / 1000 : 0;
      if (gen >= 0.25 && usage.completion_tokens > 1) parts.push(`${((usage.completion_tokens - 1) / gen).toFixed(1)} tok/s`);
    }
    if (this.tFirst) parts.push(`first token ${duration(this.tFirst - this.t0)}`);
    parts.push(duration(now - this.t0));
    parts.push({ stop: "finished", length: "max tokens reached", stopped: "stopped" }[how] || how);
    this.meta.textContent = parts.join(" · ");
  }

  fail(msg) {
    this.render();
    this.el.classList.remove("streaming");
    this.el.dataset.finish = "error";
    const p = document.createElement("p");
    p.className = "error";
    p.textContent = msg;
    this.el.appendChild(p);
  }
}

function duration(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function atBottom() {
  const log = $("log");
  return log.scrollHeight - log.scrollTop - log.clientHeight < 40;
}

// sseEvents yields the data payloads of a server-sent-events body.
async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let cut;
    while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
      const data = block.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (data) yield data;
    }
  }
}

function setBusy(ctrl) {
  state.busy = ctrl;
  $("send").hidden = !!ctrl;
  $("stop").hidden = !ctrl;
  $("model").disabled = !!ctrl;
}

async function send(text) {
  const model = $("model").value;
  if (!model) {
    showNotice("No model to talk to.");
    return;
  }
  let params;
  try {
    params = sampling();
  } catch (e) {
    showNotice(e.message);
    return;
  }
  addUserMessage(text);
  const turn = { role: "user", content: text };
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...state.history, turn);

  const reply = new Reply(model);
  scrollDown();
  const ctrl = new AbortController();
  setBusy(ctrl);
  let finish = "";
  let usage = null;
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({ model, messages, stream: true, stream_options: { include_usage: true }, ...params }),
      signal: ctrl.signal,
    });
    if (!resp.ok) throw await apiError(resp);
    for await (const data of sseEvents(resp.body)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message || "the server reported an error");
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices || []) {
        const d = c.delta || {};
        reply.add(d.content, d.reasoning_content);
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
    reply.finish(finish || "incomplete", usage);
  } catch (e) {
    if (ctrl.signal.aborted) {
      reply.finish("stopped", null);
    } else {
      reply.fail(e.message);
      if (e instanceof AuthError) askKey("The server refused the key: " + e.message);
    }
  } finally {
    setBusy(null);
  }
  if (reply.content || reply.reasoning) {
    // The thinking is not sent back: DeepSeek's reasoning models expect
    // only the answers of earlier turns.
    state.history.push(turn, { role: "assistant", content: reply.content });
  }
  refreshStatus();
}

$("composer").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("input").value;
  if (!text.trim() || state.busy) return;
  $("input").value = "";
  send(text);
});

$("input").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    $("composer").requestSubmit();
  }
});

$("stop").addEventListener("click", () => {
  if (state.busy) state.busy.abort();
});

// ---- start ----

async function start() {
  try {
    const resp = await fetch("/ui/config.json");
    if (resp.ok) state.authRequired = !!(await resp.json()).auth_required;
  } catch {
    // an older server without config.json: find out from /v1/models
  }
  $("key-button").hidden = !state.authRequired;
  refreshStatus();
  if (state.authRequired && !state.key) askKey("");
  else loadModels();
}

start();
