"""Whole-slide images: tile-bounded padded region reads, tissue masks, patch grids and datasets,
heat maps written back as pyramidal TIFF, and GeoJSON annotations to masks and boxes.

Needs the ``wsi`` extra (``pip install "monai-ext[wsi]"``: tifffile, imagecodecs, OpenSlide,
scikit-image); cuCIM is used when installed and asked for.

Example:
    >>> from monai_ext.data.wsi import Slide, patch_grid
    >>> # with Slide("slide.tif") as s:
    >>> #     grid = patch_grid(s, 224, mpp=1.0, min_tissue=0.5)
"""

from monai_ext.data.wsi.annotations import (
    Annotation,
    annotations_to_boxes,
    annotations_to_mask,
    load_annotations,
)
from monai_ext.data.wsi.dataset import SlidePatchDataset
from monai_ext.data.wsi.grid import PatchGrid, mask_fraction, patch_grid, read_patch
from monai_ext.data.wsi.heatmap import write_heatmap
from monai_ext.data.wsi.reader import (
    FILL,
    PaddedOpenSlideWSIReader,
    Slide,
    TiledTiffWSIReader,
    check_slide_path,
    read_tiff_region,
)
from monai_ext.data.wsi.tissue import tissue_mask, tissue_mask_from_rgb

__all__ = [
    "FILL",
    "Annotation",
    "PaddedOpenSlideWSIReader",
    "PatchGrid",
    "Slide",
    "SlidePatchDataset",
    "TiledTiffWSIReader",
    "annotations_to_boxes",
    "annotations_to_mask",
    "check_slide_path",
    "load_annotations",
    "mask_fraction",
    "patch_grid",
    "read_patch",
    "read_tiff_region",
    "tissue_mask",
    "tissue_mask_from_rgb",
    "write_heatmap",
]
