"""RetinaNet detection over ``monai.apps.detection``: network and detector factories, anchor presets.

Boxes follow MONAI's ``StandardMode`` (``xyxy`` / ``xyzxyz``, ``x`` = first spatial axis of the array,
exclusive max); see :mod:`monai_ext.networks.boxes` for COCO / QuPath conversion.

Anchor presets (:class:`AnchorPreset`) give anchor shapes in pixels/voxels for a given resolution:

- :func:`nuclei_anchor_preset`: cell nuclei (about 6-18 um across) on H&E/IHC patches at
  0.25-0.5 um/px (2D).
- :func:`lung_nodule_anchor_preset`: lung nodules on CT (3D), the shapes of MONAI's LUNA16 RetinaNet
  tutorial (defined at 0.703125 x 0.703125 x 1.25 mm) rescaled to the given voxel spacing.

Example:
    >>> preset = nuclei_anchor_preset(microns_per_pixel=0.5)
    >>> preset.base_anchor_shapes[0]
    (12.0, 12.0)
    >>> anchors = build_anchor_generator(preset)
    >>> anchors.num_anchors_per_location()
    [4, 4]
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.apps.detection.networks.retinanet_network import RetinaNet, resnet_fpn_feature_extractor
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
from monai.networks.blocks.backbone_fpn_utils import BackboneWithFPN, LastLevelMaxPool
from monai.networks.nets import resnet

__all__ = [
    "AnchorPreset",
    "build_anchor_generator",
    "build_retinanet",
    "build_retinanet_detector",
    "lung_nodule_anchor_preset",
    "nuclei_anchor_preset",
]

# nuclei: base shapes in micrometres (round, and elongated along either axis)
_NUCLEI_SHAPES_UM = ((6.0, 6.0), (8.0, 8.0), (6.0, 10.0), (10.0, 6.0))
# MONAI LUNA16 RetinaNet tutorial anchors (voxels) and the spacing (mm) they were defined at
_LUNA16_SHAPES_VOX = ((6.0, 8.0, 4.0), (8.0, 6.0, 5.0), (10.0, 10.0, 6.0))
_LUNA16_SPACING_MM = (0.703125, 0.703125, 1.25)


@dataclass(frozen=True)
class AnchorPreset:
    """Anchor and backbone settings that belong together.

    ``len(feature_map_scales) == len(returned_layers) + 1`` (the FPN adds one max-pooled level);
    ``base_anchor_shapes`` are in pixels/voxels along the array's spatial axes (MONAI box order).
    """

    feature_map_scales: tuple[float, ...]
    base_anchor_shapes: tuple[tuple[float, ...], ...]
    returned_layers: tuple[int, ...]
    conv1_t_stride: tuple[int, ...]
    description: str


def nuclei_anchor_preset(microns_per_pixel: float = 0.5) -> AnchorPreset:
    """Anchors for nuclei (6-10 um base shapes, x1 and x2 levels: 6-20 um) on 2D patches.

    Designed for 0.25-0.5 um/px (40x-20x); other resolutions warn.

    Example:
        >>> nuclei_anchor_preset(0.25).base_anchor_shapes[1]
        (32.0, 32.0)
    """
    if not microns_per_pixel > 0:
        raise ValueError(f"nuclei_anchor_preset: `microns_per_pixel` must be > 0, got {microns_per_pixel}.")
    if not 0.2 <= microns_per_pixel <= 0.6:
        warnings.warn(
            f"nuclei_anchor_preset: designed for 0.25-0.5 um/px, got {microns_per_pixel}; "
            "check the anchor sizes.",
            stacklevel=2,
        )
    shapes = tuple(tuple(s / microns_per_pixel for s in shape) for shape in _NUCLEI_SHAPES_UM)
    return AnchorPreset(
        feature_map_scales=(1.0, 2.0),
        base_anchor_shapes=shapes,
        returned_layers=(1,),
        conv1_t_stride=(2, 2),
        description=f"nuclei at {microns_per_pixel} um/px",
    )


def lung_nodule_anchor_preset(spacing: Sequence[float] = _LUNA16_SPACING_MM) -> AnchorPreset:
    """Anchors for lung nodules on CT at voxel ``spacing`` (mm, in the array's spatial axis order).

    At the default spacing this is MONAI's LUNA16 tutorial setting (anchors 6x8x4, 8x6x5, 10x10x6 voxels,
    levels x1, x2, x4: about 3-30 mm).

    Example:
        >>> lung_nodule_anchor_preset((1.40625, 1.40625, 2.5)).base_anchor_shapes[0]
        (3.0, 4.0, 2.0)
    """
    if len(spacing) != 3 or not all(s > 0 for s in spacing):
        raise ValueError(
            f"lung_nodule_anchor_preset: `spacing` must be 3 positive values (mm), got {spacing}."
        )
    shapes = tuple(
        tuple(v * ref / s for v, ref, s in zip(shape, _LUNA16_SPACING_MM, spacing))
        for shape in _LUNA16_SHAPES_VOX
    )
    return AnchorPreset(
        feature_map_scales=(1.0, 2.0, 4.0),
        base_anchor_shapes=shapes,
        returned_layers=(1, 2),
        conv1_t_stride=(2, 2, 1),
        description=f"lung nodules on CT at spacing {tuple(spacing)} mm",
    )


def build_anchor_generator(preset: AnchorPreset, indexing: str = "ij") -> AnchorGeneratorWithAnchorShape:
    """``AnchorGeneratorWithAnchorShape`` from a preset (``indexing="ij"``: MONAI's box order)."""
    return AnchorGeneratorWithAnchorShape(
        feature_map_scales=preset.feature_map_scales,
        base_anchor_shapes=preset.base_anchor_shapes,
        indexing=indexing,
    )


def build_retinanet(
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    num_anchors: int,
    returned_layers: Sequence[int] = (1, 2),
    conv1_t_stride: Sequence[int] = (2, 2, 1),
    conv1_t_size: int = 7,
    block: str = "bottleneck",
    layers: Sequence[int] = (3, 4, 6, 3),
    block_inplanes: Sequence[int] = (64, 128, 256, 512),
    norm: str | tuple = "batch",
    fpn_channels: int = 256,
) -> RetinaNet:
    """MONAI ``RetinaNet`` over a ResNet-FPN backbone (defaults: ResNet50, as in MONAI's LUNA16 tutorial).

    ``fpn_channels`` sets the FPN width (MONAI's extractor fixes 256; smaller widths make CPU runs and
    small data sets practical).

    ``size_divisible`` is derived as in the tutorial: ``conv1_t_stride * 2 * 2**max(returned_layers)``.
    The returned network is TorchScript-scriptable; the detector around it is not (see
    :func:`build_retinanet_detector`).

    Example:
        >>> preset = nuclei_anchor_preset(0.5)
        >>> net = build_retinanet(2, 3, 1, 4, preset.returned_layers, preset.conv1_t_stride,
        ...                       layers=(1, 1, 1, 1), block="basic", block_inplanes=(8, 16, 32, 64))
        >>> net.size_divisible
        (8, 8)
    """
    if len(conv1_t_stride) != spatial_dims:
        raise ValueError(
            f"build_retinanet: `conv1_t_stride` must have spatial_dims={spatial_dims} entries, "
            f"got {conv1_t_stride}."
        )
    if block not in ("basic", "bottleneck"):
        raise ValueError(f"build_retinanet: `block` must be 'basic' or 'bottleneck', got {block!r}.")
    backbone = resnet.ResNet(
        block=resnet.ResNetBottleneck if block == "bottleneck" else resnet.ResNetBlock,
        layers=list(layers),
        block_inplanes=list(block_inplanes),
        spatial_dims=spatial_dims,
        n_input_channels=in_channels,
        conv1_t_stride=tuple(conv1_t_stride),
        conv1_t_size=conv1_t_size,
        norm=norm,
    )
    if fpn_channels < 1:
        raise ValueError(f"build_retinanet: `fpn_channels` must be a positive integer, got {fpn_channels}.")
    if fpn_channels == 256:
        feature_extractor = resnet_fpn_feature_extractor(
            backbone=backbone,
            spatial_dims=spatial_dims,
            pretrained_backbone=False,
            trainable_backbone_layers=None,
            returned_layers=list(returned_layers),
        )
    else:  # MONAI's extractor with another FPN width (same return layers and channel rule)
        feature_extractor = BackboneWithFPN(
            backbone,
            return_layers={f"layer{k}": str(v) for v, k in enumerate(returned_layers)},
            in_channels_list=[backbone.in_planes // 8 * 2 ** (i - 1) for i in returned_layers],
            out_channels=fpn_channels,
            spatial_dims=spatial_dims,
            extra_blocks=LastLevelMaxPool(spatial_dims),
        )
    size_divisible = [s * 2 * 2 ** max(returned_layers) for s in conv1_t_stride]
    return RetinaNet(
        spatial_dims=spatial_dims,
        num_classes=num_classes,
        num_anchors=num_anchors,
        feature_extractor=feature_extractor,
        size_divisible=size_divisible,
    )


def build_retinanet_detector(
    network: RetinaNet,
    anchor_generator: AnchorGeneratorWithAnchorShape,
    box_key: str = "box",
    label_key: str = "label",
    atss_num_candidates: int = 4,
    center_in_gt: bool = False,
    batch_size_per_image: int = 64,
    positive_fraction: float = 0.3,
    min_neg: int = 16,
    pool_size: float = 20,
    score_thresh: float = 0.02,
    topk_candidates_per_level: int = 1000,
    nms_thresh: float = 0.22,
    detections_per_img: int = 100,
    box_coder_weights: Sequence[float] | None = None,
) -> RetinaNetDetector:
    """``RetinaNetDetector`` with ATSS matching, hard-negative sampling and box selection set explicitly.

    Training: ``detector.train(); losses = detector(images, targets)`` with ``targets`` a list of
    ``{box_key: (N, 2*spatial_dims) StandardMode boxes, label_key: (N,) long}``; inference:
    ``detector.eval(); detector(images)`` -> list of ``{box_key, label_key, label_key + "_scores"}``.
    The detector itself is not TorchScript-scriptable (Python matching/sampling, dict outputs); export
    ``detector.network`` (a ``RetinaNet``) with ``torch.jit.script`` instead, as MONAI's bundles do.
    Defaults follow MONAI's LUNA16 tutorial.

    Example:
        >>> preset = nuclei_anchor_preset(0.5)
        >>> anchors = build_anchor_generator(preset)
        >>> net = build_retinanet(2, 3, 1, anchors.num_anchors_per_location()[0], preset.returned_layers,
        ...                       preset.conv1_t_stride, layers=(1, 1, 1, 1), block="basic",
        ...                       block_inplanes=(8, 16, 32, 64))
        >>> detector = build_retinanet_detector(net, anchors)
        >>> detector.target_box_key
        'box'
    """
    detector = RetinaNetDetector(network=network, anchor_generator=anchor_generator, debug=False)
    detector.set_target_keys(box_key=box_key, label_key=label_key)
    if box_coder_weights is not None:
        detector.set_box_coder_weights(tuple(box_coder_weights))
    detector.set_atss_matcher(num_candidates=atss_num_candidates, center_in_gt=center_in_gt)
    detector.set_hard_negative_sampler(
        batch_size_per_image=batch_size_per_image,
        positive_fraction=positive_fraction,
        min_neg=min_neg,
        pool_size=pool_size,
    )
    detector.set_box_selector_parameters(
        score_thresh=score_thresh,
        topk_candidates_per_level=topk_candidates_per_level,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
    )
    return detector
