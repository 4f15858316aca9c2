"""The node's one ``litestream replicate`` child: spawned with the node's config, restarted when it dies
(with back-off), killed when a request to it may be carried out later, and its control socket (HTTP over a
unix socket).

A freshly spawned litestream replicates nothing until told: the owner (:class:`~.replication.Replicator`) is
called back after every spawn (to forget what the old process had confirmed) and after every restart (to
register again what it wants replicated).

Thread-safety: event loop only.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from pbfast.logs import component_logger
from pbfast.tenant_node.control_socket import NoAnswer, NotSent, UnixHttpClient
from pbfast.tenant_node.replica import ReplicaStore, ReplicationError, Unanswered, litestream_config

__all__ = ["SYNC_TIMEOUT_SECONDS", "LitestreamProcess"]

log = component_logger("TenantNode")

SOCKET_WAIT_SECONDS = 10.0
RESTART_BACKOFF_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)
SYNC_TIMEOUT_SECONDS = 30  # the longest waited /sync the node asks for
DEFAULT_TIMEOUT_SECONDS = SYNC_TIMEOUT_SECONDS + 5  # a control request without a timeout of its own
PR_SET_PDEATHSIG = 1

_node_pid = os.getpid()  # the process that spawns litestream (set again in spawn, for forks)


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the node process dies, even by kill -9, so an orphaned
    litestream never keeps writing a replica that a restarted node (or another node) now owns. Not SIGTERM:
    litestream then flushes for as long as the store lets it (unbounded with S3 unreachable), past the
    lease's halt time. What it had not shipped stays in the local WAL and is shipped when the tenant is
    opened again."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0 or os.getppid() != _node_pid:
        os._exit(1)  # no death signal, or the node died before it was set up


class LitestreamProcess:
    """Supervises ``litestream replicate`` and carries requests to its control socket."""

    def __init__(self, work_dir: Path, store: ReplicaStore, program: Callable[[], str],
                 exact_restore_hours: float, restore_window_hours: float) -> None:
        self.work_dir = work_dir
        self.store = store
        self._program = program
        self._exact_restore_hours = exact_restore_hours
        self._restore_window_hours = restore_window_hours
        # Unix socket paths are limited to 107 bytes, which a deep --data-dir passes (litestream then cannot
        # listen, and the node cannot start): the socket lives in a short private directory (mode 0700).
        self._socket_dir = Path(tempfile.mkdtemp(prefix="pbfast-litestream-"))
        self.socket_path = self._socket_dir / "control.sock"
        self.config_path = work_dir / "litestream.yml"
        self.process: asyncio.subprocess.Process | None = None
        self.client: UnixHttpClient | None = None
        self.generation = 0  # bumped by each spawn: a confirmation from an older process means nothing
        self.restarts = 0
        self.last_error = ""
        self._on_spawned: Callable[[], None] = lambda: None
        self._on_restarted: Callable[[], Awaitable[object]] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def write_config(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(litestream_config(self.socket_path, self._exact_restore_hours,
                                                      self._restore_window_hours))

    async def start(self, on_spawned: Callable[[], None], on_restarted: Callable[[], Awaitable[object]]) -> None:
        """Spawn litestream and supervise it: ``on_spawned`` runs after every spawn (at once, before any
        request reaches the new process), ``on_restarted`` after a restart by the supervisor."""
        self._on_spawned = on_spawned
        self._on_restarted = on_restarted
        self._program()
        self.write_config()
        await self.spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="litestream-supervisor")

    async def spawn(self) -> None:
        global _node_pid  # noqa: PLW0603 - read by the child before exec
        _node_pid = os.getpid()
        self.socket_path.unlink(missing_ok=True)
        # A fresh client at once: until the new socket is up requests fail cleanly as "not sent", rather than
        # on a connection the old process left behind.
        old_client, self.client = self.client, UnixHttpClient(self.socket_path)
        if old_client is not None:
            old_client.close()
        log_path = self.work_dir / "litestream.log"
        with open(log_path, "ab") as log_file:  # noqa: ASYNC230 - an append-only open, for the child
            self.process = await asyncio.create_subprocess_exec(
                self._program(), "replicate", "-config", str(self.config_path), "-log-level", "warn",
                stdout=log_file, stderr=log_file, env=self.store.environment(), start_new_session=True,
                preexec_fn=_die_with_parent)
        self.generation += 1
        self._on_spawned()
        deadline = time.monotonic() + SOCKET_WAIT_SECONDS
        while not self.socket_path.exists():
            if self.process.returncode is not None or time.monotonic() > deadline:
                if self.process.returncode is None:
                    self.process.kill()  # hung: the supervisor sees it exit and tries again
                raise ReplicationError(f"litestream did not start (see {log_path})")
            await asyncio.sleep(0.02)
        log.info("litestream replicating to %s (pid %d)",
                 self.store.endpoint and f"s3 bucket {self.store.bucket}" or self.store.local_root,
                 self.process.pid)

    async def _supervise(self) -> None:
        """Restart litestream when it dies, then let the owner register every open tenant again."""
        attempt = 0
        while not self._stopping:
            assert self.process is not None
            code = await self.process.wait()
            if self._stopping:
                return
            self.restarts += 1
            self.last_error = f"litestream exited with {code}"
            delay = RESTART_BACKOFF_SECONDS[min(attempt, len(RESTART_BACKOFF_SECONDS) - 1)]
            log.error("litestream exited with %s; restarting in %.1f s", code, delay)
            await asyncio.sleep(delay)
            try:
                await self.spawn()
                if self._on_restarted is not None:
                    await self._on_restarted()
                attempt = 0
            except (ReplicationError, OSError) as err:
                attempt += 1
                self.last_error = str(err)
                log.error("litestream restart failed: %s", err)
            except Exception as err:  # noqa: BLE001 - the supervisor must outlive any one failure
                attempt += 1
                self.last_error = repr(err)
                log.exception("litestream restart failed")

    def kill(self, why: str, process: asyncio.subprocess.Process | None = None) -> None:
        """Kill litestream (``process``: only if it is still the running one) so that nothing it was asked is
        carried out later; the supervisor restarts it."""
        process = process or self.process
        if process is not None and process is self.process and process.returncode is None:
            log.error("killing litestream: %s", why)
            process.kill()

    async def stop(self) -> None:
        """Stop litestream (it flushes what it has) and its supervisor."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 3)
            except TimeoutError:
                self.process.kill()
        if self.client is not None:
            self.client.close()
        shutil.rmtree(self._socket_dir, ignore_errors=True)

    # ---- control socket -------------------------------------------------------------------------

    async def post(self, path: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """One request to the control socket. :class:`ReplicationError` when it was surely not carried out
        (not sent, or refused), :class:`Unanswered` when it was sent and no answer came."""
        if self.client is None:
            raise ReplicationError("litestream is not running")
        try:
            answer = await self.client.request("POST", path, orjson.dumps(body),
                                               timeout if timeout is not None else DEFAULT_TIMEOUT_SECONDS)
        except NotSent as err:
            raise ReplicationError(f"litestream {path}: {err} (not sent)") from err
        except NoAnswer as err:
            raise Unanswered(f"litestream {path}: {err}") from err
        if answer.status >= 400:
            text = answer.body.decode("utf-8", "replace").strip()[:200]
            raise ReplicationError(f"litestream {path}: {answer.status} {text}")
        return orjson.loads(answer.body) if answer.body else {}

    async def databases(self) -> list[dict[str, Any]] | None:
        """Litestream's ``/list``: what it replicates, with each database's last sync; None if unknown."""
        if self.client is None:
            return None
        try:
            answer = await self.client.request("GET", "/list", None, 2)
            databases = orjson.loads(answer.body).get("databases", []) if answer.status == 200 else None
        except (NotSent, NoAnswer, ValueError, AttributeError):
            return None
        return databases if isinstance(databases, list) else None
