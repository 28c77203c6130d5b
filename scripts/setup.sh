#!/bin/sh
# The project's environment, made on first use by `make` (and by hand: sh scripts/setup.sh):
# a virtual environment, torch, then this package and its dependencies. Idempotent: a second run
# installs nothing that is already there. Settings, from the environment or make's command line:
#   PYTHON  the interpreter that makes the venv (default python3; 3.10 or newer)
#   VENV    where the venv goes (default .venv)
#   TORCH   auto (default): keep a torch that PYTHON already has (a conda env, a cluster image);
#             else the CPU-only build where no CUDA device is visible, PyPI's default (CUDA) build
#             where one is;
#           cpu | cuda: that build, whatever the machine; or any pip requirement, e.g. torch==2.13.0
# Every step prints one line; a failure is one line naming the cause and the log, exit status 2.
set -eu
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH=${TORCH:-auto}
CPU_INDEX=https://download.pytorch.org/whl/cpu
LOG=$VENV/setup.log

say() { echo "setup: $*"; }
fail() { echo "setup: error: $*" >&2; exit 2; }

# pip WHAT ARGS...: quiet pip in the venv, its output in the log; one line on failure.
pip_install() {
  what=$1; shift
  if ! "$VENV/bin/python" -m pip install --disable-pip-version-check "$@" >>"$LOG" 2>&1; then
    if grep -qE "Could not fetch URL|Failed to establish|Temporary failure in name resolution|Name or service not known|from versions: none" "$LOG"; then
      fail "could not download $what (no network or package index reachable, or no release for this Python and platform); pip's output: $LOG"
    fi
    fail "pip could not install $what: $(grep -E '^ERROR' "$LOG" | head -n 1 | cut -c1-200); pip's output: $LOG"
  fi
}

command -v "$PYTHON" >/dev/null 2>&1 || fail "no '$PYTHON' on PATH: install Python 3.10+ or set PYTHON=/path/to/python3"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || fail "$PYTHON is Python $("$PYTHON" -c 'import platform; print(platform.python_version())'); this project needs 3.10 or newer (set PYTHON=...)"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
    || fail "$PYTHON cannot make a virtual environment: install its venv module (Debian/Ubuntu: apt install python3-venv)"
  inherit=""
  if [ "$TORCH" = auto ] && "$PYTHON" -c 'import torch' 2>/dev/null; then
    inherit=--system-site-packages
    say "making $VENV with $PYTHON's packages visible (it has torch $("$PYTHON" -c 'import torch; print(torch.__version__)'))"
  else
    say "making $VENV with $PYTHON ($("$PYTHON" -c 'import platform; print(platform.python_version())'))"
  fi
  "$PYTHON" -m venv $inherit "$VENV" >/dev/null 2>&1 || { rm -rf "$VENV"; fail "$PYTHON -m venv $VENV failed (disk full? no ensurepip?)"; }
  if [ -n "$inherit" ] && "$PYTHON" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
    # PYTHON is itself a venv: --system-site-packages sees its base, not it; a .pth adds its packages.
    "$PYTHON" -c 'import site; print("\n".join(site.getsitepackages()))' \
      >"$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/_outer_env.pth"
  fi
fi
: >"$LOG"

has_torch() { "$VENV/bin/python" -c 'import torch' 2>/dev/null; }
case $TORCH in
  auto|cpu|cuda)
    if has_torch; then
      :
    else
      build=$TORCH
      if [ "$build" = auto ]; then
        build=cpu
        if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then build=cuda; fi
      fi
      if [ "$build" = cpu ]; then
        say "installing torch, CPU-only build (no CUDA device visible; TORCH=cuda or TORCH=torch==X overrides)"
        pip_install "torch (CPU build, from $CPU_INDEX)" torch --index-url "$CPU_INDEX"
      else
        say "installing torch, PyPI's default build with CUDA (a few GB; TORCH=cpu overrides)"
        pip_install "torch" torch
      fi
    fi ;;
  *)
    say "installing $TORCH (TORCH=$TORCH)"
    pip_install "$TORCH" "$TORCH" ;;
esac
say "installing ablation-sweeper and its dependencies (pip install -e \".[dev]\"; output in $LOG)"
pip_install "the project's dependencies" -e ".[dev]"
"$VENV/bin/python" -c 'import torch, ray, optuna, statsmodels, train' >>"$LOG" 2>&1 \
  || fail "the installed packages do not import (see $LOG)"
say "ready: $("$VENV/bin/python" -c '
import torch
cuda = torch.cuda.is_available()
print(f"torch {torch.__version__}, " + (f"CUDA with {torch.cuda.device_count()} GPU(s)" if cuda else "CPU only"))')"
