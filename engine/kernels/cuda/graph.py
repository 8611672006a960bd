"""The per-step forward pass replayed from CUDA graphs, one graph per input shape.

A denoising step calls `model(ids, positions, past, mask)` with the same shapes step after
step (inside a block with cache="dual", or within a block of a block-causal model), so the
whole forward (some 15 launches per layer) can be captured once and replayed with one
launch. `GraphedStep` is a drop-in for that call:

  * key = the shapes/dtypes of (ids, positions, past, mask) and `logits_from` rounded down
    to a multiple of LOGITS_QUANTUM (the decoder asks for logits from the first open row,
    which moves as tokens are committed; the graph projects a few more rows and the extra
    ones are sliced off, so one block keeps one graph). A new key runs eagerly for
    `warmup` calls (shapes seen once, like a block's first full-canvas pass, never pay for a
    capture), then is captured; later calls copy their inputs into the graph's static
    buffers, replay, and return clones of the static outputs (so callers may keep them, as
    the decoder keeps a block's KV, while the graph is replayed again);
  * at most `max_graphs` graphs are kept (least recently used dropped): a shape change means
    a capture of the new shape, and memory stays bounded;
  * a failed capture marks its key eager forever and logs why: the step still runs.

Off by default (not yet verified on a GPU): on with Engine.load(..., cuda_graphs=True) or DLLM_CUDA_GRAPHS=1; never on CPU.
The capture itself is a function argument, so the bookkeeping is tested on CPU with a fake.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch

log = logging.getLogger(__name__)

KV = Tuple[torch.Tensor, torch.Tensor]
ENV_SWITCH = "DLLM_CUDA_GRAPHS"
LOGITS_QUANTUM = 64


def graph_logits_from(logits_from: int) -> int:
    return logits_from - logits_from % LOGITS_QUANTUM


def step_key(ids: torch.Tensor, positions: torch.Tensor, past: Optional[Sequence[KV]],
             mask: Optional[torch.Tensor], logits_from: int = 0) -> tuple:
    """Everything a captured graph depends on: shapes, dtypes and device of the inputs."""
    past_shape = None
    if past:
        past_shape = (len(past), tuple(past[0][0].shape), tuple(past[0][1].shape), past[0][0].dtype)
    mask_shape = None if mask is None else (tuple(mask.shape), mask.dtype)
    return (tuple(ids.shape), tuple(positions.shape), past_shape, mask_shape, str(ids.device),
            graph_logits_from(logits_from))


class CapturedStep:
    """One CUDA graph of model.forward with static input and output buffers."""

    def __init__(self, model, ids, positions, past, mask, logits_from: int = 0):
        self.logits_from = graph_logits_from(logits_from)
        self.static_ids = ids.clone()
        self.static_positions = positions.clone()
        self.static_past = [(k.clone(), v.clone()) for k, v in past] if past else None
        self.static_mask = None if mask is None else mask.clone()
        self._last_past = _past_marks(past)   # the past tensors last copied in, held so they stay alive
        args = (self.static_ids, self.static_positions, self.static_past, self.static_mask, self.logits_from)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):                  # warm-up on a side stream, as torch asks
            model(*args)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_logits, self.static_kvs = model(*args)

    def run(self, ids, positions, past, mask, logits_from: int = 0):
        self.static_ids.copy_(ids)
        self.static_positions.copy_(positions)
        if past and not self._same_past(past):
            for (sk, sv), (k, v) in zip(self.static_past, past):
                sk.copy_(k)
                sv.copy_(v)
            self._last_past = _past_marks(past)
        if mask is not None:
            self.static_mask.copy_(mask)
        self.graph.replay()
        logits = self.static_logits[:, logits_from - self.logits_from:]                 # [1, T', V]
        return logits.clone(), [(k.clone(), v.clone()) for k, v in self.static_kvs]

    def _same_past(self, past) -> bool:
        """True when `past` holds the very tensors copied last time, unmodified: the KV copy
        is skipped (a decoder that keeps one past per block pays for one copy per block).
        Inference tensors have no version counter: for them the contract is that callers do
        not write into a past they hand back (the decoder builds pasts by cat/slice only)."""
        return _past_marks(past) == self._last_past


def _version(t: torch.Tensor) -> int:
    return -1 if t.is_inference() else t._version


def _past_marks(past) -> list:
    """Identity marks of a KV list: (tensor, version) pairs, compared with `is` semantics."""
    return [_Mark(k) for kv in (past or []) for k in kv]


class _Mark:
    __slots__ = ("tensor", "version")

    def __init__(self, t: torch.Tensor):
        self.tensor, self.version = t, _version(t)

    def __eq__(self, other) -> bool:
        return self.tensor is other.tensor and self.version == other.version


Capture = Callable[..., "CapturedStep"]


class GraphedStep:
    """Callable like model.forward(ids, positions, past, mask, logits_from) -> (logits, new per-layer KV)."""

    def __init__(self, model, *, warmup: int = 1, max_graphs: int = 3, capture: Capture = CapturedStep):
        self.model = model
        self.warmup = warmup
        self.max_graphs = max_graphs
        self.capture = capture
        self.graphs: "OrderedDict[tuple, object]" = OrderedDict()
        self.seen: dict = {}
        self.failed: set = set()
        self.captures = self.replays = self.eager_calls = 0

    def __call__(self, ids, positions, past=None, mask=None, logits_from: int = 0):
        key = step_key(ids, positions, past, mask, logits_from)
        with torch.inference_mode():
            graph = self.graphs.get(key)
            if graph is None:
                if key in self.failed or self.seen.get(key, 0) < self.warmup:
                    self.seen[key] = self.seen.get(key, 0) + 1
                    self.eager_calls += 1
                    return self.model(ids, positions, past, mask, logits_from)
                try:
                    graph = self.capture(self.model, ids, positions, past, mask, logits_from)
                except Exception as exc:  # noqa: BLE001 (any capture failure -> eager for this shape)
                    log.warning("CUDA graph capture failed for step shape %s, running eagerly: %s", key, exc)
                    self.failed.add(key)
                    self.eager_calls += 1
                    return self.model(ids, positions, past, mask, logits_from)
                self.graphs[key] = graph
                self.captures += 1
                while len(self.graphs) > self.max_graphs:
                    self.graphs.popitem(last=False)
            else:
                self.graphs.move_to_end(key)
            self.replays += 1
            return graph.run(ids, positions, past, mask, logits_from)

    def stats(self) -> dict:
        return {"captures": self.captures, "replays": self.replays, "eager_calls": self.eager_calls,
                "graphs": len(self.graphs), "failed_shapes": len(self.failed)}


def graphs_wanted(setting: Union[bool, str, None], device: Union[str, torch.device]) -> bool:
    """Resolve the cuda_graphs setting: "auto"/None -> on for CUDA only when DLLM_CUDA_GRAPHS=1.

    Off by default until the GPU checks (scripts/gpu_check.sh) have passed on a real card.
    """
    on_cuda = str(device).startswith("cuda")
    if setting in (None, "auto"):
        return on_cuda and os.environ.get(ENV_SWITCH, "0").lower() in ("1", "true", "on", "yes")
    if setting in (True, "on", "true", "1"):
        if not on_cuda:
            raise ValueError("cuda_graphs=True needs a CUDA device")
        return True
    if setting in (False, "off", "false", "0"):
        return False
    raise ValueError(f"cuda_graphs must be 'auto', True or False, not {setting!r}")


def attach_cuda_graphs(model, setting: Union[bool, str, None] = "auto") -> Optional[GraphedStep]:
    """Set model.graphed_step (a GraphedStep, or None when graphs are off); the decoder calls it."""
    step = GraphedStep(model) if graphs_wanted(setting, model.device) else None
    model.graphed_step = step
    return step


def step_function(model):
    """What the decoder calls for one forward pass: the graphed step when attached, else the model."""
    return getattr(model, "graphed_step", None) or model

