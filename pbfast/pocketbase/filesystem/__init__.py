"""Tenants' files (PocketBase's ``pb_data/storage``): where they live, how they are read through the node's
cache, and the writes and deletes a record save or delete leaves to do once its transaction ends.

Layout: PocketBase's own under ``storage/`` — ``{collectionId}/{recordId}/{filename}``, thumbs in
``{collectionId}/{recordId}/thumbs_{filename}/{size}_{filename}`` — below the tenant's prefix in the
object store the node is configured with (:func:`configure`): ``tenants/{id}/storage/`` in the replica
bucket or the local replica directory. Files are not tied to an incarnation: a point-in-time restore (a new
incarnation seeded from an earlier one) and a move find them where they are, without copying. Without a
configured store (a bare :class:`~pbfast.pocketbase.tenant.Tenant`), files live in ``<tenant dir>/storage``.

Deletes run after the transaction that made them obsolete commits (uploads of a transaction that rolls
back are deleted at once), on a small background pool: a failure is logged, the request has been answered.
A record directory (and its collection's) emptied by those deletes goes with them, as if the refused upload
had never come (:meth:`TenantFiles.remove_empty_directories`: race-free against an upload to it meanwhile).
With a retention (the node's restore window), a committed delete is only noted in the store
(``tenants/{id}/deleted/{due}-{random}.json``) and carried out once due, by :mod:`.retention` — and only
for files no record references then: a point-in-time restore within the window finds the files its
records referenced.

Thread-safety: every call blocks on disk or network; callers run them on worker threads.
"""

from __future__ import annotations

import shutil
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import orjson

from pbfast.logs import component_logger
from pbfast.pocketbase.filesystem.cache import FileCache
from pbfast.pocketbase.filesystem.names import random_suffix
from pbfast.pocketbase.filesystem.store import (LocalObjectStore, ObjectStore, S3ObjectStore, StorageError,
                                                StoredObject, check_key)

if TYPE_CHECKING:
    from pbfast.pocketbase.tenant import Tenant

__all__ = ["STORAGE_DIR", "FileChanges", "LocalObjectStore", "ObjectStore", "ServedFile", "StorageError", "StoredObject",
           "TenantFiles", "adopt_local_storage",
           "configure", "configure_from", "delete_path", "files_of", "wait_for_deletes"]

log = component_logger("Files")

STORAGE_DIR: Final = "storage"
DELETED_DIR: Final = "deleted"
ATTRS_SUFFIX: Final = ".attrs"  # PocketBase's local store keeps each file's metadata beside it
MAX_SERVED_DIRECTORIES: Final = 4096  # record directories whose downloads a tenant's files remember


@dataclass(frozen=True, slots=True)
class ServedFile:
    """A download's answer kept to be sent again from the file: the file, its size, modification time, the
    name it is served under and its (sniffed) content type."""

    path: str
    size: int
    modified: float
    name: str
    content_type: str


@dataclass(frozen=True, slots=True)
class _Config:
    store: ObjectStore
    cache: FileCache | None
    retention_seconds: float


_config: _Config | None = None
_files: weakref.WeakKeyDictionary[Tenant, TenantFiles] = weakref.WeakKeyDictionary()
_files_lock = threading.Lock()
_deleter = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pbfast-files")
_pending_deletes: set[object] = set()


def configure(store: ObjectStore | None, cache: FileCache | None = None, retention_seconds: float = 0.0) -> None:
    """Where this process keeps tenants' files (None: each tenant's own ``storage/`` directory), and how long
    deleted ones are kept."""
    global _config
    _config = _Config(store, cache, retention_seconds) if store is not None else None
    with _files_lock:
        _files.clear()


def configure_from(data_dir: Path, s3_bucket: str, s3_endpoint: str | None, cache_bytes: int,
                   retention_seconds: float = 0.0, region: str = "us-east-1", cache_name: str = "file-cache") -> None:
    """The node's files: beside its replicas (the S3 bucket with an endpoint, else ``<data-dir>/replica``),
    deleted ones kept ``retention_seconds``. Files of a bucket are read through a cache of ``cache_bytes`` in
    ``<data-dir>/<cache_name>``; the local store has none (a second copy on the same disk would only double
    the writes: the kernel's page cache is its cache)."""
    if s3_endpoint:
        configure(S3ObjectStore(s3_bucket, s3_endpoint, region),
                  FileCache(data_dir / cache_name, cache_bytes) if cache_bytes > 0 else None, retention_seconds)
    else:
        shutil.rmtree(data_dir / cache_name, ignore_errors=True)  # an earlier run's, with a bucket
        configure(LocalObjectStore(data_dir / "replica"), None, retention_seconds)


class TenantFiles:
    """One tenant's files: paths are PocketBase's (relative to ``storage/``)."""

    def __init__(self, store: ObjectStore, prefix: str, cache: FileCache | None,
                 retention_seconds: float = 0.0, deleted_prefix: str = "") -> None:
        self.store = store
        self.prefix = prefix
        self.cache = cache
        self.retention_seconds = retention_seconds
        self.deleted_prefix = deleted_prefix  # where deletes wait for their due time (with a retention)
        # Bytes of the tenant's files in the store (what its storage quota counts besides its database):
        # measured when the tenant opens and after deletes, grown by each upload meanwhile.
        self.stored_bytes = 0
        # Downloads answered from a file of the local store, by record directory then (name, thumb asked): the
        # next one is sent from the file by the server (no read into memory, no worker thread). Dropped with
        # the directory's files (deletes, writes); a tenant opened again starts empty.
        self._served: dict[str, dict[tuple[str, str], ServedFile]] = {}

    @property
    def local_root(self) -> Path | None:
        """Where the local store keeps its files (None: another store)."""
        return self.store.root if isinstance(self.store, LocalObjectStore) else None

    def served_file(self, directory: str, name: str, thumb: str) -> ServedFile | None:
        """What the last download of ``name`` (with ``thumb``) in ``directory`` answered, if still known."""
        found = self._served.get(directory)
        return found.get((name, thumb)) if found is not None else None

    def remember_served(self, directory: str, name: str, thumb: str, served: ServedFile) -> None:
        if len(self._served) >= MAX_SERVED_DIRECTORIES and directory not in self._served:
            self._served.pop(next(iter(self._served), ""), None)  # the oldest record's
        self._served.setdefault(directory, {})[(name, thumb)] = served

    def _forget_served(self, path: str) -> None:
        """Drop what is known of downloads below the record directory of ``path`` (or of every record directory
        under a collection's prefix)."""
        parts = path.split("/")
        if len(parts) >= 3 or (len(parts) == 2 and parts[1]):
            self._served.pop("/".join(parts[:2]), None)
            return
        for directory in list(self._served):
            if directory.startswith(parts[0] + "/"):
                self._served.pop(directory, None)

    def measure(self) -> int:
        """Count the bytes of the tenant's files in the store again (a listing). Raises :class:`StorageError`."""
        if self.prefix:
            self.stored_bytes = self.store.total_size(self.prefix)
        elif isinstance(self.store, LocalObjectStore):  # the tenant's own storage dir: all of it
            self.stored_bytes = _tree_size(self.store.root)
        return self.stored_bytes

    def _key(self, path: str) -> str:
        return check_key(self.prefix + path)

    def read(self, path: str) -> StoredObject | None:
        """The file at ``path`` (from the cache when there), or None. Raises :class:`StorageError`."""
        key = self._key(path)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            return hit
        found = self.store.read(key)
        if found is not None and self.cache is not None:
            self.cache.put(key, found)
        return found

    def write(self, path: str, data: bytes) -> None:
        key = self._key(path)
        self._forget_served(path)
        self.store.write(key, data)
        self.stored_bytes += len(data)
        if self.cache is not None:
            self.cache.drop(key)

    def create(self, path: str, data: bytes) -> None:
        """Store a new file under a name not in use (an upload's); see :meth:`ObjectStore.create`."""
        key = self._key(path)
        self._forget_served(path)
        self.store.create(key, data)
        self.stored_bytes += len(data)
        if self.cache is not None:
            self.cache.drop(key)

    def create_many(self, items: list[tuple[str, bytes]], append: tuple[str, bytes] | None = None) -> None:
        """:meth:`create` for several new files with one round of fsyncs (see :meth:`ObjectStore.create_many`);
        ``append`` (a store key and a line; the local store only): first appended to that existing object and made
        durable (:meth:`LocalObjectStore.append_then_create_many`)."""
        keys = []
        for path, _ in items:
            keys.append(self._key(path))
            self._forget_served(path)
        stored = [(key, data) for key, (_, data) in zip(keys, items, strict=True)]
        if append is None:
            self.store.create_many(stored)
        elif isinstance(self.store, LocalObjectStore):
            self.store.append_then_create_many(append[0], append[1], stored)
        else:
            raise StorageError("appending is for the local store only")
        self.stored_bytes += sum(len(data) for _, data in items)
        if self.cache is not None:
            for key in keys:
                self.cache.drop(key)

    def delete(self, path: str) -> None:
        """Delete a file and its thumbs."""
        key = self._key(path)
        self._forget_served(path)
        self.store.delete(key)
        directory, _, name = path.rpartition("/")
        self.delete_prefix(f"{directory}/thumbs_{name}/")
        if self.cache is not None:
            self.cache.drop(key)

    def delete_prefix(self, path: str) -> None:
        key = self._key(path.rstrip("/")) + "/"
        self._forget_served(path)
        self.store.delete_prefix(key)
        if self.cache is not None:
            self.cache.drop_prefix(key)

    def remove_empty_directories(self, paths: list[str]) -> None:
        """Remove the record directories (and then collection directories) of the files ``paths`` that are empty
        now: an upload refused after its files were written leaves none behind. Only the local store has
        directories; see :meth:`LocalObjectStore.remove_empty_directories` (race-free against a concurrent
        upload to the same record)."""
        if not isinstance(self.store, LocalObjectStore):
            return
        records = sorted({path.rsplit("/", 1)[0] for path in paths if path.count("/") == 2 and not path.endswith("/")})
        collections = sorted({record.split("/", 1)[0] for record in records})
        self.store.remove_empty_directories([self._key(directory) for directory in records + collections])

    def paths(self) -> list[str]:
        """Every file of the tenant (relative to ``storage/``; thumbs included)."""
        if self.prefix:
            return [key[len(self.prefix):] for key in self.store.keys(self.prefix)]
        root = self.store.root if isinstance(self.store, LocalObjectStore) else None
        if root is None or not root.is_dir():
            return []
        return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                      if p.is_file() and not p.name.startswith(".upload-"))


def _tree_size(root: Path) -> int:
    try:
        return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.is_dir() else 0
    except OSError as err:
        raise StorageError(f"measuring {root}: {err}") from err


def files_of(tenant: Tenant) -> TenantFiles:
    """The files of ``tenant`` in this process's configured store."""
    found = _files.get(tenant)
    if found is not None:
        return found
    with _files_lock:
        found = _files.get(tenant)
        if found is None:
            config = _config
            if config is None:
                found = TenantFiles(LocalObjectStore(tenant.directory / STORAGE_DIR), "", None)
            else:
                found = TenantFiles(config.store, f"tenants/{tenant.id}/{STORAGE_DIR}/", config.cache,
                                    config.retention_seconds, f"tenants/{tenant.id}/{DELETED_DIR}/")
            _files[tenant] = found
    return found


def adopt_local_storage(tenant: Tenant) -> int:
    """Move the files of a PocketBase data dir placed in the tenant's directory (an import, a copied
    ``pb_data``) into the configured store (with one, else they are where they belong), then remove the local
    ``storage/``; returns the files moved."""
    local = tenant.directory / STORAGE_DIR
    if _config is None or not local.is_dir():
        return 0
    files = files_of(tenant)
    moved = 0
    for path in sorted(local.rglob("*")):
        if not path.is_file() or path.name.endswith(ATTRS_SUFFIX) or path.name.startswith(".upload-"):
            continue
        files.write(str(path.relative_to(local)), path.read_bytes())
        moved += 1
    LocalObjectStore(tenant.directory).delete_prefix(STORAGE_DIR)
    if moved:
        log.info("tenant %s: %d files moved from its data dir into the object store", tenant.id, moved)
    return moved


@dataclass(slots=True)
class FileChanges:
    """The file writes of one request (a batch: of all its items) and the deletes they make due: uploads
    are undone if the transaction rolls back; obsolete files go once it commits."""

    uploaded: list[tuple[TenantFiles, str]] = field(default_factory=list)
    obsolete: list[tuple[TenantFiles, str]] = field(default_factory=list)  # a path, or a prefix ending in /
    # Uploads written before the turn that the saved record does not keep: deleted whatever the outcome.
    discarded: list[tuple[TenantFiles, str]] = field(default_factory=list)

    def committed(self) -> None:
        if self.obsolete or self.discarded:
            _delete_later(self.obsolete, keep=True)
            _delete_later(self.discarded)
            self.obsolete, self.discarded = [], []
        if self.uploaded:  # (most requests upload nothing: nothing to make afresh)
            self.uploaded = []

    def rolled_back(self) -> None:
        _delete_later(self.uploaded + self.discarded)
        self.uploaded, self.obsolete, self.discarded = [], [], []


def _delete_later(paths: list[tuple[TenantFiles, str]], keep: bool = False) -> None:
    """Delete ``paths`` in the background (``keep``: where the tenant's files have a retention, note them
    to be deleted once it is over instead)."""
    if not paths:
        return

    def run() -> None:
        noted: dict[int, tuple[TenantFiles, list[str]]] = {}
        touched: dict[int, tuple[TenantFiles, list[str]]] = {}
        for files, path in paths:
            if keep and files.retention_seconds > 0:
                noted.setdefault(id(files), (files, []))[1].append(path)
                continue
            try:
                delete_path(files, path)
                touched.setdefault(id(files), (files, []))[1].append(path)
            except StorageError as err:
                log.warning("deleting %s%s failed (left behind): %s", files.prefix, path, err)
        for files, deleted in touched.values():
            try:
                files.remove_empty_directories(deleted)
            except StorageError as err:
                log.warning("%s: removing emptied directories failed (left behind): %s", files.prefix, err)
            try:
                files.measure()
            except StorageError as err:
                log.warning("%s: measuring the files failed: %s", files.prefix, err)
        for files, kept in noted.values():
            due = int(time.time() + files.retention_seconds)
            try:
                files.store.write(f"{files.deleted_prefix}{due}-{random_suffix()}.json", orjson.dumps(kept))
            except StorageError as err:
                log.warning("%s: noting %d deleted files failed (left behind): %s", files.prefix, len(kept), err)

    future = _deleter.submit(run)
    _pending_deletes.add(future)
    future.add_done_callback(_pending_deletes.discard)


def delete_path(files: TenantFiles, path: str) -> None:
    """Delete one file (with its thumbs), or everything below a path ending in ``/``."""
    if path.endswith("/"):
        files.delete_prefix(path)
    else:
        files.delete(path)


def wait_for_deletes(timeout: float = 10.0) -> None:
    """Wait for the background deletes submitted so far (tests, shutdown)."""
    for future in list(_pending_deletes):
        future.result(timeout)  # type: ignore[attr-defined]
