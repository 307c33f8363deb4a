"""batch layer of monai_ext.transforms (base class, intensity, spatial and stain operations, hook)."""

from monai_ext.transforms.batch import base, hook, intensity, spatial, stain
from monai_ext.transforms.batch.base import *  # noqa: F401,F403
from monai_ext.transforms.batch.hook import *  # noqa: F401,F403
from monai_ext.transforms.batch.intensity import *  # noqa: F401,F403
from monai_ext.transforms.batch.spatial import *  # noqa: F401,F403
from monai_ext.transforms.batch.stain import *  # noqa: F401,F403

__all__ = [*base.__all__, *intensity.__all__, *spatial.__all__, *stain.__all__, *hook.__all__]
