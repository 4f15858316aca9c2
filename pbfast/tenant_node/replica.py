"""Where a tenant's replicas live and how they are read: the replica store (an S3 bucket or a local
directory; ``tenants/{id}/{incarnation}/`` in it), Litestream's settings for what a replica keeps, and
restores and listings (:class:`Replicas`): the latest state restored inside the node
(:mod:`pbfast.tenant_node.replica_reader`), points in time and whatever that reader leaves over with the
``litestream`` CLI. Writing replicas is :mod:`pbfast.tenant_node.replication`'s.

Replica layout: ``tenants/{id}/{incarnation}/`` under the bucket (``--s3-endpoint``/``--s3-bucket``) or,
without an endpoint, under ``<data-dir>/replica`` (Litestream's ``file`` replica: the same code path).
Each incarnation of a tenant id (a re-created tenant) gets its own path, so a restore never returns a
deleted tenant's data. Operators can use the stock ``litestream`` CLI on the same URLs.

Thread-safety: event loop only.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from pbfast.binaries import LITESTREAM, MissingBinary, find_binary
from pbfast.tenant_node.replica_reader import ReplicaReader
from pbfast.timefmt import parse_time

__all__ = ["LEVEL1_MINUTES", "NoStateAt", "ReplicaStore", "Replicas", "ReplicationError", "Unanswered",
           "litestream_config"]

LEVEL1_MINUTES = 5  # level-1 compaction interval: the step of point-in-time restores beyond the exact hours
COMMAND_TIMEOUT_SECONDS = 900.0  # a restore of a large tenant from a slow store; S3 down: it retries
TIMESTAMP_MISSING = "timestamp does not exist"  # litestream restore -timestamp: no file covers it


class ReplicationError(RuntimeError):
    """Litestream could not do what was asked (the message says what and why)."""


class Unanswered(ReplicationError):  # noqa: N818 - the request got no answer
    """A control request got no answer (timeout, connection lost): litestream may still carry it out."""


class NoStateAt(ReplicationError):  # noqa: N818 - reads as "no state at <time>"
    """The replica exists but holds no restorable state at the asked time (before its first file kept, or
    its history there was pruned)."""


@dataclass(frozen=True, slots=True)
class ReplicaStore:
    """Where replicas live: an S3 bucket (``endpoint`` set) or a local directory."""

    bucket: str
    endpoint: str | None
    local_root: Path
    region: str = "us-east-1"

    @staticmethod
    def prefix(tenant_id: str, incarnation: str) -> str:
        """Where one tenant incarnation's replica lives in the store (its key prefix, without the slash)."""
        return f"tenants/{tenant_id}/{incarnation}"

    def url(self, tenant_id: str, incarnation: str) -> str:
        """The Litestream replica URL of one tenant incarnation."""
        key = self.prefix(tenant_id, incarnation)
        if self.endpoint is None:
            return (self.local_root / key).as_uri()
        query = f"endpoint={quote(self.endpoint, safe=':/')}&forcePathStyle=true&region={self.region}"
        return f"s3://{self.bucket}/{key}?{query}"

    def environment(self) -> dict[str, str]:
        """Litestream's environment: AWS credentials pass through; ``AWS_CA_BUNDLE`` breaks its S3
        client, so it is removed."""
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        if self.endpoint is not None:
            env.setdefault("AWS_REGION", self.region)
        return env


def litestream_config(socket_path: Path, exact_restore_hours: float, restore_window_hours: float) -> str:
    """The config of ``litestream replicate``: its control socket, and what replicas keep.

    Top-level settings apply to databases registered over the socket too. Measured (RESULTS.md):
    - a restore to time T is exact (every write whose sync returned before T, none after) only while
      level-0 files exist back to the start of the level-1 window holding T: so L0 files are kept
      exact_restore_hours + one level-1 interval; older times get the state at a 5-minute boundary;
    - how far back a restore can go is the oldest snapshot kept: daily snapshots, kept a day longer
      than the window promised;
    - idle databases cost ~nothing with long check intervals (LIST traffic ~0, CPU 15% -> 6% at 200)."""
    l0_minutes = round(exact_restore_hours * 60) + LEVEL1_MINUTES
    return (
        "socket:\n"
        "  enabled: true\n"
        f"  path: {socket_path}\n"
        "  permissions: 0600\n"
        f"l0-retention: {l0_minutes}m\n"
        "l0-retention-check-interval: 5m\n"
        "levels:\n"
        f"  - interval: {LEVEL1_MINUTES}m\n"
        "  - interval: 1h\n"
        "snapshot:\n"
        "  interval: 24h\n"
        f"  retention: {round(restore_window_hours) + 24}h\n"
        "dbs: []\n"
    )


class Replicas:
    """Reads replicas with the ``litestream`` CLI: restores (latest or point in time) and listings."""

    def __init__(self, store: ReplicaStore, binary: str | None = None) -> None:
        self.store = store
        self.binary = binary  # None: looked up when first needed (pbfast.binaries)
        self.reader = ReplicaReader(store.bucket, store.endpoint, store.local_root, store.region)

    def program(self) -> str:
        """The litestream binary (found once; its absence is a ReplicationError naming it and how to install
        it)."""
        if self.binary is None:
            try:
                self.binary = str(find_binary(LITESTREAM))
            except MissingBinary as err:
                raise ReplicationError(str(err)) from None
        return self.binary

    async def restore(self, tenant_id: str, incarnation: str, target: Path, timestamp: str | None = None) -> bool:
        """Restore the tenant's replica into ``target`` (which must not exist): its latest state, or its state
        at ``timestamp`` (RFC 3339). Returns False when there is no replica (a new tenant). Raises
        :class:`ReplicationError` on failure, also when the replica holds no state at ``timestamp``.

        Litestream refuses a timestamp after the replica's newest file ("timestamp does not exist"), although
        the state at such a time is simply the latest one (nothing was written since, as far as the replica
        knows): then the latest state is restored.

        The latest state is restored in the node (:mod:`pbfast.tenant_node.replica_reader`) unless that
        reader leaves it to litestream; a point in time always with litestream."""
        if timestamp is None:
            found = await asyncio.to_thread(self.reader.restore_latest, self.store.prefix(tenant_id, incarnation),
                                            target)
            if found is not None:
                return found
        url = self.store.url(tenant_id, incarnation)
        code, output = await self._run("restore", "-if-replica-exists", "-o", str(target),
                                       *(("-timestamp", timestamp) if timestamp else ()), url)
        if (code == 0 and not target.exists()) or (code != 0 and timestamp and "no backups found" in output):
            # "no replica" (-if-replica-exists does not cover -timestamp), or no restore plan: which one?
            if await self.file_span(url) is None:
                return False
            raise NoStateAt(f"the replica of tenant {tenant_id} has files but no restorable state"
                            f"{' at ' + timestamp if timestamp else ''}")
        if code != 0 and timestamp and TIMESTAMP_MISSING in output:
            span = await self.file_span(url)
            try:
                at = parse_time(timestamp)
            except ValueError as err:
                raise ReplicationError(f"restore of tenant {tenant_id}: {err}") from err
            # The listing has whole seconds: the time is surely after the newest file if it is a second later,
            # or in the newest file's second when an older file came in an earlier second (it is not before
            # the first file, so Litestream refused it for being after the last).
            if span is not None and (at >= span[1] + 1 or (at >= span[1] > span[0])):
                code, output = await self._run("restore", "-if-replica-exists", "-o", str(target), url)
            elif span is not None:
                raise NoStateAt(f"the replica of tenant {tenant_id} holds no state at {timestamp} (before the "
                                "first write it keeps, or too close to it: choose a later time)")
        if code != 0:
            raise ReplicationError(f"restore of tenant {tenant_id} failed: {output[-300:]}")
        return target.exists()

    async def has_replica(self, tenant_id: str, incarnation: str) -> bool:
        """Whether the tenant incarnation's replica holds anything."""
        return await self.file_span(self.store.url(tenant_id, incarnation), timeout=60) is not None

    async def file_span(self, url: str, timeout: float = 60) -> tuple[float, float] | None:
        """When the replica's oldest and newest files were written (Unix seconds, whole seconds: that is all
        ``litestream ltx`` shows); None if it has none."""
        times = await self.file_times(url, timeout)
        return (times[0], times[-1]) if times else None

    async def file_times(self, url: str, timeout: float = 60) -> list[float]:
        """The whole seconds (Unix) in which the replica's files (every level) were written, oldest first,
        each once. Raises :class:`ReplicationError` when the replica cannot be listed."""
        code, output = await self._run("ltx", "-level", "all", url, timeout=timeout)
        if code != 0:
            raise ReplicationError(f"listing the replica failed: {output[-300:]}")
        times = set()
        for line in output.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 5:
                try:
                    times.add(parse_time(fields[4]))
                except ValueError:
                    continue
        return sorted(times)

    async def _run(self, *args: str, timeout: float = COMMAND_TIMEOUT_SECONDS) -> tuple[int, str]:
        """Run a litestream command (killed after ``timeout`` seconds, or when the caller is cancelled); its exit
        code and combined output. Started and waited for on worker threads with the standard library's spawn
        (vfork): uvloop's own forks the node on the event loop and waits there until the child has exec'd,
        0.2-0.5 s per command at a node's size, and a few first opens at once held the loop past the lease's
        deadline (the node fenced itself: ``tests/test_replica_commands.py``)."""
        starting = asyncio.get_running_loop().run_in_executor(None, _start, [self.program(), *args],
                                                               self.store.environment())
        try:
            process = await asyncio.shield(starting)
        except asyncio.CancelledError:
            starting.add_done_callback(_end_started)  # cancelled while it started: no orphan left behind
            raise
        try:
            output, _ = await asyncio.to_thread(process.communicate, timeout=timeout)
        except subprocess.TimeoutExpired as err:
            process.kill()
            await asyncio.to_thread(process.communicate)
            raise ReplicationError(f"litestream {args[0]} did not finish within {timeout:.0f} s") from err
        except BaseException:
            process.kill()  # the thread's communicate() then sees the end of its output and reaps it
            raise
        return process.returncode, output.decode(errors="replace").strip()


def _start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


def _end_started(starting: asyncio.Future[subprocess.Popen[bytes]]) -> None:
    """Kill and reap (on a thread of its own) a litestream command whose caller was cancelled while it started."""
    if starting.cancelled() or starting.exception() is not None:
        return
    process = starting.result()
    process.kill()
    threading.Thread(target=process.communicate, name="litestream-reap", daemon=True).start()
