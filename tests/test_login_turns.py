"""A tenant's password logins do not hold its database turn for their bcrypt check, nor its sign-ups for their
new password's hash: its other requests (a token refresh here) are answered while a burst of them is being
checked or hashed, instead of waiting behind every queued one (the tenant's jobs run one at a time, and each
check is 50-250 ms of CPU); the checks of logins whose clients went away are not made; and a login refused
because too many of the tenant's checks wait is in the tenant's request log like any other answer
(:mod:`pbfast.pocketbase.password_checks`)."""

from __future__ import annotations

import selectors
import socket
import sys
import time
from collections.abc import Callable
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
FLOOD = 400  # logins at once: more than a tenant's checks may wait (256)


@pytest.mark.exclusive  # compares durations
def test_a_refresh_does_not_wait_behind_the_tenants_logins_or_sign_ups(pbfast_process: Start, tmp_path: Path) -> None:
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

    def sign_up(index: int) -> httpx.Response:  # a new password's hash, as costly as a login's check
        password = f"sign-up-password-{index}"
        return httpx.post(f"{base}/users/records", timeout=60,
                          json={"email": f"new{index}@example.com", "password": password, "passwordConfirm": password})

    for name, burst in (("logins", lambda _: login()), ("sign-ups", sign_up)):
        def timed(index: int, burst: Callable[[int], httpx.Response] = burst) -> tuple[int, float]:
            answer = burst(index)
            return answer.status_code, time.monotonic()

        with ThreadPoolExecutor(BURST) as clients:
            answering = [clients.submit(timed, index) for index in range(BURST)]
            time.sleep(min(one_login))  # the burst has reached the node
            refresh = httpx.post(f"{base}/users/auth-refresh", headers={"Authorization": user_token}, timeout=60)
            refreshed_at = time.monotonic()
            answers = [future.result() for future in answering]
        assert refresh.status_code == 200, refresh.text
        assert refresh.json()["record"]["email"] == USER["email"]
        assert [status for status, _ in answers] == [200] * BURST, name
        # Behind the burst's bcrypt work it would be answered after it; now while most of it is still being made.
        answered_before = sum(1 for _, at in answers if at < refreshed_at)
        assert answered_before < BURST // 2, (name, answered_before, one_login)
    signed_up = httpx.post(f"{base}/users/auth-with-password", timeout=60,
                           json={"identity": "new3@example.com", "password": "sign-up-password-3"})
    assert signed_up.status_code == 200, signed_up.text  # the hash made off the turn is the one stored


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


def test_logins_refused_for_a_full_check_queue_are_logged(pbfast_process: Start, tmp_path: Path) -> None:
    cp = start_cluster(pbfast_process, tmp_path / "cp", 1)[0]
    # The database queue takes the whole flood, so that the refusals are the checks' own.
    _, node_url = start_node(pbfast_process, "n1", f"127.0.0.1:{cp.http_port}", tmp_path / "nodes",
                             ("--tenant-queue-limit=4096",))
    wait_until(lambda: httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN).json()["items"])
    created = httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json={"id": "flood", "superuser": OWNER})
    assert created.status_code == 200, created.text
    forward = {"X-Pbfast-Cluster-Token": CLUSTER_TOKEN, "X-Pbfast-Epoch": str(created.json()["epoch"])}
    body = orjson.dumps({"identity": OWNER["email"], "password": OWNER["password"]})
    login_path = "/t/flood/api/collections/_superusers/auth-with-password"
    owner = httpx.post(node_url + login_path, content=body, timeout=60,
                       headers={"content-type": "application/json", **forward})
    assert owner.status_code == 200, owner.text
    owner_headers = {"Authorization": owner.json()["token"], **forward}

    host, _, port = node_url.removeprefix("http://").partition(":")
    request = (f"POST {login_path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
               + "".join(f"{name}: {value}\r\n" for name, value in forward.items())
               + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    selector = selectors.DefaultSelector()
    conns = []
    try:
        for _ in range(FLOOD):
            conn = socket.create_connection((host, int(port)), timeout=30)
            conn.sendall(request)
            conn.setblocking(False)
            selector.register(conn, selectors.EVENT_READ)
            conns.append(conn)
        # The refusals come at once; the rest wait for their checks (seconds): read until none came for 3 s.
        refused, quiet_since = 0, time.monotonic()
        while time.monotonic() - quiet_since < 3:
            for key, _ in selector.select(timeout=0.5):
                selector.unregister(key.fileobj)
                head = key.fileobj.recv(256)  # type: ignore[union-attr]
                if head.startswith(b"HTTP/1.1 429"):
                    refused, quiet_since = refused + 1, time.monotonic()
    finally:
        for conn in conns:  # their logins are not checked once they are gone
            conn.close()
        selector.close()
    assert refused >= FLOOD - 256 - 16, refused

    def logged_refusals() -> int:
        answer = httpx.get(f"{node_url}/t/flood/api/logs", headers=owner_headers, timeout=30,
                           params={"filter": "data.status=429", "perPage": 1})
        assert answer.status_code == 200, answer.text
        return int(answer.json()["totalItems"])

    wait_until(lambda: logged_refusals() >= refused, timeout=60)
    logged = httpx.get(f"{node_url}/t/flood/api/logs", headers=owner_headers, timeout=30,
                       params={"filter": "data.status=429", "perPage": 1}).json()["items"][0]
    assert logged["level"] == 8 and logged["message"] == "POST /api/collections/_superusers/auth-with-password"
    assert logged["data"]["status"] == 429 and logged["data"]["method"] == "POST"
    assert logged["data"]["error"] == "Too many requests for this tenant are waiting; retry shortly."
