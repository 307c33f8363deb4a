"""monai_ext.engines."""

__all__: list[str] = []
