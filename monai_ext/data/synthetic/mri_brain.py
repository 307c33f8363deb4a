"""Synthetic multi-sequence brain MRI (T1, T1c, T2, FLAIR) with a BraTS-style tumour label.

Each case is a head phantom on a 96 x 96 x 64 grid at 2 mm isotropic spacing (RAS affine, the same
grid for all four sequences and the label): scalp with fat, skull (tables and marrow), subarachnoid
CSF, a folded cortex (random sulci and the interhemispheric fissure), white matter, deep grey nuclei,
lateral and third ventricles with choroid plexus, the superior sagittal sinus and cortical vessels.
Anatomy varies in size, position, rotation and ventricle size. A glioma-like tumour sits in the white
matter of one hemisphere and pushes its surroundings away (mild mass effect):

* label 1 = necrotic core (dark on T1/T1c, bright on T2, variable on FLAIR),
* label 2 = peritumoural oedema (bright on T2 and FLAIR, mildly dark on T1/T1c; spreads in white matter),
* label 3 = enhancing tumour (an irregular rim that is bright on T1c only),
* whole tumour = label > 0, tumour core = labels 1 and 3, enhancing tumour = label 3.

Sequence contrasts follow clinical MRI: CSF is bright on T2 and dark on FLAIR and T1; white matter is
brighter than grey matter on T1 and darker on T2/FLAIR; scalp fat is bright on T1. Each tumour
compartment is visible on at least two sequences (oedema on T2 and FLAIR and, weaker, on T1/T1c; the
rim on T1c and T2), so a model that loses any one sequence keeps most of the information.

What makes the task hard (and a per-voxel classifier fail): every sequence has its own smooth
multiplicative bias field (up to about +-40 %), Rician noise, an arbitrary intensity scale per scan
(MRI has no absolute units), partial volume at every boundary, tissue texture and tumour
heterogeneity, oedema whose signal fades towards its border, and tumour-mimicking distractors that
are labelled background: white-matter hyperintensities (periventricular caps and deep lesions, bright
on FLAIR/T2 like oedema), enhancing vessels, sinus and choroid plexus on T1c, and CSF that is bright
on T2 like necrosis. Logistic regression on the four z-scored intensities of a voxel (threshold tuned
on the training cases) reaches a whole-tumour Dice of about 0.3-0.45 on held-out cases (0.1-0.85 per
case; tested: <= 0.75); gradient boosting on multi-scale smoothed, locally normalised intensities
reaches about 0.7 from 9 training cases, showing that context carries the rest. The distractors
differ from the tumour by shape and context (small, multiple, periventricular or tubular vs. one mass
with a rim and surrounding oedema), so a 3D CNN (e.g. SegResNet) should reach whole-tumour Dice >= 0.90.

Files (``case_000`` ...): ``case_000/case_000_{t1,t1c,t2,flair}.nii.gz`` (float32) and
``case_000/case_000_seg.nii.gz`` (uint8), plus ``dataset.json`` (datalist with ``training`` /
``validation`` / ``test`` entries ``{"image": [t1, t1c, t2, flair], "label": seg}``, paths relative
to the data set folder) and ``summary.json``.

Example:
    >>> from monai_ext.data.synthetic import generate
    >>> # root = generate("mri_brain_multimodal", "/tmp/brain", n=4, seed=0)
    >>> # json.load(open(root / "dataset.json"))["training"][0]["image"][1]  -> 'case_000/case_000_t1c.nii.gz'
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from monai_ext.data.synthetic._common import ras_affine, rng_for, write_json, write_nifti

__all__ = ["generate_mri_brain_multimodal", "SEQUENCES", "LABELS", "synthesize_mri_brain_case"]

#: sequence order of the image channels (``channel_def`` of the bundles)
SEQUENCES: tuple[str, ...] = ("t1", "t1c", "t2", "flair")
#: BraTS-style label values
LABELS: dict[str, int] = {"background": 0, "necrotic_core": 1, "oedema": 2, "enhancing_tumour": 3}

_SHAPE = (96, 96, 64)
_SPACING = (2.0, 2.0, 2.0)

# mean relative signal of each tissue per sequence (t1, t1c, t2, flair); white matter ~ 1 on T1
_TISSUE = {
    "scalp": (1.05, 1.05, 0.75, 0.85),
    "muscle": (0.55, 0.58, 0.35, 0.40),
    "bone": (0.06, 0.06, 0.05, 0.05),
    "marrow": (0.80, 0.82, 0.45, 0.50),
    "csf": (0.22, 0.24, 1.45, 0.12),
    "gm": (0.72, 0.74, 0.68, 0.78),
    "wm": (1.00, 1.00, 0.45, 0.55),
    "deep_gm": (0.80, 0.82, 0.55, 0.66),
    "choroid": (0.70, 1.30, 0.90, 0.60),
    "vessel": (0.45, 1.35, 0.25, 0.30),
    "sinus": (0.50, 1.40, 0.30, 0.35),
    "wmh": (0.78, 0.80, 0.95, 1.12),
    "oedema": (0.70, 0.72, 0.98, 1.15),
    "enhancing": (0.68, 1.60, 0.85, 0.95),
    "necrosis": (0.35, 0.38, 1.25, 0.70),
}
# relative texture amplitude (multiplicative, smooth) per tissue
_TEXTURE = {"scalp": 0.06, "muscle": 0.05, "marrow": 0.08, "gm": 0.04, "wm": 0.03, "deep_gm": 0.04,
            "wmh": 0.05, "oedema": 0.08, "enhancing": 0.10, "necrosis": 0.12}  # fmt: skip


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with correlation length ``sigma_vox`` voxels."""
    step = max(1, int(sigma_vox // 2))
    small = tuple(int(math.ceil(s / step)) + 2 for s in shape)
    f = ndimage.gaussian_filter(rng.standard_normal(small).astype(np.float32), sigma_vox / step, mode="wrap")
    if step > 1:
        f = ndimage.zoom(f, step, order=1, mode="nearest", grid_mode=True)
    f = f[: shape[0], : shape[1], : shape[2]]
    return (f - f.mean()) / (f.std() + 1e-8)


def _soft(signed_depth: np.ndarray, width: float = 0.7) -> np.ndarray:
    """Partial-volume fraction from a signed depth in mm (positive inside)."""
    return (1.0 / (1.0 + np.exp(-np.clip(signed_depth / width, -30, 30)))).astype(np.float32)


def _ellipsoid_depth(p: np.ndarray, centre, semi, perturb: np.ndarray | None = None) -> np.ndarray:
    """Approximate depth (mm, positive inside) below the surface of an ellipsoid along the radial ray."""
    diff = p - np.asarray(centre, np.float32)[:, None, None, None]
    r = np.sqrt(((diff / np.asarray(semi, np.float32)[:, None, None, None]) ** 2).sum(0)) + 1e-6
    dist = np.sqrt((diff**2).sum(0))
    scale = 1.0 if perturb is None else 1.0 + perturb
    return dist * (scale / r - 1.0)


def _rotation(rng: np.random.Generator, max_deg: tuple[float, float, float]) -> np.ndarray:
    ax, ay, az = (np.deg2rad(rng.uniform(-m, m)) for m in max_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _tube_mask(
    rng: np.random.Generator, shape, n_tubes: int, starts: np.ndarray, length_vox: float
) -> np.ndarray:
    """Boolean centre lines of ``n_tubes`` smooth random walks (voxel grid) starting at ``starts``."""
    mask = np.zeros(shape, bool)
    for k in range(n_tubes):
        pos = starts[k].astype(float)
        d = rng.standard_normal(3)
        d /= np.linalg.norm(d)
        for _ in range(int(length_vox * 2)):
            d = d + 0.25 * rng.standard_normal(3)
            d /= np.linalg.norm(d)
            pos = pos + 0.5 * d
            i = np.round(pos).astype(int)
            if np.any(i < 0) or np.any(i >= shape):
                break
            mask[tuple(i)] = True
    return mask


def synthesize_mri_brain_case(
    rng: np.random.Generator, shape: tuple[int, int, int] = _SHAPE, spacing: tuple[float, ...] = _SPACING
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Draw one case: ``({sequence: float32 volume}, uint8 BraTS label)`` on a grid of ``shape``/``spacing``.

    Example:
        >>> from monai_ext.data.synthetic._common import rng_for
        >>> imgs, seg = synthesize_mri_brain_case(rng_for(0, 0))  # doctest: +SKIP
        >>> sorted(imgs), seg.shape  # doctest: +SKIP
        (['flair', 't1', 't1c', 't2'], (96, 96, 64))
    """
    shape = tuple(int(s) for s in shape)
    sp = np.asarray(spacing, np.float32)
    # world coordinates (mm) relative to the volume centre
    grids = np.meshgrid(
        *[(np.arange(n, dtype=np.float32) - (n - 1) / 2) * s for n, s in zip(shape, sp)], indexing="ij"
    )
    x = np.stack(grids)
    # anatomy frame: rotate, translate, scale
    rot = _rotation(rng, (8.0, 6.0, 10.0)).astype(np.float32)
    shift = np.array([rng.uniform(-6, 6), rng.uniform(-6, 6), rng.uniform(-4, 4)], np.float32)
    scale = float(rng.uniform(0.88, 1.04))
    p = np.einsum("ji,j...->i...", rot, x - shift[:, None, None, None]) / scale

    # tumour position and size (anatomy frame), chosen first so anatomy can be displaced (mass effect)
    side = rng.choice([-1.0, 1.0])
    t_c = np.array([side * rng.uniform(14, 34), rng.uniform(-40, 40), rng.uniform(-2, 32)], np.float32)
    r_core = float(rng.uniform(7.0, 17.0))
    r_oed = r_core + float(rng.uniform(5.0, 20.0))
    q = p - t_c[:, None, None, None]
    dq = np.sqrt((q**2).sum(0)) + 1e-3
    push = 0.45 * r_core**3 / (dq**2 + r_core**2)  # radial displacement of normal anatomy (mm)
    pa = p - q / dq * push  # anatomy is evaluated at the pre-displacement position

    fields = {
        k: _smooth_field(rng, shape, s) for k, s in (("fold", 2.2), ("lobe", 5.0), ("tex", 1.2), ("tum", 3.0))
    }
    grad = np.sqrt(sum(g**2 for g in np.gradient(fields["fold"], *sp)))

    # --- head layers by radial depth below the scalp surface
    head_semi = np.array([72, 90, 80], np.float32) * np.array(rng.uniform(0.94, 1.06, 3), np.float32)
    head_c = np.array([0, 0, -16], np.float32)
    depth = _ellipsoid_depth(pa, head_c, head_semi, 0.015 * fields["lobe"])
    scalp_t = float(rng.uniform(4, 7))
    skull_t = float(rng.uniform(5, 8))
    csf_t = float(rng.uniform(1.5, 3.5))
    brain_d = scalp_t + skull_t + csf_t
    head = _soft(depth)
    skull = _soft(depth - scalp_t)
    marrow = _soft(depth - scalp_t - 1.8) * _soft(scalp_t + skull_t - 1.8 - depth)
    intracranial = _soft(depth - scalp_t - skull_t)
    brain = _soft(depth - brain_d)
    # folded cortex: sulci are level sets of a band-limited field; midline fissure above the corpus callosum
    sheet = np.abs(fields["fold"]) / (grad + 1e-3)
    fissure_on = _soft(pa[2] - 14.0, 2.0)
    sheet = np.minimum(sheet, np.where(fissure_on > 0.5, np.abs(pa[0]) + 0.3, 1e3))
    sulcal_depth = float(rng.uniform(10, 16))
    in_cortex = _soft(brain_d + sulcal_depth - depth, 2.0)
    sulci = _soft(1.0 - sheet) * in_cortex
    cortex_t = float(rng.uniform(2.4, 3.2))
    gm = np.maximum(
        _soft(brain_d + cortex_t - depth + 0.8 * fields["lobe"]), _soft(cortex_t + 0.9 - sheet) * in_cortex
    )
    # deep grey nuclei (thalamus, basal ganglia), ventricles, choroid plexus
    deep = np.zeros(shape, np.float32)
    for sx in (-1, 1):
        deep = np.maximum(deep, _soft(_ellipsoid_depth(pa, (sx * 10, -8, 4), (7, 11, 7))))
        deep = np.maximum(deep, _soft(_ellipsoid_depth(pa, (sx * 21, 6, 6), (5, 12, 8))))
    vs = float(rng.uniform(0.7, 1.5))  # ventricle size (atrophy)
    vent = np.zeros(shape, np.float32)
    for sx in (-1, 1):
        bend = 0.004 * pa[1] ** 2
        cen = np.stack([pa[0] - sx * (6 + 2 * vs), pa[1] + 2, pa[2] - 16 + bend])
        vent = np.maximum(vent, _soft(_ellipsoid_depth(cen, (0, 0, 0), (4.2 * vs, 24, 5.0 * vs))))
    vent = np.maximum(vent, _soft(_ellipsoid_depth(pa, (0, -6, 4), (1.2 * vs, 9, 5))))
    choroid = np.zeros(shape, np.float32)
    for sx in (-1, 1):
        choroid = np.maximum(
            choroid, _soft(_ellipsoid_depth(pa, (sx * (6 + 2 * vs), -16, 15), (2.2, 4, 2.5)))
        )
    choroid *= vent
    # vessels: superior sagittal sinus and cortical vessels (enhance on T1c, flow voids on T2/FLAIR)
    sinus_r = float(rng.uniform(2.5, 3.5))
    sinus = _soft(sinus_r - np.sqrt(pa[0] ** 2 + (depth - scalp_t - skull_t - 1.5) ** 2)) * _soft(
        pa[2] + 5.0, 2.0
    )
    brain_idx = np.argwhere((brain > 0.5) & (depth < brain_d + 14))
    n_ves = int(rng.integers(6, 14))
    starts = brain_idx[rng.integers(0, len(brain_idx), n_ves)]
    centre_lines = _tube_mask(rng, shape, n_ves, starts, length_vox=float(rng.uniform(10, 22)))
    ves_r = float(rng.uniform(0.8, 1.4))
    vessel = _soft(ves_r - ndimage.distance_transform_edt(~centre_lines, sampling=sp).astype(np.float32), 0.5)
    vessel *= intracranial

    # --- tumour compartments (anatomy frame around t_c, irregular surfaces)
    tum = fields["tum"]
    d_core = r_core * (1 + 0.22 * tum) - dq
    rim_t = float(rng.uniform(2.5, 5.0)) * (1 + 0.3 * fields["lobe"])
    d_nec = d_core - rim_t
    has_nec = r_core - rim_t.mean() > 2.5
    d_oed = r_oed * (1 + 0.3 * tum + 0.15 * fields["lobe"]) - dq
    wm_like = brain * (1 - vent) * (1 - gm * 0.8)
    f_core = _soft(d_core) * brain
    f_nec = _soft(d_nec) * brain if has_nec else np.zeros(shape, np.float32)
    f_oed = _soft(d_oed, 1.0) * np.clip(wm_like * 1.3 + 0.2 * gm * brain, 0, 1) * brain
    # one lesion: drop oedema fragments that are not connected to the tumour core
    comps, _ = ndimage.label((f_oed > 0.5) | (f_core > 0.5))
    core_ids = np.unique(comps[(f_core > 0.5) & (comps > 0)])
    keep = np.isin(comps, core_ids[core_ids > 0])
    f_oed *= np.clip(
        ndimage.gaussian_filter(ndimage.binary_dilation(keep).astype(np.float32), 0.7) * 1.5, 0, 1
    )
    # oedema signal fades towards its border
    oed_strength = float(rng.uniform(0.7, 1.0)) * np.clip(
        0.65 + 0.5 * d_oed / max(r_oed - r_core, 1.0), 0.6, 1.0
    )

    # white-matter hyperintensities: periventricular caps and deep lesions, away from the tumour
    wmh = np.zeros(shape, np.float32)
    n_wmh = int(rng.integers(2, 22))
    wm_idx = np.argwhere((wm_like > 0.9) & (dq > r_oed + 12) & (gm < 0.1))
    for k in range(n_wmh):
        if len(wm_idx) == 0:
            break
        c = wm_idx[rng.integers(len(wm_idx))]
        c_mm = (c - (np.asarray(shape) - 1) / 2) * sp
        r = float(rng.uniform(1.5, 4.5)) if k % 3 else float(rng.uniform(3, 6))
        lo = np.maximum(c - int(r * 1.6 / sp.min()) - 2, 0)
        hi = np.minimum(c + int(r * 1.6 / sp.min()) + 3, shape)
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        loc = x[(slice(None), *sl)] - c_mm.astype(np.float32)[:, None, None, None]
        semi = r * rng.uniform(0.6, 1.4, 3)
        rr = np.sqrt(((loc / semi[:, None, None, None]) ** 2).sum(0))
        dd = np.sqrt((loc**2).sum(0)) * ((1 + 0.25 * fields["tex"][sl]) / (rr + 1e-6) - 1)
        wmh[sl] = np.maximum(wmh[sl], _soft(dd, 0.8))
    for sx in (-1, 1):  # periventricular caps at the frontal and occipital horns
        for sy in (-1, 1):
            if rng.random() < 0.5:
                cap_r = float(rng.uniform(2, 6))
                cen = (sx * (7 + 2 * vs), sy * 24 + 2, 16)
                cap = _soft(_ellipsoid_depth(pa, cen, (cap_r + 3, cap_r + 4, cap_r + 2), 0.2 * fields["tex"]))
                wmh = np.maximum(wmh, cap * (1 - vent) * (dq > r_oed + 8))
    wmh *= brain * (1 - vent)

    # --- composite the sequences (alpha blending gives partial volume)
    jitter = {
        k: np.asarray(v, np.float32) * rng.uniform(0.92, 1.08, 4).astype(np.float32)
        for k, v in _TISSUE.items()
    }
    jitter["necrosis"][3] = float(rng.uniform(0.3, 1.0))
    for k in ("oedema", "wmh"):
        jitter[k][2:] = jitter["wm"][2:] + (jitter[k][2:] - jitter["wm"][2:]) * float(rng.uniform(0.7, 1.1))
    tex = fields["tex"]
    layers = [
        ("scalp", head), ("bone", skull), ("marrow", marrow), ("csf", intracranial), ("gm", brain),
        ("wm", brain * (1 - gm)), ("deep_gm", deep * brain), ("csf", sulci * brain), ("csf", vent),
        ("choroid", choroid),
        ("sinus", sinus * (1 - brain)), ("vessel", vessel), ("wmh", wmh), ("oedema", f_oed),
        ("enhancing", f_core), ("necrosis", f_nec),
    ]  # fmt: skip
    images: dict[str, np.ndarray] = {}
    for s, name in enumerate(SEQUENCES):
        img = np.zeros(shape, np.float32)
        for tissue, alpha in layers:
            val = jitter[tissue][s] * (1 + _TEXTURE.get(tissue, 0.0) * tex)
            if tissue == "oedema":
                val = jitter["wm"][s] + (val - jitter["wm"][s]) * oed_strength
            img = img * (1 - alpha) + alpha * val
        images[name] = img

    # --- label from the hard compartments (later compartments override)
    seg = np.zeros(shape, np.uint8)
    seg[f_oed > 0.5] = LABELS["oedema"]
    seg[f_core > 0.5] = LABELS["enhancing_tumour"]
    seg[f_nec > 0.5] = LABELS["necrotic_core"]

    # --- acquisition: bias field, Rician noise, arbitrary scale (per sequence)
    shared_bias = _smooth_field(rng, shape, 14.0)
    for name in SEQUENCES:
        amp = float(rng.uniform(0.08, 0.2))
        bias = np.exp(amp * (0.5 * shared_bias + 0.87 * _smooth_field(rng, shape, 12.0)))
        sigma = float(rng.uniform(0.035, 0.07))
        img = images[name] * bias
        img = np.sqrt(
            (img + sigma * rng.standard_normal(shape)) ** 2 + (sigma * rng.standard_normal(shape)) ** 2
        )
        images[name] = (img * float(10 ** rng.uniform(1.5, 3.3))).astype(np.float32)
    return images, seg


def _split(n: int) -> list[str]:
    """Deterministic split: last ~20 % test, the ~15 % before validation, the rest training."""
    n_test = max(1, round(0.2 * n)) if n >= 3 else 0
    n_val = max(1, round(0.15 * n)) if n >= 3 else 0
    return ["training"] * (n - n_test - n_val) + ["validation"] * n_val + ["test"] * n_test


def generate_mri_brain_multimodal(out_dir: Path, n: int, seed: int, **options: Any) -> dict[str, Any]:
    """Write ``n`` multi-sequence brain MRI cases with tumour labels into ``out_dir``; return the summary.

    Options:
        shape: grid size (default ``(96, 96, 64)``; each dimension >= 32).
        spacing: voxel size in mm (default 2 mm isotropic).

    Example:
        >>> # generate_mri_brain_multimodal(Path("/tmp/empty"), n=4, seed=0)["channel_def"]
        >>> # {'0': 't1', '1': 't1c', '2': 't2', '3': 'flair'}
    """
    unknown = set(options) - {"shape", "spacing"}
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for mri_brain_multimodal; expected shape, spacing"
        )
    shape = tuple(options.get("shape", _SHAPE))
    spacing = tuple(float(s) for s in options.get("spacing", _SPACING))
    if len(shape) != 3 or any(not isinstance(s, int | np.integer) or s < 32 for s in shape):
        raise ValueError(f"option shape must be 3 integers >= 32, got {shape!r}")
    if len(spacing) != 3 or any(not s > 0 for s in spacing):
        raise ValueError(f"option spacing must be 3 positive numbers (mm), got {spacing!r}")
    out_dir = Path(out_dir)
    origin = [-(n_ - 1) / 2 * s for n_, s in zip(shape, spacing)]
    affine = ras_affine(spacing, origin)
    datalist: dict[str, list[dict[str, Any]]] = {"training": [], "validation": [], "test": []}
    volumes = []
    for i, part in enumerate(_split(n)):
        images, seg = synthesize_mri_brain_case(rng_for(seed, i), shape, spacing)
        case = f"case_{i:03d}"
        paths = []
        for name in SEQUENCES:
            rel = f"{case}/{case}_{name}.nii.gz"
            write_nifti(out_dir / rel, images[name], spacing, affine=affine)
            paths.append(rel)
        write_nifti(out_dir / f"{case}/{case}_seg.nii.gz", seg, spacing, affine=affine)
        datalist[part].append({"image": paths, "label": f"{case}/{case}_seg.nii.gz"})
        voxel_ml = float(np.prod(spacing)) / 1000.0
        volumes.append({lab: round(float((seg == v).sum()) * voxel_ml, 2) for lab, v in LABELS.items() if v})
    channel_def = {str(i): s for i, s in enumerate(SEQUENCES)}
    write_json(
        out_dir / "dataset.json",
        {
            "name": "mri_brain_multimodal",
            "description": "synthetic T1/T1c/T2/FLAIR head MRI with BraTS-style tumour labels",
            "tensorImageSize": "4D",
            "modality": channel_def,
            "labels": {str(v): k for k, v in LABELS.items()},
            **datalist,
        },
    )
    summary = {
        "kind": "mri_brain_multimodal",
        "n": n,
        "seed": seed,
        "shape": list(shape),
        "spacing_mm": list(spacing),
        "channel_def": channel_def,
        "labels": {str(v): k for k, v in LABELS.items()},
        "whole_tumour": "label > 0",
        "split": {k: len(v) for k, v in datalist.items()},
        "datalist": "dataset.json",
        "tumour_volumes_ml": volumes,
        "target_whole_tumour_dice": 0.90,
        "baseline": "per-voxel logistic regression on 4 z-scored intensities: whole-tumour Dice <= 0.75",
    }
    write_json(out_dir / "summary.json", summary)
    return summary
