"""HF transformers peer numbers for the DeepSeek GPU benchmarks (issue #13).

Builds DeepseekV2ForCausalLM with DeepSeek-V2-Lite's config and
DeepseekV3ForCausalLM with the 4-layer V3 slice of engine/
deepseek_bench_shapes_test.go (1 dense + 3 MoE layers at V3's widths), with
random bf16 weights made on the GPU, and measures at batch 1:

  eager:   model.generate (dynamic cache, no compilation), greedy; decode
           tok/s = 255 / (time of 256 new tokens - time of 1) after a
           16-token prompt; prefill tok/s of a 2048-token forward.
  compile: a static cache and model.forward under torch.compile
           (mode reduce-overhead: CUDA graphs), experts_implementation
           batched_mm when the installed transformers has it; a greedy
           decode loop of 256 tokens, the first 8 (compilation) untimed.

Each (model, mode) runs in its own process under a time limit, so a
compilation that hangs or fails costs only its own slot; the failure text
is printed. One line per measurement, prefixed "torch".

  python3 bench/deepseek_torch.py [--deadline SECONDS] [--compile-timeout SECONDS] [--cases v2-lite:eager,...]
"""
import argparse
import os
import subprocess
import sys
import threading
import time

PROMPT = 16
DECODE = 256
PREFILL = 2048
COMPILE_WARM = 8

YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0, "original_max_position_embeddings": 4096,
        "beta_fast": 32.0, "beta_slow": 1.0}

# The engine's shapes (engine/deepseek_bench_shapes_test.go) in
# transformers' config keys; no EOS, so greedy decoding never stops early.
SHAPES = {
    "v2-lite": ("DeepseekV2Config", "DeepseekV2ForCausalLM", dict(
        vocab_size=102400, hidden_size=2048, intermediate_size=10944, moe_intermediate_size=1408,
        num_hidden_layers=27, num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=163840,
        rms_norm_eps=1e-6, q_lora_rank=None, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
        v_head_dim=128, n_routed_experts=64, n_shared_experts=2, num_experts_per_tok=6, first_k_dense_replace=1,
        topk_method="greedy", n_group=1, topk_group=1, norm_topk_prob=False, routed_scaling_factor=1.0,
        tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, pad_token_id=0),
        dict(YARN, mscale=0.707, mscale_all_dim=0.707)),
    "v3-slice": ("DeepseekV3Config", "DeepseekV3ForCausalLM", dict(
        vocab_size=129280, hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048,
        num_hidden_layers=4, num_attention_heads=128, num_key_value_heads=128, max_position_embeddings=163840,
        rms_norm_eps=1e-6, q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
        v_head_dim=128, n_routed_experts=256, n_shared_experts=1, num_experts_per_tok=8, first_k_dense_replace=1,
        n_group=8, topk_group=4, norm_topk_prob=True, routed_scaling_factor=2.5,
        tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, pad_token_id=0),
        dict(YARN, mscale=1.0, mscale_all_dim=1.0)),
}


def params(k):
    """Parameters (total, read per decoded token without the embedding row):
    the arithmetic of countDeepseekParams in the Go benchmark."""
    hid, H = k["hidden_size"], k["num_attention_heads"]
    nope, rope, v, kvl, q = k["qk_nope_head_dim"], k["qk_rope_head_dim"], k["v_head_dim"], k["kv_lora_rank"], k["q_lora_rank"]
    attn = (q * hid + H * (nope + rope) * q) if q else H * (nope + rope) * hid
    attn += (kvl + rope) * hid + H * (nope + v) * kvl + hid * H * v
    expert = 3 * hid * k["moe_intermediate_size"]
    E, shared, top = k["n_routed_experts"], k["n_shared_experts"], k["num_experts_per_tok"]
    head = k["vocab_size"] * hid
    total, active = 2 * head, head
    for layer in range(k["num_hidden_layers"]):
        if layer >= k["first_k_dense_replace"]:
            total += attn + (E + shared) * expert + E * hid
            active += attn + (top + shared) * expert + E * hid
        else:
            dense = 3 * hid * k["intermediate_size"]
            total += attn + dense
            active += attn + dense
    return total, active


def roofline_bw(name):
    """Copy bandwidth in bytes/s: 2.94 TB/s measured on the H100, about 4.3 on the H200."""
    return 4.3e12 if "H200" in name else 2.94e12


def build(torch, transformers, shape):
    cfg_name, model_name, kw, rope = SHAPES[shape]
    cfg_cls = getattr(transformers, cfg_name, None)
    model_cls = getattr(transformers, model_name, None)
    if cfg_cls is None or model_cls is None:
        raise RuntimeError(f"transformers {transformers.__version__} has no {model_name}")
    cfg, errs = None, []
    # transformers 5 takes rope_parameters, 4.x rope_scaling + rope_theta.
    for extra in ({"rope_parameters": rope},
                  {"rope_scaling": {("type" if k == "rope_type" else k): x for k, x in rope.items() if k != "rope_theta"},
                   "rope_theta": rope["rope_theta"]},
                  {}):
        try:
            cfg = cfg_cls(**kw, **extra)
            break
        except Exception as e:  # noqa: BLE001 - report and try the next form
            errs.append(f"{list(extra) or 'default rope'}: {type(e).__name__}: {e}")
    if cfg is None:
        raise RuntimeError("config: " + " | ".join(errs))
    if errs:
        print(f"torch {shape}: config took the {len(errs) + 1}th form ({' | '.join(errs)})", flush=True)
    total, _ = params(kw)
    free, whole = torch.cuda.mem_get_info()
    need = 2 * total + (3 << 30)
    if need > free:
        raise MemoryError(f"needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free of {whole / 2**30:.1f} GiB")
    t0 = time.perf_counter()
    with torch.device("cuda"):
        try:
            model = model_cls._from_config(cfg, dtype=torch.bfloat16)
        except TypeError:
            model = model_cls._from_config(cfg, torch_dtype=torch.bfloat16)
    model.eval()
    with torch.no_grad():  # random weights on the device: N(0, 0.02) matrices, unit norms
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.02)
            elif "norm" in name:
                p.fill_(1.0)
            else:
                p.zero_()
        for name, b in model.named_buffers():
            if "e_score_correction_bias" in name:
                b.zero_()
    torch.cuda.synchronize()
    n = sum(p.numel() for p in model.parameters())
    dt = next(model.parameters()).dtype
    print(f"torch {shape}: built {model_name} in {time.perf_counter() - t0:.1f}s: {n / 1e9:.2f} B parameters "
          f"(arithmetic {total / 1e9:.2f} B), {dt}, attn {getattr(cfg, '_attn_implementation', '?')}, "
          f"experts {getattr(cfg, '_experts_implementation', 'n/a')}", flush=True)
    gc = getattr(model, "generation_config", None)
    if gc is not None:
        gc.eos_token_id, gc.pad_token_id = None, 0
    return model, kw


def report_decode(torch, shape, mode, kw, tps, extra=""):
    _, active = params(kw)
    wbytes = 2 * active
    cbytes = kw["num_hidden_layers"] * (PROMPT + DECODE / 2) * (kw["kv_lora_rank"] + kw["qk_rope_head_dim"]) * 2
    bw = roofline_bw(torch.cuda.get_device_name())
    print(f"torch {shape} bf16 {mode} decode batch 1: {tps:.1f} tok/s ({1e3 / tps:.2f} ms/token, "
          f"{1e3 / tps / kw['num_hidden_layers']:.3f} ms/layer), {100 * tps * (wbytes + cbytes) / bw:.1f}% of "
          f"{bw / 1e12:.2f} TB/s over {(wbytes + cbytes) / 1e9:.3f} GB/token{extra}", flush=True)


def run_eager(torch, transformers, shape):
    model, kw = build(torch, transformers, shape)
    g = torch.Generator(device="cuda").manual_seed(3)
    ids = torch.randint(0, kw["vocab_size"], (1, PREFILL), device="cuda", generator=g)
    prompt = ids[:, :PROMPT]
    mask = torch.ones_like(prompt)

    def gen(n):
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = model.generate(input_ids=prompt, attention_mask=mask, max_new_tokens=n, do_sample=False)
        torch.cuda.synchronize()
        return time.perf_counter() - t, out.shape[1] - prompt.shape[1]

    with torch.no_grad():
        gen(4)  # warm-up
        t1, _ = gen(1)
        tn, got = gen(DECODE)
        if got != DECODE:
            print(f"torch {shape}: generate stopped after {got} of {DECODE} tokens", flush=True)
        report_decode(torch, shape, "eager generate+DynamicCache", kw, (got - 1) / (tn - t1),
                      f"; prefill {PROMPT} + 1 token {t1 * 1e3:.1f} ms")
        model(ids[:, :256], logits_to_keep=1)  # warm-up
        torch.cuda.synchronize()
        t = time.perf_counter()
        model(ids, logits_to_keep=1)
        torch.cuda.synchronize()
        t = time.perf_counter() - t
        print(f"torch {shape} bf16 eager prefill {PREFILL} tokens: {t * 1e3:.0f} ms, {PREFILL / t:.0f} tok/s", flush=True)


def static_cache(transformers, model, max_len):
    try:  # transformers 5: layers sized on first use (V2/V3 keys and values differ in width)
        return transformers.StaticCache(config=model.config, max_cache_len=max_len)
    except TypeError:
        import torch
        return transformers.StaticCache(config=model.config, max_batch_size=1, max_cache_len=max_len,
                                        device="cuda", dtype=torch.bfloat16)


def run_compile(torch, transformers, shape):
    model, kw = build(torch, transformers, shape)
    experts = "eager"
    if hasattr(model, "set_experts_implementation"):
        try:  # cudagraph-friendly: no data-dependent expert loop
            model.set_experts_implementation("batched_mm")
            experts = "batched_mm"
        except Exception as e:  # noqa: BLE001
            print(f"torch {shape}: set_experts_implementation(batched_mm): {type(e).__name__}: {e}", flush=True)
    g = torch.Generator(device="cuda").manual_seed(3)
    prompt = torch.randint(0, kw["vocab_size"], (1, PROMPT), device="cuda", generator=g)
    cache = static_cache(transformers, model, PROMPT + DECODE + 8)
    step = torch.compile(model.forward, mode="reduce-overhead", fullgraph=False, dynamic=False)
    with torch.no_grad():
        out = model(input_ids=prompt, past_key_values=cache, use_cache=True,
                    cache_position=torch.arange(PROMPT, device="cuda"), logits_to_keep=1)
        tok = out.logits[:, -1:].argmax(-1)
        t0 = time.perf_counter()
        for i in range(DECODE):
            if i == COMPILE_WARM:
                torch.cuda.synchronize()
                t1 = time.perf_counter()
            pos = torch.tensor([PROMPT + i], device="cuda")
            torch.compiler.cudagraph_mark_step_begin()
            out = step(input_ids=tok, past_key_values=cache, use_cache=True, cache_position=pos, logits_to_keep=1)
            tok = out.logits[:, -1:].argmax(-1)
        torch.cuda.synchronize()
        t2 = time.perf_counter()
    report_decode(torch, shape, f"static cache+torch.compile(reduce-overhead), experts {experts}", kw,
                  (DECODE - COMPILE_WARM) / (t2 - t1), f"; compile+first {COMPILE_WARM} steps {t1 - t0:.1f}s")


def child(shape, mode):
    import torch
    import transformers
    try:
        (run_eager if mode == "eager" else run_compile)(torch, transformers, shape)
    except Exception as e:  # noqa: BLE001 - the one-line failure is the measurement
        msg = " ".join(f"{type(e).__name__}: {e}".split())
        print(f"torch {shape} bf16 {mode}: FAILED {msg[:600]}", flush=True)
        return 1
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", nargs=2, metavar=("SHAPE", "MODE"), help=argparse.SUPPRESS)
    ap.add_argument("--cases", default="v2-lite:eager,v3-slice:eager,v2-lite:compile,v3-slice:compile")
    ap.add_argument("--deadline", type=float, default=float(os.environ.get("DS_TORCH_DEADLINE", 420)),
                    help="seconds for all cases together")
    ap.add_argument("--compile-timeout", type=float, default=float(os.environ.get("DS_TORCH_COMPILE_TIMEOUT", 150)))
    ap.add_argument("--eager-timeout", type=float, default=150)
    a = ap.parse_args()
    if a.case:
        sys.exit(child(*a.case))
    import torch
    import transformers
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.cuda.get_device_name()}, DeepseekV2ForCausalLM {hasattr(transformers, 'DeepseekV2ForCausalLM')}, "
          f"DeepseekV3ForCausalLM {hasattr(transformers, 'DeepseekV3ForCausalLM')}", flush=True)
    end = time.monotonic() + a.deadline
    for case in a.cases.split(","):
        shape, mode = case.split(":")
        limit = min(a.compile_timeout if mode == "compile" else a.eager_timeout, end - time.monotonic())
        if limit < 20:
            print(f"torch {shape} bf16 {mode}: SKIPPED (deadline)", flush=True)
            continue
        p = subprocess.Popen([sys.executable, __file__, "--case", shape, mode], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, bufsize=1)
        timer = threading.Timer(limit, p.kill)
        timer.start()
        tail, reported = [], False
        for line in p.stdout:
            if line.startswith("torch "):
                print(line, end="", flush=True)
                reported = reported or " FAILED " in line
            else:  # warnings and tracebacks: kept for a failure report
                tail = (tail + [line.rstrip()])[-8:]
        p.wait()
        timer.cancel()
        if p.returncode != 0 and not reported:
            why = f"killed after {limit:.0f}s" if p.returncode < 0 else f"exit {p.returncode}"
            print(f"torch {shape} bf16 {mode}: ended ({why}); last output: {' | '.join(tail)[-800:]}", flush=True)


if __name__ == "__main__":
    main()
