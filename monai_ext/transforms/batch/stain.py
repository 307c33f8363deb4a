"""batch stain transforms."""

__all__: list[str] = []
