"""CPU profiles of the running process, taken from inside it: every thread, weighted by the CPU it used.

A sampler thread wakes :data:`SAMPLE_HZ` times a second and, for every thread of the process (Linux's
``/proc/self/task``), reads the CPU time the kernel has counted for it (``clock_gettime`` on the thread's
CPU clock: one system call, no ptrace). A thread that used CPU since the last tick is sampled: a Python
thread with its stack from ``sys._current_frames()``, any other thread (granian's, the Rust extension's) as
one ``[native thread]`` frame. The sample's weight is the CPU time used, so idle threads (waiting on a lock,
a socket, the database queue) cost nothing in the profile, and a thread inside SQLite (which runs without
the GIL) shows the Python line that called it. The main thread, which runs the event loop, samples itself
in a ``SIGPROF`` handler instead (:class:`CpuSampler` says why).

Why in-process rather than py-spy (measured on an all-in-one serving a records list under wrk, 100 Hz,
profiling/README.md): this sampler costs its thread ~3% of one core and the server ~3% of its throughput,
needs no ptrace permission (containers often lack it) and no extra binary. ``py-spy record`` stops the
process for every sample: -23% to -63% throughput; ``--nonblocking`` 0 to -17%, and it needs ptrace. py-spy's
``--native`` sees inside the Rust extension and C libraries, which this cannot: use it for that.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, FrameType

from pbfast.profiling.pprof import FrameInfo, ProfileBuilder, ValueType

__all__ = ["SAMPLE_HZ", "CpuProfile", "CpuSampler", "ProfilingUnavailable", "to_pprof"]

SAMPLE_HZ = 100
_TASKS = Path("/proc/self/task")
# Linux's clockid for a thread's CPU clock: MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED) in the kernel's headers.
_CPUCLOCK_PERTHREAD_SCHED = 6

_PythonFrame = tuple[CodeType, int]  # code object and line being run


class ProfilingUnavailable(RuntimeError):
    """The platform has no per-thread CPU clocks to read (not Linux)."""


def _thread_cpu_ns(tid: int) -> int | None:
    """CPU time the kernel has counted for thread ``tid`` of this process; None once it has exited."""
    try:
        return time.clock_gettime_ns(((~tid) << 3) | _CPUCLOCK_PERTHREAD_SCHED)
    except OSError:
        return None


def _thread_ids() -> list[int]:
    try:
        return [int(name) for name in os.listdir(_TASKS)]
    except OSError as err:
        raise ProfilingUnavailable(f"no per-thread CPU times here ({err.strerror or err})") from err


@dataclass(slots=True)
class CpuProfile:
    """What a sampling run saw: per (thread name, stack root last) the samples and CPU nanoseconds."""

    started_ns: int
    interval_ns: int
    duration_ns: int = 0
    ticks: int = 0
    sampler_cpu_ns: int = 0
    stacks: dict[tuple[str, tuple[_PythonFrame, ...]], list[int]] = field(default_factory=dict)
    modules: dict[CodeType, str] = field(default_factory=dict)

    def weighted_stacks(self) -> Iterator[tuple[str, list[FrameInfo], int, int]]:
        """Each distinct sample as ``(thread, frames leaf first, samples, cpu ns)``."""
        cache: dict[_PythonFrame, FrameInfo] = {}
        for (thread, stack), (count, cpu_ns) in self.stacks.items():
            frames = []
            for code, line in stack:
                info = cache.get((code, line))
                if info is None:
                    info = cache[(code, line)] = self._frame_info(code, line)
                frames.append(info)
            if not frames:  # a thread that runs no Python code
                frames.append(FrameInfo(f"[native thread {thread}]", thread, "", 0, 0))
            yield thread, frames, count, cpu_ns

    def _frame_info(self, code: CodeType, line: int) -> FrameInfo:
        module = self.modules.get(code, "")
        name = f"{module}.{code.co_qualname}" if module else code.co_qualname
        return FrameInfo(name, code.co_qualname, code.co_filename, code.co_firstlineno, line)


class CpuSampler:
    """One sampling run over every thread of the process.

    Threads other than the main one are sampled by :meth:`run` on a thread of its own (which leaves itself
    out). The main thread runs the event loop, which releases the GIL in ``epoll_wait`` between callbacks: a
    sampler thread waiting for the GIL gets it right there, so it would see the main thread idle in the loop
    almost every time and miss the request code in its callbacks. So the main thread samples itself: after
    :meth:`start_main_signal`, each tick of :meth:`run` sends ``SIGPROF`` to the main thread alone
    (``pthread_kill``), and the handler runs there at its next bytecode boundary, inside the callback. The
    signal restarts interrupted system calls, and no other thread receives it (a process-wide timer signal,
    ``setitimer``, would land on whichever thread runs: granian's, or a database thread inside SQLite)."""

    def __init__(self, hz: int = SAMPLE_HZ) -> None:
        self.profile = CpuProfile(time.time_ns(), 1_000_000_000 // hz)
        self._hz = hz
        self._last_cpu: dict[int, int] = {}
        self._native_names: dict[int, str] = {}
        # Per thread: the last stack it was seen working in (see _tick: work that ended between two ticks).
        self._last_busy: dict[int, tuple[_PythonFrame, ...]] = {}
        main = threading.main_thread()
        self._main_tid, self._main_ident = main.native_id, main.ident
        self._main_by_signal = False
        self._main_last_cpu = 0
        self._signal_lock = threading.Lock()  # no signal is sent once the handler is being removed

    def start_main_signal(self) -> None:
        """Let the main thread sample itself on each tick; call it on the main thread (elsewhere the main
        thread is sampled by :meth:`run` like the others)."""
        if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_kill"):
            return
        self._main_last_cpu = time.thread_time_ns()
        signal.signal(signal.SIGPROF, self._on_signal)
        signal.siginterrupt(signal.SIGPROF, False)
        self._main_by_signal = True

    def stop_main_signal(self) -> None:
        """Undo :meth:`start_main_signal` (on the main thread). SIGPROF is left ignored, not at its default
        (which ends the process), should a last one still be on its way."""
        with self._signal_lock:
            if self._main_by_signal:
                self._main_by_signal = False
                signal.signal(signal.SIGPROF, signal.SIG_IGN)

    def _signal_main(self) -> None:
        with self._signal_lock:
            if self._main_by_signal and self._main_ident is not None:
                signal.pthread_kill(self._main_ident, signal.SIGPROF)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        used = time.thread_time_ns()
        delta, self._main_last_cpu = used - self._main_last_cpu, used
        if delta > 0 and frame is not None:
            self._count((threading.main_thread().name, self._stack(frame)), delta)

    def run(self, seconds: float, stop: threading.Event) -> CpuProfile:
        """Sample for ``seconds`` (or until ``stop`` is set) on the calling thread, which blocks; the main
        thread samples itself if :meth:`start_main_signal` was called. Raises :class:`ProfilingUnavailable` where
        threads' CPU clocks cannot be read."""
        own_tid = threading.get_native_id()
        own_start = time.thread_time_ns()
        started = time.monotonic()
        for tid in _thread_ids():
            used = _thread_cpu_ns(tid)
            if used is not None:
                self._last_cpu[tid] = used
        interval = 1.0 / self._hz
        next_tick = started + interval
        deadline = started + seconds
        while True:
            delay = next_tick - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            self._tick(own_tid)
            self._signal_main()
            now = time.monotonic()
            if now >= deadline:
                break
            next_tick = max(next_tick + interval, now)  # a late tick is not made up for with a burst
        profile = self.profile
        profile.duration_ns = int((time.monotonic() - started) * 1e9)
        profile.sampler_cpu_ns = time.thread_time_ns() - own_start
        return profile

    def _tick(self, own_tid: int) -> None:
        self.profile.ticks += 1
        python_threads = {thread.native_id: thread for thread in threading.enumerate()}
        busy: list[tuple[int, int]] = []  # (thread id, CPU ns used since the last tick)
        seen: dict[int, int] = {}
        for tid in _thread_ids():
            used = _thread_cpu_ns(tid)
            if used is None:
                continue
            seen[tid] = used
            # A thread that appeared since the baseline used all its CPU time during the profile.
            delta = used - self._last_cpu.get(tid, 0)
            if delta > 0 and tid != own_tid and not (tid == self._main_tid and self._main_by_signal):
                busy.append((tid, delta))
        self._last_cpu = seen
        # Other threads' frame objects are held only between here and `del frames`, with nothing in between
        # that releases the GIL: a frame that returned while the sampler still held its frame object would
        # keep its locals (and its callers', through f_back) alive, in a reference cycle when a generator is
        # involved, until the next collection; an unfinished SQLite cursor among them keeps its read
        # transaction open, and the tenant's writes then fail with "database is locked" (seen in testing).
        frames = sys._current_frames()
        frame: FrameType | None = None
        stacks = []
        for tid, delta in busy:
            thread = python_threads.get(tid)
            frame = frames.get(thread.ident) if thread is not None and thread.ident is not None else None
            stack = self._stack(frame)
            if frame is not None and _parked(stack):
                # Parked again (a database thread back at its queue, say): the CPU went to work that ended
                # since the last tick, most likely where this thread was last seen working.
                stack = self._last_busy.get(tid, stack)
            elif frame is not None:
                self._last_busy[tid] = stack
            stacks.append((tid, thread.name if thread is not None and frame is not None else None, stack, delta))
        del frames, frame
        for tid, name, stack, delta in stacks:
            self._count((name if name is not None else self._native_name(tid), stack), delta)

    def _count(self, key: tuple[str, tuple[_PythonFrame, ...]], cpu_ns: int) -> None:
        # Called from the sampler thread and the main thread's signal handler, never with the same key
        # (the thread name is part of it); each dict operation is atomic under the GIL.
        counts = self.profile.stacks.get(key)
        if counts is None:
            self.profile.stacks[key] = [1, cpu_ns]
        else:
            counts[0] += 1
            counts[1] += cpu_ns

    def _stack(self, frame: FrameType | None) -> tuple[_PythonFrame, ...]:
        modules = self.profile.modules
        stack = []
        while frame is not None:
            code = frame.f_code
            if code not in modules:
                modules[code] = str(frame.f_globals.get("__name__", ""))
            stack.append((code, frame.f_lineno or 0))
            frame = frame.f_back
        return tuple(stack)

    def _native_name(self, tid: int) -> str:
        name = self._native_names.get(tid)
        if name is None:
            try:
                comm = (_TASKS / str(tid) / "comm").read_text().strip()
            except OSError:
                comm = "?"
            name = self._native_names[tid] = f"{comm} {tid}"
        return name


# Where an idle Python thread waits for work: the innermost frame's (file name, function).
_PARKED = frozenset({("threading.py", "wait"), ("threading.py", "_wait_for_tstate_lock"), ("queue.py", "get"),
                     ("selectors.py", "select"), ("db_scheduler.py", "_next")})


def _parked(stack: tuple[_PythonFrame, ...]) -> bool:
    """Whether a thread whose stack (innermost first) is ``stack`` waits for work rather than doing it."""
    return bool(stack) and (os.path.basename(stack[0][0].co_filename), stack[0][0].co_name) in _PARKED


def to_pprof(profile: CpuProfile) -> ProfileBuilder:
    """The profile as pprof's CPU profile: sample types ``samples/count`` and ``cpu/nanoseconds``, each
    sample labelled with its ``thread``."""
    builder = ProfileBuilder(
        [ValueType("samples", "count"), ValueType("cpu", "nanoseconds")],
        period_type=ValueType("cpu", "nanoseconds"), period=profile.interval_ns,
        time_nanos=profile.started_ns, duration_nanos=profile.duration_ns, default_sample_type="cpu",
        comments=[f"pbfast in-process sampler: {profile.ticks} ticks at {1e9 / profile.interval_ns:.0f} Hz, "
                  f"its own CPU {profile.sampler_cpu_ns / 1e6:.1f} ms (left out of the samples)"],
    )
    for thread, frames, count, cpu_ns in profile.weighted_stacks():
        builder.add(frames, [count, cpu_ns], {"thread": thread})
    return builder
