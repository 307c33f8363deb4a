"""MONAI Label tasks in-process (no server): multi-sequence studies reach the bundle's training transforms.

Needs the label environment (``bash scripts/label_env.sh``); skipped elsewhere.
"""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip(
    "monailabel",
    reason="monailabel is not installed: create the label venv with `bash scripts/label_env.sh` and run "
    "`.venv-label/bin/python -m pytest tests/label`",
)

MRI = "mri_multimodal_segmentation"


class _Datastore:
    def __init__(self, items):
        self.items = items

    def datalist(self):
        return self.items


def test_train_task_feeds_multisequence_studies(tmp_path):
    from monai_ext.bundle import bundle_path
    from monai_ext.data.synthetic import generate
    from monai_ext.label.studies import input_sequences, stack_sequences
    from monai_ext.label.tasks import ExtBundleTrainTask

    mri = generate("mri_brain_multimodal", tmp_path / "mri", n=1, seed=0, shape=(48, 40, 32))
    order = input_sequences(MRI)
    files = {q: mri / "case_000" / f"case_000_{q}.nii.gz" for q in order}
    files["t1c"] = None  # not acquired: an all-zero channel
    study = stack_sequences(files, tmp_path / "studies" / "mri_000.nii.gz", order)
    label = mri / "case_000" / "case_000_seg.nii.gz"
    bundle = shutil.copytree(bundle_path(MRI), tmp_path / "app" / "model" / MRI)

    task = ExtBundleTrainTask(str(bundle), {})
    (entry,) = task._fetch_datalist({"model": MRI}, _Datastore([{"image": str(study), "label": str(label)}]))
    assert entry == {"image": str(study), "label": str(label), "presence": [1.0] * 4}
    # the bundle's own validation transforms (those of training minus the random crop) accept the entry
    out = task.bundle_config.get_parsed_content("validate#preprocessing", instantiate=True)(entry)
    image, seg = out["image"], out["label"]
    assert image.shape[0] == 4 and seg.shape[0] == 1 and tuple(image.shape[1:]) == tuple(seg.shape[1:])
    assert float(image[1].abs().max()) == 0.0 and float(image[0].abs().max()) > 0  # t1c stays missing
    assert set(seg.unique().tolist()) <= {0, 1, 2, 3}
    # the val interval is brought within the requested epochs so one epoch writes models/model.pt
    overrides = task._update_overrides({task.const.key_train_trainer_max_epochs(): 1})
    assert overrides["val_interval"] == 1
