package kernels

// MoERouteMatMul is optional beside MoE: a MoE layer's router matmul and
// its routing in one call, which a device runs as one launch at decode
// (the router is small: experts × hidden). Model code falls back to MatMul
// and Route on a backend without it.
type MoERouteMatMul interface {
	// RouteMatMul writes logits[n, Experts] = x[n, hidden]·routerᵀ as
	// MatMul does (router [Experts, hidden], one part, no bias), then
	// routes them as Route(rt, r, logits, n) does.
	RouteMatMul(rt MoERoutes, r MoERouter, logits, x Buffer, n int, router Matrix)
}
