"""A tenant's backup zip as PocketBase makes one (``core/backup_create.go``): ``data.db`` and
``auxiliary.db`` at the root, each a consistent snapshot (SQLite's online backup, so the file is complete on
its own), deflated. And the way back: a zip (made here or by stock PocketBase, uploaded) checked entry by
entry before anything of it is used, and its ``data.db`` written into the tenant's live database.

The restore goes through the tenant's own connection with SQLite's backup API: every page of the database
is replaced in one write transaction, so the change goes through the WAL like any write (Litestream ships
it; the node's worker processes see it at their next read, and reload the collections because the schema
version moves on). Nothing is renamed or reopened, so the tenant needs no fencing or reopening: the
database simply holds the backup's content from the next request on. ``auxiliary.db`` (the request logs) is
not restored: logs are disposable (see docs/logs-backups.md).

A zip is refused as a whole when any entry is absolute, climbs out (``..``), is a symbolic link, is not a
plain file or directory, or when there are too many entries or their sizes exceed the limits (counted while
reading, not trusted from the headers). Only ``data.db`` is ever read out of it.
"""

from __future__ import annotations

import os
import re
import stat
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Final

import apsw

from pbfast.pocketbase.collections.version import schema_version
from pbfast.pocketbase.filesystem import STORAGE_DIR, StorageError, TenantFiles
from pbfast.pocketbase.request_logs import AUXILIARY_DB
from pbfast.pocketbase.sqlite_guard import harden
from pbfast.pocketbase.tenant import DATA_DB, backup_database, check_pocketbase_database

if TYPE_CHECKING:
    from pbfast.pocketbase.tenant import Tenant

__all__ = ["ArchiveError", "RestoreLimits", "check_archive", "create_archive", "default_backup_name",
           "restore_archive"]

_MAX_VERSION: Final = (1 << 31) - 1
_CHUNK: Final = 1 << 20


class ArchiveError(ValueError):
    """The zip cannot be restored (the message says why)."""


@dataclass(frozen=True, slots=True)
class RestoreLimits:
    max_entries: int = 100_000
    max_total_bytes: int = 8 << 30  # all entries, uncompressed
    max_database_bytes: int = 4 << 30  # data.db, uncompressed


_SPLIT: Final = re.compile(r"[\W_]+")


def _snakecase(text: str) -> str:
    """PocketBase's ``inflector.Snakecase``."""
    result: list[str] = []
    for word in _SPLIT.split(text):
        if not word:
            continue
        if result:
            result.append("_")
        for index, char in enumerate(word):
            if char.isupper() and index > 0 and not word[index - 1].isupper():
                result.append("_")
            result.append(char)
    return "".join(result).lower()


def default_backup_name(app_name: str, prefix: str = "pb_backup_", at: float | None = None) -> str:
    """PocketBase's name for a backup without one: ``pb_backup_<app name>_<UTC time>.zip`` (time ``at``, Unix
    seconds, else now)."""
    return f"{prefix}{_snakecase(app_name)[:50]}_{time.strftime('%Y%m%d%H%M%S', time.gmtime(at))}.zip"


def create_archive(tenant: Tenant, target: Path, scratch: Path, files: TenantFiles | None = None) -> None:
    """Write the tenant's backup zip to ``target`` (``scratch``: an empty directory for the snapshots), with
    the tenant's ``files`` under ``storage/`` (thumbs included, as PocketBase's zip has them)."""
    data_copy = scratch / DATA_DB
    backup_database(tenant.directory / DATA_DB, data_copy)
    members = [(data_copy, DATA_DB)]
    aux = tenant.directory / AUXILIARY_DB
    if aux.exists():
        aux_copy = scratch / AUXILIARY_DB
        backup_database(aux, aux_copy)
        members.append((aux_copy, AUXILIARY_DB))
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for path, name in members:
            archive.write(path, name)
        if files is not None:
            for stored in files.paths():
                found = files.read(stored)
                if found is not None:  # deleted meanwhile: the database snapshot may still name it
                    archive.writestr(f"{STORAGE_DIR}/{stored}", found.data)


def _entry_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if not name or "\x00" in name or "\\" in name:
        return "an entry with an invalid name"
    path = PurePosixPath(name)
    if path.is_absolute() or re.match(r"^[A-Za-z]:", name):
        return f"an absolute entry ({name!r})"
    if any(part == ".." for part in path.parts):
        return f"an entry outside the archive ({name!r})"
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        return f"a symbolic link ({name!r})"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return f"an entry that is not a plain file ({name!r})"
    return None


def check_archive(archive: zipfile.ZipFile, limits: RestoreLimits) -> zipfile.ZipInfo:
    """The archive's ``data.db`` entry, once every entry passed the checks (raises :class:`ArchiveError`)."""
    entries = archive.infolist()
    if len(entries) > limits.max_entries:
        raise ArchiveError(f"the archive has more than {limits.max_entries} entries")
    total, database = 0, None
    for info in entries:
        problem = _entry_problem(info)
        if problem:
            raise ArchiveError(f"the archive has {problem}")
        total += info.file_size
        if total > limits.max_total_bytes:
            raise ArchiveError("the archive's content is larger than allowed")
        if PurePosixPath(info.filename).as_posix() == DATA_DB and not info.is_dir():
            database = info
    if database is None:
        raise ArchiveError("the archive has no data.db")
    if database.file_size > limits.max_database_bytes:
        raise ArchiveError("the archive's data.db is larger than allowed")
    return database


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, limit: int) -> None:
    """Copy one entry out, counting what is really read (the header's size is not trusted)."""
    written = 0
    with archive.open(info) as source, open(target, "xb") as out:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            if written > limit:
                raise ArchiveError("the archive's data.db is larger than allowed")
            out.write(chunk)


def restore_archive(tenant: Tenant, zip_path: Path, scratch: Path, limits: RestoreLimits = RestoreLimits(),
                    files: TenantFiles | None = None) -> None:
    """Replace the tenant's database with the backup's ``data.db`` (raises :class:`ArchiveError` when the zip
    or its database is unusable; the database is then unchanged). With ``files``, the backup's ``storage/``
    files are written to the tenant's files first (so the restored records find them); files the backup does
    not have are left where they are (a point-in-time restore to before this restore still finds them)."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            entry = check_archive(archive, limits)
            extracted = scratch / DATA_DB
            _extract(archive, entry, extracted, limits.max_database_bytes)
            if files is not None:
                _restore_files(archive, files)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as err:
        raise ArchiveError(f"not a usable zip archive: {err}") from err
    except StorageError as err:
        raise ArchiveError(f"the backup's files could not be stored: {err}") from err
    _prepare(extracted, int(tenant.conn.execute("PRAGMA page_size").get))
    problem = check_pocketbase_database(extracted)
    if problem:
        raise ArchiveError(f"the archive's data.db is not a usable PocketBase database: {problem}")
    source = apsw.Connection(str(extracted), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        harden(source)
        before = schema_version(tenant.conn)
        with tenant.conn.backup("main", source, "main") as backup:
            backup.step(-1)
    finally:
        source.close()
    # Other connections (worker processes) notice the new collections by the version moving on.
    restored = schema_version(tenant.conn)
    tenant.conn.execute(f"PRAGMA user_version = {max(before, restored) % _MAX_VERSION + 1}")
    tenant.reload_collections()


def _restore_files(archive: zipfile.ZipFile, files: TenantFiles) -> None:
    prefix = STORAGE_DIR + "/"
    for info in archive.infolist():  # every entry already passed check_archive
        # PocketBase's local file store keeps ``.attrs`` metadata beside each file: not files of the tenant.
        if info.filename.startswith(prefix) and not info.is_dir() and len(info.filename) > len(prefix) \
                and not info.filename.endswith(".attrs"):
            files.write(info.filename[len(prefix):], archive.read(info))  # bounded by its header's size


def _prepare(path: Path, page_size: int) -> None:
    """The extracted database as a single rollback-journal file with the tenant's page size (SQLite copies
    into a WAL database only between equal page sizes)."""
    conn = apsw.Connection(str(path))  # not hardened: VACUUM is refused there; neither runs the file's SQL
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
        if int(conn.execute("PRAGMA page_size").get) != page_size:
            conn.execute(f"PRAGMA page_size = {int(page_size)}")
            conn.execute("VACUUM")
    except apsw.Error as err:
        raise ArchiveError(f"the archive's data.db cannot be read: {err}") from err
    finally:
        conn.close()
    for suffix in ("-wal", "-shm"):
        try:
            os.unlink(f"{path}{suffix}")
        except FileNotFoundError:
            pass
