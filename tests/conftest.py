"""Fixtures shared by the test suite (defined in ``helpers.py``, also used by ``benchmarks/``), and the lock
that lets the suite run on several pytest-xdist workers (`python3 -m pytest -n 2`).

Most of the suite's time is servers starting and waiting, so two workers nearly halve it. A few tests cannot
share the machine: they need fixed ports (``pbfast serve``'s defaults) or measure time or load (start-up
within 5 s, a victim's latency next to a noisy tenant, 100 realtime clients across a move). Those carry
``@pytest.mark.exclusive`` and run alone: every test holds a shared lock, an exclusive one holds it
exclusively. A turnstile taken before either makes a waiting exclusive test go first instead of waiting for
a gap between the other worker's tests that may never come. Without xdist the lock is not used.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from helpers import pbfast_process

__all__ = ["pbfast_process"]


@contextmanager
def _locked(path: Path, operation: int) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, operation)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _turn(run_id: str, exclusive: bool) -> Iterator[None]:
    base = Path(tempfile.gettempdir()) / f"pbfast-pytest-{run_id}"
    turnstile, room = base.with_suffix(".turnstile"), base.with_suffix(".room")
    if exclusive:
        with _locked(turnstile, fcntl.LOCK_EX), _locked(room, fcntl.LOCK_EX):
            yield
        return
    with _locked(turnstile, fcntl.LOCK_EX):
        room_handle = room.open("a")
        fcntl.flock(room_handle, fcntl.LOCK_SH)
    try:
        yield
    finally:
        fcntl.flock(room_handle, fcntl.LOCK_UN)
        room_handle.close()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)  # outermost: the wait is not counted by pytest-timeout
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run_id:
        yield
        return
    with _turn(run_id, exclusive=item.get_closest_marker("exclusive") is not None):
        yield
