// Fused launches: kernels that do in one launch what two or more ops did
// before (NOTES.md "Fewer launches per decode layer"). Included at the end
// of kernels.cu; backend.go and moe.go launch them.

// ---------------------------------------------------------------- GEMV + residual add
// gemv_add (MatMulAdd): y[t, r] += W row r · x row t (× the int8 row scale)
// (+ bias[r]) for t < n ≤ NT, W of one part [rows, cols] with 16-byte rows
// (cols a multiple of EL; fp8: 16-value chunks inside one block column,
// cshift ≥ 0): gemv_rows with its store an add. The value added is the one
// MatMul would have written (acc × scale + bias), so the result equals
// MatMul into a temporary followed by Add, bit for bit. y must not alias x
// (every warp reads all of x).
template <typename T, bool FP8, int R, int NT>
DEVI void gemv_add_rows(const T* __restrict__ W, const float* __restrict__ x, int n, float* __restrict__ y, int rows,
                        const float* __restrict__ bias, int cols, const float* __restrict__ scales, const FP8Scales& q,
                        int cshift) {
  gemv_rows<T, FP8, R, NT, 4>(W, x, n, rows, bias, cols, scales, [&](int row) { return fp8_srow(q, row); }, cshift,
                              [&](int row, int t, float v) {
                                float* o = y + (size_t)t * rows + row;
                                *o = *o + v;
                              });
}

// One signature for every dtype (q and cshift unused but for fp8, sc unused
// but for int8), so backend.go launches them alike. Grid: ceil(rows / 2)
// warps in blocks of 8.
#define GEMV_ADD(NAME, T, FP8, NT)                                                                              \
  extern "C" __global__ void __launch_bounds__(256) NAME(const T* W, const float* x, int n, float* y, int rows, \
                                                         const float* bias, int cols, const float* sc,          \
                                                         FP8Scales q, int cshift) { PDL_ENTRY();                \
    gemv_add_rows<T, FP8, 2, NT>(W, x, n, y, rows, bias, cols, sc, q, cshift);                                  \
  }
GEMV_ADD(gemv_add_f32_1, float, false, 1)
GEMV_ADD(gemv_add_f32_8, float, false, 8)
GEMV_ADD(gemv_add_f16_1, __half, false, 1)
GEMV_ADD(gemv_add_f16_8, __half, false, 8)
GEMV_ADD(gemv_add_bf16_1, __nv_bfloat16, false, 1)
GEMV_ADD(gemv_add_bf16_8, __nv_bfloat16, false, 8)
GEMV_ADD(gemv_add_i8_1, int8_t, false, 1)
GEMV_ADD(gemv_add_i8_8, int8_t, false, 8)
GEMV_ADD(gemv_add_fp8_1, fp8_e4m3, true, 1)
GEMV_ADD(gemv_add_fp8_8, fp8_e4m3, true, 8)

// ---------------------------------------------------------------- router GEMV + routing
// moe_router_dec (RouteMatMul): logits[t, e] = W row e · x row t for t < n ≤
// NT (W [E, cols] of 16-bit or f32 values, cols a multiple of EL), then
// routing (moe_route_row) in the same launch: the blocks write their logits,
// and the last block to finish (a counter in done, reset by that block for
// the next launch) routes the rows, warp w taking rows w, w + 8, …. The
// logits are what gemv_vec writes for this matrix (no scale, no bias) and
// the routing is moe_route's, so the result equals MatMul then Route. Grid:
// ceil(E / 2) warps in blocks of 8 (each warp R = 2 experts).
template <typename T, int NT>
DEVI void moe_router_dec(const T* __restrict__ W, const float* __restrict__ x, int cols, unsigned* done,
                         int* __restrict__ idx, float* __restrict__ wout, unsigned long long* __restrict__ counts,
                         float* logits, const float* __restrict__ bias, int n, int E, int k, int shared, int G,
                         int topG, int method, int sigmoid, int norm, int scaled, float scale) {
  constexpr int R = 2;
  constexpr int RW = NT == 1 ? 1 : 8;  // routing warps
  __shared__ MoERouteSmem sm[RW];
  __shared__ bool last;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int r0 = (blockIdx.x * 8 + warp) * R;
  if (r0 < E) {
    float acc[R][NT];
    gemv_warp<T, false, R, NT, 4>(W, x, n, r0, E, cols, [](int) { return (const float*)nullptr; }, -1, acc);
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < NT; t++)
          if (t < n && r0 + r < E) logits[(size_t)t * E + r0 + r] = acc[r][t];
    }
  }
  // The last block: every block's logits are in L2 once its counter add
  // is seen (each writer fences before the block counts itself).
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(done, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  if (threadIdx.x == 0) *done = 0;
  if (warp >= RW) return;
  for (int t = warp; t < n; t += RW)
    moe_route_row(sm[warp], t, logits + (size_t)t * E, idx, wout, counts, bias, E, k, shared, G, topG, method,
                  sigmoid, norm, scaled, scale);
}

#define MOE_ROUTER(NAME, T, NT)                                                                                    \
  extern "C" __global__ void __launch_bounds__(256) NAME(                                                          \
      const T* W, const float* x, int cols, unsigned* done, int* idx, float* wout, unsigned long long* counts,     \
      float* logits, const float* bias, int n, int E, int k, int shared, int G, int topG, int method, int sigmoid, \
      int norm, int scaled, float scale) { PDL_ENTRY();                                                            \
    moe_router_dec<T, NT>(W, x, cols, done, idx, wout, counts, logits, bias, n, E, k, shared, G, topG, method,     \
                          sigmoid, norm, scaled, scale);                                                           \
  }
MOE_ROUTER(moe_router_f32_1, float, 1)
MOE_ROUTER(moe_router_f32_8, float, 8)
MOE_ROUTER(moe_router_f16_1, __half, 1)
MOE_ROUTER(moe_router_f16_8, __half, 8)
MOE_ROUTER(moe_router_bf16_1, __nv_bfloat16, 1)
MOE_ROUTER(moe_router_bf16_8, __nv_bfloat16, 8)
