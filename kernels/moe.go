package kernels

import (
	"fmt"

	"github.com/deepseek-go/deepseek-go/kernels/routing"
)

// MoE is the capability of running a DeepSeek mixture-of-experts layer's
// routed experts on the backend, with routing on the backend too: the
// router logits never leave the device, so a decode step that contains MoE
// layers can be captured as one graph (StepCapturer). The router matmul
// stays an ordinary op; the shared experts run as extra experts that every
// row is routed to with weight 1 (routing.Config.Shared; a shared MLP of
// width S·inter is S experts of width inter), or as ordinary ops.
//
// One layer's forward is
//
//	MatMul(logits ← x·routerᵀ)             [n, Experts]
//	Route(rt, r, logits, n)                 top-k (+ shared) indices and weights into rt
//	MoEExperts(out, x, n, ex, rt, acc)      out[t] (+)= Σ_j w[t,j]·Expert_{idx[t,j]}(x[t])
//
// where Expert_e(x) = down_e(silu(gate_e·x) ⊙ (up_e·x)), accumulated in
// float32 whatever the weight dtype. Compute ops report failures as the
// core ops do (at the next Download or Err).
type MoE interface {
	// UploadExperts makes backend-resident experts of one layer from
	// host parts (CheckExperts). With int8 float parts are quantised per
	// row as UploadMatrix does.
	UploadExperts(p ExpertParts, int8 bool) (Experts, error)
	// NewMoERouter makes a layer's router state: the routing config, the
	// e_score_correction_bias (noaux_tc, else nil) and per-expert
	// selection counters, zeroed. A router is shared by every session.
	NewMoERouter(cfg routing.Config, bias []float32) (MoERouter, error)
	// NewMoERoutes makes one session's routing results and expert
	// scratch for up to spec.Rows rows.
	NewMoERoutes(spec MoERoutesSpec) (MoERoutes, error)
	// Route routes rows 0..n-1 of logits [n, Experts] with r's config
	// (kernels/routing's rules and arithmetic: the indices equal the
	// host's), writes each row's Slots indices and weights (the top-k,
	// then the config's shared experts with weight 1) to rt and adds the
	// top-k selections (never the shared slots) to r's counters.
	Route(rt MoERoutes, r MoERouter, logits Buffer, n int)
	// MoEExperts computes, for rows t < n of x [n, Hidden],
	// Σ_j w[t,j]·Expert_{idx[t,j]}(x[t]) from rt's last Route and adds it
	// to out[t] (accumulate) or writes it there. Indices outside
	// ex's [First, First+Count) contribute nothing (experts held by
	// another shard); a row none of whose experts are held gets 0 (or
	// keeps out). out must not alias x.
	MoEExperts(out, x Buffer, n int, ex Experts, rt MoERoutes, accumulate bool)
	// ReadRoutes downloads rt's indices and weights of rows 0..n-1
	// ([n, spec.TopK] each, row-major), waiting for pending work (tests,
	// debugging).
	ReadRoutes(rt MoERoutes, n int, idx []int32, w []float32) error
}

// ExpertParts are the host weights of a run of a layer's experts: experts
// First, First+1, … (len(Gate) of them; shared experts routed as
// routing.Config.Shared follow the routed ones, ids Experts, …). Gate[i]
// and Up[i] are [Inter, Hidden], Down[i] is [Hidden, Inter], all of one
// dtype.
type ExpertParts struct {
	First          int
	Gate, Up, Down []HostMatrix
}

// Experts are a layer's routed experts held by a backend: Count experts
// starting at global index First, each a SwiGLU MLP of Inter features over
// Hidden.
type Experts interface {
	First() int
	Count() int
	Hidden() int
	Inter() int
	DType() DType
	Bytes() int64 // bytes held, scales included
}

// MoERouter is a layer's routing state on a backend (NewMoERouter).
type MoERouter interface {
	Config() routing.Config
	// Counts downloads the selection counters: rows routed since the last
	// reset and top-k selections per routed expert (len Experts; shared
	// experts are not counted). It waits for pending work.
	Counts() (tokens int64, perExpert []int64, err error)
	// ResetCounts zeroes the counters.
	ResetCounts() error
}

// MoERoutesSpec sizes a session's MoERoutes: Rows rows routed to TopK of
// Experts experts of Hidden → Inter → Hidden MLPs. TopK is the slot count
// per row, the router's Slots (top-k plus shared experts), and Experts
// counts the shared experts too (routing.Config Experts+Shared).
type MoERoutesSpec struct {
	Rows, TopK, Experts, Hidden, Inter int
}

// MoERoutes is one session's routing results and scratch (NewMoERoutes).
type MoERoutes interface {
	Spec() MoERoutesSpec
}

// CheckExperts validates ExpertParts (shapes, one dtype, the parts'
// own contract through CheckParts) and returns Hidden and Inter. Errors
// name the tensor.
func CheckExperts(p ExpertParts) (hidden, inter int, err error) {
	n := len(p.Gate)
	if n == 0 {
		return 0, 0, fmt.Errorf("UploadExperts: no experts")
	}
	if len(p.Up) != n || len(p.Down) != n {
		return 0, 0, fmt.Errorf("UploadExperts: %d gate, %d up and %d down parts", n, len(p.Up), len(p.Down))
	}
	if p.First < 0 {
		return 0, 0, fmt.Errorf("UploadExperts: first expert %d < 0", p.First)
	}
	inter, hidden = p.Gate[0].Rows, p.Gate[0].Cols
	dt := p.Gate[0].DType
	for i := range n {
		for _, m := range []struct {
			h          HostMatrix
			rows, cols int
		}{{p.Gate[i], inter, hidden}, {p.Up[i], inter, hidden}, {p.Down[i], hidden, inter}} {
			if m.h.Rows != m.rows || m.h.Cols != m.cols {
				return 0, 0, fmt.Errorf("UploadExperts %s: shape %dx%d, want %dx%d", m.h.Name, m.h.Rows, m.h.Cols, m.rows, m.cols)
			}
			if m.h.DType != dt {
				return 0, 0, fmt.Errorf("UploadExperts %s: dtype %v differs from %v of %s", m.h.Name, m.h.DType, dt, p.Gate[0].Name)
			}
			if _, err := CheckParts([]HostMatrix{m.h}); err != nil {
				return 0, 0, err
			}
		}
	}
	return hidden, inter, nil
}

// Check validates a routes spec: positive sizes, TopK ≤ Experts.
func (s MoERoutesSpec) Check() error {
	if s.Rows <= 0 || s.TopK <= 0 || s.Experts <= 0 || s.Hidden <= 0 || s.Inter <= 0 || s.TopK > s.Experts {
		return fmt.Errorf("NewMoERoutes: bad spec %+v", s)
	}
	return nil
}
