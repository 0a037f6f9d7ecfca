// fp8 weights kept as fp8 (kernels.FP8): one float8_e4m3fn byte per value
// and float32 block scales (DeepSeek-V3's weight_scale_inv, BlockRows ×
// BlockCols, 128×128 in the real checkpoints). Included at the end of
// kernels.cu; fp8.go launches these kernels.
//
// Reusable pieces (MoE expert kernels templated on the weight type):
//   - fp8_e4m3: the weight type tag, so gemv-style templates can take
//     `const fp8_e4m3*` weights; V16<fp8_e4m3>::cvt turns one 16-byte load
//     (16 e4m3 values) into 16 floats (the unscaled e4m3 values, exact).
//   - FP8Scales: the block scales of a matrix stacked from up to 4 parts,
//     each with its own scale grid (ScaleRow0 included); fp8_srow(q, row)
//     returns the scale row of weight row `row`, whose column c uses
//     fp8_srow(q, row)[c / q.bc].
// Conversions use Hopper/Ada's cvt.rn.f16x2.e4m3x2 (sm_89+), then the exact
// half → float widening; every e4m3 value (subnormals included) is a normal
// half, so the result equals quant.FP8E4M3ToF32 bit for bit (NaN aside).

struct fp8_e4m3 {
  uint8_t b;
};

// e4m3x2_h2 widens two e4m3 bytes (the low byte to .x) to halves.
DEVI __half2 e4m3x2_h2(unsigned short v) {
  unsigned r;
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(r) : "h"(v));
  return *reinterpret_cast<__half2*>(&r);
}
DEVI float tof(fp8_e4m3 x) { return __low2float(e4m3x2_h2((unsigned short)x.b)); }

template <> struct V16<fp8_e4m3> {
  static constexpr int N = 16;
  static DEVI void cvt(const uint4& u, float* f) {
    const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
      float2 a = __half22float2(e4m3x2_h2((unsigned short)(w[i] & 0xffffu)));
      float2 b = __half22float2(e4m3x2_h2((unsigned short)(w[i] >> 16)));
      f[4 * i] = a.x; f[4 * i + 1] = a.y; f[4 * i + 2] = b.x; f[4 * i + 3] = b.y;
    }
  }
};

// FP8Scales describes the block scales of a matrix of up to 4 stacked parts
// (fp8.go's fp8Desc writes it: 48 bytes). Part p (rows from its start on)
// keeps its own scale grid in s; its row r uses scale row (off[p] + r) / br,
// which folds the part's first scale row and its ScaleRow0 into one offset.
struct FP8Scales {
  const float* s;     // every part's scale grid, concatenated
  int sc, br, bc;     // scale columns (ceil(cols / bc)) and the block shape
  int s1, s2, s3;     // first rows of parts 1..3 (rows when absent)
  int off0, off1, off2, off3;
};
DEVI const float* fp8_srow(const FP8Scales& q, int row) {
  // Selects rather than an indexed array, so the descriptor stays in
  // parameter space (no local-memory copy).
  int off = row >= q.s3 ? q.off3 : row >= q.s2 ? q.off2 : row >= q.s1 ? q.off1 : q.off0;
  return q.s + (size_t)((off + row) / q.br) * q.sc;
}

// ---------------------------------------------------------------- fp8 GEMV
// y[t, r] = sum_c W[r, c] * x[t, c] (+ bias[r]) for t < n <= NT: gemv_vec
// with 16 e4m3 values per load; each 16-value chunk lies in one block column
// (bc is a power of two >= 16: chunk c uses block column c >> cshift), so
// its partial dot product is scaled once (gemv_chunks' FP8 case).
template <int R, int NT, int U>
__device__ void gemv_fp8(const uint8_t* __restrict__ W, const float* __restrict__ x, int n, Parts p,
                         const float* __restrict__ bias, int cols, FP8Scales q, int cshift) {
  gemv_rows<fp8_e4m3, true, R, NT, U>(reinterpret_cast<const fp8_e4m3*>(W), x, n, p.rows, bias, cols, nullptr,
                                      [&](int row) { return fp8_srow(q, row); }, cshift,
                                      [&](int row, int t, float v) { store_part(p, row, t, v); });
}

#define GEMV_FP8(NAME, R, NT)                                                                      \
  extern "C" __global__ void __launch_bounds__(256) NAME(const uint8_t* W, const float* x, int n, Parts p, \
                                                         const float* bias, int cols, FP8Scales q, int cshift) { PDL_ENTRY(); \
    gemv_fp8<R, NT, 4>(W, x, n, p, bias, cols, q, cshift);                                          \
  }
GEMV_FP8(gemv_fp8_1, 2, 1)
GEMV_FP8(gemv_fp8_4, 2, 4)
GEMV_FP8(gemv_fp8_8, 2, 8)

// Any shape (widths or blocks the vector kernel does not take), any n: one
// warp per row, one value at a time. Each value is widened and scaled first,
// as the CPU reference does.
extern "C" __global__ void __launch_bounds__(256) gemvs_fp8(const uint8_t* W, const float* x, int n, Parts p,
                                                            const float* bias, int cols, FP8Scales q) { PDL_ENTRY();
  const int lane = threadIdx.x & 31;
  const int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  if (row >= p.rows) return;
  const fp8_e4m3* w = reinterpret_cast<const fp8_e4m3*>(W + (size_t)row * cols);
  const float* s = fp8_srow(q, row);
  for (int t = 0; t < n; t++) {
    const float* xr = x + (size_t)t * cols;
    float acc = 0.f;
    for (int c = lane; c < cols; c += 32) acc = fmaf(tof(w[c]) * s[c / q.bc], xr[c], acc);
    acc = warp_sum(acc);
    if (lane == 0) store_part(p, row, t, acc + (bias ? bias[row] : 0.f));
  }
}

// ---------------------------------------------------------------- fp8 prefill
// Rows [r0, r0+rows) of W dequantised to f16 into out[rows, cols] (the
// cuBLASLt path multiplies slices of it with f16 activations: f16's 10-bit
// mantissa keeps the fp8 fixture at 4–8e-3 where bf16 gave 5e-2,
// engine/fp8_study_test.go). One block row per weight row; 16 values per
// thread when cols and bc are multiples of 16.
extern "C" __global__ void fp8_to_f16(__half* out, const uint8_t* W, FP8Scales q, int r0, int cols) { PDL_ENTRY();
  const int rr = blockIdx.y, row = r0 + rr;
  const float* s = fp8_srow(q, row);
  const uint8_t* w = W + (size_t)row * cols;
  __half* o = out + (size_t)rr * cols;
  if ((cols & 15) == 0 && (q.bc & 15) == 0) {
    int c = (blockIdx.x * blockDim.x + threadIdx.x) * 16;
    if (c >= cols) return;
    float f[16];
    V16<fp8_e4m3>::cvt(ldw(reinterpret_cast<const uint4*>(w + c)), f);
    const float sc = s[c / q.bc];
    unsigned h[8];
#pragma unroll
    for (int i = 0; i < 8; i++) {
      __half2 v = __floats2half2_rn(f[2 * i] * sc, f[2 * i + 1] * sc);
      h[i] = *reinterpret_cast<unsigned*>(&v);
    }
    uint4* op = reinterpret_cast<uint4*>(o + c);
    op[0] = make_uint4(h[0], h[1], h[2], h[3]);
    op[1] = make_uint4(h[4], h[5], h[6], h[7]);
    return;
  }
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += gridDim.x * blockDim.x)
    o[c] = __float2half_rn(tof(reinterpret_cast<const fp8_e4m3*>(w)[c]) * s[c / q.bc]);
}

// Tensor-core GEMM for fp8 weights without cuBLASLt: gemm_wmma with the
// weight tile dequantised (value × block scale, rounded to bf16) on its way
// into shared memory. Activations are already bf16. K and bc must be
// multiples of 16 (each thread's 16-value chunk lies in one block column).
extern "C" __global__ void __launch_bounds__(128) gemm_wmma_fp8(const uint8_t* W, const __nv_bfloat16* X, int n,
                                                                Parts p, const float* bias, int K, FP8Scales q) { PDL_ENTRY();
  const int tid = threadIdx.x, r0 = blockIdx.x * 64;
  // This thread's weight row and 16-column half of each K step.
  const int wr = tid >> 1, wch = (tid & 1) * 16;
  const bool wok = r0 + wr < p.rows;
  const uint8_t* wrow = W + (size_t)min(r0 + wr, p.rows - 1) * K;
  const float* srow = fp8_srow(q, min(r0 + wr, p.rows - 1));
  gemm_wmma_tile(X, n, p, bias, K, [&](__nv_bfloat16* Bs, int k0) {
    int k = k0 + wch;
    unsigned h[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (wok && k < K) {
      float f[16];
      V16<fp8_e4m3>::cvt(__ldg(reinterpret_cast<const uint4*>(wrow + k)), f);
      const float sc = srow[k / q.bc];
#pragma unroll
      for (int i = 0; i < 8; i++) {
        __nv_bfloat162 v = __floats2bfloat162_rn(f[2 * i] * sc, f[2 * i + 1] * sc);
        h[i] = *reinterpret_cast<unsigned*>(&v);
      }
    }
    uint4* bp = reinterpret_cast<uint4*>(Bs + wr * WMMA_LD + wch);
    bp[0] = make_uint4(h[0], h[1], h[2], h[3]);
    bp[1] = make_uint4(h[4], h[5], h[6], h[7]);
  });
}

// ---------------------------------------------------------------- fp8 embed
// Rows ids of an fp8 table, dequantised (one block per id).
extern "C" __global__ void embed_fp8(float* out, const uint8_t* t, const int* ids, const int* dp, int cols, int vocab,
                                     FP8Scales q) { PDL_ENTRY();
  int i = blockIdx.x;
  int id = ids ? ids[i] : dp[0];
  id = min(max(id, 0), vocab - 1);  // the host validates ids; clamp for replayed graphs
  const fp8_e4m3* row = reinterpret_cast<const fp8_e4m3*>(t + (size_t)id * cols);
  const float* s = fp8_srow(q, id);
  for (int c = threadIdx.x; c < cols; c += blockDim.x) out[(size_t)i * cols + c] = tof(row[c]) * s[c / q.bc];
}
