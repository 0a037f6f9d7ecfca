package kernels

import (
	"errors"
	"fmt"
	"sort"
	"sync"
)

// DeviceOpener opens an accelerator backend; threads is the host-side
// parallelism hint (WithThreads).
type DeviceOpener func(threads int) (Backend, error)

// devices holds the accelerators linked into the binary. It is written by
// RegisterDevice from package init functions only (as database/sql drivers
// register), so a binary's set of devices is fixed before main runs.
var devices = struct {
	sync.RWMutex
	m map[string]DeviceOpener
}{m: map[string]DeviceOpener{}}

// RegisterDevice makes an accelerator available under name (e.g. "cuda");
// call it from the backend package's init. Registering a name twice is a
// programming error and panics, as in database/sql.Register.
func RegisterDevice(name string, open DeviceOpener) {
	devices.Lock()
	defer devices.Unlock()
	if _, dup := devices.m[name]; dup || name == "cpu" || name == "auto" {
		panic(fmt.Sprintf("kernels: device %q registered twice or reserved", name))
	}
	devices.m[name] = open
}

// Devices lists the registered accelerators, sorted.
func Devices() []string {
	devices.RLock()
	defer devices.RUnlock()
	names := make([]string, 0, len(devices.m))
	for k := range devices.m {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// OpenDevice opens the registered accelerator called name; ok is false
// when none is registered under that name.
func OpenDevice(name string, threads int) (be Backend, ok bool, err error) {
	devices.RLock()
	open, ok := devices.m[name]
	devices.RUnlock()
	if !ok {
		return nil, false, nil
	}
	be, err = open(threads)
	return be, true, err
}

// Optional capabilities a backend may have besides Batcher; model code
// asks for them with a type assertion and has a host path when absent.

// MemInfoer reports device memory (the KV budget and load-time checks).
type MemInfoer interface {
	MemInfo() (free, total int64, err error)
}

// StepGraph is a captured one-token decode step that replays at later
// positions.
type StepGraph interface {
	Replay(id, pos int) error
	Close() error
}

// StepCapturer records the ops fn issues as one decode step of token id at
// position pos (maxPos bounds later replays) and runs it once.
type StepCapturer interface {
	CaptureDecodeStep(id, pos, maxPos int, fn func(Backend) error) (StepGraph, error)
}

// DeviceSampler samples the next token on the device (the engine
// sampler's rules, drawing in id order at the given uniform variate), so
// only the id crosses to the host.
type DeviceSampler interface {
	Sample(x Buffer, off, n int, history []int, p SampleParams, u float64) (int, error)
}

// SampleRow is one row of a RowSampler call: which row of the logits, the
// ids its repetition penalty covers, its settings and its uniform variate
// (the arguments of DeviceSampler.Sample for that row).
type SampleRow struct {
	Row     int
	History []int
	Params  SampleParams
	U       float64
}

// RowSampler samples several rows of logits in one launch sequence and
// one download: dst[i] is the id DeviceSampler.Sample(x, off+rows[i].Row*n,
// n, rows[i].History, rows[i].Params, rows[i].U) returns (len(dst) ==
// len(rows)), so a batch's sampled sequences cost one round trip, not one
// each.
type RowSampler interface {
	SampleRows(dst []int32, x Buffer, off, n int, rows []SampleRow) error
}

// ChunkPreferrer is a backend's preferred prompt chunk: the most rows one
// forward pass of a single sequence should take. Every pass reads every
// weight it uses (for a MoE layer, every expert the chunk routes to), so a
// device whose GEMMs have the arithmetic to spare wants more rows per pass
// than the CPU's cache-sized tiles; the engine's default is 128.
type ChunkPreferrer interface {
	PreferredChunk() int
}

// Counter reports the device work a backend has issued since it opened:
// kernel launches (a library GEMM call or a graph replay counts as one) and
// host synchronisations (the host waiting for the device). Benchmarks take
// the difference over decode steps.
type Counter interface {
	Counts() (launches, syncs int64)
}

// BatchStepGraph is a captured batched decode step (BatchStepCapturer).
type BatchStepGraph interface {
	// Replay runs the step again for ids and b: the captured row count,
	// block tables no wider than the captured width. One upload of the
	// inputs, one graph launch. A graph whose captured device buffers
	// were replaced since returns an error wrapping ErrStaleGraph.
	Replay(ids []int32, b *Batch) error
	Close() error
}

// ErrStaleGraph is returned by the replay of a graph that captured a
// device buffer which has since been replaced: capture the step again.
var ErrStaleGraph = errors.New("captured graph is stale")

// BatchStepCapturer records a batched decode step as a device graph: one
// token per row (ids), rows at the positions, sequences and block tables
// of b, tables padded to width blocks. fn issues the step's ops on the
// Backend and Batcher it is given, which read the step's inputs from
// device arrays that Replay rewrites; the step runs once before
// CaptureBatchStep returns.
type BatchStepCapturer interface {
	CaptureBatchStep(ids []int32, b *Batch, width int, fn func(Backend, Batcher) error) (BatchStepGraph, error)
}

// RowArgmaxer picks the largest entry of each of len(dst) consecutive rows
// of n entries from x[off:] (lowest index on ties, NaN never) in one pass,
// so greedy rows of a batch cost one launch and one download.
type RowArgmaxer interface {
	ArgmaxRows(dst []int32, x Buffer, off, n int) error
}
