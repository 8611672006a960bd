"""Checkpoints in: model folders, GGUF files, configs, tokenizers, the catalog of pullable models."""
