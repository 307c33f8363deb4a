"""Convert 2D boxes between COCO / QuPath conventions and MONAI's detection convention.

Conventions (precisely):

- **COCO** ``bbox`` and **QuPath** ROI bounds (``getBoundsX/Y/Width/Height``, GeoJSON export):
  ``[x, y, width, height]`` with ``x`` = column (horizontal, to the right) and ``y`` = row (downwards),
  in continuous pixel coordinates: the box covers ``[x, x + width) x [y, y + height)``, so a box around
  the single pixel (row 3, column 5) is ``[5, 3, 1, 1]``. QuPath coordinates are at full resolution
  (level 0) of the slide.
- **MONAI** (``monai.data.box_utils.StandardMode`` = ``xyxy``, ``TO_REMOVE = 0``): ``[x0, y0, x1, y1]`` where
  ``x`` is the FIRST spatial axis of the channel-first array ``(C, H, W)``, i.e. the row, and ``y`` the
  second (column); maxima are exclusive (``x1 - x0`` = size). The same pixel is ``[3, 5, 4, 6]``.

So ``coco [x, y, w, h]`` -> ``monai [y, x, y + h, x + w]``. This assumes the patch tensor is laid out
``(C, H, W)`` (numpy / tifffile / openslide / torchvision order), as in ``monai_ext.data.wsi``. Images
read with MONAI's ``LoadImage`` + ``PILReader`` (default ``reverse_indexing=True``) are ``(C, W, H)``: for
those, COCO boxes are already in MONAI axis order, use
``monai.data.box_utils.convert_box_mode(boxes, src_mode="xywh", dst_mode="xyxy")`` instead.

``origin`` (the patch's top-left corner ``(x, y)`` in the source coordinates) and ``downsample`` (source
pixels per patch pixel) map slide-level QuPath/COCO coordinates into a patch read at a pyramid level.

Example:
    >>> coco_to_monai_boxes([[5, 3, 1, 1]]).tolist()
    [[3.0, 5.0, 4.0, 6.0]]
    >>> monai_to_coco_boxes([[3.0, 5.0, 4.0, 6.0]]).tolist()
    [[5.0, 3.0, 1.0, 1.0]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["coco_to_monai_boxes", "monai_to_coco_boxes", "qupath_geojson_to_monai_boxes"]


def _as_boxes(boxes: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(boxes, dtype=np.float32) if not isinstance(boxes, torch.Tensor) else boxes)
    if t.numel() == 0:
        return t.reshape(0, 4).float()
    if t.dim() != 2 or t.shape[1] != 4:
        raise ValueError(f"{name}: `boxes` must have shape (N, 4) (2D boxes), got {list(t.shape)}.")
    return t if t.is_floating_point() else t.float()


def coco_to_monai_boxes(
    boxes: Any, origin: Sequence[float] = (0.0, 0.0), downsample: float = 1.0
) -> torch.Tensor:
    """COCO/QuPath ``[x(col), y(row), w, h]`` -> MONAI ``StandardMode`` ``[row0, col0, row1, col1]``.

    Args:
        boxes: ``(N, 4)`` array-like.
        origin: patch top-left ``(x, y)`` in the boxes' coordinates, subtracted first.
        downsample: source pixels per patch pixel (e.g. 4.0 for a patch read at pyramid level 2).

    Example:
        >>> coco_to_monai_boxes([[110, 60, 8, 4]], origin=(100, 50), downsample=2.0).tolist()
        [[5.0, 5.0, 7.0, 9.0]]
    """
    b = _as_boxes(boxes, "coco_to_monai_boxes")
    if downsample <= 0:
        raise ValueError(f"coco_to_monai_boxes: `downsample` must be > 0, got {downsample}.")
    if bool((b[:, 2:] < 0).any()):
        raise ValueError("coco_to_monai_boxes: `boxes` width/height (columns 2, 3) must be >= 0.")
    x = (b[:, 0] - origin[0]) / downsample
    y = (b[:, 1] - origin[1]) / downsample
    w = b[:, 2] / downsample
    h = b[:, 3] / downsample
    return torch.stack([y, x, y + h, x + w], dim=1)


def monai_to_coco_boxes(
    boxes: Any, origin: Sequence[float] = (0.0, 0.0), downsample: float = 1.0
) -> torch.Tensor:
    """MONAI ``StandardMode`` 2D boxes -> COCO/QuPath ``[x(col), y(row), w, h]`` (inverse of the above).

    Example:
        >>> monai_to_coco_boxes([[5.0, 5.0, 7.0, 9.0]], origin=(100, 50), downsample=2.0).tolist()
        [[110.0, 60.0, 8.0, 4.0]]
    """
    b = _as_boxes(boxes, "monai_to_coco_boxes")
    if downsample <= 0:
        raise ValueError(f"monai_to_coco_boxes: `downsample` must be > 0, got {downsample}.")
    if bool((b[:, 2:] < b[:, :2]).any()):
        raise ValueError(
            "monai_to_coco_boxes: `boxes` must be [row0, col0, row1, col1] with row1 >= row0, col1 >= col0."
        )
    r0, c0, r1, c1 = b.unbind(dim=1)
    return torch.stack(
        [
            c0 * downsample + origin[0],
            r0 * downsample + origin[1],
            (c1 - c0) * downsample,
            (r1 - r0) * downsample,
        ],
        dim=1,
    )


def qupath_geojson_to_monai_boxes(
    features: Sequence[dict], origin: Sequence[float] = (0.0, 0.0), downsample: float = 1.0
) -> torch.Tensor:
    """Bounding boxes of QuPath GeoJSON ``Polygon`` / ``MultiPolygon`` features, in MONAI ``StandardMode``.

    Vertex coordinates are ``[x(col), y(row)]`` at level 0; the box spans min to max vertex (exclusive
    max in continuous coordinates, matching MONAI).

    Example:
        >>> feat = {"type": "Feature", "geometry": {"type": "Polygon",
        ...         "coordinates": [[[10, 20], [14, 20], [14, 26], [10, 26], [10, 20]]]}}
        >>> qupath_geojson_to_monai_boxes([feat]).tolist()
        [[20.0, 10.0, 26.0, 14.0]]
    """
    xywh = []
    for i, feat in enumerate(features):
        geom = feat.get("geometry") if isinstance(feat, dict) else None
        if not geom or geom.get("type") not in ("Polygon", "MultiPolygon"):
            raise ValueError(
                f"qupath_geojson_to_monai_boxes: `features[{i}]` must be a GeoJSON Feature with a Polygon or "
                f"MultiPolygon geometry, got {None if not geom else geom.get('type')!r}."
            )
        coords = geom["coordinates"]
        rings = coords if geom["type"] == "Polygon" else [ring for poly in coords for ring in poly]
        pts = np.concatenate([np.asarray(r, dtype=np.float64).reshape(-1, 2) for r in rings], axis=0)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        xywh.append([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])
    return coco_to_monai_boxes(np.asarray(xywh, dtype=np.float32).reshape(-1, 4), origin, downsample)
