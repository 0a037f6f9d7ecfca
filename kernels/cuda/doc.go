// Package cuda implements kernels.Backend on NVIDIA GPUs through our own
// kernels (kernels.cu, compiled to the committed kernels.ptx and embedded)
// and a small cgo layer that dlopens libcuda.so.1 — no CUDA SDK is needed to
// build, and a binary built with it still runs on machines without a GPU:
// New then returns an error starting "cuda unavailable". Large prefill GEMMs
// use cuBLASLt when it can be dlopened; everything else is ours: GEMV for
// decode (fused QKV and gate|up in one pass), flash attention with tensor
// cores for prefill, split-KV attention for decode, argmax on the device and
// the decode step captured as a CUDA graph (Backend.CaptureStep).
//
// Builds without cgo or for other systems get a stub whose New reports
// that CUDA is unavailable.
package cuda
