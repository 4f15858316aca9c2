"""An upload's store write (``ObjectStore.create``, issue 15's upload performance): a new key is written in
place with its directories made, a key in use is refused without touching the file there, and nothing is
left behind by a refused create. Real local object store on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbfast.pocketbase.filesystem import LocalObjectStore, StorageError


def test_create_makes_the_directories_and_stores_the_bytes(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    data = bytes(range(256)) * 400
    store.create("tenants/t1/storage/col/rec/photo_0123456789.png", data)
    found = store.read("tenants/t1/storage/col/rec/photo_0123456789.png")
    assert found is not None and found.data == data
    assert store.keys("tenants/t1/storage") == ["tenants/t1/storage/col/rec/photo_0123456789.png"]
    assert [p.name for p in (tmp_path / "store" / "tenants/t1/storage/col/rec").iterdir()] == ["photo_0123456789.png"]


def test_create_refuses_a_key_in_use_and_keeps_its_file(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    store.write("col/rec/a_0123456789.txt", b"first")
    with pytest.raises(StorageError):
        store.create("col/rec/a_0123456789.txt", b"second")
    found = store.read("col/rec/a_0123456789.txt")
    assert found is not None and found.data == b"first"
    with pytest.raises(StorageError):  # a file where a directory must go: refused, nothing made
        store.create("col/rec/a_0123456789.txt/b.txt", b"x")
    assert sorted(p.name for p in (tmp_path / "store" / "col" / "rec").iterdir()) == ["a_0123456789.txt"]


def test_create_refuses_keys_outside_the_store(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    for key in ("../escape.txt", "col/../../escape.txt", "/abs.txt", ""):
        with pytest.raises(StorageError):
            store.create(key, b"x")
    assert not (tmp_path / "escape.txt").exists()


def test_create_many_stores_all_or_nothing(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    data = bytes(range(256)) * 400
    store.create_many([("col/r1/a_0123456789.png", data), ("col/r2/b_0123456789.png", b"two")])
    found = store.read("col/r1/a_0123456789.png")
    assert found is not None and found.data == data
    assert store.keys("col") == ["col/r1/a_0123456789.png", "col/r2/b_0123456789.png"]
    with pytest.raises(StorageError):  # the second is in use: the first, written, goes again
        store.create_many([("col/r3/c_0123456789.png", b"three"), ("col/r2/b_0123456789.png", b"other")])
    assert store.keys("col") == ["col/r1/a_0123456789.png", "col/r2/b_0123456789.png"]
    found = store.read("col/r2/b_0123456789.png")
    assert found is not None and found.data == b"two"
    with pytest.raises(StorageError):
        store.create_many([("../escape.txt", b"x")])
