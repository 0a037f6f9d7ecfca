package safetensors

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// file is one parsed safetensors file held in memory (mapped or read).
type file struct {
	path     string // as given to Open, for error messages
	data     []byte
	release  func() error // unmaps; nil when data is an ordinary slice
	tensors  map[string]*Tensor
	metadata map[string]string
}

// parseFile validates data as a safetensors file and builds its tensor
// views. Every error wraps ErrFormat and names path.
func parseFile(path string, data []byte) (*file, error) {
	fail := func(err error) (*file, error) {
		return nil, fmt.Errorf("%s: %w: %w", path, ErrFormat, err)
	}
	if len(data) < 8 {
		return fail(fmt.Errorf("file is %d bytes, too short for the 8-byte header length (truncated?)", len(data)))
	}
	n := binary.LittleEndian.Uint64(data)
	if n > MaxHeaderSize {
		return fail(fmt.Errorf("header length %d exceeds the %d-byte limit", n, MaxHeaderSize))
	}
	if n > uint64(len(data)-8) {
		return fail(fmt.Errorf("header length %d runs past the end of the %d-byte file (truncated?)", n, len(data)))
	}
	hdrEnd := 8 + int(n)
	h, err := parseHeader(data[8:hdrEnd], len(data)-hdrEnd)
	if err != nil {
		return fail(err)
	}
	f := &file{path: path, data: data, metadata: h.metadata, tensors: make(map[string]*Tensor, len(h.entries))}
	for _, e := range h.entries {
		b, end := hdrEnd+e.begin, hdrEnd+e.end
		f.tensors[e.name] = &Tensor{
			Name:  e.name,
			DType: e.dtype,
			Shape: e.shape,
			Data:  data[b:end:end], // capped: an append can never reach the next tensor
			File:  path,
		}
	}
	return f, nil
}

// openFile maps (or, where mapping is unavailable, reads) and parses path.
func openFile(path string) (*file, error) {
	fd, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	defer fd.Close()
	st, err := fd.Stat()
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w: not a regular file", path, ErrFormat)
	}
	size := st.Size()
	if size < 8 {
		// Too small to map usefully (and mmap of 0 bytes fails); parseFile
		// gives the truncation error.
		b, err := io.ReadAll(fd)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return parseFile(path, b)
	}
	if int64(int(size)) != size {
		return nil, fmt.Errorf("%s: %w: %d bytes does not fit in memory on this platform", path, ErrFormat, size)
	}
	data, release, err := mapFile(fd, int(size))
	if err != nil {
		// No mmap here (or it failed on this file system): read it instead.
		data = make([]byte, size)
		if _, err := io.ReadFull(fd, data); err != nil {
			return nil, fmt.Errorf("%s: reading: %w", path, err)
		}
		release = nil
	}
	f, err := parseFile(path, data)
	if err != nil {
		if release != nil {
			err = errors.Join(err, release())
		}
		return nil, err
	}
	f.release = release
	return f, nil
}

// close releases the mapping, if any.
func (f *file) close() error {
	f.tensors = nil
	if f.release == nil {
		f.data = nil
		return nil
	}
	r := f.release
	f.release, f.data = nil, nil
	if err := r(); err != nil {
		return fmt.Errorf("%s: unmapping: %w", f.path, err)
	}
	return nil
}
