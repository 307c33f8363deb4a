"""monai_ext.label."""

__all__: list[str] = []
