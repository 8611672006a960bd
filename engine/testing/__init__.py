"""Tiny checkpoints and GGUF files in each family's real format, for tests and CPU benchmarks."""
