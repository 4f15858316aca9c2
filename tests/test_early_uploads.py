"""A record create's or update's uploads are written to the store before the tenant's turn (issue 15, upload
throughput: pbfast.pocketbase.apis.early_uploads). What a client sees stays PocketBase's: a created or updated
record names exactly the files stored under its id, the files an update replaces go after its commit, and a
refused or invalid create or update (its rule, a field, a taken id, a missing record) leaves no file and no
note behind (the tenant's journal of pending uploads names none of them once they are done). A crash between
the write and the commit leaves files that the tenant's sweep removes.
A real all-in-one (local object store) through its gateway; the crash case on a real tenant and store."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from pbfast.pocketbase import collections, filesystem
from pbfast.pocketbase.api import TenantApi
from pbfast.pocketbase.apis.early_uploads import NOTE_DUE_SECONDS, plan_early, write_early
from pbfast.pocketbase.apis.request import TenantRequest
from pbfast.pocketbase.apis import upload_journal
from pbfast.pocketbase.apis.upload_journal import RESERVED_IDS, ROLL_SECONDS, Generation
from pbfast.pocketbase.filesystem import LocalObjectStore, files_of
from pbfast.pocketbase.filesystem.retention import sweep_deleted
from pbfast.pocketbase.tenant import Tenant

sys.path.insert(0, str(Path(__file__).parent / "pocketbase"))
from pbharness import all_in_one_with_owner  # noqa: E402

OWNER = {"email": "owner@example.com", "password": "owner-password-1"}
PNG = bytes.fromhex("89504e470d0a1a0a") + b"\x00" * 200


def _stored(store: Path) -> list[str]:
    """The store's files now. ``os.walk``, not ``rglob``: a record directory emptied by a background delete may be
    removed while it is walked (rglob raises then; os.walk leaves it out)."""
    return sorted(str(Path(root, name).relative_to(store)) for root, _, names in os.walk(store) for name in names)


def _settled(store: Path, expected: list[str]) -> list[str]:
    """The store's files once its background deletes are done (bounded wait)."""
    deadline = time.monotonic() + 30
    while (found := _stored(store)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def _empty_directories(store: Path) -> list[str]:
    """The store's empty directories once its background deletes are done (bounded wait)."""
    deadline = time.monotonic() + 30
    while True:
        empty = sorted(str(Path(root).relative_to(store)) for root, directories, names in os.walk(store)
                       if not directories and not names and Path(root) != store)
        if not empty or time.monotonic() > deadline:
            return empty
        time.sleep(0.05)


def _noted(deleted: Path, expected: list[str]) -> list[str]:
    """The files the notes in a tenant's ``deleted/`` prefix name (deletes kept for the restore window, early
    uploads' notes on S3; not the journal of pending uploads, whose lines stay while its reserved ids are handed
    out: see the in-process tests below), once its background writes are done (bounded wait)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            found = sorted(path for note in _stored(deleted) if not note.startswith("pending-")
                           for path in orjson.loads((deleted / note).read_bytes()))
        except (OSError, orjson.JSONDecodeError):  # a note being written or deleted
            found = []
        if found == expected or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_creates_store_exactly_what_their_records_name(pbfast_process: object, tmp_path: Path) -> None:
    _, _, gw, token = all_in_one_with_owner(pbfast_process, tmp_path / "node", "ups", OWNER)
    base = f"{gw}/t/ups"
    made = httpx.post(f"{base}/api/collections", headers={"Authorization": token}, timeout=30, json={
        "name": "docs", "type": "base", "listRule": "", "viewRule": "", "createRule": 'title != "refused"',
        "updateRule": 'title != "locked"',
        "fields": [{"name": "title", "type": "text", "required": True},
                   {"name": "files", "type": "file", "maxSelect": 3, "maxSize": 1000},
                   {"name": "cover", "type": "file", "maxSelect": 1}]})
    assert made.status_code == 200, made.text
    url = f"{base}/api/collections/docs/records"
    storage = tmp_path / "node" / "replica" / "tenants" / "ups" / "storage"
    deleted = tmp_path / "node" / "replica" / "tenants" / "ups" / "deleted"

    created = httpx.post(url, data={"title": "kept"}, timeout=30,
                         files=[("files", ("alpha.png", PNG, "image/png")), ("files", ("beta b.png", PNG, "image/png"))])
    assert created.status_code == 200, created.text
    record = created.json()
    assert len(record["id"]) == 15 and [n[0] for n in record["files"]] == ["a", "b"]
    kept = sorted(f"{made.json()['id']}/{record['id']}/{name}" for name in record["files"])
    assert _settled(storage, kept) == kept
    assert _noted(deleted, []) == [], "no note (the journal's lines: the in-process tests below)"
    assert httpx.get(f"{base}/api/files/docs/{record['id']}/{record['files'][1]}").content == PNG

    with_id = httpx.post(url, data={"title": "mine", "id": "chosenid0000001"}, timeout=30,
                         files=[("files", ("c.png", PNG, "image/png"))])
    assert with_id.status_code == 200, with_id.text
    kept = sorted(kept + [f"{made.json()['id']}/chosenid0000001/{with_id.json()['files'][0]}"])

    refusals = [
        ({"title": "refused"}, 400, "Failed to create record."),  # the create rule
        ({"title": ""}, 400, "Failed to create record."),  # a required field
        ({"title": "again", "id": "chosenid0000001"}, 400, "Failed to create record."),  # a taken id
    ]
    for data, status, message in refusals:
        answer = httpx.post(url, data=data, files=[("files", ("d.png", PNG, "image/png"))], timeout=30)
        assert (answer.status_code, answer.json()["message"]) == (status, message), (data, answer.text)
    too_large = httpx.post(url, data={"title": "big"}, files=[("files", ("e.png", PNG * 10, "image/png"))], timeout=30)
    assert too_large.status_code == 400 and "files" in too_large.json()["data"], too_large.text
    assert _settled(storage, kept) == kept, "a refused create leaves no file"
    assert _noted(deleted, []) == [], "nor a note"
    assert _empty_directories(storage) == [], "nor the directory of the record it would have made"

    # Updates: the new files go beside the record's others; the ones its new values replace go after the commit.
    folder = f"{made.json()['id']}/{record['id']}"
    patch = f"{url}/{record['id']}"
    first_cover = httpx.patch(patch, timeout=30, files=[("cover", ("one.png", PNG, "image/png"))])
    assert first_cover.status_code == 200, first_cover.text
    cover = first_cover.json()["cover"]
    assert cover.startswith("one_")
    kept = sorted(kept + [f"{folder}/{cover}"])
    assert _settled(storage, kept) == kept
    replaced = httpx.patch(patch, data={"files-": record["files"][0]}, timeout=30,
                           files=[("cover", ("two.png", PNG, "image/png")), ("files+", ("three.png", PNG, "image/png"))])
    assert replaced.status_code == 200, replaced.text
    updated = replaced.json()
    assert updated["cover"].startswith("two_") and len(updated["files"]) == 2
    assert updated["files"][0] == record["files"][1] and updated["files"][1].startswith("three_")
    gone = sorted([f"{folder}/{cover}", f"{folder}/{record['files'][0]}"])
    kept = sorted({*kept, f"{folder}/{updated['cover']}", f"{folder}/{updated['files'][1]}"} - set(gone))
    # the node keeps deleted files for its restore window: noted to be deleted then, not in the record any more
    assert _settled(storage, sorted(kept + gone)) == sorted(kept + gone)
    assert _noted(deleted, gone) == gone, "the replaced cover and the removed file are deleted after the commit"
    assert httpx.get(f"{base}/api/files/docs/{record['id']}/{updated['cover']}", timeout=30).content == PNG

    update_refusals = [
        (patch, {"title": "locked"}, 200),  # allowed: the rule reads the record as stored (title "kept")
        (patch, {"title": "x"}, 404),  # now "locked": the update rule refuses it
        (f"{url}/missing00000001", {"title": "x"}, 404),  # no such record
    ]
    for target, data, status in update_refusals:
        answer = httpx.patch(target, data=data, files=[("cover", ("f.png", PNG, "image/png"))], timeout=30)
        assert answer.status_code == status, (data, answer.text)
        if status == 200:
            kept = sorted((set(kept) - {f"{folder}/{updated['cover']}"}) | {f"{folder}/{answer.json()['cover']}"})
    too_many = httpx.patch(f"{url}/chosenid0000001", timeout=30,
                           files=[("files+", (f"g{i}.png", PNG, "image/png")) for i in range(3)])
    assert too_many.status_code == 400 and "files" in too_many.json()["data"], too_many.text
    gone = sorted(gone + [f"{folder}/{updated['cover']}"])  # replaced by the allowed update above
    assert _settled(storage, sorted(kept + gone)) == sorted(kept + gone), "a refused or invalid update leaves no file"
    assert _noted(deleted, gone) == gone, "nor a note"
    assert _empty_directories(storage) == [], "nor a directory for the missing record"


@pytest.fixture
def tenant(tmp_path: Path) -> Iterator[Tenant]:
    filesystem.configure(LocalObjectStore(tmp_path / "store"), retention_seconds=60.0)
    opened = Tenant.open("crashy", tmp_path / "crashy", create=True)
    collections.create_collection(opened.conn, {"name": "docs", "type": "base", "createRule": "", "updateRule": "",
                                                "fields": [{"name": "files", "type": "file", "maxSelect": 2}]})
    opened.reload_collections()
    try:
        yield opened
    finally:
        opened.close()
        filesystem.configure(None)


BOUNDARY = "b0undary"
BODY = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"x.png\"\r\n"
        f"Content-Type: image/png\r\n\r\n").encode() + PNG + f"\r\n--{BOUNDARY}--\r\n".encode()


class _Scope:
    proto, authority, client = "http", None, "127.0.0.1:1"

    def __init__(self, method: str = "POST", path: str = "/api/collections/docs/records") -> None:
        self.method, self.path, self.query_string = method, path, ""
        self.headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}",
                        "content-length": str(len(BODY))}


class _Proto:
    def __init__(self) -> None:
        self.status, self.body = 0, b""

    async def __call__(self) -> bytes:
        return BODY

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.body = status, body

    def response_str(self, status: int, headers: list[tuple[str, str]], body: str) -> None:
        self.response_bytes(status, headers, body.encode())

    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.response_bytes(status, headers, b"")



async def _inline(work: Any) -> None:
    work()


def _handle(tenant: Tenant, path: str, scope: _Scope) -> _Proto:
    """The request answered in process, its database work run inline (no scheduler)."""
    proto = _Proto()
    asyncio.run(TenantApi().handle(tenant, path, scope, proto, run=_inline))  # type: ignore[arg-type]
    return proto

def test_the_turn_writes_no_file_of_its_own(tenant: Tenant, tmp_path: Path) -> None:
    """The record takes the id and the name its upload was written under before the turn."""
    files = files_of(tenant)
    created: list[str] = []
    create, create_many = files.create, files.create_many

    def counted(path: str, data: bytes) -> None:
        created.append(path)
        create(path, data)

    def counted_many(items: list[tuple[str, bytes]], append: tuple[str, bytes] | None = None) -> None:
        created.extend(path for path, _ in items)
        create_many(items, append)

    files.create, files.create_many = counted, counted_many  # type: ignore[method-assign]

    proto = _handle(tenant, "/api/collections/docs/records", _Scope())
    assert proto.status == 200, proto.body
    record = orjson.loads(proto.body)
    assert created == [f"{record['collectionId']}/{record['id']}/{record['files'][0]}"], "written once, before the turn"
    filesystem.wait_for_deletes()
    store = tmp_path / "store" / "tenants" / "crashy"
    assert _stored(store / "storage") == created and _noted(store / "deleted", []) == []


def test_an_update_written_early_replaces_its_file_after_the_commit(tenant: Tenant, tmp_path: Path) -> None:
    """An update's upload is written before its turn too (the turn writes nothing), and the file its new value
    replaces goes once the update committed."""
    files = files_of(tenant)
    in_turn: list[str] = []
    create = files.create

    def counted(path: str, data: bytes) -> None:
        in_turn.append(path)
        create(path, data)

    files.create = counted  # type: ignore[method-assign]

    made = _handle(tenant, "/api/collections/docs/records", _Scope())
    assert made.status == 200, made.body
    record = orjson.loads(made.body)
    path = f"/api/collections/docs/records/{record['id']}"
    changed = _handle(tenant, path, _Scope("PATCH", path))
    assert changed.status == 200, changed.body
    updated = orjson.loads(changed.body)
    assert in_turn == [], "written before the turns"
    assert len(updated["files"]) == 1 and updated["files"] != record["files"]
    filesystem.wait_for_deletes()
    store = tmp_path / "store" / "tenants" / "crashy"
    folder = f"{record['collectionId']}/{record['id']}"
    replaced, new = f"{folder}/{record['files'][0]}", f"{folder}/{updated['files'][0]}"
    assert _stored(store / "storage") == sorted([replaced, new]), "the replaced file is kept for the retention"
    assert _noted(store / "deleted", [replaced]) == [replaced], "... and noted to be deleted then"
    assert files.stored_bytes == 2 * len(PNG), "each counted once"


def test_a_crash_before_the_commit_leaves_files_the_sweep_removes(tenant: Tenant, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upload_journal, "RESERVED_IDS", 0)  # the file's own line (reserved ids: the test below)
    request = TenantRequest(_Scope(), None,  # type: ignore[arg-type]
                            "/api/collections/docs/records", {"collection": "docs"}, tenant)
    request.raw_body = BODY
    early = plan_early(request)
    assert early is not None
    assert asyncio.run(write_early(early))  # ... and the node dies before the record's turn: no release, no commit
    store = tmp_path / "store" / "tenants" / "crashy"
    assert len(_stored(store / "storage")) == 1
    assert len(_stored(store / "deleted")) == 1, "the files are noted before they are written"

    assert sweep_deleted(tenant) == 0, "not due yet: the request may still commit"
    assert sweep_deleted(tenant, now=time.time() + NOTE_DUE_SECONDS + ROLL_SECONDS + 1) == 1
    assert _stored(store / "storage") == [] and _stored(store / "deleted") == []
    assert files_of(tenant).stored_bytes == 0


def test_an_early_upload_counts_once_against_the_storage_quota(tenant: Tenant) -> None:
    """Files written before the turn are in the tenant's stored bytes already: the turn's quota check must not
    count them a second time (a create that fits the quota is not refused 403)."""
    tenant.max_bytes = tenant.size_bytes() + len(PNG) + len(PNG) // 2  # room for the upload, not for it twice

    proto = _handle(tenant, "/api/collections/docs/records", _Scope())
    assert proto.status == 200, proto.body
    assert len(orjson.loads(proto.body)["files"]) == 1


def test_a_rate_limited_create_writes_nothing(tenant: Tenant, tmp_path: Path) -> None:
    """PocketBase's rate limit refuses a create before its handler writes a file: the early write waits for the
    rate limit check (a refused client costs no write, fsync and delete), and the answer is PocketBase's 429."""
    from pbfast.pocketbase import app_settings  # noqa: PLC0415

    def rate_limits(enabled: bool) -> None:
        rule = {"label": "POST /api/collections/docs/records", "maxRequests": 1, "duration": 60, "audience": ""}
        document = app_settings.merge_patch(app_settings.load_document(tenant.conn),
                                            {"rateLimits": {"enabled": enabled, "rules": [rule]}})
        app_settings.save_document(tenant.conn, document)
        app_settings.notify_saved(tenant, app_settings.load_settings(tenant.conn))  # as the settings API does

    rate_limits(True)
    try:
        _two_creates_one_refused(tenant, tmp_path)
    finally:
        rate_limits(False)  # the settings this process keeps for the tenant id of the next tests


def _two_creates_one_refused(tenant: Tenant, tmp_path: Path) -> None:
    files = files_of(tenant)
    written: list[str] = []
    create_many = files.create_many

    def counted_many(items: list[tuple[str, bytes]], append: tuple[str, bytes] | None = None) -> None:
        written.extend(path for path, _ in items)
        create_many(items, append)

    files.create_many = counted_many  # type: ignore[method-assign]

    api = TenantApi()  # one rate limiter for both
    first, refused = _Proto(), _Proto()
    for proto in (first, refused):
        asyncio.run(api.handle(tenant, "/api/collections/docs/records", _Scope(), proto,  # type: ignore[arg-type]
                               run=_inline))
    assert first.status == 200, first.body
    assert (refused.status, orjson.loads(refused.body)["message"]) == (429, "Too Many Requests."), refused.body
    record = orjson.loads(first.body)
    assert written == [f"{record['collectionId']}/{record['id']}/{record['files'][0]}"], "the refused one wrote nothing"
    filesystem.wait_for_deletes()
    assert _stored(tmp_path / "store" / "tenants" / "crashy" / "storage") == written


def test_a_create_with_a_password_keeps_its_files(pbfast_process: object, tmp_path: Path) -> None:
    """A collection with a password field: its create hashes the password off the turn and runs the turn again;
    the file it uploads is stored under the record and served (not written early and dropped by the first run)."""
    _, _, gw, token = all_in_one_with_owner(pbfast_process, tmp_path / "node", "pw", OWNER)
    base = f"{gw}/t/pw"
    made = httpx.post(f"{base}/api/collections", headers={"Authorization": token}, timeout=30, json={
        "name": "vault", "type": "base", "listRule": "", "viewRule": "", "createRule": "",
        "fields": [{"name": "secret", "type": "password"}, {"name": "doc", "type": "file", "maxSelect": 1}]})
    assert made.status_code == 200, made.text
    created = httpx.post(f"{base}/api/collections/vault/records", data={"secret": "a-long-secret-1"}, timeout=30,
                         files=[("doc", ("a.png", PNG, "image/png"))])
    assert created.status_code == 200, created.text
    record = created.json()
    time.sleep(0.5)  # a dropped file is deleted in the background
    served = httpx.get(f"{base}/api/files/vault/{record['id']}/{record['doc']}", timeout=30)
    assert (served.status_code, served.content) == (200, PNG)


def test_emptied_record_directories_go_without_failing_a_concurrent_upload_there(tmp_path: Path) -> None:
    """Race-free: one thread keeps removing a record's directory whenever it is empty (as a refused upload's
    delete does) while others create files in it through every kind of write (the early writers' batch, an
    in-turn create, a thumb's write) and delete them: no write fails, and nothing but empty directories went."""
    import threading  # noqa: PLC0415

    store = LocalObjectStore(tmp_path / "store")
    files = filesystem.TenantFiles(store, "", None)
    stop = threading.Event()
    failures: list[BaseException] = []
    removals = [0]

    def remover() -> None:  # far more often than refused uploads come, yet not a tight loop that always wins
        while not stop.wait(0.0005):
            files.remove_empty_directories(["coll/rec/x.png"])
            removals[0] += 1

    def writer(index: int) -> None:
        try:
            for round_ in range(150):
                name = f"coll/rec/{index}-{round_}"
                if index == 0:
                    files.create_many([(name + "-a.png", PNG), (name + "-b.png", PNG)])
                    paths = [name + "-a.png", name + "-b.png"]
                elif index == 1:
                    files.create(name + ".png", PNG)
                    paths = [name + ".png"]
                else:
                    files.write(name + ".png", PNG)
                    paths = [name + ".png"]
                for path in paths:
                    assert files.read(path) is not None
                    files.delete(path)
        except BaseException as err:  # noqa: BLE001 - reported below
            failures.append(err)

    threads = [threading.Thread(target=writer, args=(index,)) for index in range(3)]
    cleaner = threading.Thread(target=remover)
    cleaner.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    stop.set()
    cleaner.join(10)
    assert failures == [] and removals[0] > 0
    files.remove_empty_directories(["coll/rec/x.png"])
    assert list((tmp_path / "store").iterdir()) == []


def _written_early(tenant: Tenant) -> Any:
    """A create's upload written before its turn, and the request then left hanging (neither released nor
    committed): the state a crash leaves, or one a later release settles."""
    request = TenantRequest(_Scope(), None,  # type: ignore[arg-type]
                            "/api/collections/docs/records", {"collection": "docs"}, tenant)
    request.raw_body = BODY
    early = plan_early(request)
    assert early is not None and asyncio.run(write_early(early))
    return early


def _journal(deleted: Path, lines: int) -> tuple[str, list[list[str]]]:
    """The one journal file in ``deleted/`` and its lines once it has ``lines`` of them (bounded wait: it is
    emptied by a writer thread)."""
    deadline = time.monotonic() + 30
    while True:
        names = _stored(deleted)
        found = [orjson.loads(line) for line in (deleted / names[0]).read_bytes().splitlines()] if names else []
        if (len(names) == 1 and len(found) == lines) or time.monotonic() > deadline:
            assert len(names) == 1 and names[0].startswith("pending-") and names[0].endswith(".jsonl"), names
            return names[0], found
        time.sleep(0.02)


def test_one_journal_names_the_pending_uploads_of_many_batches(tenant: Tenant, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """On the local store each batch of early uploads appends a line to the tenant's journal (one fdatasync, no
    note file made and deleted per batch); it is emptied once its requests are done, a new one starts after
    ROLL_SECONDS (the old one goes once its requests are done), and after a crash the sweep deletes the files of
    the lines left once due, a last line torn by the crash ignored."""
    monkeypatch.setattr(upload_journal, "RESERVED_IDS", 0)  # every batch's own line (reserved ids: the test below)
    deleted = tmp_path / "store" / "tenants" / "crashy" / "deleted"
    storage = tmp_path / "store" / "tenants" / "crashy" / "storage"
    first, second = _written_early(tenant), _written_early(tenant)
    name, lines = _journal(deleted, 2)
    assert lines == [[first.path(n.name) for _, n in first.named.values()],
                     [second.path(n.name) for _, n in second.named.values()]]
    first.release()
    second.release()  # refused, say: their files go, and the journal names nothing any more
    assert _journal(deleted, 0) == (name, [])
    assert _settled(storage, []) == []

    third = _written_early(tenant)
    assert _journal(deleted, 1)[0] == name, "the same journal, no new note"
    assert isinstance(third.note, Generation)
    third.note.created -= ROLL_SECONDS  # its minute is over: the next batch starts a new generation
    fourth = _written_early(tenant)
    names = _stored(deleted)
    assert len(names) == 2 and name in names, "the old one stays while a request it names is pending"
    third.release()
    _, lines = _journal(deleted, 1)
    assert lines == [[fourth.path(n.name) for _, n in fourth.named.values()]]

    # a create commits while fourth is pending (so its line stays), then the node dies with fourth never committed
    # and a line torn while it was being appended
    committed = _handle(tenant, "/api/collections/docs/records", _Scope())
    assert committed.status == 200, committed.body
    record = orjson.loads(committed.body)
    kept = f"{record['collectionId']}/{record['id']}/{record['files'][0]}"
    filesystem.wait_for_deletes()
    name, lines = _journal(deleted, 2)
    assert lines[1] == [kept]
    (deleted / name).write_bytes((deleted / name).read_bytes() + b'["docs/torn')
    assert sweep_deleted(tenant, now=time.time() + NOTE_DUE_SECONDS) == 0, "not due before its minute and hour"
    assert sweep_deleted(tenant, now=time.time() + NOTE_DUE_SECONDS + ROLL_SECONDS + 1) == 1
    assert _stored(storage) == [kept], "the committed record's file stays, the pending one goes"
    assert _stored(deleted) == []


def test_a_create_takes_an_id_the_journal_reserved(tenant: Tenant, tmp_path: Path) -> None:
    """A create that sends no id takes one the journal named ahead (its record directory, in a line of reserved
    ids written on a writer thread after the first such create): its batch appends no line of its own. After a
    crash the sweep removes, once due, the pending create's files and leaves the committed record's."""
    deleted = tmp_path / "store" / "tenants" / "crashy" / "deleted"
    storage = tmp_path / "store" / "tenants" / "crashy" / "storage"
    committed = _handle(tenant, "/api/collections/docs/records", _Scope())  # no reservation yet: drawn, and one made
    assert committed.status == 200, committed.body
    record = orjson.loads(committed.body)
    kept = f"{record['collectionId']}/{record['id']}/{record['files'][0]}"
    journal = upload_journal.journal_of(files_of(tenant), lambda work: None)  # the tenant's, made by the create
    assert journal is not None
    deadline = time.monotonic() + 30
    while journal.reserved(record["collectionId"]) < RESERVED_IDS and time.monotonic() < deadline:
        time.sleep(0.02)  # reserved on a writer thread after the create
    reserved = [path for name in _stored(deleted) for line in (deleted / name).read_bytes().splitlines()
                for path in orjson.loads(line) if path.endswith("/")]
    assert len(reserved) == RESERVED_IDS and all(path.startswith(record["collectionId"] + "/") for path in reserved)
    journal_before = [(deleted / name).read_bytes() for name in _stored(deleted)]

    pending = _written_early(tenant)  # ... and the node dies before its turn
    assert pending.in_journal and f"{pending.collection_id}/{pending.record_id}/" in reserved
    assert [(deleted / name).read_bytes() for name in _stored(deleted)] == journal_before, "no line of its own"
    assert len(_stored(storage)) == 2

    filesystem.wait_for_deletes()
    swept = sweep_deleted(tenant, now=time.time() + NOTE_DUE_SECONDS + ROLL_SECONDS + 1)
    assert swept == RESERVED_IDS, "the directories of the reserved ids no record took, the pending one's included"
    assert _stored(storage) == [kept] and _stored(deleted) == []


def _superuser_token(tenant: Tenant) -> str:
    from pbfast.pocketbase import auth  # noqa: PLC0415
    from pbfast.tenant_node.superusers import upsert_superuser  # noqa: PLC0415

    upsert_superuser(tenant, "root@crashy.test", "$2a$04$" + "x" * 53)  # a hash: no login needed, only a token
    superusers = tenant.collection("_superusers")
    assert superusers is not None
    record_id, token_key = tenant.conn.execute("SELECT id, tokenKey FROM _superusers").fetchone()
    return auth.issue_auth_token(record_id, token_key, superusers.id, superusers.auth.auth_token.secret, 3600)


def test_a_create_its_rule_refuses_before_the_turn_writes_nothing(tenant: Tenant, tmp_path: Path) -> None:
    """A multipart create that its collection's create rule refuses whoever turns out to be asking, known before
    the turn (a guest where the rule needs an auth record; a rule of headers and method only; a null rule for
    anyone but a superuser), writes no file and no note (no write, fsync and delete for a refused client) and
    gets PocketBase's answer from the turn; one the rule lets through is still written before its turn."""
    from pbfast.pocketbase import auth  # noqa: PLC0415

    for name, rule in (("members", "@request.auth.id != ''"), ("closed", None),
                       ("keyed", "@request.headers.x_key = 'k1' && @request.method = 'POST'")):
        collections.create_collection(tenant.conn, {"name": name, "type": "base", "createRule": rule,
                                                    "fields": [{"name": "files", "type": "file", "maxSelect": 2}]})
    tenant.reload_collections()
    users = tenant.collection("users")
    assert users is not None
    a_users_token = auth.issue_auth_token("nobody", "key", users.id, "secret", 3600)  # its record is read in the turn
    store = files_of(tenant).store
    written: list[str] = []  # every object stored, as "how: key"

    def counting(how: str) -> Any:
        write = getattr(store, how)

        def counted(*args: Any, **kwargs: Any) -> None:
            for arg in args:  # a key, or a list of (key, bytes)
                keys = [arg] if isinstance(arg, str) else [key for key, _ in arg] if isinstance(arg, list) else []
                written.extend(f"{how}: {key}" for key in keys)
            write(*args, **kwargs)
        return counted

    for how in ("create", "create_many", "append_then_create_many"):  # every way (the turn's own uploads: create)
        setattr(store, how, counting(how))

    def create(collection: str, headers: dict[str, str]) -> _Proto:
        path = f"/api/collections/{collection}/records"
        scope = _Scope(path=path)
        scope.headers.update(headers)
        return _handle(tenant, path, scope)

    refused = [("members", {}, 400, "Failed to create record."),
               ("keyed", {}, 400, "Failed to create record."),
               ("keyed", {"x-key": "k2"}, 400, "Failed to create record."),
               ("keyed", {"x-key": "k1", "authorization": a_users_token}, None, None),  # auth is not read: allowed
               ("closed", {}, 403, "Only superusers can perform this action."),
               ("closed", {"authorization": a_users_token}, 403, "Only superusers can perform this action.")]
    for collection, headers, status, message in refused:
        proto = create(collection, headers)
        if status is None:
            assert proto.status == 200 and written, (collection, proto.body)
            written.clear()
            continue
        assert (proto.status, orjson.loads(proto.body)) == (status, {"status": status, "message": message, "data": {}})
        assert written == [], (collection, headers, "written before the turn refused it")

    for collection, headers in (("keyed", {"x-key": "k1"}), ("closed", {"authorization": _superuser_token(tenant)})):
        proto = create(collection, headers)
        assert proto.status == 200, proto.body
        record = orjson.loads(proto.body)
        path = f"tenants/crashy/storage/{record['collectionId']}/{record['id']}/{record['files'][0]}"
        assert [entry for entry in written if entry.endswith(path)] in ([f"create_many: {path}"],
                                                                        [f"append_then_create_many: {path}"]), written
        written.clear()
