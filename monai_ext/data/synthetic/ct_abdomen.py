"""Synthetic abdominal CT phantoms in Hounsfield units with organ labels, as NIfTI and DICOM series.

Each case is a 3D axial CT of the upper abdomen (default 128 x 128 x 40 voxels at 2.8 x 2.8 x 5 mm,
a 358 x 358 x 200 mm field of view) built from implicit surfaces in patient space: skin and
subcutaneous fat, abdominal wall and paraspinal / psoas muscles, bowel loops and mesenteric fat with
gas, stomach with an air-fluid level, liver (two lobes) with gallbladder, spleen, kidneys (cortex,
medulla, sinus fat), aorta and IVC, lumbar spine (cancellous bone, cortical shell, discs, posterior
arch, canal) and ribs. Anatomy varies per case: body habitus (size, fat thickness), organ size,
position and rotation, a smooth random deformation field, patient rotation on the table and the
contrast phase (unenhanced to portal venous). The image is rendered on 3 sub-slices per slice and
averaged (slice-profile partial volume), blurred in-plane (scanner PSF), given smooth low-frequency
texture per tissue and a shading field, and correlated (FBP-like) noise of 10-22 HU.

Labels (uint8): 0 background, 1 liver, 2 spleen, 3 left kidney, 4 right kidney, 5 spine (vertebral
bone; discs and canal are background). Left/right are the patient's (left kidney at RAS x < 0).

Files (paths relative to the data set folder)::

    imagesTr/case_XXX.nii.gz   int16 HU, RAS affine diag(spacing) + origin
    labelsTr/case_XXX.nii.gz   uint8 labels, same affine
    dicom/case_XXX/slice_YYYY.dcm  CT Image Storage, uint16, RescaleIntercept -1024 (see ``_dicom``)
    dataset.json               MSD style: training / validation / test lists (last 20 % test)
    summary.json               counts, split, per-case contrast phase and noise

The DICOM series holds the same voxels and world positions as the NIfTI: reading it with ITK gives
the NIfTI array flipped along x and y (DICOM is LPS), and ``Orientation("RAS")`` restores it.

What makes it hard: liver (50-70 HU unenhanced) and spleen (40-60 HU) overlap in HU and both move
with the per-case contrast phase (up to +45 / +60 HU), and muscles, bowel wall, stomach wall and
kidney medulla sit in the same range; noise (10-22 HU, correlated) exceeds the liver-spleen
difference, and partial volume over 5 mm slices blurs the organ edges. A per-voxel HU
classifier (HU, smoothed HU, logistic regression) reaches a spleen Dice of about 0.0-0.2 (tested
to stay <= 0.78). The spleen is identifiable by shape, position (left posterior upper quadrant, lateral
to the stomach, above the left kidney) and context, which a 3D U-Net learns: a good model reaches
spleen Dice >= 0.93 (the bundle target).

Example:
    >>> from monai_ext.data.synthetic import generate
    >>> # out = generate("ct_abdomen", "/tmp/ct_abdomen", n=4, seed=0)
    >>> # sorted(p.name for p in out.iterdir())
    >>> # ['dataset.json', 'dicom', 'imagesTr', 'labelsTr', 'summary.json']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_ext.data.synthetic._common import rng_for, write_json, write_nifti
from monai_ext.data.synthetic._dicom import write_ct_series

__all__ = ["LABELS", "generate_ct_abdomen", "render_ct_abdomen"]

#: label value -> name (also written to ``dataset.json``).
LABELS: dict[str, str] = {
    "0": "background",
    "1": "liver",
    "2": "spleen",
    "3": "left kidney",
    "4": "right kidney",
    "5": "spine",
}
LIVER, SPLEEN, LKIDNEY, RKIDNEY, SPINE = 1, 2, 3, 4, 5
_SUB = 3  # sub-slices per slice (slice-profile partial volume)


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) smooth interpolation weights: normalised Gaussians centred on the coarse nodes."""
    t = (np.arange(n_out) + 0.5) / n_out * n_in - 0.5
    w = np.exp(-0.5 * ((t[:, None] - np.arange(n_in)[None, :]) / 0.75) ** 2)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def _field(rng: np.random.Generator, coarse: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Smooth random field with unit std: coarse Gaussian noise, smoothly interpolated to ``shape``."""
    g = rng.standard_normal(tuple(coarse)).astype(np.float32)
    g = np.tensordot(_interp_matrix(shape[0], coarse[0]), g, axes=(1, 0))
    g = np.tensordot(g, _interp_matrix(shape[1], coarse[1]), axes=(1, 1))  # (x, z, y)
    g = np.tensordot(g, _interp_matrix(shape[2], coarse[2]), axes=(1, 1))  # (x, y, z)
    return np.ascontiguousarray(g / max(float(g.std()), 1e-6))


def _rot(rz: float = 0.0, ry: float = 0.0, rx: float = 0.0) -> np.ndarray:
    """Rotation matrix (degrees) about z, then y, then x."""
    a, b, c = np.deg2rad([rz, ry, rx])
    mz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    my = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    mx = np.array([[1, 0, 0], [0, np.cos(c), -np.sin(c)], [0, np.sin(c), np.cos(c)]])
    return (mz @ my @ mx).astype(np.float32)


class _Canvas:
    """Fine-grid patient-space coordinates and the rendered HU / label maps of one case."""

    def __init__(self, shape, spacing, rot, shift, disp_mm, rng):
        self.shape = (shape[0], shape[1], shape[2] * _SUB)
        self.spacing = spacing
        sx, sy, sz = spacing
        # world (RAS, relative to the volume centre in-plane and the bottom slice's lower edge in z)
        self.wx = ((np.arange(shape[0]) - (shape[0] - 1) / 2) * sx).astype(np.float32)
        self.wy = ((np.arange(shape[1]) - (shape[1] - 1) / 2) * sy).astype(np.float32)
        self.wz = ((np.arange(self.shape[2]) + 0.5) * sz / _SUB).astype(np.float32)
        r = rot.T  # anatomy coords = R^T (world - shift) + displacement
        X, Y, Z = np.meshgrid(self.wx - shift[0], self.wy - shift[1], self.wz - shift[2], indexing="ij")
        coarse = (6, 6, 5)
        self.ax = r[0, 0] * X + r[0, 1] * Y + r[0, 2] * Z + disp_mm * _field(rng, coarse, self.shape)
        self.ay = r[1, 0] * X + r[1, 1] * Y + r[1, 2] * Z + disp_mm * _field(rng, coarse, self.shape)
        self.az = r[2, 0] * X + r[2, 1] * Y + r[2, 2] * Z + 0.6 * disp_mm * _field(rng, coarse, self.shape)
        del X, Y, Z
        self.rot, self.shift = rot, np.asarray(shift, dtype=np.float32)
        self.hu = np.full(self.shape, -1000.0, dtype=np.float32)
        self.label = np.zeros(self.shape, dtype=np.uint8)
        self.width = float(min(sx, sy))  # in-plane edge ramp; z partial volume comes from sub-slices

    def box(self, center: Sequence[float], radius: float | Sequence[float]) -> tuple[slice, slice, slice]:
        """Index box covering an anatomy-coords box of half-size ``radius`` mm, plus a deformation margin."""
        c = self.rot @ np.asarray(center, dtype=np.float32) + self.shift
        rad = np.broadcast_to(np.asarray(radius, dtype=np.float32), (3,))
        rad = np.abs(self.rot) @ rad + 15.0
        out = []
        for w, ci, r in zip((self.wx, self.wy, self.wz), c, rad):
            i0, i1 = np.searchsorted(w, ci - r), np.searchsorted(w, ci + r)
            out.append(slice(int(i0), int(max(i1, i0))))
        return tuple(out)

    def coords(self, box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.ax[box], self.ay[box], self.az[box]

    def paint(
        self, box, dist: np.ndarray, value, label: int | None = None, keep: Sequence[int] = ()
    ) -> np.ndarray:
        """Blend ``value`` where ``dist`` (mm, < 0 inside) is inside; set ``label`` where >= half covered.

        Voxels whose current label is in ``keep`` are left untouched. Returns the occupancy.
        """
        occ = np.clip(0.5 - dist / self.width, 0.0, 1.0)
        if keep:
            occ = occ * ~np.isin(self.label[box], keep)
        hu = self.hu[box]
        hu += occ * (value - hu)
        if label is not None:
            lab = self.label[box]
            lab[occ >= 0.5] = label
        return occ


def _ellipsoid(x, y, z, center, axes, rot=None) -> np.ndarray:
    """Approximate signed distance (mm) to an ellipsoid with semi-axes ``axes`` rotated by ``rot``."""
    u, v, w = x - center[0], y - center[1], z - center[2]
    if rot is not None:
        r = rot.T
        u, v, w = (r[0, 0] * u + r[0, 1] * v + r[0, 2] * w, r[1, 0] * u + r[1, 1] * v + r[1, 2] * w,
                   r[2, 0] * u + r[2, 1] * v + r[2, 2] * w)  # fmt: skip
    a, b, c = axes
    rr = np.sqrt((u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2) + 1e-6
    grad = np.sqrt((u / a**2) ** 2 + (v / b**2) ** 2 + (w / c**2) ** 2) / rr + 1e-6
    return (rr - 1.0) / grad


def _ellipse2d(x, y, cx, cy, a, b) -> np.ndarray:
    """Approximate signed distance (mm) to an elliptic cylinder along z."""
    u, v = x - cx, y - cy
    rr = np.sqrt((u / a) ** 2 + (v / b) ** 2) + 1e-6
    grad = np.sqrt((u / a**2) ** 2 + (v / b**2) ** 2) / rr + 1e-6
    return (rr - 1.0) / grad


def _smin(a: np.ndarray, b: np.ndarray, k: float = 8.0) -> np.ndarray:
    """Smooth union of two signed distances."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def render_ct_abdomen(
    rng: np.random.Generator,
    shape: Sequence[int] = (128, 128, 40),
    spacing: Sequence[float] = (2.8, 2.8, 5.0),
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Render one phantom: (HU volume int16 (x, y, z) in RAS order, label uint8, case parameters)."""
    from scipy.ndimage import gaussian_filter

    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    fov_z = shape[2] * spacing[2]
    u = rng.uniform
    enh = float(u(0.0, 1.0))  # contrast phase: 0 unenhanced .. 1 portal venous
    hu = {
        "fat": u(-110, -85),
        "muscle": u(40, 55) + 12 * enh,
        "liver": u(50, 70) + 45 * enh,
        "spleen": u(40, 60) + 60 * enh,
        "kidney_cortex": u(30, 40) + 150 * enh,
        "kidney_medulla": u(28, 38) + 60 * enh,
        "blood": u(35, 50) + 140 * enh,
        "bowel": u(25, 45) + 40 * enh,
        "fluid": u(0, 20),
        "cancellous": u(150, 260),
        "cortical": u(700, 1000),
        "disc": u(70, 100),
        "gas": u(-990, -900),
    }
    noise_sd = float(u(10, 22))
    scale = float(u(0.85, 1.12))  # body habitus
    rot = _rot(u(-6, 6), u(-2, 2), u(-3, 3))
    shift = (u(-10, 10), u(-8, 8) + 10.0, 0.0)
    cv = _Canvas(shape, spacing, rot, shift, disp_mm=float(u(3, 6)), rng=rng)
    fine = cv.shape

    # --- body outline, subcutaneous fat, muscle wall, cavity (elliptic cylinders, asymmetric AP) ---
    a_body = min(165 * scale, 0.48 * shape[0] * spacing[0])
    b_ant = min(118 * scale, 0.45 * shape[1] * spacing[1])
    b_post = 0.85 * b_ant
    fat = float(u(8, 30)) * scale
    wall = float(u(8, 13))
    full = (slice(None),) * 3
    x, y, z = cv.coords(full)
    taper = 1.0 + 0.04 * (z - fov_z / 2) / fov_z  # slightly wider superiorly (lower ribs)
    post = y < 0

    def outline(shrink_lat: float, shrink_ap: float, x=x, y=y, post=post) -> np.ndarray:
        b = np.where(post, b_post - 0.8 * shrink_ap, b_ant - shrink_ap)
        return _ellipse2d(x, y, 0.0, 0.0, a_body * taper - shrink_lat, b * taper)

    tex_fat = 6 * _field(rng, (10, 10, 6), fine)
    cv.paint(full, outline(0, 0), hu["fat"] + tex_fat)
    d_wall = outline(fat, fat)
    cv.paint(full, d_wall, hu["muscle"] + 3 * _field(rng, (10, 10, 6), fine))
    d_cav = outline(fat + wall, fat + 0.8 * wall)
    # cavity contents: mesenteric fat and bowel loops (more bowel anteriorly / inferiorly), gas
    g = _field(rng, (22, 22, 14), fine) + 0.9 * np.tanh(y / 60.0) - 0.5 * (z / fov_z - 0.3)
    bowel_occ = np.clip(0.5 + g / 0.35, 0.0, 1.0)
    gas = (_field(rng, (26, 26, 16), fine) > 1.3) & (g > 0.3)
    contents = (
        hu["fat"] + tex_fat + bowel_occ * (hu["bowel"] - hu["fat"] + 4 * _field(rng, (12, 12, 8), fine))
    )
    contents = np.where(gas, hu["gas"], contents)
    cv.paint(full, d_cav, contents)
    del g, bowel_occ, gas, contents, tex_fat

    # --- spine geometry (lordosis: slightly more anterior inferiorly) ---
    y_vb = -b_post + fat + 52.0
    # paraspinal (erector spinae) and psoas muscles, in a box around the spine
    sb = cv.box((0.0, y_vb - 10.0, fov_z / 2), (95.0, 70.0, fov_z / 2 + 5.0))
    bxx, byy, bzz = cv.coords(sb)
    y_sp = y_vb + 6.0 * (1 - bzz / fov_z)  # lordosis: slightly more anterior inferiorly
    for side in (-1, 1):
        d = _ellipse2d(bxx, byy, side * 32.0, y_sp - 40.0, 25.0 * scale, 18.0)
        cv.paint(sb, np.maximum(d, d_wall[sb]), hu["muscle"])  # stays inside the subcutaneous fat
        psoas_r = 6.0 + 14.0 * np.clip(1.0 - bzz / (0.6 * fov_z), 0.0, 1.0)
        d = _ellipse2d(bxx, byy, side * (30.0 + 0.4 * psoas_r), y_sp + 2.0, psoas_r * 1.1, psoas_r)
        cv.paint(sb, d, hu["muscle"])
    del psoas_r

    # --- liver (right: RAS x > 0) with gallbladder ---
    a_in, b_in = a_body - fat - wall, b_ant - fat - wall
    ls = float(u(0.88, 1.12))
    lc = (0.4 * a_in + u(-8, 8), 0.05 * b_in + u(-8, 8), 0.62 * fov_z + u(-12, 8))
    la = (0.5 * a_in * ls, 0.78 * b_in * ls, 0.36 * fov_z * ls)
    lrot = _rot(u(-10, 10), u(-8, 8), u(-8, 8))
    left_c = (-0.12 * a_in + u(-10, 10), 0.42 * b_in + u(-6, 6), lc[2] + 0.1 * fov_z)
    left_a = (0.38 * a_in * ls, 0.3 * b_in * ls, 0.17 * fov_z * ls)
    bx = cv.box((0.1 * a_in, 0.1 * b_in, lc[2]), max(la) + 0.4 * a_in)
    lx, ly, lz = cv.coords(bx)
    d_liver = _smin(_ellipsoid(lx, ly, lz, lc, la, lrot), _ellipsoid(lx, ly, lz, left_c, left_a, lrot), 15.0)
    d_liver = np.maximum(d_liver, d_cav[bx] + 3.0)
    tex = 5 * _field(rng, (8, 8, 6), fine)[bx] + 3 * _field(rng, (20, 20, 12), fine)[bx]
    cv.paint(bx, d_liver, hu["liver"] + tex, LIVER)
    gc = (lc[0] - 0.35 * la[0] + u(-5, 5), lc[1] + 0.45 * la[1], lc[2] - 0.55 * la[2])
    ga = (u(11, 18), u(11, 18), u(25, 40))
    bx = cv.box(gc, max(ga))
    gx, gy, gz = cv.coords(bx)
    d = np.maximum(_ellipsoid(gx, gy, gz, gc, ga, _rot(0, 20, -20)), d_cav[bx] + 3.0)
    cv.paint(bx, d, hu["fluid"], 0)

    # --- stomach (left anterior upper) with wall, fluid and an air-fluid level ---
    sc = (-0.3 * a_in + u(-10, 10), 0.3 * b_in + u(-8, 8), 0.7 * fov_z + u(-10, 10))
    sa = (u(32, 48), u(28, 40), u(35, 50))
    bx = cv.box(sc, max(sa))
    sx_, sy_, sz_ = cv.coords(bx)
    d_st = np.maximum(_ellipsoid(sx_, sy_, sz_, sc, sa, _rot(u(-30, 0))), d_cav[bx] + 2.0)
    cv.paint(bx, d_st, hu["bowel"] + 10, 0, keep=(LIVER,))
    level = sc[1] + sa[1] * u(0.0, 0.6)
    content = np.where(sy_ > level, hu["gas"], hu["fluid"] + 15 * u(0, 1))
    cv.paint(bx, d_st + 4.0, content, 0, keep=(LIVER,))

    # --- spleen (left posterior upper): crescent = ellipsoid minus a medial ellipsoid ---
    ss = float(u(0.9, 1.25))
    spc = (-(a_in - 50.0 * ss) + u(-6, 6), -0.45 * b_post + u(-10, 10), 0.64 * fov_z + u(-15, 10))
    spa = (u(25, 34) * ss, u(50, 65) * ss, u(42, 58) * ss)
    sprot = _rot(u(-55, -30), u(-10, 10), u(-10, 10))
    bx = cv.box(spc, max(spa) + 10)
    px, py, pz = cv.coords(bx)
    d_sp = _ellipsoid(px, py, pz, spc, spa, sprot)
    hollow_c = np.asarray(spc) + sprot @ np.array([spa[0] * 1.7, 0.0, 0.0], dtype=np.float32)
    d_hollow = _ellipsoid(px, py, pz, hollow_c, (spa[0] * 1.1, spa[1] * 0.75, spa[2] * 0.7), sprot)
    d_sp = np.maximum(np.maximum(d_sp, -d_hollow), d_cav[bx] + 2.5)
    tex = 4 * _field(rng, (8, 8, 6), fine)[bx] + 3 * _field(rng, (20, 20, 12), fine)[bx]
    cv.paint(bx, d_sp, hu["spleen"] + tex, SPLEEN)

    # --- kidneys: left (x < 0, label 3) higher than right (x > 0, label 4) ---
    kz = 0.4 * fov_z + u(-12, 12)
    for side, lab, dz in ((-1, LKIDNEY, 0.0), (1, RKIDNEY, -u(5, 20))):
        ks = float(u(0.85, 1.15))
        kc = (side * (62.0 + u(-6, 8)), y_vb + u(-2, 10), kz + dz)
        ka = (24.0 * ks, 28.0 * ks, 52.0 * ks)
        krot = _rot(side * u(20, 40), side * u(-15, -5), u(-10, 10))
        bx = cv.box(kc, max(ka))
        kx, ky, kzz = cv.coords(bx)
        d_k = _ellipsoid(kx, ky, kzz, kc, ka, krot)
        hil_c = np.asarray(kc) + krot @ np.array([-side * ka[0] * 0.85, 0.0, 0.0], dtype=np.float32)
        d_hil = _ellipsoid(kx, ky, kzz, hil_c, (ka[0] * 0.55, ka[1] * 0.45, ka[2] * 0.45), krot)
        d_k = np.maximum(d_k, d_cav[bx] + 2.0)
        cv.paint(bx, np.maximum(d_k, -d_hil), hu["kidney_cortex"], lab)
        cv.paint(bx, np.maximum(d_k + 6.0, -d_hil + 1.0), hu["kidney_medulla"], lab)
        cv.paint(bx, np.maximum(d_hil, d_k), hu["fat"], 0)

    # --- great vessels ---
    cv.paint(sb, _ellipse2d(bxx, byy, -14.0 + u(-4, 4), y_sp + 30.0, 11.0, 11.0), hu["blood"])
    cv.paint(sb, _ellipse2d(bxx, byy, 24.0 + u(-4, 4), y_sp + 30.0, 14.0, 10.0), hu["blood"] - 10 * enh)

    # --- spine: vertebral bodies (cortical shell, cancellous core), discs, arch, canal ---
    period = float(u(30, 36))
    disc = (np.mod(bzz + u(0, period), period) < 8.0).astype(np.float32)
    d_vb = _ellipse2d(bxx, byy, 0.0, y_sp, 21.0 * scale**0.5, 17.0 * scale**0.5)
    d_arch = _ellipse2d(bxx, byy, 0.0, y_sp - 26.0, 14.0, 11.0)
    d_canal = _ellipse2d(bxx, byy, 0.0, y_sp - 26.0, 8.5, 7.0)
    d_spinous = _ellipse2d(bxx, byy, 0.0, y_sp - 42.0, 4.5, 10.0)
    d_trans = np.minimum(
        _ellipse2d(bxx, byy, 28.0, y_sp - 20.0, 15.0, 5.0),
        _ellipse2d(bxx, byy, -28.0, y_sp - 20.0, 15.0, 5.0),
    )
    d_post = np.minimum(np.minimum(np.maximum(d_arch, -d_canal), d_spinous), d_trans + 3.0 * disc)
    d_bone = np.minimum(d_vb + 1e3 * disc, d_post)
    cv.paint(sb, d_bone, hu["cortical"], SPINE)
    core = np.minimum(d_vb + 2.5 + 1e3 * disc, d_post + 2.0)
    cv.paint(sb, core, hu["cancellous"] + 25 * _field(rng, (16, 16, 10), fine)[sb])
    cv.paint(sb, d_vb + 1e3 * (1 - disc), hu["disc"], 0)
    cv.paint(sb, d_canal, hu["fluid"], 0)
    del disc, d_vb, d_arch, d_canal, d_spinous, d_trans, d_post, d_bone, core, bxx, byy, bzz, y_sp

    # --- ribs: bands in the body wall, descending anteriorly, above the lower third ---
    rib_period = float(u(26, 32))
    zr = np.mod(z + 0.35 * y + u(0, rib_period), rib_period) - rib_period / 2
    ang_ok = (np.abs(x) > 40.0) | (y < 0)
    d_rib = np.maximum(np.abs(d_wall + wall / 2 + 1.0) - 4.5, np.abs(zr) - 5.0)
    d_rib = np.where(ang_ok & (z > 0.45 * fov_z), d_rib, 1e3)
    cv.paint(full, d_rib, hu["cortical"] * 0.6)
    del zr, ang_ok, d_rib, d_wall, x, y, z, post

    # --- scanner: slice profile, in-plane PSF, shading, correlated noise ---
    img = cv.hu.reshape(shape[0], shape[1], shape[2], _SUB).mean(axis=3)
    label = cv.label[:, :, _SUB // 2 :: _SUB].copy()
    img = gaussian_filter(img, sigma=(0.6, 0.6, 0.0))
    body = img > -500
    img += body * 4.0 * _field(rng, (4, 4, 3), shape)
    noise = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=(0.8, 0.8, 0.0))
    img += noise * (noise_sd / float(noise.std()))
    vol = np.clip(np.rint(img), -1024, 3071).astype(np.int16)
    params = {
        "contrast_enhancement": round(enh, 4),
        "noise_sd_hu": round(noise_sd, 2),
        "body_scale": round(scale, 4),
        "organ_hu": {k: round(float(hu[k]), 1) for k in ("liver", "spleen", "kidney_cortex", "muscle")},
    }
    return vol, label, params


def _split(n: int) -> tuple[list[int], list[int], list[int]]:
    """Deterministic split: last 20 % test, the 20 % before validation (none when n < 3)."""
    k = int(round(0.2 * n)) if n >= 3 else 0
    k = max(k, 1) if n >= 3 else 0
    idx = list(range(n))
    return idx[: n - 2 * k], idx[n - 2 * k : n - k], idx[n - k :]


def generate_ct_abdomen(
    out_dir: str | Path,
    n: int,
    seed: int,
    shape: Sequence[int] = (128, 128, 40),
    spacing: Sequence[float] = (2.8, 2.8, 5.0),
    dicom: bool = True,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write ``n`` abdominal CT phantoms (NIfTI + DICOM series) and an MSD ``dataset.json`` into ``out_dir``.

    Args:
        out_dir: existing empty folder.
        n: number of cases; seed: data set seed (case ``i`` uses ``rng_for(seed, i)``).
        shape: voxels (x, y, z); at least (64, 64, 16).
        spacing: voxel size in mm (x, y, z); the field of view should cover an abdomen
            (about 300-400 mm in-plane, 150-250 mm in z).
        dicom: also write ``dicom/case_XXX/`` series.
        progress: optional callback called with the case index after each case.

    Returns:
        the summary also written to ``summary.json``.

    Example:
        >>> # generate_ct_abdomen(Path("/tmp/empty"), n=2, seed=0)["split"]
    """
    out = Path(out_dir)
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or min(shape[:2]) < 64 or shape[2] < 16:
        raise ValueError(f"option shape must be 3 voxel counts (x, y, z) >= (64, 64, 16), got {shape}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"option spacing must be 3 positive voxel sizes in mm, got {spacing}")
    fov = [s * p for s, p in zip(shape, spacing)]
    if not (250 <= min(fov[:2]) and max(fov[:2]) <= 500 and 120 <= fov[2] <= 400):
        raise ValueError(
            f"options shape x spacing give a field of view of {fov} mm; expected 250-500 mm in-plane "
            "and 120-400 mm in z to hold an abdomen"
        )
    train, val, test = _split(n)
    cases = []
    for i in range(n):
        rng = rng_for(seed, i)
        vol, label, params = render_ct_abdomen(rng, shape, spacing)
        name = f"case_{i:03d}"
        origin = (
            -(shape[0] - 1) / 2 * spacing[0],
            -(shape[1] - 1) / 2 * spacing[1],
            round(float(rng.uniform(-600.0, -400.0)), 1),  # table position
        )
        write_nifti(out / "imagesTr" / f"{name}.nii.gz", vol, spacing, origin)
        write_nifti(out / "labelsTr" / f"{name}.nii.gz", label, spacing, origin)
        item = {"image": f"imagesTr/{name}.nii.gz", "label": f"labelsTr/{name}.nii.gz"}
        if dicom:
            write_ct_series(
                out / "dicom" / name,
                vol,
                spacing,
                origin,
                uid_seed=("monai_ext", "ct_abdomen", seed, i),
                patient_name=f"SYNTHETIC^CASE{i:03d}",
                patient_id=f"SYNTH-CTABD-{seed}-{i:03d}",
                description=f"synthetic abdomen CT {name}",
            )
            item["dicom"] = f"dicom/{name}"
        cases.append({**item, "case": name, **params})
        if progress is not None:
            progress(i)
    lists = {k: [{f: cases[i][f] for f in ("image", "label", "dicom") if f in cases[i]} for i in idx]
             for k, idx in (("training", train), ("validation", val), ("test", test))}  # fmt: skip
    write_json(
        out / "dataset.json",
        {
            "name": "SyntheticCTAbdomen",
            "description": "synthetic abdominal CT phantoms (HU) with liver, spleen, kidney and spine labels",
            "reference": "monai_ext.data.synthetic.ct_abdomen",
            "licence": "CC0-1.0",
            "release": "1.0",
            "tensorImageSize": "3D",
            "modality": {"0": "CT"},
            "labels": dict(LABELS),
            "numTraining": len(train),
            "numValidation": len(val),
            "numTest": len(test),
            **lists,
        },
    )
    summary = {
        "kind": "ct_abdomen",
        "n": n,
        "seed": seed,
        "shape": list(shape),
        "spacing_mm": list(spacing),
        "labels": dict(LABELS),
        "split": {
            k: [cases[i]["case"] for i in idx]
            for k, idx in (("training", train), ("validation", val), ("test", test))
        },
        "targets": {"spleen_dice": 0.93},
        "cases": [
            {k: c[k] for k in ("case", "contrast_enhancement", "noise_sd_hu", "body_scale", "organ_hu")}
            for c in cases
        ],
    }
    write_json(out / "summary.json", summary)
    return summary
