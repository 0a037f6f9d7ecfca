package engine

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deepseek-go/deepseek-go/engine/layers"
	"github.com/deepseek-go/deepseek-go/engine/safetensors"
	"github.com/deepseek-go/deepseek-go/kernels"
	"github.com/deepseek-go/deepseek-go/kernels/cpu"
	"github.com/deepseek-go/deepseek-go/tokenizer"
)

// Option configures Load, LoadFS and New.
type Option func(*options)

type options struct {
	device   string
	int8     bool
	threads  int
	progress func(done, total int64)
	backend  kernels.Backend
	mla      string // MLA attention path (deepseek.go's WithMLA)
	tok      *tokenizer.Tokenizer
	shards   int // tensor-parallel shards (shard.go's WithShards)
	chunk    int // WithPrefillChunk
}

// WithDevice picks the backend: "auto" (default: an accelerator when one is
// registered and usable, else CPU), "cpu" or "cuda".
func WithDevice(name string) Option { return func(o *options) { o.device = name } }

// WithInt8 quantises projection weights to per-row int8 at load.
func WithInt8(on bool) Option { return func(o *options) { o.int8 = on } }

// WithThreads sets the CPU backend's goroutines per op (0 = GOMAXPROCS).
func WithThreads(n int) Option { return func(o *options) { o.threads = n } }

// WithProgress is called after each tensor is loaded with bytes done and
// the checkpoint's total bytes.
func WithProgress(f func(done, total int64)) Option { return func(o *options) { o.progress = f } }

// WithBackend runs the model on an existing backend (shared, not closed by
// Model.Close); it overrides WithDevice.
func WithBackend(be kernels.Backend) Option { return func(o *options) { o.backend = be } }

// WithPrefillChunk sets the most prompt tokens one forward pass of a
// Session takes (Generate, Chat, Session.Last); 0 (the default) is the
// backend's preference (kernels.ChunkPreferrer: 512 on CUDA), else 128.
// Larger chunks read the weights fewer times per prompt and hold
// proportionally larger activations. The Scheduler's steps are sized by
// its TokenBudget instead.
func WithPrefillChunk(n int) Option { return func(o *options) { o.chunk = n } }

// WithTokenizer attaches a tokenizer (for New; Load and LoadFS read
// tokenizer.json from the checkpoint when present and this is not set).
func WithTokenizer(t *tokenizer.Tokenizer) Option { return func(o *options) { o.tok = t } }

// openBackend resolves WithDevice: "cpu" is always available, other names
// are the accelerators registered in package kernels (device.go links
// them in), and "auto" tries each of those before falling back to the CPU.
func openBackend(o *options) (kernels.Backend, error) {
	switch o.device {
	case "", "auto":
		var errs []error
		for _, name := range kernels.Devices() {
			be, _, err := kernels.OpenDevice(name, o.threads)
			if err == nil {
				return be, nil
			}
			errs = append(errs, err)
		}
		if len(errs) > 0 {
			noteFallback(errors.Join(errs...))
		}
		return cpu.New(o.threads), nil
	case "cpu":
		return cpu.New(o.threads), nil
	}
	be, ok, err := kernels.OpenDevice(o.device, o.threads)
	if !ok {
		return nil, fmt.Errorf("device %q not available in this build; available: %v", o.device, append([]string{"auto", "cpu"}, kernels.Devices()...))
	}
	if err != nil {
		return nil, fmt.Errorf("opening device %q: %w", o.device, err)
	}
	return be, nil
}

// Block is one transformer layer: it updates the hidden state x [n, hidden]
// of tokens at positions pos0..pos0+n-1 in place (residuals included),
// using the context's KV cache and scratch buffers (a Session).
type Block interface {
	Forward(ctx layers.Context, x kernels.Buffer, n, pos0 int) error
}

// Model is a loaded checkpoint. It is immutable after loading and safe for
// concurrent use; per-call state lives in Sessions.
type Model struct {
	cfg     *Config
	fam     Family
	be      kernels.Backend
	ownBE   bool
	closer  func() error
	tok     *tokenizer.Tokenizer
	genRoom int // generated tokens a generation's first session holds (initialGenRoom; tests shrink it)
	chunk   int // rows a session's forward pass takes at most (WithPrefillChunk)

	embed  kernels.Matrix
	norm   kernels.Buffer
	lmHead kernels.Matrix
	blocks []Block
	kvSpec kernels.KVSpec
	info   Info
	// tp is set on each shard of a sharded model, shards on the model
	// that drives them (shard.go).
	tp      *shardRole
	shards  []*Model
	shardMu sync.Mutex // one sharded forward at a time: the group is one channel
	closeMu sync.Mutex
	closed  atomic.Bool // checked by sessions: weights may be unmapped
}

// Info describes a loaded model.
type Info struct {
	Architecture  string           // model_type
	Backend       string           // backend name
	Params        int64            // parameters loaded
	BytesByDType  map[string]int64 // backend bytes of weights, by storage dtype
	KVBytesPerTok int64            // KV cache bytes per token position
	Int8          bool
	Load          time.Duration
}

// Load opens a Hugging Face checkpoint directory (config.json,
// generation_config.json, *.safetensors with or without an index).
func Load(dir string, opts ...Option) (*Model, error) {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	return loadCheckpoint(cfg, os.DirFS(dir), dir, func() (*safetensors.Checkpoint, error) { return safetensors.Open(dir) }, opts)
}

// LoadFS loads a checkpoint laid out as for Load at the root of fsys (for
// example an embedded model); files are read into memory, not mapped.
func LoadFS(fsys fs.FS, opts ...Option) (*Model, error) {
	cfg, err := LoadConfigFS(fsys, "fs")
	if err != nil {
		return nil, err
	}
	return loadCheckpoint(cfg, fsys, "fs", func() (*safetensors.Checkpoint, error) { return safetensors.OpenFS(fsys) }, opts)
}

// loadCheckpoint is the rest of Load and LoadFS once the config is read:
// the tokenizer from fsys (name in errors), then the model over the
// checkpoint open returns, which is closed if building the model fails.
func loadCheckpoint(cfg *Config, fsys fs.FS, name string, open func() (*safetensors.Checkpoint, error), opts []Option) (*Model, error) {
	tok, err := loadTokenizer(fsys, name)
	if err != nil {
		return nil, err
	}
	ck, err := open()
	if err != nil {
		return nil, err
	}
	opts = append([]Option{WithTokenizer(tok)}, opts...)
	m, err := newModel(cfg, ck, checkpointBytes(ck), ck.Close, opts)
	if err != nil {
		ck.Close()
		return nil, err
	}
	return m, nil
}

// New builds a model from a config and any TensorSource (a MapSource, a
// RandomSource for synthetic full-size benchmarks, a checkpoint).
func New(cfg *Config, src TensorSource, opts ...Option) (*Model, error) {
	if cfg == nil || src == nil {
		return nil, fmt.Errorf("engine.New: nil config or source")
	}
	return newModel(cfg, src, 0, nil, opts)
}

func checkpointBytes(ck *safetensors.Checkpoint) int64 {
	var n int64
	for _, name := range ck.Names() {
		if t, err := ck.Tensor(name); err == nil {
			n += int64(len(t.Data))
		}
	}
	return n
}

func newModel(cfg *Config, src TensorSource, total int64, closer func() error, opts []Option) (*Model, error) {
	start := time.Now()
	var o options
	for _, f := range opts {
		f(&o)
	}
	fam, ok := lookupFamily(cfg.ModelType)
	if !ok {
		return nil, fmt.Errorf("model_type %q not supported", cfg.ModelType)
	}
	if o.mla != "" { // a copy: the caller's Config stays as parsed
		c := *cfg
		c.MLA = o.mla
		cfg = &c
	}
	if o.shards < 0 {
		return nil, fmt.Errorf("WithShards(%d): want >= 1", o.shards)
	}
	if o.chunk < 0 {
		return nil, fmt.Errorf("WithPrefillChunk(%d): want >= 0", o.chunk)
	}
	if o.shards > 1 {
		return newShardedModel(cfg, fam, src, total, closer, &o, start)
	}
	be, own := o.backend, false
	if be == nil {
		var err error
		if be, err = openBackend(&o); err != nil {
			return nil, err
		}
		own = true
	}
	if err := checkDeviceMemory(be, total); err != nil {
		if own {
			be.Close()
		}
		return nil, err
	}
	m := &Model{cfg: cfg, fam: fam, be: be, ownBE: own, closer: closer, tok: o.tok, genRoom: initialGenRoom}
	if err := m.build(src, total, &o); err != nil {
		m.Close()
		return nil, err
	}
	m.info.Load = time.Since(start)
	return m, nil
}

// build loads the weights onto m.be (a shard's share of them when m.tp is
// set) and fills blocks, kvSpec and info.
func (m *Model) build(src TensorSource, total int64, o *options) error {
	cfg := m.cfg
	m.chunk = o.chunk
	if m.chunk == 0 {
		m.chunk = defaultChunk
		if cp, ok := m.be.(kernels.ChunkPreferrer); ok && cp.PreferredChunk() > 0 {
			m.chunk = cp.PreferredChunk()
		}
	}
	b := newBuilder(cfg, layers.NewBuilder(m.be, src, o.int8, o.progress, total))
	if m.tp != nil {
		b.Rank, b.Shards = m.tp.rank, m.tp.size
	}
	if err := m.loadCommon(b); err != nil {
		return err
	}
	blocks, err := m.fam.Build(b)
	if err != nil {
		return err
	}
	if len(blocks) != cfg.NumLayers {
		return fmt.Errorf("family %s built %d blocks for num_hidden_layers %d", cfg.ModelType, len(blocks), cfg.NumLayers)
	}
	m.blocks = blocks
	m.kvSpec = m.fam.KVSpec(cfg)
	if m.tp != nil {
		m.kvSpec.KVHeads = shardKVHeads(m.kvSpec.KVHeads, m.tp.size)
	}
	kv := m.kvSpec
	perTok := int64(kv.Layers*kv.KVHeads) * int64(kv.KDim) * 4
	if !kv.VInK {
		perTok += int64(kv.Layers*kv.KVHeads) * int64(kv.VDim) * 4
	}
	m.info = Info{Architecture: cfg.ModelType, Backend: m.be.Name(), Params: b.Params(),
		BytesByDType: b.Bytes(), KVBytesPerTok: perTok, Int8: o.int8}
	return nil
}

// loadCommon loads embeddings, final norm and the output head.
func (m *Model) loadCommon(b *Builder) error {
	c := m.cfg
	vr := layers.RowRange{Lo: 0, Hi: c.VocabSize} // a shard's slice of the vocabulary (shard.go)
	if m.tp != nil {
		vr = m.tp.vocab
	}
	var err error
	if m.embed, err = b.MatrixRows(false, []MatSpec{{Name: "model.embed_tokens.weight", Rows: c.VocabSize, Cols: c.HiddenSize}}, vr); err != nil {
		return err
	}
	if m.norm, err = b.Vector("model.norm.weight", c.HiddenSize); err != nil {
		return err
	}
	head := "lm_head.weight"
	if c.TieWordEmbeddings {
		head = "model.embed_tokens.weight"
	}
	if m.lmHead, err = b.MatrixRows(b.Int8, []MatSpec{{Name: head, Rows: c.VocabSize, Cols: c.HiddenSize}}, vr); err != nil {
		return err
	}
	if c.TieWordEmbeddings {
		b.AddParams(-int64(c.VocabSize * c.HiddenSize)) // counted once
	}
	return nil
}

// Close releases the weights (and the backend when the model opened it).
// Sessions must not be used afterwards.
func (m *Model) Close() error {
	m.closeMu.Lock()
	defer m.closeMu.Unlock()
	if m.closed.Load() {
		return nil
	}
	m.closed.Store(true)
	var err error
	for _, sm := range m.shards {
		if e := sm.Close(); err == nil {
			err = e
		}
	}
	if m.ownBE && m.be != nil {
		if e := m.be.Close(); err == nil {
			err = e
		}
	}
	if m.closer != nil {
		if e := m.closer(); err == nil {
			err = e
		}
	}
	return err
}

// Tokenizer returns the attached tokenizer, or nil when the checkpoint has
// no tokenizer.json and none was given with WithTokenizer.
func (m *Model) Tokenizer() *tokenizer.Tokenizer { return m.tok }

// loadTokenizer reads tokenizer.json (+ tokenizer_config.json) when present;
// a checkpoint without one loads fine and has a nil tokenizer.
func loadTokenizer(fsys fs.FS, label string) (*tokenizer.Tokenizer, error) {
	tj, err := fs.ReadFile(fsys, "tokenizer.json")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(label, "tokenizer.json"), err)
	}
	tc, err := fs.ReadFile(fsys, "tokenizer_config.json")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(label, "tokenizer_config.json"), err)
	}
	t, err := tokenizer.FromBytes(tj, tc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(label, "tokenizer.json"), err)
	}
	return t, nil
}

// Config returns the model's configuration (read only).
func (m *Model) Config() *Config { return m.cfg }

// Info describes the loaded model.
func (m *Model) Info() Info {
	i := m.info
	i.BytesByDType = maps.Clone(i.BytesByDType) // callers may not mutate ours
	return i
}

// Backend returns the backend the model runs on.
func (m *Model) Backend() kernels.Backend { return m.be }
