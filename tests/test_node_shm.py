"""A tenant node's shared memory seen from real processes: a main process (this test) creates it, worker
processes attach to the descriptor they inherit, and they count (quotas, rate limits), hold and release against
each other."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pbfast.primitives import (NodeSharedMemory, SharedQuotas, SharedRateLimiter, SharedTenantTable, WorkerAcks,
                               WorkerCounters)

SERVING = 1
T0 = 1_700_000_000.0

_PRELUDE = """
import sys, time
from pbfast.primitives import (NodeSharedMemory, SharedQuotas, SharedRateLimiter, SharedTenantTable, WorkerAcks,
                               WorkerCounters)
memory = NodeSharedMemory.attach(int(sys.argv[1]))
worker = int(sys.argv[2])
table, quotas, acks, counters = (SharedTenantTable(memory), SharedQuotas(memory), WorkerAcks(memory),
                                 WorkerCounters(memory))
"""


def _spawn(memory: NodeSharedMemory, worker: int, body: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _PRELUDE + body, str(memory.fd), str(worker), *args],
                            pass_fds=[memory.fd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})


def _finish(process: subprocess.Popen[str], timeout: float = 60) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return out


def test_workers_count_against_one_quota() -> None:
    memory = NodeSharedMemory(1024, 3)
    quotas = SharedQuotas(memory)
    quotas.set_limits("acme", api_requests=5_000)
    hammer = f"""
allowed = sum(quotas.try_acquire("acme", {T0})[0] for _ in range(4_000))
counters.add(worker, 0, allowed)
print(allowed)
"""
    workers = [_spawn(memory, n, hammer) for n in range(3)]
    allowed = [int(_finish(worker)) for worker in workers]
    assert sum(allowed) == 5_000, allowed  # 12,000 tries, never one over the limit
    assert quotas.usage("acme", T0) == (5_000, 0, int(T0) - int(T0) % 86400)
    assert WorkerCounters(memory).totals()[0] == 5_000
    assert quotas.snapshot_and_reset()["acme"][0] == 5_000


def test_workers_count_a_client_once_against_its_rate_limit() -> None:
    memory = NodeSharedMemory(1024, 3)
    hammer = f"""
limiter = SharedRateLimiter(memory)
clients = ("10.0.0.1", "2001:db8::1")
print(*[sum(limiter.allow(f"acme\\0/api/\\0{{client}}", 500, 60, {int(T0)}) for _ in range(400)) for client in clients])
"""
    workers = [_spawn(memory, n, hammer) for n in range(3)]
    allowed = [[int(n) for n in _finish(worker).split()] for worker in workers]
    assert [sum(column) for column in zip(*allowed)] == [500, 500], allowed  # 1,200 tries each, 500 allowed
    limiter = SharedRateLimiter(memory)
    assert not limiter.allow("acme\0/api/\0" "10.0.0.1", 500, 60, int(T0) + 59)
    assert limiter.allow("acme\0/api/\0" "10.0.0.1", 500, 60, int(T0) + 60)  # the next window
    assert len(limiter) == 2 and limiter.overflowed == 0


def test_many_clients_do_not_grow_the_rate_limiter() -> None:
    memory = NodeSharedMemory(64, 1)
    limiter = SharedRateLimiter(memory)
    assert limiter.buckets == 256
    now = int(T0)
    # A flood of new clients: each one's first request is allowed, counted while its set has room.
    assert all(limiter.allow(f"acme\0/api/\0{n}", 1, 10, now) for n in range(10_000))
    assert len(limiter) == 256 and limiter.overflowed == 10_000 - 256
    counted = [n for n in range(10_000) if not limiter.allow(f"acme\0/api/\0{n}", 1, 10, now + 1)]
    assert len(counted) == 256, len(counted)  # those kept their windows: still limited
    # Once the flood's windows ended, new clients are counted in their buckets.
    assert limiter.allow("acme\0/api/\0late", 1, 10, now + 11)
    assert not limiter.allow("acme\0/api/\0late", 1, 10, now + 11)
    assert len(limiter) == 256 and limiter.overflowed == 2 * (10_000 - 256)  # the flood, twice; not the late one
    assert limiter.clean(now + 100, idle=85) == 255  # all but the late client's window (ended at now + 21)
    assert len(limiter) == 1


def test_a_worker_sees_what_the_main_publishes_and_cannot_change_it() -> None:
    memory = NodeSharedMemory(1024, 1)
    table = SharedTenantTable(memory)
    generation = table.publish("acme", SERVING | 8, 7, released=6, time_limit_ms=250, max_bytes=4096)
    table.set_lease(2, time.monotonic() + 60)
    out = _finish(_spawn(memory, 0, """
print(table.lookup("acme")[1:], table.lease_state(), "ghost" in table)
try:
    table.publish("acme", 0, 7)
except RuntimeError as err:
    print("refused:", err)
try:
    quotas.remove("acme")
except RuntimeError:
    print("refused too")
"""))
    assert out.splitlines() == [
        f"({generation}, 9, 7, 6, 250, 4096) 0 False",
        "refused: only the process that created the node's shared memory may change it",
        "refused too",
    ]
    table.set_lease(3)
    assert _finish(_spawn(memory, 0, "print(table.lease_state())")).strip() == "2"


def test_a_close_waits_for_every_worker_that_holds_the_tenant() -> None:
    """Workers hold the tenant, use it and release it in a loop while the main process closes and reopens it
    over and over: once no worker holds it, none is using the generation that was closed."""
    memory = NodeSharedMemory(1024, 2)
    table, acks, counters = SharedTenantTable(memory), WorkerAcks(memory), WorkerCounters(memory)
    generation = table.publish("acme", SERVING, 1)
    user = """
deadline = time.monotonic() + float(sys.argv[3])
uses = 0
while time.monotonic() < deadline:
    seen = table.lookup("acme")
    if seen is None or not seen[2] & 1:
        continue
    index = acks.hold(worker, "acme", seen[1])
    if index is None:
        continue
    counters.set(worker, 0, seen[1])  # using the tenant under this generation
    uses += 1
    counters.set(worker, 0, 0)
    acks.release(worker, index, seen[1])
print(uses)
"""
    workers = [_spawn(memory, n, user, "2.0") for n in range(2)]
    closes = 0
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        table.publish("acme", 0, 1)
        while acks.holders("acme"):
            pass
        assert all(counters.row(n)[0] != generation for n in range(2))
        generation = table.publish("acme", SERVING, 1)
        closes += 1
    uses = [int(_finish(worker)) for worker in workers]
    assert closes > 100 and all(n > 0 for n in uses), (closes, uses)


def test_the_holds_of_a_killed_worker_are_cleared_by_the_main() -> None:
    memory = NodeSharedMemory(1024, 2)
    table, acks = SharedTenantTable(memory), WorkerAcks(memory)
    generation = table.publish("acme", SERVING, 1)
    holder = _spawn(memory, 1, """
print(acks.hold(worker, "acme", int(sys.argv[3])), flush=True)
time.sleep(60)
""", str(generation))
    assert holder.stdout is not None
    index = int(holder.stdout.readline())
    assert acks.holders("acme") == [1] and acks.held(1) == [(index, generation)]
    table.publish("acme", 0, 1)
    assert acks.holders("acme") == [1], "a close waits for it"
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    assert acks.clear(1) == 1
    assert acks.holders("acme") == []


def test_attach_refuses_a_descriptor_that_is_no_region(tmp_path: Path) -> None:
    with open(tmp_path / "file", "wb+") as file:
        file.write(b"x" * 8192)
        file.flush()
        with pytest.raises(ValueError, match="magic"):
            NodeSharedMemory.attach(file.fileno())
    with pytest.raises(ValueError):
        NodeSharedMemory(1000, 1)
    with pytest.raises(ValueError):
        NodeSharedMemory(1024, 0)
    counters = WorkerCounters(NodeSharedMemory(1024, 1))
    with pytest.raises(ValueError):
        counters.add(1, 0)
    with pytest.raises(ValueError):
        counters.add(0, counters.slots)
