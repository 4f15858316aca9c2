"""Logins' bcrypt checks share the node as the tenants' database jobs do: a check's CPU time counts in its
tenant's use, and a heavy tenant's checks run at the background threads' lower OS priority while another tenant
is served; one tenant's checks use every check thread while it is alone, and another tenant's check gets the next
free thread. Real threads, a real event loop and the real scheduler. (Linux: each thread has its own nice value.)"""

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


@dataclass(slots=True)
class _Meeting(PasswordCheck):
    """A check that waits (up to 30 s) until ``meeting.parties`` checks run at once, then notes its start."""

    meeting: threading.Barrier | None = None
    started: list[str] | None = None
    name: str = ""

    def run(self) -> None:
        assert self.meeting is not None and self.started is not None
        self.started.append(self.name)
        self.meeting.wait()
        self.matches = True


def test_one_tenants_checks_run_on_every_thread_and_another_tenant_gets_the_next_free_one() -> None:
    async def scenario() -> None:
        checks = PasswordChecks(threads=2)
        started: list[str] = []
        # Two checks of one tenant must run at once to pass the meeting (a check at a time would time out);
        # then pairs meet in turn: A's burst of six and B's one.
        meeting = threading.Barrier(2, timeout=30)
        burst = [_Meeting("secret", "hash", meeting=meeting, started=started, name=f"a{index}") for index in range(5)]
        other = _Meeting("secret", "hash", meeting=meeting, started=started, name="b")
        waiting = [asyncio.ensure_future(checks.check("a", check)) for check in burst]
        await asyncio.sleep(0)  # A's first two are running (or starting): B arrives behind A's other three
        waiting.append(asyncio.ensure_future(checks.check("b", other)))
        assert all(await asyncio.gather(*waiting))
        assert all(check.matches for check in [*burst, other])
        # B's check took the first thread freed after it arrived, ahead of A's three waiting before it (its pair is
        # A's third check: their threads note their starts in either order).
        assert "b" in started[2:4], started

    asyncio.run(scenario())


def test_two_waiting_checks_of_a_tenant_are_made_together_on_one_thread() -> None:
    """Two of a tenant's logins waiting at once are checked in one native call (their Blowfish rounds interleaved:
    ``rust/src/bcrypt/pair.rs``), each with its own answer, about one check's CPU time for both."""
    import bcrypt

    async def scenario() -> None:
        checks = PasswordChecks(threads=1)
        hashed = [bcrypt.hashpw(password, bcrypt.gensalt(6)).decode() for password in (b"first-1", b"second-2")]
        # the first runs alone (the thread was free); the next two wait together and are made as a pair
        jobs = [PasswordCheck("first-1", hashed[0]), PasswordCheck("wrong", hashed[0]),
                PasswordCheck("second-2", hashed[1]), PasswordCheck("other", "not a bcrypt hash")]
        paired: list[tuple[str, str]] = []
        real = PasswordCheck.run_with

        def spy(self: PasswordCheck, other: PasswordCheck) -> None:
            paired.append((self.password, other.password))
            real(self, other)

        PasswordCheck.run_with = spy  # type: ignore[method-assign]
        try:
            assert all(await asyncio.gather(*(checks.check("t", job) for job in jobs)))
        finally:
            PasswordCheck.run_with = real  # type: ignore[method-assign]
        assert [job.matches for job in jobs] == [True, False, True, False]
        assert paired == [("wrong", "second-2")]  # the unhashed one is checked alone

    asyncio.run(scenario())
