package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/routing"
)

// TestMoEExpertsFormula checks the MoE capability against the formula in
// float64: out[t] (+)= Σ_j w[t,j]·down_e(silu(gate_e·x) ⊙ up_e·x) for the
// routing kernels/routing gives, over 16-bit, f32 and fp8 weights (fp8
// kept as fp8: its bytes and block scales are what the experts hold), for
// all of a layer's experts and for a shard's run (other experts add
// nothing).
func TestMoEExpertsFormula(t *testing.T) {
	b := New(2)
	defer b.Close()
	r := rand.New(rand.NewPCG(5, 6))
	const E, k, hid, inter = 8, 3, 40, 24
	cfg := routing.Config{Method: routing.TopKGroupLimit, Scoring: routing.ScoringSoftmax, Experts: E, TopK: k,
		Groups: 4, TopGroups: 3, NormTopK: true, Scale: 1}
	for _, dt := range []kernels.DType{kernels.F32, kernels.BF16, kernels.F16, kernels.FP8} {
		mk := func(name string, rows, cols int) (kernels.HostMatrix, []float32) {
			if dt == kernels.FP8 {
				return randFP8(r, name, fp8Shape{rows: rows, br: 8, bc: 16}, cols)
			}
			return hostMatrix(t, name, randVec(r, rows*cols), rows, cols, dt)
		}
		for _, run := range [][2]int{{0, E}, {3, 2}} {
			first, cnt := run[0], run[1]
			var p kernels.ExpertParts
			p.First = first
			gate, up, down := make([][]float32, E), make([][]float32, E), make([][]float32, E)
			var bytes int64 // what the parts hold, scales included
			for e := first; e < first+cnt; e++ {
				var h kernels.HostMatrix
				h, gate[e] = mk(fmt.Sprint("gate", e), inter, hid)
				p.Gate = append(p.Gate, h)
				h, up[e] = mk(fmt.Sprint("up", e), inter, hid)
				p.Up = append(p.Up, h)
				h, down[e] = mk(fmt.Sprint("down", e), hid, inter)
				p.Down = append(p.Down, h)
				for _, h := range []kernels.HostMatrix{p.Gate[len(p.Gate)-1], p.Up[len(p.Up)-1], h} {
					bytes += int64(len(h.Data)) + 4*int64(len(h.Scales))
				}
			}
			ex, err := b.UploadExperts(p, false)
			require.NoError(t, err)
			assert.Equal(t, dt, ex.DType())
			assert.Equal(t, cnt, ex.Count())
			assert.Equal(t, bytes, ex.Bytes(), "resident bytes")
			router, err := b.NewMoERouter(cfg, nil)
			require.NoError(t, err)
			rt, err := b.NewMoERoutes(kernels.MoERoutesSpec{Rows: 9, TopK: k, Experts: E, Hidden: hid, Inter: inter})
			require.NoError(t, err)
			host, err := routing.New(cfg, nil)
			require.NoError(t, err)
			for _, n := range []int{1, 9} {
				for _, acc := range []bool{false, true} {
					name := fmt.Sprintf("%v experts [%d,+%d) n=%d acc=%v", dt, first, cnt, n, acc)
					logits, x, init := randVec(r, n*E), randVec(r, n*hid), randVec(r, n*hid)
					lb, xb, ob := &Buffer{data: logits}, &Buffer{data: x}, &Buffer{data: append([]float32(nil), init...)}
					b.Route(rt, router, lb, n)
					b.MoEExperts(ob, xb, n, ex, rt, acc)
					gi, gw := make([]int32, n*k), make([]float32, n*k)
					require.NoError(t, b.ReadRoutes(rt, n, gi, gw))
					idx, w := make([]int, k), make([]float32, k)
					for tk := range n {
						host.Route(logits[tk*E:(tk+1)*E], idx, w)
						want := make([]float64, hid)
						if acc {
							for i := range want {
								want[i] = float64(init[tk*hid+i])
							}
						}
						xt := x[tk*hid : (tk+1)*hid]
						for j, e := range idx {
							require.Equal(t, int32(e), gi[tk*k+j], name)
							require.Equal(t, w[j], gw[tk*k+j], name)
							if e < first || e >= first+cnt {
								continue
							}
							h := make([]float64, inter)
							for f := range inter {
								var g, u float64
								for c, xv := range xt {
									g += float64(gate[e][f*hid+c]) * float64(xv)
									u += float64(up[e][f*hid+c]) * float64(xv)
								}
								h[f] = g / (1 + math.Exp(-g)) * u
							}
							for o := range hid {
								var y float64
								for f, hv := range h {
									y += float64(down[e][o*inter+f]) * hv
								}
								want[o] += float64(w[j]) * y
							}
						}
						var d, nn float64
						for o, v := range want {
							e := float64(ob.data[tk*hid+o]) - v
							d += e * e
							nn += v * v
						}
						if nn == 0 { // no expert of this row is held: zeros
							assert.Zero(t, d, "%s row %d", name, tk)
							continue
						}
						assert.LessOrEqual(t, math.Sqrt(d/nn), 1e-5, "%s row %d", name, tk)
					}
				}
			}
			tokens, counts, err := router.Counts()
			require.NoError(t, err)
			assert.Equal(t, int64(2*(1+9)), tokens)
			var sum int64
			for _, c := range counts {
				sum += c
			}
			assert.Equal(t, tokens*k, sum)
		}
	}
}

// TestMoEBadInput: malformed experts and routes specs fail with the
// offending part named.
func TestMoEBadInput(t *testing.T) {
	b := New(1)
	defer b.Close()
	f := func(name string, rows, cols int) kernels.HostMatrix {
		return kernels.HostMatrix{Name: name, Rows: rows, Cols: cols, DType: kernels.F32, Data: make([]byte, 4*rows*cols)}
	}
	for _, tc := range []struct {
		name string
		p    kernels.ExpertParts
		want string
	}{
		{"none", kernels.ExpertParts{}, "no experts"},
		{"counts differ", kernels.ExpertParts{Gate: []kernels.HostMatrix{f("g", 4, 8)}, Up: []kernels.HostMatrix{f("u", 4, 8)}}, "1 gate, 1 up and 0 down"},
		{"down shape", kernels.ExpertParts{Gate: []kernels.HostMatrix{f("g", 4, 8)}, Up: []kernels.HostMatrix{f("u", 4, 8)}, Down: []kernels.HostMatrix{f("d", 4, 8)}}, "d: shape 4x8, want 8x4"},
		{"up shape", kernels.ExpertParts{Gate: []kernels.HostMatrix{f("g", 4, 8)}, Up: []kernels.HostMatrix{f("u", 5, 8)}, Down: []kernels.HostMatrix{f("d", 8, 4)}}, "u: shape 5x8, want 4x8"},
		{"negative first", kernels.ExpertParts{First: -1, Gate: []kernels.HostMatrix{f("g", 4, 8)}, Up: []kernels.HostMatrix{f("u", 4, 8)}, Down: []kernels.HostMatrix{f("d", 8, 4)}}, "first expert -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := b.UploadExperts(tc.p, false)
			require.ErrorContains(t, err, tc.want)
		})
	}
	_, err := b.NewMoERoutes(kernels.MoERoutesSpec{Rows: 4, TopK: 9, Experts: 8, Hidden: 8, Inter: 8})
	require.ErrorContains(t, err, "bad spec")
	_, err = b.NewMoERouter(routing.Config{Method: routing.TopKNoAuxTC, Scoring: routing.ScoringSigmoid, Experts: 8, TopK: 2, Groups: 4, TopGroups: 2}, nil)
	require.ErrorContains(t, err, "e_score_correction_bias has 0 entries")
}

// TestMoESharedExperts: a layer whose shared MLP (width S·inter) runs as S
// extra experts (routing.Config.Shared) gives what the shared MLP run
// densely plus the routed experts accumulated onto it gives, per weight
// dtype; the routing of the top-k slots and the selection counters are
// those of the routing without shared experts.
func TestMoESharedExperts(t *testing.T) {
	b := New(2)
	defer b.Close()
	r := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	const E, k, hid, inter, rows = 8, 2, 40, 24, 9
	for _, dt := range []kernels.DType{kernels.F32, kernels.BF16, kernels.F16, kernels.FP8} {
		for _, S := range []int{1, 2, 3} {
			t.Run(fmt.Sprintf("%v/shared=%d", dt, S), func(t *testing.T) {
				mk := func(name string, rows, cols int) kernels.HostMatrix {
					if dt == kernels.FP8 {
						h, _ := randFP8(r, name, fp8Shape{rows: rows, br: 8, bc: 8}, cols)
						return h
					}
					h, _ := hostMatrix(t, name, randVec(r, rows*cols), rows, cols, dt)
					return h
				}
				var p kernels.ExpertParts
				for e := range E {
					p.Gate = append(p.Gate, mk(fmt.Sprint("gate", e), inter, hid))
					p.Up = append(p.Up, mk(fmt.Sprint("up", e), inter, hid))
					p.Down = append(p.Down, mk(fmt.Sprint("down", e), hid, inter))
				}
				sg, su, sd := mk("sgate", S*inter, hid), mk("sup", S*inter, hid), mk("sdown", hid, S*inter)
				fused := kernels.ExpertParts{Gate: slices.Clone(p.Gate), Up: slices.Clone(p.Up), Down: slices.Clone(p.Down)}
				for s := range S {
					lo, hi := s*inter, (s+1)*inter
					fused.Gate = append(fused.Gate, sg.SliceRows(lo, hi, fmt.Sprint("sgate", s)))
					fused.Up = append(fused.Up, su.SliceRows(lo, hi, fmt.Sprint("sup", s)))
					d, err := sd.SliceCols(lo, hi, fmt.Sprint("sdown", s))
					require.NoError(t, err)
					fused.Down = append(fused.Down, d)
				}
				routed, err := b.UploadExperts(p, false)
				require.NoError(t, err)
				all, err := b.UploadExperts(fused, false)
				require.NoError(t, err)
				gateUp, err := b.UploadMatrix([]kernels.HostMatrix{sg, su}, false)
				require.NoError(t, err)
				down, err := b.UploadMatrix([]kernels.HostMatrix{sd}, false)
				require.NoError(t, err)
				assert.Equal(t, E+S, all.Count())
				assert.Equal(t, routed.Bytes()+gateUp.Bytes()+down.Bytes(), all.Bytes(), "resident bytes")

				cfg := routing.Config{Method: routing.TopKGreedy, Scoring: routing.ScoringSoftmax, Experts: E, TopK: k,
					Groups: 1, TopGroups: 1, Scale: 1.5}
				plainR, err := b.NewMoERouter(cfg, nil)
				require.NoError(t, err)
				cfg.Shared = S
				fusedR, err := b.NewMoERouter(cfg, nil)
				require.NoError(t, err)
				plainRt, err := b.NewMoERoutes(kernels.MoERoutesSpec{Rows: rows, TopK: k, Experts: E, Hidden: hid, Inter: inter})
				require.NoError(t, err)
				fusedRt, err := b.NewMoERoutes(kernels.MoERoutesSpec{Rows: rows, TopK: k + S, Experts: E + S, Hidden: hid, Inter: inter})
				require.NoError(t, err)
				for _, n := range []int{1, rows} {
					lb, xb := &Buffer{data: randVec(r, n*E)}, &Buffer{data: randVec(r, n*hid)}
					g, u := &Buffer{data: make([]float32, n*S*inter)}, &Buffer{data: make([]float32, n*S*inter)}
					want, got := &Buffer{data: make([]float32, n*hid)}, &Buffer{data: randVec(r, n*hid)}
					b.MatMul([]kernels.Buffer{g, u}, xb, n, gateUp, nil)
					b.SwiGLU(g, g, u, n*S*inter)
					b.MatMul([]kernels.Buffer{want}, g, n, down, nil)
					b.Route(plainRt, plainR, lb, n)
					b.MoEExperts(want, xb, n, routed, plainRt, true)
					b.Route(fusedRt, fusedR, lb, n)
					b.MoEExperts(got, xb, n, all, fusedRt, false)
					assert.LessOrEqual(t, relErr(got.data, want.data), 1e-5, "n=%d", n)

					pi, pw := make([]int32, n*k), make([]float32, n*k)
					require.NoError(t, b.ReadRoutes(plainRt, n, pi, pw))
					fi, fw := make([]int32, n*(k+S)), make([]float32, n*(k+S))
					require.NoError(t, b.ReadRoutes(fusedRt, n, fi, fw))
					for tk := range n {
						assert.Equal(t, pi[tk*k:(tk+1)*k], fi[tk*(k+S):tk*(k+S)+k], "row %d", tk)
						assert.Equal(t, pw[tk*k:(tk+1)*k], fw[tk*(k+S):tk*(k+S)+k], "row %d", tk)
						for s := range S {
							assert.Equal(t, int32(E+s), fi[tk*(k+S)+k+s])
							assert.Equal(t, float32(1), fw[tk*(k+S)+k+s])
						}
					}
				}
				pt, pc, err := plainR.Counts()
				require.NoError(t, err)
				ft, fc, err := fusedR.Counts()
				require.NoError(t, err)
				assert.Equal(t, int64(1+rows), ft)
				assert.Equal(t, pt, ft)
				assert.Equal(t, pc, fc, "the shared slots are not counted")
			})
		}
	}
}
