"""Shared fixtures: tiny checkpoints written once per session into a temp folder."""
from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


def _cuda() -> bool:
    try:
        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


def pytest_collection_modifyitems(config, items):
    if _cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run `pytest -m gpu` on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_block_model(tmp_path_factory):
    from engine.testing import write_block_model
    return write_block_model(tmp_path_factory.mktemp("block") / "model")


@pytest.fixture(scope="session")
def tiny_llada_model(tmp_path_factory):
    from engine.testing import write_llada_model
    return write_llada_model(tmp_path_factory.mktemp("llada") / "model")


@pytest.fixture(scope="session")
def tiny_dream_model(tmp_path_factory):
    from engine.testing import write_dream_model
    return write_dream_model(tmp_path_factory.mktemp("dream") / "model")
