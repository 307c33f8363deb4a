"""ImageTabularAttributionSaver: per-case NIfTI map on the input grid, PNG overlay and tabular CSV."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor, list_data_collate
from monai.transforms import Compose, Orientationd, ResizeWithPadOrCropd
from PIL import Image

from monai_ext.explain import ImageTabularAttributionSaver
from monai_ext.networks import ImageTabularNet

FEATURES = ["age", "stage", "ldh"]


@pytest.fixture(scope="module")
def net() -> ImageTabularNet:
    torch.manual_seed(0)
    return ImageTabularNet(3, 1, 1, 3, num_classes=0, survival="cox", channels=(4, 8), strides=(2,)).eval()


@pytest.fixture(scope="module")
def preprocessing() -> Compose:
    return Compose(
        [Orientationd("image", axcodes="RAS"), ResizeWithPadOrCropd("image", spatial_size=(8, 8, 8))]
    )


def _case(i: int, preprocessing: Compose) -> dict:
    """An LAS image of 10 x 6 x 7 voxels (2 x 2 x 3 mm) through the preprocessing (RAS, 8^3)."""
    las = torch.tensor([[-2.0, 0, 0, 30], [0, 2, 0, -10], [0, 0, 3, 5], [0, 0, 0, 1]], dtype=torch.float64)
    torch.manual_seed(i)
    image = MetaTensor(torch.rand(1, 10, 6, 7), affine=las, meta={"filename_or_obj": f"/data/ct_{i}.nii.gz"})
    out = preprocessing({"image": image})
    tab = torch.tensor([0.5 * i, float("nan") if i == 1 else -1.0, 1.0])
    return {"image": out["image"], "tabular": tab, "patient_id": f"P/{i}"}


def _engine(batch, net, iteration: int = 1):
    return SimpleNamespace(state=SimpleNamespace(batch=batch, iteration=iteration), network=net)


def test_writes_inverted_nifti_png_and_tabular_csv(net, preprocessing, tmp_path):
    batch = [_case(i, preprocessing) for i in range(2)]
    saver = ImageTabularAttributionSaver(tmp_path, feature_names=FEATURES, transform=preprocessing)
    saver(_engine(batch, net))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(
        f"P_{i}{s}"
        for i in range(2)
        for s in ("_attribution.nii.gz", "_attribution.png", "_tabular_attribution.csv")
    )
    assert sorted(p.name for p in saver.written) == names

    nii = nib.load(str(tmp_path / "P_0_attribution.nii.gz"))
    assert nii.shape == (10, 6, 7)  # back on the LAS input grid
    np.testing.assert_allclose(nii.affine[:3, :3], np.diag([-2.0, 2.0, 3.0]), atol=1e-5)
    np.testing.assert_allclose(nii.affine[:3, 3], [30.0, -10.0, 5.0], atol=1e-4)
    values = nii.get_fdata()
    assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1 + 1e-6 and values.max() > 0
    png = np.asarray(Image.open(tmp_path / "P_1_attribution.png"))
    assert png.shape == (8, 8, 3) and png.dtype == np.uint8

    for i, case in enumerate(batch):
        rows = list(csv.DictReader(open(tmp_path / f"P_{i}_tabular_attribution.csv")))
        assert [r["feature"] for r in rows] == FEATURES
        assert (rows[1]["encoded_value"] == "") == (i == 1) and float(rows[2]["encoded_value"]) == 1.0
        attr = np.array([float(r["attribution"]) for r in rows])
        image, tab = case["image"].as_tensor()[None], case["tabular"][None]
        with torch.no_grad():
            delta = float(net(image, tabular=tab) - net(image, tabular=torch.zeros_like(tab)))
        assert attr.sum() == pytest.approx(delta, abs=0.02 * abs(delta) + 1e-4)
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_without_transform_the_map_stays_on_the_network_grid(net, preprocessing, tmp_path):
    case = _case(0, preprocessing)
    collated = list_data_collate([case])
    saver = ImageTabularAttributionSaver(
        tmp_path, method="occlusion", mask_size=4, name_key=None, png_slice="peak"
    )
    saver(_engine(collated, net, iteration=3))  # a collated batch; named after the image file
    nii = nib.load(str(tmp_path / "ct_0_attribution.nii.gz"))
    assert nii.shape == (8, 8, 8)
    np.testing.assert_allclose(nii.affine, case["image"].affine.numpy(), atol=1e-5)
    rows = list(csv.DictReader(open(tmp_path / "ct_0_tabular_attribution.csv")))
    assert [r["feature"] for r in rows] == ["feature_0", "feature_1", "feature_2"]

    plain = {"image": torch.rand(1, 1, 8, 8, 8), "tabular": torch.zeros(1, 3)}
    ImageTabularAttributionSaver(tmp_path / "idx")(_engine(plain, net, iteration=3))
    assert (tmp_path / "idx" / "000002_attribution.nii.gz").is_file()  # no name: the case index


def test_switch_and_bad_input(net, preprocessing, tmp_path):
    from ignite.engine import Engine, Events

    engine = Engine(lambda e, b: None)
    ImageTabularAttributionSaver(tmp_path, enabled=False).attach(engine)
    assert not engine.has_event_handler(ImageTabularAttributionSaver, Events.ITERATION_COMPLETED)
    saver = ImageTabularAttributionSaver(tmp_path)
    saver.attach(engine)
    assert engine.has_event_handler(saver, Events.ITERATION_COMPLETED)

    batch = [_case(0, preprocessing)]
    with pytest.raises(KeyError, match="'clinical'"):
        ImageTabularAttributionSaver(tmp_path, tabular_key="clinical")(_engine(batch, net))
    with pytest.raises(ValueError, match="2 feature_names for 3 tabular columns"):
        ImageTabularAttributionSaver(tmp_path, feature_names=["a", "b"])(_engine(batch, net))
    net2d = ImageTabularNet(2, 1, 1, 3, num_classes=0, survival="cox", channels=(4, 8), strides=(2,))
    flat = [{"image": torch.rand(1, 8, 8), "tabular": torch.zeros(3)}]
    with pytest.raises(ValueError, match="3D images"):
        ImageTabularAttributionSaver(tmp_path)(_engine(flat, net2d))
    for kwargs, match in (
        ({"method": "lime"}, "method"),
        ({"png_slice": "top"}, "png_slice"),
        ({"ig_steps": 0}, "ig_steps"),
    ):
        with pytest.raises(ValueError, match=match):
            ImageTabularAttributionSaver(tmp_path, **kwargs)
