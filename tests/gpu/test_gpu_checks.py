"""`pytest -m gpu`: every check of checks.py as one test (skipped without CUDA, see tests/conftest.py).

The checks live in checks.py as plain functions so that scripts/gpu_check_runner.py can run
the very same cases on a GPU machine that has no pytest.
"""
import pytest

from . import checks

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("fn,kwargs", [(fn, kw) for _, fn, kw in checks.CASES], ids=[n for n, _, _ in checks.CASES])
def test_gpu(fn, kwargs):
    try:
        fn(**kwargs)
    except checks.Skip as exc:
        pytest.skip(str(exc))
