"""Synthetic H&E tissue patches: 4 tissue classes, stain variation between slides, nuclei boxes.

Each patch (default 64x64 px at 1.0 um/px, RGB PNG) belongs to one of several simulated slides
and shows one tissue class, rendered in optical-density space from haematoxylin and eosin stain
vectors (see :mod:`monai_ext.data.synthetic._he`):

- ``adipose`` (label 0): white fat cells with thin eosin membranes and flat nuclei; some patches
  hold a stroma strand or an edge of empty glass;
- ``stroma`` (1): eosin collagen fibres following a smooth orientation field, sparse spindle
  nuclei; some patches are cellular or inflamed (lymphocytes);
- ``lymphocytes`` (2): small, dense, round nuclei at varying density, with stroma between;
- ``tumour`` (3): large, crowded, pleomorphic nuclei with nucleoli, at different densities, nests
  separated by stroma.

What makes it hard: every slide has its own stain matrix (H and E vectors moved by about 5-10
degrees from Ruifrok & Johnston's) and its own stain intensities (+-35 %) and illumination, and the
class compositions overlap (inflamed stroma vs. sparse lymphocytes, sparse tumour vs. cellular
stroma), so mean colour says little across slides: a mean/std RGB + logistic-regression baseline
on held-out slides reaches about 0.55-0.7 accuracy. The information a CNN needs is there (nuclear
size, shape, crowding, chromatin, fibre texture); with stain normalisation or augmentation a small
CNN should reach >= 0.95.

Outputs: ``images/p_00000.png``; ``datalist.csv`` (image, label, class_name, slide, split);
``datalist.json`` with ``training``/``validation``/``test`` lists of
``{"image", "label", "class_name", "slide", "boxes", "boxes_coco", "box_labels"}``. ``boxes`` are
nuclei boxes ``[r0, c0, r1, c1]`` in pixels of the PNG array as PIL/numpy read it (first spatial
axis = row), exclusive maximum, so ``img[r0:r1, c0:c1]`` crops the nucleus; ``boxes_coco`` are the
same boxes as COCO ``[x, y, width, height]`` with x = column. ``box_labels``: 1 tumour,
2 lymphocyte, 3 fibroblast, 4 flat (adipocyte/endothelial) nucleus. The split is by slide (the
last slides are test, the one before validation) when there are at least 3 slides.

Example:
    >>> from monai_ext.data.synthetic import generate
    >>> # out = generate("he_patches", "/tmp/he", n=32, seed=0)
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from monai_ext.data.synthetic._common import atomic_write_text, rng_for, write_json
from monai_ext.data.synthetic._he import (
    ADIPOSE,
    GLASS,
    LYMPH,
    NUCLEUS_KINDS,
    STROMA,
    TUMOUR,
    SlideStain,
    SpriteBank,
    TissueMap,
    nucleus_boxes,
    random_stain,
    render_region,
    sample_objects,
    value_noise,
)

__all__ = ["generate_he_patches", "CLASS_NAMES"]

#: Patch class names by integer label.
CLASS_NAMES = ("adipose", "stroma", "lymphocytes", "tumour")

_MAP_CELL = 8  # px per composition-map cell
_MARGIN = 16  # px rendered around the patch so nuclei are cut by the border as in real tiles


def _slide_rng(seed: int, slide: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), 1_000_003, int(slide)]))


def _soft(field: np.ndarray, q: float, width: float = 0.08) -> np.ndarray:
    """Soft threshold of ``field`` at its quantile ``q`` (fraction ``1 - q`` of the area is 'on')."""
    return 1.0 / (1.0 + np.exp(-(field - np.quantile(field, q)) / width))


def _composition(
    label: int, rng: np.random.Generator, shape: tuple[int, int]
) -> tuple[TissueMap, dict, float, float]:
    """Composition of one patch of class ``label``: (map, object density factors, fibre gain, OD gain)."""
    mh, mw = shape
    seeds = rng.integers(0, 2**31, 2)
    f1 = value_noise(0, 0, mh, mw, rng.uniform(2.0, 4.0), int(seeds[0]))
    f2 = value_noise(0, 0, mh, mw, rng.uniform(2.0, 4.0), int(seeds[1]))
    wts = np.zeros((5, mh, mw))
    density = None
    dens: dict[int, float] = {5: rng.uniform(0.6, 1.4), 3: rng.uniform(0.6, 1.6)}
    gain = rng.uniform(0.6, 1.3)
    od_gain = float(np.exp(rng.normal(0.0, 0.18)))  # section thickness / staining time of this area
    if label == 3:  # tumour nests at variable density, stroma (maybe inflamed) in between
        nest = _soft(f1, rng.uniform(0.0, 0.4))
        inf = rng.uniform(0.0, 0.5)
        til = rng.uniform(0.0, 0.35) if rng.uniform() < 0.4 else 0.0  # tumour-infiltrating lymphocytes
        wts[TUMOUR] = nest * (1 - til)
        wts[STROMA] = (1 - nest) * (1 - inf)
        wts[LYMPH] = (1 - nest) * inf + nest * til
        density = rng.uniform(0.35, 1.6) * (1.0 + 0.3 * (f2 - 0.5))
    elif label == 2:  # lymphocytes at variable density with stroma
        lym = _soft(f1, rng.uniform(0.0, 0.5)) * rng.uniform(0.45, 1.0)
        wts[LYMPH] = lym
        wts[STROMA] = 1 - lym
        dens[2] = rng.uniform(0.5, 1.8)
    elif label == 1:  # stroma: maybe cellular, inflamed or with a little fat
        wts[STROMA] = 1.0
        if rng.uniform() < 0.55:
            lym = _soft(f1, rng.uniform(0.4, 0.9)) * rng.uniform(0.4, 0.9)
            wts[LYMPH] = lym
            wts[STROMA] -= lym
        if rng.uniform() < 0.3:
            fat = _soft(f2, rng.uniform(0.65, 0.9))
            wts[ADIPOSE] = fat * wts[STROMA]
            wts[STROMA] -= wts[ADIPOSE]
        if rng.uniform() < 0.35:
            dens[3] = rng.uniform(1.5, 3.5)
    else:  # adipose, maybe a stroma strand or the tissue edge
        wts[ADIPOSE] = 1.0
        if rng.uniform() < 0.6:
            strand = _soft(f1, rng.uniform(0.55, 0.9))
            wts[STROMA] = strand
            wts[ADIPOSE] -= strand
        if rng.uniform() < 0.25:
            glass = _soft(f2, rng.uniform(0.5, 0.85)) * wts[ADIPOSE]
            wts[GLASS] = glass
            wts[ADIPOSE] -= glass
    return TissueMap(wts, _MAP_CELL, density), dens, gain, od_gain


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage

    out = ndimage.gaussian_filter(img.astype(np.float32), (sigma, sigma, 0), mode="reflect")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img, mode="RGB").save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def generate_he_patches(
    out_dir: Path,
    n: int,
    seed: int,
    size: int = 64,
    mpp: float = 1.0,
    n_slides: int = 8,
    stain_variation: float = 1.0,
    **options: Any,
) -> dict[str, Any]:
    """Write ``n`` H&E patches (balanced classes, spread over ``n_slides`` slides) into ``out_dir``.

    Args:
        out_dir: existing empty folder.
        n: number of patches (>= 1).
        seed: random seed; the same seed gives byte-identical files.
        size: patch side in pixels (>= 16).
        mpp: microns per pixel (0.25-2.0).
        n_slides: number of simulated slides, each with its own stain (>= 1).
        stain_variation: spread of the per-slide stains (0 = identical Ruifrok stains).

    Returns:
        summary dict (also written to ``summary.json``).
    """
    if options:
        raise ValueError(
            f"unknown option(s) for he_patches: {', '.join(sorted(options))}; "
            "expected size, mpp, n_slides, stain_variation"
        )
    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise ValueError(f"option size must be an integer >= 16 (patch side in pixels), got {size!r}")
    if not 0.25 <= float(mpp) <= 2.0:
        raise ValueError(f"option mpp must be in [0.25, 2.0] microns per pixel, got {mpp!r}")
    if isinstance(n_slides, bool) or not isinstance(n_slides, int) or n_slides < 1:
        raise ValueError(f"option n_slides must be a positive integer, got {n_slides!r}")
    if not 0.0 <= float(stain_variation) <= 3.0:
        raise ValueError(f"option stain_variation must be in [0, 3], got {stain_variation!r}")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    n_sl = max(1, min(n_slides, n))
    slides = []
    for s in range(n_sl):
        r = _slide_rng(seed, s)
        slides.append((random_stain(r, float(stain_variation)), SpriteBank(r, float(mpp))))
    if n_sl >= 3:
        n_test = max(1, round(0.25 * n_sl))
        split_of_slide = {
            s: "test" if s >= n_sl - n_test else "validation" if s == n_sl - n_test - 1 else "training"
            for s in range(n_sl)
        }
    else:
        split_of_slide = None
    pad = size + 2 * _MARGIN
    mshape = (-(-pad // _MAP_CELL),) * 2
    rows, lists = [], {"training": [], "validation": [], "test": []}
    n_boxes = 0
    for i in range(n):
        slide, label = i % n_sl, (i // n_sl) % len(CLASS_NAMES)
        stain, bank = slides[slide]
        rng = rng_for(seed, i)
        tmap, dens, gain, od_gain = _composition(label, rng, mshape)
        tex_seed = int(rng.integers(0, 2**31))
        # uneven staining across the slide: local H and E uptake vary around the slide's stain
        stain = SlideStain(stain.vectors, stain.scale * np.exp(rng.normal(0.0, 0.3, 2)), stain.background)
        objs = sample_objects(
            rng, tmap, bank, 0, 0, pad, pad, float(mpp), orient_seed=tex_seed + 5, density=dens
        )
        img = render_region(
            tmap,
            objs,
            bank,
            stain,
            _MARGIN,
            _MARGIN,
            size,
            size,
            float(mpp),
            tex_seed,
            rng,
            2.5,
            gain,
            od_gain,
        )
        boxes, kinds = nucleus_boxes(objs, bank, _MARGIN, _MARGIN, size, size)
        n_boxes += len(boxes)
        if rng.uniform() < 0.5:  # scanner focus varies over the slide
            img = _blur(img, rng.uniform(0.3, 0.9))
        name = f"images/p_{i:05d}.png"
        _write_bytes(out_dir / name, _png_bytes(img))
        split = (
            split_of_slide[slide]
            if split_of_slide
            else ("test" if i >= n - max(1, n // 5) and n >= 5 else "training")
        )
        rows.append([name, label, CLASS_NAMES[label], slide, split])
        lists[split].append(
            {
                "image": name,
                "label": label,
                "class_name": CLASS_NAMES[label],
                "slide": slide,
                "boxes": boxes.tolist(),
                "boxes_coco": [[c0, r0, c1 - c0, r1 - r0] for r0, c0, r1, c1 in boxes.tolist()],
                "box_labels": kinds.tolist(),
            }
        )
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(["image", "label", "class_name", "slide", "split"])
    wr.writerows(rows)
    atomic_write_text(out_dir / "datalist.csv", buf.getvalue())
    write_json(out_dir / "datalist.json", lists)
    summary = {
        "kind": "he_patches",
        "n": n,
        "seed": seed,
        "size": size,
        "mpp": float(mpp),
        "classes": list(CLASS_NAMES),
        "box_labels": {str(k): v for k, v in NUCLEUS_KINDS.items()},
        "box_convention": "boxes: [r0, c0, r1, c1] rows first, exclusive max; boxes_coco: [x, y, w, h]",
        "split": {k: len(v) for k, v in lists.items()},
        "split_by_slide": split_of_slide is not None,
        "n_boxes": n_boxes,
        "slides": [{"slide": s, **st.as_dict()} for s, (st, _) in enumerate(slides)],
        "targets": {"tissue_classification_accuracy": 0.95, "nuclei_detection_map50": 0.80},
    }
    write_json(out_dir / "summary.json", summary)
    return summary
