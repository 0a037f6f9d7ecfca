// Mixture-of-experts kernels (kernels.MoE, moe.go): routing on the device
// and the routed experts of DeepSeek's MoE layers, so a layer never reads
// back to the host and a decode step stays one captured graph.
//
// Layouts (moe.go uploads them):
//   gate|up  W [cnt, 2·inter, hidden]  rows 0..inter-1 gate, inter..2·inter-1 up
//   down     D [cnt, hidden, inter]
//   int8: one float32 scale per row, [cnt, 2·inter] and [cnt, hidden]
//   fp8:  block scales of the stacked matrix (each expert's rows are a
//         multiple of the block height, so stacked row R uses scale row
//         R / br): the FP8Scales descriptor fq of each kernel, as gemv_fp8
//   routes   idx int32 [n, k] (global expert ids), w float32 [n, k];
//            pair p = t·k + j is slot j of row t.
// Experts cover global ids [first, first+cnt); pairs routed elsewhere (to
// another shard's experts) contribute nothing.
//
// Every kernel is templated on the weight type and reads weights through
// V16<T> (16-byte vectors) or moe_w() (one value); fp8 adds its block
// scale: per 16-value chunk in the vector loops (cshift ≥ 0: the chunk's
// block column is c >> cshift, as gemv_fp8), per value otherwise (as
// gemvs_fp8 and the CPU: value × scale, then the product).

template <typename T> struct MoEIsFP8 { static constexpr bool v = false; };
template <> struct MoEIsFP8<fp8_e4m3> { static constexpr bool v = true; };

// moe_w reads weight i (stacked row `row`, column c) as a float.
template <typename T> DEVI float moe_w(const T* W, size_t i, const FP8Scales&, int, int) { return tof(W[i]); }
DEVI float moe_w(const fp8_e4m3* W, size_t i, const FP8Scales& fq, int row, int c) {
  return tof(W[i]) * fp8_srow(fq, row)[c / fq.bc];
}

// Experts one layer's kernels hold at most (moe.go's moeMaxHeld): 256
// routed and 32 shared.
#define MOE_MAX_HELD 288

// ---------------------------------------------------------------- routing

// moe_route: one warp per row, E ≤ 256 experts (lane l holds experts
// l, l+32, …), k ≤ 32, G ≤ 32 groups. The arithmetic and its order are
// kernels/routing's (package comment there), so indices equal the host's:
// float64 exp and sigmoid, the softmax sum in index order by one lane,
// selection by exact comparisons (ties to the lower index), and the
// normalisation sum in slot order by one lane.
// method: 0 greedy, 1 group_limited_greedy (group max), 2 noaux_tc (top-2 sum).
// Rows have k + shared slots: the top-k, then the shared experts E, E+1, …
// with weight 1 (routing.Config.Shared).
// counts [E+1]: top-k selections per expert (not the shared slots), then
// rows routed.
// MoERouteSmem is one routing warp's shared memory.
struct MoERouteSmem {
  float s[256];   // scores (softmax or sigmoid): the weights
  float c[256];   // choice: what selection compares
  double e[256];
  float g[32];
  int idx[32];
  double sum;
};

// moe_route_row routes row t, whose logits are x[0..E), with the calling
// warp (all 32 lanes) and its shared memory sm. x is read through L2
// (__ldcg): moe_router_dec (fuse.cuh) routes logits other blocks of its
// grid wrote.
DEVI void moe_route_row(MoERouteSmem& sm, int t, const float* x, int* __restrict__ idx, float* __restrict__ wout,
                        unsigned long long* __restrict__ counts, const float* __restrict__ bias, int E, int k,
                        int shared, int G, int topG, int method, int sigmoid, int norm, int scaled, float scale) {
  float* s_s = sm.s;
  float* s_c = sm.c;
  double* s_e = sm.e;
  float* s_g = sm.g;
  int* s_idx = sm.idx;
  double& s_sum = sm.sum;
  const int lane = threadIdx.x & 31;
  if (sigmoid) {
    for (int i = lane; i < E; i += 32) s_s[i] = (float)(1.0 / (1.0 + exp(-(double)__ldcg(x + i))));
  } else {
    float m = -INFINITY;
    for (int i = lane; i < E; i += 32) m = fmaxf(m, __ldcg(x + i));
    m = warp_max(m);
    for (int i = lane; i < E; i += 32) {
      double e = exp((double)(__ldcg(x + i) - m));
      s_e[i] = e;
      s_s[i] = (float)e;
    }
    __syncwarp();
    if (lane == 0) {
      double sum = 0;
      for (int i = 0; i < E; i++) sum += s_e[i];
      s_sum = sum;
    }
    __syncwarp();
    const double sum = s_sum;
    for (int i = lane; i < E; i += 32) s_s[i] = (float)((double)s_s[i] / sum);
  }
  __syncwarp();
  for (int i = lane; i < E; i += 32) s_c[i] = bias ? s_s[i] + bias[i] : s_s[i];
  __syncwarp();
  if (method != 0) {
    const int per = E / G;
    if (lane < G) {
      const float* c = s_c + lane * per;
      float a = -INFINITY, b = -INFINITY;
      if (method == 2) {
        for (int i = 0; i < per; i++) {
          float v = c[i];
          if (v > a) { b = a; a = v; } else if (v > b) b = v;
        }
        s_g[lane] = a + b;
      } else {
        a = c[0];
        for (int i = 1; i < per; i++) a = fmaxf(a, c[i]);
        s_g[lane] = a;
      }
    }
    __syncwarp();
    unsigned keep = 0;
    if (lane == 0) {
      for (int r = 0; r < topG; r++) {
        int best = -1;
        for (int g = 0; g < G; g++)
          if (!((keep >> g) & 1u) && (best < 0 || s_g[g] > s_g[best])) best = g;
        keep |= 1u << best;
      }
    }
    keep = __shfl_sync(0xffffffffu, keep, 0);
    for (int i = lane; i < E; i += 32)
      if (!((keep >> (i / per)) & 1u)) s_c[i] = 0.f;  // masked_fill(…, 0.0)
    __syncwarp();
  }
  // Top-k: k rounds of a warp argmax over the experts not taken yet.
  float v[8];
  unsigned taken = 0;
#pragma unroll
  for (int q = 0; q < 8; q++) v[q] = (lane + 32 * q < E) ? s_c[lane + 32 * q] : 0.f;
  int mine = -1;
  for (int j = 0; j < k; j++) {
    float bv = 0.f;
    int bi = -1;
#pragma unroll
    for (int q = 0; q < 8; q++) {
      int i = lane + 32 * q;
      if (i < E && !((taken >> q) & 1u) && (bi < 0 || v[q] > bv)) { bv = v[q]; bi = i; }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) { bv = ov; bi = oi; }
    }
    if (bi >= 0 && (bi & 31) == lane) taken |= 1u << (bi >> 5);
    if (lane == j) mine = bi;
  }
  if (lane < k) s_idx[lane] = mine;
  __syncwarp();
  const size_t row = (size_t)t * (k + shared);  // the row's first slot
  if (lane == 0) {
    float sum = 0.f;
    for (int j = 0; j < k; j++) sum += s_s[s_idx[j]];
    for (int j = 0; j < k; j++) {
      float r = s_s[s_idx[j]];
      if (norm) r = __fdiv_rn(r, __fadd_rn(sum, 1e-20f));
      if (scaled) r = __fmul_rn(r, scale);
      idx[row + j] = s_idx[j];
      wout[row + j] = r;
    }
    atomicAdd(counts + E, 1ull);
  }
  for (int s = lane; s < shared; s += 32) {
    idx[row + k + s] = E + s;
    wout[row + k + s] = 1.f;
  }
  if (lane < k) atomicAdd(counts + mine, 1ull);
}

extern "C" __global__ void __launch_bounds__(32) moe_route(int* __restrict__ idx, float* __restrict__ wout,
                                                           unsigned long long* __restrict__ counts,
                                                           const float* __restrict__ logits, const float* __restrict__ bias,
                                                           int n, int E, int k, int shared, int G, int topG, int method,
                                                           int sigmoid, int norm, int scaled, float scale) { PDL_ENTRY();
  __shared__ MoERouteSmem sm;
  const int t = blockIdx.x;
  if (t >= n) return;
  moe_route_row(sm, t, logits + (size_t)t * E, idx, wout, counts, bias, E, k, shared, G, topG, method, sigmoid, norm,
                scaled, scale);
}

// ---------------------------------------------------------------- decode (n ≤ 8 rows)

// moe_gateup_dec: H[p, f] = silu(gate_e[f]·x_t) · (up_e[f]·x_t) for pair p =
// blockIdx.y (row t = p / k, expert e = idx[p]). One warp computes R
// features: R gate rows and the R matching up rows stream together, so the
// SwiGLU happens in registers. Grid (ceil(inter / (8R)), n·k), 256 threads.
template <typename T, int R, int U>
__device__ void moe_gateup_dec(const T* __restrict__ W, const float* __restrict__ wsc, const float* __restrict__ x,
                               const int* __restrict__ idx, float* __restrict__ H, int k, int first, int cnt,
                               int hidden, int inter, const FP8Scales& fq, int cshift) {
  constexpr int EL = V16<T>::N;
  constexpr bool FP8 = MoEIsFP8<T>::v;
  const int lane = threadIdx.x & 31;
  const int p = blockIdx.y, t = p / k;
  const int e = idx[p] - first;
  if (e < 0 || e >= cnt) return;
  const int f0 = ((blockIdx.x * blockDim.x + threadIdx.x) >> 5) * R;
  if (f0 >= inter) return;
  const T* We = W + (size_t)e * 2 * inter * hidden;
  const float* xr = x + (size_t)t * hidden;
  float acc[2 * R][1];  // gate rows 0..R-1, up rows R..2R-1
#pragma unroll
  for (int r = 0; r < 2 * R; r++) acc[r][0] = 0.f;
  if (hidden % EL == 0 && (!FP8 || cshift >= 0)) {
    const uint4* wp[2 * R];
    const float* sp[2 * R];  // fp8: the rows' block scales
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
      for (int r = 0; r < R; r++) {
        const int wr = h * inter + min(f0 + r, inter - 1);
        wp[h * R + r] = reinterpret_cast<const uint4*>(We + (size_t)wr * hidden);
        if (FP8) sp[h * R + r] = fp8_srow(fq, e * 2 * inter + wr);
      }
    gemv_chunks<T, FP8, 2 * R, 1, U>(wp, sp, cshift, xr, 0, 1, hidden / EL, acc);
  } else {  // rows not 16-byte aligned (odd widths, fp8 blocks the vector loop does not take): scalar loads
    for (int c = lane; c < hidden; c += 32) {
      float xv = xr[c];
#pragma unroll
      for (int h = 0; h < 2; h++)
#pragma unroll
        for (int r = 0; r < R; r++) {
          const int wr = h * inter + min(f0 + r, inter - 1);
          acc[h * R + r][0] = fmaf(moe_w(We, (size_t)wr * hidden + c, fq, e * 2 * inter + wr, c), xv, acc[h * R + r][0]);
        }
    }
  }
  warp_sums(acc);
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < R; r++) {
      int f = f0 + r;
      if (f < inter) {
        float g = acc[r][0], u = acc[R + r][0];
        if (wsc) {
          g *= wsc[(size_t)e * 2 * inter + f];
          u *= wsc[(size_t)e * 2 * inter + inter + f];
        }
        H[(size_t)p * inter + f] = g / (1.f + expf(-g)) * u;
      }
    }
  }
}

// moe_down_dec: out[t, r] (+)= Σ_j w[t,j] · down_{idx[t,j]}[r]·H[t·k+j] for
// row t = blockIdx.y and the R output features r of block blockIdx.x. The
// block's 8 warps split the k slots (warp w takes j = w, w + 8, …: one
// expert's R rows each, so a layer's experts stream in parallel rather
// than one after another), then thread r sums the warps' partials in
// order (deterministic, no atomics). Grid (ceil(hidden / R), n), 256
// threads.
template <typename T, int R, int U>
__device__ void moe_down_dec(const T* __restrict__ D, const float* __restrict__ dsc, const float* __restrict__ H,
                             const int* __restrict__ idx, const float* __restrict__ w, float* __restrict__ out, int k,
                             int first, int cnt, int hidden, int inter, int accumulate, const FP8Scales& fq, int cshift) {
  constexpr int EL = V16<T>::N;
  constexpr bool FP8 = MoEIsFP8<T>::v;
  constexpr int W = 8;  // warps per block
  __shared__ float wsum[W][R];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int t = blockIdx.y;
  const int r0 = blockIdx.x * R;
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; r++) acc[r] = 0.f;
  for (int j = warp; j < k; j += W) {
    const int p = t * k + j;
    const int e = idx[p] - first;
    if (e < 0 || e >= cnt) continue;
    const float wj = w[p];
    const T* De = D + (size_t)e * hidden * inter;
    const float* hr = H + (size_t)p * inter;
    float part[R][1];
#pragma unroll
    for (int r = 0; r < R; r++) part[r][0] = 0.f;
    if (inter % EL == 0 && (!FP8 || cshift >= 0)) {
      const uint4* wp[R];
      const float* sp[R];  // fp8: the rows' block scales
#pragma unroll
      for (int r = 0; r < R; r++) {
        const int wr = min(r0 + r, hidden - 1);
        wp[r] = reinterpret_cast<const uint4*>(De + (size_t)wr * inter);
        if (FP8) sp[r] = fp8_srow(fq, e * hidden + wr);
      }
      gemv_chunks<T, FP8, R, 1, U>(wp, sp, cshift, hr, 0, 1, inter / EL, part);
    } else {
      for (int c = lane; c < inter; c += 32) {
        float hv = hr[c];
#pragma unroll
        for (int r = 0; r < R; r++) {
          const int wr = min(r0 + r, hidden - 1);
          part[r][0] = fmaf(moe_w(De, (size_t)wr * inter + c, fq, e * hidden + wr, c), hv, part[r][0]);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
      float s = dsc ? wj * dsc[(size_t)e * hidden + min(r0 + r, hidden - 1)] : wj;
      acc[r] = fmaf(s, part[r][0], acc[r]);
    }
  }
#pragma unroll
  for (int r = 0; r < R; r++) acc[r] = warp_sum(acc[r]);
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < R; r++) wsum[warp][r] = acc[r];
  }
  __syncthreads();
  if (threadIdx.x < R) {
    const int row = r0 + threadIdx.x;
    if (row < hidden) {
      float v = 0.f;
#pragma unroll
      for (int q = 0; q < W; q++) v += wsum[q][threadIdx.x];
      float* o = out + (size_t)t * hidden + row;
      *o = accumulate ? *o + v : v;
    }
  }
}

// Output features per block of moe_down_dec (moe.go: moeDownR).
#define MOE_DOWN_R 4

// Every expert kernel takes fq (fp8's block scales; unused, zero, for the
// other dtypes) so that moe.go launches every dtype alike.
#define MOE_DEC(SUF, T)                                                                                              \
  extern "C" __global__ void __launch_bounds__(256) moe_gateup_dec_##SUF(                                          \
      const T* W, const float* wsc, const float* x, const int* idx, float* H, int k, int first, int cnt, int hidden, \
      int inter, FP8Scales fq, int cshift) { PDL_ENTRY();                                                                         \
    moe_gateup_dec<T, 2, 2>(W, wsc, x, idx, H, k, first, cnt, hidden, inter, fq, cshift);                            \
  }                                                                                                                  \
  extern "C" __global__ void __launch_bounds__(256) moe_down_dec_##SUF(                                            \
      const T* D, const float* dsc, const float* H, const int* idx, const float* w, float* out, int k, int first,    \
      int cnt, int hidden, int inter, int accumulate, FP8Scales fq, int cshift) { PDL_ENTRY();                                    \
    moe_down_dec<T, MOE_DOWN_R, 2>(D, dsc, H, idx, w, out, k, first, cnt, hidden, inter, accumulate, fq, cshift);             \
  }
MOE_DEC(f32, float)
MOE_DEC(f16, __half)
MOE_DEC(bf16, __nv_bfloat16)
MOE_DEC(i8, int8_t)
MOE_DEC(fp8, fp8_e4m3)

// ---------------------------------------------------------------- grouped (n > 8 rows)

// moe_sort: a stable counting sort of the n·k pairs by held expert (cnt ≤
// MOE_MAX_HELD: up to 256 routed and 32 shared experts), in one block of
// 1024 threads (32 warps; warp w owns experts w, w+32, …). A warp
// counts its experts' pairs with ballots, thread 0 scans the counts into
// offs[cnt+1] and the tile starts tstart[cnt+1] (tiles of TM pairs per
// expert), then the warps place each pair at its rank: list[offs[e] + i] is
// the i-th pair (in pair order) routed to expert first+e.
extern "C" __global__ void __launch_bounds__(1024) moe_sort(int* __restrict__ list, int* __restrict__ offs,
                                                            int* __restrict__ tstart, const int* __restrict__ idx,
                                                            int P, int first, int cnt, int TM) { PDL_ENTRY();
  __shared__ int s_cnt[MOE_MAX_HELD];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int e = warp; e < cnt; e += 32) {
    int c = 0;
    for (int p0 = 0; p0 < P; p0 += 32) {
      int p = p0 + lane;
      c += __popc(__ballot_sync(0xffffffffu, p < P && idx[p] - first == e));
    }
    if (lane == 0) s_cnt[e] = c;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int o = 0, tl = 0;
    for (int e = 0; e < cnt; e++) {
      int c = s_cnt[e];
      offs[e] = o;
      tstart[e] = tl;
      s_cnt[e] = o;
      o += c;
      tl += (c + TM - 1) / TM;
    }
    offs[cnt] = o;
    tstart[cnt] = tl;
  }
  __syncthreads();
  const unsigned lt = (1u << lane) - 1u;
  for (int e = warp; e < cnt; e += 32) {
    int base = s_cnt[e];
    for (int p0 = 0; p0 < P; p0 += 32) {
      int p = p0 + lane;
      bool hit = p < P && idx[p] - first == e;
      unsigned m = __ballot_sync(0xffffffffu, hit);
      if (hit) list[base + __popc(m & lt)] = p;
      base += __popc(m);
    }
  }
}

// moe_tile finds the expert e of tile blockIdx.y and puts its up to 64
// sorted pairs in s_p (-1 past the tile's end; the block syncs); false when
// the tile is past the last one (the grid is an upper bound: the whole
// block returns).
DEVI bool moe_tile(int* s_p, const int* list, const int* offs, const int* tstart, int cnt, int& e) {
  constexpr int TM = 64;
  const int tile = blockIdx.y;
  if (tile >= tstart[cnt]) return false;
  int lo = 0, hi = cnt - 1;  // the last expert whose first tile is ≤ tile
  while (lo < hi) {
    int mid = (lo + hi + 1) >> 1;
    if (tstart[mid] <= tile) lo = mid; else hi = mid - 1;
  }
  e = lo;
  const int m0 = offs[e] + (tile - tstart[e]) * TM;
  const int mn = min(TM, offs[e + 1] - m0);
  if (threadIdx.x < TM) s_p[threadIdx.x] = threadIdx.x < mn ? __ldg(list + m0 + threadIdx.x) : -1;
  __syncthreads();
  return true;
}

// moe_tiles16 runs fma_tile16 (kernels.cu) over K in tiles of 16 staged in
// xs and ws: for tile row rr < 64 and k = k0 + kk, xs[kk][rr] = xv(rr, k)
// and ws[kk][rr] = wv(rr, k) (each zero past K or past its rows). The
// loaders read through __ldg where the kernels' __restrict__ pointers did
// (a lambda's captures are not __restrict__).
template <class XV, class WV, class Col>
DEVI void moe_tiles16(float (*xs)[64 + 4], float (*ws)[64 + 4], int K, XV xv, WV wv, Col col, float (&acc)[4][4]) {
  const int tid = threadIdx.x;
  for (int k0 = 0; k0 < K; k0 += 16) {
    for (int i = tid; i < 64 * 16; i += 256) {
      int rr = i / 16, kk = i % 16;
      int k = k0 + kk;
      xs[kk][rr] = xv(rr, k);
      ws[kk][rr] = wv(rr, k);
    }
    __syncthreads();
    fma_tile16(xs, ws, col, acc);
    __syncthreads();
  }
}

// moe_gateup_grp: a tile of up to 64 pairs of one expert × 32 features,
// both the gate and the up rows of those features (64 weight rows), K
// tiles of 16 through shared memory, 4 pairs × (2 gate + 2 up) per thread,
// float32 FMA; SwiGLU in the epilogue writes H[p, f]. Grid (ceil(inter/32),
// tiles), 256 threads.
template <typename T>
__device__ void moe_gateup_grp(const T* __restrict__ W, const float* __restrict__ wsc, const float* __restrict__ x,
                               const int* __restrict__ list, const int* __restrict__ offs, const int* __restrict__ tstart,
                               float* __restrict__ H, int k, int cnt, int hidden, int inter, const FP8Scales& fq) {
  __shared__ float xs[16][64 + 4];
  __shared__ float ws[16][64 + 4];
  __shared__ int s_p[64];
  int e;
  if (!moe_tile(s_p, list, offs, tstart, cnt, e)) return;
  const int tid = threadIdx.x, tr = tid / 16, tc = tid % 16;
  const int f0 = blockIdx.x * 32;
  const T* We = W + (size_t)e * 2 * inter * hidden;
  float acc[4][4] = {};
  moe_tiles16(
      xs, ws, hidden,
      [&](int rr, int c) {
        int p = s_p[rr];
        return (p >= 0 && c < hidden) ? __ldg(x + (size_t)(p / k) * hidden + c) : 0.f;
      },
      [&](int rr, int c) {
        int f = f0 + (rr & 31), wr = (rr >> 5) * inter + f;
        return (f < inter && c < hidden) ? moe_w(We, (size_t)wr * hidden + c, fq, e * 2 * inter + wr, c) : 0.f;
      },
      // Columns gate f, f+1, up f, f+1 for f = f0 + 2·tc.
      [=](int j) { return (j >> 1) * 32 + 2 * tc + (j & 1); }, acc);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    int p = s_p[tr * 4 + i];
    if (p < 0) continue;
#pragma unroll
    for (int q = 0; q < 2; q++) {
      int f = f0 + 2 * tc + q;
      if (f >= inter) continue;
      float g = acc[i][q], u = acc[i][2 + q];
      if (wsc) {
        g *= wsc[(size_t)e * 2 * inter + f];
        u *= wsc[(size_t)e * 2 * inter + inter + f];
      }
      H[(size_t)p * inter + f] = g / (1.f + expf(-g)) * u;
    }
  }
}

// moe_down_grp: Y[p, r] = down_e[r]·H[p] for a tile of up to 64 pairs of
// one expert × 64 output features, as gemm_tiled. Grid (ceil(hidden/64),
// tiles), 256 threads.
template <typename T>
__device__ void moe_down_grp(const T* __restrict__ D, const float* __restrict__ dsc, const float* __restrict__ H,
                             const int* __restrict__ list, const int* __restrict__ offs, const int* __restrict__ tstart,
                             float* __restrict__ Y, int cnt, int hidden, int inter, const FP8Scales& fq) {
  __shared__ float hs[16][64 + 4];
  __shared__ float ws[16][64 + 4];
  __shared__ int s_p[64];
  int e;
  if (!moe_tile(s_p, list, offs, tstart, cnt, e)) return;
  const int tid = threadIdx.x, tr = tid / 16, tc = tid % 16;
  const int r0 = blockIdx.x * 64;
  const T* De = D + (size_t)e * hidden * inter;
  float acc[4][4] = {};
  moe_tiles16(
      hs, ws, inter,
      [&](int rr, int c) {
        int p = s_p[rr];
        return (p >= 0 && c < inter) ? __ldg(H + (size_t)p * inter + c) : 0.f;
      },
      [&](int rr, int c) {
        int r = r0 + rr;
        return (r < hidden && c < inter) ? moe_w(De, (size_t)r * inter + c, fq, e * hidden + r, c) : 0.f;
      },
      [=](int j) { return tc * 4 + j; }, acc);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    int p = s_p[tr * 4 + i];
    if (p < 0) continue;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      int r = r0 + tc * 4 + j;
      if (r < hidden) Y[(size_t)p * hidden + r] = acc[i][j] * (dsc ? dsc[(size_t)e * hidden + r] : 1.f);
    }
  }
}

#define MOE_GRP(SUF, T)                                                                                             \
  extern "C" __global__ void __launch_bounds__(256) moe_gateup_grp_##SUF(                                         \
      const T* W, const float* wsc, const float* x, const int* list, const int* offs, const int* tstart, float* H, \
      int k, int cnt, int hidden, int inter, FP8Scales fq) { PDL_ENTRY();                                                        \
    moe_gateup_grp<T>(W, wsc, x, list, offs, tstart, H, k, cnt, hidden, inter, fq);                                 \
  }                                                                                                                 \
  extern "C" __global__ void __launch_bounds__(256) moe_down_grp_##SUF(                                           \
      const T* D, const float* dsc, const float* H, const int* list, const int* offs, const int* tstart, float* Y, \
      int cnt, int hidden, int inter, FP8Scales fq) { PDL_ENTRY();                                                               \
    moe_down_grp<T>(D, dsc, H, list, offs, tstart, Y, cnt, hidden, inter, fq);                                     \
  }
MOE_GRP(f32, float)
MOE_GRP(f16, __half)
MOE_GRP(bf16, __nv_bfloat16)
MOE_GRP(i8, int8_t)
MOE_GRP(fp8, fp8_e4m3)

// Tensor-core grouped GEMMs for 16-bit and fp8 weights (K a multiple of 8;
// fp8: block widths too): the tiles of moe_*_grp on WMMA 16×16×16 with
// float32 accumulation, as gemm_wmma: activations rounded to the weight
// dtype while they are staged in shared memory (f16 saturates as
// cvt_f32_f16 does); fp8 weights are dequantised on the way into shared
// memory (value × block scale, rounded to bf16, as gemm_wmma_fp8) and run
// as bf16 with bf16 activations. 64 pairs × 64
// weight rows per block, 4 warps of 32×32, K steps of 32. The whole C tile
// goes through shared memory so the epilogue sees each feature's gate and
// up (GU) or writes Y rows (down). Grid (ceil(inter/32) or ceil(hidden/64),
// tiles), 128 threads.
DEVI unsigned moe_u32(__nv_bfloat162 h) { return *reinterpret_cast<unsigned*>(&h); }
DEVI unsigned moe_u32(__half2 h) { return *reinterpret_cast<unsigned*>(&h); }
DEVI uint4 moe_pack8(__nv_bfloat16*, float4 a, float4 b) {
  return make_uint4(moe_u32(__floats2bfloat162_rn(a.x, a.y)), moe_u32(__floats2bfloat162_rn(a.z, a.w)),
                    moe_u32(__floats2bfloat162_rn(b.x, b.y)), moe_u32(__floats2bfloat162_rn(b.z, b.w)));
}
DEVI float moe_sat16(float v) { return fminf(fmaxf(v, -65504.f), 65504.f); }
DEVI uint4 moe_pack8(__half*, float4 a, float4 b) {
  return make_uint4(moe_u32(__floats2half2_rn(moe_sat16(a.x), moe_sat16(a.y))),
                    moe_u32(__floats2half2_rn(moe_sat16(a.z), moe_sat16(a.w))),
                    moe_u32(__floats2half2_rn(moe_sat16(b.x), moe_sat16(b.y))),
                    moe_u32(__floats2half2_rn(moe_sat16(b.z), moe_sat16(b.w))));
}

// The tensor-core type of a weight type: fp8 runs as bf16.
template <typename T> struct MoEMMA { using S = T; };
template <> struct MoEMMA<fp8_e4m3> { using S = __nv_bfloat16; };

// moe_ld8 loads 8 weights from W + i (stacked row `row`, columns c..c+7, in
// one fp8 block column) as 8 values of MoEMMA<T>::S.
template <typename T> DEVI uint4 moe_ld8(const T* W, size_t i, const FP8Scales&, int, int) {
  return *reinterpret_cast<const uint4*>(W + i);
}
DEVI uint4 moe_ld8(const fp8_e4m3* W, size_t i, const FP8Scales& fq, int row, int c) {
  const uint2 v = __ldg(reinterpret_cast<const uint2*>(W + i));
  const float s = fp8_srow(fq, row)[c / fq.bc];
  float f[8];
  const unsigned w[2] = {v.x, v.y};
#pragma unroll
  for (int j = 0; j < 2; j++) {
    float2 a = __half22float2(e4m3x2_h2((unsigned short)(w[j] & 0xffffu)));
    float2 b = __half22float2(e4m3x2_h2((unsigned short)(w[j] >> 16)));
    f[4 * j] = a.x * s; f[4 * j + 1] = a.y * s; f[4 * j + 2] = b.x * s; f[4 * j + 3] = b.y * s;
  }
  return moe_pack8((__nv_bfloat16*)nullptr, make_float4(f[0], f[1], f[2], f[3]), make_float4(f[4], f[5], f[6], f[7]));
}

template <typename T, bool GU>
__device__ void moe_grp_mma(const T* __restrict__ W, const float* __restrict__ A, const int* __restrict__ list,
                            const int* __restrict__ offs, const int* __restrict__ tstart, float* __restrict__ out, int k,
                            int cnt, int hidden, int inter, const FP8Scales& fq) {
  using namespace nvcuda;
  using S = typename MoEMMA<T>::S;
  constexpr int LD = WMMA_LD, LC = 64 + 4;
  __shared__ __align__(32) S As[64 * LD];
  __shared__ __align__(32) S Bs[64 * LD];
  __shared__ __align__(32) float Cs[64 * LC];
  __shared__ int s_p[64];
  int e;
  if (!moe_tile(s_p, list, offs, tstart, cnt, e)) return;
  const int tid = threadIdx.x, warp = tid >> 5;
  const int wm = warp >> 1, wn = warp & 1;
  const int K = GU ? hidden : inter;
  const int rows = GU ? 2 * inter : hidden;  // weight rows of one expert
  const int r0 = blockIdx.x * (GU ? 32 : 64);
  const T* We = W + (size_t)e * rows * K;
  WmmaAcc acc[2][2];
  wmma_mainloop(As, Bs, K, [&](int k0) {
    for (int c = tid; c < 64 * 4; c += 128) {  // 64 rows × 4 chunks of 8
      const int r = c >> 2, ch = (c & 3) * 8, kk = k0 + ch;
      uint4 a = make_uint4(0, 0, 0, 0), b = make_uint4(0, 0, 0, 0);
      const int p = s_p[r];
      if (p >= 0 && kk < K) {
        const float* src = A + (size_t)(GU ? p / k : p) * K + kk;
        a = moe_pack8((S*)nullptr, __ldg(reinterpret_cast<const float4*>(src)), __ldg(reinterpret_cast<const float4*>(src + 4)));
      }
      int wr;
      bool ok;
      if (GU) {
        const int f = r0 + (r & 31);
        ok = f < inter;
        wr = (r >> 5) * inter + f;
      } else {
        wr = r0 + r;
        ok = wr < hidden;
      }
      if (ok && kk < K) b = moe_ld8(We, (size_t)wr * K + kk, fq, e * rows + wr, kk);
      *reinterpret_cast<uint4*>(As + r * LD + ch) = a;
      *reinterpret_cast<uint4*>(Bs + r * LD + ch) = b;
    }
  }, acc);
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int j = 0; j < 2; j++)
      wmma::store_matrix_sync(Cs + (wm * 32 + i * 16) * LC + wn * 32 + j * 16, acc[i][j], LC, wmma::mem_row_major);
  __syncthreads();
  if (GU) {
    for (int o = tid; o < 64 * 32; o += 128) {
      const int pr = o >> 5, fq = o & 31, f = r0 + fq, p = s_p[pr];
      if (p < 0 || f >= inter) continue;
      const float g = Cs[pr * LC + fq], u = Cs[pr * LC + 32 + fq];
      out[(size_t)p * inter + f] = g / (1.f + expf(-g)) * u;
    }
  } else {
    for (int o = tid; o < 64 * 64; o += 128) {
      const int pr = o >> 6, c = o & 63, r = r0 + c, p = s_p[pr];
      if (p < 0 || r >= hidden) continue;
      out[(size_t)p * hidden + r] = Cs[pr * LC + c];
    }
  }
}

#define MOE_MMA(SUF, T)                                                                                           \
  extern "C" __global__ void __launch_bounds__(128) moe_gateup_mma_##SUF(                                       \
      const T* W, const float* x, const int* list, const int* offs, const int* tstart, float* H, int k, int cnt, \
      int hidden, int inter, FP8Scales fq) { PDL_ENTRY();                                                                    \
    moe_grp_mma<T, true>(W, x, list, offs, tstart, H, k, cnt, hidden, inter, fq);                               \
  }                                                                                                             \
  extern "C" __global__ void __launch_bounds__(128) moe_down_mma_##SUF(                                         \
      const T* D, const float* H, const int* list, const int* offs, const int* tstart, float* Y, int cnt,       \
      int hidden, int inter, FP8Scales fq) { PDL_ENTRY();                                                                    \
    moe_grp_mma<T, false>(D, H, list, offs, tstart, Y, 0, cnt, hidden, inter, fq);                              \
  }
MOE_MMA(bf16, __nv_bfloat16)
MOE_MMA(f16, __half)
MOE_MMA(fp8, fp8_e4m3)

// moe_rand_fp8: n random finite e4m3 codes (RandomExperts' fp8 experts:
// values up to ±448, NaN encodings moved to ±448).
extern "C" __global__ void moe_rand_fp8(uint8_t* out, long long n, unsigned int seed) { PDL_ENTRY();
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    unsigned b = (unsigned)((hash_uniform(i, seed) + 1.f) * 128.f) & 0xffu;
    out[i] = (uint8_t)((b & 0x7fu) == 0x7fu ? b - 1 : b);
  }
}

// moe_combine: out[t, c] (+)= Σ_j w[t,j]·Y[t·k+j, c] over the held experts,
// in slot order. Grid (ceil(hidden/256), n), 256 threads.
extern "C" __global__ void __launch_bounds__(256) moe_combine(float* __restrict__ out, const float* __restrict__ Y,
                                                              const int* __restrict__ idx, const float* __restrict__ w,
                                                              int k, int first, int cnt, int hidden, int accumulate) { PDL_ENTRY();
  const int t = blockIdx.y, c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= hidden) return;
  float acc = 0.f;
  for (int j = 0; j < k; j++) {
    const int p = t * k + j;
    const int e = idx[p] - first;
    if (e >= 0 && e < cnt) acc = fmaf(w[p], Y[(size_t)p * hidden + c], acc);
  }
  float* o = out + (size_t)t * hidden + c;
  *o = accumulate ? *o + acc : acc;
}
