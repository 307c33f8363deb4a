"""Atomic, resumable training checkpoints for Ignite / MONAI engines.

A checkpoint is one ``torch.save``-d dict that ``torch.load(..., weights_only=True)`` reads::

    {"_meta": {"format": "monai_ext.checkpoint", "version": 1, "epoch", "iteration", "best_metric", ...},
     "engine": trainer.state_dict(), "model": ..., "optimizer": ..., "lr_scheduler": ..., "scaler": ...}

:func:`save_checkpoint` writes to a temporary file in the target folder, flushes it to disk and then
``os.replace``-s it over the target, so a crash during the write leaves the previous file intact.
:class:`CheckpointHandler` keeps ``checkpoint_latest.pt`` (every ``save_interval`` epochs) and
``checkpoint_best.pt`` (by a metric), writes on rank 0 only, and with ``resume=True`` restores model,
optimiser, scheduler, scaler and engine state (epoch / iteration) from the latest file when the engine
starts. Checkpoints are written at epoch ends, so a run killed mid-epoch repeats that epoch.

Example:
    >>> import tempfile, torch
    >>> net = torch.nn.Linear(2, 1)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = save_checkpoint({"model": net.state_dict()}, f"{d}/ckpt.pt")
    ...     sorted(load_checkpoint(path, {"model": net}))
    ['_meta', 'model']
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import nn

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointHandler",
    "check_state_dict_keys",
    "load_checkpoint",
    "save_checkpoint",
    "unwrap_module",
]

CHECKPOINT_FORMAT = "monai_ext.checkpoint"
_VERSION = 1
logger = logging.getLogger(__name__)


def unwrap_module(module: Any) -> Any:
    """Return the plain module inside ``DistributedDataParallel`` / ``DataParallel`` / ``torch.compile``."""
    while True:
        if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            module = module.module
        elif hasattr(module, "_orig_mod") and isinstance(module, nn.Module):
            module = module._orig_mod
        else:
            return module


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def save_checkpoint(obj: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically: temp file in the same folder, fsync, ``os.replace``.

    Objects with a ``state_dict()`` method are saved as their state dict; a ``_meta`` entry with the
    format name is added when absent. On any error the temporary file is removed and ``path`` is
    untouched.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_checkpoint({"w": torch.zeros(1)}, f"{d}/a.pt").name
        'a.pt'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {k: (v.state_dict() if hasattr(v, "state_dict") else v) for k, v in obj.items()}
    payload.setdefault("_meta", {"format": CHECKPOINT_FORMAT, "version": _VERSION})
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def check_state_dict_keys(
    module: nn.Module, state: Mapping[str, Any], name: str = "model", strict: bool = True
) -> tuple[list[str], list[str], list[str]]:
    """Compare ``state`` with ``module.state_dict()``: ``(missing, unexpected, shape_mismatch)`` keys.

    With ``strict`` a mismatch raises ``KeyError`` listing the keys (first 20 of each kind).

    Example:
        >>> check_state_dict_keys(torch.nn.Linear(2, 1), torch.nn.Linear(2, 1).state_dict())
        ([], [], [])
    """
    own = unwrap_module(module).state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [
        f"{k}: checkpoint {list(state[k].shape)} vs model {list(own[k].shape)}"
        for k in own
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if strict and (missing or unexpected or shape):
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shape)):
            if keys:
                more = f" ... (+{len(keys) - 20} more)" if len(keys) > 20 else ""
                parts.append(f"{label} keys ({len(keys)}): {keys[:20]}{more}")
        raise KeyError(
            f"checkpoint entry {name!r} does not match the {type(module).__name__}: " + "; ".join(parts)
        )
    return missing, unexpected, shape


def _read(path: Path, map_location: Any) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(
            f"{path} is not a readable checkpoint: torch.load(weights_only=True) failed ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''})."
        ) from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a checkpoint: expected a dict, got {type(data).__name__}.")
    return data


def load_checkpoint(
    path: str | os.PathLike,
    objects: Mapping[str, Any] | None = None,
    map_location: Any = "cpu",
    strict: bool = True,
) -> dict[str, Any]:
    """Read ``path`` with ``torch.load(weights_only=True)`` and restore ``objects`` from it.

    ``objects`` maps checkpoint keys to modules, optimisers, schedulers, scalers or Ignite engines (an
    engine keeps its current ``max_epochs``, so a run can be extended). Raises ``ValueError`` for a file
    that is not a checkpoint or lacks requested entries, and ``KeyError`` listing the missing /
    unexpected / mis-shaped keys of a module (``strict``). Returns the raw checkpoint dict.

    Example:
        >>> load_checkpoint("/nonexistent.pt")
        Traceback (most recent call last):
        ...
        FileNotFoundError: checkpoint file not found: /nonexistent.pt
    """
    path = Path(path)
    data = _read(path, map_location)
    objects = dict(objects or {})
    absent = [k for k in objects if k not in data]
    if absent:
        raise ValueError(
            f"{path} is not a checkpoint with the requested entries: missing {absent}; "
            f"it has top-level keys {sorted(map(str, data))[:20]}."
        )
    for key, obj in objects.items():
        state = data[key]
        if isinstance(obj, Engine):
            max_epochs = obj.state.max_epochs
            obj.load_state_dict(state)
            if max_epochs is not None:
                if obj.state.epoch > max_epochs:
                    raise ValueError(
                        f"{path}: checkpoint epoch {obj.state.epoch} exceeds the engine's "
                        f"max_epochs {max_epochs}."
                    )
                obj.state.max_epochs = max_epochs
        elif isinstance(obj, nn.Module):
            check_state_dict_keys(obj, state, key, strict=strict)
            unwrap_module(obj).load_state_dict(state, strict=strict)
        elif hasattr(obj, "load_state_dict"):
            obj.load_state_dict(state)
        else:
            raise TypeError(
                f"load_checkpoint: object for {key!r} ({type(obj).__name__}) has no load_state_dict."
            )
    return data


class CheckpointHandler:
    """Keep the latest and the best checkpoint of a training run, written atomically on rank 0.

    Args:
        save_dir: output folder.
        save_dict: objects to store, e.g. ``{"model": net, "optimizer": opt, "lr_scheduler": sched,
            "scaler": scaler}``; None values are skipped. The attached engine is stored as ``"engine"``.
        save_interval: write ``checkpoint_latest.pt`` every this many epochs (0: never).
        key_metric_name: metric (in ``metric_engine.state.metrics``) selecting ``checkpoint_best.pt``.
        metric_engine: engine holding the metric (usually the evaluator); default the attached engine.
        mode: ``"max"`` or ``"min"``: which metric value is better.
        resume: on ``Events.STARTED`` restore everything from ``checkpoint_latest.pt`` if it exists.
        save_final: also write ``checkpoint_final.pt`` when the run completes.

    Attach it after the ``ValidationHandler`` so the latest file holds the epoch's best-metric state.

    Example:
        >>> from ignite.engine import Engine
        >>> import tempfile
        >>> net = torch.nn.Linear(2, 1)
        >>> engine = Engine(lambda e, b: 0.0)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     CheckpointHandler(d, {"model": net}).attach(engine)
        ...     _ = engine.run([0, 1], max_epochs=2)
        ...     sorted(p.name for p in Path(d).iterdir())
        ['checkpoint_latest.pt']
    """

    latest_name = "checkpoint_latest.pt"
    best_name = "checkpoint_best.pt"
    final_name = "checkpoint_final.pt"

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        save_interval: int = 1,
        key_metric_name: str | None = None,
        metric_engine: Engine | None = None,
        mode: str = "max",
        resume: bool = False,
        save_final: bool = False,
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"CheckpointHandler: `mode` must be 'max' or 'min', got {mode!r}.")
        if save_interval < 0:
            raise ValueError(f"CheckpointHandler: `save_interval` must be >= 0, got {save_interval}.")
        bad = [k for k, v in save_dict.items() if v is not None and not hasattr(v, "state_dict")]
        if bad or "engine" in save_dict or "_meta" in save_dict:
            raise ValueError(
                f"CheckpointHandler: `save_dict` entries need a state_dict() and may not be named "
                f"'engine' or '_meta'; offending keys: "
                f"{bad or [k for k in ('engine', '_meta') if k in save_dict]}."
            )
        self.save_dir = Path(save_dir)
        self.save_dict = {k: v for k, v in save_dict.items() if v is not None}
        self.save_interval = save_interval
        self.key_metric_name = key_metric_name
        self.metric_engine = metric_engine
        self.mode = mode
        self.resume = resume
        self.save_final = save_final
        self.best_metric: float | None = None
        self.best_metric_epoch = -1
        self.saved: list[Path] = []
        self.resumed_from: Path | None = None
        self._engine: Engine | None = None

    @property
    def latest_path(self) -> Path:
        return self.save_dir / self.latest_name

    @property
    def best_path(self) -> Path:
        return self.save_dir / self.best_name

    def attach(self, engine: Engine) -> None:
        """Register resume (STARTED), latest (EPOCH_COMPLETED), best and final saving on ``engine``."""
        self._engine = engine
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load_latest)
        if self.save_interval > 0:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self._save_latest)
        if self.key_metric_name is not None:
            (self.metric_engine or engine).add_event_handler(Events.EPOCH_COMPLETED, self._save_best)
        if self.save_final:
            engine.add_event_handler(Events.COMPLETED, self._save_final)

    def _payload(self, kind: str) -> dict[str, Any]:
        assert self._engine is not None
        state = self._engine.state
        meta = {
            "format": CHECKPOINT_FORMAT,
            "version": _VERSION,
            "kind": kind,
            "epoch": int(state.epoch),
            "iteration": int(state.iteration),
            "key_metric_name": self.key_metric_name,
            "best_metric": self.best_metric,
            "best_metric_epoch": self.best_metric_epoch,
        }
        payload: dict[str, Any] = {"_meta": meta, "engine": dict(self._engine.state_dict())}
        for k, v in self.save_dict.items():
            payload[k] = unwrap_module(v).state_dict() if isinstance(v, nn.Module) else v.state_dict()
        return payload

    def _write(self, kind: str, path: Path) -> None:
        if _rank() != 0:
            return
        save_checkpoint(self._payload(kind), path)
        self.saved.append(path)

    def _save_latest(self, engine: Engine) -> None:
        self._write("latest", self.latest_path)

    def _save_final(self, engine: Engine) -> None:
        self._write("final", self.save_dir / self.final_name)

    def _save_best(self, engine: Engine) -> None:
        metrics = engine.state.metrics
        if self.key_metric_name not in metrics:
            raise KeyError(
                f"CheckpointHandler: key metric {self.key_metric_name!r} not in the engine's metrics "
                f"{sorted(metrics)}."
            )
        value = float(metrics[self.key_metric_name])
        if math.isnan(value):
            return
        better = (
            self.best_metric is None
            or (self.mode == "max" and value > self.best_metric)
            or (self.mode == "min" and value < self.best_metric)
        )
        if better:
            self.best_metric = value
            self.best_metric_epoch = int(self._engine.state.epoch) if self._engine else -1
            self._write("best", self.best_path)

    def load_latest(self, engine: Engine | None = None) -> bool:
        """Restore all objects and the engine from ``checkpoint_latest.pt``; False if there is none."""
        if not self.latest_path.exists():
            return False
        objects: dict[str, Any] = dict(self.save_dict)
        if self._engine is not None:
            objects["engine"] = self._engine
        data = load_checkpoint(self.latest_path, objects)
        meta = data.get("_meta", {})
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{self.latest_path} is not a {CHECKPOINT_FORMAT} checkpoint (meta: {meta}).")
        self.best_metric = meta.get("best_metric")
        self.best_metric_epoch = int(meta.get("best_metric_epoch", -1))
        self.resumed_from = self.latest_path
        logger.info("resumed from %s at epoch %s", self.latest_path, meta.get("epoch"))
        return True
