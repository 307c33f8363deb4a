"""The key check: attribution maps find the region that decides the class, and not for a shuffled model.

Synthetic 32x32 images: Gaussian noise, two distractor bars (same brightness as the blobs) in every image,
and one 5x5 blob at a random location: filled square = class 1, hollow square (ring) = class 0. The region
that decides the class is the 7x7 box around the blob (49 px = 4.8% of the image). A tiny CNN trained for
a few hundred steps on the CPU must put the peak of its Grad-CAM / occlusion map inside that box for
>= 80% of held-out images; the same CNN trained on shuffled labels must not (< 50%).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from monai_ext.explain import grad_cam, occlusion_map

SIZE, BLOB, MARGIN = 32, 5, 1


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    images = rng.normal(0.0, 0.3, size=(n, 1, SIZE, SIZE)).astype(np.float32)
    labels = rng.integers(0, 2, size=n)
    regions = np.zeros((n, SIZE, SIZE), dtype=bool)
    for i in range(n):
        occupied = np.zeros((SIZE, SIZE), dtype=bool)
        r, c = rng.integers(MARGIN, SIZE - BLOB - MARGIN + 1, size=2)
        if labels[i] == 1:
            images[i, 0, r : r + BLOB, c : c + BLOB] += 1.5
        else:
            images[i, 0, r : r + BLOB, c : c + BLOB] += 1.5
            images[i, 0, r + 1 : r + BLOB - 1, c + 1 : c + BLOB - 1] -= 1.5
        regions[i, r - MARGIN : r + BLOB + MARGIN, c - MARGIN : c + BLOB + MARGIN] = True
        occupied[max(0, r - 2) : r + BLOB + 2, max(0, c - 2) : c + BLOB + 2] = True
        for _ in range(2):  # distractors: 2x6 or 6x2 bars, never touching the blob
            for _ in range(100):
                h, w = (2, 6) if rng.random() < 0.5 else (6, 2)
                br, bc = rng.integers(0, SIZE - h + 1), rng.integers(0, SIZE - w + 1)
                if not occupied[br : br + h, bc : bc + w].any():
                    images[i, 0, br : br + h, bc : bc + w] += 1.5
                    occupied[br : br + h, bc : bc + w] = True
                    break
    assert regions[0].mean() <= 0.05
    return torch.from_numpy(images), torch.from_numpy(labels).long(), torch.from_numpy(regions)


def tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 2),
    )


def train(images: torch.Tensor, labels: torch.Tensor, steps: int = 200, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = tiny_cnn()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, images.shape[0], (32,), generator=gen)
        loss = nn.functional.cross_entropy(net(images[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def hit_rate(maps: torch.Tensor, regions: torch.Tensor) -> float:
    flat = maps[:, 0].reshape(maps.shape[0], -1).argmax(dim=1)
    return float(regions.reshape(regions.shape[0], -1)[torch.arange(maps.shape[0]), flat].float().mean())


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(1)
    x, y, _ = make_data(600, seed=1)
    true_net = train(x, y)
    shuffled = y[torch.randperm(y.shape[0], generator=torch.Generator().manual_seed(2))]
    shuffled_net = train(x, shuffled)
    xt, yt, rt = make_data(40, seed=3)
    with torch.no_grad():
        acc = float((true_net(xt).argmax(1) == yt).float().mean())
    return true_net, shuffled_net, xt, yt, rt, acc


def test_trained_model_is_accurate(models):
    assert models[-1] >= 0.9


@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
def test_cam_peak_in_deciding_region(models, method):
    true_net, shuffled_net, xt, yt, rt, _ = models
    good = hit_rate(grad_cam(true_net, xt, class_idx=yt, method=method), rt)
    bad = hit_rate(grad_cam(shuffled_net, xt, class_idx=yt, method=method), rt)
    assert good >= 0.8, good
    assert bad < 0.5, bad


@pytest.mark.slow
def test_occlusion_peak_in_deciding_region(models):
    true_net, shuffled_net, xt, yt, rt, _ = models
    xt, yt, rt = xt[:20], yt[:20], rt[:20]
    kw = {"class_idx": yt, "mask_size": 5, "overlap": 0.5, "n_batch": 128}
    good = hit_rate(occlusion_map(true_net, xt, **kw), rt)
    bad = hit_rate(occlusion_map(shuffled_net, xt, **kw), rt)
    assert good >= 0.8, good
    assert bad < 0.5, bad
