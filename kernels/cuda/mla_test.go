//go:build linux && cgo

package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// TestMatMulHeadsParity: MatMulHeads against the CPU for every dtype, the
// V2/V3 absorbed shapes (W_UKᵀ 512×128, W_UV 128×512) and odd ones (the
// scalar path), with gaps between the heads' slices; n = 1 and 3 run the
// GEMV kernel, 9 its token chunks, 300 the per-head GEMMs (where the
// heads' weights are 256-byte aligned). y starts with the
// same random values on both sides, so an element written where it must
// not be, or not written where it must, differs.
func TestMatMulHeadsParity(t *testing.T) {
	r := newRig(t, Options{})
	shapes := []struct{ heads, rows, cols, xGap, yGap int }{
		{16, 512, 128, 64, 64}, // W_UKᵀ: q_nope of [nope|rope] heads into [latent|rope]
		{16, 128, 512, 0, 0},   // W_UV
		{3, 17, 33, 2, 1},      // odd: scalar loop
		{4, 64, 48, 4, 3},
	}
	for _, dt := range []kernels.DType{kernels.F32, kernels.F16, kernels.BF16, kernels.Int8} {
		for _, sh := range shapes {
			var hs, deq []kernels.HostMatrix
			for h := range sh.heads {
				src := dt
				if dt == kernels.Int8 {
					src = kernels.BF16
				}
				hs = append(hs, hostMatrix(fmt.Sprintf("w%d", h), randVec(r.rnd, sh.rows*sh.cols), sh.rows, sh.cols, src))
			}
			deq = hs
			if dt == kernels.Int8 { // the CPU runs the dequantised values in f32
				deq = int8Reference(t, hs)
			}
			gw, err := r.g.UploadMatrix(hs, dt == kernels.Int8)
			require.NoError(t, err)
			require.Equal(t, dt, gw.DType())
			cw, err := r.c.UploadMatrix(deq, false)
			require.NoError(t, err)
			for _, n := range []int{1, 3, 9, 300} {
				xHead, yHead := sh.cols+sh.xGap, sh.rows+sh.yGap
				xRow, yRow := sh.heads*xHead, sh.heads*yHead
				x, y := r.rand(n*xRow), r.rand(n*yRow)
				r.g.MatMulHeads(y.g, yRow, yHead, x.g, xRow, xHead, n, gw)
				r.c.MatMulHeads(y.c, yRow, yHead, x.c, xRow, xHead, n, cw)
				tol := tolF32
				if n > headsGEMV && (dt == kernels.F16 || dt == kernels.BF16) {
					tol = tol16 // tensor-core GEMMs on activations rounded to 16 bits
				}
				r.check(fmt.Sprintf("%v %d×%d×%d n=%d", dt, sh.heads, sh.rows, sh.cols, n), y, y.n, tol)
			}
		}
	}
}

// TestMLAPackParity: MLAPack against the CPU for the V2-Lite and V3
// shapes and odd ones, 1 and 7 rows. q_abs starts with the same random
// values on both sides, so a latent part written where it must not be
// differs.
func TestMLAPackParity(t *testing.T) {
	r := newRig(t, Options{})
	for _, s := range []kernels.MLAPackShape{
		{Heads: 16, Nope: 128, Rope: 64, Lora: 512, Eps: 1e-6},
		{Heads: 128, Nope: 128, Rope: 64, Lora: 512, Eps: 1e-6},
		{Heads: 3, Nope: 5, Rope: 6, Lora: 37, Eps: 1e-5},
	} {
		kd := s.Lora + s.Rope
		for _, n := range []int{1, 7} {
			q, lat, kr, w := r.rand(n*s.Heads*(s.Nope+s.Rope)), r.rand(n*s.Lora), r.rand(n*s.Rope), r.rand(s.Lora)
			k, qabs := r.poisoned(n*kd), r.rand(n*s.Heads*kd)
			r.g.MLAPack(k.g, qabs.g, q.g, lat.g, kr.g, w.g, n, s)
			r.c.MLAPack(k.c, qabs.c, q.c, lat.c, kr.c, w.c, n, s)
			name := fmt.Sprintf("%+v n=%d", s, n)
			r.check(name+" k", k, k.n, tolF32)
			r.check(name+" q_abs", qabs, qabs.n, 0)
		}
	}
	// A short buffer is an error at the next sync, not a fault.
	s := kernels.MLAPackShape{Heads: 2, Nope: 4, Rope: 4, Lora: 8, Eps: 1e-6}
	b := r.rand(4)
	r.g.MLAPack(b.g, b.g, b.g, b.g, b.g, b.g, 1, s)
	require.ErrorContains(t, r.g.Sync(), "MLAPack")
}

// mlaShapes are the attention shapes of the MLA kernel tests: V2-Lite
// (16 heads), V3 (128 heads: 8 head groups), a partial second head group
// and small odd shapes (kd not a multiple of 8: the scalar tile loads of
// f16 caches; vd not a multiple of 8). With f16 caches the V2, V3 and
// small-tc shapes run on the tensor-core kernel, the others on the float32
// one.
var mlaShapes = []struct {
	name          string
	heads, kd, vd int
}{
	{"v2", 16, 576, 512},
	{"v3", 128, 576, 512},
	{"20heads", 20, 24, 16},
	{"odd", 5, 44, 33},
	{"small-tc", 20, 80, 64}, // f16: the tensor-core kernel, two head groups
}

// mlaVariants are the MLA kernels under test: f32 caches on the float32
// kernel, f16 caches on the tensor-core kernels where the shape fits them
// (prompt chunks on the prefill kernel), on the float32 kernel (core) and
// on the per-row tensor-core kernel for prompt chunks too (perRow).
var mlaVariants = []mlaVariant{{kernels.F32, false, false}, {kernels.F16, false, false}, {kernels.F16, true, false}, {kernels.F16, false, true}}

// mlaVariant is an MLA kernel choice: the cache dtype, and whether f16
// caches run on the float32 kernel (core) or prompt chunks on the per-row
// kernel (perRow).
type mlaVariant struct {
	dt           kernels.DType
	core, perRow bool
}

// rig is a rig whose GPU runs the variant's kernels, and the variant's
// tolerance.
func (vr mlaVariant) rig(t *testing.T) (*rig, float64) {
	r := newRig(t, Options{KVDType: vr.dt})
	r.g.mla.core, r.g.mla.perRow = vr.core, vr.perRow
	return r, kvTol(vr.dt)
}

// TestMLAAttentionParity: Attention on absorbed MLA caches (the MLA
// kernels) against the CPU: a prompt in chunks of 16 rows, decode steps,
// then a second prompt chunk, so later rows read many splits.
func TestMLAAttentionParity(t *testing.T) {
	for _, vr := range mlaVariants {
		dt := vr.dt
		r, tol := vr.rig(t)
		for _, sh := range mlaShapes {
			steps := []int{300, 1, 1, 37, 1}
			if sh.heads > 64 {
				steps = []int{70, 1, 1, 9, 1} // the CPU reference is slow at 128 heads
			}
			total := 0
			for _, s := range steps {
				total += s
			}
			spec := kernels.KVSpec{Layers: 2, MaxTokens: total + 3, KVHeads: 1, KDim: sh.kd, VDim: sh.vd, VInK: true}
			require.True(t, r.g.useMLA(true, 1, sh.kd, sh.vd, dt), sh.name)
			gc, cc := r.kvPair(spec)
			scale := float32(1 / math.Sqrt(float64(sh.kd)))
			pos := 0
			for si, n := range steps {
				layer := si % 2
				q, k := r.rand(n*sh.heads*sh.kd), r.rand(n*sh.kd)
				out := r.poisoned(n * sh.heads * sh.vd)
				r.g.Attention(out.g, q.g, k.g, nil, gc, layer, pos, n, sh.heads, scale)
				r.c.Attention(out.c, q.c, k.c, nil, cc, layer, pos, n, sh.heads, scale)
				r.check(fmt.Sprintf("%v core=%v perRow=%v %s step %d n=%d pos=%d", dt, vr.core, vr.perRow, sh.name, si, n, pos), out, out.n, tol)
				pos += n
			}
		}
	}
}

// TestMLACapturedStep: a decode step of MLA attention captured as a graph
// (splits over the whole cache, the position read on the device) replayed
// at later positions, against the CPU.
func TestMLACapturedStep(t *testing.T) {
	for _, vr := range mlaVariants {
		dt := vr.dt
		r, tol := vr.rig(t)
		const heads, kd, vd, prompt, maxTok = 16, 576, 512, 40, 600
		spec := kernels.KVSpec{Layers: 1, MaxTokens: maxTok, KVHeads: 1, KDim: kd, VDim: vd, VInK: true}
		gc, cc := r.kvPair(spec)
		q, k := r.rand(prompt*heads*kd), r.rand(prompt*kd)
		out := r.poisoned(prompt * heads * vd)
		r.g.Attention(out.g, q.g, k.g, nil, gc, 0, 0, prompt, heads, 0.05)
		r.c.Attention(out.c, q.c, k.c, nil, cc, 0, 0, prompt, heads, 0.05)
		r.check(fmt.Sprintf("%v core=%v perRow=%v prompt", dt, vr.core, vr.perRow), out, prompt*heads*vd, tol)
		q1, k1, o1 := r.rand(heads*kd), r.rand(kd), r.poisoned(heads*vd)
		var sg *StepGraph
		for pos := prompt; pos < maxTok; pos += 1 + pos/8 { // jumps: positions between hold zeros on both sides
			qv, kv := randVec(r.rnd, heads*kd), randVec(r.rnd, kd)
			require.NoError(t, r.g.Upload(q1.g, 0, qv))
			require.NoError(t, r.g.Upload(k1.g, 0, kv))
			require.NoError(t, r.c.Upload(q1.c, 0, qv))
			require.NoError(t, r.c.Upload(k1.c, 0, kv))
			if sg == nil {
				var err error
				sg, err = r.g.CaptureStep(0, pos, maxTok, func(be kernels.Backend) error {
					be.Attention(o1.g, q1.g, k1.g, nil, gc, 0, pos, 1, heads, 0.05)
					return nil
				})
				require.NoError(t, err)
				defer sg.Close()
			} else {
				require.NoError(t, sg.Replay(0, pos))
			}
			r.c.Attention(o1.c, q1.c, k1.c, nil, cc, 0, pos, 1, heads, 0.05)
			r.check(fmt.Sprintf("%v captured pos %d", dt, pos), o1, heads*vd, tol)
		}
	}
}

// TestMLAPagedParity: PagedAttention on absorbed MLA caches against the
// CPU: batches mixing a prompt chunk with decode rows of sequences at
// different positions, shuffled blocks, one sequence growing past many
// splits.
func TestMLAPagedParity(t *testing.T) {
	steps := [][]int{{37, 5, 0, 1}, {1, 40, 150, 1}, {1, 1, 1, 1}, {200, 1, 1, 0}, {1, 1, 1, 1}}
	for _, vr := range mlaVariants {
		dt := vr.dt
		for _, sh := range mlaShapes {
			t.Run(fmt.Sprintf("%v/core=%v/perRow=%v/%s", dt, vr.core, vr.perRow, sh.name), func(t *testing.T) {
				r, tol := vr.rig(t)
				ps := r.pagedSeqs(kernels.PagedKVSpec{Layers: 2, Blocks: 40, BlockTokens: 16, KVHeads: 1, KDim: sh.kd, VDim: sh.vd, VInK: true}, len(steps[0]))
				for si, step := range steps {
					if sh.heads > 64 && si >= 3 {
						break // the CPU reference is slow at 128 heads
					}
					bt := ps.batch(step)
					ps.attend(fmt.Sprintf("step %d (%d rows, longest %d)", si, bt.Rows(), ps.lens[0]), bt, sh.heads, 0.07, tol, false, false)
				}
			})
		}
	}
}

// TestMLASplits pins the split arithmetic the partials are sized by: every
// split holds keys, splits cover the context, and rows·splits stays under
// mlaPartials' bound (per-row launches) and mlaPrefillPartials' (prefill
// launches of row tiles).
func TestMLASplits(t *testing.T) {
	b := &Backend{info: DeviceInfo{SMs: 132}}
	for _, heads := range []int{1, 16, 20, 128} {
		groups := (heads + mlaHB - 1) / mlaHB
		for _, maxT := range []int{1, 63, 64, 65, 1000, 4096, 33000, 163840} {
			check := func(ns, L int) {
				require.GreaterOrEqual(t, L, mlaMinKeys)
				require.Zero(t, L%mlaTCBN)
				require.GreaterOrEqual(t, ns*L, maxT)
				require.Less(t, (ns-1)*L, maxT, "an empty split")
			}
			for _, rows := range []int{1, 3, 16} {
				ns, L := b.mlaSplits(maxT, rows*groups, 2*132)
				check(ns, L)
				require.LessOrEqual(t, int64(rows*ns*heads*(512+2)), b.mlaPartials(rows, heads, 512),
					"heads %d rows %d maxT %d: %d splits", heads, rows, maxT, ns)
			}
			for _, chunk := range []int{64, mlaPrefillRows, 256} {
				for _, rows := range []int{2, 3, 4, 5, 17, chunk - 1, chunk} {
					tiles := (rows + mlaTR - 1) / mlaTR
					ns, L := b.mlaPrefillSplits(maxT, tiles*groups)
					require.LessOrEqual(t, ns*tiles*groups, max(132, tiles*groups), "one wave")
					check(ns, L)
					require.LessOrEqual(t, int64(rows*ns*heads*(512+2)), b.mlaPrefillPartials(chunk, heads, 512),
						"prefill: heads %d rows %d chunk %d maxT %d: %d splits", heads, rows, chunk, maxT, ns)
				}
			}
		}
	}
}

// TestMLARowTiles: the paged prefill kernel's row tiles are runs of one
// sequence at consecutive positions, at most mlaTR rows, covering the
// batch in order.
func TestMLARowTiles(t *testing.T) {
	for _, c := range []struct {
		name     string
		pos, seq []int32
		tiles    []int32
		multi    bool
	}{
		{"decode", []int32{7, 3, 9}, []int32{0, 1, 2}, []int32{1, 8 + 1, 16 + 1}, false},
		{"chunk of 6", []int32{10, 11, 12, 13, 14, 15}, []int32{2, 2, 2, 2, 2, 2}, []int32{4, 32 + 2}, true},
		{"two chunks and decode", []int32{0, 1, 2, 0, 1, 40}, []int32{0, 0, 0, 1, 1, 2}, []int32{3, 24 + 2, 40 + 1}, true},
		{"gap in positions", []int32{0, 1, 3, 4}, []int32{0, 0, 0, 0}, []int32{2, 16 + 2}, true},
		{"empty", nil, nil, nil, false},
	} {
		tiles, multi := mlaRowTiles(c.pos, c.seq)
		require.Equal(t, c.tiles, tiles, c.name)
		require.Equal(t, c.multi, multi, c.name)
	}
}

// mlaPrefillVariants are the kernels TestMLAPrefillParity runs: f16 caches
// on the prefill kernel and on the per-row tensor-core kernel it replaces,
// f32 caches on the float32 kernel.
var mlaPrefillVariants = []struct {
	name string
	mlaVariant
}{{"f16/prefill", mlaVariant{dt: kernels.F16}}, {"f16/per-row", mlaVariant{dt: kernels.F16, perRow: true}}, {"f32", mlaVariant{dt: kernels.F32}}}

// TestMLAPrefillParity: prompt chunks of n rows of one sequence through
// Attention on absorbed MLA caches against the CPU, at pos0 = 0 and after
// cached context (a filler chunk between: pos0 = n + fill, not a multiple
// of the row tile or the key tile), for 16 and 128 heads (kd 576, vd 512)
// and a small shape with a partial second head group and 2 value n tiles.
// n = 1 runs the per-row kernel; n = 3 and 17 leave the last row tile
// partial; 300 spans several launches of the prefill kernel.
func TestMLAPrefillParity(t *testing.T) {
	shapes := []struct {
		name          string
		heads, kd, vd int
		fill          int
	}{
		{"v2", 16, 576, 512, 200},
		{"v3", 128, 576, 512, 70},
		{"small-tc", 20, 80, 64, 200},
	}
	for _, vr := range mlaPrefillVariants {
		for _, sh := range shapes {
			for _, n := range []int{1, 3, 8, 17, 300} {
				if sh.heads > 64 && n > 17 && vr.name != "f16/prefill" {
					continue // the CPU reference is slow at 128 heads: the long chunk on the new kernel only
				}
				t.Run(fmt.Sprintf("%s/%s/n=%d", vr.name, sh.name, n), func(t *testing.T) {
					r, tol := vr.rig(t)
					require.True(t, r.g.useMLA(true, 1, sh.kd, sh.vd, vr.dt))
					if vr.dt == kernels.F16 && !vr.perRow {
						require.Equal(t, n > 1, r.g.mlaPrefill(n, sh.kd, sh.vd, vr.dt), "the prefill kernel runs n > 1 rows")
					}
					spec := kernels.KVSpec{Layers: 1, MaxTokens: 2*n + sh.fill + 5, KVHeads: 1, KDim: sh.kd, VDim: sh.vd, VInK: true}
					gc, cc := r.kvPair(spec)
					scale := float32(1 / math.Sqrt(float64(sh.kd)))
					pos := 0
					chunks := []int{n, sh.fill, n}
					if sh.heads > 64 && n > 17 {
						chunks = chunks[:2] // the CPU reference is slow at 128 heads: pos0 > 0 by the filler chunk
					}
					for _, rows := range chunks {
						q, k := r.rand(rows*sh.heads*sh.kd), r.rand(rows*sh.kd)
						out := r.poisoned(rows * sh.heads * sh.vd)
						r.g.Attention(out.g, q.g, k.g, nil, gc, 0, pos, rows, sh.heads, scale)
						r.c.Attention(out.c, q.c, k.c, nil, cc, 0, pos, rows, sh.heads, scale)
						r.check(fmt.Sprintf("rows %d at pos0 %d", rows, pos), out, out.n, tol)
						pos += rows
					}
				})
			}
		}
	}
}

// timeOps reports the device time of one call of run (reps calls a timing)
// as us/op.
func timeOps(b *testing.B, g *Backend, run func()) float64 {
	b.Helper()
	run()
	require.NoError(b, g.Sync())
	const reps = 20
	var total float64
	for range b.N {
		ms, err := g.Time(func() {
			for range reps {
				run()
			}
		})
		require.NoError(b, err)
		total += ms
	}
	us := total * 1000 / float64(b.N*reps)
	b.ReportMetric(us, "us/op")
	return us
}

// fillKV stores n random keys at positions 0.. of layer 0 of a contiguous
// cache with Attention's store kernel alone.
func fillKV(b *testing.B, g *Backend, c *KVCache, n int) {
	kw := c.spec.KVHeads * c.spec.KDim
	kb, err := g.Alloc(n * kw)
	require.NoError(b, err)
	require.NoError(b, g.RandomBuffer(kb, 1, 0, 1))
	g.mu.Lock()
	g.launch("kv_store_"+dtypeNames[c.dt], dim3{blocks(int64(n)*int64(kw), 256), 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
		a.ptr(c.k).ptr(0).ptr(g.dev(kb).p).ptr(0).i32(n).i32(0).ptr(g.dp).i32(kw).i32(0)
	})
	g.mu.Unlock()
	require.NoError(b, g.Sync())
}

// splitAttention is what Attention ran on MLA caches before the MLA
// kernel: the generic split-KV kernel for one query row at pos (keys
// stored), 128 keys a split.
func splitAttention(g *Backend, c *KVCache, ob, qb *Buffer, pos, heads int, scale float32) {
	kd, vd := c.spec.KDim, c.spec.VDim
	L := splitKeys
	ns := (pos + L) / L
	smem := heads*(kd+L)*4 + 128*8*4
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.growPartials(&c.kvMem, int64(heads)*int64(ns)*int64(vd+2)) {
		return
	}
	g.launch("attn_split_"+dtypeNames[c.dt], dim3{ns, 1, 1}, dim3{128, 1, 1}, smem, func(a *args) {
		a.ptr(c.part).ptr(qb.p).ptr(c.k).ptr(c.k).i32(1).i32(pos).ptr(g.dp).i32(heads).i32(1).i32(kd).i32(vd).
			i32(kd).i32(kd).f32(scale).i32(L).i32(ns).i32(kd)
	})
	g.launch("attn_combine", dim3{heads, 1, 1}, dim3{128, 1, 1}, 0, func(a *args) {
		a.ptr(ob.p).ptr(c.part).i32(heads).i32(vd).i32(ns)
	})
}

// BenchmarkMLADecode: one decode row of MLA attention (kd 576, vd 512, f16
// cache) over ctx cached positions, on the tensor-core MLA kernel (tc), the
// float32 one (core) and, for 16 heads, the generic split-KV kernel they
// replace. GB/s counts the cache bytes once.
func BenchmarkMLADecode(b *testing.B) {
	const kd, vd = 576, 512
	for _, heads := range []int{16, 128} {
		for _, ctx := range []int{1024, 4096, 16384} {
			for _, path := range []string{"tc", "core", "split"} {
				if path == "split" && heads > 64 {
					continue // the generic kernel takes groups of at most 64
				}
				b.Run(fmt.Sprintf("heads=%d/ctx=%d/%s", heads, ctx, path), func(b *testing.B) {
					g := newGPU(b, Options{KVDType: kernels.F16})
					g.mla.core = path == "core"
					kv, err := g.NewKVCache(kernels.KVSpec{Layers: 1, MaxTokens: ctx, KVHeads: 1, KDim: kd, VDim: vd, VInK: true})
					require.NoError(b, err)
					c := kv.(*KVCache)
					fillKV(b, g, c, ctx)
					q, err := g.Alloc(heads * kd)
					require.NoError(b, err)
					require.NoError(b, g.RandomBuffer(q, 2, 0, 1))
					out, err := g.Alloc(heads * vd)
					require.NoError(b, err)
					us := timeOps(b, g, func() {
						if path != "split" {
							g.AttentionNoStore(out, q, c, 0, ctx-1, 1, heads, 0.04)
						} else {
							splitAttention(g, c, g.dev(out), g.dev(q), ctx-1, heads, 0.04)
						}
					})
					b.ReportMetric(float64(ctx*kd*2)/(us*1e3), "GB/s")
				})
			}
		}
	}
}

// TestMLAPrefillMatchesPerRow: the prefill kernel against the per-row
// tensor-core kernel on the same GPU and inputs, row by row: both round q
// and P to f16 on the same tiles and splits, so they differ by float32
// summation order and the f16 rounding of P that follows from it, far
// below the CPU parity bound; a mask or partial off by a row or a key is
// not.
func TestMLAPrefillMatchesPerRow(t *testing.T) {
	for _, sh := range []struct {
		name          string
		heads, kd, vd int
	}{{"v2", 16, 576, 512}, {"v3", 128, 576, 512}, {"small-tc", 20, 80, 64}} {
		for _, n := range []int{2, 3, 17, 300} {
			t.Run(fmt.Sprintf("%s/n=%d", sh.name, n), func(t *testing.T) {
				g := newGPU(t, Options{KVDType: kernels.F16})
				rnd := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
				spec := kernels.KVSpec{Layers: 1, MaxTokens: 2*n + 133, KVHeads: 1, KDim: sh.kd, VDim: sh.vd, VInK: true}
				var caches [2]kernels.KVCache
				for i := range caches {
					c, err := g.NewKVCache(spec)
					require.NoError(t, err)
					caches[i] = c
				}
				upload := func(v []float32) kernels.Buffer {
					buf, err := g.Alloc(len(v))
					require.NoError(t, err)
					require.NoError(t, g.Upload(buf, 0, v))
					return buf
				}
				pos := 0
				for _, rows := range []int{n, 133, n} { // pos0 0, n, n+133
					q, k := upload(randVec(rnd, rows*sh.heads*sh.kd)), upload(randVec(rnd, rows*sh.kd))
					w := rows * sh.heads * sh.vd
					var outs [2][]float32
					for i, perRow := range []bool{false, true} {
						g.mla.perRow = perRow
						out := upload(make([]float32, w))
						g.Attention(out, q, k, nil, caches[i], 0, pos, rows, sh.heads, 0.04)
						outs[i] = make([]float32, w)
						require.NoError(t, g.Download(outs[i], out, 0))
					}
					rw := sh.heads * sh.vd
					worst := 0.0
					for r := range rows {
						e := relErr(outs[0][r*rw:(r+1)*rw], outs[1][r*rw:(r+1)*rw])
						require.LessOrEqual(t, e, 2e-3, "rows %d at pos0 %d: row %d", rows, pos, r)
						worst = max(worst, e)
					}
					t.Logf("rows %d at pos0 %d: worst row rel err %.2e", rows, pos, worst)
					pos += rows
				}
			})
		}
	}
}

// BenchmarkMLAPrefill: a prompt chunk of n rows of one sequence at pos0
// (keys stored: AttentionNoStore) on an f16 MLA cache (kd 576, vd 512):
// the prefill kernel at 64, 128 (the default) and 256 rows a launch, the
// per-row tensor-core kernel (per-row) and the float32 one (core).
// TFLOP/s counts the causal products (Σ_i T_i · heads · (kd+vd) · 2).
func BenchmarkMLAPrefill(b *testing.B) {
	const kd, vd = 576, 512
	for _, heads := range []int{16, 128} {
		for _, c := range []struct{ n, pos0 int }{{2048, 0}, {512, 3584}} {
			for _, path := range []string{"prefill64", "prefill128", "prefill256", "per-row", "core"} {
				b.Run(fmt.Sprintf("heads=%d/n=%d/pos0=%d/%s", heads, c.n, c.pos0, path), func(b *testing.B) {
					g := newGPU(b, Options{KVDType: kernels.F16})
					g.mla.core = path == "core"
					g.mla.perRow = path == "per-row"
					g.mla.prefillRows = map[string]int{"prefill64": 64, "prefill128": 128, "prefill256": 256}[path]
					ctx := c.pos0 + c.n
					kv, err := g.NewKVCache(kernels.KVSpec{Layers: 1, MaxTokens: ctx, KVHeads: 1, KDim: kd, VDim: vd, VInK: true})
					require.NoError(b, err)
					kc := kv.(*KVCache)
					fillKV(b, g, kc, ctx)
					q, err := g.Alloc(c.n * heads * kd)
					require.NoError(b, err)
					require.NoError(b, g.RandomBuffer(q, 2, 0, 1))
					out, err := g.Alloc(c.n * heads * vd)
					require.NoError(b, err)
					us := timeOps(b, g, func() { g.AttentionNoStore(out, q, kc, 0, c.pos0, c.n, heads, 0.04) })
					keys := float64(c.n)*float64(c.pos0) + float64(c.n)*float64(c.n+1)/2
					b.ReportMetric(keys*float64(heads*(kd+vd)*2)/(us*1e6), "TFLOP/s")
					b.ReportMetric(float64(c.n)/us*1e6, "rows/s")
				})
			}
		}
	}
}

// BenchmarkMLAPagedDecode: a batch of 32 decode rows, each its own
// sequence of ctx positions in shuffled 16-position blocks (f16 cache),
// through PagedAttention (the row's key store included), on the
// tensor-core and the float32 MLA kernels.
func BenchmarkMLAPagedDecode(b *testing.B) {
	const kd, vd, seqs, bs = 576, 512, 32, 16
	for _, heads := range []int{16, 128} {
		for _, ctx := range []int{1024, 4096} {
			for _, path := range []string{"tc", "core"} {
				b.Run(fmt.Sprintf("heads=%d/ctx=%d/batch=%d/%s", heads, ctx, seqs, path), func(b *testing.B) {
					g := newGPU(b, Options{KVDType: kernels.F16})
					g.mla.core = path == "core"
					nb := ctx / bs
					spec := kernels.PagedKVSpec{Layers: 1, Blocks: seqs * nb, BlockTokens: bs, KVHeads: 1, KDim: kd, VDim: vd, VInK: true}
					kv, err := g.NewPagedKV(spec)
					require.NoError(b, err)
					fill := fillPagedMLA(b, g, kv.(*PagedKV), seqs, ctx)
					dec := &kernels.Batch{Tables: fill.Tables}
					for s := range seqs {
						dec.Pos, dec.Seq = append(dec.Pos, int32(ctx-1)), append(dec.Seq, int32(s))
					}
					q, k1, out := pagedStepBuffers(b, g, seqs, heads, kd, vd)
					us := timeOps(b, g, func() { g.PagedAttention(out, q, k1, nil, kv, 0, dec, heads, 0.04) })
					b.ReportMetric(float64(seqs*ctx*kd*2)/(us*1e3), "GB/s")
				})
			}
		}
	}
}

// fillPagedMLA stores ctx random keys for each of seqs sequences in c
// (one layer), each sequence's blocks a shuffled run of c's blocks, and
// returns that batch (its Tables serve the benchmark's steps).
func fillPagedMLA(b *testing.B, g *Backend, c *PagedKV, seqs, ctx int) *kernels.Batch {
	kd, bs := int64(c.spec.KDim), c.spec.BlockTokens
	nb := ctx / bs
	perm := rand.New(rand.NewPCG(1, 2)).Perm(c.spec.Blocks)
	fill := &kernels.Batch{Tables: make([][]int32, seqs)}
	for s := range seqs {
		for i := range nb {
			fill.Tables[s] = append(fill.Tables[s], int32(perm[s*nb+i]))
		}
		for p := range ctx {
			fill.Pos, fill.Seq = append(fill.Pos, int32(p)), append(fill.Seq, int32(s))
		}
	}
	n := fill.Rows()
	kb, err := g.Alloc(n * int(kd))
	require.NoError(b, err)
	require.NoError(b, g.RandomBuffer(kb, 3, 0, 1))
	g.mu.Lock()
	if g.uploadBatch(fill) {
		d := &g.bd
		g.launch("kv_store_paged_"+dtypeNames[c.dt], dim3{blocks(int64(n)*kd, 256), 1, 1}, dim3{256, 1, 1}, 0, func(a *args) {
			a.ptr(c.k).ptr(0).ptr(g.dev(kb).p).ptr(0).i32(n).ptr(d.pos).ptr(d.seq).ptr(d.tab).i32(d.maxb).i32(bs).i32(int(kd)).i32(0)
		})
	}
	g.mu.Unlock()
	require.NoError(b, g.Sync())
	return fill
}

// pagedStepBuffers makes a step's random queries and keys and its output
// for rows rows of MLA paged attention.
func pagedStepBuffers(b *testing.B, g *Backend, rows, heads, kd, vd int) (q, k1, out kernels.Buffer) {
	q, err := g.Alloc(rows * heads * kd)
	require.NoError(b, err)
	require.NoError(b, g.RandomBuffer(q, 4, 0, 1))
	k1, err = g.Alloc(rows * kd)
	require.NoError(b, err)
	require.NoError(b, g.RandomBuffer(k1, 5, 0, 1))
	out, err = g.Alloc(rows * heads * vd)
	require.NoError(b, err)
	return q, k1, out
}

// BenchmarkMLAPagedPrefill: a serving step of PagedAttention (the rows'
// key store included) on an f16 MLA cache in shuffled 16-position blocks:
// a prompt chunk of 512 rows after 1536 cached positions of its sequence
// and, with decode=31, 31 decode rows of other sequences at 2048, on the
// prefill kernel (row tiles) and the per-row tensor-core kernel.
func BenchmarkMLAPagedPrefill(b *testing.B) {
	const kd, vd, bs, ctx, chunk = 576, 512, 16, 2048, 512
	for _, heads := range []int{16, 128} {
		for _, decode := range []int{0, 31} {
			for _, path := range []string{"prefill", "per-row"} {
				b.Run(fmt.Sprintf("heads=%d/chunk=%d/decode=%d/%s", heads, chunk, decode, path), func(b *testing.B) {
					g := newGPU(b, Options{KVDType: kernels.F16})
					g.mla.perRow = path == "per-row"
					seqs, nb := 1+decode, ctx/bs
					spec := kernels.PagedKVSpec{Layers: 1, Blocks: seqs * nb, BlockTokens: bs, KVHeads: 1, KDim: kd, VDim: vd, VInK: true}
					kv, err := g.NewPagedKV(spec)
					require.NoError(b, err)
					fill := fillPagedMLA(b, g, kv.(*PagedKV), seqs, ctx)
					step := &kernels.Batch{Tables: fill.Tables}
					for p := ctx - chunk; p < ctx; p++ {
						step.Pos, step.Seq = append(step.Pos, int32(p)), append(step.Seq, 0)
					}
					for s := 1; s < seqs; s++ {
						step.Pos, step.Seq = append(step.Pos, int32(ctx-1)), append(step.Seq, int32(s))
					}
					rows := step.Rows()
					q, k1, out := pagedStepBuffers(b, g, rows, heads, kd, vd)
					us := timeOps(b, g, func() { g.PagedAttention(out, q, k1, nil, kv, 0, step, heads, 0.04) })
					keys := float64(chunk)*float64(ctx-chunk) + float64(chunk)*float64(chunk+1)/2 + float64(decode*ctx)
					b.ReportMetric(keys*float64(heads*(kd+vd)*2)/(us*1e6), "TFLOP/s")
				})
			}
		}
	}
}

// BenchmarkMatMulHeads: the absorbed projections (bf16) of V2-Lite (16
// heads) and V3 (128) as one MatMulHeads against the per-head loop the
// engine ran before (Copy2D, MatMul, Copy2D a head).
func BenchmarkMatMulHeads(b *testing.B) {
	for _, sh := range []struct {
		name                        string
		heads, rows, cols, xHd, yHd int
	}{
		{"v2-uk", 16, 512, 128, 192, 576}, // q_nope of [nope|rope] heads into [latent|rope]
		{"v2-uv", 16, 128, 512, 512, 128},
		{"v3-uk", 128, 512, 128, 192, 576},
		{"v3-uv", 128, 128, 512, 512, 128},
	} {
		for _, n := range []int{1, 8, 128, 512} {
			for _, path := range []string{"heads", "loop"} {
				b.Run(fmt.Sprintf("%s/n=%d/%s", sh.name, n, path), func(b *testing.B) {
					g := newGPU(b, Options{})
					w, err := g.RandomMatrix(sh.heads*sh.rows, sh.cols, kernels.BF16, 1, 0.05)
					require.NoError(b, err)
					w.parts = make([]int, sh.heads)
					for h := range w.parts {
						w.parts[h] = sh.rows
					}
					xRow, yRow := sh.heads*sh.xHd, sh.heads*sh.yHd
					x, err := g.Alloc(n * xRow)
					require.NoError(b, err)
					require.NoError(b, g.RandomBuffer(x, 2, 0, 1))
					y, err := g.Alloc(n * yRow)
					require.NoError(b, err)
					tA, err := g.Alloc(n * sh.cols)
					require.NoError(b, err)
					tB, err := g.Alloc(n * sh.rows)
					require.NoError(b, err)
					views := make([]*Matrix, sh.heads)
					for h := range views {
						views[h] = &Matrix{p: w.p + devptr(h*sh.rows*sh.cols*2), rows: sh.rows, cols: sh.cols, dt: kernels.BF16, parts: []int{sh.rows}}
					}
					outs := []kernels.Buffer{tB}
					timeOps(b, g, func() {
						if path == "heads" {
							g.MatMulHeads(y, yRow, sh.yHd, x, xRow, sh.xHd, n, w)
							return
						}
						for h, v := range views {
							g.Copy2D(tA, 0, sh.cols, x, h*sh.xHd, xRow, n, sh.cols)
							g.MatMul(outs, tA, n, v, nil)
							g.Copy2D(y, h*sh.yHd, yRow, tB, 0, sh.rows, n, sh.rows)
						}
					})
				})
			}
		}
	}
}
