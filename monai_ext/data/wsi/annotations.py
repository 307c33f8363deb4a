"""QuPath / GeoJSON annotations to masks and boxes at any pyramid level.

Reads a GeoJSON ``FeatureCollection``, a list of features (QuPath "Export objects as GeoJSON"),
one feature or one geometry. Coordinates are level-0 pixels with x = column, y = row and pixel
``(r, c)`` covering ``[c, c+1) x [r, r+1)`` (QuPath's convention). At a level with downsample ``d``
a point ``(x, y)`` falls at array position ``(y / d - 0.5, x / d - 0.5)``; polygons fill the pixels
whose centres lie inside the outer ring and outside its holes. ``Polygon``, ``MultiPolygon``,
``Point`` and ``MultiPoint`` are used; other geometries (lines) are skipped with one warning.

Example:
    >>> from monai_ext.data.wsi import annotations_to_mask, load_annotations
    >>> # anns = load_annotations("slide.geojson")
    >>> # mask = annotations_to_mask(anns, shape=(256, 256), downsample=16, classes={"Tumor": 1})
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Annotation", "annotations_to_boxes", "annotations_to_mask", "load_annotations"]


@dataclass
class Annotation:
    """One polygon (outer ring + holes) or point in level-0 (x, y) pixels.

    Attributes:
        kind: ``"polygon"`` or ``"point"``.
        rings: polygon: [outer (K, 2), hole (K, 2), ...]; point: [(1, 2)].
        name: classification name (QuPath ``properties.classification.name``) or None.
        properties: the feature's properties.
    """

    kind: str
    rings: list[np.ndarray]
    name: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)


def _class_name(props: dict[str, Any]) -> str | None:
    c = props.get("classification")
    if isinstance(c, dict):
        return c.get("name")
    if isinstance(c, str):
        return c
    return props.get("name") if isinstance(props.get("name"), str) else None


def _ring(coords: Any, where: str) -> np.ndarray:
    a = np.asarray(coords, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 2 or len(a) < 3:
        raise ValueError(f"{where}: a polygon ring needs >= 3 (x, y) positions, got shape {a.shape}")
    return a[:, :2]


def _parse_geometry(
    geom: dict[str, Any], props: dict[str, Any], where: str, skipped: list[str]
) -> list[Annotation]:
    gtype = geom.get("type")
    coords = geom.get("coordinates")
    name = _class_name(props)
    if gtype == "Polygon":
        return [Annotation("polygon", [_ring(r, where) for r in coords], name, props)]
    if gtype == "MultiPolygon":
        return [Annotation("polygon", [_ring(r, where) for r in poly], name, props) for poly in coords]
    if gtype == "Point":
        return [Annotation("point", [np.asarray([coords[:2]], np.float64)], name, props)]
    if gtype == "MultiPoint":
        return [Annotation("point", [np.asarray([p[:2]], np.float64)], name, props) for p in coords]
    if gtype == "GeometryCollection":
        out = []
        for g in geom.get("geometries", []):
            out += _parse_geometry(g, props, where, skipped)
        return out
    if gtype is None:
        raise ValueError(f"{where}: geometry has no 'type'")
    skipped.append(str(gtype))
    return []


def load_annotations(source: str | os.PathLike | dict[str, Any] | list[Any]) -> list[Annotation]:
    """Annotations from a GeoJSON file or an already-parsed GeoJSON object.

    Example:
        >>> anns = load_annotations({"type": "Feature", "properties": {"classification": {"name": "Tumor"}},
        ...     "geometry": {"type": "Point", "coordinates": [10.0, 20.0]}})
        >>> anns[0].kind, anns[0].name
        ('point', 'Tumor')
    """
    where = "annotations"
    if isinstance(source, str | os.PathLike):
        p = Path(source)
        where = f"annotation file '{p}'"
        if not p.is_file():
            raise FileNotFoundError(f"{where} does not exist")
        try:
            obj: Any = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{where} is not valid JSON ({e}); expected GeoJSON (e.g. QuPath export)") from e
    else:
        obj = source
    if isinstance(obj, dict) and obj.get("type") == "FeatureCollection":
        feats = obj.get("features", [])
    elif isinstance(obj, list):
        feats = obj
    elif isinstance(obj, dict) and obj.get("type") == "Feature":
        feats = [obj]
    elif isinstance(obj, dict) and "coordinates" in obj or (isinstance(obj, dict) and "geometries" in obj):
        feats = [{"type": "Feature", "geometry": obj, "properties": {}}]
    else:
        raise ValueError(f"{where}: expected a GeoJSON FeatureCollection, feature list, Feature or geometry")
    out: list[Annotation] = []
    skipped: list[str] = []
    for i, f in enumerate(feats):
        if not isinstance(f, dict) or not isinstance(f.get("geometry"), dict):
            raise ValueError(f"{where}: feature {i} has no geometry object")
        out += _parse_geometry(f["geometry"], f.get("properties") or {}, f"{where}, feature {i}", skipped)
    if skipped:
        warnings.warn(
            f"{where}: skipped {len(skipped)} geometries of unsupported type(s) {sorted(set(skipped))} "
            "(only Polygon, MultiPolygon, Point, MultiPoint are rasterised)",
            stacklevel=2,
        )
    return out


def _label(ann: Annotation, classes: dict[str, int] | None) -> int | None:
    if classes is None:
        return 1
    return classes.get(ann.name) if ann.name is not None else None


def annotations_to_mask(
    annotations: list[Annotation] | str | os.PathLike | dict[str, Any],
    shape: tuple[int, int],
    downsample: float = 1.0,
    classes: dict[str, int] | None = None,
    point_radius: float = 0.0,
    include_points: bool = True,
) -> np.ndarray:
    """uint8 label mask of ``shape`` at ``downsample`` (level-0 pixels per mask pixel).

    Args:
        annotations: annotations or a GeoJSON source for :func:`load_annotations`.
        shape: (height, width) of the mask, e.g. ``slide.level_shapes[k]``.
        downsample: e.g. ``slide.downsamples[k]``.
        classes: class name -> label; None labels every annotation 1; names not in it are skipped.
        point_radius: points are drawn as discs of this radius (mask pixels; 0 = one pixel).
        include_points: draw points too.

    Example:
        >>> sq = {"type": "Polygon", "coordinates": [[[0, 0], [64, 0], [64, 64], [0, 64], [0, 0]]]}
        >>> int(annotations_to_mask(sq, (8, 8), downsample=16).sum())
        16
    """
    from skimage.draw import disk, polygon

    anns = (
        annotations
        if isinstance(annotations, list) and all(isinstance(a, Annotation) for a in annotations)
        else load_annotations(annotations)
    )  # type: ignore[arg-type]
    if downsample <= 0:
        raise ValueError(f"downsample must be positive, got {downsample}")
    h, w = int(shape[0]), int(shape[1])
    mask = np.zeros((h, w), np.uint8)
    for a in anns:
        lab = _label(a, classes)
        if lab is None or lab == 0:
            continue
        if a.kind == "point":
            if not include_points:
                continue
            x, y = a.rings[0][0] / downsample - 0.5
            if point_radius > 0:
                rr, cc = disk((y, x), point_radius, shape=(h, w))
                mask[rr, cc] = lab
            elif 0 <= round(y) < h and 0 <= round(x) < w:
                mask[round(y), round(x)] = lab
            continue
        rings = [r / downsample - 0.5 for r in a.rings]
        outer = rings[0]
        r0 = max(int(np.floor(outer[:, 1].min())), 0)
        c0 = max(int(np.floor(outer[:, 0].min())), 0)
        r1 = min(int(np.ceil(outer[:, 1].max())) + 1, h)
        c1 = min(int(np.ceil(outer[:, 0].max())) + 1, w)
        if r0 >= r1 or c0 >= c1:
            continue
        local = np.zeros((r1 - r0, c1 - c0), bool)
        for i, ring in enumerate(rings):
            rr, cc = polygon(ring[:, 1] - r0, ring[:, 0] - c0, local.shape)
            local[rr, cc] = i == 0  # outer ring fills, holes clear
        mask[r0:r1, c0:c1][local] = lab
    return mask


def annotations_to_boxes(
    annotations: list[Annotation] | str | os.PathLike | dict[str, Any],
    downsample: float = 1.0,
    classes: dict[str, int] | None = None,
    point_box: float = 32.0,
    clip_shape: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``(N, 4)`` as (x0, y0, x1, y1) at ``downsample`` and their labels ``(N,)``.

    Polygons give their outer ring's bounding box; points a ``point_box``-sized box (mask pixels)
    centred on the point. ``clip_shape`` = (height, width) clips boxes to the level and drops empty ones.

    Example:
        >>> pt = {"type": "Point", "coordinates": [160, 320]}
        >>> annotations_to_boxes(pt, downsample=16, point_box=4)[0].tolist()
        [[8.0, 18.0, 12.0, 22.0]]
    """
    anns = (
        annotations
        if isinstance(annotations, list) and all(isinstance(a, Annotation) for a in annotations)
        else load_annotations(annotations)
    )  # type: ignore[arg-type]
    boxes, labels = [], []
    for a in anns:
        lab = _label(a, classes)
        if lab is None or lab == 0:
            continue
        if a.kind == "point":
            x, y = a.rings[0][0] / downsample
            half = point_box / 2.0
            boxes.append([x - half, y - half, x + half, y + half])
        else:
            r = a.rings[0] / downsample
            boxes.append([r[:, 0].min(), r[:, 1].min(), r[:, 0].max(), r[:, 1].max()])
        labels.append(lab)
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    lab_arr = np.asarray(labels, np.int64)
    if clip_shape is not None and len(b):
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, clip_shape[1])
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, clip_shape[0])
        keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        b, lab_arr = b[keep], lab_arr[keep]
    return b, lab_arr
