"""Benchmarks run with pytest-benchmark; they share the test suite's process helpers (``tests/helpers.py``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "pocketbase"))

import pytest  # noqa: E402

from helpers import pbfast_process  # noqa: E402

__all__ = ["bench_report", "pbfast_process"]

_REPORT: list[str] = []


@pytest.fixture(scope="session")
def bench_report() -> list[str]:
    """Lines a benchmark adds here are shown after the run (like ``go test -bench`` output), also without -s
    and with pytest-benchmark disabled."""
    return _REPORT


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _REPORT:
        terminalreporter.section("benchmark report")
        for line in _REPORT:
            terminalreporter.write_line(line)
