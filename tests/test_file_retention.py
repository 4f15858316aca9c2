"""Deleted files are kept for the restore window (issue 15, item 4): a committed delete is only noted in the
store; once due, the sweep deletes what no record references — a file a restored record references again is
kept. Real SQLite tenant, real local object store, the code paths the node runs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbfast.pocketbase import collections, filesystem, records
from pbfast.pocketbase.filesystem import FileChanges, LocalObjectStore, files_of
from pbfast.pocketbase.filesystem.retention import sweep_deleted
from pbfast.pocketbase.tenant import Tenant

RETENTION = 3600.0


@pytest.fixture
def tenant(tmp_path: Path) -> Iterator[Tenant]:
    filesystem.configure(LocalObjectStore(tmp_path / "store"), retention_seconds=RETENTION)
    opened = Tenant.open("kept", tmp_path / "kept", create=True)
    collections.create_collection(opened.conn, {"name": "docs", "type": "base", "fields": [
        {"name": "title", "type": "text"}, {"name": "attachment", "type": "file", "maxSelect": 1}]})
    opened.reload_collections()
    try:
        yield opened
    finally:
        opened.close()
        filesystem.configure(None)


def test_deletes_wait_for_the_window_and_spare_referenced_files(tenant: Tenant, tmp_path: Path) -> None:
    docs = tenant.collection("docs")
    assert docs is not None
    files = files_of(tenant)
    for record_id, name in (("restoredrecord1", "a_0123456789.txt"), ("goneforgood0001", "b_0123456789.txt")):
        files.write(f"{docs.id}/{record_id}/{name}", b"content")
    tenant.conn.execute('INSERT INTO docs (id, title, attachment) VALUES (?, ?, ?)',
                        ("restoredrecord1", "back", "a_0123456789.txt"))  # as a restore to before the delete
    changes = FileChanges()
    changes.obsolete += [(files, f"{docs.id}/restoredrecord1/"), (files, f"{docs.id}/goneforgood0001/")]
    changes.committed()
    filesystem.wait_for_deletes()
    store = tmp_path / "store" / "tenants" / "kept"
    assert len(list((store / "deleted").iterdir())) == 1, "the delete is noted"
    assert sorted(p.name for p in (store / "storage").rglob("*.txt")) == ["a_0123456789.txt", "b_0123456789.txt"]

    assert sweep_deleted(tenant) == 0, "not due yet"
    assert sweep_deleted(tenant, now=time.time() + RETENTION + 1) == 1
    assert sorted(p.name for p in (store / "storage").rglob("*.txt")) == ["a_0123456789.txt"]
    assert list((store / "deleted").iterdir()) == []
    assert records.load_row(tenant, docs, "restoredrecord1") is not None


def test_a_rolled_back_upload_goes_at_once(tenant: Tenant, tmp_path: Path) -> None:
    files = files_of(tenant)
    files.write("c0llection0000/record000000001/up_0123456789.txt", b"x")
    changes = FileChanges()
    changes.uploaded.append((files, "c0llection0000/record000000001/up_0123456789.txt"))
    changes.rolled_back()
    filesystem.wait_for_deletes()
    assert not list((tmp_path / "store" / "tenants" / "kept" / "storage").rglob("*.txt"))
