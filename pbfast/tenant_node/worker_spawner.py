"""A fork server for a multi-worker node's worker processes (``--workers`` > 1).

Starting a worker as a new Python program costs ~0.6 s of CPU (importing pbfast) and ~60 MB of its own
memory; on a busy machine several of them starting together delayed a node's start by seconds. So the node's
main process forks a small server (:meth:`WorkerSpawner.start`) first thing, before it runs any thread or
event loop, with pbfast imported; that server forks each worker on request: a worker starts in milliseconds
and shares the imported code's memory with the others (copy-on-write; the objects are frozen out of the
garbage collector's sight first, so its passes do not copy them).

Protocol, on a ``SOCK_SEQPACKET`` socket pair: the main process sends a worker's settings (JSON) with the
descriptors it passes (shared memory, wake-up pipe) attached; the server answers ``pid <pid>``, and
``exit <pid> <status>`` when a worker ends (the server is their parent and reaps them). The server dies with
the main process (parent-death signal), and the workers die with the server; it ends when the main process
closes its end, once its workers have ended.

Thread-safety: :meth:`WorkerSpawner.start` before any other thread exists; the rest on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import os
import select
import signal
import socket
import sys
import traceback

from pbfast.logs import component_logger
from pbfast.tenant_node.worker import WorkerSettings, die_with_parent, name_process, serve_worker

__all__ = ["ForkedWorker", "WorkerSpawner"]

log = component_logger("TenantNode")

MAX_MESSAGE = 1 << 16


class ForkedWorker:
    """A worker forked by the server: the part of :class:`asyncio.subprocess.Process` the supervisor uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._ended: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def ended(self, status: int) -> None:
        if self.returncode is None:
            self.returncode = status
            self._ended.set_result(status)

    async def wait(self) -> int:
        return await asyncio.shield(self._ended)

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class WorkerSpawner:
    """The main process's end of the fork server."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self._sock = sock
        self.pid = pid
        self._workers: dict[int, ForkedWorker] = {}
        self._answer: asyncio.Future[int] | None = None
        self._lock: asyncio.Lock | None = None
        self._attached = False
        self.alive = True

    @classmethod
    def start(cls) -> WorkerSpawner:
        """Fork the server. Call while this process runs no other thread and no event loop."""
        main_pid = os.getpid()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the server
            code = 1
            try:
                ours.close()
                code = _serve_forks(theirs, main_pid)
            except BaseException:  # noqa: BLE001 - never return into the main process's code
                traceback.print_exc()
            finally:
                os._exit(code)
        theirs.close()
        return cls(ours, pid)

    def _attach(self) -> None:
        if not self._attached:
            self._attached = True
            self._lock = asyncio.Lock()
            self._sock.setblocking(False)
            asyncio.get_running_loop().add_reader(self._sock.fileno(), self._read)

    async def spawn(self, settings: WorkerSettings, fds: tuple[int, ...]) -> ForkedWorker:
        """Fork a worker with ``settings``, passing it ``fds`` (its settings name them by the numbers they
        have here; the worker gets them renumbered). Raises OSError when the server is gone."""
        self._attach()
        assert self._lock is not None
        async with self._lock:
            if not self.alive:
                raise OSError("the worker fork server is gone")
            self._answer = asyncio.get_running_loop().create_future()
            try:
                socket.send_fds(self._sock, [settings.to_json()], list(fds))
            except OSError:
                self._gone()
                raise
            pid = await self._answer
            worker = self._workers[pid] = ForkedWorker(pid)
            return worker

    def _read(self) -> None:
        while True:
            try:
                message = self._sock.recv(MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                message = b""
            if not message:
                self._gone()
                return
            kind, *numbers = message.split()
            if kind == b"pid" and self._answer is not None and not self._answer.done():
                self._answer.set_result(int(numbers[0]))
            elif kind == b"exit":
                worker = self._workers.pop(int(numbers[0]), None)
                if worker is not None:
                    worker.ended(int(numbers[1]))

    def _gone(self) -> None:
        """The server ended (its workers die with it: the parent-death signal)."""
        if not self.alive:
            return
        self.alive = False
        log.error("the worker fork server (pid %d) is gone; workers are started as new programs from now on",
                  self.pid)
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(OSError("the worker fork server is gone"))
        for worker in self._workers.values():
            worker.ended(-signal.SIGKILL)
        self._workers.clear()
        self._reap()
        asyncio.get_running_loop().call_later(1.0, self._reap)  # its socket closes a moment before it ends

    def close(self) -> None:
        """Let the server go (after the workers were stopped: it waits for them before it ends)."""
        if self._attached and self.alive:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self.alive = False
        self._sock.close()
        self._reap()

    def _reap(self) -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, os.WNOHANG)


def _serve_forks(sock: socket.socket, main_pid: int) -> int:
    """The server's loop: fork a worker per request, report the workers' ends, until the main process goes."""
    die_with_parent(main_pid)
    name_process("pbfast-forks")
    for signum in (signal.SIGINT, signal.SIGTERM):  # a terminal's Ctrl-C: the main process stops the workers
        signal.signal(signum, signal.SIG_IGN)
    woken_read, woken_write = os.pipe()
    os.set_blocking(woken_write, False)
    os.set_blocking(woken_read, False)
    signal.set_wakeup_fd(woken_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    gc.collect()
    gc.freeze()  # the workers' collector leaves the inherited objects (and their pages) alone
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.register(woken_read, select.POLLIN)
    workers: set[int] = set()
    open_ = True
    while open_ or workers:
        for fd, _ in poller.poll():
            if fd == woken_read:
                with contextlib.suppress(BlockingIOError):
                    os.read(woken_read, 4096)
                _report_ends(sock if open_ else None, workers)
                continue
            message, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 4)
            if not message:
                open_ = False
                poller.unregister(sock)
                continue
            settings = WorkerSettings(**json.loads(message))
            settings = dataclasses.replace(settings, shm_fd=fds[0], wake_fd=fds[1])
            pid = os.fork()
            if pid == 0:
                _become_worker(settings, sock, (woken_read, woken_write))
            for fd in fds:
                os.close(fd)
            workers.add(pid)
            sock.send(b"pid %d" % pid)
        _report_ends(sock if open_ else None, workers)
    return 0


def _report_ends(sock: socket.socket | None, workers: set[int]) -> None:
    while workers:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            workers.clear()
            return
        if pid == 0:
            return
        workers.discard(pid)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.send(b"exit %d %d" % (pid, os.waitstatus_to_exitcode(status)))


def _become_worker(settings: WorkerSettings, sock: socket.socket, server_fds: tuple[int, int]) -> None:
    """In a freshly forked child of the server: run the worker, never return."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        sock.close()
        for fd in server_fds:
            os.close(fd)
        gc.freeze()  # what the server allocated since its start is shared too
        code = serve_worker(settings, os.getppid())
    except BaseException:  # noqa: BLE001 - never return into the server's loop
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
