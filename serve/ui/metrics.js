// Reading the server's /metrics (Prometheus text format) for the status
// strip: the gauges as they are, tokens/s and P99 time to first token from
// the difference between scrapes.

// parseMetrics returns the samples of the deepseek_* series as
// [{name, labels: {k: v}, value}]; other series and comments are skipped.
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith("deepseek_")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[2]) {
      const re = /([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[2]))) labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    }
    const v = m[3] === "+Inf" ? Infinity : m[3] === "-Inf" ? -Infinity : Number(m[3]);
    out.push({ name: m[1], labels, value: v });
  }
  return out;
}

// sum adds the samples of name whose model label is model (any model
// when model is ""); null when there is none.
export function sum(samples, name, model) {
  let s = null;
  for (const x of samples) {
    if (x.name === name && (!model || x.labels.model === model)) s = (s ?? 0) + x.value;
  }
  return s;
}

// buckets returns the cumulative histogram buckets of name as a sorted
// [[le, count]] array, summed over the matching models.
export function buckets(samples, name, model) {
  const by = new Map();
  for (const x of samples) {
    if (x.name !== name + "_bucket" || (model && x.labels.model !== model)) continue;
    const le = x.labels.le === "+Inf" ? Infinity : Number(x.labels.le);
    by.set(le, (by.get(le) ?? 0) + x.value);
  }
  return [...by.entries()].sort((a, b) => a[0] - b[0]);
}

// quantile estimates the q-quantile from cumulative buckets by linear
// interpolation within the bucket, as PromQL's histogram_quantile does;
// null without observations.
export function quantile(q, bs) {
  if (!bs.length) return null;
  const total = bs[bs.length - 1][1];
  if (!(total > 0)) return null;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const [le, count] of bs) {
    if (count >= rank) {
      if (le === Infinity) return prevLe; // the highest finite bound
      if (count === prevCount) return le;
      return prevLe + ((le - prevLe) * (rank - prevCount)) / (count - prevCount);
    }
    prevLe = le;
    prevCount = count;
  }
  return prevLe;
}

// diffBuckets subtracts the older cumulative buckets from the newer
// (a counter reset, as after a restart, gives the newer ones).
export function diffBuckets(newer, older) {
  const old = new Map(older);
  const out = newer.map(([le, c]) => [le, c - (old.get(le) ?? 0)]);
  return out.some(([, c]) => c < 0) ? newer : out;
}

// Status keeps recent scrapes and derives the strip's numbers.
export class Status {
  constructor({ rateWindowMs = 10000, ttftWindowMs = 60000 } = {}) {
    this.rateWindowMs = rateWindowMs;
    this.ttftWindowMs = ttftWindowMs;
    this.scrapes = []; // {t, samples}
  }

  add(t, samples) {
    this.scrapes.push({ t, samples });
    const keep = Math.max(this.rateWindowMs, this.ttftWindowMs);
    while (this.scrapes.length > 2 && t - this.scrapes[1].t >= keep) this.scrapes.shift();
  }

  // view returns {running, waiting, kv, tps, ttft} for model ("" = all);
  // a number is null when the server has no such series yet.
  view(model) {
    const last = this.scrapes[this.scrapes.length - 1];
    if (!last) return { running: null, waiting: null, kv: null, tps: null, ttft: null };
    const s = last.samples;
    const kvs = s.filter((x) => x.name === "deepseek_kv_cache_usage_ratio" && (!model || x.labels.model === model));
    const view = {
      running: sum(s, "deepseek_requests_running", model),
      waiting: sum(s, "deepseek_requests_waiting", model),
      kv: kvs.length ? Math.max(...kvs.map((x) => x.value)) : null,
      tps: null,
      ttft: null,
    };
    const since = (ms) => this.scrapes.find((x) => last.t - x.t <= ms) ?? last;
    const r0 = since(this.rateWindowMs);
    if (r0 !== last) {
      const a = sum(r0.samples, "deepseek_generation_tokens_total", model) ?? 0;
      const b = sum(s, "deepseek_generation_tokens_total", model) ?? 0;
      view.tps = b >= a ? ((b - a) * 1000) / (last.t - r0.t) : null;
    }
    const all = buckets(s, "deepseek_time_to_first_token_seconds", model);
    const recent = diffBuckets(all, buckets(since(this.ttftWindowMs).samples, "deepseek_time_to_first_token_seconds", model));
    view.ttft = quantile(0.99, recent) ?? quantile(0.99, all);
    return view;
  }
}
