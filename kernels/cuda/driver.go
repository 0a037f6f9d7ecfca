//go:build linux && cgo

package cuda

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// Our own declarations of the few driver types we use: no CUDA SDK needed.
typedef int CUresult;
typedef int CUdevice;
typedef void* CUcontext;
typedef void* CUmodule;
typedef void* CUfunction;
typedef void* CUstream;
typedef void* CUevent;
typedef void* CUgraph;
typedef void* CUgraphExec;
typedef unsigned long long CUdeviceptr;

static void* dsg_lib;
static CUresult (*p_cuInit)(unsigned);
static CUresult (*p_cuDriverGetVersion)(int*);
static CUresult (*p_cuDeviceGetCount)(int*);
static CUresult (*p_cuDeviceGet)(CUdevice*, int);
static CUresult (*p_cuDeviceGetName)(char*, int, CUdevice);
static CUresult (*p_cuDeviceGetAttribute)(int*, int, CUdevice);
static CUresult (*p_cuDeviceTotalMem)(size_t*, CUdevice);
static CUresult (*p_cuDevicePrimaryCtxRetain)(CUcontext*, CUdevice);
static CUresult (*p_cuDevicePrimaryCtxRelease)(CUdevice);
static CUresult (*p_cuCtxSetCurrent)(CUcontext);
static CUresult (*p_cuCtxSynchronize)(void);
static CUresult (*p_cuMemGetInfo)(size_t*, size_t*);
static CUresult (*p_cuMemAlloc)(CUdeviceptr*, size_t);
static CUresult (*p_cuMemFree)(CUdeviceptr);
static CUresult (*p_cuMemAllocHost)(void**, size_t);
static CUresult (*p_cuMemFreeHost)(void*);
static CUresult (*p_cuMemcpyHtoDAsync)(CUdeviceptr, const void*, size_t, CUstream);
static CUresult (*p_cuMemcpyDtoHAsync)(void*, CUdeviceptr, size_t, CUstream);
static CUresult (*p_cuMemcpyDtoDAsync)(CUdeviceptr, CUdeviceptr, size_t, CUstream);
static CUresult (*p_cuMemsetD32Async)(CUdeviceptr, unsigned, size_t, CUstream);
static CUresult (*p_cuModuleLoadData)(CUmodule*, const void*);
static CUresult (*p_cuModuleUnload)(CUmodule);
static CUresult (*p_cuModuleGetFunction)(CUfunction*, CUmodule, const char*);
static CUresult (*p_cuFuncSetAttribute)(CUfunction, int, int);
static CUresult (*p_cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                    unsigned, CUstream, void**, void**);
// cuLaunchKernelEx (CUDA 11.8+) and the parts of its config we use: the
// launch attribute PROGRAMMATIC_STREAM_SERIALIZATION (6) lets a kernel start
// while the previous one in the stream drains (programmatic dependent
// launch); cuda.h's layouts.
typedef struct { int id; char pad[4]; union { unsigned long long pad[8]; int val; } value; } dsgLaunchAttr;
typedef struct {
	unsigned gx, gy, gz, bx, by, bz, smem;
	CUstream stream;
	dsgLaunchAttr* attrs;
	unsigned nattrs;
} dsgLaunchConfig;
static CUresult (*p_cuLaunchKernelEx)(const dsgLaunchConfig*, CUfunction, void**, void**);
static CUresult (*p_cuStreamCreate)(CUstream*, unsigned);
static CUresult (*p_cuStreamDestroy)(CUstream);
static CUresult (*p_cuStreamSynchronize)(CUstream);
static CUresult (*p_cuEventCreate)(CUevent*, unsigned);
static CUresult (*p_cuEventDestroy)(CUevent);
static CUresult (*p_cuEventRecord)(CUevent, CUstream);
static CUresult (*p_cuEventSynchronize)(CUevent);
static CUresult (*p_cuEventElapsedTime)(float*, CUevent, CUevent);
static CUresult (*p_cuStreamBeginCapture)(CUstream, int);
static CUresult (*p_cuStreamEndCapture)(CUstream, CUgraph*);
static CUresult (*p_cuGraphInstantiateWithFlags)(CUgraphExec*, CUgraph, unsigned long long);
static CUresult (*p_cuGraphLaunch)(CUgraphExec, CUstream);
static CUresult (*p_cuGraphExecDestroy)(CUgraphExec);
static CUresult (*p_cuGraphDestroy)(CUgraph);
static CUresult (*p_cuGetErrorName)(CUresult, const char**);

#define SYM(var, name) do { *(void**)(&var) = dlsym(dsg_lib, name); if (!var) { snprintf(err, errlen, "libcuda.so.1: missing %s", name); return -1; } } while (0)
#define SYM2(var, name, alt) do { *(void**)(&var) = dlsym(dsg_lib, name); if (!var) *(void**)(&var) = dlsym(dsg_lib, alt); if (!var) { snprintf(err, errlen, "libcuda.so.1: missing %s", name); return -1; } } while (0)

#include <stdio.h>
static int dsg_open(char* err, int errlen) {
	if (dsg_lib) return 0;
	void* h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!h) { snprintf(err, errlen, "%s", dlerror()); return -1; }
	dsg_lib = h;
	SYM(p_cuInit, "cuInit");
	SYM(p_cuDriverGetVersion, "cuDriverGetVersion");
	SYM(p_cuDeviceGetCount, "cuDeviceGetCount");
	SYM(p_cuDeviceGet, "cuDeviceGet");
	SYM(p_cuDeviceGetName, "cuDeviceGetName");
	SYM(p_cuDeviceGetAttribute, "cuDeviceGetAttribute");
	SYM(p_cuDeviceTotalMem, "cuDeviceTotalMem_v2");
	SYM(p_cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
	SYM2(p_cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease");
	SYM(p_cuCtxSetCurrent, "cuCtxSetCurrent");
	SYM(p_cuCtxSynchronize, "cuCtxSynchronize");
	SYM(p_cuMemGetInfo, "cuMemGetInfo_v2");
	SYM(p_cuMemAlloc, "cuMemAlloc_v2");
	SYM(p_cuMemFree, "cuMemFree_v2");
	SYM(p_cuMemAllocHost, "cuMemAllocHost_v2");
	SYM(p_cuMemFreeHost, "cuMemFreeHost");
	SYM(p_cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2");
	SYM(p_cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2");
	SYM(p_cuMemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2");
	SYM(p_cuMemsetD32Async, "cuMemsetD32Async");
	SYM(p_cuModuleLoadData, "cuModuleLoadData");
	SYM(p_cuModuleUnload, "cuModuleUnload");
	SYM(p_cuModuleGetFunction, "cuModuleGetFunction");
	SYM(p_cuFuncSetAttribute, "cuFuncSetAttribute");
	SYM(p_cuLaunchKernel, "cuLaunchKernel");
	*(void**)(&p_cuLaunchKernelEx) = dlsym(dsg_lib, "cuLaunchKernelEx"); // optional: older drivers lack it
	SYM(p_cuStreamCreate, "cuStreamCreate");
	SYM2(p_cuStreamDestroy, "cuStreamDestroy_v2", "cuStreamDestroy");
	SYM(p_cuStreamSynchronize, "cuStreamSynchronize");
	SYM(p_cuEventCreate, "cuEventCreate");
	SYM2(p_cuEventDestroy, "cuEventDestroy_v2", "cuEventDestroy");
	SYM(p_cuEventRecord, "cuEventRecord");
	SYM(p_cuEventSynchronize, "cuEventSynchronize");
	SYM2(p_cuEventElapsedTime, "cuEventElapsedTime_v2", "cuEventElapsedTime");
	SYM2(p_cuStreamBeginCapture, "cuStreamBeginCapture_v2", "cuStreamBeginCapture");
	SYM(p_cuStreamEndCapture, "cuStreamEndCapture");
	SYM(p_cuGraphInstantiateWithFlags, "cuGraphInstantiateWithFlags");
	SYM(p_cuGraphLaunch, "cuGraphLaunch");
	SYM(p_cuGraphExecDestroy, "cuGraphExecDestroy");
	SYM(p_cuGraphDestroy, "cuGraphDestroy");
	SYM(p_cuGetErrorName, "cuGetErrorName");
	return 0;
}

static const char* dsg_errname(CUresult r) {
	const char* s = 0;
	if (p_cuGetErrorName && p_cuGetErrorName(r, &s) == 0 && s) return s;
	return "CUDA_ERROR_UNKNOWN";
}

// Every entry point makes the backend's context current first: goroutines
// move between OS threads and the current context is per thread.
static CUresult dsg_init(void) { return p_cuInit(0); }
static CUresult dsg_set_current(CUcontext c) { return p_cuCtxSetCurrent(c); }
static CUresult dsg_driver_version(int* v) { return p_cuDriverGetVersion(v); }
static CUresult dsg_device_count(int* n) { return p_cuDeviceGetCount(n); }
static CUresult dsg_device(int ord, CUdevice* d) { return p_cuDeviceGet(d, ord); }
static CUresult dsg_device_name(CUdevice d, char* name, int len) { return p_cuDeviceGetName(name, len, d); }
static CUresult dsg_device_attr(CUdevice d, int attr, int* v) { return p_cuDeviceGetAttribute(v, attr, d); }
static CUresult dsg_ctx_retain(CUdevice d, CUcontext* c) {
	CUresult r = p_cuDevicePrimaryCtxRetain(c, d);
	if (r) return r;
	return p_cuCtxSetCurrent(*c);
}
static CUresult dsg_ctx_release(CUdevice d) { return p_cuDevicePrimaryCtxRelease(d); }
static CUresult dsg_mem_info(CUcontext c, size_t* fr, size_t* tot) { p_cuCtxSetCurrent(c); return p_cuMemGetInfo(fr, tot); }
static CUresult dsg_alloc(CUcontext c, CUdeviceptr* p, size_t n) { p_cuCtxSetCurrent(c); return p_cuMemAlloc(p, n); }
static CUresult dsg_free(CUcontext c, CUdeviceptr p) { p_cuCtxSetCurrent(c); return p_cuMemFree(p); }
static CUresult dsg_alloc_host(CUcontext c, void** p, size_t n) { p_cuCtxSetCurrent(c); return p_cuMemAllocHost(p, n); }
static CUresult dsg_free_host(CUcontext c, void* p) { p_cuCtxSetCurrent(c); return p_cuMemFreeHost(p); }
static CUresult dsg_htod(CUcontext c, CUdeviceptr dst, const void* src, size_t n, CUstream s) { p_cuCtxSetCurrent(c); return p_cuMemcpyHtoDAsync(dst, src, n, s); }
static CUresult dsg_dtoh(CUcontext c, void* dst, CUdeviceptr src, size_t n, CUstream s) {
	p_cuCtxSetCurrent(c);
	CUresult r = p_cuMemcpyDtoHAsync(dst, src, n, s);
	if (r) return r;
	return p_cuStreamSynchronize(s);
}
static CUresult dsg_dtod(CUcontext c, CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) { p_cuCtxSetCurrent(c); return p_cuMemcpyDtoDAsync(dst, src, n, s); }
static CUresult dsg_memset32(CUcontext c, CUdeviceptr dst, unsigned v, size_t n, CUstream s) { p_cuCtxSetCurrent(c); return p_cuMemsetD32Async(dst, v, n, s); }
static CUresult dsg_module_load(CUcontext c, CUmodule* m, const void* img) { p_cuCtxSetCurrent(c); return p_cuModuleLoadData(m, img); }
static CUresult dsg_module_unload(CUcontext c, CUmodule m) { p_cuCtxSetCurrent(c); return p_cuModuleUnload(m); }
static CUresult dsg_module_func(CUcontext c, CUmodule m, const char* name, CUfunction* f) { p_cuCtxSetCurrent(c); return p_cuModuleGetFunction(f, m, name); }
static CUresult dsg_func_attr(CUcontext c, CUfunction f, int attr, int v) { p_cuCtxSetCurrent(c); return p_cuFuncSetAttribute(f, attr, v); }
static int dsg_has_launch_ex(void) { return p_cuLaunchKernelEx != 0; }
static CUresult dsg_launch(CUcontext c, CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                           unsigned bz, unsigned smem, CUstream s, void* args, int* offs, int nargs, int pdl) {
	void* params[32];
	if (nargs > 32) return 1; // CUDA_ERROR_INVALID_VALUE
	for (int i = 0; i < nargs; i++) params[i] = (char*)args + offs[i];
	p_cuCtxSetCurrent(c);
	if (pdl && p_cuLaunchKernelEx) {
		dsgLaunchAttr a;
		memset(&a, 0, sizeof a);
		a.id = 6; // CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
		a.value.val = 1;
		dsgLaunchConfig cfg = {gx, gy, gz, bx, by, bz, smem, s, &a, 1};
		return p_cuLaunchKernelEx(&cfg, f, params, NULL);
	}
	return p_cuLaunchKernel(f, gx, gy, gz, bx, by, bz, smem, s, params, NULL);
}
static CUresult dsg_stream_create(CUcontext c, CUstream* s) { p_cuCtxSetCurrent(c); return p_cuStreamCreate(s, 1); } // CU_STREAM_NON_BLOCKING
static CUresult dsg_stream_destroy(CUcontext c, CUstream s) { p_cuCtxSetCurrent(c); return p_cuStreamDestroy(s); }
static CUresult dsg_stream_sync(CUcontext c, CUstream s) { p_cuCtxSetCurrent(c); return p_cuStreamSynchronize(s); }
static CUresult dsg_event_create(CUcontext c, CUevent* e) { p_cuCtxSetCurrent(c); return p_cuEventCreate(e, 0); }
static CUresult dsg_event_destroy(CUcontext c, CUevent e) { p_cuCtxSetCurrent(c); return p_cuEventDestroy(e); }
static CUresult dsg_event_record(CUcontext c, CUevent e, CUstream s) { p_cuCtxSetCurrent(c); return p_cuEventRecord(e, s); }
static CUresult dsg_event_sync(CUcontext c, CUevent e) { p_cuCtxSetCurrent(c); return p_cuEventSynchronize(e); }
static CUresult dsg_event_elapsed(CUcontext c, float* ms, CUevent a, CUevent b) { p_cuCtxSetCurrent(c); return p_cuEventElapsedTime(ms, a, b); }
// CU_STREAM_CAPTURE_MODE_RELAXED (2): the capturing goroutine may still
// allocate from the caching allocator.
static CUresult dsg_capture_begin(CUcontext c, CUstream s) { p_cuCtxSetCurrent(c); return p_cuStreamBeginCapture(s, 2); }
static CUresult dsg_capture_end(CUcontext c, CUstream s, CUgraph* g) { p_cuCtxSetCurrent(c); return p_cuStreamEndCapture(s, g); }
static CUresult dsg_graph_instantiate(CUcontext c, CUgraphExec* e, CUgraph g) { p_cuCtxSetCurrent(c); return p_cuGraphInstantiateWithFlags(e, g, 0); }
static CUresult dsg_graph_launch(CUcontext c, CUgraphExec e, CUstream s) { p_cuCtxSetCurrent(c); return p_cuGraphLaunch(e, s); }
static CUresult dsg_graph_exec_destroy(CUcontext c, CUgraphExec e) { p_cuCtxSetCurrent(c); return p_cuGraphExecDestroy(e); }
static CUresult dsg_graph_destroy(CUcontext c, CUgraph g) { p_cuCtxSetCurrent(c); return p_cuGraphDestroy(g); }
*/
import "C"

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Result is a CUresult with its name.
type Result struct {
	Code int
	Name string
	Op   string
}

func (r *Result) Error() string { return fmt.Sprintf("cuda: %s: %s (%d)", r.Op, r.Name, r.Code) }

func check(op string, r C.CUresult) error {
	if r == 0 {
		return nil
	}
	return &Result{Code: int(r), Name: C.GoString(C.dsg_errname(r)), Op: op}
}

var openOnce struct {
	sync.Once
	err error
}

// openDriver loads libcuda.so.1 and cuInit's it, once per process (the
// library handle is process-wide by nature).
func openDriver() error {
	openOnce.Do(func() {
		var buf [512]C.char
		if C.dsg_open(&buf[0], C.int(len(buf))) != 0 {
			openOnce.err = fmt.Errorf("cuda unavailable: cannot load the driver: %s", C.GoString(&buf[0]))
			return
		}
		if err := check("cuInit", C.dsg_init()); err != nil {
			openOnce.err = fmt.Errorf("cuda unavailable: %w", err)
		}
	})
	return openOnce.err
}

// DeviceInfo describes one CUDA device.
type DeviceInfo struct {
	Ordinal       int
	Name          string
	Major, Minor  int // compute capability
	SMs           int
	TotalMem      int64
	DriverVersion int
}

// Device attribute numbers (CUdevice_attribute).
const (
	attrMaxSharedPerBlockOptin = 97
	attrSMCount                = 16
	attrCCMajor                = 75
	attrCCMinor                = 76
)

// Devices lists the CUDA devices, or returns an error saying why CUDA is
// unavailable (no driver, no device).
func Devices() ([]DeviceInfo, error) {
	if err := openDriver(); err != nil {
		return nil, err
	}
	var n C.int
	if err := check("cuDeviceGetCount", C.dsg_device_count(&n)); err != nil {
		return nil, fmt.Errorf("cuda unavailable: %w", err)
	}
	var ver C.int
	C.dsg_driver_version(&ver)
	out := make([]DeviceInfo, 0, int(n))
	for i := 0; i < int(n); i++ {
		var d C.CUdevice
		if err := check("cuDeviceGet", C.dsg_device(C.int(i), &d)); err != nil {
			return nil, err
		}
		var name [256]C.char
		C.dsg_device_name(d, &name[0], C.int(len(name)))
		info := DeviceInfo{Ordinal: i, Name: strings.TrimSpace(C.GoString(&name[0])), DriverVersion: int(ver)}
		var v C.int
		C.dsg_device_attr(d, attrCCMajor, &v)
		info.Major = int(v)
		C.dsg_device_attr(d, attrCCMinor, &v)
		info.Minor = int(v)
		C.dsg_device_attr(d, attrSMCount, &v)
		info.SMs = int(v)
		out = append(out, info)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("cuda unavailable: the driver reports no CUDA device")
	}
	return out, nil
}

// ctx is a retained primary context of one device with one stream.
type ctx struct {
	dev    C.CUdevice
	c      C.CUcontext
	stream C.CUstream
	// launches and syncs count kernel launches (cuBLASLt calls and graph
	// replays one each; none while capturing) and host waits for the
	// device, for Backend.Counts.
	launches, syncs atomic.Int64
	capturing       bool
	// pdl: launch kernels that wait for their predecessor on the device
	// (function.pdl) with programmatic dependent launch (newCtx).
	pdl bool
}

func newCtx(ordinal int) (*ctx, error) {
	if err := openDriver(); err != nil {
		return nil, err
	}
	x := &ctx{}
	if err := check("cuDeviceGet", C.dsg_device(C.int(ordinal), &x.dev)); err != nil {
		return nil, fmt.Errorf("cuda device %d: %w", ordinal, err)
	}
	if err := check("cuDevicePrimaryCtxRetain", C.dsg_ctx_retain(x.dev, &x.c)); err != nil {
		return nil, fmt.Errorf("cuda device %d: %w", ordinal, err)
	}
	if err := check("cuStreamCreate", C.dsg_stream_create(x.c, &x.stream)); err != nil {
		C.dsg_ctx_release(x.dev)
		return nil, err
	}
	// Programmatic dependent launch needs Hopper (sm_90) and a driver
	// with cuLaunchKernelEx; DSGO_NO_PDL=1 turns it off, to compare.
	var major C.int
	C.dsg_device_attr(x.dev, attrCCMajor, &major)
	x.pdl = major >= 9 && C.dsg_has_launch_ex() != 0 && os.Getenv("DSGO_NO_PDL") == ""
	return x, nil
}

// makeCurrent binds the context to the calling OS thread (callers lock the
// thread around the library call that needs it).
func (x *ctx) makeCurrent() { C.dsg_set_current(x.c) }

func (x *ctx) close() {
	if x.stream != nil {
		C.dsg_stream_sync(x.c, x.stream)
		C.dsg_stream_destroy(x.c, x.stream)
		x.stream = nil
	}
	C.dsg_ctx_release(x.dev)
}

func (x *ctx) memInfo() (free, total int64, err error) {
	var f, t C.size_t
	err = check("cuMemGetInfo", C.dsg_mem_info(x.c, &f, &t))
	return int64(f), int64(t), err
}

func (x *ctx) attr(a int) int {
	var v C.int
	C.dsg_device_attr(x.dev, C.int(a), &v)
	return int(v)
}

type devptr = uint64

func (x *ctx) malloc(n int64) (devptr, error) {
	var p C.CUdeviceptr
	if err := check("cuMemAlloc", C.dsg_alloc(x.c, &p, C.size_t(n))); err != nil {
		return 0, err
	}
	return devptr(p), nil
}

func (x *ctx) free(p devptr) error { return check("cuMemFree", C.dsg_free(x.c, C.CUdeviceptr(p))) }

// htod copies host bytes to the device on the stream; pageable memory is
// staged by the driver before the call returns, so src may be reused.
func (x *ctx) htod(dst devptr, src unsafe.Pointer, n int64) error {
	if n == 0 {
		return nil
	}
	return check("cuMemcpyHtoDAsync", C.dsg_htod(x.c, C.CUdeviceptr(dst), src, C.size_t(n), x.stream))
}

// dtoh copies device bytes to the host and waits for the stream.
func (x *ctx) dtoh(dst unsafe.Pointer, src devptr, n int64) error {
	x.syncs.Add(1)
	return check("cuMemcpyDtoHAsync", C.dsg_dtoh(x.c, dst, C.CUdeviceptr(src), C.size_t(n), x.stream))
}

func (x *ctx) dtod(dst, src devptr, n int64) error {
	return check("cuMemcpyDtoDAsync", C.dsg_dtod(x.c, C.CUdeviceptr(dst), C.CUdeviceptr(src), C.size_t(n), x.stream))
}

func (x *ctx) memset32(dst devptr, v uint32, n int64) error {
	return check("cuMemsetD32Async", C.dsg_memset32(x.c, C.CUdeviceptr(dst), C.uint(v), C.size_t(n), x.stream))
}

func (x *ctx) sync() error {
	x.syncs.Add(1)
	return check("cuStreamSynchronize", C.dsg_stream_sync(x.c, x.stream))
}

// pinned is page-locked host memory (staging for weight uploads).
type pinned struct {
	p unsafe.Pointer // C memory
	n int
}

func (x *ctx) allocHost(n int) (pinned, error) {
	var p unsafe.Pointer
	if err := check("cuMemAllocHost", C.dsg_alloc_host(x.c, &p, C.size_t(n))); err != nil {
		return pinned{}, err
	}
	return pinned{p: p, n: n}, nil
}

func (x *ctx) freeHost(h pinned) {
	if h.p != nil {
		C.dsg_free_host(x.c, h.p)
	}
}

// fillPinned copies src into pinned memory at off.
func fillPinned(h pinned, off int, src []byte) {
	if len(src) == 0 {
		return
	}
	C.memcpy(unsafe.Add(h.p, off), unsafe.Pointer(&src[0]), C.size_t(len(src)))
}

func (x *ctx) htodPinned(dst devptr, h pinned, n int) error {
	return check("cuMemcpyHtoDAsync", C.dsg_htod(x.c, C.CUdeviceptr(dst), h.p, C.size_t(n), x.stream))
}

type event struct{ e C.CUevent }

func (x *ctx) newEvent() (event, error) {
	var e C.CUevent
	err := check("cuEventCreate", C.dsg_event_create(x.c, &e))
	return event{e}, err
}
func (x *ctx) record(e event) error {
	return check("cuEventRecord", C.dsg_event_record(x.c, e.e, x.stream))
}
func (x *ctx) waitEvent(e event) error {
	x.syncs.Add(1)
	return check("cuEventSynchronize", C.dsg_event_sync(x.c, e.e))
}
func (x *ctx) elapsed(a, b event) (float32, error) {
	var ms C.float
	err := check("cuEventElapsedTime", C.dsg_event_elapsed(x.c, &ms, a.e, b.e))
	return float32(ms), err
}
func (x *ctx) destroyEvent(e event) { C.dsg_event_destroy(x.c, e.e) }

// module is a loaded PTX module.
type module struct{ m C.CUmodule }

func (x *ctx) loadModule(image []byte) (module, error) {
	// cuModuleLoadData wants a NUL-terminated PTX string in C memory.
	cs := C.CBytes(append(image[:len(image):len(image)], 0))
	defer C.free(cs)
	var m C.CUmodule
	if err := check("cuModuleLoadData", C.dsg_module_load(x.c, &m, cs)); err != nil {
		return module{}, err
	}
	return module{m}, nil
}

func (x *ctx) unloadModule(m module) { C.dsg_module_unload(x.c, m.m) }

type function struct {
	f    C.CUfunction
	name string
	// pdl: the kernel starts with griddepcontrol.wait (PDL_ENTRY in
	// kernels.cu), so it may be launched before its predecessor ends.
	pdl bool
}

func (x *ctx) function(m module, name string) (function, error) {
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	var f C.CUfunction
	if err := check("cuModuleGetFunction "+name, C.dsg_module_func(x.c, m.m, cn, &f)); err != nil {
		return function{}, err
	}
	return function{f: f, name: name}, nil
}

// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
const funcAttrMaxDynSmem = 8

func (x *ctx) setMaxDynSmem(f function, bytes int) error {
	return check("cuFuncSetAttribute "+f.name, C.dsg_func_attr(x.c, f.f, funcAttrMaxDynSmem, C.int(bytes)))
}

// args packs kernel arguments: each value at an 8-byte aligned offset.
// Device pointers are uint64, ints are int32, floats are float32 unless f64; structs
// passed by value are packed by the caller as raw bytes.
type args struct {
	buf  []byte
	offs []C.int
}

func (a *args) reset() { a.buf = a.buf[:0]; a.offs = a.offs[:0] }

func (a *args) put(b []byte, align int) {
	for len(a.buf)%align != 0 {
		a.buf = append(a.buf, 0)
	}
	a.offs = append(a.offs, C.int(len(a.buf)))
	a.buf = append(a.buf, b...)
}

func (a *args) ptr(p devptr) *args {
	var b [8]byte
	*(*uint64)(unsafe.Pointer(&b[0])) = p
	a.put(b[:], 8)
	return a
}

func (a *args) i32(v int) *args {
	var b [4]byte
	*(*int32)(unsafe.Pointer(&b[0])) = int32(v)
	a.put(b[:], 4)
	return a
}

func (a *args) i64(v int64) *args {
	var b [8]byte
	*(*int64)(unsafe.Pointer(&b[0])) = v
	a.put(b[:], 8)
	return a
}

func (a *args) u32(v uint32) *args {
	var b [4]byte
	*(*uint32)(unsafe.Pointer(&b[0])) = v
	a.put(b[:], 4)
	return a
}

func (a *args) f32(v float32) *args {
	var b [4]byte
	*(*float32)(unsafe.Pointer(&b[0])) = v
	a.put(b[:], 4)
	return a
}

func (a *args) f64(v float64) *args {
	var b [8]byte
	*(*float64)(unsafe.Pointer(&b[0])) = v
	a.put(b[:], 8)
	return a
}

func (a *args) raw(b []byte, align int) *args { a.put(b, align); return a }

type dim3 struct{ x, y, z int }

func (x *ctx) launch(f function, grid, block dim3, smem int, a *args) error {
	if grid.y == 0 {
		grid.y = 1
	}
	if grid.z == 0 {
		grid.z = 1
	}
	if block.y == 0 {
		block.y = 1
	}
	if block.z == 0 {
		block.z = 1
	}
	if grid.x <= 0 {
		return nil // nothing to do
	}
	x.countLaunch()
	// Pad so that &buf[0] is valid even for kernels without arguments.
	a.buf = append(a.buf, 0)
	r := C.dsg_launch(x.c, f.f, C.uint(grid.x), C.uint(grid.y), C.uint(grid.z), C.uint(block.x), C.uint(block.y),
		C.uint(block.z), C.uint(smem), x.stream, unsafe.Pointer(&a.buf[0]), &a.offs[0], C.int(len(a.offs)), pdlFlag(x.pdl && f.pdl))
	return check("cuLaunchKernel "+f.name, r)
}

func pdlFlag(on bool) C.int {
	if on {
		return 1
	}
	return 0
}

// countLaunch counts one launch unless it is being captured into a graph.
func (x *ctx) countLaunch() {
	if !x.capturing {
		x.launches.Add(1)
	}
}

type graphExec struct {
	g C.CUgraph
	e C.CUgraphExec
}

func (x *ctx) beginCapture() error {
	err := check("cuStreamBeginCapture", C.dsg_capture_begin(x.c, x.stream))
	x.capturing = err == nil
	return err
}

func (x *ctx) endCapture() (graphExec, error) {
	x.capturing = false
	var g C.CUgraph
	if err := check("cuStreamEndCapture", C.dsg_capture_end(x.c, x.stream, &g)); err != nil {
		return graphExec{}, err
	}
	var e C.CUgraphExec
	if err := check("cuGraphInstantiate", C.dsg_graph_instantiate(x.c, &e, g)); err != nil {
		C.dsg_graph_destroy(x.c, g)
		return graphExec{}, err
	}
	return graphExec{g: g, e: e}, nil
}

func (x *ctx) graphLaunch(g graphExec) error {
	x.countLaunch()
	return check("cuGraphLaunch", C.dsg_graph_launch(x.c, g.e, x.stream))
}

func (x *ctx) graphDestroy(g graphExec) {
	if g.e != nil {
		C.dsg_graph_exec_destroy(x.c, g.e)
	}
	if g.g != nil {
		C.dsg_graph_destroy(x.c, g.g)
	}
}
