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


#: a quick registration schedule for the tiny test volumes
FAST_REG = {
    "registration#shrink_factors": [2, 1],
    "registration#smoothing_sigmas": [1.0, 0.0],
    "registration#iterations": 100,
    "registration#sampling_fraction": 1.0,  # 48 x 48 x 32 voxels: sample them all
}
PLAIN = ["LoadImaged", "Lambda", "SelectItemsd", "Orientationd", "Spacingd", "NonzeroZScored", "EnsureTyped"]


def _rigid(degrees: float = 8.0, shift=(3.0, -4.0, 3.4641016)):
    """ITK rigid transform: ``degrees`` about an oblique axis through the world origin, then ``shift`` mm."""
    import itk

    axis = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    th = np.radians(degrees)
    tx = itk.AffineTransform[itk.D, 3].New()
    tx.SetMatrix(itk.matrix_from_array(np.eye(3) + np.sin(th) * k + (1 - np.cos(th)) * k @ k))
    tx.SetTranslation([float(v) for v in shift])
    return tx


@pytest.fixture(scope="module")
def misaligned(data, tmp_path_factory):
    """A test case whose FLAIR file is moved by a known rigid transform (voxels moved, header kept)."""
    import itk
    from monai.transforms import LoadImage

    from monai_ext.registration import itk_transform_to_ras_matrix, resample_to_reference
    from monai_ext.registration.cli import write_nifti_atomic

    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(1)
    files = _test_case(data)
    flair = LoadImage(image_only=True, ensure_channel_first=True)(files[3])
    s = _rigid()
    out = tmp_path_factory.mktemp("misaligned") / os.path.basename(files[3])
    write_nifti_atomic(resample_to_reference(flair, flair, s, "linear"), str(out))
    return {"files": files, "moved": [*files[:3], str(out)], "s_ras": itk_transform_to_ras_matrix(s)}


def _preprocess(data, files, **overrides):
    parser = ConfigParser()
    parser.read_config(configs(NAME, "inference"))
    parser.update({**SMALL, "dataset_dir": str(data), "datalist": [{"image": files}], **overrides})
    names = [type(t).__name__ for t in parser.get_parsed_content("preprocessing").transforms]
    return names, parser.get_parsed_content("dataset")[0]["image"]


@pytest.mark.slow
def test_registration_switch_realigns_a_moved_flair(data, misaligned, untrained_root, tmp_path):
    """--register true: a FLAIR moved by 8 degrees / 6 mm is registered back to T1c before stacking."""
    names, truth = _preprocess(data, misaligned["files"])
    off_names, off = _preprocess(data, misaligned["moved"])
    on_names, on = _preprocess(data, misaligned["moved"], register=True, **FAST_REG)
    # the switch off leaves the pipeline as it was: one LoadImaged stacking the files, no registration
    assert names == off_names == PLAIN
    assert on_names == ["LoadImaged", "AlignSequencesd", *PLAIN[1:]]

    brain = truth[3] != 0

    def corr(x):
        return float(np.corrcoef(np.asarray(x[3][brain]), np.asarray(truth[3][brain]))[0, 1])

    assert corr(off) < 0.85 and corr(on) > 0.92 and corr(on) > corr(off) + 0.1, (corr(off), corr(on))
    # the recovered FLAIR transform undoes the known one: residual < 1 degree and < 1 mm at the centre
    residual = np.asarray(misaligned["s_ras"]) @ np.asarray(on.meta["registration_ras"][3])
    u, _, vt = np.linalg.svd(residual[:3, :3])
    angle = np.degrees(np.arccos(np.clip((np.trace(u @ vt) - 1) / 2, -1, 1)))
    assert angle < 1.0 and np.linalg.norm(residual[:3, 3]) < 1.0, residual
    assert on.meta["registration_fixed"] == "t1c"
    torch.testing.assert_close(on[1], truth[1])  # T1c is the reference: untouched
    torch.testing.assert_close(on.affine, truth.affine)

    # training preprocessing: the label stays on the reference grid; per-sequence keys only with the switch
    parser = ConfigParser()
    parser.read_config(configs(NAME, "train"))
    parser.update({**SMALL, "dataset_dir": str(data), "register": True, **FAST_REG})
    label = str(data / json.loads((data / "dataset.json").read_text())["test"][0]["label"])
    entries = parser.get_parsed_content("to_loadable")(
        [{"image": [None, *misaligned["moved"][1:]], "label": label}]
    )
    assert sorted(k for k in entries[0] if k in SEQUENCES) == ["flair", "t1c", "t2"]
    item = parser.get_parsed_content("validate#preprocessing")(entries[0])
    assert item["image"].shape[1:] == item["label"].shape[1:] and item["image"].shape[0] == 4
    assert float(item["image"][0].abs().max()) == 0.0  # T1 missing: a zero channel

    # end to end: inference with the switch writes the mask on the T1c grid
    _infer(
        data,
        untrained_root,
        tmp_path / "pred",
        datalist=[{"image": misaligned["moved"]}],
        register=True,
        **FAST_REG,
    )
    (mask_file,) = (tmp_path / "pred").glob("*.nii.gz")
    ref = nib.load(misaligned["files"][1])
    assert nib.load(str(mask_file)).shape == ref.shape
    np.testing.assert_allclose(nib.load(str(mask_file)).affine, ref.affine, atol=1e-4)
