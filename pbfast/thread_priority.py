"""A thread at a lower OS priority that goes back to its normal one for short moments (Linux: each thread has
its own nice value).

A heavy tenant's database work gives way to other tenants' for the CPU (:mod:`pbfast.tenant_node.db_scheduler`):
its jobs run on background threads at nice +10, and its answers are handed to granian from there. That hand-over
(granian's ``response_bytes``) wakes granian's thread, and the woken thread, at normal priority, takes the core
from the waker in that very call: the background thread is preempted *holding the GIL*, and every thread of the
process that needs the GIL (the event loop serving the other tenants, granian's thread) waits until the kernel
runs it again, which at nice +10 on busy cores takes long. Measured under a noisy tenant's load (per 1,000 calls):
the call takes 30-47 us of CPU, but on the background thread a mean of 180-1,340 us and a p99 of 0.5-31 ms of wall
time with the GIL held; at the normal priority a mean of 130-270 us, p99 0.4-2.7 ms (benchmarks/RESULTS.md, "Noisy
neighbour"). A shorter GIL switch interval cannot shorten such a wait: the holder has to run to let go.

So :func:`normal_priority` runs such a moment at the thread's normal priority. Only the moment: the job's other
Python at normal priority too took cores from the other tenants (their p50 rose, by up to 1.5 ms). The priority is
lowered again through libc with the GIL released (``os.setpriority`` holds it, and a thread that lowers its own
priority is often preempted in that very call: when tried, over a quarter of the background threads' GIL time).
Going back up needs privilege on Linux (``CAP_SYS_NICE``, or an ``RLIMIT_NICE`` of at least 20); without it the
thread stays at the lower priority throughout (as before).

Thread-safety: everything here acts on the calling thread only (its priority and a thread-local)."""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections.abc import Callable
from types import TracebackType

from pbfast.logs import component_logger

__all__ = ["lower_priority", "lower_priority_but_moments", "normal_priority"]

log = component_logger("TenantNode")

_this_thread = threading.local()  # priorities: (tid, normal nice, lower nice) once set up


def _libc_setpriority() -> Callable[[int, int, int], int] | None:
    """libc's ``setpriority`` through ctypes, which lets go of the GIL for the call."""
    if sys.platform != "linux":
        return None
    function = ctypes.CDLL(None, use_errno=True).setpriority
    function.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int)
    function.restype = ctypes.c_int
    return function


_setpriority = _libc_setpriority()


def _set_nice(thread: int, nice: int) -> None:
    """Set thread ``thread``'s nice value without holding the GIL; OSError if refused."""
    assert _setpriority is not None  # only threads set up by lower_priority_but_moments (Linux) come here
    if _setpriority(os.PRIO_PROCESS, thread, nice) != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def lower_priority(nice: int) -> None:
    """Make the calling thread's OS priority ``nice`` lower for good (raising a nice value needs no privilege).
    Elsewhere than Linux the thread keeps its priority: the node still works, only less fairly."""
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + nice))
    except OSError as err:
        log.warning("cannot lower the priority of a background database thread: %s", err)


def lower_priority_but_moments(nice: int) -> bool:
    """Make the calling thread's priority ``nice`` lower, except in :func:`normal_priority` blocks. Returns False
    when it may not go back up for those (no privilege): then they run at the lower priority too."""
    if _setpriority is None:
        return False
    thread = threading.get_native_id()
    normal = os.getpriority(os.PRIO_PROCESS, thread)
    lower_priority(nice)
    lower = os.getpriority(os.PRIO_PROCESS, thread)
    try:
        _set_nice(thread, normal)  # may it come back up?
    except OSError:
        return False
    _set_nice(thread, lower)
    _this_thread.priorities = (thread, normal, lower)
    return True


class _NormalPriority:
    """The context manager of :func:`normal_priority` (a class: cheaper than a generator's)."""

    __slots__ = ("_priorities",)

    def __enter__(self) -> None:
        priorities = getattr(_this_thread, "priorities", None)
        self._priorities = priorities
        if priorities is not None:
            try:  # going up: no preemption to fear, so with the GIL held (one GIL hand-over less)
                os.setpriority(os.PRIO_PROCESS, priorities[0], priorities[1])
            except OSError as err:  # the privilege was taken away meanwhile: stay lower from now on
                self._priorities = None
                del _this_thread.priorities
                log.warning("a background database thread stays at its lower priority: %s", err)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        priorities = self._priorities
        if priorities is not None:
            try:
                _set_nice(priorities[0], priorities[2])  # going down (no privilege needed): without the GIL
            except OSError as err:  # never seen; the block's work is done, so only say so
                log.warning("a background database thread could not go back to its lower priority: %s", err)


def normal_priority() -> _NormalPriority:
    """While the block runs, a thread set up by :func:`lower_priority_but_moments` runs at its normal priority
    (any other thread: nothing changes). For short moments that hold the GIL and wake a normal-priority thread,
    such as handing an answer to granian: see the module's docstring."""
    return _NormalPriority()
