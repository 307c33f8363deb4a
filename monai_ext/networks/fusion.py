"""Fusion of per-modality features or predictions, each taking a ``(B, M)`` modality-presence mask.

Feature fusion blocks take ``features`` stacked as ``(B, M, F, *spatial)`` and ``presence`` ``(B, M)``
(bool); missing modalities never contribute, so any non-empty subset of modalities works:

- :class:`HeteroModalFusion`: HeMIS (Havaei et al., MICCAI 2016): mean and variance over the
  modalities present, concatenated -> ``(B, 2F, *spatial)`` (variance is 0 with one modality).
- :class:`GatedAttentionFusion`: gated attention (Ilse et al. 2018) over modalities: a scalar weight per
  sample and modality from pooled features, softmax over the present modalities -> ``(B, F, *spatial)``.
- :class:`CrossModalAttentionFusion`: tokens (voxels) of each modality attend to the tokens of the
  other present modalities (multi-head attention), then a masked mean over modalities.
- :class:`LateFusion`: per-modality models whose predictions are averaged over present modalities.

Example:
    >>> import torch
    >>> fuse = HeteroModalFusion()
    >>> feats = torch.randn(2, 3, 8, 4, 4)
    >>> fuse(feats, torch.tensor([[True, False, True], [False, True, False]])).shape
    torch.Size([2, 16, 4, 4])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from monai_ext.networks.utils import check_presence_rows, resolve_presence

__all__ = ["CrossModalAttentionFusion", "GatedAttentionFusion", "HeteroModalFusion", "LateFusion"]


def _check_features(features: torch.Tensor, presence: torch.Tensor, name: str) -> torch.Tensor:
    if features.dim() < 3:
        raise ValueError(
            f"{name}: `features` must have shape (B, M, F, *spatial), got {list(features.shape)}."
        )
    b, m = features.shape[0], features.shape[1]
    if presence.dim() != 2 or presence.shape[0] != b or presence.shape[1] != m:
        raise ValueError(
            f"{name}: `presence` must have shape (B, M) = ({b}, {m}), got {list(presence.shape)}."
        )
    mask = presence.to(features.device) != 0
    check_presence_rows(mask, name)
    return mask


def _masked_mean(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of ``features`` ``(B, M, ...)`` restricted to ``mask`` ``(B, M)``."""
    w = mask.to(features.dtype).reshape(mask.shape + (1,) * (features.dim() - 2))
    return (features * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)


class HeteroModalFusion(nn.Module):
    """HeMIS fusion: mean (and variance) of per-modality features over the modalities present.

    Args:
        include_variance: concatenate the variance to the mean (output ``2F`` channels), as in HeMIS.

    Example:
        >>> HeteroModalFusion(include_variance=False)(torch.ones(1, 2, 4, 3), torch.tensor([[1, 0]])).shape
        torch.Size([1, 4, 3])
    """

    def __init__(self, include_variance: bool = True) -> None:
        super().__init__()
        self.include_variance = include_variance

    def out_channels(self, num_features: int) -> int:
        """Channels of the fused output for ``num_features`` input channels per modality."""
        return 2 * num_features if self.include_variance else num_features

    def forward(self, features: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
        mask = _check_features(features, presence, "HeteroModalFusion")
        mean = _masked_mean(features, mask)
        if not self.include_variance:
            return mean
        var = _masked_mean((features - mean.unsqueeze(1)) ** 2, mask)
        return torch.cat([mean, var], dim=1)


class GatedAttentionFusion(nn.Module):
    """Gated attention over modalities: ``a_m = w^T (tanh(V h_m) * sigmoid(U h_m))``, softmax over present.

    ``h_m`` is the spatially averaged feature vector of modality ``m``; the fused output is the weighted
    sum of the full feature maps, ``(B, F, *spatial)``.

    Args:
        num_features: channels ``F`` per modality.
        hidden_features: width of the attention MLP.

    Example:
        >>> fuse = GatedAttentionFusion(8, 4)
        >>> fuse(torch.randn(2, 3, 8, 4, 4), torch.ones(2, 3, dtype=torch.bool)).shape
        torch.Size([2, 8, 4, 4])
    """

    def __init__(self, num_features: int, hidden_features: int = 32) -> None:
        super().__init__()
        self.attention_v = nn.Linear(num_features, hidden_features)
        self.attention_u = nn.Linear(num_features, hidden_features)
        self.attention_w = nn.Linear(hidden_features, 1)

    @torch.jit.export
    def weights(self, features: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
        """Attention weights ``(B, M)``, zero for missing modalities, summing to 1 per sample."""
        mask = _check_features(features, presence, "GatedAttentionFusion")
        pooled = features.flatten(3).mean(dim=3) if features.dim() > 3 else features
        gate = torch.tanh(self.attention_v(pooled)) * torch.sigmoid(self.attention_u(pooled))
        scores = self.attention_w(gate).squeeze(-1).masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, dim=1)

    def forward(self, features: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
        w = self.weights(features, presence)
        return (features * w.reshape(w.shape + (1,) * (features.dim() - 2))).sum(dim=1)


class CrossModalAttentionFusion(nn.Module):
    """Cross-modal attention: each modality's tokens attend to the tokens of the other present modalities.

    Tokens are the spatial positions of ``(B, M, F, *spatial)``. A pre-norm multi-head attention block
    (queries from modality ``m``, keys/values from modalities ``!= m`` that are present) and a
    feed-forward block update the tokens with residual connections; a modality with no other modality
    present keeps its own tokens. The output is the mean over present modalities, ``(B, F, *spatial)``.
    Memory grows as ``(M * prod(spatial))**2``: use it at a coarse (bottleneck) resolution.

    Args:
        num_features: channels ``F`` (token width); divisible by ``num_heads``.
        num_heads: attention heads.
        mlp_ratio: hidden width of the feed-forward block, in multiples of ``F``.

    Example:
        >>> fuse = CrossModalAttentionFusion(8, num_heads=2)
        >>> fuse(torch.randn(2, 2, 8, 4, 4), torch.tensor([[1, 1], [1, 0]])).shape
        torch.Size([2, 8, 4, 4])
    """

    def __init__(self, num_features: int, num_heads: int = 4, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        if num_features % num_heads != 0:
            raise ValueError(
                f"CrossModalAttentionFusion: `num_features` ({num_features}) must be divisible by "
                f"`num_heads` ({num_heads})."
            )
        self.num_heads = num_heads
        self.head_dim = num_features // num_heads
        self.norm_q = nn.LayerNorm(num_features)
        self.norm_kv = nn.LayerNorm(num_features)
        self.to_q = nn.Linear(num_features, num_features)
        self.to_kv = nn.Linear(num_features, 2 * num_features)
        self.proj = nn.Linear(num_features, num_features)
        hidden = max(1, int(num_features * mlp_ratio))
        self.mlp = nn.Sequential(
            nn.LayerNorm(num_features),
            nn.Linear(num_features, hidden),
            nn.GELU(),
            nn.Linear(hidden, num_features),
        )

    @torch.jit.export
    def attend(self, features: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
        """Updated per-modality features ``(B, M, F, *spatial)`` (before the mean over modalities)."""
        mask = _check_features(features, presence, "CrossModalAttentionFusion")
        b, m, f = features.shape[0], features.shape[1], features.shape[2]
        tokens = features.flatten(3).transpose(2, 3)  # (B, M, N, F)
        n = tokens.shape[2]
        flat = tokens.reshape(b, m * n, f)
        q = self.to_q(self.norm_q(flat)).reshape(b, m * n, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.to_kv(self.norm_kv(flat)).reshape(b, m * n, 2, self.num_heads, self.head_dim)
        k = kv[:, :, 0].transpose(1, 2)
        v = kv[:, :, 1].transpose(1, 2)
        modality = torch.arange(m, device=features.device).repeat_interleave(n)  # modality of each token
        other = modality[:, None] != modality[None, :]  # (MN, MN)
        key_present = mask.repeat_interleave(n, dim=1)  # (B, MN)
        allowed = other[None, :, :] & key_present[:, None, :]  # (B, MN, MN)
        scores = (q @ k.transpose(-2, -1)) * (self.head_dim**-0.5)
        scores = scores.masked_fill(~allowed[:, None], -1.0e4)  # fp16-safe "-inf"
        out = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, m * n, f)
        has_other = allowed.any(dim=2, keepdim=True).to(flat.dtype)  # (B, MN, 1)
        flat = flat + self.proj(out) * has_other
        flat = flat + self.mlp(flat)
        return flat.reshape(b, m, n, f).transpose(2, 3).reshape(features.shape)

    def forward(self, features: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
        mask = presence.to(features.device) != 0
        return _masked_mean(self.attend(features, presence), mask)


class LateFusion(nn.Module):
    """Late fusion: one model per modality, predictions averaged over the modalities present.

    ``forward(image, presence=None)`` splits ``image`` ``(B, M*C, *spatial)`` into modalities, runs model
    ``m`` on modality ``m`` and returns the weighted mean of the predictions over present modalities
    (weights: softmax of learnable per-modality logits if ``learn_weights``, else uniform). Average
    logits for classification/segmentation, or risk scores for survival.

    Args:
        models: ``M`` modules, each mapping ``(B, C, *spatial)`` to predictions of the same shape.
        channels_per_modality: ``C``.
        spatial_dims: 2 or 3.
        learn_weights: learn one weight per modality.

    Example:
        >>> nets = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)) for _ in range(2)]
        >>> LateFusion(nets, 1, 2)(torch.ones(3, 2, 4, 4)).shape
        torch.Size([3, 2])
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        channels_per_modality: int,
        spatial_dims: int,
        learn_weights: bool = False,
    ) -> None:
        super().__init__()
        if len(models) < 1:
            raise ValueError("LateFusion: `models` must hold one model per modality, got none.")
        self.models = nn.ModuleList(models)
        self.num_modalities = len(models)
        self.channels_per_modality = channels_per_modality
        self.spatial_dims = spatial_dims
        self.weight_logits = nn.Parameter(torch.zeros(self.num_modalities), requires_grad=learn_weights)

    def forward(self, image: torch.Tensor, presence: torch.Tensor | None = None) -> torch.Tensor:
        mask = resolve_presence(
            image, presence, self.num_modalities, self.channels_per_modality, self.spatial_dims, "LateFusion"
        )
        c = self.channels_per_modality
        preds: list[torch.Tensor] = []
        for i, model in enumerate(self.models):
            preds.append(model(image[:, i * c : (i + 1) * c]))
        stacked = torch.stack(preds, dim=1)
        w = torch.softmax(self.weight_logits, dim=0)[None, :] * mask.to(stacked.dtype)
        w = w / w.sum(dim=1, keepdim=True)
        return (stacked * w.reshape(w.shape + (1,) * (stacked.dim() - 2))).sum(dim=1)
