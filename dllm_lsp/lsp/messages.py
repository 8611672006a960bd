"""What the service and the server hand each other (plain data): the client port the service
talks back through, a request resolved to a document and an offset, an answer and why it is what
it is, and the counters `dllm/metrics` returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Dict, Optional, Protocol, Sequence, Tuple
from urllib.parse import unquote, urlparse


class ClientPort(Protocol):
    def notify(self, method: str, params: Any) -> None: ...
    def show_message(self, kind: str, message: str) -> None: ...     # kind: "error" | "warning" | "info"
    async def progress_begin(self, title: str) -> Optional[str]: ...
    def progress_end(self, token: Optional[str], message: str) -> None: ...


@dataclass(frozen=True)
class DocumentAt:
    """A completion request, already resolved to Python string offsets."""
    uri: str
    version: Optional[int]
    text: str
    offset: int
    language_id: str
    position: Dict[str, int]                       # as the client sent it (its units)
    others: Sequence[Tuple[str, str]] = ()         # (name, text) of other open documents


@dataclass(frozen=True)
class Answer:
    text: str
    reason: str = "ok"            # ok | cached | not-ready | no-completion | superseded | cancelled | disabled
    forwards: int = 0
    ms: float = 0.0
    first_text_ms: Optional[float] = None
    mode: Optional[str] = None
    queue_ms: Optional[float] = None      # from submitting the job to the engine thread starting it
    context_tokens: int = 0               # context tokens whose keys/values this request computed
    alternatives: Tuple[str, ...] = ()    # other suggestions (an explicitly invoked request)


@dataclass
class Metrics:
    """Counters since start; `dllm/metrics` returns them (the benchmark reads deltas)."""
    requests: int = 0
    answered: int = 0
    cache_hits: int = 0
    engine_runs: int = 0
    forwards: int = 0
    new_tokens: int = 0
    empty: int = 0
    superseded: int = 0
    cancelled: int = 0
    not_ready: int = 0
    warmups: int = 0              # background prefills that ran
    configurations: int = 0       # settings changes applied (initializationOptions, didChangeConfiguration, pulls)
    warm_tokens: int = 0          # context tokens they computed
    prepared: int = 0             # next suggestions decoded in the background (prepare_next) and kept
    last_warm: Dict[str, Any] = field(default_factory=dict)   # {uri, token, tokens} of the last one done
    last: Dict[str, Any] = field(default_factory=dict)

    def record(self, answer: Answer, ms: float, version: Optional[int]) -> None:
        """Count one answered request and keep it as `last`."""
        self.answered += 1
        self.cache_hits += answer.reason == "cached"
        self.empty += not answer.text
        self.superseded += answer.reason == "superseded"
        self.not_ready += answer.reason == "not-ready"
        self.last = {"reason": answer.reason, "forwards": answer.forwards, "ms": round(ms, 2),
                     "firstTextMs": None if answer.first_text_ms is None else round(answer.first_text_ms, 2),
                     "mode": answer.mode, "chars": len(answer.text), "version": version,
                     "queueMs": None if answer.queue_ms is None else round(answer.queue_ms, 2),
                     "contextTokens": answer.context_tokens, "alternatives": len(answer.alternatives)}

    def as_json(self) -> Dict[str, Any]:
        return {"requests": self.requests, "answered": self.answered, "cacheHits": self.cache_hits,
                "engineRuns": self.engine_runs, "forwards": self.forwards, "newTokens": self.new_tokens,
                "empty": self.empty, "superseded": self.superseded, "cancelled": self.cancelled,
                "notReady": self.not_ready, "warmups": self.warmups, "warmTokens": self.warm_tokens,
                "prepared": self.prepared, "configurations": self.configurations,
                "lastWarm": dict(self.last_warm),
                "last": dict(self.last)}


def document_name(uri: str) -> str:
    path = unquote(urlparse(uri).path) or uri
    return PurePosixPath(path).name or uri
