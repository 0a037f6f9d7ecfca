#!/usr/bin/env bash
# One device call: build PTX with nvcc, run the CUDA parity tests and the
# engine's GPU tests, the benchmarks and the torch comparison. Test binaries
# are built on the development machine (no Go on the GPU host) and carried
# gzipped (the working tree that travels is limited):
#   for p in engine kernels/cuda bench/cuda; do n=$(echo $p | tr / _)
#     go test -c -ldflags="-s -w" -o build/gpu/$n.test ./$p; done
#   mkdir -p build/gpuz && gzip -c build/gpu/X.test > build/gpuz/X.test.gz ...
# Usage on the GPU host: bench/cuda/run.sh [dsprof] [pdl] [tests] [engine] [enginefull] [cli] [enginebench] [batchtest] [batchbench] [sample] [resources] [bench] [flash] [torch] [ncu] [deepseek]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
what=" $* "
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
  nvcc --version | tail -2
  ls /usr/local/cuda/lib64/libcublasLt.so* 2>/dev/null
  python3 -c 'import nvidia.cublas, os; print(os.path.dirname(nvidia.cublas.__file__))' 2>/dev/null
} 2>&1 | tee "$OUT/env.log"

# PTX (and a resource report from a cubin build of the same source).
make -B -C kernels/cuda ptx 2>&1 | tee "$OUT/ptx.log" || exit 1
cp kernels/cuda/kernels.ptx "$OUT/kernels.ptx"
if [[ $what == *" resources "* ]]; then
  (cd kernels/cuda && nvcc -arch=sm_90 -O3 -cubin -Xptxas -v -o /tmp/k.cubin kernels.cu) > "$OUT/resources.log" 2>&1
  grep -E "Compiling entry|registers|spill" "$OUT/resources.log" | paste - - - 2>/dev/null | sed -E 's/ptxas info *: //g' | grep -E "flash|gemv_bf16|attn_split" | head -40
fi
export DSGO_PTX=$PWD/kernels/cuda/kernels.ptx
mkdir -p build/gpu
for z in build/gpuz/*.gz; do gunzip -c "$z" > "build/gpu/$(basename "$z" .gz)"; chmod +x "build/gpu/$(basename "$z" .gz)"; done

if [[ $what == *" tests "* ]]; then
  (cd kernels/cuda && ../../build/gpu/kernels_cuda.test -test.v -test.count=1 2>&1) | tee "$OUT/test.log" | grep -E "^(--- |PASS|FAIL|ok)" | tail -40
fi
if [[ $what == *" engine "* ]]; then
  (cd engine && ../build/gpu/engine.test -test.v -test.count=1 -test.run 'CUDA' 2>&1) | tee "$OUT/engine.log" | grep -E "^(--- |PASS|FAIL|ok)|on cuda|worst|Error|expected|actual" | tail -40
fi
if [[ $what == *" enginefull "* ]]; then
  # The whole engine suite with the default "auto" device, i.e. on the GPU.
  (cd engine && ../build/gpu/engine.test -test.count=1 -test.short 2>&1) | tee "$OUT/enginefull.log" | grep -E "^(--- FAIL|FAIL|ok|PASS)|^    --- FAIL" | tail -30
fi
if [[ $what == *" cli "* ]]; then
  # The command-line verify on the GPU for every llama/qwen2 fixture (tolerance
  # 1e-4 for f32 checkpoints, 2e-2 for the bf16 one), and a greedy story.
  for d in llama-mha llama-gqa-llama3rope llama-linear-rope llama-mha-bf16-sharded qwen2 qwen2-tied; do
    tol=1e-4; [[ $d == *bf16* ]] && tol=2e-2
    ./build/gpu/deepseek-run verify --device cuda -m testdata/models/$d --ref testdata/models/$d/reference.safetensors --tol $tol 2>&1 | tail -4
  done 2>&1 | tee "$OUT/cli.log"
  ./build/gpu/deepseek-run --device cuda -m testdata/stories260K -n 64 --temp 0 -p "Once upon a time" 2>&1 | tail -6 | tee -a "$OUT/cli.log"
fi
if [[ $what == *" enginebench "* ]]; then
  (cd engine && ../build/gpu/engine.test -test.run '^$' -test.bench 'CUDAEngineDecode7B' -test.benchtime 1x -test.v 2>&1) | tee "$OUT/enginebench.log" | grep -E "device_cuda_test|FAIL|panic|Error" | tail -20
fi
if [[ $what == *" batchtest "* ]]; then
  # Continuous batching: GPU parity of the batched path (and of its decode
  # graphs against none) on every fixture family.
  (cd engine && ../build/gpu/engine.test -test.v -test.count=1 -test.run 'SchedulerMatchesAloneCUDA|SchedulerGraphsCUDA' 2>&1) | tee "$OUT/batchtest.log" | grep -E "^(--- |PASS|FAIL|ok)|^    --- |graph replays|Error|expected|actual" | tail -60
fi
if [[ $what == *" batchbench "* ]]; then
  # The 7B batch and prefix-cache benchmarks.
  (cd engine && ../build/gpu/engine.test -test.run '^$' -test.bench 'CUDABatchDecode7B|CUDAPrefixCache7B' -test.benchtime 1x -test.v 2>&1) | tee "$OUT/batchbench.log" | grep -E "scheduler_cuda_test|^Benchmark|FAIL|panic|Error" | tail -50
fi
if [[ $what == *" sample "* ]]; then
  # The device sampler's cost per token next to the host sampler's.
  (cd engine && ../build/gpu/engine.test -test.run '^$' -test.bench 'CUDASample' -test.benchtime 200x 2>&1) | tee "$OUT/sample.log" | grep -E "^Benchmark|FAIL|panic|Error" | tail -20
fi
if [[ $what == *" bench "* ]]; then
  ./build/gpu/bench_cuda.test -test.run '^$' -test.bench . -test.benchtime 1x -test.v 2>&1 | tee "$OUT/bench.log" | grep -E "cuda_test.go|^Benchmark|FAIL|panic|Error" | tail -40
fi
if [[ $what == *" flash "* ]]; then
  # The flash-attention benchmark alone (flash2_fwd_128; the variants it
  # was picked from are history in kernels/cuda/NOTES.md).
  ./build/gpu/bench_cuda.test -test.run '^$' -test.bench 'FlashAttention' -test.benchtime 1x -test.v 2>&1 | tee "$OUT/flash.log" | grep -E "cuda_test.go|FAIL|panic|Error" | tail -40
fi
if [[ $what == *" ncu "* ]]; then
  ncu --kernel-name regex:flash2_fwd_128 --launch-skip 2 --launch-count 1 --section SpeedOfLight --section WarpStateStats \
    --section ComputeWorkloadAnalysis --section Occupancy --section SchedulerStats \
    ./build/gpu/bench_cuda.test -test.run '^$' -test.bench 'FlashAttention' -test.benchtime 1x > "$OUT/ncu.log" 2>&1
  grep -E "Throughput|Stall|Warp Cycles|Issued|Eligible|Occupancy|Registers|Duration|Pipe|Active Warps" "$OUT/ncu.log" | head -60
fi
if [[ $what == *" torch "* ]]; then
  PYTHONUNBUFFERED=1 python3 bench/attn_torch.py 2>&1 | tee "$OUT/torch.log" | tail -20
fi
if [[ $what == *" dsprof "* ]]; then
  # Per-kernel device time of the DeepSeek-V2-Lite decode step (4 layers of the
  # real widths, uncaptured so each kernel is its own launch): ncu times the
  # first DSPROF_KERNELS kernels (prefill of the 16-token prompt, then decode
  # steps), the rest run unprofiled. The graph-captured step time of the same
  # model comes from the benchmark without ncu.
  (cd engine && DSGO_NO_GRAPH=1 timeout 300 ncu --clock-control none --metrics gpu__time_duration.sum --csv --launch-count "${DSPROF_KERNELS:-900}" \
    ../build/gpu/engine.test -test.run '^$' -test.bench 'CUDADeepSeek/v2-lite-4l' -test.benchtime 1x -test.timeout 10m > "$OUT/dsprof.csv" 2> "$OUT/dsprof.err")
  tail -3 "$OUT/dsprof.err"; wc -l "$OUT/dsprof.csv"
  (cd engine && ../build/gpu/engine.test -test.run '^$' -test.bench 'CUDADeepSeek/v2-lite-4l' -test.benchtime 1x -test.v 2>&1) | tee "$OUT/dsprof_graph.log" | grep -E "deepseek_cuda_bench_test|^Benchmark|FAIL|panic" | tail -8
fi
if [[ $what == *" pdl "* ]]; then
  # V2-Lite decode with and without programmatic dependent launch.
  for nopdl in "" 1; do
    (cd engine && DSGO_NO_PDL=$nopdl ../build/gpu/engine.test -test.run '^$' -test.bench 'CUDADeepSeek/v2-lite/' -test.benchtime 1x -test.timeout 10m -test.v 2>&1) | tee -a "$OUT/pdl.log" | grep -E "deepseek_cuda_bench_test.go:1[56]|^Benchmark.*ns/op|FAIL|panic" | sed "s/^/pdl-off=$nopdl /" | tail -4
  done
fi
if [[ $what == *" deepseek "* ]]; then
  # DeepSeek-V2-Lite and the 4-layer V3 slice (bf16, fp8) through the engine
  # (issue #13: decode, launches/syncs per step, per-layer ms, prefill 2048,
  # roofline share), then the HF transformers peers (eager generate, static
  # cache + torch.compile), each torch case in its own time-limited process.
  # Budget: ≈ 3-4 min for the Go part, DS_TORCH_DEADLINE (300 s) for torch.
  (cd engine && ../build/gpu/engine.test -test.run '^$' -test.bench 'CUDADeepSeek' -test.benchtime 1x -test.timeout 20m -test.v 2>&1) | tee "$OUT/deepseek.log" | grep -E "deepseek_cuda_bench_test|^Benchmark|SKIP|FAIL|panic|Error" | tail -40
  PYTHONUNBUFFERED=1 python3 bench/deepseek_torch.py --deadline "${DS_TORCH_DEADLINE:-300}" 2>&1 | tee "$OUT/deepseek_torch.log" | grep -E "^torch" | tail -20
fi
