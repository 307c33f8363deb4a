"""he_nuclei_detection bundle: metadata, box axes of the data pipeline, a CPU smoke schedule, inference."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from bundle_helpers import BUNDLES, SCHEMAS, record_losses, workflow
from monai.bundle import verify_metadata
from PIL import Image

from monai_ext.data.synthetic import generate

NAME = "he_nuclei_detection"
META = str(BUNDLES / NAME / "configs" / "metadata.json")
# tiny network and schedule for 2 CPU cores: ResNet 1-1-1-1 with 8-64 channels, stride-2 stem
TINY = {
    "resnet_layers": [1, 1, 1, 1],
    "resnet_channels": [8, 16, 32, 64],
    "conv1_t_stride": [2, 2],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return str(generate("he_patches", tmp_path_factory.mktemp("he") / "data", n=24, seed=1, size=32))


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda p: p.stem)
def test_metadata_validates_offline(schema):
    verify_metadata(meta_file=META, filepath=str(schema))
    assert json.load(open(META))["monai_ext_multi_input"] is True


def test_boxes_follow_the_png_array_axes(tmp_path):
    """A non-square PNG: the loaded image is (C, H, W) and rows-first boxes crop the marked nucleus."""
    img = np.full((40, 24, 3), 230, np.uint8)
    img[5:9, 14:20] = 40  # a dark 'nucleus' at rows 5-8, columns 14-19
    (tmp_path / "images").mkdir()
    Image.fromarray(img).save(tmp_path / "images" / "a.png")
    item = {"image": "images/a.png", "boxes_coco": [[14, 5, 6, 4]], "box_labels": [2]}
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [item], "validation": [item]}))
    wf = workflow(NAME, ["train"], bundle_root=str(tmp_path), dataset_dir=str(tmp_path), **TINY)
    sample = wf.parser.get_parsed_content("validate#dataset")[0]
    assert tuple(sample["image"].shape) == (3, 40, 24)
    assert sample["box"].tolist() == [[5.0, 14.0, 9.0, 20.0]]  # boxes_coco converted to [r0, c0, r1, c1]
    assert sample["label"].tolist() == [0]  # label_map: every nucleus kind -> class 0
    r0, c0, r1, c1 = (int(v) for v in sample["box"][0])
    assert float(sample["image"][:, r0:r1, c0:c1].max()) < 0.2  # the crop is the dark nucleus


def _cause_chain(err: BaseException) -> str:
    msgs = []
    while err is not None:
        msgs.append(str(err))
        err = err.__cause__
    return " | ".join(msgs)


@pytest.mark.parametrize("names", [["train"], ["inference"]])
def test_bad_dataset_dir_is_a_clear_error(tmp_path, names):
    missing = str(tmp_path / "nope")
    wf = workflow(
        NAME,
        names,
        "train" if names == ["train"] else "infer",
        bundle_root=str(tmp_path),
        dataset_dir=missing,
        **TINY,
    )
    key = "train#dataset" if names == ["train"] else "dataset"
    with pytest.raises(Exception) as info:
        wf.parser.get_parsed_content(key)
    text = _cause_chain(info.value)
    assert "dataset_dir" in text and missing in text, text


@pytest.mark.slow
def test_train_smoke_learns_evaluates_and_infers(data, tmp_path):
    # 15 training patches, batch 4 -> 4 iterations per epoch; 5 epochs = 20 iterations
    wf = workflow(
        NAME,
        ["train"],
        bundle_root=str(tmp_path),
        dataset_dir=data,
        epochs=5,
        val_interval=5,
        batch_size=4,
        **TINY,
    )
    losses = record_losses(wf.parser.get_parsed_content("train#trainer"))
    wf.run()
    wf.finalize()
    assert (tmp_path / "models" / "model.pt").is_file()
    n = len(losses)
    assert n == 20 and np.all(np.isfinite(losses))
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
    assert 0.0 <= float(rows["map50"]) <= 1.0

    out = tmp_path / "pred"
    wf = workflow(
        NAME,
        ["inference"],
        "infer",
        bundle_root=str(tmp_path),
        dataset_dir=data,
        output_dir=str(out),
        **TINY,
    )
    wf.run()
    wf.finalize()
    pngs = sorted((tmp_path / "pred").glob("*_overlay.png"))
    jsons = sorted(out.glob("*_boxes.json"))
    assert len(jsons) == len(pngs) == 24
    for path in jsons:
        rec = json.load(open(path))
        boxes, coco = np.array(rec["boxes"]).reshape(-1, 4), np.array(rec["boxes_coco"]).reshape(-1, 4)
        assert len(boxes) == len(coco) == len(rec["score"]) == len(rec["label"])
        assert np.all((boxes >= 0) & (boxes <= 32)) and np.all(boxes[:, 2:] >= boxes[:, :2])
        np.testing.assert_allclose(
            coco,
            np.stack([boxes[:, 1], boxes[:, 0], boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]], 1),
            atol=0.02,
        )
        assert rec["score"] == sorted(rec["score"], reverse=True)
    assert np.asarray(Image.open(pngs[0])).shape == (32, 32, 3)
