"""Behaviour of the hot-path primitives, run against the Rust module and its pure-Python twin alike."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from types import ModuleType

import pytest

import pbfast._native as native
import pbfast.reference as reference


@pytest.fixture(params=[native, reference], ids=["native", "reference"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return request.param


# ---- tenant ids -------------------------------------------------------------------------------------

VALID_IDS = ["a", "0", "acme", "tenant-123", "a-b-c", "x" * 63, "1abc9"]
INVALID_IDS = ["", "-a", "a-", "Acme", "a_b", "a.b", "..", "x" * 64, "ä", "a b", "%61", "a/b", "é"]


@pytest.mark.parametrize("tenant_id", VALID_IDS)
def test_valid_tenant_ids(impl: ModuleType, tenant_id: str) -> None:
    assert impl.is_valid_tenant_id(tenant_id)


@pytest.mark.parametrize("tenant_id", INVALID_IDS)
def test_invalid_tenant_ids(impl: ModuleType, tenant_id: str) -> None:
    assert not impl.is_valid_tenant_id(tenant_id)


# ---- HS256 tokens -----------------------------------------------------------------------------------

PAYLOAD = b'{"collectionId":"_pb_users_auth_","exp":1797051438,"id":"kq9bxyglp1cevvl","refreshable":true,"type":"auth"}'


def test_hs256_token_is_the_standard_hmac_sha256_jwt(impl: ModuleType) -> None:
    key = b"t" * 50 + b"secret" * 9  # a record's tokenKey followed by the collection's secret, longer than a block
    token = impl.hs256_sign(PAYLOAD, key)
    header, payload, signature = token.split(".")
    assert base64.urlsafe_b64decode(header + "==") == b'{"alg":"HS256","typ":"JWT"}'
    assert base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)) == PAYLOAD
    assert "=" not in token
    expected = hmac.digest(key, f"{header}.{payload}".encode(), hashlib.sha256)
    assert base64.urlsafe_b64decode(signature + "=") == expected
    assert impl.jwt_segments(token) == (b'{"alg":"HS256","typ":"JWT"}', PAYLOAD)


def test_hs256_verify_takes_only_its_key_and_an_untouched_token(impl: ModuleType) -> None:
    token = impl.hs256_sign(PAYLOAD, b"key")
    assert impl.hs256_verify(token, b"key")
    assert not impl.hs256_verify(token, b"kez")
    assert not impl.hs256_verify(token[:-1] + ("A" if token[-1] != "A" else "B"), b"key")
    assert not impl.hs256_verify(token + "=", b"key")  # padding: Go's RawURLEncoding refuses it
    assert not impl.hs256_verify(token.replace(".", "", 1), b"key")  # two parts
    assert not impl.hs256_verify("no-dots-at-all", b"key")


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c.d", "a=.b.c", "e30.e30!.c", "e30.e.c", "é.e30.c"])
def test_jwt_segments_refuse_what_is_not_three_base64url_parts(impl: ModuleType, token: str) -> None:
    assert impl.jwt_segments(token) is None


# ---- RoutingTable -----------------------------------------------------------------------------------


def test_routing_replace_and_get(impl: ModuleType) -> None:
    table = impl.RoutingTable()
    assert table.version == 0 and len(table) == 0
    table.replace([("acme", "http://n1:8070", 3, True), ("beta", "http://n2:8070", 1, False)], 7)
    assert table.version == 7
    assert len(table) == 2 and "acme" in table and "zeta" not in table
    assert table.get("acme") == ("http://n1:8070", 3, True)
    assert table.get("beta") == ("http://n2:8070", 1, False)
    assert table.get("zeta") is None
    table.replace([("zeta", "http://n3:8070", 0, True)], 8)
    assert table.get("acme") is None and table.get("zeta") == ("http://n3:8070", 0, True)
    assert table.snapshot() == {"zeta": ("http://n3:8070", 0, True)}


def test_routing_patch(impl: ModuleType) -> None:
    table = impl.RoutingTable()
    table.replace([("acme", "n1", 1, True), ("beta", "n1", 1, True)], 1)
    table.patch([("acme", "n2", 2, True), ("gamma", "n3", 1, True)], ["beta", "unknown"], 2)
    assert table.version == 2
    assert table.snapshot() == {"acme": ("n2", 2, True), "gamma": ("n3", 1, True)}


@pytest.mark.parametrize("bad", ["Acme", "../etc", "", "x" * 64])
def test_routing_rejects_invalid_ids_without_change(impl: ModuleType, bad: str) -> None:
    table = impl.RoutingTable()
    table.replace([("acme", "n1", 1, True)], 1)
    with pytest.raises(impl.InvalidTenantId):
        table.replace([("ok", "n1", 1, True), (bad, "n1", 1, True)], 2)
    with pytest.raises(impl.InvalidTenantId):
        table.patch([("ok", "n1", 1, True), (bad, "n1", 1, True)], [], 2)
    assert table.version == 1 and table.snapshot() == {"acme": ("n1", 1, True)}
    assert issubclass(impl.InvalidTenantId, ValueError)


def test_routing_resolve_path(impl: ModuleType) -> None:
    table = impl.RoutingTable()
    table.replace([("acme", "n1", 1, True)], 1)
    assert table.resolve("/t/acme/api/collections/posts/records") == (
        "acme", "/api/collections/posts/records", ("n1", 1, True))
    assert table.resolve("/t/acme") == ("acme", "/", ("n1", 1, True))
    assert table.resolve("/t/acme/") == ("acme", "/", ("n1", 1, True))
    assert table.resolve("/t/acme//x") == ("acme", "//x", ("n1", 1, True))
    assert table.resolve("/t/other/api/health") == ("other", "/api/health", None)
    assert table.resolve("/api/health") is None
    assert table.resolve("/t") is None
    assert table.resolve("/tenants/acme") is None
    assert table.resolve("/") is None


@pytest.mark.parametrize("path", ["/t/", "/t//api", "/t/Acme/api", "/t/../beta/", "/t/a%2Fb/x", "/t/a.b/x",
                                  "/t/" + "x" * 64 + "/api", "/t/-x/"])
def test_routing_resolve_path_invalid(impl: ModuleType, path: str) -> None:
    with pytest.raises(impl.InvalidTenantId):
        impl.RoutingTable().resolve(path)


def test_routing_resolve_host(impl: ModuleType) -> None:
    table = impl.RoutingTable("PB.Example.com")
    assert table.base_domain == "pb.example.com"
    table.replace([("acme", "n1", 1, True)], 1)
    assert table.resolve("/api/health", "acme.pb.example.com") == ("acme", "/api/health", ("n1", 1, True))
    assert table.resolve("/api/x", "ACME.pb.example.com:8080") == ("acme", "/api/x", ("n1", 1, True))
    assert table.resolve("/api/x", "beta.pb.example.com") == ("beta", "/api/x", None)
    # The base domain itself, other domains and IP literals name no tenant: the path decides.
    assert table.resolve("/api/health", "pb.example.com") is None
    assert table.resolve("/api/health", "acme.other.com") is None
    assert table.resolve("/api/health", "[::1]:8080") is None
    assert table.resolve("/t/acme/api/x", "127.0.0.1:8080") == ("acme", "/api/x", ("n1", 1, True))
    assert table.resolve("/t/acme/api/x", None) == ("acme", "/api/x", ("n1", 1, True))
    # A tenant host wins over a path prefix: the path is forwarded unchanged.
    assert table.resolve("/t/beta/x", "acme.pb.example.com") == ("acme", "/t/beta/x", ("n1", 1, True))


@pytest.mark.parametrize("host", ["a.b.pb.example.com", "a_b.pb.example.com", "-a.pb.example.com",
                                  ".pb.example.com", "x" * 64 + ".pb.example.com"])
def test_routing_resolve_host_invalid(impl: ModuleType, host: str) -> None:
    with pytest.raises(impl.InvalidTenantId):
        impl.RoutingTable("pb.example.com").resolve("/api/health", host)


def test_routing_host_ignored_without_base_domain(impl: ModuleType) -> None:
    assert impl.RoutingTable().resolve("/api/health", "acme.pb.example.com") is None


def test_routing_readers_during_writes(impl: ModuleType) -> None:
    """Readers always see a whole snapshot: either every tenant of version v or of v+1."""
    table = impl.RoutingTable()
    table.replace([(f"t{i}", "old", 0, True) for i in range(200)], 0)
    stop = threading.Event()
    torn: list[tuple[str, ...]] = []

    def writer() -> None:
        for version in range(1, 200):
            address = "new" if version % 2 else "old"
            table.replace([(f"t{i}", address, version, True) for i in range(200)], version)
        stop.set()

    def reader() -> None:
        while not stop.is_set():
            snap = table.snapshot()
            if len({route[0] for route in snap.values()}) != 1 or len(snap) != 200:
                torn.append(tuple(sorted({route[0] for route in snap.values()})))

    threads = [threading.Thread(target=reader) for _ in range(2)] + [threading.Thread(target=writer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not torn


# ---- QuotaCounters ----------------------------------------------------------------------------------

DAY = 86400
T0 = 1_700_000_000.0  # inside the window starting at 1_699_920_000


class _SharedQuotaModule:
    """The quota tests' view of :class:`SharedQuotas` in a node's shared memory (made here, so this process
    is its owner, as a node's main process is): the same behaviour as ``QuotaCounters``."""

    @staticmethod
    def QuotaCounters(window_seconds: int = DAY) -> native.SharedQuotas:  # noqa: N802 - stands in for the class
        return native.SharedQuotas(native.NodeSharedMemory(1024, 1, window_seconds))


@pytest.fixture(params=[native, reference, _SharedQuotaModule], ids=["native", "reference", "shared"])
def quota_impl(request: pytest.FixtureRequest) -> ModuleType:
    return request.param


def test_quota_window_limit(quota_impl: ModuleType) -> None:
    quotas = quota_impl.QuotaCounters()
    assert quotas.window_seconds == DAY
    quotas.set_limits("acme", api_requests=3)
    assert [quotas.try_acquire("acme", T0) for _ in range(4)] == [(True, 2), (True, 1), (True, 0), (False, 0)]
    assert quotas.usage("acme", T0) == (3, 0, int(T0) - int(T0) % DAY)
    # The next window starts from zero.
    assert quotas.try_acquire("acme", T0 + DAY) == (True, 2)
    assert quotas.usage("acme", T0 + DAY)[0] == 1
    assert quotas.usage("acme", T0 + 2 * DAY)[0] == 0


def test_quota_unlimited_and_zero(quota_impl: ModuleType) -> None:
    quotas = quota_impl.QuotaCounters(60)
    assert quotas.try_acquire("new", T0) == (True, -1)  # unknown tenants are unlimited
    quotas.set_limits("none", api_requests=0)
    assert quotas.try_acquire("none", T0) == (False, 0)
    assert len(quotas) == 2
    assert quotas.usage("missing") is None
    assert quotas.remove("new") and not quotas.remove("new")


def test_quota_set_limits_keeps_counts(quota_impl: ModuleType) -> None:
    quotas = quota_impl.QuotaCounters()
    quotas.set_limits("acme", api_requests=10)
    for _ in range(4):
        quotas.try_acquire("acme", T0)
    quotas.set_limits("acme", api_requests=5)
    assert quotas.try_acquire("acme", T0) == (True, 0)
    assert quotas.try_acquire("acme", T0) == (False, 0)


def test_quota_storage(quota_impl: ModuleType) -> None:
    quotas = quota_impl.QuotaCounters()
    assert quotas.storage_allows("acme", 10**12)
    quotas.set_limits("acme", storage_bytes=1000)
    assert quotas.add_storage("acme", 600) == 600
    assert quotas.storage_allows("acme", 400) and not quotas.storage_allows("acme", 401)
    assert quotas.add_storage("acme", -10_000) == 0
    quotas.set_storage("acme", 999)
    assert quotas.usage("acme", T0) == (0, 999, int(T0) - int(T0) % DAY)


def test_quota_snapshot_and_reset(quota_impl: ModuleType) -> None:
    quotas = quota_impl.QuotaCounters()
    quotas.set_limits("acme", api_requests=100)
    for _ in range(5):
        quotas.try_acquire("acme")
    quotas.set_storage("acme", 42)
    report = quotas.snapshot_and_reset()
    now = int(time.time())
    assert report["acme"][:2] == (5, 42) and report["acme"][2] == now - now % DAY
    assert quotas.snapshot_and_reset()["acme"][:2] == (0, 42)
    # The window's count is untouched by reporting: the limit still counts all 5.
    assert quotas.usage("acme")[0] == 5


def test_quota_invalid_window(quota_impl: ModuleType) -> None:
    with pytest.raises(ValueError):
        quota_impl.QuotaCounters(0)


def test_quota_concurrent_never_over_limit(quota_impl: ModuleType) -> None:
    quotas = quota_impl.QuotaCounters()
    quotas.set_limits("acme", api_requests=1000)
    allowed = [0] * 4

    def hammer(slot: int) -> None:
        for _ in range(600):
            if quotas.try_acquire("acme", T0)[0]:
                allowed[slot] += 1

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(allowed) == 1000
    assert quotas.usage("acme", T0)[0] == 1000


# ---- TenantCache ------------------------------------------------------------------------------------


def test_cache_lru_eviction(impl: ModuleType) -> None:
    cache = impl.TenantCache(2)
    assert cache.capacity == 2
    assert cache.acquire("a") == (False, [])
    cache.release("a")
    assert cache.acquire("b") == (False, [])
    cache.release("b")
    assert cache.acquire("a") == (True, [])  # a is now most recent
    cache.release("a")
    assert cache.acquire("c") == (False, ["b"])
    cache.release("c")
    assert cache.ids() == ["a", "c"] and len(cache) == 2 and "b" not in cache


def test_cache_pinned_never_evicted(impl: ModuleType) -> None:
    cache = impl.TenantCache(1)
    cache.acquire("a")  # pinned
    assert cache.acquire("b") == (False, [])  # over capacity: both pinned
    assert len(cache) == 2 and cache.pins("a") == 1
    assert cache.release("a") == ["a"]  # a is now evictable, and least recent
    assert cache.ids() == ["b"]
    assert cache.release("b") == []


def test_cache_release_errors(impl: ModuleType) -> None:
    cache = impl.TenantCache(3)
    with pytest.raises(KeyError):
        cache.release("missing")
    cache.acquire("a")
    cache.release("a")
    with pytest.raises(KeyError):
        cache.release("a")


def test_cache_nested_pins_and_remove(impl: ModuleType) -> None:
    cache = impl.TenantCache(1)
    cache.acquire("a")
    cache.acquire("a")
    assert cache.pins("a") == 2
    cache.release("a")
    assert cache.acquire("b") == (False, [])  # a still pinned once
    assert cache.remove("a") and not cache.remove("a") and cache.pins("a") == 0
    assert cache.ids() == ["b"]


def test_cache_evict_idle(impl: ModuleType) -> None:
    cache = impl.TenantCache(10)
    for tenant_id in ("a", "b", "c"):
        cache.acquire(tenant_id)
        cache.release(tenant_id)
    cache.acquire("c")  # pinned: never idle-evicted
    time.sleep(0.06)
    cache.acquire("b")
    cache.release("b")
    assert cache.evict_idle(0.05) == ["a"]
    assert cache.ids() == ["c", "b"]
    assert cache.evict_idle(0) == ["b"]


def test_cache_invalid_capacity(impl: ModuleType) -> None:
    with pytest.raises(ValueError):
        impl.TenantCache(0)


def test_cache_concurrent_pins(impl: ModuleType) -> None:
    cache = impl.TenantCache(4)
    evicted_pinned: list[str] = []

    def worker(offset: int) -> None:
        for i in range(500):
            tenant_id = f"t{(i + offset) % 12}"
            _, evicted = cache.acquire(tenant_id)
            if tenant_id in evicted:
                evicted_pinned.append(tenant_id)
            cache.release(tenant_id)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not evicted_pinned
    assert len(cache) <= 4 and all(cache.pins(t) == 0 for t in cache.ids())


# ---- CircuitBreakers --------------------------------------------------------------------------------


def test_breaker_opens_after_threshold(impl: ModuleType) -> None:
    breakers = impl.CircuitBreakers(failure_threshold=3, cooldown_seconds=60)
    assert breakers.state("n1") == "closed" and breakers.allow("n1")
    breakers.record_failure("n1")
    breakers.record_failure("n1")
    breakers.record_success("n1")  # resets the consecutive count
    breakers.record_failure("n1")
    breakers.record_failure("n1")
    assert breakers.state("n1") == "closed"
    breakers.record_failure("n1")
    assert breakers.state("n1") == "open" and not breakers.allow("n1")
    assert 59 < breakers.retry_after("n1") <= 60
    assert breakers.allow("n2") and breakers.retry_after("n2") == 0.0
    assert breakers.states() == {"n1": "open"}


def test_breaker_half_open_probes(impl: ModuleType) -> None:
    breakers = impl.CircuitBreakers(failure_threshold=1, cooldown_seconds=0.05, half_open_probes=2)
    breakers.record_failure("n1")
    assert not breakers.allow("n1")
    time.sleep(0.06)
    assert breakers.state("n1") == "half-open" and breakers.retry_after("n1") == 0.0
    assert breakers.allow("n1") and breakers.allow("n1") and not breakers.allow("n1")
    breakers.record_failure("n1")  # a probe failed: open again for a full cool-down
    assert breakers.state("n1") == "open" and not breakers.allow("n1")
    time.sleep(0.06)
    assert breakers.allow("n1")
    breakers.record_success("n1")
    assert breakers.state("n1") == "closed"
    assert all(breakers.allow("n1") for _ in range(10))


def test_breaker_late_success_while_open_is_ignored(impl: ModuleType) -> None:
    breakers = impl.CircuitBreakers(failure_threshold=1, cooldown_seconds=60)
    breakers.record_failure("n1")
    breakers.record_success("n1")
    assert breakers.state("n1") == "open"
    breakers.reset("n1")
    assert breakers.state("n1") == "closed" and breakers.states() == {}


@pytest.mark.parametrize("kwargs", [{"failure_threshold": 0}, {"half_open_probes": 0}, {"cooldown_seconds": -1}])
def test_breaker_invalid_args(impl: ModuleType, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        impl.CircuitBreakers(**kwargs)
