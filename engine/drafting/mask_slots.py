"""Trained mask slots for a causal model: a learned mask embedding and low-rank adapters that act
on mask rows only, so the verifier (every real-token row) is exactly the frozen model.

Design (the drafter of issue 12, after "Your LLM Knows the Future", Samragh et al. 2025):
a forward pass over `[t0, d1 .. dj, m1 .. mK]` (last committed token, drafts, K mask slots)
keeps the real rows first and the masks last. Attention is causal, so a real row never sees a
mask; every projection adds its low-rank delta only to rows >= `start` (the first mask), and
the embedding lookup replaces those rows with the learned mask vector. Real rows are computed
by the very same operations on the very same data as without the adapter: their logits are
bit-for-bit the frozen model's (tests/engine/test_mask_adapter.py), so output quality cannot
change. The output at mask slot i (position p + j + i) guesses the token at p + j + i + 1: with
all j drafts accepted and the bonus token committed at p + j + 1, the K guesses are drafts for
the next pass.

Hooks rather than a second model: `attach(model)` registers forward hooks on the embedding and
on the targeted nn.Linear modules; `rows_from(start)` switches them on for one pass (None: off,
the hooks return at once). The same hooks serve training (all rows masks, start = 0, gradients
flow into the adapter only; the base model is frozen).

Parameters: mask_embedding [H]; per layer and target, A [r, in] (small random) and B [out, r]
(zeros, so an untrained adapter only changes the mask embedding); delta = (x A^T) B^T * alpha/r.
Saved as safetensors (fp16) with the identity of the base model in the metadata, so an adapter
is never applied to a model it was not trained for.
"""
from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import torch
from torch import nn

from engine.errors import CheckpointError
from engine.model.packed import is_linear

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FORMAT = "dllm-mask-adapter-1"


def base_identity(cfg) -> dict:
    """What an adapter must match: the shape of the model it was trained on."""
    return {"hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers, "vocab_size": cfg.vocab_size,
            "intermediate_size": cfg.intermediate_size, "num_heads": cfg.num_heads,
            "num_kv_heads": cfg.num_kv_heads, "mask_id": cfg.mask_id}


def read_drafter_file(path, cfg, fmt: str, what: str):
    """(metadata, tensors) of a drafter file of format `fmt` made for a model of config `cfg`;
    CheckpointError naming the file when it is absent, unreadable, of another kind ("not a
    <what>") or trained for another model."""
    from safetensors import safe_open
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no drafter file there")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors' own error types for corrupt files
        raise CheckpointError(f"{path}: cannot read drafter file ({type(exc).__name__}: {exc})") from exc
    if meta.get("format") != fmt:
        raise CheckpointError(f"{path}: not a {what} (format {meta.get('format')!r})")
    identity, want = json.loads(meta.get("identity", "{}")), base_identity(cfg)
    if identity != want:
        diff = sorted(k for k in set(identity) | set(want) if identity.get(k) != want.get(k))
        raise CheckpointError(f"{path}: drafter was trained for another model (differs in {', '.join(diff)})")
    return meta, tensors


def _linear_targets(model: nn.Module, targets: Sequence[str]) -> Dict[str, nn.Linear]:
    """'layers.N.self_attn.q_proj' -> module, for every targeted projection of every layer."""
    out = {}
    for name, mod in model.named_modules():
        if is_linear(mod) and name.split(".")[-1] in targets and name.startswith("layers."):
            out[name] = mod
    return out


class MaskAdapter(nn.Module):
    def __init__(self, cfg, rank: int = 8, alpha: float = 16.0, targets: Sequence[str] = TARGETS,
                 mask_slots: int = 4, init_embedding: Optional[torch.Tensor] = None, seed: int = 0):
        super().__init__()
        self.identity = base_identity(cfg)
        self.rank, self.alpha, self.targets, self.mask_slots = rank, alpha, tuple(targets), mask_slots
        self.scale = alpha / rank
        h = cfg.hidden_size
        emb = init_embedding.detach().clone().float() if init_embedding is not None else torch.zeros(h)
        self.mask_embedding = nn.Parameter(emb)                                        # [H]
        shapes = _projection_shapes(cfg, self.targets)
        gen = torch.Generator().manual_seed(seed)
        self.lora_a = nn.ParameterDict()
        self.lora_b = nn.ParameterDict()
        for name, (fan_in, fan_out) in shapes.items():
            key = name.replace(".", "__")
            a = torch.randn(rank, fan_in, generator=gen) / math.sqrt(fan_in)
            self.lora_a[key] = nn.Parameter(a)                                         # [r, in]
            self.lora_b[key] = nn.Parameter(torch.zeros(fan_out, rank))                # [out, r]
        self.start: Optional[int] = None
        self._handles: List = []

    # ---- hooks ---------------------------------------------------------------------------
    def attach(self, model: nn.Module) -> "MaskAdapter":
        """Register the hooks on `model` (idempotent); the adapter follows the model's device/dtype."""
        self.detach_hooks()
        self.to(device=model.device, dtype=model.dtype)
        self._handles.append(model.embed_tokens.register_forward_hook(self._embedding_hook))
        for name, mod in _linear_targets(model, self.targets).items():
            key = name.replace(".", "__")
            if key in self.lora_a:
                self._handles.append(mod.register_forward_hook(self._linear_hook(key)))
        return self

    def detach_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    @contextlib.contextmanager
    def rows_from(self, start: Optional[int]) -> Iterator[None]:
        """Rows >= start of the next forward passes are mask slots (None: no masks)."""
        old, self.start = self.start, start
        try:
            yield
        finally:
            self.start = old

    def _embedding_hook(self, mod, inputs, out):
        s = self.start
        if s is None or s >= out.shape[1]:
            return None
        mask_rows = self.mask_embedding.to(out.dtype).expand(out.shape[0], out.shape[1] - s, -1)
        return torch.cat([out[:, :s], mask_rows], dim=1) if s else mask_rows.contiguous()

    def _linear_hook(self, key: str):
        a, b = self.lora_a[key], self.lora_b[key]

        def hook(mod, inputs, out):
            s = self.start
            if s is None or s >= out.shape[1]:
                return None
            x = inputs[0][:, s:]                                                       # [B, Tm, in]
            delta = (x @ a.t()) @ b.t() * self.scale                                   # [B, Tm, out]
            if not out.requires_grad:                                                  # decoding: no copy
                out[:, s:] += delta
                return out
            if s == 0:
                return out + delta
            return torch.cat([out[:, :s], out[:, s:] + delta], dim=1)
        return hook

    # ---- files ---------------------------------------------------------------------------
    def save(self, path: Path, extra: Optional[dict] = None) -> None:
        from safetensors.torch import save_file
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"mask_embedding": self.mask_embedding.detach().cpu().to(torch.float16).contiguous()}
        for key in self.lora_a:
            tensors[f"lora_a.{key}"] = self.lora_a[key].detach().cpu().to(torch.float16).contiguous()
            tensors[f"lora_b.{key}"] = self.lora_b[key].detach().cpu().to(torch.float16).contiguous()
        meta = {"format": FORMAT, "identity": json.dumps(self.identity, sort_keys=True),
                "rank": str(self.rank), "alpha": str(self.alpha), "targets": ",".join(self.targets),
                "mask_slots": str(self.mask_slots), "extra": json.dumps(extra or {})}
        tmp = path.with_name(path.name + ".part")
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(path)

    @classmethod
    def load(cls, path, cfg) -> "MaskAdapter":
        """Read an adapter file; CheckpointError when it is unreadable or made for another model."""
        meta, tensors = read_drafter_file(path, cfg, FORMAT, "mask-slot drafter")
        adapter = cls(cfg, rank=int(meta["rank"]), alpha=float(meta["alpha"]),
                      targets=tuple(meta["targets"].split(",")), mask_slots=int(meta.get("mask_slots", 4)))
        state = {"mask_embedding": tensors.pop("mask_embedding").float()}
        for k, v in tensors.items():
            state[k] = v.float()
        missing, unexpected = adapter.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{path}: drafter tensors do not match (missing {missing[:3]}, "
                                  f"unexpected {unexpected[:3]})")
        adapter.extra = json.loads(meta.get("extra", "{}"))
        return adapter


def _projection_shapes(cfg, targets: Sequence[str]) -> Dict[str, tuple]:
    """'layers.N.<group>.<target>' -> (in, out) features, mirroring model/transformer.py's layout."""
    h, d, i = cfg.hidden_size, cfg.head_dim, cfg.intermediate_size
    dims = {"q_proj": ("self_attn", h, cfg.num_heads * d), "k_proj": ("self_attn", h, cfg.num_kv_heads * d),
            "v_proj": ("self_attn", h, cfg.num_kv_heads * d), "o_proj": ("self_attn", cfg.num_heads * d, h),
            "gate_proj": ("mlp", h, i), "up_proj": ("mlp", h, i), "down_proj": ("mlp", i, h)}
    out = {}
    for n in range(cfg.num_layers):
        for t in targets:
            group, fan_in, fan_out = dims[t]
            out[f"layers.{n}.{group}.{t}"] = (fan_in, fan_out)
    return out
