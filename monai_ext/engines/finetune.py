"""Start a model from a checkpoint of another run: key mapping, partial loading, frozen encoder.

:func:`load_pretrained` reads a ``monai_ext`` checkpoint (its ``"model"`` entry), a MONAI bundle
``model.pt`` or any plain state dict with ``torch.load(weights_only=True)``, strips / renames key
prefixes (e.g. ``"module."`` from DDP, ``"encoder." -> "backbone."``), loads the tensors whose names
and shapes match, and optionally freezes parameters by prefix. It returns a report of what was loaded
and what was not; with ``strict=True`` any mismatch raises ``KeyError`` listing the keys.

Example:
    >>> import torch
    >>> src = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    >>> dst = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 3))
    >>> report = load_pretrained(dst, src.state_dict(), freeze_prefixes=["0."])
    >>> report.loaded, report.shape_mismatch, dst[0].weight.requires_grad
    (['0.weight', '0.bias'], ['1.weight', '1.bias'], False)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_ext.engines.checkpoint import unwrap_module

logger = logging.getLogger(__name__)

__all__ = [
    "FinetuneLoader",
    "PretrainedLoadReport",
    "freeze_parameters",
    "load_pretrained",
    "map_state_dict_keys",
]


@dataclass
class PretrainedLoadReport:
    """Keys loaded, model keys left at their initial values, checkpoint keys unused, shape mismatches."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)


def map_state_dict_keys(
    state: Mapping[str, Any],
    strip_prefixes: Sequence[str] = (),
    rename_prefixes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Strip any of ``strip_prefixes`` from each key, then rename the first matching prefix.

    Example:
        >>> sorted(map_state_dict_keys({"module.enc.w": 1}, ["module."], {"enc.": "backbone."}))
        ['backbone.w']
    """
    out: dict[str, Any] = {}
    for key, value in state.items():
        for p in strip_prefixes:
            if p and key.startswith(p):
                key = key[len(p) :]
                break
        for old, new in (rename_prefixes or {}).items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        if key in out:
            raise ValueError(f"map_state_dict_keys: two checkpoint keys map to {key!r}; check the prefixes.")
        out[key] = value
    return out


def freeze_parameters(model: nn.Module, prefixes: Sequence[str]) -> list[str]:
    """Set ``requires_grad=False`` on parameters whose name starts with one of ``prefixes``.

    Raises ``ValueError`` naming a prefix that matches no parameter.

    Example:
        >>> freeze_parameters(torch.nn.Sequential(torch.nn.Linear(1, 1)), ["0."])
        ['0.weight', '0.bias']
    """
    model = unwrap_module(model)
    frozen: list[str] = []
    for p in prefixes:
        hits = [(n, t) for n, t in model.named_parameters() if n.startswith(p)]
        if not hits:
            names = [n for n, _ in model.named_parameters()][:10]
            raise ValueError(f"freeze_parameters: prefix {p!r} matches no parameter (first names: {names}).")
        for n, t in hits:
            t.requires_grad_(False)
            if n not in frozen:
                frozen.append(n)
    return frozen


def _read_state(source: str | os.PathLike | Mapping[str, Any], entry: str) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        state = source
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"load_pretrained: checkpoint file not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(
                f"load_pretrained: {path} is not a readable checkpoint ({type(e).__name__})."
            ) from e
        if not isinstance(state, Mapping):
            raise ValueError(
                f"load_pretrained: {path} holds a {type(state).__name__}, expected a state dict."
            )
    if entry in state and isinstance(state[entry], Mapping):
        state = state[entry]
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(
            f"load_pretrained: not a model state dict: entries {bad[:10]} are not tensors "
            f"(for a training checkpoint the weights are under {entry!r})."
        )
    return state


def load_pretrained(
    model: nn.Module,
    source: str | os.PathLike | Mapping[str, Any],
    strip_prefixes: Sequence[str] = ("module.", "_orig_mod."),
    rename_prefixes: Mapping[str, str] | None = None,
    strict: bool = False,
    freeze_prefixes: Sequence[str] = (),
    entry: str = "model",
) -> PretrainedLoadReport:
    """Load matching weights from ``source`` into ``model`` (partial unless ``strict``), then freeze.

    Args:
        model: target network (DDP / compiled wrappers are unwrapped).
        source: a file path or a state dict; a training checkpoint's ``entry`` dict is used.
        strip_prefixes: prefixes removed from checkpoint keys (first match).
        rename_prefixes: ``{old_prefix: new_prefix}`` applied after stripping.
        strict: raise ``KeyError`` listing missing / unexpected / mis-shaped keys instead of skipping them.
        freeze_prefixes: parameter-name prefixes to freeze (e.g. ``["encoder."]``).
        entry: the key holding the model state in a training checkpoint.

    Raises ``ValueError`` when not a single key matches (so a wrong mapping cannot pass silently).

    Example:
        >>> net = torch.nn.Linear(2, 1)
        >>> load_pretrained(net, {"module.weight": torch.ones(1, 2), "module.bias": torch.ones(1)}).loaded
        ['weight', 'bias']
    """
    target = unwrap_module(model)
    state = map_state_dict_keys(_read_state(source, entry), strip_prefixes, rename_prefixes)
    own = target.state_dict()
    report = PretrainedLoadReport()
    usable: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k not in own:
            report.unexpected.append(k)
        elif tuple(v.shape) != tuple(own[k].shape):
            report.shape_mismatch.append(k)
        else:
            usable[k] = v
            report.loaded.append(k)
    report.missing = [k for k in own if k not in usable and k not in report.shape_mismatch]
    if strict and (report.missing or report.unexpected or report.shape_mismatch):
        raise KeyError(
            f"load_pretrained (strict): missing keys {report.missing[:20]}, unexpected keys "
            f"{report.unexpected[:20]}, shape mismatch {report.shape_mismatch[:20]}."
        )
    if not usable:
        raise ValueError(
            f"load_pretrained: no checkpoint key matches the model; checkpoint keys start "
            f"{list(state)[:5]}, model keys start {list(own)[:5]}. Use strip_prefixes / rename_prefixes."
        )
    target.load_state_dict(usable, strict=False)
    if freeze_prefixes:
        report.frozen = freeze_parameters(target, freeze_prefixes)
    return report


class FinetuneLoader:
    """Ignite handler: :func:`load_pretrained` into ``network`` when a fresh run starts.

    Use it in a bundle's ``train_handlers`` instead of MONAI's ``CheckpointLoader(strict_shape=False)``,
    which matches the *checkpoint's* top-level keys (``"model"``) against the network's parameter names
    and so loads nothing from a ``{"model": state_dict}`` file without an error. This loader reads the
    ``entry`` of such a checkpoint (or a plain state dict), skips mismatched shapes (e.g. a new head),
    raises when nothing matches, and does nothing when the engine resumes (iteration > 0) or when
    ``load_path`` is empty (so a bundle can always list it: ``"load_path": "@finetune_ckpt"``).

    Example:
        >>> from ignite.engine import Engine
        >>> net = torch.nn.Linear(2, 1)
        >>> loader = FinetuneLoader({"weight": torch.ones(1, 2), "bias": torch.zeros(1)}, net)
        >>> engine = Engine(lambda e, b: None)
        >>> loader.attach(engine)
        >>> _ = engine.run([0])
        >>> net.weight.tolist()
        [[1.0, 1.0]]
    """

    def __init__(
        self,
        load_path: str | os.PathLike | Mapping[str, Any],
        network: nn.Module,
        strip_prefixes: Sequence[str] = ("module.", "_orig_mod."),
        rename_prefixes: Mapping[str, str] | None = None,
        strict: bool = False,
        freeze_prefixes: Sequence[str] = (),
        entry: str = "model",
    ) -> None:
        if not isinstance(load_path, Mapping) and load_path and not Path(load_path).is_file():
            raise FileNotFoundError(f"FinetuneLoader: load_path {str(load_path)!r} is not a file.")
        self.load_path = load_path
        self.network = network
        self.kwargs = {
            "strip_prefixes": strip_prefixes,
            "rename_prefixes": rename_prefixes,
            "strict": strict,
            "freeze_prefixes": freeze_prefixes,
            "entry": entry,
        }
        self.report: PretrainedLoadReport | None = None

    def attach(self, engine: Any) -> None:
        """Load when ``engine`` starts (Ignite ``Events.STARTED``); an empty ``load_path`` loads nothing."""
        from ignite.engine import Events

        if isinstance(self.load_path, Mapping) or self.load_path:
            engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Any) -> None:
        if engine.state.iteration > 0:
            logger.info(
                "FinetuneLoader: resumed run (iteration %d), pretrained weights not reloaded.",
                engine.state.iteration,
            )
            return
        self.report = load_pretrained(self.network, self.load_path, **self.kwargs)
        r = self.report
        logger.info(
            "FinetuneLoader: loaded %d tensors; %d left at initial values, %d shape mismatches, %d unused.",
            len(r.loaded),
            len(r.missing),
            len(r.shape_mismatch),
            len(r.unexpected),
        )
