"""Fixtures shared by the test suite (defined in ``helpers.py``, also used by ``benchmarks/``)."""

from helpers import pbfast_process

__all__ = ["pbfast_process"]
