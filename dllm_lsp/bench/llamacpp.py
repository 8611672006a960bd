"""llama.cpp as `bench decode`'s anchor: llamacpp_worker.py run as a script by a Python that has
llama-cpp-python (never imported here), driven over pipes, the same cases decoded greedily."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from typing import Optional, Sequence

WORKER = Path(__file__).with_name("llamacpp_worker.py")


class LlamaUnavailable(Exception):
    pass


class LlamaCpp:
    """bench/llamacpp_worker.py under another Python, spoken to in JSON lines."""

    def __init__(self, python: str, model_path: Path, n_threads: int, n_ctx: int):
        self.log = tempfile.TemporaryFile(mode="w+")
        try:
            self.proc = subprocess.Popen([python, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self.log, text=True)
        except OSError as exc:
            raise LlamaUnavailable(f"cannot run {python}: {exc}") from exc
        hello = self._ask({"model_path": str(model_path), "n_threads": n_threads, "n_ctx": n_ctx})
        if "error" in hello:
            self.close()
            raise LlamaUnavailable(f"{python}: {hello['error']}")
        self.version = hello.get("llama_cpp", "?")

    def _ask(self, obj: dict) -> dict:
        try:
            self.proc.stdin.write(json.dumps(obj) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except OSError:
            line = ""
        if not line:
            self.log.seek(0)
            tail = self.log.read()[-800:].strip()
            raise LlamaUnavailable(f"the llama.cpp worker exited (rc {self.proc.poll()}): {tail or 'no output'}")
        return json.loads(line)

    def complete(self, prompt: Sequence[int], max_tokens: int, stop_ids: Sequence[int], line: bool) -> dict:
        return self._ask({"prompt_tokens": list(prompt), "max_tokens": max_tokens, "stop_ids": list(stop_ids),
                          "stop_newline": line})

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=20)
        except Exception:
            self.proc.kill()
        self.log.close()


def gguf_file(model: str) -> Optional[Path]:
    """The GGUF file behind `model` (a .gguf path, a folder holding one, or a catalog name)."""
    from engine.loading.catalog import catalog_entry, pulled_file
    from engine.loading.gguf_import import find_gguf
    if catalog_entry(model) is not None:
        return pulled_file(model)
    path = Path(os.path.expanduser(model))
    if path.is_file() and path.suffix == ".gguf":
        return path
    return find_gguf(path) if path.is_dir() else None
