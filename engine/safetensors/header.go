package safetensors

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"unicode/utf8"
)

// MaxHeaderSize is the largest JSON header accepted (100 MB), as in the
// reference implementation: it bounds the memory a hostile file can claim.
const MaxHeaderSize = 100 << 20

// metadataKey is the reserved header key holding free-form string metadata.
const metadataKey = "__metadata__"

// maxDim bounds a single dimension so shapes always fit an int, even for
// empty tensors whose byte span does not limit the other dimensions.
const maxDim = min(uint64(math.MaxInt), 1<<40)

// entry is one validated tensor record of a header. begin and end are byte
// offsets into the data section (after the 8-byte length and the JSON).
type entry struct {
	name       string
	dtype      DType
	shape      []int
	begin, end int
}

// header is a parsed and validated safetensors header.
type header struct {
	entries  []entry // sorted by begin offset
	metadata map[string]string
}

// rawEntry mirrors a header record; pointers and nil slices tell a missing
// field from a zero one.
type rawEntry struct {
	DType       *string  `json:"dtype"`
	Shape       []uint64 `json:"shape"`
	DataOffsets []uint64 `json:"data_offsets"`
}

// parseHeader parses and validates the JSON header js of a file whose data
// section is dataSize bytes long: known dtypes, shape × dtype size equal to
// the byte span, spans inside the data section and not overlapping. Errors
// name the tensor but not the file; the caller adds the file.
func parseHeader(js []byte, dataSize int) (*header, error) {
	if !utf8.Valid(js) {
		return nil, errors.New("header is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("header is not valid JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("header is not a JSON object (starts with %v)", tok)
	}
	h := &header{}
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("header is not valid JSON: %w", err)
		}
		name, ok := tok.(string)
		if !ok { // json.Decoder only yields string keys inside objects
			return nil, fmt.Errorf("header is not valid JSON: key %v", tok)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("header is not valid JSON at %q: %w", name, err)
		}
		if seen[name] {
			return nil, fmt.Errorf("tensor %q: listed twice in the header", name)
		}
		seen[name] = true
		if name == metadataKey {
			if err := json.Unmarshal(raw, &h.metadata); err != nil {
				return nil, fmt.Errorf("%s: want an object of strings: %w", metadataKey, err)
			}
			continue
		}
		e, err := parseEntry(name, raw, dataSize)
		if err != nil {
			return nil, err
		}
		h.entries = append(h.entries, e)
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, fmt.Errorf("header is not valid JSON: %w", err)
	}
	// Only whitespace may follow (writers pad the header with spaces).
	if tok, err := dec.Token(); err != io.EOF {
		if err != nil {
			return nil, fmt.Errorf("header has trailing data: %w", err)
		}
		return nil, fmt.Errorf("header has trailing data after the object: %v", tok)
	}
	if err := checkOverlap(h.entries); err != nil {
		return nil, err
	}
	return h, nil
}

// parseEntry decodes and validates one tensor record.
func parseEntry(name string, raw json.RawMessage, dataSize int) (entry, error) {
	fail := func(format string, a ...any) (entry, error) {
		return entry{}, fmt.Errorf("tensor %q: %s", name, fmt.Sprintf(format, a...))
	}
	var r rawEntry
	if err := json.Unmarshal(raw, &r); err != nil {
		return fail("bad record %s: %v", clip(raw), err)
	}
	switch {
	case r.DType == nil:
		return fail("no dtype")
	case r.Shape == nil:
		return fail("no shape")
	case r.DataOffsets == nil:
		return fail("no data_offsets")
	}
	dt := DType(*r.DType)
	size := dt.Size()
	if size == 0 {
		return fail("unknown dtype %q", *r.DType)
	}
	if len(r.DataOffsets) != 2 {
		return fail("data_offsets has %d values, want [begin, end]", len(r.DataOffsets))
	}
	begin, end := r.DataOffsets[0], r.DataOffsets[1]
	if begin > end {
		return fail("data_offsets [%d, %d] end before they begin", begin, end)
	}
	if end > uint64(dataSize) {
		return fail("data_offsets [%d, %d] run past the %d-byte data section (truncated file?)", begin, end, dataSize)
	}
	// Multiply with an overflow check: a dimension product larger than the
	// data section can never match a valid span.
	shape := make([]int, len(r.Shape))
	n := uint64(size)
	for i, d := range r.Shape {
		if d > maxDim {
			return fail("dimension %d of shape %v is too large", i, r.Shape)
		}
		shape[i] = int(d)
		if d != 0 && n > math.MaxUint64/d {
			n = math.MaxUint64 // saturate; cannot equal a real span
			continue
		}
		n *= d
	}
	if n != end-begin {
		return fail("shape %v of %s needs %s bytes but data_offsets [%d, %d] hold %d",
			r.Shape, dt, sizeString(n), begin, end, end-begin)
	}
	return entry{name: name, dtype: dt, shape: shape, begin: int(begin), end: int(end)}, nil
}

// checkOverlap sorts entries by offset and rejects overlapping spans.
// Empty tensors occupy no bytes and overlap nothing.
func checkOverlap(es []entry) error {
	slices.SortFunc(es, func(a, b entry) int {
		if a.begin != b.begin {
			return a.begin - b.begin
		}
		if a.end != b.end {
			return a.end - b.end
		}
		return strings.Compare(a.name, b.name)
	})
	prev := -1
	for i, e := range es {
		if e.begin == e.end {
			continue
		}
		if prev >= 0 && e.begin < es[prev].end {
			p := es[prev]
			return fmt.Errorf("tensor %q: data_offsets [%d, %d] overlap tensor %q at [%d, %d]",
				e.name, e.begin, e.end, p.name, p.begin, p.end)
		}
		prev = i
	}
	return nil
}

func sizeString(n uint64) string {
	if n == math.MaxUint64 {
		return "more than 2^64"
	}
	return fmt.Sprint(n)
}

// clip shortens raw JSON for an error message.
func clip(b []byte) string {
	const max = 80
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}
