"""Segmentation networks: a MONAI UNet factory and a multi-encoder fusion UNet for missing modalities.

:func:`build_unet` returns ``monai.networks.nets.UNet`` with every hyperparameter explicit.
:class:`MultiEncoderFusionUNet` follows the multimodal convention of :mod:`monai_ext.networks.utils`:
one encoder per modality (multi-sequence MRI, CT + PET), the skip connections fused at every level over
the modalities present (HeMIS mean + variance, or gated attention; optional cross-modal attention at the
bottleneck), one shared decoder. It takes ``forward(image, presence=None)`` with ``image``
``(B, M*C, *spatial)``; missing modalities are all-zero channels. Spatial sizes must be divisible by
``prod(strides)``.

Example:
    >>> import torch
    >>> net = MultiEncoderFusionUNet(3, num_modalities=4, channels_per_modality=1, out_channels=2,
    ...                              channels=(4, 8), strides=(2,))
    >>> net(torch.randn(1, 4, 16, 16, 16)).shape
    torch.Size([1, 2, 16, 16, 16])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution, ResidualUnit
from monai.networks.nets import UNet
from torch import nn

from monai_ext.networks.blocks import ModalityDropout
from monai_ext.networks.fusion import CrossModalAttentionFusion, GatedAttentionFusion, HeteroModalFusion
from monai_ext.networks.utils import resolve_presence

__all__ = ["MultiEncoderFusionUNet", "build_unet"]

FUSIONS = ("hemis", "gated")


def build_unet(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    channels: Sequence[int] = (16, 32, 64, 128, 256),
    strides: Sequence[int] = (2, 2, 2, 2),
    kernel_size: int = 3,
    up_kernel_size: int = 3,
    num_res_units: int = 2,
    act: str | tuple = "PRELU",
    norm: str | tuple = "INSTANCE",
    dropout: float = 0.0,
    bias: bool = True,
    adn_ordering: str = "NDA",
) -> UNet:
    """``monai.networks.nets.UNet`` with every hyperparameter an explicit argument (2D or 3D).

    Example:
        >>> net = build_unet(2, 1, 2, channels=(4, 8), strides=(2,), num_res_units=1)
        >>> net(torch.zeros(1, 1, 16, 16)).shape
        torch.Size([1, 2, 16, 16])
    """
    if len(strides) != len(channels) - 1:
        raise ValueError(
            f"build_unet: `strides` must have len(channels) - 1 = {len(channels) - 1} entries, "
            f"got {len(strides)}."
        )
    return UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=tuple(strides),
        kernel_size=kernel_size,
        up_kernel_size=up_kernel_size,
        num_res_units=num_res_units,
        act=act,
        norm=norm,
        dropout=dropout,
        bias=bias,
        adn_ordering=adn_ordering,
    )


class _AttendThenFuse(nn.Module):
    def __init__(self, attention: CrossModalAttentionFusion, fuse: nn.Module) -> None:
        super().__init__()
        self.attention = attention
        self.fuse = fuse

    def forward(self, features: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.attention.attend(features, presence), presence)


class _UpBlock(nn.Module):
    def __init__(self, up: nn.Module, conv: nn.Module) -> None:
        super().__init__()
        self.up = up
        self.conv = conv

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class MultiEncoderFusionUNet(nn.Module):
    """Per-modality encoders, skip connections fused over present modalities, one decoder.

    Args:
        spatial_dims: 2 or 3.
        num_modalities: ``M``.
        channels_per_modality: ``C``.
        out_channels: output channels (classes).
        channels: encoder channels per level (per modality).
        strides: downsampling stride between levels, ``len(channels) - 1`` entries.
        num_res_units: sub-units per ``ResidualUnit`` (>= 1).
        kernel_size: convolution kernel size.
        up_kernel_size: transposed-convolution kernel size.
        act: activation (MONAI name).
        norm: normalisation (MONAI name).
        dropout: dropout in the residual units.
        fusion: ``"hemis"`` (mean + variance) or ``"gated"`` (gated attention).
        attention_heads: if > 0, cross-modal attention with this many heads at the bottleneck, before fusion.
        modality_dropout: ModDrop probability applied in training mode (0 disables).

    Example:
        >>> net = MultiEncoderFusionUNet(2, 2, 1, 3, channels=(4, 8), strides=(2,), fusion="gated")
        >>> net(torch.randn(2, 2, 16, 16), presence=torch.tensor([[1, 0], [1, 1]])).shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(
        self,
        spatial_dims: int,
        num_modalities: int,
        channels_per_modality: int,
        out_channels: int,
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int] = (2, 2, 2),
        num_res_units: int = 1,
        kernel_size: int = 3,
        up_kernel_size: int = 3,
        act: str | tuple = "PRELU",
        norm: str | tuple = "INSTANCE",
        dropout: float = 0.0,
        fusion: str = "hemis",
        attention_heads: int = 0,
        modality_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if len(strides) != len(channels) - 1:
            raise ValueError(
                f"{name}: `strides` must have len(channels) - 1 = {len(channels) - 1} entries, "
                f"got {len(strides)}."
            )
        if fusion not in FUSIONS:
            raise ValueError(f"{name}: `fusion` must be one of {FUSIONS}, got {fusion!r}.")
        if num_modalities < 1:
            raise ValueError(f"{name}: `num_modalities` must be >= 1, got {num_modalities}.")
        self.spatial_dims = spatial_dims
        self.num_modalities = num_modalities
        self.channels_per_modality = channels_per_modality
        subunits = max(1, num_res_units)

        def unit(cin: int, cout: int, stride: int) -> ResidualUnit:
            return ResidualUnit(
                spatial_dims,
                cin,
                cout,
                strides=stride,
                kernel_size=kernel_size,
                subunits=subunits,
                act=act,
                norm=norm,
                dropout=dropout,
            )

        levels = []
        fusions = []
        fused_channels = []
        for i, ch in enumerate(channels):
            cin = channels_per_modality if i == 0 else channels[i - 1]
            stride = 1 if i == 0 else strides[i - 1]
            levels.append(nn.ModuleList([unit(cin, ch, stride) for _ in range(num_modalities)]))
            if fusion == "hemis":
                fuse: nn.Module = HeteroModalFusion(include_variance=True)
                fused_channels.append(2 * ch)
            else:
                fuse = GatedAttentionFusion(ch, hidden_features=max(4, ch // 2))
                fused_channels.append(ch)
            if attention_heads > 0 and i == len(channels) - 1:
                fuse = _AttendThenFuse(CrossModalAttentionFusion(ch, num_heads=attention_heads), fuse)
            fusions.append(fuse)
        self.encoder_levels = nn.ModuleList(levels)
        self.fusions = nn.ModuleList(fusions)

        decoder = []
        dec_in = fused_channels[-1]
        for i in range(len(channels) - 2, -1, -1):
            up = Convolution(
                spatial_dims,
                dec_in,
                channels[i],
                strides=strides[i],
                kernel_size=up_kernel_size,
                act=act,
                norm=norm,
                dropout=dropout,
                is_transposed=True,
            )
            decoder.append(_UpBlock(up, unit(channels[i] + fused_channels[i], channels[i], 1)))
            dec_in = channels[i]
        self.decoder = nn.ModuleList(decoder)
        self.head = Convolution(spatial_dims, dec_in, out_channels, kernel_size=1, conv_only=True)
        self.modality_dropout = ModalityDropout(num_modalities, channels_per_modality, modality_dropout)

    def forward(self, image: torch.Tensor, presence: torch.Tensor | None = None) -> torch.Tensor:
        mask = resolve_presence(
            image,
            presence,
            self.num_modalities,
            self.channels_per_modality,
            self.spatial_dims,
            "MultiEncoderFusionUNet",
        )
        image, mask = self.modality_dropout(image, mask)
        c = self.channels_per_modality
        xs: list[torch.Tensor] = [image[:, m * c : (m + 1) * c] for m in range(self.num_modalities)]
        per_level: list[torch.Tensor] = []
        for level in self.encoder_levels:
            new_xs: list[torch.Tensor] = []
            for m, encoder in enumerate(level):
                new_xs.append(encoder(xs[m]))
            xs = new_xs
            per_level.append(torch.stack(xs, dim=1))
        fused: list[torch.Tensor] = []
        for i, fuse in enumerate(self.fusions):
            fused.append(fuse(per_level[i], mask))
        x = fused[-1]
        n = len(fused)
        for i, block in enumerate(self.decoder):
            x = block(x, fused[n - 2 - i])
        return self.head(x)
