// ---------------------------------------------------------------- one-pass decode attention
// attn_dec: split-KV attention over an f16 cache in one pass (flash-decoding),
// for decode rows: K and V are streamed once with 16-byte loads and an online
// softmax keeps the running max, sum and output in registers. attn_split
// reads each split's keys twice (scores into shared memory, a softmax, then
// the values) and keeps few loads in flight; this one is the bandwidth path
// for kd == vd (multiple of 8, at most 256) with V beside K.
//
// Block (split s, y = kv head g · head chunk, query i), 4 warps: the block
// scores keys [s*L, min((s+1)*L, T_i)) for GB query heads of kv head g (a
// group over GB heads takes ceil(G/GB) chunks, the last one masked). A key
// row is lk = pow2ceil(d/8) lanes of one 16-byte chunk each, so a warp
// holds 32/lk keys per load and each lane U keys' K and V in flight. Each
// lane group keeps its own (max, sum, acc) in base 2 (q is pre-scaled by
// log2 e); the groups of a warp merge through shuffles, the warps through
// shared memory, and the block writes the split's partial (acc[d], max, sum)
// per head in attn_split's format (max in natural-log units) for
// attn_combine / attn_combine_rows. An empty split writes max -inf, sum 0.
//
// PAGED: query i is batch row r = rows ? rows[i] : i at position rpos[r],
// its keys found through the block table (blocks of 1 << bshift positions);
// otherwise query i sits at pos0 + dp[1] + i of a contiguous cache.
template <int GB, bool PAGED>
DEVI void attn_dec(float* part, const float* q, const __half* kc, const __half* vc, int pos0, const int* dp,
                   const int* rpos, const int* rseq, const int* tabs, int maxb, int bshift, const int* rows,
                   int heads, int kvh, int d, int kstride, int vstride, float scale, int L, int nsplit) {
  constexpr int NW = 4;               // warps (blockDim.x == 128)
  constexpr int U = GB <= 2 ? 4 : 2;  // keys per lane group in flight
  constexpr bool QREG = GB <= 2;      // q in registers, else in shared memory
  extern __shared__ float sm[];
  const int G = heads / kvh, nhc = (G + GB - 1) / GB;
  const int s = blockIdx.x, g = blockIdx.y / nhc, hc = blockIdx.y - g * nhc, i = blockIdx.z;
  const int r = (PAGED && rows) ? rows[i] : i;
  const int T = PAGED ? rpos[r] + 1 : pos0 + dp[1] + i + 1;  // keys visible to query i
  const int start = s * L, end = min(start + L, T);
  const int h0 = g * G + hc * GB;        // the block's first query head
  const int nh = min(GB, G - hc * GB);   // its heads that exist
  const size_t hstride = (size_t)nsplit * (d + 2);
  float* pbase = part + ((size_t)i * heads + h0) * hstride + (size_t)s * (d + 2);
  const int tid = threadIdx.x;
  if (end <= start) {
    if (tid < nh) { pbase[tid * hstride + d] = -INFINITY; pbase[tid * hstride + d + 1] = 0.f; }
    return;
  }
  const int nch = d >> 3;
  int lk = 1;
  while (lk < nch) lk <<= 1;
  const int kpw = 32 / lk;  // keys per warp load
  const int lane = tid & 31, w = tid >> 5, c = lane & (lk - 1), kq = lane / lk;
  const bool act = c < nch;  // lanes past the row's chunks idle (d/8 not a power of two)
  const float qscale = scale * 1.4426950408889634f;
  float* qs = sm;                         // [GB][d] unless QREG
  float* red = sm + (QREG ? 0 : GB * d);  // [NW][GB][P]: acc[d], max, sum
  const int P = d + 4;                    // 16-byte aligned rows
  const float* qrow = q + ((size_t)r * heads + h0) * d;
  float qr[QREG ? GB : 1][8];
  if (QREG) {
#pragma unroll
    for (int h = 0; h < (QREG ? GB : 1); h++) {
      const bool ok = h < nh && act;
      float4 a = ok ? reinterpret_cast<const float4*>(qrow + h * d + c * 8)[0] : make_float4(0.f, 0.f, 0.f, 0.f);
      float4 b = ok ? reinterpret_cast<const float4*>(qrow + h * d + c * 8)[1] : make_float4(0.f, 0.f, 0.f, 0.f);
      qr[h][0] = a.x * qscale; qr[h][1] = a.y * qscale; qr[h][2] = a.z * qscale; qr[h][3] = a.w * qscale;
      qr[h][4] = b.x * qscale; qr[h][5] = b.y * qscale; qr[h][6] = b.z * qscale; qr[h][7] = b.w * qscale;
    }
  } else {
    for (int j = tid; j < GB * d; j += blockDim.x) qs[j] = j / d < nh ? qrow[j] * qscale : 0.f;
    __syncthreads();
  }
  const __half* kb = kc + (size_t)g * d + c * 8;
  const __half* vb = vc + (size_t)g * d + c * 8;
  const int* tb = PAGED ? tabs + (size_t)rseq[r] * maxb : nullptr;
  const int bmask = (1 << bshift) - 1;
  float m[GB], l[GB], acc[GB][8];
#pragma unroll
  for (int h = 0; h < GB; h++) {
    m[h] = -INFINITY; l[h] = 0.f;
#pragma unroll
    for (int e = 0; e < 8; e++) acc[h][e] = 0.f;
  }
  // The loop bound is uniform across the warp, so the shuffles never diverge.
  for (int j0 = start + w * U * kpw; j0 < end; j0 += NW * U * kpw) {
    uint4 kr[U], vr[U];
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int j = j0 + u * kpw + kq;
      kr[u] = make_uint4(0, 0, 0, 0); vr[u] = kr[u];
      if (j < end && act) {
        const size_t sl = PAGED ? ((size_t)tb[j >> bshift] << bshift) + (j & bmask) : (size_t)j;
        kr[u] = ldw(reinterpret_cast<const uint4*>(kb + sl * kstride));
        vr[u] = ldw(reinterpret_cast<const uint4*>(vb + sl * vstride));
      }
    }
    float sc[U][GB];
#pragma unroll
    for (int u = 0; u < U; u++) {
      float kf[8];
      V16<__half>::cvt(kr[u], kf);
#pragma unroll
      for (int h = 0; h < GB; h++) {
        float a = 0.f;
        if (act) {
          if (QREG) {
#pragma unroll
            for (int e = 0; e < 8; e++) a = fmaf(kf[e], qr[QREG ? h : 0][e], a);
          } else {
            const float4* q4 = reinterpret_cast<const float4*>(qs + h * d + c * 8);
            const float4 x = q4[0], y = q4[1];
            a = kf[0] * x.x; a = fmaf(kf[1], x.y, a); a = fmaf(kf[2], x.z, a); a = fmaf(kf[3], x.w, a);
            a = fmaf(kf[4], y.x, a); a = fmaf(kf[5], y.y, a); a = fmaf(kf[6], y.z, a); a = fmaf(kf[7], y.w, a);
          }
        }
        for (int o = 1; o < lk; o <<= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
        sc[u][h] = j0 + u * kpw + kq < end ? a : -INFINITY;
      }
    }
#pragma unroll
    for (int h = 0; h < GB; h++) {
      float mx = m[h];
#pragma unroll
      for (int u = 0; u < U; u++) mx = fmaxf(mx, sc[u][h]);
      const float mu = mx == -INFINITY ? 0.f : mx;  // no key yet: keep everything at 0
      const float corr = exp2f(m[h] - mu);
      l[h] *= corr;
#pragma unroll
      for (int e = 0; e < 8; e++) acc[h][e] *= corr;
      m[h] = mx;
#pragma unroll
      for (int u = 0; u < U; u++) {
        const float p = exp2f(sc[u][h] - mu);
        sc[u][h] = p;
        l[h] += p;
      }
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      float vf[8];
      V16<__half>::cvt(vr[u], vf);
#pragma unroll
      for (int h = 0; h < GB; h++)
#pragma unroll
        for (int e = 0; e < 8; e++) acc[h][e] = fmaf(sc[u][h], vf[e], acc[h][e]);
    }
  }
  // Merge the warp's lane groups (lanes c, c+lk, c+2lk, ...).
  for (int o = lk; o < 32; o <<= 1) {
#pragma unroll
    for (int h = 0; h < GB; h++) {
      const float mo = __shfl_xor_sync(0xffffffffu, m[h], o), lo = __shfl_xor_sync(0xffffffffu, l[h], o);
      const float mx = fmaxf(m[h], mo), mu = mx == -INFINITY ? 0.f : mx;
      const float fa = exp2f(m[h] - mu), fb = exp2f(mo - mu);
      l[h] = l[h] * fa + lo * fb;
#pragma unroll
      for (int e = 0; e < 8; e++) {
        const float ao = __shfl_xor_sync(0xffffffffu, acc[h][e], o);
        acc[h][e] = acc[h][e] * fa + ao * fb;
      }
      m[h] = mx;
    }
  }
  if (kq == 0 && act) {
#pragma unroll
    for (int h = 0; h < GB; h++) {
      float* rp = red + (w * GB + h) * P;
      *reinterpret_cast<float4*>(rp + c * 8) = make_float4(acc[h][0], acc[h][1], acc[h][2], acc[h][3]);
      *reinterpret_cast<float4*>(rp + c * 8 + 4) = make_float4(acc[h][4], acc[h][5], acc[h][6], acc[h][7]);
      if (c == 0) { rp[d] = m[h]; rp[d + 1] = l[h]; }
    }
  }
  __syncthreads();
  // Merge the warps. Warp 0 saw the split's first key, so M is finite.
  for (int x = tid; x < nh * d; x += blockDim.x) {
    const int h = x / d, e = x - h * d;
    float M = -INFINITY;
#pragma unroll
    for (int v = 0; v < NW; v++) M = fmaxf(M, red[(v * GB + h) * P + d]);
    float a = 0.f, ls = 0.f;
#pragma unroll
    for (int v = 0; v < NW; v++) {
      const float* rp = red + (v * GB + h) * P;
      const float f = exp2f(rp[d] - M);
      a = fmaf(rp[e], f, a);
      ls = fmaf(rp[d + 1], f, ls);
    }
    float* pp = pbase + h * hstride;
    pp[e] = a;
    if (e == 0) { pp[d] = M * 0.6931471805599453f; pp[d + 1] = ls; }
  }
}

#define ATTN_DEC(GB)                                                                                              \
  extern "C" __global__ void __launch_bounds__(128) attn_dec_paged_f16_g##GB(                                    \
      float* part, const float* q, const __half* kc, const __half* vc, const int* rpos, const int* rseq,          \
      const int* tabs, int maxb, int bshift, const int* rows, int heads, int kvh, int d, int ks, int vs,          \
      float scale, int L, int nsplit) { PDL_ENTRY();                                                              \
    attn_dec<GB, true>(part, q, kc, vc, 0, nullptr, rpos, rseq, tabs, maxb, bshift, rows, heads, kvh, d, ks, vs, \
                       scale, L, nsplit);                                                                         \
  }                                                                                                               \
  extern "C" __global__ void __launch_bounds__(128) attn_dec_f16_g##GB(                                          \
      float* part, const float* q, const __half* kc, const __half* vc, int pos0, const int* dp, int heads,        \
      int kvh, int d, int ks, int vs, float scale, int L, int nsplit) { PDL_ENTRY();                              \
    attn_dec<GB, false>(part, q, kc, vc, pos0, dp, nullptr, nullptr, nullptr, 0, 0, nullptr, heads, kvh, d, ks,  \
                        vs, scale, L, nsplit);                                                                    \
  }
ATTN_DEC(1)
ATTN_DEC(2)
ATTN_DEC(4)
ATTN_DEC(8)
#undef ATTN_DEC
