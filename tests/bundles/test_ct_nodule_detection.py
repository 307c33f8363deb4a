"""ct_nodule_detection bundle: metadata, world-box round trip, bad data folder, CPU smoke schedule."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from bundle_helpers import BUNDLES, SCHEMAS, record_losses, workflow
from monai.bundle import verify_metadata
from PIL import Image

from monai_ext.data.synthetic import generate

NAME = "ct_nodule_detection"
META = str(BUNDLES / NAME / "configs" / "metadata.json")
# tiny data: 64x64x32 voxels at 5 mm (the default 320x320x160 mm field of view), nodules 10-25 mm
DATA = {
    "shape": (64, 64, 32),
    "spacing": (5.0, 5.0, 5.0),
    "diameter_range": (10, 25),
    "nodules_per_scan": (1, 2),
}
# tiny network for 2 CPU cores: ResNet 1-1-1-1 with 8-64 channels, 16-channel FPN, 32x32x16 crops
TINY = {
    "spacing": [5.0, 5.0, 5.0],
    "patch_size": [32, 32, 16],
    "resnet_layers": [1, 1, 1, 1],
    "resnet_channels": [8, 16, 32, 64],
    "fpn_channels": 16,
    "conv1_t_stride": [1, 1, 1],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return str(generate("ct_lung_nodules", tmp_path_factory.mktemp("ct") / "data", n=6, seed=1, **DATA))


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda p: p.stem)
def test_metadata_validates_offline(schema):
    verify_metadata(meta_file=META, filepath=str(schema))
    assert json.load(open(META))["monai_ext_multi_input"] is True


def test_world_boxes_round_trip_through_the_bundle(data, tmp_path):
    """Datalist LPS cccwhd boxes -> training voxel boxes on the nodule -> inference JSON gives them back.

    Resampled to 4 mm (not the data's 5 mm), so the writer must map back to the original grid.
    """
    over = {**TINY, "spacing": [4.0, 4.0, 4.0]}
    item = json.load(open(f"{data}/datalist.json"))["validation"][0]
    wf = workflow(NAME, ["train"], bundle_root=str(tmp_path), dataset_dir=data, **over)
    sample = wf.parser.get_parsed_content("validate#dataset")[0]
    img, box = sample["image"], sample["box"].numpy()
    assert tuple(img.shape) == (1, 80, 80, 40) and sample["label"].tolist() == [0] * len(item["box"])
    lung = float(np.median(img.numpy()))
    for b in box:  # the box centre is a nodule voxel, denser than the lung around it
        c = np.rint((b[:3] + b[3:]) / 2).astype(int)
        assert float(img[0, c[0], c[1], c[2]]) > lung + 0.2, (b, lung)

    wf = workflow(NAME, ["inference"], "infer", bundle_root=str(tmp_path), dataset_dir=data, **over)
    image = wf.parser.get_parsed_content("preprocessing")({"image": f"{data}/{item['image']}"})["image"]
    writer = wf.parser.get_parsed_content("handlers#1")
    pred = {"pred_box": box, "pred_label": np.zeros(len(box)), "pred_score": np.linspace(0.9, 0.5, len(box))}
    rec = json.load(open(writer.write(image, pred)))
    assert rec["convention"].startswith("box: cccwhd world mm LPS")
    np.testing.assert_allclose(rec["box"], item["box"], atol=0.02)
    assert rec["box_voxel"] == item["box_voxel"] and rec["class_name"] == ["nodule"] * len(box)


def _cause_chain(err: BaseException) -> str:
    msgs = []
    while err is not None:
        msgs.append(str(err))
        err = err.__cause__
    return " | ".join(msgs)


@pytest.mark.parametrize("names", [["train"], ["inference"]])
def test_bad_dataset_dir_is_a_clear_error(tmp_path, names):
    missing = str(tmp_path / "nope")
    kind = "train" if names == ["train"] else "infer"
    wf = workflow(NAME, names, kind, bundle_root=str(tmp_path), dataset_dir=missing, **TINY)
    key = "train#dataset" if names == ["train"] else "dataset"
    with pytest.raises(Exception) as info:
        wf.parser.get_parsed_content(key)
    text = _cause_chain(info.value)
    assert "dataset_dir" in text and missing in text, text


@pytest.mark.slow
def test_train_smoke_learns_evaluates_and_infers(data, tmp_path):
    # 4 training scans, batch 2 scans x 2 crops (positive crops only, Adam lr 0.01) -> 2 iterations per
    # epoch; 12 epochs = 24 iterations: the mean loss of the last 6 is below 0.7x that of the first 6
    wf = workflow(
        NAME,
        ["train"],
        bundle_root=str(tmp_path),
        dataset_dir=data,
        epochs=12,
        val_interval=12,
        batch_size=2,
        num_samples=2,
        learning_rate=0.01,
        **{"train#augmentation#0#neg": 0},
        **TINY,
    )
    losses = record_losses(wf.parser.get_parsed_content("train#trainer"))
    wf.run()
    wf.finalize()
    assert (tmp_path / "models" / "model.pt").is_file()
    n = len(losses)
    assert n == 24 and np.all(np.isfinite(losses))
    assert np.mean(losses[-n // 4 :]) < 0.7 * np.mean(losses[: n // 4]), losses

    wf = workflow(
        NAME,
        ["train", "evaluate"],
        "eval",
        bundle_root=str(tmp_path),
        dataset_dir=data,
        output_dir=str(tmp_path / "eval"),
        **TINY,
    )
    wf.run()
    wf.finalize()
    rows = dict(csv.reader(open(tmp_path / "eval" / "metrics.csv")))
    assert 0.0 <= float(rows["cpm"]) <= 1.0 and 0.0 <= float(rows["map10"]) <= 1.0

    out = tmp_path / "pred"
    wf = workflow(
        NAME, ["inference"], "infer", bundle_root=str(tmp_path), dataset_dir=data, output_dir=str(out), **TINY
    )
    wf.run()
    wf.finalize()
    jsons, pngs = sorted(out.glob("*_boxes.json")), sorted(out.glob("*_overlay.png"))
    assert [p.name for p in jsons] == [f"case_{i:03d}_boxes.json" for i in range(6)] and len(pngs) == 6
    for path in jsons:
        rec = json.load(open(path))
        boxes, vox = np.array(rec["box"]).reshape(-1, 6), np.array(rec["box_voxel"]).reshape(-1, 6)
        assert len(boxes) == len(vox) == len(rec["score"]) == len(rec["label"])
        assert np.all(boxes[:, 3:] > 0) and np.all(vox[:, 3:] > vox[:, :3])
        assert np.all(vox[:, :3] >= 0) and np.all(vox[:, 3:] <= np.array(DATA["shape"]))
        assert rec["score"] == sorted(rec["score"], reverse=True)
    assert np.asarray(Image.open(pngs[0])).shape == (64, 64, 3)
