"""mri_multimodal_segmentation bundle: metadata, network I/O, data checks, inference grid, CPU smoke runs."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_helpers import BUNDLES, SCHEMAS, configs, record_losses, workflow
from monai.bundle import ConfigParser, verify_metadata, verify_net_in_out

from monai_ext.data.synthetic import generate

NAME = "mri_multimodal_segmentation"
META = str(BUNDLES / NAME / "configs" / "metadata.json")
SEQUENCES = ("t1", "t1c", "t2", "flair")
#: tiny network and patches for CPU tests; the data below is 48 x 48 x 32 at 4 mm
SMALL = {
    "network_def#channels": [8, 16, 32],
    "network_def#strides": [2, 2],
    "target_spacing": [4.0, 4.0, 4.0],
    "roi_size": [48, 48, 32],  # one sliding window per case
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mri") / "data"
    return generate("mri_brain_multimodal", root, n=5, seed=1, shape=(48, 48, 32), spacing=(4.0, 4.0, 4.0))


@pytest.fixture(scope="module")
def untrained_root(tmp_path_factory):
    """A bundle root holding randomly initialised weights of the SMALL network at models/model.pt."""
    root = tmp_path_factory.mktemp("mri_untrained")
    parser = ConfigParser()
    parser.read_config(configs(NAME, "inference"))
    parser.update(SMALL)
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    (root / "models").mkdir()
    torch.save({"model": net.state_dict()}, root / "models" / "model.pt")
    return root


def _test_case(data) -> list[str]:
    return [str(data / p) for p in json.loads((data / "dataset.json").read_text())["test"][0]["image"]]


def _infer(data, root, out, **overrides) -> None:
    wf = workflow(
        NAME,
        ["inference"],
        "infer",
        bundle_root=str(root),
        dataset_dir=str(data),
        output_dir=str(out),
        **{**SMALL, **overrides},
    )
    wf.run()
    wf.finalize()


def _assert_raises(exc_type: type, pattern: str, fn) -> None:
    """``fn()`` raises ``exc_type`` matching ``pattern``, directly or as the cause of MONAI's config error."""
    with pytest.raises(Exception) as info:
        fn()
    exc = info.value
    while exc is not None and not isinstance(exc, exc_type):
        exc = exc.__cause__
    assert exc is not None, f"no {exc_type.__name__} in the chain of {info.value!r}"
    assert re.search(pattern, str(exc)), str(exc)


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda p: p.stem)
def test_metadata_validates_offline(schema):
    verify_metadata(meta_file=META, filepath=str(schema))
    meta = json.loads(open(META).read())["network_data_format"]
    assert meta["inputs"]["image"]["channel_def"] == {str(i): s for i, s in enumerate(SEQUENCES)}
    assert meta["outputs"]["pred"]["channel_def"]["3"] == "enhancing_tumour"


def test_network_in_out_and_torchscript(data):
    verify_net_in_out(
        net_id="network_def", meta_file=META, config_file=configs(NAME, "train")[0], dataset_dir=str(data)
    )
    parser = ConfigParser()
    parser.read_config(configs(NAME, "train"))
    parser.update(SMALL)
    net = parser.get_parsed_content("network_def").eval()
    x = torch.randn(1, 4, 16, 16, 16)
    x[:, 1] = 0.0  # T1c missing
    scripted = torch.jit.script(net)
    with torch.no_grad():
        out = net(x)
        torch.testing.assert_close(scripted(x), out)
    assert out.shape == (1, 4, 16, 16, 16) and torch.isfinite(out).all()


def test_inference_writes_masks_on_the_input_grid(data, untrained_root, tmp_path):
    # a left-anterior (LAS) copy of a test case: inference must resample to RAS / 3 mm and back
    src = tmp_path / "las"
    src.mkdir()
    files = []
    for path in _test_case(data):
        img = nib.load(path)
        flip = np.diag([-1.0, 1.0, 1.0, 1.0])
        flip[0, 3] = img.shape[0] - 1
        out = src / path.split("/")[-1]
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[::-1].copy(), img.affine @ flip), str(out))
        files.append(str(out))
    grid = {"target_spacing": [3.0, 3.0, 3.0], "roi_size": [64, 64, 48]}
    _infer(data, untrained_root, tmp_path / "pred", datalist=[{"image": files}], **grid)
    (mask_file,) = (tmp_path / "pred").glob("*.nii.gz")
    assert mask_file.name == files[0].split("/")[-1].replace("_t1.nii.gz", "_seg.nii.gz")
    mask, ref = nib.load(str(mask_file)), nib.load(files[0])
    assert mask.shape == ref.shape
    np.testing.assert_allclose(mask.affine, ref.affine, atol=1e-4)
    assert mask.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2, 3}


def test_inference_with_missing_sequences(data, untrained_root, tmp_path):
    case = _test_case(data)
    val = json.loads((data / "dataset.json").read_text())["validation"][0]["image"]
    datalist = [
        {"image": [case[0], None, case[2], case[3]]},  # T1c missing (null)
        {"image": {"flair": val[3]}},  # only FLAIR, relative path, by sequence name
    ]
    _infer(data, untrained_root, tmp_path / "pred", datalist=datalist)
    names = sorted(p.name for p in (tmp_path / "pred").glob("*.nii.gz"))
    assert names == sorted(p.split("/")[-1][: -len("_t1.nii.gz")] + "_seg.nii.gz" for p in (case[0], val[0]))
    for name in names:
        assert nib.load(str(tmp_path / "pred" / name)).shape == (48, 48, 32)

    # the network gives finite scores with the sequence zeroed by the preprocessing
    parser = ConfigParser()
    parser.read_config(configs(NAME, "inference"))
    parser.update({**SMALL, "dataset_dir": str(data), "datalist": datalist})
    item = parser.get_parsed_content("dataset")[0]
    assert float(item["image"][1].abs().max()) == 0.0 and float(item["image"][0].abs().max()) > 0
    net = parser.get_parsed_content("network_def").eval()
    with torch.no_grad():
        out = net(item["image"][None, :, :32, :32, :32].as_tensor())
    assert torch.isfinite(out).all()


def test_datalist_errors_name_the_file(data, tmp_path):
    entries = json.loads((data / "dataset.json").read_text())
    bad = {
        k: [
            {"image": [str(data / p) for p in d["image"]], "label": str(data / d["label"])}
            for d in entries[k]
        ]
        for k in ("training", "validation", "test")
    }
    bad["training"][1]["image"][1] = bad["training"][1]["image"][1].replace("_t1c", "_t1cX")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "dataset.json").write_text(json.dumps(bad))
    overrides = {"bundle_root": str(tmp_path / "run"), "epochs": 1, **SMALL}
    _assert_raises(
        FileNotFoundError,
        r"training datalist of .*dataset.json names 1 missing file\(s\): .*case_001_t1cX.nii.gz",
        lambda: workflow(NAME, ["train"], dataset_dir=str(tmp_path / "bad"), **overrides).run(),
    )
    assert not (tmp_path / "run" / "models").exists()

    bad["training"][1]["image"] = bad["training"][0]["image"][:3]
    (tmp_path / "bad" / "dataset.json").write_text(json.dumps(bad))
    _assert_raises(
        ValueError,
        r"image must list 4 files in the order \['t1', 't1c', 't2', 'flair'\]",
        lambda: workflow(NAME, ["train"], dataset_dir=str(tmp_path / "bad"), **overrides).run(),
    )
    _assert_raises(
        ValueError,
        "nowhere/dataset.json does not exist",
        lambda: workflow(NAME, ["train"], dataset_dir=str(tmp_path / "nowhere"), **overrides).run(),
    )


def _evaluate(data, root, **overrides) -> dict[str, dict[str, float]]:
    wf = workflow(
        NAME,
        ["train", "evaluate"],
        "eval",
        bundle_root=str(root),
        dataset_dir=str(data),
        output_dir=str(root / "eval"),
        **{"patch_size": [32, 32, 32], **SMALL, **overrides},
    )
    wf.run()
    wf.finalize()
    rows = list(csv.DictReader(open(root / "eval" / "metrics_summary.csv")))
    return {r.pop("scenario"): {k: float(v) for k, v in r.items()} for r in rows}


@pytest.mark.slow
def test_train_smoke_learns_and_evaluates(data, tmp_path):
    untrained = _evaluate(data, tmp_path / "untrained", load_checkpoint=False, eval_scenarios=[[]])

    wf = workflow(
        NAME,
        ["train"],
        bundle_root=str(tmp_path),
        dataset_dir=str(data),
        epochs=10,
        val_interval=5,
        learning_rate=0.003,
        patch_size=[32, 32, 32],
        **SMALL,
    )
    losses = record_losses(wf.parser.get_parsed_content("train#trainer"))
    wf.run()
    wf.finalize()
    assert (tmp_path / "models" / "model.pt").is_file()
    n = len(losses)
    assert n == 20  # 3 training cases, batch 2 -> 2 iterations x 10 epochs
    assert np.mean(losses[-n // 4 :]) < 0.85 * np.mean(losses[: n // 4]), losses

    trained = _evaluate(data, tmp_path)
    assert sorted(trained) == sorted(["all"] + [f"missing_{s}" for s in SEQUENCES])
    assert trained["all"]["dice_wt"] >= untrained["all"]["dice_wt"] + 0.2, (trained, untrained)
    for s in SEQUENCES:
        assert np.isfinite(trained[f"missing_{s}"]["dice_wt"])
        assert (tmp_path / "eval" / f"metrics_missing_{s}.csv").is_file()

    # one scenario through the override key
    only = _evaluate(
        data, tmp_path / "override", ckpt_dir=str(tmp_path / "models"), missing_modalities=["t2"]
    )
    assert list(only) == ["missing_t2"]
    assert only["missing_t2"]["dice_wt"] == pytest.approx(trained["missing_t2"]["dice_wt"], abs=1e-4)


@pytest.mark.slow
def test_multi_gpu_train_two_gloo_processes(data, tmp_path):
    files = configs(NAME, "train", "multi_gpu_train")
    overrides = {
        "bundle_root": str(tmp_path),
        "dataset_dir": str(data),
        "epochs": 1,
        "val_interval": 1,
        "patch_size": [32, 32, 32],
        "validate#sampler#even_divisible": True,  # one validation case for two ranks
        **SMALL,
    }
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
