package cpu

import "github.com/deepseek-go/deepseek-go/kernels"

// MatMulAdd implements kernels.Backend: the product into tmp, then added
// to out, the arithmetic of MatMul followed by Add (the reference the
// fused device kernels are checked against). Invalid shapes panic with
// CheckMatMulAdd's message, as MatMulHeads does.
func (b *Backend) MatMulAdd(out, tmp, x kernels.Buffer, n int, w kernels.Matrix, bias kernels.Buffer) {
	if n <= 0 {
		return
	}
	if err := kernels.CheckMatMulAdd(out, tmp, x, n, w, bias); err != nil {
		panic("cpu: " + err.Error())
	}
	outs := [1]kernels.Buffer{tmp}
	b.MatMul(outs[:], x, n, w, bias)
	b.Add(out, out, tmp, n*w.Rows())
}

// RouteMatMul implements kernels.MoERouteMatMul: MatMul, then Route.
func (b *Backend) RouteMatMul(rt kernels.MoERoutes, r kernels.MoERouter, logits, x kernels.Buffer, n int, router kernels.Matrix) {
	outs := [1]kernels.Buffer{logits}
	b.MatMul(outs[:], x, n, router, nil)
	b.Route(rt, r, logits, n)
}
