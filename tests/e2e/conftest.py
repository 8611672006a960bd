"""End-to-end fixtures: a tiny random model written once per session (no download)."""
import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    from engine.testing.checkpoints import write_block_model
    return str(write_block_model(tmp_path_factory.mktemp("models") / "tiny"))

