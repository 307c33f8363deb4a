"""AtomicCSVSaver: header row, atomic replace, duplicate ids, column counts; through ClassificationSaver."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.handlers import ClassificationSaver

from monai_ext.data.csv_saver import AtomicCSVSaver


def _read(path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_header_and_rows_through_classification_saver(tmp_path):
    """Two iterations of two items each: a header, then one row per item, numbers as MONAI writes them."""
    batches = [
        ({"filename_or_obj": ["a.png", "b.png"]}, torch.tensor([[0.25, 0.75], [1.0, 0.0]])),
        ({"filename_or_obj": ["c.png", "d.png"]}, torch.tensor([[0.5, 0.5], [0.125, 0.875]])),
    ]
    engine = Engine(lambda e, b: b[1])
    saver = AtomicCSVSaver(tmp_path / "out", "predictions.csv", id_column="image", columns=["p_a", "p_b"])
    ClassificationSaver(batch_transform=lambda b: b[0], saver=saver).attach(engine)
    engine.run(batches, max_epochs=1)
    assert _read(tmp_path / "out" / "predictions.csv") == [
        ["image", "p_a", "p_b"],
        ["a.png", "0.25", "0.75"],
        ["b.png", "1.0", "0.0"],
        ["c.png", "0.5", "0.5"],
        ["d.png", "0.125", "0.875"],
    ]
    assert saver.get_cache() == {}
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["predictions.csv"]
    umask = os.umask(0)
    os.umask(umask)
    assert (
        tmp_path / "out" / "predictions.csv"
    ).stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


@pytest.mark.parametrize(
    ("data", "header"),
    [
        (np.array([[1.5], [-2.0]]), ["id", "pred"]),
        (np.array([[1.0, 2.0, 3.0]] * 2), ["id", "pred_0", "pred_1", "pred_2"]),
    ],
)
def test_default_columns_and_index_ids(tmp_path, data, header):
    saver = AtomicCSVSaver(tmp_path, "p.csv")
    saver.save_batch(data)  # no metadata: ids 0, 1 as in MONAI
    saver.finalize()
    rows = _read(tmp_path / "p.csv")
    assert rows[0] == header
    assert rows[1:] == [[str(i), *(str(float(v)) for v in row)] for i, row in enumerate(data)]


def test_empty_run_writes_header_and_replaces_previous_file(tmp_path):
    (tmp_path / "p.csv").write_text("old,1.0\n")
    saver = AtomicCSVSaver(tmp_path, "p.csv", id_column="patient_id", columns=["log_risk"], delimiter=";")
    assert (tmp_path / "p.csv").read_text() == "old,1.0\n"  # not removed at construction
    saver.finalize()
    assert (tmp_path / "p.csv").read_text() == "patient_id;log_risk\n"


def test_failed_finalize_keeps_existing_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "p.csv"
    path.write_text("id,pred\nold,1.0\n")
    saver = AtomicCSVSaver(tmp_path, "p.csv", columns=["p_a", "p_b"])
    saver.save_batch(np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7]]), {"filename_or_obj": ["x", "y", "z"]})

    real_writer = csv.writer

    class _FailOnThirdRow:
        def __init__(self, *args, **kwargs):
            self._w, self._n = real_writer(*args, **kwargs), 0

        def writerow(self, row):
            self._n += 1
            if self._n == 3:
                raise OSError("disk full")
            self._w.writerow(row)

    monkeypatch.setattr(csv, "writer", _FailOnThirdRow)
    with pytest.raises(OSError, match="disk full"):
        saver.finalize()
    assert path.read_text() == "id,pred\nold,1.0\n"
    assert [p.name for p in tmp_path.iterdir()] == ["p.csv"]


def test_column_count_mismatch_raises_naming_file_id_and_counts(tmp_path):
    (tmp_path / "p.csv").write_text("previous\n")
    saver = AtomicCSVSaver(tmp_path, "p.csv", id_column="nodule_id", columns=["p_benign", "p_malignant"])
    saver.save_batch(np.array([[0.1, 0.2, 0.7]]), {"filename_or_obj": ["case_000.nii.gz:0"]})
    with pytest.raises(ValueError, match=r"p\.csv.*'case_000\.nii\.gz:0' has 3 value\(s\).*2 column\(s\)"):
        saver.finalize()
    assert (tmp_path / "p.csv").read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["p.csv"]


def test_rows_of_different_lengths_raise_without_columns(tmp_path):
    saver = AtomicCSVSaver(tmp_path, "p.csv")
    saver.save(np.array([0.5, 0.5]), {"filename_or_obj": "a"})
    saver.save(np.array([1.0]), {"filename_or_obj": "b"})
    with pytest.raises(ValueError, match=r"'b' has 1 value\(s\)"):
        saver.finalize()
    assert list(tmp_path.iterdir()) == []


def test_duplicate_id_raises_naming_the_id_and_file(tmp_path):
    saver = AtomicCSVSaver(tmp_path, "risk_scores.csv", id_column="patient_id")
    with pytest.raises(ValueError, match=r"risk_scores\.csv: id 'P0001' is saved twice"):
        saver.save_batch(np.array([[1.0], [2.0]]), {"filename_or_obj": ["P0001", "P0001"]})
    # the next run (after finalize) may save the same id again
    saver.finalize()
    saver.save(np.array([3.0]), {"filename_or_obj": "P0001"})
    saver.finalize()
    assert _read(tmp_path / "risk_scores.csv") == [["patient_id", "pred"], ["P0001", "3.0"]]


def test_columns_must_be_a_sequence_of_names(tmp_path):
    with pytest.raises(TypeError, match="sequence of names"):
        AtomicCSVSaver(tmp_path, "p.csv", columns="log_risk")


def test_write_bytes_atomic_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    from monai_ext.data import atomic

    target = tmp_path / "out.json"
    atomic.write_bytes_atomic(target, b"old")

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        atomic.write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
