"""Radiology spatial transforms: MONAI agreement, inverse, image/label consistency, batching, crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Affine, AffineGrid

from monai_ext.transforms import functional as fn
from monai_ext.transforms.array import AffineWarp, RandAffineWarp, RandLabelBalancedCrop
from monai_ext.transforms.batch import (
    BatchLabelBalancedCrop,
    BatchRandAffine,
    BatchRandElastic,
    BatchRandFlip,
    BatchRandRot90,
)
from monai_ext.transforms.dictionary import RandAffineWarpd, RandLabelBalancedCropd


@pytest.fixture(scope="module")
def ct_hu() -> torch.Tensor:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return torch.from_numpy(hu)[None]


PARAMS = {
    2: dict(rotate=[0.3], shear=[0.1, -0.05], translate=[4.0, -3.0], scale=[1.1, 0.9]),
    3: dict(
        rotate=[0.3, -0.2, 0.1],
        shear=[0.1, 0, 0.05, 0, -0.1, 0],
        translate=[2.0, -1.0, 1.5],
        scale=[1.1, 0.9, 1.0],
    ),
}


@pytest.mark.parametrize("d", [2, 3])
def test_affine_matrix_matches_monai_affine_grid(d):
    p = PARAMS[d]
    _, ref = AffineGrid(
        rotate_params=p["rotate"],
        shear_params=p["shear"],
        translate_params=p["translate"],
        scale_params=p["scale"],
    )(spatial_size=[8] * d)
    ours = fn.affine_matrix(d, **{k: torch.tensor([v]) for k, v in p.items()})[0]
    torch.testing.assert_close(ours, torch.as_tensor(ref).float(), atol=1e-6, rtol=0)


def test_affine_resample_matches_monai_on_ct(ct_hu, device):
    mat = fn.affine_matrix(2, **{k: torch.tensor([v]) for k, v in PARAMS[2].items()})[0]
    ref = Affine(affine=mat.numpy(), image_only=True, padding_mode="zeros")(ct_hu)
    ours = fn.affine_resample(ct_hu.to(device), mat.to(device))
    # HU values up to ~2200: float32 grid arithmetic differs by < 0.05 HU
    torch.testing.assert_close(ours.cpu(), torch.as_tensor(ref), atol=0.05, rtol=0)
    # the array layer updates the MetaTensor affine exactly as MONAI's Affine does, and inverts
    img = MetaTensor(
        ct_hu.clone(), affine=torch.diag(torch.tensor([0.66, 0.66, 5.0, 1.0], dtype=torch.float64))
    )
    ref_m = Affine(affine=mat.numpy(), image_only=True, padding_mode="zeros")(img.clone())
    warp = AffineWarp(mat.numpy())
    out = warp(img)
    torch.testing.assert_close(out.affine, ref_m.affine)
    assert out.applied_operations[-1]["class"] == "AffineWarp"
    back = warp.inverse(out)
    torch.testing.assert_close(back.affine, img.affine)
    assert back.applied_operations == []
    inner = (slice(None), slice(40, 88), slice(40, 88))
    assert float((back[inner] - img[inner]).abs().mean()) < 25.0  # two bilinear resamples of CT


def test_rand_affine_dict_image_label_and_inverse():
    img = MetaTensor(torch.rand(1, 12, 12, 12))
    lab = MetaTensor((img > 0.5).float())
    t = RandAffineWarpd(
        ["image", "label"], prob=1.0, rotate_range=0.4, scale_range=0.2, mode=("bilinear", "nearest")
    )
    out = t.set_random_state(2)({"image": img, "label": lab})
    assert set(out["label"].unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(out["image"].affine, img.affine)
    back = t.inverse(out)
    torch.testing.assert_close(back["image"].affine, img.affine)
    assert back["label"].applied_operations == []
    skipped = RandAffineWarp(prob=0.0)(img)
    assert torch.equal(skipped, img) and RandAffineWarp(prob=0.0).inverse is not None


@pytest.mark.parametrize(
    "make",
    [
        lambda: BatchRandAffine(
            prob=0.7, rotate_range=0.5, shear_range=0.1, translate_range=2, scale_range=0.2, seed=1
        ),
        lambda: BatchRandElastic(prob=0.7, magnitude=2.0, control_points=4, seed=1),
        lambda: BatchRandFlip(prob=0.7, seed=1),
    ],
)
@pytest.mark.parametrize("shape", [(4, 2, 16, 14), (3, 1, 10, 12, 9)])
def test_batch_spatial_consistency_replay_and_per_sample(make, shape, device):
    x = torch.rand(shape, device=device)
    label = (x[:, :1] > 0.6).long() + (x[:, :1] > 0.85).long()

    def nearest():
        aug = make()
        if hasattr(aug, "mode"):
            aug.mode = "nearest"  # so the image can be re-thresholded into the label voxel by voxel
        return aug

    aug = nearest()
    out = aug(x, label)
    assert out.label.dtype == torch.long and set(out.label.unique().tolist()) <= {0, 1, 2}
    # same geometry: nearest-resampled image and label agree voxel by voxel
    relabel = (out.image[:, :1] > 0.6).long() + (out.image[:, :1] > 0.85).long()
    assert torch.equal(relabel, out.label)
    assert torch.equal(nearest()(x, label).image, out.image)  # seeded repeat
    again = aug(x, label, params=out.params)
    assert torch.equal(again.image, out.image) and torch.equal(again.label, out.label)
    keep = ~out.params["apply"]
    assert torch.equal(out.image[keep], x[keep])
    for i in range(shape[0]):
        p = {k: v[i : i + 1] for k, v in out.params.items()}
        torch.testing.assert_close(aug(x[i : i + 1], params=p).image, out.image[i : i + 1], atol=1e-5, rtol=0)


def test_batch_affine_equals_monai_affine_per_sample():
    x = torch.rand(3, 1, 10, 11, 12)
    out = BatchRandAffine(prob=1.0, rotate_range=0.3, scale_range=0.1, translate_range=1.0, seed=4)(x)
    for i in range(3):
        ref = Affine(affine=out.params["matrix"][i].numpy(), image_only=True, padding_mode="zeros")(x[i])
        torch.testing.assert_close(out.image[i], torch.as_tensor(ref), atol=1e-5, rtol=0)


def test_half_precision_affine_keeps_dtype(device):
    x = torch.rand(2, 1, 8, 8, 8, device=device, dtype=torch.bfloat16)
    out = BatchRandAffine(prob=1.0, rotate_range=0.2, seed=0)(x)
    assert out.image.dtype == torch.bfloat16


def test_crop_patches_and_balanced_centres(device):
    x = torch.arange(2 * 20 * 18, dtype=torch.float32, device=device).reshape(2, 1, 20, 18)
    starts = torch.tensor([[[1, 2], [5, 0]], [[0, 0], [12, 10]]], device=device)
    crops = fn.crop_patches(x, starts, (8, 8))
    assert torch.equal(crops[3], x[1, :, 12:20, 10:18])
    lab = torch.zeros(2, 1, 20, 18, dtype=torch.long, device=device)
    lab[0, 0, 2, 3] = 1  # one positive voxel near a corner
    lab[1, 0, 15:18, 10:13] = 2
    aug = BatchLabelBalancedCrop((6, 6), num_samples=4, ratios=(1.0, 0.0), seed=0)
    out = aug(x, lab)
    assert out.image.shape == (8, 1, 6, 6) and out.label.shape == (8, 1, 6, 6)
    assert bool((out.label.flatten(1) > 0).any(1).all())  # every crop holds a positive voxel
    # per-class: class 2 only exists in sample 1; sample 0 falls back to the classes it has
    aug_c = BatchLabelBalancedCrop((6, 6), num_samples=3, ratios=(0.0, 0.0, 1.0), seed=0)
    oc = aug_c(x, lab)
    assert bool((oc.label[3:] == 2).flatten(1).any(1).all())
    assert torch.equal(aug_c(x, lab, params=oc.params).image, oc.image)
    big = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="spatial_size"):
        fn.sample_crop_starts(big, (5, 5), 1)


def test_array_and_dict_crops_invert():
    img = MetaTensor(torch.rand(1, 16, 16, 16))
    lab = MetaTensor(torch.zeros(1, 16, 16, 16))
    lab[0, 10:13, 2:5, 7:9] = 1
    crops = RandLabelBalancedCrop((6, 6, 6), num_samples=2, ratios=(1.0, 0.0)).set_random_state(0)(img, lab)
    assert all(c.shape == (1, 6, 6, 6) for c in crops)
    t = RandLabelBalancedCropd(["image", "label"], "label", (6, 6, 6), num_samples=3).set_random_state(0)
    out = t({"image": img, "label": lab})
    assert len(out) == 3
    assert torch.equal(out[0]["label"] > 0, (out[0]["label"] > 0))
    back = t.inverse(out[1])
    assert back["image"].shape == (1, 16, 16, 16)
    nz = back["image"] != 0
    assert torch.equal(back["image"][nz], img[nz])


def test_bad_input_errors():
    with pytest.raises(ValueError, match="BatchRandAffine: `label` shape"):
        BatchRandAffine()(torch.rand(2, 1, 8, 8), torch.zeros(2, 1, 8, 9))
    with pytest.raises(ValueError, match="BatchRandAffine: `label` shape"):
        BatchRandAffine()(torch.rand(2, 1, 8, 8), torch.zeros(3, 1, 8, 8))
    with pytest.raises(ValueError, match="BatchRandElastic: `image` batch is empty"):
        BatchRandElastic()(torch.rand(0, 1, 8, 8, 8))
    with pytest.raises(ValueError, match=r"BatchRandAffine: `image` must be \(B, C, H, W\)"):
        BatchRandAffine()(torch.rand(8, 8))
    nan = torch.rand(1, 1, 4, 4, 4)
    nan[..., 0] = float("nan")
    with pytest.raises(ValueError, match="BatchRandFlip: `image` contains NaN"):
        BatchRandFlip()(nan)
    with pytest.raises(ValueError, match="BatchLabelBalancedCrop: `label` is required"):
        BatchLabelBalancedCrop((4, 4))(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="BatchRandAffine: `rotate_range` needs 1 or 3 entries"):
        BatchRandAffine(rotate_range=[0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="AffineWarp: `affine` must be 3x3"):
        AffineWarp(np.eye(5))
    with pytest.raises(ValueError, match="BatchRandAffine: `params` are for 2 samples"):
        aug = BatchRandAffine(prob=1.0, rotate_range=0.1)
        aug(torch.rand(3, 1, 4, 4), params=aug(torch.rand(2, 1, 4, 4)).params)


@pytest.mark.filterwarnings("ignore:Since version 1.3.0")
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("shape", [(7, 9), (5, 6, 7), (1, 4, 3)])
def test_affine_grid_slab_equals_torch_affine_grid(shape, align_corners):
    d = len(shape)
    theta = torch.eye(d, d + 1) + 0.2 * torch.randn(3, d, d + 1, generator=torch.Generator().manual_seed(d))
    ref = torch.nn.functional.affine_grid(theta, [3, 1, *shape], align_corners=align_corners)
    full = fn.affine_grid_slab(theta, shape, 0, shape[0], align_corners)
    torch.testing.assert_close(full, ref, atol=1e-6, rtol=0)
    if shape[0] > 2:
        torch.testing.assert_close(fn.affine_grid_slab(theta, shape, 1, 3, align_corners), ref[:, 1:3])


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_affine_resample_blocks_equal_one_call(monkeypatch, mode):
    # the CPU path resamples a few samples and rows at a time; force small blocks and compare
    import monai_ext.transforms.functional.spatial as fs

    x = torch.rand(3, 2, 12, 10, 11)
    mat = fn.affine_matrix(3, **{k: torch.tensor([v] * 3) for k, v in PARAMS[3].items()})
    mat[1, :3, :3] *= 0.8
    one = fs.affine_resample(x, mat, mode=mode)
    theta = fs.affine_theta(mat, x.shape[2:], x.shape[2:])
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    ref = torch.nn.functional.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)
    torch.testing.assert_close(one, ref, atol=1e-5, rtol=0)
    monkeypatch.setattr(fs, "_resample_blocks", lambda b, shape, device: (2, 5))
    torch.testing.assert_close(fs.affine_resample(x, mat, mode=mode), one, atol=1e-6, rtol=0)


def test_batch_affine_cpu_resamples_only_drawn_samples():
    x, lab = torch.rand(6, 1, 10, 10, 10), torch.randint(0, 3, (6, 1, 10, 10, 10))
    aug = BatchRandAffine(prob=1.0, rotate_range=0.4, seed=3)
    drawn = torch.tensor([True, False, True, False, False, True])
    out = aug(x, lab, params={**aug(x).params, "apply": drawn})
    assert torch.equal(out.image[~drawn], x[~drawn]) and torch.equal(out.label[~drawn], lab[~drawn])
    mats = out.params["matrix"][drawn]
    torch.testing.assert_close(out.image[drawn], fn.affine_resample(x[drawn], mats), atol=1e-6, rtol=0)
    assert torch.equal(out.label[drawn], fn.affine_resample(lab[drawn], mats, mode="nearest"))


def test_nth_true_matches_nonzero_across_blocks():
    import monai_ext.transforms.functional.spatial as fs

    g = torch.Generator().manual_seed(0)
    n = 3 * fs._RANK_BLOCK + 123  # a partial last block
    mask = torch.rand(3, n, generator=g) < torch.tensor([[0.001], [0.5], [0.0]])
    mask[2, -1] = True  # one True at the very end
    counts = fs._block_counts(mask)
    for i in range(3):
        where = mask[i].nonzero().flatten()
        assert int(counts[i, -1]) == where.numel()
        ranks = torch.tensor([1, (where.numel() + 1) // 2, where.numel()], dtype=torch.int32)
        got = fs._nth_true(mask[i : i + 1], counts[i : i + 1], ranks[None])
        assert got[0].tolist() == where[ranks.long() - 1].tolist()


def test_flip_and_crop_cpu_paths_match_reference():
    x = torch.arange(2 * 3 * 4 * 5 * 6, dtype=torch.float32).reshape(2, 3, 4, 5, 6)
    flags = torch.tensor([[True, False, True], [False, False, False]])
    out = fn.flip_per_sample(x, flags)
    assert torch.equal(out[0], x[0].flip(1, 3)) and torch.equal(out[1], x[1])
    starts = torch.tensor([[[0, 1, 2], [1, 0, 0]], [[2, 2, 3], [0, 0, 0]]])
    crops = fn.crop_patches(x, starts, (2, 3, 3))
    assert crops.shape == (4, 3, 2, 3, 3)
    assert torch.equal(crops[1], x[0, :, 1:3, 0:3, 0:3]) and torch.equal(crops[2], x[1, :, 2:4, 2:5, 3:6])


def test_batch_rot90_matches_monai_rotate90_per_sample():
    from monai.transforms import Rotate90

    x = torch.rand(5, 2, 6, 6, 4)
    lab = torch.randint(0, 3, (5, 1, 6, 6, 4))
    aug = BatchRandRot90(prob=0.7, max_k=3, spatial_axes=(0, 1), seed=1)
    out = aug(x, lab)
    k = torch.where(out.params["apply"], out.params["k"], 0)
    assert bool((k > 0).any()) and bool((k == 0).any())
    for i in range(5):
        rot = Rotate90(k=int(k[i]), spatial_axes=(0, 1))
        torch.testing.assert_close(out.image[i], torch.as_tensor(rot(x[i])), atol=0, rtol=0)
        assert torch.equal(out.label[i], torch.as_tensor(rot(lab[i])))
    assert torch.equal(aug(x, lab, params=out.params).image, out.image)
    with pytest.raises(ValueError, match="equal sizes"):
        aug(torch.rand(2, 1, 6, 5, 4))
    with pytest.raises(ValueError, match="max_k"):
        BatchRandRot90(max_k=4)
