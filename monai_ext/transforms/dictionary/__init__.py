"""dictionary layer of monai_ext.transforms (intensity, spatial, stain and clinical-table operations)."""

from monai_ext.transforms.dictionary import intensity, spatial, stain, tabular
from monai_ext.transforms.dictionary.intensity import *  # noqa: F401,F403
from monai_ext.transforms.dictionary.spatial import *  # noqa: F401,F403
from monai_ext.transforms.dictionary.stain import *  # noqa: F401,F403
from monai_ext.transforms.dictionary.tabular import *  # noqa: F401,F403

__all__ = [*intensity.__all__, *spatial.__all__, *stain.__all__, *tabular.__all__]
