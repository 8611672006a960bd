"""dllm-lsp's diffusion engine: load dLLM checkpoints, decode infills with parallel unmasking.

    from engine import Engine, InfillRequest
    eng = Engine.load("default")
    for upd in eng.stream(InfillRequest(prefix, suffix, max_new_tokens=32)):
        upd.stable, upd.draft, upd.forwards
    res = eng.infill(req)     # InfillResult(text, forwards, new_tokens, ms, finish_reason)

No LSP types or file URIs here; torch is imported lazily by Engine's modules.
"""
from engine.api import InfillRequest, InfillResult, InfillUpdate
from engine.errors import CheckpointError, ConfigError, EngineError, ModelNotFoundError


def __getattr__(name):
    if name == "Engine":
        from engine.engine import Engine
        return Engine
    if name == "resolve_model_path":
        from engine.loading.resolve import resolve_model_path
        return resolve_model_path
    if name == "ModelConfig":
        from engine.loading.config import ModelConfig
        return ModelConfig
    raise AttributeError(name)


__all__ = ["Engine", "InfillRequest", "InfillResult", "InfillUpdate", "ModelConfig",
           "EngineError", "ConfigError", "CheckpointError", "ModelNotFoundError"]
