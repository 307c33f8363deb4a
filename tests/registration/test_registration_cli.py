"""``monai-ext register``: outputs on the fixed grid, one-line errors, nothing written on failure."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest
from reg_helpers import dice, known_transform, synthetic_brain

from monai_ext.cli import main
from monai_ext.registration import resample_to_reference


def _save(img, path) -> str:
    arr = img.numpy()[0]
    nib.save(nib.Nifti1Image(arr, img.affine.numpy()), str(path))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import itk

    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(1)
    d = synthetic_brain((48, 48, 40), (4.0, 4.0, 4.0))
    s = known_transform()
    root = tmp_path_factory.mktemp("reg_cli")
    far = d["t2"].clone()
    far.affine[1, 3] += 2000.0
    return {
        "fixed": _save(d["t1"], root / "t1.nii.gz"),
        "moving": _save(resample_to_reference(d["t2"], d["t1"], s, "linear"), root / "t2.nii.gz"),
        "labels": _save(resample_to_reference(d["seg"], d["t1"], s, "nearest"), root / "seg.nii.gz"),
        "far": _save(far, root / "far.nii.gz"),
        "slice": _save(d["t1"][:, :, :, 20], root / "slice.nii.gz"),
        "seg": d["seg"],
        "affine": d["t1"].affine.numpy(),
    }


FAST = ["--shrink", "2,1", "--sigmas", "1,0", "--iterations", "60"]


def test_register_writes_aligned_outputs(files, tmp_path, capsys):
    out = tmp_path / "t2_on_t1.nii.gz"
    rc = main(["register", files["fixed"], files["moving"], str(out), "--labels", files["labels"], *FAST])
    assert rc == 0, capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["t2_on_t1.nii.gz", "t2_on_t1_labels.nii.gz", "t2_on_t1_transform.tfm", "t2_on_t1_registration.json"]
    )
    img, lab = nib.load(str(out)), nib.load(str(tmp_path / "t2_on_t1_labels.nii.gz"))
    np.testing.assert_allclose(img.affine, files["affine"], atol=1e-5)
    np.testing.assert_allclose(lab.affine, files["affine"], atol=1e-5)
    seg = np.asarray(lab.dataobj)
    assert seg.dtype == np.uint8 and set(np.unique(seg)) <= {0, 1, 2, 3}
    assert dice(seg, files["seg"].numpy()[0]) > 0.8
    report = json.loads((tmp_path / "t2_on_t1_registration.json").read_text())
    assert (
        report["metric_final"] < report["metric_initial"] and len(report["matrix_ras_fixed_to_moving"]) == 4
    )
    # existing outputs are not replaced silently
    assert main(["register", files["fixed"], files["moving"], str(out), *FAST]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(
    "moving, message",
    [("far", "do not overlap"), ("slice", "2D moving image 'slice.nii.gz'"), ("missing", "does not exist")],
)
def test_register_bad_input_writes_nothing(files, tmp_path, capsys, moving, message):
    path = files.get(moving, str(tmp_path / "missing.nii.gz"))
    out = tmp_path / "out" / "x.nii.gz"
    out.parent.mkdir()
    assert main(["register", files["fixed"], path, str(out), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert os.listdir(out.parent) == []


def test_register_help_and_bad_type(capsys):
    with pytest.raises(SystemExit) as e:
        main(["register", "--help"])
    assert e.value.code == 0 and "--labels" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["register", "a.nii", "b.nii", "c.nii", "--type", "elastic"])
    assert e.value.code == 2
