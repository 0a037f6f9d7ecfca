#!/usr/bin/env bash
# One device call: build PTX with nvcc, run the CUDA parity tests, then (when
# asked) the benchmarks and the torch comparison. Test binaries are built on
# the development machine (no Go on the GPU host) into build/ and carried:
#   go test -c -o build/cuda.test ./kernels/cuda
#   go test -c -o build/cudabench.test ./bench/cuda
# Usage on the GPU host: bench/cuda/run.sh [tests] [bench] [torch]
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
(cd kernels/cuda && nvcc -arch=sm_90 -O3 -cubin -Xptxas -v -o /tmp/k.cubin kernels.cu) > "$OUT/resources.log" 2>&1
grep -E "Compiling entry|registers|spill" "$OUT/resources.log" | paste - - - 2>/dev/null | sed -E 's/ptxas info *: //g' | grep -E "flash|gemv_bf16|attn_split" | head -20
export DSGO_PTX=$PWD/kernels/cuda/kernels.ptx

if [[ $what == *" tests "* ]]; then
  ./build/cuda.test -test.v -test.count=1 2>&1 | tee "$OUT/test.log" | grep -E "^(=== RUN|--- |PASS|FAIL|ok)|rel err [0-9.e+-]+$" | grep -vE "^=== RUN" | tail -80
fi
if [[ $what == *" bench "* ]]; then
  ./build/cudabench.test -test.run '^$' -test.bench . -test.benchtime 1x -test.v 2>&1 | tee "$OUT/bench.log" | grep -vE "^(goos|goarch|pkg|cpu):" | tail -40
fi
if [[ $what == *" torch "* ]]; then
  PYTHONUNBUFFERED=1 python3 bench/attn_torch.py 2>&1 | tee "$OUT/torch.log" | tail -20
fi
