// MLA (DeepSeek V2/V3 multi-head latent attention) in its absorbed form:
// the per-head products of the absorbed projections (MatMulHeads) and the
// decode attention over the latent cache. Included at the end of kernels.cu
// (it uses V16, ldw, warp_sum, warp_max, Paged and the cp.async helpers).

// ---------------------------------------------------------------- per-head GEMV
// y[t*yRow + h*yHead + r] = Σ_c x[t*xRow + h*xHead + c] · W_h[r, c] for head
// h = blockIdx.y and the NT tokens from t0 = blockIdx.z*NT; W holds the
// heads' [rows, cols] matrices one after another (int8: scales [heads*rows]).
// One warp computes R rows and reads each weight vector once for all NT
// tokens. vec: 16-byte weight rows and x slices (cols a multiple of the
// vector, x strides multiples of 4 floats); otherwise a scalar loop.
template <typename T, int R, int NT>
__device__ void gemv_heads(const T* __restrict__ W, const float* __restrict__ x, int n, float* __restrict__ y,
                           int rows, int cols, int xRow, int xHead, int yRow, int yHead,
                           const float* __restrict__ scales, int vec) {
  constexpr int EL = V16<T>::N, U = 2;
  const int h = blockIdx.y, t0 = blockIdx.z * NT;
  const int lane = threadIdx.x & 31;
  const int r0 = ((blockIdx.x * blockDim.x + threadIdx.x) >> 5) * R;
  if (r0 >= rows) return;  // whole warps: r0 is warp-uniform
  const int nt = min(NT, n - t0);
  W += (size_t)h * rows * cols;
  if (scales) scales += (size_t)h * rows;
  x += (size_t)t0 * xRow + (size_t)h * xHead;
  y += (size_t)t0 * yRow + (size_t)h * yHead;
  float acc[R][NT];
#pragma unroll
  for (int r = 0; r < R; r++)
#pragma unroll
    for (int t = 0; t < NT; t++) acc[r][t] = 0.f;
  if (vec) {
    const uint4* wp[R];
#pragma unroll
    for (int r = 0; r < R; r++) wp[r] = reinterpret_cast<const uint4*>(W + (size_t)min(r0 + r, rows - 1) * cols);
    gemv_chunks<T, false, R, NT, U>(wp, nullptr, 0, x, xRow, nt, cols / EL, acc);
  } else {
    for (int c = lane; c < cols; c += 32) {
      float wf[R];
#pragma unroll
      for (int r = 0; r < R; r++) wf[r] = tof(W[(size_t)min(r0 + r, rows - 1) * cols + c]);
#pragma unroll
      for (int t = 0; t < NT; t++) {
        if (t < nt) {
          const float xv = x[(size_t)t * xRow + c];
#pragma unroll
          for (int r = 0; r < R; r++) acc[r][t] = fmaf(wf[r], xv, acc[r][t]);
        }
      }
    }
  }
  warp_sums(acc);
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < R; r++) {
      const int row = r0 + r;
      if (row < rows) {
        const float sc = scales ? scales[row] : 1.f;  // int8 rows: value = q × scale
#pragma unroll
        for (int t = 0; t < NT; t++)
          if (t < nt) y[(size_t)t * yRow + row] = acc[r][t] * sc;
      }
    }
  }
}

#define GEMV_HEADS(NAME, T, NT)                                                                           \
  extern "C" __global__ void __launch_bounds__(256) NAME(const T* W, const float* x, int n, float* y,      \
                                                         int rows, int cols, int xRow, int xHead,          \
                                                         int yRow, int yHead, const float* sc, int vec) { PDL_ENTRY();  \
    gemv_heads<T, 2, NT>(W, x, n, y, rows, cols, xRow, xHead, yRow, yHead, sc, vec);                      \
  }
GEMV_HEADS(gemv_heads_f32_1, float, 1)
GEMV_HEADS(gemv_heads_f32_8, float, 8)
GEMV_HEADS(gemv_heads_f16_1, __half, 1)
GEMV_HEADS(gemv_heads_f16_8, __half, 8)
GEMV_HEADS(gemv_heads_bf16_1, __nv_bfloat16, 1)
GEMV_HEADS(gemv_heads_bf16_8, __nv_bfloat16, 8)
GEMV_HEADS(gemv_heads_i8_1, int8_t, 1)
GEMV_HEADS(gemv_heads_i8_8, int8_t, 8)

// ---------------------------------------------------------------- MLA decode attention
// Attention over an absorbed MLA cache: one KV head whose rows [kd] are
// [latent | rope key], the values being the first vd elements of each row
// (KVSpec.VInK). Block (split s, head group g, query row i) takes the
// MLA_HB query heads g*MLA_HB.. of row i and its keys [s*L, min((s+1)*L, T_i))
// in tiles of MLA_BN cache rows staged in shared memory once for all the
// block's heads: the scores and the value sums read the same tile, so each
// cache row is read once per block. Online softmax over the tiles; each
// head's partial (acc[vd], max, sum) goes to part as attn_split writes it,
// and attn_combine merges the splits. float32 math on an f16 or f32 cache.
//
// 256 threads. Scores: warp w takes keys 4w..4w+3 of the tile; lane l takes
// heads 4·((l>>3)&3).. and the dims 4·(l&7) + 32m (float4 chunks), whose
// partial dot products the 8 lanes of a head quad sum by shuffles. Values:
// thread t accumulates heads 4·(t>>6).. × columns 8·(t&63)..+7 in registers
// (vd ≤ 512). Rows, heads and dims beyond the real ones are zero-padded.
#define MLA_HB 16
#define MLA_BN 32
#define MLA_THREADS 256

DEVI void mla_ld4(const float* p, float* f) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  f[0] = v.x; f[1] = v.y; f[2] = v.z; f[3] = v.w;
}
DEVI void mla_ld4(const __half* p, float* f) {
  const uint2 u = *reinterpret_cast<const uint2*>(p);
  const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&u.x));
  const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&u.y));
  f[0] = a.x; f[1] = a.y; f[2] = b.x; f[3] = b.y;
}
DEVI void mla_ld8(const float* p, float* f) {
  mla_ld4(p, f);
  mla_ld4(p + 4, f + 4);
}
DEVI void mla_ld8(const __half* p, float* f) { V16<__half>::cvt(*reinterpret_cast<const uint4*>(p), f); }
// mla_stats moves head h's online-softmax statistics to the tile's new max
// mn: a = exp(old max − mn) rescales the running sum, then adds the tile's l.
DEVI void mla_stats(float* arow, float* lrow, float* mrow, int h, float a, float mn, float l) {
  arow[h] = a;
  lrow[h] = lrow[h] * a + l;
  mrow[h] = mn;
}

template <typename KT, bool PAGED>
__device__ void mla_attn(float* part, const float* q, const KT* kc, int pos0, const int* dp, int heads, int kd,
                         int vd, int kstride, float scale, int L, int nsplit, Paged pg) {
  extern __shared__ __align__(16) float mla_sm[];
  const int s = blockIdx.x, h0 = blockIdx.y * MLA_HB, i = blockIdx.z;
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31;
  const int nh = min(MLA_HB, heads - h0);
  const int T = PAGED ? pg.rpos[i] + 1 : pos0 + dp[1] + i + 1;  // keys visible to query row i
  const int start = s * L, end = min(start + L, T);
  float* pbase = part + ((size_t)i * heads + h0) * nsplit * (vd + 2);
  if (end <= start) {  // a split past this row's context (graph replay, short rows of a batch)
    if (tid < nh) {
      float* pp = pbase + ((size_t)tid * nsplit + s) * (vd + 2);
      pp[vd] = -INFINITY;
      pp[vd + 1] = 0.f;
    }
    return;
  }
  const int kdp = (kd + 31) & ~31;                               // dims padded for the score lanes
  float* qs = mla_sm;                                            // [HB][kdp], scaled
  KT* ks = reinterpret_cast<KT*>(qs + MLA_HB * kdp);              // [BN][kdp] the tile
  float* ss = reinterpret_cast<float*>(ks + MLA_BN * kdp);       // [HB][BN] scores
  float* ps = ss + MLA_HB * MLA_BN;                              // [BN][HB] probabilities
  float* mrow = ps + MLA_BN * MLA_HB;                            // [HB] running max
  float* lrow = mrow + MLA_HB;                                   // [HB] running sum
  float* arow = lrow + MLA_HB;                                   // [HB] this tile's rescale
  const float* qrow = q + ((size_t)i * heads + h0) * kd;
  for (int j = tid; j < MLA_HB * kdp; j += MLA_THREADS) {
    const int h = j / kdp, d = j - h * kdp;
    qs[j] = (h < nh && d < kd) ? qrow[(size_t)h * kd + d] * scale : 0.f;
  }
  if (tid < MLA_HB) {
    mrow[tid] = -INFINITY;
    lrow[tid] = 0.f;
  }
  constexpr int EPV = 16 / sizeof(KT);  // elements per 16-byte chunk
  const bool vecK = kd % EPV == 0 && kstride % EPV == 0;
  const int cpr = kdp / EPV;
  // Scores: keys 4w.., heads 4·sq.., dims 4·ds + 32m.
  const int ds = lane & 7, sq = (lane >> 3) & 3;
  // Values: heads 4·vq.., columns c0..c0+7.
  const int vq = tid >> 6, c0 = 8 * (tid & 63);
  float acc[4][8];
#pragma unroll
  for (int e = 0; e < 4; e++)
#pragma unroll
    for (int c = 0; c < 8; c++) acc[e][c] = 0.f;

  for (int j0 = start; j0 < end; j0 += MLA_BN) {
    const int len = min(MLA_BN, end - j0);
    __syncthreads();  // the last tile's values and probabilities are read (and q is in place)
    for (int idx = tid; idx < MLA_BN * cpr; idx += MLA_THREADS) {
      const int r = idx / cpr, c = (idx - r * cpr) * EPV;
      KT* dst = ks + r * kdp + c;
      const bool ok = r < len && c < kd;
      if (vecK) {
        cp_async16(dst, ok ? kc + (PAGED ? pg.slot(i, j0 + r) : (size_t)(j0 + r)) * kstride + c : kc, ok);
      } else {
#pragma unroll
        for (int e = 0; e < EPV; e++)
          dst[e] = (ok && c + e < kd) ? kc[(PAGED ? pg.slot(i, j0 + r) : (size_t)(j0 + r)) * kstride + c + e] : KT(0.f);
      }
    }
    cp_commit();
    cp_wait<0>();
    __syncthreads();

    float sacc[4][4];
#pragma unroll
    for (int e = 0; e < 4; e++)
#pragma unroll
      for (int k = 0; k < 4; k++) sacc[e][k] = 0.f;
    const float* qb = qs + 4 * sq * kdp;
    const KT* kb = ks + 4 * w * kdp;
    for (int d = 4 * ds; d < kdp; d += 32) {
      float4 qv[4];
      float kv[4][4];
#pragma unroll
      for (int e = 0; e < 4; e++) qv[e] = *reinterpret_cast<const float4*>(qb + e * kdp + d);
#pragma unroll
      for (int k = 0; k < 4; k++) mla_ld4(kb + k * kdp + d, kv[k]);
#pragma unroll
      for (int e = 0; e < 4; e++)
#pragma unroll
        for (int k = 0; k < 4; k++)
          sacc[e][k] = fmaf(qv[e].x, kv[k][0], fmaf(qv[e].y, kv[k][1], fmaf(qv[e].z, kv[k][2], fmaf(qv[e].w, kv[k][3], sacc[e][k]))));
    }
#pragma unroll
    for (int e = 0; e < 4; e++)
#pragma unroll
      for (int k = 0; k < 4; k++) {
        float a = sacc[e][k];
        a += __shfl_xor_sync(0xffffffffu, a, 1);
        a += __shfl_xor_sync(0xffffffffu, a, 2);
        a += __shfl_xor_sync(0xffffffffu, a, 4);
        sacc[e][k] = a;
      }
    if (ds == 0) {
#pragma unroll
      for (int e = 0; e < 4; e++)
#pragma unroll
        for (int k = 0; k < 4; k++) {
          const int j = 4 * w + k;
          ss[(4 * sq + e) * MLA_BN + j] = j < len ? sacc[e][k] : -INFINITY;
        }
    }
    __syncthreads();

    // Online softmax: warp w owns heads 2w and 2w+1, one key per lane.
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
      const int h = 2 * w + hh;
      const float sv = ss[h * MLA_BN + lane];
      const float mo = mrow[h];
      const float mn = fmaxf(mo, warp_max(sv));  // finite: the tile has a key
      const float p = expf(sv - mn);
      const float l = warp_sum(p);
      ps[lane * MLA_HB + h] = p;
      if (lane == 0) mla_stats(arow, lrow, mrow, h, expf(mo - mn), mn, l);
    }
    __syncthreads();

    if (c0 < vd) {
      float a[4];
#pragma unroll
      for (int e = 0; e < 4; e++) a[e] = arow[4 * vq + e];
#pragma unroll
      for (int e = 0; e < 4; e++)
#pragma unroll
        for (int c = 0; c < 8; c++) acc[e][c] *= a[e];
      // Rows past len are zeros with probability 0.
#pragma unroll 4
      for (int j = 0; j < MLA_BN; j++) {
        const float4 p = *reinterpret_cast<const float4*>(ps + j * MLA_HB + 4 * vq);
        float v[8];
        mla_ld8(ks + j * kdp + c0, v);
#pragma unroll
        for (int c = 0; c < 8; c++) {
          acc[0][c] = fmaf(p.x, v[c], acc[0][c]);
          acc[1][c] = fmaf(p.y, v[c], acc[1][c]);
          acc[2][c] = fmaf(p.z, v[c], acc[2][c]);
          acc[3][c] = fmaf(p.w, v[c], acc[3][c]);
        }
      }
    }
  }
  if (c0 < vd) {
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int h = 4 * vq + e;
      if (h < nh) {
        float* pp = pbase + ((size_t)h * nsplit + s) * (vd + 2);
#pragma unroll
        for (int c = 0; c < 8; c++)
          if (c0 + c < vd) pp[c0 + c] = acc[e][c];
        if (c0 == 0) {
          pp[vd] = mrow[h];
          pp[vd + 1] = lrow[h];
        }
      }
    }
  }
}

extern "C" __global__ void __launch_bounds__(MLA_THREADS, 2)
    mla_attn_f32(float* part, const float* q, const float* kc, int pos0, const int* dp, int heads, int kd, int vd,
                 int ks, float scale, int L, int nsplit) { PDL_ENTRY();
  mla_attn<float, false>(part, q, kc, pos0, dp, heads, kd, vd, ks, scale, L, nsplit, Paged{});
}
extern "C" __global__ void __launch_bounds__(MLA_THREADS, 2)
    mla_attn_f16(float* part, const float* q, const __half* kc, int pos0, const int* dp, int heads, int kd, int vd,
                 int ks, float scale, int L, int nsplit) { PDL_ENTRY();
  mla_attn<__half, false>(part, q, kc, pos0, dp, heads, kd, vd, ks, scale, L, nsplit, Paged{});
}
extern "C" __global__ void __launch_bounds__(MLA_THREADS, 2)
    mla_attn_paged_f32(float* part, const float* q, const float* kc, const int* rpos, const int* rseq,
                       const int* tabs, int maxb, int bs, int heads, int kd, int vd, int ks, float scale, int L,
                       int nsplit) { PDL_ENTRY();
  mla_attn<float, true>(part, q, kc, 0, nullptr, heads, kd, vd, ks, scale, L, nsplit, Paged{rpos, rseq, tabs, maxb, bs});
}
extern "C" __global__ void __launch_bounds__(MLA_THREADS, 2)
    mla_attn_paged_f16(float* part, const float* q, const __half* kc, const int* rpos, const int* rseq,
                       const int* tabs, int maxb, int bs, int heads, int kd, int vd, int ks, float scale, int L,
                       int nsplit) { PDL_ENTRY();
  mla_attn<__half, true>(part, q, kc, 0, nullptr, heads, kd, vd, ks, scale, L, nsplit, Paged{rpos, rseq, tabs, maxb, bs});
}

// ---------------------------------------------------------------- MLA decode attention, tensor cores
// mla_attn for f16 caches with kd a multiple of 16 and vd a multiple of 64
// (at most 512): the same blocks, splits and partials, the products on
// mma.sync m16n8k16 (f16 inputs, f32 accumulation). 4 warps; the block's
// 16 heads are the 16 rows of the A operand: q (pre-scaled, rounded to f16)
// for the scores, P (f16) for the values. Tiles of 64 cache rows. Scores:
// warp w takes keys 16w..16w+15 over all dims (two accumulator sets for
// even and odd k steps: shorter MMA chains); the 16×64 scores go through
// shared memory to the online softmax (4 heads a warp, 2 keys a lane).
// Values: warp w accumulates columns w·vd/4.. of all 16 heads in registers,
// V being the same tile (ldmatrix.trans). Fragment layouts as flash_fwd.
#define MLA_TC_BN 64

template <bool PAGED>
__device__ void mla_attn_tc(float* part, const float* q, const __half* kc, int pos0, const int* dp, int heads, int kd,
                            int vd, int kstride, float scale, int L, int nsplit, Paged pg) {
  extern __shared__ __align__(16) unsigned char mla_tc_sm[];
  const int s = blockIdx.x, h0 = blockIdx.y * MLA_HB, i = blockIdx.z;
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t4 = lane & 3, mat = lane >> 3, mr = lane & 7;
  const int nh = min(MLA_HB, heads - h0);
  const int T = PAGED ? pg.rpos[i] + 1 : pos0 + dp[1] + i + 1;
  const int start = s * L, end = min(start + L, T);
  float* pbase = part + ((size_t)i * heads + h0) * nsplit * (vd + 2);
  if (end <= start) {
    if (tid < nh) {
      float* pp = pbase + ((size_t)tid * nsplit + s) * (vd + 2);
      pp[vd] = -INFINITY;
      pp[vd + 1] = 0.f;
    }
    return;
  }
  constexpr int BN = MLA_TC_BN, PST = BN + 8;
  const int ST = kd + 8;  // halves: rows 16 bytes apart mod 128 (no ldmatrix bank conflicts)
  __half* Qs = reinterpret_cast<__half*>(mla_tc_sm);                  // [HB][ST]
  __half* Ks = Qs + MLA_HB * ST;                                      // [BN][ST] the tile
  __half* Ps = Ks + BN * ST;                                          // [HB][PST] probabilities
  float* Ss = reinterpret_cast<float*>(Ps + MLA_HB * PST);            // [HB][BN] scores
  float* mrow = Ss + MLA_HB * BN;                                     // [HB] running max
  float* lrow = mrow + MLA_HB;                                        // [HB] running sum
  float* arow = lrow + MLA_HB;                                        // [HB] this tile's rescale
  const float* qrow = q + ((size_t)i * heads + h0) * kd;
  const int half = kd / 2;
  for (int j = tid; j < MLA_HB * half; j += 128) {
    const int h = j / half, c = 2 * (j - h * half);
    float v0 = 0.f, v1 = 0.f;
    if (h < nh) {
      v0 = qrow[(size_t)h * kd + c] * scale;
      v1 = qrow[(size_t)h * kd + c + 1] * scale;
    }
    *reinterpret_cast<unsigned*>(Qs + h * ST + c) = pack_h2(v0, v1);
  }
  if (tid < MLA_HB) {
    mrow[tid] = -INFINITY;
    lrow[tid] = 0.f;
  }
  const int nk = kd / 16, cw0 = w * (vd / 4), npairs = vd / 64;  // npairs ≤ 8: 16-column pairs of n tiles
  float o[16][4];
#pragma unroll
  for (int j = 0; j < 16; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;

  for (int j0 = start; j0 < end; j0 += BN) {
    const int len = min(BN, end - j0);
    __syncthreads();  // the last tile's values and probabilities are read (and q is in place)
    const int cpr = kd / 8;
    for (int idx = tid; idx < BN * cpr; idx += 128) {
      const int r = idx / cpr, c = (idx - r * cpr) * 8;
      const bool ok = r < len;
      cp_async16(Ks + r * ST + c, ok ? kc + (PAGED ? pg.slot(i, j0 + r) : (size_t)(j0 + r)) * kstride + c : kc, ok);
    }
    cp_commit();
    cp_wait<0>();
    __syncthreads();

    float sa[2][4], sb[2][4];
#pragma unroll
    for (int j = 0; j < 2; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) sa[j][e] = sb[j][e] = 0.f;
    const __half* qp = Qs + ((mat & 1) * 8 + mr) * ST + (mat >> 1) * 8;
    const __half* kp = Ks + (16 * w + (mat >> 1) * 8 + mr) * ST + (mat & 1) * 8;
    auto step = [&](int kk, float (*acc)[4]) {
      unsigned qa[4], b0, b1, b2, b3;
      ldsm_x4(qa[0], qa[1], qa[2], qa[3], qp + kk * 16);
      ldsm_x4(b0, b1, b2, b3, kp + kk * 16);
      mma16816(acc[0], qa, b0, b1);
      mma16816(acc[1], qa, b2, b3);
    };
    int kk = 0;
    for (; kk + 1 < nk; kk += 2) {
      step(kk, sa);
      step(kk + 1, sb);
    }
    if (kk < nk) step(kk, sa);
#pragma unroll
    for (int j = 0; j < 2; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int key = 16 * w + 8 * j + 2 * t4 + (e & 1), h = g + 8 * (e >> 1);
        Ss[h * BN + key] = key < len ? sa[j][e] + sb[j][e] : -INFINITY;
      }
    __syncthreads();

    // Online softmax: warp w owns heads 4w..4w+3, keys lane and lane+32.
#pragma unroll
    for (int hh = 0; hh < 4; hh++) {
      const int h = 4 * w + hh;
      const float s0 = Ss[h * BN + lane], s1 = Ss[h * BN + lane + 32];
      const float mo = mrow[h];
      const float mn = fmaxf(mo, warp_max(fmaxf(s0, s1)));  // finite: the tile has a key
      const float p0 = __expf(s0 - mn), p1 = __expf(s1 - mn);
      Ps[h * PST + lane] = __float2half_rn(p0);
      Ps[h * PST + lane + 32] = __float2half_rn(p1);
      const float l = warp_sum(p0 + p1);
      if (lane == 0) mla_stats(arow, lrow, mrow, h, __expf(mo - mn), mn, l);
    }
    __syncthreads();

    const float alo = arow[g], ahi = arow[g + 8];
#pragma unroll
    for (int j = 0; j < 16; j++) {
      o[j][0] *= alo; o[j][1] *= alo;
      o[j][2] *= ahi; o[j][3] *= ahi;
    }
#pragma unroll
    for (int kc2 = 0; kc2 < BN / 16; kc2++) {
      unsigned pa[4];
      ldsm_x4(pa[0], pa[1], pa[2], pa[3], Ps + ((mat & 1) * 8 + mr) * PST + kc2 * 16 + (mat >> 1) * 8);
      const __half* vp = Ks + (kc2 * 16 + (mat & 1) * 8 + mr) * ST + cw0 + (mat >> 1) * 8;
#pragma unroll
      for (int np = 0; np < 8; np++) {
        if (np < npairs) {
          unsigned b0, b1, b2, b3;
          ldsm_x4_t(b0, b1, b2, b3, vp + np * 16);
          mma16816(o[2 * np], pa, b0, b1);
          mma16816(o[2 * np + 1], pa, b2, b3);
        }
      }
    }
  }
#pragma unroll
  for (int j = 0; j < 16; j++) {
    if (j < 2 * npairs) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int h = g + 8 * (e >> 1);
        if (h < nh) pbase[((size_t)h * nsplit + s) * (vd + 2) + cw0 + 8 * j + 2 * t4 + (e & 1)] = o[j][e];
      }
    }
  }
  if (tid < nh) {
    float* pp = pbase + ((size_t)tid * nsplit + s) * (vd + 2);
    pp[vd] = mrow[tid];
    pp[vd + 1] = lrow[tid];
  }
}

extern "C" __global__ void __launch_bounds__(128)
    mla_attn_tc_f16(float* part, const float* q, const __half* kc, int pos0, const int* dp, int heads, int kd, int vd,
                    int ks, float scale, int L, int nsplit) { PDL_ENTRY();
  mla_attn_tc<false>(part, q, kc, pos0, dp, heads, kd, vd, ks, scale, L, nsplit, Paged{});
}
extern "C" __global__ void __launch_bounds__(128)
    mla_attn_tc_paged_f16(float* part, const float* q, const __half* kc, const int* rpos, const int* rseq,
                          const int* tabs, int maxb, int bs, int heads, int kd, int vd, int ks, float scale, int L,
                          int nsplit) { PDL_ENTRY();
  mla_attn_tc<true>(part, q, kc, 0, nullptr, heads, kd, vd, ks, scale, L, nsplit, Paged{rpos, rseq, tabs, maxb, bs});
}

// ---------------------------------------------------------------- MLA prefill attention, tensor cores
// mla_attn_tc for MLA_TR consecutive query rows of one sequence (prefill:
// rows i.. of the launch at positions pos0+dp[1]+i..): the block's M
// dimension is MLA_TR rows × MLA_HB heads (64), so each cache tile staged
// in shared memory serves every row of the tile, and the cache is read once
// per (row tile, head group, split) instead of once per row. Causal mask per
// row (row r sees keys < T_r); a row that sees no key of a tile keeps its
// state (max -inf, sum 0), as an empty split. Same splits, tiles (64 keys
// from s·L), softmax and partials as mla_attn_tc, so attn_combine merges
// them unchanged. 8 warps. Scores: warp w takes row w&3 (its 16 heads) ×
// keys 32·(w>>2)..+31. Softmax: 8 M rows a warp. Values: warp w takes row
// w&3 × columns (w>>2)·vd/2.. (≤ 32 n tiles: 128 accumulators a thread).
#define MLA_TR 4
#define MLA_TR_THREADS 256

// Paged (mla_attn_tc_rows_paged_f16): block z takes the row tile
// tiles[z] = 8·i0 + nr, rows i0..i0+nr-1 (nr ≤ MLA_TR) of one sequence at
// consecutive positions (the host cuts the batch's runs into such tiles; a
// decode row is a tile of one), its keys through row i0's block table.
template <bool PAGED>
__device__ void mla_attn_tc_rows(float* part, const float* q, const __half* kc, int pos0, const int* dp, int n,
                                 const int* tiles, int heads, int kd, int vd, int kstride, float scale, int L,
                                 int nsplit, Paged pg) {
  extern __shared__ __align__(16) unsigned char mla_tr_sm[];
  constexpr int BN = MLA_TC_BN, PST = BN + 8, M = MLA_TR * MLA_HB;
  const int s = blockIdx.x, h0 = blockIdx.y * MLA_HB;
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t4 = lane & 3, mat = lane >> 3, mr = lane & 7;
  int i0, nr, T0;  // the tile's first row, its rows, and the keys row i0 sees (row i0+r sees T0+r)
  if (PAGED) {
    const int tl = tiles[blockIdx.z];
    i0 = tl >> 3;
    nr = tl & 7;
    T0 = pg.rpos[i0] + 1;
  } else {
    i0 = blockIdx.z * MLA_TR;
    nr = min(MLA_TR, n - i0);
    T0 = pos0 + dp[1] + i0 + 1;
  }
  const int nh = min(MLA_HB, heads - h0);
  const int start = s * L, end = min(start + L, T0 + nr - 1);
  // Partials of (row r, head h) of this block: [vd | max | sum].
  auto ppart = [&](int r, int h) { return part + (((size_t)(i0 + r) * heads + h0 + h) * nsplit + s) * (vd + 2); };
  if (end <= start) {  // a split past the tile's context
    if (tid < M) {
      const int r = tid / MLA_HB, h = tid % MLA_HB;
      if (r < nr && h < nh) {
        float* pp = ppart(r, h);
        pp[vd] = -INFINITY;
        pp[vd + 1] = 0.f;
      }
    }
    return;
  }
  const int ST = kd + 8;
  __half* Qs = reinterpret_cast<__half*>(mla_tr_sm);          // [M][ST] q, row-major (row r, head h) = r·HB+h
  __half* Ks = Qs + M * ST;                                    // [BN][ST] the tile
  __half* Ps = Ks + BN * ST;                                   // [M][PST] probabilities
  float* Ss = reinterpret_cast<float*>(Ps + M * PST);          // [M][BN] scores
  float* mrow = Ss + M * BN;                                   // [M] running max
  float* lrow = mrow + M;                                      // [M] running sum
  float* arow = lrow + M;                                      // [M] this tile's rescale
  const int half = kd / 2;
  for (int j = tid; j < M * half; j += MLA_TR_THREADS) {
    const int m = j / half, c = 2 * (j - m * half);
    const int r = m / MLA_HB, h = m % MLA_HB;
    float v0 = 0.f, v1 = 0.f;
    if (r < nr && h < nh) {
      const float* qp = q + ((size_t)(i0 + r) * heads + h0 + h) * kd + c;
      v0 = qp[0] * scale;
      v1 = qp[1] * scale;
    }
    *reinterpret_cast<unsigned*>(Qs + m * ST + c) = pack_h2(v0, v1);
  }
  if (tid < M) {
    mrow[tid] = -INFINITY;
    lrow[tid] = 0.f;
  }
  const int wr = w & 3, wh = w >> 2;          // the warp's query row, and its key / column half
  const int Tw = wr < nr ? T0 + wr : 0;       // keys the warp's row sees (none for rows past n)
  const int nk = kd / 16, cw0 = wh * (vd / 2), npairs = vd / 32;  // npairs ≤ 16
  float o[32][4];
#pragma unroll
  for (int j = 0; j < 32; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;

  for (int j0 = start; j0 < end; j0 += BN) {
    const int len = min(BN, end - j0);
    __syncthreads();  // the last tile's values and probabilities are read (and q is in place)
    const int cpr = kd / 8;
    for (int idx = tid; idx < BN * cpr; idx += MLA_TR_THREADS) {
      const int r = idx / cpr, c = (idx - r * cpr) * 8;
      const bool ok = r < len;
      cp_async16(Ks + r * ST + c, ok ? kc + (PAGED ? pg.slot(i0, j0 + r) : (size_t)(j0 + r)) * kstride + c : kc, ok);
    }
    cp_commit();
    cp_wait<0>();
    __syncthreads();

    // Scores: rows 16·wr.. of M × keys 32·wh.. (4 n tiles of 8).
    float sa[4][4];
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) sa[j][e] = 0.f;
    const __half* qp = Qs + (16 * wr + (mat & 1) * 8 + mr) * ST + (mat >> 1) * 8;
    const __half* kp = Ks + (32 * wh + (mat >> 1) * 8 + mr) * ST + (mat & 1) * 8;
    // Warp-uniform skip: none of the warp's 32 keys is visible to its row
    // (rows past n, the last tile); their scores are masked below anyway.
    for (int kk = 0; kk < (j0 + 32 * wh < Tw ? nk : 0); kk++) {
      unsigned qa[4], b0, b1, b2, b3, b4, b5, b6, b7;
      ldsm_x4(qa[0], qa[1], qa[2], qa[3], qp + kk * 16);
      ldsm_x4(b0, b1, b2, b3, kp + kk * 16);
      ldsm_x4(b4, b5, b6, b7, kp + 16 * ST + kk * 16);
      mma16816(sa[0], qa, b0, b1);
      mma16816(sa[1], qa, b2, b3);
      mma16816(sa[2], qa, b4, b5);
      mma16816(sa[3], qa, b6, b7);
    }
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int key = 32 * wh + 8 * j + 2 * t4 + (e & 1), m = 16 * wr + g + 8 * (e >> 1);
        Ss[m * BN + key] = key < len && j0 + key < Tw ? sa[j][e] : -INFINITY;
      }
    __syncthreads();

    // Online softmax: warp w owns M rows 8w..8w+7, keys lane and lane+32.
#pragma unroll
    for (int mm = 0; mm < 8; mm++) {
      const int m = 8 * w + mm;
      const float s0 = Ss[m * BN + lane], s1 = Ss[m * BN + lane + 32];
      const float mo = mrow[m];
      const float mn = fmaxf(mo, warp_max(fmaxf(s0, s1)));
      const float mb = mn == -INFINITY ? 0.f : mn;  // no key seen yet: p = 0, state kept
      const float p0 = __expf(s0 - mb), p1 = __expf(s1 - mb);
      Ps[m * PST + lane] = __float2half_rn(p0);
      Ps[m * PST + lane + 32] = __float2half_rn(p1);
      const float l = warp_sum(p0 + p1);
      if (lane == 0) {
        const float a = __expf(mo - mb);  // 0 while the max is -inf (the sum and values are 0 then)
        arow[m] = a;
        lrow[m] = lrow[m] * a + l;
        mrow[m] = mn;
      }
    }
    __syncthreads();

    // A row that sees no key of this tile keeps its values (a = 1, or 0
    // on zeros): the warp skips the tile (warp-uniform).
    if (j0 >= Tw) continue;
    const float alo = arow[16 * wr + g], ahi = arow[16 * wr + g + 8];
#pragma unroll
    for (int j = 0; j < 32; j++) {
      o[j][0] *= alo; o[j][1] *= alo;
      o[j][2] *= ahi; o[j][3] *= ahi;
    }
#pragma unroll
    for (int kc2 = 0; kc2 < BN / 16; kc2++) {
      unsigned pa[4];
      ldsm_x4(pa[0], pa[1], pa[2], pa[3], Ps + (16 * wr + (mat & 1) * 8 + mr) * PST + kc2 * 16 + (mat >> 1) * 8);
      const __half* vp = Ks + (kc2 * 16 + (mat & 1) * 8 + mr) * ST + cw0 + (mat >> 1) * 8;
#pragma unroll
      for (int np = 0; np < 16; np++) {
        if (np < npairs) {
          unsigned b0, b1, b2, b3;
          ldsm_x4_t(b0, b1, b2, b3, vp + np * 16);
          mma16816(o[2 * np], pa, b0, b1);
          mma16816(o[2 * np + 1], pa, b2, b3);
        }
      }
    }
  }
  if (wr < nr) {
#pragma unroll
    for (int j = 0; j < 32; j++) {
      if (j < 2 * npairs) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int h = g + 8 * (e >> 1);
          if (h < nh) ppart(wr, h)[cw0 + 8 * j + 2 * t4 + (e & 1)] = o[j][e];
        }
      }
    }
  }
  if (tid < M) {
    const int r = tid / MLA_HB, h = tid % MLA_HB;
    if (r < nr && h < nh) {
      float* pp = ppart(r, h);
      pp[vd] = mrow[tid];
      pp[vd + 1] = lrow[tid];
    }
  }
}

extern "C" __global__ void __launch_bounds__(MLA_TR_THREADS, 1)
    mla_attn_tc_rows_f16(float* part, const float* q, const __half* kc, int pos0, const int* dp, int n, int heads,
                         int kd, int vd, int ks, float scale, int L, int nsplit) { PDL_ENTRY();
  mla_attn_tc_rows<false>(part, q, kc, pos0, dp, n, nullptr, heads, kd, vd, ks, scale, L, nsplit, Paged{});
}
extern "C" __global__ void __launch_bounds__(MLA_TR_THREADS, 1)
    mla_attn_tc_rows_paged_f16(float* part, const float* q, const __half* kc, const int* tiles, const int* rpos,
                               const int* rseq, const int* tabs, int maxb, int bs, int heads, int kd, int vd, int ks,
                               float scale, int L, int nsplit) { PDL_ENTRY();
  mla_attn_tc_rows<true>(part, q, kc, 0, nullptr, 0, tiles, heads, kd, vd, ks, scale, L, nsplit,
                         Paged{rpos, rseq, tabs, maxb, bs});
}

// mla_pack: kernels.Backend.MLAPack for row t = blockIdx.x, 256 threads:
// k[t] = [rmsnorm(lat[t])·w | kr[t]] (the rmsnorm kernel's arithmetic) and
// the rope part of every head's query copied into q_abs; with invf (not
// null) those rope parts are then rotated in place for position
// pos0 + dp[1] + t with the rope kernel's rope_pair (MLAPackShape.RoPE).
extern "C" __global__ void __launch_bounds__(256) mla_pack(float* k, float* qabs, const float* q, const float* lat,
                                                           const float* kr, const float* w, int heads, int nope,
                                                           int rope, int lora, float eps, int pos0, const int* dp,
                                                           const float* invf, float rscale, int interleaved) { PDL_ENTRY();
  __shared__ float sh[32];
  const int t = blockIdx.x, kd = lora + rope, qh = nope + rope;
  const float* lr = lat + (size_t)t * lora;
  float ss = 0.f;
  for (int i = threadIdx.x; i < lora; i += blockDim.x) ss = fmaf(lr[i], lr[i], ss);
  ss = block_sum(ss, sh);
  const float inv = rsqrtf(ss / (float)lora + eps);
  float* kt = k + (size_t)t * kd;
  for (int i = threadIdx.x; i < lora; i += blockDim.x) kt[i] = lr[i] * inv * w[i];
  for (int i = threadIdx.x; i < rope; i += blockDim.x) kt[lora + i] = kr[(size_t)t * rope + i];
  for (int i = threadIdx.x; i < heads * rope; i += blockDim.x) {
    const int h = i / rope, j = i - h * rope;
    qabs[((size_t)t * heads + h) * kd + lora + j] = q[((size_t)t * heads + h) * qh + nope + j];
  }
  if (!invf) return;
  __syncthreads();  // the copies above are what gets rotated
  const int half = rope / 2, pos = pos0 + dp[1] + t;
  for (int i = threadIdx.x; i < (heads + 1) * half; i += blockDim.x) {
    const int h = i / half;  // h == heads: the key
    float* hp = h == heads ? kt + lora : qabs + ((size_t)t * heads + h) * kd + lora;
    rope_pair(hp, i - h * half, pos, invf, rope, rscale, interleaved);
  }
}
