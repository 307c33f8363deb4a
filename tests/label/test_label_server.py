"""End to end: a real ``monailabel start_server`` with our app, synthetic CT and H&E studies, on loopback.

Needs the label environment (``bash scripts/label_env.sh``, then ``.venv-label/bin/python -m pytest
tests/label``); skipped elsewhere.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "monailabel",
    reason="monailabel is not installed: create the label venv with `bash scripts/label_env.sh` and run "
    "`.venv-label/bin/python -m pytest tests/label`",
)

pytestmark = pytest.mark.slow

CT = "ct_organ_segmentation"
HE = "he_tissue_classification"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(
    url: str, method: str = "GET", data: bytes | None = None, headers: dict | None = None, timeout=300
):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def _multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for k, v in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    for k, (name, content) in files.items():
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        out.write(content + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from monai_ext.bundle import bundle_names
    from monai_ext.data.synthetic import generate
    from monai_ext.label.bundles import write_app

    if CT not in bundle_names():
        pytest.skip(f"bundle {CT} is not in this checkout")
    root = tmp_path_factory.mktemp("label")
    ct = generate("ct_abdomen", root / "ct", n=3, seed=0, dicom=False)
    he = generate("he_patches", root / "he", n=4, seed=0)
    studies = root / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    for i in range(3):
        shutil.copy(ct / "imagesTr" / f"case_{i:03d}.nii.gz", studies / f"ct_{i:03d}.nii.gz")
    for i in range(2):  # two labelled cases to train on; ct_002 is left for the client to label
        shutil.copy(
            ct / "labelsTr" / f"case_{i:03d}.nii.gz", studies / "labels" / "final" / f"ct_{i:03d}.nii.gz"
        )
    shutil.copy(sorted((he / "images").glob("*.png"))[0], studies / "he_000.png")
    (studies / "broken.nii.gz").write_bytes(b"this is not an image")

    app = write_app(root / "app", models=[CT, HE], init_weights=True)
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), CUDA_VISIBLE_DEVICES="")
    # the `monailabel` script runs the `python` it finds first on PATH: make it this environment's
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    log = open(root / "server.log", "w")
    exe = Path(sys.executable).with_name("monailabel")
    cmd = [str(exe), "start_server", "--app", str(app), "--studies", str(studies), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--conf", "models", f"{CT},{HE}"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"server exited with {proc.returncode}:\n{(root / 'server.log').read_text()[-4000:]}"
                )
            try:
                status, body, _ = _request(f"{base}/info/", timeout=5)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready in 240 s:\n{(root / 'server.log').read_text()[-4000:]}")
            time.sleep(2)
        yield {"base": base, "app": app, "studies": studies, "ct": ct, "log": root / "server.log"}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def test_info_lists_models_with_labels(server):
    status, body, _ = _request(f"{server['base']}/info/")
    assert status == 200
    info = json.loads(body)
    assert info["models"][CT]["type"] == "segmentation"
    assert info["models"][CT]["labels"]["liver"] == 1 and "background" not in info["models"][CT]["labels"]
    assert info["models"][HE]["type"] == "classification"
    assert set(info["models"][HE]["labels"]) == {"adipose", "stroma", "lymphocytes", "tumour"}
    assert {CT, HE} <= set(info["trainers"])


def test_infer_segmentation_on_input_grid(server, tmp_path):
    import nibabel as nib

    params = json.dumps({"device": "cpu"}).encode()
    body, headers = _multipart({"params": params.decode()}, {})
    status, data, _ = _request(
        f"{server['base']}/infer/{CT}?image=ct_002&output=image", "POST", body, headers
    )
    assert status == 200, data[:2000]
    out = tmp_path / "pred.nii.gz"
    out.write_bytes(data)
    pred = nib.load(out)
    ref = nib.load(server["studies"] / "ct_002.nii.gz")
    assert pred.shape == ref.shape
    np.testing.assert_allclose(pred.affine, ref.affine, atol=1e-4)
    values = np.unique(np.asarray(pred.dataobj))
    assert values.min() >= 0 and values.max() <= 5


def test_infer_classification(server):
    body, headers = _multipart({"params": json.dumps({"device": "cpu"})}, {})
    status, data, _ = _request(f"{server['base']}/infer/{HE}?image=he_000&output=json", "POST", body, headers)
    assert status == 200, data[:2000]
    prediction = json.loads(data)["prediction"]
    assert [p["label"] for p in prediction] == ["adipose", "stroma", "lymphocytes", "tumour"]
    assert sum(p["score"] for p in prediction) == pytest.approx(1.0, abs=1e-4)  # softmax of the bundle


def test_bad_requests_keep_server_serving(server):
    body, headers = _multipart({"params": "{}"}, {})
    status, data, _ = _request(f"{server['base']}/infer/no_such_model?image=ct_002", "POST", body, headers)
    assert status == 404 and b"unknown model 'no_such_model'" in data and CT.encode() in data
    body, headers = _multipart({"params": json.dumps({"device": "cpu"})}, {})
    status, data, _ = _request(
        f"{server['base']}/infer/{CT}?image=broken&output=image", "POST", body, headers
    )
    assert status == 422 and b"broken.nii.gz" in data, data[:2000]
    assert _request(f"{server['base']}/info/")[0] == 200


def test_submit_label_then_train_one_epoch(server):
    base = server["base"]
    label = (server["ct"] / "labelsTr" / "case_002.nii.gz").read_bytes()
    body, headers = _multipart(
        {"params": json.dumps({"label_info": []})}, {"label": ("ct_002.nii.gz", label)}
    )
    status, data, _ = _request(f"{base}/datastore/label?image=ct_002&tag=final", "PUT", body, headers)
    assert status == 200, data[:2000]
    status, data, _ = _request(f"{base}/datastore/?output=all")
    assert status == 200
    assert "final" in json.loads(data)["objects"]["ct_002"]["labels"]

    ckpt = server["app"] / "model" / CT / "models" / "model.pt"
    before = ckpt.stat().st_mtime_ns
    request = {"max_epochs": 1, "val_split": 0.34, "device": "cpu", "multi_gpu": False, "pretrained": True}
    status, data, _ = _request(
        f"{base}/train/{CT}?run_sync=true",
        "POST",
        json.dumps(request).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 200, data[:2000]
    assert ckpt.stat().st_mtime_ns > before, server["log"].read_text()[-4000:]
    assert _request(f"{base}/info/")[0] == 200
