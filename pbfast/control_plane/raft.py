"""One Raft member of the control plane: pysyncobj set-up, durability, status, and an asyncio bridge.

Durability: pysyncobj appends every log entry to ``<data-dir>/raft/journal`` through a memory map, so an
entry survives the member's process being killed as soon as it is written. It never flushes that map to
disk by itself; :class:`RaftMember` flushes the journal (fdatasync, without the GIL) every :data:`JOURNAL_FLUSH_SECONDS` (and on
shutdown), bounding what a power loss on a *majority* of members at once could lose to that window.
Raft's term and vote (``journal.meta``) are written by pysyncobj before any vote is sent. Snapshots
(``raft/snapshot``) are written to a temporary file and renamed.

Raft traffic between members is encrypted and authenticated with the cluster token (pysyncobj's
``password``), so only processes holding the token can join or send commands.
"""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf

from pbfast.config import Address
from pbfast.control_plane.registry import Registry
from pbfast.logs import component_logger

__all__ = ["CommandFailed", "RaftMember", "RaftStatus"]

log = component_logger("ControlPlane")

JOURNAL_FLUSH_SECONDS = 0.05
COMMAND_TIMEOUT_SECONDS = 5.0

_ROLES = {0: "follower", 1: "candidate", 2: "leader"}
_FAILURES = {
    FAIL_REASON.QUEUE_FULL: "the control plane is overloaded",
    FAIL_REASON.MISSING_LEADER: "the control plane has no leader (no quorum)",
    FAIL_REASON.DISCARDED: "the command was discarded by a new leader",
    FAIL_REASON.NOT_LEADER: "the leader changed before the command committed",
    FAIL_REASON.LEADER_CHANGED: "the leader changed before the command committed",
    FAIL_REASON.REQUEST_DENIED: "the command was denied",
    FAIL_REASON.UNKNOWN_OUTCOME: "the command's outcome is unknown",
}


class CommandFailed(RuntimeError):
    """A command did not commit (no quorum, leader change, timeout); it may or may not apply later."""


@dataclass(frozen=True, slots=True)
class RaftStatus:
    role: str
    leader: str | None
    term: int
    commit_index: int
    has_quorum: bool

    def as_json(self) -> dict[str, Any]:
        return {"role": self.role, "leader": self.leader, "term": self.term, "commitIndex": self.commit_index}


class RaftMember:
    """Hosts the :class:`Registry` on a pysyncobj node.

    Thread-safety: pysyncobj runs on its own thread; :meth:`submit` may be awaited from the event loop,
    :meth:`submit_blocking` called from any other thread; :meth:`status` and reads of :attr:`registry` are safe
    from any thread.
    """

    def __init__(self, bind: Address, peers: tuple[Address, ...], data_dir: Path, cluster_token: str) -> None:
        raft_dir = data_dir / "raft"
        raft_dir.mkdir(parents=True, exist_ok=True)
        self.registry = Registry()
        self.self_address = str(bind)
        self._journal_path = raft_dir / "journal"
        conf = SyncObjConf(
            appendEntriesUseBatch=False,  # batched appends cap synchronous writes at ~10/s
            appendEntriesPeriod=0.05,
            raftMinTimeout=0.3,
            raftMaxTimeout=0.6,
            connectionRetryTime=0.5,
            connectionTimeout=1.5,
            autoTickPeriod=0.005,
            commandsWaitLeader=True,
            journalFile=str(raft_dir / "journal"),
            fullDumpFile=str(raft_dir / "snapshot"),
            logCompactionMinEntries=20_000,
            logCompactionMinTime=300,
            password=cluster_token,
            dynamicMembershipChange=False,
        )
        self._sync = SyncObj(self.self_address, [str(peer) for peer in peers], conf, consumers=[self.registry])
        self._ready = asyncio.Event()
        self._flusher_stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_journal_forever, name="raft-journal-flush", daemon=True)
        self._flusher.start()

    def _flush_journal(self) -> None:
        # pysyncobj's own flush() is mmap.flush(), an msync that holds the GIL for as long as the disk takes
        # (seconds when other processes write a lot): the whole process, heartbeats included, stood still. On
        # Linux, msync(MS_SYNC) of a shared file map is an fdatasync of the file, so this is the same flush
        # without the GIL. The journal is opened by path each time: pysyncobj may reopen it when it grows.
        descriptor = os.open(self._journal_path, os.O_RDONLY)
        try:
            os.fdatasync(descriptor)
        finally:
            os.close(descriptor)

    def _flush_journal_forever(self) -> None:
        while not self._flusher_stop.wait(JOURNAL_FLUSH_SECONDS):
            try:
                self._flush_journal()
            except (OSError, ValueError) as err:  # ValueError: map closed during shutdown
                log.warning("raft journal flush failed: %s", err)

    def status(self) -> RaftStatus:
        raw = self._sync.getStatus()
        leader = raw.get("leader")
        return RaftStatus(
            role=_ROLES.get(raw.get("state", 0), "follower"),
            leader=str(leader) if leader is not None else None,
            term=int(raw.get("raft_term", 0)),
            commit_index=int(raw.get("commit_idx", 0)),
            has_quorum=bool(raw.get("has_quorum", False)),
        )

    @property
    def ready(self) -> bool:
        """True once this member has applied everything committed before it started (its state is
        current enough to serve reads)."""
        return self._ready.is_set()

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for :attr:`ready`; returns whether it is."""
        if not self._ready.is_set():
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return False
        return True

    async def catch_up(self) -> None:
        """Commit a barrier command and wait until it is applied here; retried until it succeeds."""
        while not self._ready.is_set():
            try:
                await self.submit(self.registry.barrier, timeout=COMMAND_TIMEOUT_SECONDS)
            except CommandFailed as err:
                log.info("raft: catching up (%s)", err)
                await asyncio.sleep(0.1)
                continue
            self._ready.set()
            log.info("raft: caught up (commit index %d)", self.status().commit_index)

    @property
    def is_leader(self) -> bool:
        return bool(self._sync._isLeader())

    async def submit(self, command: Any, *args: Any, timeout: float = COMMAND_TIMEOUT_SECONDS) -> tuple[str, Any]:
        """Replicate ``command(*args)`` (a ``@replicated`` method of the registry) and return its result
        once committed and applied here. Raises :class:`CommandFailed` otherwise."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[str, Any]] = loop.create_future()

        def settle(result: Any, error: int) -> None:
            if future.done():
                return
            if error == FAIL_REASON.SUCCESS:
                future.set_result(result)
            else:
                future.set_exception(CommandFailed(_FAILURES.get(error, f"raft error {error}")))

        def on_result(result: Any, error: int) -> None:  # pysyncobj thread
            loop.call_soon_threadsafe(settle, result, error)

        command(*args, callback=on_result)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as err:
            raise CommandFailed(f"the command did not commit within {timeout:.0f} s (no quorum?)") from err

    def submit_blocking(self, command: Any, *args: Any, timeout: float = COMMAND_TIMEOUT_SECONDS) -> tuple[str, Any]:
        """:meth:`submit` for a thread other than the event loop's: blocks it until the command is committed and
        applied here. Raises :class:`CommandFailed`."""
        done = threading.Event()
        settled: list[tuple[Any, int]] = []

        def on_result(result: Any, error: int) -> None:  # pysyncobj thread
            settled.append((result, error))
            done.set()

        command(*args, callback=on_result)
        if not done.wait(timeout):
            raise CommandFailed(f"the command did not commit within {timeout:.1f} s (no quorum?)")
        result, error = settled[0]
        if error != FAIL_REASON.SUCCESS:
            raise CommandFailed(_FAILURES.get(error, f"raft error {error}"))
        outcome: tuple[str, Any] = result
        return outcome

    def close(self) -> None:
        self._flusher_stop.set()
        self._flusher.join(1.0)
        try:
            self._flush_journal()
        except (OSError, ValueError) as err:
            log.warning("final raft journal flush failed: %s", err)
        self._sync.destroy()
