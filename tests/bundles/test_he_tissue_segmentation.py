"""he_tissue_segmentation bundle: metadata, network I/O, labels from GeoJSON or mask PNG, a CPU smoke
schedule that learns, a pyramidal heat map aligned with the slide, and clear errors for bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch
from bundle_helpers import BUNDLES, SCHEMAS, configs, evaluate_metrics, record_losses, workflow
from monai.bundle import ConfigParser, verify_metadata, verify_net_in_out
from PIL import Image

from monai_ext.data.synthetic import generate

NAME = "he_tissue_segmentation"
META = str(BUNDLES / NAME / "configs" / "metadata.json")
# CPU smoke schedule: 3 slides of 2048 x 2048 px at 0.5 um/px read at 2 um/px (512 x 512), 2 train and
# 1 validation/test slide, a 4-level UNet (8..64 channels), 1 slide x 4 patches of 128 x 128 per
# iteration, batch augmentation on (the default): 30 epochs = 60 iterations.
SMOKE = {
    "patch_size": [128, 128],
    "unet_channels": [8, 16, 32, 64],
    "num_samples": 4,
    "batch_size": 1,
    "learning_rate": 0.01,
}
EPOCHS, ITERATIONS = 30, 60


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = generate("wsi", tmp_path_factory.mktemp("wsi") / "data", n=3, seed=1, size=2048)
    datalist = json.loads((out / "datalist.json").read_text())
    datalist["validation"] = datalist["test"]  # 3 slides: the generator keeps none for validation
    (out / "datalist.json").write_text(json.dumps(datalist))
    return str(out)


def _tumour_mask(data: str, k: int) -> np.ndarray:
    return np.asarray(Image.open(f"{data}/masks/slide_{k:03d}_tumour.png")) > 0


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda p: p.stem)
def test_metadata_validates_offline(schema):
    verify_metadata(meta_file=META, filepath=str(schema))


def test_network_in_out(data):
    verify_net_in_out(
        net_id="network_def", meta_file=META, config_file=configs(NAME, "train")[0], dataset_dir=data
    )


def test_default_dataset_dir_is_the_cached_synthetic_set(data, monkeypatch):
    import monai_ext.data.synthetic as synthetic

    calls = []
    monkeypatch.setattr(synthetic, "default_dataset", lambda kind, **kw: calls.append((kind, kw)) or data)
    for mode in (["train"], ["train", "evaluate"], ["train", "multi_gpu_train"]):
        parser = ConfigParser()
        parser.read_config(configs(NAME, *mode))
        assert len(parser.get_parsed_content("train#datalist")) == 2
        assert parser.get_parsed_content("check_dataset") and parser.get_parsed_content("check_files")
    parser = ConfigParser()
    parser.read_config(configs(NAME, "inference"))
    assert len(parser.get_parsed_content("datalist")) == 3
    assert calls == [("wsi", {"n": 10})] * 4


@pytest.mark.parametrize("source", ["annotations", "mask"])
def test_labels_from_geojson_or_mask_png_match_the_slide(data, tmp_path, source):
    wf = workflow(NAME, ["train"], bundle_root=str(tmp_path), dataset_dir=data, label_source=source, **SMOKE)
    item = wf.parser.get_parsed_content("validate#dataset")[0]
    image, label = item["image"], item["label"]
    assert image.shape == (3, 512, 512) and label.shape == (1, 512, 512)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert set(torch.unique(label).tolist()) == {0.0, 1.0}
    # the label at 2 um/px, pooled to the mask PNG's downsample 16, is the generator's tumour mask
    pooled = label[0].reshape(128, 4, 128, 4).float().mean((1, 3)).numpy() > 0.5
    assert _dice(pooled, _tumour_mask(data, 2)) > 0.97


def test_wrong_dataset_dir_and_label_source_are_named_before_training(data, tmp_path):
    missing = tmp_path / "no_such_data"
    with pytest.raises(RuntimeError) as err:
        workflow(NAME, ["train"], bundle_root=str(tmp_path), dataset_dir=str(missing))
    cause = err.value.__cause__
    assert isinstance(cause, FileNotFoundError), repr(cause)
    assert str(missing) in str(cause) and "datalist.json" in str(cause) and "--dataset_dir" in str(cause)
    with pytest.raises(RuntimeError) as err:
        workflow(NAME, ["train"], bundle_root=str(tmp_path), dataset_dir=data, label_source="geojson")
    assert "label_source" in str(err.value.__cause__) and "'geojson'" in str(err.value.__cause__)
    assert not (tmp_path / "models" / "model.pt").exists()


def test_datalist_naming_missing_annotations_is_named(data, tmp_path):
    broken = tmp_path / "data"
    broken.mkdir()
    datalist = json.loads(open(f"{data}/datalist.json").read())
    for split in datalist.values():
        for entry in split:
            entry.update({k: os.path.join(data, entry[k]) for k in ("image", "label", "tissue_mask")})
    datalist["training"][0]["annotations"] = "annotations/gone.geojson"
    (broken / "datalist.json").write_text(json.dumps(datalist))
    with pytest.raises(RuntimeError) as err:
        workflow(NAME, ["train"], bundle_root=str(tmp_path), dataset_dir=str(broken))
    assert isinstance(err.value.__cause__, FileNotFoundError)
    assert "gone.geojson" in str(err.value.__cause__)


def _evaluate(data, root, **overrides) -> dict[str, float]:
    return evaluate_metrics(NAME, data, root, **{**SMOKE, **overrides})


@pytest.mark.slow
def test_train_smoke_learns_evaluates_and_writes_heatmaps(data, tmp_path):
    untrained = _evaluate(data, tmp_path / "untrained", load_checkpoint=False)

    wf = workflow(NAME, ["train"], bundle_root=str(tmp_path), dataset_dir=data, epochs=EPOCHS, **SMOKE)
    losses = record_losses(wf.parser.get_parsed_content("train#trainer"))
    wf.run()
    wf.finalize()
    assert (tmp_path / "models" / "model.pt").is_file()
    assert len(losses) == ITERATIONS
    q = ITERATIONS // 4
    assert np.mean(losses[-q:]) < 0.85 * np.mean(losses[:q]), losses

    trained = _evaluate(data, tmp_path)
    assert {"dice", "iou"} <= set(trained)
    assert trained["dice"] >= untrained["dice"] + 0.15, (trained, untrained)

    out = tmp_path / "pred"
    wf = workflow(
        NAME,
        ["inference"],
        "infer",
        bundle_root=str(tmp_path),
        dataset_dir=data,
        output_dir=str(out),
        **SMOKE,
    )
    wf.run()
    wf.finalize()
    assert sorted(os.listdir(out)) == [f"slide_{k:03d}_heatmap.tif" for k in range(3)]
    with tifffile.TiffFile(out / "slide_002_heatmap.tif") as tif:
        levels = [p.shape for p in tif.series[0].levels]
        assert levels[0] == (512, 512) and len(levels) >= 2  # pyramidal, at 2 um/px
        assert "slide_shape=2048x2048" in tif.pages[0].description
        xres = tif.pages[0].tags["XResolution"].value
        assert xres[0] / xres[1] == pytest.approx(1e4 / 2.0)  # pixels per cm at 2 um/px
        heat = tif.pages[0].asarray()
    assert heat.dtype == np.uint8
    pooled = heat.reshape(128, 4, 128, 4).mean((1, 3)) / 255.0 > 0.5
    assert _dice(pooled, _tumour_mask(data, 2)) == pytest.approx(trained["dice"], abs=0.1)


def test_inference_input_glob_matching_nothing_is_named(tmp_path):
    with pytest.raises(RuntimeError) as err:
        workflow(NAME, ["inference"], "infer", bundle_root=str(tmp_path), input_glob=str(tmp_path / "*.svs"))
    assert isinstance(err.value.__cause__, FileNotFoundError)
    assert "input_glob" in str(err.value.__cause__) and str(tmp_path) in str(err.value.__cause__)


@pytest.mark.slow
def test_multi_gpu_train_two_gloo_processes(data, tmp_path):
    files = configs(NAME, "train", "multi_gpu_train")
    overrides = {"bundle_root": str(tmp_path), "dataset_dir": data, "epochs": 1, "val_interval": 1, **SMOKE}
    overrides["validate#sampler#even_divisible"] = True  # one validation slide for two ranks
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "monai.bundle", "run", "--config_file", "[" + ",".join(repr(f) for f in files) + "]",
        "--meta_file", META,
    ]  # fmt: skip
    for key, value in overrides.items():
        cmd += [f"--{key}", repr(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu")
    assert not any(k.startswith("module.") for k in state)  # saved from the unwrapped network
