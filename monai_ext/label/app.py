"""The MONAI Label app serving the monai-ext bundles (needs the ``label`` extra).

Bundles are found at start: every shipped bundle MONAI Label can serve (see
:func:`monai_ext.label.bundles.servable_bundles`) is copied into ``<app>/model/<name>`` once, so trained
weights (``models/model.pt``) and training runs stay in the app folder. Bundles copied into
``<app>/model`` by hand are served too. Nothing is fetched from the internet.

Conf options (``--conf KEY VALUE`` of ``monailabel start_server``):
    ``models``: ``all`` (default) or comma-separated bundle names.
    ``preload``: ``true`` to load the networks at start.
    ``wsi_backend``: ``openslide`` (default), ``tifffile`` or ``cucim``: how slide regions are read.

Studies: CT / MRI as NIfTI (a multi-sequence MRI study is one NIfTI whose channels are the sequences in
the bundle's ``channel_def`` order, see ``monai_ext.label.studies``); H&E patches as PNG; slides as
``.svs`` / ``.tif`` / ... (regions requested by QuPath reach the histology bundles, see
``monai_ext.label.regions``).

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
import torch
from fastapi import HTTPException
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

from monai_ext.label.bundles import bundle_kind, servable_bundles
from monai_ext.label.tasks import ExtBundleInferTask, ExtBundleTrainTask

__all__ = ["MonaiExtLabelApp", "app_bundles"]

logger = logging.getLogger(__name__)


def app_bundles(
    model_dir: str | os.PathLike, models: str = "all", skipped: dict[str, str] | None = None
) -> dict[str, tuple[Path, str]]:
    """Name -> (folder, kind) of the bundles to serve from ``model_dir``, copying missing shipped ones.

    ``models`` is ``all`` or comma-separated names; an unknown name raises ``ValueError`` listing the known.
    A folder under ``model_dir`` that is not a servable bundle is skipped with a warning (and its reason
    recorded in ``skipped``, so a request for it can say why).
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
            if skipped is not None:
                skipped[path.name] = str(e)
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
        #: model name -> why it is not served (not a bundle, no weights yet)
        self.skipped: dict[str, str] = {}
        self.bundles = app_bundles(self.model_dir, conf.get("models", "all"), self.skipped)
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
                self.skipped[name] = "no models/model.pt yet; train it (/train/), then restart to serve it"
                logger.warning(f"{name}: {self.skipped[name]}")
        return infers

    def _unknown_model(self, model: object) -> HTTPException:
        why = f" ({self.skipped[model]})" if isinstance(model, str) and model in self.skipped else ""
        return HTTPException(
            404, detail=f"unknown model {model!r}{why}; expected one of {sorted(self._infers)}"
        )

    def infer(self, request: dict, datastore=None):
        """Run an infer task; an unknown model is a 404 and a failing study a 422, both with a message."""
        model = request.get("model")
        if model not in self._infers:
            raise self._unknown_model(model)
        return self._as_http_422(super().infer, request, datastore, "image")

    def infer_wsi(self, request: dict, datastore=None):
        """Region / whole-slide inference (QuPath's ``/infer/wsi_v2``); errors as in :meth:`infer`."""
        model = request.get("model")
        if model not in self._infers:
            raise self._unknown_model(model)
        if not torch.cuda.is_available():
            request = dict(request, multi_gpu=False)  # MONAI Label would spread tiles over "cuda:<none>"
        return self._as_http_422(super().infer_wsi, request, datastore, "slide")

    @staticmethod
    def _as_http_422(run, request: dict, datastore, what: str):
        """``run(request, datastore)``; any failure but an HTTP error becomes a 422 naming model and file."""
        try:
            return run(request, datastore)
        except HTTPException:
            raise
        except Exception as e:
            model, image = request.get("model"), os.path.basename(str(request.get("image", "")))
            logger.exception(f"model {model} failed on {what} {image}")
            raise HTTPException(
                422, detail=f"model {model!r} failed on {what} {image!r}: {type(e).__name__}: {e}"
            ) from e

    def train(self, request: dict):
        """Start a train task; an unknown model is a 404 with a message."""
        model = request.get("model")
        if model and model not in self._trainers:
            why = f" ({self.skipped[model]})" if model in self.skipped and model not in self.bundles else ""
            raise HTTPException(
                404, detail=f"unknown model {model!r}{why}; expected one of {sorted(self._trainers)}"
            )
        return super().train(request)

    def init_trainers(self) -> dict[str, TrainTask]:
        trainers: dict[str, TrainTask] = {}
        for name, (path, _) in self.bundles.items():
            task = ExtBundleTrainTask(str(path), self.conf)
            if task.is_valid():
                trainers[name] = task
        return trainers
