//go:build linux && cgo

package cuda

import (
	"fmt"
	"math"
	"runtime"
	"unsafe"

	"github.com/deepseek-go/deepseek-go/kernels"
)

var _ kernels.RowSampler = (*Backend)(nil)

// sampleTile is the kernels' SAMP_TILE: entries per block of the row passes.
const sampleTile = 1024

// sampleScratchBytes bounds the per-row scratch of one launch sequence
// (penalised row and candidate list, 12 bytes an entry): a batch of more
// rows than fit runs in groups, still with one upload and one download.
const sampleScratchBytes = 64 << 20

// sampleArgs is one row's settings as the kernels read them (SampArgs in
// kernels.cu: the same fields, order and 48-byte layout).
type sampleArgs struct {
	row, hoff, nh, topK  int32
	pen, invT, cut, topP float32
	minP                 float32
	_                    int32
	u                    float64
}

// Both fail to compile unless sampleArgs is exactly SampArgs' 48 bytes.
var (
	_ [48 - unsafe.Sizeof(sampleArgs{})]byte
	_ [unsafe.Sizeof(sampleArgs{}) - 48]byte
)

// sampleBufs are the sampling scratch: rows × n entries (w, cv, ci) and
// rows × tiles (tmax ...) of per-row slices, out and args for a call.
type sampleBufs struct {
	elems, tiles, rows      int // capacities
	w, cv, ci               devptr
	tmax, targ, tcnt, tpass devptr
	tmass, cn               devptr
	out                     devptr // one id per row of the call
	outCap                  int
	args                    devptr // the call's sampleArgs, then its history ids
	argsCap                 int    // bytes
	host                    []sampleArgs
}

// sampleScratch makes room for groups of g rows of n entries.
func (b *Backend) sampleScratch(n, g int) (*sampleBufs, error) {
	s := &b.samp
	nb := (n + sampleTile - 1) / sampleTile
	if s.elems >= n*g && s.tiles >= nb*g && s.rows >= g {
		return s, nil
	}
	b.putAll(s.w, s.cv, s.ci, s.tmax, s.targ, s.tcnt, s.tpass, s.tmass, s.cn)
	elems, tiles, rows := max(s.elems, n*g), max(s.tiles, nb*g), max(s.rows, g)
	s.elems, s.tiles, s.rows = 0, 0, 0
	s.w, s.cv, s.ci, s.tmax, s.targ, s.tcnt, s.tpass, s.tmass, s.cn = 0, 0, 0, 0, 0, 0, 0, 0, 0
	var err error
	get := func(bytes int) devptr {
		if err != nil {
			return 0
		}
		var p devptr
		p, err = b.alloc.get(int64(bytes))
		return p
	}
	w, cv, ci := get(elems*4), get(elems*4), get(elems*4)
	tmax, targ, tcnt, tpass, tmass := get(tiles*4), get(tiles*4), get(tiles*4), get(tiles*4), get(tiles*8)
	cn := get(rows * 4)
	if err != nil {
		b.putAll(w, cv, ci, tmax, targ, tcnt, tpass, tmass)
		return nil, err
	}
	s.w, s.cv, s.ci, s.tmax, s.targ, s.tcnt, s.tpass, s.tmass, s.cn = w, cv, ci, tmax, targ, tcnt, tpass, tmass, cn
	s.elems, s.tiles, s.rows = elems, tiles, rows
	return s, nil
}

// putAll returns the non-zero allocations ps to the allocator.
func (b *Backend) putAll(ps ...devptr) {
	for _, p := range ps {
		if p != 0 {
			b.alloc.put(p)
		}
	}
}

// growDev makes *p hold at least need units of size bytes, growing to at
// least floor units and doubling so that slowly rising needs rarely regrow.
func (b *Backend) growDev(p *devptr, capacity *int, need, floor, size int) error {
	if *capacity >= need {
		return nil
	}
	if *p != 0 {
		b.alloc.put(*p)
	}
	c := max(need, floor, 2*(*capacity))
	d, err := b.alloc.get(int64(c * size))
	if err != nil {
		*p, *capacity = 0, 0
		return err
	}
	*p, *capacity = d, c
	return nil
}

// sampleCut is the log-probability gap below the row's largest logit
// within which every token the filters can keep lies (+Inf: no bound).
// top-p: a token whose probability is below (1-p)/n of the largest's, with
// all like it, holds less than 1-p of any mass that includes the largest, so
// the nucleus never needs it (the host sampler's cut too); min-p: its own
// threshold. Top-k alone tries 20 nats and the kernels list every candidate
// when fewer than k lie within. The small margin covers rounding: the
// exact tests run on the list.
func sampleCut(p kernels.SampleParams, n int) float32 {
	cut := math.Inf(1)
	if p.TopP > 0 && p.TopP < 1 {
		cut = math.Log(float64(n) / (1 - float64(p.TopP)))
	}
	if p.MinP > 0 {
		cut = min(cut, -math.Log(float64(p.MinP)))
	}
	if p.TopK > 0 && math.IsInf(cut, 1) {
		cut = 20
	}
	return float32(cut + 0.01)
}

// Sample picks the next token from the logits x[off:off+n] on the device
// with engine.Sampler's rules (repetition penalty over history, then greedy
// when p.Temperature is 0, else temperature, top-k, top-p, min-p and an
// inverse-CDF draw over the survivors in id order at the uniform u in
// [0, 1)). Only the id crosses to the host. It waits for pending work and
// reports its errors. It is SampleRows of one row.
func (b *Backend) Sample(x kernels.Buffer, off, n int, history []int, p kernels.SampleParams, u float64) (int, error) {
	var id [1]int32
	row := [1]kernels.SampleRow{{History: history, Params: p, U: u}}
	err := b.SampleRows(id[:], x, off, n, row[:])
	return int(id[0]), err
}

// SampleRows implements kernels.RowSampler: Sample's kernels with a grid
// row per sampled row (blockIdx.y), the rows' settings and penalty
// histories in one upload, and one download of the ids. It waits for
// pending work and reports its errors.
func (b *Backend) SampleRows(dst []int32, x kernels.Buffer, off, n int, rows []kernels.SampleRow) error {
	if len(dst) != len(rows) {
		return fmt.Errorf("cuda: SampleRows: %d ids for %d rows", len(dst), len(rows))
	}
	for i, r := range rows {
		if err := r.Params.Validate(); err != nil {
			return fmt.Errorf("cuda: SampleRows row %d: %w", i, err)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	xb, err := b.readBuf(x)
	if xb == nil {
		return err
	}
	if len(rows) == 0 {
		return nil
	}
	if off < 0 || n <= 0 || off+n > xb.n {
		return fmt.Errorf("cuda: SampleRows of [%d,+%d) in buffer of %d", off, n, xb.n)
	}
	for i, r := range rows {
		if r.Row < 0 || r.Row >= (xb.n-off)/n {
			return fmt.Errorf("cuda: SampleRows row %d: logits row %d of %d entries at %d outside buffer of %d", i, r.Row, n, off, xb.n)
		}
	}
	if b.capturing {
		return fmt.Errorf("cuda: SampleRows during graph capture")
	}
	g := min(len(rows), max(1, sampleScratchBytes/(12*n)), 65535) // grid.y
	sb, err := b.sampleScratch(n, g)
	if err != nil {
		return fmt.Errorf("cuda: SampleRows scratch: %w", err)
	}
	if err := b.growDev(&sb.out, &sb.outCap, len(rows), 256, 4); err != nil {
		return fmt.Errorf("cuda: SampleRows output: %w", err)
	}

	// The upload: the rows' sampleArgs, then their history ids (those in
	// the vocabulary, as the host sampler) in sampleArgs-sized units.
	penalised := func(r kernels.SampleRow) bool {
		return r.Params.RepeatPenalty != 0 && r.Params.RepeatPenalty != 1
	}
	nh := 0
	for _, r := range rows {
		if penalised(r) {
			for _, id := range r.History {
				if id >= 0 && id < n {
					nh++
				}
			}
		}
	}
	const argSize = int(unsafe.Sizeof(sampleArgs{}))
	units := len(rows) + (nh*4+argSize-1)/argSize
	if cap(sb.host) < units {
		sb.host = make([]sampleArgs, units)
	}
	host := sb.host[:units]
	hist := unsafe.Slice((*int32)(unsafe.Pointer(unsafe.SliceData(host[len(rows):]))), (units-len(rows))*argSize/4)
	nb := (n + sampleTile - 1) / sampleTile
	h := 0
	for i, r := range rows {
		p := r.Params
		a := sampleArgs{row: int32(r.Row), hoff: int32(h), pen: p.RepeatPenalty, topP: p.TopP, minP: p.MinP, u: r.U}
		if penalised(r) {
			for _, id := range r.History {
				if id >= 0 && id < n {
					hist[h] = int32(id)
					h++
				}
			}
		}
		a.nh = int32(h) - a.hoff
		if p.Temperature > 0 {
			a.invT = 1 / p.Temperature
			a.cut = sampleCut(p, n)
		}
		if p.TopK < n {
			a.topK = int32(p.TopK)
		}
		host[i] = a
	}
	if err := b.growDev(&sb.args, &sb.argsCap, units*argSize, 64<<10, 1); err != nil {
		return fmt.Errorf("cuda: SampleRows settings: %w", err)
	}
	b.fail(b.x.htod(sb.args, unsafe.Pointer(unsafe.SliceData(host)), int64(units*argSize)))

	x0 := bp(xb, off)
	for g0 := 0; g0 < len(rows); g0 += g {
		gr := min(g, len(rows)-g0)
		ra := sb.args + devptr(g0*argSize)
		grid, block := dim3{nb, gr, 1}, dim3{256, 1, 1}
		b.launch("sample_tiles", grid, block, 0, func(a *args) {
			a.ptr(sb.w).ptr(sb.tmax).ptr(sb.targ).ptr(sb.tcnt).ptr(sb.cn).ptr(x0).i32(n).ptr(sb.args + devptr(len(rows)*argSize)).ptr(ra)
		})
		sampled := false
		for _, a := range host[g0 : g0+gr] {
			sampled = sampled || a.invT != 0
		}
		if sampled { // greedy rows skip these (the kernels return at once)
			b.launch("sample_count", grid, block, 0, func(a *args) {
				a.ptr(sb.tpass).ptr(sb.tmass).ptr(sb.w).i32(n).ptr(sb.tmax).i32(nb).ptr(ra)
			})
			b.launch("sample_compact", grid, block, 0, func(a *args) {
				a.ptr(sb.cv).ptr(sb.ci).ptr(sb.cn).ptr(sb.w).i32(n).ptr(sb.tpass).ptr(sb.tcnt).ptr(sb.tmax).i32(nb).ptr(ra)
			})
		}
		b.launch("sample_logits", dim3{1, gr, 1}, dim3{1024, 1, 1}, 0, func(a *args) {
			a.ptr(sb.out + devptr(g0*4)).ptr(sb.cv).ptr(sb.ci).ptr(sb.tmax).ptr(sb.targ).ptr(sb.cn).ptr(sb.tcnt).ptr(sb.tmass).
				i32(n).i32(nb).ptr(ra)
		})
	}
	b.fail(b.x.dtoh(unsafe.Pointer(&dst[0]), sb.out, int64(len(rows))*4))
	runtime.KeepAlive(x)
	return b.err
}
