"""Registration on ITK: known rigid transforms recovered across contrasts; labels, affines, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from reg_helpers import (
    anatomical,
    dice,
    known_transform,
    remap,
    rigid_errors,
    synthetic_brain,
)

from monai_ext.registration import (
    RegisterToReferenced,
    RegistrationError,
    RegistrationWarning,
    itk_transform_to_ras_matrix,
    register_images,
    resample_to_reference,
    to_itk_image,
)

FAST = {"shrink_factors": (4, 2, 1), "smoothing_sigmas": (2.0, 1.0, 0.0), "iterations": 100}


@pytest.fixture(scope="module", autouse=True)
def _one_itk_thread():
    import itk

    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(1)


@pytest.fixture(scope="module")
def brain() -> dict[str, MetaTensor]:
    return synthetic_brain()


@pytest.fixture(scope="module")
def moved(brain):
    """The known transform S applied to FLAIR and to a non-monotone remap of T1 (+ the labels)."""
    s = known_transform()
    return {
        "s_ras": itk_transform_to_ras_matrix(s),
        "flair": resample_to_reference(brain["flair"], brain["t1"], s, "linear"),
        "t1_remap": resample_to_reference(remap(brain["t1"]), brain["t1"], s, "linear"),
        "seg": resample_to_reference(brain["seg"], brain["t1"], s, "nearest"),
    }


def test_itk_conversion_keeps_ras_geometry():
    aff = torch.tensor([[0.0, 2, 0, 10], [-3, 0, 0, 20], [0, 0, 4, 30], [0, 0, 0, 1]], dtype=torch.float64)
    x = torch.zeros(1, 5, 6, 7)
    x[0, 1, 2, 3] = 1
    img = to_itk_image(MetaTensor(x, affine=aff))
    lps = np.asarray(img.TransformIndexToPhysicalPoint([1, 2, 3]))
    ras = (aff.numpy() @ np.array([1, 2, 3, 1.0]))[:3]
    np.testing.assert_allclose(lps, ras * np.array([-1, -1, 1]))
    back = resample_to_reference(MetaTensor(x, affine=aff), MetaTensor(x, affine=aff), known_identity())
    assert torch.equal(back.affine, aff) and float(back[0, 1, 2, 3]) == pytest.approx(1.0)


def known_identity():
    import itk

    return itk.IdentityTransform[itk.D, 3].New()


@pytest.mark.parametrize("moving_key", ["t1_remap", "flair"])
def test_rigid_recovers_known_transform_across_contrasts(brain, moved, moving_key):
    r = register_images(brain["t1"], moved[moving_key], moved["seg"], "rigid", **FAST)
    angle, shift = rigid_errors(moved["s_ras"], r.matrix, (0.0, 0.0, 0.0))
    assert angle < 1.0 and shift < 1.0, (angle, shift)
    assert r.metric_final < r.metric_initial
    # outputs on the fixed grid with the fixed affine; labels stay integer and overlap the truth
    assert torch.equal(r.image.affine, brain["t1"].affine) and r.image.shape == brain["t1"].shape
    assert r.label.dtype == brain["seg"].dtype
    assert set(torch.unique(r.label).tolist()) <= {0, 1, 2, 3}
    assert dice(r.label, brain["seg"]) > 0.85
    assert dice(moved["seg"], brain["seg"]) < dice(r.label, brain["seg"]) - 0.1


def test_rigid_recovers_known_transform_on_real_mri():
    a = anatomical()
    s = known_transform()
    moving = resample_to_reference(remap(a), a, s, "linear")
    r = register_images(a, moving, None, "rigid", shrink_factors=(2, 1), smoothing_sigmas=(1.0, 0.0))
    centre = (a.affine.numpy() @ np.array([16.0, 20.0, 12.0, 1.0]))[:3]
    angle, shift = rigid_errors(itk_transform_to_ras_matrix(s), r.matrix, centre)
    assert angle < 1.0 and shift < 1.0, (angle, shift)
    assert torch.equal(r.image.affine, a.affine)


def test_affine_recovers_rigid_part(brain, moved):
    r = register_images(brain["t1"], moved["t1_remap"], moved["seg"], "affine", **FAST)
    angle, shift = rigid_errors(moved["s_ras"], r.matrix, (0.0, 0.0, 0.0))
    assert angle < 1.0 and shift < 1.0, (angle, shift)
    assert dice(r.label, brain["seg"]) > 0.85


def test_dictionary_transform_aligns_to_reference(brain, moved):
    data = {"t1": brain["t1"], "flair": moved["flair"], "seg": moved["seg"]}
    out = RegisterToReferenced(["flair"], fixed_key="t1", label_keys={"seg": "flair"}, **FAST)(data)
    assert out["t1"] is brain["t1"]
    for key in ("flair", "seg"):
        assert torch.equal(out[key].affine, brain["t1"].affine)
        assert out[key].meta["registration"]["fixed"] == "t1"
    assert dice(out["seg"], brain["seg"]) > 0.85
    angle, _ = rigid_errors(moved["s_ras"], out["flair"].meta["registration"]["matrix_ras"], (0, 0, 0))
    assert angle < 1.0
    with pytest.raises(ValueError, match="label_keys"):
        RegisterToReferenced(["flair"], fixed_key="t1", label_keys={"seg": "t2"})


@pytest.mark.slow
def test_bspline_improves_on_affine_for_a_deformation():
    import itk

    d = synthetic_brain((48, 48, 40), (4.0, 4.0, 4.0))
    warp = itk.BSplineTransform[itk.D, 3, 3].New()
    init = itk.BSplineTransformInitializer[type(warp), itk.Image[itk.F, 3]].New()
    init.SetTransform(warp)
    init.SetImage(to_itk_image(d["t1"]))
    init.SetTransformDomainMeshSize([2, 2, 2])
    init.InitializeTransform()
    p = np.random.default_rng(0).normal(0, 4.0, warp.GetNumberOfParameters())
    warp.SetParameters(itk.OptimizerParameters[itk.D](p.tolist()))
    moving = resample_to_reference(d["flair"], d["t1"], warp, "linear")
    seg = resample_to_reference(d["seg"], d["t1"], warp, "nearest")
    opts = {"shrink_factors": (2, 1), "smoothing_sigmas": (1.0, 0.0), "iterations": 100}
    aff = register_images(d["t1"], moving, seg, "affine", **opts)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RegistrationWarning)
        bsp = register_images(
            d["t1"], moving, seg, "bspline", bspline_mesh_size=2, bspline_iterations=20, **opts
        )
    assert bsp.transform_type == "bspline" and bsp.matrix is None
    assert bsp.metric_final < aff.metric_final
    assert dice(bsp.label, d["seg"]) > dice(aff.label, d["seg"])
    assert torch.equal(bsp.image.affine, d["t1"].affine)


# ---------------------------------------------------------------- bad input


def test_no_overlap_is_rejected_naming_both(brain):
    far = brain["flair"].clone()
    far.affine = brain["flair"].affine.clone()
    far.affine[0, 3] += 1000.0
    with pytest.raises(RegistrationError, match=r"'ref'.*'far_flair'.*do not overlap"):
        register_images(brain["t1"], far, names=("ref", "far_flair"))


def test_2d_to_3d_is_rejected(brain):
    slice_2d = MetaTensor(brain["t1"].as_tensor()[:, :, :, 20], affine=torch.eye(3, dtype=torch.float64))
    with pytest.raises(RegistrationError, match=r"2D moving image 'slice'.*3D fixed image 'vol'"):
        register_images(brain["t1"], slice_2d, names=("vol", "slice"))
    thin = MetaTensor(brain["t1"][:, :, :, 20:21], affine=brain["t1"].affine.clone())
    with pytest.raises(RegistrationError, match="2D"):
        register_images(brain["t1"], thin)


def test_unrelated_content_is_rejected(brain):
    noise = MetaTensor(torch.rand(1, *brain["t1"].shape[1:], generator=torch.Generator().manual_seed(0)))
    noise.affine = brain["t1"].affine.clone()
    opts = {"shrink_factors": (2,), "smoothing_sigmas": (1.0,), "iterations": 10}
    with pytest.raises(RegistrationError, match=r"'noise'.*'t1'.*share almost no information"):
        register_images(brain["t1"], noise, names=("t1", "noise"), **opts)
    with pytest.warns(RegistrationWarning, match="share almost no information"):
        r = register_images(brain["t1"], noise, names=("t1", "noise"), on_failure="warn", **opts)
    assert torch.equal(r.image.affine, brain["t1"].affine)


def test_failed_optimisation_is_rejected(brain, moved):
    # one absurd step throws the moving image out of the field of view: metric gets worse
    with pytest.raises(RegistrationError, match=r"'flair'.*'t1'"):
        register_images(
            brain["t1"],
            moved["flair"],
            names=("t1", "flair"),
            shrink_factors=(1,),
            smoothing_sigmas=(0.0,),
            iterations=1,
            learning_rate=1e4,
            min_step=1e3,
        )


def test_bad_arguments(brain, tmp_path):
    with pytest.raises(ValueError, match="transform_type"):
        register_images(brain["t1"], brain["t2"], transform_type="elastic")
    with pytest.raises(ValueError, match="MetaTensor"):
        register_images(brain["t1"], np.zeros((1, 8, 8, 8)))
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        register_images(brain["t1"], str(tmp_path / "missing.nii.gz"))
    with pytest.raises(ValueError, match="moving_label spatial shape"):
        register_images(brain["t1"], brain["t2"], brain["seg"][:, :10])
