"""Shared fixtures: tiny checkpoints written once per session into a temp folder.

The user cache (pulled models) is read where `dllm-lsp pull` put it; everything the tests
convert or write goes to a session temp folder (DLLM_LSP_CACHE), never the user's cache.
"""
from __future__ import annotations

import os
import tempfile

import pytest
import torch

from engine.loading.gguf_import import cache_root

pytest_plugins = ["skip_guard"]            # tests/skip_guard.py: CI fails on a skip it does not accept
torch.set_num_threads(1)
USER_CACHE = cache_root()                       # where `dllm-lsp pull` stores models
os.environ["DLLM_TEST_USER_CACHE"] = str(USER_CACHE)   # for servers that must load the pulled model
os.environ["DLLM_LSP_CACHE"] = tempfile.mkdtemp(prefix="dllm-test-cache-")


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
    from engine.testing.checkpoints import write_block_model
    return write_block_model(tmp_path_factory.mktemp("block") / "model")


@pytest.fixture(scope="session")
def tiny_llada_model(tmp_path_factory):
    from engine.testing.checkpoints import write_llada_model
    return write_llada_model(tmp_path_factory.mktemp("llada") / "model")


@pytest.fixture(scope="session")
def tiny_dream_model(tmp_path_factory):
    from engine.testing.checkpoints import write_dream_model
    return write_dream_model(tmp_path_factory.mktemp("dream") / "model")


GGUF_TYPES = {"blk.0.ffn_down": "Q4_K", "blk.1.ffn_down": "Q6_K", "blk.2.ffn_down": "Q5_K", "ffn_gate": "Q5_0",
              "ffn_up": "Q8_0", "attn_q": "Q8_0", "attn_v": "F16", "attn_k": "BF16", "token_embd": "Q8_0",
              "output.weight": "Q8_0"}


@pytest.fixture(scope="session")
def tiny_gguf_qwen2(tmp_path_factory):
    """A 3-layer qwen2 GGUF file with every quantized type the real files use."""
    from engine.testing.gguf_files import write_gguf_model
    return write_gguf_model(tmp_path_factory.mktemp("gguf") / "tiny-qwen2.gguf", arch="qwen2", layers=3,
                            intermediate=256, types=GGUF_TYPES)


@pytest.fixture(scope="session")
def tiny_gguf_llama(tmp_path_factory):
    from engine.testing.gguf_files import write_gguf_model
    return write_gguf_model(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf", arch="llama", layers=3,
                            intermediate=256, types=GGUF_TYPES, seed=1)


@pytest.fixture(scope="session")
def real_model_file():
    """The pulled default model (Qwen2.5-Coder-0.5B GGUF); skipped only where it is absent."""
    from engine.loading.catalog import pulled_file
    from engine.errors import ModelNotFoundError
    try:
        return pulled_file("default", USER_CACHE)
    except ModelNotFoundError as exc:
        pytest.skip(f"the default model is not pulled ({exc})")


@pytest.fixture(scope="session")
def real_engine(real_model_file):
    from engine import Engine
    from engine.loading.gguf_import import cached_folder
    return Engine.load(cached_folder(real_model_file, USER_CACHE), device="cpu")
