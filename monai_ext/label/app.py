"""The MONAI Label app serving the monai-ext bundles (needs the ``label`` extra).

Bundles are found at start: every shipped bundle MONAI Label can serve (see
:func:`monai_ext.label.bundles.servable_bundles`) is copied into ``<app>/model/<name>`` once, so trained
weights (``models/model.pt``) and training runs stay in the app folder. Bundles copied into
``<app>/model`` by hand are served too. Nothing is fetched from the internet.

Conf options (``--conf KEY VALUE`` of ``monailabel start_server``):
    ``models``: ``all`` (default) or comma-separated bundle names.
    ``preload``: ``true`` to load the networks at start.

Example:
    $ monai-ext label app ./label_app
    $ monailabel start_server --app ./label_app --studies ./studies --conf models ct_organ_segmentation
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import monailabel
from fastapi import HTTPException
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

from monai_ext.label.bundles import bundle_kind, servable_bundles
from monai_ext.label.tasks import ExtBundleInferTask, ExtBundleTrainTask

__all__ = ["MonaiExtLabelApp", "app_bundles"]

logger = logging.getLogger(__name__)


def app_bundles(model_dir: str | os.PathLike, models: str = "all") -> dict[str, tuple[Path, str]]:
    """Name -> (folder, kind) of the bundles to serve from ``model_dir``, copying missing shipped ones.

    ``models`` is ``all`` or comma-separated names; an unknown name raises ``ValueError`` listing the known.
    A folder under ``model_dir`` that is not a servable bundle is skipped with a warning.
    """
    from monai_ext.bundle import bundle_path

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    for name in servable_bundles():
        dest = model_dir / name
        if not dest.exists():
            tmp = model_dir / f".{name}.copying"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(
                bundle_path(name), tmp, ignore=shutil.ignore_patterns("eval", "pred", "__pycache__")
            )
            os.replace(tmp, dest)
    found: dict[str, tuple[Path, str]] = {}
    for path in sorted(p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            found[path.name] = (path, bundle_kind(path))
        except ValueError as e:
            logger.warning(f"skipping {path.name}: {e}")
    wanted = (
        [m.strip() for m in models.split(",") if m.strip()] if models and models != "all" else list(found)
    )
    unknown = [m for m in wanted if m not in found]
    if unknown:
        raise ValueError(
            f"--conf models: unknown bundle(s) {unknown}; expected 'all' or some of {list(found)}"
        )
    return {m: found[m] for m in wanted}


class MonaiExtLabelApp(MONAILabelApp):
    """MONAI Label app: one infer task and one train task per monai-ext bundle; offline."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        self.model_dir = os.path.join(app_dir, "model")
        self.bundles = app_bundles(self.model_dir, conf.get("models", "all"))
        logger.info(f"monai-ext bundles: {', '.join(f'{n} ({k})' for n, (_, k) in self.bundles.items())}")
        from monai_ext import __version__

        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"monai-ext bundles ({__version__}, MONAI Label {monailabel.__version__})",
            description="Segmentation, classification and detection bundles of monai-ext",
            version=__version__,
        )

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for name, (path, kind) in self.bundles.items():
            # a class score vector has no grid to restore onto the input image
            task = ExtBundleInferTask(
                str(path), self.conf, type=kind, add_post_restore=kind == "segmentation"
            )
            if task.is_valid():
                infers[name] = task
            else:
                logger.warning(f"{name}: no models/model.pt yet; train it first, then restart to serve it")
        return infers

    def infer(self, request: dict, datastore=None):
        """Run an infer task; an unknown model is a 404 and a failing study a 422, both with a message."""
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(
                404, detail=f"unknown model {model!r}; expected one of {sorted(self._infers)}"
            )
        try:
            return super().infer(request, datastore)
        except HTTPException:
            raise
        except Exception as e:
            image = os.path.basename(str(request.get("image", "")))
            logger.exception(f"model {model} failed on image {image}")
            raise HTTPException(
                422, detail=f"model {model!r} failed on image {image!r}: {type(e).__name__}: {e}"
            ) from e

    def train(self, request: dict):
        """Start a train task; an unknown model is a 404 with a message."""
        model = request.get("model")
        if model and model not in self._trainers:
            raise HTTPException(
                404, detail=f"unknown model {model!r}; expected one of {sorted(self._trainers)}"
            )
        return super().train(request)

    def init_trainers(self) -> dict[str, TrainTask]:
        trainers: dict[str, TrainTask] = {}
        for name, (path, _) in self.bundles.items():
            task = ExtBundleTrainTask(str(path), self.conf)
            if task.is_valid():
                trainers[name] = task
        return trainers
