"""pbfast: many PocketBase-compatible backends served as one service."""

from pbfast._native import __version__

__all__ = ["__version__"]
