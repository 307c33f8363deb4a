"""TabularEncoded and SurvivalTargetd: encoding of clinical rows, missing values, clear errors, collation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose

from monai_ext.transforms import SurvivalTargetd, TabularEncoded

COLUMNS = ["age", "sex", "stage", "ldh_u_l"]
SPEC = {
    "categories": {"sex": {"F": 0, "M": 1}, "stage": {"I": 1, "II": 2, "III": 3, "IV": 4}},
    "log_columns": ["ldh_u_l"],
    "center": {"age": 66.0, "sex": 0.5, "stage": 2.5, "ldh_u_l": 5.4},
    "scale": {"age": 9.0, "sex": 0.5, "ldh_u_l": 0.35},
}


def test_encodes_numbers_categories_logs_and_scales():
    enc = TabularEncoded(COLUMNS, **SPEC)
    out = enc({"age": "75", "sex": " M ", "stage": "IV", "ldh_u_l": 220, "image": "a.nii.gz", "split": "x"})
    x = out["tabular"]
    assert x.dtype == np.float32 and x.shape == (4,)
    np.testing.assert_allclose(x, [1.0, 1.0, 1.5, (math.log(220) - 5.4) / 0.35], rtol=1e-6)
    # raw columns are removed (mixed str/None cells do not collate); other keys stay
    assert sorted(out) == ["image", "split", "tabular"]
    kept = TabularEncoded(COLUMNS, delete_keys=False, output_key="clin", **SPEC)({**dict.fromkeys(COLUMNS)})
    assert set(COLUMNS) <= set(kept) and np.isnan(kept["clin"]).all()


@pytest.mark.parametrize("missing", [None, float("nan"), np.float32("nan"), "", "  ", "NA", "nan", "null"])
def test_missing_cells_become_nan(missing):
    x = TabularEncoded(COLUMNS, **SPEC)({"age": missing, "sex": missing, "stage": "I", "ldh_u_l": missing})
    assert np.isnan(x["tabular"][[0, 1, 3]]).all() and x["tabular"][2] == -1.5


def test_bad_cells_name_the_column_and_value():
    enc = TabularEncoded(COLUMNS, **SPEC)
    row = {"age": 70, "sex": "F", "stage": "II", "ldh_u_l": 200}
    with pytest.raises(ValueError, match=r"'sex': value 'X' is not one of \['F', 'M'\]"):
        enc({**row, "sex": "X"})
    with pytest.raises(ValueError, match="'ldh_u_l'.*positive"):
        enc({**row, "ldh_u_l": "0"})
    with pytest.raises(ValueError, match="'age': value 'old' is not a number"):
        enc({**row, "age": "old"})
    with pytest.raises(ValueError, match="'age'.*finite"):
        enc({**row, "age": float("inf")})
    with pytest.raises(KeyError, match="no clinical column 'stage'"):
        enc({k: v for k, v in row.items() if k != "stage"})
    # an absent column may count as missing
    lenient = TabularEncoded(COLUMNS, allow_missing_keys=True, **SPEC)
    assert np.isnan(lenient({k: v for k, v in row.items() if k != "stage"})["tabular"][2])


def test_constructor_rejects_inconsistent_specs():
    with pytest.raises(ValueError, match=r"`scale` names column\(s\) \['bmi'\]"):
        TabularEncoded(["age"], scale={"bmi": 2.0})
    with pytest.raises(ValueError, match="positive and finite"):
        TabularEncoded(["age"], scale={"age": 0.0})
    with pytest.raises(ValueError, match="both categorical and in `log_columns`"):
        TabularEncoded(["sex"], categories={"sex": {"F": 0}}, log_columns=["sex"])
    with pytest.raises(ValueError, match="twice"):
        TabularEncoded(["age", "age"])


def test_survival_target():
    target = SurvivalTargetd(["time_months", "event"])
    out = target({"time_months": "12.5", "event": "1", "image": "a"})
    assert out["label"].dtype == np.float32 and out["label"].tolist() == [12.5, 1.0]
    assert "time_months" not in out and "event" not in out
    assert target({"time_months": 0, "event": False})["label"].tolist() == [0.0, 0.0]
    for bad in ({"time_months": -1, "event": 1}, {"time_months": 3, "event": 2}):
        with pytest.raises(ValueError, match="'time_months' >= 0 and 'event' in"):
            target(bad)
    with pytest.raises(KeyError, match="no 'event' value"):
        target({"time_months": 3, "event": ""})
    with pytest.raises(KeyError, match="no 'time_months' value"):
        target({"image": "a"})
    # inference on unlabelled rows
    lenient = SurvivalTargetd(["time_months", "event"], allow_missing_keys=True)
    assert lenient({"image": "a"}) == {"image": "a"}
    with pytest.raises(KeyError, match="'event'"):
        lenient({"time_months": 3})  # half a target is an error, not a skip
    with pytest.raises(ValueError, match="time_key, event_key"):
        SurvivalTargetd(["time_months"])


def test_rows_with_missing_cells_collate_after_encoding():
    rows = [
        {"age": 70, "sex": "F", "stage": None, "ldh_u_l": "", "time_months": 5, "event": 1},
        {"age": "", "sex": "M", "stage": "III", "ldh_u_l": 300.0, "time_months": "8", "event": "0"},
    ]
    transform = Compose([TabularEncoded(COLUMNS, **SPEC), SurvivalTargetd(["time_months", "event"])])
    batch = next(iter(DataLoader(Dataset(rows, transform), batch_size=2)))
    assert sorted(batch) == ["label", "tabular"]
    assert batch["tabular"].shape == (2, 4) and batch["tabular"].dtype == torch.float32
    assert torch.isnan(batch["tabular"]).sum() == 3
    torch.testing.assert_close(batch["label"], torch.tensor([[5.0, 1.0], [8.0, 0.0]]))
