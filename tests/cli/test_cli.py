"""The monai-ext console script: help on every subcommand, one-line errors, info, synth."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from monai_ext.cli import build_parser, main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "monai_ext.cli", *args], capture_output=True, text=True, timeout=300
    )


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_help_on_every_subcommand(capsys):
    names = _subcommands()
    assert {"synth", "info"} <= set(names)
    for name in names:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        assert "usage: monai-ext" in capsys.readouterr().out


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["core"]["monai"] and data["core"]["torch"]
    assert "cpu" in data["devices"]
    assert set(data["optional"]) >= {"tifffile", "highdicom", "monailabel"}


@pytest.mark.parametrize(
    "args, needle",
    [
        (["synth", "no_such_kind", "{tmp}/out"], "unknown KIND 'no_such_kind'"),
        (["synth", "he_patches", "{tmp}/out", "--n", "0"], "--n must be a positive integer"),
        (["synth", "he_patches", "{tmp}/out", "--n", "many"], "--n must be a positive integer"),
        (["synth", "he_patches", "{tmp}/out", "--seed", "-3"], "--seed must be a non-negative integer"),
        (["synth", "he_patches", "/proc/monai_ext_not_writable"], "not writable"),
    ],
)
def test_bad_arguments_give_one_line_error(tmp_path, args, needle):
    proc = _run(*[a.format(tmp=tmp_path) for a in args])
    assert proc.returncode != 0
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_synth_refuses_non_empty_out_dir(tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    proc = _run("synth", "he_patches", str(tmp_path), "--n", "4")
    assert proc.returncode == 2
    assert "exists and is not empty" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
