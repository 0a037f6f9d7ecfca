// Package cudabench holds the H100 benchmarks of the CUDA backend: a
// synthetic DeepSeek-LLM-7B-shaped model with random bf16 weights made on
// the GPU (decode and prefill throughput), flash attention and decode
// attention. run.sh builds PTX, runs the parity tests, these benchmarks and
// the torch comparison (../attn_torch.py) in one device call.
package cudabench
