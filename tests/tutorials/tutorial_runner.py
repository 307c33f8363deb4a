"""Execute a tutorial notebook with nbclient and check what it leaves behind.

Each notebook reads three environment variables in its first code cell: ``TUTORIAL_SIZE``
(``SMALL`` on CPU, ``FULL`` for GPU-sized runs), ``TUTORIAL_FIGURES`` (where its key figures go as
PNG, ``../docs/images`` by default) and ``TUTORIAL_WORKDIR`` (its scratch folder). The runner points
the last two at a temporary folder so a test run never touches the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

__all__ = ["TUTORIALS", "committed_figures", "execute_tutorial", "stripped_problems"]

TUTORIALS = Path(__file__).resolve().parents[2] / "tutorials"
IMAGES = TUTORIALS.parent / "docs" / "images"


def committed_figures(name: str) -> list[str]:
    """Names of the PNGs under ``docs/images`` that the notebook ``name`` exports (prefix ``NN_``)."""
    prefix = name.split("_", 1)[0] + "_"
    return sorted(p.name for p in IMAGES.glob(f"{prefix}*.png"))


def stripped_problems(path: Path) -> list[str]:
    """Cells of a committed notebook that still carry outputs or execution counts."""
    nb = nbformat.read(path, as_version=4)
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
            problems.append(f"{path.name}: cell {i} has outputs; strip them before committing")
    return problems


def execute_tutorial(name: str, tmp_path: Path, timeout: int = 1500) -> Path:
    """Run ``tutorials/<name>.ipynb`` top to bottom in a fresh kernel; return its figures folder."""
    path = TUTORIALS / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    figures = tmp_path / "figures"
    env = {
        "TUTORIAL_SIZE": "SMALL",
        "TUTORIAL_FIGURES": str(figures),
        "TUTORIAL_WORKDIR": str(tmp_path / "work"),
        "MPLBACKEND": "Agg",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(TUTORIALS)}}
        ).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return figures
