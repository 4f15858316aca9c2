"""Handing results from the database threads back to the event loop without holding the GIL while waking it.

uvloop's ``call_soon_threadsafe`` wakes the loop (a write to its eventfd) with the GIL held. The woken loop thread
gets a core at once, and when the waker is a heavy tenant's background thread (nice +10) the kernel takes the core
from it in that very call: it is preempted *holding the GIL*, and the loop, granian's thread and every other
tenant's request then wait for the GIL until the background thread gets a core back, which at nice +10 on a busy
machine takes milliseconds (a priority inversion; py-spy ``--gil`` under the noisy-neighbour benchmark showed the
background threads holding the GIL inside ``call_soon_threadsafe``, benchmarks/RESULTS.md "Noisy neighbour").
:class:`LoopWaker` instead queues the callback and wakes the loop with ``os.write`` to a pipe the loop watches:
CPython lets go of the GIL for that system call, so whoever the kernel runs next can take it.

Thread-safety: :meth:`LoopWaker.call` from any thread; the rest on the loop's thread.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Callable

from pbfast.logs import component_logger

__all__ = ["LoopWaker"]

log = component_logger("TenantNode")


class LoopWaker:
    """Runs callbacks queued from other threads on ``loop`` (created on the loop's thread), in the order queued."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._pending: deque[Callable[[], None]] = deque()
        # Set by the thread that wrote to the pipe, cleared by the loop before it runs the queue: a callback
        # queued after the clear writes again, one queued before it is run by this pass. At worst two threads
        # both write (harmless: one more empty pass).
        self._signalled = False
        self._closed = False
        loop.add_reader(self._read_fd, self._run_pending)

    def call(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` on the loop soon. Any thread. RuntimeError when the loop is closed."""
        if self._closed:
            self.loop.call_soon_threadsafe(callback)
            return
        self._pending.append(callback)
        if not self._signalled:
            self._signalled = True
            try:
                os.write(self._write_fd, b"\0")  # the GIL is let go for the system call (see the module's doc)
            except BlockingIOError:
                pass  # the pipe is full of wake-ups the loop has not read yet: it will run the queue anyway
            except OSError:  # closed meanwhile (stop): the loop's own hand-over
                self._drain_elsewhere()

    def close(self) -> None:
        """Stop watching the pipe and close it, after running what is queued; from any thread once no other
        thread calls :meth:`call` any more (its pipe could otherwise be another file by then)."""
        try:
            on_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            on_loop = False
        if not on_loop and not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self.close)
                return
            except RuntimeError:
                pass  # closed meanwhile
        if self._closed:
            return
        self._closed = True
        if on_loop:
            self._run_pending()
            self.loop.remove_reader(self._read_fd)
        os.close(self._read_fd)
        os.close(self._write_fd)

    def _run_pending(self) -> None:
        try:
            os.read(self._read_fd, 4096)
        except (BlockingIOError, OSError):
            pass
        self._signalled = False
        while self._pending:
            callback = self._pending.popleft()
            try:
                callback()
            except Exception as err:  # noqa: BLE001 - one callback's failure must not strand the others
                log.error("a database job's hand-back failed: %r", err, exc_info=err)

    def _drain_elsewhere(self) -> None:
        while self._pending:
            try:
                self.loop.call_soon_threadsafe(self._pending.popleft())
            except (RuntimeError, IndexError):
                return
