"""GraphedStep's bookkeeping on the CPU: a fake capture stands in for torch.cuda.graph.

The fake "graph" snapshots the model call at capture time and, on replay, runs the model on
its static inputs after copying the new ones in, like the real thing; so decoding through a
GraphedStep must give exactly the tokens of the plain model. The real capture is tested on
the GPU box (tests/gpu/checks.py: CUDA-graph replays against eager, through scripts/gpu_check.sh).
"""
import pytest
import torch

from engine import Engine, InfillRequest
from engine.kernels.cuda.graph import (LOGITS_QUANTUM, GraphedStep, attach_cuda_graphs, graphs_wanted, step_function,
                               step_key)


class FakeGraph:
    """Static buffers + a replay that recomputes on them (what a CUDA graph does, without CUDA)."""

    def __init__(self, model, ids, positions, past, mask, logits_from=0):
        self.model = model
        self.logits_from = logits_from - logits_from % LOGITS_QUANTUM
        self.ids, self.positions = ids.clone(), positions.clone()
        self.past = [(k.clone(), v.clone()) for k, v in past] if past else None
        self.mask = None if mask is None else mask.clone()
        self.runs = 0

    def run(self, ids, positions, past, mask, logits_from=0):
        assert ids.shape == self.ids.shape and positions.shape == self.positions.shape
        self.ids.copy_(ids)
        self.positions.copy_(positions)
        if past:
            for (sk, sv), (k, v) in zip(self.past, past):
                sk.copy_(k)
                sv.copy_(v)
        if mask is not None:
            self.mask.copy_(mask)
        self.runs += 1
        logits, kvs = self.model(self.ids, self.positions, self.past, self.mask, self.logits_from)
        return logits[:, logits_from - self.logits_from:].clone(), kvs


class Recorder:
    def __init__(self, fail_on=()):
        self.made, self.fail_on = [], set(fail_on)

    def __call__(self, model, ids, positions, past, mask, logits_from=0):
        if ids.shape[1] in self.fail_on:
            raise RuntimeError("capture not permitted")
        g = FakeGraph(model, ids, positions, past, mask, logits_from)
        self.made.append(g)
        return g


def toy_model():
    calls = []

    def model(ids, positions, past=None, mask=None, logits_from=0):
        calls.append(ids.shape[1])
        t = ids.shape[1]
        logits = (ids[..., None].float() + positions[None, :, None].float()) * torch.ones(1, t, 3)
        return logits[:, logits_from:], [(ids[None].float(), ids[None].float())]

    return model, calls


def call(step, t, past_len=0, logits_from=0, value=0):
    ids = torch.full((1, t), value)
    past = [(torch.zeros(1, 1, past_len, 2), torch.zeros(1, 1, past_len, 2))] if past_len else None
    return step(ids, torch.arange(t), past, None, logits_from)


def test_shapes_are_captured_after_warmup_and_replayed():
    model, calls = toy_model()
    cap = Recorder()
    step = GraphedStep(model, warmup=1, capture=cap)
    call(step, 4)                                   # eager (first sight of the shape)
    assert len(cap.made) == 0 and step.eager_calls == 1
    call(step, 4)                                   # captured, then replayed
    call(step, 4, value=7)                          # replayed with new inputs
    assert len(cap.made) == 1 and step.captures == 1 and step.replays == 2 and cap.made[0].runs == 2
    logits, _ = call(step, 4, value=9)
    assert torch.equal(logits, model(torch.full((1, 4), 9), torch.arange(4))[0])


def test_shape_change_triggers_a_new_capture_and_old_graphs_are_evicted():
    model, _ = toy_model()
    cap = Recorder()
    step = GraphedStep(model, warmup=0, max_graphs=2, capture=cap)
    for t in (4, 5, 4, 6, 4):
        call(step, t)
    # 4 captured, 5 captured, 4 replayed (now most recent), 6 captured -> 5 evicted, 4 replayed
    assert step.captures == 3 and len(step.graphs) == 2
    assert {k[0] for k in step.graphs} == {(1, 4), (1, 6)}
    call(step, 5)                                   # 5 was evicted: captured again
    assert step.captures == 4


def test_past_length_mask_and_logits_quantum_are_part_of_the_key():
    ids, pos = torch.zeros(1, 4, dtype=torch.long), torch.arange(4)
    past = lambda n: [(torch.zeros(1, 2, n, 8), torch.zeros(1, 2, n, 8))]  # noqa: E731
    assert step_key(ids, pos, past(10), None) != step_key(ids, pos, past(11), None)
    assert step_key(ids, pos, None, None) != step_key(ids, pos, None, torch.ones(4, 4, dtype=torch.bool))
    assert step_key(ids, pos, None, None, 0) == step_key(ids, pos, None, None, LOGITS_QUANTUM - 1)
    assert step_key(ids, pos, None, None, 0) != step_key(ids, pos, None, None, LOGITS_QUANTUM)


def test_logits_from_inside_one_graph_slices_the_right_rows():
    model, _ = toy_model()
    step = GraphedStep(model, warmup=0, capture=Recorder())
    for first in (0, 3, 5):
        got, _ = call(step, 8, logits_from=first, value=2)
        want, _ = model(torch.full((1, 8), 2), torch.arange(8), None, None, first)
        assert torch.equal(got, want)
    assert step.captures == 1 and step.replays == 3


def test_failed_capture_runs_eagerly_from_then_on():
    model, calls = toy_model()
    step = GraphedStep(model, warmup=0, capture=Recorder(fail_on={3}))
    for _ in range(3):
        call(step, 3)
    call(step, 2)
    assert step.failed and step.eager_calls == 3 and step.captures == 1
    assert calls.count(3) == 3                       # every call still computed


def test_settings_resolve_and_cpu_is_never_graphed(monkeypatch):
    assert graphs_wanted("auto", "cpu") is False
    assert graphs_wanted(False, "cuda") is False
    monkeypatch.delenv("DLLM_CUDA_GRAPHS", raising=False)
    assert graphs_wanted("auto", "cuda:0") is False  # off by default until verified on a GPU
    monkeypatch.setenv("DLLM_CUDA_GRAPHS", "1")
    assert graphs_wanted("auto", "cuda:0") is True
    monkeypatch.setenv("DLLM_CUDA_GRAPHS", "0")
    assert graphs_wanted("auto", "cuda") is False
    assert graphs_wanted(True, "cuda") is True      # an explicit request wins over the environment
    with pytest.raises(ValueError, match="needs a CUDA device"):
        graphs_wanted(True, "cpu")
    with pytest.raises(ValueError):
        graphs_wanted("sometimes", "cuda")


def test_engine_on_cpu_has_no_graphs(tiny_block_model):
    eng = Engine.load(tiny_block_model, device="cpu")
    assert eng.model.graphed_step is None and step_function(eng.model) is eng.model
    with pytest.raises(ValueError):
        Engine.load(tiny_block_model, device="cpu", cuda_graphs=True)


@pytest.mark.parametrize("fixture,cache", [("tiny_block_model", "auto"), ("tiny_dream_model", "dual"),
                                           ("tiny_dream_model", "prefix"), ("tiny_llada_model", "none")])
def test_decoding_through_graphed_steps_gives_the_same_tokens(request, fixture, cache):
    """The decoder calls the hook; replayed steps must not change a single token."""
    eng = Engine.load(request.getfixturevalue(fixture), device="cpu")
    req = InfillRequest(prefix="def add(a, b):\n    return ", suffix="\n\nprint(add(1, 2))\n",
                        max_new_tokens=12, block_size=4, policy="threshold", threshold=0.3, cache=cache,
                        stop_at_eos=False)
    plain = eng.infill(req)
    cap = Recorder()
    eng.model.graphed_step = GraphedStep(eng.model, warmup=1, capture=cap)
    eng.context_cache.clear()
    graphed = eng.infill(req)
    assert graphed.token_ids == plain.token_ids and graphed.forwards == plain.forwards
    stats = eng.model.graphed_step.stats()
    assert stats["replays"] > 0 and stats["replays"] + stats["eager_calls"] == graphed.forwards
