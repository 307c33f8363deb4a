"""Rigid, affine and B-spline registration of MetaTensors with ITK (Mattes mutual information).

ITK's v4 registration framework does the work: ``ImageRegistrationMethodv4`` with
``MattesMutualInformationImageToImageMetricv4`` (works across contrasts: T1 to T2, PET to CT), a
``CenteredTransformInitializer`` (moments or geometry), ``RegularStepGradientDescentOptimizerv4`` with
physical-shift parameter scales, and a multi-resolution pyramid (shrink factors and smoothing sigmas).
The optional B-spline stage runs on top of the affine result with ``LBFGSBOptimizerv4``.

Conventions: images are channel-first MetaTensors with a RAS ``affine`` (as ``LoadImage`` gives) or
NIfTI paths. The ITK transform maps points of the *fixed* image to the *moving* image (ITK's
convention), in LPS; :attr:`RegistrationResult.matrix` is the same map as a 4x4 matrix in RAS world
coordinates (mm). Outputs are resampled onto the fixed grid and carry the fixed image's affine.

Checks: images must have the same spatial dimension, overlap in world space, and share information;
the final metric must not be worse than the initial one. A failure raises :class:`RegistrationError`
(a ``ValueError``) that names both images, so no wrong alignment is returned silently.

Example:
    >>> from monai_ext.registration import register_images
    >>> # result = register_images("t1c.nii.gz", "flair.nii.gz", transform_type="rigid")
    >>> # result.image.affine  -> the affine of t1c.nii.gz; result.matrix -> 4x4 RAS, fixed -> moving
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.itk_torch_bridge import metatensor_to_itk_image
from monai.utils import MetaKeys, SpaceKeys

__all__ = [
    "TRANSFORM_TYPES",
    "RegistrationError",
    "RegistrationWarning",
    "RegistrationResult",
    "load_image",
    "to_itk_image",
    "register_images",
    "resample_to_reference",
    "itk_transform_to_ras_matrix",
]

#: supported values of ``transform_type``
TRANSFORM_TYPES: tuple[str, ...] = ("rigid", "affine", "bspline")
_INITIALIZERS = ("moments", "geometry", "none")
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


class RegistrationError(ValueError):
    """The images cannot be registered (no overlap, wrong dimension, optimisation failed)."""


class RegistrationWarning(UserWarning):
    """A registration finished but a quality check failed (``on_failure="warn"``)."""


@dataclass
class RegistrationResult:
    """What :func:`register_images` returns.

    Attributes:
        transform: the ITK transform mapping fixed-image points to moving-image points (LPS, mm);
            for ``bspline`` a ``CompositeTransform`` (affine, then B-spline).
        matrix: 4x4 float64 RAS matrix of the same map for rigid/affine, ``None`` for bspline.
        image: the moving image resampled (linear) onto the fixed grid, fixed affine.
        label: the moving labels resampled (nearest) onto the fixed grid, or ``None``.
        metric_initial: Mattes MI (ITK sign: lower is better) after initialisation, finest level.
        metric_final: the same metric after registration.
        overlap: fraction of fixed-grid points that map inside the moving image at the end.
        transform_type: ``rigid``, ``affine`` or ``bspline``.
    """

    transform: Any
    matrix: np.ndarray | None
    image: MetaTensor
    label: MetaTensor | None
    metric_initial: float
    metric_final: float
    overlap: float
    transform_type: str
    info: dict[str, Any] = field(default_factory=dict)


def _itk():
    import itk

    return itk


def _name(image: Any, default: str) -> str:
    if isinstance(image, str | os.PathLike):
        return os.path.basename(os.fspath(image))
    meta = getattr(image, "meta", None) or {}
    src = meta.get("filename_or_obj")
    if isinstance(src, str | os.PathLike) and str(src):
        return os.path.basename(os.fspath(src))
    return default


def load_image(image: Any, name: str = "image") -> MetaTensor:
    """Return ``image`` as a channel-first MetaTensor with a RAS affine (reads a path with MONAI).

    Example:
        >>> # load_image("t1.nii.gz").shape  -> (1, H, W, D)
    """
    if isinstance(image, str | os.PathLike):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{name} {path!r} does not exist")
        from monai.transforms import LoadImage

        try:
            out = LoadImage(image_only=True, ensure_channel_first=True, dtype=None)(path)
        except Exception as e:  # noqa: BLE001 - MONAI raises various reader errors
            raise ValueError(f"{name} {path!r} could not be read as an image: {e}") from None
        return out
    if isinstance(image, MetaTensor):
        if image.ndim not in (3, 4):
            raise ValueError(
                f"{name} must be channel-first (C, H, W) or (C, H, W, D), got shape {tuple(image.shape)}"
            )
        return image
    if isinstance(image, torch.Tensor | np.ndarray):
        raise ValueError(f"{name} must be a MetaTensor (with an affine) or a file path, got a plain array")
    raise ValueError(f"{name} must be a MetaTensor or a file path, got {type(image).__name__}")


def _spatial_shape(image: MetaTensor) -> tuple[int, ...]:
    return tuple(int(s) for s in image.shape[1:])


def _check_dimensions(fixed: MetaTensor, moving: MetaTensor, names: tuple[str, str]) -> int:
    dims = []
    for img in (fixed, moving):
        shape = _spatial_shape(img)
        thin = len(shape) == 3 and min(shape) < 4
        dims.append((2 if len(shape) == 2 or thin else 3, shape, thin))
    (df, sf, tf), (dm, sm, tm) = dims
    if df != dm:
        raise RegistrationError(
            f"cannot register a {dm}D moving image {names[1]!r} (spatial shape {sm}) to a {df}D fixed image "
            f"{names[0]!r} (spatial shape {sf}); both must be 3D volumes or both 2D images"
        )
    if tf or tm:
        raise RegistrationError(
            f"fixed {names[0]!r} {sf} / moving {names[1]!r} {sm}: a volume with fewer than 4 voxels along an "
            "axis cannot be registered in 3D; pass 2D images as (C, H, W)"
        )
    return df


def to_itk_image(image: MetaTensor, channel: int = 0) -> Any:
    """One channel of a channel-first RAS MetaTensor as a float32 ``itk.Image`` (LPS geometry).

    Uses :func:`monai.data.itk_torch_bridge.metatensor_to_itk_image`; a MetaTensor without a ``space``
    key is taken as RAS (MONAI's default).

    Example:
        >>> # to_itk_image(load_image("t1.nii.gz")).GetSpacing()
    """
    ch = torch.as_tensor(image.detach().cpu()[channel], dtype=torch.float32)
    if isinstance(ch, MetaTensor):
        ch = ch.as_tensor()
    mt = MetaTensor(ch, affine=image.affine.clone().to(torch.float64))
    mt.meta[MetaKeys.SPACE] = image.meta.get(MetaKeys.SPACE, SpaceKeys.RAS)
    out = metatensor_to_itk_image(mt, channel_dim=None, dtype=np.float32)
    if out.GetImageDimension() != image.ndim - 1:
        raise ValueError(f"could not convert an image of shape {tuple(image.shape)} to ITK")
    return out


def _world_corners(image: MetaTensor) -> np.ndarray:
    shape = np.array(_spatial_shape(image), float)
    nd = len(shape)
    corners = np.array(np.meshgrid(*[[-0.5, s - 0.5] for s in shape], indexing="ij")).reshape(nd, -1)
    aff = np.asarray(image.affine, float)
    if aff.shape[0] != nd + 1:
        raise ValueError(f"affine {aff.shape} does not match {nd} spatial dimensions")
    return aff[:nd, :nd] @ corners + aff[:nd, nd : nd + 1]


def _check_world_overlap(fixed: MetaTensor, moving: MetaTensor, names: tuple[str, str]) -> None:
    cf, cm = _world_corners(fixed), _world_corners(moving)
    lo = np.maximum(cf.min(1), cm.min(1))
    hi = np.minimum(cf.max(1), cm.max(1))
    if np.any(hi <= lo):

        def span(c: np.ndarray) -> str:
            return " x ".join(f"[{a:.0f}, {b:.0f}]" for a, b in zip(c.min(1), c.max(1)))

        raise RegistrationError(
            f"fixed {names[0]!r} and moving {names[1]!r} do not overlap in world space (RAS mm): fixed spans "
            f"{span(cf)}, moving spans {span(cm)}; check their affines (same patient, same session?)"
        )


def itk_transform_to_ras_matrix(transform: Any) -> np.ndarray:
    """The (fixed -> moving) point map of a rigid/affine ITK transform as a 4x4 RAS matrix.

    Example:
        >>> # itk_transform_to_ras_matrix(result.transform)  -> equals result.matrix
    """
    a = np.asarray(transform.GetMatrix(), float)
    nd = a.shape[0]
    t = np.asarray(transform.GetTranslation(), float)
    c = np.asarray(transform.GetCenter(), float)
    m = np.eye(nd + 1)
    m[:nd, :nd] = a
    m[:nd, nd] = t + c - a @ c
    flip = np.diag([-1.0] * 2 + [1.0] * (nd - 2) + [1.0])
    return flip @ m @ flip


def _metric(fixed_itk: Any, moving_itk: Any, bins: int) -> Any:
    itk = _itk()
    fixed_type, moving_type = type(fixed_itk), type(moving_itk)
    metric = itk.MattesMutualInformationImageToImageMetricv4[fixed_type, moving_type].New()
    metric.SetNumberOfHistogramBins(bins)
    return metric


def _evaluate(fixed_itk: Any, moving_itk: Any, transform: Any, bins: int) -> tuple[float, float]:
    """Mattes MI over the full fixed grid and the fraction of fixed points inside the moving image."""
    itk = _itk()
    metric = _metric(fixed_itk, moving_itk, bins)
    metric.SetFixedImage(fixed_itk)
    metric.SetMovingImage(moving_itk)
    identity = itk.IdentityTransform[itk.D, fixed_itk.GetImageDimension()].New()
    metric.SetFixedTransform(identity)
    metric.SetMovingTransform(transform)
    try:
        metric.Initialize()
        value = float(metric.GetValue())
    except RuntimeError:
        return math.inf, 0.0
    total = int(np.prod(fixed_itk.GetLargestPossibleRegion().GetSize()))
    return value, metric.GetNumberOfValidPoints() / max(total, 1)


def _initial_transform(kind: str, fixed_itk: Any, moving_itk: Any, initializer: str) -> Any:
    """Rigid (versor in 3D, Euler in 2D) or affine transform, centred by ``CenteredTransformInitializer``."""
    itk = _itk()
    nd = fixed_itk.GetImageDimension()
    if kind == "rigid":
        tx = (itk.VersorRigid3DTransform[itk.D] if nd == 3 else itk.Euler2DTransform[itk.D]).New()
    else:
        tx = itk.AffineTransform[itk.D, nd].New()
    tx.SetIdentity()
    if initializer == "none":
        return tx
    # ITK Python wraps the initializer for VersorRigid3D (3D) and MatrixOffsetTransformBase (2D) only
    target = itk.VersorRigid3DTransform[itk.D].New() if nd == 3 else tx
    base = type(target) if nd == 3 else itk.MatrixOffsetTransformBase[itk.D, 2, 2]
    init = itk.CenteredTransformInitializer[base, type(fixed_itk), type(moving_itk)].New()
    init.SetTransform(target)
    init.SetFixedImage(fixed_itk)
    init.SetMovingImage(moving_itk)
    if initializer == "moments":
        init.MomentsOn()
    else:
        init.GeometryOn()
    init.InitializeTransform()
    if target is not tx:
        tx.SetCenter(target.GetCenter())
        tx.SetTranslation(target.GetTranslation())
    return tx


def _levels(fixed_itk: Any, shrink_factors: Sequence[int], smoothing_sigmas: Sequence[float]) -> tuple:
    if len(shrink_factors) != len(smoothing_sigmas) or not shrink_factors:
        raise ValueError(
            f"shrink_factors {tuple(shrink_factors)} and smoothing_sigmas {tuple(smoothing_sigmas)} must be "
            "non-empty and of the same length (one per resolution level)"
        )
    smallest = min(fixed_itk.GetLargestPossibleRegion().GetSize())
    shrink = [max(1, min(int(s), smallest // 8 or 1)) for s in shrink_factors]
    return shrink, [float(s) for s in smoothing_sigmas]


def _run_stage(
    fixed_itk: Any,
    moving_itk: Any,
    transform: Any,
    optimizer: Any,
    *,
    moving_initial: Any | None,
    shrink: list[int],
    sigmas: list[float],
    bins: int,
    sampling_fraction: float,
    seed: int,
    scales: bool,
) -> None:
    itk = _itk()
    ftype, mtype = type(fixed_itk), type(moving_itk)
    metric = _metric(fixed_itk, moving_itk, bins)
    reg = itk.ImageRegistrationMethodv4[ftype, mtype].New()
    reg.SetFixedImage(fixed_itk)
    reg.SetMovingImage(moving_itk)
    reg.SetMetric(metric)
    if scales:
        estimator = itk.RegistrationParameterScalesFromPhysicalShift[type(metric)].New()
        estimator.SetMetric(metric)
        optimizer.SetScalesEstimator(estimator)
    reg.SetOptimizer(optimizer)
    reg.SetInitialTransform(transform)
    reg.SetInPlace(True)
    if moving_initial is not None:
        reg.SetMovingInitialTransform(moving_initial)
    reg.SetNumberOfLevels(len(shrink))
    reg.SetShrinkFactorsPerLevel(shrink)
    reg.SetSmoothingSigmasPerLevel(sigmas)
    reg.SetSmoothingSigmasAreSpecifiedInPhysicalUnits(False)
    if sampling_fraction < 1.0:
        reg.SetMetricSamplingStrategy(itk.ImageRegistrationMethodv4Enums.MetricSamplingStrategy_RANDOM)
        reg.SetMetricSamplingPercentage(float(sampling_fraction))
        reg.MetricSamplingReinitializeSeed(int(seed))
    reg.Update()


def resample_to_reference(
    image: MetaTensor, reference: MetaTensor, transform: Any, mode: str = "linear", default_value: float = 0.0
) -> MetaTensor:
    """Resample every channel of ``image`` onto the grid of ``reference`` through ``transform``.

    ``transform`` maps reference points to image points (ITK convention, as :func:`register_images`
    returns). ``mode`` is ``linear`` or ``nearest`` (labels: values and dtype are kept). The result has
    ``reference``'s affine and spatial shape.

    Example:
        >>> # seg_on_t1c = resample_to_reference(seg, t1c, result.transform, mode="nearest")
    """
    itk = _itk()
    if mode not in ("linear", "nearest"):
        raise ValueError(f"mode must be 'linear' or 'nearest', got {mode!r}")
    ref_itk = to_itk_image(reference)
    channels = []
    for c in range(image.shape[0]):
        src = to_itk_image(image, c)
        itype = type(src)
        if mode == "nearest":
            interp = itk.NearestNeighborInterpolateImageFunction[itype, itk.D].New()
        else:
            interp = itk.LinearInterpolateImageFunction[itype, itk.D].New()
        res = itk.ResampleImageFilter[itype, itype].New()
        res.SetInput(src)
        res.SetTransform(transform)
        res.SetInterpolator(interp)
        res.SetReferenceImage(ref_itk)
        res.UseReferenceImageOn()
        res.SetDefaultPixelValue(float(default_value))
        res.Update()
        # itk arrays are (z, y, x); MONAI's are (x, y, z)
        channels.append(np.asarray(itk.array_view_from_image(res.GetOutput())).T.copy())
    arr = np.stack(channels)
    dtype = image.dtype if mode == "nearest" or image.dtype.is_floating_point else torch.float32
    data = torch.as_tensor(np.rint(arr) if mode == "nearest" and not image.dtype.is_floating_point else arr)
    meta = {k: v for k, v in image.meta.items() if k not in ("affine", "spatial_shape")}
    meta[MetaKeys.SPACE] = reference.meta.get(MetaKeys.SPACE, SpaceKeys.RAS)
    meta["spatial_shape"] = np.asarray(_spatial_shape(reference))
    out = MetaTensor(data.to(dtype), affine=reference.affine.clone(), meta=meta)
    return out


def register_images(
    fixed: Any,
    moving: Any,
    moving_label: Any | None = None,
    transform_type: str = "rigid",
    *,
    initializer: str = "moments",
    shrink_factors: Sequence[int] = (4, 2, 1),
    smoothing_sigmas: Sequence[float] = (2.0, 1.0, 0.0),
    iterations: int = 200,
    learning_rate: float = 2.0,
    min_step: float = 1e-3,
    histogram_bins: int = 32,
    sampling_fraction: float = 0.25,
    bspline_mesh_size: int = 4,
    bspline_iterations: int = 50,
    min_overlap: float = 0.1,
    min_mutual_information: float = 0.02,
    on_failure: str = "raise",
    seed: int = 0,
    names: tuple[str, str] | None = None,
) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` with Mattes mutual information; resample moving (and labels).

    Args:
        fixed, moving: channel-first MetaTensors (RAS affine) or image paths. The first channel drives
            the registration; every channel of ``moving`` is resampled.
        moving_label: labels on the moving grid (MetaTensor or path), resampled with nearest neighbour.
        transform_type: ``rigid`` (Euler), ``affine`` or ``bspline`` (affine, then a B-spline stage).
        initializer: ``moments`` (centres of mass), ``geometry`` (image centres) or ``none``.
        shrink_factors, smoothing_sigmas: the multi-resolution pyramid (voxels), one entry per level.
        iterations, learning_rate, min_step: ``RegularStepGradientDescentOptimizerv4`` (step in mm).
        histogram_bins, sampling_fraction: Mattes MI histogram and random sampling of the fixed grid.
        bspline_mesh_size, bspline_iterations: control-point mesh and LBFGSB iterations (bspline only).
        min_overlap: least fraction of fixed-grid points that must map inside the moving image.
        min_mutual_information: least final MI (nats); below it the images share no information.
        on_failure: ``raise`` a :class:`RegistrationError` or ``warn`` (and return the result).
        seed: sampling seed (deterministic for a given seed and thread count).
        names: names used in messages (default: file names or ``fixed``/``moving``).

    Example:
        >>> # r = register_images(t1c, flair, transform_type="rigid", shrink_factors=(2, 1),
        >>> #                     smoothing_sigmas=(1, 0))
        >>> # r.image.affine == t1c.affine; r.matrix  -> 4x4 RAS (fixed -> moving)
    """
    if transform_type not in TRANSFORM_TYPES:
        raise ValueError(f"transform_type must be one of {TRANSFORM_TYPES}, got {transform_type!r}")
    if initializer not in _INITIALIZERS:
        raise ValueError(f"initializer must be one of {_INITIALIZERS}, got {initializer!r}")
    if on_failure not in ("raise", "warn"):
        raise ValueError(f"on_failure must be 'raise' or 'warn', got {on_failure!r}")
    if not 0.0 < sampling_fraction <= 1.0:
        raise ValueError(f"sampling_fraction must be in (0, 1], got {sampling_fraction}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    names = names or (_name(fixed, "fixed"), _name(moving, "moving"))
    fixed_mt = load_image(fixed, f"fixed image {names[0]!r}")
    moving_mt = load_image(moving, f"moving image {names[1]!r}")
    label_mt = None
    if moving_label is not None:
        label_mt = load_image(moving_label, "moving_label")
        if _spatial_shape(label_mt) != _spatial_shape(moving_mt):
            raise ValueError(
                f"moving_label spatial shape {_spatial_shape(label_mt)} differs from moving image "
                f"{names[1]!r} "
                f"{_spatial_shape(moving_mt)}; labels must be on the moving image's grid"
            )
    _check_dimensions(fixed_mt, moving_mt, names)
    _check_world_overlap(fixed_mt, moving_mt, names)
    for img, nm in zip((fixed_mt, moving_mt), names):
        if not torch.isfinite(img[0]).all() or float(img[0].max()) == float(img[0].min()):
            raise RegistrationError(f"image {nm!r} is constant or has non-finite values; nothing to register")

    itk = _itk()
    fixed_itk, moving_itk = to_itk_image(fixed_mt), to_itk_image(moving_mt)
    shrink, sigmas = _levels(fixed_itk, shrink_factors, smoothing_sigmas)
    nd = fixed_itk.GetImageDimension()

    def fail(message: str) -> None:
        if on_failure == "raise":
            raise RegistrationError(message)
        warnings.warn(message, RegistrationWarning, stacklevel=3)

    def optimise(transform: Any, stage: str) -> Any:
        opt = itk.RegularStepGradientDescentOptimizerv4[itk.D].New()
        opt.SetLearningRate(float(learning_rate))
        opt.SetMinimumStepLength(float(min_step))
        opt.SetNumberOfIterations(int(iterations))
        opt.SetRelaxationFactor(0.5)
        opt.SetGradientMagnitudeTolerance(1e-6)
        try:
            _run_stage(
                fixed_itk,
                moving_itk,
                transform,
                opt,
                moving_initial=None,
                shrink=shrink,
                sigmas=sigmas,
                bins=histogram_bins,
                sampling_fraction=sampling_fraction,
                seed=seed,
                scales=True,
            )
        except RuntimeError as e:
            raise RegistrationError(
                f"{stage} registration of moving {names[1]!r} to fixed {names[0]!r} failed in ITK: "
                f"{str(e).strip().splitlines()[-1]}"
            ) from None
        return opt

    rigid = _initial_transform("rigid", fixed_itk, moving_itk, initializer)
    metric_initial, overlap_initial = _evaluate(fixed_itk, moving_itk, rigid, histogram_bins)
    if overlap_initial < min_overlap:
        raise RegistrationError(
            f"fixed {names[0]!r} and moving {names[1]!r} overlap too little after initialisation "
            f"({overlap_initial:.1%} of the fixed grid, need {min_overlap:.0%})"
        )
    opt = optimise(rigid, "rigid")
    tx = rigid
    if transform_type != "rigid":
        # affine (and the bspline's affine part) starts from the rigid solution, as ANTs/elastix do
        tx = itk.AffineTransform[itk.D, nd].New()
        tx.SetCenter(rigid.GetCenter())
        tx.SetMatrix(rigid.GetMatrix())
        tx.SetTranslation(rigid.GetTranslation())
        opt = optimise(tx, "affine")
    final_tx: Any = tx
    matrix: np.ndarray | None = itk_transform_to_ras_matrix(tx)
    if transform_type == "bspline":
        final_tx = _bspline_stage(
            fixed_itk,
            moving_itk,
            tx,
            shrink,
            sigmas,
            histogram_bins,
            sampling_fraction,
            seed,
            bspline_mesh_size,
            bspline_iterations,
            names,
        )
        matrix = None
    metric_final, overlap = _evaluate(fixed_itk, moving_itk, final_tx, histogram_bins)
    if transform_type == "bspline":
        metric_affine, overlap_affine = _evaluate(fixed_itk, moving_itk, tx, histogram_bins)
        if not metric_final < metric_affine:
            warnings.warn(
                f"the B-spline stage did not improve the affine alignment of moving {names[1]!r} to fixed "
                f"{names[0]!r} (Mattes MI {metric_affine:.4f} -> {metric_final:.4f}); returning the affine",
                RegistrationWarning,
                stacklevel=2,
            )
            final_tx, matrix, metric_final, overlap = (
                tx,
                itk_transform_to_ras_matrix(tx),
                metric_affine,
                overlap_affine,
            )
            transform_type = "affine"
    tol = 1e-3 * max(abs(metric_initial), 1e-3)
    if not math.isfinite(metric_final) or metric_final > metric_initial + tol:
        fail(
            f"registration of moving {names[1]!r} to fixed {names[0]!r} did not improve the metric "
            f"(Mattes MI {metric_initial:.4f} -> {metric_final:.4f}); the alignment is not trustworthy"
        )
    if -metric_final < min_mutual_information:
        fail(
            f"moving {names[1]!r} and fixed {names[0]!r} share almost no information after registration "
            f"(mutual information {-metric_final:.4f} < {min_mutual_information}); wrong image pair?"
        )
    if overlap < min_overlap:
        fail(
            f"after registration only {overlap:.1%} of fixed {names[0]!r} maps inside moving {names[1]!r} "
            f"(need {min_overlap:.0%}); the optimiser drifted apart"
        )
    image = resample_to_reference(moving_mt, fixed_mt, final_tx, "linear")
    label = resample_to_reference(label_mt, fixed_mt, final_tx, "nearest") if label_mt is not None else None
    return RegistrationResult(
        transform=final_tx,
        matrix=matrix,
        image=image,
        label=label,
        metric_initial=metric_initial,
        metric_final=metric_final,
        overlap=overlap,
        transform_type=transform_type,
        info={
            "names": names,
            "shrink_factors": shrink,
            "smoothing_sigmas": sigmas,
            "iterations_last_level": int(opt.GetCurrentIteration()),
            "stop": str(opt.GetStopConditionDescription()),
        },
    )


def _bspline_stage(
    fixed_itk: Any,
    moving_itk: Any,
    affine: Any,
    shrink: list[int],
    sigmas: list[float],
    bins: int,
    sampling_fraction: float,
    seed: int,
    mesh_size: int,
    iterations: int,
    names: tuple[str, str],
) -> Any:
    itk = _itk()
    nd = fixed_itk.GetImageDimension()
    bsp = itk.BSplineTransform[itk.D, nd, 3].New()
    init = itk.BSplineTransformInitializer[type(bsp), type(fixed_itk)].New()
    init.SetTransform(bsp)
    init.SetImage(fixed_itk)
    init.SetTransformDomainMeshSize([int(mesh_size)] * nd)
    init.InitializeTransform()
    bsp.SetIdentity()
    # plain gradient descent with physical-shift scales: every control point moves at most ~1 voxel a step
    opt = itk.RegularStepGradientDescentOptimizerv4[itk.D].New()
    opt.SetLearningRate(float(min(fixed_itk.GetSpacing())))
    opt.SetMinimumStepLength(1e-3)
    opt.SetNumberOfIterations(int(iterations))
    opt.SetRelaxationFactor(0.5)
    try:
        _run_stage(
            fixed_itk,
            moving_itk,
            bsp,
            opt,
            moving_initial=affine,
            shrink=shrink[-1:],
            sigmas=sigmas[-1:],
            bins=bins,
            sampling_fraction=sampling_fraction,
            seed=seed,
            scales=True,
        )
    except RuntimeError as e:
        raise RegistrationError(
            f"B-spline registration of moving {names[1]!r} to fixed {names[0]!r} failed in ITK: "
            f"{str(e).strip().splitlines()[-1]}"
        ) from None
    comp = itk.CompositeTransform[itk.D, nd].New()
    comp.AddTransform(affine)
    comp.AddTransform(bsp)
    return comp
