"""A GGUF file's metadata read as what it declares: typed access to its key/value fields (every
problem one CheckpointError naming the file and the key), the model's config.json, and its
byte-level BPE tokenizer rebuilt with `tokenizers` from the vocabulary and merges it carries."""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

from engine.errors import CheckpointError
from engine.loading.config import END_OF_GENERATION_TEXTS

SUPPORTED_ARCHS = ("qwen2", "llama")

# llama.cpp pre-tokenizer name -> the split regex it stands for (byte-level BPE families).
PRE_TOKENIZER_REGEX = {
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "llama-bpe": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}
_NFC_PRE_TOKENIZERS = {"qwen2"}

# gguf token types
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

def open_gguf(path: Path):
    import gguf   # the package; imported here so the engine imports without it
    try:
        return gguf.GGUFReader(str(path), "r")
    except Exception as exc:  # the reader raises ValueError/struct errors/IndexError on junk
        raise CheckpointError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc}); "
                              "the file may be truncated or corrupt") from exc


class GgufMeta:
    """Typed access to a GGUFReader's key/value fields; errors name the file and the key."""

    def __init__(self, reader, path: Path):
        self.reader, self.path = reader, path

    def get(self, key: str, default=None):
        field = self.reader.fields.get(key)
        if field is None:
            return default
        try:
            return field.contents()
        except Exception as exc:
            raise CheckpointError(f"{self.path}: metadata '{key}' is unreadable ({exc})") from exc

    def req(self, key: str):
        value = self.get(key)
        if value is None:
            raise CheckpointError(f"{self.path}: metadata key '{key}' is missing")
        return value


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _count(meta: "GgufMeta", key: str, default=None) -> int:
    """A positive integer from the metadata (required unless a default is given)."""
    value = meta.req(key) if default is None else meta.get(key, default)
    if not _is_int(value) or value < 1:
        raise CheckpointError(f"{meta.path}: metadata '{key}' is {value!r}; expected a positive integer")
    return int(value)


def _positive(meta: "GgufMeta", key: str, default=None) -> float:
    value = meta.req(key) if default is None else meta.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not value > 0 \
            or value == float("inf"):
        raise CheckpointError(f"{meta.path}: metadata '{key}' is {value!r}; expected a positive number")
    return float(value)


def config_from_metadata(meta: GgufMeta, tensor_names: set, n_vocab_rows: int, tokens: List[str]) -> dict:
    """HF-style config.json for the converted folder (model_type qwen2 or llama)."""
    arch = meta.req("general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise CheckpointError(f"{meta.path}: architecture '{arch}' is not supported "
                              f"(supported: {', '.join(SUPPORTED_ARCHS)})")
    if meta.get(f"{arch}.rope.scaling.type") not in (None, "none") or "rope_freqs.weight" in tensor_names:
        raise CheckpointError(f"{meta.path}: RoPE scaling is not supported")
    hidden = _count(meta, f"{arch}.embedding_length")
    heads = _count(meta, f"{arch}.attention.head_count")
    kv_heads = _count(meta, f"{arch}.attention.head_count_kv", heads)
    if meta.get(f"{arch}.attention.key_length") is None and hidden % heads:
        raise CheckpointError(f"{meta.path}: metadata '{arch}.embedding_length' {hidden} is not a multiple of "
                              f"'{arch}.attention.head_count' {heads}")
    head_dim = _count(meta, f"{arch}.attention.key_length", hidden // heads)
    if heads % kv_heads:
        raise CheckpointError(f"{meta.path}: metadata '{arch}.attention.head_count' {heads} is not a multiple of "
                              f"'{arch}.attention.head_count_kv' {kv_heads}")
    eos = meta.get("tokenizer.ggml.eos_token_id")
    if eos is None:
        raise CheckpointError(f"{meta.path}: metadata key 'tokenizer.ggml.eos_token_id' is missing")
    if not _is_int(eos) or not 0 <= eos < len(tokens):
        raise CheckpointError(f"{meta.path}: metadata 'tokenizer.ggml.eos_token_id' is {eos!r}, not a token id "
                              f"(0..{len(tokens) - 1})")
    stop = sorted({int(eos)} | {i for i, t in enumerate(tokens) if t in END_OF_GENERATION_TEXTS}
                  | ({int(meta.get("tokenizer.ggml.eot_token_id"))} if meta.get("tokenizer.ggml.eot_token_id") is not None else set()))
    cfg = {
        "model_type": arch,
        "architectures": ["Qwen2ForCausalLM" if arch == "qwen2" else "LlamaForCausalLM"],
        "vocab_size": n_vocab_rows,
        "hidden_size": hidden,
        "intermediate_size": _count(meta, f"{arch}.feed_forward_length"),
        "num_hidden_layers": _count(meta, f"{arch}.block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "rope_theta": _positive(meta, f"{arch}.rope.freq_base", 10000.0),
        "rms_norm_eps": _positive(meta, f"{arch}.attention.layer_norm_rms_epsilon"),
        "max_position_embeddings": _count(meta, f"{arch}.context_length", 4096),
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "attention_bias": "blk.0.attn_q.bias" in tensor_names,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": int(eos),
        "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"),
        "stop_token_ids": stop,
        "torch_dtype": "bfloat16",
    }
    return cfg


def tokenizer_from_metadata(meta: GgufMeta):
    """A `tokenizers.Tokenizer` equal to the model's own (byte-level BPE, gpt2-style GGUF vocab).

    Returns (tokenizer, tokens, types). Unused filler entries ([PAD…], type 5) stay out of the
    vocabulary; control and user-defined tokens are added tokens (control ones special)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    kind = meta.req("tokenizer.ggml.model")
    pre = meta.get("tokenizer.ggml.pre", "default")
    if kind != "gpt2":
        raise CheckpointError(f"{meta.path}: tokenizer model '{kind}' is not supported (only byte-level BPE, 'gpt2')")
    if pre not in PRE_TOKENIZER_REGEX:
        raise CheckpointError(f"{meta.path}: pre-tokenizer '{pre}' is not supported "
                              f"(supported: {', '.join(PRE_TOKENIZER_REGEX)})")
    tokens = [str(t) for t in meta.req("tokenizer.ggml.tokens")]
    types = [int(t) for t in meta.get("tokenizer.ggml.token_type", [_NORMAL] * len(tokens))]
    merges = [str(m) for m in meta.req("tokenizer.ggml.merges")]
    if len(types) != len(tokens):
        raise CheckpointError(f"{meta.path}: {len(tokens)} tokens but {len(types)} token types")
    vocab = {t: i for i, t in enumerate(tokens) if types[i] != _UNUSED}
    pairs = []
    for m in merges:
        a, sep, b = m.partition(" ")
        if not sep:
            raise CheckpointError(f"{meta.path}: malformed BPE merge {m!r}")
        pairs.append((a, b))
    tk = Tokenizer(models.BPE(vocab=vocab, merges=pairs, dropout=None, unk_token=None,
                              continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False,
                              byte_fallback=False))
    if pre in _NFC_PRE_TOKENIZERS:
        tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRE_TOKENIZER_REGEX[pre]), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tk.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    added = [AddedToken(t, special=types[i] == _CONTROL, normalized=False)
             for i, t in enumerate(tokens) if types[i] in (_CONTROL, _USER_DEFINED)]
    tk.add_tokens(added)
    for i, t in enumerate(tokens):
        if types[i] in (_CONTROL, _USER_DEFINED) and tk.token_to_id(t) != i:
            raise CheckpointError(f"{meta.path}: token {t!r} would get id {tk.token_to_id(t)}, not {i}")
    return tk, tokens, types
