"""batch spatial transforms."""

__all__: list[str] = []
