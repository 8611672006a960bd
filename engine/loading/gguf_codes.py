"""GGUF's quantized blocks as int8 codes and fp32 scales: the file's own weights, exactly, in
the form our CPU kernel multiplies (cpu_gemm.q8 products).

A quantized GGUF tensor stores each run of 32 or 256 weights of a row as small integers and
a scale or two. Every type the default model uses dequantizes to `scale * code (- offset)`
with one scale (and offset) per group of G weights:

  Q8_0  34-byte blocks of 32: fp16 d, 32 int8 q.               w = d * q            G = 32
  Q5_0  22-byte blocks of 32: fp16 d, 32 high bits, 16 bytes    w = d * (q - 16)     G = 32
        of nibbles (low nibbles are weights 0-15, high 16-31).
  Q6_K  210-byte blocks of 256: 4-bit low parts, 2-bit high     w = (d * sc) * (q - 32) G = 16
        parts, 16 int8 sub-scales sc, fp16 d.
  Q4_K  144-byte blocks of 256: fp16 d and dmin, 6-bit sub-     w = (d * sc) * q - (dmin * m)
        scales sc and mins m for 8 groups of 32, nibbles.                            G = 32

`codes_of` unpacks a tensor's blocks into (codes int8 [N, K], scale fp32 [N, K/G], offset
fp32 [N, K/G] or None), where scale and offset are the fp32 products gguf's dequantizers form
(d * sc and dmin * m are exact in fp32: 11 x 8 bits). `dequantize` multiplies them back with
the same two roundings (a product, then a difference) and gives gguf's own dequantized
values bit for bit (tested for every type). The kernel forms each weight the same way in
registers, so a model multiplied from codes has exactly the GGUF file's weights, at one byte
a weight plus 4/G bytes of scale (fp16 copies: 2 bytes).

Other types (F32, F16, BF16, K-quants this project does not meet) give None: their tensors
stay on the dense path.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np


class Codes(NamedTuple):
    codes: np.ndarray                 # int8 [N, K]
    scale: np.ndarray                 # float32 [N, K/G]
    offset: Optional[np.ndarray]      # float32 [N, K/G] or None

    @property
    def group(self) -> int:
        return self.codes.shape[1] // self.scale.shape[1]


QK_K = 256


def _f16(raw: np.ndarray) -> np.ndarray:
    """uint8 [n, 2] -> float32 [n, 1]: the fp16 values those bytes hold."""
    return np.ascontiguousarray(raw).view(np.float16).astype(np.float32)


def _q8_0(b: np.ndarray):
    d = _f16(b[:, :2])                                                        # [n, 1]
    return b[:, 2:].view(np.int8), d, None


def _q5_0(b: np.ndarray):
    d = _f16(b[:, :2])                                                        # [n, 1]
    high = np.unpackbits(b[:, 2:6], axis=1, bitorder="little")                # [n, 32]: weight i's fifth bit
    nibbles = b[:, 6:22]                                                      # [n, 16]
    low = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1)             # [n, 32]
    return ((low | (high << 4)).astype(np.int8) - np.int8(16)), d, None


def _q6_k(b: np.ndarray):
    n = b.shape[0]
    ql, qh, sc, d = b[:, :128], b[:, 128:192], b[:, 192:208], _f16(b[:, 208:210])
    scale = d * sc.view(np.int8).astype(np.float32)                           # [n, 16]
    low = (ql.reshape(n, 2, 1, 64) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)) & 0x0F
    high = (qh.reshape(n, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)) & 0x03
    q = (low.reshape(n, 2, 128) | (high.reshape(n, 2, 128) << 4)).astype(np.int8) - np.int8(32)
    return q.reshape(n, QK_K), scale, None


def _q4_k(b: np.ndarray):
    n = b.shape[0]
    d, dmin = _f16(b[:, :2]), _f16(b[:, 2:4])                                 # [n, 1]
    packed = b[:, 4:16].reshape(n, 3, 4)                                      # 6-bit scales and mins of 8 groups
    lo, mid, top = packed[:, 0], packed[:, 1], packed[:, 2]
    sc = np.concatenate([lo & 0x3F, (top & 0x0F) | ((lo >> 2) & 0x30)], axis=1)     # [n, 8]
    mins = np.concatenate([mid & 0x3F, (top >> 4) | ((mid >> 2) & 0x30)], axis=1)   # [n, 8]
    q = (b[:, 16:].reshape(n, 4, 1, 32) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)) & 0x0F
    return q.reshape(n, QK_K).astype(np.int8), d * sc.astype(np.float32), dmin * mins.astype(np.float32)


# type name -> (weights a block, bytes a block, unpacker)
_TYPES = {"Q8_0": (32, 34, _q8_0), "Q5_0": (32, 22, _q5_0), "Q6_K": (QK_K, 210, _q6_k), "Q4_K": (QK_K, 144, _q4_k)}


def supported(type_name: str) -> bool:
    return type_name in _TYPES


def codes_of(type_name: str, raw: np.ndarray, rows: int, cols: int) -> Optional[Codes]:
    """A tensor's raw blocks (uint8, rows x bytes a row, as gguf's reader gives them) -> Codes
    [rows, cols]; None for a type without codes."""
    if type_name not in _TYPES:
        return None
    per_block, nbytes, unpack = _TYPES[type_name]
    if cols % per_block or raw.size != rows * (cols // per_block) * nbytes:
        raise ValueError(f"{type_name} blocks of {raw.size} bytes do not make a [{rows}, {cols}] tensor")
    blocks = np.ascontiguousarray(raw).reshape(-1, nbytes)
    q, scale, offset = unpack(blocks)
    return Codes(np.ascontiguousarray(q.reshape(rows, cols)), np.ascontiguousarray(scale.reshape(rows, -1)),
                 None if offset is None else np.ascontiguousarray(offset.reshape(rows, -1)))


def dequantize(c: Codes) -> np.ndarray:
    """float32 [N, K]: scale * code (- offset), the roundings of gguf's dequantizers."""
    w = np.repeat(c.scale, c.group, axis=1) * c.codes.astype(np.float32)
    return w if c.offset is None else w - np.repeat(c.offset, c.group, axis=1)


def dequantize_torch(codes, scale, offset=None):
    """`dequantize` in torch (its threads; the same two roundings): codes int8 [N, K], scale and
    offset fp32 [N, K/G] torch tensors -> float32 [N, K]."""
    import torch
    n, k = codes.shape
    w = torch.empty(n, k, dtype=torch.float32)
    w.copy_(codes)                                                       # exact: small integers
    grouped = w.view(n, scale.shape[1], k // scale.shape[1])              # [N, K/G, G]
    grouped.mul_(scale.unsqueeze(-1))
    if offset is not None:
        grouped.sub_(offset.unsqueeze(-1))
    return w


def take_rows(c: Codes, order: np.ndarray) -> Codes:
    """The rows of `c` in `order` (llama.cpp's q/k row permutation undone on codes)."""
    return Codes(c.codes[order], c.scale[order], None if c.offset is None else c.offset[order])
