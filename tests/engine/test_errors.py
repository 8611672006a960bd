"""Broken checkpoints give one clear error naming the file and every problem."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine import Engine
from engine.errors import CheckpointError, ConfigError, ModelNotFoundError


def _copy(src, tmp_path):
    dst = tmp_path / "m"
    shutil.copytree(src, dst)
    return dst


def test_truncated_safetensors(tiny_block_model, tmp_path):
    folder = _copy(tiny_block_model, tmp_path)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*truncated or corrupt"):
        Engine.load(folder, device="cpu")


def test_missing_unexpected_and_misshaped_tensors_listed_together(tiny_block_model, tmp_path):
    folder = _copy(tiny_block_model, tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    del state["model.layers.0.mlp.up_proj.weight"]
    state["model.layers.1.self_attn.q_proj.weight"] = torch.zeros(3, 3)
    state["model.extra.weight"] = torch.zeros(1)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        Engine.load(folder, device="cpu")
    msg = str(err.value)
    assert "missing tensors: model.layers.0.mlp.up_proj.weight" in msg
    assert "unexpected tensors: model.extra.weight" in msg
    assert "wrong shapes: model.layers.1.self_attn.q_proj.weight [3, 3]" in msg


def test_pickle_checkpoints_are_refused(tiny_block_model, tmp_path):
    folder = _copy(tiny_block_model, tmp_path)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="pickle checkpoints are never loaded"):
        Engine.load(folder, device="cpu")


def test_missing_shard_named(tiny_llada_model, tmp_path):
    folder = _copy(tiny_llada_model, tmp_path)
    shard = sorted(folder.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(CheckpointError, match=shard.name):
        Engine.load(folder, device="cpu")


def test_unknown_model_type(tiny_block_model, tmp_path):
    folder = _copy(tiny_block_model, tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "mamba"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="unknown model_type 'mamba'"):
        Engine.load(folder, device="cpu")


def test_missing_tokenizer(tiny_block_model, tmp_path):
    folder = _copy(tiny_block_model, tmp_path)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="no tokenizer.json"):
        Engine.load(folder, device="cpu")


def test_unresolvable_names(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="not in the local Hugging Face cache"):
        Engine.load("GSAI-ML/LLaDA-8B-Base")
    with pytest.raises(ModelNotFoundError, match="not found"):
        Engine.load(str(tmp_path / "nope"))


def test_hf_cache_snapshot_is_found(tiny_dream_model, tmp_path, monkeypatch):
    snap = tmp_path / "models--org--tiny" / "snapshots" / "abc123"
    shutil.copytree(tiny_dream_model, snap)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert Engine.load("org/tiny", device="cpu").cfg.family == "dream"
