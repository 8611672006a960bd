"""`dllm-lsp bench engine` (also `python -m engine.bench.steps`): decoding steps and kernels."""
