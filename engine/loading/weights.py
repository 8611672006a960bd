"""Safetensors in, parameters out: single or sharded files, memory-mapped, via each family's name map.

The model's own parameter names follow the Qwen2 layout without the `model.` prefix. Each
family maps checkpoint names onto them (`checkpoint_name` is the inverse, used to write tiny
checkpoints in a family's exact format for tests). Only safetensors and JSON are ever read:
no pickle, no code from the checkpoint.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Optional

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from engine.loading.config import ModelConfig
from engine.errors import CheckpointError

_LLADA_LAYER = {
    "q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
    "attn_out": "self_attn.o_proj", "ff_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj",
    "ff_out": "mlp.down_proj", "attn_norm": "input_layernorm", "ff_norm": "post_attention_layernorm",
}
_LLADA_LAYER_INV = {v: k for k, v in _LLADA_LAYER.items()}
_LLADA_TOP = {"wte": "embed_tokens", "ln_f": "norm", "ff_out": "lm_head"}
_LLADA_TOP_INV = {v: k for k, v in _LLADA_TOP.items()}


def model_name(cfg: ModelConfig, name: str) -> Optional[str]:
    """Checkpoint tensor name -> our parameter name (None if the name is not ours to load)."""
    if cfg.family == "llada":
        m = re.fullmatch(r"model\.transformer\.blocks\.(\d+)\.(\w+)\.(weight|bias)", name)
        if m and m.group(2) in _LLADA_LAYER:
            return f"layers.{m.group(1)}.{_LLADA_LAYER[m.group(2)]}.{m.group(3)}"
        m = re.fullmatch(r"model\.transformer\.(\w+)\.(weight|bias)", name)
        if m and m.group(1) in _LLADA_TOP:
            return f"{_LLADA_TOP[m.group(1)]}.{m.group(2)}"
        return None
    if name.startswith("model."):
        return name[len("model."):]
    if name.startswith("lm_head."):
        return name
    return None


def checkpoint_name(cfg: ModelConfig, name: str) -> str:
    """Our parameter name -> the family's checkpoint tensor name."""
    if cfg.family == "llada":
        m = re.fullmatch(r"layers\.(\d+)\.(self_attn\.\w+|mlp\.\w+|\w+layernorm)\.(weight|bias)", name)
        if m:
            return f"model.transformer.blocks.{m.group(1)}.{_LLADA_LAYER_INV[m.group(2)]}.{m.group(3)}"
        top, kind = name.rsplit(".", 1)
        return f"model.transformer.{_LLADA_TOP_INV[top]}.{kind}"
    return name if name.startswith("lm_head.") else f"model.{name}"


def _shard_files(folder: Path) -> List[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, OSError) as exc:
            raise CheckpointError(f"{index}: not a valid safetensors index: {exc}") from exc
        files = sorted({folder / f for f in weight_map.values()})
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{index}: shard files missing: {', '.join(missing)}")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
        hint = f" (found {', '.join(pickles)}: pickle checkpoints are never loaded)" if pickles else ""
        raise CheckpointError(f"{folder}: no .safetensors weights{hint}")
    return files


def load_state(cfg: ModelConfig, folder: Path, expected: Dict[str, torch.Size],
               dtype: torch.dtype, device: str = "cpu") -> Dict[str, torch.Tensor]:
    """Read every tensor, map names, check them against `expected`; one error lists every problem."""
    state: Dict[str, torch.Tensor] = {}
    unexpected, misshaped = [], []
    for path in _shard_files(folder):
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for name in f.keys():
                    ours = model_name(cfg, name)
                    if ours is None or ours not in expected:
                        if not (cfg.tie_embeddings and ours == "lm_head.weight"):
                            unexpected.append(name)
                        continue
                    shape = tuple(f.get_slice(name).get_shape())
                    if shape != tuple(expected[ours]):
                        misshaped.append(f"{name} {list(shape)} (expected {list(expected[ours])})")
                        continue
                    state[ours] = f.get_tensor(name).to(device=device, dtype=dtype)
        except CheckpointError:
            raise
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise CheckpointError(f"{path}: cannot read safetensors file ({type(exc).__name__}: {exc}); "
                                  "the file may be truncated or corrupt") from exc
    missing = sorted(checkpoint_name(cfg, n) for n in expected if n not in state)
    problems = tensor_problems(missing, unexpected, misshaped)
    if problems:
        raise CheckpointError(f"{folder}: weights do not match config.json; {problems}")
    return state


def tensor_problems(missing: List[str], unexpected: List[str], misshaped: List[str], most: int = 20) -> str:
    """One message listing every missing, unexpected and mis-shaped tensor ("" when none)."""
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing[:most])}" + (" ..." if len(missing) > most else ""))
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(sorted(unexpected)[:most])}")
    if misshaped:
        problems.append(f"wrong shapes: {', '.join(misshaped[:most])}")
    return "; ".join(problems)


def save_state(cfg: ModelConfig, state: Dict[str, torch.Tensor], folder: Path,
               dtype: Optional[torch.dtype] = None, max_shard_bytes: Optional[int] = None) -> List[Path]:
    """Write `state` (our names) in the family's layout; shard into files of at most max_shard_bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {checkpoint_name(cfg, k): (v.to(dtype) if dtype else v).detach().contiguous().cpu()
               for k, v in state.items() if not (cfg.tie_embeddings and k == "lm_head.weight")}
    shards: List[Dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(tensors):
        nbytes = tensors[name].numel() * tensors[name].element_size()
        if max_shard_bytes and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensors[name]
        size += nbytes
    if len(shards) == 1:
        path = folder / "model.safetensors"
        save_file(shards[0], str(path), metadata={"format": "pt"})
        return [path]
    paths, weight_map = [], {}
    for i, shard in enumerate(shards):
        path = folder / f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path), metadata={"format": "pt"})
        paths.append(path)
        weight_map.update({name: path.name for name in shard})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    return paths


def expected_shapes(model: torch.nn.Module) -> Dict[str, torch.Size]:
    return {name: p.shape for name, p in model.state_dict().items()}
