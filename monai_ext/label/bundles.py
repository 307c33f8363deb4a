"""Which shipped bundles MONAI Label can serve, their labels, and writing a ready app folder.

Nothing here imports ``monailabel``: the app folder can be written (and inspected) in any environment.

Example:
    >>> from monai_ext.label.bundles import servable_bundles, label_map
    >>> servable_bundles()["he_tissue_classification"]
    'classification'
    >>> label_map("he_tissue_classification")["tumour"]
    3
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["KINDS", "bundle_kind", "label_map", "servable_bundles", "init_checkpoint", "write_app"]

#: task kinds MONAI Label serves from a bundle
KINDS = ("segmentation", "classification", "detection")

_MAIN_PY = '''"""MONAI Label app serving the monai-ext bundles (written by `monai-ext label app`).

Start it with:
    monailabel start_server --app {app_dir} --studies STUDIES_DIR
"""

from monai_ext.label.app import MonaiExtLabelApp

__all__ = ["MonaiExtLabelApp"]
'''

_README = """# monai-ext MONAI Label app

Bundles served (copied into `model/<name>/`; put trained weights in `model/<name>/models/model.pt`):

{table}

Start (offline; nothing is fetched from the internet):

    monailabel start_server --app {app_dir} --studies STUDIES_DIR --conf models all

`--conf models a,b` serves a subset. A bundle without `models/model.pt` can still be trained from
the client (`/train/<name>`); its infer task appears after the next restart.
"""


def _metadata(path: str | os.PathLike) -> dict:
    meta = Path(path) / "configs" / "metadata.json"
    if not meta.is_file():
        raise ValueError(f"bundle folder {str(path)!r} is not a bundle: {meta} does not exist")
    try:
        return json.loads(meta.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"bundle folder {str(path)!r}: {meta} is not valid JSON ({e})") from None


def _first_output(path: str | os.PathLike) -> dict:
    outputs = _metadata(path).get("network_data_format", {}).get("outputs", {})
    if not outputs:
        raise ValueError(f"bundle folder {str(path)!r}: metadata.json has no network_data_format.outputs")
    return next(iter(outputs.values()))


def bundle_kind(path: str | os.PathLike) -> str:
    """``segmentation``, ``classification`` or ``detection`` from the bundle's metadata.

    Read from ``network_data_format.outputs`` (``format`` / ``type``), then from ``task``; raises
    ``ValueError`` for a folder that is not a bundle or a task MONAI Label cannot serve.
    """
    out = _first_output(path)
    fmt = f"{out.get('format', '')} {out.get('type', '')}".lower()
    task = str(_metadata(path).get("task", "")).lower()
    if "segmentation" in fmt:
        return "segmentation"
    if any(w in fmt for w in ("box", "detection")):
        return "detection"
    if any(w in fmt for w in ("class", "probabilities", "logits")):
        return "classification"
    for kind, words in (("detection", ("detection",)), ("classification", ("classification",))):
        if any(w in task for w in words):
            return kind
    if "segmentation" in task:
        return "segmentation"
    raise ValueError(
        f"bundle folder {str(path)!r}: cannot tell the task from metadata.json (outputs format"
        f" {fmt.strip()!r}, task {task!r}); expected one of {', '.join(KINDS)}"
    )


def label_map(name_or_path: str | os.PathLike) -> dict[str, int]:
    """Label name -> index from the output ``channel_def`` (``background`` left out)."""
    path = _resolve(name_or_path)
    channel_def = _first_output(path).get("channel_def", {})
    return {str(v).lower(): int(k) for k, v in channel_def.items() if str(v).lower() != "background"}


def _resolve(name_or_path: str | os.PathLike) -> Path:
    if isinstance(name_or_path, str) and os.sep not in name_or_path and not os.path.isdir(name_or_path):
        from monai_ext.bundle import bundle_path

        return bundle_path(name_or_path)
    return Path(name_or_path)


def servable_bundles() -> dict[str, str]:
    """Name -> kind of every shipped bundle MONAI Label can serve (found at call time)."""
    from monai_ext.bundle import bundle_names, bundle_path

    found = {}
    for name in bundle_names():
        try:
            found[name] = bundle_kind(bundle_path(name))
        except ValueError:
            continue
    return found


def init_checkpoint(bundle_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write an untrained (seeded, randomly initialised) ``models/model.pt`` for a bundle copy.

    For smoke tests and demos only: the weights are not trained. Written atomically.
    """
    import torch
    from monai.bundle import ConfigParser

    bundle_dir = Path(bundle_dir)
    config = bundle_dir / "configs" / "inference.json"
    if not config.is_file():
        raise ValueError(f"bundle folder {str(bundle_dir)!r} is not a bundle: {config} does not exist")
    parser = ConfigParser()
    parser.read_config(str(config))
    parser["bundle_root"] = str(bundle_dir)
    torch.manual_seed(seed)
    net = parser.get_parsed_content("network_def", instantiate=True)
    out = bundle_dir / "models" / "model.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save(net.state_dict(), tmp)
    os.replace(tmp, out)
    return out


def write_app(
    out_dir: str | os.PathLike, models: list[str] | None = None, init_weights: bool = False
) -> Path:
    """Write a ready MONAI Label app folder: ``main.py``, ``README.md`` and ``model/<bundle>/`` copies.

    Args:
        out_dir: new (or empty) folder; written under a temporary name, then renamed.
        models: bundle names to copy (default: every servable bundle).
        init_weights: also write untrained ``models/model.pt`` files (smoke tests and demos only).

    Example:
        >>> app = write_app("/tmp/monai_ext_label_app")  # doctest: +SKIP
        >>> # monailabel start_server --app /tmp/monai_ext_label_app --studies /data/studies
    """
    from monai_ext.bundle import bundle_path

    out = Path(out_dir).expanduser().absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"OUT_DIR {str(out_dir)!r} exists and is not an empty folder")
    kinds = servable_bundles()
    names = list(kinds) if not models else list(models)
    unknown = [n for n in names if n not in kinds]
    if unknown:
        raise ValueError(
            f"--models: unknown or unservable bundle(s) {unknown}; expected some of {list(kinds)}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name in names:
            dest = tmp / "model" / name
            shutil.copytree(
                bundle_path(name), dest, ignore=shutil.ignore_patterns("eval", "pred", "__pycache__")
            )
            if init_weights:
                init_checkpoint(dest)
        table = "\n".join(f"- `{n}` ({kinds[n]}): labels {', '.join(label_map(n))}" for n in names)
        (tmp / "main.py").write_text(_MAIN_PY.format(app_dir=out))
        (tmp / "README.md").write_text(_README.format(table=table, app_dir=out))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
