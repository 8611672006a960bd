"""Tiny checkpoints in each family's exact on-disk format, for tests and CPU benchmarks.

Nothing is downloaded: a byte-level BPE tokenizer is trained in memory on a few lines of
Python, and random weights are written as safetensors next to a config.json in the family's
own key names (LLaDA: d_model/n_layers/..., Dream & Qwen2: hidden_size/..., ours: dllm_block).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from engine.loading.config import ModelConfig
from engine.model.transformer import DecoderModel
from engine.loading.weights import save_state

SPECIAL_TOKENS = ["<|eos|>", "<|pad|>", "<|mask|>", "<|fim_prefix|>", "<|fim_suffix|>",
                  "<|fim_middle|>", "<|file_sep|>"]

SAMPLE_CODE = '''def add(a, b):
    return a + b


class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y

    def norm(self):
        return (self.x ** 2 + self.y ** 2) ** 0.5


for i in range(10):
    if i % 2 == 0:
        print("even", i)
    else:
        print("odd", i)
# naïve café — ünïcode ✓ 🎉
'''


def tiny_tokenizer(vocab_size: int = 320, text: str = SAMPLE_CODE):
    """A byte-level BPE tokenizers.Tokenizer with our special tokens at ids 0..6."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator([text] * 4, trainer)
    return tk


def block_config(vocab_size: int = 320, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                 intermediate: int = 128, block_size: int = 4, tie: bool = True) -> ModelConfig:
    return ModelConfig(
        family="block", vocab_size=vocab_size, hidden_size=hidden, num_layers=layers, num_heads=heads,
        num_kv_heads=kv_heads, head_dim=hidden // heads, intermediate_size=intermediate, rope_theta=10000.0,
        rms_norm_eps=1e-6, tie_embeddings=tie, qkv_bias=False, mlp_bias=False, logit_shift=False,
        attention="block_causal", block_size=block_size, mask_id=2, eos_id=0, pad_id=1, bos_id=None,
        fim_prefix_id=3, fim_suffix_id=4, fim_middle_id=5, max_position=2048)


def random_state(cfg: ModelConfig, seed: int = 0, std: float = 0.1) -> dict:
    torch.manual_seed(seed)
    model = DecoderModel(cfg)
    state = {}
    for name, p in model.state_dict().items():
        if name.endswith("layernorm.weight") or name == "norm.weight":
            state[name] = 1.0 + 0.1 * torch.randn_like(p)
        else:
            state[name] = std * torch.randn_like(p)
    return state


def write_block_model(folder: Path, cfg: Optional[ModelConfig] = None, seed: int = 0,
                      state: Optional[dict] = None) -> Path:
    """Our own format: config.json (model_type dllm_block), model.safetensors, tokenizer.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tk = tiny_tokenizer()
    cfg = cfg or block_config(vocab_size=tk.get_vocab_size())
    tk.save(str(folder / "tokenizer.json"))
    (folder / "config.json").write_text(json.dumps(cfg.to_json(), indent=1))
    save_state(cfg, state if state is not None else random_state(cfg, seed), folder)
    return folder


def write_llada_model(folder: Path, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 4,
                      vocab: int = 384, seed: int = 0, shard_bytes: int = 40_000) -> Path:
    """LLaDA's layout: model.transformer.* names, LLaDA config keys, bf16, sharded with an index."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tk = tiny_tokenizer()
    tk.save(str(folder / "tokenizer.json"))
    raw = {"architectures": ["LLaDAModelLM"], "model_type": "llada", "activation_type": "silu",
           "block_type": "llama", "d_model": hidden, "n_layers": layers, "n_heads": heads, "n_kv_heads": kv_heads,
           "mlp_hidden_size": hidden * 3, "mlp_ratio": 4, "embedding_size": vocab, "vocab_size": vocab,
           "include_bias": False, "include_qkv_bias": False, "layer_norm_type": "rms", "rms_norm_eps": 1e-5,
           "rope": True, "rope_theta": 500000.0, "weight_tying": False, "mask_token_id": 2,
           "eos_token_id": 0, "pad_token_id": 1, "max_sequence_length": 1024, "torch_dtype": "bfloat16"}
    (folder / "config.json").write_text(json.dumps(raw, indent=1))
    cfg = ModelConfig.from_folder(folder)
    save_state(cfg, random_state(cfg, seed), folder, dtype=torch.bfloat16, max_shard_bytes=shard_bytes)
    return folder


def write_dream_model(folder: Path, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                      vocab: int = 384, tie: bool = False, model_type: str = "Dream", seed: int = 0) -> Path:
    """Dream's (Qwen2) layout: model.layers.N.self_attn.* with q/k/v biases, bf16, one file.

    model_type="qwen2" writes an Open-dCoder-style config without mask_token_id: the mask id
    then comes from the tokenizer's mask token.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tk = tiny_tokenizer()
    tk.save(str(folder / "tokenizer.json"))
    raw = {"architectures": ["DreamModel"], "model_type": model_type, "hidden_size": hidden,
           "intermediate_size": hidden * 3, "num_hidden_layers": layers, "num_attention_heads": heads,
           "num_key_value_heads": kv_heads, "max_position_embeddings": 1024, "vocab_size": vocab,
           "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": tie, "hidden_act": "silu",
           "pad_token_id": 1, "bos_token_id": 6, "eos_token_id": 0, "torch_dtype": "bfloat16"}
    if model_type == "Dream":
        raw["mask_token_id"] = 2
    (folder / "config.json").write_text(json.dumps(raw, indent=1))
    cfg = ModelConfig.from_folder(folder)
    save_state(cfg, random_state(cfg, seed), folder, dtype=torch.bfloat16)
    return folder
