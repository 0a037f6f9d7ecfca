package layers

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/deepseek-go/deepseek-go/engine/safetensors"
	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/cpu"
	"github.com/deepseek-go/deepseek-go/kernels/routing"
)

// mapSource is a TensorSource of tensors made in the test.
type mapSource map[string]*safetensors.Tensor

func (s mapSource) Tensor(name string) (*safetensors.Tensor, error) {
	if t, ok := s[name]; ok {
		return t, nil
	}
	return nil, fmt.Errorf("no tensor %q", name)
}

// add makes a random rows×cols tensor of dtype dt (fp8: 16×16 block
// scales as name_scale_inv) and returns the values it stands for.
func (s mapSource) add(r *rand.Rand, name string, rows, cols int, dt safetensors.DType) []float32 {
	t := &safetensors.Tensor{Name: name, DType: dt, Shape: []int{rows, cols}}
	h := kernels.HostMatrix{Name: name, Rows: rows, Cols: cols}
	switch dt {
	case safetensors.F8E4M3:
		t.Data = make([]byte, rows*cols)
		for i := range t.Data {
			t.Data[i] = byte(r.IntN(256)) &^ 1 // no NaN (0x7f, 0xff)
		}
		sr, sc := (rows+15)/16, (cols+15)/16
		sv := make([]float32, sr*sc)
		for i := range sv {
			sv[i] = float32(math.Exp2(-8 + 2*r.Float64()))
		}
		s[name+"_scale_inv"] = &safetensors.Tensor{Name: name + "_scale_inv", DType: safetensors.F32, Shape: []int{sr, sc}, Data: FloatsToLE(sv)}
		h.DType, h.Scales, h.BlockRows, h.BlockCols = kernels.FP8, sv, 16, 16
	default:
		v := make([]float32, rows*cols)
		for i := range v {
			v[i] = float32(r.NormFloat64() / math.Sqrt(float64(cols)))
		}
		t.Data, h.DType = FloatsToLE(v), kernels.F32
		if dt == safetensors.BF16 {
			t.Data, h.DType = make([]byte, 2*len(v)), kernels.BF16
			for i, x := range v {
				b := math.Float32bits(x) >> 16
				t.Data[2*i], t.Data[2*i+1] = byte(b), byte(b>>8)
			}
		}
	}
	s[name] = t
	h.Data = t.Data
	if err := WidenHost(&h); err != nil {
		panic(err)
	}
	out := make([]float32, rows*cols)
	for i := range out {
		out[i] = math.Float32frombits(uint32(h.Data[4*i]) | uint32(h.Data[4*i+1])<<8 | uint32(h.Data[4*i+2])<<16 | uint32(h.Data[4*i+3])<<24)
	}
	return out
}

// mlp64 is down(silu(gate·x) ⊙ up·x) in float64 for a [f, hid] gate and
// up and a [hid, f] down.
func mlp64(gate, up, down, x []float32, f int) []float64 {
	hid := len(x)
	h := make([]float64, f)
	for i := range f {
		var g, u float64
		for c, xv := range x {
			g += float64(gate[i*hid+c]) * float64(xv)
			u += float64(up[i*hid+c]) * float64(xv)
		}
		h[i] = g / (1 + math.Exp(-g)) * u
	}
	y := make([]float64, hid)
	for o := range y {
		for i, hv := range h {
			y[o] += float64(down[o*f+i]) * hv
		}
	}
	return y
}

// TestLoadMoESharedExperts loads one MoE layer whose shared experts join
// the routed ones (same dtype; fp8 cut on whole blocks, or not cut) or
// stay a separate MLP (another dtype; fp8 blocks the cut would split), and
// checks the layer's output against the float64 formula on the stored
// values: Σ_j w_j·expert_j(x) + shared(x).
func TestLoadMoESharedExperts(t *testing.T) {
	const E, k, hid = 4, 2, 32
	f32, bf16, fp8 := safetensors.F32, safetensors.BF16, safetensors.F8E4M3
	for _, tc := range []struct {
		name           string
		routed, shared safetensors.DType
		inter, S       int
		fused          bool
		dt             kernels.DType
	}{
		{"bf16, 2 shared", bf16, bf16, 32, 2, true, kernels.BF16},
		{"f32, 1 shared", f32, f32, 16, 1, true, kernels.F32},
		{"f32, 3 shared", f32, f32, 8, 3, true, kernels.F32},
		{"fp8 on whole blocks, 2 shared", fp8, fp8, 32, 2, true, kernels.FP8},
		{"fp8 not cut, 1 shared", fp8, fp8, 24, 1, true, kernels.FP8},
		{"fp8 blocks cut: separate", fp8, fp8, 24, 2, false, kernels.FP8},
		{"shared in another dtype: separate", bf16, f32, 32, 2, false, kernels.BF16},
		{"routed f32, shared bf16: widened", f32, bf16, 32, 2, true, kernels.F32},
		{"routed f32, shared fp8 cut inside blocks: widened", f32, fp8, 24, 2, true, kernels.F32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
			inter, S := tc.inter, tc.S
			src := mapSource{}
			router := src.add(r, "mlp.gate.weight", E, hid, f32)
			var gate, up, down [][]float32
			for e := range E {
				p := fmt.Sprintf("mlp.experts.%d.", e)
				gate = append(gate, src.add(r, p+"gate_proj.weight", inter, hid, tc.routed))
				up = append(up, src.add(r, p+"up_proj.weight", inter, hid, tc.routed))
				down = append(down, src.add(r, p+"down_proj.weight", hid, inter, tc.routed))
			}
			sg := src.add(r, "mlp.shared_experts.gate_proj.weight", S*inter, hid, tc.shared)
			su := src.add(r, "mlp.shared_experts.up_proj.weight", S*inter, hid, tc.shared)
			sd := src.add(r, "mlp.shared_experts.down_proj.weight", hid, S*inter, tc.shared)
			var stored int64
			for _, tn := range src {
				stored += int64(tn.NumElements())
			}

			be := cpu.New(1)
			defer be.Close()
			b := NewBuilder(be, src, false, nil, 0)
			b.FP8Block = [2]int{16, 16}
			rc := routing.Config{Method: routing.TopKGreedy, Scoring: routing.ScoringSoftmax, Experts: E, TopK: k, Groups: 1, TopGroups: 1, Scale: 1.5}
			m, err := LoadMoE(b, "mlp.", MoEShape{Hidden: hid, Inter: inter, SharedExperts: S}, rc)
			require.NoError(t, err)
			assert.Equal(t, stored, b.Params(), "every stored parameter counted once")
			assert.Equal(t, tc.dt, m.Experts.DType())
			if tc.fused {
				assert.Nil(t, m.Shared)
				assert.Equal(t, S, m.Routing.Shared)
				assert.Equal(t, S, m.Gate().Config().Shared)
				assert.Equal(t, E+S, m.Experts.Count())
			} else {
				assert.NotNil(t, m.Shared)
				assert.Zero(t, m.Routing.Shared)
				assert.Equal(t, E, m.Experts.Count())
			}

			// The layer's forward, as MoE.Forward runs it.
			const n = 5
			x := make([]float32, n*hid)
			for i := range x {
				x[i] = float32(r.NormFloat64())
			}
			buf := func(v []float32) kernels.Buffer {
				bb, err := be.Alloc(len(v))
				require.NoError(t, err)
				require.NoError(t, be.Upload(bb, 0, v))
				return bb
			}
			xb, lb, out := buf(x), buf(make([]float32, n*E)), buf(make([]float32, n*hid))
			rt, err := be.NewMoERoutes(kernels.MoERoutesSpec{Rows: n, TopK: m.Routing.Slots(), Experts: E + m.Routing.Shared, Hidden: hid, Inter: inter})
			require.NoError(t, err)
			be.MatMul([]kernels.Buffer{lb}, xb, n, m.Router, nil)
			be.Route(rt, m.Gate(), lb, n)
			if m.Shared != nil {
				g, u := buf(make([]float32, n*S*inter)), buf(make([]float32, n*S*inter))
				be.MatMul([]kernels.Buffer{g, u}, xb, n, m.Shared.GateUp, nil)
				be.SwiGLU(g, g, u, n*S*inter)
				be.MatMul([]kernels.Buffer{out}, g, n, m.Shared.Down, nil)
			}
			be.MoEExperts(out, xb, n, m.Experts, rt, m.Shared != nil)
			got := make([]float32, n*hid)
			require.NoError(t, be.Download(got, out, 0))

			// The router matmul is the backend's (a host one could flip a
			// near tie); check it, then route on the host.
			logits := make([]float32, n*E)
			require.NoError(t, be.Download(logits, lb, 0))
			for tk := range n {
				for e := range E {
					var l float64
					for c := range hid {
						l += float64(router[e*hid+c]) * float64(x[tk*hid+c])
					}
					assert.InDelta(t, l, logits[tk*E+e], 1e-5)
				}
			}
			host, err := routing.New(rc, nil)
			require.NoError(t, err)
			idx, w := make([]int, k), make([]float32, k)
			var d, nn float64
			for tk := range n {
				xt := x[tk*hid : (tk+1)*hid]
				host.Route(logits[tk*E:(tk+1)*E], idx, w)
				want := mlp64(sg, su, sd, xt, S*inter)
				for j, e := range idx {
					for o, v := range mlp64(gate[e], up[e], down[e], xt, inter) {
						want[o] += float64(w[j]) * v
					}
				}
				for o, v := range want {
					e := float64(got[tk*hid+o]) - v
					d += e * e
					nn += v * v
				}
			}
			assert.LessOrEqual(t, math.Sqrt(d/nn), 1e-5)
		})
	}
}
