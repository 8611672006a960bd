"""Tiny GGUF files written with `gguf.GGUFWriter`, in llama.cpp's exact layout, for tests.

A byte-level BPE tokenizer is trained in memory (the Qwen2 split regex, like the real model's),
its tokens and merges go into the metadata together with Qwen's control tokens (FIM, chat,
end of text) and a few unused filler rows ([PAD…], as real GGUF vocabularies have), and random
weights are written as the requested tensor types. Quantized types the `gguf` package can
quantize (Q8_0, Q5_0, F16, BF16) are quantized from the weights; for the K-quants (Q4_K, Q5_K,
Q6_K), which it can only dequantize, random blocks with sane scales are written, which is all a
loader test needs: the loader and the oracle read the same bytes.
For `llama` the q/k rows are stored permuted, as llama.cpp's converter stores them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from engine.testing.checkpoints import SAMPLE_CODE

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_middle|>",
                 "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
N_UNUSED = 5


def trained_vocab(vocab_size: int = 300):
    """(tokens in id order, merges "a b") of a byte-level BPE trained with the Qwen2 split."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from engine.loading.gguf_metadata import PRE_TOKENIZER_REGEX
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRE_TOKENIZER_REGEX["qwen2"]), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tk.train_from_iterator([SAMPLE_CODE] * 4, trainer)
    import json
    model = json.loads(tk.to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, merges


def permute_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's q/k permutation (the inverse of gguf_import.unpermute_rows)."""
    head_dim = w.shape[0] // n_heads
    return w.reshape(n_heads, 2, head_dim // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _random_kquant(qtype, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Random K-quant blocks (uint8 [rows, bytes per row]) with small finite f16 scales."""
    import gguf
    block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = rows * cols // block
    raw = rng.integers(0, 256, size=(n_blocks, nbytes), dtype=np.uint8)
    scale = np.array([0.002], dtype=np.float16).view(np.uint8)
    if qtype in (gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.Q5_K):
        raw[:, 0:2] = scale                     # d
        raw[:, 2:4] = scale                     # dmin
    else:                                       # Q6_K: ql, qh, int8 scales, then d at the end
        raw[:, -2:] = scale
    return raw.reshape(rows, cols // block * nbytes)


def write_gguf_model(path: Path, arch: str = "qwen2", hidden: int = 64, layers: int = 2, heads: int = 4,
                     kv_heads: int = 2, intermediate: int = 128, tie: bool = False, seed: int = 0,
                     types: Optional[Dict[str, str]] = None, context_length: int = 256,
                     omit_keys: Sequence[str] = (), claim_intermediate: Optional[int] = None,
                     skip_tensors: Sequence[str] = ()) -> Path:
    """Write a tiny GGUF file. `types` maps a tensor-name fragment ("ffn_down", "token_embd", ...)
    to a GGML type name ("Q4_K", "Q8_0", ...); everything else is F32. For error tests:
    `omit_keys` drops `{arch}.KEY` metadata, `claim_intermediate` writes a feed-forward length
    other than the tensors', `skip_tensors` leaves tensors out."""
    import gguf
    from gguf import GGMLQuantizationType as Q
    rng = np.random.default_rng(seed)
    tokens, merges = trained_vocab()
    n_normal = len(tokens)
    tokens = tokens + QWEN_SPECIALS + [f"[PAD{n_normal + len(QWEN_SPECIALS) + i}]" for i in range(N_UNUSED)]
    token_types = [1] * n_normal + [3] * len(QWEN_SPECIALS) + [5] * N_UNUSED
    n_vocab = len(tokens)
    head_dim = hidden // heads
    types = dict(types or {})

    w = gguf.GGUFWriter(str(path), arch)
    model_keys = {"block_count": (w.add_block_count, layers), "context_length": (w.add_context_length, context_length),
                  "embedding_length": (w.add_embedding_length, hidden),
                  "feed_forward_length": (w.add_feed_forward_length, claim_intermediate or intermediate),
                  "attention.head_count": (w.add_head_count, heads), "attention.head_count_kv": (w.add_head_count_kv, kv_heads),
                  "rope.freq_base": (w.add_rope_freq_base, 1_000_000.0 if arch == "qwen2" else 10_000.0),
                  "attention.layer_norm_rms_epsilon": (w.add_layer_norm_rms_eps, 1e-6)}
    for key, (add, value) in model_keys.items():
        if key not in omit_keys:
            add(value)
    w.add_file_type(15)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(token_types)
    w.add_token_merges(merges)
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_pad_token_id(tokens.index("<|endoftext|>"))
    w.add_bos_token_id(tokens.index("<|endoftext|>"))
    w.add_add_bos_token(False)

    def tensor(name: str, shape: Sequence[int], std: float = 0.1, ones: bool = False) -> None:
        if name in skip_tensors:
            return
        data = (np.ones(shape) + rng.normal(0, 0.05, shape) if ones else rng.normal(0, std, shape)).astype(np.float32)
        if arch == "llama" and (".attn_q." in name or ".attn_k." in name) and name.endswith("weight"):
            data = permute_rows(data, heads if ".attn_q." in name else kv_heads)
        kind = next((t for frag, t in types.items() if frag in name), "F32") if len(shape) == 2 else "F32"
        qtype = Q[kind]
        if kind in ("Q4_K", "Q5_K", "Q6_K"):
            w.add_tensor(name, _random_kquant(qtype, shape[0], shape[1], rng), raw_dtype=qtype)
        elif kind == "F32":
            w.add_tensor(name, data)
        elif kind == "F16":
            w.add_tensor(name, data.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    tensor("token_embd.weight", (n_vocab, hidden), std=0.5)
    for i in range(layers):
        p = f"blk.{i}."
        tensor(p + "attn_norm.weight", (hidden,), ones=True)
        tensor(p + "attn_q.weight", (heads * head_dim, hidden))
        tensor(p + "attn_k.weight", (kv_heads * head_dim, hidden))
        tensor(p + "attn_v.weight", (kv_heads * head_dim, hidden))
        if arch == "qwen2":
            tensor(p + "attn_q.bias", (heads * head_dim,))
            tensor(p + "attn_k.bias", (kv_heads * head_dim,))
            tensor(p + "attn_v.bias", (kv_heads * head_dim,))
        tensor(p + "attn_output.weight", (hidden, heads * head_dim))
        tensor(p + "ffn_norm.weight", (hidden,), ones=True)
        tensor(p + "ffn_gate.weight", (intermediate, hidden))
        tensor(p + "ffn_up.weight", (intermediate, hidden))
        tensor(p + "ffn_down.weight", (hidden, intermediate))
    tensor("output_norm.weight", (hidden,), ones=True)
    if not tie:
        tensor("output.weight", (n_vocab, hidden), std=0.5)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)
