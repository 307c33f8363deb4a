"""Figure for the he_tissue_classification bundle: patches per class and slide, with predictions if given.

Usage: python scripts/figure_he_patches.py DATA_DIR OUT_PNG [PREDICTIONS_CSV]
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def main(data_dir: str, out_png: str, predictions: str | None = None) -> None:
    data = Path(data_dir)
    summary = json.loads((data / "summary.json").read_text())
    classes = summary["classes"]
    rows = list(csv.DictReader(open(data / "datalist.csv")))
    test = [r for r in rows if r["split"] == "test"]
    pred = {}
    if predictions:
        for r in csv.reader(open(predictions)):
            pred[Path(r[0]).name] = int(np.argmax([float(v) for v in r[1:]]))
    per_class = 6
    fig, axes = plt.subplots(len(classes), per_class, figsize=(per_class * 1.3, len(classes) * 1.4))
    for c, name in enumerate(classes):
        items = [r for r in test if int(r["label"]) == c][:per_class]
        for j in range(per_class):
            ax = axes[c, j]
            ax.axis("off")
            if j >= len(items):
                continue
            r = items[j]
            ax.imshow(Image.open(data / r["image"]))
            title = f"slide {r['slide']}"
            if pred:
                p = pred.get(Path(r["image"]).name)
                ok = p == c
                title = f"pred: {classes[p]}" if p is not None else title
                ax.set_title(title, fontsize=7, color="green" if ok else "red")
            else:
                ax.set_title(title, fontsize=7)
        axes[c, 0].text(-8, 32, name, ha="right", va="center", fontsize=9)
    title = "held-out slides: true class per row" + (", predicted class above each patch" if pred else "")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:])
