"""ModelConfig.from_folder on the released checkpoints' configs and on broken folders."""
import json
import shutil
from pathlib import Path

import pytest

from engine.loading.config import ModelConfig
from engine.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "fixtures" / "model_configs"   # released checkpoints' configs


def _folder(tmp_path, name, extra_files=None):
    shutil.copy(CONFIGS / name, tmp_path / "config.json")
    for fname, content in (extra_files or {}).items():
        (tmp_path / fname).write_text(json.dumps(content))
    return tmp_path


def test_llada_8b(tmp_path):
    cfg = ModelConfig.from_folder(_folder(tmp_path, "llada-8b.json"))
    assert cfg.family == "llada"
    assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads) == (4096, 32, 32, 32)
    assert cfg.head_dim == 128 and cfg.intermediate_size == 12288 and cfg.vocab_size == 126464
    assert cfg.mask_id == 126336 and cfg.eos_id == 126081 and cfg.pad_id == 126081
    assert not cfg.logit_shift and cfg.attention == "bidirectional"
    assert not cfg.qkv_bias and not cfg.tie_embeddings and cfg.rope_theta == 500000.0


def test_dream_coder(tmp_path):
    cfg = ModelConfig.from_folder(_folder(tmp_path, "dream-coder-v0-7b.json"))
    assert cfg.family == "dream" and cfg.logit_shift and cfg.qkv_bias
    assert (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (28, 4, 128)
    assert cfg.mask_id == 151666 and cfg.bos_id == 151665 and cfg.eos_id == 151643
    assert cfg.vocab_size == 152064 and cfg.rms_norm_eps == 1e-6


def test_open_dcoder_mask_from_tokenizer(tmp_path):
    folder = _folder(tmp_path, "open-dcoder-0.5b.json", {
        "tokenizer_config.json": {"mask_token": "<|mask|>", "eos_token": "<|endoftext|>"},
        "tokenizer.json": {"added_tokens": [{"id": 151643, "content": "<|endoftext|>"},
                                            {"id": 151665, "content": "<|mask|>"}]},
    })
    cfg = ModelConfig.from_folder(folder)
    assert cfg.family == "qwen2" and cfg.tie_embeddings and cfg.logit_shift
    assert cfg.mask_id == 151665 and cfg.eos_id == 151643
    assert (cfg.hidden_size, cfg.num_kv_heads, cfg.head_dim) == (896, 2, 64)


def test_qwen2_without_a_mask_token_is_an_ar_fim_model(tmp_path):
    """Qwen2.5-Coder's own HF folder: no mask token, FIM tokens in the vocabulary."""
    added = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_middle|>",
             "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
    folder = _folder(tmp_path, "open-dcoder-0.5b.json", {
        "generation_config.json": {"eos_token_id": [151645, 151643]},
        "tokenizer.json": {"added_tokens": [{"id": 151643 + i, "content": t} for i, t in enumerate(added)]},
    })
    cfg = ModelConfig.from_folder(folder)
    assert cfg.family == "ar" and cfg.attention == "causal" and cfg.logit_shift
    assert (cfg.fim_prefix_id, cfg.fim_suffix_id, cfg.fim_middle_id) == (151646, 151648, 151647)
    assert cfg.stop_ids == {151643, 151645, 151649, 151650, 151651}
    assert cfg.mask_id == 151652            # the first embedding row past the tokenizer
    (tmp_path / "bare").mkdir()
    bare = _folder(tmp_path / "bare", "open-dcoder-0.5b.json", {
        "tokenizer_config.json": {"eos_token": "<|endoftext|>"},
        "tokenizer.json": {"added_tokens": [{"id": 151643, "content": "<|endoftext|>"}]}})
    plain = ModelConfig.from_folder(bare)
    assert plain.family == "ar" and plain.fim_middle_id is None   # no FIM tokens: prefix-only prompts
    assert plain.eos_id == 151643


def test_block_causal_roundtrip(tmp_path):
    from engine.testing.checkpoints import block_config
    cfg = block_config()
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_json()))
    again = ModelConfig.from_folder(tmp_path)
    assert again.with_(path=None) == cfg
    assert again.attention == "block_causal" and again.block_size == 4 and again.uses_fim_tokens


def test_unknown_model_type_names_file_and_key(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ConfigError, match=r"config\.json.*unknown model_type 'gpt2'"):
        ModelConfig.from_folder(tmp_path)


def test_missing_key_names_file_and_key(tmp_path):
    raw = json.loads((CONFIGS / "dream-v0-7b.json").read_text())
    raw.pop("num_hidden_layers")
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=r"config\.json: missing key 'num_hidden_layers'"):
        ModelConfig.from_folder(tmp_path)


def test_missing_config_and_bad_json(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        ModelConfig.from_folder(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read JSON"):
        ModelConfig.from_folder(tmp_path)
