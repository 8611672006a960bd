"""Alternatives (runtime/alternatives.py): the branch points are the kept suggestion's closest second
choices, and each alternative is the suggestion up to the branch, the second choice, then the
model's own greedy continuation, post-processed as the first suggestion."""
from dataclasses import replace

import pytest

from dllm_lsp.core.plan import finish_completion, plan_completion
from dllm_lsp.runtime.alternatives import alternatives, branch_points, with_runner_ups
from dllm_lsp.runtime.host import decode_plan
from dllm_lsp.settings import Settings


def test_branch_points_take_the_smallest_gaps_inside_the_kept_text():
    ids = [1, 2, 3, 4, 5]
    decode = lambda toks: "".join("abcde"[t - 1] for t in toks)
    ups = [(9, 0.5), (9, 3.0), (9, 0.1), (9, 9.0), (9, 0.2)]
    assert branch_points(ids, ups, decode, "abcde") == [2, 4]
    assert branch_points(ids, ups, decode, "abcde", count=3) == [2, 4, 0]
    assert branch_points(ids, ups, decode, "abc") == [2, 0]            # 4 lies past the kept text
    assert branch_points(ids, ups, decode, "abcde", max_gap=0.15) == [2]
    assert branch_points(ids, [], decode, "abcde") == []               # no runner-ups recorded


@pytest.fixture(scope="module")
def tiny(tiny_gguf_qwen2):
    from engine import Engine
    return Engine.load(tiny_gguf_qwen2, device="cpu", dtype="float32")


def test_each_alternative_is_the_greedy_continuation_of_the_second_choice(tiny):
    text = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return \n"
    plan = plan_completion(text, text.rindex("return ") + 7, "python", Settings(), tiny.tokenizer)
    plan = with_runner_ups(plan)
    decoded = decode_plan(tiny, plan)
    assert decoded.text and len(decoded.runner_ups) == len(decoded.token_ids)
    alts = alternatives(tiny, plan, decoded)
    assert alts and len(alts) <= 2 and decoded.text not in alts and len(set(alts)) == len(alts)
    tok = tiny.tokenizer
    points = branch_points(decoded.token_ids, decoded.runner_ups, tok.decode, decoded.text)
    want = []
    for i in points:                                   # the oracle: a plain greedy decode after the branch
        second = decoded.runner_ups[i][0]
        head = tok.decode(list(decoded.token_ids[:i]) + [second])
        req = replace(plan.request, prefix=plan.request.prefix + head, runner_ups=False,
                      max_new_tokens=plan.request.max_new_tokens - i - 1, drafting=False)
        out = finish_completion(plan, head + tiny.infill(req).text)
        if out and out != decoded.text and out not in want:
            want.append(out)
    assert alts == want
