"""multimodal_outcome bundle: metadata, the two-input network, tabular encoding, bad input, a CPU smoke
schedule whose Cox loss falls and whose held-out C-index is reported next to the oracle, inference CSV,
attribution maps (one switch) and the optional registration to a reference CT."""

from __future__ import annotations

import csv
import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_helpers import BUNDLES, SCHEMAS, configs, evaluate_metrics, record_losses, workflow
from monai.bundle import ConfigParser, verify_metadata
from PIL import Image

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
    """The clinical row goes through the library transforms named in train.json (and inference.json)."""
    parser = _parser("train")
    encode = parser.get_parsed_content("tabular_encoder")
    row = {"age": 75, "sex": "M", "stage": "", "albumin_g_l": None, "ldh_u_l": "220", "crp_mg_l": 10.0}
    x = encode(row)["tabular"]
    assert x.dtype == np.float32 and x.shape == (6,)
    np.testing.assert_allclose(x[[0, 1, 4]], [1.0, 1.0, (math.log(220) - 5.4) / 0.35], rtol=1e-5)
    assert np.isnan(x[2]) and np.isnan(x[3]) and np.isfinite(x[5])
    with pytest.raises(ValueError, match="'sex': value 'X'"):
        encode({**row, "sex": "X"})
    with pytest.raises(ValueError, match="'ldh_u_l'.*positive"):
        encode({**row, "ldh_u_l": 0})
    with pytest.raises(KeyError, match="'crp_mg_l'"):
        encode({k: v for k, v in row.items() if k != "crp_mg_l"})
    label = parser.get_parsed_content("survival_target")
    np.testing.assert_array_equal(label({"time_months": 3.5, "event": 1})["label"], [3.5, 1.0])
    with pytest.raises(ValueError, match="event"):
        label({"time_months": 3.5, "event": 2})
    # inference.json encodes exactly as train.json does
    infer = _parser("inference").get_parsed_content("tabular_encoder")
    np.testing.assert_array_equal(infer(row)["tabular"], x)
    for name in ("train", "inference"):
        text = open(configs(NAME, name)[0]).read()
        assert "encode_tabular" not in text and "prepare_item" not in text


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
    return evaluate_metrics(NAME, data, root, **SMOKE, **overrides)


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
    scores = _read_risk_scores(tmp_path / "pred" / "risk_scores.csv")
    patients = [r["patient_id"] for r in csv.DictReader(open(f"{data}/clinical.csv"))]
    assert list(scores) == patients
    risks = np.array(list(scores.values()))
    assert np.isfinite(risks).all() and risks.std() > 0


def _read_risk_scores(path) -> dict[str, float]:
    """``patient_id -> log_risk`` of an inference ``risk_scores.csv``, in file order; checks the header."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["patient_id", "log_risk"]
    assert all(len(r) == 2 and None not in r for r in rows), rows  # no row with extra or missing cells
    scores = {r["patient_id"]: float(r["log_risk"]) for r in rows}
    assert len(scores) == len(rows)
    return scores


def rigid_transform(degrees: float = 8.0, shift=(3.0, -4.0, 3.4641016)):
    """An ITK rigid transform (rotation about an oblique axis through the world origin, then ``shift`` mm)."""
    import itk

    axis = np.array([1.0, 2.0, 3.0]) / math.sqrt(14.0)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    th = math.radians(degrees)
    tx = itk.AffineTransform[itk.D, 3].New()
    tx.SetMatrix(itk.matrix_from_array(np.eye(3) + math.sin(th) * k + (1 - math.cos(th)) * k @ k))
    tx.SetTranslation([float(v) for v in shift])
    return tx


def _small_weights(root) -> torch.nn.Module:
    """Randomly initialised SMALL network saved as ``root/models/model.pt``."""
    torch.manual_seed(0)
    net = _parser("inference", **SMALL).get_parsed_content("network_def")
    (root / "models").mkdir(parents=True, exist_ok=True)
    torch.save({"model": net.state_dict()}, root / "models" / "model.pt")
    return net.eval()


def test_inference_writes_attribution_maps_with_one_switch(data, tmp_path):
    """write_attribution: per case a NIfTI map on the input's grid, a PNG overlay and a per-feature CSV."""
    net = _small_weights(tmp_path)
    rows = list(csv.DictReader(open(f"{data}/clinical.csv")))[:3]
    rows[1]["albumin_g_l"] = ""  # a missing value: empty encoded value, still an attribution
    # case 0 stored left-anterior (LAS) and cropped: the map must come back onto this grid
    src = nib.load(f"{data}/{rows[0]['image']}")
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = src.shape[0] - 3
    arr = np.asarray(src.dataobj)[1:-1, :, 1:-1][::-1].copy()
    shifted = src.affine.copy()
    shifted[:3, 3] = src.affine[:3, :3] @ [1, 0, 1] + src.affine[:3, 3]
    nib.save(nib.Nifti1Image(arr, shifted @ flip), str(tmp_path / "las.nii.gz"))
    rows[0]["image"] = str(tmp_path / "las.nii.gz")
    with open(tmp_path / "clinical.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    common = dict(bundle_root=str(tmp_path), dataset_dir=data, clinical_csv=str(tmp_path / "clinical.csv"))

    wf = workflow(NAME, ["inference"], "infer", output_dir=str(tmp_path / "off"), **common, **SMALL)
    wf.run()
    wf.finalize()
    assert (tmp_path / "off" / "risk_scores.csv").is_file() and not (
        tmp_path / "off" / "attribution"
    ).exists()

    out = tmp_path / "pred"
    wf = workflow(
        NAME, ["inference"], "infer", output_dir=str(out), write_attribution=True, **common, **SMALL
    )
    wf.run()
    wf.finalize()
    risks = _read_risk_scores(out / "risk_scores.csv")
    assert risks == _read_risk_scores(tmp_path / "off" / "risk_scores.csv")
    ids = [r["patient_id"] for r in rows]
    expected = {
        f"{p}{s}"
        for p in ids
        for s in ("_attribution.nii.gz", "_attribution.png", "_tabular_attribution.csv")
    }
    assert {p.name for p in (out / "attribution").iterdir()} == expected

    mask = nib.load(str(out / "attribution" / f"{ids[0]}_attribution.nii.gz"))
    las = nib.load(str(tmp_path / "las.nii.gz"))
    assert mask.shape == las.shape == (30, 32, 14)
    np.testing.assert_allclose(mask.affine, las.affine, atol=1e-4)
    values = mask.get_fdata()
    assert np.isfinite(values).all() and values.min() >= 0 and values.max() > 0.5
    png = np.asarray(Image.open(out / "attribution" / f"{ids[1]}_attribution.png"))
    assert png.shape == (32, 32, 3) and png.dtype == np.uint8

    # tabular CSV: one row per clinical column; integrated gradients sum to f(case) - f(reference row)
    dataset = _parser(
        "inference", dataset_dir=data, clinical_csv=str(tmp_path / "clinical.csv"), **SMALL
    ).get_parsed_content("dataset")
    for i, pid in enumerate(ids):
        table = list(csv.DictReader(open(out / "attribution" / f"{pid}_tabular_attribution.csv")))
        assert [r["feature"] for r in table] == _parser("train")["tabular_columns"]
        assert (table[3]["encoded_value"] == "") == (i == 1)
        attr = np.array([float(r["attribution"]) for r in table])
        item = dataset[i]
        image, tab = item["image"][None].as_tensor(), torch.as_tensor(item["tabular"])[None]
        with torch.no_grad():
            risk = float(net(image, tabular=tab))
            delta = risk - float(net(image, tabular=torch.zeros_like(tab)))
        assert np.isfinite(attr).all() and attr.sum() == pytest.approx(delta, abs=0.02 * abs(delta) + 2e-3)
        assert risks[pid] == pytest.approx(risk, abs=1e-4)


@pytest.mark.slow
def test_registration_switch_aligns_ct_to_the_saved_reference(data, tmp_path):
    """register: a CT moved by a known rigid transform is brought back onto the reference (train saves it)."""
    import itk
    from monai.transforms import LoadImage

    from monai_ext.registration import resample_to_reference
    from monai_ext.registration.cli import write_nifti_atomic

    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(1)
    row = list(csv.DictReader(open(f"{data}/clinical.csv")))[0]
    reference = f"{data}/{row['image']}"
    load = LoadImage(image_only=True, ensure_channel_first=True)
    ct = load(reference)
    s = rigid_transform()  # 8 degrees, 6 mm about the volume centre (the world origin)
    write_nifti_atomic(resample_to_reference(ct, ct, s, "linear", -1024.0), str(tmp_path / "moved.nii.gz"))
    moved = load(str(tmp_path / "moved.nii.gz"))
    back = resample_to_reference(moved, ct, s.GetInverseTransform(), "linear", -1024.0)
    write_nifti_atomic(back, str(tmp_path / "ideal.nii.gz"))  # the best any registration can do

    def preprocess(path, **overrides):
        parser = _parser("train", dataset_dir=data, bundle_root=str(tmp_path), **SMALL, **overrides)
        compose = parser.get_parsed_content("validate#preprocessing")
        return parser, compose, compose(dict(row, image=str(path)))["image"]

    _, _, truth = preprocess(reference)
    _, plain, off = preprocess(tmp_path / "moved.nii.gz")
    _, _, ideal = preprocess(tmp_path / "ideal.nii.gz")
    parser, registered, on = preprocess(
        tmp_path / "moved.nii.gz", register=True, register_reference=reference
    )
    names = [type(t).__name__ for t in registered.transforms]
    assert [n for n in names if n != "RegisterToImaged"] == [type(t).__name__ for t in plain.transforms]
    assert names.index("RegisterToImaged") == names.index("EnsureChannelFirstd") + 1

    def corr(x):
        return float(np.corrcoef(np.asarray(x).ravel(), np.asarray(truth).ravel())[0, 1])

    assert on.shape == truth.shape == (1, 32, 32, 16)
    assert corr(on) > corr(off) + 0.05 and corr(on) > corr(ideal) - 0.02, (corr(off), corr(on), corr(ideal))
    # switch off: the preprocessing has no registration step and leaves the moved CT where it is
    assert corr(off) < corr(ideal) - 0.05
    # train's initialize saves the reference next to the checkpoint; evaluate/inference read it there
    parser.get_parsed_content("initialize")
    saved = nib.load(str(tmp_path / "models" / "registration_reference.nii.gz"))
    np.testing.assert_allclose(saved.affine, nib.load(reference).affine, atol=1e-4)
    infer = _parser("inference", bundle_root=str(tmp_path), dataset_dir=data, register=True)
    assert infer.get_parsed_content("registration").reference.shape == ct.shape
