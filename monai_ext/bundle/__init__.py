"""monai-ext bundles: find, list, verify and run the MONAI bundles that ship with the package.

The bundles live in the repository's ``bundles/`` folder and are installed inside the package
(``monai_ext/bundle/zoo``), so ``monai-ext bundle path NAME`` works after a plain ``pip install``.

Example:
    >>> from monai_ext.bundle import bundle_names, bundle_path
    >>> "he_tissue_classification" in bundle_names()
    True
    >>> bundle_path("he_tissue_classification").name
    'he_tissue_classification'
"""

from monai_ext.bundle.registry import (
    SCHEMAS,
    BundleInfo,
    bundle_info,
    bundle_names,
    bundle_path,
    config_files,
    verify_bundle,
)

__all__ = [
    "SCHEMAS",
    "BundleInfo",
    "bundle_info",
    "bundle_names",
    "bundle_path",
    "config_files",
    "verify_bundle",
]
