"""Fusion blocks: ModDrop, HeMIS, gated/cross-modal attention, FiLM, DAFT, tabular NaN, late fusion."""

from __future__ import annotations

import pytest
import torch
from monai import handlers, losses, metrics
from monai.networks import blocks, nets

import monai_ext.losses
import monai_ext.metrics
import monai_ext.networks
from monai_ext.networks import (
    CrossModalAttentionFusion,
    DAFTBlock,
    FiLMBlock,
    GatedAttentionFusion,
    HeteroModalFusion,
    LateFusion,
    ModalityDropout,
    TabularMissingIndicator,
    infer_presence,
)


def test_no_name_clash_with_monai():
    names = monai_ext.networks.__all__ + monai_ext.losses.__all__ + monai_ext.metrics.__all__
    for name in names:
        for module in (nets, blocks, losses, metrics, handlers):
            assert not hasattr(module, name), f"{name} clashes with {module.__name__}"


def test_infer_presence():
    image = torch.zeros(2, 6, 4, 4)
    image[0, 2:4] = 1.0
    image[1, 0] = -1.0
    assert infer_presence(image, 3).tolist() == [[False, True, False], [True, False, False]]


def test_modality_dropout_keeps_one_and_never_restores():
    drop = ModalityDropout(4, 2, drop_prob=0.7).train()
    image = torch.randn(64, 8, 3, 3)
    image[:, 2:4] = 0.0  # modality 1 missing everywhere
    torch.manual_seed(0)
    out, keep = drop(image)
    assert keep.any(dim=1).all()
    assert not keep[:, 1].any()
    assert keep.sum() < 3 * 64  # something was dropped
    for m in range(4):
        dropped = ~keep[:, m]
        assert torch.all(out[dropped, 2 * m : 2 * m + 2] == 0)
        assert torch.equal(out[~dropped, 2 * m : 2 * m + 2], image[~dropped, 2 * m : 2 * m + 2])
    torch.manual_seed(0)
    out2, keep2 = drop(image)
    assert torch.equal(out, out2) and torch.equal(keep, keep2)
    _, one = ModalityDropout(4, 2, drop_prob=1.0).train()(torch.randn(16, 8, 2, 2))
    assert one.sum(dim=1).tolist() == [1] * 16
    ev_out, _ = drop.eval()(image)
    assert torch.equal(ev_out, image)


def test_modality_dropout_bad_input():
    with pytest.raises(ValueError, match="ModalityDropout: `image` must have M\\*C"):
        ModalityDropout(4, 1)(torch.ones(1, 3, 2, 2))
    with pytest.raises(ValueError, match="drop_prob"):
        ModalityDropout(4, 1, drop_prob=1.5)


def test_hemis_mean_and_variance_over_present():
    feats = torch.randn(2, 3, 5, 4, 4)
    presence = torch.tensor([[True, False, True], [False, True, False]])
    out = HeteroModalFusion()(feats, presence)
    sel = feats[0, [0, 2]]
    torch.testing.assert_close(out[0, :5], sel.mean(0))
    torch.testing.assert_close(out[0, 5:], sel.var(0, unbiased=False))
    torch.testing.assert_close(out[1, :5], feats[1, 1])
    assert torch.all(out[1, 5:] == 0)
    feats2 = feats.clone()
    feats2[0, 1] = 1e3
    feats2[1, 0] = -7.0
    torch.testing.assert_close(HeteroModalFusion()(feats2, presence), out)
    with pytest.raises(ValueError, match="HeteroModalFusion: `presence`.*no modality"):
        HeteroModalFusion()(feats, torch.tensor([[True, False, False], [False, False, False]]))
    with pytest.raises(
        ValueError, match=r"HeteroModalFusion: `presence` must have shape \(B, M\) = \(2, 3\)"
    ):
        HeteroModalFusion()(feats, torch.ones(2, 2, dtype=torch.bool))


@pytest.mark.parametrize("spatial", [(4, 4), (3, 3, 3)])
def test_gated_attention_masks_missing(spatial, jit_script):
    torch.manual_seed(0)
    fuse = GatedAttentionFusion(6, 4)
    feats = torch.randn(2, 3, 6, *spatial, requires_grad=True)
    presence = torch.tensor([[1, 0, 1], [0, 1, 0]])
    w = fuse.weights(feats, presence)
    assert torch.all(w[presence == 0] == 0)
    torch.testing.assert_close(w.sum(1), torch.ones(2))
    out = fuse(feats, presence)
    torch.testing.assert_close(out[1], feats[1, 1])
    out.sum().backward()
    assert fuse.attention_v.weight.grad.abs().sum() > 0
    feats2 = feats.detach().clone()
    feats2[0, 1] = 99.0
    torch.testing.assert_close(fuse(feats2, presence), out.detach())
    torch.testing.assert_close(jit_script(fuse)(feats.detach(), presence), out.detach())


@pytest.mark.parametrize("spatial", [(4, 4), (2, 3, 2)])
def test_cross_modal_attention(spatial, jit_script):
    torch.manual_seed(0)
    fuse = CrossModalAttentionFusion(8, num_heads=2)
    feats = torch.randn(3, 3, 8, *spatial, requires_grad=True)
    presence = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0]])
    out = fuse(feats, presence)
    assert out.shape == (3, 8, *spatial) and torch.isfinite(out).all()
    out.sum().backward()
    assert fuse.to_q.weight.grad.abs().sum() > 0 and fuse.to_kv.weight.grad.abs().sum() > 0
    # the tokens of one modality depend on the other modality (cross attention), not on missing ones
    feats2 = feats.detach().clone()
    feats2[1, 1] = 50.0  # missing in sample 1
    feats2[0, 2] += torch.randn_like(feats2[0, 2])  # present in sample 0
    out2 = fuse(feats2, presence)
    torch.testing.assert_close(out2[1:], out.detach()[1:])
    attended = fuse.attend(feats2, presence)
    assert not torch.allclose(attended[0, 0], fuse.attend(feats.detach(), presence)[0, 0])
    torch.testing.assert_close(jit_script(fuse)(feats.detach(), presence), out.detach())
    with pytest.raises(ValueError, match="divisible"):
        CrossModalAttentionFusion(6, num_heads=4)


def test_tabular_missing_indicator():
    enc = TabularMissingIndicator(3, name="Net")
    x = torch.tensor([[1.0, float("nan"), 2.0]])
    assert enc(x).tolist() == [[1.0, 0.0, 2.0, 0.0, 1.0, 0.0]]
    with pytest.raises(ValueError, match=r"Net: `tabular` must have shape \(B, T=3\)"):
        enc(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="Net: `tabular` contains NaN.*missing_indicator=False"):
        TabularMissingIndicator(3, missing_indicator=False, name="Net")(x)


@pytest.mark.parametrize("spatial", [(4, 4), (2, 2, 2)])
def test_film_and_daft(spatial, jit_script):
    torch.manual_seed(0)
    x = torch.randn(2, 6, *spatial)
    film = FiLMBlock(6, 3, hidden_features=5, identity_init=True)
    torch.testing.assert_close(film(x, torch.randn(2, 3)), x)  # identity at initialisation
    torch.nn.init.normal_(film.generator[-1].weight)
    z = torch.randn(2, 3, requires_grad=True)
    y = film(x, z)
    y.sum().backward()
    assert z.grad.abs().sum() > 0
    daft = DAFTBlock(6, 3, reduction=2)
    a, b = daft(x, torch.zeros(2, 3)), daft(x, torch.ones(2, 3))
    assert a.shape == x.shape and not torch.allclose(a, b)
    # DAFT's scale/offset depend on the image too: same tabular, different image -> different affine
    x2 = x * 2.0
    assert not torch.allclose(daft(x2, torch.zeros(2, 3)), 2.0 * a)
    sig = DAFTBlock(6, 3, scale_activation="sigmoid")
    torch.testing.assert_close(jit_script(sig)(x, z.detach()), sig(x, z.detach()))
    torch.testing.assert_close(jit_script(film)(x, z.detach()), film(x, z.detach()))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_late_fusion(spatial_dims, jit_script):
    torch.manual_seed(0)
    n = 4**spatial_dims
    models = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * n, 3)) for _ in range(3)]
    late = LateFusion(models, channels_per_modality=2, spatial_dims=spatial_dims, learn_weights=True)
    image = torch.randn(2, 6, *([4] * spatial_dims))
    presence = torch.tensor([[1, 0, 0], [1, 1, 1]])
    out = late(image, presence)
    torch.testing.assert_close(out[0], models[0](image[:1, :2])[0])
    torch.testing.assert_close(
        out[1], torch.stack([m(image[1:, 2 * i : 2 * i + 2])[0] for i, m in enumerate(models)]).mean(0)
    )
    out.sum().backward()
    assert all(m[1].weight.grad is not None for m in models)
    torch.testing.assert_close(jit_script(late)(image, presence), out.detach())
    with pytest.raises(ValueError, match=r"LateFusion: `image` must have shape \(B, M\*C=3\*2=6"):
        late(torch.randn(2, 4, *([4] * spatial_dims)))
