"""MONAI Label infer and train tasks for the monai-ext bundles (needs the ``label`` extra).

``ExtBundleInferTask`` runs a bundle's ``inference.json`` as MONAI Label's ``BundleInferTask`` does, with
these additions:

- MONAI Label adds string keys such as ``image_path`` to the request, and MONAI >= 1.6 reads every
  ``image_*`` key as the image's metadata dict, so ``Spacingd`` and friends fail: the string keys are set
  aside before the transforms and put back for the writer. Keys a bundle's ``SelectItemsd`` drops are put
  back too.
- Multi-sequence bundles (``mri_multimodal_segmentation``): a study is one NIfTI whose channels are the
  sequences in the bundle's ``channel_def`` order (see :mod:`monai_ext.label.studies`); the channel count
  is checked and the result is a label volume on the study's grid.
- Detection bundles (``he_nuclei_detection``, ``ct_nodule_detection``): the bundle's ``detector`` runs
  on the preprocessed image; the bundle's postprocessing clips the boxes; the result JSON holds ``box``,
  ``label``, ``score``, ``class_name`` (3D: ``box`` in world millimetres, LPS ``cccwhd``, as MONAI Label's
  ``DetectionWriter`` and 3D Slicer's ROI markups expect, plus ``box_voxel`` on the study's grid, and a
  Slicer markups file as the label; 2D: ``box`` ``[x0, y0, x1, y1]`` level-0 pixels and ``points``, the
  box centres).
- Slides (``.svs``, ``.tif``... requested with ``location``/``size``/``level`` by QuPath through
  ``/infer/wsi_v2``): the region is read by :class:`monai_ext.label.regions.LoadSlideRegiond` instead of
  the bundle's loader; segmentation returns polygons, classification the class scores plus the region as
  one polygon named by its best class, detection the boxes as rectangles, all in level-0 pixels under
  ``annotation`` (MONAI Label's DSA / ASAP writers turn them into QuPath annotations).

``ExtBundleTrainTask`` is ``BundleTrainTask`` that also validates (and so checkpoints) within the requested
number of epochs, and feeds multi-sequence studies to the bundle.

Example:
    >>> from monai_ext.label.tasks import ExtBundleInferTask  # doctest: +SKIP
    >>> task = ExtBundleInferTask("app/model/ct_organ_segmentation", {})  # doctest: +SKIP
    >>> label_file, result = task({"image": "ct.nii.gz", "device": "cpu"})  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any

import numpy as np
import torch
from monai.data import PILReader
from monai.data.wsi_reader import BaseWSIReader
from monai.transforms import Lambda, LoadImaged
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask
from monailabel.transform.post import FindContoursd
from monailabel.transform.pre import LoadImageTensord
from monailabel.transform.writer import DetectionWriter, PolygonWriter
from monailabel.utils.others.label_colors import get_color

from monai_ext.label.regions import REGION_KEY, LoadSlideRegiond, is_slide, region_to_level0
from monai_ext.label.studies import input_sequences

__all__ = ["ExtBundleInferTask", "ExtBundleTrainTask", "STASH_KEY"]

logger = logging.getLogger(__name__)

#: where string ``<input>_*`` keys wait while the transforms run (the name does not start with ``image_``)
STASH_KEY = "monai_ext_stashed_keys"


def _xy_first(load: Any) -> bool:
    """Whether the bundle's ``LoadImaged`` returns 2D images x first (MONAI's ``PILReader`` default)."""
    readers = list(getattr(getattr(load, "_loader", None), "readers", []))
    if any(isinstance(r, BaseWSIReader) for r in readers):
        return False
    for r in reversed(readers):
        if r.verify_suffix("region.png"):
            return isinstance(r, PILReader) and bool(r.reverse_indexing)
    return False


def _rectangle(x0: float, y0: float, x1: float, y1: float) -> list[list[int]]:
    return [[round(x0), round(y0)], [round(x1), round(y0)], [round(x1), round(y1)], [round(x0), round(y1)]]


class ExtBundleInferTask(BundleInferTask):
    """``BundleInferTask`` for our bundles: MONAI 1.6 keys, multi-sequence studies, detection, slides."""

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any):
        super().__init__(path, conf, **kwargs)
        if not self.valid:
            return
        self.sequences = input_sequences(path)
        mpp = self.bundle_config.get("mpp")
        self.mpp = float(mpp) if isinstance(mpp, int | float) and not isinstance(mpp, bool) else None
        self.wsi_backend = conf.get("wsi_backend", "openslide")
        self.xy_first = False  # set from the bundle's loader at the first request
        if self.type == InferType.DETECTION and isinstance(
            self.bundle_config.get("score_thresh"), int | float
        ):
            self._config["score_thresh"] = float(self.bundle_config.get("score_thresh"))  # a client option
        if self.sequences:
            self.description = (
                f"{self.description} (one {len(self.sequences)}-channel NIfTI per study, channels "
                f"{', '.join(self.sequences)})"
            )

    # ------------------------------------------------------------------------------------- keys and inputs
    def _stash(self, data: dict[str, Any]) -> dict[str, Any]:
        prefix = f"{self.input_key}_"
        moved = {
            k: data.pop(k)
            for k in [k for k, v in data.items() if k.startswith(prefix) and isinstance(v, str)]
        }
        if moved:
            data.setdefault(STASH_KEY, {}).update(moved)
        return data

    def _is_slide_request(self, data: dict[str, Any]) -> bool:
        return self.dimension == 2 and is_slide(data.get(self.input_key))

    def pre_transforms(self, data=None):
        pre = list(super().pre_transforms(data))
        slide = data is not None and self._is_slide_request(data)
        out, replaced = [], False
        for t in pre:
            load = t.load_image_d if isinstance(t, LoadImageTensord) else t
            if not replaced and isinstance(load, LoadImaged):
                self.xy_first = self.dimension == 2 and _xy_first(load)
                replaced = slide
                if slide:
                    t = LoadSlideRegiond(self.input_key, self.mpp, self.xy_first, self.wsi_backend)
            out.append(t)
        return out

    def _check_channels(self, path: Any, channels: int | None = None) -> None:
        """A multi-sequence study must have one channel per sequence (checked on the header when NIfTI)."""
        if channels is None and isinstance(path, str) and path.lower().endswith((".nii", ".nii.gz")):
            import nibabel as nib

            try:
                shape = nib.load(path).shape
            except Exception:
                return  # not readable as NIfTI: the bundle's loader reports it
            channels = int(shape[3]) if len(shape) > 3 else 1
        if channels is not None and channels != len(self.sequences):
            raise ValueError(
                f"study {os.path.basename(str(path))!r} has {channels} channel(s); this bundle needs one "
                f"NIfTI with {len(self.sequences)} channels in the order {', '.join(self.sequences)} (all "
                "zeros for a missing sequence): write it with `monai-ext label stack`"
            )

    def run_pre_transforms(self, data: dict[str, Any], transforms):
        data = self._stash(data)
        if self.sequences:
            self._check_channels(data.get(self.input_key))
            data.setdefault("presence", [1.0] * len(self.sequences))
        kept = {k: v for k, v in data.items() if k != self.input_key}
        out = self._stash(super().run_pre_transforms(data, transforms))
        for k, v in kept.items():  # a bundle's SelectItemsd drops the request's keys: put them back
            out.setdefault(k, v)
        image = out.get(self.input_key)
        if self.sequences and image is not None:
            self._check_channels(
                out.get(STASH_KEY, {}).get(f"{self.input_key}_path", ""), int(image.shape[0])
            )
        return out

    def run_invert_transforms(self, data: dict[str, Any], pre_transforms, names):
        return super().run_invert_transforms(self._stash(data), pre_transforms, names)

    # ------------------------------------------------------------------------------------- detection
    def detector(self, data=None):
        """The bundle's ``detector``; its ``detector_ops`` (e.g. a sliding-window setup) run when present."""
        self._update_device(data)
        if not self.bundle_config.get("detector"):
            return None
        detector = self.bundle_config.get_parsed_content("detector", instantiate=True)
        if self.bundle_config.get("detector_ops"):
            self.bundle_config.get_parsed_content("detector_ops", instantiate=True)
        return detector

    def run_detector(self, data: dict[str, Any], convert_to_batch=True, device="cuda"):
        """Run the bundle's ``detector`` (its ``network`` from ``models/model.pt``) on the image."""
        detector = self.detector(data)
        if detector is None:
            raise ValueError(f"bundle {os.path.basename(self.bundle_path)!r} defines no `detector`")
        detector.network = self._get_network(device, data)
        selector = getattr(detector, "box_selector", None)
        if selector is not None and hasattr(selector, "score_thresh"):  # the cached detector: set per request
            selector.score_thresh = float(data.get("score_thresh", self._config.get("score_thresh", 0.05)))
        image = torch.as_tensor(data[self.input_key])
        image = image.as_tensor() if hasattr(image, "as_tensor") else image
        detector.eval()
        with torch.no_grad():
            (out,) = detector(
                [image.float().to(torch.device(device))], use_inferer=detector.inferer is not None
            )
        data["pred_box"] = out[detector.target_box_key].detach().float().cpu()
        data["pred_label"] = out[detector.target_label_key].detach().long().cpu()
        data["pred_score"] = out[detector.pred_score_key].detach().float().cpu()
        return data

    # ------------------------------------------------------------------------------------- post-processing
    def post_transforms(self, data=None):
        post = list(super().post_transforms(data))
        if data is not None and REGION_KEY in data:
            # Lambda steps of a slide bundle write whole-slide files (heat maps) into the bundle folder
            post = [t for t in post if not isinstance(t, Lambda)]
        return post

    def run_post_transforms(self, data: dict[str, Any], transforms):
        data = super().run_post_transforms(self._stash(data), transforms)
        pred = data.get(self.output_label_key)
        if self.type == InferType.SEGMENTATION and pred is not None and pred.ndim == self.dimension + 1:
            # a bundle that stops at probabilities (e.g. a heat map bundle): one label per pixel
            data[self.output_label_key] = pred.argmax(0) if pred.shape[0] > 1 else pred[0]
        return data

    # ------------------------------------------------------------------------------------- results
    def _label_names(self) -> dict[int, str]:
        return {int(v): k for k, v in self.labels.items()} if isinstance(self.labels, dict) else {}

    def _colours(self, data: dict[str, Any], names) -> dict[str, Any]:
        return {n: get_color(n, data.get("label_colors")) for n in names}

    def _detections(self, data: dict[str, Any]) -> dict[str, Any]:
        from monai_ext.engines.detection import DetectionJSONWriter

        names = self._label_names()
        n = max(names) + 1 if names else 1
        class_names = [names.get(i, str(i)) for i in range(n)]
        with tempfile.TemporaryDirectory() as tmp:
            writer = DetectionJSONWriter(
                tmp,
                coordinates="world" if self.dimension == 3 else "pixel",
                class_names=class_names,
                overlay=False,
            )
            pred = {k: data[k] for k in ("pred_box", "pred_label", "pred_score")}
            with open(writer.write(data[self.input_key], pred)) as f:
                return json.load(f)

    def writer(self, data: dict[str, Any], extension=None, dtype=None):
        data.update(data.pop(STASH_KEY, {}))
        region = data.get(REGION_KEY)
        if self.type == InferType.DETECTION:
            return self._write_detection(data, region)
        if region is None:
            return super().writer(data, extension=extension, dtype=dtype)
        if self.type == InferType.CLASSIFICATION:
            _, result = super().writer(data, extension=extension, dtype=dtype)
            best = max(result["prediction"], key=lambda p: p["score"])["label"]
            x0, y0 = region["location"]
            w, h = region["size"]
            result["annotation"] = {
                "location": region["location"],
                "size": region["size"],
                "elements": [{"label": best, "contours": [_rectangle(x0, y0, x0 + w, y0 + h)]}],
                "labels": self._colours(data, [best]),
            }
            result["region"] = region
            return None, result
        return self._write_polygons(data, region)

    def _write_polygons(self, data: dict[str, Any], region: dict[str, Any]):
        mask = np.asarray(torch.as_tensor(data[self.output_label_key]).cpu()).astype(np.uint8)
        mask = mask.reshape(mask.shape[-2:])
        mask_xy = mask if region["xy_first"] else mask.T  # FindContoursd takes (x, y) arrays
        ds = region["downsample"]
        found = FindContoursd(keys="pred", labels=self.labels)(
            {
                "pred": mask_xy,
                "location": [0, 0],
                "size": region["size"],
                "min_poly_area": float(data.get("min_poly_area", 80)) / ds**2,
                "label_colors": data.get("label_colors"),
            }
        )
        annotation = found.get("result", {}).get("annotation")
        if annotation:
            for element in annotation["elements"]:
                element["contours"] = [
                    np.rint(region_to_level0(np.asarray(c), region)).astype(int).tolist()
                    for c in element["contours"]
                ]
            annotation["location"], annotation["size"] = region["location"], region["size"]
            data.setdefault("result", {})["annotation"] = annotation
        data["result"] = dict(data.get("result") or {}, region=region)
        data.setdefault("location", region["location"])
        data.setdefault("size", region["size"])
        return PolygonWriter(label=self.output_label_key, json="result")(data)

    def _write_detection(self, data: dict[str, Any], region: dict[str, Any] | None):
        record = self._detections(data)
        extras = {k: v for k, v in record.items() if k not in ("image", "boxes", "boxes_coco")}
        if self.dimension == 3:
            data["box"] = torch.as_tensor(record["box"], dtype=torch.float32).reshape(-1, 6)
            data["label"] = torch.as_tensor(record["label"], dtype=torch.long)
            file, result = DetectionWriter()(data)
            result.update(extras)
            return file, result
        boxes = np.asarray(record["boxes"], dtype=np.float64).reshape(-1, 4)
        xy = (
            boxes if (region["xy_first"] if region is not None else self.xy_first) else boxes[:, [1, 0, 3, 2]]
        )
        if region is not None:
            xy = region_to_level0(xy.reshape(-1, 2), region).reshape(-1, 4)
        result = dict(extras)
        result["convention"] = (
            "box: [x0, y0, x1, y1] level-0 pixels (x = column), exclusive max; points: centres"
        )
        result["box"] = np.round(xy, 1).tolist()
        result["points"] = np.round((xy[:, :2] + xy[:, 2:]) / 2, 1).tolist()
        if region is not None:
            by_class: dict[str, list] = {}
            for (x0, y0, x1, y1), name in zip(xy, record.get("class_name", [])):
                by_class.setdefault(name, []).append(_rectangle(x0, y0, x1, y1))
            result["region"] = region
            if by_class:
                result["annotation"] = {
                    "location": region["location"],
                    "size": region["size"],
                    "elements": [{"label": k, "contours": v} for k, v in by_class.items()],
                    "labels": self._colours(data, list(by_class)),
                }
        return None, result


class ExtBundleTrainTask(BundleTrainTask):
    """``BundleTrainTask`` that validates at least once within ``max_epochs`` so ``model.pt`` is written.

    Multi-sequence bundles get the datastore's multi-channel studies with every sequence marked present
    (an all-zero channel still reads as missing to the fusion network).
    """

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any):
        super().__init__(path, conf, **kwargs)
        try:
            self.sequences = input_sequences(path)
        except ValueError:
            self.sequences = []

    def _fetch_datalist(self, request, datastore):
        datalist = super()._fetch_datalist(request, datastore)
        if self.sequences:
            datalist = [dict(d, presence=[1.0] * len(self.sequences)) for d in datalist]
        return datalist

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        max_epochs = int(overrides.get(self.const.key_train_trainer_max_epochs(), 1))
        interval = self.bundle_config.get("val_interval")
        if isinstance(interval, int) and interval > max_epochs:
            overrides["val_interval"] = max(1, max_epochs)
            logger.info(f"val_interval {interval} > max_epochs {max_epochs}: validating every {max_epochs}")
        return overrides
