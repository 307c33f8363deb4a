"""MONAI-style array spatial transforms over the torch kernels, with MONAI's invertible-transform tracking.

``AffineWarp`` / ``RandAffineWarp`` resample on the image's device with ``affine_grid`` + ``grid_sample``,
update a MetaTensor's affine exactly as ``monai.transforms.Affine`` does and record themselves in
``applied_operations``, so ``inverse`` (and MONAI's ``Invertd`` / ``Compose.inverse``) undo them.
``RandLabelBalancedCrop`` crops via MONAI's ``Crop`` machinery (invertible by padding back).

Example:
    >>> import torch
    >>> from monai.data import MetaTensor
    >>> from monai_ext.transforms.array import AffineWarp
    >>> t = AffineWarp(torch.eye(4).numpy())
    >>> img = MetaTensor(torch.rand(1, 8, 8, 8))
    >>> t.inverse(t(img)).applied_operations
    []
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Affine, Crop, InvertibleTransform, RandomizableTransform, Transform
from monai.transforms.inverse import TraceableTransform
from monai.utils import TraceKeys, TransformBackends

from monai_ext.transforms.array.intensity import plain, rewrap, to_torch  # noqa: F401 (to_torch re-used)
from monai_ext.transforms.batch.spatial import _sym
from monai_ext.transforms.functional import spatial as fs

__all__ = ["AffineWarp", "RandAffineWarp", "RandElasticWarp", "RandLabelBalancedCrop"]


class _AffineMixin(InvertibleTransform):
    """Shared affine resample + metadata tracking + inverse."""

    def _warp(
        self, img: torch.Tensor, mat: np.ndarray, mode: str, padding_mode: str, do_resampling: bool = True
    ) -> torch.Tensor:
        size = list(img.shape[1:])
        if do_resampling:
            m = torch.as_tensor(mat, dtype=torch.float32).to(img.device, non_blocking=True)
            out = fs.affine_resample(plain(img), m, mode, padding_mode)
        else:
            out, mat = plain(img).clone(), np.eye(len(size) + 1)
        if not isinstance(img, MetaTensor):
            return out
        rank = len(size)
        extra = {"affine": mat, "mode": mode, "padding_mode": padding_mode, "do_resampling": do_resampling}
        meta = TraceableTransform.track_transform_meta(
            img,
            sp_size=size,
            affine=Affine.compute_w_affine(rank, mat, size, size),
            extra_info=extra,
            orig_size=size,
            transform_info=self.get_transform_info(),
        )
        res = MetaTensor(out)
        return res.copy_meta_from(meta)

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        """Undo the most recent application (MONAI ``applied_operations`` stack)."""
        transform = self.pop_transform(data)
        info = transform[TraceKeys.EXTRA_INFO]
        if not info["do_resampling"]:
            return data
        inv = np.linalg.inv(np.asarray(info["affine"], dtype=np.float64))
        m = torch.as_tensor(inv, dtype=torch.float32).to(data.device, non_blocking=True)
        out = MetaTensor(fs.affine_resample(plain(data), m, info["mode"], info["padding_mode"]))
        out.copy_meta_from(data)
        size = list(data.shape[1:])
        xform = Affine.compute_w_affine(out.affine.shape[-1] - 1, inv, size, size)
        out.affine = out.affine @ torch.as_tensor(xform, dtype=out.affine.dtype)
        return out


class AffineWarp(_AffineMixin, Transform):
    """Resample a sample by a fixed ``(d+1, d+1)`` matrix (MONAI ``Affine`` convention); invertible.

    Example:
        >>> m = np.diag([1.0, -1.0, 1.0])  # flip the second axis
        >>> AffineWarp(m, mode="nearest")(torch.arange(3.0).reshape(1, 1, 3)).tolist()
        [[[2.0, 1.0, 0.0]]]
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, affine: Any, mode: str = "bilinear", padding_mode: str = "zeros") -> None:
        self.affine = np.asarray(affine, dtype=np.float64)
        if self.affine.ndim != 2 or self.affine.shape not in ((3, 3), (4, 4)):
            raise ValueError(f"AffineWarp: `affine` must be 3x3 (2D) or 4x4 (3D), got {self.affine.shape}.")
        self.mode, self.padding_mode = mode, padding_mode

    def __call__(self, img: Any, mode: str | None = None, padding_mode: str | None = None) -> torch.Tensor:
        img = to_torch(img, "AffineWarp")
        if img.ndim - 1 != self.affine.shape[0] - 1:
            raise ValueError(
                f"AffineWarp: a {self.affine.shape} matrix needs a {self.affine.shape[0] - 1}D image."
            )
        return self._warp(img, self.affine, mode or self.mode, padding_mode or self.padding_mode)


class RandAffineWarp(_AffineMixin, RandomizableTransform):
    """Random affine with MONAI ``RandAffine`` ranges, resampled on the device; invertible.

    Example:
        >>> t = RandAffineWarp(prob=1.0, rotate_range=0.3, scale_range=0.1)
        >>> t.set_random_state(0)(torch.rand(1, 8, 8, 8)).shape
        torch.Size([1, 8, 8, 8])
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        prob: float = 0.1,
        rotate_range: float | Sequence[Any] | None = None,
        shear_range: float | Sequence[Any] | None = None,
        translate_range: float | Sequence[Any] | None = None,
        scale_range: float | Sequence[Any] | None = None,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        self.ranges = {
            "rotate": rotate_range,
            "shear": shear_range,
            "translate": translate_range,
            "scale": scale_range,
        }
        self.mode, self.padding_mode = mode, padding_mode
        self.matrix = np.eye(4)

    def randomize(self, data: Any = None, spatial_dims: int = 3) -> None:
        super().randomize(None)
        d = spatial_dims
        if not self._do_transform:
            self.matrix = np.eye(d + 1)
            return
        widths = {"rotate": 1 if d == 2 else 3, "shear": 2 if d == 2 else 6, "translate": d, "scale": d}
        p = {}
        for k, v in self.ranges.items():
            r = _sym(v, widths[k], f"{k}_range", "RandAffineWarp")
            p[k] = torch.tensor([[self.R.uniform(lo, hi) for lo, hi in r]], dtype=torch.float64)
        p["scale"] = p["scale"] + 1.0
        self.matrix = fs.affine_matrix(d, **p)[0].double().numpy()

    def __call__(
        self, img: Any, mode: str | None = None, padding_mode: str | None = None, randomize: bool = True
    ) -> torch.Tensor:
        img = to_torch(img, "RandAffineWarp")
        if randomize:
            self.randomize(spatial_dims=img.ndim - 1)
        return self._warp(
            img, self.matrix, mode or self.mode, padding_mode or self.padding_mode, self._do_transform
        )


class RandElasticWarp(RandomizableTransform):
    """Elastic deformation: ``U(-magnitude, magnitude)`` voxel displacements on a control lattice.

    Not invertible (as MONAI's ``Rand2DElastic`` / ``Rand3DElastic``); metadata is kept.

    Example:
        >>> RandElasticWarp(prob=1.0, magnitude=2.0).set_random_state(0)(torch.rand(1, 16, 16)).shape
        torch.Size([1, 16, 16])
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        prob: float = 0.1,
        magnitude: float = 4.0,
        control_points: int = 6,
        mode: str = "bilinear",
        padding_mode: str = "border",
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        if magnitude < 0 or control_points < 2:
            raise ValueError(
                f"RandElasticWarp: need `magnitude` >= 0, `control_points` >= 2, "
                f"got {magnitude}, {control_points}."
            )
        self.magnitude, self.control_points, self.mode, self.padding_mode = (
            magnitude,
            control_points,
            mode,
            padding_mode,
        )
        self.displacement = np.zeros(0)

    def randomize(self, data: Any = None, spatial_dims: int = 3) -> None:
        super().randomize(None)
        if self._do_transform:
            shape = (1, spatial_dims, *([self.control_points] * spatial_dims))
            self.displacement = self.R.uniform(-self.magnitude, self.magnitude, size=shape).astype(np.float32)

    def __call__(
        self, img: Any, mode: str | None = None, padding_mode: str | None = None, randomize: bool = True
    ) -> torch.Tensor:
        img = to_torch(img, "RandElasticWarp")
        if randomize:
            self.randomize(spatial_dims=img.ndim - 1)
        if not self._do_transform:
            return img
        disp = torch.as_tensor(self.displacement).to(img.device, non_blocking=True)
        out = fs.elastic_resample(
            plain(img)[None], disp, mode=mode or self.mode, padding_mode=padding_mode or self.padding_mode
        )
        return rewrap(out[0], img)


class RandLabelBalancedCrop(Crop, RandomizableTransform):
    """``num_samples`` crops centred on classes drawn with ``ratios`` (pos/neg or per class); invertible.

    Two ratios = (positive, negative) as MONAI ``RandCropByPosNegLabel``; more = per class value as
    ``RandCropByLabelClasses``. Centres are drawn on the label's device; only the ``num_samples`` start
    indices are read back to slice (one small host copy per sample). Each crop records a MONAI ``Crop``
    operation, so ``inverse`` pads it back into the original grid.

    Example:
        >>> lab = torch.zeros(1, 8, 8, dtype=torch.long)
        >>> lab[0, 6, 6] = 1
        >>> crops = RandLabelBalancedCrop((4, 4), 2, ratios=(1.0, 0.0))(torch.rand(1, 8, 8), lab)
        >>> [c.shape for c in crops]
        [torch.Size([1, 4, 4]), torch.Size([1, 4, 4])]
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        spatial_size: Sequence[int],
        num_samples: int = 1,
        ratios: Sequence[float] = (1.0, 1.0),
        image_threshold: float | None = None,
    ) -> None:
        Crop.__init__(self)
        RandomizableTransform.__init__(self, 1.0)
        if num_samples < 1:
            raise ValueError(f"RandLabelBalancedCrop: `num_samples` must be >= 1, got {num_samples}.")
        self.spatial_size, self.num_samples = tuple(int(s) for s in spatial_size), num_samples
        self.ratios, self.image_threshold = tuple(float(r) for r in ratios), image_threshold
        self.starts: list[list[int]] = []

    def randomize(self, label: torch.Tensor, image: torch.Tensor | None = None) -> None:  # type: ignore[override]
        seed = int(self.R.randint(0, 2**31 - 1))
        g = torch.Generator(device=label.device)
        g.manual_seed(seed)
        starts = fs.sample_crop_starts(
            plain(label)[None],
            self.spatial_size,
            self.num_samples,
            self.ratios,
            generator=g,
            image=None if image is None or self.image_threshold is None else plain(image)[None],
            image_threshold=self.image_threshold or 0.0,
        )
        self.starts = starts[0].tolist()

    def __call__(self, img: Any, label: Any = None, randomize: bool = True) -> list[torch.Tensor]:  # type: ignore[override]
        img = to_torch(img, "RandLabelBalancedCrop")
        if randomize:
            if label is None:
                raise ValueError("RandLabelBalancedCrop: `label` is required to choose crop centres.")
            label = to_torch(label, "RandLabelBalancedCrop")
            if label.shape[0] != 1 or label.shape[1:] != img.shape[1:]:
                raise ValueError(
                    "RandLabelBalancedCrop: `label` must be (1, *spatial) with spatial "
                    f"{tuple(img.shape[1:])}, got {tuple(label.shape)}."
                )
            self.randomize(label, img)
        out = []
        for st in self.starts:
            slices = tuple(slice(s, s + n) for s, n in zip(st, self.spatial_size))
            out.append(Crop.__call__(self, img, slices))
        return out
