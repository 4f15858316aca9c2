"""Where a tenant's backups (``/api/backups``) are kept: the node's object store under the tenant's own prefix
(``tenants/{id}/{incarnation}/backups/`` beside its replica: S3 with the node's ``--s3-endpoint``, else
``<data-dir>/replica``), or the S3 bucket of the tenant's ``backups.s3`` settings when enabled (keys at the
bucket's root, as PocketBase keeps them). A re-created tenant (a new incarnation) never sees the backups of
the one deleted before it.

Keys are single file names (:func:`valid_key`): no separators, no dot names, nothing that could leave the
tenant's prefix. Thread-safety: used on the tenant's database thread, one call at a time per tenant.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from pbfast.pocketbase.tenant import Tenant

__all__ = ["BackupFile", "BackupLocation", "BackupStore", "LocalBackupStore", "S3BackupStore", "StoreError",
           "valid_key"]

_KEY: Final = re.compile(r"[^/\\\x00-\x1f\x7f]{1,255}")


class StoreError(RuntimeError):
    """The store failed (the message is its raw error, which PocketBase shows to the superuser)."""


def valid_key(key: str) -> bool:
    """A backup key is one file name: no separators or control characters, not ``.``/``..``."""
    return bool(_KEY.fullmatch(key)) and key not in (".", "..")


@dataclass(frozen=True, slots=True)
class BackupFile:
    key: str
    size: int
    modified: float  # Unix time


class BackupStore(Protocol):
    def list(self) -> list[BackupFile]: ...

    def exists(self, key: str) -> bool: ...

    def put(self, key: str, source: Path) -> None: ...

    def get(self, key: str, target: Path) -> None: ...

    def delete(self, key: str) -> None: ...


class LocalBackupStore:
    """Backups as files of one directory (the node's local object store)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, key: str) -> Path:
        if not valid_key(key):
            raise StoreError(f"invalid backup key {key!r}")
        return self.directory / key

    def list(self) -> list[BackupFile]:
        try:
            entries = sorted(os.scandir(self.directory), key=lambda entry: entry.name)
        except FileNotFoundError:
            return []
        files = []
        for entry in entries:
            if entry.is_file(follow_symlinks=False) and valid_key(entry.name) and not entry.name.startswith(".tmp-"):
                stat = entry.stat(follow_symlinks=False)
                files.append(BackupFile(entry.name, stat.st_size, stat.st_mtime))
        return files

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def put(self, key: str, source: Path) -> None:
        target = self._path(key)
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.directory / f".tmp-{os.getpid()}-{time.monotonic_ns()}"
        try:
            shutil.copyfile(source, partial)
            os.replace(partial, target)  # complete or absent, never half written
        finally:
            partial.unlink(missing_ok=True)

    def get(self, key: str, target: Path) -> None:
        try:
            shutil.copyfile(self._path(key), target)
        except FileNotFoundError as err:
            raise StoreError(f"{key}: no such backup") from err

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError as err:
            raise StoreError(f"{key}: no such backup") from err


class S3BackupStore:
    """Backups as objects under ``prefix`` of an S3 bucket (boto3)."""

    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    def _key(self, key: str) -> str:
        if not valid_key(key):
            raise StoreError(f"invalid backup key {key!r}")
        return self.prefix + key

    def list(self) -> list[BackupFile]:
        files: list[BackupFile] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
                for item in page.get("Contents", []):
                    name = item["Key"][len(self.prefix):]
                    if valid_key(name):
                        files.append(BackupFile(name, int(item["Size"]), item["LastModified"].timestamp()))
        except Exception as err:  # noqa: BLE001 - botocore's errors are many; the message is what counts
            raise StoreError(str(err)) from err
        return files

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as err:  # noqa: BLE001 - as above
            if getattr(err, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StoreError(str(err)) from err
        return True

    def put(self, key: str, source: Path) -> None:
        try:
            self.client.upload_file(str(source), self.bucket, self._key(key))
        except Exception as err:  # noqa: BLE001 - as above
            raise StoreError(str(err)) from err

    def get(self, key: str, target: Path) -> None:
        try:
            self.client.download_file(self.bucket, self._key(key), str(target))
        except Exception as err:  # noqa: BLE001 - as above
            raise StoreError(str(err)) from err

    def delete(self, key: str) -> None:
        if not self.exists(key):
            raise StoreError(f"{key}: no such backup")
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as err:  # noqa: BLE001 - as above
            raise StoreError(str(err)) from err


@dataclass(frozen=True, slots=True)
class BackupLocation:
    """The node's object store, and how a tenant's prefix in it is found (its current incarnation)."""

    bucket: str
    endpoint: str | None
    local_root: Path
    prefix_of: Callable[[Tenant], str]  # "tenants/{id}/{incarnation}/backups/"
    region: str = "us-east-1"

    def store_for(self, tenant: Tenant) -> BackupStore:
        return self.store_at(self.prefix_of(tenant))

    def store_at(self, prefix: str) -> BackupStore:
        """The objects under ``prefix`` (``tenants/{id}/{incarnation}/...``) of the node's object store."""
        if self.endpoint is None:
            return LocalBackupStore(self.local_root / prefix)
        import boto3  # type: ignore[import-untyped]  # only for these rarely used routes: kept out of the start

        client = boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region)
        return S3BackupStore(client, self.bucket, prefix)
