"""multimodal_outcome bundle: metadata, the two-input network, tabular encoding, bad input, a CPU smoke
schedule whose Cox loss falls and whose held-out C-index is reported next to the oracle, inference CSV."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from bundle_helpers import BUNDLES, SCHEMAS, configs, record_losses, workflow
from monai.bundle import ConfigParser, verify_metadata

from monai_ext.bundle import verify_bundle
from monai_ext.data.synthetic import generate

NAME = "multimodal_outcome"
META = str(BUNDLES / NAME / "configs" / "metadata.json")
N = 150
#: tiny CPU schedule: 32x32x16 volumes at 10 mm, a small encoder
SMALL = {"spacing": [10.0, 10.0, 10.0], "spatial_size": [32, 32, 16], "net_channels": [8, 16, 32]}
SMOKE = {**SMALL, "batch_size": 24, "learning_rate": 0.003}
EPOCHS = 12


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("outcome") / "data"
    return str(generate("outcome", out, n=N, seed=1, shape=(32, 32, 16), spacing=(10.0, 10.0, 10.0)))


def _parser(*names: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(configs(NAME, *names))
    parser.update(overrides)
    return parser


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda p: p.stem)
def test_metadata_validates_offline(schema):
    verify_metadata(meta_file=META, filepath=str(schema))


def test_metadata_declares_both_inputs_and_skips_single_input_check():
    meta = json.load(open(META))
    fmt = meta["network_data_format"]
    assert set(fmt["inputs"]) == {"image", "tabular"} and set(fmt["outputs"]) == {"pred"}
    assert meta["monai_ext_multi_input"] is True
    parser = _parser("train")
    assert len(fmt["inputs"]["tabular"]["channel_def"]) == len(parser["tabular_columns"])
    checks = verify_bundle(NAME)
    assert "configs:inference" in checks and "net_in_out" not in checks


def test_network_takes_image_and_tabular_with_missing_values():
    meta = json.load(open(META))["network_data_format"]
    net = _parser("train", device="$torch.device('cpu')", **SMALL).get_parsed_content("network_def")
    image = torch.rand(3, 1, 32, 32, 16)
    tab = torch.randn(3, meta["inputs"]["tabular"]["num_channels"])
    tab[0, 3] = float("nan")
    out = net.eval()(image, tabular=tab)
    assert out.shape == (3, meta["outputs"]["pred"]["num_channels"]) and bool(torch.isfinite(out).all())
    with pytest.raises(ValueError, match="tabular"):
        net(image)


def test_tabular_encoding_and_clear_errors():
    parser = _parser("train")
    encode = parser.get_parsed_content("encode_tabular")
    row = {"age": 75, "sex": "M", "stage": "", "albumin_g_l": None, "ldh_u_l": "220", "crp_mg_l": 10.0}
    x = encode(row)
    assert x.dtype == np.float32 and x.shape == (6,)
    np.testing.assert_allclose(x[[0, 1, 4]], [1.0, 1.0, (math.log(220) - 5.4) / 0.35], rtol=1e-5)
    assert np.isnan(x[2]) and np.isnan(x[3]) and np.isfinite(x[5])
    with pytest.raises(ValueError, match="'sex': value 'X'"):
        encode({**row, "sex": "X"})
    with pytest.raises(ValueError, match="'ldh_u_l'.*positive"):
        encode({**row, "ldh_u_l": 0})
    with pytest.raises(KeyError, match="'crp_mg_l'"):
        encode({k: v for k, v in row.items() if k != "crp_mg_l"})
    label = parser.get_parsed_content("encode_label")
    np.testing.assert_array_equal(label({"time_months": 3.5, "event": 1}), [3.5, 1.0])
    with pytest.raises(ValueError, match="event"):
        label({"time_months": 3.5, "event": 2})


def test_wrong_dataset_dir_is_named_before_training(tmp_path):
    missing = tmp_path / "no_such_data"
    for names, mode, expected in (
        (["train"], "train", "datalist.json"),
        (["inference"], "infer", "clinical.csv"),
    ):
        with pytest.raises(RuntimeError) as err:
            workflow(NAME, names, mode, bundle_root=str(tmp_path), dataset_dir=str(missing))
        cause = err.value.__cause__
        assert isinstance(cause, FileNotFoundError), repr(cause)
        assert str(missing) in str(cause) and expected in str(cause) and "--dataset_dir" in str(cause)
    assert not (tmp_path / "models" / "model.pt").exists()


def test_datalist_naming_missing_image_is_rejected(data, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    datalist = json.load(open(f"{data}/datalist.json"))
    for entries in datalist.values():
        for d in entries:
            d["image"] = f"{data}/{d['image']}"  # absolute paths stay as they are
    datalist["training"][0]["image"] = "images/nope.nii.gz"
    (bad / "datalist.json").write_text(json.dumps(datalist))
    with pytest.raises(RuntimeError) as err:
        workflow(NAME, ["train"], bundle_root=str(tmp_path), dataset_dir=str(bad), **SMALL).run()
    assert "nope.nii.gz" in str(err.value.__cause__) and "training" in str(err.value.__cause__)


def _evaluate(data, root, **overrides) -> dict[str, float]:
    wf = workflow(
        NAME,
        ["train", "evaluate"],
        "eval",
        bundle_root=str(root),
        dataset_dir=data,
        output_dir=str(root / "eval"),
        **SMOKE,
        **overrides,
    )
    wf.run()
    wf.finalize()
    return {k: float(v) for k, v in csv.reader(open(root / "eval" / "metrics.csv"))}


@pytest.mark.slow
def test_train_smoke_learns_evaluates_and_infers(data, tmp_path):
    oracle = json.load(open(f"{data}/summary.json"))["oracle_c_index"]
    untrained = _evaluate(data, tmp_path / "untrained", load_checkpoint=False)
    assert untrained["oracle_c_index"] == pytest.approx(oracle)

    wf = workflow(
        NAME, ["train"], bundle_root=str(tmp_path), dataset_dir=data, epochs=EPOCHS, val_interval=4, **SMOKE
    )
    losses = record_losses(wf.parser.get_parsed_content("train#trainer"))
    wf.run()
    wf.finalize()
    assert (tmp_path / "models" / "model.pt").is_file()
    n = len(losses)
    n_train = len(json.load(open(f"{data}/datalist.json"))["training"])
    assert n == EPOCHS * (n_train // SMOKE["batch_size"]) == 48  # drop_last: no tiny Cox batches
    # the Cox partial likelihood of a batch of 24 stays near log(risk-set size) (~2.5 at random):
    # over 48 iterations its mean falls by several percent, then the held-out C-index shows learning
    assert np.mean(losses[-n // 4 :]) < 0.96 * np.mean(losses[: n // 4]), losses

    trained = _evaluate(data, tmp_path)
    assert 0.0 <= trained["c_index"] <= 1.0 and trained["oracle_c_index"] == pytest.approx(oracle)
    assert trained["c_index"] >= 0.55 and trained["c_index"] > untrained["c_index"], (trained, untrained)

    wf = workflow(
        NAME,
        ["inference"],
        "infer",
        bundle_root=str(tmp_path),
        dataset_dir=data,
        output_dir=str(tmp_path / "pred"),
        **SMALL,
    )
    wf.run()
    wf.finalize()
    rows = list(csv.reader(open(tmp_path / "pred" / "risk_scores.csv")))
    patients = [r["patient_id"] for r in csv.DictReader(open(f"{data}/clinical.csv"))]
    assert [r[0] for r in rows] == patients
    risks = np.array([float(r[1]) for r in rows])
    assert all(len(r) == 2 for r in rows) and np.isfinite(risks).all() and risks.std() > 0
