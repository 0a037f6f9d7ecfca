package kernels

import "fmt"

// Batch describes the rows of one batched step over a paged KV cache: row
// i is a token of sequence Seq[i] at position Pos[i] of that sequence. A
// step may mix a prompt chunk of one sequence (consecutive rows, increasing
// positions) with single decode rows of many others. Tables[s] lists the
// cache blocks of sequence s in position order: position p lives in block
// Tables[s][p/BlockTokens] at slot p%BlockTokens. Attention of a row reads
// positions 0..Pos[i] of its sequence, so the blocks of every earlier
// position must already hold keys (from earlier steps, or earlier rows of
// this step).
type Batch struct {
	Pos    []int32
	Seq    []int32
	Tables [][]int32
}

// Rows is the number of rows in the batch.
func (b *Batch) Rows() int { return len(b.Pos) }

// Check validates the descriptor against a cache spec: equal lengths, valid
// sequence indices and blocks for every position a row reads or writes.
func (b *Batch) Check(spec PagedKVSpec) error {
	if len(b.Seq) != len(b.Pos) {
		return fmt.Errorf("batch: %d positions but %d sequence slots", len(b.Pos), len(b.Seq))
	}
	for i, p := range b.Pos {
		s := b.Seq[i]
		if s < 0 || int(s) >= len(b.Tables) {
			return fmt.Errorf("batch row %d: sequence %d outside %d tables", i, s, len(b.Tables))
		}
		if p < 0 || int(p)/spec.BlockTokens >= len(b.Tables[s]) {
			return fmt.Errorf("batch row %d: position %d beyond the %d blocks of sequence %d", i, p, len(b.Tables[s]), s)
		}
		for _, blk := range b.Tables[s][:int(p)/spec.BlockTokens+1] {
			if blk < 0 || int(blk) >= spec.Blocks {
				return fmt.Errorf("batch row %d: block %d outside the cache's %d", i, blk, spec.Blocks)
			}
		}
	}
	return nil
}

// PagedKVSpec describes a paged KV cache: per layer, Blocks blocks of
// BlockTokens positions, each position holding KVHeads keys of KDim and
// values of VDim floats (with VInK the values are the first VDim floats
// of each key, as in KVSpec).
type PagedKVSpec struct {
	Layers, Blocks, BlockTokens, KVHeads, KDim, VDim int
	VInK                                             bool
}

// BytesPerBlock is the storage of one block over all layers at 4 bytes a
// value (what a memory budget divides by).
func (s PagedKVSpec) BytesPerBlock() int64 {
	per := s.KVHeads * s.KDim
	if !s.VInK {
		per += s.KVHeads * s.VDim
	}
	return int64(s.Layers) * int64(s.BlockTokens) * int64(per) * 4
}

// PagedKV is a backend-resident paged KV cache shared by the sequences of
// a batch; which blocks belong to whom is the caller's business (Batch).
type PagedKV interface {
	Spec() PagedKVSpec
	Bytes() int64
}

// Batcher is the capability of running one step over many sequences: a
// backend that has it serves continuous batching. Positions come per row;
// attention reads and writes the paged cache through the batch's tables.
type Batcher interface {
	NewPagedKV(spec PagedKVSpec) (PagedKV, error)
	// RopeRows is ApplyRope with a position per row.
	RopeRows(x Buffer, n, heads, headDim int, pos []int32, r *Rope)
	// PagedAttention stores k and v of every row at its position, then
	// writes causal attention of each row over positions 0..Pos[i] of its
	// sequence, as Attention does for one sequence.
	PagedAttention(out, q, k, v Buffer, kv PagedKV, layer int, b *Batch, heads int, scale float32)
}
