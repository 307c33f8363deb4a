"""monai_ext.label without a server: which bundles are served, their labels, the app folder, the CLI.

Runs in the main environment and in the label environment (scripts/label_env.sh).
"""

from __future__ import annotations

import json
import shutil

import pytest

from monai_ext.bundle import bundle_names, bundle_path
from monai_ext.cli import main
from monai_ext.label.bundles import bundle_kind, init_checkpoint, label_map, servable_bundles, write_app


def test_kinds_from_metadata():
    kinds = servable_bundles()
    assert kinds["he_tissue_classification"] == "classification"
    for name in ("ct_organ_segmentation", "mri_multimodal_segmentation"):
        if name in bundle_names():
            assert kinds[name] == "segmentation"
    assert set(kinds) <= set(bundle_names())


def test_labels_from_channel_def():
    assert label_map("he_tissue_classification") == {"adipose": 0, "stroma": 1, "lymphocytes": 2, "tumour": 3}
    if "ct_organ_segmentation" in bundle_names():
        labels = label_map("ct_organ_segmentation")
        assert "background" not in labels and labels["liver"] == 1 and labels["spine"] == 5


def test_not_a_bundle_and_unknown_task(tmp_path):
    with pytest.raises(ValueError, match="is not a bundle"):
        bundle_kind(tmp_path)
    bad = tmp_path / "b"
    shutil.copytree(bundle_path("he_tissue_classification") / "configs", bad / "configs")
    meta = json.loads((bad / "configs" / "metadata.json").read_text())
    meta["task"] = "registration"
    meta["network_data_format"]["outputs"]["pred"].update(type="image", format="displacement")
    (bad / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="cannot tell the task"):
        bundle_kind(bad)


def test_write_app_and_checkpoint(tmp_path):
    import torch

    app = write_app(tmp_path / "app", models=["he_tissue_classification"], init_weights=True)
    assert "MonaiExtLabelApp" in (app / "main.py").read_text()
    assert "tumour" in (app / "README.md").read_text()
    ckpt = app / "model" / "he_tissue_classification" / "models" / "model.pt"
    state = torch.load(ckpt, map_location="cpu")
    assert any(k.endswith("weight") for k in state)
    # deterministic given the seed
    assert torch.equal(
        next(iter(state.values())), next(iter(torch.load(init_checkpoint(ckpt.parents[1])).values()))
    )
    assert [p.name for p in (app / "model").iterdir()] == ["he_tissue_classification"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
    with pytest.raises(FileExistsError, match="OUT_DIR"):
        write_app(app)
    with pytest.raises(ValueError, match="unknown or unservable"):
        write_app(tmp_path / "app2", models=["nope"])
    assert not (tmp_path / "app2").exists()


def test_cli_label_app(tmp_path, capsys):
    assert main(["label", "app", str(tmp_path / "app"), "--models", "he_tissue_classification"]) == 0
    assert "monailabel start_server" in capsys.readouterr().out
    assert (tmp_path / "app" / "model" / "he_tissue_classification" / "configs" / "inference.json").is_file()
    assert main(["label", "app", str(tmp_path / "app")]) == 2
    assert "OUT_DIR" in capsys.readouterr().err
