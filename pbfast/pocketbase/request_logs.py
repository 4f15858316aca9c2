"""A tenant's request logs as PocketBase 0.40 keeps them: rows of ``_logs`` in ``auxiliary.db`` beside the
tenant's ``data.db`` (``id``, ``level`` 0 for a success and 8 for an error, ``message`` ``"GET /api/..."``,
``data`` the JSON of PocketBase's request attributes, ``created``), honouring the tenant's ``logs``
settings (``maxDays`` 0: nothing is logged; ``minLevel``; ``logIP``; ``logAuthId``).

Off the request path: a request only pushes its fields (a :data:`LogEntry`) onto the process's native queue
(:class:`pbfast._native.RequestLogQueue`: a few string copies, no Python object kept; bounded: when it is full the
entry is dropped and counted, a request never waits); one writer thread per process takes the queue whole, has
the rows formatted natively with the GIL released (``message``, the ``data`` JSON as Go writes it, ``created``),
and inserts them in batches, one transaction per tenant, every second or every ``batch`` entries, and deletes
rows older than ``maxDays`` (at most every six hours per tenant, as PocketBase's cron does, and when the settings
change). ``auxiliary.db`` is not replicated: like PocketBase, pbfast treats logs as disposable (a tenant moved to
another node starts with empty logs there; see docs/logs-backups.md).

Thread-safety: :meth:`RequestLogs.add` from any thread (the native queue has its own lock); the rest on the
writer thread or under its lock.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeAlias

import apsw

from pbfast.logs import component_logger
from pbfast.pocketbase import app_settings
from pbfast.pocketbase.collections.system import AUXILIARY_DDL
from pbfast.primitives import RequestLogQueue

if TYPE_CHECKING:
    from pbfast.pocketbase.tenant import Tenant

__all__ = ["AUXILIARY_DB", "ERROR_LEVEL", "INFO_LEVEL", "LogEntry", "RequestLogs", "cached_settings",
           "settings_at_hand",
           "format_created", "open_auxiliary"]

log = component_logger("TenantNode")

AUXILIARY_DB: Final = "auxiliary.db"
INFO_LEVEL: Final = 0  # slog.LevelInfo
ERROR_LEVEL: Final = 8  # slog.LevelError
PRUNE_EVERY_SECONDS: Final = 6 * 3600  # PocketBase's "0 */6 * * *" cleanup
SETTINGS_FRESH_SECONDS: Final = 1.0
CONNECTION_IDLE_SECONDS: Final = 60.0  # the writer closes a tenant's auxiliary.db after this long unused
# Each kept connection holds three descriptors (database, WAL, shared memory), and a node cycles through
# thousands of tenants. In a node the writer keeps one per tenant the node has open (it follows the node's opens
# and closes: :meth:`RequestLogs.follow_open_tenants`); reopening one for every batch cost 16 % of the node's CPU
# on 100 busy tenants (and each close checkpoints its WAL). Without a node to follow it keeps this many, the
# least recently used going first.
MAX_KEPT_CONNECTIONS: Final = 16
# A kept connection's page cache, in KiB (SQLite's default is 2 MiB): a batch touches the table's and its
# indexes' last pages only.
KEPT_CONNECTION_CACHE_KIB: Final = 256
_BUSY_TIMEOUT_MS: Final = 5000
WAL_CHECKPOINT_PAGES: Final = 4000
# A tenant's batch is inserted by one statement per part: the rows come formatted in two buffers (see
# RequestLogQueue.drain: a blob of each row's created, message and data, and one packed integer per row with its
# start, message length, level and data length), which SQLite reads through ``carray`` and ``substr``, so that the
# writer binds five values per part instead of four Python objects per row, and gives the GIL back for the whole
# insert. (A JSON array of the rows cost SQLite ~2 µs a row to take apart; these are a few arithmetic operations.
# Each row's fields come from its own integer: a window over the rows, ``lead()`` for the next row's start and
# ``row_number()``, cost ~0.5 µs a row more.) A row whose data is too long for its bits ends its part and reads
# its data to the blob's end (``?3``, the blob's length).
# Ids are PocketBase's ``[a-z0-9]{15}``, but ordered in time: the batch's millisecond in base 36 (9 characters,
# strictly increasing per process), then a counter in 6 hex digits from a random start (unique in the batch; two
# processes' batches in the same millisecond rarely meet, and a row that would repeat an id is skipped). Random
# ids cost twice as much to insert (the primary key index grows at random places); these are appended.
_B36: Final = "0123456789abcdefghijklmnopqrstuvwxyz"
_COUNTER_SPAN: Final = 16**6
_START_BITS, _MESSAGE_BITS, _LEVEL_BITS = 24, 14, 8  # as rust/src/request_log.rs packs a row
_DATA_TO_END: Final = (1 << (64 - _START_BITS - _MESSAGE_BITS - _LEVEL_BITS)) - 1
_INSERT: Final = (
    "WITH batch(n, start, message_length, level, data_length) AS ("
    f" SELECT rowid, value & {(1 << _START_BITS) - 1}, (value >> {_START_BITS}) & {(1 << _MESSAGE_BITS) - 1},"
    f" ((value >> {_START_BITS + _MESSAGE_BITS}) & {(1 << _LEVEL_BITS) - 1}) - 128,"
    f" (value >> {_START_BITS + _MESSAGE_BITS + _LEVEL_BITS}) & {_DATA_TO_END} FROM carray(?1)) "
    "INSERT OR IGNORE INTO _logs (id, level, message, data, created) "
    "SELECT ?4 || printf('%06x', ?5 + n), level,"
    " CAST(substr(?2, start + 25, message_length) AS TEXT),"
    f" CAST(substr(?2, start + 25 + message_length, iif(data_length = {_DATA_TO_END},"
    " ?3 - start - 24 - message_length, data_length)) AS TEXT),"
    " CAST(substr(?2, start + 1, 24) AS TEXT) FROM batch")


def _base36(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 36)
        digits.append(_B36[digit])
    return "".join(reversed(digits))


# One request's log, as :meth:`pbfast._native.RequestLogQueue.push` takes it: (the tenant's directory, its
# ``maxDays``, level, method, url (path and ``?query``, percent-encoded), status, execTime in ms, referer,
# userAgent, auth (the auth collection's name or ""), authId, userIP, remoteIP (None: not logged), error (a failed
# request's message; None for a success), details (its JSON, None: null), created (Unix time)). A plain tuple:
# made on the request's thread, where a class instance cost more than the rest of the log.
LogEntry: TypeAlias = tuple[Path, int, int, str, str, int, float, str, str, str, str | None, str | None, str | None,
                            str | None, bytes | None, float]


# The text of the current second, kept, and the milliseconds' texts: formatting a time (even ``:03d``) cost more
# than the rest of a request's log row.
_second_text: tuple[int, str] = (0, "1970-01-01 00:00:00")
_MILLISECONDS: Final = tuple(f".{millisecond:03d}Z" for millisecond in range(1000))


def format_created(moment: float) -> str:
    """PocketBase's datetime text (``2006-01-02 15:04:05.000Z``) of a Unix time (not before 1970)."""
    global _second_text  # noqa: PLW0603 - one cache for the process; a race only formats a second again
    seconds = int(moment)
    cached = _second_text
    if cached[0] != seconds:
        cached = _second_text = (seconds, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)))
    return cached[1] + _MILLISECONDS[int((moment - seconds) * 1000)]


def open_auxiliary(directory: Path, *, create: bool) -> apsw.Connection | None:
    """A connection to the tenant's ``auxiliary.db`` with its ``_logs`` table; None when it does not exist and
    ``create`` is false, or when the tenant has no ``data.db`` (gone: never create files for it)."""
    path = directory / AUXILIARY_DB
    if not (directory / "data.db").exists() or (not create and not path.exists()):
        return None
    conn = apsw.Connection(str(path))
    try:
        conn.setbusytimeout(_BUSY_TIMEOUT_MS)
        conn.execute("PRAGMA synchronous = NORMAL")  # as PocketBase opens it: a commit does not wait for the disk
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_logs'").fetchone() is None:
            conn.execute("PRAGMA journal_mode = WAL")
            with conn:
                for statement in AUXILIARY_DDL:
                    conn.execute(statement.replace("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ", 1)
                                 .replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1))
    except BaseException:
        conn.close()
        raise
    return conn


# The tenant's settings as logging reads them, by tenant id: re-read at most once a second per tenant (a
# changed setting shows within that, also one saved by another process), and at once when this process's
# settings API saves new ones. A few hundred bytes per tenant the process served.
_settings: dict[str, tuple[float, app_settings.Settings]] = {}


def settings_at_hand(tenant_id: str) -> app_settings.Settings | None:
    """The tenant's settings as last read by :func:`cached_settings` (or saved), however old; None if never:
    for the event loop, which may not read a tenant's database outside its turn."""
    cached = _settings.get(tenant_id)
    return None if cached is None else cached[1]


def cached_settings(tenant: Tenant) -> app_settings.Settings:
    """The tenant's settings, read at most once a second (on the tenant's database thread); every time when
    other processes (a node's workers) may save them: a few microseconds to read the row, the decoded settings
    kept while it is unchanged (:func:`app_settings.load_settings`)."""
    if tenant.shared_schema:
        return app_settings.load_settings(tenant.conn)
    now = time.monotonic()
    cached = _settings.get(tenant.id)
    if cached is not None and now - cached[0] < SETTINGS_FRESH_SECONDS:
        return cached[1]
    settings = app_settings.load_settings(tenant.conn)
    _settings[tenant.id] = (now, settings)
    return settings


@dataclass
class _Batch:
    """A tenant's rows taken from the queue: its last ``maxDays`` and the parts RequestLogQueue.drain made
    (``(rows, blob, packed)``, in order; more than one after a row with very long data, or when two Path objects
    named the tenant's directory)."""

    max_days: int
    parts: list[tuple[int, bytes, bytes]]

    def rows(self) -> int:
        return sum(part[0] for part in self.parts)


class RequestLogs:
    """The process's queue of request logs and the thread writing them (started with the first entry)."""

    def __init__(self, capacity: int = 20_000, batch: int = 2000, interval: float = 1.0) -> None:
        self.capacity = capacity
        self.batch = batch
        self.interval = interval
        self.written = 0
        self.failed = 0  # entries lost to a write that failed (or that could not be queued)
        self._queue = RequestLogQueue(capacity)
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one writer at a time (the thread, or a flush before a read)
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._last_millisecond = 0  # of the last batch's ids
        self._connections: dict[Path, tuple[apsw.Connection, float]] = {}  # tenant directory -> (conn, last use)
        self._max_kept = MAX_KEPT_CONNECTIONS
        self._is_open: Callable[[Path], bool] | None = None  # the node's open tenants (follow_open_tenants)
        self._pruned: dict[Path, float] = {}  # tenant directory -> monotonic time of its last prune
        app_settings.on_saved(self._settings_saved)

    @property
    def dropped(self) -> int:
        """Entries refused because the queue was full (the newest are dropped: what is queued stays)."""
        return self._queue.dropped

    def add(self, entry: LogEntry) -> None:
        """Queue one entry; never blocks (a full queue drops it)."""
        try:
            queued = self._queue.push(*entry)
        except (TypeError, ValueError) as err:  # a field of an unexpected type: the request stands, its log goes
            self.failed += 1
            log.warning("request log not queued: %s", err)
            return
        if self._thread is None:
            self._start()
        elif queued == self.batch:  # once per batch, not on every entry while the writer catches up
            self._wake.set()

    def follow_open_tenants(self, is_open: Callable[[Path], bool], max_open: int | None = None) -> None:
        """Keep a tenant's ``auxiliary.db`` open while ``is_open(directory)``, at most ``max_open`` of them (the
        node's ``--max-tenants``; None: as many as are open), and close it once the tenant is closed, after its
        rows are written (at the writer's next pass, within ``interval``; a row logged after the close opens it
        again for its write only). ``is_open`` runs on the writer thread: it must only read (a dict lookup)."""
        self._is_open = is_open
        self._max_kept = max_open if max_open is not None else 1 << 30

    def pending(self) -> int:
        return len(self._queue)

    def flush(self) -> None:
        """Write everything queued now (the logs API reads after it: a request's own earlier logs show), then
        close the connections no longer kept."""
        with self._lock:
            self._write(self._drain())
            self._let_go()

    def close(self) -> None:
        """Stop the writer after writing what is queued."""
        self._stopped = True
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=10)
        self.flush()
        with self._lock:
            self._close_connections()

    def prune(self, directory: Path, max_days: int, min_level: int | None = None) -> None:
        """Delete the tenant's logs older than ``max_days`` (and, with ``min_level``, those below it)."""
        with self._lock:
            self._prune(directory, max_days, min_level)

    # ---- the writer ---------------------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pbfast-request-logs", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the writer must go on
                log.exception("writing request logs failed")

    def _drain(self) -> dict[Path, _Batch]:
        """What is queued, formatted: per tenant directory, its batch."""
        by_tenant: dict[Path, _Batch] = {}
        for directory, max_days, rows, blob, packed in self._queue.drain():  # grouped by the directory object
            known = by_tenant.get(directory)
            batch = _Batch(max_days, [(rows, blob, packed)])
            if known is not None:  # an equal directory of another Path object
                batch.parts[:0] = known.parts
            by_tenant[directory] = batch
        return by_tenant

    def _write(self, by_tenant: dict[Path, _Batch]) -> None:
        is_open = self._is_open
        for directory, batch in by_tenant.items():
            try:
                self._write_tenant(directory, batch)
            except apsw.Error as err:
                self.failed += batch.rows()
                log.warning("request logs of %s not written: %s", directory.name, err)
            if is_open is not None and not is_open(directory):
                # A closed tenant's connection goes as soon as its rows are in, not after the whole pass: a pass
                # over a batch from many closed tenants would otherwise hold one connection (3 descriptors) each.
                closed = self._connections.pop(directory, None)
                if closed is not None:
                    closed[0].close()

    def _connection(self, directory: Path) -> apsw.Connection | None:
        """The writer's connection to a tenant's auxiliary.db, kept open between batches (closing the last
        connection of a WAL database checkpoints it: that would cost more than the batch)."""
        now = time.monotonic()
        kept = self._connections.pop(directory, None)
        if kept is not None:
            if (directory / "data.db").exists():
                self._connections[directory] = (kept[0], now)  # the most recently used last
                return kept[0]
            kept[0].close()  # the tenant's data is gone from here (moved, deleted)
        is_open = self._is_open
        # A closed tenant's connection is for this batch only (let go after it): it never displaces a kept one.
        if is_open is None or is_open(directory):
            while len(self._connections) >= self._max_kept:
                victim = next((other for other in self._connections if is_open is not None and not is_open(other)),
                              next(iter(self._connections)))  # a closed tenant's, else the least recently used
                self._connections.pop(victim)[0].close()
        conn = open_auxiliary(directory, create=True)
        if conn is not None:
            # Checkpoints every 16 MB of WAL rather than 4: the index pages a batch touches again are copied into
            # the database once, not each time (~10% of an insert); the WAL goes when the connection closes.
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA cache_size = -{KEPT_CONNECTION_CACHE_KIB}")
            self._connections[directory] = (conn, now)
        return conn

    def _let_go(self) -> None:
        """Close the connections unused for :data:`CONNECTION_IDLE_SECONDS`, and those of tenants the node
        closed (their rows queued before the close are written by now)."""
        now, is_open = time.monotonic(), self._is_open
        for directory, (conn, used) in list(self._connections.items()):
            if now - used > CONNECTION_IDLE_SECONDS or (is_open is not None and not is_open(directory)):
                del self._connections[directory]
                conn.close()

    def _close_connections(self) -> None:
        for conn, _ in self._connections.values():
            conn.close()
        self._connections.clear()

    def _write_tenant(self, directory: Path, batch: _Batch) -> None:
        conn = self._connection(directory)
        if conn is None:  # the tenant's data is gone from here (moved, deleted)
            return
        try:
            millisecond = self._last_millisecond = max(time.time_ns() // 1_000_000, self._last_millisecond + 1)
            ids = _base36(millisecond, 9)
            start = secrets.randbelow(_COUNTER_SPAN - batch.rows())  # + a row's number in its part: below the span
            changes = 0
            # BEGIN/COMMIT as statements, not ``with conn``: apsw holds the GIL through a context manager's commit
            # (measured: the event loop stopped for the whole commit, and the WAL checkpoint runs in it).
            conn.execute("BEGIN")
            try:
                for rows, blob, packed in batch.parts:
                    conn.execute(_INSERT, (apsw.carray(packed, flags=apsw.SQLITE_CARRAY_INT64), blob, len(blob),
                                           ids, start))
                    changes += conn.changes()
                    start += rows
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self.written += changes
            now = time.monotonic()
            last = self._pruned.get(directory)
            if last is None or now - last >= PRUNE_EVERY_SECONDS:
                self._pruned[directory] = now
                _delete_old(conn, batch.max_days, None)
        except apsw.Error:
            self._connections.pop(directory, None)
            conn.close()
            raise

    def _prune(self, directory: Path, max_days: int, min_level: int | None) -> None:
        conn = self._connection(directory) if (directory / AUXILIARY_DB).exists() else None
        if conn is None:
            return
        _delete_old(conn, max_days, min_level)
        if max_days == 0:
            conn.execute("VACUUM")  # no logs are kept: give the space back, as PocketBase does

    def _settings_saved(self, tenant: Tenant, settings: app_settings.Settings) -> None:
        """PocketBase's reaction to saved settings: old logs, and those now below ``minLevel``, go."""
        _settings[tenant.id] = (time.monotonic(), settings)
        try:
            self.prune(tenant.directory, settings.logs.max_days, settings.logs.min_level)
        except apsw.Error as err:
            log.warning("tenant %s: pruning request logs failed: %s", tenant.id, err)


def _delete_old(conn: apsw.Connection, max_days: int, min_level: int | None) -> None:
    before = format_created(max(time.time() - max_days * 86400, 0.0))  # (format_created takes no time before 1970)
    if min_level is None:
        conn.execute("DELETE FROM _logs WHERE created <= ?", (before,))
    else:
        conn.execute("DELETE FROM _logs WHERE created <= ? OR level < ?", (before, min_level))
