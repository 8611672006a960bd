"""dllm-lsp: the language server, the pure completion core behind it, and the command line."""
__version__ = "0.1.0"
