"""The batch-augmentation hook inside a real MONAI SupervisedTrainer, the chain, and the bundle switch."""

from __future__ import annotations

import pytest
import torch
from monai.bundle import ConfigParser
from monai.engines import SupervisedTrainer
from monai.engines.utils import PrepareBatchDefault
from monai.networks.nets import UNet

from monai_ext.transforms.batch import (
    BatchAugChain,
    BatchDihedral2D,
    BatchHEDJitter,
    BatchHUWindow,
    BatchRandAffine,
    BatchRandGaussianNoise,
    BatchRGBBrightnessContrast,
    GPUAugmentPrepareBatch,
)
from monai_ext.transforms.functional import stain as fstain


class Recorder(torch.nn.Module):
    """Wraps a chain and keeps what it returned, to check the trainer used the augmented batch."""

    def __init__(self, chain: BatchAugChain) -> None:
        super().__init__()
        self.chain, self.calls = chain, []

    def forward(self, image, label=None, params=None):
        out = self.chain(image, label, params)
        self.calls.append((image.clone(), out))
        return out


def _chain(seed: int = 0) -> BatchAugChain:
    return BatchAugChain(
        [
            BatchHUWindow(-1000, 1000),
            BatchRandAffine(prob=1.0, rotate_range=0.3, scale_range=0.1, seed=seed),
            BatchRandGaussianNoise(prob=1.0, std=0.05, seed=seed),
        ]
    )


def test_supervised_trainer_runs_with_gpu_augmentation():
    torch.manual_seed(0)
    data = [
        {"image": torch.randn(1, 16, 16, 16) * 400, "label": (torch.rand(1, 16, 16, 16) > 0.7).float()}
        for _ in range(4)
    ]
    loader = torch.utils.data.DataLoader(data, batch_size=2)
    net = UNet(3, 1, 1, channels=(4, 8), strides=(2,), num_res_units=0)
    rec = Recorder(_chain())
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01),
        loss_function=torch.nn.BCEWithLogitsLoss(),
        prepare_batch=GPUAugmentPrepareBatch(rec),
        epoch_length=2,
    )
    trainer.run()
    assert trainer.state.iteration == 2
    assert len(rec.calls) == 2
    raw, out = rec.calls[0]
    assert raw.shape == (2, 1, 16, 16, 16)
    assert float(out.image.min()) >= -0.5 and float(out.image.max()) <= 1.5  # windowed + noise
    assert set(out.label.unique().tolist()) <= {0.0, 1.0}  # nearest keeps the label binary
    assert torch.isfinite(torch.as_tensor(trainer.state.output[0]["loss"]))


def test_supervised_trainer_runs_with_histology_augmentation():
    torch.manual_seed(0)
    data = [
        {"image": torch.rand(3, 16, 16), "label": (torch.rand(1, 16, 16) > 0.5).float()} for _ in range(4)
    ]
    loader = torch.utils.data.DataLoader(data, batch_size=2)
    net = UNet(2, 3, 1, channels=(4, 8), strides=(2,), num_res_units=0)
    chain = BatchAugChain(
        [
            BatchHEDJitter(prob=1.0, sigma=0.1, bias=0.1, seed=0),
            BatchDihedral2D(prob=1.0, seed=0),
            BatchRGBBrightnessContrast(prob=1.0, seed=0),
        ]
    )
    rec = Recorder(chain)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01),
        loss_function=torch.nn.BCEWithLogitsLoss(),
        prepare_batch=GPUAugmentPrepareBatch(rec),
        epoch_length=2,
    )
    trainer.run()
    assert trainer.state.iteration == 2 and len(rec.calls) == 2
    for i, (raw, out) in enumerate(rec.calls):
        assert torch.equal(raw, torch.stack([d["image"] for d in data[2 * i : 2 * i + 2]]))
        assert out.image.shape == (2, 3, 16, 16) and out.image.dtype == torch.float32
        assert float(out.image.min()) >= 0.0 and float(out.image.max()) <= 1.0  # still valid RGB
        assert not torch.equal(out.image, raw)
        lab = torch.stack([d["label"] for d in data[2 * i : 2 * i + 2]])
        k = out.params[1]["k"]  # the label follows the image's dihedral element, exactly
        assert torch.equal(out.label, fstain.dihedral_2d(lab, k))
        replay = BatchAugChain([BatchHEDJitter(), BatchDihedral2D(), BatchRGBBrightnessContrast()])
        again = replay(raw, lab, params=out.params)
        assert torch.equal(again.image, out.image) and torch.equal(again.label, out.label)
    assert torch.isfinite(torch.as_tensor(trainer.state.output[0]["loss"]))


def test_prepare_batch_switch_and_replay():
    batch = {"image": torch.rand(2, 1, 8, 8, 8) * 100, "label": torch.ones(2, 1, 8, 8, 8)}
    off = GPUAugmentPrepareBatch(_chain(), enabled=False)(batch, device="cpu")
    ref = PrepareBatchDefault()(batch, device="cpu")
    assert torch.equal(off[0], ref[0]) and torch.equal(off[1], ref[1])
    chain = _chain(seed=3)
    img, lab = GPUAugmentPrepareBatch(chain)(batch, device="cpu")
    assert not torch.equal(img, batch["image"])
    out = _chain(seed=3)(batch["image"], batch["label"])
    assert torch.equal(out.image, img) and torch.equal(out.label, lab)  # seeded: repeatable
    replay = chain(batch["image"], batch["label"], params=out.params)
    assert torch.equal(replay.image, img)


def test_bundle_config_switches_augmentation_with_one_key():
    config = {
        "use_gpu_augment": True,
        "gpu_augment": {
            "_target_": "monai_ext.transforms.batch.hook.BatchAugChain",
            "transforms": [
                {"_target_": "monai_ext.transforms.batch.BatchRandAffine", "prob": 1.0, "rotate_range": 0.3},
                {"_target_": "monai_ext.transforms.batch.BatchRandGaussianNoise", "prob": 1.0},
            ],
        },
        "prepare_batch": {
            "_target_": "monai_ext.transforms.batch.hook.GPUAugmentPrepareBatch",
            "augment": "@gpu_augment",
            "enabled": "@use_gpu_augment",
        },
    }
    batch = {"image": torch.rand(2, 1, 8, 8), "label": torch.zeros(2, 1, 8, 8)}
    for flag in (True, False):
        parser = ConfigParser(dict(config, use_gpu_augment=flag))
        prep = parser.get_parsed_content("prepare_batch")
        assert isinstance(prep, GPUAugmentPrepareBatch) and prep.enabled is flag
        assert torch.equal(prep(batch, device="cpu")[0], batch["image"]) is (not flag)


def test_chain_bad_input():
    with pytest.raises(ValueError, match="BatchAugChain: `transforms` must not be empty"):
        BatchAugChain([])
    with pytest.raises(TypeError, match=r"BatchAugChain: `transforms\[0\]` must be a BatchAugmentation"):
        BatchAugChain([torch.nn.Identity()])
    nan = torch.rand(2, 1, 4, 4, 4)
    nan[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="BatchHUWindow: `image` contains NaN"):
        _chain()(nan)
    with pytest.raises(ValueError, match="`params` has 1 entries, expected 3"):
        _chain()(torch.rand(2, 1, 4, 4, 4), params=[{}])


def test_class_labels_pass_through_unchanged():
    """A (B,) class label is not spatial: the image is augmented, the label comes back as it was."""
    from monai_ext.transforms.batch import BatchDihedral2D

    prep = GPUAugmentPrepareBatch(BatchDihedral2D(prob=1.0, seed=0))
    image = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4) / 100
    label = torch.tensor([1, 3])
    out_image, out_label = prep({"image": image, "label": label}, device="cpu")
    assert torch.equal(out_label, label)
    assert out_image.shape == image.shape and not torch.equal(out_image, image)
    with pytest.raises(ValueError, match="label"):
        GPUAugmentPrepareBatch(BatchDihedral2D(prob=1.0, seed=0), augment_label=True)(
            {"image": image, "label": label}, device="cpu"
        )


def test_chain_writes_in_place_only_on_its_own_tensors():
    # noise later in a chain adds into the chain's own intermediate tensor, never into the caller's
    x = torch.rand(2, 1, 48, 48, 48)  # above the CPU noise chunk size
    keep = x.clone()
    first = BatchAugChain([BatchRandGaussianNoise(prob=1.0, std=0.1, seed=1)])
    out = first(x)
    assert torch.equal(x, keep) and out.image.data_ptr() != x.data_ptr()
    chain = _chain(seed=2)
    res = chain(x)
    assert torch.equal(x, keep)
    # same result as running the members one by one out of place with the recorded parameters
    step = x
    for member, p in zip(chain.transforms, res.params):
        step = member.run(step, None, p).image
    torch.testing.assert_close(res.image, step, atol=0, rtol=0)
