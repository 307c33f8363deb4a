"""Small Ignite handlers (plain classes with ``attach``): NaN/Inf loss guard and per-epoch reseeding.

- :class:`NonFiniteLossGuard` wraps Ignite's ``TerminateOnNan`` and adds a message naming the epoch and
  iteration where the loss stopped being finite; it stops the engine or raises.
- :class:`EpochReseed` reseeds Python, NumPy, torch and the batch augmentations at every epoch start
  from ``seed + epoch`` (and calls ``set_epoch`` on a sampler), so an epoch's data order, worker seeds
  and augmentation draws depend only on the seed and the epoch number: a run resumed from an epoch-end
  checkpoint repeats the uninterrupted run exactly (on the CPU).

Example:
    >>> from ignite.engine import Engine
    >>> engine = Engine(lambda e, b: {"loss": torch.tensor(float("nan"))})
    >>> guard = NonFiniteLossGuard()
    >>> guard.attach(engine)
    >>> _ = engine.run([0, 1, 2], max_epochs=1)
    >>> guard.message
    'Non-finite loss (nan) at epoch 1, iteration 1 (iteration 1 of the epoch); training stopped.'
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import TerminateOnNan
from monai.data.utils import set_rnd

__all__ = ["EpochReseed", "NonFiniteLossGuard", "loss_from_output"]

logger = logging.getLogger(__name__)


def loss_from_output(output: Any) -> Any:
    """The loss in an engine output: a dict's ``"loss"``, the first item's for MONAI's decollated list.

    Example:
        >>> loss_from_output([{"loss": 1.0}, {"loss": 1.0}])
        1.0
    """
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], dict):
        output = output[0]
    if isinstance(output, dict):
        if "loss" not in output:
            raise KeyError(f"loss_from_output: engine output has no 'loss' key (keys: {sorted(output)}).")
        return output["loss"]
    return output


class NonFiniteLossGuard:
    """Stop training when the loss is NaN or Inf, with a message naming epoch and iteration.

    Args:
        output_transform: maps ``engine.state.output`` to the loss (default :func:`loss_from_output`).
        raise_error: raise ``FloatingPointError`` with the message instead of terminating quietly.

    After a stop, ``message`` holds the text (also logged at ERROR level).

    Example:
        >>> NonFiniteLossGuard(raise_error=True).raise_error
        True
    """

    def __init__(
        self, output_transform: Callable[[Any], Any] = loss_from_output, raise_error: bool = False
    ) -> None:
        self._inner = TerminateOnNan(output_transform=output_transform)
        self.output_transform = output_transform
        self.raise_error = raise_error
        self.message: str | None = None

    def attach(self, engine: Engine) -> None:
        """Check the loss after every iteration."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        was = engine.should_terminate
        self._inner(engine)
        if engine.should_terminate and not was:
            loss = self.output_transform(engine.state.output)
            value = float(torch.as_tensor(loss).detach().float().reshape(-1)[0]) if loss is not None else None
            state = engine.state
            in_epoch = (
                (state.iteration - 1) % state.epoch_length + 1 if state.epoch_length else state.iteration
            )
            self.message = (
                f"Non-finite loss ({value}) at epoch {state.epoch}, iteration {state.iteration} "
                f"(iteration {in_epoch} of the epoch); training stopped."
            )
            logger.error(self.message)
            if self.raise_error:
                raise FloatingPointError(self.message)


class EpochReseed:
    """At each epoch start seed everything from ``seed + epoch`` (deterministic, resume-safe).

    Args:
        seed: base seed.
        modules: objects to reseed with ``set_seed((seed + epoch) * 1000 + i)``; an ``nn.Module`` is searched
            for submodules with ``set_seed`` (e.g. the batch augmentations of a ``BatchAugChain``).
        sampler: object with ``set_epoch`` (e.g. a ``DistributedSampler``) called with the epoch.
        dataset: dataset whose MONAI random transforms are reseeded (``monai.data.utils.set_rnd``) for
            loading in the main process (``num_workers=0``); worker processes are seeded by MONAI's
            ``worker_init_fn`` from torch's generator, which is reseeded here.

    Example:
        >>> reseed = EpochReseed(0)
        >>> reseed.seed_for_epoch(3)
        3
    """

    def __init__(
        self, seed: int, modules: Iterable[Any] = (), sampler: Any = None, dataset: Any = None
    ) -> None:
        self.seed = int(seed)
        self.dataset = dataset
        self.modules = list(modules)
        self.sampler = sampler

    def seed_for_epoch(self, epoch: int) -> int:
        return self.seed + int(epoch)

    def _seedables(self) -> list[Any]:
        found: list[Any] = []
        for m in self.modules:
            if m is None:
                continue
            children = m.modules() if isinstance(m, torch.nn.Module) else [m]
            found.extend(c for c in children if callable(getattr(c, "set_seed", None)))
        unique = {id(m): m for m in found}  # the same module reached twice is reseeded once
        return list(unique.values())

    def attach(self, engine: Engine) -> None:
        """Reseed at ``EPOCH_STARTED`` (before the epoch's data iterator is created)."""
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        s = self.seed_for_epoch(engine.state.epoch)
        random.seed(s)
        np.random.seed(s % 2**32)
        torch.manual_seed(s)
        for i, m in enumerate(self._seedables()):
            m.set_seed(s * 1000 + i)
        if self.dataset is not None:
            set_rnd(self.dataset, s % 2**32)
        if self.sampler is not None and hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(engine.state.epoch)
