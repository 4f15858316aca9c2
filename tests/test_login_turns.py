"""A tenant's password logins do not hold its database turn for their bcrypt check: its other requests (a token
refresh here) are answered while a burst of logins is being checked, instead of waiting behind every queued
login (the tenant's jobs run one at a time, and each check is 50-250 ms of CPU)."""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from cpcluster import Start

sys.path.insert(0, str(Path(__file__).parent / "pocketbase"))
from pbharness import create_tenant, start_all_in_one  # noqa: E402

OWNER = {"email": "owner@example.com", "password": "owner-password-1"}
USER = {"email": "reader@example.com", "password": "reader-password-1"}
BURST = 16


@pytest.mark.exclusive  # compares durations
def test_a_refresh_does_not_wait_behind_the_tenants_logins(pbfast_process: Start, tmp_path: Path) -> None:
    _, cp, gw = start_all_in_one(pbfast_process, tmp_path / "aio")
    create_tenant(cp, gw, "logins", {"superuser": OWNER})
    base = f"{gw}/t/logins/api/collections"
    owner_token = httpx.post(f"{base}/_superusers/auth-with-password", timeout=30,
                             json={"identity": OWNER["email"], "password": OWNER["password"]}).json()["token"]
    created = httpx.post(f"{base}/users/records", headers={"Authorization": owner_token}, timeout=30,
                         json={**USER, "passwordConfirm": USER["password"]})
    assert created.status_code == 200, created.text

    def login(password: str = USER["password"]) -> httpx.Response:
        return httpx.post(f"{base}/users/auth-with-password", timeout=60,
                          json={"identity": USER["email"], "password": password})

    one_login = []
    for _ in range(3):
        started = time.monotonic()
        answer = login()
        one_login.append(time.monotonic() - started)
        assert answer.status_code == 200, answer.text
    user_token = answer.json()["token"]
    wrong = login("not-the-password")
    assert (wrong.status_code, wrong.json()) == (400, {"status": 400, "message": "Failed to authenticate.",
                                                       "data": {}})

    def timed_login() -> tuple[int, float]:
        answer = login()
        return answer.status_code, time.monotonic()

    with ThreadPoolExecutor(BURST) as clients:
        logins = [clients.submit(timed_login) for _ in range(BURST)]
        time.sleep(min(one_login))  # the burst has reached the node
        refresh = httpx.post(f"{base}/users/auth-refresh", headers={"Authorization": user_token}, timeout=60)
        refreshed_at = time.monotonic()
        answers = [future.result() for future in logins]
    assert refresh.status_code == 200, refresh.text
    assert refresh.json()["record"]["email"] == USER["email"]
    assert [status for status, _ in answers] == [200] * BURST
    # Behind the burst's checks it would be answered after them; now while most of them are still being made.
    answered_before = sum(1 for _, at in answers if at < refreshed_at)
    assert answered_before < BURST // 2, (answered_before, one_login)
