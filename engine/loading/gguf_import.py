"""GGUF files in, an ordinary model folder out: read once, dequantize, write a bf16 safetensors copy.

A `.gguf` file (llama.cpp's format) holds hyper-parameters, the tokenizer and (mostly
quantized) tensors. The engine never decodes from it directly: `convert_gguf` reads it with
the `gguf` package (llama.cpp's own reader and dequantizers: Q4_K, Q5_K, Q6_K, Q8_0, Q5_0,
F16, BF16, F32 and the rest it knows), maps the names of the `qwen2` and `llama`
architectures onto the HF layout (undoing llama.cpp's q/k row permutation for `llama`),
and writes an HF-style folder: config.json, tokenizer.json (built from the metadata with
`tokenizers`), model.safetensors (bf16), exact/gguf.safetensors (the file's exact weights: the
quantized matrices' int8 codes and scales, loading/gguf_codes.py, which the CPU kernel multiplies, and
the fp32 norms and biases; `read_exact`) and source.json. That folder then loads through the same path as any checkpoint folder,
memory-mapped, in about a second.

`cached_folder(path)` keeps one converted copy per GGUF file in the user cache directory,
keyed by the file's resolved path, size and mtime. The folder is built under a temporary
name and renamed into place only when complete, so a half-written copy is never loaded.

Every problem (not a GGUF file, a truncated file, an unsupported architecture or tokenizer,
metadata that is missing or of the wrong type or value, a tensor of the wrong shape, count or
type) raises one CheckpointError naming the file.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, NamedTuple, Optional, Tuple

import numpy as np

import engine.loading.gguf_codes as gguf_codes
from engine.errors import CheckpointError
from engine.loading.gguf_metadata import GgufMeta, open_gguf, config_from_metadata, tokenizer_from_metadata
from engine.loading.weights import tensor_problems

CONVERTER_VERSION = 2          # bump when the folder layout changes: old copies are rebuilt (2: codes)
EXACT_FILE = "exact/gguf.safetensors"   # the file's own weights: codes and scales, fp32 vectors (read_exact)


_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def hf_tensor_name(gguf_name: str) -> Optional[str]:
    """'blk.3.attn_q.bias' -> 'model.layers.3.self_attn.q_proj.bias'; None if not a model tensor."""
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{parts[3]}"
    if len(parts) == 2 and parts[0] in _TOP_NAMES:
        return f"{_TOP_NAMES[parts[0]]}.{parts[1]}"
    return None


def unpermute_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k permutation for `llama` (interleaved -> rotate-half RoPE layout).

    llama.cpp stores each head's rows as pairs (x0, x_half, x1, x_half+1, ...); HF's layout,
    which our RoPE uses, is (x0, x1, ..., x_half, ...). w [out, in] (or [out] for a bias)."""
    out = w.shape[0]
    head_dim = out // n_heads
    return (w.reshape(n_heads, head_dim // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def _dequantized(tensor, path: Path) -> np.ndarray:
    """One GGUF tensor -> float32 numpy in row-major [out, in] (GGUF lists dims fastest first)."""
    from gguf import quants
    try:
        data = quants.dequantize(tensor.data, tensor.tensor_type)
    except NotImplementedError as exc:
        raise CheckpointError(f"{path}: tensor '{tensor.name}' has type {tensor.tensor_type.name}, "
                              "which cannot be dequantized") from exc
    except Exception as exc:
        raise CheckpointError(f"{path}: tensor '{tensor.name}' is unreadable ({type(exc).__name__}: {exc})") from exc
    shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
    if int(np.prod(shape)) != data.size:
        raise CheckpointError(f"{path}: tensor '{tensor.name}' holds {data.size} values, "
                              f"its shape {list(shape)} needs {int(np.prod(shape))}")
    return data.reshape(shape).astype(np.float32, copy=False)


def expected_hf_shapes(cfg: dict) -> Dict[str, Tuple[int, ...]]:
    h, d = cfg["hidden_size"], cfg["head_dim"]
    q, kv, inter = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d, cfg["intermediate_size"]
    shapes = {"model.embed_tokens.weight": (cfg["vocab_size"], h), "model.norm.weight": (h,)}
    if not cfg["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (cfg["vocab_size"], h)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                       p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
                       p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q),
                       p + "mlp.gate_proj.weight": (inter, h), p + "mlp.up_proj.weight": (inter, h),
                       p + "mlp.down_proj.weight": (h, inter)})
        if cfg["attention_bias"]:
            shapes.update({p + "self_attn.q_proj.bias": (q,), p + "self_attn.k_proj.bias": (kv,),
                           p + "self_attn.v_proj.bias": (kv,)})
    return shapes


def read_state(reader, path: Path, cfg: dict) -> Tuple[Dict[str, "object"], Dict[str, "object"]]:
    """Every model tensor as bf16 torch under HF names, and the exact weights (EXACT_FILE): the
    quantized matrices' codes (loading/gguf_codes.py) as torch tensors under `<name>.codes`, `.scale`,
    `.offset`, and the vectors (norms, biases) in fp32 under their names; one error lists
    every mismatch."""
    import torch
    expected = expected_hf_shapes(cfg)
    state, codes, unexpected, misshaped, misshaped_names = {}, {}, [], [], set()
    for tensor in reader.tensors:
        name = hf_tensor_name(tensor.name)
        if name is None or name not in expected:
            unexpected.append(tensor.name)
            continue
        data = _dequantized(tensor, path)
        if data.shape != expected[name]:
            misshaped.append(f"{tensor.name} {list(data.shape)} (expected {list(expected[name])})")
            misshaped_names.add(name)
            continue
        permuted = cfg["model_type"] == "llama" and (".q_proj." in name or ".k_proj." in name)
        if permuted:
            heads = cfg["num_attention_heads"] if ".q_proj." in name else cfg["num_key_value_heads"]
            data = unpermute_rows(data, heads)
        if not data.flags.writeable or not data.flags.c_contiguous:     # F32 tensors view the read-only file
            data = np.array(data, copy=True, order="C")
        state[name] = torch.from_numpy(data).to(torch.bfloat16)
        if data.ndim == 2 and gguf_codes.supported(tensor.tensor_type.name):
            c = gguf_codes.codes_of(tensor.tensor_type.name, tensor.data, *data.shape)
            if permuted:
                c = gguf_codes.take_rows(c, unpermute_rows(np.arange(data.shape[0]), heads))
            for part, value in zip(("codes", "scale", "offset"), c):
                if value is not None:
                    codes[f"{name}.{part}"] = torch.from_numpy(value)
        elif data.ndim == 1:                                            # norms and biases: fp32 as stored
            codes[name] = torch.from_numpy(data.astype(np.float32))
    missing = sorted(set(expected) - set(state) - misshaped_names)
    problems = tensor_problems(missing, unexpected, misshaped, most=10)
    if problems:
        raise CheckpointError(f"{path}: tensors do not match the metadata; {problems}")
    return state, codes


class ExactWeights(NamedTuple):
    """A converted GGUF's own weights under our parameter names (weights.model_name)."""
    codes: Dict[str, Tuple["object", "object", Optional["object"]]]   # matrix -> int8 codes, scale, offset
    dense: Dict[str, "object"]                                         # vector -> fp32


def read_exact(folder: Path, cfg) -> Optional[ExactWeights]:
    """The exact weights of a converted folder (EXACT_FILE), None where it has none (a folder
    not converted from a GGUF, or converted before they were written). CheckpointError for an
    unreadable file."""
    from safetensors import safe_open
    from engine.loading.weights import model_name
    path = Path(folder) / EXACT_FILE
    if not path.is_file():
        return None
    parts: Dict[str, Dict[str, object]] = {}
    dense = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in f.keys():
                base, _, part = key.rpartition(".")
                if part in ("codes", "scale", "offset"):
                    parts.setdefault(model_name(cfg, base), {})[part] = f.get_tensor(key)
                else:                             # a copy: a view would keep the whole file mapped
                    dense[model_name(cfg, key)] = f.get_tensor(key).clone()
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read the exact weights ({type(exc).__name__}: {exc})") from exc
    if None in parts or None in dense or any("codes" not in p or "scale" not in p for p in parts.values()):
        raise CheckpointError(f"{path}: exact weights with unknown names or missing parts")
    return ExactWeights({n: (p["codes"], p["scale"], p.get("offset")) for n, p in parts.items()}, dense)


def convert_gguf(path: Path, out: Path) -> Path:
    """Write the HF-style folder for GGUF file `path` at `out` (built beside it, then renamed)."""
    from safetensors.torch import save_file
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such GGUF file")
    reader = open_gguf(path)
    meta = GgufMeta(reader, path)
    tokenizer, tokens, _types = tokenizer_from_metadata(meta)
    names = {t.name for t in reader.tensors}
    embd = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if embd is None:
        raise CheckpointError(f"{path}: tensor 'token_embd.weight' is missing")
    n_rows = int(embd.shape.tolist()[-1])
    cfg = config_from_metadata(meta, names, n_rows, tokens)
    state, codes = read_state(reader, path, cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".part-", dir=out.parent))
    try:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        del state
        if codes:
            (tmp / EXACT_FILE).parent.mkdir()
            save_file(codes, str(tmp / EXACT_FILE), metadata={"format": "pt"})
        tokenizer.save(str(tmp / "tokenizer.json"))
        (tmp / "config.json").write_text(json.dumps(cfg, indent=1))
        (tmp / "source.json").write_text(json.dumps(_source_facts(path), indent=1))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _source_facts(path: Path) -> dict:
    st = path.stat()
    return {"gguf": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "converter": CONVERTER_VERSION}


def cache_root() -> Path:
    """The user cache directory of dllm-lsp (DLLM_LSP_CACHE overrides it, e.g. in tests)."""
    env = os.environ.get("DLLM_LSP_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir
    return Path(user_cache_dir("dllm-lsp"))


def cached_folder(path: Path, root: Optional[Path] = None) -> Path:
    """The converted folder for GGUF `path`, converting it first if no valid copy exists."""
    path = Path(path).resolve()
    if not path.is_file():
        raise CheckpointError(f"{path}: no such GGUF file")
    facts = _source_facts(path)
    key = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
    out = (root or cache_root()) / "converted" / f"{path.stem}-{key}"
    try:
        if json.loads((out / "source.json").read_text()) == facts:
            return out
    except (OSError, ValueError):
        pass
    return convert_gguf(path, out)


def find_gguf(folder: Path) -> Optional[Path]:
    """The single .gguf file in a folder (None if none; an error if several)."""
    found = sorted(Path(folder).glob("*.gguf"))
    if len(found) > 1:
        raise CheckpointError(f"{folder}: holds several .gguf files ({', '.join(p.name for p in found)}); "
                              "name the one to load")
    return found[0] if found else None
