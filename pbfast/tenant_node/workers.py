"""The worker processes of a multi-worker tenant node (``--workers=N``, N > 1), supervised by its main process.

Each worker (:mod:`pbfast.tenant_node.worker`) is forked by the node's fork server
(:mod:`pbfast.tenant_node.worker_spawner`; without one, or once it is gone, started as a program of its own with
its settings on stdin), with the node's shared memory and the read end of a wake-up pipe as inherited descriptors. The main process writes a byte to every worker's
pipe when a tenant stops being served (:meth:`WorkerSupervisor.wake_all`), so the workers close their
connections to it at once; it stops a worker that does not let go in time (:meth:`WorkerSupervisor.kill`).

A worker that dies (a crash, a kill) is started again with the same index (its counters go on in the same
row): its requests in flight fail (a gateway sends an idempotent one again), its holds are cleared (its
connections died with it), the other workers go on serving every tenant meanwhile. A worker that keeps dying
at once is started again after a growing pause (up to :data:`MAX_RESTART_DELAY_SECONDS`).

Thread-safety: event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pbfast.logs import component_logger
from pbfast.tenant_node.shared_state import SharedState, WorkerCounter
from pbfast.tenant_node.worker import WorkerSettings
from pbfast.tenant_node.worker_spawner import WorkerSpawner

__all__ = ["WorkerSupervisor"]

log = component_logger("TenantNode")

STOP_SECONDS = 4.0  # a stopping worker finishes its requests in flight (2 s) and closes its connections
HEALTHY_SECONDS = 10.0  # a worker that lived this long did not die "at once"
MIN_RESTART_DELAY_SECONDS = 0.2
MAX_RESTART_DELAY_SECONDS = 10.0
READY_SECONDS = 30.0  # a worker imports pbfast and binds the port: ~0.5 s on an idle machine
READY_POLL_SECONDS = 0.02

# Settings of worker ``index`` with its descriptors of the shared memory and of its wake-up pipe.
SettingsFor = Callable[[int, int, int], WorkerSettings]


class WorkerProcess(Protocol):
    """A worker process as the supervisor sees it (forked, or a program of its own)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def send_signal(self, signum: int) -> None: ...

    def kill(self) -> None: ...


@dataclass(slots=True)
class _Worker:
    index: int
    process: WorkerProcess | None = None
    wake_fd: int | None = None  # the write end of its wake-up pipe
    started_at: float = 0.0
    quick_deaths: int = 0


class WorkerSupervisor:
    def __init__(self, count: int, shared: SharedState, settings_for: SettingsFor,
                 spawner: WorkerSpawner | None = None) -> None:
        self.shared = shared
        self.spawner = spawner
        self.settings_for = settings_for
        self.workers = [_Worker(index) for index in range(count)]
        self.restarts = 0
        self._stopping = False
        shared.wake_workers = self.wake_all
        shared.kill_worker = self.kill

    @property
    def running(self) -> int:
        return sum(1 for worker in self.workers if worker.process is not None and worker.process.returncode is None)

    async def _start(self, worker: _Worker) -> None:
        self.shared.counters.set(worker.index, WorkerCounter.READY, 0)
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        settings = self.settings_for(worker.index, self.shared.memory.fd, read_end)
        try:
            process = await self._spawn(settings, (self.shared.memory.fd, read_end))
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        worker.process, worker.wake_fd, worker.started_at = process, write_end, time.monotonic()

    async def _spawn(self, settings: WorkerSettings, fds: tuple[int, int]) -> WorkerProcess:
        if self.spawner is not None and self.spawner.alive:
            try:
                return await self.spawner.spawn(settings, fds)
            except OSError as err:
                log.error("the worker fork server failed: %r; starting the worker as a program", err)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pbfast.tenant_node.worker", stdin=asyncio.subprocess.PIPE, pass_fds=fds)
        assert process.stdin is not None
        process.stdin.write(settings.to_json())
        await process.stdin.drain()
        process.stdin.close()
        return process

    def _gone(self, worker: _Worker) -> None:
        """A worker process ended: its holds go (its connections died with it), and its wake-up pipe."""
        cleared = self.shared.acks.clear(worker.index)
        if cleared:
            log.info("worker %d held %d tenant(s); released", worker.index + 1, cleared)
        if worker.wake_fd is not None:
            os.close(worker.wake_fd)
            worker.wake_fd = None
        worker.process = None

    async def start(self) -> None:
        """Start the workers (a start-up step of the node's main process, then :meth:`ready`: its listeners
        serve, and it registers with the control plane, once the workers listen)."""
        for worker in self.workers:
            await self._start(worker)

    async def ready(self) -> None:
        """Wait until every worker listens, at most :data:`READY_SECONDS`; OSError when one ended meanwhile."""
        deadline = time.monotonic() + READY_SECONDS
        while not all(self._ready(worker) for worker in self.workers):
            if time.monotonic() > deadline:
                log.warning("worker processes not listening after %.0f s; going on", READY_SECONDS)
                break
            if any(worker.process is None or worker.process.returncode is not None for worker in self.workers):
                raise OSError("a worker process ended while starting (see its log lines above)")
            await asyncio.sleep(READY_POLL_SECONDS)
        log.info("%d worker processes serve tenant requests", len(self.workers))

    def _ready(self, worker: _Worker) -> bool:
        return self.shared.counters.row(worker.index)[WorkerCounter.READY] == 1

    async def run(self) -> None:
        """Keep the workers running (a task of the node's main process, after :meth:`start`)."""
        await asyncio.gather(*(self._keep(worker) for worker in self.workers))

    async def _keep(self, worker: _Worker) -> None:
        while not self._stopping:
            process = worker.process
            if process is None:
                return
            code = await process.wait()
            lived = time.monotonic() - worker.started_at
            self._gone(worker)
            if self._stopping:
                return
            worker.quick_deaths = worker.quick_deaths + 1 if lived < HEALTHY_SECONDS else 0
            delay = 0.0 if not worker.quick_deaths else min(
                MAX_RESTART_DELAY_SECONDS, MIN_RESTART_DELAY_SECONDS * 2 ** (worker.quick_deaths - 1))
            log.error("worker %d (pid %d) ended with status %s after %.1f s; starting it again%s", worker.index + 1,
                      process.pid, code, lived, f" in {delay:.1f} s" if delay else "")
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                await self._start(worker)
                self.restarts += 1
            except OSError as err:
                log.error("cannot start worker %d: %s", worker.index + 1, err)
                worker.quick_deaths += 1

    def wake_all(self) -> None:
        """Tell every worker to look for tenants it must close (a full pipe: it is awake already)."""
        for worker in self.workers:
            if worker.wake_fd is not None:
                with contextlib.suppress(BlockingIOError, BrokenPipeError):
                    os.write(worker.wake_fd, b"!")

    async def kill(self, index: int) -> None:
        """Stop a worker at once (it would not let go of a tenant in time) and wait until it is dead, so it
        writes nothing more; it is started again."""
        process = self.workers[index].process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def stop(self) -> None:
        """Stop every worker: SIGTERM (they finish their requests and close their connections), then SIGKILL."""
        self._stopping = True
        running = [worker for worker in self.workers if worker.process is not None and worker.process.returncode is None]
        for worker in running:
            assert worker.process is not None
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        waiting = [asyncio.ensure_future(worker.process.wait()) for worker in running if worker.process is not None]
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=STOP_SECONDS)
            if late:
                log.warning("%d worker(s) did not stop in time; killed", len(late))
                for worker in running:
                    if worker.process is not None and worker.process.returncode is None:
                        with contextlib.suppress(ProcessLookupError):
                            worker.process.kill()
                await asyncio.wait(late, timeout=1.0)
        for worker in self.workers:
            if worker.process is not None:
                self._gone(worker)
