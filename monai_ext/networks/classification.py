"""Classification and survival networks: a MONAI DenseNet factory and an image + tabular network.

:func:`build_densenet` returns ``monai.networks.nets.DenseNet121`` or ``DenseNet169`` (2D or 3D) with
every hyperparameter explicit.

:class:`ImageTabularNet` follows the multimodal convention of :mod:`monai_ext.networks.utils`:
``forward(image, presence=None, tabular=None)`` with ``image`` ``(B, M*C, *spatial)`` (missing modality =
all-zero channels) and ``tabular`` ``(B, T)`` clinical variables (NaN = missing, encoded with an explicit
missingness indicator). In MONAI workflows pass ``tabular`` through ``extra_forward_args`` or a batch
key. Pipeline: per-modality CNN encoders -> HeMIS fusion over present modalities -> FiLM / DAFT
conditioning on the tabular embedding (or late concatenation) -> global pooling -> heads.

The output is ONE tensor ``(B, num_classes + S)``: columns ``[0, num_classes)`` are class logits, the
next ``S`` columns the survival head (``S = 1`` log-risk for ``"cox"``, ``S = num_time_bins`` hazard
logits for ``"discrete"``, ``S = 0`` without survival head). :meth:`ImageTabularNet.split_outputs`
returns them by name.

Example:
    >>> import torch
    >>> net = ImageTabularNet(2, 1, 1, tabular_features=3, num_classes=2, survival="cox",
    ...                       channels=(4, 8), strides=(2,))
    >>> out = net(torch.randn(2, 1, 16, 16), tabular=torch.tensor([[1.0, float("nan"), 0.0]] * 2))
    >>> {k: tuple(v.shape) for k, v in net.split_outputs(out).items()}
    {'logits': (2, 2), 'survival': (2, 1)}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import ResidualUnit
from monai.networks.nets import DenseNet121, DenseNet169
from torch import nn

from monai_ext.networks.blocks import DAFTBlock, FiLMBlock, TabularMissingIndicator
from monai_ext.networks.fusion import HeteroModalFusion
from monai_ext.networks.utils import resolve_presence

__all__ = ["ImageTabularNet", "build_densenet"]

CONDITIONINGS = ("film", "daft", "concat")
SURVIVAL_HEADS = (None, "cox", "discrete")


def build_densenet(
    depth: int,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    init_features: int = 64,
    growth_rate: int = 32,
    bn_size: int = 4,
    act: str | tuple = ("relu", {"inplace": True}),
    norm: str | tuple = "batch",
    dropout_prob: float = 0.0,
    pretrained: bool = False,
) -> nn.Module:
    """``monai.networks.nets.DenseNet121`` (``depth=121``) or ``DenseNet169`` (``depth=169``).

    ``pretrained=True`` (2D only) downloads ImageNet weights through MONAI/torchvision and needs
    ``init_features=64, growth_rate=32, bn_size=4``.

    Example:
        >>> net = build_densenet(121, 2, 1, 3, init_features=8, growth_rate=4)
        >>> net.eval()(torch.zeros(1, 1, 32, 32)).shape
        torch.Size([1, 3])
    """
    classes = {121: DenseNet121, 169: DenseNet169}
    if depth not in classes:
        raise ValueError(f"build_densenet: `depth` must be 121 or 169, got {depth}.")
    return classes[depth](
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        init_features=init_features,
        growth_rate=growth_rate,
        bn_size=bn_size,
        act=act,
        norm=norm,
        dropout_prob=dropout_prob,
        pretrained=pretrained,
    )


class _Unconditioned(nn.Module):
    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return x


class ImageTabularNet(nn.Module):
    """Per-modality image encoders + tabular conditioning (FiLM / DAFT / concat) + class/survival heads.

    Args:
        spatial_dims: 2 or 3.
        num_modalities: ``M`` (1 for a single image).
        channels_per_modality: ``C``.
        tabular_features: width ``T`` of ``tabular`` (0: image only, ``tabular`` must be ``None``).
        num_classes: classification logits (0: no classification head).
        survival: ``None``, ``"cox"`` (one log-risk) or ``"discrete"`` (``num_time_bins`` hazard logits).
        num_time_bins: intervals of the discrete-time survival head.
        channels: encoder channels per level (per modality).
        strides: stride of each level after the first, ``len(channels) - 1`` entries.
        num_res_units: sub-units per ``ResidualUnit``.
        act: activation (MONAI name).
        norm: normalisation (MONAI name).
        conditioning: ``"film"``, ``"daft"`` or ``"concat"`` (pooled image features ++ tabular embedding).
        tabular_hidden: width of the tabular embedding MLP.
        missing_indicator: encode NaN in ``tabular`` with indicator columns; if ``False`` NaN raises.
        daft_reduction: bottleneck reduction factor of DAFT.
        dropout: dropout before the heads.

    Example:
        >>> net = ImageTabularNet(3, 2, 1, 4, num_classes=0, survival="discrete", num_time_bins=5,
        ...                       channels=(4, 8), strides=(2,), conditioning="daft")
        >>> net(torch.randn(1, 2, 8, 8, 8), tabular=torch.zeros(1, 4)).shape
        torch.Size([1, 5])
    """

    def __init__(
        self,
        spatial_dims: int,
        num_modalities: int,
        channels_per_modality: int,
        tabular_features: int,
        num_classes: int = 2,
        survival: str | None = None,
        num_time_bins: int = 10,
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int] = (2, 2, 2),
        num_res_units: int = 1,
        act: str | tuple = "PRELU",
        norm: str | tuple = "INSTANCE",
        conditioning: str = "film",
        tabular_hidden: int = 32,
        missing_indicator: bool = True,
        daft_reduction: int = 7,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if len(strides) != len(channels) - 1:
            raise ValueError(f"{name}: `strides` must have len(channels) - 1 = {len(channels) - 1} entries.")
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"{name}: `conditioning` must be one of {CONDITIONINGS}, got {conditioning!r}.")
        if survival not in SURVIVAL_HEADS:
            raise ValueError(f"{name}: `survival` must be one of {SURVIVAL_HEADS}, got {survival!r}.")
        survival_width = 0 if survival is None else (1 if survival == "cox" else num_time_bins)
        if num_classes + survival_width < 1:
            raise ValueError(f"{name}: needs `num_classes` > 0 or a `survival` head.")
        self.spatial_dims = spatial_dims
        self.num_modalities = num_modalities
        self.channels_per_modality = channels_per_modality
        self.tabular_features = tabular_features
        self.num_classes = num_classes
        self.survival_width = survival_width

        encoders = []
        for _ in range(num_modalities):
            units = []
            for i, ch in enumerate(channels):
                cin = channels_per_modality if i == 0 else channels[i - 1]
                units.append(
                    ResidualUnit(
                        spatial_dims,
                        cin,
                        ch,
                        strides=1 if i == 0 else strides[i - 1],
                        subunits=max(1, num_res_units),
                        act=act,
                        norm=norm,
                    )
                )
            encoders.append(nn.Sequential(*units))
        self.encoders = nn.ModuleList(encoders)
        self.fusion = HeteroModalFusion(include_variance=num_modalities > 1)
        feat = self.fusion.out_channels(channels[-1])

        self.tabular_encoder: nn.Module | None = None
        self.condition: nn.Module = _Unconditioned()
        pooled = feat
        if tabular_features > 0:
            indicator = TabularMissingIndicator(tabular_features, missing_indicator, name=name)
            self.tabular_encoder = nn.Sequential(
                indicator, nn.Linear(indicator.out_features, tabular_hidden), nn.ReLU()
            )
            if conditioning == "film":
                self.condition = FiLMBlock(feat, tabular_hidden)
            elif conditioning == "daft":
                self.condition = DAFTBlock(feat, tabular_hidden, reduction=daft_reduction)
            else:
                pooled = feat + tabular_hidden
        self.concat_tabular = tabular_features > 0 and conditioning == "concat"
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(pooled, num_classes + survival_width))

    def split_outputs(self, output: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"logits": (B, num_classes), "survival": (B, S)}`` (keys only for the heads that exist)."""
        out: dict[str, torch.Tensor] = {}
        if self.num_classes > 0:
            out["logits"] = output[:, : self.num_classes]
        if self.survival_width > 0:
            out["survival"] = output[:, self.num_classes :]
        return out

    def forward(
        self, image: torch.Tensor, presence: torch.Tensor | None = None, tabular: torch.Tensor | None = None
    ) -> torch.Tensor:
        mask = resolve_presence(
            image,
            presence,
            self.num_modalities,
            self.channels_per_modality,
            self.spatial_dims,
            "ImageTabularNet",
        )
        c = self.channels_per_modality
        feats: list[torch.Tensor] = []
        for m, encoder in enumerate(self.encoders):
            feats.append(encoder(image[:, m * c : (m + 1) * c]))
        x = self.fusion(torch.stack(feats, dim=1), mask)
        tab_encoder = self.tabular_encoder
        if tab_encoder is None:
            if tabular is not None:
                raise ValueError(
                    "ImageTabularNet: `tabular` was given but the network has tabular_features=0."
                )
            return self.head(x.flatten(2).mean(dim=2))
        if tabular is None:
            raise ValueError(
                f"ImageTabularNet: `tabular` of shape (B, {self.tabular_features}) is required, got None."
            )
        emb = tab_encoder(tabular.to(image.device, image.dtype))
        x = self.condition(x, emb)
        pooled = x.flatten(2).mean(dim=2)
        if self.concat_tabular:
            pooled = torch.cat([pooled, emb], dim=1)
        return self.head(pooled)
