"""monai_ext.engines: MONAI / Ignite training workflows that are resumable, distributed and observable.

Example:
    >>> from monai_ext.engines import build_detection_workflow, build_segmentation_workflow
    >>> callable(build_segmentation_workflow) and callable(build_detection_workflow)
    True
"""

from monai_ext.engines.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointHandler,
    check_state_dict_keys,
    load_checkpoint,
    save_checkpoint,
    unwrap_module,
)
from monai_ext.engines.detection_workflow import (
    DETECTION_METRICS,
    BoxBatchAugment,
    build_detection_workflow,
    flip_boxes,
)
from monai_ext.engines.distributed import (
    cleanup_distributed,
    distributed_loader,
    init_distributed,
    is_distributed,
    is_rank0,
    world_size,
    wrap_ddp,
)
from monai_ext.engines.finetune import (
    FinetuneLoader,
    PretrainedLoadReport,
    freeze_parameters,
    load_pretrained,
    map_state_dict_keys,
)
from monai_ext.engines.handlers import EpochReseed, NonFiniteLossGuard, loss_from_output
from monai_ext.engines.prepare import MultimodalPrepareBatch
from monai_ext.engines.workflows import (
    TASKS,
    CPUAutocastInferer,
    TrainingWorkflow,
    build_classification_workflow,
    build_segmentation_workflow,
    build_survival_workflow,
    build_workflow,
    mlflow_tracking_uri_for,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CPUAutocastInferer",
    "DETECTION_METRICS",
    "BoxBatchAugment",
    "TASKS",
    "CheckpointHandler",
    "EpochReseed",
    "FinetuneLoader",
    "MultimodalPrepareBatch",
    "NonFiniteLossGuard",
    "PretrainedLoadReport",
    "TrainingWorkflow",
    "build_classification_workflow",
    "build_detection_workflow",
    "build_segmentation_workflow",
    "build_survival_workflow",
    "build_workflow",
    "check_state_dict_keys",
    "cleanup_distributed",
    "distributed_loader",
    "flip_boxes",
    "freeze_parameters",
    "init_distributed",
    "is_distributed",
    "is_rank0",
    "load_checkpoint",
    "load_pretrained",
    "loss_from_output",
    "map_state_dict_keys",
    "mlflow_tracking_uri_for",
    "save_checkpoint",
    "unwrap_module",
    "world_size",
    "wrap_ddp",
]
