//go:build !amd64 || purego

package quant

// Int8Supported lists the int8 paths this CPU can run: only Int8Generic
// off amd64.
func Int8Supported() []*Int8Kernels { return []*Int8Kernels{Int8Generic} }

func (k *Int8Kernels) dot4(x *uint8, w *int8, ldw, n int, out *int32) {
	dot4Generic(x, w, ldw, n, out)
}

func (k *Int8Kernels) tile(x *uint8, ldx int, w *int8, ldw, n int, out *int32) {
	panic("quant: no int8 tile kernel on this architecture")
}

func (k *Int8Kernels) fastActs() bool { return false }

func (k *Int8Kernels) maxAbs(x []float32) float32 { panic("quant: no vector maxAbs") }

func (k *Int8Kernels) quantActs(dst []uint8, x []float32, inv float32) {
	panic("quant: no vector quantActs")
}

func (k *Int8Kernels) gemvq(x *uint8, w *int8, ldw, n, rows int, out *int32) bool { return false }
