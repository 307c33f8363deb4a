"""Detection workflows over ``monai.apps.detection``: datalists, iterations, mAP / FROC metrics, box writer.

MONAI's ``SupervisedTrainer`` / ``SupervisedEvaluator`` drive a ``RetinaNetDetector`` through their
``iteration_update`` argument:

- :class:`DetectionTrainStep`: one optimisation step of ``detector(images, targets)`` (classification +
  box-regression loss, AMP and ``GradScaler`` aware); output ``{"loss", "loss_cls", "loss_box"}``.
- :class:`DetectionEvalStep`: ``detector(images)`` in eval mode; output one dict per image with
  ``pred_box``, ``pred_label``, ``pred_score`` (and ``gt_box``, ``gt_label`` when the batch has targets),
  so MONAI's per-item ``postprocessing`` and the metrics below see whole images.

Both take batches collated with ``monai.data.utils.no_collation`` (a list of sample dicts, boxes of any
number per image; nested lists from ``num_samples`` crops are flattened).

Metrics (Ignite, DDP-aware): :class:`DetectionMAP` (COCO AP at one IoU via MONAI's ``COCOMetric`` and
``matching_batch``) and :class:`DetectionCPM` (LUNA16-style mean sensitivity at 1/8..8 false positives
per image via ``monai.metrics.froc``). :class:`DetectionJSONWriter` writes one JSON per image (pixel boxes
for 2D patches, world LPS ``cccwhd`` + original-grid voxel boxes for 3D) and an overlay PNG.
:func:`load_detection_datalist` validates a datalist before training starts.

Example:
    >>> import numpy as np
    >>> gt = [{"gt_box": np.array([[0, 0, 10, 10]]), "gt_label": np.array([0])}]
    >>> pred = [{"pred_box": np.array([[0, 0, 10, 11]]), "pred_label": np.array([0]),
    ...          "pred_score": np.array([0.9])}]
    >>> metric = DetectionMAP(classes=["nucleus"])
    >>> metric.update([{**gt[0], **pred[0]}])
    >>> round(metric.compute(), 3)
    1.0
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from monai.apps.detection.metrics.coco import COCOMetric
from monai.apps.detection.metrics.matching import matching_batch
from monai.data.box_utils import box_iou, convert_box_mode
from monai.engines.utils import IterationEvents
from monai.metrics.froc import compute_froc_curve_data, compute_froc_score

from monai_ext.data.atomic import write_bytes_atomic
from monai_ext.networks.boxes import coco_to_monai_boxes, monai_to_coco_boxes

__all__ = [
    "LUNA16_FP_RATES",
    "DetectionCPM",
    "DetectionEvalStep",
    "DetectionJSONWriter",
    "DetectionMAP",
    "DetectionTrainStep",
    "draw_box_overlay",
    "find_images",
    "froc_sensitivities",
    "load_detection_datalist",
]

#: false positives per image at which LUNA16's CPM averages the sensitivity
LUNA16_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


# ----------------------------------------------------------------------------------------------- datalist
def load_detection_datalist(
    dataset_dir: str | os.PathLike,
    split: str,
    datalist: str = "datalist.json",
    box_key: str = "box",
    label_key: str = "label",
    spatial_dims: int = 3,
    coco_box_key: str | None = None,
    label_map: Mapping[Any, int] | None = None,
) -> list[dict[str, Any]]:
    """Read and check split ``split`` of ``dataset_dir/datalist``; return ``[{"image", "box", "label"}]``.

    Image paths are made absolute (relative to ``dataset_dir``) and must exist; ``box_key`` must hold
    ``(N, 2 * spatial_dims)`` boxes (when it is absent, ``coco_box_key`` COCO ``[x, y, w, h]`` 2D boxes are
    converted to rows-first MONAI boxes); ``label_key`` one label per box, remapped by ``label_map``
    (``{source label: class index}``, keys compared as strings; None keeps the labels). Other keys are
    dropped, so the samples collate. Every problem raises before training starts, naming the file and key.

    Example:
        >>> # load_detection_datalist("/data/nuclei", "training", box_key="boxes", label_key="box_labels",
        >>> #                         spatial_dims=2, label_map={1: 0, 2: 0, 3: 0, 4: 0})
    """
    root = Path(dataset_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"dataset_dir {str(dataset_dir)!r} is not a folder: expected a folder holding {datalist!r} "
            "and the images it lists; set --dataset_dir"
        )
    file = root / datalist
    if not file.is_file():
        raise FileNotFoundError(f"dataset_dir {str(dataset_dir)!r} has no {datalist!r}; set --dataset_dir")
    try:
        content = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: not valid JSON ({e})") from e
    items = content.get(split) if isinstance(content, dict) else None
    if not isinstance(items, list) or not items:
        raise ValueError(f"{file}: expected a non-empty list under key {split!r}")
    lut = None if label_map is None else {str(k): int(v) for k, v in label_map.items()}
    out = []
    for i, item in enumerate(items):
        where = f"{file} [{split!r}][{i}]"
        if not isinstance(item, dict) or "image" not in item:
            raise ValueError(f"{where}: expected a dict with an 'image' key")
        image = Path(item["image"])
        image = image if image.is_absolute() else root / image
        if not image.exists():
            raise FileNotFoundError(f"{where}: image file {str(image)!r} does not exist")
        if box_key in item:
            raw = np.asarray(item[box_key], dtype=np.float32)
            if raw.size and (raw.ndim != 2 or raw.shape[1] != 2 * spatial_dims):
                raise ValueError(
                    f"{where}: {box_key!r} must be (N, {2 * spatial_dims}) boxes, got {raw.shape}"
                )
            boxes = raw.reshape(-1, 2 * spatial_dims)
        elif coco_box_key is not None and coco_box_key in item:
            boxes = coco_to_monai_boxes(item[coco_box_key]).numpy()
        else:
            names = box_key if coco_box_key is None else f"{box_key!r} or {coco_box_key!r}"
            raise KeyError(f"{where}: no boxes; expected key {names}")
        if label_key not in item:
            raise KeyError(f"{where}: no {label_key!r} key (one label per box)")
        labels = [int(v) for v in np.asarray(item[label_key]).reshape(-1)]
        if len(labels) != len(boxes):
            raise ValueError(f"{where}: {len(boxes)} boxes but {len(labels)} values in {label_key!r}")
        if lut is not None:
            unknown = sorted({v for v in labels if str(v) not in lut})
            if unknown:
                raise ValueError(f"{where}: labels {unknown} are not in label_map (keys {sorted(lut)})")
            labels = [lut[str(v)] for v in labels]
        out.append({"image": str(image), "box": boxes, "label": np.asarray(labels, dtype=np.int64)})
    return out


def find_images(dataset_dir: str | os.PathLike, pattern: str) -> list[dict[str, str]]:
    """``[{"image": path}]`` for the files matching ``pattern`` under ``dataset_dir`` (sorted); error if none.

    Example:
        >>> # find_images("/data/nuclei", "images/*.png")
    """
    root = Path(dataset_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset_dir {str(dataset_dir)!r} is not a folder; set --dataset_dir")
    files = sorted(str(f) for f in root.glob(pattern) if f.is_file())
    if not files:
        raise FileNotFoundError(f"dataset_dir {str(dataset_dir)!r} has no files matching {pattern!r}")
    return [{"image": f} for f in files]


# ----------------------------------------------------------------------------------------------- iterations
def _flatten(batch: Any) -> list[dict]:
    if isinstance(batch, Mapping):
        return [dict(batch)]
    out: list[dict] = []
    for b in batch:
        out.extend(_flatten(b))
    return out


def _plain(x: Any) -> torch.Tensor:
    t = torch.as_tensor(x)
    return t.as_tensor() if hasattr(t, "as_tensor") else t


class _DetectorStep:
    def __init__(
        self,
        detector: torch.nn.Module,
        image_key: str = "image",
        box_key: str = "box",
        label_key: str = "label",
    ) -> None:
        self.detector = detector
        self.image_key, self.box_key, self.label_key = image_key, box_key, label_key

    def _inputs(self, engine: Engine, batchdata: Any) -> tuple[list[dict], list[torch.Tensor], torch.device]:
        if batchdata is None:
            raise ValueError(f"{type(self).__name__}: got no batch data")
        items = _flatten(batchdata)
        for d in items:
            if self.image_key not in d:
                raise KeyError(
                    f"{type(self).__name__}: sample has no {self.image_key!r} key (keys: {sorted(d)})"
                )
        device = torch.device(engine.state.device)
        images = [_plain(d[self.image_key]).to(device, non_blocking=engine.non_blocking) for d in items]
        return items, images, device

    def _targets(
        self, items: list[dict], device: torch.device | None = None
    ) -> list[dict[str, torch.Tensor]]:
        det = self.detector
        targets = []
        for d in items:
            if self.box_key not in d or self.label_key not in d:
                raise KeyError(
                    f"{type(self).__name__}: sample has no {self.box_key!r} / {self.label_key!r} keys "
                    f"(keys: {sorted(d)})"
                )
            box = _plain(d[self.box_key]).float().reshape(-1, 2 * det.spatial_dims)
            label = _plain(d[self.label_key]).long().reshape(-1)
            targets.append({det.target_box_key: box.to(device), det.target_label_key: label.to(device)})
        return targets


class DetectionTrainStep(_DetectorStep):
    """``iteration_update`` for MONAI's ``SupervisedTrainer`` training a ``RetinaNetDetector``.

    The trainer's ``network`` is the detector's ``network`` (what checkpoints hold), its ``optimizer``
    and ``amp`` / ``scaler`` are used; ``loss = cls_weight * cls_loss + box_weight * box_loss``.
    Gradients accumulate over the trainer's ``accumulation_steps`` (as MONAI's ``SupervisedTrainer``: the
    loss is divided by it and the optimiser steps every ``accumulation_steps`` iterations and at the
    epoch end). ``augment`` (optional) maps ``(images, boxes)`` lists on the device to augmented ones,
    e.g. :class:`monai_ext.engines.detection_workflow.BoxBatchAugment`; it runs under ``no_grad``.

    Example:
        >>> # trainer = SupervisedTrainer(..., network=detector.network, loss_function=None,
        >>> #                             iteration_update=DetectionTrainStep(detector))
    """

    def __init__(
        self,
        detector: torch.nn.Module,
        cls_weight: float = 1.0,
        box_weight: float = 1.0,
        image_key: str = "image",
        box_key: str = "box",
        label_key: str = "label",
        augment: Callable | None = None,
    ) -> None:
        super().__init__(detector, image_key, box_key, label_key)
        self.cls_weight, self.box_weight = float(cls_weight), float(box_weight)
        if augment is not None and not callable(augment):
            raise TypeError(f"DetectionTrainStep: `augment` must be callable, got {type(augment).__name__}.")
        self.augment = augment

    @staticmethod
    def _accumulation(engine: Engine) -> tuple[int, bool, bool]:
        """``(steps, zero_grad_now, step_now)`` following MONAI's ``SupervisedTrainer``."""
        acc = int(getattr(engine, "accumulation_steps", 1) or 1)
        if acc <= 1:
            return 1, True, True
        length = engine.state.epoch_length
        it = (engine.state.iteration - 1) % length if length else engine.state.iteration - 1
        last = length is not None and it + 1 == length
        return acc, it % acc == 0, (it + 1) % acc == 0 or last

    def __call__(self, engine: Engine, batchdata: Any) -> dict[str, torch.Tensor]:
        items, images, device = self._inputs(engine, batchdata)
        targets = self._targets(items, device)
        det = self.detector
        if self.augment is not None:
            with torch.no_grad():
                images, boxes = self.augment(images, [t[det.target_box_key] for t in targets])
            for t, b in zip(targets, boxes):
                t[det.target_box_key] = b
        det.train()
        acc, zero_now, step_now = self._accumulation(engine)
        if zero_now:
            engine.optimizer.zero_grad(set_to_none=True)
        amp = bool(getattr(engine, "amp", False))
        with torch.autocast(device.type, enabled=amp):
            losses = det(images, targets)
            loss = self.cls_weight * losses[det.cls_key] + self.box_weight * losses[det.box_reg_key]
        engine.state.output = {
            "loss": loss,
            "loss_cls": losses[det.cls_key].detach(),
            "loss_box": losses[det.box_reg_key].detach(),
        }
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        scaler = getattr(engine, "scaler", None)
        scaled = loss / acc if acc > 1 else loss
        if amp and scaler is not None:
            scaler.scale(scaled).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if step_now:
                scaler.step(engine.optimizer)
                scaler.update()
        else:
            scaled.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if step_now:
                engine.optimizer.step()
        engine.state.output["loss"] = loss.detach()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


class DetectionEvalStep(_DetectorStep):
    """``iteration_update`` for MONAI's ``SupervisedEvaluator``: detect on whole images (or sliding window).

    Output: a list with one dict per image, ``pred_box`` ``(D, 2*dims)``, ``pred_label`` ``(D,)``,
    ``pred_score`` ``(D,)`` (CPU tensors, image coordinates) plus ``gt_box`` / ``gt_label`` when the sample
    has targets. ``engine.state.batch`` becomes the flat list of samples, so MONAI's ``postprocessing``
    (with ``decollate=False``) runs per image on ``{**sample, **output}``.

    Example:
        >>> # evaluator = SupervisedEvaluator(..., network=detector.network, decollate=False,
        >>> #                                 iteration_update=DetectionEvalStep(detector))
    """

    def __init__(
        self,
        detector: torch.nn.Module,
        use_inferer: bool = False,
        image_key: str = "image",
        box_key: str = "box",
        label_key: str = "label",
    ) -> None:
        super().__init__(detector, image_key, box_key, label_key)
        self.use_inferer = bool(use_inferer)

    def __call__(self, engine: Engine, batchdata: Any) -> list[dict[str, Any]]:
        items, images, device = self._inputs(engine, batchdata)
        det = self.detector
        det.eval()
        with torch.no_grad(), torch.autocast(device.type, enabled=bool(getattr(engine, "amp", False))):
            preds = det(images, use_inferer=self.use_inferer)
        outputs = []
        for d, p in zip(items, preds):
            o = {
                "pred_box": p[det.target_box_key].detach().float().cpu(),
                "pred_label": p[det.target_label_key].detach().long().cpu(),
                "pred_score": p[det.pred_score_key].detach().float().cpu(),
            }
            if self.box_key in d and self.label_key in d:
                (t,) = self._targets([d])
                o["gt_box"], o["gt_label"] = t[det.target_box_key], t[det.target_label_key]
            outputs.append(o)
        engine.state.batch = items
        engine.state.output = outputs
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


# ----------------------------------------------------------------------------------------------- metrics
def _np(x: Any, dtype: Any, cols: int | None = None) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    a = a.astype(dtype)
    return a.reshape(-1, cols) if cols is not None else a.reshape(-1)


class _DetectionAccumulator(Metric):
    """Collect per-image predictions and ground truth (gathered over DDP ranks at ``compute``)."""

    def __init__(self, output_transform: Callable = lambda x: x, device: str | torch.device = "cpu") -> None:
        self._items: list[tuple[np.ndarray, ...]] = []
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._items = []

    def update(self, output: Sequence[Mapping[str, Any]]) -> None:
        for o in [output] if isinstance(output, Mapping) else output:
            missing = [
                k for k in ("pred_box", "pred_label", "pred_score", "gt_box", "gt_label") if k not in o
            ]
            if missing:
                raise KeyError(f"{type(self).__name__}: output has no {missing} (keys: {sorted(o)})")
            arrays = [_np(o[k], np.float64).reshape(np.shape(o[k])) for k in ("pred_box", "gt_box")]
            cols = next((a.shape[-1] for a in arrays if a.ndim == 2 and a.shape[-1] > 0), 4)
            self._items.append(
                (
                    _np(o["pred_box"], np.float64, cols),
                    _np(o["pred_label"], np.int64),
                    _np(o["pred_score"], np.float64),
                    _np(o["gt_box"], np.float64, cols),
                    _np(o["gt_label"], np.int64),
                )
            )

    def _gathered(self) -> list[tuple[np.ndarray, ...]]:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, self._items)
            return [it for p in parts for it in p]
        return list(self._items)


class DetectionMAP(_DetectionAccumulator):
    """COCO average precision at one IoU threshold (default mAP@0.5), mean over ``classes``.

    Uses MONAI's ``matching_batch`` and ``COCOMetric``; the output is a list of per-image dicts with
    ``pred_box``, ``pred_label``, ``pred_score``, ``gt_box``, ``gt_label`` (as :class:`DetectionEvalStep`
    writes). Returns 0.0 when no image has a ground-truth box.

    Example:
        >>> m = DetectionMAP(classes=["nodule"])
        >>> m.update([{"pred_box": [[0, 0, 0, 4, 4, 4]], "pred_label": [0], "pred_score": [0.8],
        ...            "gt_box": [[10, 10, 10, 14, 14, 14]], "gt_label": [0]}])
        >>> m.compute()
        0.0
    """

    def __init__(
        self,
        classes: Sequence[str],
        iou_threshold: float = 0.5,
        max_detections: int = 100,
        output_transform: Callable = lambda x: x,
        device: str | torch.device = "cpu",
    ) -> None:
        if isinstance(classes, str) or not classes:
            raise ValueError(f"DetectionMAP: `classes` must be a non-empty list of names, got {classes!r}")
        if not 0.0 < iou_threshold < 1.0:
            raise ValueError(f"DetectionMAP: `iou_threshold` must be in (0, 1), got {iou_threshold}")
        self.classes = list(classes)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)
        super().__init__(output_transform=output_transform, device=device)

    def compute(self) -> float:
        items = self._gathered()
        if not items or not any(len(it[4]) for it in items):
            return 0.0
        coco = COCOMetric(
            classes=self.classes,
            iou_list=[self.iou_threshold],
            iou_range=(self.iou_threshold, self.iou_threshold, 0.05),
            max_detection=[self.max_detections],
            verbose=False,
        )
        results = matching_batch(
            iou_fn=box_iou,
            iou_thresholds=coco.iou_thresholds,
            pred_boxes=[it[0] for it in items],
            pred_classes=[it[1] for it in items],
            pred_scores=[it[2] for it in items],
            gt_boxes=[it[3] for it in items],
            gt_classes=[it[4] for it in items],
            max_detections=self.max_detections,
        )
        scores, _ = coco(results)
        value = scores[f"AP_IoU_{self.iou_threshold:.2f}_MaxDet_{self.max_detections}"]
        return max(0.0, float(value))


def _centre_hits(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``(D, G)`` bool: the centre of prediction d lies inside ground-truth box g."""
    dims = pred.shape[1] // 2
    centre = (pred[:, :dims] + pred[:, dims:]) / 2.0
    return np.all((centre[:, None] >= gt[None, :, :dims]) & (centre[:, None] <= gt[None, :, dims:]), axis=2)


def froc_sensitivities(
    pred_boxes: Sequence[np.ndarray],
    pred_scores: Sequence[np.ndarray],
    gt_boxes: Sequence[np.ndarray],
    fp_rates: Sequence[float] = LUNA16_FP_RATES,
) -> np.ndarray:
    """Sensitivity at each of ``fp_rates`` false positives per image (FROC, LUNA16 style); CPM = its mean.

    A detection is a hit when its centre lies inside a ground-truth box (one hit per ground truth, at the
    highest score; further hits on the same box are neither true nor false positives), otherwise a false
    positive; the curve comes from ``monai.metrics.froc``.

    Example:
        >>> froc_sensitivities([np.array([[0, 0, 0, 4, 4, 4.]])], [np.array([0.9])],
        ...                    [np.array([[1, 1, 1, 3, 3, 3.]])]).tolist()
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    """
    if not len(pred_boxes) == len(pred_scores) == len(gt_boxes):
        raise ValueError(
            "froc_sensitivities: pred_boxes, pred_scores and gt_boxes must have one entry per image"
        )
    fp_probs, tp_probs, n_gt = [0.0], [], 0
    for boxes, scores, gt in zip(pred_boxes, pred_scores, gt_boxes):
        boxes, scores, gt = (
            np.asarray(boxes, float),
            np.asarray(scores, float).reshape(-1),
            np.asarray(gt, float),
        )
        n_gt += len(gt)
        if len(gt) == 0:
            fp_probs.extend(scores.tolist())
            continue
        if len(boxes) == 0:
            tp_probs.extend([0.0] * len(gt))
            continue
        hits = _centre_hits(boxes.reshape(len(scores), -1), gt.reshape(len(gt), -1))
        fp_probs.extend(scores[~hits.any(axis=1)].tolist())
        tp_probs.extend(np.where(hits.any(axis=0), (hits * scores[:, None]).max(axis=0), 0.0).tolist())
    if n_gt == 0:
        return np.zeros(len(fp_rates))
    fps, sens = compute_froc_curve_data(np.asarray(fp_probs), np.asarray(tp_probs), n_gt, len(gt_boxes))
    return np.array([compute_froc_score(fps, sens, (r,)) for r in fp_rates], dtype=float)


class DetectionCPM(_DetectionAccumulator):
    """Competition performance metric: mean FROC sensitivity at ``fp_rates`` false positives per image.

    See :func:`froc_sensitivities` (LUNA16: 1/8, 1/4, 1/2, 1, 2, 4, 8 per scan; classes are ignored).

    Example:
        >>> m = DetectionCPM()
        >>> m.update([{"pred_box": [[0, 0, 0, 4, 4, 4]], "pred_label": [0], "pred_score": [0.8],
        ...            "gt_box": [[1, 1, 1, 3, 3, 3]], "gt_label": [0]}])
        >>> m.compute()
        1.0
    """

    def __init__(
        self,
        fp_rates: Sequence[float] = LUNA16_FP_RATES,
        output_transform: Callable = lambda x: x,
        device: str | torch.device = "cpu",
    ) -> None:
        if not fp_rates or any(r <= 0 for r in fp_rates):
            raise ValueError(f"DetectionCPM: `fp_rates` must be positive numbers, got {fp_rates!r}")
        self.fp_rates = tuple(float(r) for r in fp_rates)
        super().__init__(output_transform=output_transform, device=device)

    def compute(self) -> float:
        items = self._gathered()
        sens = froc_sensitivities(
            [it[0] for it in items], [it[2] for it in items], [it[3] for it in items], self.fp_rates
        )
        return float(np.mean(sens))


# ----------------------------------------------------------------------------------------------- writer
_COLOURS = np.array([[255, 255, 0], [0, 255, 0], [255, 0, 255], [0, 255, 255], [255, 128, 0]], dtype=np.uint8)


def draw_box_overlay(
    image: np.ndarray, boxes: np.ndarray, labels: np.ndarray | None = None, thickness: int = 1
) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` picture of a 2D ``image`` (``(H, W)`` or ``(H, W, 3)``) with box outlines.

    ``boxes`` are rows-first ``[r0, c0, r1, c1]`` (exclusive max); grey images are min-max scaled.

    Example:
        >>> draw_box_overlay(np.zeros((8, 8)), np.array([[2, 2, 6, 6]]))[2, 3].tolist()
        [255, 255, 0]
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        lo, hi = float(img.min()), float(img.max())
        img = np.repeat(((img - lo) / (hi - lo + 1e-12) * 255.0)[..., None], 3, axis=2)
    elif img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"draw_box_overlay: `image` must be (H, W) or (H, W, 3), got {img.shape}")
    out = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    h, w = out.shape[:2]
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    labels = np.zeros(len(boxes), int) if labels is None else np.asarray(labels, int).reshape(-1)
    for (r0, c0, r1, c1), lab in zip(boxes, labels):
        r0, c0 = int(np.clip(np.floor(r0), 0, h - 1)), int(np.clip(np.floor(c0), 0, w - 1))
        r1, c1 = int(np.clip(np.ceil(r1) - 1, r0, h - 1)), int(np.clip(np.ceil(c1) - 1, c0, w - 1))
        colour = _COLOURS[int(lab) % len(_COLOURS)]
        t = max(1, int(thickness))
        out[r0 : min(r0 + t, r1 + 1), c0 : c1 + 1] = colour
        out[max(r1 - t + 1, r0) : r1 + 1, c0 : c1 + 1] = colour
        out[r0 : r1 + 1, c0 : min(c0 + t, c1 + 1)] = colour
        out[r0 : r1 + 1, max(c1 - t + 1, c0) : c1 + 1] = colour
    return out


def _corners_affine(boxes: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Axis-aligned hull of the 2**dims box corners mapped by ``affine``."""
    dims = boxes.shape[1] // 2
    if len(boxes) == 0:
        return boxes.reshape(0, 2 * dims)
    grid = np.stack(np.meshgrid(*[[0, 1]] * dims, indexing="ij"), -1).reshape(-1, dims)
    corners = np.where(grid[None] == 0, boxes[:, None, :dims], boxes[:, None, dims:])
    mapped = corners @ affine[:dims, :dims].T + affine[:dims, dims]
    return np.concatenate([mapped.min(1), mapped.max(1)], axis=1)


class DetectionJSONWriter:
    """Ignite handler: one ``<stem>_boxes.json`` and one ``<stem>_overlay.png`` per image in ``output_dir``.

    ``coordinates="pixel"`` (2D patches, array ``(C, H, W)`` as loaded with ``reverse_indexing=False``):
    ``boxes`` rows-first ``[r0, c0, r1, c1]`` exclusive max and ``boxes_coco`` ``[x, y, w, h]``.
    ``coordinates="world"`` (3D, RAS ``affine`` in the image meta): ``box`` as ``cccwhd`` world millimetres
    LPS (the model-zoo / LUNA16 layout of the input datalist) and ``box_voxel`` ``xyzxyz`` integer voxel
    indices of the *original* input grid (``original_affine``), exclusive max: the voxels whose centres lie
    inside the box. Both with ``label`` / ``score`` lists (``class_names`` names labels). The 3D overlay is
    the axial slice through the best box's centre. Only boxes scoring >= ``min_score`` are written.

    Example:
        >>> # handlers: [{"_target_": "monai_ext.engines.detection.DetectionJSONWriter", "output_dir": "..."}]
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        coordinates: str = "pixel",
        image_key: str = "image",
        class_names: Sequence[str] | None = None,
        min_score: float = 0.0,
        overlay: bool = True,
        overlay_min_score: float = 0.5,
    ) -> None:
        if coordinates not in ("pixel", "world"):
            raise ValueError(
                f"DetectionJSONWriter: `coordinates` must be 'pixel' or 'world', got {coordinates!r}"
            )
        self.output_dir = Path(output_dir)
        self.coordinates, self.image_key = coordinates, image_key
        self.class_names = None if class_names is None else list(class_names)
        self.min_score, self.overlay, self.overlay_min_score = (
            float(min_score),
            overlay,
            float(overlay_min_score),
        )

    def attach(self, engine: Engine) -> None:
        """Write after every iteration."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        batch, output = engine.state.batch, engine.state.output
        for sample, out in zip(_flatten(batch), [output] if isinstance(output, Mapping) else output):
            self.write(sample[self.image_key], out)

    @staticmethod
    def _stem(image: Any, fallback: str) -> str:
        meta = getattr(image, "meta", {}) or {}
        name = os.path.basename(str(meta.get("filename_or_obj", fallback)))
        return re.sub(r"(\.nii\.gz|\.[A-Za-z0-9]+)$", "", name) or fallback

    def write(self, image: Any, pred: Mapping[str, Any]) -> Path:
        """Write the JSON (and overlay) of one image; return the JSON path."""
        boxes = _np(pred["pred_box"], np.float64)
        scores = _np(pred["pred_score"], np.float64)
        labels = _np(pred["pred_label"], np.int64)
        arr = _plain(image).detach().float().cpu().numpy()
        dims = arr.ndim - 1
        boxes = boxes.reshape(-1, 2 * dims)
        keep = scores >= self.min_score
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        order = np.argsort(-scores, kind="stable")
        boxes, scores, labels = boxes[order], scores[order], labels[order]
        self.output_dir.mkdir(parents=True, exist_ok=True)
        stem = self._stem(image, f"image_{len(list(self.output_dir.glob('*_boxes.json'))):05d}")
        record: dict[str, Any] = {
            "image": os.path.basename(str(getattr(image, "meta", {}).get("filename_or_obj", "")))
        }
        if self.coordinates == "pixel":
            record["convention"] = (
                "boxes: [r0, c0, r1, c1] pixels, rows first, exclusive max; "
                "boxes_coco: [x(col), y(row), w, h]"
            )
            record["boxes"] = np.round(boxes, 2).tolist()
            record["boxes_coco"] = (
                np.round(monai_to_coco_boxes(boxes).numpy(), 2).tolist() if dims == 2 and len(boxes) else []
            )
        else:
            affine = np.asarray(_plain(image.affine), dtype=np.float64)
            original = np.asarray(_plain(image.meta.get("original_affine", affine)), dtype=np.float64)
            ras = _corners_affine(boxes, affine)
            lps = ras.copy()
            lps[:, [0, 1, dims, dims + 1]] = -ras[:, [dims, dims + 1, 0, 1]]
            world = convert_box_mode(lps, src_mode="xyzxyz", dst_mode="cccwhd") if len(lps) else lps
            cont = _corners_affine(ras, np.linalg.inv(original))
            lo, hi = np.ceil(cont[:, :dims] - 1e-6), np.floor(cont[:, dims:] + 1e-6) + 1
            centre = np.rint((cont[:, :dims] + cont[:, dims:]) / 2)
            empty = hi <= lo
            lo, hi = np.where(empty, centre, lo), np.where(empty, centre + 1, hi)
            record["convention"] = (
                "box: cccwhd world mm LPS (centre x, y, z, size w, h, d); box_voxel: xyzxyz voxel indices of "
                "the input grid, exclusive max"
            )
            record["box"] = np.round(np.asarray(world, dtype=np.float64), 2).tolist()
            record["box_voxel"] = np.concatenate([lo, hi], axis=1).astype(int).tolist()
        record["label"] = labels.tolist()
        record["score"] = np.round(scores, 4).tolist()
        if self.class_names is not None:
            record["class_name"] = [
                self.class_names[i] if 0 <= i < len(self.class_names) else str(i) for i in labels
            ]
        path = self.output_dir / f"{stem}_boxes.json"
        write_bytes_atomic(path, json.dumps(record, indent=1).encode())
        if self.overlay:
            self._overlay(arr, boxes, scores, labels, self.output_dir / f"{stem}_overlay.png")
        return path

    def _overlay(
        self, arr: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, path: Path
    ) -> None:
        import io

        from PIL import Image

        show = scores >= self.overlay_min_score
        if arr.ndim == 3:  # (C, H, W): 2D
            img = arr[:3].transpose(1, 2, 0) if arr.shape[0] >= 3 else arr[0]
            if img.ndim == 3 and img.max() <= 1.0 + 1e-6:
                img = img * 255.0
            pic = draw_box_overlay(img, boxes[show], labels[show])
        else:  # (C, X, Y, Z): axial slice through the best box, boxes crossing it
            z = arr.shape[3] // 2
            if len(boxes):
                z = int(np.clip(np.rint((boxes[0, 2] + boxes[0, 5]) / 2), 0, arr.shape[3] - 1))
            sel = show & (boxes[:, 2] <= z) & (boxes[:, 5] >= z)
            pic = draw_box_overlay(arr[0, :, :, z], boxes[sel][:, [0, 1, 3, 4]], labels[sel])
            pic = np.ascontiguousarray(np.flip(pic.transpose(1, 0, 2), axis=0))  # rows: 2nd axis, reversed
        buf = io.BytesIO()
        Image.fromarray(pic).save(buf, format="PNG")
        write_bytes_atomic(path, buf.getvalue())
