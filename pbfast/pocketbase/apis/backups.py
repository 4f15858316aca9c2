"""``/api/backups`` (PocketBase's ``apis/backup*.go``): a superuser lists, creates, uploads, downloads (with a
superuser file token), restores and deletes the tenant's backups, kept where
:mod:`pbfast.pocketbase.backup_store` says, made and restored by :mod:`pbfast.pocketbase.backup_archive`.

Unlike PocketBase, which answers a restore at once and restarts itself a second later, the restore is done
before the 204 (the node does not restart: the tenant's database takes the backup's content in place), on the
tenant's database thread: the tenant's other requests wait meanwhile. Making a backup (a manual one, or the
backup cron's) does not hold the tenant's turn: the request is checked in it, then the databases are copied
(SQLite's online backup, a consistent snapshot while writes go on), zipped with the files and uploaded on a
thread of its own (:class:`BackupMaking`), so a large tenant's backup does not stop its requests.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from pbfast.http import ApiError, HTTPProtocol
from pbfast.logs import component_logger
from pbfast.pocketbase import app_settings, auth, mails
from pbfast.pocketbase.apis.multipart import MultipartError, parse_form_data
from pbfast.pocketbase.apis.form_body import struct_body
from pbfast.pocketbase.apis.request import (LOAD_FAILED, NOT_FOUND, SUPERUSERS, TenantRequest, require_superuser,
                                           send_error, send_with_fields)
from pbfast.pocketbase.apis.settings import real_ip
from pbfast.pocketbase.backup_lock import BackupLock, running_backup
from pbfast.pocketbase.backup_archive import ArchiveError, create_archive, default_backup_name, restore_archive
from pbfast.pocketbase.filesystem import StorageError, files_of
from pbfast.pocketbase.backup_store import BackupLocation, BackupStore, S3BackupStore, StoreError, valid_key
from pbfast.pocketbase.records import load_row
from pbfast.pocketbase.request_logs import format_created
from pbfast.pocketbase.tenant import Tenant

__all__ = ["AUTO_PREFIX", "BACKUP_THREADS", "UPLOAD_LIMIT", "BackupMaking", "Backups", "ScheduledBackup", "ScheduledPlan", "alert_superusers",
           "may_authenticate"]

log = component_logger("TenantNode")

AUTO_PREFIX: Final = "@auto_pb_backup_"  # the scheduled backups' names; only these are pruned

UPLOAD_LIMIT: Final = 512 << 20  # bytes of an uploaded backup (PocketBase has none; the body is held in memory)
_NAME: Final = re.compile(r"[a-z0-9_-]+\.zip")
_ZIP_MAGIC: Final = (b"PK\x03\x04", b"PK\x05\x06")
VALIDATION_FAILED: Final = "An error occurred while validating the submitted data."
# PocketBase's answer while another backup or restore runs: its source has no full stop here, but every API error
# message goes through its Sentenize (NewApiError), which adds one.
BUSY: Final = "Try again later - another backup/restore process has already been started."
# ... and when one started between the request's check and the making (PocketBase's CreateBackup error).
CREATE_FAILED: Final = "Failed to create backup."
FORBIDDEN: Final = "Insufficient permissions to access the resource."
# Backups are made on threads of their own, not the loop's default executor: a few tenants backing up large
# files at once must not hold the threads that every tenant's file downloads are read on. Past two, they wait.
BACKUP_THREADS: Final = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pbfast-backup")
NOT_OURS_ANY_MORE: Final = "the node no longer serves the tenant (fenced or moved): left to its new node"


@dataclass(frozen=True, slots=True)
class ScheduledPlan:
    """A scheduled backup as the tenant's settings ask for it: its name, and where it goes (None: the store
    could not be set up, ``error`` says why)."""

    name: str
    settings: app_settings.Settings
    store: BackupStore | None
    error: str | None


@dataclass(frozen=True, slots=True)
class BackupMaking:
    """A manual backup to make once its request was checked in the tenant's turn: made and uploaded on a
    thread of its own (the tenant's other requests go on meanwhile), then answered 204, or 400 as PocketBase
    answers a failed one."""

    backups: Backups
    tenant: Tenant
    store: BackupStore
    name: str

    async def send(self, proto: HTTPProtocol) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(BACKUP_THREADS, self.backups.make, self.tenant,
                                                             self.store, self.name)
        except ApiError as err:  # another backup or restore of the tenant started meanwhile, or it closed here
            if err.message == BUSY:
                send_error(proto, 400, CREATE_FAILED)
            else:
                send_error(proto, err.status, err.message, err.data, err.headers)
            return
        except (StoreError, StorageError, OSError) as err:
            log.warning("tenant %s: backup %s failed: %s", self.tenant.id, self.name, err)
            send_error(proto, 400, CREATE_FAILED)
            return
        proto.response_empty(204, [])


@dataclass(frozen=True, slots=True)
class ScheduledBackup:
    """What a scheduled backup did: the backup's name, why it failed (None: made), the old ones deleted."""

    name: str
    error: str | None
    pruned: tuple[str, ...]
    alerted: tuple[str, ...] = ()  # the superusers mailed about the failure
    failure: str | None = None  # the failure to mail them about (the backup not made; not "left to its new node")


class Backups:
    """The handlers, with the node's object store (None: backups only with the tenant's own S3 settings)."""

    def __init__(self, location: BackupLocation | None = None) -> None:
        self.location = location
        self._active: dict[str, str] = {}  # tenant id -> the backup being made or restored (this process)

    def _store(self, request: TenantRequest) -> BackupStore:
        return self.store_of(request.tenant)

    def store_of(self, tenant: Tenant) -> BackupStore:
        """Where the tenant's backups are kept now (its own S3 when its settings enable it)."""
        document = app_settings.load_document(tenant.conn)
        config = document["backups"]["s3"]
        if config["enabled"]:
            from pbfast.pocketbase.apis.settings_test_s3 import _client

            try:
                return S3BackupStore(_client(config), config["bucket"], "")
            except (ValueError, OSError) as err:
                raise StoreError(f"failed to initialize the S3 filesystem: {err}") from err
        if self.location is None:
            raise StoreError("this node keeps no backups (it has no object store)")
        return self.location.store_for(tenant)

    @contextmanager
    def _scratch(self, request: TenantRequest | Tenant) -> Iterator[Path]:
        tenant = request if isinstance(request, Tenant) else request.tenant
        directory = Path(tempfile.mkdtemp(prefix=".backup-", dir=tenant.directory.parent))
        try:
            yield directory
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def running(self, tenant: Tenant) -> bool:
        """Whether a backup of the tenant is being made or restored (by this process or another one)."""
        return self._running_name(tenant) is not None

    def _running_name(self, tenant: Tenant) -> str | None:
        """The backup being made or restored: by this process, else by another one (a node's other worker)."""
        name = self._active.get(tenant.id)
        return name if name is not None else running_backup(tenant.directory)

    @contextmanager
    def _running(self, request: TenantRequest | Tenant, name: str, busy: str = BUSY) -> Iterator[None]:
        tenant = request if isinstance(request, Tenant) else request.tenant
        if tenant.id in self._active:
            raise ApiError(400, busy)
        lock = BackupLock.take(tenant.directory, name)
        if lock is None:  # another process of the node runs one
            raise ApiError(400, busy)
        self._active[tenant.id] = name
        try:
            yield
        finally:
            self._active.pop(tenant.id, None)
            lock.release()

    # ---- the routes ---------------------------------------------------------------------------------

    def list(self, request: TenantRequest) -> None:
        require_superuser(request)
        try:
            files = self._store(request).list()
        except StoreError as err:
            raise ApiError(400, _sentenized("Failed to retrieve backup items. Raw error: \n" + str(err))) from err
        send_with_fields(request, [{"modified": format_created(f.modified), "key": f.key, "size": f.size}
                                   for f in files], sort_keys=False)

    def create(self, request: TenantRequest) -> None:
        require_superuser(request)
        if self.running(request.tenant):
            raise ApiError(400, BUSY)
        body, _ = struct_body(request)
        name = body.get("name", "")
        if not isinstance(name, str):
            raise ApiError(400, LOAD_FAILED)
        try:
            store = self._store(request)
        except StoreError as err:
            raise ApiError(400, CREATE_FAILED) from err
        if name:
            error = None
            if len(name) > 150:
                error = {"code": "validation_length_out_of_range", "message": "The length must be between 1 and 150.",
                         "params": {"max": 150, "min": 1}}
            elif not _NAME.fullmatch(name):
                error = {"code": "validation_match_invalid", "message": "Must be in a valid format."}
            else:
                try:
                    taken = store.exists(name)
                except StoreError:
                    taken = True
                if taken:
                    error = {"code": "validation_backup_name_exists",
                             "message": "The backup file name is invalid or already exists."}
            if error:
                raise ApiError(400, VALIDATION_FAILED, {"name": error})
        else:
            name = default_backup_name(app_settings.load_settings(request.tenant.conn).meta.app_name)
        request.after_turn = BackupMaking(self, request.tenant, store, name)

    def make(self, tenant: Tenant, store: BackupStore, name: str) -> None:
        """Make the tenant's backup zip and keep it in ``store`` as ``name`` (ApiError 400 while another
        backup or restore of the tenant runs). Blocking, and needs no turn of the tenant's database (the
        copies are made through connections of their own): run on a thread."""
        with self._running(tenant, name), self._scratch(tenant) as scratch:
            archive = scratch / "backup.zip"
            snapshots = scratch / "snapshots"
            snapshots.mkdir()
            # Off the tenant's turn, a close (a move, the node fenced) may come meanwhile: a copy this node no
            # longer serves may be stale, and is never written under the tenant's backups.
            _check_open(tenant)
            create_archive(tenant, archive, snapshots, files_of(tenant))
            _check_open(tenant)
            store.put(name, archive)

    def plan_scheduled(self, tenant: Tenant, now: datetime) -> ScheduledPlan:
        """PocketBase's backup cron job for the tenant, due at ``now``, as its settings ask for it (on the
        tenant's database thread): the ``@auto_pb_backup_<app>_<time>.zip`` name and where it goes."""
        settings = app_settings.load_settings(tenant.conn)
        name = default_backup_name(settings.meta.app_name, AUTO_PREFIX, now.timestamp())
        try:
            return ScheduledPlan(name, settings, self.store_of(tenant), None)
        except StoreError as err:
            return ScheduledPlan(name, settings, None, f"failed to initialize the backups filesystem: {err}")

    def make_scheduled(self, tenant: Tenant, plan: ScheduledPlan,
                       still_ours: Callable[[], bool] = lambda: True) -> ScheduledBackup:
        """The planned backup made (off the tenant's turn: a thread of its own), then the automatic backups
        beyond the newest ``cronMaxKeep`` deleted (the others are never touched). A failure is in the outcome
        (its ``failure`` for :func:`alert_superusers` to mail); pruning is tried anyway, as in PocketBase.

        ``still_ours`` is asked before the backup is written and again before pruning: a node fenced meanwhile
        must neither write a backup of its possibly stale copy under the tenant's prefix (the same name as the
        new owner's backup of that minute) nor delete the new owner's newer automatic backups."""
        name, store, error = plan.name, plan.store, plan.error
        if store is None:
            error = error or "no backups filesystem"
            return ScheduledBackup(name, error, (), (), error)
        if not still_ours():
            return ScheduledBackup(name, NOT_OURS_ANY_MORE, (), ())
        try:
            self.make(tenant, store, name)
        except ApiError as err:
            if tenant.closed:  # moved or fenced meanwhile: its new node backs it up
                return ScheduledBackup(name, NOT_OURS_ANY_MORE, (), ())
            error = err.message
        except (StoreError, StorageError, OSError) as err:
            error = str(err) or type(err).__name__
        failure = error
        max_keep = plan.settings.backups.max_keep
        if max_keep <= 0:
            return ScheduledBackup(name, error, (), (), failure)
        if not still_ours():
            return ScheduledBackup(name, error or NOT_OURS_ANY_MORE, (), (), failure)
        try:
            automatic = sorted((f for f in store.list() if f.key.startswith(AUTO_PREFIX)),
                               key=lambda f: (f.modified, f.key), reverse=True)
        except StoreError as err:
            return ScheduledBackup(name, error or f"failed to list the automatic backups: {err}", (), (), failure)
        pruned = []
        for old in automatic[max_keep:]:
            try:
                store.delete(old.key)
                pruned.append(old.key)
            except StoreError as err:
                error = error or f"failed to remove the old automatic backup {old.key}: {err}"
        return ScheduledBackup(name, error, tuple(pruned), (), failure)

    def upload(self, request: TenantRequest) -> None:
        require_superuser(request)
        raw = request.raw_body
        if raw is None:
            raise ApiError(413, "Request entity too large.")
        content_type = request.header("content-type") or ""
        upload = None
        if content_type.lower().startswith("multipart/form-data"):
            try:
                files = parse_form_data(raw, content_type).files.get("file") or []
            except MultipartError as err:
                raise ApiError(400, LOAD_FAILED) from err
            upload = files[0] if files else None
        try:
            store = self._store(request)
        except StoreError as err:
            raise ApiError(400, "Failed to upload backup.") from err
        if upload is None:
            raise ApiError(400, VALIDATION_FAILED, {"file": {"code": "validation_required",
                                                             "message": "Cannot be blank."}})
        name = Path(upload.filename.replace("\\", "/")).name  # Go's multipart keeps the base name only
        if not upload.data.startswith(_ZIP_MAGIC):
            raise ApiError(400, VALIDATION_FAILED, {"file": {
                "code": "validation_invalid_mime_type",
                "message": f"{_go_quote(name)} mime type must be one of: application/zip."}})
        try:
            taken = not valid_key(name) or store.exists(name)
        except StoreError:
            taken = True
        if taken:
            raise ApiError(400, VALIDATION_FAILED, {"file": {
                "code": "validation_backup_name_exists",
                "message": "Backup file with the specified name already exists."}})
        with self._scratch(request) as scratch:
            path = scratch / "upload.zip"
            path.write_bytes(upload.data)
            try:
                store.put(name, path)
            except (StoreError, OSError) as err:
                raise ApiError(400, "Failed to upload backup.") from err
        request.proto.response_empty(204, [])

    def download(self, request: TenantRequest) -> None:
        """``GET /api/backups/{key}?token=``: a superuser's file token, not the Authorization header."""
        if not _superuser_file_token(request, request.query("token") or ""):
            raise ApiError(403, FORBIDDEN)
        settings = app_settings.load_settings(request.tenant.conn)
        if settings.superuser_ips and not app_settings.ip_in_list(settings.superuser_ips, real_ip(request, settings)):
            raise ApiError(403, FORBIDDEN)
        key = request.params["key"]
        try:
            store = self._store(request)
        except StoreError as err:
            raise ApiError(500, "Failed to load backups filesystem.") from err
        with self._scratch(request) as scratch:
            path = scratch / "download.zip"
            try:
                if not valid_key(key) or not store.exists(key):
                    raise ApiError(404, NOT_FOUND)
                store.get(key, path)
            except StoreError as err:
                raise ApiError(404, NOT_FOUND) from err
            request.proto.response_bytes(200, [
                ("content-type", "application/zip"),
                ("content-disposition", f"attachment; filename={_go_quote(key)}"),
                ("content-security-policy", "default-src 'none'; media-src 'self'; style-src 'unsafe-inline'; sandbox"),
            ], path.read_bytes())

    def delete(self, request: TenantRequest) -> None:
        require_superuser(request)
        key = request.params["key"]
        try:
            store = self._store(request)
        except StoreError as err:
            raise ApiError(500, "Failed to load backups filesystem.") from err
        if self._running_name(request.tenant) == key:
            raise ApiError(400, "The backup is currently being used and cannot be deleted.")
        try:
            store.delete(key)
        except StoreError as err:
            raise ApiError(400, _sentenized("Invalid or already deleted backup file. Raw error: \n" + str(err))) from err
        request.proto.response_empty(204, [])

    def restore(self, request: TenantRequest) -> None:
        require_superuser(request)
        if self.running(request.tenant):
            raise ApiError(400, BUSY)
        key = request.params["key"]
        try:
            store = self._store(request)
        except StoreError as err:
            raise ApiError(500, "Failed to load backups filesystem.") from err
        try:
            found = valid_key(key) and store.exists(key)
        except StoreError:
            found = False
        if not found:
            raise ApiError(400, "Missing or invalid backup file.")
        with self._running(request, key), self._scratch(request) as scratch:
            archive = scratch / "restore.zip"
            try:
                store.get(key, archive)
                restore_archive(request.tenant, archive, scratch, files=files_of(request.tenant))
            except (StoreError, ArchiveError, OSError) as err:
                raise ApiError(400, _sentenized(f"Failed to restore the backup: {err}")) from err
        request.proto.response_empty(204, [])


def _sentenized(message: str) -> str:
    """``message`` as PocketBase answers any API error's (its Sentenize): trimmed, a capital first letter, and a
    full stop unless it ends with ".", "?" or "!" (messages that end with a raw error's text need it)."""
    message = message.strip()
    if not message:
        return message
    message = message[0].upper() + message[1:]
    return message if message[-1] in ".?!" else message + "."


def _check_open(tenant: Tenant) -> None:
    if tenant.closed:
        raise ApiError(503, "The tenant was closed on this node (moved or fenced); retry.",
                       headers=[("retry-after", "1")])


def may_authenticate(tenant: Tenant, authorization: str | None) -> bool:
    """False when the header authenticates nobody whatever the database holds (none, malformed, expired, not
    an auth token, an unknown collection): the request is a guest's, answered 401 (as the handler would)
    before an upload's body is read, so that guests cannot make the node read 512 MiB bodies. The rest
    (the signature, the record) is the handler's."""
    token = (authorization or "").strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    try:
        claims = auth.peek_token_claims(token)
    except auth.TokenError:
        return False
    return claims.get("type") == "auth" and tenant.collection_by_id(claims["collectionId"]) is not None


def _superuser_file_token(request: TenantRequest, token: str) -> bool:
    """PocketBase's ``FindAuthRecordByToken(token, "file")`` for a superuser."""
    try:
        claims = auth.peek_token_claims(token)
    except auth.TokenError:
        return False
    if claims.get("type") != "file":
        return False
    collection = request.tenant.collection_by_id(claims["collectionId"])
    if collection is None or collection.name != SUPERUSERS:
        return False
    row = load_row(request.tenant, collection, claims["id"])
    secret = collection.auth.tokens["fileToken"].secret
    return row is not None and bool(secret) and auth.verify_token_signature(token, str(row.get("tokenKey", "")),
                                                                             secret)


def _go_quote(text: str) -> str:
    from pbfast.pocketbase.gocompat import go_quote

    return go_quote(text)


def alert_superusers(tenant: Tenant, settings: app_settings.Settings, error: str) -> tuple[str, ...]:
    """Mail every superuser of the tenant PocketBase's alert about a failed scheduled backup (sent on threads
    of their own: the tenant's database turn does not wait for the SMTP server)."""
    emails = tuple(str(row[0]) for row in tenant.conn.execute(f"SELECT email FROM {SUPERUSERS}") if row[0])
    for email in emails:
        mail = mails.system_alert_mail(settings, email, "Autobackup failure",
                                       "Failed to create/upload automated backup. Raw error:\n" + error)
        mails.send_in_background(tenant.id, settings, mail, "backup failure alert")
    return emails
