"""Drafter files: which file a `drafter` setting names, and loading it as what it declares.

Three kinds of trained drafter exist (issue 12), all safetensors with a `format` in their
metadata and the identity of the base model they were trained for:
  dllm-draft-head-1    DraftHead (drafting/head.py): a small head over the last hidden state
  dllm-attention-head-1  AttentionHead (drafting/attention_head.py): one attention layer over every position's state
  dllm-mask-adapter-1  MaskAdapter (drafting/mask_slots.py): trained mask slots inside the pass
"auto" picks the shipped file (engine/assets/drafters/) trained for the model's shape, preferring the
kind listed first in PREFERRED (the one that measured faster, docs/models.md).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Union

import engine.drafting.attention_head as attention_head
import engine.drafting.head as head
import engine.drafting.mask_slots as mask_slots
from engine.errors import CheckpointError

SHIPPED_DIR = Path(__file__).parents[1] / "assets" / "drafters"     # drafters trained by this project, in the repo
PREFERRED = (head.FORMAT, attention_head.FORMAT, mask_slots.FORMAT)


def _meta(path: Path) -> dict:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt", device="cpu") as f:
        return f.metadata() or {}


def shipped_drafters(cfg) -> Dict[str, Path]:
    """format -> the shipped drafter file of that format trained for a model of config `cfg`."""
    found: Dict[str, Path] = {}
    for path in sorted(SHIPPED_DIR.glob("*.safetensors")):
        try:
            meta = _meta(path)
        except Exception:  # a damaged shipped file: no drafter rather than no server
            continue
        if json.loads(meta.get("identity", "{}")) == mask_slots.base_identity(cfg):
            found.setdefault(meta.get("format"), path)
    return found


def resolve_drafter(spec: Optional[str], cfg) -> Optional[Path]:
    """The drafter file `spec` names for a model of config `cfg`: "auto" = the shipped drafter
    trained for this model's shape (None when there is none), "none"/""/None = no drafter, else
    a path (CheckpointError when absent)."""
    if spec in (None, "", "none"):
        return None
    if spec == "auto":
        if cfg.attention != "causal":
            return None
        found = shipped_drafters(cfg)
        return next((found[f] for f in PREFERRED if f in found), None)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: no drafter file there")
    return path


def load_drafter_file(path: Path, cfg) -> Union[head.DraftHead, attention_head.AttentionHead,
                                                mask_slots.MaskAdapter]:
    """A DraftHead, AttentionHead or MaskAdapter, as the file declares; CheckpointError for anything else."""
    fmt = head.drafter_format(path)
    if fmt == head.FORMAT:
        return head.DraftHead.load(path, cfg)
    if fmt == attention_head.FORMAT:
        return attention_head.AttentionHead.load(path, cfg)
    return mask_slots.MaskAdapter.load(path, cfg)     # names the file and what is wrong with it


def load_named(spec, cfg):
    """The drafter a setting names ("auto", "none", a path), loaded and carrying its `.path`;
    None for no drafter. CheckpointError as resolve_drafter / load_drafter_file raise it."""
    path = resolve_drafter(str(spec), cfg) if spec is not None else None
    if path is None:
        return None
    if cfg.attention != "causal":
        raise CheckpointError(f"{path}: trained drafters are for causal (AR) models, not the {cfg.family} family")
    drafter = load_drafter_file(path, cfg)
    drafter.path = path
    return drafter
