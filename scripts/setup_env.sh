#!/usr/bin/env bash
# Create (once) the project virtual environment in $VENV (default: .venv) and install monai-ext with
# every extra except `label`. torch/torchvision are pinned: pip takes them from this machine's disk
# where it has them; an unpinned torch would download a multi-GB build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
stamp="$VENV/.monai_ext_installed"
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
    "$VENV/bin/python" -m pip install -q -e ".[all]"
    touch "$stamp"
fi
echo "environment ready: $VENV ($("$VENV/bin/python" -c 'import torch, monai; print("torch", torch.__version__, "monai", monai.__version__)'))"
