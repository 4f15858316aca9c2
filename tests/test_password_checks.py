"""Logins' bcrypt checks share the node as the tenants' database jobs do: a check's CPU time counts in its
tenant's use, and a heavy tenant's checks run at the background threads' lower OS priority while another tenant
is served. Real threads, a real event loop and the real scheduler. (Linux: each thread has its own nice value.)"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass

from pbfast.pocketbase.auth import PasswordCheck
from pbfast.pocketbase.password_checks import PasswordChecks
from pbfast.tenant_node.db_scheduler import BACKGROUND_NICE, DbScheduler, on_background_thread


@dataclass(slots=True)
class _Probe(PasswordCheck):
    """A check that burns ``cpu_seconds`` of CPU and notes the thread it ran on."""

    cpu_seconds: float = 0.0
    nice: int | None = None
    background: bool | None = None

    def run(self) -> None:
        started = time.thread_time()
        while time.thread_time() - started < self.cpu_seconds:
            pass
        self.nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        self.background = on_background_thread()
        self.matches = False


def test_a_tenants_checks_count_in_its_use_and_give_way_once_it_is_heavy() -> None:
    async def scenario() -> None:
        db = DbScheduler(threads=2)
        checks = PasswordChecks(threads=2)
        checks.share_with(db)
        normal = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        try:
            # A check's CPU time is the tenant's use, as a database job's time is.
            burn = _Probe("secret", "hash", cpu_seconds=0.05)
            assert await checks.check("logins", burn)
            assert burn.nice == normal and burn.background is False  # alone: normal priority
            assert db.snapshot()[0]["logins"].busy_seconds >= 0.05

            # Heavy (its use over half a thread's time) while another tenant is served: its checks give way...
            db.account("logins", 0.9)
            assert db.run_inline("quiet", lambda: True)
            assert db.in_background("logins")
            heavy = _Probe("secret", "hash")
            assert await checks.check("logins", heavy)
            assert heavy.background is True and heavy.nice == min(19, normal + BACKGROUND_NICE)
            # ...and the other tenant's keep the normal priority.
            quiet = _Probe("secret", "hash")
            assert await checks.check("quiet", quiet)
            assert quiet.background is False and quiet.nice == normal
        finally:
            db.stop()

    asyncio.run(scenario())
