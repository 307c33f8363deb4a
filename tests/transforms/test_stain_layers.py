"""Array, dictionary and batch layers of the histology transforms: MONAI composition, metadata,
seeded repeatability, per-sample probability, replay, devices and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, ScaleIntensityd
from skimage import data

from monai_ext.transforms import array as A
from monai_ext.transforms import batch as B
from monai_ext.transforms import dictionary as D
from monai_ext.transforms.functional import stain as F


@pytest.fixture(scope="module")
def tiles() -> torch.Tensor:
    ihc = torch.from_numpy(data.immunohistochemistry()).permute(2, 0, 1).contiguous()
    return torch.stack([ihc[:, i : i + 64, j : j + 64] for i in (0, 128, 256, 384) for j in (0, 200)])


def test_names_do_not_clash_with_monai():
    import monai.apps.pathology.transforms as path
    import monai.transforms as mt

    for layer in (A, D, B):
        for name in layer.stain.__all__:
            assert not hasattr(mt, name) and not hasattr(path, name), name


def test_array_macenko_keeps_metadata_and_reports_passthrough(tiles):
    norm = A.MacenkoStainNormalize()
    img = MetaTensor(tiles[0], meta={"filename_or_obj": "tile0.png"})
    out = norm(img)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "tile0.png"
    assert torch.equal(out.as_tensor(), F.macenko_normalize(tiles[0])[0]) and not norm.passthrough
    white = np.full((3, 32, 32), 255, np.uint8)
    res = norm(white)
    assert isinstance(res, np.ndarray) and np.array_equal(res, white) and norm.passthrough
    norm.fit_slide(tiles)
    assert torch.equal(norm(tiles[1]), F.macenko_normalize(tiles[1], fit=norm.slide_fit)[0])
    with pytest.raises(ValueError, match="fit_target.*too little tissue"):
        A.MacenkoStainNormalize().fit_target(white)
    with pytest.raises(ValueError, match=r"MacenkoStainNormalize.*\[0, 1\]"):
        norm(tiles[0].float())


def test_dictionary_layer_composes_with_monai(tiles):
    t = Compose(
        [
            D.MacenkoStainNormalized("image"),
            D.HistoTissueMaskd("image"),
            ScaleIntensityd("image", minv=0.0, maxv=1.0),
            D.RandHEDJitterd("image", prob=1.0),
            D.RandDihedral2Dd(["image", "label"], prob=1.0),
        ]
    ).set_random_state(0)
    label = MetaTensor(torch.arange(64 * 64, dtype=torch.float32).view(1, 64, 64))
    out = t({"image": tiles[0], "label": label})
    assert out["image"].shape == (3, 64, 64) and out["image_tissue"].dtype == torch.bool
    assert not bool(out["image_stain_passthrough"])
    k = t.transforms[-1].t.k
    assert torch.equal(out["label"].as_tensor(), F.dihedral_2d(label.as_tensor(), k))
    inv = t.transforms[-1].inverse({"image": out["image"], "label": out["label"]})
    assert torch.equal(inv["label"].as_tensor(), label.as_tensor())


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (A.RandHEDJitter, {}),
        (A.RandHSVJitter, {}),
        (A.RandRGBBrightnessContrast, {}),
        (A.RandRGBGaussianBlur, {}),
        (A.RandDihedral2D, {}),
    ],
)
def test_array_random_transforms_repeat_with_seed(tiles, cls, kwargs):
    x = tiles[0].float() / 255
    a = cls(prob=1.0, **kwargs).set_random_state(3)
    b = cls(prob=1.0, **kwargs).set_random_state(3)
    ya, yb = a(x), b(x)
    assert torch.equal(ya, yb)
    if cls is not A.RandDihedral2D:  # (a dihedral draw may repeat an element)
        assert not torch.equal(ya, a(x))
    assert torch.equal(cls(prob=0.0, **kwargs)(x), x)


@pytest.mark.parametrize("shape", [(5, 7), (6, 6)])
def test_array_dihedral_affine_matches_monai_rotate90_flip_and_inverts(shape):
    """Element k = MONAI Rotate90(k % 4, (0, 1)) then Flip(1) if k >= 4: same pixels, same affine;
    inverse restores both and pops the record."""
    from monai.transforms import Flip, Rotate90

    aff = torch.tensor(
        [[0.7, 0.1, 0.0, 10.0], [-0.2, 0.9, 0.0, -5.0], [0.0, 0.0, 2.0, 3.0], [0.0, 0.0, 0.0, 1.0]],
        dtype=torch.float64,
    )
    x = MetaTensor(torch.arange(2 * shape[0] * shape[1], dtype=torch.float32).view(2, *shape), affine=aff)
    for k in range(8):
        ref = Rotate90(k % 4, (0, 1))(x)
        ref = Flip(1)(ref) if k >= 4 else ref
        aug = A.RandDihedral2D(prob=1.0)
        aug._do_transform, aug.k = True, k
        y = aug(x, randomize=False)
        assert torch.equal(y.as_tensor(), ref.as_tensor()), k
        torch.testing.assert_close(y.affine, ref.affine, atol=1e-12, rtol=0)
        assert y.applied_operations[-1]["class"] == "RandDihedral2D"
        inv = aug.inverse(y)
        assert torch.equal(inv.as_tensor(), x.as_tensor()) and not inv.applied_operations
        torch.testing.assert_close(inv.affine, aff, atol=1e-12, rtol=0)
    skipped = A.RandDihedral2D(prob=0.0)(x)
    assert torch.equal(skipped.affine, aff) and torch.equal(skipped.as_tensor(), x.as_tensor())


def test_dictionary_dihedral_inverts_through_compose():
    t = Compose([D.RandDihedral2Dd(["image", "label"], prob=1.0)]).set_random_state(5)
    aff = torch.diag(torch.tensor([0.5, 0.25, 1.0, 1.0], dtype=torch.float64))
    data = {
        "image": MetaTensor(torch.rand(3, 6, 6), affine=aff),
        "label": MetaTensor(torch.arange(36.0).view(1, 6, 6), affine=aff),
    }
    out = t(data)
    assert t.transforms[0].t.k != 0 and not torch.equal(out["label"].affine, aff)
    assert torch.equal(out["image"].affine, out["label"].affine)
    back = t.inverse(out)
    for key in ("image", "label"):
        assert torch.equal(back[key].as_tensor(), data[key].as_tensor())
        torch.testing.assert_close(back[key].affine, aff, atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------- batch layer
AUGS = [
    (B.BatchHEDJitter, {}),
    (B.BatchHSVJitter, {}),
    (B.BatchRGBBrightnessContrast, {}),
    (B.BatchRGBGaussianBlur, {}),
]


@pytest.mark.parametrize("cls, kwargs", AUGS)
def test_batch_seeded_replay_and_per_sample_prob(tiles, device, cls, kwargs):
    x = tiles.to(device)
    lab = torch.arange(x.shape[0], device=device).view(-1, 1, 1, 1).expand(-1, 1, 64, 64)
    a = cls(prob=0.5, seed=0, **kwargs)
    res = a(x, lab)
    y1, params = res.image, res.params
    assert isinstance(res, B.BatchAugResult) and res.label is lab  # intensity only: label passes through
    assert all(v.shape[0] == x.shape[0] and v.device == x.device for v in params.values())
    assert torch.equal(cls(prob=0.5, seed=0, **kwargs)(x).image, y1)  # seeded: repeats exactly
    assert torch.equal(a(x, params=params).image, y1)  # replay
    skip = ~params["apply"]
    assert skip.any() and params["apply"].any()
    assert torch.equal(y1[skip], x[skip])  # not drawn: bit-identical
    assert not torch.equal(y1[~skip], x[~skip])
    assert torch.equal(cls(prob=0.0, seed=1, **kwargs)(x).image, x)
    # batched == per sample with the same parameters
    for i in range(x.shape[0]):
        one = {k: v[i : i + 1] for k, v in params.items()}
        assert torch.equal(a(x[i : i + 1], params=one).image[0], y1[i])


def test_batch_dihedral_keeps_image_and_label_aligned(device):
    img = torch.arange(4 * 36, dtype=torch.float32, device=device).view(4, 1, 6, 6).repeat(1, 3, 1, 1)
    lab = img[:, :1].long()
    aug = B.BatchDihedral2D(prob=1.0, seed=0)
    out = aug(img, lab)
    oi, ol = out.image, out.label
    assert torch.equal(oi[:, :1].long(), ol) and ol.dtype == torch.long
    k = out.params["k"]
    for i in range(4):
        assert torch.equal(oi[i], F.dihedral_2d(img[i], int(k[i])))
    assert torch.equal(aug(img, lab, params=out.params).label, ol)  # replay
    half = B.BatchDihedral2D(prob=0.5, seed=2)(img, lab)
    skip = ~half.params["apply"]
    assert skip.any() and half.params["apply"].any()
    assert torch.equal(half.image[skip], img[skip]) and torch.equal(half.label[skip], lab[skip])
    assert torch.equal(half.image[:, :1].long(), half.label)
    with pytest.raises(ValueError, match="BatchDihedral2D: `label`"):
        aug(img, lab[:, :, :5])
    with pytest.raises(ValueError, match=r"BatchDihedral2D: `image` must be square"):
        aug(img[:, :, :5])


def test_batch_stain_chain_replays_and_validates_rgb_once():
    x = torch.rand(4, 3, 16, 16)
    lab = torch.randint(0, 3, (4, 1, 16, 16))
    augs = [B.BatchHEDJitter(prob=1.0, seed=0), B.BatchDihedral2D(prob=1.0, seed=0)]
    out = B.BatchAugChain(augs)(x, lab)
    ref_hed = B.BatchHEDJitter(prob=1.0, seed=0)(x)
    ref = B.BatchDihedral2D(prob=1.0, seed=0)(ref_hed.image, lab)
    assert torch.equal(out.image, ref.image) and torch.equal(out.label, ref.label)
    assert torch.equal(B.BatchAugChain(augs)(x, lab, params=out.params).image, out.image)
    with pytest.raises(ValueError, match=r"BatchHEDJitter: `image`.*\[0, 1\]"):
        B.BatchAugChain(augs)(x * 255)


def test_batch_macenko_and_reinhard(tiles, device):
    x = torch.cat([tiles, torch.full((1, 3, 64, 64), 255, dtype=torch.uint8)]).to(device)
    norm = B.BatchMacenkoNormalize().to(device)
    out, pt = norm(x)
    assert pt.tolist() == [False] * len(tiles) + [True] and torch.equal(out[-1], x[-1])
    assert torch.equal(out.cpu(), F.macenko_normalize(x.cpu())[0])
    norm.fit_target(tiles[3].to(device))
    norm.fit_slide(tiles.to(device))
    out2, pt2 = norm(x)
    assert not pt2.any() and not torch.equal(out2, out)
    rein = B.BatchReinhardNormalize.from_target(tiles[0].to(device))
    r, rpt = rein(x)
    assert rpt[-1] and torch.equal(r[-1], x[-1]) and torch.isfinite(r.float()).all()


def test_batch_bad_input():
    with pytest.raises(ValueError, match="BatchHEDJitter: `image` batch is empty"):
        B.BatchHEDJitter()(torch.zeros(0, 3, 8, 8))
    with pytest.raises(ValueError, match="BatchHSVJitter: `image` has 1 channels, expected 3"):
        B.BatchHSVJitter()(torch.zeros(2, 1, 8, 8))
    with pytest.raises(TypeError, match="BatchRGBBrightnessContrast: `image` must be uint8"):
        B.BatchRGBBrightnessContrast()(torch.zeros(2, 3, 8, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"BatchRGBGaussianBlur: `image` must be \(B, C, H, W\)"):
        B.BatchRGBGaussianBlur()(torch.zeros(2, 3, 4, 8, 8))
    with pytest.raises(ValueError, match="BatchHSVJitter: `label` shape"):
        B.BatchHSVJitter()(torch.zeros(2, 3, 8, 8), torch.zeros(2, 1, 4, 8))
    with pytest.raises(ValueError, match=r"BatchRGBGaussianBlur: `sigma` must be a \(min, max\) range"):
        B.BatchRGBGaussianBlur(sigma=(1.0, 0.5))
    with pytest.raises(ValueError, match="BatchHEDJitter: `sigma` must be >= 0"):
        B.BatchHEDJitter(sigma=-0.1)
    with pytest.raises(ValueError, match="BatchHEDJitter: `params` are for 2 samples"):
        B.BatchHEDJitter(seed=0)(
            torch.rand(3, 3, 8, 8), params=B.BatchHEDJitter(seed=0)(torch.rand(2, 3, 8, 8)).params
        )
    with pytest.raises(ValueError, match=r"BatchMacenkoNormalize.*\[0, 1\]"):
        B.BatchMacenkoNormalize()(torch.full((2, 3, 8, 8), 128.0))
    with pytest.raises(ValueError, match="NaN"):
        B.BatchHEDJitter()(torch.full((2, 3, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="prob"):
        B.BatchHEDJitter(prob=1.5)
