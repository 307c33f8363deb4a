"""Tests for the ``mri_brain_multimodal`` synthetic generator (T1/T1c/T2/FLAIR + BraTS labels)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from monai_ext.data.synthetic import generate
from monai_ext.data.synthetic.mri_brain import SEQUENCES

N_CASES = 8


@pytest.fixture(scope="module")
def brain(tmp_path_factory) -> Path:
    return generate("mri_brain_multimodal", tmp_path_factory.mktemp("mri") / "ds", n=N_CASES, seed=0)


@pytest.fixture(scope="module")
def cases(brain) -> list[dict]:
    """All entries of the datalist, loaded: ``{"split", "images" (4, x, y, z), "seg"}``."""
    dl = json.loads((brain / "dataset.json").read_text())
    out = []
    for split in ("training", "validation", "test"):
        for e in dl[split]:
            imgs = np.stack([np.asarray(nib.load(brain / p).dataobj) for p in e["image"]])
            seg = np.asarray(nib.load(brain / e["label"]).dataobj)
            out.append({"split": split, "images": imgs, "seg": seg})
    return out


def _digest(folder: Path, case: str) -> str:
    h = hashlib.sha256()
    for f in sorted((folder / case).iterdir()):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def test_deterministic_per_seed(brain, tmp_path):
    again = generate("mri_brain_multimodal", tmp_path / "a", n=2, seed=0)
    other = generate("mri_brain_multimodal", tmp_path / "b", n=1, seed=1)
    for case in ("case_000", "case_001"):
        assert _digest(again, case) == _digest(brain, case)
    assert _digest(other, "case_000") != _digest(brain, "case_000")


def test_datalist_summary_and_files(brain):
    dl = json.loads((brain / "dataset.json").read_text())
    summary = json.loads((brain / "summary.json").read_text())
    assert summary["channel_def"] == {"0": "t1", "1": "t1c", "2": "t2", "3": "flair"}
    assert summary["labels"] == {
        "0": "background",
        "1": "necrotic_core",
        "2": "oedema",
        "3": "enhancing_tumour",
    }
    entries = dl["training"] + dl["validation"] + dl["test"]
    assert len(entries) == N_CASES and len(dl["test"]) >= 1 and len(dl["validation"]) >= 1
    assert summary["split"] == {k: len(dl[k]) for k in ("training", "validation", "test")}
    for e in entries:
        assert [Path(p).name.split("_")[-1] for p in e["image"]] == [f"{s}.nii.gz" for s in SEQUENCES]
        assert not Path(e["label"]).is_absolute() and (brain / e["label"]).is_file()


def test_geometry_and_dtypes(brain):
    dl = json.loads((brain / "dataset.json").read_text())
    for e in dl["training"][:2] + dl["test"]:
        seg = nib.load(brain / e["label"])
        assert seg.get_data_dtype() == np.uint8 and seg.shape == (96, 96, 64)
        np.testing.assert_allclose(seg.header.get_zooms(), (2.0, 2.0, 2.0))
        assert nib.aff2axcodes(seg.affine) == ("R", "A", "S")
        for p in e["image"]:
            img = nib.load(brain / p)
            assert img.get_data_dtype() == np.float32
            assert img.shape == seg.shape
            np.testing.assert_array_equal(img.affine, seg.affine)
            data = np.asarray(img.dataobj)
            assert np.isfinite(data).all() and data.min() >= 0  # magnitude images (Rician)


def test_labels_and_contrasts_align(cases):
    t1, t1c, t2, flair = range(4)
    scales = []
    for c in cases:
        img, seg = c["images"], c["seg"]
        assert set(np.unique(seg)) <= {0, 1, 2, 3}
        wt = seg > 0
        assert (seg == 3).sum() > 20 and (seg == 2).sum() > 50  # every case has a rim and oedema
        # a ring of brain tissue around the tumour: local, so the smooth bias field hardly changes
        ring = ndimage.binary_dilation(wt, iterations=3) & ~ndimage.binary_dilation(wt, iterations=1)
        brain = ring & (img[t1] > np.percentile(img[t1][ring], 30))  # drop CSF / sulci
        enh, oed = seg == 3, seg == 2
        # enhancing tumour is bright on T1c (relative to its surroundings and to T1)
        assert img[t1c][enh].mean() > 1.15 * img[t1c][brain].mean()
        assert (
            img[t1c][enh].mean() / img[t1][enh].mean() > 1.3 * img[t1c][brain].mean() / img[t1][brain].mean()
        )
        # oedema bright on FLAIR and T2, tumour dark on T1
        assert img[flair][oed].mean() > 1.15 * img[flair][brain].mean()
        assert img[t2][oed].mean() > 1.15 * img[t2][brain].mean()
        assert img[t1][wt].mean() < 0.97 * img[t1][brain].mean()
        assert img[t1][(seg == 1) | enh].mean() < 0.85 * img[t1][brain].mean()
        # CSF (brightest T2 voxels of the head) is dark on FLAIR
        head = img[t2] > np.percentile(img[t2], 50)
        csf = img[t2] > np.percentile(img[t2][head], 97)
        csf &= ~ndimage.binary_dilation(wt, iterations=2)
        assert np.median(img[flair][csf]) < np.median(img[flair][head])
        scales.append(np.percentile(img[t1], 99))
    assert max(scales) / min(scales) > 3  # arbitrary intensity scale per scan


def _zscore_features(img: np.ndarray) -> np.ndarray:
    flat = img.reshape(len(img), -1)
    return ((flat - flat.mean(1, keepdims=True)) / flat.std(1, keepdims=True)).T


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(2 * (pred & truth).sum() / max(pred.sum() + truth.sum(), 1))


def test_per_voxel_baseline_is_far_below_target(cases):
    """Logistic regression on 4 z-scored intensities: whole-tumour Dice <= 0.75 (target 0.90)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    train = [c for c in cases if c["split"] == "training"]
    held_out = [c for c in cases if c["split"] != "training"]
    xs, ys = [], []
    for c in train:
        x, y = _zscore_features(c["images"]), c["seg"].ravel() > 0
        keep = np.concatenate([np.flatnonzero(y), rng.choice(np.flatnonzero(~y), 20000, replace=False)])
        xs.append(x[keep])
        ys.append(y[keep])
    clf = LogisticRegression(max_iter=500).fit(np.concatenate(xs), np.concatenate(ys))
    # the baseline gets its best threshold on the training volumes
    thresholds = np.linspace(0.05, 0.99, 48)
    train_p = [(clf.predict_proba(_zscore_features(c["images"]))[:, 1], c["seg"].ravel() > 0) for c in train]
    best = thresholds[np.argmax([np.mean([_dice(p > t, y) for p, y in train_p]) for t in thresholds])]
    scores = [
        _dice(clf.predict_proba(_zscore_features(c["images"]))[:, 1] > best, c["seg"].ravel() > 0)
        for c in held_out
    ]
    assert np.mean(scores) <= 0.75, scores
    # the tumour is still visible per voxel (the baseline is weak, not hopeless)
    assert np.mean(scores) > 0.1, scores


@pytest.mark.parametrize(
    "options, match",
    [
        ({"contrast": 1}, "unknown option"),
        ({"shape": (96, 96)}, "option shape"),
        ({"spacing": (2, 0, 2)}, "spacing"),
    ],
)
def test_bad_options_raise_and_leave_nothing(tmp_path, options, match):
    with pytest.raises(ValueError, match=match):
        generate("mri_brain_multimodal", tmp_path / "bad", n=1, seed=0, **options)
    assert list(tmp_path.iterdir()) == []
