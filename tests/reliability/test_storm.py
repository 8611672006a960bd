"""`bench storm` at CI size: an editor typing (didChange + inline request every 10 ms) into a real server.

The bars of the issue, on the tiny random model: never more than one engine job waiting
(`queuePeak` from dllm/metrics), every request answered and no error, a fresh request after the
storm answered in under 2 s, the server's RSS within ±5% after warm-up; the soak variant rotates
documents and settings and holds the same bars.
"""
import asyncio

from dllm_lsp.bench.storm import storm_run


def check(s):
    assert s["unanswered"] == 0 and s["errors"] == 0 and s["exit_code"] == 0, s
    assert s["queue_peak"] <= 1, s["samples"]
    assert s["fresh_request_ms"] < 2000 and s["one_suggestion_ms"] < 2000
    assert s["engine_jobs"]["jobsRun"] > 10                  # the engine really worked during the storm
    assert s["pass"]["rss_within_tolerance"], (s["rss_min_change"], s["rss_max_change"], s["samples"])
    assert s["stderr_lines"] == 0, s["stderr_tail"]          # valid traffic: nothing to log at the default level


def test_a_typing_storm_keeps_one_job_waiting_and_memory_flat(tiny_model, server_env):
    s = asyncio.run(storm_run(keys=1200, model=tiny_model, sample_every=100, env=server_env))
    assert s["keys"] == 1200 and s["requests"] == 1200
    check(s)


def test_a_short_soak_rotates_documents_and_settings(tiny_model, server_env):
    s = asyncio.run(storm_run(minutes=0.25, model=tiny_model, sample_every=100, rotate_keys=200, env=server_env))
    assert s["soak_documents"] >= 4 and s["soak_setting_changes"] >= 3
    check(s)
