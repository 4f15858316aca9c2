"""A tenant's data as a PocketBase data dir in one tar stream, for import and export: ``data.db`` and the
files under ``storage/`` (PocketBase's layout). A plain ``data.db`` upload stays accepted.

Unpacking takes regular files only, ``data.db`` and ``storage/<plain relative path>`` (no ``..``, no absolute
path, no link): anything else in the archive is skipped, so an archive cannot write outside its target.

Thread-safety: blocking calls, run on worker threads.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Final

from pbfast.pocketbase.filesystem import LocalObjectStore, StorageError, TenantFiles
from pbfast.pocketbase.filesystem.store import check_key

__all__ = ["ARCHIVE_TYPE", "is_archive", "pack", "unpack"]

ARCHIVE_TYPE: Final = "application/x-tar"
SQLITE_MAGIC: Final = b"SQLite format 3\x00"
STORAGE: Final = "storage/"


def is_archive(path: Path) -> bool:
    """Whether an upload is a tar archive (not a bare SQLite database)."""
    with open(path, "rb") as handle:
        if handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC:
            return False
    return tarfile.is_tarfile(path)


def unpack(archive: Path, db_target: Path, storage_dir: Path) -> int:
    """Write the archive's ``data.db`` to ``db_target`` and its ``storage/`` files below ``storage_dir``;
    returns the files written. Raises :class:`ValueError` for an archive without ``data.db``."""
    store = LocalObjectStore(storage_dir)
    found_db = False
    written = 0
    with tarfile.open(archive, "r:") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if not member.isfile():
                continue
            if name == "data.db":
                source = tar.extractfile(member)
                assert source is not None
                with open(db_target, "wb") as out:
                    while chunk := source.read(1 << 20):
                        out.write(chunk)
                found_db = True
            elif name.startswith(STORAGE):
                try:
                    key = check_key(name[len(STORAGE):])
                except StorageError:
                    continue
                source = tar.extractfile(member)
                assert source is not None
                store.write(key, source.read())
                written += 1
    if not found_db:
        raise ValueError("the archive holds no data.db")
    return written


def pack(db_snapshot: Path, files: TenantFiles, target: Path) -> int:
    """A tar of ``db_snapshot`` as ``data.db`` and every file of the tenant under ``storage/``; returns the
    files packed."""
    packed = 0
    with tarfile.open(target, "w:") as tar:
        tar.add(db_snapshot, arcname="data.db")
        for path in files.paths():
            stored = files.read(path)
            if stored is None:
                continue  # deleted meanwhile
            info = tarfile.TarInfo(STORAGE + path)
            info.size, info.mtime = len(stored.data), int(stored.modified)
            tar.addfile(info, io.BytesIO(stored.data))
            packed += 1
    return packed
