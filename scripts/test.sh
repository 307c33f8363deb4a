#!/usr/bin/env bash
# Set up the environment (once) and run the quality gates and the whole test suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
VENV="${VENV:-.venv}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
"$VENV/bin/ruff" check monai_ext tests benchmarks
"$VENV/bin/ruff" format --check monai_ext tests benchmarks
"$VENV/bin/python" -m pytest -q --durations=20 --timeout=900 "$@"
# MONAI Label pins numpy < 2 and pydicom < 3: its tests run in a second venv with those pins.
LABEL_VENV="${LABEL_VENV:-.venv-label}"
VENV="$LABEL_VENV" bash scripts/label_env.sh
"$LABEL_VENV/bin/python" -m pytest -q --durations=10 --timeout=900 tests/label
