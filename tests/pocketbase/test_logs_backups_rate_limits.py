"""``/api/logs``, ``/api/backups`` and the ``rateLimits`` settings side by side with stock PocketBase 0.40.6
(statuses and bodies), on one pair of servers (``scenarios_logs.py``, then the backups scenario here, then
``scenarios_rate_limits.py``); then pbfast's own: a backup restores in place (the tenant's data and
collections as they were), a zip made by stock PocketBase restores into a pbfast tenant and one made by pbfast
opens in stock PocketBase, and hostile zips are refused without anything of them reaching the disk or the
tenant."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import stat
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import httpx
import orjson

from pbharness import Backend, stock_pocketbase_server
from scenarios_logs import check_logs_api, seed_logs
from scenarios_rate_limits import check_rate_limits

PatchedBackends = Callable[[Callable[[Path], None]], tuple[Backend, Backend]]


def _auth(backend: Backend) -> dict[str, str]:
    return {"Authorization": backend.superuser_token}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _pbfast_file_token(data_db: Path) -> str:
    """A superuser file token as PocketBase signs one (pbfast has no ``/api/files/token`` yet): HS256 over
    the claims with the superuser's tokenKey and the collection's fileToken secret."""
    conn = apsw.Connection(str(data_db), flags=apsw.SQLITE_OPEN_READONLY)
    collection_id, options = conn.execute("SELECT id, options FROM _collections WHERE name = '_superusers'").fetchone()
    record_id, token_key = conn.execute("SELECT id, tokenKey FROM _superusers WHERE email = 'test@example.com'").fetchone()
    conn.close()
    secret = orjson.loads(options)["fileToken"]["secret"]
    signing = (_b64(b'{"alg":"HS256","typ":"JWT"}') + "." + _b64(orjson.dumps(
        {"collectionId": collection_id, "exp": int(time.time()) + 120, "id": record_id, "type": "file"})))
    signature = hmac.new((token_key + secret).encode(), signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{_b64(signature)}"


def _zip(entries: list[tuple[str, bytes, int]]) -> bytes:
    """A zip of (name, content, unix mode) entries, written as a hostile client would."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            archive.writestr(info, content)
    return buffer.getvalue()


def _upload(backend: Backend, name: str, content: bytes) -> httpx.Response:
    return httpx.post(f"{backend.url}/api/backups/upload", files={"file": (name, content, "application/zip")},
                      headers=_auth(backend), timeout=60)


def _comparable(answer: httpx.Response) -> Any:
    if not answer.content:
        return None
    body = answer.json()
    if isinstance(body, list):  # sizes and times differ between the two servers
        return sorted(item["key"] for item in body)
    if body.get("message", "").startswith("Invalid or already deleted backup file. Raw error:"):
        body["message"] = "Invalid or already deleted backup file. Raw error: ..."  # Go's own error text
    for error in body.get("data", {}).values():
        if isinstance(error, dict) and error.get("code") == "validation_invalid_mime_type":
            error["message"] = "..."  # names the stored file's random name
    return body


def test_logs_backups_and_rate_limits_as_pocketbase(patched_backends: PatchedBackends, tmp_path: Path) -> None:
    stock, fast = patched_backends(seed_logs)
    check_logs_api(stock, fast)
    stock_file_token = httpx.post(f"{stock.url}/api/files/token", headers=_auth(stock)).json()["token"]
    fast_file_token = _pbfast_file_token(fast.tenant_dir / "data.db")
    user = {"identity": "test@example.com", "password": "1234567890"}
    user_tokens = {b.name: httpx.post(f"{b.url}/api/collections/clients/auth-with-password", json=user).json()["token"]
                   for b in (stock, fast)}
    valid_zip = _zip([("data.db", b"not really", 0o100644)])
    steps: list[tuple[str, str, str, dict[str, Any]]] = [
        ("guest", "GET", "/api/backups", {}),
        ("user", "GET", "/api/backups", {}),
        ("superuser", "GET", "/api/backups", {}),
        ("guest", "POST", "/api/backups", {"json": {}}),
        ("superuser", "POST", "/api/backups", {"json": {"name": "Bad Name"}}),
        ("superuser", "POST", "/api/backups", {"json": {"name": "x" * 151 + ".zip"}}),
        ("superuser", "POST", "/api/backups", {"json": {"name": 5}}),
        ("superuser", "POST", "/api/backups", {"json": {"name": "first_backup.zip"}}),
        ("superuser", "POST", "/api/backups", {"json": {"name": "first_backup.zip"}}),
        ("superuser", "GET", "/api/backups", {}),
        ("user", "POST", "/api/backups/upload", {}),
        ("superuser", "POST", "/api/backups/upload", {}),
        ("superuser", "POST", "/api/backups/upload", {"files": {"file": ("notes.txt", b"hello", "text/plain")}}),
        ("superuser", "POST", "/api/backups/upload", {"files": {"file": ("uploaded.zip", valid_zip, "application/zip")}}),
        ("superuser", "POST", "/api/backups/upload", {"files": {"file": ("uploaded.zip", valid_zip, "application/zip")}}),
        ("superuser", "GET", "/api/backups", {}),
        ("guest", "GET", "/api/backups/uploaded.zip", {}),
        ("superuser", "GET", "/api/backups/uploaded.zip", {}),
        ("superuser", "GET", "/api/backups/uploaded.zip?token=SUPERUSER_AUTH_TOKEN", {}),
        ("guest", "GET", "/api/backups/missing.zip?token=FILE_TOKEN", {}),
        ("guest", "GET", "/api/backups/uploaded.zip?token=FILE_TOKEN", {}),
        ("user", "DELETE", "/api/backups/uploaded.zip", {}),
        ("superuser", "DELETE", "/api/backups/missing.zip", {}),
        ("superuser", "DELETE", "/api/backups/uploaded.zip", {}),
        ("superuser", "GET", "/api/backups", {}),
        ("guest", "POST", "/api/backups/first_backup.zip/restore", {}),
        ("user", "POST", "/api/backups/first_backup.zip/restore", {}),
        ("superuser", "POST", "/api/backups/missing.zip/restore", {}),
    ]
    compared = 0
    for who, method, path, extra in steps:
        answers = []
        for backend, file_token in ((stock, stock_file_token), (fast, fast_file_token)):
            headers = {"Authorization": backend.superuser_token} if who == "superuser" else (
                {"Authorization": user_tokens[backend.name]} if who == "user" else {})
            url = (backend.url + path).replace("FILE_TOKEN", file_token).replace(
                "SUPERUSER_AUTH_TOKEN", backend.superuser_token)
            answer = httpx.request(method, url, headers=headers, timeout=60, **extra)
            answers.append((answer.status_code, answer.content if path.endswith("FILE_TOKEN") and
                            answer.status_code == 200 else _comparable(answer)))
        assert answers[0] == answers[1], (who, method, path)
        compared += 1
    assert compared == len(steps)
    _check_round_trips(stock, fast, tmp_path)  # on the same servers: fewer starts
    check_rate_limits(stock, fast)


def _record(backend: Backend, collection: str, body: dict[str, Any]) -> str:
    answer = httpx.post(f"{backend.url}/api/collections/{collection}/records", json=body, headers=_auth(backend))
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def _exists(backend: Backend, collection: str, record_id: str) -> bool:
    return httpx.get(f"{backend.url}/api/collections/{collection}/records/{record_id}",
                     headers=_auth(backend)).status_code == 200


def _check_round_trips(stock: Backend, fast: Backend, tmp_path: Path) -> None:
    """A backup restores in place; stock PocketBase's restores here and pbfast's opens in PocketBase."""
    kept = _record(fast, "demo1", {"text": "kept"})
    assert httpx.post(f"{fast.url}/api/backups", json={"name": "round_trip.zip"}, headers=_auth(fast)).status_code == 204
    later = _record(fast, "demo1", {"text": "made after the backup"})
    assert httpx.delete(f"{fast.url}/api/collections/demo1/records/{kept}", headers=_auth(fast)).status_code == 204
    made = httpx.post(f"{fast.url}/api/collections", json={"name": "after_backup", "type": "base"}, headers=_auth(fast))
    assert made.status_code == 200, made.text
    restored = httpx.post(f"{fast.url}/api/backups/round_trip.zip/restore", headers=_auth(fast), timeout=60)
    assert restored.status_code == 204, restored.text
    assert _exists(fast, "demo1", kept) and not _exists(fast, "demo1", later)
    assert httpx.get(f"{fast.url}/api/collections/after_backup", headers=_auth(fast)).status_code == 404
    # A stock PocketBase backup, downloaded and uploaded here, restores into the tenant.
    marker = _record(stock, "demo1", {"text": "made in stock PocketBase"})
    assert httpx.post(f"{stock.url}/api/backups", json={"name": "from_stock.zip"}, headers=_auth(stock)).status_code == 204
    token = httpx.post(f"{stock.url}/api/files/token", headers=_auth(stock)).json()["token"]
    stock_zip = httpx.get(f"{stock.url}/api/backups/from_stock.zip?token={token}").content
    assert _upload(fast, "from_stock.zip", stock_zip).status_code == 204
    assert httpx.post(f"{fast.url}/api/backups/from_stock.zip/restore", headers=_auth(fast),
                      timeout=60).status_code == 204
    fast.login()  # the superusers are the backup's now
    assert _exists(fast, "demo1", marker)
    # And the tenant's backup, downloaded, is a pb_data that stock PocketBase serves.
    own = _pbfast_file_token(fast.tenant_dir / "data.db")
    pbfast_zip = httpx.get(f"{fast.url}/api/backups/round_trip.zip?token={own}")
    assert pbfast_zip.status_code == 200 and pbfast_zip.headers["content-type"] == "application/zip"
    def stored(content: bytes) -> list[str]:
        return sorted(name for name in zipfile.ZipFile(io.BytesIO(content)).namelist()
                      if name.startswith("storage/") and not name.endswith(("/", ".attrs")))

    # The fixture's files as PocketBase zips them (less the .attrs metadata its local file store keeps).
    assert stored(pbfast_zip.content) == stored(stock_zip) != []
    pb_data = tmp_path / "from_pbfast"
    zipfile.ZipFile(io.BytesIO(pbfast_zip.content)).extractall(pb_data)
    with stock_pocketbase_server(pb_data) as url:
        opened = Backend("pocketbase", url)
        opened.login()
        assert _exists(opened, "demo1", kept)


def test_hostile_backup_zips_are_refused(pbfast_fixture_tenant: Backend, tmp_path: Path) -> None:
    fast = pbfast_fixture_tenant
    kept = _record(fast, "demo1", {"text": "must survive"})
    database = (fast.tenant_dir / "data.db").read_bytes()
    hostile = {
        "climbs_out.zip": [("data.db", database, 0o100644), ("../escaped.txt", b"x", 0o100644)],
        "absolute.zip": [("data.db", database, 0o100644), ("/tmp/escaped.txt", b"x", 0o100644)],
        "symlink.zip": [("data.db", database, 0o100644), ("storage/link", b"/etc/passwd", stat.S_IFLNK | 0o777)],
        "data_symlink.zip": [("data.db", b"/etc/passwd", stat.S_IFLNK | 0o777)],
        "no_database.zip": [("storage/readme.txt", b"x", 0o100644)],
        "not_pocketbase.zip": [("data.db", b"SQLite format 3\x00" + b"\x00" * 200, 0o100644)],
        "device.zip": [("data.db", database, 0o100644), ("dev", b"", stat.S_IFCHR | 0o644)],
    }
    for name, entries in hostile.items():
        assert _upload(fast, name, _zip(entries)).status_code == 204, name
        answer = httpx.post(f"{fast.url}/api/backups/{name}/restore", headers=_auth(fast), timeout=60)
        assert answer.status_code == 400, (name, answer.text)
        assert answer.json()["message"].startswith("Failed to restore the backup: "), answer.text
    assert _exists(fast, "demo1", kept)
    assert not list(tmp_path.rglob("escaped.txt"))
    # A guest's upload is refused before its body is read (PocketBase's middleware answers it the same way).
    guest = httpx.post(f"{fast.url}/api/backups/upload", files={"file": ("big.zip", b"PK\x03\x04" + bytes(4 << 20))},
                       headers={"Authorization": "not-a-token"}, timeout=60)
    assert (guest.status_code, guest.json()["message"]) == (401, "The request requires valid record authorization token.")
    # A key can never name a path outside the tenant's backups.
    for key in ("..%2Fdata.db", "%2E%2E", "a%5Cb.zip"):
        answer = httpx.delete(f"{fast.url}/api/backups/{key}", headers=_auth(fast))
        assert answer.status_code in (400, 404), key


def test_archive_limits_count_what_is_inflated(tmp_path: Path) -> None:
    """Sizes are limited by what the entries really inflate to, and a header that lies about it fails."""
    from pbfast.pocketbase.backup_archive import ArchiveError, RestoreLimits, restore_archive
    from pbfast.pocketbase.collections.database import init_tenant_database
    from pbfast.pocketbase.tenant import Tenant

    init_tenant_database(tmp_path / "tenant")
    tenant = Tenant.open("t", tmp_path / "tenant")
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data.db", b"\x00" * (8 << 20))  # 8 MiB of zeros: a few KiB zipped
    raw = bytearray(bomb.read_bytes())
    lying = tmp_path / "lying.zip"  # both headers claim 1 KiB
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = raw.find(signature)
        raw[at + offset:at + offset + 4] = (1024).to_bytes(4, "little")
    lying.write_bytes(raw)
    for path, limits in ((bomb, RestoreLimits(max_database_bytes=1 << 20)),
                         (bomb, RestoreLimits(max_total_bytes=1 << 20)), (lying, RestoreLimits())):
        scratch = tmp_path / f"scratch-{path.stem}-{limits.max_total_bytes}"
        scratch.mkdir()
        try:
            restore_archive(tenant, path, scratch, limits)
        except ArchiveError as err:
            assert "larger than allowed" in str(err) or "not a usable zip" in str(err) or "not a usable" in str(err)
        else:
            raise AssertionError(f"{path.name} was restored")
    assert tenant.collection("users") is not None  # unchanged
    tenant.close()
