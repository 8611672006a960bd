"""llama.cpp as `bench decode`'s anchor, two ways, one interface (`complete` -> tokens, ms_cold, ms_warm):

- LlamaCpp: llamacpp_worker.py run as a script by a Python that has llama-cpp-python (never
  imported here), driven over pipes;
- LlamaServer: llama.cpp's own C++ `llama-server` (started by you on the same GGUF file with the
  same threads), over HTTP `/completion` with the prompt's token ids, so the Python binding's
  per-token cost is not counted against llama.cpp. Its times are the server's own (`timings`:
  prompt_ms + predicted_ms, no HTTP). Cold: `cache_prompt` off (the whole prompt computed);
  warm: the same prompt again with `cache_prompt` on after one call that filled the cache: the
  server reuses all but the prompt's last token, which it computes again with the answer.
The same cases are decoded greedily (top_k 1), a line case stopping at its first newline."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from typing import Optional, Sequence

WORKER = Path(__file__).with_name("llamacpp_worker.py")


class LlamaUnavailable(Exception):
    pass


class LlamaCpp:
    """bench/llamacpp_worker.py under another Python, spoken to in JSON lines."""

    name = "llama.cpp"

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


class LlamaServer:
    """A running llama-server at `url` (see the module docstring)."""

    name = "llama-server"

    def __init__(self, url: str, tokenizer):
        self.url, self.tok = url.rstrip("/"), tokenizer
        try:
            props = json.loads(urllib.request.urlopen(self.url + "/props", timeout=10).read())
        except (OSError, ValueError) as exc:
            raise LlamaUnavailable(f"no llama-server at {self.url}: {exc}") from exc
        self.version = str(props.get("build_info") or "?")
        self.model_path = str(props.get("model_path") or "?")

    def _post(self, body: dict) -> dict:
        req = urllib.request.Request(self.url + "/completion", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            return json.loads(urllib.request.urlopen(req, timeout=600).read())
        except (OSError, ValueError) as exc:
            raise LlamaUnavailable(f"llama-server at {self.url}: {exc}") from exc

    def _tokens(self, answer: dict, stop_ids: Sequence[int]) -> list:
        ids = answer.get("tokens")
        ids = list(ids) if ids else self.tok.encode(answer.get("content", ""))
        return [t for t in ids if t not in stop_ids]

    def complete(self, prompt: Sequence[int], max_tokens: int, stop_ids: Sequence[int], line: bool) -> dict:
        body = {"prompt": list(prompt), "n_predict": max_tokens, "temperature": 0, "top_k": 1, "top_p": 1.0,
                "min_p": 0.0, "repeat_penalty": 1.0, "return_tokens": True, "stream": False}
        if line:
            body["stop"] = ["\n"]
        cold = self._post({**body, "cache_prompt": False})
        self._post({**body, "cache_prompt": True})                  # fills the prompt cache
        warm = self._post({**body, "cache_prompt": True})
        ms = lambda a: float(a["timings"]["prompt_ms"]) + float(a["timings"]["predicted_ms"])
        return {"tokens": self._tokens(cold, stop_ids), "ms_cold": ms(cold),
                "tokens_warm": self._tokens(warm, stop_ids), "ms_warm": ms(warm),
                "warm_prompt_tokens": int(warm["timings"].get("prompt_n", -1))}

    def close(self) -> None:
        pass


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
