"""array intensity transforms."""

__all__: list[str] = []
