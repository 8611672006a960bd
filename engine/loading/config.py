"""ModelConfig.from_folder(): read a checkpoint folder's JSON files into one typed config.

Everything comes from the folder (config.json, then generation_config.json and
tokenizer_config.json / tokenizer.json for ids that live there); nothing is keyed by model
name. The family decides the parameter names (see loading/weights.py), whether logits are shifted
(Dream and Qwen2-style: position i is predicted from hidden state i-1) and the attention
kind (bidirectional, or block-causal when the config has a block size).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from engine.errors import ConfigError

LLADA_MASK_ID = 126336

# Token texts that end a generation wherever they appear in a vocabulary (llama.cpp's
# end-of-generation list for the families we load): FIM and chat terminators.
END_OF_GENERATION_TEXTS = ("<|endoftext|>", "<|im_end|>", "<|fim_pad|>", "<|repo_name|>",
                           "<|file_sep|>", "<|eot_id|>", "<|end_of_text|>", "<EOT>", "<|EOT|>")
# FIM control tokens by naming convention (Qwen2.5-Coder; StarCoder and its descendants)
FIM_TOKEN_TEXTS = (("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
                   ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"))


@dataclass(frozen=True)
class ModelConfig:
    family: str                 # "llada" | "dream" | "qwen2" | "block" | "ar" (AR-pretrained FIM)
    vocab_size: int             # rows of the embedding / lm head
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rope_theta: float
    rms_norm_eps: float
    tie_embeddings: bool
    qkv_bias: bool
    mlp_bias: bool              # bias on o/gate/up/down projections (LLaDA include_bias)
    logit_shift: bool           # logits[:, i] computed from hidden state i-1
    attention: str              # "bidirectional" | "block_causal" | "causal"
    block_size: Optional[int]
    mask_id: int
    eos_id: int
    pad_id: int
    bos_id: Optional[int] = None
    fim_prefix_id: Optional[int] = None
    fim_suffix_id: Optional[int] = None
    fim_middle_id: Optional[int] = None
    max_position: int = 4096
    torch_dtype: str = "float32"
    extra_stop_ids: tuple = ()  # further end-of-generation ids (AR models: <|fim_pad|>, <|file_sep|>, ...)
    path: Optional[str] = None
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def uses_fim_tokens(self) -> bool:
        return self.fim_middle_id is not None and self.attention == "block_causal"

    @property
    def stop_ids(self) -> frozenset:
        return frozenset(i for i in (self.eos_id, self.pad_id, *self.extra_stop_ids) if i is not None)

    @staticmethod
    def from_folder(path) -> "ModelConfig":
        return parse_config(Path(path))

    def to_json(self) -> dict:
        """The config.json our own block-causal models are written with."""
        if self.family != "block":
            raise ConfigError("only block-family configs are written by this project")
        return {
            "model_type": "dllm_block",
            "architectures": ["DllmBlockModel"],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_embeddings,
            "attention_bias": self.qkv_bias,
            "logit_shift": self.logit_shift,
            "block_size": self.block_size,
            "mask_token_id": self.mask_id,
            "eos_token_id": self.eos_id,
            "pad_token_id": self.pad_id,
            "bos_token_id": self.bos_id,
            "fim_prefix_token_id": self.fim_prefix_id,
            "fim_suffix_token_id": self.fim_suffix_id,
            "fim_middle_token_id": self.fim_middle_id,
            "max_position_embeddings": self.max_position,
            "torch_dtype": self.torch_dtype,
            **self.extra,
        }

    def with_(self, **changes) -> "ModelConfig":
        return replace(self, **changes)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read JSON: {exc}") from exc


class _Keys:
    """Looks a key up in config.json, then in the companion files; errors name file and key."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.config_path = folder / "config.json"
        if not self.config_path.is_file():
            raise ConfigError(f"{self.config_path}: no config.json in the model folder")
        self.config = _read_json(self.config_path)
        if not isinstance(self.config, dict):
            raise ConfigError(f"{self.config_path}: expected a JSON object")
        self.generation = _read_json(folder / "generation_config.json")
        self.tok_config = _read_json(folder / "tokenizer_config.json")
        self._vocab: Optional[dict] = None
        self._tokenizer_json: Optional[dict] = None

    def tokenizer_json(self) -> dict:
        """tokenizer.json, parsed once (11 MB for Qwen: ~0.4 s a parse)."""
        if self._tokenizer_json is None:
            self._tokenizer_json = _read_json(self.folder / "tokenizer.json")
        return self._tokenizer_json

    def req(self, *names: str) -> Any:
        for name in names:
            if self.config.get(name) is not None:
                return self.config[name]
        raise ConfigError(f"{self.config_path}: missing key '{names[0]}'")

    def opt(self, name: str, default=None) -> Any:
        value = self.config.get(name)
        return default if value is None else value

    def token_id(self, key: str, token_key: Optional[str] = None, default=None, required=True):
        """An id from config.json, generation_config.json, or a token named in tokenizer_config."""
        for source in (self.config, self.generation):
            value = source.get(key)
            if isinstance(value, list) and value:
                value = value[0]
            if isinstance(value, int):
                return value
        token = self.tok_config.get(token_key or key.replace("_id", ""))
        if isinstance(token, dict):
            token = token.get("content")
        if isinstance(token, str):
            found = self.vocab().get(token)
            if found is not None:
                return found
        if default is not None or not required:
            return default
        raise ConfigError(f"{self.config_path}: missing key '{key}' (also looked in "
                          f"generation_config.json and tokenizer_config.json)")

    def vocab(self) -> dict:
        """Special tokens of tokenizer.json (added_tokens) and tokenizer_config.json."""
        if self._vocab is None:
            vocab = {}
            tok = self.tokenizer_json()
            for added in tok.get("added_tokens", []) if isinstance(tok, dict) else []:
                vocab[added.get("content")] = added.get("id")
            for sid, added in (self.tok_config.get("added_tokens_decoder") or {}).items():
                if isinstance(added, dict) and str(sid).isdigit():
                    vocab.setdefault(added.get("content"), int(sid))
            self._vocab = vocab
        return self._vocab

    def tokenizer_size(self) -> int:
        """Ids the tokenizer can produce: its BPE vocabulary plus added tokens."""
        tok = self.tokenizer_json()
        model_vocab = tok.get("model", {}).get("vocab", {}) if isinstance(tok, dict) else {}
        ids = [v for v in model_vocab.values() if isinstance(v, int)] if isinstance(model_vocab, dict) else []
        ids += [v for v in self.vocab().values() if isinstance(v, int)]
        return max(ids) + 1 if ids else 0

    def id_list(self, key: str) -> list:
        """Every id under `key` in config.json and generation_config.json (int or list of ints)."""
        out = []
        for source in (self.config, self.generation):
            value = source.get(key)
            for v in (value if isinstance(value, list) else [value]):
                if isinstance(v, int) and v not in out:
                    out.append(v)
        return out

    def mask_from_tokenizer(self) -> Optional[int]:
        named = self.tok_config.get("mask_token")
        if isinstance(named, dict):
            named = named.get("content")
        vocab = self.vocab()
        if isinstance(named, str) and named in vocab:
            return vocab[named]
        candidates = [tid for tok, tid in vocab.items() if tok and "mask" in tok.lower()]
        return min(candidates) if candidates else None


def _qwen_sizes(k: _Keys) -> dict:
    hidden = int(k.req("hidden_size"))
    heads = int(k.req("num_attention_heads"))
    return dict(
        vocab_size=int(k.req("vocab_size")),
        hidden_size=hidden,
        num_layers=int(k.req("num_hidden_layers")),
        num_heads=heads,
        num_kv_heads=int(k.opt("num_key_value_heads", heads)),
        head_dim=int(k.opt("head_dim", hidden // heads)),
        intermediate_size=int(k.req("intermediate_size")),
        rope_theta=float(k.opt("rope_theta", 10000.0)),
        rms_norm_eps=float(k.opt("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(k.opt("tie_word_embeddings", False)),
        max_position=int(k.opt("max_position_embeddings", 4096)),
        torch_dtype=str(k.opt("torch_dtype", "float32")),
    )


def _parse_llada(k: _Keys) -> ModelConfig:
    d_model = int(k.req("d_model"))
    heads = int(k.req("n_heads"))
    mlp_hidden = k.opt("mlp_hidden_size")
    if mlp_hidden is None:
        mlp_hidden = int(k.req("mlp_ratio")) * d_model
    include_bias = bool(k.opt("include_bias", False))
    if k.opt("block_type", "llama") != "llama":
        raise ConfigError(f"{k.config_path}: block_type '{k.opt('block_type')}' is not supported "
                          "(only 'llama')")
    eos = k.token_id("eos_token_id")
    block = k.opt("block_size")
    return ModelConfig(
        family="llada",
        vocab_size=int(k.opt("embedding_size") or k.req("vocab_size")),
        hidden_size=d_model,
        num_layers=int(k.req("n_layers")),
        num_heads=heads,
        num_kv_heads=int(k.opt("n_kv_heads", heads)),
        head_dim=d_model // heads,
        intermediate_size=int(mlp_hidden),
        rope_theta=float(k.opt("rope_theta", 10000.0)),
        rms_norm_eps=float(k.opt("rms_norm_eps", 1e-5)),
        tie_embeddings=bool(k.opt("weight_tying", False)),
        qkv_bias=include_bias or bool(k.opt("include_qkv_bias", False)),
        mlp_bias=include_bias,
        logit_shift=False,
        attention="block_causal" if block else "bidirectional",
        block_size=int(block) if block else None,
        mask_id=int(k.opt("mask_token_id", LLADA_MASK_ID)),
        eos_id=eos,
        pad_id=k.token_id("pad_token_id", default=eos),
        bos_id=k.token_id("bos_token_id", required=False),
        max_position=int(k.opt("max_sequence_length", 4096)),
        torch_dtype=str(k.opt("torch_dtype", "bfloat16")),
    )


def _fim_ids(k: _Keys) -> Optional[tuple]:
    vocab = k.vocab()
    for names in FIM_TOKEN_TEXTS:
        if all(vocab.get(n) is not None for n in names):
            return tuple(int(vocab[n]) for n in names)
    return None


def _parse_ar(k: _Keys, default_bias: bool) -> ModelConfig:
    """A left-to-right causal LM (Qwen2.5-Coder, a llama): decoded as its own verifier.

    The FIM prompt is prefix-suffix-middle when FIM tokens are in the vocabulary, else the
    prefix alone. The mask slot is the first embedding row the tokenizer never produces (an
    id of ours for draft slots), or -1 when the embedding has no spare row."""
    sizes = _qwen_sizes(k)
    eos_ids = k.id_list("eos_token_id") or [k.token_id("eos_token_id")]
    vocab = k.vocab()
    stops = list(eos_ids) + k.id_list("stop_token_ids")
    stops += [vocab[t] for t in END_OF_GENERATION_TEXTS if vocab.get(t) is not None]
    pad = k.opt("pad_token_id")
    n_tok = k.tokenizer_size()
    fim = _fim_ids(k)
    return ModelConfig(
        family="ar",
        qkv_bias=bool(k.opt("attention_bias", default_bias)),
        mlp_bias=bool(k.opt("mlp_bias", False)),
        logit_shift=True,
        attention="causal",
        block_size=None,
        mask_id=n_tok if 0 < n_tok < sizes["vocab_size"] else -1,
        eos_id=int(eos_ids[0]),
        pad_id=int(pad) if isinstance(pad, int) else int(eos_ids[0]),
        bos_id=k.token_id("bos_token_id", required=False),
        fim_prefix_id=fim[0] if fim else None,
        fim_suffix_id=fim[1] if fim else None,
        fim_middle_id=fim[2] if fim else None,
        extra_stop_ids=tuple(sorted(set(int(i) for i in stops) - {int(eos_ids[0])})),
        **sizes,
    )


def _parse_qwen2(k: _Keys) -> ModelConfig:
    """Qwen2 with a mask token is Open-dCoder-style (bidirectional); without one, an AR model."""
    if k.opt("mask_token_id") is None and k.mask_from_tokenizer() is None:
        return _parse_ar(k, default_bias=True)
    return _parse_qwen_like(k, "qwen2")


def _parse_qwen_like(k: _Keys, family: str) -> ModelConfig:
    sizes = _qwen_sizes(k)
    mask = k.opt("mask_token_id")
    if mask is None:
        mask = k.mask_from_tokenizer()
    if mask is None:
        raise ConfigError(f"{k.config_path}: missing key 'mask_token_id' and no mask token in "
                          "tokenizer_config.json / tokenizer.json")
    eos = k.token_id("eos_token_id")
    block = k.opt("block_size") or k.opt("bd_size")
    return ModelConfig(
        family=family,
        qkv_bias=bool(k.opt("attention_bias", True)),
        mlp_bias=False,
        logit_shift=bool(k.opt("logit_shift", True)),
        attention="block_causal" if block else "bidirectional",
        block_size=int(block) if block else None,
        mask_id=int(mask),
        eos_id=eos,
        pad_id=k.token_id("pad_token_id", default=eos),
        bos_id=k.token_id("bos_token_id", required=False),
        **sizes,
    )


def _parse_block(k: _Keys) -> ModelConfig:
    sizes = _qwen_sizes(k)
    fim = {name: k.opt(f"fim_{name}_token_id") for name in ("prefix", "suffix", "middle")}
    return ModelConfig(
        family="block",
        qkv_bias=bool(k.opt("attention_bias", False)),
        mlp_bias=False,
        logit_shift=bool(k.opt("logit_shift", False)),
        attention="block_causal",
        block_size=int(k.req("block_size")),
        mask_id=int(k.req("mask_token_id")),
        eos_id=int(k.req("eos_token_id")),
        pad_id=int(k.opt("pad_token_id", k.req("eos_token_id"))),
        bos_id=k.opt("bos_token_id"),
        fim_prefix_id=fim["prefix"],
        fim_suffix_id=fim["suffix"],
        fim_middle_id=fim["middle"],
        extra={key: value for key, value in k.config.items() if key.startswith("train_")},
        **sizes,
    )


_FAMILIES = {
    "llada": _parse_llada,
    "dream": lambda k: _parse_qwen_like(k, "dream"),
    "qwen2": _parse_qwen2,
    "llama": lambda k: _parse_ar(k, default_bias=False),
    "dllm_block": _parse_block,
}


def parse_config(folder: Path) -> ModelConfig:
    keys = _Keys(folder)
    model_type = keys.config.get("model_type")
    if model_type is None:
        raise ConfigError(f"{keys.config_path}: missing key 'model_type'")
    parser = _FAMILIES.get(str(model_type).lower())
    if parser is None:
        raise ConfigError(f"{keys.config_path}: unknown model_type '{model_type}' "
                          f"(supported: LLaDA, Dream, qwen2, llama, dllm_block)")
    try:
        return replace(parser(keys), path=str(folder))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{keys.config_path}: bad value: {exc}") from exc
