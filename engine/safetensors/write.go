package safetensors

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// Write writes tensors as one safetensors file: a header sorted by name and
// padded with spaces to a multiple of 8 bytes (so every tensor of 8-byte
// aligned size starts aligned, as the reference writer does), then the data
// in name order. Tensor.File is ignored. Names must be unique and not
// "__metadata__"; every Data must hold exactly shape × dtype bytes.
func Write(w io.Writer, tensors []*Tensor, metadata map[string]string) error {
	ts := slices.Clone(tensors)
	slices.SortFunc(ts, func(a, b *Tensor) int { return strings.Compare(a.Name, b.Name) })
	type record struct {
		DType       DType `json:"dtype"`
		Shape       []int `json:"shape"`
		DataOffsets []int `json:"data_offsets"`
	}
	hdr := make(map[string]any, len(ts)+1)
	if len(metadata) > 0 {
		hdr[metadataKey] = metadata
	}
	off := 0
	for i, t := range ts {
		if t.Name == metadataKey || t.Name == "" {
			return fmt.Errorf("safetensors: write: tensor %q: reserved or empty name", t.Name)
		}
		if i > 0 && ts[i-1].Name == t.Name {
			return fmt.Errorf("safetensors: write: tensor %q: given twice", t.Name)
		}
		if t.DType.Size() == 0 {
			return fmt.Errorf("safetensors: write: tensor %q: unknown dtype %q", t.Name, t.DType)
		}
		n := t.DType.Size()
		for _, d := range t.Shape {
			if d < 0 {
				return fmt.Errorf("safetensors: write: tensor %q: negative dimension in %v", t.Name, t.Shape)
			}
			n *= d
		}
		if n != len(t.Data) {
			return fmt.Errorf("safetensors: write: tensor %q: shape %v of %s needs %d bytes, have %d", t.Name, t.Shape, t.DType, n, len(t.Data))
		}
		shape := t.Shape
		if shape == nil {
			shape = []int{} // a scalar: "shape": [] rather than null
		}
		hdr[t.Name] = record{DType: t.DType, Shape: shape, DataOffsets: []int{off, off + n}}
		off += n
	}
	js, err := json.Marshal(hdr)
	if err != nil {
		return fmt.Errorf("safetensors: write: header: %w", err)
	}
	if pad := (8 - len(js)%8) % 8; pad > 0 {
		js = append(js, strings.Repeat(" ", pad)...)
	}
	if len(js) > MaxHeaderSize {
		return fmt.Errorf("safetensors: write: header of %d bytes exceeds the %d-byte limit", len(js), MaxHeaderSize)
	}
	bw := bufio.NewWriter(w)
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(js)))
	bw.Write(lenBuf[:])
	bw.Write(js)
	for _, t := range ts {
		bw.Write(t.Data)
	}
	if err := bw.Flush(); err != nil { // bufio keeps the first write error
		return fmt.Errorf("safetensors: write: %w", err)
	}
	return nil
}

// WriteFile writes tensors to path (see Write), replacing any existing file.
func WriteFile(path string, tensors []*Tensor, metadata map[string]string) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("%s: %w", path, cerr))
		}
	}()
	if err := Write(f, tensors, metadata); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
