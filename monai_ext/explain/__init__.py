"""monai_ext.explain: attribution maps over ``monai.visualize`` for our 2D/3D and image + tabular networks.

- :mod:`~monai_ext.explain.cam`: Grad-CAM / Grad-CAM++ with automatic target layer, ``BoundInputs``.
- :mod:`~monai_ext.explain.occlusion`: occlusion sensitivity as an importance map.
- :mod:`~monai_ext.explain.tabular`: per-feature integrated gradients / occlusion for the tabular branch.
- :mod:`~monai_ext.explain.overlay`: NIfTI and PNG-overlay writers.
- :mod:`~monai_ext.explain.handlers`: ``AttributionSaver``, the bundle switch.
- :mod:`~monai_ext.explain.image_tabular`: ``ImageTabularAttributionSaver`` (NIfTI/PNG + per-feature CSV).

Example:
    >>> import torch
    >>> from monai_ext.networks import build_densenet
    >>> net = build_densenet(121, 3, 1, 2, init_features=4, growth_rate=4)
    >>> grad_cam(net, torch.rand(1, 1, 32, 32, 32)).shape
    torch.Size([1, 1, 32, 32, 32])
"""

from monai_ext.explain.cam import BoundInputs, find_target_layer, grad_cam, normalize_per_sample
from monai_ext.explain.handlers import AttributionSaver
from monai_ext.explain.image_tabular import ImageTabularAttributionSaver
from monai_ext.explain.occlusion import occlusion_map
from monai_ext.explain.overlay import overlay_rgb, save_attribution_nifti, save_attribution_png
from monai_ext.explain.tabular import tabular_integrated_gradients, tabular_occlusion

__all__ = [
    "AttributionSaver",
    "BoundInputs",
    "ImageTabularAttributionSaver",
    "find_target_layer",
    "grad_cam",
    "normalize_per_sample",
    "occlusion_map",
    "overlay_rgb",
    "save_attribution_nifti",
    "save_attribution_png",
    "tabular_integrated_gradients",
    "tabular_occlusion",
]
