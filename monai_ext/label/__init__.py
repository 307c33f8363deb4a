"""MONAI Label integration: an app that serves and trains the monai-ext bundles.

``monai_ext.label.bundles`` needs nothing beyond monai-ext; ``monai_ext.label.app`` and
``monai_ext.label.tasks`` need the ``label`` extra (``pip install monai-ext[label]``).

Example:
    >>> from monai_ext.label import servable_bundles
    >>> servable_bundles()["he_tissue_classification"]
    'classification'
"""

from monai_ext.label.bundles import (
    KINDS,
    bundle_kind,
    init_checkpoint,
    label_map,
    servable_bundles,
    write_app,
)

__all__ = ["KINDS", "bundle_kind", "init_checkpoint", "label_map", "servable_bundles", "write_app"]
