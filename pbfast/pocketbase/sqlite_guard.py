"""SQLite's own guards on a tenant's connection: what SQL a tenant can influence may do, and for how long.

A tenant's superuser is not trusted (docs/security.md): the SQL they write (view queries, index
definitions, API rules and filters compiled to SQL, and whatever views and triggers an imported or restored
database file carries) runs on the node next to other tenants' databases. So every tenant connection gets:

- an **authorizer** (checked by SQLite when it compiles each statement, also statements inside views and
  triggers): no ``ATTACH``/``DETACH`` (and so no ``VACUUM INTO``), no virtual tables created, PRAGMAs only from
  :data:`ALLOWED_PRAGMAS`, table-valued pragma functions only from :data:`READABLE_PRAGMAS` (never
  ``pragma_database_list``, which names the file), and not the functions in :data:`DENIED_FUNCTIONS`;
- **limits** (:class:`EngineLimits`): no attached databases at all, and bounded value size, SQL length,
  expression depth, compound selects, variables, function arguments and trigger depth;
- **defensive mode** (as PocketBase 0.40 turns on: no writable schema, no corrupting pragmas), **untrusted
  schema** (``trusted_schema`` off: views and triggers may only call harmless functions), no extension loading;
- a **time limit** per job (:class:`TimeLimit`, SQLite's progress handler) and a **size limit** from the
  storage quota (:func:`set_storage_limit`, ``max_page_count``), so the quota holds inside one transaction.

And the SQL text a tenant writes is never run as a script: :func:`read_only_select` accepts exactly one
read-only SELECT for a view query, and :func:`execute_one` runs one statement and refuses anything after it.

Process-wide (SQLite has no per-connection memory accounting): :func:`set_heap_limits`.

Thread-safety: a connection and its :class:`TimeLimit` are used by one thread at a time (the node's database
scheduler runs one job per tenant at a time).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import apsw
import apsw.ext

__all__ = [
    "ALLOWED_PRAGMAS",
    "DEFAULT_LIMITS",
    "DENIED_FUNCTIONS",
    "READABLE_PRAGMAS",
    "EngineLimits",
    "SqlRefused",
    "TimeLimit",
    "TimeLimitExceeded",
    "OverBudget",
    "execute_one",
    "harden",
    "read_only_select",
    "set_heap_limits",
    "set_storage_limit",
]

# PRAGMA statements a tenant connection may compile: ours (opening, checkpoints, the view check, schema
# syncs) and read-only introspection of the tenant's own tables.
ALLOWED_PRAGMAS: Final = frozenset({
    "table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list",
    "optimize", "wal_checkpoint", "wal_autocheckpoint", "max_page_count", "page_count", "page_size", "freelist_count",
    "data_version", "integrity_check", "quick_check", "busy_timeout", "user_version",
})
# Table-valued pragma functions (``SELECT ... FROM pragma_x(...)``) a tenant's SQL may read.
READABLE_PRAGMAS: Final = frozenset({
    "table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list",
})
# Functions no tenant SQL may call: loading code, pointer tricks, writing to SQLite's log.
DENIED_FUNCTIONS: Final = frozenset({"load_extension", "fts3_tokenizer", "sqlite_log"})

_DENIED_ACTIONS: Final = frozenset({
    apsw.SQLITE_ATTACH, apsw.SQLITE_DETACH, apsw.SQLITE_CREATE_VTABLE, apsw.SQLITE_DROP_VTABLE,
})

# Every statement (handler steps, sorts, recursive CTEs) is checked against its time limit this often
# (~5-10 ms of work at SQLite's pace). Rarely enough that the check, which needs the GIL, never slows a
# long query noticeably; often enough that a limit is kept to within a few milliseconds.
PROGRESS_STEPS: Final = 1_000_000
# While a job runs within a time budget (TimeLimit.within_budget) the check comes every ~50-100 us of
# SQLite work, so the budget is kept closely.
BUDGET_PROGRESS_STEPS: Final = 10_000
# How often a statement looks again whether another connection's lock is free (see TimeLimit): a write holds
# the lock for tens of microseconds, Litestream's checkpoint for milliseconds. Past LOCK_POLL_FAST_SECONDS of
# waiting (a long hold: a restore, a big batch) every LOCK_POLL_SLOW_SECONDS: each look takes the GIL.
LOCK_POLL_SECONDS: Final = 0.001
LOCK_POLL_FAST_SECONDS: Final = 0.1
LOCK_POLL_SLOW_SECONDS: Final = 0.005


class SqlRefused(ValueError):
    """SQL a tenant wrote is not acceptable (several statements, not a read-only SELECT, ...)."""


class OverBudget(BaseException):
    """A job run within a CPU budget used it up; SQLite stopped its statement. A BaseException, so that the
    request handlers' ``except Exception`` answers do not turn it into an answer: the job is done again
    elsewhere (:meth:`TimeLimit.within_budget`)."""


class TimeLimitExceeded(Exception):
    """A job ran past its time limit; SQLite stopped its statement (and rolled back any write it began)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"stopped after its time limit of {seconds:g} s")
        self.seconds = seconds


@dataclass(frozen=True, slots=True)
class EngineLimits:
    """``sqlite3_limit`` values of a tenant connection, sized so PocketBase's own API tests and real apps
    (32 MiB request bodies, filters nested a thousand deep, views with unions) stay within them."""

    length: int = 64 << 20  # bytes of one string or blob value (twice the default request body limit)
    sql_length: int = 1 << 20  # bytes of one statement's text
    expr_depth: int = 1000  # SQLite's default; PocketBase's limit too
    compound_select: int = 100  # terms of one UNION / INTERSECT / EXCEPT chain
    variable_number: int = 10_000  # bound parameters of one statement
    function_arg: int = 127
    trigger_depth: int = 10
    like_pattern_length: int = 50_000

    def apply(self, connection: apsw.Connection) -> None:
        for limit, value in (
            (apsw.SQLITE_LIMIT_ATTACHED, 0),
            (apsw.SQLITE_LIMIT_LENGTH, self.length),
            (apsw.SQLITE_LIMIT_SQL_LENGTH, self.sql_length),
            (apsw.SQLITE_LIMIT_EXPR_DEPTH, self.expr_depth),
            (apsw.SQLITE_LIMIT_COMPOUND_SELECT, self.compound_select),
            (apsw.SQLITE_LIMIT_VARIABLE_NUMBER, self.variable_number),
            (apsw.SQLITE_LIMIT_FUNCTION_ARG, self.function_arg),
            (apsw.SQLITE_LIMIT_TRIGGER_DEPTH, self.trigger_depth),
            (apsw.SQLITE_LIMIT_LIKE_PATTERN_LENGTH, self.like_pattern_length),
        ):
            connection.limit(limit, value)


DEFAULT_LIMITS: Final = EngineLimits()


# The tables the node reads on every open (the collections, the settings): written only through the APIs.
NODE_TABLES: Final = frozenset({"_collections", "_params"})
_ROW_WRITES: Final = frozenset({apsw.SQLITE_INSERT, apsw.SQLITE_UPDATE, apsw.SQLITE_DELETE})


def _authorize(action: int, first: str | None, second: str | None, database: str | None,
               origin: str | None) -> int:
    """SQLite's authorizer callback (see the module docs); ``origin`` is the view or trigger compiled."""
    if action in _DENIED_ACTIONS:
        return apsw.SQLITE_DENY
    if action == apsw.SQLITE_PRAGMA:
        return apsw.SQLITE_OK if (first or "").lower() in ALLOWED_PRAGMAS else apsw.SQLITE_DENY
    if action == apsw.SQLITE_READ and first is not None and first[:7].lower() == "pragma_":
        return apsw.SQLITE_OK if first[7:].lower() in READABLE_PRAGMAS else apsw.SQLITE_DENY
    if action == apsw.SQLITE_FUNCTION and (second or "").lower() in DENIED_FUNCTIONS:
        return apsw.SQLITE_DENY
    if origin is not None and action in _ROW_WRITES and (first or "").lower() in NODE_TABLES:
        # a trigger's body is authorized when the statement firing it is compiled, by the node's own
        # statements too: no trigger of the tenant's (created through the SQL console, or brought by an
        # imported database or a restored backup) may change what the node reads outside the APIs' checks
        return apsw.SQLITE_DENY
    return apsw.SQLITE_OK


def harden(connection: apsw.Connection, limits: EngineLimits = DEFAULT_LIMITS) -> None:
    """Put the guards on a freshly opened tenant connection (before any tenant SQL runs on it)."""
    limits.apply(connection)
    connection.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
    connection.config(apsw.SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0)
    connection.config(apsw.SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0)
    connection.enable_load_extension(False)
    connection.authorizer = _authorize


def set_storage_limit(connection: apsw.Connection, max_bytes: int | None) -> None:
    """Cap the database's size at ``max_bytes`` (None: SQLite's own maximum): a write that would grow it
    further fails with SQLITE_FULL and its transaction rolls back. SQLite never lowers the cap below the
    database's current size."""
    page_size = int(connection.execute("PRAGMA page_size").get)
    pages = 0xFFFFFFFE if max_bytes is None else max(1, max_bytes // page_size)
    connection.execute(f"PRAGMA max_page_count = {int(pages)}")


def set_heap_limits(soft_bytes: int, hard_bytes: int) -> None:
    """SQLite's process-wide heap limits: past ``soft_bytes`` it frees cache pages first; past
    ``hard_bytes`` allocations fail (the statement answers SQLITE_NOMEM) instead of the node running out of
    memory. 0 means no limit."""
    apsw.hard_heap_limit(hard_bytes)
    apsw.soft_heap_limit(soft_bytes)


class TimeLimit:
    """A per-connection time limit for jobs: while :meth:`running` is active, any statement still running
    after the limit is stopped by SQLite (``apsw.InterruptError``, turned into :class:`TimeLimitExceeded`).
    And a time budget (:meth:`within_budget`) for work tried on a thread that must not be held long."""

    __slots__ = ("_budget", "_budget_wall", "_busy_timeout_ms", "_connection", "_deadline", "_seconds",
                 "_waiting_since", "blocked", "budget_spent")

    def __init__(self, connection: apsw.Connection, busy_timeout_ms: int = 0) -> None:
        """``busy_timeout_ms``: how long a statement waits for another connection's lock (0: not at all). The
        wait polls every :data:`LOCK_POLL_SECONDS` instead of SQLite's own busy timeout, whose sleeps grow to
        25-100 ms: a writer behind Litestream's checkpoint (or another worker process's write) would sleep on
        for tens of ms after the lock is free, and the tenant's later writes queue behind it."""
        self._deadline: float | None = None
        self._busy_timeout_ms = busy_timeout_ms
        self._waiting_since = 0.0
        self._budget: float | None = None  # the thread CPU time (time.thread_time) the budget ends at
        # The wall clock (time.monotonic) before which the budget cannot have run out: a thread's CPU time never
        # grows faster than the wall clock, and reading the clock costs no system call, the CPU time's does.
        self._budget_wall = 0.0
        self._seconds = 0.0
        self._connection = connection
        self.budget_spent = False
        self.blocked = False  # the last budget ended on another connection's lock, not on time
        connection.set_progress_handler(self._over, PROGRESS_STEPS)
        connection.set_commit_hook(self._committed)
        if busy_timeout_ms:
            connection.set_busy_handler(self._busy)

    def _committed(self) -> bool:
        """SQLite's commit hook (write transactions only): from here on a budget no longer applies, since
        committed work cannot be thrown away and done again; the job runs to its end (within its time limit)
        and counts as done. Returns False: the commit goes on."""
        self._budget, self.budget_spent = None, False
        return False

    def _busy(self, attempts: int) -> bool:
        """SQLite's busy handler: another connection holds the lock. Within a budget nothing is waited for (the
        work is done again on a thread that may wait); else (and once something is committed) look again every
        :data:`LOCK_POLL_SECONDS` (:data:`LOCK_POLL_SLOW_SECONDS` after a long wait) up to the busy timeout."""
        if self._budget is not None:
            self.budget_spent = self.blocked = True
            raise OverBudget
        if not self._busy_timeout_ms:
            return False
        now = time.monotonic()
        if attempts == 0:
            self._waiting_since = now
        waited = now - self._waiting_since
        if waited >= self._busy_timeout_ms / 1000:
            return False
        time.sleep(LOCK_POLL_SECONDS if waited < LOCK_POLL_FAST_SECONDS else LOCK_POLL_SLOW_SECONDS)
        return True

    def _over(self) -> bool:
        deadline = self._deadline
        now = time.monotonic()
        if deadline is not None and now > deadline:
            return True
        budget = self._budget
        if budget is not None and now >= self._budget_wall and time.thread_time() > budget:
            self.budget_spent = True
            return True
        return False

    @property
    def expired(self) -> bool:
        """Whether the running job's time limit has passed. Raises :class:`OverBudget` when it was its CPU
        budget that stopped it (a statement interrupted for that surfaces as whatever error it caused)."""
        if self.budget_spent:
            raise OverBudget
        deadline = self._deadline
        return deadline is not None and time.monotonic() > deadline

    def running(self, seconds: float | None) -> _Running:
        """Bound the work inside (``with``) to ``seconds`` (None or <= 0: no limit)."""
        return _Running(self, seconds)

    def within_budget(self, seconds: float, work: Callable[[], object], cpu_started: float | None = None) -> bool:
        """Run ``work()`` with its SQLite statements stopped once ``seconds`` have passed since it started;
        True when it ran to its end within that, False when it was stopped. What stopped
        work did is to be thrown away and the work done again elsewhere, so it must have no lasting effect
        but its SQLite writes: a write is only stopped before its first commit (a stopped transaction is
        rolled back), and once something is committed the budget ends (see :meth:`_committed`). Statements are checked every :data:`BUDGET_PROGRESS_STEPS` meanwhile; a statement shorter
        than that is never stopped. The thread's CPU time, not the wall clock: a thread that waited for a
        core or for the GIL meanwhile did no more work (reading it is a system call, ~1 us, made here and then
        once per BUDGET_PROGRESS_STEPS once as much wall time has passed). Stopped because another connection held
        the lock: :attr:`blocked` is then true. ``cpu_started``: the thread's CPU time now, if the caller just
        read it."""
        self.budget_spent = self.blocked = False
        self._budget_wall = time.monotonic() + seconds
        self._budget = (time.thread_time() if cpu_started is None else cpu_started) + seconds
        self._connection.set_progress_handler(self._over, BUDGET_PROGRESS_STEPS)
        self._connection.set_busy_handler(self._busy)  # no waiting for another connection's lock either
        spent = False
        try:
            work()
        except OverBudget:
            spent = True
        except apsw.InterruptError:  # outside TimeLimit.running: the budget's, or the caller's to see
            if not self.budget_spent:
                raise
            spent = True
        finally:
            spent = spent or self.budget_spent
            self._budget, self.budget_spent = None, False  # a later stop is the time limit's
            self._connection.set_progress_handler(self._over, PROGRESS_STEPS)
            if not self._busy_timeout_ms:
                self._connection.set_busy_timeout(0)
        return not spent

    @contextlib.contextmanager
    def narrowed(self, seconds: float) -> Iterator[None]:
        """Also stop statements inside once ``seconds`` have passed (a batch's own timeout), within the
        limit already running, if any (the earlier deadline wins); the running limit is back afterwards.
        A statement stopped here raises ``apsw.InterruptError`` to the caller, which knows its deadline."""
        previous = self._deadline
        deadline = time.monotonic() + seconds
        self._deadline = deadline if previous is None else min(previous, deadline)
        try:
            yield
        finally:
            self._deadline = previous

    @contextlib.contextmanager
    def suspended(self) -> Iterator[None]:
        """No limit inside (a rollback after a stopped statement must always run)."""
        deadline, self._deadline = self._deadline, None
        budget, self._budget = self._budget, None
        try:
            yield
        finally:
            self._deadline = deadline
            self._budget = budget


class _Running:
    """:meth:`TimeLimit.running`'s context (a class, not a generator: it wraps every request)."""

    __slots__ = ("_limit", "_seconds")

    def __init__(self, limit: TimeLimit, seconds: float | None) -> None:
        self._limit = limit
        self._seconds = seconds if seconds is not None and seconds > 0 else None

    def __enter__(self) -> None:
        seconds = self._seconds
        if seconds is not None:
            limit = self._limit
            limit._seconds = seconds
            limit._deadline = time.monotonic() + seconds

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, trace: Any) -> None:
        seconds = self._seconds
        if seconds is None:
            return
        limit = self._limit
        limit._deadline = None
        if isinstance(err, apsw.InterruptError):
            if limit.budget_spent:
                raise OverBudget from err
            raise TimeLimitExceeded(seconds) from err


# What may follow the one statement of a tenant's SQL: whitespace, semicolons and comments.
_TRAILER: Final = re.compile(r"(?:\s|;|--[^\n]*(?:\n|$)|/\*.*?(?:\*/|$))*", re.DOTALL)


def _one_statement(connection: apsw.Connection, sql: str) -> apsw.ext.QueryDetails:
    """SQLite's own reading of ``sql``: exactly one statement, then nothing but comments. Raises
    :class:`SqlRefused` (or apsw.Error when SQLite cannot compile it)."""
    details = apsw.ext.query_info(connection, sql)
    remaining = details.query_remaining or ""
    if _TRAILER.fullmatch(remaining) is None:
        raise SqlRefused("multiple statements are not supported")
    return details


def read_only_select(connection: apsw.Connection, query: str) -> str:
    """A view query as it may be stored (trailing ``;`` removed), checked as SQLite compiles it inside the
    ``SELECT * FROM (<query>)`` every use of it is wrapped in (so SQLite's errors read as PocketBase's): one
    read-only statement with nothing after it. Raises :class:`SqlRefused` or apsw.Error."""
    query = query.strip().strip(";").strip()
    details = _one_statement(connection, f"SELECT * FROM ({query})")
    if not details.is_readonly:
        raise SqlRefused("only read-only SELECT queries are supported")
    return query


def execute_one(connection: apsw.Connection, sql: str, bindings: Any = None) -> None:
    """Run ``sql`` built from a tenant's definitions (an index, a view) as one statement, never a script."""
    _one_statement(connection, sql)
    connection.execute(sql, bindings)
