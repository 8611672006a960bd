"""Errors the engine raises for bad input: one clear message each, naming the file and the cause."""


class EngineError(Exception):
    """Base class for every error the engine raises on purpose."""


class ConfigError(EngineError):
    """config.json (or a companion file) is missing, unreadable or lacks a key."""


class CheckpointError(EngineError):
    """Weights are missing, truncated, corrupt, or do not match the config."""


class ModelNotFoundError(EngineError):
    """The model name or folder could not be resolved offline."""
