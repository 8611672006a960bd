"""Commit policies: given per-mask confidences, which masked positions to commit this step.

Pure functions over 1-D tensors of the candidates (the still-masked positions of the current
block). Each returns candidate indices (int64 [k], k >= 1 when there is any candidate).

quota      the k most confident (LLaDA's low-confidence remasking with a fixed quota; k=1 is
           the one-token-per-forward baseline)
threshold  every candidate whose top-1 probability >= tau, at least the most confident one
           (Fast-dLLM parallel decoding)
entropy    most confident first while the summed entropy stays <= gamma, at least one
           (EB-sampler)
"""
from __future__ import annotations

import torch


def commit_quota(conf: torch.Tensor, k: int) -> torch.Tensor:
    k = max(1, min(int(k), conf.numel()))
    return conf.topk(k).indices


def commit_threshold(conf: torch.Tensor, tau: float) -> torch.Tensor:
    chosen = (conf >= tau).nonzero().flatten()
    if chosen.numel() == 0:
        chosen = conf.argmax().reshape(1)
    return chosen


def commit_entropy(conf: torch.Tensor, entropy: torch.Tensor, gamma: float) -> torch.Tensor:
    order = conf.argsort(descending=True)
    summed = entropy[order].cumsum(0)
    k = max(1, int((summed <= gamma).sum().item()))
    return order[:k]


def choose(policy: str, conf: torch.Tensor, entropy: torch.Tensor, *, threshold: float,
           entropy_bound: float, tokens_per_step: int) -> torch.Tensor:
    if conf.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    if policy == "quota":
        return commit_quota(conf, tokens_per_step)
    if policy == "threshold":
        return commit_threshold(conf, threshold)
    if policy == "entropy":
        return commit_entropy(conf, entropy, entropy_bound)
    raise ValueError(f"unknown policy {policy!r} (quota | threshold | entropy)")
