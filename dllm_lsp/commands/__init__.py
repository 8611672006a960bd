"""The `dllm-lsp` subcommands other than bench: serve, complete, http, pull, eval, train-drafter."""
