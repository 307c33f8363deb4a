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
MRI = "mri_multimodal_segmentation"
NUC = "he_nuclei_detection"
NOD = "ct_nodule_detection"
SEG = "he_tissue_segmentation"
MODELS = [CT, HE, MRI, NUC, NOD, SEG]


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
    from monai_ext.label.studies import input_sequences, stack_sequences

    missing = [m for m in MODELS if m not in bundle_names()]
    if missing:
        pytest.skip(f"bundles {missing} are not in this checkout")
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
    # one 4-channel NIfTI per MRI study, channels in the bundle's channel_def order
    mri = generate("mri_brain_multimodal", root / "mri", n=1, seed=0, shape=(48, 48, 32))
    order = input_sequences(MRI)
    stack_sequences(
        {q: mri / "case_000" / f"case_000_{q}.nii.gz" for q in order}, studies / "mri_000.nii.gz", order
    )
    lung = generate("ct_lung_nodules", root / "lung", n=1, seed=0)
    shutil.copy(lung / "images" / "case_000.nii.gz", studies / "lung_000.nii.gz")
    wsi = generate("wsi", root / "wsi", n=1, seed=0, size=2048)
    shutil.copy(wsi / "slides" / "slide_000.tif", studies / "slide_000.tif")

    app = write_app(root / "app", models=MODELS, init_weights=True)
    (app / "model" / "not_a_bundle").mkdir()  # a folder that is not a bundle: skipped, and said so
    (app / "model" / "not_a_bundle" / "notes.txt").write_text("not a bundle")
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), CUDA_VISIBLE_DEVICES="")
    # the `monailabel` script runs the `python` it finds first on PATH: make it this environment's
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    log = open(root / "server.log", "w")
    exe = Path(sys.executable).with_name("monailabel")
    cmd = [str(exe), "start_server", "--app", str(app), "--studies", str(studies), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--conf", "models", ",".join(MODELS)]
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
        yield {"base": base, "app": app, "studies": studies, "ct": ct, "he": he, "log": root / "server.log"}
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
    assert info["models"][MRI]["type"] == "segmentation"
    assert info["models"][MRI]["labels"] == {"necrotic_core": 1, "oedema": 2, "enhancing_tumour": 3}
    assert "t1, t1c, t2, flair" in info["models"][MRI]["description"]  # how to store a study
    assert info["models"][NUC]["type"] == info["models"][NOD]["type"] == "detection"
    assert info["models"][NOD]["labels"] == {"nodule": 0}
    assert info["models"][SEG]["labels"] == {"tumour": 1}
    assert "not_a_bundle" not in info["models"]


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


def _infer_json(server, model: str, image: str, **params):
    body, headers = _multipart({"params": json.dumps({"device": "cpu", **params})}, {})
    status, data, _ = _request(
        f"{server['base']}/infer/{model}?image={image}&output=json", "POST", body, headers
    )
    assert status == 200, data[:2000]
    return json.loads(data)


def _infer_region(server, model: str, location, size, output="json", **params):
    wsi = {
        "location": location,
        "size": size,
        "level": 0,
        "tile_size": size,
        "params": {"device": "cpu", **params},
    }
    body, headers = _multipart({"wsi": json.dumps(wsi)}, {})
    url = f"{server['base']}/infer/wsi_v2/{model}?image=slide_000&output={output}"
    status, data, _ = _request(url, "POST", body, headers)
    assert status == 200, data[:2000]
    return json.loads(data)


def test_infer_multisequence_mri_on_study_grid(server, tmp_path):
    import nibabel as nib

    body, headers = _multipart({"params": json.dumps({"device": "cpu"})}, {})
    status, data, _ = _request(
        f"{server['base']}/infer/{MRI}?image=mri_000&output=image", "POST", body, headers
    )
    assert status == 200, data[:2000]
    out = tmp_path / "mri_pred.nii.gz"
    out.write_bytes(data)
    pred, ref = nib.load(out), nib.load(server["studies"] / "mri_000.nii.gz")
    assert ref.shape == (48, 48, 32, 4) and pred.shape == ref.shape[:3]  # one label volume per study
    np.testing.assert_allclose(pred.affine, ref.affine, atol=1e-4)
    assert set(np.unique(np.asarray(pred.dataobj)).tolist()) <= {0, 1, 2, 3}  # BraTS label values


def test_detection_3d_boxes_in_world_mm(server):
    import nibabel as nib

    res = _infer_json(server, NOD, "lung_000", score_thresh=0.0)
    boxes = np.asarray(res["box"], dtype=float)
    assert boxes.ndim == 2 and boxes.shape[1] == 6 and len(boxes) > 0
    assert len(res["label"]) == len(res["score"]) == len(res["box_voxel"]) == len(boxes)
    assert set(res["class_name"]) == {"nodule"} and res["score"] == sorted(res["score"], reverse=True)
    # centres (LPS mm) lie inside the study's extent; voxel boxes inside its grid
    img = nib.load(server["studies"] / "lung_000.nii.gz")
    corners = (
        np.array(
            [
                [i, j, k, 1]
                for i in (0, img.shape[0] - 1)
                for j in (0, img.shape[1] - 1)
                for k in (0, img.shape[2] - 1)
            ]
        )
        @ img.affine.T
    )
    lps = corners[:, :3] * [-1, -1, 1]
    lo, hi = lps.min(0) - 1e-3, lps.max(0) + 1e-3
    assert np.all((boxes[:, :3] >= lo) & (boxes[:, :3] <= hi)), (boxes[:3], lo, hi)
    vox = np.asarray(res["box_voxel"])
    assert (
        np.all(vox[:, :3] >= 0)
        and np.all(vox[:, 3:] <= np.array(img.shape))
        and np.all(vox[:, 3:] > vox[:, :3])
    )


def test_detection_2d_boxes_on_patch(server):
    from PIL import Image

    res = _infer_json(server, NUC, "he_000", score_thresh=0.0)
    w, h = Image.open(server["studies"] / "he_000.png").size
    boxes, points = np.asarray(res["box"]).reshape(-1, 4), np.asarray(res["points"]).reshape(-1, 2)
    assert len(boxes) > 0 and len(points) == len(boxes) == len(res["score"])
    assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= w) and np.all(boxes[:, 3] <= h)
    np.testing.assert_allclose(points, (boxes[:, :2] + boxes[:, 2:]) / 2, atol=0.11)  # both rounded to 0.1 px


def test_qupath_region_segmentation(server):
    location, size = [512, 256], [512, 512]
    res = _infer_region(server, SEG, location, size)
    # (MONAI Label 0.8.5 appends the size to the location it echoes: compare the first two)
    assert res["location"][:2] == location and res["size"] == size and len(res["annotations"]) == 1
    tile = res["annotations"][0]
    # the bundle works at 2 um/px: a 0.5 um/px slide is read at level 1 (downsample 4)
    assert tile["region"]["read_level"] == 1 and tile["region"]["shape"] == [128, 128]
    for element in tile.get("annotation", {}).get("elements", []):
        assert element["label"] == "tumour"
        pts = np.concatenate([np.asarray(c) for c in element["contours"]])
        assert np.all(pts >= np.array(location) - 4) and np.all(pts <= np.array(location) + size), pts[:4]


def test_qupath_region_classification_as_dsa(server):
    location, size = [1024, 768], [224, 224]
    res = _infer_region(server, HE, location, size)
    tile = res["annotations"][0]
    assert [p["label"] for p in tile["prediction"]] == ["adipose", "stroma", "lymphocytes", "tumour"]
    best = max(tile["prediction"], key=lambda p: p["score"])["label"]
    (element,) = tile["annotation"]["elements"]
    x, y = location
    assert element["label"] == best
    assert element["contours"] == [[[x, y], [x + 224, y], [x + 224, y + 224], [x, y + 224]]]
    dsa = _infer_region(server, HE, location, size, output="dsa")  # what QuPath / DSA import
    (poly,) = dsa["elements"]
    assert poly["type"] == "polyline" and poly["label"]["value"] == best and poly["points"][0] == [x, y, 0]


def test_qupath_region_detection(server):
    location, size = [640, 384], [128, 128]
    res = _infer_region(server, NUC, location, size, score_thresh=0.0)
    tile = res["annotations"][0]
    boxes = np.asarray(tile["box"]).reshape(-1, 4)
    assert len(boxes) > 0 and tile["region"]["read_level"] == 0
    assert np.all(boxes[:, :2] >= location) and np.all(boxes[:, 2:] <= np.add(location, size))
    rects = [r for e in tile["annotation"]["elements"] for r in e["contours"]]
    assert len(rects) == len(boxes) and {e["label"] for e in tile["annotation"]["elements"]} == {"nucleus"}


def test_bad_requests_keep_server_serving(server):
    body, headers = _multipart({"params": "{}"}, {})
    status, data, _ = _request(f"{server['base']}/infer/no_such_model?image=ct_002", "POST", body, headers)
    assert status == 404 and b"unknown model 'no_such_model'" in data and CT.encode() in data
    body, headers = _multipart({"params": json.dumps({"device": "cpu"})}, {})
    status, data, _ = _request(
        f"{server['base']}/infer/{CT}?image=broken&output=image", "POST", body, headers
    )
    assert status == 422 and b"broken.nii.gz" in data, data[:2000]
    # a folder under model/ that is not a bundle: not served, and the 404 says why
    status, data, _ = _request(f"{server['base']}/infer/not_a_bundle?image=ct_002", "POST", body, headers)
    assert status == 404 and b"is not a bundle" in data and b"metadata.json" in data, data[:2000]
    # a single-channel CT sent to the 4-sequence bundle: 422 naming the expected channels
    status, data, _ = _request(
        f"{server['base']}/infer/{MRI}?image=ct_002&output=image", "POST", body, headers
    )
    assert status == 422 and b"t1, t1c, t2, flair" in data and b"ct_002" in data, data[:2000]
    # region requests: unknown model, and a level the slide does not have
    wsi = json.dumps({"location": [0, 0], "size": [64, 64], "level": 7, "params": {"device": "cpu"}})
    body, headers = _multipart({"wsi": wsi}, {})
    status, data, _ = _request(f"{server['base']}/infer/wsi_v2/nope?image=slide_000", "POST", body, headers)
    assert status == 404 and b"unknown model 'nope'" in data
    status, data, _ = _request(f"{server['base']}/infer/wsi_v2/{SEG}?image=slide_000", "POST", body, headers)
    assert status == 422 and b"level 7 is out of range" in data, data[:2000]
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
