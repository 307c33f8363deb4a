"""Checks a bundle runs in ``initialize``, before any data is read or any training starts.

``python -m monai.bundle run ... --epoch 5`` (a typo for ``--epochs``) silently *adds* a key ``epoch``
that nothing reads, and the run trains with the default schedule. :func:`check_override_keys` finds
the running ``ConfigWorkflow`` and refuses top-level keys that appear in none of the bundle's config
files, naming the key and the closest known ones.

Example (in a bundle's ``train.json``)::

    "initialize": ["$monai_ext.bundle.checks.check_override_keys()", "..."]
"""

from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["check_override_keys", "unknown_top_level_keys"]

#: keys MONAI itself adds to a workflow's config (metadata, ``--tracking mlflow`` settings)
_MONAI_KEYS = {"_meta_", "handlers_id", "configs"}


def _tracking_keys() -> set[str]:
    from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

    keys: set[str] = set()
    for settings in DEFAULT_EXP_MGMT_SETTINGS.values():
        keys |= set(settings.get("configs", {}))
    return keys


def _file_keys(folder: Path) -> set[str]:
    keys: set[str] = set()
    for path in sorted(folder.glob("*.json")) + sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
        if path.suffix == ".json":
            content = json.loads(path.read_text())
        else:
            import yaml

            content = yaml.safe_load(path.read_text())
        if isinstance(content, dict):
            keys |= set(content)
    return keys


def unknown_top_level_keys(config: dict, config_dir: str | Path) -> dict[str, list[str]]:
    """Top-level keys of ``config`` found in no config file under ``config_dir``, with close matches.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "train.json").write_text('{"epochs": 2}')
        >>> unknown_top_level_keys({"epochs": 2, "epoch": 5}, d)
        {'epoch': ['epochs']}
    """
    known = _file_keys(Path(config_dir)) | _MONAI_KEYS | _tracking_keys()
    return {k: difflib.get_close_matches(k, sorted(known), n=3, cutoff=0.6) for k in config if k not in known}


def _running_workflow() -> Any:
    from monai.bundle import ConfigWorkflow

    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, ConfigWorkflow):
            return owner
        frame = frame.f_back
    return None


def check_override_keys() -> bool:
    """Raise ``KeyError`` when the running bundle workflow got an override key no config file knows.

    Does nothing (returns ``False``) outside a ``ConfigWorkflow`` (e.g. a plain ``ConfigParser``).
    """
    workflow = _running_workflow()
    if workflow is None:
        return False
    unknown = unknown_top_level_keys(workflow.parser.config, workflow.config_root_path)
    if unknown:
        hints = "; ".join(
            f"--{k}" + (f" (did you mean {', '.join('--' + m for m in near)}?)" if near else "")
            for k, near in sorted(unknown.items())
        )
        raise KeyError(
            f"bundle config override with a key that no config file in {workflow.config_root_path} "
            f"defines: {hints}. Nothing would read it; check the spelling."
        )
    return True
