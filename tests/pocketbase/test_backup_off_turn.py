"""A backup being made and uploaded does not hold the tenant: its other requests, writes included, are answered
meanwhile.

The backups go to the tenant's own S3 (moto) through a forwarder on loopback that holds every upload of a zip
for a few seconds, as a slow or distant store does."""

from __future__ import annotations

import http.client
import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx

from helpers import moto_s3_server
from oidc_provider import serve_on_loopback
from pbharness import Backend

from pbfast.pocketbase.backup_lock import BackupLock

BUCKET = "tenant-backups"
UPLOAD_DELAY = 3.0


@contextmanager
def _slow_uploads(upstream: str) -> Iterator[str]:
    """An HTTP forwarder to ``upstream`` that waits UPLOAD_DELAY seconds before forwarding a PUT of a zip."""
    target = urlsplit(upstream)

    class Forward(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if self.command == "PUT" and self.path.split("?")[0].endswith(".zip"):
                time.sleep(UPLOAD_DELAY)
            conn = http.client.HTTPConnection(target.hostname or "", target.port, timeout=30)
            conn.request(self.command, self.path, body, dict(self.headers))
            answer = conn.getresponse()
            payload = answer.read()
            self.send_response(answer.status)
            for name, value in answer.getheaders():
                if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(name, value)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            conn.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        def log_message(self, *args: object) -> None:
            pass

    with serve_on_loopback(Forward, "slow-uploads") as url:
        yield url


def test_a_slow_backup_upload_does_not_hold_the_tenants_requests(egress_tenant: Backend) -> None:
    fast = egress_tenant
    auth = {"Authorization": fast.superuser_token}
    with moto_s3_server(BUCKET) as moto, _slow_uploads(moto) as slow:
        s3 = {"enabled": True, "bucket": BUCKET, "region": "us-east-1", "endpoint": slow, "accessKey": "testing",
              "secret": "testing", "forcePathStyle": True}
        notes = httpx.post(f"{fast.url}/api/collections", headers=auth, timeout=30, json={
            "name": "notes", "type": "base", "createRule": "", "fields": [{"name": "text", "type": "text"}]})
        assert notes.status_code == 200, notes.text
        patched = httpx.patch(f"{fast.url}/api/settings", json={"backups": {"s3": s3}}, headers=auth, timeout=30)
        assert patched.status_code == 200, patched.text
        created: list[tuple[httpx.Response, float]] = []

        def make_backup() -> None:
            answer = httpx.post(f"{fast.url}/api/backups", json={"name": "slow.zip"}, headers=auth, timeout=60)
            created.append((answer, time.monotonic()))

        backup = threading.Thread(target=make_backup)
        started = time.monotonic()
        backup.start()
        time.sleep(0.5)  # the backup is on its way to the store by now (the zip of the fixture takes ~0.1 s)
        answered = []
        for _ in range(3):
            listed = httpx.get(f"{fast.url}/api/collections/notes/records", headers=auth, timeout=30)
            written = httpx.post(f"{fast.url}/api/collections/notes/records", json={"text": "meanwhile"}, timeout=30)
            answered.append(time.monotonic())
            assert listed.status_code == 200 and written.status_code == 200, (listed.text, written.text)
        backup.join()
        assert created and created[0][0].status_code == 204, created[0][0].text if created else "no answer"
        backup_answered = created[0][1]
        assert backup_answered - started >= UPLOAD_DELAY  # it did wait for the slow upload
        # Answered while the upload was still held, well before the backup's answer (held back, they would come
        # only once the backup's turn ended, with its answer): load slows both alike.
        assert max(answered) < backup_answered - 1.0, \
            f"the tenant's requests waited for the backup: {[round(at - started, 2) for at in answered]}"
        busy = httpx.post(f"{fast.url}/api/backups", json={"name": "slow.zip"}, headers=auth, timeout=60)
        assert busy.status_code == 400  # the name exists now
        listed_backups = httpx.get(f"{fast.url}/api/backups", headers=auth, timeout=30)
        assert [item["key"] for item in listed_backups.json()] == ["slow.zip"]
        # logged with the answer the upload decided, as PocketBase logs it (not the end of the turn's)
        deadline = time.monotonic() + 10
        while True:
            logged = httpx.get(f"{fast.url}/api/logs", params={"filter": "data.url = '/api/backups' && data.method = 'POST'",
                                                               "sort": "created"}, headers=auth, timeout=30)
            statuses = [item["data"]["status"] for item in logged.json()["items"]]
            if len(statuses) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert statuses == [204, 400]
        assert logged.json()["items"][0]["data"]["execTime"] >= UPLOAD_DELAY * 1000


# PocketBase 0.40.6's answers while a backup or restore of the app runs (backup_test.go's "pending backup" and
# "active backup process"); its API errors end with a full stop (NewApiError's Sentenize), the source's
# message for a create has none.
BUSY_ANSWER = {"data": {}, "message": "Try again later - another backup/restore process has already been started.",
               "status": 400}


def test_a_backup_in_progress_refuses_another_as_pocketbase(pbfast_fixture_tenant: Backend) -> None:
    """While a backup runs (its lock held here, as a node's other process holds it), a create, a named create and
    a restore are refused with PocketBase's answer, the running backup cannot be deleted; then a create goes."""
    fast = pbfast_fixture_tenant
    assert fast.tenant_dir is not None
    auth = {"Authorization": fast.superuser_token}
    held = BackupLock.take(fast.tenant_dir, "held.zip")
    assert held is not None
    try:
        answers = [httpx.post(f"{fast.url}/api/backups", json=body, headers=auth, timeout=30)
                   for body in ({}, {"name": "named.zip"})]
        answers.append(httpx.post(f"{fast.url}/api/backups/missing.zip/restore", headers=auth, timeout=30))
        assert [(answer.status_code, answer.json()) for answer in answers] == [(400, BUSY_ANSWER)] * 3
        deleted = httpx.delete(f"{fast.url}/api/backups/held.zip", headers=auth, timeout=30)
        assert (deleted.status_code, deleted.json()["message"]) == (
            400, "The backup is currently being used and cannot be deleted."), deleted.text
    finally:
        held.release()
    made = httpx.post(f"{fast.url}/api/backups", json={"name": "after.zip"}, headers=auth, timeout=60)
    assert made.status_code == 204, made.text
