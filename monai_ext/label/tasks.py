"""MONAI Label infer and train tasks for the monai-ext bundles (needs the ``label`` extra).

``ExtBundleInferTask`` runs a bundle's ``inference.json`` as MONAI Label's ``BundleInferTask`` does, with
one fix: MONAI Label adds string keys such as ``image_path`` to the request, and MONAI >= 1.6 reads every
``image_*`` key as the image's metadata dict, so ``Spacingd`` and friends fail. The string keys are set
aside before the transforms and put back for the writer. ``ExtBundleTrainTask`` is ``BundleTrainTask``
that also validates (and so checkpoints) within the requested number of epochs.

Example:
    >>> from monai_ext.label.tasks import ExtBundleInferTask  # doctest: +SKIP
    >>> task = ExtBundleInferTask("app/model/ct_organ_segmentation", {})  # doctest: +SKIP
    >>> label_file, result = task({"image": "ct.nii.gz", "device": "cpu"})  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any

from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask

__all__ = ["ExtBundleInferTask", "ExtBundleTrainTask", "STASH_KEY"]

logger = logging.getLogger(__name__)

#: where string ``<input>_*`` keys wait while the transforms run (the name does not start with ``image_``)
STASH_KEY = "monai_ext_stashed_keys"


class ExtBundleInferTask(BundleInferTask):
    """``BundleInferTask`` whose transforms never see string ``<input key>_*`` entries (MONAI >= 1.6)."""

    def _stash(self, data: dict[str, Any]) -> dict[str, Any]:
        prefix = f"{self.input_key}_"
        moved = {
            k: data.pop(k)
            for k in [k for k, v in data.items() if k.startswith(prefix) and isinstance(v, str)]
        }
        if moved:
            data.setdefault(STASH_KEY, {}).update(moved)
        return data

    def run_pre_transforms(self, data: dict[str, Any], transforms):
        return self._stash(super().run_pre_transforms(self._stash(data), transforms))

    def run_invert_transforms(self, data: dict[str, Any], pre_transforms, names):
        return super().run_invert_transforms(self._stash(data), pre_transforms, names)

    def run_post_transforms(self, data: dict[str, Any], transforms):
        return super().run_post_transforms(self._stash(data), transforms)

    def writer(self, data: dict[str, Any], extension=None, dtype=None):
        data.update(data.pop(STASH_KEY, {}))
        return super().writer(data, extension=extension, dtype=dtype)


class ExtBundleTrainTask(BundleTrainTask):
    """``BundleTrainTask`` that validates at least once within ``max_epochs`` so ``model.pt`` is written."""

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        max_epochs = int(overrides.get(self.const.key_train_trainer_max_epochs(), 1))
        interval = self.bundle_config.get("val_interval")
        if isinstance(interval, int) and interval > max_epochs:
            overrides["val_interval"] = max(1, max_epochs)
            logger.info(f"val_interval {interval} > max_epochs {max_epochs}: validating every {max_epochs}")
        return overrides
