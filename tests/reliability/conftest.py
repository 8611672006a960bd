"""Reliability fixtures: a tiny random model (no download) and a server environment in temp folders."""
import os

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    from engine.testing.checkpoints import write_block_model
    return str(write_block_model(tmp_path_factory.mktemp("models") / "tiny"))


@pytest.fixture
def server_env(tmp_path):
    """The environment a spawned `dllm-lsp --stdio` gets: its state (stats) in a temp folder, one thread."""
    return {**os.environ, "DLLM_LSP_STATE_DIR": str(tmp_path / "state"), "OMP_NUM_THREADS": "1"}
