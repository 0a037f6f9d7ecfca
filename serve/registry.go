package serve

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/deepseek-go/deepseek-go/engine"
	"github.com/deepseek-go/deepseek-go/tokenizer"
)

// Source says where a model's checkpoint is.
type Source struct {
	Name string
	Dir  string // a Hugging Face checkpoint directory, or
	FS   fs.FS  // an embedded checkpoint (used when Dir is "")
}

func (s Source) fsys() fs.FS {
	if s.Dir != "" {
		return os.DirFS(s.Dir)
	}
	return s.FS
}

// Replica is one loaded copy of a model, ready to generate.
type Replica struct {
	Gen        Generator
	Tokenizer  *tokenizer.Tokenizer
	ContextLen int            // max_position_embeddings
	VocabSize  int            // ids a prompt may hold
	Defaults   engine.Request // sampling from generation_config.json
	Bytes      int64          // memory the replica holds (weights and KV budget)
	Device     string         // where it runs, e.g. "cpu" or "cuda:NVIDIA H100" (logged)
}

// Opener loads replica number i of a model. It is called on a background
// goroutine, at most once at a time per model.
type Opener func(ctx context.Context, src Source, i int) (*Replica, error)

// entry states.
const (
	unloaded = iota
	loading
	loaded
)

// entry is one model the registry knows, loaded or not.
type entry struct {
	src      Source
	state    int
	done     chan struct{} // closed when the load in progress ends
	err      error         // why the last load failed
	reps     []*replicaSlot
	bytes    int64
	inflight int // engine requests holding a lease
	lastUsed time.Time
	startup  bool // loading at server start: requests get 503, not a wait
}

// replicaSlot is a replica with its outstanding-request count for the
// least-outstanding-requests balancer.
type replicaSlot struct {
	*Replica
	outstanding int
}

// registry holds the served models: static ones (-m) and those found in a
// models directory, loaded on first use and evicted least recently used
// when the memory budget is short. All fields are guarded by mu.
type registry struct {
	mu        sync.Mutex
	entries   map[string]*entry
	modelsDir string
	replicas  int
	budget    int64 // bytes; 0 = unlimited
	capacity  int   // engine requests in flight per replica (running + waiting)
	used      int64
	open      Opener
	log       *slog.Logger
	closed    bool
	next      int // round-robin start among equally loaded replicas
}

func newRegistry(o *Options, log *slog.Logger) (*registry, error) {
	r := &registry{
		entries:   map[string]*entry{},
		modelsDir: o.ModelsDir,
		replicas:  max(1, o.Replicas),
		budget:    o.MemoryBudget,
		capacity:  o.MaxRunning + o.MaxWaiting,
		open:      o.Open,
		log:       log,
	}
	for _, s := range o.Models {
		// Served names may look like Hugging Face ids ("org/model");
		// only models-dir names must be plain folder names.
		if s.Name == "" || len(s.Name) > 200 || strings.ContainsFunc(s.Name, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return nil, fmt.Errorf("invalid model name %q", s.Name)
		}
		if _, dup := r.entries[s.Name]; dup {
			return nil, fmt.Errorf("model %q is given twice", s.Name)
		}
		if s.Dir == "" && s.FS == nil {
			return nil, fmt.Errorf("model %q: no directory", s.Name)
		}
		r.entries[s.Name] = &entry{src: s}
	}
	if o.ModelsDir != "" {
		if st, err := os.Stat(o.ModelsDir); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("--models-dir %s: not a readable directory", o.ModelsDir)
		}
	}
	return r, nil
}

// checkModelName rejects names that cannot be a models-dir folder or a
// route key (path separators, dot names, spaces).
func checkModelName(name string) error {
	if name == "" || name == "." || name == ".." || strings.HasPrefix(name, ".") ||
		strings.ContainsAny(name, "/\\ \t\n\x00") || len(name) > 200 {
		return fmt.Errorf("invalid model name %q", name)
	}
	return nil
}

// lookup returns the entry of name, adding a models-dir model on first
// sight. Called with mu held.
func (r *registry) lookup(name string) *entry {
	if e, ok := r.entries[name]; ok {
		return e
	}
	if r.modelsDir == "" || checkModelName(name) != nil {
		return nil
	}
	dir := filepath.Join(r.modelsDir, name)
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err != nil {
		return nil
	}
	e := &entry{src: Source{Name: name, Dir: dir}}
	r.entries[name] = e
	return e
}

// names lists every model that can be requested.
func (r *registry) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	for n := range r.entries {
		seen[n] = true
	}
	if r.modelsDir != "" {
		des, _ := os.ReadDir(r.modelsDir)
		for _, d := range des {
			if d.IsDir() && checkModelName(d.Name()) == nil {
				if _, err := os.Stat(filepath.Join(r.modelsDir, d.Name(), "config.json")); err == nil {
					seen[d.Name()] = true
				}
			}
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// ready reports whether some model is loaded.
func (r *registry) ready() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.entries {
		if e.state == loaded {
			return true
		}
	}
	return false
}

// lease is n engine-request slots on one model, each on a replica picked
// by least outstanding requests.
type lease struct {
	r    *registry
	e    *entry
	reps []*replicaSlot
	once sync.Once
}

// info is the model's first replica (tokenizer, context, defaults).
func (l *lease) info() *Replica { return l.e.reps[0].Replica }

// release returns the slots.
func (l *lease) release() {
	l.once.Do(func() {
		l.r.mu.Lock()
		defer l.r.mu.Unlock()
		for _, rep := range l.reps {
			rep.outstanding--
		}
		l.e.inflight -= len(l.reps)
		l.e.lastUsed = time.Now()
	})
}

// acquire returns n slots on model name, loading it first if needed.
// Errors are *apiError: 404 unknown model, 429 queue full, 503 loading
// failed or memory budget exhausted.
func (r *registry) acquire(ctx context.Context, name string, n int) (*lease, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.lookup(name)
	if e == nil {
		return nil, errModelNotFound(name)
	}
	waited := false
	for {
		if r.closed {
			return nil, errUnavailable(1, "the server is shutting down")
		}
		switch e.state {
		case loaded:
			limit := r.capacity * len(e.reps)
			if n > limit {
				return nil, invalidf("n", "the request asks for %d generations (prompts × n); model %q takes at most %d at once", n, name, limit)
			}
			if e.inflight+n > limit {
				return nil, &apiError{Status: 429, Type: "rate_limit_error", Code: "queue_full", RetryAfter: 1,
					Message: fmt.Sprintf("model %q has %d requests in flight, its limit (running + waiting); retry later", name, e.inflight)}
			}
			l := &lease{r: r, e: e, reps: make([]*replicaSlot, n)}
			for i := range l.reps {
				l.reps[i] = r.pick(e)
				l.reps[i].outstanding++
			}
			e.inflight += n
			e.lastUsed = time.Now()
			return l, nil
		case loading:
			if e.startup {
				return nil, errUnavailable(2, "model %q is still loading", name)
			}
			done := e.done
			r.mu.Unlock()
			select {
			case <-done:
			case <-ctx.Done():
				r.mu.Lock()
				return nil, ctx.Err()
			}
			r.mu.Lock()
			waited = true
		case unloaded:
			if waited && e.err != nil {
				return nil, errUnavailable(5, "model %q failed to load: %v", name, e.err)
			}
			if err := r.startLoad(e); err != nil {
				return nil, err
			}
		}
	}
}

// pick returns the replica with the fewest outstanding requests, starting
// the scan at a rotating index so ties spread. Called with mu held.
func (r *registry) pick(e *entry) *replicaSlot {
	r.next++
	best := e.reps[r.next%len(e.reps)]
	for i := range e.reps {
		rep := e.reps[(r.next+i)%len(e.reps)]
		if rep.outstanding < best.outstanding {
			best = rep
		}
	}
	return best
}

// startLoad makes room within the budget and loads e in the background.
// Called with mu held.
func (r *registry) startLoad(e *entry) error {
	need := estimateBytes(e.src) * int64(r.replicas)
	var evict []*entry
	if r.budget > 0 {
		free := r.budget - r.used
		// Idle models, least recently used first.
		var idle []*entry
		busy := false
		for _, o := range r.entries {
			switch {
			case o == e || o.state == unloaded:
			case o.state == loaded && o.inflight == 0:
				idle = append(idle, o)
			default:
				busy = true
			}
		}
		slices.SortFunc(idle, func(a, b *entry) int { return a.lastUsed.Compare(b.lastUsed) })
		for free < need && len(idle) > 0 {
			evict = append(evict, idle[0])
			free += idle[0].bytes
			idle = idle[1:]
		}
		if free < need && (busy || len(idle) > 0) {
			// Nothing idle is left to evict: retry once busy models finish.
			return errUnavailable(5, "model %q needs about %d bytes; the memory budget of %d bytes is held by busy models", e.src.Name, need, r.budget)
		}
	}
	for _, o := range evict {
		r.log.Info("evicting idle model", "model", o.src.Name, "bytes", o.bytes, "idle", time.Since(o.lastUsed).Round(time.Second))
		r.used -= o.bytes
		o.state = unloaded
	}
	e.state = loading
	e.err = nil
	e.done = make(chan struct{})
	e.bytes = need
	r.used += need
	go r.load(e, evict)
	return nil
}

// load closes the evicted models, then opens e's replicas.
func (r *registry) load(e *entry, evict []*entry) {
	for _, o := range evict {
		closeReplicas(o.reps, r.log)
	}
	t0 := time.Now()
	var reps []*replicaSlot
	var err error
	var bytes int64
	for i := 0; i < r.replicas; i++ {
		var rep *Replica
		rep, err = r.open(context.Background(), e.src, i)
		if err != nil {
			err = fmt.Errorf("replica %d: %w", i, err)
			break
		}
		bytes += rep.Bytes
		reps = append(reps, &replicaSlot{Replica: rep})
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	defer close(e.done)
	e.startup = false
	r.used -= e.bytes
	if err == nil && r.closed {
		err = errors.New("the server is shutting down")
	}
	if err != nil {
		closeReplicas(reps, r.log)
		e.state, e.err, e.bytes = unloaded, err, 0
		r.log.Error("loading model failed", "model", e.src.Name, "err", err)
		return
	}
	if bytes == 0 {
		bytes = e.bytes
	}
	e.state, e.reps, e.bytes = loaded, reps, bytes
	r.used += bytes
	e.lastUsed = time.Now()
	devs := make([]string, len(reps))
	for i, rep := range reps {
		devs[i] = rep.Device
	}
	r.log.Info("model loaded", "model", e.src.Name, "replicas", len(reps), "devices", strings.Join(devs, ","), "bytes", bytes, "took", time.Since(t0).Round(time.Millisecond))
}

func closeReplicas(reps []*replicaSlot, log *slog.Logger) {
	for _, rep := range reps {
		if err := rep.Gen.Close(); err != nil {
			log.Warn("closing a model replica", "err", err)
		}
	}
}

// preload starts loading every static model (not the models-dir ones,
// which load on first use) and waits until they are loaded or ctx ends.
func (r *registry) preload(ctx context.Context) error {
	r.mu.Lock()
	var waits []*entry
	for _, e := range r.entries {
		if e.state == unloaded {
			if err := r.startLoad(e); err != nil {
				r.mu.Unlock()
				return err
			}
			e.startup = true
		}
		waits = append(waits, e)
	}
	r.mu.Unlock()
	var errs []error
	for _, e := range waits {
		r.mu.Lock()
		done := e.done
		r.mu.Unlock()
		if done == nil {
			continue
		}
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
		r.mu.Lock()
		if e.err != nil {
			errs = append(errs, fmt.Errorf("model %s: %w", e.src.Name, e.err))
		}
		r.mu.Unlock()
	}
	return errors.Join(errs...)
}

// modelStats is one loaded model's load summed over its replicas.
type modelStats struct {
	name string
	engine.SchedulerStats
}

// stats reads every loaded model's generator stats.
func (r *registry) stats() []modelStats {
	r.mu.Lock()
	type job struct {
		name string
		reps []*replicaSlot
	}
	var jobs []job
	for n, e := range r.entries {
		if e.state == loaded {
			jobs = append(jobs, job{n, e.reps})
		}
	}
	r.mu.Unlock()
	out := make([]modelStats, 0, len(jobs))
	for _, j := range jobs {
		ms := modelStats{name: j.name}
		for _, rep := range j.reps {
			s := rep.Gen.Stats()
			ms.Running += s.Running
			ms.Waiting += s.Waiting
			ms.KVBlocksUsed += s.KVBlocksUsed
			ms.KVBlocksTotal += s.KVBlocksTotal
			ms.PrefixHitBlocks += s.PrefixHitBlocks
			ms.PrefixQueryBlocks += s.PrefixQueryBlocks
		}
		out = append(out, ms)
	}
	return out
}

// close unloads every model; loads in progress close theirs when done.
func (r *registry) close() {
	r.mu.Lock()
	r.closed = true
	var reps []*replicaSlot
	for _, e := range r.entries {
		if e.state == loaded {
			reps = append(reps, e.reps...)
			e.state, e.reps = unloaded, nil
		}
	}
	r.used = 0
	r.mu.Unlock()
	closeReplicas(reps, r.log)
}

// estimateBytes is a model's weight size on disk: what loading it costs
// before KV caches, read without loading it.
func estimateBytes(s Source) int64 {
	fsys := s.fsys()
	if fsys == nil {
		return 0
	}
	names, _ := fs.Glob(fsys, "*.safetensors")
	var n int64
	for _, name := range names {
		if st, err := fs.Stat(fsys, name); err == nil {
			n += st.Size()
		}
	}
	return n
}
