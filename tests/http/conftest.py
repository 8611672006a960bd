"""Fixtures for the HTTP tests: a tiny random model and `dllm-lsp http` running as a second process.

Everything listens on 127.0.0.1 with a port the OS picks (`--port 0`; the server prints where it
listens); the token comes from DLLM_LSP_TOKEN. Nothing is downloaded.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))     # e2e_helpers (LSP client)

from http_helpers import HttpServer  # noqa: E402


@pytest.fixture(scope="session")
def http_model(tmp_path_factory):
    from engine.testing.checkpoints import write_block_model
    return str(write_block_model(tmp_path_factory.mktemp("http-model") / "tiny"))


@pytest.fixture(scope="session")
def http_server(http_model):
    srv = HttpServer(["--model", http_model, "--threads", "1"])
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def local_engine(http_model):
    """The same tiny model in this process: what the server's answers are compared with."""
    from engine import Engine
    return Engine.load(http_model, device="cpu")
