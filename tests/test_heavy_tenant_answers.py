"""A heavy tenant's answers leave from its background database thread, not from the event loop every tenant
shares: handing an answer to granian wakes granian's thread, and under a heavy tenant's load that hand-over was
the loop's largest item (benchmarks/RESULTS.md, "Noisy neighbour"). Another tenant's answers, and the heavy
tenant's own while it is served alone, still leave from the loop; the background thread hands them over at the
node's normal priority, not its own lower one. A real tenant database, the node's API, real threads and a real
event loop; only granian's protocol is stood in for, to see which thread answered, and at which priority."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest

from helpers import FakeHeaders

from pbfast.pocketbase.api import TenantApi
from pbfast.pocketbase.tenant import Tenant
from pbfast.tenant_node.db_scheduler import BACKGROUND_NICE, DbScheduler, on_background_thread
from pbfast.thread_priority import lower_priority_but_moments


def _nice() -> int:
    """The calling thread's nice value."""
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


class HealthScope:
    proto = "http"
    method = "GET"
    path = "/api/health"
    query_string = ""
    authority = None
    client = "192.0.2.7:5555"
    scheme = "http"
    http_version = "1.1"

    def __init__(self) -> None:
        self.headers = FakeHeaders([("host", "node.test")])


class AnswerRecorder:
    """Granian's protocol as far as an answer goes: what was answered, and on which thread."""

    def __init__(self) -> None:
        self.status = 0
        self.body = b""
        self.thread = ""
        self.nice = 0

    async def __call__(self) -> bytes:
        return b""

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.body, self.thread = status, body, threading.current_thread().name
        self.nice = _nice()

    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.response_bytes(status, headers, b"")


def _with_noisy_and_quiet(tmp_path: Path,
                          scenario: Callable[[DbScheduler, dict[str, Tenant]], Awaitable[None]]) -> None:
    """Run ``scenario`` with tenants ``noisy`` and ``quiet`` open and a one-thread ``DbScheduler``; both are
    stopped and closed afterwards."""
    tenants = {name: Tenant.open(name, tmp_path / name, create=True) for name in ("noisy", "quiet")}

    async def run() -> None:
        db = DbScheduler(threads=1)
        try:
            await scenario(db, tenants)
        finally:
            db.stop()

    try:
        asyncio.run(run())
    finally:
        for tenant in tenants.values():
            tenant.close()


def test_a_heavy_tenants_answers_leave_from_its_background_thread(tmp_path: Path) -> None:
    api = TenantApi()

    async def scenario(db: DbScheduler, tenants: dict[str, Tenant]) -> None:
        async def health(name: str) -> AnswerRecorder:
            answer = AnswerRecorder()
            await api.handle(tenants[name], "/api/health", HealthScope(), answer,  # type: ignore[arg-type]
                             run=lambda work: db.run(name, work), answer_from_job=on_background_thread)
            assert answer.status == 200 and orjson.loads(answer.body)["code"] == 200
            return answer

        loop_thread = threading.current_thread().name
        await db.run("noisy", lambda: time.sleep(0.9))  # most of a thread's time lately: heavy
        # Served alone, the heavy tenant is answered from the loop as before.
        assert (await health("noisy")).thread == loop_thread
        await db.run("noisy", lambda: time.sleep(0.9))  # (still heavy, whatever the first answer took)
        assert db.run_inline("quiet", lambda: True)  # another tenant is served too
        assert db.in_background("noisy")
        assert (await health("noisy")).thread.startswith("pbfast-db-bg-")
        assert (await health("quiet")).thread == loop_thread

    _with_noisy_and_quiet(tmp_path, scenario)


def _may_go_back_up() -> bool:
    """Whether a thread of this process may raise its priority again after lowering it (root, CAP_SYS_NICE)."""
    allowed: list[bool] = []
    probe = threading.Thread(target=lambda: allowed.append(lower_priority_but_moments(1)))
    probe.start()
    probe.join()
    return allowed == [True]


@pytest.mark.skipif(sys.platform != "linux" or not _may_go_back_up(),
                    reason="threads' nice values: Linux, with the privilege to raise a thread's priority again")
def test_a_heavy_tenants_answer_is_handed_over_at_the_normal_priority(tmp_path: Path) -> None:
    """The heavy tenant's job runs at nice +BACKGROUND_NICE, but its answer is handed to granian at the node's own
    priority: that call wakes granian's thread, which at the lower priority preempted the background thread while
    it held the GIL, and every other tenant's request waited for the GIL until the kernel ran it again."""
    api = TenantApi()
    normal = _nice()

    async def scenario(db: DbScheduler, tenants: dict[str, Tenant]) -> None:
        await db.run("noisy", lambda: time.sleep(0.9))  # most of a thread's time lately: heavy
        assert db.run_inline("quiet", lambda: True)  # another tenant is served too
        assert db.in_background("noisy")
        assert await db.run("noisy", _nice) == min(19, normal + BACKGROUND_NICE)  # its work: lower
        answer = AnswerRecorder()
        await api.handle(tenants["noisy"], "/api/health", HealthScope(), answer,  # type: ignore[arg-type]
                         run=lambda work: db.run("noisy", work), answer_from_job=on_background_thread)
        assert answer.status == 200 and answer.thread.startswith("pbfast-db-bg-")
        assert answer.nice == normal  # its answer handed over at the normal priority (was +BACKGROUND_NICE)
        assert await db.run("noisy", _nice) == min(19, normal + BACKGROUND_NICE)  # and back down after

    _with_noisy_and_quiet(tmp_path, scenario)
