"""Building blocks for multimodal networks: modality dropout, tabular missingness, FiLM and DAFT.

- :class:`ModalityDropout`: ModDrop (Neverova et al., "ModDrop: adaptive multi-modal gesture
  recognition", IEEE TPAMI 2016): during training, whole modalities are zeroed at random so the
  network learns to work with any subset; at least one present modality is always kept.
- :class:`TabularMissingIndicator`: NaN in tabular input -> value 0 plus an explicit 0/1 missingness
  indicator column per variable.
- :class:`FiLMBlock`: feature-wise linear modulation (Perez et al., AAAI 2018).
- :class:`DAFTBlock`: dynamic affine feature-map transform (Polsterl et al., MICCAI 2021), written from
  the paper's description (not from its GPL reference code).

Example:
    >>> import torch
    >>> drop = ModalityDropout(num_modalities=4, channels_per_modality=1, drop_prob=0.5).train()
    >>> image, presence = drop(torch.ones(2, 4, 8, 8))
    >>> bool(presence.any(dim=1).all())
    True
"""

from __future__ import annotations

import torch
from torch import nn

from monai_ext.networks.utils import infer_presence

__all__ = ["DAFTBlock", "FiLMBlock", "ModalityDropout", "TabularMissingIndicator"]


class ModalityDropout(nn.Module):
    """Zero whole modalities at random during training (ModDrop), keeping at least one per sample.

    Args:
        num_modalities: number of modalities ``M`` in the ``(B, M*C, ...)`` image.
        channels_per_modality: channels ``C`` per modality.
        drop_prob: probability of dropping each present modality independently.

    ``forward(image, presence=None)`` returns ``(image, presence)``: the image with dropped modalities
    set to zero and the updated ``(B, M)`` bool mask. In ``eval()`` mode the image is unchanged. Random
    draws use the global torch generator on the image's device (seed with ``torch.manual_seed``).

    Example:
        >>> drop = ModalityDropout(2, 1, drop_prob=1.0).train()
        >>> _, p = drop(torch.ones(3, 2, 4, 4))
        >>> p.sum(dim=1).tolist()
        [1, 1, 1]
    """

    def __init__(self, num_modalities: int, channels_per_modality: int = 1, drop_prob: float = 0.5) -> None:
        super().__init__()
        if num_modalities < 1 or channels_per_modality < 1:
            raise ValueError(
                f"ModalityDropout: `num_modalities` and `channels_per_modality` must be >= 1, "
                f"got {num_modalities}, {channels_per_modality}."
            )
        if not 0.0 <= drop_prob <= 1.0:
            raise ValueError(f"ModalityDropout: `drop_prob` must be in [0, 1], got {drop_prob}.")
        self.num_modalities = num_modalities
        self.channels_per_modality = channels_per_modality
        self.drop_prob = drop_prob

    def forward(
        self, image: torch.Tensor, presence: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if image.shape[1] != self.num_modalities * self.channels_per_modality:
            raise ValueError(
                f"ModalityDropout: `image` must have M*C = "
                f"{self.num_modalities}*{self.channels_per_modality} "
                f"channels, got shape {list(image.shape)}."
            )
        if presence is None:
            presence = infer_presence(image, self.num_modalities)
        presence = presence.to(image.device) != 0
        if not self.training or self.drop_prob == 0.0:
            return image, presence
        b = image.shape[0]
        drop = (torch.rand(b, self.num_modalities, device=image.device) < self.drop_prob) & presence
        keep = presence & ~drop
        # samples that lost every modality keep one present modality drawn uniformly at random
        empty = ~keep.any(dim=1, keepdim=True)
        score = torch.rand(b, self.num_modalities, device=image.device) + presence.to(image.dtype)
        rescue = (nn.functional.one_hot(score.argmax(dim=1), self.num_modalities) > 0) & presence & empty
        keep = keep | rescue
        weight = keep.to(image.dtype).repeat_interleave(self.channels_per_modality, dim=1)
        weight = weight.reshape(weight.shape + (1,) * (image.dim() - 2))
        return image * weight, keep


class TabularMissingIndicator(nn.Module):
    """Check tabular input and encode missing values (NaN) with an explicit indicator.

    Args:
        num_features: expected width ``T`` of the ``(B, T)`` tabular input.
        missing_indicator: if ``True`` the output is ``(B, 2T)``: values with NaN replaced by 0,
            followed by ``T`` 0/1 columns (1 = missing). If ``False``, NaN raises ``ValueError``
            and the output is the input, ``(B, T)``.
        name: network name used in error messages.

    Example:
        >>> enc = TabularMissingIndicator(2)
        >>> enc(torch.tensor([[1.0, float("nan")]])).tolist()
        [[1.0, 0.0, 0.0, 1.0]]
    """

    def __init__(self, num_features: int, missing_indicator: bool = True, name: str = "network") -> None:
        super().__init__()
        self.num_features = num_features
        self.missing_indicator = missing_indicator
        self.name = name
        self.out_features = 2 * num_features if missing_indicator else num_features

    def forward(self, tabular: torch.Tensor) -> torch.Tensor:
        if tabular.dim() != 2 or tabular.shape[1] != self.num_features:
            raise ValueError(
                f"{self.name}: `tabular` must have shape (B, T={self.num_features}), "
                f"got {list(tabular.shape)}."
            )
        missing = torch.isnan(tabular)
        if not self.missing_indicator:
            if bool(missing.any()):
                raise ValueError(
                    f"{self.name}: `tabular` contains NaN but the network was built with "
                    f"missing_indicator=False; expected finite (B, {self.num_features}) values."
                )
            return tabular
        values = torch.where(missing, torch.zeros_like(tabular), tabular)
        return torch.cat([values, missing.to(tabular.dtype)], dim=1)


class FiLMBlock(nn.Module):
    """Feature-wise linear modulation: ``(1 + dgamma(z)) * x + beta(z)``, per channel.

    ``gamma`` is parametrised as ``1 + dgamma``. With ``identity_init=True`` the generator's last layer
    starts at zero, so the block starts as the identity (note: then no gradient reaches the conditioning
    input until the first update).

    Args:
        num_channels: channels ``F`` of the feature map ``x`` ``(B, F, *spatial)``.
        cond_features: width of the conditioning vector ``z`` ``(B, K)``.
        hidden_features: hidden width of the generator MLP; 0 for a single linear layer.
        identity_init: zero-initialise the generator's last layer.

    Example:
        >>> film = FiLMBlock(8, 3, identity_init=True)
        >>> bool((film(torch.ones(2, 8, 4, 4), torch.randn(2, 3)) == 1).all())
        True
    """

    def __init__(
        self, num_channels: int, cond_features: int, hidden_features: int = 0, identity_init: bool = False
    ) -> None:
        super().__init__()
        last = nn.Linear(hidden_features if hidden_features > 0 else cond_features, 2 * num_channels)
        if identity_init:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        if hidden_features > 0:
            self.generator = nn.Sequential(nn.Linear(cond_features, hidden_features), nn.ReLU(), last)
        else:
            self.generator = nn.Sequential(last)
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        params = self.generator(cond)
        shape = [x.shape[0], self.num_channels] + [1] * (x.dim() - 2)
        dgamma = params[:, : self.num_channels].reshape(shape)
        beta = params[:, self.num_channels :].reshape(shape)
        return (1.0 + dgamma) * x + beta


class DAFTBlock(nn.Module):
    """Dynamic affine feature-map transform (DAFT), from Polsterl et al., MICCAI 2021.

    As described in the paper: the feature map ``x`` ``(B, F, *spatial)`` is globally average-pooled,
    concatenated with the tabular vector ``z`` ``(B, K)``, and passed through a bottleneck MLP
    (``F+K -> (F+K)//reduction -> 2F``, ReLU) that outputs a per-channel scale ``alpha`` and offset
    ``beta``; the output is ``alpha * x + beta``. Unlike FiLM, the scale and offset depend on the image
    as well as on the tabular data.

    Args:
        num_channels: channels ``F`` of the feature map.
        cond_features: width ``K`` of the tabular vector.
        reduction: bottleneck reduction factor (the paper uses 7).
        scale_activation: ``"linear"`` (``alpha`` unconstrained) or ``"sigmoid"``.
        shift: whether to apply the offset ``beta``.

    Example:
        >>> daft = DAFTBlock(8, 3, reduction=2)
        >>> daft(torch.ones(2, 8, 4, 4, 4), torch.zeros(2, 3)).shape
        torch.Size([2, 8, 4, 4, 4])
    """

    def __init__(
        self,
        num_channels: int,
        cond_features: int,
        reduction: int = 7,
        scale_activation: str = "linear",
        shift: bool = True,
    ) -> None:
        super().__init__()
        if scale_activation not in ("linear", "sigmoid"):
            raise ValueError(
                f"DAFTBlock: `scale_activation` must be 'linear' or 'sigmoid', got {scale_activation!r}."
            )
        hidden = max(1, (num_channels + cond_features) // max(1, reduction))
        self.bottleneck = nn.Sequential(
            nn.Linear(num_channels + cond_features, hidden), nn.ReLU(), nn.Linear(hidden, 2 * num_channels)
        )
        self.num_channels = num_channels
        self.sigmoid_scale = scale_activation == "sigmoid"
        self.shift = shift

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        pooled = x.flatten(2).mean(dim=2)
        params = self.bottleneck(torch.cat([pooled, cond.to(x.dtype)], dim=1))
        shape = [x.shape[0], self.num_channels] + [1] * (x.dim() - 2)
        alpha = params[:, : self.num_channels]
        if self.sigmoid_scale:
            alpha = torch.sigmoid(alpha)
        out = alpha.reshape(shape) * x
        if self.shift:
            out = out + params[:, self.num_channels :].reshape(shape)
        return out
