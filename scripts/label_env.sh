#!/usr/bin/env bash
# Create (once) the second virtual environment for the MONAI Label tests in $VENV (default:
# .venv-label): monai-ext with the `label` extra, which pins what monailabel needs (numpy < 2,
# pydicom < 3). The main environment (scripts/setup_env.sh) keeps the newest numpy and pydicom, so
# CI tests monai-ext under both sets.
#
# Order matters for speed and for not downloading a second torch:
# 1. torch/torchvision pinned first (pip takes them from this machine's disk where it has them);
# 2. sam2 (a hard dependency of monailabel, published only as an sdist whose build requires torch)
#    is built against the venv's torch with --no-build-isolation: an isolated build env would
#    ignore the local torch cap and download another multi-GB torch. SAM2_BUILD_CUDA=0 skips its
#    optional CUDA post-processing extension (MONAI Label's SAM2 models stay off: `--conf sam2 false`);
# 3. monai-ext[label]: sam2 is already installed (its own requirements are resolved here, under the
#    extra's pins); every other dependency has a wheel or a light sdist.
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
pip=("$VENV/bin/python" -m pip install -q --progress-bar off)
stamp="$VENV/.monai_ext_label_installed"
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ scripts/label_env.sh -nt "$stamp" ]; then
    "${pip[@]}" --upgrade pip
    "${pip[@]}" "torch==2.14.1" "torchvision==0.29.1" "setuptools>=77" wheel
    SAM2_BUILD_CUDA=0 "${pip[@]}" --no-build-isolation --no-deps "sam2>=0.4.1"
    "${pip[@]}" -e ".[label,wsi]" "pytest>=7.4" "pytest-timeout>=2.1" nbclient nbformat ipykernel matplotlib
    touch "$stamp"
fi
echo "label environment ready: $VENV ($("$VENV/bin/python" -c 'import torch, monai, monailabel, numpy, pydicom; print("torch", torch.__version__, "monai", monai.__version__, "monailabel", monailabel.__version__, "numpy", numpy.__version__, "pydicom", pydicom.__version__)'))"
