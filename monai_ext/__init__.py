"""monai-ext: MONAI extensions for radiology and pathology research.

Importing ``monai_ext`` pulls in no optional dependency (tifffile, openslide, highdicom,
monailabel, mlflow, ...): each submodule imports those lazily, where it needs them.

Example:
    >>> import monai_ext
    >>> isinstance(monai_ext.__version__, str)
    True
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
