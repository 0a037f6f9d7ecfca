package layers

import (
	"fmt"

	"github.com/deepseek-go/deepseek-go/kernels"
)

// RowRange is rows [Lo, Hi) of a weight (or a range of heads, experts,
// vocabulary ids).
type RowRange struct{ Lo, Hi int }

// Len is the number of rows in the range.
func (r RowRange) Len() int { return r.Hi - r.Lo }

// Times scales a range of heads to the rows they span at per rows each.
func (r RowRange) Times(per int) RowRange { return RowRange{r.Lo * per, r.Hi * per} }

// SplitRange is rank's share of n items split over size ranks as evenly
// as possible (the first ones take the remainder last, as integer division
// falls); all of them when size <= 1.
func SplitRange(n, rank, size int) RowRange {
	if size <= 1 {
		return RowRange{0, n}
	}
	return RowRange{rank * n / size, (rank + 1) * n / size}
}

// HeadShard is rank's run of h attention heads; the heads must divide
// evenly (a head is never cut).
func HeadShard(h, rank, size int) (RowRange, error) {
	if size > 1 && h%size != 0 {
		return RowRange{}, fmt.Errorf("tensor parallelism: num_attention_heads %d is not divisible by %d shards", h, size)
	}
	return SplitRange(h, rank, size), nil
}

// GQAShard returns rank's query heads and the KV heads they read. KV heads
// split with the query heads when size divides them; with fewer KV heads
// than shards (size a multiple of kvh) each shard keeps the one KV head
// of its query heads, replicated on size/kvh shards, as vLLM does.
func GQAShard(h, kvh, rank, size int) (q, kv RowRange, err error) {
	if q, err = HeadShard(h, rank, size); err != nil {
		return q, kv, err
	}
	switch {
	case size <= 1 || kvh%size == 0:
		kv = SplitRange(kvh, rank, size)
	case size%kvh == 0:
		g := h / kvh // query heads per KV head; a multiple of q.Len() here
		kv = RowRange{q.Lo / g, q.Lo/g + 1}
	default:
		err = fmt.Errorf("tensor parallelism: num_key_value_heads %d neither divides nor is a multiple of %d shards", kvh, size)
	}
	return q, kv, err
}

// shardCount is the Builder's number of shards (1 when not sharded).
func (b *Builder) shardCount() int { return max(b.Shards, 1) }

// sliceRows returns rows r of hm without copying; the whole matrix (name
// kept) when r covers it.
func sliceRows(hm kernels.HostMatrix, r RowRange) kernels.HostMatrix {
	if r.Lo == 0 && r.Hi == hm.Rows {
		return hm
	}
	return rowSlice(hm, r.Lo, r.Hi, fmt.Sprintf("%s[rows %d:%d]", hm.Name, r.Lo, r.Hi))
}

// sliceCols returns columns r of hm in a new slice (a row-parallel
// layer's share of its input features).
func sliceCols(hm kernels.HostMatrix, r RowRange) kernels.HostMatrix {
	es := hm.DType.Size()
	w := r.Len()
	out := make([]byte, hm.Rows*w*es)
	for i := range hm.Rows {
		copy(out[i*w*es:(i+1)*w*es], hm.Data[(i*hm.Cols+r.Lo)*es:(i*hm.Cols+r.Hi)*es])
	}
	return kernels.HostMatrix{Name: fmt.Sprintf("%s[cols %d:%d]", hm.Name, r.Lo, r.Hi),
		Rows: hm.Rows, Cols: w, DType: hm.DType, Data: out}
}

// matrixCols uploads columns r of one weight matrix (all of them: exactly
// Matrix), quantised like Matrix.
func (b *Builder) matrixCols(s MatSpec, r RowRange) (kernels.Matrix, error) {
	if r.Lo == 0 && r.Hi == s.Cols {
		return b.Matrix(s)
	}
	h, err := b.Host(s)
	if err != nil {
		return nil, err
	}
	return uploadParts(b, []kernels.HostMatrix{sliceCols(h, r)})
}

// vectorRows uploads entries rows[i] of each 1-D tensor of specs,
// concatenated (the bias of a fused, column-split projection).
func (b *Builder) vectorRows(specs []MatSpec, rows ...RowRange) (kernels.Buffer, error) {
	var all []float32
	for i, s := range specs {
		f, err := b.Floats(s.Name, s.Rows)
		if err != nil {
			return nil, err
		}
		all = append(all, f[rows[i].Lo:rows[i].Hi]...)
	}
	return b.UploadFloats(all)
}
