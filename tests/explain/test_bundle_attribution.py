"""The he_tissue_classification inference writes PNG attribution overlays with one switch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.networks.nets import DenseNet121
from PIL import Image

from monai_ext.data.synthetic import generate

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "he_tissue_classification"


def _infer(root: Path, data: str, **overrides) -> None:
    wf = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "inference.json"),
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        logging_file=str(BUNDLE / "configs" / "logging.conf"),
        workflow_type="infer",
        bundle_root=str(root),
        dataset_dir=data,
        output_dir=str(root / "pred"),
        batch_size=4,
        **overrides,
    )
    wf.initialize()
    wf.run()
    wf.finalize()


@pytest.mark.slow
def test_write_attribution_switch(tmp_path):
    data = str(generate("he_patches", tmp_path / "data", n=6, seed=1))
    (tmp_path / "models").mkdir()
    torch.manual_seed(0)
    net = DenseNet121(spatial_dims=2, in_channels=3, out_channels=4)
    torch.save({"model": net.state_dict()}, tmp_path / "models" / "model.pt")

    _infer(tmp_path, data)
    assert not (tmp_path / "pred" / "attribution").exists()  # off by default

    _infer(tmp_path, data, write_attribution=True)
    images = sorted(Path(data, "images").glob("*.png"))
    written = sorted((tmp_path / "pred" / "attribution").iterdir())
    assert [p.name for p in written] == [f"{p.stem}_attribution.png" for p in images]
    overlay = np.asarray(Image.open(written[0]))
    assert overlay.shape == (64, 64, 3) and overlay.dtype == np.uint8
