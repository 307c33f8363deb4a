"""Device-agnostic, batched torch transforms for radiology and histology.

Four layers, one kernel per operation:

- ``functional``: pure torch kernels on (C, *spatial) or (B, C, *spatial), any device;
- ``array``: MONAI ``Transform`` / ``RandomizableTransform`` classes over the kernels;
- ``dictionary``: ``MapTransform`` wrappers (suffix ``d``);
- ``batch``: ``nn.Module`` augmentations drawing per-sample (B,) parameters on the device.
"""

from monai_ext.transforms import array, batch, dictionary, functional
from monai_ext.transforms.array import *  # noqa: F401,F403
from monai_ext.transforms.batch import *  # noqa: F401,F403
from monai_ext.transforms.dictionary import *  # noqa: F401,F403

__all__ = [*array.__all__, *dictionary.__all__, *batch.__all__, "functional"]
