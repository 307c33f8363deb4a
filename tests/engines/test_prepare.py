"""MultimodalPrepareBatch: per-modality keys or stacked image + presence + tabular -> network kwargs."""

from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedTrainer

from monai_ext.engines import MultimodalPrepareBatch
from monai_ext.networks.classification import ImageTabularNet
from monai_ext.transforms.batch import BatchRandFlip


def test_modality_keys_stack_and_missing_modality():
    prep = MultimodalPrepareBatch(modality_keys=("t1", "t2", "flair"))
    batch = {"t1": torch.ones(2, 1, 4, 4), "flair": 2 * torch.ones(2, 1, 4, 4), "label": torch.tensor([0, 1])}
    image, target, args, kwargs = prep(batch, device="cpu")
    assert image.shape == (2, 3, 4, 4) and args == ()
    assert torch.equal(image[:, 1], torch.zeros(2, 4, 4)) and torch.equal(
        image[:, 2], 2 * torch.ones(2, 4, 4)
    )
    assert kwargs["presence"].tolist() == [[True, False, True]] * 2
    assert torch.equal(target, torch.tensor([0, 1])) and "tabular" not in kwargs


def test_image_presence_tabular_and_errors():
    prep = MultimodalPrepareBatch()
    batch = {
        "image": torch.rand(2, 2, 4, 4),
        "presence": torch.tensor([[1, 0], [1, 1]]),
        "tabular": torch.tensor([[1, 2, 3], [4, 5, 6]]),
        "label": torch.zeros(2, 2),
    }
    image, _, _, kwargs = prep(batch)
    assert kwargs["presence"].dtype == torch.bool and kwargs["presence"].tolist() == [
        [True, False],
        [True, True],
    ]
    assert kwargs["tabular"].dtype == torch.float32
    with pytest.raises(KeyError, match="'image'"):
        prep({"img": torch.zeros(1, 1, 2, 2), "label": torch.zeros(1)})
    with pytest.raises(ValueError, match="'presence' must have shape"):
        prep({**batch, "presence": torch.ones(3)})
    with pytest.raises(ValueError, match="'tabular' must have shape"):
        prep({**batch, "tabular": torch.ones(5, 2)})
    with pytest.raises(ValueError, match="modality 't2' has shape"):
        MultimodalPrepareBatch(["t1", "t2"])(
            {"t1": torch.ones(1, 1, 4, 4), "t2": torch.ones(1, 1, 5, 4), "label": 0}
        )
    with pytest.raises(ValueError, match="modality_keys"):
        MultimodalPrepareBatch("t1")


def test_augmentation_applies_to_image_and_spatial_label_only():
    ramp = torch.arange(4.0).reshape(1, 1, 1, 4).repeat(3, 1, 4, 1)
    prep = MultimodalPrepareBatch(["a", "b"], augment=BatchRandFlip(prob=1.0, spatial_axes=(1,), seed=0))
    image, label, _, _ = prep({"a": ramp, "b": ramp, "label": ramp.clone()})
    assert torch.equal(image[:, :1], label) and torch.equal(image[:, 1:], label)  # same flip for all
    assert not torch.equal(image[:, :1], ramp)  # some sample was flipped
    prep_cls = MultimodalPrepareBatch(
        ["a"], augment=BatchRandFlip(prob=1.0, spatial_axes=(1,), seed=0), augment_label=False
    )
    image, label, _, _ = prep_cls({"a": ramp, "label": torch.tensor([3, 4, 5])})
    assert not torch.equal(image, ramp) and torch.equal(label, torch.tensor([3, 4, 5]))


def test_trainer_calls_network_with_presence_and_tabular():
    net = ImageTabularNet(2, 2, 1, 3, num_classes=2, channels=(4, 8), strides=(2,))
    calls = []
    net.register_forward_pre_hook(lambda m, a, k: calls.append(sorted(k)), with_kwargs=True)
    data = [
        {
            "t1": torch.rand(2, 1, 16, 16),
            "t2": torch.rand(2, 1, 16, 16),
            "tabular": torch.rand(2, 3),
            "label": torch.tensor([0, 1]),
        }
    ]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    prep = MultimodalPrepareBatch(["t1", "t2"])
    trainer = SupervisedTrainer("cpu", 1, data, net, opt, torch.nn.CrossEntropyLoss(), prepare_batch=prep)
    trainer.run()
    assert calls == [["presence", "tabular"]]
    assert torch.isfinite(torch.as_tensor(trainer.state.output[0]["loss"]))
