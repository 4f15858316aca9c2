"""Object stores that hold tenants' files: a local directory (atomic writes) or an S3 bucket (boto3, with
timeouts). Keys are ``/``-separated relative paths; a store never resolves a key outside its root.

Every call blocks (disk or network): callers run them on worker threads, never on the event loop.
Failures are :class:`StorageError` (the API answers them PocketBase-shaped, never a traceback).

Thread-safety: both stores may be used from several threads at once (and processes: a node's workers). The
local store removes a record's directory once its last file went (:meth:`LocalObjectStore.remove_empty_directories`,
``rmdir``: only an empty one); a write that finds the directory it just made gone tries again
(:data:`VANISHED_TRIES`), so a concurrent upload to that directory never fails for it.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from pbfast._native import create_files
from pbfast.durable import fsync_file, fsync_together

__all__ = ["LocalObjectStore", "ObjectStore", "S3ObjectStore", "StorageError", "StoredObject", "check_key"]

CONNECT_TIMEOUT_SECONDS: Final = 5.0
# A write whose directory was removed between its creation and the file's (an empty record directory removed
# beside it) makes it again: a removal needs the directory empty, so each try can lose to one removal only.
VANISHED_TRIES: Final = 10
READ_TIMEOUT_SECONDS: Final = 30.0


class StorageError(RuntimeError):
    """The store could not do what was asked (unreachable, refused, a bad key)."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    data: bytes
    modified: float  # Unix seconds


def check_key(key: str) -> str:
    """``key`` if it is a plain relative path (no empty, ``.`` or ``..`` segment, no backslash or NUL)."""
    parts = key.split("/")
    if not key or "\\" in key or "\x00" in key or any(p in ("", ".", "..") for p in parts[:-1]) \
            or parts[-1] in (".", ".."):
        raise StorageError(f"invalid storage key {key[:200]!r}")
    return key


class ObjectStore(Protocol):
    def read(self, key: str) -> StoredObject | None: ...
    def write(self, key: str, data: bytes) -> None: ...
    def create(self, key: str, data: bytes) -> None: ...
    def create_many(self, items: Sequence[tuple[str, bytes]]) -> None: ...
    def delete(self, key: str) -> None: ...
    def delete_prefix(self, prefix: str) -> None: ...
    def keys(self, prefix: str) -> list[str]: ...
    def total_size(self, prefix: str) -> int: ...


class LocalObjectStore:
    """Files under ``root``; a write goes to a temporary file that is fsynced and renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def read(self, key: str) -> StoredObject | None:
        path = self._path(key.rstrip("/") or ".")
        try:
            with open(path, "rb") as handle:
                return StoredObject(handle.read(), os.fstat(handle.fileno()).st_mtime)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as err:
            raise StorageError(f"reading {key}: {err}") from err

    def write(self, key: str, data: bytes) -> None:
        _again_if_vanished(lambda: self._write(key, data))

    def _write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            changed = _make_parents(path)
            fd, temporary = tempfile.mkstemp(prefix=".upload-", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                fsync_file(Path(temporary))  # its bytes before its name: a crash leaves the old file or the new
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            directory_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fsync_together(directory_fd, changed[1:])
            finally:
                os.close(directory_fd)
        except OSError as err:
            raise StorageError(f"writing {key}: {err}") from err

    def create(self, key: str, data: bytes) -> None:
        """Store a new object under a key not in use (an upload's randomly suffixed name): written in place,
        then its bytes and its directories' entries fsynced at once (one journal commit rather than the two
        of :meth:`write`'s write-then-rename). A key in use is refused; a failed create leaves nothing."""
        _again_if_vanished(lambda: self._create(key, data))

    def _create(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            changed = _make_parents(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # never someone else's file
            try:
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    fsync_together(fd, changed)
                finally:
                    os.close(fd)
            except BaseException:
                path.unlink(missing_ok=True)  # ours (O_EXCL): no partial file stays
                raise
        except OSError as err:
            raise StorageError(f"creating {key}: {err}") from err

    def create_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """:meth:`create` for several new objects with one round of fsyncs: each written in place, then every file
        and every directory whose entries changed fsynced, all at once (their device flushes merge), all in the
        extension without the GIL (:func:`~pbfast._native.create_files`: in Python each of those ~6 system calls a file
        gave the GIL back and took it again, a context switch each under load). All or nothing: on a failure
        each one written is removed."""
        paths = [(str(self._path(key)), data) for key, data in items]

        def create() -> None:
            try:
                create_files(paths)
            except OSError as err:  # tried again if a directory vanished (all or nothing: no file of it stays)
                raise StorageError(f"creating {len(items)} objects: {err}") from err

        _again_if_vanished(create)

    def remove_empty_directories(self, keys: Sequence[str]) -> None:
        """Remove each directory of ``keys`` (in that order: a record's before its collection's) that is empty now.
        Race-free: ``rmdir`` removes only an empty directory, and a write that loses its directory to it makes it
        again (:data:`VANISHED_TRIES`)."""
        for key in keys:
            try:
                os.rmdir(self._path(key))
            except OSError as err:
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT, errno.ENOTDIR):
                    raise StorageError(f"removing the directory {key}: {err}") from err

    def append_then_create_many(self, journal: str, line: bytes, items: Sequence[tuple[str, bytes]]) -> None:
        """:meth:`create_many` after appending ``line`` to the existing object ``journal`` and making it durable,
        in the same call of the extension (a journal of pending uploads must name them before they can survive a
        crash). A failed append creates nothing."""
        paths = [(str(self._path(key)), data) for key, data in items]
        journal_path = str(self._path(journal))
        appended = False

        def create() -> None:
            nonlocal appended
            try:
                create_files(paths, None if appended else (journal_path, line))
            except OSError as err:
                if err.filename == journal_path:  # the journal itself: never tried again (nor the files without it)
                    raise StorageError(f"appending to {journal}: {err}") from None
                appended = True  # durable: a try again after a vanished directory makes only the files
                raise StorageError(f"creating {len(items)} objects after appending to {journal}: {err}") from err
            appended = True

        _again_if_vanished(create)

    def empty(self, key: str) -> None:
        """Truncate an existing object to nothing (not fsynced: see the journal of pending uploads)."""
        try:
            os.truncate(self._path(key), 0)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise StorageError(f"emptying {key}: {err}") from err

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except IsADirectoryError:
            pass
        except OSError as err:
            raise StorageError(f"deleting {key}: {err}") from err

    def delete_prefix(self, prefix: str) -> None:
        base = self._path(prefix.rstrip("/"))
        if not base.is_dir():
            return
        try:
            for path in sorted(base.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if path.is_dir() and not path.is_symlink():
                    path.rmdir()
                else:
                    path.unlink(missing_ok=True)
            base.rmdir()
        except OSError as err:
            raise StorageError(f"deleting {prefix}: {err}") from err

    def keys(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/"))
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*")
                      if p.is_file() and not p.name.startswith(".upload-"))

    def total_size(self, prefix: str) -> int:
        base = self._path(prefix.rstrip("/"))
        try:
            return sum(p.stat().st_size for p in base.rglob("*") if p.is_file()) if base.is_dir() else 0
        except OSError as err:
            raise StorageError(f"measuring {prefix}: {err}") from err


def _again_if_vanished(write: Callable[[], None]) -> None:
    """Run ``write`` (it raises StorageError from the OSError); again if a directory it made or found was
    removed before its file was in it."""
    for attempt in range(VANISHED_TRIES):
        try:
            write()
            return
        except StorageError as err:
            if not _vanished(err.__cause__) or attempt == VANISHED_TRIES - 1:
                raise


def _vanished(err: BaseException | None) -> bool:
    """Whether ``err`` says a directory went away under a write: not found (creating a file or directory in it),
    or "exists" about a directory's path that is gone now, or is a directory again (a mkdir found it, it was removed
    before it was looked at, and another writer may have made it again since): a try again settles either. An
    "exists" about a regular file (an object's key in use) is final."""
    if isinstance(err, FileNotFoundError):
        return True
    if not isinstance(err, FileExistsError) or not err.filename:
        return False
    return not os.path.lexists(err.filename) or os.path.isdir(err.filename)


def _make_parents(path: Path) -> list[Path]:
    """Create the missing directories above ``path``; the directories whose entries a new ``path`` changes
    (its own, and the parent of each one created), to fsync."""
    try:  # most often only the file's own directory is new (a new record's): one system call
        path.parent.mkdir()
        return [path.parent, path.parent.parent]
    except FileExistsError:
        if path.parent.is_dir():
            return [path.parent]
        raise
    except FileNotFoundError:
        pass
    missing: list[Path] = []
    directory = path.parent
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for created in reversed(missing):
        created.mkdir(exist_ok=True)
    return [path.parent, *(created.parent for created in missing)]


class S3ObjectStore:
    """Objects in an S3 bucket (path-style, as for the replicas); calls time out, retries are few."""

    def __init__(self, bucket: str, endpoint: str, region: str = "us-east-1") -> None:
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]

        self.bucket = bucket
        self.client: Any = boto3.client(
            "s3", endpoint_url=endpoint, region_name=region,
            config=Config(connect_timeout=CONNECT_TIMEOUT_SECONDS, read_timeout=READ_TIMEOUT_SECONDS,
                          retries={"max_attempts": 2, "mode": "standard"}, s3={"addressing_style": "path"}))

    def read(self, key: str) -> StoredObject | None:
        from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=check_key(key))
            return StoredObject(answer["Body"].read(), answer["LastModified"].timestamp())
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise StorageError(f"reading {key}: {err}") from err
        except BotoCoreError as err:
            raise StorageError(f"reading {key}: {err}") from err

    def write(self, key: str, data: bytes) -> None:
        self._call("writing", key, lambda: self.client.put_object(Bucket=self.bucket, Key=check_key(key), Body=data))

    def create(self, key: str, data: bytes) -> None:
        self.write(key, data)  # a PUT is atomic; the key is new by its name

    def create_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        for key, data in items:
            self.write(key, data)

    def delete(self, key: str) -> None:
        self._call("deleting", key, lambda: self.client.delete_object(Bucket=self.bucket, Key=check_key(key)))

    def delete_prefix(self, prefix: str) -> None:
        keys = self.keys(prefix)
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start:start + 1000]]
            self._call("deleting", prefix, lambda b=batch: self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": b, "Quiet": True}))

    def keys(self, prefix: str) -> list[str]:
        return [key for key, _ in self._listing(prefix)]

    def total_size(self, prefix: str) -> int:
        return sum(size for _, size in self._listing(prefix))

    def _listing(self, prefix: str) -> list[tuple[str, int]]:
        found: list[tuple[str, int]] = []

        def walk() -> None:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=check_key(prefix.rstrip("/")) + "/"):
                found.extend((item["Key"], int(item.get("Size", 0))) for item in page.get("Contents", []))

        self._call("listing", prefix, walk)
        return found

    def _call(self, what: str, key: str, action: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return action()
        except (BotoCoreError, ClientError) as err:
            raise StorageError(f"{what} {key}: {err}") from err
