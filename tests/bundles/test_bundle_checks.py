"""A typo in a bundle override is a clear error before anything runs, in-process and from the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from bundle_helpers import BUNDLES, configs, workflow

from monai_ext.bundle.checks import check_override_keys, unknown_top_level_keys

NAME = "he_tissue_classification"


def test_unknown_top_level_keys_suggests_close_matches(tmp_path):
    (tmp_path / "train.json").write_text(json.dumps({"epochs": 2, "dataset_dir": "x", "learning_rate": 1}))
    (tmp_path / "evaluate.json").write_text(json.dumps({"output_dir": "y"}))
    config = {"epochs": 2, "epoch": 5, "dataset_dir": "x", "datset_dir": "z", "output_dir": "y", "_meta_": {}}
    unknown = unknown_top_level_keys(config, tmp_path)
    assert sorted(unknown) == ["datset_dir", "epoch"]
    assert unknown["epoch"][0] == "epochs" and unknown["datset_dir"][0] == "dataset_dir"
    assert check_override_keys() is False  # outside a ConfigWorkflow: nothing to check


def test_workflow_with_typo_override_fails_before_running(tmp_path):
    # MONAI wraps what a config expression raises in a RuntimeError; the KeyError is its cause
    with pytest.raises((KeyError, RuntimeError)) as info:
        workflow(NAME, ["train", "evaluate"], "eval", bundle_root=str(tmp_path), epoch=5)
    text = f"{info.value} {info.value.__cause__}"
    assert "--epoch (did you mean --epochs" in text, text


def test_monai_bundle_run_with_typo_names_the_key(tmp_path):
    files = "[" + ",".join(repr(f) for f in configs(NAME, "inference")) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files]
    cmd += ["--bundle_root", str(tmp_path), "--dataset_dir", str(tmp_path / "missing"), "--devcie", "cpu"]
    cmd += ["--meta_file", str(BUNDLES / NAME / "configs" / "metadata.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "--devcie (did you mean --device" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "eval").exists()  # nothing written before the check
