#!/usr/bin/env bash
# Serving figures on one GPU (issue #14 b) in ONE device call of at most 10
# minutes: synthesise the DeepSeek-LLM-7B-shaped checkpoint to local storage,
# serve it with `deepseek-run serve --device cuda`, and load it with
# `deepseek-run bench serve` (vLLM's method: Poisson arrivals, streamed
# /v1/completions, ignore_eos, no concurrency cap) at rate inf with 1000
# prompts and at 16, 8 and 4 req/s with 250 prompts each, input 512 and
# output 256 tokens. Writes $OUT/serve-7b.json (every rate), serve-7b.png,
# bench.txt, server.log, metrics.txt and prints a summary table.
#
# No Go on the GPU host: build the binary here and carry it gzipped (build/
# is git-ignored, so name build/gpuz in the device call's carry):
#   CGO_ENABLED=1 go build -trimpath -ldflags="-s -w" -o build/gpu/deepseek-run ./cmd/deepseek-run
#   mkdir -p build/gpuz && gzip -c build/gpu/deepseek-run > build/gpuz/deepseek-run.gz
# cgo must be on: the CUDA backend dlopens libcuda.so.1 (no CUDA SDK is
# needed to build; with CGO_ENABLED=0 --device cuda reports CUDA unavailable).
# The PTX is rebuilt on the host with its nvcc (make -B -C kernels/cuda ptx,
# as bench/cuda/run.sh does) and passed through DSGO_PTX.
#
# On the GPU host, from the repository root:   bench/serving/gpu.sh
# A CPU dry run of the same steps (what was tested on the development box):
#   DEVICE=cpu SHAPE=tiny-llama INPUT_LEN=64 OUTPUT_LEN=16 COUNTS=16,8,8,8 bench/serving/gpu.sh
#
# Environment (defaults in brackets): OUT [/tmp/out]  DEVICE [cuda]
#   SHAPE [deepseek-llm-7b]  MODEL_DIR [/dev/shm/dsgo-SHAPE if it fits, else /tmp/dsgo-SHAPE]
#   RATES [inf,16,8,4]  COUNTS [1000,250,250,250] (prompts per rate)  INPUT_LEN [512]  OUTPUT_LEN [256]
#   MAX_RUNNING [128]  TOKEN_BUDGET [512]  WARMUP_N [64]  DEADLINE [560] (seconds for the whole script)
#   DSRUN [build/gpu/deepseek-run, unpacked from build/gpuz/deepseek-run.gz]  PTX_BUILD [1]  PORT [8080]
set -uo pipefail
cd "$(dirname "$0")/../.."
T0=$SECONDS
OUT=${OUT:-/tmp/out}
DEVICE=${DEVICE:-cuda}
SHAPE=${SHAPE:-deepseek-llm-7b}
RATES=${RATES:-inf,16,8,4}
COUNTS=${COUNTS:-1000,250,250,250}
INPUT_LEN=${INPUT_LEN:-512} OUTPUT_LEN=${OUTPUT_LEN:-256}
MAX_RUNNING=${MAX_RUNNING:-128} TOKEN_BUDGET=${TOKEN_BUDGET:-512}
DEADLINE=${DEADLINE:-560} WARMUP_N=${WARMUP_N:-64} PTX_BUILD=${PTX_BUILD:-1} PORT=${PORT:-8080}
DSRUN=${DSRUN:-build/gpu/deepseek-run}
URL=http://127.0.0.1:$PORT
mkdir -p "$OUT"

say() { printf '[%4ds] %s\n' $(( SECONDS - T0 )) "$*" | tee -a "$OUT/steps.log"; }
die() { say "FAILED: $*"; exit 1; }

if [[ ! -x $DSRUN && -f build/gpuz/deepseek-run.gz ]]; then
  mkdir -p "$(dirname "$DSRUN")"
  gunzip -c build/gpuz/deepseek-run.gz > "$DSRUN" && chmod +x "$DSRUN"
fi
[[ -x $DSRUN ]] || die "no $DSRUN and no build/gpuz/deepseek-run.gz (see the header for the build)"

{
  date -u
  echo "deepseek-run sha256 $(sha256sum "$DSRUN" | cut -c1-16)"
  nproc
  free -g | head -2
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
  command -v nvcc > /dev/null && nvcc --version | tail -2
} > "$OUT/env.log" 2>&1
say "device $DEVICE, shape $SHAPE, rates $RATES, prompts $COUNTS, input $INPUT_LEN, output $OUTPUT_LEN"

# The PTX builds while the checkpoint is written (both take a while).
ptx_pid=
if [[ $DEVICE == cuda* && $PTX_BUILD == 1 ]]; then
  make -B -C kernels/cuda ptx > "$OUT/ptx.log" 2>&1 &
  ptx_pid=$!
fi

# Checkpoint: tmpfs when it has room (the 7B is 13.3 GiB), else local disk.
if [[ -z ${MODEL_DIR:-} ]]; then
  # GiB the checkpoint needs, rounded up (0 for MiB-sized test shapes).
  need=$("$DSRUN" synth --list | awk -v s="$SHAPE" '$1 == s { print ($6 == "GiB") ? int($5) + 1 : 0 }')
  avail=$(df --output=avail -B1G /dev/shm 2>/dev/null | tail -1 | tr -d ' ')
  MODEL_DIR=/tmp/dsgo-$SHAPE
  (( ${avail:-0} > ${need:-999} + 4 )) && MODEL_DIR=/dev/shm/dsgo-$SHAPE
fi
if [[ -f $MODEL_DIR/config.json ]]; then
  say "reusing the checkpoint in $MODEL_DIR"
else
  t=$SECONDS
  "$DSRUN" synth --shape "$SHAPE" -o "$MODEL_DIR" --quiet > "$OUT/synth.log" 2>&1 || { cat "$OUT/synth.log"; die "synth"; }
  say "synth: $(du -sh "$MODEL_DIR" | cut -f1) in $MODEL_DIR in $(( SECONDS - t )) s"
fi
if [[ -n $ptx_pid ]]; then
  wait "$ptx_pid" || { tail -20 "$OUT/ptx.log"; die "make ptx"; }
  export DSGO_PTX=$PWD/kernels/cuda/kernels.ptx
  say "PTX built ($(grep -c '\.entry' kernels/cuda/kernels.ptx) kernels)"
fi

# Server. --max-waiting covers 1000 requests sent at once (more would get
# 429); the KV budget is the engine's default on a GPU, 90% of the free
# memory less 1 GiB after the weights.
server_pid=
stop_server() {
  if [[ -n $server_pid ]]; then
    curl -s "$URL/metrics" > "$OUT/metrics.txt" 2>/dev/null || true
    kill -INT "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
    server_pid=
  fi
}
trap stop_server EXIT
t=$SECONDS
"$DSRUN" serve --addr "127.0.0.1:$PORT" -m "$SHAPE-synth=$MODEL_DIR" --device "$DEVICE" \
  --max-running "$MAX_RUNNING" --token-budget "$TOKEN_BUDGET" --max-waiting 4096 \
  --shutdown-timeout 10s > "$OUT/server.log" 2>&1 &
server_pid=$!
until curl -sf -o /dev/null "$URL/ready"; do
  kill -0 "$server_pid" 2>/dev/null || { tail -20 "$OUT/server.log"; server_pid=; die "the server exited while loading"; }
  # A failed load leaves the server up but never ready.
  grep -q "loading model failed" "$OUT/server.log" && { tail -5 "$OUT/server.log"; die "the model did not load"; }
  (( SECONDS - t < 240 )) || { tail -20 "$OUT/server.log"; die "not ready after 240 s"; }
  sleep 1
done
say "server ready in $(( SECONDS - t )) s (--max-running $MAX_RUNNING --token-budget $TOKEN_BUDGET)"

# Warm-up (not counted): prefills and batched decode at up to 64 rows.
t=$SECONDS
"$DSRUN" bench serve --url "$URL" --num-prompts "$WARMUP_N" --input-len "$INPUT_LEN" --output-len 16 \
  --request-rate inf --seed 1000 --quiet --timeout 120s > "$OUT/warmup.txt" 2>&1 || { tail -30 "$OUT/warmup.txt"; die "warm-up"; }
say "warm-up: $WARMUP_N requests in $(( SECONDS - t )) s"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader >> "$OUT/env.log" 2>&1

# The measurement; stopped with SIGINT (results so far are still written)
# when the deadline nears.
left=$(( DEADLINE - (SECONDS - T0) - 25 ))
(( left > 30 )) || die "only $left s left for the benchmark"
say "bench serve, at most $left s"
timeout -s INT -k 15 "$left" "$DSRUN" bench serve --url "$URL" --num-prompts "$COUNTS" --request-rate "$RATES" \
  --input-len "$INPUT_LEN" --output-len "$OUTPUT_LEN" --seed 0 --quiet \
  --json "$OUT/serve-7b.json" --plot "$OUT/serve-7b.png" > "$OUT/bench.txt" 2>&1
rc=$?
(( rc == 0 )) || say "bench serve exited $rc (124/130: stopped at the deadline; the rates done are in the JSON)"
stop_server
say "server stopped"

# Summary.
grep -a -E "panic|level=ERROR" "$OUT/server.log" | head -5
[[ -f $OUT/serve-7b.json ]] || { tail -30 "$OUT/bench.txt"; die "no results"; }
python3 - "$OUT/serve-7b.json" "$DEVICE" "$SHAPE" "$INPUT_LEN" "$OUTPUT_LEN" <<'EOF' | tee "$OUT/summary.md"
import json, sys
path, device, shape, inl, outl = sys.argv[1:]
runs = json.load(open(path))["runs"]
runs.sort(key=lambda r: float(r["request_rate"]))
print("%s on %s, input %s, output %s (ignore_eos), no concurrency cap" % (shape, device, inl, outl))
print()
print("| rate (req/s) | prompts | completed / failed | duration s | req/s | output tok/s | TTFT P50 / P99 ms | TPOT P50 / P99 ms | ITL P99 ms |")
print("|---|---|---|---|---|---|---|---|---|")
for r in runs:
    print("| %s | %d | %d / %d | %.1f | %.2f | %.0f | %.0f / %.0f | %.1f / %.1f | %.1f |" % (
        r["request_rate"], r["num_prompts"], r["completed"], r["failed"], r["duration_s"],
        r["request_throughput"], r["output_throughput"], r["ttft_ms"]["median"], r["ttft_ms"]["p99"],
        r["tpot_ms"]["median"], r["tpot_ms"]["p99"], r["itl_ms"]["p99"]))
    if r["failed"]:
        print("|  | errors: %s |||||||" % r["errors"])
print("| vLLM, Llama-3.1-8B, ShareGPT, rate inf (published) | 1000 | | | | 6583 | | 48.8 median | |")
EOF
say "done; results in $OUT"
