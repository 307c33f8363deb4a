"""he_tissue_classification bundle: metadata, network I/O, a CPU smoke schedule that learns, inference."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from bundle_helpers import BUNDLES, SCHEMAS, configs, evaluate_metrics, record_losses, workflow
from monai.bundle import verify_metadata, verify_net_in_out

from monai_ext.data.synthetic import generate

NAME = "he_tissue_classification"
META = str(BUNDLES / NAME / "configs" / "metadata.json")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return str(generate("he_patches", tmp_path_factory.mktemp("he") / "data", n=192, seed=1))


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda p: p.stem)
def test_metadata_validates_offline(schema):
    verify_metadata(meta_file=META, filepath=str(schema))


def test_network_in_out(data):
    verify_net_in_out(
        net_id="network_def", meta_file=META, config_file=configs(NAME, "train")[0], dataset_dir=data
    )


def _evaluate(data, root, **overrides) -> float:
    return evaluate_metrics(NAME, data, root, **overrides)["accuracy"]


@pytest.mark.slow
def test_train_smoke_learns_and_infers(data, tmp_path):
    untrained = _evaluate(data, tmp_path / "untrained", load_checkpoint=False)

    wf = workflow(NAME, ["train"], bundle_root=str(tmp_path), dataset_dir=data, epochs=6, val_interval=3)
    losses = record_losses(wf.parser.get_parsed_content("train#trainer"))
    wf.run()
    wf.finalize()
    assert (tmp_path / "models" / "model.pt").is_file()
    n = len(losses)
    assert n >= 24
    assert np.mean(losses[-n // 4 :]) < 0.7 * np.mean(losses[: n // 4]), losses

    trained = _evaluate(data, tmp_path)
    assert trained >= untrained + 0.2, (trained, untrained)

    wf = workflow(
        NAME,
        ["inference"],
        "infer",
        bundle_root=str(tmp_path),
        dataset_dir=data,
        output_dir=str(tmp_path / "pred"),
    )
    wf.run()
    wf.finalize()
    with open(tmp_path / "pred" / "predictions.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    columns = ["p_adipose", "p_stroma", "p_lymphocytes", "p_tumour"]
    assert reader.fieldnames == ["image", *columns]
    assert len(rows) == 192
    probs = np.array([[float(r[c]) for c in columns] for r in rows])
    assert probs.shape == (192, 4)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)


@pytest.mark.parametrize("config", ["train", "inference"])
def test_default_dataset_dir_generates_data(config, tmp_path, monkeypatch):
    """With no --dataset_dir, the config generates (and caches) the default synthetic data set."""
    from monai.bundle import ConfigParser

    monkeypatch.setenv("MONAI_EXT_CACHE", str(tmp_path))
    parser = ConfigParser()
    parser.read_config(configs(NAME, config)[0])
    dataset_dir = parser.get_parsed_content("dataset_dir")
    assert dataset_dir.startswith(str(tmp_path))
    assert (Path(dataset_dir) / "datalist.json").is_file()


def test_label_remap_and_finetune_overrides(data, tmp_path):
    """``label_remap_from/to`` remaps the datalist's classes; ``finetune_ckpt`` loads weights first."""
    import torch
    from ignite.engine import Events

    wf = workflow(
        NAME,
        ["train"],
        bundle_root=str(tmp_path),
        dataset_dir=data,
        label_remap_from=[0, 1, 2, 3],
        label_remap_to=[3, 2, 1, 0],
    )
    datalist = wf.parser.get_parsed_content("train#datalist")
    item = wf.parser.get_parsed_content("train#preprocessing")(datalist[0])
    assert item["label"].dtype == torch.long and int(item["label"]) == 3 - int(datalist[0]["label"])

    torch.manual_seed(1)
    source = wf.parser.get_parsed_content("network_def")
    ckpt = tmp_path / "pretrained.pt"
    torch.save({"model": source.state_dict()}, ckpt)
    wf = workflow(NAME, ["train"], bundle_root=str(tmp_path), dataset_dir=data, finetune_ckpt=str(ckpt))
    trainer = wf.parser.get_parsed_content("train#trainer")
    loader = wf.parser.get_parsed_content("train#finetune_loader")
    assert trainer.has_event_handler(loader, Events.STARTED)
    loader(trainer)  # what the trainer runs when it starts
    network = wf.parser.get_parsed_content("network")
    for name, value in source.state_dict().items():
        torch.testing.assert_close(network.state_dict()[name].cpu(), value, msg=name)
