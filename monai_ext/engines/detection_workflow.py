"""RetinaNet detection workflow: MONAI's trainer / evaluator around a ``monai.apps.detection`` detector.

:func:`build_detection_workflow` is the detection counterpart of
:func:`~monai_ext.engines.workflows.build_workflow`, with the same options (AMP, device batch
augmentation, gradient accumulation, ``torch.compile``, validation every N epochs, atomic best / latest
checkpoints with resume, early stopping, LR scheduling, NaN guard, reseeding, progress bar, TensorBoard and
MLflow). The iterations are :class:`~monai_ext.engines.detection.DetectionTrainStep` /
:class:`~monai_ext.engines.detection.DetectionEvalStep`; the metrics COCO mAP at one IoU
(:class:`~monai_ext.engines.detection.DetectionMAP`, ``val_map``) and LUNA16's CPM
(:class:`~monai_ext.engines.detection.DetectionCPM`, ``val_cpm``). Loaders yield lists of sample dicts
(``monai.data.utils.no_collation``) with ``image`` ``(C, *spatial)``, ``box`` ``(N, 2*dims)`` in MONAI's
``StandardMode`` and ``label`` ``(N,)``.

:class:`BoxBatchAugment` runs a batch augmentation on the device inside the training step and moves the
boxes with :class:`~monai_ext.transforms.batch.BatchRandFlip`; augmentations that move voxels otherwise
(affine, elastic, crops) are rejected, as boxes cannot follow them: use MONAI's box transforms
(``RandCropBoxByPosNegLabeld``, ``RandRotateBox90d``, ...) in the data pipeline for those.

AMP: on CUDA ``float16`` autocast with MONAI's ``GradScaler``; on the CPU ``bfloat16`` autocast.

Example:
    >>> import torch
    >>> from monai_ext.networks.detection import build_retinanet, build_retinanet_detector
    >>> from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
    >>> anchors = AnchorGeneratorWithAnchorShape((1, 2), ((4, 4), (6, 6)), indexing="ij")
    >>> net = build_retinanet(2, 1, 1, 2, returned_layers=(1,), conv1_t_stride=(2, 2), block="basic",
    ...                       layers=(1, 1, 1, 1), block_inplanes=(4, 8, 16, 32), fpn_channels=8)
    >>> det = build_retinanet_detector(net, anchors, batch_size_per_image=16, detections_per_img=10)
    >>> sample = {"image": torch.rand(1, 16, 16), "box": torch.tensor([[2.0, 2, 8, 8]]),
    ...           "label": torch.tensor([0])}
    >>> wf = build_detection_workflow(det, [[sample]], val_loader=[[sample]], classes=["lesion"])
    >>> wf.run()
    >>> sorted(wf.evaluator.state.metrics)
    ['val_cpm', 'val_map']
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from torch import nn

from monai_ext.engines.checkpoint import unwrap_module
from monai_ext.engines.detection import (
    LUNA16_FP_RATES,
    DetectionCPM,
    DetectionEvalStep,
    DetectionMAP,
    DetectionTrainStep,
)
from monai_ext.engines.distributed import is_rank0
from monai_ext.engines.workflows import (
    TrainingWorkflow,
    attach_common_handlers,
    check_common_options,
    evaluator_stats_handlers,
    trainer_handlers,
)
from monai_ext.transforms.batch.base import BatchAugmentation
from monai_ext.transforms.batch.hook import BatchAugChain
from monai_ext.transforms.batch.spatial import BatchRandFlip

__all__ = ["DETECTION_METRICS", "BoxBatchAugment", "build_detection_workflow", "flip_boxes"]

#: key-metric choices of :func:`build_detection_workflow` and the metric names they report
DETECTION_METRICS = {"map": "val_map", "cpm": "val_cpm"}


def flip_boxes(boxes: torch.Tensor, flags: torch.Tensor, spatial_size: torch.Tensor) -> torch.Tensor:
    """Mirror ``StandardMode`` boxes ``(N, 2*d)`` along the axes where ``flags`` ``(d,)`` is True.

    ``spatial_size`` ``(d,)`` is the image size; along a flipped axis ``[lo, hi]`` becomes
    ``[size - hi, size - lo]`` (MONAI's ``flip_boxes``). Runs on the boxes' device without a host sync.

    Example:
        >>> flags, size = torch.tensor([True, False]), torch.tensor([10, 8])
        >>> flip_boxes(torch.tensor([[1.0, 2, 3, 5]]), flags, size).tolist()
        [[7.0, 2.0, 9.0, 5.0]]
    """
    d = boxes.shape[1] // 2
    if flags.shape != (d,) or spatial_size.shape != (d,):
        raise ValueError(
            f"flip_boxes: `flags` and `spatial_size` must have {d} entries for {tuple(boxes.shape)} boxes, "
            f"got {tuple(flags.shape)} and {tuple(spatial_size.shape)}."
        )
    size = spatial_size.to(boxes.device, boxes.dtype)
    flags = flags.to(boxes.device)
    lo, hi = boxes[:, :d], boxes[:, d:]
    return torch.cat([torch.where(flags, size - hi, lo), torch.where(flags, size - lo, hi)], dim=1)


class BoxBatchAugment:
    """Batch augmentation of detection images on the device; boxes follow :class:`BatchRandFlip` flips.

    Args:
        augment: a ``BatchAugmentation`` or ``BatchAugChain`` of intensity augmentations (noise, gamma,
            bias field, blur, stain jitter, ...) and ``BatchRandFlip``; any other member that moves voxels
            raises ``ValueError`` (boxes cannot follow it).

    ``__call__(images, boxes)`` takes per-image lists (``(C, *spatial)`` tensors and ``(N, 2*d)`` boxes),
    stacks images of equal shape into one batch, and returns the augmented lists.

    Example:
        >>> aug = BoxBatchAugment(BatchRandFlip(prob=1.0, spatial_axes=(0,), seed=0))
        >>> imgs, boxes = aug([torch.zeros(1, 10, 8)], [torch.tensor([[1.0, 2, 3, 5]])])
        >>> boxes[0].tolist() in ([[1.0, 2.0, 3.0, 5.0]], [[7.0, 2.0, 9.0, 5.0]])
        True
    """

    def __init__(self, augment: nn.Module) -> None:
        if isinstance(augment, BatchAugChain):
            members = list(augment.transforms)
        elif isinstance(augment, BatchAugmentation):
            members = [augment]
        else:
            raise TypeError(
                "BoxBatchAugment: `augment` must be a BatchAugmentation or BatchAugChain, "
                f"got {type(augment).__name__}."
            )
        for m in members:
            if getattr(m, "transforms_label", False) and not isinstance(m, BatchRandFlip):
                raise ValueError(
                    f"BoxBatchAugment: {type(m).__name__} moves voxels and the boxes cannot follow; use "
                    "intensity augmentations and BatchRandFlip here, and MONAI's box transforms "
                    "(RandCropBoxByPosNegLabeld, RandRotateBox90d, RandZoomBoxd) in the data pipeline."
                )
        self.augment = augment
        self.members = members
        self.chained = isinstance(augment, BatchAugChain)

    def __call__(
        self, images: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if len(images) != len(boxes):
            raise ValueError(f"BoxBatchAugment: {len(images)} images but {len(boxes)} box tensors.")
        out_images, out_boxes = list(images), list(boxes)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(tuple(im.shape), []).append(i)
        for shape, idx in groups.items():
            res = self.augment(torch.stack([images[i] for i in idx]))
            params = res.params if self.chained else [res.params]
            flips = [
                p["flags"] & p["apply"][:, None]
                for m, p in zip(self.members, params)
                if isinstance(m, BatchRandFlip)
            ]
            size = torch.tensor(shape[1:])
            for j, i in enumerate(idx):
                out_images[i] = res.image[j]
                b = boxes[i]
                for f in flips:
                    b = flip_boxes(b, f[j], size)
                out_boxes[i] = b
        return out_images, out_boxes


def build_detection_workflow(
    detector: RetinaNetDetector,
    train_loader: Iterable,
    val_loader: Iterable | None = None,
    *,
    classes: Sequence[str] = ("object",),
    key_metric: str = "map",
    iou_threshold: float = 0.5,
    fp_rates: Sequence[float] = LUNA16_FP_RATES,
    max_detections: int | None = None,
    cls_weight: float = 1.0,
    box_weight: float = 1.0,
    val_postprocessing: Callable | None = None,
    use_inferer: bool = False,
    device: str | torch.device = "cpu",
    max_epochs: int = 1,
    optimizer: torch.optim.Optimizer | None = None,
    learning_rate: float = 1e-3,
    lr_scheduler: Any = None,
    amp: bool = False,
    gpu_augment: nn.Module | None = None,
    accumulation_steps: int = 1,
    compile: bool = False,
    compile_kwargs: dict | None = None,
    val_interval: int = 1,
    early_stop_patience: int | None = None,
    output_dir: str | os.PathLike | None = None,
    save_interval: int = 1,
    resume: bool = False,
    seed: int | None = None,
    sampler: Any = None,
    nan_guard: bool = True,
    progress_bar: bool = False,
    log_stats: bool = False,
    tensorboard: bool = False,
    mlflow: bool = False,
    mlflow_tracking_uri: str | None = None,
    experiment_name: str = "monai_ext",
    run_name: str | None = None,
    mlflow_params: dict[str, Any] | None = None,
) -> TrainingWorkflow:
    """Build MONAI's ``SupervisedTrainer`` (and ``SupervisedEvaluator``) training a RetinaNet ``detector``.

    Args:
        detector: a ``RetinaNetDetector`` (e.g. ``monai_ext.networks.detection.build_retinanet_detector``),
            its network already on ``device``; checkpoints hold ``detector.network``.
        train_loader / val_loader: iterables of lists of sample dicts (``no_collation``).
        classes: class names (for mAP).
        key_metric: ``"map"`` (``val_map``, COCO AP at ``iou_threshold``) or ``"cpm"`` (``val_cpm``, mean
            FROC sensitivity at ``fp_rates`` false positives per image); both are reported, the key one
            selects the best checkpoint and early stopping.
        max_detections: detections per image for mAP (default: the detector's ``detections_per_img``).
        cls_weight / box_weight: loss weights.
        val_postprocessing: per-image transform of ``{**sample, **prediction}`` (e.g. ``ClipBoxToImaged``).
        use_inferer: validate with the detector's sliding-window inferer (``set_sliding_window_inferer``).
        gpu_augment: batch augmentation run on the device in the training step (see
            :class:`BoxBatchAugment`: intensity augmentations and flips).
        compile / compile_kwargs: replace ``detector.network`` by ``torch.compile`` of it.
        Others: as :func:`~monai_ext.engines.workflows.build_workflow`.

    Example:
        >>> build_detection_workflow(torch.nn.Linear(1, 1), [])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: build_detection_workflow: `detector` must be a monai.apps.detection RetinaNetDetector, ...
    """
    owner = "build_detection_workflow"
    if not isinstance(detector, RetinaNetDetector):
        raise TypeError(
            f"{owner}: `detector` must be a monai.apps.detection RetinaNetDetector, got "
            f"{type(detector).__name__} (see monai_ext.networks.detection.build_retinanet_detector)."
        )
    if key_metric not in DETECTION_METRICS:
        raise ValueError(
            f"{owner}: `key_metric` must be one of {sorted(DETECTION_METRICS)}, got {key_metric!r}."
        )
    check_common_options(owner, val_interval, output_dir, resume, tensorboard, mlflow, mlflow_tracking_uri)
    device = torch.device(device)
    rank0 = is_rank0()
    network = unwrap_module(detector.network)
    if compile:
        detector.network = torch.compile(network, **(compile_kwargs or {}))
    optimizer = optimizer or torch.optim.Adam(network.parameters(), lr=learning_rate)
    augment = BoxBatchAugment(gpu_augment) if gpu_augment is not None else None
    handlers: dict[str, Any] = {"detector": detector}

    evaluator = None
    key_name = DETECTION_METRICS[key_metric]
    if val_loader is not None:
        if max_detections is None:
            max_detections = int(getattr(getattr(detector, "box_selector", None), "detections_per_img", 100))
        metrics = {
            "val_map": DetectionMAP(classes, iou_threshold=iou_threshold, max_detections=max_detections),
            "val_cpm": DetectionCPM(fp_rates=fp_rates),
        }
        evaluator = SupervisedEvaluator(
            device=device,
            val_data_loader=val_loader,
            network=detector.network,
            iteration_update=DetectionEvalStep(detector, use_inferer=use_inferer),
            postprocessing=val_postprocessing,
            key_val_metric={key_name: metrics.pop(key_name)},
            additional_metrics=metrics,
            val_handlers=evaluator_stats_handlers(rank0 and log_stats),
            decollate=False,
            amp=amp,
        )
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=max_epochs,
        train_data_loader=train_loader,
        network=detector.network,
        optimizer=optimizer,
        loss_function=None,
        iteration_update=DetectionTrainStep(detector, cls_weight, box_weight, augment=augment),
        train_handlers=trainer_handlers(handlers, evaluator, lr_scheduler, val_interval, rank0 and log_stats),
        decollate=False,
        amp=amp,
        accumulation_steps=accumulation_steps,
    )
    params = {
        "task": "detection",
        "amp": amp,
        "accumulation_steps": accumulation_steps,
        "compile": compile,
        "val_interval": val_interval,
        "seed": seed,
        "key_metric": key_name,
        "iou_threshold": iou_threshold,
        **(mlflow_params or {}),
    }
    return attach_common_handlers(
        trainer,
        evaluator,
        handlers,
        network=network,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        key_name=key_name,
        mode="max",
        aug_modules=[gpu_augment],
        seed=seed,
        sampler=sampler,
        train_loader=train_loader,
        nan_guard=nan_guard,
        early_stop_patience=early_stop_patience,
        output_dir=output_dir,
        save_interval=save_interval,
        resume=resume,
        progress_bar=progress_bar,
        tensorboard=tensorboard,
        mlflow=mlflow,
        mlflow_tracking_uri=mlflow_tracking_uri,
        experiment_name=experiment_name,
        run_name=run_name,
        mlflow_params=params,
    )
