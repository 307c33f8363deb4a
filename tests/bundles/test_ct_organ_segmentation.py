"""ct_organ_segmentation bundle: metadata, network I/O, a CPU smoke schedule that learns, NIfTI and DICOM
inference inverted onto the input grid (a DICOM SEG for DICOM inputs), and a clear error for a wrong
dataset_dir."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from bundle_helpers import BUNDLES, SCHEMAS, configs, evaluate_metrics, record_losses, workflow
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out
from monai.transforms import LoadImage

from monai_ext.data.dicom import DicomSeriesReader, read_seg, read_series
from monai_ext.data.synthetic import generate
from monai_ext.networks.segmentation import build_unet

NAME = "ct_organ_segmentation"
META = str(BUNDLES / NAME / "configs" / "metadata.json")
# CPU smoke schedule: 8 cases of 64 x 64 x 16 voxels at 4.5 x 4.5 x 8 mm (4 train, 2 val, 2 test),
# a 4-level UNet (8..64 channels), 64 x 64 x 16 patches, 2 x 2 patches per iteration, GPU-style batch
# augmentation on (the default): 20 epochs = 40 iterations.
SMOKE = {
    "spacing": [4.5, 4.5, 8.0],
    "patch_size": [64, 64, 16],
    "unet_channels": [8, 16, 32, 64],
    "learning_rate": 0.01,
}
EPOCHS, ITERATIONS = 20, 40
CHANNEL_DEF = json.loads(open(META).read())["network_data_format"]["outputs"]["pred"]["channel_def"]
ORGANS = [CHANNEL_DEF[str(k)] for k in range(1, len(CHANNEL_DEF))]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("ct") / "data"
    return str(generate("ct_abdomen", out, n=8, seed=1, shape=(64, 64, 16), spacing=(4.5, 4.5, 8.0)))


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda p: p.stem)
def test_metadata_validates_offline(schema):
    verify_metadata(meta_file=META, filepath=str(schema))


def test_network_in_out(data):
    verify_net_in_out(
        net_id="network_def", meta_file=META, config_file=configs(NAME, "train")[0], dataset_dir=data
    )


def test_default_dataset_dir_is_the_cached_synthetic_set(data, monkeypatch):
    import monai_ext.data.synthetic as synthetic

    kinds = []
    monkeypatch.setattr(synthetic, "default_dataset", lambda kind: kinds.append(kind) or data)
    for mode in (["train"], ["train", "evaluate"], ["train", "multi_gpu_train"]):
        parser = ConfigParser()
        parser.read_config(configs(NAME, *mode))
        assert len(parser.get_parsed_content("train#datalist")) == 4
        assert parser.get_parsed_content("check_dataset") and parser.get_parsed_content("check_files")
    parser = ConfigParser()
    parser.read_config(configs(NAME, "inference"))
    parser.get_parsed_content("preprocessing")  # as MONAI Label parses it: no data set needed
    assert kinds == ["ct_abdomen"] * 3
    assert len(parser.get_parsed_content("datalist")) == 8
    assert kinds == ["ct_abdomen"] * 4


def test_wrong_dataset_dir_is_named_before_training(tmp_path):
    missing = tmp_path / "no_such_data"
    with pytest.raises(RuntimeError) as err:
        workflow(NAME, ["train"], bundle_root=str(tmp_path), dataset_dir=str(missing))
    cause = err.value.__cause__
    assert isinstance(cause, FileNotFoundError), repr(cause)
    assert str(missing) in str(cause) and "dataset.json" in str(cause) and "--dataset_dir" in str(cause)
    assert not (tmp_path / "models" / "model.pt").exists()


def test_datalist_naming_missing_files_is_named(data, tmp_path):
    (tmp_path / "dataset.json").write_text(open(f"{data}/dataset.json").read())  # no images next to it
    with pytest.raises(RuntimeError) as err:
        workflow(NAME, ["train"], bundle_root=str(tmp_path), dataset_dir=str(tmp_path))
    cause = err.value.__cause__
    assert isinstance(cause, FileNotFoundError) and "names missing files" in str(cause)
    assert str(tmp_path / "imagesTr" / "case_000.nii.gz") in str(cause)


def test_finetune_ckpt_adds_a_loader_first(data, tmp_path):
    import torch
    from ignite.engine import Engine

    from monai_ext.engines.finetune import FinetuneLoader

    parser = ConfigParser()
    parser.read_config(configs(NAME, "train"))
    parser.update({"dataset_dir": data, **SMOKE})
    torch.manual_seed(3)
    source = parser.get_parsed_content("network_def")
    torch.save({"model": source.state_dict()}, tmp_path / "start.pt")
    parser.update({"finetune_ckpt": str(tmp_path / "start.pt")})
    parser.parse()
    handlers = parser.get_parsed_content("train#trainer#train_handlers")
    assert isinstance(handlers[0], FinetuneLoader)
    handlers[0](Engine(lambda e, b: 0))  # what the trainer runs when a fresh run starts
    network = parser.get_parsed_content("network")
    for name, value in source.state_dict().items():
        torch.testing.assert_close(network.state_dict()[name].cpu(), value, msg=name)
    parser.update({"finetune_ckpt": ""})
    parser.parse()
    assert not isinstance(parser.get_parsed_content("train#trainer#train_handlers")[0], FinetuneLoader)


def _evaluate(data, root, **overrides) -> dict[str, float]:
    return evaluate_metrics(NAME, data, root, **{**SMOKE, **overrides})


def _infer(root, out, **overrides) -> None:
    wf = workflow(
        NAME, ["inference"], "infer", bundle_root=str(root), output_dir=str(out), **{**SMOKE, **overrides}
    )
    wf.run()
    wf.finalize()


def _check_seg(seg_file, folder, nii_file) -> np.ndarray:
    """The SEG references ``folder``, names the organs of channel_def, and equals the NIfTI mask."""
    ds = pydicom.dcmread(seg_file)
    src = read_series(folder)
    assert ds.Modality == "SEG" and [s.SegmentLabel for s in ds.SegmentSequence] == ORGANS
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == src.headers[0].SeriesInstanceUID
    assert len(ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == src.array.shape[2]
    nii = nib.load(nii_file)
    mask = np.asarray(nii.dataobj)
    assert nii.shape == src.array.shape  # the series grid, as read
    np.testing.assert_allclose(nii.affine, src.affine, atol=1e-4)
    present = [
        (k, z) for k in range(1, len(ORGANS) + 1) for z in range(mask.shape[2]) if (mask[..., z] == k).any()
    ]
    assert int(ds.NumberOfFrames) == (len(present) or len(ORGANS) * mask.shape[2])
    labels, names = read_seg(seg_file, folder)
    assert names == ORGANS
    np.testing.assert_array_equal(labels, mask)
    return mask


def test_inference_on_a_dicom_folder_writes_seg_on_the_series_grid(data, tmp_path):
    """One override (input_glob = a series folder), as `monai.bundle run` does it (metadata found next to the
    config), with untrained weights."""
    (tmp_path / "models").mkdir()
    torch.manual_seed(0)
    net = build_unet(3, 1, 6, channels=SMOKE["unet_channels"], strides=[2, 2, 2])
    torch.save(net.state_dict(), tmp_path / "models" / "model.pt")
    folder = f"{data}/dicom/case_006"
    wf = ConfigWorkflow(
        config_file=configs(NAME, "inference")[0],
        workflow_type="infer",
        bundle_root=str(tmp_path),
        output_dir=str(tmp_path / "dcm"),
        input_glob=folder,
        **SMOKE,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    assert sorted(p.name for p in (tmp_path / "dcm").iterdir()) == ["case_006_seg.dcm", "case_006_seg.nii.gz"]
    mask = _check_seg(tmp_path / "dcm" / "case_006_seg.dcm", folder, tmp_path / "dcm" / "case_006_seg.nii.gz")
    assert len(np.unique(mask)) > 1  # a real prediction, not an empty mask

    # NIfTI input: the same run writes the NIfTI mask only
    _infer(tmp_path, tmp_path / "nii", input_glob=f"{data}/imagesTr/case_006.nii.gz")
    assert sorted(p.name for p in (tmp_path / "nii").iterdir()) == ["case_006_seg.nii.gz"]
    # the NIfTI and DICOM copies of the case give the same mask (DICOM is LPS: flip x and y back)
    np.testing.assert_array_equal(
        np.asarray(nib.load(tmp_path / "nii" / "case_006_seg.nii.gz").dataobj), mask[::-1, ::-1]
    )


@pytest.mark.slow
def test_train_smoke_learns_evaluates_and_infers(data, tmp_path):
    untrained = _evaluate(data, tmp_path / "untrained", load_checkpoint=False)

    wf = workflow(NAME, ["train"], bundle_root=str(tmp_path), dataset_dir=data, epochs=EPOCHS, **SMOKE)
    losses = record_losses(wf.parser.get_parsed_content("train#trainer"))
    wf.run()
    wf.finalize()
    assert (tmp_path / "models" / "model.pt").is_file()
    assert len(losses) == ITERATIONS
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10]), losses

    trained = _evaluate(data, tmp_path)
    names = ["dice_liver", "dice_spleen", "dice_left_kidney", "dice_right_kidney", "dice_spine"]
    assert set(names) | {"mean_dice", "hd95"} <= set(trained)
    assert trained["mean_dice"] >= untrained["mean_dice"] + 0.1, (trained, untrained)
    assert trained["dice_liver"] > 0.4, trained

    # NIfTI input, resampled to a different grid for the network: masks come back on the input grid
    image = f"{data}/imagesTr/case_007.nii.gz"
    _infer(tmp_path, tmp_path / "nii", input_glob=image, spacing=[5.0, 5.0, 6.0], patch_size=[64, 64, 32])
    src, seg = nib.load(image), nib.load(tmp_path / "nii" / "case_007_seg.nii.gz")
    assert seg.shape == src.shape
    np.testing.assert_allclose(seg.affine, src.affine, atol=1e-4)
    mask = np.asarray(seg.dataobj)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= set(range(6)) and (mask == 1).sum() > 0

    # the same case as a DICOM series folder (LPS slices): the mask lands on the DICOM grid and
    # matches the NIfTI result voxel for voxel once flipped back to RAS
    folder = f"{data}/dicom/case_007"
    _infer(
        tmp_path,
        tmp_path / "dcm",
        input_glob=folder,
        input_is_dicom=True,
        spacing=[5.0, 5.0, 6.0],
        patch_size=[64, 64, 32],
    )
    dcm = LoadImage(reader=DicomSeriesReader(), image_only=True)(folder)
    seg_d = nib.load(tmp_path / "dcm" / "case_007_seg.nii.gz")
    assert seg_d.shape == tuple(dcm.shape)
    np.testing.assert_allclose(seg_d.affine, dcm.affine.numpy(), atol=1e-4)
    np.testing.assert_array_equal(np.asarray(seg_d.dataobj)[::-1, ::-1], mask)
    # and a DICOM SEG of the trained prediction, on the series, with the liver in it
    seg_mask = _check_seg(
        tmp_path / "dcm" / "case_007_seg.dcm", folder, tmp_path / "dcm" / "case_007_seg.nii.gz"
    )
    assert (seg_mask == 1).sum() > 0

    # the trained network exports to TorchScript and gives the same logits
    ts = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(ts),
        ckpt_file=str(tmp_path / "models" / "model.pt"),
        meta_file=META,
        config_file=configs(NAME, "inference")[0],
        unet_channels=SMOKE["unet_channels"],
    )
    net = build_unet(3, 1, 6, channels=SMOKE["unet_channels"], strides=[2, 2, 2]).eval()
    net.load_state_dict(torch.load(tmp_path / "models" / "model.pt", map_location="cpu"))
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(ts))(x), net(x), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_multi_gpu_train_two_gloo_processes(data, tmp_path):
    cfg = BUNDLES / NAME / "configs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "monai.bundle", "run", "--config_file", str(configs(NAME, "train", "multi_gpu_train"))]
    cmd += ["--meta_file", str(cfg / "metadata.json"), "--logging_file", str(cfg / "logging.conf")]
    cmd += ["--bundle_root", str(tmp_path), "--dataset_dir", data, "--epochs", "1", "--val_interval", "1"]
    for key, value in SMOKE.items():
        cmd += [f"--{key}", json.dumps(value)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "val_mean_dice" in proc.stdout + proc.stderr
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu")
    net = build_unet(3, 1, 6, channels=SMOKE["unet_channels"], strides=[2, 2, 2])
    net.load_state_dict(state)  # strict: saved unwrapped from DDP, no "module." prefix


def test_inference_input_glob_matching_nothing_is_named(tmp_path):
    with pytest.raises(RuntimeError) as err:
        _infer(tmp_path, tmp_path / "out", input_glob=str(tmp_path / "*.nii.gz"))
    assert isinstance(err.value.__cause__, FileNotFoundError)
    assert "input_glob" in str(err.value.__cause__) and str(tmp_path) in str(err.value.__cause__)


def test_dicom_folder_with_two_series_is_named_before_inference(data, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(f"{data}/dicom/case_000", mixed)
    for f in sorted(os.listdir(f"{data}/dicom/case_001")):
        shutil.copy(f"{data}/dicom/case_001/{f}", mixed / f"b_{f}")
    with pytest.raises(RuntimeError) as err:
        _infer(tmp_path, tmp_path / "out", input_glob=str(mixed))
    cause = err.value.__cause__
    assert isinstance(cause, ValueError), repr(cause)
    assert str(mixed) in str(cause) and "2 DICOM image series" in str(cause) and "own folder" in str(cause)
    assert not (tmp_path / "out").exists()
