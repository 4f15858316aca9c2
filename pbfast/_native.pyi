"""Typed stubs for the Rust extension ``pbfast._native``.

The module holds the per-request hot-path primitives. Every class is safe to share between threads:
each method takes the internal lock (or lock-free snapshot) it needs and never calls back into Python.
``pbfast.reference`` holds pure-Python twins with the same behaviour (tests and benchmark baseline).
"""

from collections.abc import Iterable, Iterator, Sequence
from os import PathLike
from typing import Any, final

__version__: str

class InvalidTenantId(ValueError):
    """A request named a tenant whose id is not a DNS label (``^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$``)."""

def is_valid_tenant_id(tenant_id: str) -> bool:
    """True when ``tenant_id`` is a DNS label: 1-63 chars of ``[a-z0-9-]``, not starting or ending with ``-``."""

@final
class RoutingTable:
    """Versioned map tenant id -> route ``(node_address, epoch, active)``.

    Readers work on an immutable snapshot (an atomic pointer swap), so lookups never block writers and
    writers never block lookups. Writers serialise among themselves.
    """

    def __init__(self, base_domain: str = "") -> None:
        """``base_domain`` (e.g. ``"pb.example.com"``) enables Host resolution ``{id}.{base_domain}``;
        empty disables it. Stored lower-cased, without a leading dot."""
    @property
    def version(self) -> int:
        """Version of the current snapshot (0 for a new table)."""
    @property
    def base_domain(self) -> str: ...
    def __len__(self) -> int: ...
    def __contains__(self, tenant_id: str, /) -> bool: ...
    def get(self, tenant_id: str) -> tuple[str, int, bool] | None:
        """The route ``(node_address, epoch, active)`` of a tenant, or None."""
    def replace(self, routes: Iterable[tuple[str, str, int, bool]], version: int) -> None:
        """Swap in a whole new snapshot of ``(tenant_id, node_address, epoch, active)`` rows.

        Raises ``InvalidTenantId`` (and changes nothing) when a row's id is not a DNS label."""
    def patch(
        self,
        upserts: Iterable[tuple[str, str, int, bool]],
        removals: Iterable[str],
        version: int,
    ) -> None:
        """Apply upserts and removals atomically as one new snapshot with ``version``.

        Raises ``InvalidTenantId`` (and changes nothing) when an upserted id is not a DNS label."""
    def snapshot(self) -> dict[str, tuple[str, int, bool]]:
        """A copy of every route."""
    def resolve(
        self, path: str, host: str | None = None
    ) -> tuple[str, str, tuple[str, int, bool] | None] | None:
        """Resolve a request to ``(tenant_id, forward_path, route_or_None)`` in one call.

        - Host ``{id}.{base_domain}`` (case-insensitive, optional ``:port``) names the tenant and
          ``forward_path`` is ``path`` unchanged. A host of more than one label before the base domain
          raises ``InvalidTenantId``.
        - Otherwise a path ``/t/{id}`` or ``/t/{id}/rest`` names it and ``forward_path`` is ``/rest``
          (``/`` when empty).
        - Returns None when neither names a tenant (e.g. the gateway's own ``/api/health``).
        - Raises ``InvalidTenantId`` when the named id is not a DNS label.
        ``route_or_None`` is None for an unknown tenant.
        """

def hs256_sign(payload: bytes, key: bytes) -> str:
    """An HS256 JWT of ``payload`` (the claims' JSON) signed with ``key``: header
    ``{"alg":"HS256","typ":"JWT"}``, parts base64url without padding."""

def create_files(items: list[tuple[str, bytes]], append: tuple[str, bytes] | None = None) -> None:
    """Create each ``(path, bytes)`` as a new file (``O_EXCL``), its missing parent directories first, then
    fsync every file and every directory whose entries changed, all at once (a pool of threads: their device
    flushes merge), all without the GIL. All or nothing: on a
    failure the files created are removed and ``OSError(errno, message, path)`` is raised. With ``append``
    ``(journal, line)``: first ``line`` is appended to the existing file ``journal`` and fdatasynced (never
    created: a missing one raises, and nothing is created)."""

def find_bytes(haystack: bytes, needle: bytes, start: int) -> int:
    """``haystack.find(needle, start)`` (``start`` >= 0): the first index at or after ``start`` where ``needle``
    occurs, -1 when none; SIMD candidates, without the GIL for haystacks from 64 KiB."""

def hs256_verify(token: str, key: bytes) -> bool:
    """Whether ``token``'s last part is the HMAC-SHA256 under ``key`` of what precedes it (constant time;
    strict unpadded base64url, as Go's ``RawURLEncoding``)."""

def jwt_segments(token: str) -> tuple[bytes, bytes] | None:
    """``(header, payload)`` decoded from a token of exactly three base64url parts, signature unchecked;
    None when it is not one."""

def bcrypt_check(password: bytes, hashed: bytes) -> bool | None:
    """Whether ``password`` matches the bcrypt hash ``hashed`` (constant-time compare, the GIL released);
    None unless the hash is in the standard form (``$2a$``/``$2b$``/``$2y$``, cost 04-31, 60 characters,
    canonical base64) and the password at most 72 bytes: the caller's bcrypt library judges those."""

def bcrypt_check_pair(password_a: bytes, hashed_a: bytes, password_b: bytes,
                      hashed_b: bytes) -> tuple[bool | None, bool | None]:
    """:func:`bcrypt_check` of two passwords against two hashes, made together on one thread with their Blowfish
    rounds interleaved when both hashes are in the standard form at the same cost (about the CPU time of one
    check for both), else one after the other; each answer as :func:`bcrypt_check` gives it."""

def bcrypt_hash(password: bytes, cost: int, salt: bytes) -> str | None:
    """A new ``$2b$`` bcrypt hash of ``password`` at ``cost`` with ``salt`` (16 random bytes; ValueError for
    another length), the GIL released; None for a password over 72 bytes or a cost outside 4-31."""

@final
class RateLimiter:
    """PocketBase's rate limiter: per key, fixed windows of ``duration`` whole seconds allowing
    ``max_requests`` each (the first request after a window ended starts the next one at its second).

    Keys are hashed (64 bits, random per process). Bounded to about ``max_entries`` windows: when full,
    ended windows are dropped, and if none has ended the request is allowed uncounted (``overflowed``).
    Per process; thread-safe (sharded locks, no allocation for a known key)."""

    def __new__(cls, max_entries: int = 1_000_000) -> RateLimiter: ...
    def allow(self, key: str, max_requests: int, duration: int, now: int) -> bool:
        """Count one request of ``key`` at ``now`` (Unix seconds): True when its window allows it. A
        different ``max_requests``/``duration`` for the key (a changed rule) starts a new window."""
    def clean(self, now: int, idle: int = 1800) -> int:
        """Drop the windows that ended more than ``idle`` seconds before ``now``; how many."""
    @property
    def overflowed(self) -> int: ...
    def __len__(self) -> int: ...

@final
class RequestLogQueue:
    """A process's request logs on their way to the tenants' ``auxiliary.db`` ``_logs``: bounded, pushed by
    any thread (a few string copies, no Python object kept but the tenant key), taken whole by the writer,
    which gets the rows formatted as PocketBase 0.40 stores them (``message``: method and percent-decoded url;
    ``data``: Go's JSON of the request's attributes, keys sorted; ``created``: ``2006-01-02 15:04:05.000Z``)
    with the GIL released. Thread-safe."""

    def __new__(cls, capacity: int = 20_000) -> RequestLogQueue: ...
    def push(self, tenant: object, max_days: int, level: int, method: str, url: str, status: int, exec_ms: float,
             referer: str, user_agent: str, auth: str, auth_id: str | None, user_ip: str | None,
             remote_ip: str | None, error: str | None, details: bytes | None, created: float) -> int:
        """Queue one request's log: the queue's length with it, 0 when the queue was full (it is dropped and
        counted in ``dropped``). ``url`` (path and query as received), ``method``, ``referer`` and
        ``user_agent`` are cut as PocketBase cuts them; ``error`` is None for a success, else the failure's
        message with ``details`` its JSON (None: null); None ``auth_id``/``user_ip``/``remote_ip`` are left out;
        ``created`` is a Unix time."""
    def drain(self) -> list[tuple[Any, int, int, bytes, bytes]]:
        """Everything queued, taken off and formatted: per tenant key (by identity, in order of its first
        log) one or more ``(tenant, max_days of its last log, rows, blob, packed)``, rows in order: ``blob``
        holds each row's ``created`` (24 bytes), ``message`` and ``data`` back to back; ``packed`` one
        native-endian 64-bit integer per row: its start in ``blob`` (bits 0-23), its message's length in bytes
        (bits 24-37), its level + 128 (bits 38-45), its data's length (bits 46-63; all ones: up to the blob's
        end, for a row of 256 KiB of data or more, which ends its part; a part also ends at 16 MiB of blob)."""
    @property
    def dropped(self) -> int: ...
    def __len__(self) -> int: ...

@final
class QuotaCounters:
    """Per-tenant API request counters over fixed windows, plus storage bytes.

    Windows are aligned to multiples of ``window_seconds`` since the Unix epoch (UTC days by default).
    A limit below 0 means unlimited. Thread-safe; ``try_acquire`` for an existing tenant takes only a
    shared lock plus atomic operations.
    """

    def __init__(self, window_seconds: int = 86400) -> None:
        """Raises ValueError when ``window_seconds`` < 1."""
    @property
    def window_seconds(self) -> int: ...
    def __len__(self) -> int: ...
    def set_limits(self, tenant_id: str, api_requests: int = -1, storage_bytes: int = -1) -> None:
        """Set a tenant's limits (creating its counters); counts already made are kept."""
    def try_acquire(self, tenant_id: str, now: float | None = None) -> tuple[bool, int]:
        """Count one API request if the window's limit allows it.

        Returns ``(allowed, remaining)``: remaining requests in the current window after this one
        (``-1`` when unlimited). A denied request is not counted. ``now`` is Unix seconds (default: the
        wall clock). An unknown tenant gets unlimited counters."""
    def add_storage(self, tenant_id: str, delta_bytes: int) -> int:
        """Add (or subtract) stored bytes, never going below 0; returns the new total."""
    def set_storage(self, tenant_id: str, total_bytes: int) -> None: ...
    def storage_allows(self, tenant_id: str, extra_bytes: int) -> bool:
        """True when storing ``extra_bytes`` more keeps the tenant within its storage limit."""
    def usage(self, tenant_id: str, now: float | None = None) -> tuple[int, int, int] | None:
        """``(requests_in_current_window, storage_bytes, window_start_unix)`` or None when unknown."""
    def snapshot_and_reset(self) -> dict[str, tuple[int, int, int]]:
        """For reporting upstream: per tenant ``(requests_since_last_snapshot, storage_bytes,
        window_start_unix)``; resets only the since-last-snapshot counts, never the window's."""
    def remove(self, tenant_id: str) -> bool: ...

@final
class TenantCache:
    """LRU of open tenant ids with a capacity; pinned tenants (serving a request) are never evicted.

    When every tenant is pinned the cache may go over capacity; the excess is evicted as soon as
    pins are released. Thread-safe (one internal mutex, O(log n) per call).
    """

    def __init__(self, capacity: int) -> None:
        """Raises ValueError when ``capacity`` < 1."""
    @property
    def capacity(self) -> int: ...
    def __len__(self) -> int: ...
    def __contains__(self, tenant_id: str, /) -> bool: ...
    def acquire(self, tenant_id: str) -> tuple[bool, list[str]]:
        """Mark the tenant most recently used and pin it once (adding it if absent).

        Returns ``(was_open, evicted_ids)``: evicted ids, least recently used first, are removed
        from the cache and the caller must close them."""
    def release(self, tenant_id: str) -> list[str]:
        """Drop one pin; returns ids evicted now that more tenants are evictable.

        Raises KeyError for a tenant that is not in the cache or not pinned."""
    def pins(self, tenant_id: str) -> int:
        """Current pin count (0 when absent)."""
    def remove(self, tenant_id: str) -> bool:
        """Forget a tenant even if pinned (e.g. it was deleted); True when it was present."""
    def evict_idle(self, idle_seconds: float) -> list[str]:
        """Remove and return unpinned tenants not acquired for at least ``idle_seconds``."""
    def ids(self) -> list[str]:
        """Tenant ids from least to most recently used."""

@final
class CircuitBreakers:
    """Per-upstream-node circuit breakers: closed -> open -> half-open -> closed.

    ``failure_threshold`` consecutive failures open a breaker; after ``cooldown_seconds`` it lets
    through up to ``half_open_probes`` concurrent probe requests; a probe's success closes it, a probe's
    failure opens it again for another cool-down. Thread-safe (one internal mutex).
    """

    def __init__(
        self, failure_threshold: int = 5, cooldown_seconds: float = 1.0, half_open_probes: int = 1
    ) -> None:
        """Raises ValueError when ``failure_threshold`` < 1, ``half_open_probes`` < 1 or
        ``cooldown_seconds`` < 0."""
    def allow(self, node: str) -> bool:
        """May a request go to ``node`` now? In half-open a True answer takes a probe slot, which
        the following ``record_success``/``record_failure`` for that node gives back."""
    def record_success(self, node: str) -> None: ...
    def record_failure(self, node: str) -> None: ...
    def state(self, node: str) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"`` (unknown nodes are closed). An open breaker
        whose cool-down has passed reports ``"half-open"``."""
    def retry_after(self, node: str) -> float:
        """Seconds until an open breaker admits a probe (0.0 when not open)."""
    def states(self) -> dict[str, str]: ...
    def reset(self, node: str) -> None:
        """Forget a node's history (closed)."""

@final
class GatewayServer:
    """The gateway's native data path: an HTTP/1.1 and h2c (HTTP/2 with prior knowledge) server on its own
    threads (tokio + hyper).

    A request naming a tenant (``/t/{id}/...`` or Host ``{id}.<base domain>``) whose route in ``routes`` is
    active on an ``http://`` node is forwarded there over a pooled keep-alive connection with the cluster
    token and the route's epoch; the node's answer streams back (event streams without a read timeout).
    ``breakers`` guard the nodes. Everything else goes unchanged, with the client's address in
    ``x-pbfast-client``, to the HTTP server on the Unix socket ``fallback_socket`` (the gateway's Python
    side). Invalid tenant ids, over-limit bodies and headers and node failures are answered here in
    PocketBase's JSON error shape. Requests never take the GIL; ``routes`` and ``breakers`` are read live.

    Each of ``threads`` threads runs its own event loop with its own listening socket on the port
    (SO_REUSEPORT) and its own keep-alive connections to nodes.
    """

    def __init__(
        self,
        routes: RoutingTable,
        breakers: CircuitBreakers,
        cluster_token: str,
        fallback_socket: str | PathLike[str],
        *,
        latency_buckets: list[float],
        max_body_bytes: int = 33554432,
        max_header_bytes: int = 32768,
        connect_timeout_seconds: float = 1.0,
        read_timeout_seconds: float = 30.0,
        client_idle_seconds: float = 60.0,
        pool_idle_seconds: float = 15.0,
        max_idle_per_node: int = 256,
        move_wait_seconds: float = 5.0,
        threads: int = 1,
        access_log: bool = False,
        held_stream_limit_bytes: int = 4194304,
        held_streams_budget_bytes: int = 268435456,
        held_stream_timeout_seconds: float = 30.0,
        in_process: InProcessQueue | None = None,
    ) -> None:
        """Raises ValueError for a token that is not a header value, ``threads`` outside 1..256, a header
        limit under 1024, a non-positive timeout, a held stream limit under 64 KiB or a budget under it.
        ``latency_buckets``: the histogram's upper bounds. Held streams read from nodes' holders over
        multiplexed connections: each may have ``held_stream_limit_bytes`` queued for its client, all of them
        ``held_streams_budget_bytes`` (past it the largest are dropped), and a node that takes no commands or
        answers no keepalive probes for ``held_stream_timeout_seconds`` has its connection dropped (its streams
        end cleanly); these three are process-wide (the last gateway made sets them). ``in_process`` (an
        all-in-one): requests for the Python side whose body was read whole go on this queue instead of the
        Unix socket, except realtime streams, ``Upgrade`` requests and ``GET``/``HEAD`` of ``/api/files/``
        and ``/_/``; a full queue is answered 503."""
    @property
    def running(self) -> bool: ...
    def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: any free port) and serve; returns the port. Raises OSError when
        the address cannot be bound, RuntimeError when already running."""
    def stop(self, grace_seconds: float = 3.0) -> None:
        """Stop accepting, give open connections up to ``grace_seconds``, close them; a no-op when not
        running. Blocks until stopped (releases the GIL)."""
    def drain_access_log(self) -> tuple[list[tuple[str, str, str, int, float, str]], int]:
        """With ``access_log``: the requests finished since the last call, oldest first, as ``(client,
        method, target, status, seconds until the answer's head, request id)``, and the number dropped so far
        because the buffer (16,384 entries) was full. Otherwise ``([], 0)``."""
    def drain_warnings(self) -> tuple[list[tuple[str, str]], int]:
        """What went wrong since the last call that no answer tells (a failed hand-over to the Python side),
        oldest first, as ``(message, request id)``, and the number dropped so far because the buffer (1,024
        entries) was full."""
    def stats(self) -> dict[str, Any]:
        """Counters of the requests answered here (not those handed over): ``requests`` (1xx..5xx),
        ``bounds`` and ``buckets`` (latency histogram until the answer's head, the last bucket +Inf),
        ``latency_sum`` (seconds), ``upstream_errors`` and ``retries`` (by kind), ``handed_over``; ``held``:
        the process's held streams read over multiplexed connections (``streams``, ``connections``) and
        ``foreign_records``, the records nodes sent for a stream their connection never gave (dropped)."""

# ---- a tenant node's shared memory (main process and workers) ------------------------------------------

@final
class NodeSharedMemory:
    """A tenant node's shared memory: a memfd the main process creates (the *owner*, the only process that
    adds or removes tenants) and its worker processes attach to. It holds a table of ``capacity`` tenant
    entries (serving state, quota counters, database load), per worker and entry the generation the worker
    holds a connection under, per worker 32 counters, and ``4 * capacity`` rate limiter windows (16 bytes
    each). Nothing is written to disk.
    """

    def __init__(self, capacity: int, workers: int, window_seconds: int = 86400) -> None:
        """A new region. Raises ValueError when ``capacity`` is not a power of two up to 2**20, ``workers``
        is outside 1..256, or ``window_seconds`` (quota windows) is outside 1..2**32-1; OSError when the
        memfd cannot be made."""
    @staticmethod
    def attach(fd: int) -> NodeSharedMemory:
        """Map the region behind ``fd`` (inherited from the owner; duplicated, the caller keeps it). Raises
        ValueError when it is no node region of this build's layout, OSError when it cannot be mapped."""
    @property
    def fd(self) -> int:
        """This process's descriptor of the region (close-on-exec: pass it to a child explicitly)."""
    @property
    def capacity(self) -> int: ...
    @property
    def workers(self) -> int: ...
    @property
    def window_seconds(self) -> int: ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def owner(self) -> bool:
        """True in the process that created the region."""

@final
class SharedTenantTable:
    """The tenants a node's workers may serve, in its shared memory: per tenant the serving state the main
    process publishes, and the node's lease. Lookups are lock-free (a seqlock per entry) and never block the
    writer. The ``generation`` moves on each time bit 1 of ``flags`` (serving) changes: a worker keeps a
    connection for the generation it opened it under only. Other flag bits are the caller's.

    Raises RuntimeError on a change from a process that is not the owner, or when the table is full.
    """

    def __init__(self, memory: NodeSharedMemory) -> None: ...
    def __len__(self) -> int:
        """Tenants with a serving state."""
    def __contains__(self, tenant_id: str, /) -> bool: ...
    def publish(self, tenant_id: str, flags: int, epoch: int, released: int = 0, time_limit_ms: int = -1,
                max_bytes: int = -1) -> int:
        """Owner: set a tenant's serving state; returns its generation. ValueError for an id over 63 bytes."""
    def remove(self, tenant_id: str) -> bool:
        """Owner: forget a tenant's serving state (a served tenant stops: its generation moves on)."""
    def get(self, tenant_id: str) -> tuple[int, int, int, int, int, int, int] | None:
        """``(index, generation, flags, epoch, released, time_limit_ms, max_bytes)`` or None."""
    def lookup(self, tenant_id: str) -> tuple[int, int, int, int, int, int, int] | None:
        """:meth:`get` for a request: also records the use (1 s grain) for :meth:`used_since`."""
    def used_since(self, since: float) -> list[str]:
        """Tenants looked up at or after ``since`` (``time.monotonic()`` seconds, 1 s grain)."""
    def add_load(self, tenant_id: str, jobs: int, rejected: int, wait_seconds: float, busy_seconds: float,
                 time_limited: int) -> bool:
        """Add to a tenant's database load (any process); False when it has no entry."""
    def loads(self) -> dict[str, tuple[int, int, float, float, int]]:
        """Per tenant ``(jobs, rejected, wait_seconds, busy_seconds, time_limited)``."""
    def ids(self) -> list[str]: ...
    def set_lease(self, state: int, serve_until: float = 0.0) -> None:
        """Owner: 0 serve freely (no control plane), 1 not joined yet, 2 serve while ``time.monotonic()`` is
        before ``serve_until``, 3 fenced."""
    def lease_state(self, now: float | None = None) -> int:
        """0 the node may serve, 1 it has not joined the cluster yet, 2 its lease is lost (``now``:
        ``time.monotonic()`` seconds, default the clock)."""
    @property
    def close_sequence(self) -> int:
        """Bumped each time a tenant stops being served."""

@final
class SharedRateLimiter:
    """:class:`RateLimiter` in a node's shared memory, counted by all its processes: one window per key for
    the whole node, exact under concurrency (a count is one 16-byte compare-and-swap). Keys are hashed with
    the rule's ``duration`` (64 bits, seeded per region), so a changed duration starts another window; a
    changed ``max_requests`` applies to the current one. A key lives in a set of 8 of the region's
    ``buckets``; a new key takes a free one or one whose window ended at least a second ago, and when every
    window of its set is live the request is allowed uncounted (``overflowed``, node-wide). Raises
    RuntimeError on a CPU without 16-byte compare-and-swap."""

    def __init__(self, memory: NodeSharedMemory) -> None: ...
    def allow(self, key: str, max_requests: int, duration: int, now: int) -> bool:
        """Count one request of ``key`` at ``now`` (Unix seconds): True when its window allows it."""
    def clean(self, now: int, idle: int = 1800) -> int:
        """Free the windows that ended more than ``idle`` seconds before ``now``; how many (ended windows
        are reused anyway: this only keeps ``len`` to the live ones)."""
    @property
    def overflowed(self) -> int: ...
    @property
    def buckets(self) -> int:
        """How many windows the region holds."""
    def __len__(self) -> int: ...

@final
class SharedQuotas:
    """:class:`QuotaCounters` in a node's shared memory, counted by all its processes against one limit
    (same methods, same answers). A request is admitted with one compare-and-swap on a word holding the
    window and its count (saturating at 2**32-1). Counters are made by the owner (``set_limits``, or
    unlimited on first use there); another process admits a tenant without counters uncounted, returns 0
    from the storage calls for it and may not remove any (RuntimeError)."""

    def __init__(self, memory: NodeSharedMemory) -> None: ...
    @property
    def window_seconds(self) -> int: ...
    def __len__(self) -> int: ...
    def set_limits(self, tenant_id: str, api_requests: int = -1, storage_bytes: int = -1) -> None: ...
    def try_acquire(self, tenant_id: str, now: float | None = None) -> tuple[bool, int]: ...
    def add_storage(self, tenant_id: str, delta_bytes: int) -> int: ...
    def set_storage(self, tenant_id: str, total_bytes: int) -> None: ...
    def storage_allows(self, tenant_id: str, extra_bytes: int) -> bool: ...
    def usage(self, tenant_id: str, now: float | None = None) -> tuple[int, int, int] | None: ...
    def snapshot_and_reset(self) -> dict[str, tuple[int, int, int]]: ...
    def remove(self, tenant_id: str) -> bool: ...

@final
class WorkerAcks:
    """Which worker holds a connection to which tenant, in a node's shared memory: per worker and entry the
    serving generation it was opened under. ``hold`` before opening, ``release`` after closing; the main
    process stops serving a tenant (:meth:`SharedTenantTable.publish`) and then waits until ``holders`` is
    empty. A full fence on both sides guarantees that a hold made after the tenant stopped fails, or is
    seen by ``holders``."""

    def __init__(self, memory: NodeSharedMemory) -> None: ...
    def hold(self, worker: int, tenant_id: str, generation: int) -> int | None:
        """The tenant's entry index when it is still served under ``generation`` (now held), else None."""
    def release(self, worker: int, index: int, generation: int) -> bool:
        """Withdraw the hold made under ``generation``; False when there was none."""
    def holders(self, tenant_id: str) -> list[int]:
        """The workers holding the tenant now."""
    def held(self, worker: int) -> list[tuple[int, int]]:
        """Every hold of a worker: ``(index, generation)``."""
    def clear(self, worker: int) -> int:
        """Drop every hold of a worker that died; how many it had."""

@final
class WorkerCounters:
    """Per-worker counters in a node's shared memory (32 per worker): each worker adds to its own row, the
    main process sums them; a restarted worker goes on in its row. ValueError for a worker or slot out of
    range."""

    def __init__(self, memory: NodeSharedMemory) -> None: ...
    @property
    def slots(self) -> int: ...
    @property
    def workers(self) -> int: ...
    def add(self, worker: int, slot: int, delta: int = 1) -> int:
        """Add ``delta`` (may be negative) to a counter; its new value."""
    def set(self, worker: int, slot: int, value: int) -> None: ...
    def row(self, worker: int) -> list[int]: ...
    def totals(self) -> list[int]:
        """Per slot, the sum over all workers."""

@final
class InProcessQueue:
    """The all-in-one's bounded queue of requests from the gateway's native threads to the event loop
    (rust/src/gateway/in_process.rs): at most ``capacity`` requests queued or being answered; the eventfd
    ``fd`` is readable while requests wait. Thread-safety: filled by the gateway's threads, taken on one."""

    def __new__(cls, capacity: int = 4096) -> InProcessQueue:
        """Raises ValueError for a capacity of 0, OSError when no eventfd can be made."""
    @property
    def fd(self) -> int: ...
    @property
    def outstanding(self) -> int:
        """Requests queued or taken and not yet answered."""
    @property
    def abandoned(self) -> int:
        """Queued requests (not taken yet) whose client went away; the loop drops each when it takes it."""
    def take(self, limit: int = 64) -> list[HandedRequest]:
        """Clear the eventfd and return the oldest ``limit`` queued requests ([] once closed); the eventfd is
        readable again when more are left."""
    def close(self) -> int:
        """Refuse new requests (503) and drop the queued ones (their clients get a 502); returns how many."""
    def flush_answers(self) -> int:
        """Send the answers queued by :meth:`HandedRequest.respond_later`, in order (one wake-up of the
        gateway's threads per batch); returns how many reached a waiting client (the others' clients went
        away)."""
    @property
    def pending_answers(self) -> int:
        """Answers queued by :meth:`HandedRequest.respond_later` and not flushed yet."""

@final
class HandedHeaders:
    """A handed request's headers, read as granian's RSGI scope headers (lowercase names, case-insensitive
    lookups; values that are not visible ASCII are left out)."""

    def get(self, key: str, default: Any = None) -> Any: ...
    def get_all(self, key: str) -> list[str]: ...
    def keys(self) -> list[str]: ...
    def values(self) -> list[str]: ...
    def items(self) -> list[tuple[str, str]]: ...
    def __contains__(self, key: str, /) -> bool: ...
    def __getitem__(self, key: str, /) -> str: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[str]: ...

@final
class HandedRequest:
    """One request from :class:`InProcessQueue`: an RSGI-shaped HTTP scope with the values a request handed
    over the Unix socket has (``http_version`` "1.1", ``path`` percent-decoded with invalid UTF-8 replaced,
    ``query_string`` raw, ``client`` ``ip:0`` from ``x-pbfast-client``), its body, and ``respond``."""

    @property
    def proto(self) -> str: ...
    @property
    def http_version(self) -> str: ...
    @property
    def scheme(self) -> str: ...
    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def query_string(self) -> str: ...
    @property
    def authority(self) -> str | None: ...
    @property
    def client(self) -> str: ...
    @property
    def server(self) -> str: ...
    @property
    def headers(self) -> HandedHeaders: ...
    @property
    def body(self) -> bytes: ...
    @property
    def cancelled(self) -> bool:
        """The client went away (or an answer was sent): nobody waits for one."""
    @property
    def answered(self) -> bool: ...
    def respond(self, status: int, headers: list[tuple[str, str]], body: bytes) -> bool:
        """Send the answer; False when one was sent already or nobody waits. Raises ValueError for a status
        outside 100..999."""
    def respond_later(self, status: int, headers: list[tuple[str, str]], body: bytes) -> bool:
        """Queue the answer for its queue's next :meth:`InProcessQueue.flush_answers` (nothing is woken here);
        True when it is the first queued since the last flush (the caller arranges one flush), False when one
        was sent already. Raises ValueError for a status outside 100..999."""

@final
class StreamHolder:
    """A tenant node's realtime streams held outside its HTTP server (rust/src/stream_holder): Python admits a
    stream (its first frame queued) and answers the gateway with ``port`` and the ticket; the gateway attaches
    the ticket through its multiplexed connection for the tenant to ``host:port`` (hello ``<token> mux\\n``, then
    tagged records; rust/src/stream_holder/mux_wire.rs) and reads the stream's frames as they are queued (a
    connection per stream, hello ``<token> <ticket>\\n``, is still served for older gateways). With ``mux``
    False a ``mux`` hello is closed, as a holder from before the mux did (the node then does not offer it:
    ``x-pbfast-stream-mux``); a multiplexed connection whose gateway takes nothing for
    ``gateway_timeout_seconds`` is dropped (its streams end as gone). Each stream
    may have ``limit_bytes`` waiting (more ends it: ``Overflow``); a ticket not attached within
    ``attach_seconds`` ends its stream (``Unattached``). Every ended stream is reported once by ``take_ended``,
    and ``wake_fd`` (an eventfd) is readable while some are waiting to be taken. Thread-safe; ``send_many``
    runs without the GIL. OSError when ``host:port`` cannot be bound; ValueError for an empty token."""

    def __new__(cls, host: str, port: int, token: str, limit_bytes: int = ..., attach_seconds: float = 10.0, *,
                mux: bool = True, gateway_timeout_seconds: float = 30.0) -> StreamHolder: ...
    @property
    def port(self) -> int: ...
    @property
    def mux(self) -> bool: ...
    @property
    def wake_fd(self) -> int: ...
    def token_matches(self, value: str) -> bool:
        """Whether ``value`` is the token (compared in constant time)."""
    def admit(self, first: bytes) -> tuple[int, str]:
        """A new stream with ``first`` queued: ``(handle, ticket)``."""
    def send(self, handle: int, data: bytes) -> bool:
        """Queue ``data`` on a stream; False when it has ended (or ends now, overflowing)."""
    def send_many(self, items: list[tuple[int, bytes]]) -> int:
        """Queue each ``(handle, data)``; how many were queued."""
    def send_frames(self, items: list[tuple[int, bytes, bytes, bytes]]) -> int:
        """Queue each ``(handle, id_line, event_line, data)`` as one frame, ``id_line + event_line + data + b"\\n\\n"``
        (the parts made once per client and per subscription); how many were queued."""
    def end(self, handle: int) -> None:
        """End a stream: what it has queued is written, then its connection closed."""
    def take_ended(self) -> list[tuple[int, int]]:
        """``(handle, reason)`` of every stream ended since the last call: 1 ended, 2 the peer went away (or a
        write failed), 3 overflow, 4 never attached."""
    def __len__(self) -> int: ...
    def close(self) -> None:
        """Stop listening and end every stream (written out within a second)."""

class LtxError(ValueError):
    """An LTX file that :func:`restore_ltx` does not know (another version, flags or page encoding) or that is
    damaged or does not extend the one before it; the message says which file and why."""

def restore_ltx(files: Sequence[str | PathLike[str]], output: str | PathLike[str]) -> tuple[int, int, int]:
    """Restore the database that the LTX ``files`` (a snapshot, then files each extending the one before,
    oldest first) make into ``output`` (which must not exist; removed again on failure). Every file is
    checked whole, and the result against the last file's checksum; not fsynced. Returns ``(page_size,
    pages, max_txid)``. Raises :class:`LtxError`, or OSError when a file cannot be read or written."""

def host_sqlite_version() -> int | None:
    """apsw's SQLite version number once it has handed the extension its API
    (:func:`pbfast.native_reads.attach_host_sqlite`); None before."""

def query_json(pointer: int, sql: str) -> bytes:
    """The rows of ``sql`` on the apsw connection at ``pointer`` (``Connection.sqlite3pointer()``) as a JSON
    array of objects by column name. Raises RuntimeError when the connection is in use on another thread."""

def own_connection_probe(path: str, sql: str) -> list[str]:
    """Open ``path`` read-only through apsw's SQLite (no apsw object), run ``sql``, close: the first column of
    each row as text (spike: apsw's locks on the file survive the close)."""

@final
class RecordPlan:
    """How one result row is written as a record's JSON, byte for byte as Python writes it
    (:mod:`pbfast.pocketbase.records.native_view`): ``entries`` are ``(key, kind, value)`` in the order written;
    kind ``"const"`` writes the string ``value``; ``"text"``, ``"single"``, ``"multi"``, ``"number"``, ``"bool"``,
    ``"date"``, ``"blank"`` or ``"email"`` the next result column (``"email"``: its two gates, emailVisibility and
    "the requester is the record", are the last two columns). Raises ValueError for an unknown kind."""
    def __new__(cls, entries: list[tuple[str, str, str]]) -> RecordPlan: ...
    @property
    def column_count(self) -> int: ...

@final
class RecordReader:
    """The statements kept on one apsw connection (``pointer``: ``Connection.sqlite3pointer()``) and the
    record reads run with them, with the GIL held and the connection's mutex taken with ``try``.
    :meth:`close` before the connection closes."""
    def __new__(cls, pointer: int) -> RecordReader: ...
    def row_json(self, sql: str, params: Sequence[object], plan: RecordPlan) -> bytes | None:
        """The first row as the record's JSON; ``b""`` for no row; None when not served (busy connection, open
        transaction, SQL error, a value the plan does not write, closed): Python reads it instead."""
    def rows_json(self, sql: str, params: Sequence[object], plan: RecordPlan, release_gil: bool = False) -> bytes | None:
        """Every row as a JSON array of records; None when not served (as :meth:`row_json`, or a row the plan
        does not write). ``release_gil``: stepped and written with the GIL let go, the connection's mutex held."""
    @property
    def kept_statements(self) -> int: ...
    def close(self) -> None:
        """Finalize the kept statements; later reads serve nothing. RuntimeError when the connection is in use
        on another thread."""
