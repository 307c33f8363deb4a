"""monai_ext.networks: MONAI network factories and multimodal fusion (missing modalities, tabular data).

Multimodal convention (see :mod:`monai_ext.networks.utils`): ``image`` ``(B, M*C, *spatial)`` with
missing modalities as all-zero channels, ``forward(image, presence=None[, tabular=None])``.

TorchScript (``torch.jit.script``, what ``monai.bundle ckpt_export`` uses): every ``nn.Module`` here
scripts, and so do the MONAI networks the factories return (UNet, DenseNet, RetinaNet). The
``RetinaNetDetector`` wrapper does not (Python anchor matching and sampling): export its ``network``.

Example:
    >>> from monai_ext.networks import MultiEncoderFusionUNet, count_parameters
    >>> net = MultiEncoderFusionUNet(2, 2, 1, 2, channels=(4, 8), strides=(2,))
    >>> count_parameters(net) > 0
    True
"""

from monai_ext.networks.blocks import DAFTBlock, FiLMBlock, ModalityDropout, TabularMissingIndicator
from monai_ext.networks.boxes import coco_to_monai_boxes, monai_to_coco_boxes, qupath_geojson_to_monai_boxes
from monai_ext.networks.classification import ImageTabularNet, build_densenet
from monai_ext.networks.detection import (
    AnchorPreset,
    build_anchor_generator,
    build_retinanet,
    build_retinanet_detector,
    lung_nodule_anchor_preset,
    nuclei_anchor_preset,
)
from monai_ext.networks.fusion import (
    CrossModalAttentionFusion,
    GatedAttentionFusion,
    HeteroModalFusion,
    LateFusion,
)
from monai_ext.networks.segmentation import MultiEncoderFusionUNet, build_unet
from monai_ext.networks.utils import count_parameters, infer_presence, resolve_presence, split_modalities

__all__ = [
    "AnchorPreset",
    "CrossModalAttentionFusion",
    "DAFTBlock",
    "FiLMBlock",
    "GatedAttentionFusion",
    "HeteroModalFusion",
    "ImageTabularNet",
    "LateFusion",
    "ModalityDropout",
    "MultiEncoderFusionUNet",
    "TabularMissingIndicator",
    "build_anchor_generator",
    "build_densenet",
    "build_retinanet",
    "build_retinanet_detector",
    "build_unet",
    "coco_to_monai_boxes",
    "count_parameters",
    "infer_presence",
    "lung_nodule_anchor_preset",
    "monai_to_coco_boxes",
    "nuclei_anchor_preset",
    "qupath_geojson_to_monai_boxes",
    "resolve_presence",
    "split_modalities",
]
