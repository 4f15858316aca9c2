"""Benchmarks run with pytest-benchmark; they share the test suite's process helpers (``tests/helpers.py``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "pocketbase"))

from helpers import pbfast_process  # noqa: E402

__all__ = ["pbfast_process"]
