"""Synthetic chest CT with lung nodules: boxes for detection, malignancy for classification.

Each case is a low-dose, non-contrast chest CT phantom in Hounsfield units (default 128x128x64 voxels at
2.5 mm isotropic, a 320x320x160 mm field of view): body outline, subcutaneous fat, chest-wall muscle,
oblique ribs, vertebrae with discs, mediastinum (fat/soft-tissue mix), heart, descending aorta,
trachea, diaphragm domes with liver/spleen below, and two lungs (about -860 HU, denser posteriorly,
with parenchymal texture) holding branching, tapering vessel trees (blood ~30 HU, partial volume
makes small vessels -700..0 HU). Scanner PSF blur and correlated noise (sd 15-30 HU) are applied last.

Each scan holds 1-3 nodules of 3-30 mm diameter: solid (about +25 HU), part-solid or ground-glass
(about -550 HU), isolated, juxtavascular (touching a vessel) or juxtapleural. Malignancy (about 40 %)
is decided first; it then drives the *shape* (lobulation: union of offset lobes; spiculation: thin
tapered spicules radiating from the surface), the nodule type mix and a growth feature (volume
doubling time, VDT, written per nodule with measurement noise). Sizes overlap strongly between the
classes (median diameter 10 mm benign vs 11.5 mm malignant), and a few benign nodules calcify.

Files::

    images/case_000.nii.gz      int16 HU, diagonal RAS affine (axis 0 towards the patient's right)
    datalist.json               detection datalist, model-zoo ``lung_nodule_ct_detection`` layout
    nodules.json                one entry per nodule (crop box + malignancy) for classification
    summary.json

Box conventions (``datalist.json``, per case ``"box"``/``"label"`` lists as in the model zoo):

* ``box``: MONAI mode ``"cccwhd"`` in **world millimetres, LPS** (like LUNA16 coordinates): centre
  ``(x, y, z)`` then edge lengths ``(w, h, d)`` = the nodule diameter. Use it as the model zoo does,
  ``AffineBoxToImageCoordinated(..., affine_lps_to_ras=True)`` on an image loaded with a RAS affine.
  ``world_RAS = affine @ [i, j, k, 1]``; LPS negates the first two coordinates.
* ``box_voxel``: MONAI mode ``"xyzxyz"`` in integer **voxel indices** of the array (first spatial
  axis first), **exclusive max**: ``img[x1:x2, y1:y2, z1:z2]`` is exactly the set of voxels whose
  centres lie inside the world box.
* ``label``: detection class, always 0 (one class, "nodule"); ``malignancy``: 0 benign, 1 malignant.
  Per nodule also ``diameter_mm``, ``nodule_type``, ``attachment``, ``volume_doubling_time_days`` and
  ``growth_rate_per_year`` (= 365 ln 2 / VDT; both noisy measurements).

What makes it hard: vessels in the nodule HU range branch, cross and run through slices, so an
HU threshold with connected components finds blobs everywhere and merges juxtavascular/juxtapleural
nodules with vessels or the chest wall; ground-glass nodules sit only ~300 HU above the parenchyma;
nodules of 3-5 mm span one or two voxels. For malignancy, diameter and mean HU overlap between the
classes; the information is in the 3D shape (lobulation, spicules), which needs a 3D model.
Measured: HU-threshold + connected-components detector (lung mask by closing and hole filling,
components ranked by compactness) CPM (mean sensitivity at 1/8..8 false positives per scan) about
0.2 (target 0.85); logistic regression on diameter + mean HU, cross-validated, malignancy AUC about
0.6 on 600 nodules (target 0.85). The information a 3D model needs is there: vessels are tubes that
continue across slices while nodules are blobs, and the shape parameters differ strongly between the
classes (lobulation Beta(4, 2) vs Beta(1.2, 4); spicules on 70 % of malignant vs 12 % of benign
nodules), visible on nodules larger than about 6 mm; VDT adds a tabular cue.

Example:
    >>> from monai_ext.data.synthetic import generate
    >>> # out = generate("ct_lung_nodules", "/tmp/nodules", n=12, seed=0)
    >>> # json.load(open(out / "datalist.json"))["training"][0]["box"]  # [[x, y, z, w, h, d], ...]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_ext.data.synthetic._chest import (
    ChestPhantom,
    blend_max,
    finish_scan,
    nodule_fraction,
    render_chest,
    smooth_field,
)
from monai_ext.data.synthetic._common import ras_affine, rng_for, write_json, write_nifti

__all__ = ["generate_ct_lung_nodules", "split_indices", "world_box_to_voxel"]

NODULE_TYPES = ("solid", "part-solid", "ground-glass")


def split_indices(n: int) -> list[str]:
    """Deterministic split per case: first ~65 % training, next ~15 % validation, last ~20 % test."""
    n_test = max(1, round(0.2 * n)) if n >= 3 else 0
    n_val = max(1, round(0.15 * n)) if n >= 5 else 0
    n_train = n - n_test - n_val
    return ["training"] * n_train + ["validation"] * n_val + ["test"] * n_test


def world_box_to_voxel(box_cccwhd_lps: Sequence[float], affine: np.ndarray) -> list[int]:
    """World LPS ``cccwhd`` box (mm) -> integer voxel ``xyzxyz`` box, exclusive max, for a RAS ``affine``.

    The result selects the voxels whose centres lie inside the box (at least the centre voxel).
    """
    b = np.asarray(box_cccwhd_lps, dtype=float)
    inv = np.linalg.inv(np.asarray(affine, dtype=float))
    corners = []
    for sx in (-0.5, 0.5):
        for sy in (-0.5, 0.5):
            for sz in (-0.5, 0.5):
                lps = b[:3] + np.array([sx, sy, sz]) * b[3:]
                corners.append((inv @ np.array([-lps[0], -lps[1], lps[2], 1.0]))[:3])
    c = np.asarray(corners)
    lo = np.ceil(c.min(0) - 1e-6).astype(int)
    hi = np.floor(c.max(0) + 1e-6).astype(int) + 1
    centre = np.rint((inv @ np.array([-b[0], -b[1], b[2], 1.0]))[:3]).astype(int)
    empty = hi <= lo
    lo = np.where(empty, centre, lo)
    hi = np.where(empty, centre + 1, hi)
    return [int(v) for v in (*lo, *hi)]


def _sample_nodule(rng: np.random.Generator, d_range: tuple[float, float]) -> dict[str, Any]:
    """Latent malignancy first, then diameter, type, shape, growth (all overlapping between classes)."""
    mal = bool(rng.random() < 0.4)
    diam = float(np.clip(math.exp(rng.normal(math.log(11.5 if mal else 10.0), 0.42)), *d_range))
    ntype = str(rng.choice(NODULE_TYPES, p=[0.66, 0.22, 0.12] if mal else [0.70, 0.12, 0.18]))
    lob = float(rng.beta(4.0, 2.0) if mal else rng.beta(1.2, 4.0))
    if mal:
        spic = float(rng.uniform(0.35, 1.0) if rng.random() < 0.7 else rng.uniform(0.0, 0.25))
    else:
        spic = float(rng.uniform(0.3, 0.8) if rng.random() < 0.12 else rng.uniform(0.0, 0.15))
    calcified = bool((not mal) and ntype == "solid" and rng.random() < 0.04)
    vdt_true = math.exp(rng.normal(math.log(230.0 if mal else 620.0), 0.55 if mal else 0.65))
    vdt = float(vdt_true * math.exp(rng.normal(0.0, 0.3)))  # two-scan volumetry error
    return {
        "malignant": mal,
        "diameter": diam,
        "type": ntype,
        "lobulation": lob,
        "spiculation": spic,
        "calcified": calcified,
        "vdt": vdt,
        "attachment": str(rng.choice(["isolated", "juxtavascular", "juxtapleural"], p=[0.45, 0.35, 0.2])),
        "hu_solid": float(rng.normal(25.0, 20.0)),
        "hu_ggo": float(rng.normal(-555.0, 50.0)),
        "core_fraction": float(rng.uniform(0.35, 0.65)),
        "hu_calc": float(rng.uniform(250.0, 700.0)),
    }


def _free(
    chest: ChestPhantom, centre: np.ndarray, radius: float, placed: list[tuple[np.ndarray, float]]
) -> bool:
    """True when a nodule at ``centre`` lies wholly inside the scan and clear of the nodules placed."""
    sp = np.asarray(chest.spacing, dtype=float)
    extent = (np.asarray(chest.hu.shape) - 1) * sp  # array-frame mm of the last voxel centre
    margin = radius + 1.5 * sp  # the nodule plus a voxel and a half of partial volume / spiculation
    if np.any(centre - margin < 0) or np.any(centre + margin > extent):
        return False
    return all(np.linalg.norm(centre - c) > radius + r + 4.0 for c, r in placed)


def _place(
    rng: np.random.Generator,
    chest: ChestPhantom,
    radius: float,
    attachment: str,
    placed: list[tuple[np.ndarray, float]],
) -> tuple[np.ndarray, str]:
    """Pick a centre (array-frame mm) for a nodule of ``radius`` with the requested attachment."""
    sp = np.asarray(chest.spacing)
    edt = chest.lung_edt
    shape = np.asarray(edt.shape)
    if attachment == "juxtavascular" and chest.vessels:
        big = [s for s in chest.vessels if s[2] > 1.2]
        for _ in range(30 if big else 0):
            p0, p1, r0, r1 = big[int(rng.integers(len(big)))]
            t = float(rng.uniform(0.1, 0.9))
            axis = p1 - p0
            perp = np.cross(axis, rng.normal(size=3))
            perp /= np.linalg.norm(perp) + 1e-9
            c = p0 + t * axis + perp * (0.75 * radius + r0 + (r1 - r0) * t)
            idx = np.rint(c / sp).astype(int)
            if (
                np.all(idx >= 0)
                and np.all(idx < shape)
                and edt[tuple(idx)] >= 0.8 * radius
                and _free(chest, c, radius, placed)
            ):
                return c, attachment
    if attachment == "juxtapleural":
        cand = np.flatnonzero((edt >= 0.4 * radius) & (edt <= 0.8 * radius + 0.5 * sp.max()))
        for _ in range(30 if cand.size else 0):
            c = (
                np.array(np.unravel_index(cand[int(rng.integers(cand.size))], edt.shape))
                + rng.uniform(-0.5, 0.5, 3)
            ) * sp
            if _free(chest, c, radius, placed):
                return c, attachment
    for margin in (2.0, 0.0, -0.3 * radius):
        cand = np.flatnonzero(edt >= radius + margin)
        for _ in range(30 if cand.size else 0):
            c = (
                np.array(np.unravel_index(cand[int(rng.integers(cand.size))], edt.shape))
                + rng.uniform(-0.5, 0.5, 3)
            ) * sp
            if _free(chest, c, radius, placed):
                return c, "isolated"
    c = np.array(np.unravel_index(int(np.argmax(edt)), edt.shape), dtype=float) * sp
    return c, "isolated"


def _render_nodule(
    rng: np.random.Generator, chest: ChestPhantom, centre: np.ndarray, nod: dict[str, Any]
) -> None:
    radius = nod["diameter"] / 2.0
    core_frac = {"solid": 1.0, "part-solid": nod["core_fraction"], "ground-glass": 0.0}[nod["type"]]
    sl, total, core = nodule_fraction(
        rng, chest.spacing, centre, radius, nod["lobulation"], nod["spiculation"], chest.hu.shape, core_frac
    )
    tex = smooth_field(rng, total.shape, chest.spacing, 3.0)
    view = chest.hu[sl]
    if nod["type"] != "solid":
        blend_max(view, total, nod["hu_ggo"] + 30.0 * tex)
    blend_max(view, core, nod["hu_solid"] + 15.0 * tex)
    if nod["calcified"]:  # central calcification, partial-volume edge
        sp = np.asarray(chest.spacing, np.float32)
        ax = [np.arange(s.start, s.stop, dtype=np.float32) * sp[a] - centre[a] for a, s in enumerate(sl)]
        dist = np.sqrt(ax[0][:, None, None] ** 2 + ax[1][None, :, None] ** 2 + ax[2][None, None, :] ** 2)
        rc = radius * float(rng.uniform(0.3, 0.7))
        blend_max(view, np.clip((rc - dist) / float(sp.mean()) + 0.5, 0.0, 1.0), nod["hu_calc"])


def _check(name: str, value: Sequence[float], n: int, lo: float, hi: float) -> tuple[float, ...]:
    vals = tuple(value) if isinstance(value, (list, tuple)) else ()
    if len(vals) != n or not all(isinstance(v, (int, float)) and lo <= v <= hi for v in vals):
        raise ValueError(f"option {name} must be {n} numbers in [{lo}, {hi}], got {value!r}")
    return tuple(float(v) for v in vals)


def generate_ct_lung_nodules(
    out_dir: Path,
    n: int,
    seed: int,
    shape: Sequence[int] = (128, 128, 64),
    spacing: Sequence[float] = (2.5, 2.5, 2.5),
    diameter_range: Sequence[float] = (3.0, 30.0),
    nodules_per_scan: Sequence[int] = (1, 3),
    noise_sd: Sequence[float] = (15.0, 30.0),
) -> dict[str, Any]:
    """Write ``n`` chest CT scans with nodules, the detection datalist and the nodule datalist.

    Args:
        out_dir: existing empty folder.
        n: number of scans; seed: base seed (case ``i`` uses ``rng_for(seed, i)``).
        shape: volume size in voxels (x, y, z), each 16..512.
        spacing: voxel size in mm (x, y, z), each 0.5..5.
        diameter_range: nodule diameters in mm (min, max), within 2..40.
        nodules_per_scan: (min, max) nodules per scan, within 0..5.
        noise_sd: (min, max) standard deviation of the scanner noise in HU.

    Returns:
        The summary dict (also written to ``summary.json``).
    """
    shape_t = tuple(int(v) for v in _check("shape", shape, 3, 16, 512))
    spacing_t = _check("spacing", spacing, 3, 0.5, 5.0)
    d_range = _check("diameter_range", diameter_range, 2, 2.0, 40.0)
    k_range = tuple(int(v) for v in _check("nodules_per_scan", nodules_per_scan, 2, 0, 5))
    sd_range = _check("noise_sd", noise_sd, 2, 0.0, 200.0)
    if d_range[0] > d_range[1] or k_range[0] > k_range[1] or sd_range[0] > sd_range[1]:
        raise ValueError(
            "options diameter_range, nodules_per_scan and noise_sd must be (min, max) with min <= max"
        )
    out_dir = Path(out_dir)
    splits = split_indices(n)
    datalist: dict[str, Any] = {
        "description": "synthetic chest CT lung nodules (monai_ext)",
        "box_mode": "cccwhd",
        "box_frame": "world LPS, mm (as LUNA16 / model-zoo lung_nodule_ct_detection)",
        "box_voxel_mode": "xyzxyz, integer voxel indices, exclusive max",
        "training": [],
        "validation": [],
        "test": [],
    }
    nodule_list: dict[str, Any] = {"training": [], "validation": [], "test": []}
    counts = {"nodules": 0, "malignant": 0}
    for i in range(n):
        rng = rng_for(seed, i)
        chest = render_chest(rng, shape_t, spacing_t)
        origin = -(np.asarray(shape_t) - 1) / 2.0 * np.asarray(spacing_t) + rng.uniform(-20, 20, 3).round(1)
        affine = ras_affine(spacing_t, origin)
        k = int(rng.integers(k_range[0], k_range[1] + 1))
        placed: list[tuple[np.ndarray, float]] = []
        rec: dict[str, list[Any]] = {
            "box": [],
            "box_voxel": [],
            "label": [],
            "malignancy": [],
            "diameter_mm": [],
            "nodule_type": [],
            "attachment": [],
            "volume_doubling_time_days": [],
            "growth_rate_per_year": [],
        }
        for _ in range(k):
            nod = _sample_nodule(rng, d_range)
            centre, attach = _place(rng, chest, nod["diameter"] / 2.0, nod["attachment"], placed)
            nod["attachment"] = attach
            placed.append((centre, nod["diameter"] / 2.0))
            _render_nodule(rng, chest, centre, nod)
            ras = affine @ np.append(centre / np.asarray(spacing_t), 1.0)
            d = round(nod["diameter"], 2)
            box = [round(-ras[0], 2), round(-ras[1], 2), round(ras[2], 2), d, d, d]
            rec["box"].append(box)
            rec["box_voxel"].append(world_box_to_voxel(box, affine))
            rec["label"].append(0)
            rec["malignancy"].append(int(nod["malignant"]))
            rec["diameter_mm"].append(d)
            rec["nodule_type"].append(nod["type"])
            rec["attachment"].append(attach)
            rec["volume_doubling_time_days"].append(round(nod["vdt"], 1))
            rec["growth_rate_per_year"].append(round(365.0 * math.log(2.0) / nod["vdt"], 4))
        img = finish_scan(rng, chest.hu, spacing_t, float(rng.uniform(*sd_range)))
        name = f"images/case_{i:03d}.nii.gz"
        write_nifti(out_dir / name, img, spacing_t, affine=affine)
        datalist[splits[i]].append({"image": name, **rec})
        for j in range(len(rec["box"])):
            nodule_list[splits[i]].append(
                {
                    "image": name,
                    "nodule": j,
                    "box": rec["box"][j],
                    "box_voxel": rec["box_voxel"][j],
                    "label": rec["malignancy"][j],
                    **{key: rec[key][j] for key in ("diameter_mm", "nodule_type", "attachment")},
                    "volume_doubling_time_days": rec["volume_doubling_time_days"][j],
                    "growth_rate_per_year": rec["growth_rate_per_year"][j],
                }
            )
        counts["nodules"] += len(rec["box"])
        counts["malignant"] += sum(rec["malignancy"])
    write_json(out_dir / "datalist.json", datalist)
    write_json(out_dir / "nodules.json", nodule_list)
    summary = {
        "kind": "ct_lung_nodules",
        "n": n,
        "seed": seed,
        "shape": list(shape_t),
        "spacing_mm": list(spacing_t),
        "n_nodules": counts["nodules"],
        "n_malignant": counts["malignant"],
        "split": {s: len(datalist[s]) for s in ("training", "validation", "test")},
        "box_mode": datalist["box_mode"],
        "box_frame": datalist["box_frame"],
        "box_voxel_mode": datalist["box_voxel_mode"],
        "targets": {"detection_cpm": 0.85, "malignancy_auc": 0.85},
        "trivial_baselines": {
            "hu_threshold_components_cpm": "about 0.2",
            "diameter_mean_hu_logreg_auc": "about 0.6",
        },
    }
    write_json(out_dir / "summary.json", summary)
    return summary
