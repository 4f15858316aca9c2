"""One tenant's PocketBase database: an apsw connection to ``<tenant dir>/data.db`` and its collections.

SQLite settings (PocketBase's): WAL journal, ``synchronous=NORMAL`` (a committed transaction survives the
process being killed; on power loss the last transactions before the latest WAL sync may roll back),
``busy_timeout`` 10 s, foreign keys off (PocketBase enforces relations itself). Unlike PocketBase, temporary
storage (large sorts) goes to files, not to the node's shared memory, and the connection carries the guards
of :mod:`pbfast.pocketbase.sqlite_guard` (the tenant's SQL is not trusted).

Thread-safety: a :class:`Tenant` is used by one thread at a time: the node's database scheduler runs one job
per tenant at a time, on any of its worker threads.
"""

from __future__ import annotations

import os
import secrets
import string
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import apsw

from pbfast import _native
from pbfast.durable import fsync_file
from pbfast.pocketbase import collections
from pbfast.pocketbase.collections import Collection, CollectionMap
from pbfast.pocketbase.collections.version import schema_version
from pbfast.pocketbase.dbutils.kept_rows import KeptRows
from pbfast.pocketbase.dbutils.list_totals import ListTotals
from pbfast.pocketbase.sqlite_guard import DEFAULT_LIMITS, EngineLimits, TimeLimit, harden, set_storage_limit

if TYPE_CHECKING:
    from pbfast.pocketbase.realtime import RealtimeBus

__all__ = ["DATA_DB", "Tenant", "backup_database", "check_pocketbase_database", "new_record_id"]

DATA_DB = "data.db"
BUSY_TIMEOUT_MS = 10_000
_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_record_id() -> str:
    """A PocketBase record id: 15 random ``[a-z0-9]`` characters."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(15))


REQUIRED_TABLES = ("_collections", "_superusers", "_params", "_migrations")


def check_pocketbase_database(path: Path) -> str | None:
    """None when ``path`` is an intact PocketBase data.db, else what is wrong (one line)."""
    try:
        connection = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    except apsw.Error as err:
        return f"cannot open it ({err})"
    try:
        harden(connection)  # the file may come from outside: its views and triggers are not trusted
        verdict = connection.execute("PRAGMA integrity_check").fetchone()
        if not verdict or verdict[0] != "ok":
            return f"integrity check failed ({verdict[0] if verdict else 'no answer'})"
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = [t for t in REQUIRED_TABLES if t not in tables]
        if missing:
            return f"missing PocketBase tables: {', '.join(missing)}"
    except apsw.Error as err:
        return f"unreadable ({err})"
    finally:
        connection.close()
    return None


def backup_database(source: Path, target: Path) -> None:
    """A consistent copy of a live database (SQLite's online backup), fsynced, in rollback-journal mode
    so the single file is complete."""
    src = apsw.Connection(str(source), flags=apsw.SQLITE_OPEN_READONLY)
    dst = apsw.Connection(str(target))
    try:
        with dst.backup("main", src, "main") as backup:
            backup.step(-1)
        dst.execute("PRAGMA journal_mode = DELETE")
    finally:
        dst.close()
        src.close()
    fsync_file(target)


class Tenant:
    """An open tenant database with its collections loaded."""

    def __init__(self, tenant_id: str, directory: Path, connection: apsw.Connection,
                 max_bytes: int | None = None) -> None:
        self.id = tenant_id
        self.max_bytes = max_bytes  # the storage cap inside SQLite (None: none)
        self.directory = directory
        self.conn = connection
        self.time_limit = TimeLimit(connection, BUSY_TIMEOUT_MS)
        self.list_totals = ListTotals()  # records lists' totals while the data is unchanged
        self.related_rows = KeptRows()  # expanded records while the data is unchanged
        self.closed = False
        # Run once it is closed: what other modules hold for its connection (e.g. a mapping of its WAL index).
        self.on_close: list[Callable[[], None]] = []
        self.realtime: RealtimeBus | None = None  # where its committed record changes go (realtime events)
        # The extension's statements kept on this connection (records.native_view); closed before it.
        self.native_reader: _native.RecordReader | None = None
        # Other connections may change the collections (a node's worker processes): checked on each request.
        self.shared_schema = False
        self.schema_version = 0
        self.collections = CollectionMap()
        self.reload_collections()

    @classmethod
    def open(cls, tenant_id: str, directory: Path, create: bool = False, limits: EngineLimits = DEFAULT_LIMITS,
             max_bytes: int | None = None) -> Tenant:
        """Open ``directory/data.db``; with ``create``, initialise a fresh PocketBase database first. The
        database may not grow past ``max_bytes`` (the storage quota; None: no limit)."""
        path = directory / DATA_DB
        if not path.exists():
            if not create:
                raise FileNotFoundError(f"tenant {tenant_id}: no {path}")
            directory.mkdir(parents=True, exist_ok=True)
            collections.init_tenant_database(directory)
        connection = apsw.Connection(str(path), statementcachesize=256)
        try:
            connection.setbusytimeout(BUSY_TIMEOUT_MS)
            for pragma in ("journal_mode = WAL", "synchronous = NORMAL", "foreign_keys = OFF",
                           "temp_store = FILE", "cache_size = -16000"):
                connection.execute(f"PRAGMA {pragma}")
            harden(connection, limits)
            set_storage_limit(connection, max_bytes)
            return cls(tenant_id, directory, connection, max_bytes)
        except BaseException:
            connection.close()
            raise

    def set_max_bytes(self, max_bytes: int | None) -> None:
        """Apply a changed storage quota inside SQLite (see :func:`set_storage_limit`)."""
        set_storage_limit(self.conn, max_bytes)
        self.max_bytes = max_bytes

    def reload_collections(self) -> None:
        """Re-read ``_collections`` (after a schema change), with their version, in one read transaction."""
        if self.conn.in_transaction:
            self.schema_version = schema_version(self.conn)
            self.collections = collections.load_collections(self.conn)
            return
        self.conn.execute("BEGIN")
        try:
            self.schema_version = schema_version(self.conn)
            self.collections = collections.load_collections(self.conn)
        finally:
            self.conn.execute("COMMIT")

    def refresh_collections(self) -> None:
        """Re-read ``_collections`` if another connection changed them since (a cheap check when not)."""
        if schema_version(self.conn) != self.schema_version:
            self.reload_collections()

    def collection(self, name_or_id: str) -> Collection | None:
        """A collection by name (case-insensitive, as PocketBase) or id."""
        return self.collections.lookup(name_or_id)

    def collection_by_id(self, collection_id: str) -> Collection | None:
        return self.collections.by_id(collection_id)

    def query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()

    def size_bytes(self) -> int:
        """What the storage quota counts: the database with its WAL, and the tenant's files in the store."""
        from pbfast.pocketbase.filesystem import files_of  # the files know the tenant, not the reverse

        total = files_of(self).stored_bytes
        for name in (DATA_DB, DATA_DB + "-wal"):
            try:
                total += os.stat(self.directory / name).st_size
            except FileNotFoundError:
                pass
        return total

    def close(self, checkpoint: bool = True) -> None:
        """Close (once; later calls do nothing), with ``checkpoint`` the WAL checkpointed into the main file
        first (not while Litestream replicates the database: only it may checkpoint then)."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.native_reader is not None:
                self.native_reader.close()  # its statements finalized: apsw cannot close the connection past them
            if checkpoint:
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self.conn.close()
            for release in self.on_close:
                release()
