"""Time rigid and affine registration (ITK, Mattes MI) on the synthetic brain MRI at its default size.

Prints one JSON line per transform type: wall time, recovery error of a known rigid transform
(8 degrees about an oblique axis, 6 mm), metric before/after, image shape, threads and date.

Example:
    $ OMP_NUM_THREADS=1 python benchmarks/registration.py --threads 1
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import time

import numpy as np
import torch
from monai.data import MetaTensor

from monai_ext.data.synthetic._common import ras_affine, rng_for
from monai_ext.data.synthetic.mri_brain import _SHAPE, _SPACING, synthesize_mri_brain_case
from monai_ext.registration import itk_transform_to_ras_matrix, register_images, resample_to_reference


def _known_transform():
    import itk

    a = np.array([1.0, 2.0, 3.0]) / math.sqrt(14.0)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    th = math.radians(8.0)
    s = itk.AffineTransform[itk.D, 3].New()
    s.SetMatrix(itk.matrix_from_array(np.eye(3) + math.sin(th) * k + (1 - math.cos(th)) * k @ k))
    s.SetTranslation([3.0, -4.0, 3.4641016])
    return s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="ITK threads (default 1)")
    parser.add_argument("--moving", default="flair", choices=("t1c", "t2", "flair"), help="moving sequence")
    args = parser.parse_args()
    import itk

    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(args.threads)
    imgs, _ = synthesize_mri_brain_case(rng_for(0, 0), _SHAPE, _SPACING)
    origin = [-(n - 1) / 2 * s for n, s in zip(_SHAPE, _SPACING)]
    aff = torch.as_tensor(ras_affine(_SPACING, origin), dtype=torch.float64)
    fixed = MetaTensor(torch.as_tensor(imgs["t1"])[None], affine=aff.clone())
    s = _known_transform()
    moving = resample_to_reference(MetaTensor(torch.as_tensor(imgs[args.moving])[None], affine=aff), fixed, s)
    s_ras = itk_transform_to_ras_matrix(s)
    register_images(fixed, moving, None, "rigid", shrink_factors=(4,), smoothing_sigmas=(2.0,), iterations=5)
    for kind in ("rigid", "affine"):
        t0 = time.perf_counter()
        r = register_images(fixed, moving, None, kind)
        dt = time.perf_counter() - t0
        e = s_ras @ r.matrix
        u, _, vt = np.linalg.svd(e[:3, :3])
        angle = math.degrees(math.acos(np.clip((np.trace(u @ vt) - 1) / 2, -1, 1)))
        print(
            json.dumps(
                {
                    "benchmark": "registration",
                    "type": kind,
                    "fixed": "t1",
                    "moving": args.moving,
                    "shape": list(_SHAPE),
                    "spacing_mm": list(_SPACING),
                    "seconds": round(dt, 2),
                    "angle_error_deg": round(angle, 3),
                    "translation_error_mm": round(float(np.linalg.norm(e[:3, 3])), 3),
                    "metric_initial": round(r.metric_initial, 4),
                    "metric_final": round(r.metric_final, 4),
                    "itk_threads": args.threads,
                    "device": f"cpu ({platform.processor() or platform.machine()})",
                    "date": datetime.date.today().isoformat(),
                }
            )
        )


if __name__ == "__main__":
    main()
