#!/usr/bin/env bash
# Set up .venv for RMT Lens: create it, install torch, the requirements and the package (editable).
# Idempotent: when nothing changed since the last run it returns at once.
#
#   PYTHON=python3.12 bash scripts/setup.sh        # choose the interpreter (default: python3.11, else python3)
#   TORCH_SPEC="torch" bash scripts/setup.sh       # another torch (default torch==2.13.0, the CPU wheel here)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv
PY="$VENV/bin/python"
STAMP="$VENV/.rmt-lens-installed"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TEST_TOOLS=(pytest selenium hypothesis)  # not runtime requirements: the test runner, the browser test's driver, property tests

if [[ -z "${PYTHON:-}" ]]; then
    PYTHON="$(command -v python3.11 || command -v python3 || true)"
fi
if [[ -z "$PYTHON" ]]; then
    echo "setup: no python3.11 or python3 on PATH; install Python 3.11 (or set PYTHON=/path/to/python)" >&2
    exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "setup: $PYTHON is older than Python 3.10; install Python 3.11 (or set PYTHON=/path/to/python)" >&2
    exit 1
fi

# JavaScript the offline bertviz views inline (app/package.json); optional: without npm they fall back.
if [[ -f app/package-lock.json && ! -d app/node_modules ]]; then
    if command -v npm >/dev/null 2>&1; then
        npm ci --prefix app --no-audit --no-fund --loglevel=error \
            || echo "setup: warning: npm ci --prefix app failed; the dashboard's bertviz views may need network" >&2
    else
        echo "setup: warning: npm not found, app/node_modules not installed" >&2
    fi
fi

# The stamp records what was installed: requirements, package metadata, torch spec and test tools.
installed='import importlib.util as u, sys; sys.exit(not (u.find_spec("torch") and u.find_spec("rmt_core")))'
want="$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1) $TORCH_SPEC ${TEST_TOOLS[*]}"
if [[ -x "$PY" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] && "$PY" -c "$installed" 2>/dev/null; then
    exit 0
fi

if [[ ! -x "$PY" ]]; then
    echo "setup: creating $VENV with $PYTHON ($("$PYTHON" --version 2>&1))"
    if ! "$PYTHON" -m venv "$VENV"; then
        rm -rf "$VENV"
        echo "setup: '$PYTHON -m venv' failed; on Debian/Ubuntu install python3-venv (apt-get install python3.11-venv)" >&2
        exit 1
    fi
fi

pip=("$PY" -m pip install --disable-pip-version-check)
[[ -n "${CI:-}" ]] && pip+=(--progress-bar off)
# torch first, pinned: a bare `torch` from the requirements would pull the multi-GB CUDA build.
# An existing torch (a CUDA build a GPU user installed, say) is kept.
if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "setup: installing $TORCH_SPEC"
    "${pip[@]}" "$TORCH_SPEC"
fi
echo "setup: installing requirements.txt, ${TEST_TOOLS[*]} and rmt-lens (editable; minutes on a fresh machine)"
"${pip[@]}" -q -r requirements.txt "${TEST_TOOLS[@]}"
"${pip[@]}" -q -e . --no-deps
"$PY" -c 'import torch, rmt_core' >/dev/null
echo "$want" > "$STAMP"
echo "setup: $VENV is ready (torch $("$PY" -c 'import torch; print(torch.__version__)'))"
