"""A tenant's password logins do not hold its database turn for their bcrypt check: its other requests (a token
refresh here) are answered while a burst of logins is being checked, instead of waiting behind every queued
login (the tenant's jobs run one at a time, and each check is 50-250 ms of CPU); and the checks of logins whose
clients went away are not made (:mod:`pbfast.pocketbase.password_checks`)."""

from __future__ import annotations

import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest

from cpcluster import ADMIN, CLUSTER_TOKEN, Start, start_cluster, wait_until
from nodetools import start_node

sys.path.insert(0, str(Path(__file__).parent / "pocketbase"))
from pbharness import all_in_one_with_owner  # noqa: E402

OWNER = {"email": "owner@example.com", "password": "owner-password-1"}
USER = {"email": "reader@example.com", "password": "reader-password-1"}
BURST = 16
GONE = 32


@pytest.mark.exclusive  # compares durations
def test_a_refresh_does_not_wait_behind_the_tenants_logins(pbfast_process: Start, tmp_path: Path) -> None:
    _, _, gw, owner_token = all_in_one_with_owner(pbfast_process, tmp_path / "aio", "logins", OWNER)
    base = f"{gw}/t/logins/api/collections"
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


@pytest.mark.exclusive  # compares durations
def test_logins_whose_clients_went_away_are_not_checked(pbfast_process: Start, tmp_path: Path) -> None:
    cp = start_cluster(pbfast_process, tmp_path / "cp", 1)[0]
    _, node_url = start_node(pbfast_process, "n1", f"127.0.0.1:{cp.http_port}", tmp_path / "nodes")
    wait_until(lambda: httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN).json()["items"])
    created = httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json={"id": "gone", "superuser": OWNER})
    assert created.status_code == 200, created.text
    forward = {"X-Pbfast-Cluster-Token": CLUSTER_TOKEN, "X-Pbfast-Epoch": str(created.json()["epoch"])}
    body = orjson.dumps({"identity": OWNER["email"], "password": OWNER["password"]})
    login_path = "/t/gone/api/collections/_superusers/auth-with-password"

    def login() -> float:
        started = time.monotonic()
        answer = httpx.post(node_url + login_path, content=body, timeout=60,
                            headers={"content-type": "application/json", **forward})
        assert answer.status_code == 200, answer.text
        return time.monotonic() - started

    one_login = min(login() for _ in range(3))
    host, _, port = node_url.removeprefix("http://").partition(":")
    request = (f"POST {login_path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
               + "".join(f"{name}: {value}\r\n" for name, value in forward.items())
               + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    for _ in range(GONE):  # a load tool's connections, closed at the end of its run with their logins unanswered
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(request)
    time.sleep(one_login)  # they have reached the node
    # One after the other they would take GONE checks; the one that may be running and this one's own remain.
    assert login() < GONE / 4 * one_login, one_login
