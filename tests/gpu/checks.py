"""GPU checks as plain functions (no pytest import), shared by the pytest files beside this one
and by scripts/gpu_check_runner.py (for GPU boxes without pytest).

Every check raises AssertionError with a message on failure and returns a short string on
success. CASES lists (name, function, kwargs): fresh random inputs at several shapes, fp32
and bf16, vocabularies 126464 and 152064 and odd sizes; outputs are poisoned (NaN / -1)
before the kernel runs and checked fully written; relative errors within the dtype's bounds;
whole-model logits with and without the fused kernels; CUDA-graph replays against eager.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

import engine.kernels.reference as reference

# |fused - reference| <= atol + rtol * |reference|: fp32 differs by summation order only;
# bf16 results are rounded at the same places as torch, so at most about one bf16 ulp apart.
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=2 ** -7, atol=1e-5)}
DTYPES = (torch.float32, torch.bfloat16)
# DLLM_CHECKS_DEVICE=cpu: a dry run of the checks' own code on the CPU, with the torch reference
# standing in for the fused kernels and graph checks skipped (what scripts/gpu_check.sh --dry-run does)
DEVICE = os.environ.get("DLLM_CHECKS_DEVICE", "cuda")
DRY = DEVICE == "cpu"


class Skip(Exception):
    """Raised when a check cannot run here (no CUDA, no CuPy)."""


def _need_cuda() -> None:
    if not DRY and not torch.cuda.is_available():
        raise Skip("needs a CUDA GPU")


def _into(out, value):
    if out is None:
        return value
    out.copy_(value)
    return out


# the reference with cupy_ops' out= parameters: the stand-in for the dry run
REFERENCE_WITH_OUT = SimpleNamespace(
    NAME="torch", rms_norm=lambda x, w, eps, res=None, out=None, residual_out=None: (
        lambda n, r: (_into(out, n), r if res is None else _into(residual_out, r)))(*reference.rms_norm(x, w, eps, res)),
    apply_rope=lambda q, k, cos, sin: tuple(a.copy_(b) for a, b in zip((q, k), reference.apply_rope(q, k, cos, sin))),
    swiglu=lambda g, u, out=None: _into(out, reference.swiglu(g, u)),
    decision=lambda logits, out=None: reference.decision(logits) if out is None else tuple(
        _into(o, v) for o, v in zip(out, reference.decision(logits))))


class DryCapture:
    """The dry run's stand-in for a CUDA graph: static buffers, replay = the model on them."""

    def __init__(self, model, ids, positions, past, mask, logits_from=0):
        from engine.kernels.cuda.graph import graph_logits_from
        self.model, self.logits_from = model, graph_logits_from(logits_from)
        self.ids, self.positions = ids.clone(), positions.clone()
        self.past = [(k.clone(), v.clone()) for k, v in past] if past else None
        self.mask = None if mask is None else mask.clone()

    def run(self, ids, positions, past, mask, logits_from=0):
        self.ids.copy_(ids)
        self.positions.copy_(positions)
        for (sk, sv), (k, v) in zip(self.past or [], past or []):
            sk.copy_(k)
            sv.copy_(v)
        if mask is not None:
            self.mask.copy_(mask)
        logits, kvs = self.model(self.ids, self.positions, self.past, self.mask, self.logits_from)
        return logits[:, logits_from - self.logits_from:].clone(), kvs


def graphed(model, **kw):
    from engine.kernels.cuda.graph import GraphedStep
    return GraphedStep(model, capture=DryCapture, **kw) if DRY else GraphedStep(model, **kw)


FUSED_OVERRIDE = None     # set by tests/engine/test_fused_emulated.py: cupy_ops running on the CUDA emulator


def fused():
    if FUSED_OVERRIDE is not None:
        return FUSED_OVERRIDE
    if DRY:
        return REFERENCE_WITH_OUT
    _need_cuda()
    try:
        import engine.kernels.cuda.ops as cupy_ops
    except ImportError as exc:
        raise Skip(f"CuPy not importable: {exc}") from exc
    return cupy_ops


def _gen(seed: int) -> torch.Generator:
    return torch.Generator(device=DEVICE).manual_seed(seed)


def _close(got: torch.Tensor, want: torch.Tensor, dtype, what: str) -> float:
    got, want = got.float(), want.float()
    err = (got - want).abs()
    bound = TOL[dtype]["atol"] + TOL[dtype]["rtol"] * want.abs()
    worst = (err - bound).max().item()
    assert worst <= 0, (f"{what}: error exceeds {dtype} bounds at {int((err > bound).sum())} of {err.numel()} "
                        f"elements (max abs error {err.max().item():.3g})")
    return (err.max() / want.abs().max().clamp_min(1e-30)).item()


def _written(t: torch.Tensor, what: str) -> None:
    assert not torch.isnan(t.float()).any(), f"{what}: output not fully written (NaN poison left)"


# ---- kernels ------------------------------------------------------------------------------------
def check_rms_norm(dtype, rows: int, hidden: int, residual: bool = True) -> str:
    ops = fused()
    g = _gen(rows * 7 + hidden)
    x = torch.randn(1, rows, hidden, device=DEVICE, generator=g).to(dtype)
    res = torch.randn(1, rows, hidden, device=DEVICE, generator=g).to(dtype) if residual else None
    w = (1 + 0.2 * torch.randn(hidden, device=DEVICE, generator=g)).to(dtype)
    out = torch.full_like(x, float("nan"))
    res_out = torch.full_like(x, float("nan"))
    got, got_res = ops.rms_norm(x, w, 1e-6, res, out=out, residual_out=res_out)
    want, want_res = reference.rms_norm(x, w, 1e-6, res)
    assert got is out
    _written(got, "rms_norm out")
    if residual:
        assert got_res is res_out
        _written(got_res, "rms_norm new residual")
        _close(got_res, want_res, dtype, "rms_norm residual")
    else:
        assert got_res is x
    return f"rel err {_close(got, want, dtype, 'rms_norm'):.2g}"


def check_rope(dtype, seq: int, heads: int, kv_heads: int, head_dim: int, start: int = 17,
               any_tables: bool = False) -> str:
    """q and k as strided views of one fused qkv buffer: the v part must stay untouched.
    any_tables: cos/sin with unrelated halves (the contract is the formula for any [T, D] tables)."""
    ops = fused()
    g = _gen(seq * 31 + heads)
    qd, kd = heads * head_dim, kv_heads * head_dim
    buf = torch.randn(1, seq, qd + 2 * kd, device=DEVICE, generator=g).to(dtype)
    q = buf[..., :qd].view(1, seq, heads, head_dim).transpose(1, 2)               # [1,H,T,D] strided
    k = buf[..., qd:qd + kd].view(1, seq, kv_heads, head_dim).transpose(1, 2)
    v_before = buf[..., qd + kd:].clone()
    pos = torch.arange(start, start + seq, device=DEVICE)
    inv_freq = 1.0 / (1e6 ** (torch.arange(0, head_dim, 2, device=DEVICE).float() / head_dim))
    ang = pos.float()[:, None] * inv_freq
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()    # [T, D] fp32
    if any_tables:
        cos, sin = torch.randn(2, seq, head_dim, device=DEVICE, generator=g)
    want_q, want_k = reference.apply_rope(q.clone(), k.clone(), cos, sin)
    got_q, got_k = ops.apply_rope(q, k, cos, sin)
    assert got_q.data_ptr() == q.data_ptr() and got_k.data_ptr() == k.data_ptr(), "rope must work in place"
    assert torch.equal(buf[..., qd + kd:], v_before), "rope wrote outside q and k"
    return f"rel err q {_close(got_q, want_q, dtype, 'rope q'):.2g}, k {_close(got_k, want_k, dtype, 'rope k'):.2g}"


def check_swiglu(dtype, rows: int, width: int) -> str:
    ops = fused()
    g = _gen(rows + width)
    gate = (2 * torch.randn(1, rows, width, device=DEVICE, generator=g)).to(dtype)
    up = torch.randn(1, rows, width, device=DEVICE, generator=g).to(dtype)
    out = torch.full_like(gate, float("nan"))
    got = ops.swiglu(gate, up, out=out)
    assert got is out
    _written(got, "swiglu")
    return f"rel err {_close(got, reference.swiglu(gate, up), dtype, 'swiglu'):.2g}"


def check_decision(dtype, rows: int, vocab: int, scale: float = 3.0, mask_id: int = 1) -> str:
    ops = fused()
    g = _gen(rows * 1000 + vocab)
    logits = (scale * torch.randn(rows, vocab, device=DEVICE, generator=g)).to(dtype)
    if vocab > 4:
        logits[:, mask_id] = float("-inf")                       # the mask id, as the decoder sets it
        logits[0, vocab - 1] = logits[0, 2] = logits[0].float().max() + 1     # a tie across the row: first wins
    if rows > 2 and vocab > 8192:
        logits[2, : vocab - 5000] = float("-inf")              # whole chunks with no finite logit
    outs = (torch.full((rows,), float("nan"), device=DEVICE), torch.full((rows,), -1, device=DEVICE, dtype=torch.int64),
            torch.full((rows,), float("nan"), device=DEVICE), torch.full((rows,), float("nan"), device=DEVICE))
    conf, arg, ent, margin = ops.decision(logits, out=outs)
    for t, name in zip((conf, ent, margin), ("conf", "entropy", "margin")):
        _written(t, f"decision {name}")
    assert (arg >= 0).all() and (arg < vocab).all(), "decision argmax not written / out of range"
    w_conf, w_arg, w_ent, w_margin = reference.decision(logits)
    assert torch.equal(arg, w_arg), f"argmax differs in {int((arg != w_arg).sum())} rows"
    if vocab > 4:
        assert arg[0].item() == 2, "ties must resolve to the first index"
    tol = dict(rtol=1e-4, atol=1e-5)
    for got, want, name in ((conf, w_conf, "conf"), (ent, w_ent, "entropy"), (margin, w_margin, "margin")):
        err = (got - want).abs()
        assert (err <= tol["atol"] + tol["rtol"] * want.abs()).all(), f"decision {name}: max error {err.max().item():.3g}"
    return f"max |conf err| {(conf - w_conf).abs().max().item():.2g}, |entropy err| {(ent - w_ent).abs().max().item():.2g}"


# ---- whole model and graphs --------------------------------------------------------------------
def _small_config(vocab: int = 1000, attention: str = "bidirectional"):
    from engine.testing.checkpoints import block_config
    cfg = block_config(vocab_size=vocab, hidden=256, layers=3, heads=4, kv_heads=2, intermediate=704)
    if attention == "bidirectional":
        cfg = cfg.with_(family="dream", attention="bidirectional", block_size=None, logit_shift=True,
                        qkv_bias=True, mask_id=vocab - 1, tie_embeddings=False)
    return cfg


def check_model_logits(dtype, vocab: int) -> str:
    """model.logits with the fused kernels equals model.logits with the torch reference."""
    ops = fused()
    from engine.testing.random_weights import random_model
    cfg = _small_config(vocab)
    model = random_model(cfg, DEVICE, dtype, kernels="torch", std=0.05)
    ids = torch.randint(0, vocab, (1, 200), device=DEVICE, generator=_gen(5))
    want = model.logits(ids)
    model.kernels = ops
    try:
        got = model.logits(ids)
    finally:
        model.kernels = reference
    _written(got, "model logits")
    rel = ((got.float() - want.float()).abs().max() / want.float().abs().max()).item()
    bound = 1e-4 if dtype == torch.float32 else 3e-2
    assert rel <= bound, f"logits with fused kernels differ: relative {rel:.3g} > {bound}"
    agree = (got.argmax(-1) == want.argmax(-1)).float().mean().item()
    assert dtype == torch.bfloat16 or agree == 1.0, f"argmax agreement {agree:.3f}"
    return f"relative logits error {rel:.2g}, argmax agreement {agree:.3f}"


def check_graphed_step(dtype, kernels: str) -> str:
    """A dual-cache step replayed from a CUDA graph equals the eager step, also when past changes."""
    fused() if kernels == "cupy" else _need_cuda()
    kernels = "torch" if DRY else kernels
    from engine.testing.random_weights import random_model
    cfg = _small_config(4096)
    model = random_model(cfg, DEVICE, dtype, kernels=kernels, std=0.05)
    g = _gen(9)
    mk_past = lambda: [(torch.randn(1, cfg.num_kv_heads, 300, cfg.head_dim, device=DEVICE, generator=g).to(dtype),  # noqa: E731
                        torch.randn(1, cfg.num_kv_heads, 300, cfg.head_dim, device=DEVICE, generator=g).to(dtype))
                       for _ in range(cfg.num_layers)]
    past_a, past_b = mk_past(), mk_past()
    pos = torch.arange(300, 333, device=DEVICE)
    step = graphed(model, warmup=1)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    with torch.inference_mode():
        for i, past in enumerate([past_a, past_a, past_a, past_b, past_a]):
            ids = torch.randint(0, 4096, (1, 33), device=DEVICE, generator=g)
            first = i % 3
            got, got_kv = step(ids, pos, past, None, first)
            want, want_kv = model(ids, pos, past, None, first)
            assert got.shape == want.shape, f"step {i}: shape {tuple(got.shape)} != {tuple(want.shape)}"
            rel = ((got.float() - want.float()).abs().max() / want.float().abs().max()).item()
            assert rel <= tol, f"step {i}: graphed logits differ from eager by {rel:.3g}"
            assert all(torch.allclose(a.float(), b.float(), atol=tol * 10) for (a, _), (b, _) in zip(got_kv, want_kv))
    st = step.stats()
    assert st["captures"] == 1 and st["replays"] == 4 and st["failed_shapes"] == 0, st
    return f"{st}"


def check_engine_decode(kernels: str, graphs: bool) -> str:
    """Engine on CUDA (fp32): fused kernels and/or CUDA graphs decode the same tokens as torch eager."""
    fused() if kernels == "cupy" else _need_cuda()
    if DRY:
        kernels = "torch"
    from engine import Engine, InfillRequest
    from engine.testing.checkpoints import write_block_model, write_dream_model
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for writer, cache in ((write_dream_model, "dual"), (write_dream_model, "none"), (write_block_model, "auto")):
            folder = writer(Path(tmp) / f"{writer.__name__}")
            req = InfillRequest(prefix="def add(a, b):\n    return ", suffix="\n\nprint(add(1, 2))\n",
                                max_new_tokens=16, block_size=4, policy="threshold", threshold=0.3,
                                cache=cache, stop_at_eos=False)
            base = Engine.load(folder, device=DEVICE, dtype="float32", kernels="torch", cuda_graphs=False).infill(req)
            eng = Engine.load(folder, device=DEVICE, dtype="float32", kernels=kernels, cuda_graphs=graphs and not DRY)
            if graphs and DRY:
                eng.model.graphed_step = graphed(eng.model)
            got = eng.infill(req)
            assert got.token_ids == base.token_ids, f"{writer.__name__}/{cache}: tokens differ {got.token_ids} vs {base.token_ids}"
            if graphs:
                st = eng.model.graphed_step.stats()
                assert st["replays"] > 0 and st["failed_shapes"] == 0, f"{writer.__name__}/{cache}: {st}"
                results.append(f"{cache}: {st['replays']} replays")
            else:
                results.append(f"{cache}: ok")
    return ", ".join(results)


# ---- the list -------------------------------------------------------------------------------------
def _name(fn, **kw) -> str:
    return fn.__name__.replace("check_", "") + "[" + ",".join(
        f"{k}={str(v).replace('torch.', '')}" for k, v in kw.items()) + "]"


def _cases():
    cases = []
    for dt in DTYPES:
        for rows, hidden, res in ((1, 64, True), (7, 896, True), (32, 3584, True), (33, 4096, False),
                                  (2048, 3584, True), (5, 1000, True)):
            cases.append((check_rms_norm, dict(dtype=dt, rows=rows, hidden=hidden, residual=res)))
        for seq, heads, kv, d in ((1, 4, 4, 64), (33, 28, 4, 128), (32, 32, 32, 128), (2080, 28, 4, 128), (7, 14, 2, 64)):
            cases.append((check_rope, dict(dtype=dt, seq=seq, heads=heads, kv_heads=kv, head_dim=d)))
        cases.append((check_rope, dict(dtype=dt, seq=9, heads=4, kv_heads=2, head_dim=64, any_tables=True)))
        for rows, width in ((1, 1), (33, 18944), (32, 12288), (7, 1001)):
            cases.append((check_swiglu, dict(dtype=dt, rows=rows, width=width)))
        for rows, vocab in ((1, 152064), (32, 152064), (33, 126464), (64, 126464), (3, 1), (5, 2), (4, 4095),
                            (7, 4097), (3, 33333), (1, 151936)):
            cases.append((check_decision, dict(dtype=dt, rows=rows, vocab=vocab)))
        cases.append((check_decision, dict(dtype=dt, rows=16, vocab=152064, scale=30.0)))   # peaked rows
        for vocab in (1000, 152064):
            cases.append((check_model_logits, dict(dtype=dt, vocab=vocab)))
        for kern in ("torch", "cupy"):
            cases.append((check_graphed_step, dict(dtype=dt, kernels=kern)))
    for kern, graphs in (("cupy", False), ("torch", True), ("cupy", True)):
        cases.append((check_engine_decode, dict(kernels=kern, graphs=graphs)))
    return [(_name(fn, **kw), fn, kw) for fn, kw in cases]


CASES = _cases()
