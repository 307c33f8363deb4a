"""Every tutorial runs top to bottom on CPU, exports its figures, and is committed without outputs."""

from __future__ import annotations

import pytest
from tutorial_runner import TUTORIALS, committed_figures, execute_tutorial, stripped_problems

# 06_monai_label needs monailabel, which lives in the label venv: tests/label runs it there.
NOTEBOOKS = sorted(p.stem for p in TUTORIALS.glob("0*.ipynb") if not p.stem.startswith("06_"))


def test_tutorials_are_committed_without_outputs():
    assert NOTEBOOKS, "no tutorials found"
    problems = [msg for p in sorted(TUTORIALS.glob("*.ipynb")) for msg in stripped_problems(p)]
    assert problems == []


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_tutorial_runs_and_exports_its_figures(name, tmp_path):
    figures = execute_tutorial(name, tmp_path)
    written = sorted(p.name for p in figures.glob("*.png"))
    expected = committed_figures(name)
    assert expected, f"{name}: no figure exported under docs/images with its number as prefix"
    assert set(expected) <= set(written), f"{name}: did not regenerate {sorted(set(expected) - set(written))}"
    for png in written:
        assert (figures / png).stat().st_size > 5_000, f"{name}: {png} looks empty"
