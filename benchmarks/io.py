"""I/O benchmarks in one run: DICOM series loading and WSI patch extraction, ours against MONAI.

Runs ``benchmarks/io_dicom.py`` and ``benchmarks/io_wsi.py`` one after the other (each prints JSON
lines); ``--small`` uses a 512x512x32 series and a 2048^2 slide.

Example:
    $ python benchmarks/io.py --small
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    small = "--small" in sys.argv[1:]
    runs = [("io_dicom.py", ["--small"] if small else []), ("io_wsi.py", ["--size", "2048"] if small else [])]
    status = 0
    for script, extra in runs:
        status |= subprocess.call([sys.executable, str(HERE / script), *extra])
    return status


if __name__ == "__main__":
    sys.exit(main())
