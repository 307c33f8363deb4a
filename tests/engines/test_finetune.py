"""Fine-tuning: key mapping, partial loading, frozen encoder, clear errors."""

from __future__ import annotations

import pytest
import torch
from _engine_helpers import tiny_unet
from monai.networks.nets import UNet

from monai_ext.engines import CheckpointHandler, freeze_parameters, load_pretrained, map_state_dict_keys
from monai_ext.engines.checkpoint import save_checkpoint


def test_partial_load_from_training_checkpoint_and_freeze(tmp_path):
    src = tiny_unet(0)
    path = save_checkpoint(
        {"model": src, "optimizer": torch.optim.SGD(src.parameters(), lr=0.1)}, tmp_path / "c.pt"
    )
    dst = UNet(2, 1, 3, channels=(4, 8), strides=(2,), num_res_units=0)  # new task: 3 classes
    torch.manual_seed(5)
    report = load_pretrained(dst, path, freeze_prefixes=["model.0."])
    src_sd, dst_sd = src.state_dict(), dst.state_dict()
    assert report.loaded and report.shape_mismatch and not report.unexpected
    for k in report.loaded:
        assert torch.equal(src_sd[k], dst_sd[k])
    for k in report.shape_mismatch:  # the new head keeps its own shape
        assert dst_sd[k].shape != src_sd[k].shape
    frozen = {n for n, p in dst.named_parameters() if not p.requires_grad}
    assert frozen == set(report.frozen) and all(n.startswith("model.0.") for n in frozen) and frozen
    with pytest.raises(KeyError, match="shape mismatch"):
        load_pretrained(UNet(2, 1, 3, channels=(4, 8), strides=(2,), num_res_units=0), path, strict=True)


def test_key_mapping_ddp_prefix_and_rename():
    src = tiny_unet(0).state_dict()
    ddp_state = {f"module.{k}": v for k, v in src.items()}
    dst = tiny_unet(1)
    assert len(load_pretrained(dst, ddp_state, strict=True).loaded) == len(src)
    renamed = {k.replace("model.", "net.", 1): v for k, v in src.items()}
    with pytest.raises(ValueError, match="no checkpoint key matches"):
        load_pretrained(tiny_unet(1), renamed)
    report = load_pretrained(tiny_unet(1), renamed, rename_prefixes={"net.": "model."}, strict=True)
    assert not report.missing and not report.unexpected
    with pytest.raises(ValueError, match="two checkpoint keys"):
        map_state_dict_keys({"a.x": 1, "b.x": 2}, rename_prefixes={"a.": "", "b.": ""})


def test_bad_sources_and_freeze_prefix(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_pretrained(tiny_unet(), tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_text("hello")
    with pytest.raises(ValueError, match="junk.pt is not a readable checkpoint"):
        load_pretrained(tiny_unet(), junk)
    with pytest.raises(ValueError, match="not tensors"):
        load_pretrained(tiny_unet(), {"epoch": 3, "w": torch.zeros(1)})
    with pytest.raises(ValueError, match="'encoder.' matches no parameter"):
        freeze_parameters(tiny_unet(), ["encoder."])


def test_best_checkpoint_of_a_run_is_a_valid_source(tmp_path):
    net = tiny_unet(0)
    handler = CheckpointHandler(tmp_path, {"model": net})
    from ignite.engine import Engine

    handler.attach(Engine(lambda e, b: None))
    handler._engine.run([0], max_epochs=1)
    dst = tiny_unet(3)
    load_pretrained(dst, handler.latest_path, strict=True)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), dst.state_dict().values()))


def test_finetune_loader_loads_a_bundle_checkpoint_where_checkpointloader_does_not(tmp_path):
    """MONAI's CheckpointLoader(strict_shape=False) loads nothing from {"model": ...}; ours loads it."""
    from ignite.engine import Engine, Events
    from monai.handlers import CheckpointLoader

    from monai_ext.engines.finetune import FinetuneLoader

    torch.manual_seed(0)
    source = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    path = tmp_path / "model.pt"
    torch.save({"model": source.state_dict()}, path)

    def fresh() -> torch.nn.Module:
        torch.manual_seed(1)
        return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 5))  # new head

    monai_net = fresh()
    monai_loader = CheckpointLoader(str(path), {"model": monai_net}, strict=False, strict_shape=False)
    monai_loader(Engine(lambda e, b: 0))
    assert not torch.equal(monai_net[0].weight, source[0].weight)  # MONAI: silently unchanged

    net = fresh()
    loader = FinetuneLoader(path, net)
    engine = Engine(lambda e, b: 0)
    loader.attach(engine)
    engine.run([0])
    assert torch.equal(net[0].weight, source[0].weight) and net[1].weight.shape == (5, 4)
    assert loader.report.shape_mismatch == ["1.weight", "1.bias"]

    resumed = fresh()
    engine = Engine(lambda e, b: 0)
    engine.state.iteration = 7  # what a resume loader leaves before STARTED handlers run
    FinetuneLoader(path, resumed)(engine)
    assert not torch.equal(resumed[0].weight, source[0].weight)

    idle = Engine(lambda e, b: 0)
    FinetuneLoader("", net).attach(idle)  # a bundle's default: no checkpoint, no handler
    assert not idle._event_handlers.get(Events.STARTED)

    with pytest.raises(FileNotFoundError, match="load_path"):
        FinetuneLoader(tmp_path / "missing.pt", net)
