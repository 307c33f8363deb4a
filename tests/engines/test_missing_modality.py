"""monai_ext.engines.missing_modality: shared ModDrop schedule, scenario evaluation, data loading."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from monai_ext.data.synthetic import generate
from monai_ext.engines.missing_modality import (
    evaluate_missing_modalities,
    load_multimodal_split,
    missing_scenarios,
    predict_labels,
    region_dice,
    scenario_name,
    train_with_modality_dropout,
    zero_modalities,
)
from monai_ext.networks import MultiEncoderFusionUNet, build_unet


class _Recorder(nn.Module):
    """A 1x1 convolution that records what it is given (image and, if it takes it, presence)."""

    def __init__(self, takes_presence: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.seen: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self.takes_presence = takes_presence

    def forward(self, image: torch.Tensor, presence: torch.Tensor | None = None) -> torch.Tensor:
        self.seen.append((image.detach().clone(), None if presence is None else presence.clone()))
        return self.conv(image)


class _NoPresence(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = _Recorder(False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.inner(image)


class _FromFirstModality(nn.Module):
    """Predicts class 2 where modality 0 is > 1, else background (ignores modality 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(image.shape[0], 4, *image.shape[2:])
        logits[:, 0] = 1.0
        logits[:, 2] = image[:, 0]
        return logits


def _data(n: int = 4, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.zeros(n, 1, size, size, dtype=torch.long)
    labels[:, :, 2:6, 2:6] = 1
    images = torch.randn(n, 2, size, size, generator=g) + 2.0 * labels.float()
    return images, labels


def test_scenarios_and_zeroing():
    assert missing_scenarios(["a", "b"]) == [(), ("a",), ("b",)]
    assert [scenario_name(s) for s in missing_scenarios(["a", "b"])] == ["all", "missing_a", "missing_b"]
    x = torch.arange(1.0, 7.0).reshape(1, 6, 1)
    zeroed, presence = zero_modalities(x, [2], 3)
    assert zeroed.flatten().tolist() == [1.0, 2.0, 3.0, 4.0, 0.0, 0.0]
    assert presence.tolist() == [[True, True, False]]
    with pytest.raises(ValueError, match=r"`missing` indices \[3\]"):
        zero_modalities(x, [3], 3)
    with pytest.raises(ValueError, match="not a multiple of `num_modalities` 4"):
        zero_modalities(x, [], 4)


def test_every_model_sees_the_same_batches_flips_and_dropped_modalities():
    images, labels = _data()
    with_presence, without = _Recorder(True), _NoPresence()
    for net in (with_presence, without):
        train_with_modality_dropout(
            net, images, labels, epochs=3, num_modalities=2, num_classes=2, drop_prob=0.5, seed=7
        )
    a, b = with_presence.seen, without.inner.seen
    assert len(a) == len(b) == 3 * 2
    for (xa, pa), (xb, pb) in zip(a, b):
        torch.testing.assert_close(xa, xb)
        assert pb is None and pa is not None
        assert pa.any(dim=1).all()  # at least one modality kept per sample
        dropped = ~pa
        assert (xa.reshape(*pa.shape, -1).abs().amax(-1)[dropped] == 0).all()
    assert any((~p).any() for _, p in a), "drop_prob 0.5 dropped nothing in 12 samples"
    other = _Recorder(True)
    train_with_modality_dropout(
        other, images, labels, epochs=3, num_modalities=2, num_classes=2, drop_prob=0.5, seed=8
    )
    assert any(not torch.equal(x, y) for (x, _), (y, _) in zip(a, other.seen))


def test_training_lowers_the_loss():
    torch.manual_seed(0)
    images, labels = _data()
    net = build_unet(2, 2, 2, channels=(4, 8), strides=(2,), num_res_units=1)
    seen: list[int] = []
    losses = train_with_modality_dropout(
        net,
        images,
        labels,
        epochs=15,
        num_modalities=2,
        num_classes=2,
        learning_rate=1e-2,
        on_epoch=lambda e, loss: seen.append(e),
    )
    assert seen == list(range(15)) and len(losses) == 15
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0]


def test_training_rejects_bad_input():
    images, labels = _data()
    fusion = MultiEncoderFusionUNet(2, 2, 1, 2, channels=(4, 8), strides=(2,), modality_dropout=0.5)
    with pytest.raises(ValueError, match="applies its own modality dropout"):
        train_with_modality_dropout(fusion, images, labels, epochs=1, num_modalities=2, num_classes=2)
    net = build_unet(2, 2, 2, channels=(4, 8), strides=(2,), num_res_units=1)
    with pytest.raises(ValueError, match=r"`labels` must lie in \[0, num_classes=2\)"):
        train_with_modality_dropout(net, images, labels * 2, epochs=1, num_modalities=2, num_classes=2)
    with pytest.raises(ValueError, match="do not match `images`"):
        train_with_modality_dropout(net, images, labels[:3], epochs=1, num_modalities=2, num_classes=2)
    with pytest.raises(ValueError, match="`epochs` and `batch_size` must be >= 1"):
        train_with_modality_dropout(net, images, labels, epochs=0, num_modalities=2, num_classes=2)


def test_evaluation_zeroes_each_missing_sequence():
    _, labels = _data(size=10)
    images = torch.cat([3.0 * labels.float(), torch.randn(labels.shape)], dim=1)
    labels = labels * 2  # oedema only: tumour core and enhancing tumour absent
    scores = evaluate_missing_modalities(_FromFirstModality(), images, labels, ["a", "b"])
    assert list(scores) == ["all", "missing_a", "missing_b"]
    assert scores["all"]["dice_wt"] == pytest.approx(1.0)
    assert scores["missing_b"]["dice_wt"] == pytest.approx(1.0)
    assert scores["missing_a"]["dice_wt"] == pytest.approx(0.0)
    assert math.isnan(scores["all"]["dice_tc"]) and math.isnan(scores["all"]["dice_et"])
    assert scores["all"]["n_cases"] == 4
    with pytest.raises(ValueError, match=r"names \['c'\], not among `sequences`"):
        evaluate_missing_modalities(_FromFirstModality(), images, labels, ["a", "b"], scenarios=[("c",)])


def test_predict_pads_and_crops_back_and_region_dice():
    net = build_unet(2, 2, 4, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    pred = predict_labels(net, torch.randn(2, 2, 10, 14), missing=[0], num_modalities=2, size_divisor=4)
    assert pred.shape == (2, 1, 10, 14) and pred.dtype == torch.long
    label = torch.tensor([[[[0, 1, 2, 3]]]])
    pred = torch.tensor([[[[0, 1, 2, 0]]]])
    d = region_dice(pred, label)
    assert float(d["wt"][0]) == pytest.approx(2 * 2 / (2 + 3))
    assert float(d["tc"][0]) == pytest.approx(2 * 1 / (1 + 2))
    assert float(d["et"][0]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="differ"):
        region_dice(pred, label[..., :3])


def test_load_multimodal_split(tmp_path):
    root = generate(
        "mri_brain_multimodal", tmp_path / "mri", n=3, seed=0, shape=(32, 32, 32), spacing=(6, 6, 4)
    )
    images, labels = load_multimodal_split(root, ("training", "test"))
    assert images.shape == (2, 4, 32, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (2, 1, 32, 32, 32) and labels.dtype == torch.long
    assert set(labels.unique().tolist()) <= {0, 1, 2, 3} and (labels > 0).any()
    nonzero = images[0, 1][images[0, 1] != 0]
    assert abs(float(nonzero.mean())) < 1e-3 and float(nonzero.std()) == pytest.approx(1.0, abs=1e-2)
    with pytest.raises(ValueError, match="split 'validaton'"):
        load_multimodal_split(root, ("validaton",))
    with pytest.raises(FileNotFoundError, match="has no dataset.json"):
        load_multimodal_split(tmp_path)
