"""scripts/lookup_sim.py replays lookup drafting without the model: its pass counts must be the
decoder's own, or the drafting rules chosen with it would be chosen on wrong numbers."""
import sys
from pathlib import Path

import pytest

from engine import Engine, InfillRequest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import lookup_sim  # noqa: E402

from test_causal_decode import fim_cases  # noqa: E402


@pytest.fixture(scope="module")
def tiny_ar(tiny_gguf_qwen2):
    return Engine.load(tiny_gguf_qwen2, device="cpu", dtype="float32")


def test_replayed_passes_equal_the_decoders(tiny_ar):
    cfg = tiny_ar.cfg
    barriers = [cfg.fim_prefix_id, cfg.fim_suffix_id, cfg.fim_middle_id]
    drafted_somewhere = False
    for prefix, suffix in fim_cases(40, seed=5):
        req = InfillRequest(prefix, suffix, max_new_tokens=12, cache="none")
        base = tiny_ar.infill(InfillRequest(prefix, suffix, max_new_tokens=12, cache="none", drafting=False))
        greedy = list(base.token_ids) + ([cfg.eos_id] if base.finish_reason == "eos" else [])
        ctx, lead = tiny_ar.decoder().prompt(req)
        case = {"ctx": ctx, "lead": lead, "greedy": greedy, "budget": 12, "barriers": barriers}
        forwards, drafted, accepted, _ = lookup_sim.replay_case(case, budget=12)
        drafted_result = tiny_ar.infill(req)
        assert forwards == drafted_result.forwards, (prefix, suffix)
        drafted_somewhere |= accepted > 0
        assert lookup_sim.ceiling([case]) >= len(greedy) / forwards
    assert drafted_somewhere
