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

import torch

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
    """Folder of shipped bundle ``name`` (or of the bundle folder ``name`` points to).

    A clear error lists the shipped bundles when neither exists.
    """
    own = Path(name).expanduser()
    if (own / "configs" / "metadata.json").is_file():
        return own.resolve()
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
    elif net_in_out:
        _verify_multi_input(name, meta)
        passed.append("net_in_out:multi_input")
    return passed


def _example_input(name: str, meta: dict) -> torch.Tensor:
    """A random ``image`` batch of 1 shaped by ``network_data_format`` (``k*n`` sizes taken with n=4)."""
    image = meta["network_data_format"]["inputs"]["image"]
    spatial = []
    for s in image["spatial_shape"]:
        text = str(s).replace(" ", "")
        if text.lstrip("-").isdigit() and int(text) > 0:
            spatial.append(int(text))
        elif text.endswith("*n") and text[:-2].isdigit():
            spatial.append(int(text[:-2]) * 4)
        else:
            raise ValueError(f"bundle {name!r}: cannot read spatial_shape entry {s!r} of the image input")
    return torch.rand(1, int(image["num_channels"]), *spatial)


def _verify_multi_input(name: str, meta: dict) -> None:
    """``verify_net_in_out``'s equivalent for detectors and image+tabular networks (fresh weights).

    A detector (the inference config's ``detector``) must return, per image, boxes of shape
    ``(K, 2 * spatial_dims)`` inside the image with one label and one score per box; an image+tabular
    network must map ``image`` and ``tabular`` to ``pred`` of the declared number of channels.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_files(name, "inference"))
    parser["device"] = "$torch.device('cpu')"
    inputs, outputs = meta["network_data_format"]["inputs"], meta["network_data_format"]["outputs"]
    image = _example_input(name, meta)
    where = f"bundle {name!r} (configs/inference + metadata network_data_format)"
    with torch.no_grad():
        if outputs["pred"].get("format") == "boxes":
            detector = parser.get_parsed_content("detector")
            detector.eval()
            result = detector([image[0]], use_inferer=False)[0]
            boxes = result[detector.target_box_key]
            ndim = image.ndim - 2
            if boxes.ndim != 2 or boxes.shape[1] != 2 * ndim:
                raise ValueError(f"{where}: boxes have shape {tuple(boxes.shape)}, expected (K, {2 * ndim})")
            for key in (detector.target_label_key, detector.pred_score_key):
                if result[key].shape[0] != boxes.shape[0]:
                    raise ValueError(
                        f"{where}: {key!r} has {result[key].shape[0]} rows for {boxes.shape[0]} boxes"
                    )
            size = torch.tensor(image.shape[2:], dtype=boxes.dtype).repeat(2)
            if boxes.numel() and bool(((boxes < -1e-3) | (boxes > size + 1e-3)).any()):
                raise ValueError(f"{where}: predicted boxes fall outside the {tuple(image.shape[2:])} image")
            return
        network = parser.get_parsed_content("network_def")
        network.eval()
        kwargs = {}
        if "tabular" in inputs:
            kwargs["tabular"] = torch.rand(1, int(inputs["tabular"]["num_channels"]))
        try:
            pred = network(image, **kwargs)
        except (ValueError, RuntimeError, TypeError) as err:
            raise ValueError(f"{where}: the network rejects the declared inputs: {err}") from err
    want = int(outputs["pred"]["num_channels"])
    if not isinstance(pred, torch.Tensor) or pred.ndim < 2 or pred.shape[:2] != (1, want):
        got = tuple(pred.shape) if isinstance(pred, torch.Tensor) else type(pred).__name__
        raise ValueError(f"{where}: network output {got}, expected (1, {want}, ...)")
    if not bool(torch.isfinite(pred).all()):
        raise ValueError(f"{where}: network output is not finite")
