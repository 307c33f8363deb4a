"""tutorials/06_monai_label.ipynb runs top to bottom in the label environment and exports its figures.

It needs monailabel, so it runs here (``.venv-label/bin/python -m pytest tests/label``) rather than in
tests/tutorials. The kernel is ``python3`` of the interpreter running pytest (jupyter_client starts
``sys.executable`` for it), i.e. the label venv.
"""

from __future__ import annotations

import importlib.util
import os
import signal
from pathlib import Path

import pytest

pytest.importorskip(
    "monailabel",
    reason="monailabel is not installed: create the label venv with `bash scripts/label_env.sh` and run "
    "`.venv-label/bin/python -m pytest tests/label`",
)
pytest.importorskip("nbclient")

NAME = "06_monai_label"
RUNNER = Path(__file__).resolve().parents[1] / "tutorials" / "tutorial_runner.py"


def _runner():
    spec = importlib.util.spec_from_file_location("tutorial_runner_label", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_without_outputs():
    runner = _runner()
    assert runner.stripped_problems(runner.TUTORIALS / f"{NAME}.ipynb") == []


@pytest.mark.slow
def test_monai_label_tutorial_runs_and_exports_its_figures(tmp_path):
    runner = _runner()
    try:
        figures = runner.execute_tutorial(NAME, tmp_path)
    finally:  # the notebook stops its server; make sure of it even when a cell failed
        pid_file = tmp_path / "work" / "server.pid"
        if pid_file.is_file():
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
    written = sorted(p.name for p in figures.glob("*.png"))
    expected = runner.committed_figures(NAME)
    assert expected, f"{NAME}: no figure exported under docs/images with its number as prefix"
    assert set(expected) <= set(written), f"{NAME}: did not regenerate {sorted(set(expected) - set(written))}"
    for png in written:
        assert (figures / png).stat().st_size > 5_000, f"{NAME}: {png} looks empty"
