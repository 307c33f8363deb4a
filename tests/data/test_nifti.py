"""NIfTI loading with NaN/Inf detection, and atomic writing."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import LoadImage

from monai_ext.data.nifti import FiniteNiftiReader, check_finite, load_nifti, write_nifti

AFFINE = np.array([[-0.8, 0, 0, 10], [0, 0.7, 0, -5], [0, 0, 2.5, 3], [0, 0, 0, 1]])


@pytest.fixture
def bad_nifti(tmp_path):
    arr = np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)
    arr[1, 2, 0] = np.nan
    arr[3, 4, 2] = np.inf
    arr[0, 0, 1] = -np.inf
    path = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(arr, AFFINE), path)
    return path, arr


def test_round_trip_keeps_values_and_affine(tmp_path):
    arr = np.random.default_rng(0).normal(size=(6, 5, 4)).astype(np.float32)
    out = write_nifti(arr, AFFINE, tmp_path / "a" / "x.nii.gz")
    img = load_nifti(out)
    np.testing.assert_allclose(img.numpy(), arr)
    np.testing.assert_allclose(img.affine.numpy(), AFFINE, atol=1e-6)
    ints = write_nifti(np.full((3, 3, 2), -1000.0), AFFINE, tmp_path / "hu.nii")
    assert nib.load(ints).get_data_dtype() == np.int16
    assert [f for f in os.listdir(tmp_path / "a")] == ["x.nii.gz"]  # no temp file left behind


def test_nan_inf_raise_naming_file(bad_nifti):
    path, _ = bad_nifti
    with pytest.raises(ValueError, match=r"bad\.nii\.gz: 1 NaN and 2 Inf voxel\(s\).*nonfinite='replace'"):
        load_nifti(path)


def test_nan_inf_replace_option(bad_nifti):
    path, arr = bad_nifti
    img = LoadImage(reader=FiniteNiftiReader(nonfinite="replace", replace_value=-1.0), image_only=True)(
        str(path)
    )
    expected = np.where(np.isfinite(arr), arr, -1.0)
    np.testing.assert_array_equal(img.numpy(), expected)
    assert img.meta["nonfinite_replaced"]["nan"] == 1
    assert np.isnan(load_nifti(path, nonfinite="ignore").numpy()).sum() == 1


def test_bad_arguments(tmp_path, bad_nifti):
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        FiniteNiftiReader(nonfinite="drop")
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        load_nifti(tmp_path / "missing.nii.gz")
    with pytest.raises(ValueError, match=r"must end with \.nii"):
        write_nifti(np.zeros((2, 2, 2)), AFFINE, tmp_path / "x.img")
    with pytest.raises(ValueError, match="NaN"):
        write_nifti(bad_nifti[1], AFFINE, tmp_path / "y.nii.gz")
    assert not (tmp_path / "y.nii.gz").exists()
    assert check_finite(np.zeros(3), "z") == (0, 0)
