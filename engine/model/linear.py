"""Linear products laid out for the few-row passes of drafted decoding on a CPU.

A verify pass multiplies 2-9 rows (the last committed token and its drafts) by every weight
matrix. torch's x @ W^T (F.linear) hands MKL a GEMM whose small-M path costs ~2.5x the
one-row GEMV here: a pass over 2 rows took twice as long as a pass over 1, which made every
draft row cost about what it could save. The same product computed as (W @ x^T)^T keeps the
cost of 2-8 rows within ~1.1-1.7x of one row (2 threads, AVX2 EPYC, 48 matrices of
4864 x 896 fp32: one row 59 ms; two rows 139 ms as x @ W^T, 55 ms as W @ x^T; four rows 164
against 65 ms; eight 142 against 104 ms). Same math, another summation order: outputs agree to
float rounding, and the decoders' lossless tests compare drafted text with one token per pass.

`project` is that choice for 1-8 rows (one row measured no slower that way: 141 against 156 ms
a pass); `Linear` is nn.Linear with it (module hooks, state-dict names and autograd unchanged).
Larger batches (prefill, training) and other devices keep F.linear.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

FEW_ROWS = (1, 8)       # rows for which W @ x^T is used on a CPU (measured: slower from ~10 rows on)


def project(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x [..., in] -> [..., out] = x @ weight^T (+ bias); weight [out, in]."""
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if x.device.type != "cpu" or not FEW_ROWS[0] <= rows <= FEW_ROWS[1]:
        return F.linear(x, weight, bias)
    flat = x.reshape(rows, x.shape[-1])                                                  # [R, in]
    out = torch.mm(weight, flat.t()).t()                                                 # [R, out] (a view)
    if bias is not None:
        out = out + bias
    return out.contiguous().reshape(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return project(x, self.weight, self.bias)
