"""Locate the shipped bundles, read their metadata, and verify them offline.

Example:
    >>> from monai_ext.bundle.registry import bundle_info
    >>> bundle_info("he_tissue_classification").version
    '0.1.0'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ZOO",
    "SCHEMAS",
    "BundleInfo",
    "bundle_names",
    "bundle_path",
    "bundle_info",
    "config_files",
    "verify_bundle",
]

_HERE = Path(__file__).resolve().parent
#: folder holding the bundles (a link to the repository's ``bundles/`` in a source checkout)
ZOO = _HERE / "zoo"
#: the two MONAI bundle metadata schemas, shipped for offline ``verify_metadata``
SCHEMAS = tuple(sorted((_HERE / "schemas").glob("meta_schema_*.json")))

#: workflow mode -> config files layered on top of each other
MODES = {
    "train": ("train",),
    "evaluate": ("train", "evaluate"),
    "inference": ("inference",),
    "multi_gpu_train": ("train", "multi_gpu_train"),
}


@dataclass(frozen=True)
class BundleInfo:
    """What ``monai-ext bundle list`` shows for one bundle."""

    name: str
    task: str
    version: str
    metrics: dict
    path: Path


def bundle_names() -> list[str]:
    """Names of the shipped bundles (folders with ``configs/metadata.json``)."""
    return sorted(p.parent.parent.name for p in ZOO.glob("*/configs/metadata.json"))


def bundle_path(name: str) -> Path:
    """Folder of bundle ``name``; a clear error lists the bundles when it does not exist."""
    path = ZOO / name
    if not (path / "configs" / "metadata.json").is_file():
        raise ValueError(
            f"unknown bundle NAME {name!r}; expected one of: {', '.join(bundle_names()) or '(none)'}"
        )
    return path.resolve()


def bundle_info(name: str) -> BundleInfo:
    """Metadata summary of bundle ``name``."""
    path = bundle_path(name)
    meta = json.loads((path / "configs" / "metadata.json").read_text())
    return BundleInfo(name, meta.get("task", ""), meta.get("version", ""), meta.get("eval_metrics", {}), path)


def config_files(name: str, mode: str) -> list[str]:
    """Config files for ``mode`` (train, evaluate, inference, multi_gpu_train) of bundle ``name``."""
    if mode not in MODES:
        raise ValueError(f"unknown bundle mode {mode!r}; expected one of: {', '.join(MODES)}")
    path = bundle_path(name) / "configs"
    files = [path / f"{c}.json" for c in MODES[mode]]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"bundle {name!r} has no config for mode {mode!r}: missing {', '.join(missing)}"
        )
    return [str(f) for f in files]


def verify_bundle(name: str, dataset_dir: str | None = None, net_in_out: bool = True) -> list[str]:
    """Run the offline checks on bundle ``name``; return the names of the checks that passed.

    Checks: the layout (LICENSE, configs, docs/README.md, models/), the metadata against both MONAI
    schemas, that every mode's configs parse, and ``verify_net_in_out`` for single-tensor networks.
    Any failure raises with the bundle, file and reason.
    """
    from monai.bundle import ConfigParser, verify_metadata, verify_net_in_out

    path = bundle_path(name)
    passed = []
    for rel in ("LICENSE", "configs/metadata.json", "configs/logging.conf", "docs/README.md"):
        if not (path / rel).is_file():
            raise FileNotFoundError(f"bundle {name!r}: missing {rel} in {path}")
    passed.append("layout")
    meta_file = str(path / "configs" / "metadata.json")
    for schema in SCHEMAS:
        verify_metadata(meta_file=meta_file, filepath=str(schema))
        passed.append(f"metadata:{schema.stem}")
    for mode in MODES:
        parser = ConfigParser()
        parser.read_config(config_files(name, mode))
        for key in ("network_def", "device"):
            if key not in parser:
                raise KeyError(f"bundle {name!r} mode {mode!r}: config has no {key!r} key")
        passed.append(f"configs:{mode}")
    meta = json.loads(Path(meta_file).read_text())
    outputs = meta["network_data_format"]["outputs"]
    if net_in_out and set(outputs) == {"pred"} and not meta.get("monai_ext_multi_input"):
        overrides = {} if dataset_dir is None else {"dataset_dir": dataset_dir}
        verify_net_in_out(
            net_id="network_def", meta_file=meta_file, config_file=config_files(name, "train"), **overrides
        )
        passed.append("net_in_out")
    return passed
