#!/usr/bin/env bash
# Create (once) the second virtual environment for the MONAI Label tests in $VENV (default:
# .venv-label): monai-ext with the `label` extra, which pins what monailabel needs (numpy < 2,
# pydicom < 3). The main environment (scripts/setup_env.sh) keeps the newest numpy and pydicom, so
# CI tests monai-ext under both sets. torch/torchvision are pinned: pip takes them from this
# machine's disk where it has them; an unpinned torch would download a multi-GB build.
#
# Example:
#     bash scripts/label_env.sh && .venv-label/bin/python -m pytest tests/label
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv-label}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
stamp="$VENV/.monai_ext_label_installed"
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
    "$VENV/bin/python" -m pip install -q -e ".[label]" "pytest>=7.4" "pytest-timeout>=2.1"
    touch "$stamp"
fi
echo "label environment ready: $VENV ($("$VENV/bin/python" -c 'import monai, monailabel, numpy, pydicom; print("monai", monai.__version__, "monailabel", monailabel.__version__, "numpy", numpy.__version__, "pydicom", pydicom.__version__)'))"
