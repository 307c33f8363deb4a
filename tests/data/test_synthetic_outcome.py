"""Synthetic outcome data: determinism, readers, table/image/truth consistency, clinical-only Cox gap."""

from __future__ import annotations

import csv
import hashlib
import json

import nibabel as nib
import numpy as np
import pytest

from monai_ext.data.synthetic import generate


def _hashes(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def _rows(root, name):
    with open(root / name, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return generate("outcome", tmp_path_factory.mktemp("oc") / "ds", n=6, seed=0)


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    # tiny volumes: the table and the survival times do not depend on the image grid
    return generate(
        "outcome",
        tmp_path_factory.mktemp("ocbig") / "ds",
        n=300,
        seed=3,
        shape=(32, 32, 16),
        spacing=(10, 10, 10),
    )


def test_deterministic_per_seed(small, tmp_path):
    again = generate("outcome", tmp_path / "a", n=6, seed=0)
    other = generate("outcome", tmp_path / "b", n=6, seed=1)
    assert _hashes(again) == _hashes(small)
    assert _hashes(other)["clinical.csv"] != _hashes(small)["clinical.csv"]
    assert _hashes(other)["images/P0000.nii.gz"] != _hashes(small)["images/P0000.nii.gz"]


def test_table_images_and_truth_agree(small):
    rows = _rows(small, "clinical.csv")
    truth = {r["patient_id"]: r for r in _rows(small, "truth.csv")}
    assert [r["patient_id"] for r in rows] == [f"P{i:04d}" for i in range(6)]
    assert set(rows[0]) == {
        "patient_id",
        "age",
        "sex",
        "stage",
        "albumin_g_l",
        "ldh_u_l",
        "crp_mg_l",
        "image",
    } | {
        "time_months",
        "event",
        "split",
    }
    for r in rows:
        assert (
            r["sex"] in {"M", "F"} and r["stage"] in {"", "I", "II", "III", "IV"} and r["event"] in {"0", "1"}
        )
        assert float(r["time_months"]) > 0
        im = nib.load(str(small / r["image"]))
        img = np.asarray(im.dataobj)
        assert img.dtype == np.int16 and img.shape == (96, 96, 48)
        np.testing.assert_allclose(np.abs(np.diag(im.affine)[:3]), 3.4)
        c = np.rint([float(v) for v in truth[r["patient_id"]]["tumour_center_voxel"].split()]).astype(int)
        core = img[c[0] - 1 : c[0] + 2, c[1] - 1 : c[1] + 2, c[2] - 1 : c[2] + 2]
        assert -150 < core.mean() < 150  # soft-tissue tumour (viable or necrotic) inside the lung
        lung = img[(img > -960) & (img < -700)]
        assert -900 < np.median(lung) < -800
    dl = json.loads((small / "datalist.json").read_text())
    flat = [e for s in ("training", "validation", "test") for e in dl[s]]
    assert [e["patient_id"] for e in flat] == [r["patient_id"] for r in rows]
    assert all(e["split"] == s for s in dl for e in dl[s])


def test_summary_reports_the_oracle_c_index(small):
    from lifelines.utils import concordance_index

    rows = _rows(small, "clinical.csv")
    risk = [float(r["log_risk"]) for r in _rows(small, "truth.csv")]
    summary = json.loads((small / "summary.json").read_text())
    c = concordance_index(
        [float(r["time_months"]) for r in rows], -np.asarray(risk), [int(r["event"]) for r in rows]
    )
    assert summary["oracle_c_index"] == pytest.approx(c, abs=1e-4)


def test_bad_options_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="option missing_rate"):
        generate("outcome", tmp_path / "x", n=2, missing_rate=0.9)
    with pytest.raises(ValueError, match="option shape"):
        generate("outcome", tmp_path / "y", n=2, shape=(4, 4, 4))
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_clinical_only_cox_is_well_below_the_oracle(large):
    import pandas as pd
    from lifelines import CoxPHFitter
    from lifelines.utils import concordance_index

    df = pd.read_csv(large / "clinical.csv")
    truth = pd.read_csv(large / "truth.csv")
    assert 0.2 < 1 - df.event.mean() < 0.4  # about 30 % censored
    assert 0.02 < df.albumin_g_l.isna().mean() < 0.2  # missing values are empty cells
    X = pd.DataFrame(
        {
            "age": df.age,
            "male": (df.sex == "M").astype(float),
            "stage": df.stage.map({"I": 1, "II": 2, "III": 3, "IV": 4}),
            "albumin": df.albumin_g_l,
            "log_ldh": np.log(df.ldh_u_l),
            "log_crp": np.log(df.crp_mg_l),
        }
    )
    X = X.fillna(X.median())
    X["T"], X["E"] = df.time_months, df.event
    fold = np.arange(len(df)) % 5
    clinical, oracle = [], []
    for f in range(5):
        tr, te = X[fold != f], X[fold == f]
        model = CoxPHFitter(penalizer=0.01).fit(tr, "T", "E")
        clinical.append(concordance_index(te["T"], -model.predict_partial_hazard(te), te["E"]))
        oracle.append(concordance_index(te["T"], -truth.log_risk[fold == f], te["E"]))
    clinical_c, oracle_c = float(np.mean(clinical)), float(np.mean(oracle))
    assert clinical_c > 0.6, clinical_c  # the table carries real signal
    assert clinical_c <= oracle_c - 0.05, (clinical_c, oracle_c)
