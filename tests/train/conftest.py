"""Fixtures for the trainer tests: a tiny corpus folder and a tiny trained tokenizer."""
from __future__ import annotations

import pytest

from train_samples import SAMPLE_FILES


@pytest.fixture()
def code_dir(tmp_path):
    root = tmp_path / "code"
    for name, text in SAMPLE_FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text * 3)
    return root


@pytest.fixture(scope="module")
def tiny_tok():
    from engine.train.embedded.tokenizer_train import train_tokenizer
    return train_tokenizer([t * 4 for t in SAMPLE_FILES.values()], vocab_size=400, min_frequency=1)
