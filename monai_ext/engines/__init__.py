"""monai_ext.engines: MONAI / Ignite training workflows that are resumable, distributed and observable.

Example:
    >>> from monai_ext.engines import build_segmentation_workflow, CheckpointHandler
    >>> callable(build_segmentation_workflow)
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
    PretrainedLoadReport,
    freeze_parameters,
    load_pretrained,
    map_state_dict_keys,
)
from monai_ext.engines.handlers import EpochReseed, NonFiniteLossGuard, loss_from_output
from monai_ext.engines.prepare import MultimodalPrepareBatch
from monai_ext.engines.workflows import (
    TASKS,
    TrainingWorkflow,
    build_classification_workflow,
    build_segmentation_workflow,
    build_survival_workflow,
    build_workflow,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "TASKS",
    "CheckpointHandler",
    "EpochReseed",
    "MultimodalPrepareBatch",
    "NonFiniteLossGuard",
    "PretrainedLoadReport",
    "TrainingWorkflow",
    "build_classification_workflow",
    "build_segmentation_workflow",
    "build_survival_workflow",
    "build_workflow",
    "check_state_dict_keys",
    "cleanup_distributed",
    "distributed_loader",
    "freeze_parameters",
    "init_distributed",
    "is_distributed",
    "is_rank0",
    "load_checkpoint",
    "load_pretrained",
    "loss_from_output",
    "map_state_dict_keys",
    "save_checkpoint",
    "unwrap_module",
    "world_size",
    "wrap_ddp",
]
