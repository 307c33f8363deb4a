"""Factories that build MONAI ``SupervisedTrainer`` / ``SupervisedEvaluator`` pairs with sane defaults.

One call wires the research loop: task loss and metrics, device-side batch augmentation
(:class:`~monai_ext.transforms.batch.hook.GPUAugmentPrepareBatch`), AMP, gradient accumulation
(MONAI's ``accumulation_steps``), ``torch.compile`` (MONAI's ``compile``), validation every N epochs
(``ValidationHandler``), early stopping (``EarlyStopHandler``), LR scheduling (``LrScheduleHandler``),
atomic best / latest checkpoints with resume (:class:`~monai_ext.engines.checkpoint.CheckpointHandler`),
a NaN/Inf loss guard, per-epoch reseeding, Ignite's ``ProgressBar``, and TensorBoard / MLflow tracking.
MLflow defaults to the local store of ``monai.bundle run --tracking mlflow`` (MONAI's
``DEFAULT_MLFLOW_SETTINGS``): a SQLite database ``<output_dir>/mlruns.db`` with artifacts in
``<output_dir>/mlruns`` (MLflow >= 3.13 refuses the plain ``file://`` store); ``mlflow_tracking_uri``
or the ``MLFLOW_TRACKING_URI`` variable selects another store. Files and logs are written on rank 0 only.
The detection (RetinaNet) factory is :func:`monai_ext.engines.detection_workflow.build_detection_workflow`.

Tasks and their defaults (override with ``loss_function``):

=============== ============================== =========================================================
task            loss                           metrics (key metric first)
=============== ============================== =========================================================
segmentation    ``DiceCELoss`` (softmax)       ``val_dice`` (MeanDice, no background), ``val_hd95``
classification  ``nn.CrossEntropyLoss``        ``val_auc`` (ROCAUC), ``val_accuracy``, ``val_f1``
survival        ``CoxPHLoss``                  ``val_cindex`` (Harrell's C-index)
=============== ============================== =========================================================

Multimodal data: pass a :class:`~monai_ext.engines.prepare.MultimodalPrepareBatch` as ``prepare_batch``.

Example:
    >>> import torch
    >>> from monai.networks.nets import UNet
    >>> net = UNet(2, 1, 2, channels=(4, 8), strides=(2,))
    >>> data = [{"image": torch.rand(2, 1, 16, 16), "label": torch.randint(0, 2, (2, 1, 16, 16))}]
    >>> wf = build_segmentation_workflow(net, data, val_loader=data, max_epochs=1)
    >>> wf.run()
    >>> "val_dice" in wf.evaluator.state.metrics
    True
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events
from ignite.handlers import ProgressBar
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.engines.utils import PrepareBatchDefault
from monai.handlers import (
    ROCAUC,
    ConfusionMatrix,
    EarlyStopHandler,
    HausdorffDistance,
    LrScheduleHandler,
    MeanDice,
    MLFlowHandler,
    StatsHandler,
    TensorBoardStatsHandler,
    ValidationHandler,
    from_engine,
    stopping_fn_from_metric,
)
from monai.inferers import Inferer, SimpleInferer
from monai.losses import DiceCELoss
from monai.transforms import Activationsd, AsDiscrete, AsDiscreted, Compose
from monai.utils import path_to_sqlite_uri
from torch import nn

from monai_ext.engines.checkpoint import CheckpointHandler
from monai_ext.engines.distributed import is_rank0
from monai_ext.engines.handlers import EpochReseed, NonFiniteLossGuard, loss_from_output
from monai_ext.engines.prepare import MultimodalPrepareBatch
from monai_ext.losses import CoxPHLoss
from monai_ext.metrics import ConcordanceIndexHandler
from monai_ext.transforms.batch.hook import GPUAugmentPrepareBatch

__all__ = [
    "TASKS",
    "CPUAutocastInferer",
    "TrainingWorkflow",
    "attach_common_handlers",
    "build_classification_workflow",
    "build_segmentation_workflow",
    "build_survival_workflow",
    "build_workflow",
    "check_common_options",
    "evaluator_stats_handlers",
    "mlflow_tracking_uri_for",
    "trainer_handlers",
]

TASKS = ("segmentation", "classification", "survival")
_LOSS_FROM = loss_from_output  # dict outputs (detection) and decollated lists (MONAI)


@dataclass
class TrainingWorkflow:
    """The built trainer, evaluator and the handlers a caller may inspect.

    Example:
        >>> TrainingWorkflow(trainer=None).key_metric_name is None
        True
    """

    trainer: Any
    evaluator: Any = None
    checkpointer: CheckpointHandler | None = None
    nan_guard: NonFiniteLossGuard | None = None
    key_metric_name: str | None = None
    handlers: dict[str, Any] = field(default_factory=dict)

    def run(self) -> None:
        """Run training (validation, checkpoints and tracking run from the handlers)."""
        self.trainer.run()


class _OneHotPairs:
    """Output transform: decollated ``pred`` / ``label`` -> one-hot lists for MONAI metrics."""

    def __init__(self, num_classes: int, argmax_pred: bool) -> None:
        self.argmax_pred = argmax_pred
        self.pred = AsDiscrete(argmax=True, to_onehot=num_classes)
        self.label = AsDiscrete(to_onehot=num_classes)

    def __call__(self, output: Sequence[dict[str, Any]]) -> tuple[list, list]:
        preds = [self.pred(o["pred"]) if self.argmax_pred else o["pred"] for o in output]
        labels = [self.label(torch.as_tensor(o["label"]).reshape(1)) for o in output]
        return preds, labels


class CPUAutocastInferer(Inferer):
    """Run ``inferer`` under ``torch.autocast("cpu", dtype)``; floating predictions come back as float32.

    MONAI's engines autocast on CUDA only; the factories use this inferer for ``amp=True`` on the CPU,
    so the forward pass runs in ``bfloat16`` there (the loss and backward stay outside autocast).

    Example:
        >>> net = torch.nn.Linear(4, 2)
        >>> CPUAutocastInferer()(torch.rand(3, 4), net).dtype
        torch.float32
    """

    def __init__(self, inferer: Inferer | None = None, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.dtype = dtype

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with torch.autocast("cpu", dtype=self.dtype):
            out = self.inferer(inputs, network, *args, **kwargs)
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            return out.float()
        return out


def _task_spec(task: str, num_classes: int, hd95: bool) -> tuple[Callable, Any, dict, dict, str, str]:
    """``(loss, val_postprocessing, key_metric, additional_metrics, key_name, mode)`` for ``task``."""
    pair = from_engine(["pred", "label"])
    if task == "segmentation":
        post = Compose(
            [
                AsDiscreted(keys="pred", argmax=True, to_onehot=num_classes),
                AsDiscreted(keys="label", to_onehot=num_classes),
            ]
        )
        extra = {}
        if hd95:
            extra["val_hd95"] = HausdorffDistance(
                include_background=False, percentile=95, output_transform=pair
            )
        key = {"val_dice": MeanDice(include_background=False, output_transform=pair)}
        return DiceCELoss(to_onehot_y=True, softmax=True), post, key, extra, "val_dice", "max"
    if task == "classification":
        post = Activationsd(keys="pred", softmax=True)
        key = {"val_auc": ROCAUC(output_transform=_OneHotPairs(num_classes, argmax_pred=False))}
        extra = {
            "val_accuracy": ConfusionMatrix(
                metric_name="accuracy", output_transform=_OneHotPairs(num_classes, True)
            ),
            "val_f1": ConfusionMatrix(
                metric_name="f1 score", output_transform=_OneHotPairs(num_classes, True)
            ),
        }
        return nn.CrossEntropyLoss(), post, key, extra, "val_auc", "max"
    if task == "survival":
        key = {"val_cindex": ConcordanceIndexHandler(output_transform=pair)}
        return CoxPHLoss(), None, key, {}, "val_cindex", "max"
    hint = " (RetinaNet detection: monai_ext.engines.build_detection_workflow)" if task == "detection" else ""
    raise ValueError(f"build_workflow: `task` must be one of {TASKS}, got {task!r}{hint}.")


def _without_augment(prep: Any) -> Any:
    """The evaluation counterpart of a training ``prepare_batch``: same conversion, no augmentation."""
    if isinstance(prep, GPUAugmentPrepareBatch):
        return PrepareBatchDefault()
    if isinstance(prep, MultimodalPrepareBatch):
        prep = copy.copy(prep)
        prep._augment = None
    return prep


def build_workflow(
    task: str,
    network: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None = None,
    *,
    device: str | torch.device = "cpu",
    max_epochs: int = 1,
    num_classes: int = 2,
    loss_function: Callable | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    learning_rate: float = 1e-3,
    lr_scheduler: Any = None,
    amp: bool = False,
    gpu_augment: nn.Module | None = None,
    prepare_batch: Callable | None = None,
    val_prepare_batch: Callable | None = None,
    accumulation_steps: int = 1,
    compile: bool = False,
    compile_kwargs: dict | None = None,
    val_interval: int = 1,
    val_inferer: Inferer | None = None,
    hd95: bool = True,
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
    """Build a MONAI trainer (and evaluator when ``val_loader`` is given) for ``task``.

    Args:
        task: ``"segmentation"``, ``"classification"`` or ``"survival"``.
        network: the model (already wrapped for DDP if distributed: see ``distributed.wrap_ddp``).
        train_loader / val_loader: iterables of batch dicts.
        optimizer: default ``Adam(network.parameters(), learning_rate)``.
        lr_scheduler: a torch LR scheduler stepped every epoch (``LrScheduleHandler``).
        amp: automatic mixed precision: MONAI ``amp`` on CUDA (float16 autocast and a GradScaler, saved in
            checkpoints); on the CPU a ``bfloat16`` autocast forward (:class:`CPUAutocastInferer`).
        gpu_augment: batch augmentation module run on the device after the transfer (ignored when
            ``prepare_batch`` is given: put it into that ``prepare_batch`` instead).
        prepare_batch / val_prepare_batch: custom batch preparation, e.g. ``MultimodalPrepareBatch``;
            validation defaults to the training one without augmentation.
        accumulation_steps: gradient accumulation over this many iterations.
        compile / compile_kwargs: ``torch.compile`` the network (MONAI's ``compile`` arguments).
        val_interval: validate every this many epochs.
        early_stop_patience: stop after this many validations without key-metric improvement.
        output_dir: checkpoints (``checkpoint_latest.pt``, ``checkpoint_best.pt``), TensorBoard and MLflow
            files; None disables checkpoints and tracking.
        resume: restore from ``output_dir/checkpoint_latest.pt`` at start if it exists.
        seed: reseed Python/NumPy/torch/augmentations from ``seed + epoch`` at every epoch start.
        sampler: a sampler with ``set_epoch`` (e.g. ``DistributedSampler``) to advance with ``seed``.
        nan_guard: stop on a NaN/Inf loss naming the iteration (:class:`NonFiniteLossGuard`).
        progress_bar / log_stats / tensorboard / mlflow: observability switches (rank 0 only).
        mlflow_tracking_uri / experiment_name / run_name: MLflow store (default: the local SQLite store of
            ``monai.bundle run --tracking mlflow`` under ``output_dir``), experiment and run names.
        mlflow_params: extra run parameters; task, amp, accumulation, compile, val_interval and seed are
            logged with MLflow's ``max_epochs`` / ``epoch_length``.

    Example:
        >>> build_workflow("detection", torch.nn.Linear(1, 1), [])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: build_workflow: `task` must be one of (...), got 'detection' (RetinaNet detection: ...
    """
    default_loss, post, key_metric, extra_metrics, key_name, mode = _task_spec(task, num_classes, hd95)
    check_common_options(
        "build_workflow", val_interval, output_dir, resume, tensorboard, mlflow, mlflow_tracking_uri
    )
    device = torch.device(device)
    rank0 = is_rank0()
    optimizer = optimizer or torch.optim.Adam(network.parameters(), lr=learning_rate)
    if prepare_batch is None:
        prepare_batch = (
            GPUAugmentPrepareBatch(gpu_augment) if gpu_augment is not None else PrepareBatchDefault()
        )
    if val_prepare_batch is None:
        val_prepare_batch = _without_augment(prepare_batch)
    handlers: dict[str, Any] = {}
    train_inferer = None
    if amp and device.type == "cpu":  # MONAI autocasts on CUDA only: bfloat16 autocast on the CPU
        train_inferer, val_inferer = CPUAutocastInferer(), CPUAutocastInferer(val_inferer)

    evaluator = None
    if val_loader is not None:
        evaluator = SupervisedEvaluator(
            device=device,
            val_data_loader=val_loader,
            network=network,
            prepare_batch=val_prepare_batch,
            inferer=val_inferer,
            postprocessing=post,
            key_val_metric=key_metric,
            additional_metrics=extra_metrics or None,
            val_handlers=evaluator_stats_handlers(rank0 and log_stats),
            amp=amp,
            compile=compile,
            compile_kwargs=compile_kwargs,
        )
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=max_epochs,
        train_data_loader=train_loader,
        network=network,
        optimizer=optimizer,
        loss_function=loss_function or default_loss,
        prepare_batch=prepare_batch,
        inferer=train_inferer,
        train_handlers=trainer_handlers(handlers, evaluator, lr_scheduler, val_interval, rank0 and log_stats),
        amp=amp,
        compile=compile,
        compile_kwargs=compile_kwargs,
        accumulation_steps=accumulation_steps,
    )
    aug_modules = [gpu_augment, getattr(prepare_batch, "augment", None)]
    inner = getattr(prepare_batch, "_augment", None)
    aug_modules.append(getattr(inner, "augment", None))
    params = {
        "task": task,
        "amp": amp,
        "accumulation_steps": accumulation_steps,
        "compile": compile,
        "val_interval": val_interval,
        "seed": seed,
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
        mode=mode,
        aug_modules=aug_modules,
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


def check_common_options(
    owner: str,
    val_interval: int,
    output_dir: str | os.PathLike | None,
    resume: bool,
    tensorboard: bool,
    mlflow: bool,
    mlflow_tracking_uri: str | None,
) -> None:
    """Raise a clear error (naming ``owner``) for inconsistent workflow options.

    Example:
        >>> check_common_options("demo", 1, None, False, False, False, None)
    """
    if val_interval < 1:
        raise ValueError(f"{owner}: `val_interval` must be >= 1, got {val_interval}.")
    if (tensorboard or mlflow or resume) and output_dir is None and not (mlflow and mlflow_tracking_uri):
        raise ValueError(f"{owner}: `output_dir` is required for resume / tensorboard / mlflow.")


def evaluator_stats_handlers(log_stats: bool) -> list[Any] | None:
    """Evaluator handlers: a metrics ``StatsHandler`` when ``log_stats`` (else None).

    Example:
        >>> evaluator_stats_handlers(False) is None
        True
    """
    if not log_stats:
        return None
    return [StatsHandler(iteration_log=False, output_transform=lambda x: None)]


def trainer_handlers(
    handlers: dict[str, Any],
    evaluator: Any,
    lr_scheduler: Any,
    val_interval: int,
    log_stats: bool,
) -> list[Any] | None:
    """``train_handlers`` for MONAI's trainer: LR schedule, validation every ``val_interval`` epochs, stats.

    The LR and validation handlers are also stored in ``handlers`` (``"lr_schedule"``, ``"validation"``).

    Example:
        >>> trainer_handlers({}, None, None, 1, False) is None
        True
    """
    out: list[Any] = []
    if lr_scheduler is not None:
        handlers["lr_schedule"] = LrScheduleHandler(lr_scheduler, print_lr=False)
        out.append(handlers["lr_schedule"])
    if evaluator is not None:
        handlers["validation"] = ValidationHandler(
            validator=evaluator, interval=val_interval, epoch_level=True
        )
        out.append(handlers["validation"])
    if log_stats:
        out.append(StatsHandler(tag_name="train_loss", output_transform=_LOSS_FROM))
    return out or None


def mlflow_tracking_uri_for(output_dir: str | os.PathLike) -> str:
    """The local MLflow store of a run, as ``monai.bundle run --tracking mlflow`` sets it.

    MONAI's ``DEFAULT_MLFLOW_SETTINGS`` use ``path_to_sqlite_uri(<output_dir>/mlruns.db)`` (MLflow >= 3.13
    refuses the plain ``file://`` store); ``MLFlowHandler`` then keeps artifacts in ``<output_dir>/mlruns``.

    Example:
        >>> mlflow_tracking_uri_for("/tmp/run").endswith("/tmp/run/mlruns.db")
        True
    """
    return path_to_sqlite_uri(Path(output_dir) / "mlruns.db")


def attach_common_handlers(
    trainer: Any,
    evaluator: Any,
    handlers: dict[str, Any],
    *,
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any = None,
    key_name: str | None = None,
    mode: str = "max",
    aug_modules: Sequence[Any] = (),
    seed: int | None = None,
    sampler: Any = None,
    train_loader: Any = None,
    nan_guard: bool = True,
    early_stop_patience: int | None = None,
    output_dir: str | os.PathLike | None = None,
    save_interval: int = 1,
    resume: bool = False,
    progress_bar: bool = False,
    tensorboard: bool = False,
    mlflow: bool = False,
    mlflow_tracking_uri: str | None = None,
    experiment_name: str = "monai_ext",
    run_name: str | None = None,
    mlflow_params: dict[str, Any] | None = None,
) -> TrainingWorkflow:
    """Attach reseeding, NaN guard, early stopping, checkpoints, progress bar and tracking to built engines.

    Shared by every factory (segmentation / classification / survival and detection). Checkpoints store
    ``network`` (unwrapped), ``optimizer``, ``lr_scheduler``, the AMP ``GradScaler`` (registered when the
    trainer starts, as MONAI creates it in ``run()``) and the engine state. Files and logs on rank 0 only.

    Example:
        >>> callable(attach_common_handlers)
        True
    """
    rank0 = is_rank0()
    out = Path(output_dir) if output_dir is not None else None
    if seed is not None:
        handlers["reseed"] = EpochReseed(
            seed,
            modules=[m for m in aug_modules if m is not None],
            sampler=sampler,
            dataset=getattr(train_loader, "dataset", None),
        )
        handlers["reseed"].attach(trainer)
    guard = None
    if nan_guard:
        guard = NonFiniteLossGuard()
        guard.attach(trainer)
    if evaluator is not None and early_stop_patience is not None:
        handlers["early_stop"] = EarlyStopHandler(
            patience=early_stop_patience,
            score_function=stopping_fn_from_metric(key_name),
            trainer=trainer,
        )
        handlers["early_stop"].attach(evaluator)
    checkpointer = None
    if out is not None:
        save: dict[str, Any] = {"model": network, "optimizer": optimizer, "lr_scheduler": lr_scheduler}
        es = handlers.get("early_stop")
        if es is not None and getattr(es, "_handler", None) is not None:
            save["early_stopping"] = es._handler
        checkpointer = CheckpointHandler(
            out,
            save,
            save_interval=save_interval,
            key_metric_name=key_name if evaluator is not None else None,
            metric_engine=evaluator,
            mode=mode,
            resume=resume,
        )
        # MONAI's Trainer.run() creates the GradScaler; register it before a resume restores it
        trainer.add_event_handler(Events.STARTED, _ScalerToCheckpoint(checkpointer))
        checkpointer.attach(trainer)
    if rank0 and progress_bar:
        handlers["progress_bar"] = ProgressBar(persist=False)
        handlers["progress_bar"].attach(trainer, output_transform=lambda o: {"loss": float(_LOSS_FROM(o))})
    if rank0 and tensorboard and out is not None:
        log_dir = str(out / "tensorboard")
        handlers["tensorboard"] = TensorBoardStatsHandler(
            log_dir=log_dir, tag_name="train_loss", output_transform=_LOSS_FROM
        )
        handlers["tensorboard"].attach(trainer)
        if evaluator is not None:
            tb_val = TensorBoardStatsHandler(
                log_dir=log_dir,
                iteration_log=False,
                output_transform=lambda x: None,
                global_epoch_transform=lambda x: trainer.state.epoch,
            )
            tb_val.attach(evaluator)
    if rank0 and mlflow:
        # the local store of `monai.bundle run --tracking mlflow`: SQLite db + `mlruns` artifacts
        uri = mlflow_tracking_uri or mlflow_tracking_uri_for(out)  # type: ignore[arg-type]
        params = {k: v for k, v in (mlflow_params or {}).items() if v is not None}
        handlers["mlflow"] = MLFlowHandler(
            tracking_uri=uri,
            tag_name="train_loss",
            output_transform=_LOSS_FROM,
            experiment_name=experiment_name,
            run_name=run_name,
            experiment_param=params or None,
            close_on_complete=True,
        )
        handlers["mlflow"].attach(trainer)
        if evaluator is not None:
            handlers["mlflow_validation"] = MLFlowHandler(
                tracking_uri=uri,
                iteration_log=False,
                output_transform=lambda x: None,
                global_epoch_transform=lambda x: trainer.state.epoch,
                experiment_name=experiment_name,
                run_name=run_name,
            )
            handlers["mlflow_validation"].attach(evaluator)
    return TrainingWorkflow(
        trainer=trainer,
        evaluator=evaluator,
        checkpointer=checkpointer,
        nan_guard=guard,
        key_metric_name=key_name if evaluator is not None else None,
        handlers=handlers,
    )


class _ScalerToCheckpoint:
    """At ``STARTED``: store the trainer's enabled ``GradScaler`` in the checkpoints (drop a disabled one)."""

    def __init__(self, checkpointer: CheckpointHandler) -> None:
        self.checkpointer = checkpointer

    def __call__(self, engine: Any) -> None:
        scaler = getattr(engine, "scaler", None)
        if scaler is not None and scaler.is_enabled():
            self.checkpointer.save_dict["scaler"] = scaler
        else:
            self.checkpointer.save_dict.pop("scaler", None)


def build_segmentation_workflow(
    network: nn.Module, train_loader: Iterable, **kwargs: Any
) -> TrainingWorkflow:
    """:func:`build_workflow` for segmentation: DiceCE loss, Dice (key) and HD95 metrics.

    Example:
        >>> callable(build_segmentation_workflow)
        True
    """
    return build_workflow("segmentation", network, train_loader, **kwargs)


def build_classification_workflow(
    network: nn.Module, train_loader: Iterable, **kwargs: Any
) -> TrainingWorkflow:
    """:func:`build_workflow` for classification: cross-entropy, AUC (key), accuracy and F1.

    Example:
        >>> callable(build_classification_workflow)
        True
    """
    return build_workflow("classification", network, train_loader, **kwargs)


def build_survival_workflow(network: nn.Module, train_loader: Iterable, **kwargs: Any) -> TrainingWorkflow:
    """:func:`build_workflow` for survival (``[time, event]`` targets): Cox loss, C-index (key).

    Example:
        >>> callable(build_survival_workflow)
        True
    """
    return build_workflow("survival", network, train_loader, **kwargs)
