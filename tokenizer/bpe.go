package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"
)

// byteToRune is GPT-2's reversible map from bytes to printable runes:
// printable Latin-1 bytes map to themselves, the rest to U+0100 onwards.
var byteToRune, runeToByte = func() (b2r [256]rune, r2b map[rune]byte) {
	r2b = make(map[rune]byte, 256)
	n := 0
	for b := 0; b < 256; b++ {
		if b >= '!' && b <= '~' || b >= 0xA1 && b <= 0xAC || b >= 0xAE {
			b2r[b] = rune(b)
		} else {
			b2r[b] = rune(256 + n)
			n++
		}
		r2b[b2r[b]] = byte(b)
	}
	return
}()

func bytesToUnicode(s string) string {
	var b strings.Builder
	b.Grow(len(s) * 2)
	for i := 0; i < len(s); i++ {
		b.WriteRune(byteToRune[s[i]])
	}
	return b.String()
}

// unicodeToBytes inverts bytesToUnicode; ok is false when s holds a rune
// outside the byte alphabet.
func unicodeToBytes(s string) ([]byte, bool) {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		b, ok := runeToByte[r]
		if !ok {
			return nil, false
		}
		out = append(out, b)
	}
	return out, true
}

type mergeValue struct {
	rank  int32
	newID int32
}

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// bpe is the BPE model of tokenizer.json.
type bpe struct {
	vocab           map[string]int32 // model alphabet
	idToToken       []string
	merges          map[uint64]mergeValue
	unkID           int32 // -1 when none
	fuseUnk         bool
	byteFallback    bool
	ignoreMerges    bool
	contPrefix      string
	endSuffix       string
	byteFallbackIDs [256]int32 // <0xXX> ids, -1 when absent

	// byteLevel: words are raw bytes; initial symbols come from byteIDs and
	// whole-word lookups (ignore_merges only) from rawVocab, whose keys are
	// converted back to bytes.
	byteLevel bool
	byteIDs   [256]int32
	rawVocab  map[string]int32

	mu    sync.RWMutex
	cache map[string][]int32
}

// cacheCap bounds the per-word cache (HF uses 10k entries); words are
// only added while there is room, so memory stays bounded.
const cacheCap = 1 << 16

// cacheMaxWordLen keeps long words (rare, and a memory risk with hostile
// input) out of the cache, as HF's MAX_LENGTH does.
const cacheMaxWordLen = 256

type rawBPE struct {
	Type                    string           `json:"type"`
	Vocab                   map[string]int32 `json:"vocab"`
	Merges                  json.RawMessage  `json:"merges"`
	UnkToken                *string          `json:"unk_token"`
	FuseUnk                 bool             `json:"fuse_unk"`
	ByteFallback            bool             `json:"byte_fallback"`
	IgnoreMerges            bool             `json:"ignore_merges"`
	ContinuingSubwordPrefix *string          `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string          `json:"end_of_word_suffix"`
	Dropout                 *float64         `json:"dropout"`
}

func parseBPE(raw json.RawMessage) (*bpe, error) {
	var r rawBPE
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	if r.Type != "BPE" && !(r.Type == "" && r.Vocab != nil) {
		return nil, fmt.Errorf("model %q: unsupported (only BPE)", r.Type)
	}
	if r.Dropout != nil && *r.Dropout != 0 {
		return nil, fmt.Errorf("model BPE: dropout %v is unsupported (inference only)", *r.Dropout)
	}
	m := &bpe{
		vocab:        r.Vocab,
		unkID:        -1,
		fuseUnk:      r.FuseUnk,
		byteFallback: r.ByteFallback,
		ignoreMerges: r.IgnoreMerges,
		cache:        make(map[string][]int32),
	}
	if m.vocab == nil {
		m.vocab = map[string]int32{}
	}
	if r.ContinuingSubwordPrefix != nil {
		m.contPrefix = *r.ContinuingSubwordPrefix
	}
	if r.EndOfWordSuffix != nil {
		m.endSuffix = *r.EndOfWordSuffix
	}
	maxID := int32(-1)
	for tok, id := range m.vocab {
		if id < 0 {
			return nil, fmt.Errorf("model vocab: token %q has negative id %d", tok, id)
		}
		if id > maxID {
			maxID = id
		}
	}
	if maxID >= 1<<22 { // real vocabularies are < 300k; bounds the id table
		return nil, fmt.Errorf("model vocab: id %d is implausibly large", maxID)
	}
	m.idToToken = make([]string, maxID+1)
	for tok, id := range m.vocab {
		m.idToToken[id] = tok
	}
	if r.UnkToken != nil {
		id, ok := m.vocab[*r.UnkToken]
		if !ok {
			return nil, fmt.Errorf("model: unk_token %q not in vocab", *r.UnkToken)
		}
		m.unkID = id
	}
	for b := 0; b < 256; b++ {
		m.byteFallbackIDs[b] = -1
		if id, ok := m.vocab[fmt.Sprintf("<0x%02X>", b)]; ok {
			m.byteFallbackIDs[b] = id
		}
	}
	merges, err := parseMerges(r.Merges)
	if err != nil {
		return nil, err
	}
	m.merges = make(map[uint64]mergeValue, len(merges))
	prefixLen := len(m.contPrefix)
	for rank, mg := range merges {
		a, ok1 := m.vocab[mg[0]]
		b, ok2 := m.vocab[mg[1]]
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("model merges[%d] %q: token not in vocab", rank, mg[0]+" "+mg[1])
		}
		second := mg[1]
		if prefixLen > 0 && strings.HasPrefix(second, m.contPrefix) {
			second = second[prefixLen:]
		}
		n, ok := m.vocab[mg[0]+second]
		if !ok {
			return nil, fmt.Errorf("model merges[%d] %q: merged token not in vocab", rank, mg[0]+" "+mg[1])
		}
		// Like HF's HashMap collect, a duplicated pair keeps its last rank.
		m.merges[pairKey(a, b)] = mergeValue{rank: int32(rank), newID: n}
	}
	return m, nil
}

// parseMerges accepts both the "a b" string form and the ["a", "b"] form.
func parseMerges(raw json.RawMessage) ([][2]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var strs []string
	if err := json.Unmarshal(raw, &strs); err == nil {
		out := make([][2]string, len(strs))
		for i, s := range strs {
			a, b, ok := strings.Cut(s, " ")
			if !ok {
				return nil, fmt.Errorf("model merges[%d] %q: expected two space-separated tokens", i, s)
			}
			out[i] = [2]string{a, b}
		}
		return out, nil
	}
	var pairs [][]string
	if err := json.Unmarshal(raw, &pairs); err != nil {
		return nil, fmt.Errorf("model merges: expected a list of \"a b\" strings or [a, b] pairs: %w", err)
	}
	out := make([][2]string, len(pairs))
	for i, p := range pairs {
		if len(p) != 2 {
			return nil, fmt.Errorf("model merges[%d]: expected a pair, got %d items", i, len(p))
		}
		out[i] = [2]string{p[0], p[1]}
	}
	return out, nil
}

// enableByteLevel folds a trailing ByteLevel pre-tokenizer into the model.
func (m *bpe) enableByteLevel() error {
	if m.contPrefix != "" || m.endSuffix != "" {
		return fmt.Errorf("model BPE: continuing_subword_prefix/end_of_word_suffix with ByteLevel are unsupported")
	}
	m.byteLevel = true
	for b := 0; b < 256; b++ {
		id, ok := m.vocab[string(byteToRune[b])]
		if !ok {
			id = -1
		}
		m.byteIDs[b] = id
	}
	if !m.ignoreMerges {
		return nil // whole-word lookups are only needed with ignore_merges
	}
	m.rawVocab = make(map[string]int32, len(m.vocab))
	for tok, id := range m.vocab {
		if raw, ok := unicodeToBytes(tok); ok {
			m.rawVocab[string(raw)] = id
		}
	}
	return nil
}

// encodeWord appends the ids of one pre-tokenized word.
func (m *bpe) encodeWord(w string, dst []int) []int {
	if w == "" {
		return dst
	}
	m.mu.RLock()
	ids, ok := m.cache[w]
	m.mu.RUnlock()
	if !ok {
		ids = m.tokenizeWord(w)
		if len(w) < cacheMaxWordLen {
			m.mu.Lock()
			if len(m.cache) < cacheCap {
				m.cache[strings.Clone(w)] = ids
			}
			m.mu.Unlock()
		}
	}
	for _, id := range ids {
		dst = append(dst, int(id))
	}
	return dst
}

type symbol struct {
	id         int32
	prev, next int32
	len        int32 // 0 once merged away
}

func (m *bpe) tokenizeWord(w string) []int32 {
	if m.ignoreMerges {
		voc := m.vocab
		if m.byteLevel {
			voc = m.rawVocab
		}
		if id, ok := voc[w]; ok {
			return []int32{id}
		}
	}
	var buf [24]symbol // most words fit: no allocation
	syms := buf[:0]
	add := func(id int32, n int) {
		syms = append(syms, symbol{id: id, prev: int32(len(syms)) - 1, next: int32(len(syms)) + 1, len: int32(n)})
	}
	if m.byteLevel {
		for i := 0; i < len(w); i++ {
			if id := m.byteIDs[w[i]]; id >= 0 {
				add(id, 1)
			} else if m.unkID >= 0 {
				add(m.unkID, 1)
			}
		}
	} else {
		unkID, unkLen := int32(-1), 0
		for i := 0; i < len(w); {
			_, n := utf8.DecodeRuneInString(w[i:])
			s := w[i : i+n]
			if i > 0 && m.contPrefix != "" {
				s = m.contPrefix + s
			}
			if i+n == len(w) && m.endSuffix != "" {
				s += m.endSuffix
			}
			if id, ok := m.vocab[s]; ok {
				if unkID >= 0 {
					add(unkID, unkLen)
					unkID = -1
				}
				add(id, n)
			} else if fb, ok := m.fallback(s); ok {
				// Like HF, a pending unk is not flushed before byte tokens.
				for _, id := range fb {
					add(id, 1)
				}
			} else if m.unkID >= 0 {
				switch {
				case unkID >= 0 && m.fuseUnk:
					unkLen += n
				case unkID >= 0:
					add(unkID, unkLen)
					unkLen = n
				default:
					unkID, unkLen = m.unkID, n
				}
			}
			i += n
		}
		if unkID >= 0 {
			add(unkID, unkLen)
		}
	}
	if len(syms) == 0 {
		return nil
	}
	syms[len(syms)-1].next = -1
	if len(syms) <= 12 {
		// Short words: same algorithm by linear search, on the stack.
		var ids [12]int32
		n := len(syms)
		for i := range syms {
			ids[i] = syms[i].id
		}
		n = m.mergeSmall(ids[:n])
		return append([]int32(nil), ids[:n]...)
	}
	m.mergeAll(syms)
	n := 0
	for i := 0; i != -1; i = int(syms[i].next) {
		n++
	}
	out := make([]int32, 0, n)
	for i := 0; i != -1; i = int(syms[i].next) {
		out = append(out, syms[i].id)
	}
	return out
}

func (m *bpe) fallback(s string) ([]int32, bool) {
	if !m.byteFallback {
		return nil, false
	}
	out := make([]int32, 0, len(s))
	for i := 0; i < len(s); i++ {
		id := m.byteFallbackIDs[s[i]]
		if id < 0 {
			return nil, false
		}
		out = append(out, id)
	}
	return out, true
}

type mergeItem struct {
	pos   int32
	rank  int32
	newID int32
}

// mergeHeap is a binary min-heap by (rank, pos), hand-rolled to avoid
// container/heap's interface boxing (one allocation per push).
type mergeHeap []mergeItem

func (h mergeHeap) less(i, j int) bool {
	if h[i].rank != h[j].rank {
		return h[i].rank < h[j].rank
	}
	return h[i].pos < h[j].pos
}

func (h *mergeHeap) push(x mergeItem) {
	*h = append(*h, x)
	q := *h
	for i := len(q) - 1; i > 0; {
		p := (i - 1) / 2
		if !q.less(i, p) {
			break
		}
		q[i], q[p] = q[p], q[i]
		i = p
	}
}

func (h *mergeHeap) pop() mergeItem {
	q := *h
	top := q[0]
	n := len(q) - 1
	q[0] = q[n]
	q = q[:n]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && q.less(l, m) {
			m = l
		}
		if r < n && q.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		q[i], q[m] = q[m], q[i]
		i = m
	}
	*h = q
	return top
}

// mergeAll applies merges lowest rank first (ties: leftmost), exactly as
// HF tokenizers' Word::merge_all.
func (m *bpe) mergeAll(syms []symbol) {
	if len(syms) < 2 {
		return
	}
	h := make(mergeHeap, 0, len(syms))
	for i := 0; i+1 < len(syms); i++ {
		if v, ok := m.merges[pairKey(syms[i].id, syms[i+1].id)]; ok {
			h.push(mergeItem{pos: int32(i), rank: v.rank, newID: v.newID})
		}
	}
	for len(h) > 0 {
		top := h.pop()
		s := &syms[top.pos]
		if s.len == 0 || s.next == -1 {
			continue
		}
		ri := s.next
		right := syms[ri]
		if v, ok := m.merges[pairKey(s.id, right.id)]; !ok || v.newID != top.newID {
			continue
		}
		s.id = top.newID
		s.len += right.len
		s.next = right.next
		syms[ri].len = 0
		if right.next != -1 {
			syms[right.next].prev = top.pos
		}
		if s.prev != -1 {
			p := syms[s.prev]
			if v, ok := m.merges[pairKey(p.id, s.id)]; ok {
				h.push(mergeItem{pos: s.prev, rank: v.rank, newID: v.newID})
			}
		}
		if s.next != -1 {
			n := syms[s.next]
			if v, ok := m.merges[pairKey(s.id, n.id)]; ok {
				h.push(mergeItem{pos: top.pos, rank: v.rank, newID: v.newID})
			}
		}
	}
}

// mergeSmall applies merges to ids in place by repeated linear search for
// the lowest-ranked (then leftmost) pair; it returns the new length. It
// gives the same result as mergeAll's heap.
func (m *bpe) mergeSmall(ids []int32) int {
	n := len(ids)
	for n > 1 {
		best, bestRank, bestNew := -1, int32(1<<31-1), int32(0)
		for i := 0; i+1 < n; i++ {
			if v, ok := m.merges[pairKey(ids[i], ids[i+1])]; ok && v.rank < bestRank {
				best, bestRank, bestNew = i, v.rank, v.newID
			}
		}
		if best < 0 {
			break
		}
		ids[best] = bestNew
		copy(ids[best+1:n-1], ids[best+2:n])
		n--
	}
	return n
}

// resetCache empties the per-word cache (benchmarks measure cold encodes).
func (m *bpe) resetCache() {
	m.mu.Lock()
	m.cache = make(map[string][]int32)
	m.mu.Unlock()
}
