package kernels

import (
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

// Counter reports the device work a backend has issued since it opened:
// kernel launches (a library GEMM call or a graph replay counts as one) and
// host synchronisations (the host waiting for the device). Benchmarks take
// the difference over decode steps.
type Counter interface {
	Counts() (launches, syncs int64)
}
