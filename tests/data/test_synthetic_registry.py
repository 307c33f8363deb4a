"""The synthetic registry: argument checks and atomic output folders."""

from __future__ import annotations

import pytest

from monai_ext.data.synthetic import KINDS, default_dataset, generate, get_generator
from monai_ext.data.synthetic._common import atomic_dir


def test_every_kind_has_a_generator():
    for kind in KINDS:
        assert callable(get_generator(kind))


def test_unknown_kind_names_the_kinds():
    with pytest.raises(ValueError, match="unknown synthetic data KIND 'x'.*ct_abdomen"):
        generate("x", "/tmp/never")


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_bad_n(tmp_path, n):
    with pytest.raises(ValueError, match="argument n must be a positive integer"):
        generate("he_patches", tmp_path / "o", n=n)
    assert not (tmp_path / "o").exists()


def test_failed_generation_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "ds") as tmp:
        (tmp / "half.txt").write_text("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_default_dataset_is_cached(tmp_path):
    first = default_dataset("he_patches", n=8, seed=3, root=tmp_path)
    stamp = {p.name: p.stat().st_mtime_ns for p in (tmp_path / first).rglob("*") if p.is_file()}
    assert stamp
    assert default_dataset("he_patches", n=8, seed=3, root=tmp_path) == first
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / first).rglob("*") if p.is_file()} == stamp
