package safetensors

import (
	"encoding/binary"
	"testing"
)

// FuzzParseHeader feeds arbitrary headers to the parser, then checks that
// whatever it accepts is safe to slice: every span inside the data section,
// sized exactly shape × dtype, sorted and disjoint. The same bytes also go
// through parseFile, which must agree. The seed corpus in
// testdata/fuzz/FuzzParseHeader holds real fixture headers and the bad
// cases of TestBadFiles, so plain `go test` runs them.
func FuzzParseHeader(f *testing.F) {
	f.Add([]byte(`{"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}`), uint32(16))
	f.Add([]byte(`{"__metadata__": {"format": "pt"}, "a": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}`), uint32(6))
	f.Fuzz(func(t *testing.T, js []byte, dataSize uint32) {
		size := int(dataSize)
		h, err := parseHeader(js, size)
		if err != nil {
			if h != nil {
				t.Fatal("header returned with an error")
			}
		} else {
			end := 0
			for i, e := range h.entries {
				if e.begin < 0 || e.begin > e.end || e.end > size {
					t.Fatalf("entry %q span [%d, %d] outside %d bytes", e.name, e.begin, e.end, size)
				}
				n := e.dtype.Size()
				if n == 0 {
					t.Fatalf("entry %q has unknown dtype %q", e.name, e.dtype)
				}
				for _, d := range e.shape {
					if d < 0 {
						t.Fatalf("entry %q has negative dim", e.name)
					}
					n *= d
				}
				if n != e.end-e.begin {
					t.Fatalf("entry %q: %d bytes for shape %v, span %d", e.name, n, e.shape, e.end-e.begin)
				}
				if i > 0 && e.begin < h.entries[i-1].begin {
					t.Fatalf("entries not sorted at %q", e.name)
				}
				if e.begin < e.end {
					if e.begin < end {
						t.Fatalf("entry %q overlaps", e.name)
					}
					end = e.end
				}
			}
		}

		if size > 1<<16 {
			return // too large to allocate as a file on every run
		}
		file := binary.LittleEndian.AppendUint64(nil, uint64(len(js)))
		file = append(file, js...)
		file = append(file, make([]byte, size)...)
		ff, ferr := parseFile("fuzz.safetensors", file)
		if (ferr == nil) != (err == nil) && len(js) <= MaxHeaderSize {
			t.Fatalf("parseHeader error %v but parseFile error %v", err, ferr)
		}
		if ferr != nil {
			return
		}
		for name, tn := range ff.tensors {
			if len(tn.Data) != tn.NumElements()*tn.DType.Size() {
				t.Fatalf("tensor %q: %d bytes for shape %v", name, len(tn.Data), tn.Shape)
			}
			if tn.DType.IsFloat() {
				if _, err := tn.Float32(); err != nil {
					t.Fatalf("tensor %q: %v", name, err)
				}
			} else if _, err := tn.Int64s(); err != nil && tn.DType != U64 {
				t.Fatalf("tensor %q: %v", name, err)
			}
		}
	})
}
