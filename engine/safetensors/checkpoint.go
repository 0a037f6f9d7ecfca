// Package safetensors reads Hugging Face safetensors checkpoints: a single
// file, a directory holding model.safetensors, or shards listed by
// model.safetensors.index.json. Files are memory-mapped read-only where the
// platform allows (tensors are then used in place, never copied) and read
// into memory otherwise; embedded models load from byte slices or an fs.FS.
//
// Everything in a file is validated before any tensor is handed out: header
// length, JSON, dtype names, shape × dtype size against the byte span, spans
// inside the data section and not overlapping, and for sharded checkpoints
// that every index entry names an existing shard containing the tensor.
// Errors name the file and, where one is involved, the tensor.
//
// A mapped file must not be truncated or rewritten while its Checkpoint is
// open: the kernel would fault (SIGBUS) on the missing pages.
package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Errors callers can test for with errors.Is.
var (
	// ErrFormat marks a malformed file or index.
	ErrFormat = errors.New("invalid safetensors")
	// ErrNotFound marks a tensor missing from the checkpoint.
	ErrNotFound = errors.New("not found")
	// ErrClosed is returned by Tensor after Close.
	ErrClosed = errors.New("checkpoint closed")
)

// Standard file names of a Hugging Face checkpoint directory.
const (
	SingleFileName = "model.safetensors"
	IndexFileName  = "model.safetensors.index.json"
)

// Checkpoint is a set of tensors from one or more safetensors files. It is
// safe for concurrent use, except that Close must not run concurrently with
// other methods; tensor data is invalid after Close.
type Checkpoint struct {
	where    string // file, index or directory the tensors came from
	files    []*file
	tensors  map[string]*Tensor
	metadata map[string]string
}

// source abstracts where files come from: an OS directory (mapped) or an
// fs.FS (read into memory).
type source struct {
	where    string
	path     func(name string) string
	open     func(name string) (*file, error)
	readFile func(name string) ([]byte, error)
	readDir  func() ([]fs.DirEntry, error)
}

// Open opens the checkpoint in directory dir: the shards listed by
// model.safetensors.index.json when present, else model.safetensors, else
// every *.safetensors file in dir (tensor names must then be unique across
// files). A path to a single file is accepted too.
func Open(dir string) (*Checkpoint, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if st.Mode().IsRegular() {
		return OpenFile(dir)
	}
	join := func(name string) string { return filepath.Join(dir, name) }
	return openSource(source{
		where:    dir,
		path:     join,
		open:     func(name string) (*file, error) { return openFile(join(name)) },
		readFile: func(name string) ([]byte, error) { return os.ReadFile(join(name)) },
		readDir:  func() ([]fs.DirEntry, error) { return os.ReadDir(dir) },
	})
}

// OpenFS opens a checkpoint laid out as for Open at the root of fsys (use
// fs.Sub for a subdirectory). Files are read into memory; nothing is mapped.
func OpenFS(fsys fs.FS) (*Checkpoint, error) {
	return openSource(source{
		where: "fs",
		path:  func(name string) string { return name },
		open: func(name string) (*file, error) {
			b, err := fs.ReadFile(fsys, name)
			if err != nil {
				return nil, fmt.Errorf("safetensors: %w", err)
			}
			return parseFile(name, b)
		},
		readFile: func(name string) ([]byte, error) { return fs.ReadFile(fsys, name) },
		readDir:  func() ([]fs.DirEntry, error) { return fs.ReadDir(fsys, ".") },
	})
}

// OpenFile opens one safetensors file.
func OpenFile(path string) (*Checkpoint, error) {
	f, err := openFile(path)
	if err != nil {
		return nil, err
	}
	return newCheckpoint(path, []*file{f})
}

// FromBytes reads a safetensors file held in data (for example go:embed'ded);
// name is used in error messages. Tensors alias data, which must not be
// modified while the Checkpoint is in use.
func FromBytes(name string, data []byte) (*Checkpoint, error) {
	f, err := parseFile(name, data)
	if err != nil {
		return nil, err
	}
	return newCheckpoint(name, []*file{f})
}

func openSource(src source) (*Checkpoint, error) {
	idx, err := src.readFile(IndexFileName)
	switch {
	case err == nil:
		return openIndexed(src, idx)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if f, err := src.open(SingleFileName); err == nil {
		return newCheckpoint(f.path, []*file{f})
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	ents, err := src.readDir()
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	var names []string
	for _, e := range ents {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".safetensors") {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s: %w: no %s, %s or other *.safetensors file", src.where, ErrNotFound, IndexFileName, SingleFileName)
	}
	slices.Sort(names)
	files, err := openAll(src, names)
	if err != nil {
		return nil, err
	}
	where := src.where
	if len(files) == 1 {
		where = files[0].path
	}
	return newCheckpoint(where, files)
}

// openAll opens the named files, closing those already open on failure.
func openAll(src source, names []string) ([]*file, error) {
	var files []*file
	for _, n := range names {
		f, err := src.open(n)
		if err != nil {
			closeAll(files)
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

func closeAll(files []*file) error {
	var errs []error
	for _, f := range files {
		errs = append(errs, f.close())
	}
	return errors.Join(errs...)
}

// newCheckpoint exposes every tensor of files; a name in two files is an
// error (shards without an index must partition the tensors).
func newCheckpoint(where string, files []*file) (*Checkpoint, error) {
	c := &Checkpoint{where: where, files: files, tensors: make(map[string]*Tensor), metadata: make(map[string]string)}
	for _, f := range files {
		for name, t := range f.tensors {
			if prev, ok := c.tensors[name]; ok {
				closeAll(files)
				return nil, fmt.Errorf("%s: %w: tensor %q: also in %s", f.path, ErrFormat, name, prev.File)
			}
			c.tensors[name] = t
		}
		addMetadata(c.metadata, f.metadata)
	}
	return c, nil
}

// addMetadata merges file metadata; the first file wins on conflicts.
func addMetadata(dst, src map[string]string) {
	for k, v := range src {
		if _, ok := dst[k]; !ok {
			dst[k] = v
		}
	}
}

// index is model.safetensors.index.json.
type index struct {
	Metadata  map[string]any    `json:"metadata"`
	WeightMap map[string]string `json:"weight_map"`
}

// openIndexed opens the shards an index lists and checks that each holds
// the tensors mapped to it. Only listed tensors are exposed.
func openIndexed(src source, data []byte) (*Checkpoint, error) {
	ipath := src.path(IndexFileName)
	var idx index
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("%s: %w: not valid JSON: %w", ipath, ErrFormat, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("%s: %w: no weight_map entries", ipath, ErrFormat)
	}
	shardSet := make(map[string]bool)
	for name, shard := range idx.WeightMap {
		// Shards live beside the index; refuse paths that could escape dir.
		if shard == "" || strings.ContainsAny(shard, `/\`) || shard == "." || shard == ".." {
			return nil, fmt.Errorf("%s: %w: tensor %q: shard %q is not a file name in the checkpoint directory", ipath, ErrFormat, name, shard)
		}
		shardSet[shard] = true
	}
	shards := slices.Sorted(maps.Keys(shardSet))
	files := make(map[string]*file, len(shards))
	var opened []*file
	for _, s := range shards {
		f, err := src.open(s)
		if err != nil {
			closeAll(opened)
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("%s: shard %q is missing: %w", ipath, s, fs.ErrNotExist)
			}
			return nil, err
		}
		files[s] = f
		opened = append(opened, f)
	}
	c := &Checkpoint{where: ipath, files: opened, tensors: make(map[string]*Tensor, len(idx.WeightMap)), metadata: make(map[string]string)}
	for _, name := range slices.Sorted(maps.Keys(idx.WeightMap)) {
		f := files[idx.WeightMap[name]]
		t, ok := f.tensors[name]
		if !ok {
			closeAll(opened)
			return nil, fmt.Errorf("%s: %w: tensor %q: the index maps it to this shard, which does not contain it (index %s)",
				f.path, ErrFormat, name, ipath)
		}
		c.tensors[name] = t
	}
	for _, f := range opened {
		addMetadata(c.metadata, f.metadata)
	}
	return c, nil
}

// Tensor returns the named tensor. A missing tensor is an error wrapping
// ErrNotFound and naming the checkpoint. The returned view is the caller's
// own copy (its Shape may be modified); its Data is shared and read-only.
func (c *Checkpoint) Tensor(name string) (*Tensor, error) {
	if c.tensors == nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", c.where, name, ErrClosed)
	}
	t, ok := c.tensors[name]
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q: %w", c.where, name, ErrNotFound)
	}
	cp := *t
	cp.Shape = slices.Clone(t.Shape)
	return &cp, nil
}

// Has reports whether the checkpoint holds the named tensor.
func (c *Checkpoint) Has(name string) bool {
	_, ok := c.tensors[name]
	return ok
}

// Names returns the tensor names, sorted.
func (c *Checkpoint) Names() []string {
	return slices.Sorted(maps.Keys(c.tensors))
}

// Len returns the number of tensors.
func (c *Checkpoint) Len() int { return len(c.tensors) }

// Metadata returns a copy of the files' __metadata__ maps merged (the first
// file, in name order, wins on a conflicting key).
func (c *Checkpoint) Metadata() map[string]string {
	return maps.Clone(c.metadata)
}

// Files returns the paths of the files the tensors come from.
func (c *Checkpoint) Files() []string {
	out := make([]string, len(c.files))
	for i, f := range c.files {
		out[i] = f.path
	}
	return out
}

// String names the checkpoint (its file, index or directory).
func (c *Checkpoint) String() string { return c.where }

// Close unmaps the files. Tensor data obtained earlier must not be used
// afterwards. Close is idempotent.
func (c *Checkpoint) Close() error {
	files := c.files
	c.files, c.tensors = nil, nil
	return closeAll(files)
}
