"""MLflow tracking of the workflow factories: the local store of ``monai.bundle run --tracking mlflow``."""

from __future__ import annotations

import mlflow
import pytest
from _engine_helpers import build_tiny_seg
from monai.bundle import ConfigParser
from monai.bundle.utils import DEFAULT_MLFLOW_SETTINGS
from monai.utils import path_to_uri
from test_retinanet_workflow import samples, tiny_detector

from monai_ext.engines import build_detection_workflow, mlflow_tracking_uri_for


def test_default_store_is_monai_bundle_default(tmp_path):
    cfg = DEFAULT_MLFLOW_SETTINGS["configs"]
    parser = ConfigParser({"output_dir": str(tmp_path), "tracking_uri": cfg["tracking_uri"]})
    assert parser.get_parsed_content("tracking_uri") == mlflow_tracking_uri_for(tmp_path)
    assert mlflow_tracking_uri_for(tmp_path).startswith("sqlite:///")


def _only_run(out, experiment="monai_ext"):
    client = mlflow.MlflowClient(mlflow_tracking_uri_for(out))
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return client, exp, runs[0]


def test_one_epoch_run_logs_params_and_metrics_under_output_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "run"
    wf, *_ = build_tiny_seg(out, max_epochs=1, n=4, mlflow=True, run_name="seg", mlflow_params={"batch": 2})
    wf.run()
    client, exp, run = _only_run(out)
    # MONAI's layout: SQLite db in output_dir, artifacts in output_dir/mlruns; nothing in the cwd
    assert (out / "mlruns.db").is_file() and list(cwd.iterdir()) == []
    assert exp.artifact_location == path_to_uri(out / "mlruns")
    assert run.info.run_name == "seg" and run.info.status == "FINISHED"
    params = run.data.params
    assert params["max_epochs"] == "1" and params["epoch_length"] == "2"
    assert params["task"] == "segmentation" and params["batch"] == "2" and params["amp"] == "False"
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2  # one per iteration
    assert 0.0 <= run.data.metrics["val_dice"] <= 1.0


@pytest.mark.slow
def test_detection_run_logs_map_and_cpm(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _, det = tiny_detector(2)
    data = samples(2)
    wf = build_detection_workflow(det, [data], val_loader=[data], output_dir=tmp_path, mlflow=True)
    wf.run()
    _, _, run = _only_run(tmp_path)
    assert run.data.params["task"] == "detection" and run.data.params["key_metric"] == "val_map"
    assert {"train_loss", "val_map", "val_cpm"} <= set(run.data.metrics)
