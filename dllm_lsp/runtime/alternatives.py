"""More than one suggestion: where the model was unsure, the suggestion that its second choice starts.

    plan = with_runner_ups(plan)                  # the decode records each token's second choice
    decoded = decode_plan(engine, plan)
    texts = alternatives(engine, plan, decoded)   # [] or up to MAX_ALTERNATIVES other suggestions

An explicitly invoked request (VS Code's Alt-] cycling, a "suggest" key) asks for them; an
automatic one never pays for them. The greedy decode records, for every committed token, the
model's second choice and the logit gap to the first (`InfillRequest.runner_ups`). The branch
points are the tokens of the kept suggestion with the smallest gaps under MAX_GAP (the second
choice at least e^-MAX_GAP as likely as the first). Each alternative is the suggestion up to the
branch, the second choice, then the model's greedy continuation (a stop token as second choice
gives the suggestion cut there), post-processed as the first one. Alternatives equal to the
first suggestion, to each other, or empty are dropped.
"""
from __future__ import annotations

import threading
from dataclasses import replace
from typing import List, Optional, Sequence

from dllm_lsp.core.plan import Plan, finish_completion
from dllm_lsp.runtime.host import decode_plan

MAX_ALTERNATIVES = 2
MAX_GAP = 4.0                  # logits: e^-4 ~ 2% as likely as the first choice


def with_runner_ups(plan: Plan) -> Plan:
    return replace(plan, request=replace(plan.request, runner_ups=True))


def branch_points(token_ids: Sequence[int], runner_ups: Sequence[tuple], decode, kept: str,
                  count: int = MAX_ALTERNATIVES, max_gap: float = MAX_GAP) -> List[int]:
    """Token indices to branch at: within the kept text (the tokens before the branch decode to
    a prefix of `kept`), the smallest gaps first, at most `count`."""
    inside = [i for i in range(min(len(token_ids), len(runner_ups)))
              if runner_ups[i][1] < max_gap and kept.startswith(decode(token_ids[:i]))
              and len(decode(token_ids[:i])) < len(kept)]
    return sorted(inside, key=lambda i: runner_ups[i][1])[:count]


def alternatives(engine, plan: Plan, decoded, cancel: Optional[threading.Event] = None,
                 count: int = MAX_ALTERNATIVES) -> List[str]:
    """Up to `count` other suggestions for `plan`, after `decoded` (decode_plan's answer with
    runner-ups recorded); on the engine thread."""
    tok = engine.tokenizer
    stops = engine.cfg.stop_ids
    out: List[str] = []
    for i in branch_points(decoded.token_ids, decoded.runner_ups, tok.decode, decoded.text, count):
        if cancel is not None and cancel.is_set():
            break
        second = decoded.runner_ups[i][0]
        head = tok.decode(list(decoded.token_ids[:i]) + ([] if second in stops else [second]))
        room = plan.request.max_new_tokens - i - 1
        rest = ""
        if second not in stops and room > 0:       # the continuation, stopped early as the first was
            req = replace(plan.request, prefix=plan.request.prefix + head, runner_ups=False, max_new_tokens=room)
            rest = decode_plan(engine, replace(plan, request=req), cancel).raw
        text = finish_completion(plan, head + rest)
        if text and text != decoded.text and text not in out:
            out.append(text)
    return out
