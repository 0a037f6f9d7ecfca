package layers

import (
	"fmt"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// DenseMLP is the SwiGLU feed-forward down(silu(gate(x)) * up(x)) with a
// fused gate|up matrix; MoE experts and shared experts reuse it.
type DenseMLP struct {
	Inter      int
	GateUp     kernels.Matrix
	GateUpBias kernels.Buffer
	Down       kernels.Matrix
	DownBias   kernels.Buffer
}

// LoadDenseMLP loads gate_proj, up_proj, down_proj under prefix (e.g.
// "model.layers.0.mlp."). In a sharded model it keeps the Builder's
// rank's slice of the intermediate features (shard.go).
func LoadDenseMLP(b *Builder, prefix string, hidden, inter int, bias bool) (*DenseMLP, error) {
	ir := SplitRange(inter, b.Rank, b.shardCount())
	if ir.Len() == 0 {
		return nil, fmt.Errorf("%s: intermediate size %d is smaller than %d shards", prefix, inter, b.shardCount())
	}
	return loadDenseMLP(b, prefix, hidden, inter, bias, ir)
}

// loadDenseMLP loads the intermediate features ir of an MLP (all of them
// for a MoE expert, which lives whole on one shard).
func loadDenseMLP(b *Builder, prefix string, hidden, inter int, bias bool, ir RowRange) (*DenseMLP, error) {
	p := &DenseMLP{Inter: ir.Len()}
	var err error
	if p.GateUp, err = b.MatrixRows(b.Int8, []MatSpec{{prefix + "gate_proj.weight", inter, hidden}, {prefix + "up_proj.weight", inter, hidden}}, ir, ir); err != nil {
		return nil, err
	}
	if p.Down, err = b.matrixCols(MatSpec{prefix + "down_proj.weight", hidden, inter}, ir); err != nil {
		return nil, err
	}
	if bias {
		if p.GateUpBias, err = b.vectorRows([]MatSpec{{Name: prefix + "gate_proj.bias", Rows: inter}, {Name: prefix + "up_proj.bias", Rows: inter}}, ir, ir); err != nil {
			return nil, err
		}
	}
	if bias && ir.Lo == 0 { // row-split: the bias is added by the first slice only
		if p.DownBias, err = b.Vector(prefix+"down_proj.bias", hidden); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Forward writes (or adds) mlp(xn) for n rows to out [n, hidden]
// (FeedForward). Scratch is sized by the session chunk, so n must not
// exceed ctx.Chunk().
func (p *DenseMLP) Forward(ctx Context, out, xn kernels.Buffer, n int, add bool) error {
	be := ctx.Backend()
	gate, err := ctx.Scratch("mlp.gate", ctx.Chunk()*p.Inter)
	if err != nil {
		return err
	}
	up, err := ctx.Scratch("mlp.up", ctx.Chunk()*p.Inter)
	if err != nil {
		return err
	}
	ctx.MatMul(xn, n, p.GateUp, p.GateUpBias, Outs{gate, up})
	be.SwiGLU(gate, gate, up, n*p.Inter)
	return project(ctx, out, gate, n, p.Down, p.DownBias, add)
}
