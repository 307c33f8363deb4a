"""benchmarks/multimodal_missing.py on a tiny schedule: the JSON lines, the summary and the --out file."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "multimodal_missing.py"
SETTINGS = ["all", "missing_t1", "missing_t1c", "missing_t2", "missing_flair"]


def _load_script():
    spec = importlib.util.spec_from_file_location("multimodal_missing_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load_script()


def test_tiny_run_writes_every_setting_and_the_claims(bench, tmp_path, capsys):
    out = tmp_path / "res" / "result.json"
    argv = ["--size", "32", "32", "32", "--cases", "5", "--epochs", "1", "--channels", "4", "8"]
    argv += ["--data-root", str(tmp_path / "data"), "--device", "cpu", "--seed", "3", "--out", str(out)]
    result = bench.main(argv)

    lines = result["lines"]
    assert [(d["model"], d["setting"]) for d in lines] == [
        (m, s) for m in ("fusion", "stacking") for s in SETTINGS
    ]
    for d in lines:
        assert d["benchmark"] == "multimodal_missing" and d["device"] == "cpu" and d["seed"] == 3
        assert d["size"] == [32, 32, 32] and d["epochs"] == 1
        assert d["cases_train"] == 3 and d["cases_heldout"] == 2
        assert d["missing"] == ([] if d["setting"] == "all" else [d["setting"].split("_", 1)[1]])
        assert 0.0 <= d["dice_wt"] <= 1.0
        for k in ("dice_tc", "dice_et"):
            assert math.isnan(d[k]) or 0.0 <= d[k] <= 1.0
        assert d["params"] > 0 and d["train_s"] >= 0 and math.isfinite(d["loss_last_epoch"])
    assert {d["network"] for d in lines} == {
        "monai_ext.networks.segmentation.MultiEncoderFusionUNet",
        "monai.networks.nets.unet.UNet",
    }

    s = result["summary"]
    assert s["summary"] is True
    assert set(s["fusion_drop_when_missing"]) == set(SETTINGS[1:])
    assert set(s["fusion_minus_stacking_when_missing"]) == set(SETTINGS[1:])
    wt = {(d["model"], d["setting"]): d["dice_wt"] for d in lines}
    assert s["fusion_worst_drop"] == pytest.approx(
        max(wt["fusion", "all"] - wt["fusion", x] for x in SETTINGS[1:]), abs=1e-4
    )
    assert s["claim_fusion_within_0_05_of_all_when_one_missing"] is (s["fusion_worst_drop"] <= 0.05)
    assert s["claim_fusion_beats_stacking_by_0_10_when_one_missing"] is (
        s["fusion_min_margin_over_stacking"] >= 0.10
    )
    assert s["date"] and s["runtime_s"] > 0 and "--epochs 1" in s["command"]

    # stdout: one JSON line per model x setting, then the summary
    printed = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert len(printed) == len(lines) + 1 and printed[-1]["summary"] is True
    # --out: the same, written atomically (no temporary file left behind)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert [p.name for p in out.parent.iterdir()] == ["result.json"]


def test_summary_claims_follow_the_measured_numbers(bench):
    def line(model, setting, wt):
        return {"model": model, "setting": setting, "dice_wt": wt}

    lines = [line("fusion", "all", 0.9)] + [line("fusion", s, 0.87) for s in SETTINGS[1:]]
    lines += [line("stacking", "all", 0.9)] + [line("stacking", s, 0.7) for s in SETTINGS[1:]]
    s = bench.summarise(lines)
    assert s["claim_fusion_within_0_05_of_all_when_one_missing"] is True
    assert s["claim_fusion_beats_stacking_by_0_10_when_one_missing"] is True
    lines[2] = line("fusion", "missing_t1c", 0.8)  # drop 0.10, margin 0.10 still
    s = bench.summarise(lines)
    assert s["fusion_worst_drop"] == pytest.approx(0.1)
    assert s["claim_fusion_within_0_05_of_all_when_one_missing"] is False
    lines[-1] = line("stacking", "missing_flair", 0.8)  # margin 0.07 there
    assert bench.summarise(lines)["claim_fusion_beats_stacking_by_0_10_when_one_missing"] is False


def test_bad_size_is_rejected(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--size", "30", "32", "32", "--epochs", "1"])
    assert "--size [30, 32, 32]" in capsys.readouterr().err
