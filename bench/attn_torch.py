"""Peer numbers for the CUDA backend's attention benchmarks, same run, same GPU.

torch SDPA with the flash and cuDNN backends at B=1, H=32, S=4096, D=128,
causal, bf16 (prefill), and one query over a 4096-key cache (decode), plus
the two rooflines measured on the spot: device copy bandwidth and a bf16
8192^3 GEMM. Times are medians of CUDA-event-timed repeats after warm-up.
"""
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


def bench(fn, reps=20, warm=5):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]  # ms


def main():
    dev = "cuda"
    print("device:", torch.cuda.get_device_name(), "torch", torch.__version__)
    x = torch.empty(2 * 1024**3 // 2, dtype=torch.bfloat16, device=dev).uniform_()
    y = torch.empty_like(x)
    ms = bench(lambda: y.copy_(x))
    print(f"copy: {2 * x.numel() * 2 / (ms / 1e3) / 1e12:.2f} TB/s (read+write)")
    del x, y
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device=dev)
    b = torch.randn(8192, 8192, dtype=torch.bfloat16, device=dev)
    ms = bench(lambda: a @ b)
    print(f"bf16 GEMM 8192^3: {2 * 8192**3 / (ms / 1e3) / 1e12:.0f} TFLOP/s")
    del a, b

    B, H, S, D = 1, 32, 4096, 128
    q, k, v = (torch.randn(B, H, S, D, dtype=torch.bfloat16, device=dev) for _ in range(3))
    flops = 4 * S * S / 2 * D * H
    for name, be in [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)]:
        try:
            with sdpa_kernel(be):
                ms = bench(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))
            print(f"torch sdpa {name} prefill S={S}: {ms:.3f} ms, {flops / (ms / 1e3) / 1e12:.1f} TFLOP/s")
        except Exception as e:  # a backend may be unavailable
            print(f"torch sdpa {name} prefill: unavailable ({e})")
    q1 = torch.randn(B, H, 1, D, dtype=torch.bfloat16, device=dev)
    byts = 2 * S * H * D * 2
    for name, be in [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                     ("efficient", SDPBackend.EFFICIENT_ATTENTION)]:
        try:
            with sdpa_kernel(be):
                f = lambda: torch.nn.functional.scaled_dot_product_attention(q1, k, v)
                for _ in range(5):
                    f()
                # Many calls per timing: a decode attention is tens of microseconds.
                ms = bench(lambda: [f() for _ in range(100)]) / 100
            print(f"torch sdpa {name} decode kv={S}: {ms * 1e3:.1f} us, {byts / (ms / 1e3) / 1e9:.0f} GB/s")
        except Exception as e:
            print(f"torch sdpa {name} decode: unavailable ({e})")


if __name__ == "__main__":
    main()
