"""Synthetic survival data: a clinical table linked to chest CT volumes, from a known hazard model.

Each patient has one lung tumour (12-75 mm, median 30 mm) in a chest CT phantom (the
``ct_lung_nodules`` internals; default 96x96x48 voxels at 3.4 mm). The tumour has a *heterogeneity*
``h`` in [0, 1] that is visible only in the image: a necrotic core (about 10 HU, radius fraction
0.15 + 0.55 h) and a coarser, stronger internal texture in the viable rim (about 45 HU).

The clinical table holds age, sex, stage (I-IV; it depends on tumour size plus unobserved nodal and
metastatic spread), albumin (g/L), LDH (U/L) and CRP (mg/L); about 10 % of lab values and 3 % of
stages are missing (empty cells). Survival follows a proportional-hazards model with a Weibull
baseline (shape 1.3, median 24 months at zero log-risk)::

    log_risk = 0.6 z(log volume) + 0.8 z(h) + 0.3 (stage - 2.5) + 0.025 (age - 66) + 0.15 male
               - 0.05 (albumin - 38) + 0.35 log(LDH / 220) + 0.1 log(CRP / 10)

with ``z`` the standardisation over the population. Censoring (about 30 %) is administrative
(follow-up 18-96 months) plus random loss to follow-up (exponential, mean 200 months).

What makes it hard: tumour volume enters the table only through stage, and heterogeneity not at all,
so a clinical-only model misses a large part of the risk; the image must be segmented/measured and
its texture read through noise (sd 15-30 HU) and partial volume. The oracle C-index (Harrell's, of
the true log-risk) is about 0.78 for large n (computed per data set in ``summary.json``); a
clinical-only Cox model reaches about 0.70 on held-out patients (5-fold, n = 4000); an image +
clinical model can approach the oracle.

Files::

    images/P0000.nii.gz   int16 HU, RAS affine
    clinical.csv          patient_id, age, sex, stage, albumin_g_l, ldh_u_l, crp_mg_l, image,
                          time_months, event, split   (missing values: empty cells)
    datalist.json         {"training": [...], "validation": [...], "test": [...]}: the same fields
                          (missing values: null)
    truth.csv             patient_id, tumour_diameter_mm, tumour_volume_ml, heterogeneity, log_risk,
                          tumour_center_voxel (for evaluation only; never a model input)
    summary.json          counts, censoring rate, oracle C-index, the model coefficients

Example:
    >>> from monai_ext.data.synthetic import generate
    >>> # out = generate("outcome", "/tmp/outcome", n=60, seed=0)
    >>> # json.load(open(out / "summary.json"))["oracle_c_index"]
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_ext.data.synthetic._chest import finish_scan, nodule_fraction, render_chest, smooth_field
from monai_ext.data.synthetic._common import atomic_write_text, ras_affine, rng_for, write_json, write_nifti
from monai_ext.data.synthetic.ct_lung_nodules import _place, split_indices

__all__ = ["generate_outcome", "sample_patient", "COEFFICIENTS", "CLINICAL_COLUMNS"]

#: log-risk coefficients of the true model (see the module docstring)
COEFFICIENTS: dict[str, float] = {
    "z_log_volume": 0.6,
    "z_heterogeneity": 0.8,
    "stage": 0.3,
    "age_per_year": 0.025,
    "male": 0.15,
    "albumin_per_g_l": -0.05,
    "log_ldh": 0.35,
    "log_crp": 0.1,
}
CLINICAL_COLUMNS = ("age", "sex", "stage", "albumin_g_l", "ldh_u_l", "crp_mg_l")
_STAGES = ("I", "II", "III", "IV")
_LOG_D_MEAN, _LOG_D_SD = math.log(30.0), 0.35
_WEIBULL_SHAPE, _MEDIAN_MONTHS = 1.3, 24.0


def sample_patient(rng: np.random.Generator, missing_rate: float = 0.1) -> dict[str, Any]:
    """Draw one patient's clinical values, hidden tumour features, log-risk, time and event.

    Uses a fixed number of draws from ``rng`` so that the image can be drawn afterwards from it.
    """
    age = float(np.clip(np.rint(rng.normal(66.0, 9.0)), 35, 90))
    male = bool(rng.random() < 0.6)
    log_d = float(np.clip(rng.normal(_LOG_D_MEAN, _LOG_D_SD), math.log(12.0), math.log(75.0)))
    z_vol = (log_d - _LOG_D_MEAN) / _LOG_D_SD  # log volume = 3 log d + const
    h = float(rng.beta(2.0, 2.0))
    z_h = (h - 0.5) / math.sqrt(0.05)
    latent = 0.8 * z_vol + rng.normal(0.0, 0.8)
    stage = 1 + int(np.searchsorted([-0.8, -0.1, 0.7], latent))
    albumin = float(rng.normal(40.0 - 1.5 * (stage - 1), 4.0))
    ldh = float(math.exp(rng.normal(math.log(200.0) + 0.12 * (stage - 1) + 0.25 * (h - 0.5), 0.3)))
    crp = float(math.exp(rng.normal(math.log(8.0) + 0.3 * (stage - 1), 1.0)))
    c = COEFFICIENTS
    eta = (
        c["z_log_volume"] * z_vol
        + c["z_heterogeneity"] * z_h
        + c["stage"] * (stage - 2.5)
        + c["age_per_year"] * (age - 66.0)
        + c["male"] * male
        + c["albumin_per_g_l"] * (albumin - 38.0)
        + c["log_ldh"] * math.log(ldh / 220.0)
        + c["log_crp"] * math.log(crp / 10.0)
    )
    scale = _MEDIAN_MONTHS / math.log(2.0) ** (1.0 / _WEIBULL_SHAPE)
    t_event = scale * (-math.log(1.0 - rng.random()) / math.exp(eta)) ** (1.0 / _WEIBULL_SHAPE)
    t_cens = min(float(rng.uniform(18.0, 96.0)), float(rng.exponential(200.0)))
    miss = rng.random(4) < np.array([missing_rate, missing_rate, missing_rate, 0.3 * missing_rate])
    diameter = math.exp(log_d)
    return {
        "age": int(age),
        "sex": "M" if male else "F",
        "stage": None if miss[3] else _STAGES[stage - 1],
        "albumin_g_l": None if miss[0] else round(albumin, 1),
        "ldh_u_l": None if miss[1] else round(ldh),
        "crp_mg_l": None if miss[2] else round(crp, 1),
        "time_months": round(max(min(t_event, t_cens), 0.05), 2),
        "event": int(t_event <= t_cens),
        "tumour_diameter_mm": round(diameter, 2),
        "tumour_volume_ml": round(math.pi / 6.0 * diameter**3 / 1000.0, 3),
        "heterogeneity": round(h, 4),
        "log_risk": round(eta, 5),
    }


def _render_tumour_ct(
    rng: np.random.Generator, shape: tuple[int, ...], spacing: tuple[float, ...], pat: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    chest = render_chest(rng, shape, spacing)
    radius = pat["tumour_diameter_mm"] / 2.0
    h = pat["heterogeneity"]
    centre, _ = _place(rng, chest, radius, "isolated", [])
    necro = 0.15 + 0.55 * h
    sl, total, core = nodule_fraction(
        rng, spacing, centre, radius, float(rng.uniform(0.1, 0.6)), float(rng.uniform(0.0, 0.3)), shape, necro
    )
    tex = smooth_field(rng, total.shape, spacing, 3.0 + 6.0 * h)
    view = chest.hu[sl]
    viable = 45.0 + (6.0 + 30.0 * h) * tex
    np.maximum(view, view + total * (viable - view), out=view)
    view += core * ((10.0 + 8.0 * tex) - view)  # necrosis replaces the viable tissue
    img = finish_scan(rng, chest.hu, spacing, float(rng.uniform(15.0, 30.0)))
    return img, centre / np.asarray(spacing)


def _check(name: str, value: Sequence[float], lo: float, hi: float) -> tuple[float, ...]:
    vals = tuple(value) if isinstance(value, (list, tuple)) else ()
    if len(vals) != 3 or not all(isinstance(v, (int, float)) and lo <= v <= hi for v in vals):
        raise ValueError(f"option {name} must be 3 numbers in [{lo}, {hi}], got {value!r}")
    return tuple(float(v) for v in vals)


def _csv(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow(["" if r[c] is None else r[c] for c in columns])
    return buf.getvalue()


def generate_outcome(
    out_dir: Path,
    n: int,
    seed: int,
    shape: Sequence[int] = (96, 96, 48),
    spacing: Sequence[float] = (3.4, 3.4, 3.4),
    missing_rate: float = 0.1,
) -> dict[str, Any]:
    """Write ``n`` patients: CT volumes, ``clinical.csv``, ``datalist.json``, ``truth.csv``, ``summary.json``.

    Args:
        out_dir: existing empty folder.
        n: number of patients; seed: base seed (patient ``i`` uses ``rng_for(seed, i)``).
        shape: CT size in voxels (x, y, z), each 16..512; the table and survival do not depend on it.
        spacing: voxel size in mm, each 0.5..10.
        missing_rate: fraction of missing lab values, in [0, 0.5].

    Returns:
        The summary dict (also written to ``summary.json``), with ``oracle_c_index``.
    """
    import torch

    from monai_ext.metrics.concordance import concordance_index

    shape_t = tuple(int(v) for v in _check("shape", shape, 16, 512))
    spacing_t = _check("spacing", spacing, 0.5, 10.0)
    if (
        isinstance(missing_rate, bool)
        or not isinstance(missing_rate, (int, float))
        or not 0 <= missing_rate <= 0.5
    ):
        raise ValueError(f"option missing_rate must be a number in [0, 0.5], got {missing_rate!r}")
    out_dir = Path(out_dir)
    splits = split_indices(n)
    rows, truth = [], []
    for i in range(n):
        rng = rng_for(seed, i)
        pat = sample_patient(rng, float(missing_rate))
        pid = f"P{i:04d}"
        img, centre = _render_tumour_ct(rng, shape_t, spacing_t, pat)
        origin = -(np.asarray(shape_t) - 1) / 2.0 * np.asarray(spacing_t)
        name = f"images/{pid}.nii.gz"
        write_nifti(out_dir / name, img, spacing_t, affine=ras_affine(spacing_t, origin))
        rows.append(
            {"patient_id": pid, **{k: pat[k] for k in CLINICAL_COLUMNS}, "image": name}
            | {"time_months": pat["time_months"], "event": pat["event"], "split": splits[i]}
        )
        truth.append(
            {"patient_id": pid}
            | {k: pat[k] for k in ("tumour_diameter_mm", "tumour_volume_ml", "heterogeneity", "log_risk")}
            | {"tumour_center_voxel": " ".join(f"{v:.1f}" for v in centre)}
        )
    columns = ["patient_id", *CLINICAL_COLUMNS, "image", "time_months", "event", "split"]
    atomic_write_text(out_dir / "clinical.csv", _csv(rows, columns))
    atomic_write_text(out_dir / "truth.csv", _csv(truth, list(truth[0])))
    write_json(
        out_dir / "datalist.json",
        {s: [r for r in rows if r["split"] == s] for s in ("training", "validation", "test")},
    )
    times = np.array([r["time_months"] for r in rows])
    events = np.array([r["event"] for r in rows])
    risks = np.array([t["log_risk"] for t in truth])
    oracle = (
        float(concordance_index(torch.as_tensor(risks), torch.as_tensor(times), torch.as_tensor(events)))
        if events.any() and n > 1
        else float("nan")
    )
    summary = {
        "kind": "outcome",
        "n": n,
        "seed": seed,
        "shape": list(shape_t),
        "spacing_mm": list(spacing_t),
        "split": {s: splits.count(s) for s in ("training", "validation", "test")},
        "events": int(events.sum()),
        "censoring_rate": round(1.0 - float(events.mean()), 4),
        "oracle_c_index": round(oracle, 4) if math.isfinite(oracle) else None,
        "oracle_c_index_population": 0.78,
        "clinical_only_cox_c_index_population": 0.70,
        "model": {
            "baseline": f"Weibull shape {_WEIBULL_SHAPE}, median {_MEDIAN_MONTHS} months at log_risk 0",
            "coefficients": COEFFICIENTS,
            "hidden_from_table": ["tumour volume (only via stage)", "heterogeneity (necrosis, texture)"],
        },
    }
    write_json(out_dir / "summary.json", summary)
    return summary
