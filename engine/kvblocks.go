package engine

import (
	"container/list"
	"hash/maphash"
	"slices"
)

// blockTokens is the positions per KV block. 16 (vLLM's default) keeps
// the waste of a sequence's last, partly filled block small (at most 15
// positions) and lets prefix caching share any prompt that agrees for 16
// tokens, while a block is still long enough (16 × 576 floats for MLA,
// 16 × heads × head_dim otherwise) for the attention loops to stream it.
const blockTokens = 16

// blockPool hands out the blocks of a paged KV cache and keeps the prefix
// cache: a full block is keyed by the hash of its tokens and of every token
// before it, so sequences with a common prefix share its blocks. A block is
// free (never cached or evicted), live (held by sequences, refs > 0) or
// idle (cached, refs == 0: kept for reuse, evicted least recently used
// first when free blocks run out). Not safe for concurrent use (the
// scheduler's loop owns it).
type blockPool struct {
	refs   []int32
	free   []int32
	idle   *list.List              // idle cached blocks, least recently used first
	elem   map[int32]*list.Element // idle block -> its element
	byHash map[uint64]int32
	key    map[int32]blockKey // cached block -> its key
	live   int                // blocks with refs > 0
	seed   maphash.Seed
}

// blockKey identifies a cached block: the chained hash and the block's own
// tokens (compared on lookup, so a hash collision cannot share wrong KV).
type blockKey struct {
	hash   uint64
	parent uint64
	tokens []int
}

func newBlockPool(n int) *blockPool {
	p := &blockPool{refs: make([]int32, n), idle: list.New(), elem: map[int32]*list.Element{},
		byHash: map[uint64]int32{}, key: map[int32]blockKey{}, seed: maphash.MakeSeed()}
	for b := n - 1; b >= 0; b-- {
		p.free = append(p.free, int32(b))
	}
	return p
}

// Live is the number of blocks held by sequences.
func (p *blockPool) Live() int { return p.live }

// alloc returns a block for a sequence (refs 1), evicting the least
// recently used idle cached block when no free one is left.
func (p *blockPool) alloc() (int32, bool) {
	var b int32
	switch {
	case len(p.free) > 0:
		b = p.free[len(p.free)-1]
		p.free = p.free[:len(p.free)-1]
	case p.idle.Len() > 0:
		b = p.idle.Remove(p.idle.Front()).(int32)
		delete(p.elem, b)
		delete(p.byHash, p.key[b].hash)
		delete(p.key, b)
	default:
		return 0, false
	}
	p.refs[b] = 1
	p.live++
	return b, true
}

// release drops one reference; a cached block becomes idle, others free.
func (p *blockPool) release(b int32) {
	p.refs[b]--
	if p.refs[b] > 0 {
		return
	}
	p.live--
	if _, ok := p.key[b]; ok {
		p.elem[b] = p.idle.PushBack(b)
		return
	}
	p.free = append(p.free, b)
}

// hash chains a block's tokens onto the hash of the prefix before it.
func (p *blockPool) hash(parent uint64, tokens []int) uint64 {
	var h maphash.Hash
	h.SetSeed(p.seed)
	var buf [8]byte
	put := func(v uint64) {
		for i := range buf {
			buf[i] = byte(v >> (8 * i))
		}
		h.Write(buf[:])
	}
	put(parent)
	for _, t := range tokens {
		put(uint64(t))
	}
	return h.Sum64()
}

// lookup returns the cached block for tokens after the prefix hashed as
// parent, taking a reference, and its hash.
func (p *blockPool) lookup(parent uint64, tokens []int) (int32, uint64, bool) {
	h := p.hash(parent, tokens)
	b, ok := p.byHash[h]
	if !ok {
		return 0, h, false
	}
	if k := p.key[b]; k.parent != parent || !slices.Equal(k.tokens, tokens) {
		return 0, h, false
	}
	if e, idle := p.elem[b]; idle {
		p.idle.Remove(e)
		delete(p.elem, b)
		p.live++
	}
	p.refs[b]++
	return b, h, true
}

// register offers a full, live block for reuse under hash h; a block with
// the same key already cached wins (this one stays private).
func (p *blockPool) register(b int32, parent, h uint64, tokens []int) {
	if _, ok := p.byHash[h]; ok {
		return
	}
	if _, ok := p.key[b]; ok {
		return
	}
	p.byHash[h] = b
	p.key[b] = blockKey{hash: h, parent: parent, tokens: slices.Clone(tokens)}
}
