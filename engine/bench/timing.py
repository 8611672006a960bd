"""Timing sections of `bench engine`: one decoding step against the weight-read floor, and
each kernel against its torch reference.

Times are medians of wall-clock calls with the device synchronised around each call
(time_ms); "graphed" times replay a CUDA graph of many calls, so they are GPU time without
Python launch overhead (graphed_us). The floor is the bytes of weights one forward reads
over the copy bandwidth measured in the same process (read + write bytes of a buffer copy).
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, List, Optional

FIXED_TPF = (1, 2, 4, 6, 8)          # tokens per forward for the tokens/s-at-fixed-rate table


def bench_step(model, cfg, context: int, block: int, reps: int, bw_mib: int = 0) -> dict:
    import torch

    from engine.kernels.cuda.graph import GraphedStep
    import engine.kernels.reference as reference

    dev, dtype = model.device, model.dtype
    cuda = dev.type == "cuda"
    shift = 1 if cfg.logit_shift else 0
    t = block + shift                              # the dual-cache window: the block (+1 row when shifted)
    gen = torch.Generator(device=dev).manual_seed(1)
    ids = torch.randint(0, cfg.vocab_size, (1, t), device=dev, generator=gen)
    positions = torch.arange(context, context + t, device=dev)
    past = [(torch.randn(1, cfg.num_kv_heads, context, cfg.head_dim, device=dev, dtype=dtype, generator=gen),
             torch.randn(1, cfg.num_kv_heads, context, cfg.head_dim, device=dev, dtype=dtype, generator=gen))
            for _ in range(cfg.num_layers)]
    decide = model.kernels.decision

    def step(forward):
        def go():
            raw, _ = forward(ids, positions, past, None, shift)             # [1, block, V]
            conf, tok, _, _ = decide(raw[0].float())
            return tok
        return go

    out = {"query_tokens": t, "past_tokens": context}
    with torch.inference_mode():
        out["step_ms_eager"] = time_ms(step(model), dev, reps)
        out["step_ms_graphed"] = None
        if cuda:
            graphed = GraphedStep(model, warmup=1)
            out["step_ms_graphed"] = time_ms(step(graphed), dev, reps, warmup=3)
            out["graph_stats"] = graphed.stats()
        full_ids = torch.randint(0, cfg.vocab_size, (1, context + block), device=dev, generator=gen)
        full_pos = torch.arange(context + block, device=dev)
        out["full_canvas_ms"] = time_ms(lambda: model(full_ids, full_pos, None, None, context), dev,
                                        max(2, reps // 4))
        del past
    best = min(v for v in (out["step_ms_eager"], out["step_ms_graphed"]) if v is not None)
    out["step_ms"] = best
    read = weight_bytes_read(model)
    kv = 2 * cfg.num_layers * cfg.num_kv_heads * context * cfg.head_dim * torch.empty(0, dtype=dtype).element_size()
    bw = copy_bandwidth(dev, (bw_mib or (1024 if cuda else 256)) << 20, reps=max(3, reps // 2))
    out.update({
        "weight_bytes_total": sum(p.numel() * p.element_size() for p in model.parameters()),
        "weight_bytes_read": read, "kv_bytes_read": kv, "copy_bandwidth_gbs": bw / 1e9,
        "floor_ms": read / bw * 1000, "floor_ms_with_kv": (read + kv) / bw * 1000,
    })
    out["floor_ratio"] = best / out["floor_ms"]
    out["tokens_per_s_at_fixed_tpf"] = {str(k): k * 1000 / best for k in FIXED_TPF}
    out["kernels"] = model.kernels.NAME
    out["reference_kernels"] = model.kernels is reference
    return out


def weight_bytes_read(model) -> int:
    """Bytes of weights one forward reads: all parameters except an untied embedding table
    (only T of its rows are gathered; a tied table is read in full as the output head)."""
    skip = set()
    if model.lm_head is not None:
        skip.add(id(model.embed_tokens.weight))
    return sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in skip)


def copy_bandwidth(device, nbytes: int, reps: int = 5) -> float:
    """Device memory bandwidth in bytes/s from a buffer copy (read + write both counted)."""
    import torch

    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    src.fill_(1)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, reps)
    return 2 * nbytes / (ms / 1000)


def time_ms(fn: Callable, device, reps: int, warmup: int = 1) -> float:
    """Median wall time of fn() in ms, synchronising the device around every call."""
    import torch

    cuda = torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(max(1, reps)):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def bench_kernels(model, cfg, block: int, reps: int) -> List[dict]:
    """us per call of each kernel: the torch reference, the model's backend, and (CUDA) graphed."""
    import torch

    import engine.kernels.reference as reference

    dev, dtype = model.device, model.dtype
    cuda = dev.type == "cuda"
    fused = None
    if cuda:
        try:
            import engine.kernels.cuda.ops as fused
        except ImportError:
            fused = None
    g = torch.Generator(device=dev).manual_seed(2)
    r = lambda *shape, dt=dtype: torch.randn(*shape, device=dev, dtype=dt, generator=g)  # noqa: E731
    t, h, i, v = block, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    x, res, w = r(1, t, h), r(1, t, h), r(h)
    q = r(1, t, cfg.num_heads, cfg.head_dim).transpose(1, 2)
    k = r(1, t, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
    cos, sin = model.rope(torch.arange(t, device=dev))
    gate, up = r(1, t, i), r(1, t, i)
    logits = r(t, v, dt=torch.float32)

    def softmax_max_argmax():
        p = torch.softmax(logits, dim=-1)
        return p.max(-1).values, p.argmax(-1)

    cases = [
        ("rms_norm+residual", f"[{t},{h}]", lambda m: m.rms_norm(x, w, 1e-6, res)),
        ("rope q,k (in place)", f"q[{cfg.num_heads},{t},{cfg.head_dim}]", lambda m: m.apply_rope(q, k, cos, sin)),
        ("swiglu", f"[{t},{i}]", lambda m: m.swiglu(gate, up)),
        ("decision", f"[{t},{v}] fp32", lambda m: m.decision(logits)),
    ]
    rows = []
    with torch.inference_mode():
        for name, shape, call in cases:
            row = {"kernel": name, "shape": shape, "torch_us": 1000 * time_ms(lambda: call(reference), dev, reps)}
            if fused is not None:
                row["fused_us"] = 1000 * time_ms(lambda: call(fused), dev, reps)
                row["fused_graphed_us"] = graphed_us(lambda: call(fused), reps)
                row["torch_graphed_us"] = graphed_us(lambda: call(reference), reps)
            rows.append(row)
        base = {"kernel": "softmax+max+argmax (torch)", "shape": f"[{t},{v}] fp32",
                "torch_us": 1000 * time_ms(softmax_max_argmax, dev, reps)}
        if fused is not None:
            base["torch_graphed_us"] = graphed_us(softmax_max_argmax, reps)
        rows.append(base)
    dec = next(r for r in rows if r["kernel"] == "decision")
    if "fused_us" in dec:
        dec["speedup_vs_softmax_max_argmax"] = base["torch_us"] / dec["fused_us"]
        if dec.get("fused_graphed_us") and base.get("torch_graphed_us"):
            dec["graphed_speedup_vs_softmax_max_argmax"] = base["torch_graphed_us"] / dec["fused_graphed_us"]
    return rows


def graphed_us(fn: Callable, reps: int, inner: int = 20) -> Optional[float]:
    """GPU time per call in us: `inner` calls captured in one CUDA graph, replayed (no launch overhead)."""
    import torch

    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(inner):
                fn()
        return 1000 * time_ms(graph.replay, "cuda", reps) / inner
    except Exception:  # noqa: BLE001 (capture unsupported for this call: report no number)
        return None


