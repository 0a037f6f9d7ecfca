//go:build linux && cgo

package cuda

/*
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int cublasStatus_t;
typedef void* cublasLtHandle_t;
typedef void* cublasLtMatmulDesc_t;
typedef void* cublasLtMatrixLayout_t;
typedef void* cublasLtMatmulPreference_t;
typedef struct { uint64_t data[8]; } cublasLtMatmulAlgo_t;
typedef struct {
	cublasLtMatmulAlgo_t algo;
	size_t workspaceSize;
	cublasStatus_t state;
	float wavesCount;
	int reserved[4];
} cublasLtMatmulHeuristicResult_t;

static void* lt_lib;
static cublasStatus_t (*p_ltCreate)(cublasLtHandle_t*);
static cublasStatus_t (*p_ltDestroy)(cublasLtHandle_t);
static cublasStatus_t (*p_descCreate)(cublasLtMatmulDesc_t*, int, int);
static cublasStatus_t (*p_descDestroy)(cublasLtMatmulDesc_t);
static cublasStatus_t (*p_descSet)(cublasLtMatmulDesc_t, int, const void*, size_t);
static cublasStatus_t (*p_layoutCreate)(cublasLtMatrixLayout_t*, int, uint64_t, uint64_t, int64_t);
static cublasStatus_t (*p_layoutDestroy)(cublasLtMatrixLayout_t);
static cublasStatus_t (*p_prefCreate)(cublasLtMatmulPreference_t*);
static cublasStatus_t (*p_prefDestroy)(cublasLtMatmulPreference_t);
static cublasStatus_t (*p_prefSet)(cublasLtMatmulPreference_t, int, const void*, size_t);
static cublasStatus_t (*p_heur)(cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                 cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatmulPreference_t, int,
                                 cublasLtMatmulHeuristicResult_t*, int*);
static cublasStatus_t (*p_matmul)(cublasLtHandle_t, cublasLtMatmulDesc_t, const void*, const void*, cublasLtMatrixLayout_t,
                                   const void*, cublasLtMatrixLayout_t, const void*, const void*, cublasLtMatrixLayout_t,
                                   void*, cublasLtMatrixLayout_t, const cublasLtMatmulAlgo_t*, void*, size_t, void*);

#define LSYM(var, name) do { *(void**)(&var) = dlsym(lt_lib, name); if (!var) { snprintf(err, errlen, "%s: missing %s", path, name); return -1; } } while (0)

static int lt_open(const char* path, char* err, int errlen) {
	if (lt_lib) return 0;
	void* h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) { snprintf(err, errlen, "%s", dlerror()); return -1; }
	lt_lib = h;
	LSYM(p_ltCreate, "cublasLtCreate");
	LSYM(p_ltDestroy, "cublasLtDestroy");
	LSYM(p_descCreate, "cublasLtMatmulDescCreate");
	LSYM(p_descDestroy, "cublasLtMatmulDescDestroy");
	LSYM(p_descSet, "cublasLtMatmulDescSetAttribute");
	LSYM(p_layoutCreate, "cublasLtMatrixLayoutCreate");
	LSYM(p_layoutDestroy, "cublasLtMatrixLayoutDestroy");
	LSYM(p_prefCreate, "cublasLtMatmulPreferenceCreate");
	LSYM(p_prefDestroy, "cublasLtMatmulPreferenceDestroy");
	LSYM(p_prefSet, "cublasLtMatmulPreferenceSetAttribute");
	LSYM(p_heur, "cublasLtMatmulAlgoGetHeuristic");
	LSYM(p_matmul, "cublasLtMatmul");
	return 0;
}

static cublasStatus_t lt_create(cublasLtHandle_t* h) { return p_ltCreate(h); }
static void lt_destroy(cublasLtHandle_t h) { p_ltDestroy(h); }

// A plan for D[m, n] (column-major, ld ldd >= m) = op(A)·B with A [k, m] (ld k,
// transposed) and B [k, n] (ld k): our y[n, m] = x[n, k]·W[m, k]ᵀ.
typedef struct {
	cublasLtMatmulDesc_t desc;
	cublasLtMatrixLayout_t a, b, d;
	cublasLtMatmulAlgo_t algo;
	size_t ws;
} lt_plan;

static cublasStatus_t lt_plan_make(cublasLtHandle_t h, lt_plan* p, int abType, int dType, int computeType, int scaleType,
                                   uint64_t m, uint64_t n, uint64_t k, uint64_t ldd, size_t maxWs) {
	memset(p, 0, sizeof(*p));
	cublasStatus_t s;
	if ((s = p_descCreate(&p->desc, computeType, scaleType))) return s;
	int opT = 1, opN = 0;
	if ((s = p_descSet(p->desc, 3, &opT, sizeof(opT)))) return s; // TRANSA
	if ((s = p_descSet(p->desc, 4, &opN, sizeof(opN)))) return s; // TRANSB
	if ((s = p_layoutCreate(&p->a, abType, k, m, k))) return s;
	if ((s = p_layoutCreate(&p->b, abType, k, n, k))) return s;
	if ((s = p_layoutCreate(&p->d, dType, m, n, ldd))) return s;
	cublasLtMatmulPreference_t pref;
	if ((s = p_prefCreate(&pref))) return s;
	p_prefSet(pref, 1, &maxWs, sizeof(maxWs)); // MAX_WORKSPACE_BYTES
	cublasLtMatmulHeuristicResult_t res[1];
	int got = 0;
	s = p_heur(h, p->desc, p->a, p->b, p->d, p->d, pref, 1, res, &got);
	p_prefDestroy(pref);
	if (s) return s;
	if (got < 1) return 15; // CUBLAS_STATUS_NOT_SUPPORTED
	p->algo = res[0].algo;
	p->ws = res[0].workspaceSize;
	return 0;
}

static void lt_plan_free(lt_plan* p) {
	if (p->a) p_layoutDestroy(p->a);
	if (p->b) p_layoutDestroy(p->b);
	if (p->d) p_layoutDestroy(p->d);
	if (p->desc) p_descDestroy(p->desc);
}

static cublasStatus_t lt_run(cublasLtHandle_t h, lt_plan* p, uint64_t A, uint64_t B, uint64_t D, uint64_t ws, void* stream) {
	float alpha = 1.f, beta = 0.f;
	return p_matmul(h, p->desc, &alpha, (const void*)A, p->a, (const void*)B, p->b, &beta, (const void*)D, p->d,
	                (void*)D, p->d, &p->algo, (void*)ws, p->ws, stream);
}
*/
import "C"

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"unsafe"
)

// cudaDataType / cublasComputeType values.
const (
	ltR32F      = 0
	ltR16F      = 2
	ltR16BF     = 14
	ltCompute32 = 68
)

var ltOpen struct {
	sync.Once
	path string
	err  error
}

// ltCandidates lists where cuBLASLt usually lives: the loader path, the CUDA
// toolkit and pip's nvidia-cublas wheels. DSGO_CUBLASLT overrides.
func ltCandidates() []string {
	var c []string
	if p := os.Getenv("DSGO_CUBLASLT"); p != "" {
		c = append(c, p)
	}
	c = append(c, "libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so")
	for _, pat := range []string{
		"/usr/local/cuda/lib64/libcublasLt.so*",
		"/usr/local/cuda/targets/x86_64-linux/lib/libcublasLt.so*",
		"/usr/local/lib/python3*/dist-packages/nvidia/cu*/lib/libcublasLt.so*",
		"/usr/local/lib/python3*/site-packages/nvidia/cu*/lib/libcublasLt.so*",
		"/usr/lib/python3*/site-packages/nvidia/cu*/lib/libcublasLt.so*",
		"/opt/*/.venv/lib/python3*/site-packages/nvidia/cu*/lib/libcublasLt.so*",
		"/opt/*/.venv/lib/python3*/site-packages/nvidia/cublas/lib/libcublasLt.so*",
		"/usr/local/lib/python3*/dist-packages/nvidia/cublas/lib/libcublasLt.so*",
	} {
		m, _ := filepath.Glob(pat)
		c = append(c, m...)
	}
	return c
}

func openCublasLt() (string, error) {
	ltOpen.Do(func() {
		var last string
		for _, p := range ltCandidates() {
			var buf [512]C.char
			cp := C.CString(p)
			r := C.lt_open(cp, &buf[0], C.int(len(buf)))
			C.free(unsafe.Pointer(cp))
			if r == 0 {
				ltOpen.path = p
				return
			}
			last = C.GoString(&buf[0])
		}
		ltOpen.err = fmt.Errorf("cuBLASLt not found (last error: %s)", last)
	})
	return ltOpen.path, ltOpen.err
}

// cublasLt holds a handle, a workspace and a cache of plans by shape.
type cublasLt struct {
	h     C.cublasLtHandle_t
	ws    devptr
	wsLen int64
	plans map[ltKey]*C.lt_plan
}

type ltKey struct {
	ab, d        int
	m, n, k, ldd int
}

func newCublasLt(x *ctx) (*cublasLt, error) {
	path, err := openCublasLt()
	if err != nil {
		return nil, err
	}
	lt := &cublasLt{plans: map[ltKey]*C.lt_plan{}, wsLen: 32 << 20}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	x.makeCurrent()
	if s := C.lt_create(&lt.h); s != 0 {
		return nil, fmt.Errorf("cublasLtCreate (%s): status %d", path, int(s))
	}
	if lt.ws, err = x.malloc(lt.wsLen); err != nil {
		C.lt_destroy(lt.h)
		return nil, fmt.Errorf("cuBLASLt workspace: %w", err)
	}
	return lt, nil
}

func (lt *cublasLt) close(x *ctx) {
	for _, p := range lt.plans {
		C.lt_plan_free(p)
		C.free(unsafe.Pointer(p))
	}
	lt.plans = nil
	if lt.ws != 0 {
		x.free(lt.ws)
	}
	C.lt_destroy(lt.h)
}

// matmul computes D[n, m] (row-major, float32) = B[n, k]·A[m, k]ᵀ with A and B
// of cudaDataType ab (activations already converted to the weight dtype).
func (lt *cublasLt) matmul(x *ctx, ab int, A, B, D devptr, m, n, k int) error {
	return lt.matmulLd(x, ab, A, B, D, m, n, k, m)
}

// matmulLd is matmul writing D's rows ldd floats apart (ldd >= m): the
// columns [c, c+m) of a wider [n, ldd] output when D points at column c.
func (lt *cublasLt) matmulLd(x *ctx, ab int, A, B, D devptr, m, n, k, ldd int) error {
	key := ltKey{ab: ab, d: ltR32F, m: m, n: n, k: k, ldd: ldd}
	p, ok := lt.plans[key]
	if !ok {
		p = (*C.lt_plan)(C.calloc(1, C.size_t(unsafe.Sizeof(C.lt_plan{}))))
		s := C.lt_plan_make(lt.h, p, C.int(ab), ltR32F, ltCompute32, ltR32F, C.uint64_t(m), C.uint64_t(n), C.uint64_t(k), C.uint64_t(ldd), C.size_t(lt.wsLen))
		if s != 0 {
			C.lt_plan_free(p)
			C.free(unsafe.Pointer(p))
			return fmt.Errorf("cuBLASLt plan m=%d n=%d k=%d ldd=%d type %d: status %d", m, n, k, ldd, ab, int(s))
		}
		lt.plans[key] = p
	}
	x.countLaunch()
	// cuBLASLt uses the calling thread's current context.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	x.makeCurrent()
	if s := C.lt_run(lt.h, p, C.uint64_t(A), C.uint64_t(B), C.uint64_t(D), C.uint64_t(lt.ws), unsafe.Pointer(x.stream)); s != 0 {
		return fmt.Errorf("cublasLtMatmul m=%d n=%d k=%d ldd=%d: status %d", m, n, k, ldd, int(s))
	}
	return nil
}
