"""MONAI array transforms for histology colour and geometry over :mod:`monai_ext.transforms.functional.stain`.

One channel-first RGB sample ``(3, H, W)`` per call (torch, numpy or MetaTensor; metadata is kept):
uint8 in 0..255 or float in [0, 1] (checked; float in [0, 255] is rejected). Random transforms draw
their parameters with MONAI's ``self.R`` in ``randomize()``; the batched, device-side counterparts
live in :mod:`monai_ext.transforms.batch.stain`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor, get_track_meta
from monai.transforms import InvertibleTransform, RandomizableTransform, Transform
from monai.utils import TraceKeys, TransformBackends, convert_to_dst_type, convert_to_tensor

from monai_ext.transforms.batch.stain import BatchMacenkoNormalize
from monai_ext.transforms.functional import stain as F

__all__ = [
    "HistoTissueMask",
    "MacenkoStainNormalize",
    "ReinhardStainNormalize",
    "RandHEDJitter",
    "RandHSVJitter",
    "RandRGBBrightnessContrast",
    "RandDihedral2D",
    "RandRGBGaussianBlur",
    "dihedral_affine",
]


def _rgb(img: NdarrayOrTensor, name: str) -> torch.Tensor:
    """Plain torch tensor of one RGB sample, checked (shape, dtype, value range)."""
    t = convert_to_tensor(img, track_meta=False)
    if t.ndim != 3:
        raise ValueError(
            f"{name}: expected one channel-first RGB image (3, H, W), got shape {tuple(t.shape)}."
        )
    F.check_rgb(t, f"{name}: `img`")
    return t


def _back(out: torch.Tensor, img: NdarrayOrTensor) -> NdarrayOrTensor:
    return convert_to_dst_type(out, img, dtype=out.dtype)[0]


class HistoTissueMask(Transform):
    """Boolean (1, H, W) tissue mask of an RGB patch (OD threshold or saturation, pen ink excluded).

    Example:
        >>> HistoTissueMask()(torch.full((3, 4, 4), 255, dtype=torch.uint8)).any()
        tensor(False)
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        beta: float = 0.2,
        od_floor: float = 0.08,
        method: str = "od",
        saturation: float = 0.1,
        exclude_ink: bool = True,
    ):
        if method not in ("od", "saturation"):
            raise ValueError(f"HistoTissueMask: `method` must be 'od' or 'saturation', got {method!r}.")
        self.kwargs = {"beta": beta, "od_floor": od_floor, "method": method, "saturation": saturation}
        self.kwargs["exclude_ink"] = exclude_ink

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        m = F.tissue_mask(_rgb(img, "HistoTissueMask"), **self.kwargs)[None]
        return _back(m, img)


class MacenkoStainNormalize(Transform):
    """Macenko stain normalisation of one patch to target stains (never raises on content).

    Background-only / near-empty / flat patches come back unchanged; ``self.passthrough`` holds the
    last call's flag. ``fit_target(image)`` sets the target from an image; ``fit_slide(region)`` fits
    one stain matrix on a large region (or a (B, 3, H, W) stack of tiles) and applies it to every
    later patch, so tiles of one slide show no seams. Not a clone of MONAI's ``NormalizeHEStains``
    (same maths and defaults, torch, any device, pass-through instead of errors).

    Example:
        >>> norm = MacenkoStainNormalize()
        >>> out = norm(torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8))
        >>> out.shape, bool(norm.passthrough) in (True, False)
        (torch.Size([3, 32, 32]), True)
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        target_stains: Sequence | torch.Tensor = F.DEFAULT_TARGET_HE,
        target_max_conc: Sequence | torch.Tensor = F.DEFAULT_MAX_CONC,
        tli: float = 240.0,
        alpha: float = 1.0,
        beta: float = 0.2,
        od_floor: float = 0.08,
        conc_percentile: float = 99.0,
        min_tissue_fraction: float = 0.01,
        min_tissue_pixels: int = 64,
        exclude_ink: bool = True,
    ) -> None:
        self.norm = BatchMacenkoNormalize(
            target_stains,
            target_max_conc,
            tli,
            alpha,
            beta,
            od_floor,
            conc_percentile,
            min_tissue_fraction,
            min_tissue_pixels,
            exclude_ink,
            validate=False,  # checked per call by _rgb
        )
        self.norm.owner = "MacenkoStainNormalize"
        self.passthrough: torch.Tensor | None = None

    @property
    def target_stains(self) -> torch.Tensor:
        return self.norm.target_stains

    @property
    def target_max_conc(self) -> torch.Tensor:
        return self.norm.target_max_conc

    @property
    def slide_fit(self) -> F.MacenkoFit | None:
        return self.norm.slide_fit

    def fit_target(self, image: NdarrayOrTensor) -> MacenkoStainNormalize:
        """Take target stains and max concentrations from ``image`` (3, H, W); raises if it has no tissue."""
        self.norm.fit_target(_rgb(image, "MacenkoStainNormalize.fit_target"))
        return self

    def fit_slide(self, region: NdarrayOrTensor) -> F.MacenkoFit:
        """Fit one stain matrix on a slide region (3, H, W) or tiles (B, 3, H, W); used for later calls."""
        return self.norm.fit_slide(convert_to_tensor(region, track_meta=False))

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        out, passthrough = self.norm(_rgb(img, "MacenkoStainNormalize")[None])
        self.passthrough = passthrough[0]
        return _back(out[0], img)


class ReinhardStainNormalize(Transform):
    """Reinhard colour normalisation (LAB mean / std over tissue) to a target; pass-through like Macenko.

    Give ``target_mean`` / ``target_std`` (LAB) or call ``fit_target(image)``; ``fit_slide(region)``
    fixes the source statistics for all later patches.

    Example:
        >>> norm = ReinhardStainNormalize(target_mean=(65.0, 25.0, -15.0), target_std=(15.0, 8.0, 6.0))
        >>> norm(torch.rand(3, 16, 16) * 0.8).shape
        torch.Size([3, 16, 16])
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        target_mean: Sequence[float] | None = None,
        target_std: Sequence[float] | None = None,
        beta: float = 0.2,
        od_floor: float = 0.08,
        min_tissue_fraction: float = 0.01,
        min_tissue_pixels: int = 64,
        exclude_ink: bool = True,
    ) -> None:
        self.target_mean = None if target_mean is None else torch.as_tensor(target_mean, dtype=torch.float32)
        self.target_std = None if target_std is None else torch.as_tensor(target_std, dtype=torch.float32)
        self.kwargs = {
            "beta": beta,
            "od_floor": od_floor,
            "min_tissue_fraction": min_tissue_fraction,
            "min_tissue_pixels": min_tissue_pixels,
            "exclude_ink": exclude_ink,
        }
        self.slide_fit: F.ReinhardFit | None = None
        self.passthrough: torch.Tensor | None = None

    def fit_target(self, image: NdarrayOrTensor) -> ReinhardStainNormalize:
        """Take the target LAB mean / std from ``image``; raises if it has no tissue."""
        fit = F.reinhard_fit(_rgb(image, "ReinhardStainNormalize.fit_target")[None], **self.kwargs)
        if bool(fit.passthrough[0]):
            raise ValueError("ReinhardStainNormalize.fit_target: `image` has too little tissue.")
        self.target_mean, self.target_std = fit.mean[0].cpu(), fit.std[0].cpu()
        return self

    def fit_slide(self, region: NdarrayOrTensor) -> F.ReinhardFit:
        """Fix source statistics from a slide region (3, H, W) or tiles (B, 3, H, W)."""
        t = convert_to_tensor(region, track_meta=False)
        F.check_rgb(t, "ReinhardStainNormalize.fit_slide: `region`")
        fit = F.reinhard_fit(t, pool=True, **self.kwargs)
        if bool(fit.passthrough[0]):
            raise ValueError("ReinhardStainNormalize.fit_slide: `region` has too little tissue.")
        self.slide_fit = fit
        return fit

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if self.target_mean is None or self.target_std is None:
            raise ValueError(
                "ReinhardStainNormalize: set `target_mean`/`target_std` or call fit_target() first."
            )
        t = _rgb(img, "ReinhardStainNormalize")
        kw = {} if self.slide_fit is not None else self.kwargs
        out, self.passthrough = F.reinhard_normalize(
            t, self.target_mean.to(t.device), self.target_std.to(t.device), fit=self.slide_fit, **kw
        )
        return _back(out, img)


class _RandColour(RandomizableTransform):
    """Shared call path: randomize, then a deterministic functional call with the drawn parameters."""

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]
    name = ""

    def _apply(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        if randomize:
            self.randomize(None)
        t = _rgb(img, self.name)
        if not self._do_transform:
            return img
        return _back(self._apply(t), img)


class RandHEDJitter(_RandColour):
    """HED stain augmentation (Tellez et al. 2018): per stain ``c' = alpha * c + beta`` in
    Ruifrok-Johnston HED space, ``alpha ~ U(1 - sigma, 1 + sigma)``, ``beta ~ U(-bias, bias)``.
    ``bias`` is in the current scikit-image HED units (``log(rgb) / log(1e-6)``); Tellez et al.'s
    0.05 was in the older ``-log(rgb + 2)`` units, where the same shift changes a tissue pixel about 4x
    less, so the default here is 0.01.

    Example:
        >>> aug = RandHEDJitter(prob=1.0, sigma=0.05, bias=0.01)
        >>> aug.set_random_state(0)(torch.rand(3, 8, 8)).shape
        torch.Size([3, 8, 8])
    """

    name = "RandHEDJitter"

    def __init__(self, prob: float = 0.5, sigma: float = 0.05, bias: float = 0.01) -> None:
        super().__init__(prob)
        if sigma < 0 or bias < 0:
            raise ValueError(f"RandHEDJitter: `sigma` and `bias` must be >= 0, got {sigma}, {bias}.")
        self.sigma, self.bias = sigma, bias
        self.alpha, self.beta = np.ones(3), np.zeros(3)

    def randomize(self, data=None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.alpha = self.R.uniform(1 - self.sigma, 1 + self.sigma, 3)
            self.beta = self.R.uniform(-self.bias, self.bias, 3)

    def _apply(self, t: torch.Tensor) -> torch.Tensor:
        return F.hed_jitter(t, torch.as_tensor(self.alpha), torch.as_tensor(self.beta))


class RandHSVJitter(_RandColour):
    """Random hue shift (``U(-hue, hue)`` turns), saturation and value factors (``U(1 - s, 1 + s)``).

    Example:
        >>> RandHSVJitter(prob=1.0).set_random_state(0)(torch.rand(3, 8, 8)).shape
        torch.Size([3, 8, 8])
    """

    name = "RandHSVJitter"

    def __init__(
        self, prob: float = 0.5, hue: float = 0.05, saturation: float = 0.2, value: float = 0.2
    ) -> None:
        super().__init__(prob)
        self.ranges = (hue, saturation, value)
        self.params = (0.0, 1.0, 1.0)

    def randomize(self, data=None) -> None:
        super().randomize(None)
        if self._do_transform:
            h, s, v = self.ranges
            self.params = (self.R.uniform(-h, h), self.R.uniform(1 - s, 1 + s), self.R.uniform(1 - v, 1 + v))

    def _apply(self, t: torch.Tensor) -> torch.Tensor:
        return F.hsv_jitter(t, *self.params)


class RandRGBBrightnessContrast(_RandColour):
    """Random brightness offset ``U(-brightness, brightness)`` and contrast factor ``U(1 - c, 1 + c)``.

    Example:
        >>> RandRGBBrightnessContrast(prob=1.0).set_random_state(0)(torch.rand(3, 8, 8)).shape
        torch.Size([3, 8, 8])
    """

    name = "RandRGBBrightnessContrast"

    def __init__(self, prob: float = 0.5, brightness: float = 0.1, contrast: float = 0.2) -> None:
        super().__init__(prob)
        self.ranges = (brightness, contrast)
        self.params = (0.0, 1.0)

    def randomize(self, data=None) -> None:
        super().randomize(None)
        if self._do_transform:
            b, c = self.ranges
            self.params = (self.R.uniform(-b, b), self.R.uniform(1 - c, 1 + c))

    def _apply(self, t: torch.Tensor) -> torch.Tensor:
        return F.rgb_brightness_contrast(t, *self.params)


class RandRGBGaussianBlur(_RandColour):
    """Gaussian blur with ``sigma ~ U(*sigma)`` (pixels), reflect padding.

    Example:
        >>> RandRGBGaussianBlur(prob=1.0).set_random_state(0)(torch.rand(3, 16, 16)).shape
        torch.Size([3, 16, 16])
    """

    name = "RandRGBGaussianBlur"

    def __init__(self, prob: float = 0.5, sigma: tuple[float, float] = (0.1, 1.5)) -> None:
        super().__init__(prob)
        if len(sigma) != 2 or not 0 <= sigma[0] <= sigma[1]:
            raise ValueError(
                f"RandRGBGaussianBlur: `sigma` must be (low, high) with 0 <= low <= high, got {sigma}."
            )
        self.sigma_range = (float(sigma[0]), float(sigma[1]))
        self.sigma = 0.0

    def randomize(self, data=None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.sigma = float(self.R.uniform(*self.sigma_range))

    def _apply(self, t: torch.Tensor) -> torch.Tensor:
        return F.rgb_gaussian_blur(t, self.sigma)


def dihedral_affine(k: int, spatial_shape: Sequence[int], rank: int = 2) -> torch.Tensor:
    """``(rank + 1)^2`` float64 voxel map of dihedral element ``k`` on a ``spatial_shape`` (H, W)
    image: output voxel index -> input voxel index, composed exactly as MONAI's ``Rotate90(k % 4,
    spatial_axes=(0, 1))`` then ``Flip(spatial_axis=1)`` (for ``k >= 4``) update a MetaTensor's affine
    (``affine_new = affine @ map``). ``rank`` is the affine's spatial rank (3 for a 2D slice of a volume).

    Example:
        >>> dihedral_affine(4, (3, 5))[:2].tolist()  # left-right flip: j -> 4 - j
        [[1.0, 0.0, 0.0], [0.0, -1.0, 4.0]]
    """
    h, w = (int(v) for v in spatial_shape)
    q = k % 4
    new = (w, h) if q % 2 else (h, w)
    rot = np.array([[0.0, 1.0], [-1.0, 0.0]])  # MONAI's quarter turn about axes (0, 1): angle -pi/2
    lin = np.linalg.matrix_power(rot, q)
    # x_in = T(+(old - 1) / 2) @ R^q @ T(-(new - 1) / 2) @ x_out
    shift = np.array([(h - 1) / 2, (w - 1) / 2]) - lin @ np.array([(new[0] - 1) / 2, (new[1] - 1) / 2])
    m = np.eye(rank + 1)
    m[:2, :2], m[:2, rank] = lin, shift
    if k >= 4:  # then flip the last spatial axis of the rotated image
        flip = np.eye(rank + 1)
        flip[1, 1], flip[1, rank] = -1.0, new[1] - 1
        m = m @ flip
    return torch.as_tensor(m, dtype=torch.float64)


class RandDihedral2D(RandomizableTransform, InvertibleTransform):
    """One of the 8 dihedral elements (quarter turns, then an optional flip) of the last two dims.

    Any channel count and dtype (images and labels alike). On a MetaTensor the affine is updated as
    MONAI's ``Rotate90`` / ``Flip`` update it (:func:`dihedral_affine`) and the call is recorded, so
    ``inverse`` (and ``Compose.inverse`` / ``Invertd``) restores pixels and affine.

    Example:
        >>> aug = RandDihedral2D(prob=1.0).set_random_state(0)
        >>> x = torch.rand(1, 4, 4)
        >>> y = aug(x)
        >>> torch.equal(aug.inverse_k(y, aug.k), x)
        True
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, prob: float = 0.5) -> None:
        super().__init__(prob)
        self.k = 0

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self.k = int(self.R.randint(8)) if self._do_transform else 0

    @staticmethod
    def inverse_k(img: torch.Tensor, k: int) -> torch.Tensor:
        """Undo element ``k`` (reflections are their own inverse, quarter turns reverse)."""
        return F.dihedral_2d(img, (4 - k) % 4 if k < 4 else k)

    def _apply(self, img: NdarrayOrTensor, k: int, track: bool) -> NdarrayOrTensor:
        t = convert_to_tensor(img, track_meta=False)
        if t.ndim != 3:
            raise ValueError(f"RandDihedral2D: expected a (C, H, W) image, got shape {tuple(t.shape)}.")
        out = F.dihedral_2d(t, k) if k else t.clone()
        if not isinstance(img, MetaTensor) or not get_track_meta():
            return convert_to_dst_type(out, img)[0]
        size = list(t.shape[1:])
        xform = dihedral_affine(k, size, img.affine.shape[-1] - 1)
        if not track:  # inverse: only the affine goes back
            res = MetaTensor(out)
            res.copy_meta_from(img)
            res.affine = img.affine @ xform.to(img.affine)
            return res
        meta = self.track_transform_meta(
            img,
            sp_size=list(out.shape[1:]),
            affine=xform,
            extra_info={"k": k},
            orig_size=size,
            transform_info=self.get_transform_info(),
        )
        return MetaTensor(out).copy_meta_from(meta)

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        if randomize:
            self.randomize(None)
        return self._apply(img, self.k if self._do_transform else 0, True)

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        info = self.pop_transform(data)
        k = int(info[TraceKeys.EXTRA_INFO]["k"]) if info[TraceKeys.DO_TRANSFORM] else 0
        return self._apply(data, (4 - k) % 4 if k < 4 else k, False)
