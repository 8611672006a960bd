#!/usr/bin/env bash
# The test command (README): installs everything on a fresh machine, then runs the whole suite:
# engine (oracle vs transformers, decode, cache), server units, end-to-end over LSP, training,
# editor integrations (VS Code extension via node, headless Neovim and Emacs eglot against the real
# server, the editor README's snippets), the scripts (setup, demo recording).
# GPU tests are marked `gpu` and skip without CUDA; run them on a GPU box with scripts/gpu_check.sh.
#
# scripts/setup.sh dev makes (or reuses) .venv/ with $PYTHON (default python3); pytest runs with
# that venv's python, so the suite tests what a user's setup gives. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh dev
if ! command -v nvim >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq neovim >/dev/null) \
      || echo "note: neovim could not be installed; its tests will skip"
  else
    echo "note: nvim not found (Debian/Ubuntu: apt-get install neovim); its tests will skip"
  fi
fi
# Emacs with eglot (built into Emacs 29+; Debian bookworm's Emacs 28 needs elpa-eglot) and lsp-mode
emacs_has() { command -v emacs >/dev/null 2>&1 \
  && emacs --batch -f package-activate-all --eval "(kill-emacs (if (locate-library \"$1\") 0 1))" >/dev/null 2>&1; }
if ! emacs_has eglot || ! emacs_has lsp-mode; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    emacs_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
    (apt-get update -qq && { command -v emacs >/dev/null 2>&1 || emacs_install emacs-nox; } \
       && { emacs_has eglot || emacs_install elpa-eglot; }) \
      || echo "note: emacs with eglot could not be installed; the Emacs tests will skip"
    emacs_has lsp-mode || ! command -v emacs >/dev/null 2>&1 || emacs_install elpa-lsp-mode \
      || echo "note: lsp-mode could not be installed; its Emacs test will skip"
  else
    echo "note: emacs with eglot / lsp-mode not found (Debian/Ubuntu: apt-get install emacs-nox elpa-eglot elpa-lsp-mode); the Emacs tests will skip"
  fi
fi
# a C compiler (our CPU kernel and the CUDA emulator are compiled on first use) and npm (the VS Code
# extension's tests): installed where we can, else said; CI (DLLM_STRICT_SKIPS=1) fails on their skips
for tool in cc:gcc g++:g++ npm:npm; do
  if ! command -v "${tool%%:*}" >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${tool##*:}" >/dev/null) \
        || echo "note: ${tool##*:} could not be installed; the tests that need it will skip"
    else
      echo "note: ${tool%%:*} not found (Debian/Ubuntu: apt-get install ${tool##*:}); the tests that need it will skip"
    fi
  fi
done
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
