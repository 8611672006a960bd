"""Random-weight models at real shapes, for benchmarks: a released config, optionally shrunk.

config_from reads a config.json file (or a folder holding one) through ModelConfig, so the
shapes are exactly what the engine would load; resized_config shrinks it for CPU runs
(fewer layers, a smaller hidden size with the same head size and GQA ratio, a smaller
vocabulary with the special ids moved inside it); random_model creates the parameters
directly on the device in the target dtype (meta -> to_empty -> in-place init, so a 7B
model never exists in float32 first).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

def config_from(path: str):
    """A ModelConfig from a config.json file or a folder holding one (nothing else is read)."""
    import tempfile

    from engine.loading.config import ModelConfig

    p = Path(path)
    if p.is_dir():
        return ModelConfig.from_folder(p)
    if not p.is_file():
        raise ValueError(f"{path}: no such config file or folder")
    raw = json.loads(p.read_text(encoding="utf-8"))
    if raw.get("model_type") == "qwen2" and "vocab_size" in raw:
        # Open-dCoder keeps its mask and eos ids in tokenizer files; for shapes any free ids do
        raw.setdefault("mask_token_id", raw["vocab_size"] - 1)
        raw.setdefault("eos_token_id", raw["vocab_size"] - 2)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(raw))
        return ModelConfig.from_folder(tmp).with_(path=str(p))


def resized_config(cfg, layers=None, hidden=None, intermediate=None, vocab=None):
    """Shrink a real config for CPU runs: heads follow the hidden size (same head dim, same GQA ratio)."""
    changes = {}
    if layers:
        changes["num_layers"] = layers
    if hidden:
        head_dim = min(cfg.head_dim, hidden)
        heads = max(1, hidden // head_dim)
        group = max(1, cfg.num_heads // cfg.num_kv_heads)
        kv = max(1, heads // group)
        while heads % kv:
            kv -= 1
        changes.update(hidden_size=heads * head_dim, num_heads=heads, num_kv_heads=kv, head_dim=head_dim)
        if not intermediate:
            scaled = cfg.intermediate_size * hidden / cfg.hidden_size
            changes["intermediate_size"] = max(64, int(math.ceil(scaled / 64)) * 64)
    if intermediate:
        changes["intermediate_size"] = intermediate
    if vocab:
        changes["vocab_size"] = vocab
        remap, top = {}, vocab - 1          # special ids that no longer fit move to the top, equal ids stay equal
        for name in ("mask_id", "eos_id", "pad_id", "bos_id", "fim_prefix_id", "fim_suffix_id", "fim_middle_id"):
            value = getattr(cfg, name)
            if value is not None and value >= vocab:
                if value not in remap:
                    remap[value], top = top, top - 1
                changes[name] = remap[value]
    return cfg.with_(**changes)


def random_model(cfg, device: str, dtype, kernels: str = "auto", seed: int = 0, std: float = 0.02):
    """A DecoderModel with random weights created directly on `device` in `dtype` (no fp32 copy)."""
    import torch

    from engine.model.forms import build_model

    model = build_model(cfg, device, dtype, kernels).to(dtype)       # meta parameters, cast for free
    model = model.to_empty(device=device)
    d = cfg.head_dim
    model.inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32, device=device) / d))
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, std, generator=gen)
    return model.eval()


def check_memory(cfg, device: str, dtype) -> None:
    import torch

    from engine.model.forms import build_model

    if not device.startswith("cpu"):
        return
    n = sum(p.numel() for p in build_model(cfg, "cpu", torch.float32).parameters())
    need = n * torch.empty(0, dtype=dtype).element_size()
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return
    if need > 0.6 * have:
        raise MemoryError(f"{n / 1e9:.1f}B parameters need {need / 2**30:.1f} GiB, this machine has "
                          f"{have / 2**30:.1f} GiB: shrink it (--layers 2 --hidden 256) or use a GPU")


