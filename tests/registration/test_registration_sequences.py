"""AlignSequencesd (register sequences, then stack) and RegisterToImaged (align to a template file)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from reg_helpers import dice, known_transform, remap, rigid_errors, synthetic_brain

from monai_ext.registration import (
    AlignSequencesd,
    RegisterToImaged,
    itk_transform_to_ras_matrix,
    resample_to_reference,
)

FAST = {"shrink_factors": (2, 1), "smoothing_sigmas": (1.0, 0.0), "iterations": 100, "sampling_fraction": 1.0}


@pytest.fixture(scope="module", autouse=True)
def _one_itk_thread():
    import itk

    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(1)


@pytest.fixture(scope="module")
def brain() -> dict[str, MetaTensor]:
    return synthetic_brain(shape=(48, 48, 32), spacing=(4.0, 4.0, 4.0), seed=3)


@pytest.fixture(scope="module")
def moved(brain):
    s = known_transform()
    return {
        "s_ras": itk_transform_to_ras_matrix(s),
        "flair": resample_to_reference(brain["flair"], brain["t1c"], s, "linear"),
        "t1_remap": resample_to_reference(remap(brain["t1"]), brain["t1"], s, "linear"),
        "seg": resample_to_reference(brain["seg"], brain["t1"], s, "nearest"),
    }


def test_align_sequences_registers_before_stacking(brain, moved):
    data = {"t1": brain["t1"], "t1c": brain["t1c"], "flair": moved["flair"], "label": brain["seg"]}
    out = AlignSequencesd(["t1", "t1c", "flair"], fixed_keys=["t1c"], label_keys=["label"], **FAST)(data)
    image = out["image"]
    assert image.shape == (3, 48, 48, 32) and image.dtype == torch.float32
    torch.testing.assert_close(image.affine, brain["t1c"].affine)
    torch.testing.assert_close(image[1], brain["t1c"][0].float())  # the reference is not resampled
    assert image.meta["registration_fixed"] == "t1c"
    matrices = image.meta["registration_ras"]
    np.testing.assert_allclose(matrices[1], np.eye(4))
    angle, shift = rigid_errors(moved["s_ras"], matrices[2], (0.0, 0.0, 0.0))
    assert angle < 1.5 and shift < 1.5, (angle, shift)  # 4 mm voxels: well under half a voxel
    # FLAIR is back in place; T1 (already aligned) stays in place
    brain_mask = brain["flair"][0] > 0.05 * float(brain["flair"].max())
    ideal = resample_to_reference(moved["flair"], brain["t1c"], known_transform().GetInverseTransform())

    def error(x):
        return float((x - brain["flair"][0]).abs()[brain_mask].mean())

    # twice interpolated, the ideal realignment keeps some error; the registration gets close to it
    before, after, best = error(moved["flair"][0]), error(image[2]), error(ideal[0])
    assert after < 1.2 * best and before > 1.4 * after, (before, after, best)
    assert torch.corrcoef(torch.stack([image[0].flatten(), brain["t1"][0].flatten().float()]))[0, 1] > 0.98
    assert out["label"] is brain["seg"]  # already on the reference grid: untouched
    assert out["flair"] is moved["flair"]  # inputs stay (SelectItemsd drops them in a bundle)


def test_missing_sequences_fallback_reference_and_label_grid(brain):
    t1, seg = brain["t1"], brain["seg"]
    # the label on another grid (cropped, 2 voxels shifted): resampled onto the reference grid in world space
    crop_affine = seg.affine.clone()
    crop_affine[:3, 3] += seg.affine[:3, :3] @ torch.tensor([2.0, 2.0, 0.0], dtype=torch.float64)
    cropped = MetaTensor(seg[:, 2:, 2:, :].clone(), affine=crop_affine)
    align = AlignSequencesd(["t1", "t1c", "flair"], fixed_keys=["t1c"], label_keys="label", padding_value=0.0)
    out = align({"t1": t1, "t1c": None, "label": cropped})  # T1c null, FLAIR absent: T1 is the reference
    image = out["image"]
    assert image.meta["registration_fixed"] == "t1" and image.shape == (3, 48, 48, 32)
    assert float(image[1:].abs().max()) == 0.0
    assert np.isnan(image.meta["registration_ras"][1:]).all()
    assert out["label"].shape == seg.shape and dice(out["label"][:, 2:, 2:], seg[:, 2:, 2:]) == 1.0
    torch.testing.assert_close(out["label"].affine, t1.affine)

    with pytest.raises(KeyError, match=r"sequence\(s\) \['flair'\] missing"):
        AlignSequencesd(["t1", "flair"], allow_missing_keys=False)({"t1": t1})
    with pytest.raises(KeyError, match="none of the sequences"):
        align({"label": seg})
    with pytest.raises(ValueError, match=r"fixed_keys \['t1x'\] are not in keys"):
        AlignSequencesd(["t1", "t1c"], fixed_keys="t1x")
    with pytest.raises(ValueError, match="transform_type"):
        AlignSequencesd(["t1", "t1c"], transform_type="similarity")


def test_register_to_image_file_with_labels_padding_and_saved_reference(brain, moved, tmp_path):
    from monai_ext.registration.cli import write_nifti_atomic

    template = tmp_path / "template.nii.gz"
    write_nifti_atomic(brain["t1"], str(template))
    reg = RegisterToImaged(
        "image", reference=str(template), label_keys={"seg": "image"}, padding_value=-5.0, **FAST
    )
    # across contrasts: a non-monotone remap of T1, moved by the known transform
    out = reg({"image": moved["t1_remap"], "seg": moved["seg"], "id": "case"})
    assert out["id"] == "case" and out["image"].meta["registration_fixed"] == "template.nii.gz"
    torch.testing.assert_close(out["image"].affine, brain["t1"].affine)
    before, after = dice(moved["seg"], brain["seg"]), dice(out["seg"], brain["seg"])
    assert out["seg"].shape == brain["seg"].shape and after > 0.93 and after > before + 0.05, (before, after)
    assert float(out["image"].min()) == -5.0  # corners with no moving data get the padding value

    saved = reg.save_reference(tmp_path / "models" / "ref.nii.gz")
    nii = nib.load(str(saved))
    np.testing.assert_allclose(nii.affine, brain["t1"].affine.numpy(), atol=1e-5)
    np.testing.assert_allclose(nii.get_fdata(), brain["t1"][0].numpy(), atol=1e-5)
    assert not list((tmp_path / "models").glob(".*"))  # no temporary file left

    with pytest.raises(ValueError, match="`reference` must name"):
        RegisterToImaged("image", reference="")
    lazy = RegisterToImaged("image", reference=str(tmp_path / "nope.nii.gz"))  # read on first use
    with pytest.raises(FileNotFoundError, match="registration reference .*nope.nii.gz"):
        lazy({"image": brain["t1"]})
    with pytest.raises(ValueError, match="label_keys"):
        RegisterToImaged("image", reference=str(template), label_keys={"seg": "ct"})
