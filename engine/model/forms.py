"""How a model's weights are held and multiplied: the device, the activations' dtype, the form
of the linear layers' weights (the GGUF file's own codes for our CPU kernel, fp16 packs, or dense
tensors as loaded), and the model built and filled in that form (`load_model`)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

import engine.kernels.cpu.gemm as cpu_gemm
import engine.loading.gguf_codes as gguf_codes
from engine.kernels import select_backend
from engine.loading.config import ModelConfig
from engine.loading.gguf_import import EXACT_FILE, read_exact
from engine.loading.weights import expected_shapes, load_state
from engine.model.packed import CodesEmbedding, fp16_gemm_available, pack_fp16
from engine.model.transformer import DecoderModel


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def pick_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' requested but CUDA is not available")
    return device


def pick_dtype(dtype: str, device: str, cfg: Optional[ModelConfig] = None) -> torch.dtype:
    """"auto": bf16 on CUDA, fp32 activations on the CPU (pick_weights then multiplies the GGUF's
    codes or fp16 packs). Not bf16 on a CPU even where it has bf16 units (AVX512-BF16): measured
    on such an EPYC (2 threads, the 0.5B default, 600 cached tokens), a bf16 pass took 127 ms for
    1 row and 108-168 for 9-13 against 45 and 101-126 ms for the GGUF codes in fp32, and bf16
    logits tie (8 bits of mantissa) where the rows' sums, which depend on how many rows a pass
    has, break the tie: drafted text then differed from one token per pass. `bfloat16` asks
    for it explicitly."""
    if dtype in ("fp16-weights", "gguf"):
        return torch.float32
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be auto, float32, gguf, fp16-weights, bfloat16 or float16, not {dtype!r}")
    return _DTYPES[dtype]


def pick_weights(dtype: str, device: str, torch_dtype: torch.dtype, cfg: ModelConfig,
                 has_exact: bool = False) -> str:
    """"gguf": the GGUF file's own weights (its quantized matrices' int8 codes, multiplied by our
    CPU kernel; loading/gguf_codes.py), what "auto" picks for a causal (AR) model converted from a GGUF
    (`has_exact`: its folder holds them) on a CPU computing in fp32 where our kernel runs;
    "fp16": the linear layers' weights (the converted bf16 copy) packed as fp16 (model/packed.py),
    "auto"'s choice for other causal models on a CPU with fbgemm; "dense": the weights as loaded."""
    cpu_ar = device.startswith("cpu") and torch_dtype == torch.float32 and cfg.attention == "causal"
    if dtype == "gguf":
        if not (cpu_ar and has_exact and cpu_gemm.library() is not None):
            raise ValueError("dtype gguf needs a causal model converted from a GGUF file (with its exact weights), "
                             "the CPU and our kernel (" + (cpu_gemm.unavailable_reason() or "built") + ")")
        return "gguf"
    if dtype == "fp16-weights":
        if not device.startswith("cpu") or not fp16_gemm_available():
            raise ValueError("dtype fp16-weights needs the CPU and a torch build with fbgemm (x86)")
        return "fp16"
    if dtype == "auto" and cpu_ar and has_exact and cpu_gemm.library() is not None:
        return "gguf"
    if dtype == "auto" and cpu_ar and fp16_gemm_available():
        return "fp16"
    return "dense"


def exact_state(exact, state: dict, tied: bool) -> dict:
    """The tensors of `state` that the GGUF's exact weights replace: its fp32 vectors, and a
    tied embedding table (which stays dense: use_codes_embedding) made from its codes."""
    out = {name: t for name, t in exact.dense.items() if name in state}
    codes = exact.codes.get("embed_tokens.weight")
    if tied and codes is not None:
        out["embed_tokens.weight"] = gguf_codes.dequantize_torch(*codes)
    return out


def use_codes_embedding(model: DecoderModel, exact) -> None:
    """Hold an untied input embedding as the GGUF's codes (CodesEmbedding: rows made at lookup);
    a tied one stays a dense table, since the output projection reads all of it every pass."""
    codes = exact.codes.get("embed_tokens.weight")
    if codes is not None and model.lm_head is not None:
        model.embed_tokens = CodesEmbedding(*codes)


def build_model(cfg: ModelConfig, device: str, dtype: torch.dtype, kernels: str = "auto") -> DecoderModel:
    """A model with uninitialised (meta) parameters: fill it with load_state_dict(..., assign=True)."""
    with torch.device("meta"):
        model = DecoderModel(cfg, select_backend(kernels, device), init_weights=False)
    d = cfg.head_dim
    model.inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32, device=device) / d))
    return model


def packed_weights(packed) -> str:
    """What describe() says of the packed linear layers: "gguf (our kernel, AVX-512)" (or AVX2, where
    the CPU has no AVX-512) where every one multiplies the GGUF's codes, else "fp16 (...)" and
    whose kernel; "+ fp16" when mixed."""
    from engine.kernels.cpu.gemm import wide_available
    ours = f"our kernel, {'AVX-512' if wide_available() else 'AVX2'}"
    kernel = ours if all(m.kernel == "ours" for m in packed) else "fbgemm"
    forms = {m.form for m in packed}
    return f"{'gguf' if forms == {'gguf'} else 'gguf + fp16' if 'gguf' in forms else 'fp16'} ({kernel})"


def load_model(folder: Path, cfg: ModelConfig, dtype: str, device: str, torch_dtype: torch.dtype,
               kernels: str = "auto") -> DecoderModel:
    """The model of `folder` on `device`, its linear layers in the form pick_weights chooses."""
    has_exact = dtype in ("auto", "gguf") and (Path(folder) / EXACT_FILE).is_file()
    weights = pick_weights(dtype, device, torch_dtype, cfg, has_exact=has_exact)
    exact = read_exact(folder, cfg) if weights == "gguf" else None
    # packed weights: read the stored bf16/fp16 tensors as they are and convert each
    # block to fp32 inside the packing threads, so the whole fp32 model never exists at once
    stored = _DTYPES.get(str(cfg.torch_dtype))
    read_as = stored if weights in ("fp16", "gguf") and stored in (torch.bfloat16, torch.float16) else torch_dtype
    model = build_model(cfg, device, read_as, kernels)
    state = load_state(cfg, folder, expected_shapes(model), read_as, device)
    if weights == "gguf":
        state.update(exact_state(exact, state, tied=model.lm_head is None))
    model.load_state_dict(state, strict=True, assign=True)
    if weights in ("fp16", "gguf"):
        del state
        if weights == "gguf":
            use_codes_embedding(model, exact)
        pack_fp16(model, codes=exact.codes if weights == "gguf" else None)
        model.to(torch_dtype)                 # what is left: embedding, norms, biases
    return model
