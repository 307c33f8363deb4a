"""Package-level gates: importing monai_ext pulls in no optional dependency; the version is set."""

from __future__ import annotations

import json
import subprocess
import sys

import monai_ext

OPTIONAL_MODULES = [
    "tifffile",
    "imagecodecs",
    "openslide",
    "cucim",
    "highdicom",
    "pylibjpeg",
    "libjpeg",
    "openjpeg",
    "rle",
    "gdcm",
    "monailabel",
    "tensorboard",
    "mlflow",
    "onnxruntime",
    "skimage",
    "sklearn",
    "lifelines",
    "matplotlib",
]

CORE_SUBPACKAGES = [
    "monai_ext",
    "monai_ext.cli",
    "monai_ext.data",
    "monai_ext.data.synthetic",
    "monai_ext.transforms",
    "monai_ext.networks",
    "monai_ext.engines",
]


def test_version_string():
    assert monai_ext.__version__.count(".") == 2


def test_import_pulls_no_optional_dependency():
    """``import monai`` itself loads some optional packages when installed; monai_ext adds none."""
    code = (
        "import importlib, json, sys, monai, ignite.engine\n"
        f"before = {{m for m in {OPTIONAL_MODULES!r} if m in sys.modules}}\n"
        f"for m in {CORE_SUBPACKAGES!r}: importlib.import_module(m)\n"
        f"after = {{m for m in {OPTIONAL_MODULES!r} if m in sys.modules}}\n"
        "print(json.dumps(sorted(after - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing monai_ext loaded optional packages: {loaded}"


def test_import_without_optional_packages():
    """Block every optional package: monai_ext (and monai) must still import."""
    code = (
        "import sys\n"
        f"for m in {OPTIONAL_MODULES!r}: sys.modules[m] = None\n"
        "import importlib\n"
        f"for m in {CORE_SUBPACKAGES!r}: importlib.import_module(m)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
