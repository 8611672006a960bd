"""`dllm-lsp bench ...`: each benchmark in its own module, over the same pipeline the server runs."""
