#!/usr/bin/env bash
# Serving side by side on this CPU: deepseek-run serve and llama.cpp's
# llama-server, the same weights, the same prompts and output lengths, the
# same thread count, one server at a time (two on 2 cores would share them).
#
# Method (vLLM's bench serve, through `deepseek-run bench serve`): streamed
# /v1/completions requests whose prompts are the same random token ids for
# both (--seed), max_tokens OUTPUT_LEN with ignore_eos, temperature 0,
# Poisson arrivals at each of RATES with at most CONC in flight; both
# servers get CONC slots (--max-running / -np). Each server gets a short
# warm-up run first, not counted.
#
# Weights: the synthetic deepseek-coder-1.3B of /work/shared/tools/synth_dscoder.py
# (HF bf16 copy + bf16 GGUF of identical values; the HF copy needs a
# tokenizer.json, rebuilt from the vocab GGUF as tokenizer/gguf_vectors_test.go
# does). On first use they are copied into WORK and bench/serving/utf8_head.py
# zeroes the lm_head rows of tokens that are not whole UTF-8 in both copies:
# llama-server rejects malformed UTF-8 output on every endpoint ("does not
# match the expected Content-only format"), which a random-weight model
# otherwise produces in most requests. The copies in WORK are reused.
#
# Usage: bench/serving/llama_server.sh [NUM_PROMPTS]      (default 32 per rate)
# Environment (defaults in brackets):
#   DSRUN [build/deepseek-run]  LLAMA_SERVER [/tmp/llama.cpp-build/bin/llama-server]
#   SRC_HF, SRC_GGUF            the unpatched model [/tmp/pp/models/dscoder-1.3b-synth-hf, ...-bf16.gguf]
#   WORK [/tmp/serving-sbs]     patched copies     OUT [bench/serving/results/llama-server-side-by-side]
#   THREADS [2]  CONC [16]  INPUT_LEN [64]  OUTPUT_LEN [32]  RATES [1,2,4,inf]  SEED [0]
#   ONLY [both]  ours or llama to run one server
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-32}
DSRUN=${DSRUN:-build/deepseek-run}
LLAMA_SERVER=${LLAMA_SERVER:-/tmp/llama.cpp-build/bin/llama-server}
# The build of the last session (same commit and recipe), when there is no other.
[[ -x $LLAMA_SERVER || ! -x /tmp/pp/llama.cpp/build/bin/llama-server ]] || LLAMA_SERVER=/tmp/pp/llama.cpp/build/bin/llama-server
SRC_HF=${SRC_HF:-/tmp/pp/models/dscoder-1.3b-synth-hf}
SRC_GGUF=${SRC_GGUF:-/tmp/pp/models/dscoder-1.3b-synth-bf16.gguf}
WORK=${WORK:-/tmp/serving-sbs}
OUT=${OUT:-bench/serving/results/llama-server-side-by-side}
THREADS=${THREADS:-2} CONC=${CONC:-16} INPUT_LEN=${INPUT_LEN:-64} OUTPUT_LEN=${OUTPUT_LEN:-32}
RATES=${RATES:-1,2,4,inf} SEED=${SEED:-0} ONLY=${ONLY:-both}
PORT_OURS=${PORT_OURS:-18080} PORT_LLAMA=${PORT_LLAMA:-18081}

die() { echo "llama_server.sh: $*" >&2; exit 1; }
[[ -x $DSRUN ]] || die "no deepseek-run at $DSRUN (go build -o build/deepseek-run ./cmd/deepseek-run)"
[[ $ONLY == ours || -x $LLAMA_SERVER ]] || die "no llama-server at $LLAMA_SERVER (see bench/README.md, Serving side by side)"
mkdir -p "$OUT" "$WORK/hf"

# Patched copies of the weights (once).
if [[ ! -f $WORK/hf/model.safetensors || ! -f $WORK/model.gguf ]]; then
  for f in config.json generation_config.json tokenizer.json model.safetensors; do
    [[ -f $SRC_HF/$f ]] || die "$SRC_HF/$f is missing"
  done
  [[ -f $SRC_GGUF ]] || die "$SRC_GGUF is missing"
  echo "copying the model into $WORK"
  cp "$SRC_HF"/{config.json,generation_config.json,tokenizer.json,model.safetensors} "$WORK/hf/"
  cp "$SRC_GGUF" "$WORK/model.gguf"
fi
python3 bench/serving/utf8_head.py --gguf "$WORK/model.gguf" --safetensors "$WORK/hf/model.safetensors"

pid=
stop() {
  if [[ -n $pid ]]; then
    kill -INT "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
  fi
}
trap stop EXIT

# wait_ok URL PID SECONDS: poll until URL answers 200 or the server exits.
wait_ok() {
  local t0=$SECONDS
  until curl -sf -o /dev/null "$1"; do
    kill -0 "$2" 2>/dev/null || die "the server exited while loading (log in $OUT)"
    (( SECONDS - t0 < $3 )) || die "$1 not ready after $3 s"
    sleep 1
  done
}

# probe NAME URL: the log-probability of the first greedy token of one fixed
# prompt, to check that both servers compute the same model. (Not the text:
# the synthetic lm_head repeats rows, so the top logits tie exactly and each
# server breaks the tie its own way.)
probe() {
  curl -sf "$2/v1/completions" -H 'Content-Type: application/json' \
    -d '{"model":"coder","prompt":[100,200,300,400,500,600,700,800],"max_tokens":1,"temperature":0,"logprobs":1}' |
    python3 -c '
import json, sys
lp = json.load(sys.stdin)["choices"][0]["logprobs"]
print("%.4f" % (lp["token_logprobs"][0] if "token_logprobs" in lp else lp["content"][0]["logprob"]))' \
    > "$OUT/$1-probe.txt" 2>/dev/null || echo '?' > "$OUT/$1-probe.txt"
}

# bench NAME URL: warm-up, then the sweep into $OUT/NAME.json and NAME.png.
bench() {
  probe "$1" "$2"
  local common=(--url "$2" --max-concurrency "$CONC" --input-len "$INPUT_LEN" --output-len "$OUTPUT_LEN" --seed "$SEED" --quiet)
  "$DSRUN" bench serve "${common[@]}" --num-prompts 2 --request-rate inf --seed 99 > "$OUT/$1-warmup.txt"
  local plot=()
  [[ $RATES == *,* ]] && plot=(--plot "$OUT/$1.png")
  "$DSRUN" bench serve "${common[@]}" --num-prompts "$N" --request-rate "$RATES" \
    --json "$OUT/$1.json" "${plot[@]}" | tee "$OUT/$1.txt" | sed -n '/^ *rate  *req\/s/,$p'
}

start=$SECONDS
if [[ $ONLY != llama ]]; then
  echo "== deepseek-run serve (--threads $THREADS --max-running $CONC)"
  "$DSRUN" serve --addr "127.0.0.1:$PORT_OURS" -m "coder=$WORK/hf" --device cpu --threads "$THREADS" \
    --max-running "$CONC" --max-waiting 4096 > "$OUT/ours-server.log" 2>&1 &
  pid=$!
  wait_ok "http://127.0.0.1:$PORT_OURS/ready" "$pid" 300
  bench ours "http://127.0.0.1:$PORT_OURS"
  stop
fi
if [[ $ONLY != ours ]]; then
  echo "== llama-server (-t $THREADS -tb $THREADS -np $CONC)"
  # Each slot gets INPUT_LEN + OUTPUT_LEN tokens of context and some slack.
  "$LLAMA_SERVER" -m "$WORK/model.gguf" -a coder --host 127.0.0.1 --port "$PORT_LLAMA" \
    -t "$THREADS" -tb "$THREADS" -np "$CONC" -c $(( CONC * (INPUT_LEN + OUTPUT_LEN + 64) )) > "$OUT/llama-server.log" 2>&1 &
  pid=$!
  wait_ok "http://127.0.0.1:$PORT_LLAMA/health" "$pid" 300
  bench llama "http://127.0.0.1:$PORT_LLAMA"
  "$LLAMA_SERVER" --version 2>&1 | grep -E "version|built" > "$OUT/llama-server-version.txt" || true
  stop
fi

# One table of both.
python3 - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
rows = []
for name, label in (("ours", "deepseek-run serve"), ("llama", "llama-server")):
    p = os.path.join(out, name + ".json")
    if os.path.exists(p):
        for r in json.load(open(p))["runs"]:
            rows.append((float(r["request_rate"]), label, r))
rows.sort(key=lambda x: (x[0], x[1]))
print("| rate | server | req/s | output tok/s | TTFT P50 / P99 ms | TPOT P50 / P99 ms | completed / failed |")
print("|---|---|---|---|---|---|---|")
for rate, label, r in rows:
    print("| %g | %s | %.2f | %.1f | %.0f / %.0f | %.1f / %.1f | %d / %d |" % (
        rate, label, r["request_throughput"], r["output_throughput"], r["ttft_ms"]["median"], r["ttft_ms"]["p99"],
        r["tpot_ms"]["median"], r["tpot_ms"]["p99"], r["completed"], r["failed"]))
EOF
if [[ -f $OUT/ours-probe.txt && -f $OUT/llama-probe.txt ]]; then
  echo "first greedy token's logprob for prompt [100,200,...,800] (same weights: equal to ~1e-3):" \
    "deepseek-run serve $(cat "$OUT/ours-probe.txt"), llama-server $(cat "$OUT/llama-probe.txt")"
fi
echo "took $(( SECONDS - start )) s; results in $OUT"
