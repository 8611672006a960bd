"""`bench fuzz` as a test: a few thousand seeded messages, valid and broken, against a real stdio server.

The bars of the issue at CI size: no crash (the server answers `shutdown` and exits 0), every
probe answered with a result, every request with a usable id answered, no traceback at the
default log level, exactly one log line for each message that must be rejected and none for a
valid one (lines are matched to messages by the `[msg N]` tag, lsp/logs.py).
"""
import asyncio

from dllm_lsp.bench.fuzz import count_lines, fuzz
from dllm_lsp.bench.fuzz_messages import Fuzzer


def test_fuzzed_traffic_crashes_nothing_and_costs_one_line_per_bad_message(tiny_model, server_env, tmp_path):
    log = tmp_path / "server.log"
    s = asyncio.run(fuzz(3000, seed=0, model=tiny_model, batch=100, probe_timeout=30, server_log=log,
                         env=server_env))
    assert s["model_state"] == "ready"
    assert s["sent"] == 3000 and s["broken"] > 1200
    assert set(s["kinds"]) >= {"shape", "range", "reversed", "surrogate", "huge", "nested", "unopened", "unknown",
                               "cancel", "nonjson", "nonutf8", "notrpc", "response", "type"}
    assert s["crashes"] == 0 and s["exit_code"] == 0
    assert s["unanswered_probes"] == 0 and s["probe_errors"] == 0, s["probe_error_examples"]
    assert s["unanswered_requests"] == 0, s["unanswered_examples"]
    assert s["traceback_lines"] == 0
    assert s["wrong_line_count"] == 0, s["wrong_line_counts"]
    assert s["untagged_count"] == 0, s["untagged_lines"]
    assert s["rejected_lines"] > 500                     # the log did see the bad messages
    text = log.read_text()
    assert "Traceback" not in text and "rejected message: body is not UTF-8" in text


def test_the_generator_is_seeded():
    a, b = Fuzzer(7), Fuzzer(7)
    assert [a.next().body for _ in range(300)] == [b.next().body for _ in range(300)]
    c = Fuzzer(8)
    assert [c.next().body for _ in range(50)] != [Fuzzer(7).next().body for _ in range(50)]


def test_line_counting_can_fail():
    """The checker itself: a missing line, a doubled line and a line for a valid message are all caught."""
    log = "\n".join(["t WARNING x: [msg 2] rejected", "t WARNING x: [msg 3] rejected", "t WARNING x: [msg 3] again",
                     "t WARNING x: [msg 5] oops", "Traceback (most recent call last):"])
    exp = {1: ("reject", ""), 2: ("reject", ""), 3: ("reject", ""), 4: ("maybe", ""), 5: ("ok", "")}
    r = count_lines(log, exp)
    assert sorted(no for no, *_ in r["wrong_line_counts"]) == [1, 3, 5]
    assert r["traceback_lines"] == 1 and r["untagged_count"] == 1
