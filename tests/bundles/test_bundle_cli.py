"""``monai-ext bundle``: list, path, verify, run (command line), and bundles shipped in the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest
from bundle_helpers import BUNDLES, REPO

from monai_ext.bundle import SCHEMAS, bundle_names, bundle_path, config_files, verify_bundle
from monai_ext.bundle.cli import run_command
from monai_ext.cli import main

ALL = sorted(p.name for p in BUNDLES.iterdir() if (p / "configs" / "metadata.json").is_file())


def test_every_repository_bundle_is_shipped():
    assert len(SCHEMAS) == 2
    assert bundle_names() == ALL
    for name in ALL:
        assert bundle_path(name) == (BUNDLES / name).resolve()


@pytest.mark.parametrize("name", ALL)
def test_verify(name, capsys):
    checks = verify_bundle(name)
    assert {
        "layout",
        "metadata:meta_schema_20220324",
        "metadata:meta_schema_20240725",
        "configs:train",
    } <= set(checks)
    assert any(c.startswith("net_in_out") for c in checks)
    assert main(["bundle", "verify", name]) == 0
    assert "ok" in capsys.readouterr().out


def test_list(capsys):
    assert main(["bundle", "list"]) == 0
    out = capsys.readouterr().out
    for name in ALL:
        assert name in out


def test_unknown_bundle_and_mode():
    with pytest.raises(ValueError, match="unknown bundle NAME 'nope'"):
        bundle_path("nope")
    with pytest.raises(ValueError, match="unknown bundle mode 'fit'"):
        config_files(ALL[0], "fit")
    proc = subprocess.run(
        [sys.executable, "-m", "monai_ext.cli", "bundle", "path", "nope"], capture_output=True, text=True
    )
    assert (
        proc.returncode == 2
        and "unknown bundle NAME 'nope'" in proc.stderr
        and "Traceback" not in proc.stderr
    )


def test_run_command_layers_configs(tmp_path):
    cmd = run_command("he_tissue_classification", "evaluate", str(tmp_path), ["--epochs", "1"])
    joined = " ".join(cmd)
    assert "train.json" in joined and "evaluate.json" in joined
    assert cmd[cmd.index("--bundle_root") + 1] == str(tmp_path)
    assert cmd[-2:] == ["--epochs", "1"]


@pytest.mark.slow
def test_wheel_ships_bundles(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(REPO),
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("monai_ext-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ALL:
        for rel in ("configs/metadata.json", "configs/train.json", "configs/inference.json", "LICENSE"):
            assert f"monai_ext/bundle/zoo/{name}/{rel}" in names
    assert "monai_ext/bundle/schemas/meta_schema_20220324.json" in names


def test_verify_own_bundle_folder_catches_wrong_input_format(tmp_path):
    """A user's copy of a bundle verifies by path; a network_data_format the network rejects fails."""
    import json
    import shutil

    folder = tmp_path / "my_outcome"
    shutil.copytree(BUNDLES / "multimodal_outcome", folder)
    assert "net_in_out:multi_input" in verify_bundle(str(folder))
    meta_file = folder / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["network_data_format"]["inputs"]["tabular"]["num_channels"] = 9
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="my_outcome.*rejects the declared inputs"):
        verify_bundle(str(folder))
