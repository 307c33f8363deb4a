"""monai_ext.registration."""

__all__: list[str] = []
