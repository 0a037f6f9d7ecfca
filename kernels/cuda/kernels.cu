// Device kernels of the deepseek-go CUDA backend. Compiled to PTX by
// `make ptx` (nvcc -arch=sm_90), committed as kernels.ptx and embedded in the
// Go package. Conventions follow kernels/backend.go: activations are float32
// row-major [n, width]; weights are [rows=out, cols=in] in f32/f16/bf16;
// accumulation is always float32.
//
// Every kernel that depends on the token position takes `pos0` plus a device
// pointer `dp` to a small parameter block {id, dpos}: the effective position
// is pos0 + dp[1]. Outside graph capture dp points at zeros; a captured decode
// step is replayed at a new position by rewriting dp, without re-capturing.
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <mma.h>

#define DEVI __device__ __forceinline__

// ---------------------------------------------------------------- helpers

DEVI float tof(float x) { return x; }
DEVI float tof(__half x) { return __half2float(x); }
DEVI float tof(__nv_bfloat16 x) { return __bfloat162float(x); }
DEVI float tof(int8_t x) { return (float)x; }

// V16<T> converts one 16-byte vector of T to floats.
template <typename T> struct V16;
template <> struct V16<float> {
  static constexpr int N = 4;
  static DEVI void cvt(const uint4& u, float* f) {
    f[0] = __uint_as_float(u.x); f[1] = __uint_as_float(u.y);
    f[2] = __uint_as_float(u.z); f[3] = __uint_as_float(u.w);
  }
};
template <> struct V16<__half> {
  static constexpr int N = 8;
  static DEVI void cvt(const uint4& u, float* f) {
    const __half2* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) { float2 t = __half22float2(h[i]); f[2 * i] = t.x; f[2 * i + 1] = t.y; }
  }
};
// int8 → float without the quarter-rate I2F: byte b+128 becomes the low
// mantissa byte of 2^23 (one PRMT), then one FADD removes 2^23+128. Exact.
template <> struct V16<int8_t> {
  static constexpr int N = 16;
  static DEVI void cvt(const uint4& u, float* f) {
    const unsigned w[4] = {u.x ^ 0x80808080u, u.y ^ 0x80808080u, u.z ^ 0x80808080u, u.w ^ 0x80808080u};
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int b = 0; b < 4; b++)
        f[4 * i + b] = __int_as_float(__byte_perm(w[i], 0x4B000000u, 0x7540u + b)) - 8388736.f;
  }
};
template <> struct V16<__nv_bfloat16> {
  static constexpr int N = 8;
  static DEVI void cvt(const uint4& u, float* f) {
    f[0] = __uint_as_float(u.x << 16); f[1] = __uint_as_float(u.x & 0xffff0000u);
    f[2] = __uint_as_float(u.y << 16); f[3] = __uint_as_float(u.y & 0xffff0000u);
    f[4] = __uint_as_float(u.z << 16); f[5] = __uint_as_float(u.z & 0xffff0000u);
    f[6] = __uint_as_float(u.w << 16); f[7] = __uint_as_float(u.w & 0xffff0000u);
  }
};

// Weights are read once per token: stream them past L1.
DEVI uint4 ldw(const uint4* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
  return r;
}

DEVI float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
DEVI float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// block_sum reduces over a block of up to 1024 threads; sh holds 32 floats.
DEVI float block_sum(float v, float* sh) {
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  int nw = (blockDim.x + 31) >> 5;
  v = (threadIdx.x < nw) ? sh[threadIdx.x] : 0.f;
  if (w == 0) v = warp_sum(v);
  if (threadIdx.x == 0) sh[0] = v;
  __syncthreads();
  return sh[0];
}

// Output of a fused matrix: row r of the stacked weight goes to part i with
// s[i] <= r < s[i+1] (s0 = 0, s4 = rows); each part is [n, s[i+1]-s[i]].
struct Parts {
  float* y0; float* y1; float* y2; float* y3;
  int s1, s2, s3, rows;
};
DEVI void store_part(const Parts& p, int row, int t, float v) {
  if (row < p.s1) p.y0[(size_t)t * p.s1 + row] = v;
  else if (row < p.s2) p.y1[(size_t)t * (p.s2 - p.s1) + row - p.s1] = v;
  else if (row < p.s3) p.y2[(size_t)t * (p.s3 - p.s2) + row - p.s2] = v;
  else p.y3[(size_t)t * (p.rows - p.s3) + row - p.s3] = v;
}

// PDL_ENTRY starts every kernel (TestEntryNames checks): wait until the
// previous grid in the stream has finished and its writes are visible, then
// let the next kernel launch. The backend launches kernels with
// programmatic dependent launch on Hopper (driver.go), so a kernel's launch
// and block setup overlap its predecessor's tail instead of following it;
// without that launch attribute both instructions do nothing.
#define PDL_ENTRY() asm volatile("griddepcontrol.wait;\n\tgriddepcontrol.launch_dependents;" ::: "memory")

// ---------------------------------------------------------------- GEMV
// gemv_chunks is the vector loop of the GEMV-shaped kernels (gemv_vec,
// gemv_fp8, gemv_heads in mla.cuh, moe_*_dec in moe.cuh): acc[r][t] += W row
// r · x row t for the RR rows wp[r] (nch 16-byte chunks of EL values each)
// and the rows t < n ≤ NT of x (stride xRow floats). A lane takes chunks
// lane, lane + 32, … with U·RR loads in flight and reads each x chunk once
// for all RR rows. FP8: each chunk's dot product is formed first and scaled
// once by its block scale sp[r][c >> cshift] (block widths are powers of two
// ≥ 16); sp is unused otherwise. The sums are per lane: warp_sum them.
template <typename T, bool FP8, int RR, int NT, int U>
DEVI void gemv_chunks(const uint4* const (&wp)[RR], const float* const* sp, int cshift, const float* __restrict__ x,
                      size_t xRow, int n, int nch, float (&acc)[RR][NT]) {
  constexpr int EL = V16<T>::N;
  const int lane = threadIdx.x & 31;
  for (int c0 = lane; c0 < nch; c0 += 32 * U) {
    uint4 wv[U][RR];
    float sv[U][RR];
#pragma unroll
    for (int u = 0; u < U; u++) {
      int c = c0 + u * 32;
#pragma unroll
      for (int r = 0; r < RR; r++) {
        wv[u][r] = (c < nch) ? ldw(wp[r] + c) : make_uint4(0, 0, 0, 0);
        if (FP8) sv[u][r] = (c < nch) ? __ldg(sp[r] + (c >> cshift)) : 0.f;
      }
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      int c = c0 + u * 32;
      if (c < nch) {
        float wf[RR][EL];
#pragma unroll
        for (int r = 0; r < RR; r++) V16<T>::cvt(wv[u][r], wf[r]);
#pragma unroll
        for (int t = 0; t < NT; t++) {
          if (t < n) {
            const float4* xp = reinterpret_cast<const float4*>(x + (size_t)t * xRow + (size_t)c * EL);
            float xv[EL];
#pragma unroll
            for (int e = 0; e < EL / 4; e++) {
              float4 v = __ldg(xp + e);
              xv[4 * e] = v.x; xv[4 * e + 1] = v.y; xv[4 * e + 2] = v.z; xv[4 * e + 3] = v.w;
            }
#pragma unroll
            for (int r = 0; r < RR; r++) {
              if (FP8) {
                float d = 0.f;
#pragma unroll
                for (int e = 0; e < EL; e++) d = fmaf(wf[r][e], xv[e], d);
                acc[r][t] = fmaf(d, sv[u][r], acc[r][t]);
              } else {
#pragma unroll
                for (int e = 0; e < EL; e++) acc[r][t] = fmaf(wf[r][e], xv[e], acc[r][t]);
              }
            }
          }
        }
      }
    }
  }
}

// warp_sums finishes gemv_chunks' per-lane sums (every lane gets them).
template <int RR, int NT> DEVI void warp_sums(float (&acc)[RR][NT]) {
#pragma unroll
  for (int r = 0; r < RR; r++)
#pragma unroll
    for (int t = 0; t < NT; t++) acc[r][t] = warp_sum(acc[r][t]);
}

// gemv_warp: acc[r][t] = W row min(r0 + r, rows - 1) · x row t for t < n
// <= NT, summed over the warp (every lane gets them; rows past the end
// repeat the last one for the caller to drop). FP8: srow(row) gives the
// row's block scales (gemv_fp8, fp8.cuh).
template <typename T, bool FP8, int R, int NT, int U, class SRow>
DEVI void gemv_warp(const T* __restrict__ W, const float* __restrict__ x, int n, int r0, int rows, int cols, SRow srow,
                    int cshift, float (&acc)[R][NT]) {
  constexpr int EL = V16<T>::N;
#pragma unroll
  for (int r = 0; r < R; r++)
#pragma unroll
    for (int t = 0; t < NT; t++) acc[r][t] = 0.f;
  const uint4* wp[R];
  const float* sp[R];
#pragma unroll
  for (int r = 0; r < R; r++) {
    int row = min(r0 + r, rows - 1);
    wp[r] = reinterpret_cast<const uint4*>(W + (size_t)row * cols);
    if (FP8) sp[r] = srow(row);
  }
  gemv_chunks<T, FP8, R, NT, U>(wp, sp, cshift, x, cols, n, cols / EL, acc);
  warp_sums(acc);
}

// y[t, r] = sum_c W[r, c] * x[t, c] (+ bias[r]) for t < n <= NT: one warp
// computes R rows (gemv_warp), then scales them by their row scale (int8:
// value = q × scale; scales null: none); lane 0 hands each value to
// store(row, t, v) (gemv_vec: the Parts store; gemv_add: an add).
template <typename T, bool FP8, int R, int NT, int U, class SRow, class Store>
DEVI void gemv_rows(const T* __restrict__ W, const float* __restrict__ x, int n, int rows,
                    const float* __restrict__ bias, int cols, const float* __restrict__ scales, SRow srow, int cshift,
                    Store store) {
  const int lane = threadIdx.x & 31;
  const int r0 = ((blockIdx.x * blockDim.x + threadIdx.x) >> 5) * R;
  if (r0 >= rows) return;
  float acc[R][NT];
  gemv_warp<T, FP8, R, NT, U>(W, x, n, r0, rows, cols, srow, cshift, acc);
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < R; r++) {
      int row = r0 + r;
      if (row < rows) {
        float b = bias ? bias[row] : 0.f;
        float sc = scales ? scales[row] : 1.f;
#pragma unroll
        for (int t = 0; t < NT; t++)
          if (t < n) store(row, t, acc[r][t] * sc + b);
      }
    }
  }
}
template <typename T, int R, int NT, int U>
__device__ void gemv_vec(const T* __restrict__ W, const float* __restrict__ x, int n,
                         Parts p, const float* __restrict__ bias, int cols, const float* __restrict__ scales) {
  gemv_rows<T, false, R, NT, U>(W, x, n, p.rows, bias, cols, scales, [](int) { return (const float*)nullptr; }, 0,
                                [&](int row, int t, float v) { store_part(p, row, t, v); });
}

// Scalar fallback for rows that are not 16-byte aligned (odd widths).
template <typename T>
__device__ void gemv_scalar(const T* __restrict__ W, const float* __restrict__ x, int n,
                            Parts p, const float* __restrict__ bias, int cols, const float* __restrict__ scales) {
  const int lane = threadIdx.x & 31;
  const int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  if (row >= p.rows) return;
  const T* w = W + (size_t)row * cols;
  for (int t = 0; t < n; t++) {
    const float* xr = x + (size_t)t * cols;
    float acc = 0.f;
    for (int c = lane; c < cols; c += 32) acc = fmaf(tof(w[c]), xr[c], acc);
    acc = warp_sum(acc);
    if (lane == 0) store_part(p, row, t, acc * (scales ? scales[row] : 1.f) + (bias ? bias[row] : 0.f));
  }
}

#define GEMV_VEC(NAME, T, R, NT)                                                        \
  extern "C" __global__ void __launch_bounds__(256) NAME(                                \
      const T* W, const float* x, int n, Parts p, const float* bias, int cols, const float* sc) { PDL_ENTRY(); \
    gemv_vec<T, R, NT, 4>(W, x, n, p, bias, cols, sc);                                   \
  }
GEMV_VEC(gemv_f32_1, float, 2, 1)
GEMV_VEC(gemv_f32_4, float, 2, 4)
GEMV_VEC(gemv_f32_8, float, 2, 8)
GEMV_VEC(gemv_f16_1, __half, 2, 1)
GEMV_VEC(gemv_f16_4, __half, 2, 4)
GEMV_VEC(gemv_f16_8, __half, 2, 8)
GEMV_VEC(gemv_bf16_1, __nv_bfloat16, 2, 1)
GEMV_VEC(gemv_i8_1, int8_t, 2, 1)
GEMV_VEC(gemv_i8_4, int8_t, 2, 4)
GEMV_VEC(gemv_i8_8, int8_t, 2, 8)
GEMV_VEC(gemv_bf16_4, __nv_bfloat16, 2, 4)
GEMV_VEC(gemv_bf16_8, __nv_bfloat16, 2, 8)

#define GEMV_SCALAR(NAME, T)                                                              \
  extern "C" __global__ void __launch_bounds__(256) NAME(                                \
      const T* W, const float* x, int n, Parts p, const float* bias, int cols, const float* sc) { PDL_ENTRY(); \
    gemv_scalar<T>(W, x, n, p, bias, cols, sc);                                          \
  }
GEMV_SCALAR(gemvs_f32, float)
GEMV_SCALAR(gemvs_f16, __half)
GEMV_SCALAR(gemvs_bf16, __nv_bfloat16)
GEMV_SCALAR(gemvs_i8, int8_t)

// ---------------------------------------------------------------- tiled GEMM
// The float32 FMA tile step of gemm_tiled and the grouped MoE kernels
// (moe.cuh), for one K tile of 16 staged in xs and ws ([16][64 + 4],
// k-major): thread (tr, tc) = (tid / 16, tid % 16) of 256 accumulates
// activation rows 4·tr..4·tr+3 of xs times weight columns col(0..3) of ws.
template <class Col>
DEVI void fma_tile16(const float (*xs)[64 + 4], const float (*ws)[64 + 4], Col col, float (&acc)[4][4]) {
  const int tr = threadIdx.x / 16;
#pragma unroll
  for (int kk = 0; kk < 16; kk++) {
    float a[4], b[4];
#pragma unroll
    for (int i = 0; i < 4; i++) { a[i] = xs[kk][tr * 4 + i]; b[i] = ws[kk][col(i)]; }
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < 4; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
  }
}

// Fallback GEMM for n > 8 tokens when cuBLASLt is absent: 64x64 output tiles,
// K tiles of 16 in shared memory, 4x4 outputs per thread, float32 FMA.
template <typename T>
__device__ void gemm_tiled(const T* __restrict__ W, const float* __restrict__ x, int n,
                           Parts p, const float* __restrict__ bias, int cols, const float* __restrict__ scales) {
  __shared__ float xs[16][64 + 4];
  __shared__ float ws[16][64 + 4];
  const int tid = threadIdx.x;  // 256 threads
  const int tr = tid / 16, tc = tid % 16;
  const int t0 = blockIdx.y * 64;  // tokens
  const int r0 = blockIdx.x * 64;  // weight rows
  float acc[4][4] = {};
  for (int k0 = 0; k0 < cols; k0 += 16) {
    for (int i = tid; i < 64 * 16; i += 256) {
      int rr = i / 16, kk = i % 16;
      int k = k0 + kk;
      int t = t0 + rr, r = r0 + rr;
      xs[kk][rr] = (t < n && k < cols) ? x[(size_t)t * cols + k] : 0.f;
      ws[kk][rr] = (r < p.rows && k < cols) ? tof(W[(size_t)r * cols + k]) : 0.f;
    }
    __syncthreads();
    fma_tile16(xs, ws, [=](int j) { return tc * 4 + j; }, acc);
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; i++) {
    int t = t0 + tr * 4 + i;
    if (t >= n) continue;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      int r = r0 + tc * 4 + j;
      if (r < p.rows) store_part(p, r, t, acc[i][j] * (scales ? scales[r] : 1.f) + (bias ? bias[r] : 0.f));
    }
  }
}
#define GEMM_TILED(NAME, T)                                                               \
  extern "C" __global__ void __launch_bounds__(256) NAME(                                \
      const T* W, const float* x, int n, Parts p, const float* bias, int cols, const float* sc) { PDL_ENTRY(); \
    gemm_tiled<T>(W, x, n, p, bias, cols, sc);                                           \
  }
GEMM_TILED(gemm_f32, float)
GEMM_TILED(gemm_f16, __half)
GEMM_TILED(gemm_bf16, __nv_bfloat16)
GEMM_TILED(gemm_i8, int8_t)

// ---------------------------------------------------------------- WMMA tiles
// The tensor-core tile of gemm_wmma, gemm_wmma_fp8 (fp8.cuh) and the grouped
// MoE GEMMs (moe.cuh): a 64×64 output tile on WMMA 16×16×16 with float32
// accumulation, 4 warps of 32×32 (warp w: rows 32·(w>>1) of As, 32·(w&1) of
// Bs), K steps of 32 through padded shared memory. As holds 64 activation
// rows and Bs 64 weight rows, [64][WMMA_LD] values of the MMA type S each;
// stage(k0) fills both for the step at k0 (each kernel loads its weights
// its own way: plain 16-bit, fp8 dequantised, expert rows), then every warp
// runs the same MMAs in the same order.
constexpr int WMMA_LD = 32 + 8;
using WmmaAcc = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float>;
template <typename S, class Stage>
DEVI void wmma_mainloop(const S* As, const S* Bs, int K, Stage&& stage, WmmaAcc (&acc)[2][2]) {
  using namespace nvcuda;
  constexpr int LD = WMMA_LD;
  const int warp = threadIdx.x >> 5, wm = warp >> 1, wn = warp & 1;
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int j = 0; j < 2; j++) wmma::fill_fragment(acc[i][j], 0.f);
  for (int k0 = 0; k0 < K; k0 += 32) {
    stage(k0);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < 32; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, S, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, S, wmma::col_major> fb[2];
#pragma unroll
      for (int i = 0; i < 2; i++) wmma::load_matrix_sync(fa[i], As + (wm * 32 + i * 16) * LD + kk, LD);
#pragma unroll
      for (int j = 0; j < 2; j++) wmma::load_matrix_sync(fb[j], Bs + (wn * 32 + j * 16) * LD + kk, LD);
#pragma unroll
      for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 2; j++) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();
  }
}

// gemm_wmma_tile: 64 tokens × 64 weight rows per block (grid: weight-row
// tiles × token tiles, 128 threads) for activations X already in the MMA
// type, K a multiple of 8. loadW(Bs, k0) stages the block's 64 weight rows
// for the K step at k0 (zeros past the last row or column). Each warp's
// 32×32 result goes through its own shared tile to store_part, + bias.
template <typename S, class LoadW>
DEVI void gemm_wmma_tile(const S* __restrict__ X, int n, Parts p, const float* __restrict__ bias, int K, LoadW&& loadW) {
  using namespace nvcuda;
  constexpr int LD = WMMA_LD;
  __shared__ __align__(32) S As[64 * LD];
  __shared__ __align__(32) S Bs[64 * LD];
  __shared__ __align__(32) float Cs[4][32 * 36];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wm = warp >> 1, wn = warp & 1;
  const int t0 = blockIdx.y * 64, r0 = blockIdx.x * 64;
  WmmaAcc acc[2][2];
  wmma_mainloop(As, Bs, K, [&](int k0) {
    for (int c = tid; c < 64 * 4; c += 128) {  // activations: 64 rows × 4 chunks of 8
      int r = c >> 2, ch = (c & 3) * 8;
      int k = k0 + ch;
      uint4 a = make_uint4(0, 0, 0, 0);
      if (t0 + r < n && k < K) a = __ldg(reinterpret_cast<const uint4*>(X + (size_t)(t0 + r) * K + k));
      *reinterpret_cast<uint4*>(As + r * LD + ch) = a;
    }
    loadW(Bs, k0);
  }, acc);
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int j = 0; j < 2; j++)
      wmma::store_matrix_sync(&Cs[warp][(i * 16) * 36 + j * 16], acc[i][j], 36, wmma::mem_row_major);
  __syncwarp();
  for (int e = lane; e < 32 * 32; e += 32) {
    int r = e >> 5, c = e & 31;
    int t = t0 + wm * 32 + r, row = r0 + wn * 32 + c;
    if (t < n && row < p.rows) store_part(p, row, t, Cs[warp][r * 36 + c] + (bias ? bias[row] : 0.f));
  }
}

// Tensor-core fallback GEMM for 16-bit weights when cuBLASLt is absent
// (activations already converted to the weight dtype): the weight rows
// copied into shared memory as they are, 8 values per 16-byte load.
template <typename T>
__device__ void gemm_wmma(const T* __restrict__ W, const T* __restrict__ X, int n, Parts p,
                          const float* __restrict__ bias, int K) {
  const int tid = threadIdx.x, r0 = blockIdx.x * 64;
  gemm_wmma_tile(X, n, p, bias, K, [&](T* Bs, int k0) {
    for (int c = tid; c < 64 * 4; c += 128) {  // 64 rows × 4 chunks of 8
      int r = c >> 2, ch = (c & 3) * 8;
      int k = k0 + ch;
      uint4 b = make_uint4(0, 0, 0, 0);
      if (r0 + r < p.rows && k < K) b = __ldg(reinterpret_cast<const uint4*>(W + (size_t)(r0 + r) * K + k));
      *reinterpret_cast<uint4*>(Bs + r * WMMA_LD + ch) = b;
    }
  });
}
extern "C" __global__ void __launch_bounds__(128) gemm_wmma_bf16(const __nv_bfloat16* W, const __nv_bfloat16* X, int n,
                                                                 Parts p, const float* bias, int K) { PDL_ENTRY();
  gemm_wmma(W, X, n, p, bias, K);
}
extern "C" __global__ void __launch_bounds__(128) gemm_wmma_f16(const __half* W, const __half* X, int n, Parts p,
                                                                const float* bias, int K) { PDL_ENTRY();
  gemm_wmma(W, X, n, p, bias, K);
}

// ---------------------------------------------------------------- conversions

// f32 -> bf16 / f16 activations for cuBLASLt (f16 saturates instead of inf).
extern "C" __global__ void cvt_f32_bf16(__nv_bfloat16* out, const float* in, long long n) { PDL_ENTRY();
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    out[i] = __float2bfloat16_rn(in[i]);
}
extern "C" __global__ void cvt_f32_f16(__half* out, const float* in, long long n) { PDL_ENTRY();
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    out[i] = __float2half_rn(fminf(fmaxf(in[i], -65504.f), 65504.f));
}
// Random weights for benchmarks (no host files): uniform in [-a, a) from a hash.
DEVI float hash_uniform(unsigned long long i, unsigned int seed) {
  unsigned long long z = i * 0x9E3779B97F4A7C15ull + seed;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return (float)(z >> 40) * (1.0f / 16777216.0f) * 2.f - 1.f;
}
extern "C" __global__ void rand_bf16(__nv_bfloat16* out, long long n, unsigned int seed, float a) { PDL_ENTRY();
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    out[i] = __float2bfloat16_rn(a * hash_uniform(i, seed));
}
extern "C" __global__ void rand_f32(float* out, long long n, unsigned int seed, float a, float c) { PDL_ENTRY();
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    out[i] = c + a * hash_uniform(i, seed);
}
// out[t, r] += bias[r] for a [n, rows] output (the cuBLASLt path).
extern "C" __global__ void add_bias(float* out, const float* bias, int n, int rows) { PDL_ENTRY();
  long long total = (long long)n * rows;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x)
    out[i] += bias[i % rows];
}

// ---------------------------------------------------------------- elementwise

template <typename T>
__device__ void embed(float* out, const T* table, const int* ids, const int* dp, int cols, int vocab,
                      const float* scales = nullptr) {
  int i = blockIdx.x;
  int id = ids ? ids[i] : dp[0];
  id = min(max(id, 0), vocab - 1);  // the host validates ids; clamp for replayed graphs
  const T* row = table + (size_t)id * cols;
  const float sc = scales ? scales[id] : 1.f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) out[(size_t)i * cols + c] = tof(row[c]) * sc;
}
extern "C" __global__ void embed_f32(float* out, const float* t, const int* ids, const int* dp, int cols, int vocab) { PDL_ENTRY(); embed(out, t, ids, dp, cols, vocab); }
extern "C" __global__ void embed_f16(float* out, const __half* t, const int* ids, const int* dp, int cols, int vocab) { PDL_ENTRY(); embed(out, t, ids, dp, cols, vocab); }
extern "C" __global__ void embed_i8(float* out, const int8_t* t, const int* ids, const int* dp, int cols, int vocab, const float* sc) { PDL_ENTRY(); embed(out, t, ids, dp, cols, vocab, sc); }
extern "C" __global__ void embed_bf16(float* out, const __nv_bfloat16* t, const int* ids, const int* dp, int cols, int vocab) { PDL_ENTRY(); embed(out, t, ids, dp, cols, vocab); }

// One block per row.
extern "C" __global__ void rmsnorm(float* out, const float* x, const float* w, int dim, float eps) { PDL_ENTRY();
  __shared__ float sh[32];
  const float* xr = x + (size_t)blockIdx.x * dim;
  float* o = out + (size_t)blockIdx.x * dim;
  float ss = 0.f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) ss = fmaf(xr[i], xr[i], ss);
  ss = block_sum(ss, sh);
  float inv = rsqrtf(ss / (float)dim + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = xr[i] * inv * w[i];
}

// rope_pair rotates pair i of the head at hp for position pos.
DEVI void rope_pair(float* hp, int i, int pos, const float* invf, int dim, float scale, int interleaved) {
  int half = dim / 2;
  // Angles in double: pos*invfreq grows with the position and must not lose
  // the fraction that float32 would drop at long contexts.
  double ang = (double)pos * (double)invf[i];
  double s, c;
  sincos(ang, &s, &c);
  float cs = (float)c * scale, sn = (float)s * scale;
  int a = interleaved ? 2 * i : i;
  int b = interleaved ? 2 * i + 1 : i + half;
  float x0 = hp[a], x1 = hp[b];
  hp[a] = x0 * cs - x1 * sn;
  hp[b] = x1 * cs + x0 * sn;
}

// One thread per rotated pair (token, head, i < dim/2). Row t is at
// position rpos[t] when rpos is given (batched steps), else pos0+dp[1]+t.
extern "C" __global__ void rope(float* x, int n, int heads, int hd, int pos0, const int* dp, const int* rpos,
                                const float* invf, int off, int dim, float scale, int interleaved) { PDL_ENTRY();
  int half = dim / 2;
  long long total = (long long)n * heads * half;
  long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (idx >= total) return;
  long long th = idx / half;
  int t = (int)(th / heads);
  int pos = rpos ? rpos[t] : pos0 + dp[1] + t;
  rope_pair(x + th * hd + off, idx % half, pos, invf, dim, scale, interleaved);
}

extern "C" __global__ void swiglu(float* out, const float* g, const float* u, long long n) { PDL_ENTRY();
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    float v = g[i];
    out[i] = v / (1.f + expf(-v)) * u[i];
  }
}
extern "C" __global__ void add(float* out, const float* a, const float* b, long long n) { PDL_ENTRY();
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    out[i] = a[i] + b[i];
}
extern "C" __global__ void axpy(float* y, const float* x, float alpha, long long n) { PDL_ENTRY();
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    y[i] = fmaf(alpha, x[i], y[i]);
}
extern "C" __global__ void copy2d(float* dst, int dstride, const float* src, int sstride, int rows, int cols) { PDL_ENTRY();
  long long total = (long long)rows * cols;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
    long long r = i / cols, c = i % cols;
    dst[r * dstride + c] = src[r * sstride + c];
  }
}
extern "C" __global__ void fill(float* out, float v, long long n) { PDL_ENTRY();
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    out[i] = v;
}

// argmax over each row of x[rows, n]; ties pick the lowest index and NaN never
// wins (as the CPU's `v > best` scan). One block of 1024 threads per row.
extern "C" __global__ void argmax(int* out, const float* x, int n) { PDL_ENTRY();
  __shared__ float sv[32];
  __shared__ int si[32];
  const float* xr = x + (size_t)blockIdx.x * n;
  float best = -INFINITY;
  int bi = -1;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    float v = xr[i];
    if (v > best || (bi < 0 && !(v != v))) { best = v; bi = i; }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    float ov = __shfl_xor_sync(0xffffffffu, best, o);
    int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (oi >= 0 && (bi < 0 || ov > best || (ov == best && oi < bi))) { best = ov; bi = oi; }
  }
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  if (lane == 0) { sv[w] = best; si[w] = bi; }
  __syncthreads();
  if (w == 0) {
    int nw = blockDim.x >> 5;
    best = lane < nw ? sv[lane] : -INFINITY;
    bi = lane < nw ? si[lane] : -1;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      float ov = __shfl_xor_sync(0xffffffffu, best, o);
      int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (oi >= 0 && (bi < 0 || ov > best || (ov == best && oi < bi))) { best = ov; bi = oi; }
    }
    if (lane == 0) out[blockIdx.x] = bi < 0 ? 0 : bi;
  }
}

// ---------------------------------------------------------------- sampling

// Sampling is engine.Sampler (engine/sampler.go) on the device, so that only
// the chosen id crosses to the host: repetition penalty over the history
// ids, then greedy (inv_t == 0) or temperature, top-k, top-p and min-p, and an
// inverse-CDF draw over the survivors in id order with the host's uniform u
// (the host keeps the seeded PCG, so a seed gives the same tokens on either
// backend for the same logits). One block cannot stream a 100k-entry row
// fast (measured 27 µs for a single pass: it is issue-bound), so the row is
// cut into 1024-entry tiles:
//   sample_tiles    (one block per tile) penalised copy, tile max, count;
//   sample_count    (one block per tile) entries within gcut nats of the
//                   row's max, and the tile's probability mass;
//   sample_compact  (one block per tile) those entries, in id order, into a
//                   candidate list (all candidates when top-k needs more);
//   sample_logits   (one block) the exact filters and the draw on the list.
// blockIdx.y is the row of a batch (Backend.SampleRows): each row has its
// settings in a SampArgs and its own slice of every scratch array. The host
// picks gcut so that every possible survivor is in the list; greedy rows
// skip count and compact and run sample_logits on the tile maxima. Every
// filter keeps a prefix of the candidates in one total order (larger logit
// first, then lower id), so the filters reduce to one 64-bit threshold on
// (key(logit), ~id); top-k and top-p find theirs by radix select over the
// logit's bits, weights counted in integers (top-p: probabilities in 8.24
// fixed point) so that atomics and reduction order cannot change the result.
typedef unsigned long long u64;

DEVI unsigned samp_key(float v) {  // order-preserving bits; NaN never asked
  unsigned u = __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
DEVI float samp_unkey(unsigned k) { return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k); }
DEVI u64 samp_rank(unsigned key, int i) { return ((u64)key << 32) | (unsigned)~(unsigned)i; }

struct SampRow {
  const float* x;  // candidate logits, in increasing id order
  const int* ids;  // their ids
  int n;
  DEVI float adj(int, float v) const { return v; }
  DEVI float val(int j) const { return x[j]; }
};

// samp_each calls f(i, v, ok) for every element, strided over the block with
// eight coalesced loads in flight per thread; every lane makes the same calls
// (ok false past the end), so f may use warp collectives.
template <class F>
DEVI void samp_each(const SampRow& r, F f) {
  const int nt = blockDim.x;
  for (int base = 0; base < r.n; base += 8 * nt) {
    float v[8];
#pragma unroll
    for (int u = 0; u < 8; u++) {
      int i = base + u * nt + threadIdx.x;
      v[u] = i < r.n ? r.x[i] : 0.f;
    }
#pragma unroll
    for (int u = 0; u < 8; u++) {
      int i = base + u * nt + threadIdx.x;
      f(i, i < r.n ? r.adj(i, v[u]) : 0.f, i < r.n);
    }
  }
}

// samp_chunk calls f(i, v) for i in [lo, hi) in order, 16 elements per step
// through 16-byte loads when aligned.
template <class F>
DEVI void samp_chunk(const SampRow& r, int lo, int hi, F f) {
  int i = lo;
  if ((reinterpret_cast<uintptr_t>(r.x + lo) & 15) == 0) {
    for (; i + 16 <= hi; i += 16) {
      float4 a[4];
#pragma unroll
      for (int u = 0; u < 4; u++) a[u] = *reinterpret_cast<const float4*>(r.x + i + 4 * u);
#pragma unroll
      for (int u = 0; u < 4; u++) {
        int j = i + 4 * u;
        f(j, r.adj(j, a[u].x));
        f(j + 1, r.adj(j + 1, a[u].y));
        f(j + 2, r.adj(j + 2, a[u].z));
        f(j + 3, r.adj(j + 3, a[u].w));
      }
    }
  }
  for (; i < hi; i++) f(i, r.val(i));
}

// samp_span is this thread's contiguous range for id-order passes (a
// multiple of 16 long, so aligned rows stay aligned).
DEVI void samp_span(int n, int* lo, int* hi) {
  int c = (((n + blockDim.x - 1) / blockDim.x) + 15) & ~15;
  *lo = min(n, (int)threadIdx.x * c);
  *hi = min(n, *lo + c);
}

// Block-wide sum (T: int, u64 or double), the same order on every run.
template <typename T>
DEVI T samp_sum(T v, T* sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  if (w == 0) {
    T r = lane < (int)(blockDim.x >> 5) ? sh[lane] : (T)0;
    for (int o = 16; o > 0; o >>= 1) r += __shfl_xor_sync(0xffffffffu, r, o);
    if (lane == 0) sh[32] = r;
  }
  __syncthreads();
  return sh[32];
}

// Block-wide exclusive prefix sum in thread order; *total gets the sum.
template <typename T>
DEVI T samp_scan(T v, T* sh, T* total) {
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
  T inc = v;
  for (int o = 1; o < 32; o <<= 1) {
    T t = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += t;
  }
  T exw = __shfl_up_sync(0xffffffffu, inc, 1);
  if (lane == 0) exw = 0;
  __syncthreads();
  if (lane == 31) sh[w] = inc;
  __syncthreads();
  if (w == 0) {
    T s = lane < nw ? sh[lane] : (T)0, si = s;
    for (int o = 1; o < 32; o <<= 1) {
      T t = __shfl_up_sync(0xffffffffu, si, o);
      if (lane >= o) si += t;
    }
    T ex = __shfl_up_sync(0xffffffffu, si, 1);
    if (lane == 0) ex = 0;
    if (lane < nw) sh[lane] = ex;
    if (lane == 31) sh[32] = si;
  }
  __syncthreads();
  T r = sh[w] + exw;
  *total = sh[32];
  __syncthreads();
  return r;
}

// Block-wide max of an int.
DEVI int samp_max(int v, int* sh) {
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  if (w == 0) {
    int r = lane < (int)(blockDim.x >> 5) ? sh[lane] : -0x7fffffff - 1;
    for (int o = 16; o > 0; o >>= 1) r = max(r, __shfl_xor_sync(0xffffffffu, r, o));
    if (lane == 0) sh[32] = r;
  }
  __syncthreads();
  return sh[32];
}

// Block-wide largest value, lowest index among equals (bi = INT_MAX when
// there is nothing); sf and si hold 32 entries.
DEVI void samp_argmax(float* best, int* bi, float* sf, int* si) {
  float b = *best;
  int i = *bi;
  for (int o = 16; o > 0; o >>= 1) {
    float ob = __shfl_xor_sync(0xffffffffu, b, o);
    int oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (ob > b || (ob == b && oi < i)) b = ob, i = oi;
  }
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) sf[w] = b, si[w] = i;
  __syncthreads();
  if (w == 0) {
    b = lane < (int)(blockDim.x >> 5) ? sf[lane] : -INFINITY;
    i = lane < (int)(blockDim.x >> 5) ? si[lane] : 0x7fffffff;
    for (int o = 16; o > 0; o >>= 1) {
      float ob = __shfl_xor_sync(0xffffffffu, b, o);
      int oi = __shfl_xor_sync(0xffffffffu, i, o);
      if (ob > b || (ob == b && oi < i)) b = ob, i = oi;
    }
    if (lane == 0) sf[0] = b, si[0] = i;
  }
  __syncthreads();
  *best = sf[0];
  *bi = si[0];
  __syncthreads();
}

struct SampShared {
  u64 hist[256];
  u64 s64[33];
  double sd[33];
  int si[33];
  float sf[32];
  unsigned sel;
  u64 rem;
  int res;
};

// samp_select finds the key T such that, over the elements, weight(key > T) <
// need <= weight(key >= T); *rem gets need - weight(key > T). weight(i, v)
// (at most 2^24) is 0 for elements not in the set. Four passes of 8-bit
// digits, most significant first.
template <class W>
DEVI unsigned samp_select(const SampRow& r, W weight, u64 need, u64* rem, SampShared& sh) {
  unsigned prefix = 0, mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += blockDim.x) sh.hist[b] = 0;
    __syncthreads();
    samp_each(r, [&](int i, float v, bool ok) {
      unsigned bin = 256, w = 0;
      if (ok) {
        unsigned k = samp_key(v);
        if ((k & mask) == prefix && (w = weight(i, v)) != 0) bin = (k >> shift) & 255u;
      }
      // One atomic per warp and bin: lanes of a bin sum their weights.
      unsigned peers = __match_any_sync(0xffffffffu, bin);
      unsigned sum = __reduce_add_sync(peers, w);
      if (bin < 256 && (int)(threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(&sh.hist[bin], (u64)sum);
    });
    __syncthreads();
    if (threadIdx.x < 32) {
      // Lane l holds bins 255-8l down to 248-8l; the first lane whose running
      // sum from the top reaches need walks its bins.
      int l = threadIdx.x;
      u64 loc = 0;
      for (int j = 0; j < 8; j++) loc += sh.hist[255 - 8 * l - j];
      u64 inc = loc;
      for (int o = 1; o < 32; o <<= 1) {
        u64 t = __shfl_up_sync(0xffffffffu, inc, o);
        if (l >= o) inc += t;
      }
      unsigned hit = __ballot_sync(0xffffffffu, inc >= need);
      int L = hit ? __ffs(hit) - 1 : 31;
      if (l == L) {
        u64 acc = inc - loc;
        for (int j = 0; j < 8; j++) {
          int b = 255 - 8 * l - j;
          if (acc + sh.hist[b] >= need || j == 7) {
            sh.sel = b;
            sh.rem = need - acc;
            break;
          }
          acc += sh.hist[b];
        }
      }
    }
    __syncthreads();
    prefix |= sh.sel << shift;
    mask |= 255u << shift;
    need = sh.rem;
    __syncthreads();
  }
  *rem = need;
  return prefix;
}

// samp_nth returns the m-th (1-based, clamped to the count) index in id order
// for which pred(i, v) holds; each thread scans a contiguous chunk.
template <class P>
DEVI int samp_nth(const SampRow& r, P pred, int m, SampShared& sh) {
  int lo, hi;
  samp_span(r.n, &lo, &hi);
  int c = 0;
  samp_chunk(r, lo, hi, [&](int i, float v) { c += pred(i, v) ? 1 : 0; });
  int total;
  int ex = samp_scan(c, sh.si, &total);
  m = max(1, min(m, total));
  if (ex < m && m <= ex + c) {
    int k = m - ex;
    for (int i = lo; i < hi; i++)
      if (pred(i, r.val(i)) && --k == 0) {
        sh.res = i;
        break;
      }
  }
  __syncthreads();
  int res = sh.res;
  __syncthreads();
  return res;
}

#define SAMP_TILE 1024

// samp_keep: the candidate-list test of sample_count and sample_compact (the
// same expression in both, so their counts agree).
DEVI bool samp_keep(float v, float best, float inv_t, float gcut) {
  return v > -INFINITY && (v == best || -((v - best) * inv_t) <= gcut);
}

// samp_rowmax: the largest tile maximum (every block of a pass computes it).
DEVI float samp_rowmax(const float* tmax, int nb, float* sf, int* si) {
  float best = -INFINITY;
  int bi = 0x7fffffff;
  for (int b = threadIdx.x; b < nb; b += blockDim.x)
    if (tmax[b] > best) best = tmax[b], bi = b;
  samp_argmax(&best, &bi, sf, si);
  return best;
}

// SampArgs: one row's settings (Go's sampleArgs, the same layout). The
// penalty applies over hist[hoff:hoff+nh]; inv_t 0 is greedy; top_k 0 is
// off (also when >= n).
struct SampArgs {
  int row;  // the row of x
  int hoff, nh;
  int top_k;
  float pen, inv_t, gcut, top_p;
  float min_p;
  int pad;
  double u;
};

extern "C" __global__ void __launch_bounds__(256) sample_tiles(float* w, float* tmax, int* targ, int* tcnt, int* cn,
                                                               const float* x, int n, const int* hist, const SampArgs* ra) { PDL_ENTRY();
  __shared__ float tile[SAMP_TILE];
  __shared__ float sf[33];
  __shared__ int si[33];
  const SampArgs a = ra[blockIdx.y];
  const int r = blockIdx.y, nb = gridDim.x, nh = a.nh;
  const float pen = a.pen;
  x += (size_t)a.row * n;
  w += (size_t)r * n;
  tmax += r * nb, targ += r * nb, tcnt += r * nb;
  hist += a.hoff;
  const int lo = blockIdx.x * SAMP_TILE, m = min(SAMP_TILE, n - lo);
  for (int k = threadIdx.x; k < m; k += blockDim.x) tile[k] = x[lo + k];
  __syncthreads();
  for (int j = threadIdx.x; j < nh; j += blockDim.x) {
    int id = hist[j];
    if (id >= lo && id < lo + m) {
      float v = x[id];  // the original: a repeated id is penalised once
      tile[id - lo] = v > 0.f ? v / pen : v * pen;
    }
  }
  __syncthreads();
  float best = -INFINITY;
  int bi = 0x7fffffff, c = 0;
  for (int k = threadIdx.x; k < m; k += blockDim.x) {
    float v = tile[k];
    w[lo + k] = v;
    if (v > -INFINITY) {
      c++;
      if (v > best) best = v, bi = lo + k;
    }
  }
  samp_argmax(&best, &bi, sf, si);
  c = samp_sum(c, si);
  if (threadIdx.x == 0) tmax[blockIdx.x] = best, targ[blockIdx.x] = bi == 0x7fffffff ? lo : bi, tcnt[blockIdx.x] = c;
  if (blockIdx.x == 0 && threadIdx.x == 0) cn[r] = nb;  // greedy: the list is the tile maxima
}

extern "C" __global__ void __launch_bounds__(256) sample_count(int* tpass, u64* tmass, const float* w, int n, const float* tmax,
                                                               int nb, const SampArgs* ra) { PDL_ENTRY();
  __shared__ float sf[33];
  __shared__ int si[33];
  __shared__ u64 s64[33];
  const int r = blockIdx.y;
  const float inv_t = ra[r].inv_t, gcut = ra[r].gcut;
  if (inv_t == 0.f) return;  // greedy row (the whole block)
  w += (size_t)r * n;
  tmax += r * nb, tpass += r * nb, tmass += r * nb;
  const float best = samp_rowmax(tmax, nb, sf, si);
  const int lo = blockIdx.x * SAMP_TILE, m = min(SAMP_TILE, n - lo);
  int c = 0;
  u64 mass = 0;
  for (int k = threadIdx.x; k < m; k += blockDim.x) {
    float v = w[lo + k];
    if (v > -INFINITY) {
      c += samp_keep(v, best, inv_t, gcut) ? 1 : 0;
      mass += __float2uint_rn(expf((v - best) * inv_t) * 16777216.f);
    }
  }
  c = samp_sum(c, si);
  mass = samp_sum(mass, s64);
  if (threadIdx.x == 0) tpass[blockIdx.x] = c, tmass[blockIdx.x] = mass;
}

extern "C" __global__ void __launch_bounds__(256) sample_compact(float* cv, int* ci, int* cn, const float* w, int n,
                                                                 const int* tpass, const int* tcnt, const float* tmax, int nb,
                                                                 const SampArgs* ra) { PDL_ENTRY();
  __shared__ float sf[33];
  __shared__ int si[33];
  const int r = blockIdx.y;
  const float inv_t = ra[r].inv_t, gcut = ra[r].gcut;
  const int top_k = ra[r].top_k;
  if (inv_t == 0.f) return;  // greedy row: sample_logits reads the tile maxima
  cv += (size_t)r * n, ci += (size_t)r * n, w += (size_t)r * n;
  tpass += r * nb, tcnt += r * nb, tmax += r * nb;
  const float best = samp_rowmax(tmax, nb, sf, si);
  int pass = 0;
  for (int b = threadIdx.x; b < nb; b += blockDim.x) pass += tpass[b];
  pass = samp_sum(pass, si);
  // Fewer entries within gcut than top-k needs: list every candidate.
  const bool all = top_k > 0 && pass < top_k;
  const int* cnt = all ? tcnt : tpass;
  int off = 0, total = 0;
  for (int b = threadIdx.x; b < nb; b += blockDim.x) {
    total += cnt[b];
    off += b < (int)blockIdx.x ? cnt[b] : 0;
  }
  off = samp_sum(off, si);
  total = samp_sum(total, si);
  // Thread t lists entries 4t..4t+3 of the tile, in order.
  const int lo = blockIdx.x * SAMP_TILE, m = min(SAMP_TILE, n - lo);
  bool keep[4];
  int c = 0;
#pragma unroll
  for (int j = 0; j < 4; j++) {
    int k = 4 * threadIdx.x + j;
    float v = k < m ? w[lo + k] : -INFINITY;
    keep[j] = all ? v > -INFINITY : samp_keep(v, best, inv_t, gcut);
    c += keep[j] ? 1 : 0;
  }
  int tot;
  int pos = off + samp_scan(c, si, &tot);
#pragma unroll
  for (int j = 0; j < 4; j++) {
    int k = 4 * threadIdx.x + j;
    if (keep[j]) cv[pos] = w[lo + k], ci[pos] = lo + k, pos++;
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) cn[r] = total;
}

// sample_logits: the filters and the draw on a candidate list (cv, ci, cn
// entries in increasing id order; greedy rows: the tile maxima tmax, targ).
// tcnt (nb tiles) gives the row's candidate count and tmass its probability
// mass in 8.24 fixed point. One block per row; out[row] gets the id.
extern "C" __global__ void __launch_bounds__(1024) sample_logits(int* out, const float* cv, const int* ci, const float* tmax,
                                                                 const int* targ, const int* cn, const int* tcnt,
                                                                 const u64* tmass, int n, int nb, const SampArgs* ra) { PDL_ENTRY();
  __shared__ SampShared sh;
  const int tid = threadIdx.x, row = blockIdx.y;
  const SampArgs a = ra[row];
  const float inv_t = a.inv_t, top_p = a.top_p, min_p = a.min_p;
  const int top_k = a.top_k;
  const double u = a.u;
  out += row;
  tcnt += row * nb, tmass += row * nb;
  if (inv_t == 0.f) {
    cv = tmax + row * nb, ci = targ + row * nb;
  } else {
    cv += (size_t)row * n, ci += (size_t)row * n;
  }
  const SampRow r{cv, ci, cn[row]};

  // The largest candidate (first id among equals) and the row's candidate
  // count; candidates are neither NaN nor -Inf.
  float best = -INFINITY;
  int bi = 0x7fffffff, cnt = 0;
  samp_each(r, [&](int i, float v, bool ok) {
    if (ok && v > -INFINITY && v > best) best = v, bi = i;
  });
  samp_argmax(&best, &bi, sh.sf, sh.si);
  for (int b = tid; b < nb; b += blockDim.x) cnt += tcnt[b];
  cnt = samp_sum(cnt, sh.si);
  if (cnt == 0 || inv_t == 0.f || best == INFINITY) {
    // Greedy, nothing to draw from (id 0, as the host), or an infinite logit
    // that takes all the mass.
    if (tid == 0) out[0] = cnt == 0 || bi == 0x7fffffff ? 0 : ci[bi];
    return;
  }

  u64 thr = 0;  // kept: a candidate whose rank is >= thr
  auto kept = [&](int j, float v) { return v > -INFINITY && samp_rank(samp_key(v), ci[j]) >= thr; };
  if (top_k > 0 && top_k < cnt) {
    u64 rem;
    unsigned t = samp_select(r, [&](int, float v) -> unsigned { return v > -INFINITY ? 1u : 0u; }, (u64)top_k, &rem, sh);
    int j = samp_nth(r, [&](int, float v) { return v > -INFINITY && samp_key(v) == t; }, (int)rem, sh);
    thr = samp_rank(t, ci[j]);
  }
  auto prob = [&](float v) { return expf((v - best) * inv_t); };
  if (top_p > 0.f && top_p < 1.f) {
    auto q = [&](int i, float v) -> unsigned { return kept(i, v) ? __float2uint_rn(prob(v) * 16777216.f) : 0u; };
    // The mass top-p takes its share of: the top-k survivors' (all in the
    // list), else the whole row's.
    u64 mass = 0;
    if (thr != 0) {
      samp_each(r, [&](int i, float v, bool ok) { mass += ok ? q(i, v) : 0u; });
    } else {
      for (int b = tid; b < nb; b += blockDim.x) mass += tmass[b];
    }
    mass = samp_sum(mass, sh.s64);
    u64 need = max(1ull, (u64)ceil((double)top_p * (double)mass));
    u64 rem;
    unsigned t = samp_select(r, q, need, &rem, sh);
    // Elements of equal logit weigh the same: take just enough of them.
    u64 qe = __float2uint_rn(prob(samp_unkey(t)) * 16777216.f);
    int m = qe ? (int)min((rem + qe - 1) / qe, (u64)0x7fffffff) : 1;
    int j = samp_nth(r, [&](int i, float v) { return kept(i, v) && samp_key(v) == t; }, m, sh);
    thr = max(thr, samp_rank(t, ci[j]));
  }
  auto surv = [&](int i, float v, float* p) {
    if (!kept(i, v)) return false;
    *p = prob(v);
    return min_p <= 0.f || *p >= min_p;  // the largest has probability 1
  };

  // Inverse CDF in id order: contiguous chunks, a scan of their sums, and
  // the one chunk holding u·total walks its elements.
  int lo, hi;
  samp_span(r.n, &lo, &hi);
  double own = 0;
  samp_chunk(r, lo, hi, [&](int i, float v) {
    float p;
    if (surv(i, v, &p)) own += (double)p;
  });
  double total;
  double ex = samp_scan(own, sh.sd, &total);
  double target = u * total;
  int who = samp_max(own > 0 && ex <= target ? tid : -1, sh.si);
  if (tid == who) {
    double rest = target - ex;
    int last = -1, pick = -1;
    for (int i = lo; i < hi && pick < 0; i++) {
      float p;
      if (!surv(i, r.val(i), &p)) continue;
      last = i;
      rest -= (double)p;
      if (rest < 0) pick = i;
    }
    out[0] = ci[pick >= 0 ? pick : last];
  }
  if (who < 0 && tid == 0) out[0] = ci[bi];  // unreachable: the largest survives
}

// ---------------------------------------------------------------- KV cache

// Stores k[n, kvh*kd] and v[n, kvh*vd] at positions pos..pos+n-1 of one layer
// (caches laid out [maxTokens, kvh, d]).
template <typename KT>
__device__ void kv_store(KT* kc, KT* vc, const float* k, const float* v, int n, int pos0,
                         const int* dp, int kw, int vw) {
  int pos = pos0 + dp[1];
  long long tk = (long long)n * kw, tv = vc ? (long long)n * vw : 0;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < tk + tv; i += (long long)gridDim.x * blockDim.x) {
    if (i < tk) {
      long long t = i / kw, c = i % kw;
      kc[(pos + t) * kw + c] = (KT)k[i];
    } else {
      long long j = i - tk;
      long long t = j / vw, c = j % vw;
      vc[(pos + t) * vw + c] = (KT)v[j];
    }
  }
}
extern "C" __global__ void kv_store_f32(float* kc, float* vc, const float* k, const float* v, int n, int pos0, const int* dp, int kw, int vw) { PDL_ENTRY(); kv_store(kc, vc, k, v, n, pos0, dp, kw, vw); }
extern "C" __global__ void kv_store_f16(__half* kc, __half* vc, const float* k, const float* v, int n, int pos0, const int* dp, int kw, int vw) { PDL_ENTRY(); kv_store(kc, vc, k, v, n, pos0, dp, kw, vw); }

// Paged caches: position p of the sequence of row i lives at slot
// tabs[rseq[i]*maxb + p/bs]*bs + p%bs of a layer laid out [slots, kvh, d].
struct Paged {
  const int *rpos, *rseq, *tabs;
  int maxb, bs;
  DEVI size_t slot(int i, int p) const { return (size_t)tabs[rseq[i] * maxb + p / bs] * bs + p % bs; }
};

template <typename KT>
__device__ void kv_store_paged(KT* kc, KT* vc, const float* k, const float* v, int n, Paged pg, int kw, int vw) {
  long long tk = (long long)n * kw, tv = vc ? (long long)n * vw : 0;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < tk + tv; i += (long long)gridDim.x * blockDim.x) {
    if (i < tk) {
      long long t = i / kw, c = i % kw;
      kc[pg.slot(t, pg.rpos[t]) * kw + c] = (KT)k[i];
    } else {
      long long j = i - tk;
      long long t = j / vw, c = j % vw;
      vc[pg.slot(t, pg.rpos[t]) * vw + c] = (KT)v[j];
    }
  }
}
extern "C" __global__ void kv_store_paged_f32(float* kc, float* vc, const float* k, const float* v, int n, const int* rpos, const int* rseq, const int* tabs, int maxb, int bs, int kw, int vw) { PDL_ENTRY(); kv_store_paged(kc, vc, k, v, n, Paged{rpos, rseq, tabs, maxb, bs}, kw, vw); }
extern "C" __global__ void kv_store_paged_f16(__half* kc, __half* vc, const float* k, const float* v, int n, const int* rpos, const int* rseq, const int* tabs, int maxb, int bs, int kw, int vw) { PDL_ENTRY(); kv_store_paged(kc, vc, k, v, n, Paged{rpos, rseq, tabs, maxb, bs}, kw, vw); }

// kv_store_f16x4: the same with 16-byte loads and 8-byte stores (widths
// multiple of 4); the prefill cache write is pure bandwidth.
extern "C" __global__ void kv_store_f16x4(__half* kc, __half* vc, const float* k, const float* v, int n, int pos0,
                                          const int* dp, int kw, int vw) { PDL_ENTRY();
  int pos = pos0 + dp[1];
  long long tk = (long long)n * kw / 4, tv = vc ? (long long)n * vw / 4 : 0;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < tk + tv; i += (long long)gridDim.x * blockDim.x) {
    const float* src;
    __half* dst;
    if (i < tk) {
      long long e = i * 4, t = e / kw, c = e % kw;
      src = k + e;
      dst = kc + (pos + t) * kw + c;
    } else {
      long long e = (i - tk) * 4, t = e / vw, c = e % vw;
      src = v + e;
      dst = vc + (pos + t) * vw + c;
    }
    float4 f = *reinterpret_cast<const float4*>(src);
    __half2 a = __floats2half2_rn(f.x, f.y), b = __floats2half2_rn(f.z, f.w);
    uint2 u;
    u.x = *reinterpret_cast<unsigned*>(&a);
    u.y = *reinterpret_cast<unsigned*>(&b);
    *reinterpret_cast<uint2*>(dst) = u;
  }
}

// ---------------------------------------------------------------- split-KV attention
// Decode (and the generic path): block (split s, kv head g, query i) scores
// the keys [s*L, min((s+1)*L, pos_i+1)) for the heads sharing kv head g and
// writes a partial (acc[vd], max, sum) per head; attn_combine merges splits.
// Scores and softmax in float32.
// With PAGED, query i is batch row i: its keys are positions 0..rpos[i]
// of its sequence, found through the block table (Paged). A paged launch
// may cover a subset of the rows (the others on the flash kernel): block z
// then computes batch row rows[z] into partial slot z (rows null: row z).
template <typename KT, bool PAGED = false>
__device__ void attn_split(float* part, const float* q, const KT* kc, const KT* vc, int n, int pos0,
                           const int* dp, int heads, int kvh, int kd, int vd, int kstride, int vstride,
                           float scale, int L, int nsplit, int vhs, Paged pg = Paged{}, const int* rows = nullptr) {
  extern __shared__ float sm[];
  const int s = blockIdx.x, g = blockIdx.y, i = blockIdx.z;
  const int r = (PAGED && rows) ? rows[i] : i;  // the batch row of query i
  const int G = heads / kvh;
  float* qs = sm;               // [G][kd]
  float* sc = sm + G * kd;      // [G][L]
  const int tid = threadIdx.x, nt = blockDim.x;
  const int T = PAGED ? pg.rpos[r] + 1 : pos0 + dp[1] + i + 1;  // keys visible to query i
  auto slot = [&](int p) -> size_t { return PAGED ? pg.slot(r, p) : (size_t)p; };
  const int start = s * L, end = min(start + L, T);
  const int len = end - start;
  float* pbase = part + ((size_t)i * heads + (size_t)g * G) * nsplit * (vd + 2);
  if (len <= 0) {
    for (int h = tid; h < G; h += nt) {
      float* pp = pbase + ((size_t)h * nsplit + s) * (vd + 2);
      pp[vd] = -INFINITY; pp[vd + 1] = 0.f;
    }
    return;
  }
  for (int j = tid; j < G * kd; j += nt) {
    int h = j / kd, d = j % kd;
    qs[j] = q[(size_t)r * heads * kd + (size_t)(g * G + h) * kd + d] * scale;
  }
  __syncthreads();
  float* red = sc + G * L;      // [nt * 8] partial sums (vector path)
  // 16-byte K/V rows (f16, dims multiple of 8, power-of-two value chunks):
  // 16 lanes per key for scores, keys spread over thread groups for values.
  const bool vec = sizeof(KT) == 2 && kd % 8 == 0 && vd % 8 == 0 && (nt % (vd / 8)) == 0 && vhs % 8 == 0 &&
                   kstride % 8 == 0 && vstride % 8 == 0;
  if (vec && kd <= 128) {
    // One 16-byte chunk per lane; four keys' loads in flight per lane group.
    const int l16 = tid & 15, g16 = tid >> 4, ng16 = nt >> 4, nch = kd / 8;
    for (int jb = 0; jb < len; jb += 4 * ng16) {
      uint4 kr4[4];
#pragma unroll
      for (int u = 0; u < 4; u++) {
        const int j = jb + u * ng16 + g16;
        kr4[u] = make_uint4(0, 0, 0, 0);
        if (j < len && l16 < nch)
          kr4[u] = reinterpret_cast<const uint4*>(kc + slot(start + j) * kstride + (size_t)g * kd)[l16];
      }
#pragma unroll
      for (int u = 0; u < 4; u++) {
        const int j = jb + u * ng16 + g16;
        float kf[8];
        V16<__half>::cvt(kr4[u], kf);
        for (int h = 0; h < G; h++) {
          float a = 0.f;
          if (l16 < nch) {
            const float* qh = qs + h * kd + l16 * 8;
#pragma unroll
            for (int e = 0; e < 8; e++) a = fmaf(kf[e], qh[e], a);
          }
          a += __shfl_xor_sync(0xffffffffu, a, 1);
          a += __shfl_xor_sync(0xffffffffu, a, 2);
          a += __shfl_xor_sync(0xffffffffu, a, 4);
          a += __shfl_xor_sync(0xffffffffu, a, 8);
          if (j < len && l16 == 0) sc[h * L + j] = a;
        }
      }
    }
  } else if (vec) {
    const int l16 = tid & 15, g16 = tid >> 4, ng16 = nt >> 4, nch = kd / 8;
    for (int jb = 0; jb < len; jb += ng16) {
      const int j = jb + g16;
      const bool ok = j < len;
      const uint4* kr = reinterpret_cast<const uint4*>(kc + slot(start + (ok ? j : 0)) * kstride + (size_t)g * kd);
      for (int h = 0; h < G; h++) {
        float a = 0.f;
        if (ok)
          for (int c = l16; c < nch; c += 16) {
            float kf[8];
            V16<__half>::cvt(kr[c], kf);
            const float* qh = qs + h * kd + c * 8;
#pragma unroll
            for (int e = 0; e < 8; e++) a = fmaf(kf[e], qh[e], a);
          }
        a += __shfl_xor_sync(0xffffffffu, a, 1);
        a += __shfl_xor_sync(0xffffffffu, a, 2);
        a += __shfl_xor_sync(0xffffffffu, a, 4);
        a += __shfl_xor_sync(0xffffffffu, a, 8);
        if (ok && l16 == 0) sc[h * L + j] = a;
      }
    }
  } else {
  // Scores: 8 lanes per key.
  const int sub = tid & 7, grp = tid >> 3, ngrp = nt >> 3;
  // The loop bound is uniform across the warp so the shuffles never diverge.
  for (int jb = 0; jb < len; jb += ngrp) {
    const int j = jb + grp;
    const bool ok = j < len;
    const KT* kr = kc + slot(start + (ok ? j : 0)) * kstride + (size_t)g * kd;
    for (int h = 0; h < G; h++) {
      float a = 0.f;
      if (ok)
        for (int d = sub; d < kd; d += 8) a = fmaf(qs[h * kd + d], tof(kr[d]), a);
      a += __shfl_xor_sync(0xffffffffu, a, 1);
      a += __shfl_xor_sync(0xffffffffu, a, 2);
      a += __shfl_xor_sync(0xffffffffu, a, 4);
      if (ok && sub == 0) sc[h * L + j] = a;
    }
  }
  }
  __syncthreads();
  // Per head max and exp (one warp per head).
  __shared__ float mx[64], sum[64];
  const int lane = tid & 31, w = tid >> 5, nw = nt >> 5;
  for (int h = w; h < G; h += nw) {
    float m = -INFINITY;
    for (int j = lane; j < len; j += 32) m = fmaxf(m, sc[h * L + j]);
    m = warp_max(m);
    float l = 0.f;
    for (int j = lane; j < len; j += 32) { float e = expf(sc[h * L + j] - m); sc[h * L + j] = e; l += e; }
    l = warp_sum(l);
    if (lane == 0) { mx[h] = m; sum[h] = l; }
  }
  __syncthreads();
  if (vec) {
    const int nvc = vd / 8, c = tid % nvc, kg = tid / nvc, nkg = nt / nvc;
    for (int h = 0; h < G; h++) {
      float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      const float* ph = sc + h * L;
#pragma unroll 4
      for (int j = kg; j < len; j += nkg) {
        float vf[8];
        V16<__half>::cvt(reinterpret_cast<const uint4*>(vc + slot(start + j) * vstride + (size_t)g * vhs)[c], vf);
        const float p = ph[j];
#pragma unroll
        for (int e = 0; e < 8; e++) acc[e] = fmaf(p, vf[e], acc[e]);
      }
#pragma unroll
      for (int e = 0; e < 8; e++) red[kg * vd + c * 8 + e] = acc[e];
      __syncthreads();
      float* pp = pbase + ((size_t)h * nsplit + s) * (vd + 2);
      for (int d = tid; d < vd; d += nt) {
        float a = 0.f;
        for (int k = 0; k < nkg; k++) a += red[k * vd + d];
        pp[d] = a;
      }
      if (tid == 0) { pp[vd] = mx[h]; pp[vd + 1] = sum[h]; }
      __syncthreads();
    }
    return;
  }
  for (int idx = tid; idx < G * vd; idx += nt) {
    int h = idx / vd, d = idx % vd;
    const KT* vp = vc + (size_t)g * vhs + d;
    const float* ph = sc + h * L;
    float a = 0.f;
    for (int j = 0; j < len; j++) a = fmaf(ph[j], tof(vp[slot(start + j) * vstride]), a);
    float* pp = pbase + ((size_t)h * nsplit + s) * (vd + 2);
    pp[d] = a;
    if (d == 0) { pp[vd] = mx[h]; pp[vd + 1] = sum[h]; }
  }
}
extern "C" __global__ void attn_split_f32(float* part, const float* q, const float* kc, const float* vc, int n, int pos0, const int* dp, int heads, int kvh, int kd, int vd, int ks, int vs, float scale, int L, int nsplit, int vhs) { PDL_ENTRY();
  attn_split(part, q, kc, vc, n, pos0, dp, heads, kvh, kd, vd, ks, vs, scale, L, nsplit, vhs);
}
extern "C" __global__ void attn_split_f16(float* part, const float* q, const __half* kc, const __half* vc, int n, int pos0, const int* dp, int heads, int kvh, int kd, int vd, int ks, int vs, float scale, int L, int nsplit, int vhs) { PDL_ENTRY();
  attn_split(part, q, kc, vc, n, pos0, dp, heads, kvh, kd, vd, ks, vs, scale, L, nsplit, vhs);
}

extern "C" __global__ void attn_split_paged_f32(float* part, const float* q, const float* kc, const float* vc, int n, const int* rpos, const int* rseq, const int* tabs, int maxb, int bs, int heads, int kvh, int kd, int vd, int ks, int vs, float scale, int L, int nsplit, int vhs, const int* rows) { PDL_ENTRY();
  attn_split<float, true>(part, q, kc, vc, n, 0, nullptr, heads, kvh, kd, vd, ks, vs, scale, L, nsplit, vhs, Paged{rpos, rseq, tabs, maxb, bs}, rows);
}
extern "C" __global__ void attn_split_paged_f16(float* part, const float* q, const __half* kc, const __half* vc, int n, const int* rpos, const int* rseq, const int* tabs, int maxb, int bs, int heads, int kvh, int kd, int vd, int ks, int vs, float scale, int L, int nsplit, int vhs, const int* rows) { PDL_ENTRY();
  attn_split<__half, true>(part, q, kc, vc, n, 0, nullptr, heads, kvh, kd, vd, ks, vs, scale, L, nsplit, vhs, Paged{rpos, rseq, tabs, maxb, bs}, rows);
}

// One block per (query, head): out = sum_s acc_s e^(m_s-M) / sum_s l_s e^(m_s-M).
// ih indexes the partials (query*heads + head), oh the output row head.
DEVI void attn_combine_at(float* out, const float* part, int ih, int oh, int vd, int nsplit) {
  const float* pp = part + (size_t)ih * nsplit * (vd + 2);
  float M = -INFINITY;
  for (int s = 0; s < nsplit; s++) M = fmaxf(M, pp[(size_t)s * (vd + 2) + vd]);
  float Lsum = 0.f;
  for (int s = 0; s < nsplit; s++) {
    float m = pp[(size_t)s * (vd + 2) + vd];
    if (m != -INFINITY) Lsum += pp[(size_t)s * (vd + 2) + vd + 1] * expf(m - M);
  }
  for (int d = threadIdx.x; d < vd; d += blockDim.x) {
    float a = 0.f;
    for (int s = 0; s < nsplit; s++) {
      float m = pp[(size_t)s * (vd + 2) + vd];
      if (m != -INFINITY) a += pp[(size_t)s * (vd + 2) + d] * expf(m - M);
    }
    out[(size_t)oh * vd + d] = a / Lsum;
  }
}
extern "C" __global__ void attn_combine(float* out, const float* part, int heads, int vd, int nsplit) { PDL_ENTRY();
  attn_combine_at(out, part, blockIdx.x, blockIdx.x, vd, nsplit);
}
// attn_combine_rows: the partials of a paged split launch over a row list;
// query i's heads go to batch row rows[i].
extern "C" __global__ void attn_combine_rows(float* out, const float* part, const int* rows, int heads, int vd, int nsplit) { PDL_ENTRY();
  const int i = blockIdx.x / heads, h = blockIdx.x % heads;
  attn_combine_at(out, part, blockIdx.x, rows[i] * heads + h, vd, nsplit);
}

// ---------------------------------------------------------------- flash attention (prefill)
// Causal flash attention over an f16 KV cache with tensor cores
// (mma.sync m16n8k16, f32 accumulation), FlashAttention-2 style: a block of
// warps owns 16 query rows per warp of one head and streams 64-key tiles
// of K and V through double-buffered shared memory (cp.async). Online softmax
// in float32 (log2 domain). DP is the head dim padded to 16; the real head
// dim D must be a multiple of 8 (16-byte rows). NW warps per block (16 query
// rows each) share every K/V tile: 8 warps halve the L2→SM traffic of 4.

DEVI unsigned smem_u32(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }
DEVI void cp_async16(void* dst, const void* src, bool valid) {
  int sz = valid ? 16 : 0;  // 0 source bytes: zero-fill
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_u32(dst)), "l"(src), "r"(sz));
}
DEVI void cp_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> DEVI void cp_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }
DEVI void ldsm_x4(unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(smem_u32(p)));
}
DEVI void ldsm_x4_t(unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(smem_u32(p)));
}
DEVI void mma16816(float* c, const unsigned* a, unsigned b0, unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// 2^x with the MUFU instruction directly (x <= 0 here; -inf gives 0).
DEVI float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
// 2^x for two halves at once: P is rounded to f16 for the PV product anyway,
// and the packed form halves the MUFU work, which rivals the MMA time.
DEVI unsigned ex2_h2(unsigned x) {
  unsigned y;
  asm("ex2.approx.f16x2 %0, %1;" : "=r"(y) : "r"(x));
  return y;
}
DEVI unsigned pack_h2(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<unsigned*>(&h);
}

// kv_tile_load issues the cp.async loads of keys kt·BN … kt·BN + BN - 1
// of one KV head into buffer buf of Ks and Vs ([2][BN][ST] halves), DP / 8
// 16-byte chunks a key, zero-filled for keys ≥ kend and chunks past D;
// off(key, ch, valid) is the offset of key's chunk ch in kc and vc (the
// flash kernels' contiguous or paged rows).
template <int DP, int BN, int ST, int NW, class Off>
DEVI void kv_tile_load(__half* Ks, __half* Vs, const __half* kc, const __half* vc, int tid, int kt, int buf, int kend,
                       int D, Off off) {
  constexpr int CH = DP / 8;  // 16-byte chunks per row
  for (int c = tid; c < BN * CH; c += 32 * NW) {
    int r = c / CH, ch = c % CH;
    int key = kt * BN + r;
    bool valid = key < kend && ch * 8 < D;
    size_t o = off(key, ch, valid);
    cp_async16(Ks + (buf * BN + r) * ST + ch * 8, kc + o, valid);
    cp_async16(Vs + (buf * BN + r) * ST + ch * 8, vc + o, valid);
  }
}

template <int DP, int NW>
__device__ void flash_fwd(float* out, const float* q, const __half* kc, const __half* vc, int n, int pos0,
                          const int* dp, int heads, int kvh, int D, float scale_log2) {
  constexpr int BM = 16 * NW, BN = 64, ST = DP + 8;  // row stride in halves (+16 bytes: no ldmatrix bank conflicts)
  extern __shared__ __align__(16) unsigned char smraw[];
  __half* Ks = reinterpret_cast<__half*>(smraw);  // [2][BN][ST]
  __half* Vs = Ks + 2 * BN * ST;                   // [2][BN][ST]
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const int qb = gridDim.x - 1 - blockIdx.x;  // heaviest (latest) blocks first
  const int h = blockIdx.y, kh = h / (heads / kvh);
  const int pos = pos0 + dp[1];
  const int T = pos + n;
  const int m0 = qb * BM + warp * 16;  // this warp's first query row
  const int qw = heads * D, kw = kvh * D;

  // Q fragments (A operand), pre-scaled into the log2 domain.
  unsigned qa[DP / 16][4];
#pragma unroll
  for (int kk = 0; kk < DP / 16; kk++) {
#pragma unroll
    for (int r = 0; r < 4; r++) {
      int row = m0 + g + ((r & 1) ? 8 : 0);
      int col = kk * 16 + 2 * t4 + ((r & 2) ? 8 : 0);
      float v0 = 0.f, v1 = 0.f;
      if (row < n && col < D) {
        const float* qp = q + (size_t)row * qw + (size_t)h * D + col;
        v0 = qp[0] * scale_log2;
        v1 = (col + 1 < D) ? qp[1] * scale_log2 : 0.f;
      }
      qa[kk][r] = pack_h2(v0, v1);
    }
  }

  const int lastRow = min(n, qb * BM + BM) - 1;
  const int kend = min(T, pos + lastRow + 1);  // keys this block needs
  const int ntiles = (kend + BN - 1) / BN;

  auto load_tile = [&](int kt, int buf) {
    kv_tile_load<DP, BN, ST, NW>(Ks, Vs, kc, vc, tid, kt, buf, kend, D, [&](int key, int ch, bool valid) {
      return (size_t)(valid ? key : 0) * kw + (size_t)kh * D + (valid ? ch * 8 : 0);
    });
  };

  float o[DP / 8][4];
#pragma unroll
  for (int j = 0; j < DP / 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  float mrow[2] = {-INFINITY, -INFINITY}, lrow[2] = {0.f, 0.f};

  load_tile(0, 0);
  cp_commit();
  for (int kt = 0; kt < ntiles; kt++) {
    const int buf = kt & 1;
    if (kt + 1 < ntiles) {
      load_tile(kt + 1, buf ^ 1);
      cp_commit();
      cp_wait<1>();
    } else {
      cp_wait<0>();
    }
    __syncthreads();
    const __half* Kb = Ks + buf * BN * ST;
    const __half* Vb = Vs + buf * BN * ST;

    // S = Q K^T : 16 x 64 per warp.
    float s[BN / 8][4];
#pragma unroll
    for (int j = 0; j < BN / 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < DP / 16; kk++) {
#pragma unroll
      for (int np = 0; np < BN / 16; np++) {
        int mat = lane >> 3, r = lane & 7;
        const __half* p = Kb + (np * 16 + (mat >> 1) * 8 + r) * ST + kk * 16 + (mat & 1) * 8;
        unsigned b0, b1, b2, b3;
        ldsm_x4(b0, b1, b2, b3, p);
        mma16816(s[2 * np], qa[kk], b0, b1);
        mma16816(s[2 * np + 1], qa[kk], b2, b3);
      }
    }
    // Causal / length mask where the tile reaches past a row's last key.
    const int k0 = kt * BN;
    if (k0 + BN - 1 > pos + m0) {
#pragma unroll
      for (int j = 0; j < BN / 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          int key = k0 + j * 8 + 2 * t4 + (e & 1);
          int row = m0 + g + ((e & 2) ? 8 : 0);
          if (key > pos + row || key >= T) s[j][e] = -INFINITY;
        }
    }
    // Online softmax for rows g (e=0,1) and g+8 (e=2,3).
#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < BN / 8; j++) mx = fmaxf(mx, fmaxf(s[j][2 * hr], s[j][2 * hr + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      float mnew = fmaxf(mrow[hr], mx);
      float msafe = (mnew == -INFINITY) ? 0.f : mnew;
      float alpha = exp2f(mrow[hr] - msafe);
      mrow[hr] = mnew;
      float ls = 0.f;
#pragma unroll
      for (int j = 0; j < BN / 8; j++) {
        float p0 = exp2f(s[j][2 * hr] - msafe), p1 = exp2f(s[j][2 * hr + 1] - msafe);
        s[j][2 * hr] = p0; s[j][2 * hr + 1] = p1;
        ls += p0 + p1;
      }
      lrow[hr] = lrow[hr] * alpha + ls;
#pragma unroll
      for (int j = 0; j < DP / 8; j++) { o[j][2 * hr] *= alpha; o[j][2 * hr + 1] *= alpha; }
    }
    // O += P V.
#pragma unroll
    for (int kc2 = 0; kc2 < BN / 16; kc2++) {
      unsigned pa[4];
      pa[0] = pack_h2(s[2 * kc2][0], s[2 * kc2][1]);
      pa[1] = pack_h2(s[2 * kc2][2], s[2 * kc2][3]);
      pa[2] = pack_h2(s[2 * kc2 + 1][0], s[2 * kc2 + 1][1]);
      pa[3] = pack_h2(s[2 * kc2 + 1][2], s[2 * kc2 + 1][3]);
#pragma unroll
      for (int np = 0; np < DP / 16; np++) {
        int mat = lane >> 3, r = lane & 7;
        const __half* p = Vb + (kc2 * 16 + (mat & 1) * 8 + r) * ST + np * 16 + (mat >> 1) * 8;
        unsigned b0, b1, b2, b3;
        ldsm_x4_t(b0, b1, b2, b3, p);
        mma16816(o[2 * np], pa, b0, b1);
        mma16816(o[2 * np + 1], pa, b2, b3);
      }
    }
    __syncthreads();
  }
  // Normalise and store.
#pragma unroll
  for (int hr = 0; hr < 2; hr++) {
    float l = lrow[hr];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    float inv = 1.f / l;
    int row = m0 + g + hr * 8;
    if (row < n) {
      float* op = out + (size_t)row * qw + (size_t)h * D;
#pragma unroll
      for (int j = 0; j < DP / 8; j++) {
        int col = j * 8 + 2 * t4;
        if (col < D) op[col] = o[j][2 * hr] * inv;
        if (col + 1 < D) op[col + 1] = o[j][2 * hr + 1] * inv;
      }
    }
  }
}
// Head dims 16 and 32 only (flash2 takes 64 and 128; NOTES.md).
#define FLASH(DP, NW)                                                                               \
  extern "C" __global__ void __launch_bounds__(32 * NW) flash_fwd_##DP(                             \
      float* out, const float* q, const __half* kc, const __half* vc, int n, int pos0, const int* dp, \
      int heads, int kvh, int D, float sl2) { PDL_ENTRY();                                                       \
    flash_fwd<DP, NW>(out, q, kc, vc, n, pos0, dp, heads, kvh, D, sl2);                             \
  }
FLASH(16, 4)
FLASH(32, 4)

// A paged flash launch (issue 11): segment z is batch rows r0..r0+n-1, one
// sequence's positions pos..pos+n-1 (segs[4z..4z+3] = r0, n, pos, seq), a
// prompt chunk whose rows see positions 0..pos+i of their sequence; key
// position p is at slot tabs[seq*maxb + p/bs]*bs + p%bs (as Paged).
struct FlashSegs {
  const int *segs, *tabs;
  int maxb, bs;
};

// flash2_fwd is the FlashAttention-2 layout proper: 4 warps, each owning MT
// m16 tiles (16*MT query rows), so every K/V fragment loaded with ldmatrix
// feeds 2*MT MMAs and the MT softmax chains interleave. Q lives in shared
// memory as f16 (pre-scaled) and is re-read per 16-wide k slice, which keeps
// registers for the MT output accumulators.
// It is NOTES.md v7's VAR 327, the measured winner (the other variants, v1
// for these head dims and 32-key tiles are history there): the softmax
// statistics of all MT x 2 row halves first and one warp vote for the o
// rescale; K/V tile 0 issued before Q is staged; a warp skips the key tiles
// wholly past its last row; Q read 16 bytes at a time (every load of a
// thread issued before the first use) when aligned, O stored 8 bytes at a
// time when aligned.
// With PAGED the block reads a paged cache (FlashSegs): the grid's z is the
// segment, x its query tile (latest first; blocks past the segment's tiles
// return at once), and n, pos0 and dp are unused.
template <int DP, int MT, int BN, bool PAGED = false>
__device__ void flash2_fwd(float* out, const float* q, const __half* kc, const __half* vc, int n, int pos0,
                           const int* dp, int heads, int kvh, int D, float scale_log2, FlashSegs fs = FlashSegs{}) {
  constexpr int NW = 4, BM = 16 * MT * NW, ST = DP + 8;
  extern __shared__ __align__(16) unsigned char smraw2[];
  __half* Qs = reinterpret_cast<__half*>(smraw2);  // [BM][ST]
  __half* Ks = Qs + BM * ST;                       // [2][BN][ST]
  __half* Vs = Ks + 2 * BN * ST;                   // [2][BN][ST]
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const int mat = lane >> 3, mr = lane & 7;
  int qb = PAGED ? 0 : gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y, kh = h / (heads / kvh);
  int pos = PAGED ? 0 : pos0 + dp[1];
  const int* tab = nullptr;  // PAGED: the segment's block table
  if (PAGED) {
    const int* sg = fs.segs + 4 * blockIdx.z;
    const int r0 = sg[0];
    n = sg[1];
    pos = sg[2];
    tab = fs.tabs + (size_t)sg[3] * fs.maxb;
    const int ntq = (n + BM - 1) / BM;
    if ((int)blockIdx.x >= ntq) return;  // the whole block: no barrier is pending
    qb = ntq - 1 - blockIdx.x;
    q += (size_t)r0 * heads * D;
    out += (size_t)r0 * heads * D;
  }
  const int T = pos + n;
  const int mw = qb * BM + warp * 16 * MT;  // this warp's first query row
  const int qw = heads * D, kw = kvh * D;

  const int lastRow = min(n, qb * BM + BM) - 1;
  const int kend = min(T, pos + lastRow + 1);
  const int ntiles = (kend + BN - 1) / BN;
  auto load_tile = [&](int kt, int buf) {
    kv_tile_load<DP, BN, ST, NW>(Ks, Vs, kc, vc, tid, kt, buf, kend, D, [&](int key, int ch, bool valid) -> size_t {
      if (PAGED)
        return valid ? ((size_t)__ldg(tab + key / fs.bs) * fs.bs + key % fs.bs) * kw + (size_t)kh * D + ch * 8 : 0;
      return (size_t)(valid ? key : 0) * kw + (size_t)kh * D + (valid ? ch * 8 : 0);
    });
  };
  // 8-byte Q loads and O stores when every row start is 8-byte aligned.
  const bool vec2 = ((reinterpret_cast<size_t>(q) | reinterpret_cast<size_t>(out)) & 7) == 0 && (qw & 1) == 0 &&
                    (D & 1) == 0;
  load_tile(0, 0);  // tile 0 in flight while Q is staged
  cp_commit();
  const bool vec4 = (reinterpret_cast<size_t>(q) & 15) == 0 && (qw & 3) == 0 && (D & 3) == 0;
  if (vec4) {
    constexpr int IT = BM * DP / 4 / (32 * NW);
    float4 v[IT];
#pragma unroll
    for (int k = 0; k < IT; k++) {
      int i = tid + k * 32 * NW;
      int r = i / (DP / 4), c = (i % (DP / 4)) * 4;
      int row = qb * BM + r;
      v[k] = make_float4(0.f, 0.f, 0.f, 0.f);
      if (row < n && c < D) v[k] = *reinterpret_cast<const float4*>(q + (size_t)row * qw + (size_t)h * D + c);
    }
#pragma unroll
    for (int k = 0; k < IT; k++) {
      int i = tid + k * 32 * NW;
      int r = i / (DP / 4), c = (i % (DP / 4)) * 4;
      *reinterpret_cast<uint2*>(Qs + r * ST + c) = make_uint2(pack_h2(v[k].x * scale_log2, v[k].y * scale_log2),
                                                              pack_h2(v[k].z * scale_log2, v[k].w * scale_log2));
    }
  }
  for (int i = tid; i < (vec4 ? 0 : BM * DP / 2); i += 32 * NW) {
    int r = i / (DP / 2), c = (i % (DP / 2)) * 2;
    int row = qb * BM + r;
    float v0 = 0.f, v1 = 0.f;
    if (row < n && c < D) {
      const float* qp = q + (size_t)row * qw + (size_t)h * D + c;
      if (vec2) {
        float2 v = *reinterpret_cast<const float2*>(qp);
        v0 = v.x * scale_log2;
        v1 = v.y * scale_log2;
      } else {
        v0 = qp[0] * scale_log2;
        v1 = (c + 1 < D) ? qp[1] * scale_log2 : 0.f;
      }
    }
    *reinterpret_cast<unsigned*>(Qs + r * ST + c) = pack_h2(v0, v1);
  }

  float o[MT][DP / 8][4];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int j = 0; j < DP / 8; j++) o[mt][j][0] = o[mt][j][1] = o[mt][j][2] = o[mt][j][3] = 0.f;
  float mrow[MT][2], lrow[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; mt++) mrow[mt][0] = mrow[mt][1] = -INFINITY, lrow[mt][0] = lrow[mt][1] = 0.f;

  for (int kt = 0; kt < ntiles; kt++) {
    const int buf = kt & 1;
    if (kt + 1 < ntiles) {
      load_tile(kt + 1, buf ^ 1);
      cp_commit();
      cp_wait<1>();
    } else {
      cp_wait<0>();
    }
    __syncthreads();
    // A tile wholly past this warp's last row (the block's diagonal tiles):
    // nothing to add; the warp only keeps the block's barriers.
    if (kt * BN > pos + mw + 16 * MT - 1) {
      __syncthreads();
      continue;
    }
    const __half* Kb = Ks + buf * BN * ST;
    const __half* Vb = Vs + buf * BN * ST;
    float s[MT][BN / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int j = 0; j < BN / 8; j++) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < DP / 16; kk++) {
      unsigned qa[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
        ldsm_x4(qa[mt][0], qa[mt][1], qa[mt][2], qa[mt][3],
                Qs + (warp * 16 * MT + mt * 16 + (mat & 1) * 8 + mr) * ST + kk * 16 + (mat >> 1) * 8);
#pragma unroll
      for (int np = 0; np < BN / 16; np++) {
        unsigned b0, b1, b2, b3;
        ldsm_x4(b0, b1, b2, b3, Kb + (np * 16 + (mat >> 1) * 8 + mr) * ST + kk * 16 + (mat & 1) * 8);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          mma16816(s[mt][2 * np], qa[mt], b0, b1);
          mma16816(s[mt][2 * np + 1], qa[mt], b2, b3);
        }
      }
    }
    const int k0 = kt * BN;
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
      const int m0 = mw + mt * 16;
      if (k0 + BN - 1 > pos + m0) {
#pragma unroll
        for (int j = 0; j < BN / 8; j++)
#pragma unroll
          for (int e = 0; e < 4; e++) {
            int key = k0 + j * 8 + 2 * t4 + (e & 1);
            int row = m0 + g + ((e & 2) ? 8 : 0);
            if (key > pos + row || key >= T) s[mt][j][e] = -INFINITY;
          }
      }
    }
    {
      // The online softmax with the statistics of all MT x 2 row halves
      // computed side by side (independent chains in one basic block), then
      // one vote (or none) for the o rescale.
      float alpha[MT][2];
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int hr = 0; hr < 2; hr++) {
          float mj[BN / 8];
#pragma unroll
          for (int j = 0; j < BN / 8; j++) mj[j] = fmaxf(s[mt][j][2 * hr], s[mt][j][2 * hr + 1]);
#pragma unroll
          for (int w = BN / 16; w > 0; w >>= 1)
#pragma unroll
            for (int j = 0; j < w; j++) mj[j] = fmaxf(mj[j], mj[j + w]);
          float mx = mj[0];
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
          float mnew = fmaxf(mrow[mt][hr], mx);
          float msafe = (mnew == -INFINITY) ? 0.f : mnew;
          alpha[mt][hr] = ex2(mrow[mt][hr] - msafe);
          mrow[mt][hr] = mnew;
          __half2 lj[BN / 8];
#pragma unroll
          for (int j = 0; j < BN / 8; j++) {
            unsigned pp = ex2_h2(pack_h2(s[mt][j][2 * hr] - msafe, s[mt][j][2 * hr + 1] - msafe));
            s[mt][j][2 * hr] = __uint_as_float(pp);
            lj[j] = *reinterpret_cast<__half2*>(&pp);
          }
#pragma unroll
          for (int w = BN / 16; w > 0; w >>= 1)
#pragma unroll
            for (int j = 0; j < w; j++) lj[j] = __hadd2(lj[j], lj[j + w]);
          float2 lsf = __half22float2(lj[0]);
          lrow[mt][hr] = lrow[mt][hr] * alpha[mt][hr] + lsf.x + lsf.y;
        }
      // The running max rarely moves after the first tiles: skip the
      // rescale when no row of the warp needs it.
      bool mine = false;
#pragma unroll
      for (int mt = 0; mt < MT; mt++) mine |= (alpha[mt][0] != 1.f) | (alpha[mt][1] != 1.f);
      if (__any_sync(0xffffffffu, mine)) {
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
          for (int j = 0; j < DP / 8; j++) {
            o[mt][j][0] *= alpha[mt][0];
            o[mt][j][1] *= alpha[mt][0];
            o[mt][j][2] *= alpha[mt][1];
            o[mt][j][3] *= alpha[mt][1];
          }
      }
    }
#pragma unroll
    for (int kc2 = 0; kc2 < BN / 16; kc2++) {
      unsigned pa[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        pa[mt][0] = __float_as_uint(s[mt][2 * kc2][0]);      // row g, keys 2t..2t+1
        pa[mt][1] = __float_as_uint(s[mt][2 * kc2][2]);      // row g+8
        pa[mt][2] = __float_as_uint(s[mt][2 * kc2 + 1][0]);  // row g, keys 8+2t..
        pa[mt][3] = __float_as_uint(s[mt][2 * kc2 + 1][2]);  // row g+8
      }
#pragma unroll
      for (int np = 0; np < DP / 16; np++) {
        unsigned b0, b1, b2, b3;
        ldsm_x4_t(b0, b1, b2, b3, Vb + (kc2 * 16 + (mat & 1) * 8 + mr) * ST + np * 16 + (mat >> 1) * 8);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          mma16816(o[mt][2 * np], pa[mt], b0, b1);
          mma16816(o[mt][2 * np + 1], pa[mt], b2, b3);
        }
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
      float l = lrow[mt][hr];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      float inv = 1.f / l;
      int row = mw + mt * 16 + g + hr * 8;
      if (row < n) {
        float* op = out + (size_t)row * qw + (size_t)h * D;
#pragma unroll
        for (int j = 0; j < DP / 8; j++) {
          int col = j * 8 + 2 * t4;
          if (vec2) {
            if (col < D) *reinterpret_cast<float2*>(op + col) = make_float2(o[mt][j][2 * hr] * inv, o[mt][j][2 * hr + 1] * inv);
          } else {
            if (col < D) op[col] = o[mt][j][2 * hr] * inv;
            if (col + 1 < D) op[col + 1] = o[mt][j][2 * hr + 1] * inv;
          }
        }
      }
    }
}
// 2 m16 tiles per warp (128 query rows per block), 64-key tiles.
#define FLASH2(DP)                                                                                  \
  extern "C" __global__ void __launch_bounds__(128, 2) flash2_fwd_##DP(                             \
      float* out, const float* q, const __half* kc, const __half* vc, int n, int pos0, const int* dp, \
      int heads, int kvh, int D, float sl2) { PDL_ENTRY();                                                       \
    flash2_fwd<DP, 2, 64>(out, q, kc, vc, n, pos0, dp, heads, kvh, D, sl2);                         \
  }
FLASH2(128)
FLASH2(64)
// flash2_paged_DP: the same over a paged cache, one launch for the prompt
// chunks of a batch (grid: most query tiles of a segment, heads, segments).
#define FLASH2_PAGED(DP)                                                                                  \
  extern "C" __global__ void __launch_bounds__(128, 2) flash2_paged_##DP(                                 \
      float* out, const float* q, const __half* kc, const __half* vc, const int* segs, const int* tabs,   \
      int maxb, int bs, int heads, int kvh, int D, float sl2) { PDL_ENTRY();                              \
    flash2_fwd<DP, 2, 64, true>(out, q, kc, vc, 0, 0, nullptr, heads, kvh, D, sl2,                       \
                                FlashSegs{segs, tabs, maxb, bs});                                         \
  }
FLASH2_PAGED(128)
FLASH2_PAGED(64)

#include "fp8.cuh"
#include "moe.cuh"
#include "mla.cuh"
#include "fuse.cuh"
#include "decode.cuh"
