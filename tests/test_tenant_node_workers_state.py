"""What one worker process of a node (``--workers=2``) changes or starts for a tenant, the other one sees:

- a request's body read is sized with the tenant's settings and collections as they are now: a worker that
  last saw batches off (so it read no batch body) answers a batch as the tenant's current settings say once
  another worker turned them on; so do rate limits at once;
- a backup running in one worker makes the other answer as PocketBase does while a backup runs (a restore
  refused "Try again later", ``canBackup`` false in the health check);
- a request a worker hands over to the main process reaches it with the path the worker received;
- the OAuth2 redirect reaches the realtime client (held by the main process) whichever worker takes it.

Each request goes on a fresh connection, so the kernel spreads them over both workers."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import orjson

from cpcluster import ADMIN, CLUSTER_TOKEN, Start, start_cluster, wait_until
from nodetools import forwarded, forwarded_ok, scrape, start_node

OWNER = {"email": "owner@example.com", "password": "owner-password-1"}
BUSY = "Try again later - another backup/restore process has already been started."


def _tenant_on_a_node_with_workers(start: Start, tmp_path: Path, node_id: str, tenant_id: str,
                                   env: dict[str, str] | None = None) -> tuple[str, int, str]:
    """A one-node cluster whose node runs two workers, and a tenant on it: the node's URL, the tenant's epoch
    and its superuser's token."""
    cp = start_cluster(start, tmp_path, 1)[0]
    _, url = start_node(start, node_id, f"127.0.0.1:{cp.http_port}", tmp_path, ("--workers=2",), env=env)
    wait_until(lambda: httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN).json()["items"])
    created = httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json={"id": tenant_id, "superuser": OWNER},
                         timeout=30)
    assert created.status_code == 200, created.text
    epoch = int(created.json()["epoch"])
    token = str(forwarded_ok(url, tenant_id, epoch, "POST", "/api/collections/_superusers/auth-with-password",
                             json={"identity": OWNER["email"], "password": OWNER["password"]}).json()["token"])
    return url, epoch, token


def _worker_requests(node_url: str) -> list[float]:
    samples = scrape(node_url)
    return [samples[f'pbfast_node_worker_requests_total{{worker="{index}"}}'] for index in (1, 2)]


def _batch(node_url: str, tenant_id: str, epoch: int) -> httpx.Response:
    return forwarded(node_url, tenant_id, epoch, "POST", "/api/batch",
                     json={"requests": [{"method": "POST", "url": "/api/collections/notes/records",
                                         "body": {"n": "x"}}]})


def test_a_batch_turned_on_through_one_worker_is_served_by_every_worker(pbfast_process: Start,
                                                                        tmp_path: Path) -> None:
    url, epoch, token = _tenant_on_a_node_with_workers(pbfast_process, tmp_path, "node-b", "b")
    forwarded_ok(url, "b", epoch, "POST", "/api/collections", token,
                 {"name": "notes", "type": "base", "createRule": "", "listRule": "",
                  "fields": [{"name": "n", "type": "text"}]})
    forwarded_ok(url, "b", epoch, "PATCH", "/api/settings", token, {"batch": {"enabled": False}})

    # Both workers refuse a batch, and so learn that the tenant's batches are off.
    before = _worker_requests(url)
    refused = [_batch(url, "b", epoch) for _ in range(24)]
    assert {response.status_code for response in refused} == {403}, [response.text for response in refused]
    assert all(now > then for now, then in zip(_worker_requests(url), before))

    forwarded_ok(url, "b", epoch, "PATCH", "/api/settings", token,
                 {"batch": {"enabled": True, "maxRequests": 10, "maxBodySize": 0, "timeout": 3}})
    before = _worker_requests(url)
    served = [_batch(url, "b", epoch) for _ in range(24)]
    assert [response.status_code for response in served] == [200] * 24, [response.text for response in served]
    assert all(now > then for now, then in zip(_worker_requests(url), before))

    # Rate limits turned on through one worker hold at once in the other (one window for the node), also
    # when it read the settings just before.
    for _ in range(6):
        forwarded_ok(url, "b", epoch, "GET", "/api/collections/notes/records")
    forwarded_ok(url, "b", epoch, "PATCH", "/api/settings", token, {"rateLimits": {"enabled": True, "rules": [
        {"label": "notes:list", "audience": "", "duration": 300, "maxRequests": 3}]}})
    statuses = [forwarded(url, "b", epoch, "GET", "/api/collections/notes/records").status_code for _ in range(12)]
    assert statuses == [200] * 3 + [429] * 9, statuses


class _HeldS3:
    """An S3 endpoint that takes connections and answers none of them until :meth:`release` (closed then):
    a backup uploaded there runs until then."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connected = threading.Event()
        self._released = threading.Event()
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._released.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self._held.append(connection)
            self.connected.set()

    def release(self) -> None:
        self._released.set()
        self.listener.close()
        for connection in self._held:
            connection.close()


def test_a_backup_running_in_one_worker_is_seen_by_the_other(pbfast_process: Start, tmp_path: Path) -> None:
    url, epoch, token = _tenant_on_a_node_with_workers(pbfast_process, tmp_path, "node-k", "k",
                                                       env={"PBFAST_ALLOW_LOOPBACK_EGRESS": "1"})
    held = _HeldS3()
    forwarded_ok(url, "k", epoch, "PATCH", "/api/settings", token, {"backups": {"s3": {
        "enabled": True, "bucket": "b", "region": "us-east-1", "endpoint": f"http://127.0.0.1:{held.port}",
        "accessKey": "key", "secret": "secret", "forcePathStyle": True}}})

    backup: list[httpx.Response] = []
    making = threading.Thread(target=lambda: backup.append(
        forwarded(url, "k", epoch, "POST", "/api/backups", token, {}, timeout=30)))
    making.start()
    try:
        assert held.connected.wait(20), "the backup never reached its S3 endpoint"
        # Answers to requests sent while the backup surely runs: before its S3 client gives up (10 s after the
        # upload began); requests that wait for the tenant's turn behind the backup are let go.
        held_since = time.monotonic()
        can_backup: list[bool] = []
        while time.monotonic() - held_since < 6.0:
            try:
                answer = forwarded(url, "k", epoch, "GET", "/api/health", token, timeout=1.0)
            except httpx.TimeoutException:
                continue
            can_backup.append(answer.json()["data"]["canBackup"])
        assert can_backup and set(can_backup) == {False}, can_backup
        # A restore is refused meanwhile (before it looks for its backup), whichever worker takes it.
        try:
            restore = forwarded(url, "k", epoch, "POST", "/api/backups/missing.zip/restore", token, timeout=1.0)
        except httpx.TimeoutException:
            pass
        else:
            assert restore.json()["message"] == BUSY, restore.text
    finally:
        held.release()
        making.join(30)
    assert backup and backup[0].status_code == 400, backup
    assert forwarded_ok(url, "k", epoch, "GET", "/api/health", token).json()["data"]["canBackup"] is True


def _raw_status(base_url: str, target: str, headers: dict[str, str] | None = None) -> int:
    """The status of a GET with ``target`` sent byte for byte (an HTTP client would normalise it)."""
    host, _, port = base_url.removeprefix("http://").partition(":")
    lines = [f"GET {target} HTTP/1.1", f"host: {host}:{port}", "connection: close",
             *(f"{name}: {value}" for name, value in (headers or {}).items())]
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    return int(received.split(b" ", 2)[1])


def test_a_worker_hands_the_main_process_the_path_it_received(pbfast_process: Start, tmp_path: Path) -> None:
    """The node's own routes are the main process's: a worker hands such a request over with the path it
    saw, whatever the spelling (percent-encoded ``?`` or NUL, dot segments, a leading ``//``); each answer is
    the single-process node's."""
    cp = start_cluster(pbfast_process, tmp_path, 1)[0]
    _, url = start_node(pbfast_process, "node-p", f"127.0.0.1:{cp.http_port}", tmp_path, ("--workers=2",))
    wait_until(lambda: httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN).json()["items"])
    bearer = {"Authorization": f"Bearer {CLUSTER_TOKEN}"}
    for _ in range(6):  # each on a new connection: both workers take some
        assert _raw_status(url, "/api/health") == 200
        assert _raw_status(url, "/api/health%3F") == 401  # not the public /api/health
        assert _raw_status(url, "/api/node/tenants/ghost/data%00") == 401
        assert _raw_status(url, "//api/health") == 401
        assert _raw_status(url, "/metrics%3Fx", bearer) == 404
        assert _raw_status(url, "/api/node/./tenants/ghost/data", bearer) == 404
        assert _raw_status(url, "/metrics", bearer) == 200


def test_the_oauth2_redirect_reaches_the_realtime_client_whichever_worker_takes_it(pbfast_process: Start,
                                                                                   tmp_path: Path) -> None:
    """``/api/oauth2-redirect`` hands the code to the realtime client named by the state: that client's stream
    is the main process's, and so is every redirect, whichever worker takes it."""
    url, epoch, token = _tenant_on_a_node_with_workers(pbfast_process, tmp_path, "node-o", "o")
    # OAuth2 turned on through a worker: a login (the main process's, which opened the tenant before) knows.
    forwarded_ok(url, "o", epoch, "PATCH", "/api/collections/users", token, {"oauth2": {"enabled": True, "providers": [
        {"name": "oidc", "clientId": "c", "clientSecret": "s", "authURL": "http://127.0.0.1:9/authorize",
         "tokenURL": "http://127.0.0.1:9/token", "userInfoURL": "http://127.0.0.1:9/userinfo"}]}})
    for _ in range(4):
        login = forwarded(url, "o", epoch, "POST", "/api/collections/users/auth-with-oauth2",
                          json={"provider": "oidc", "code": "c", "codeVerifier": "v",
                                "redirectURL": "https://a.example"})
        assert login.status_code == 400, login.text  # the token exchange fails: the node may not reach loopback

    headers = {"X-Pbfast-Cluster-Token": CLUSTER_TOKEN, "X-Pbfast-Epoch": str(epoch)}
    codes = [f"code{index}" for index in range(8)]
    with httpx.stream("GET", f"{url}/t/o/api/realtime", headers=headers,
                      timeout=httpx.Timeout(10.0, read=10.0)) as stream:
        lines = stream.iter_lines()
        client_id = next(line[3:].strip() for line in lines if line.startswith("id:"))
        before = _worker_requests(url)
        received: list[str] = []
        for code in codes:  # the redirect ends the subscription: one per login; each on a new connection
            subscribed = forwarded(url, "o", epoch, "POST", "/api/realtime",
                                   json={"clientId": client_id, "subscriptions": ["@oauth2"]})
            assert subscribed.status_code == 204, subscribed.text
            redirected = forwarded(url, "o", epoch, "GET", f"/api/oauth2-redirect?state={client_id}&code={code}")
            assert redirected.headers["location"].endswith("oauth2-redirect-success"), redirected.text
            for line in lines:
                if line.startswith("data:") and '"code"' in line:
                    received.append(orjson.loads(line[5:])["code"])
                    break
        assert all(now > then for now, then in zip(_worker_requests(url), before))
    assert received == codes
