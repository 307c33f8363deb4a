"""monai-ext under the label environment's pins (numpy < 2, pydicom < 3): imports, DICOM and transforms.

Skipped outside the label environment (``bash scripts/label_env.sh``); the main environment runs the
same code paths with the newest numpy and pydicom in the rest of the suite.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip(
    "monailabel",
    reason="monailabel is not installed: create the label venv with `bash scripts/label_env.sh` and run "
    "`.venv-label/bin/python -m pytest tests/label`",
)


def test_pins_of_the_label_extra():
    import pydicom

    assert int(np.__version__.split(".")[0]) < 2
    assert int(pydicom.__version__.split(".")[0]) < 3


def test_dicom_series_matches_nifti_under_old_pins(tmp_path):
    import nibabel as nib
    from monai.transforms import LoadImage

    import monai_ext
    from monai_ext.data.dicom import DicomSeriesReader
    from monai_ext.data.synthetic import generate
    from monai_ext.transforms.dictionary import HUWindowd

    assert monai_ext.__version__
    ct = generate("ct_abdomen", tmp_path / "ct", n=1, seed=0, shape=(96, 96, 30), spacing=(3.0, 3.0, 5.0))
    series = LoadImage(reader=DicomSeriesReader(), image_only=True)(str(ct / "dicom" / "case_000"))
    nifti = nib.load(ct / "imagesTr" / "case_000.nii.gz")
    assert tuple(series.shape) == nifti.shape
    np.testing.assert_allclose(
        np.sort(np.asarray(series).ravel()), np.sort(nifti.get_fdata().ravel()), atol=1
    )
    out = HUWindowd("image", a_min=-175, a_max=250)({"image": series[None]})["image"]
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
