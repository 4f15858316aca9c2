"""Uploads of a record create/update (PocketBase's ``recordDataFromRequest`` and the file field's save
interceptor): the files sent for a file field (``field``, ``+field``, ``field+``) get PocketBase's stored
names and join the submitted values (a plain key keeps the names sent with it), the field validates
them (:class:`~pbfast.pocketbase.fields.FileField`), and the ones the saved record keeps are written to
the tenant's store before its row (:class:`PendingUploads`). Names the save drops and the files of
deleted records are deleted once the transaction commits (:class:`~pbfast.pocketbase.filesystem.FileChanges`).

Thread-safety: runs in the request's handler (a database thread: it writes to the object store)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pbfast.http import ApiError
from pbfast.logs import component_logger
from pbfast.pocketbase.apis.multipart import UploadedFile
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.fields import FileField, UploadInfo
from pbfast.pocketbase.filesystem import FileChanges, StorageError, TenantFiles
from pbfast.pocketbase.filesystem.names import detect_type, normalize_name
from pbfast.pocketbase.gocompat import to_unique_strings
from pbfast.pocketbase.records import RecordValidationError, Row

if TYPE_CHECKING:
    from pbfast.pocketbase.apis.early_uploads import EarlyUploads

__all__ = ["PendingUploads", "file_uploads", "obsolete_files", "with_uploads"]

log = component_logger("Files")

STORAGE_QUOTA_MESSAGE = "The tenant's storage quota is used up."  # as the node words it for a full database


def file_uploads(collection: Collection, files: Mapping[str, list[UploadedFile]]) -> dict[str, list[UploadedFile]]:
    """The uploads PocketBase takes: under a file field's name, ``+name`` or ``name+`` (others are ignored)."""
    found: dict[str, list[UploadedFile]] = {}
    if not files:  # a JSON body
        return found
    for item in collection.fields:
        if isinstance(item, FileField):
            for key in (item.name, "+" + item.name, item.name + "+"):
                if files.get(key):
                    found[key] = files[key]
    return found


@dataclass(slots=True)
class _Pending:
    field: str
    upload: UploadedFile
    info: UploadInfo


@dataclass(slots=True)
class PendingUploads:
    """The uploads of one record save, by stored name (see the module doc)."""

    collection: Collection
    files: TenantFiles
    changes: FileChanges
    room: int | None = None  # bytes the tenant's storage quota has left (None: no quota)
    early: EarlyUploads | None = None  # the uploads written before the turn, if any (their names are taken)
    pending: dict[str, _Pending] = field(default_factory=dict)

    def add(self, field_name: str, upload: UploadedFile) -> str:
        named = self.early.name_of(upload) if self.early is not None else None
        if named is not None:
            name, content_type = named.name, named.content_type
        else:
            name, content_type = normalize_name(upload.filename, upload.data), detect_type(upload.data)[0]
        self.pending[name] = _Pending(field_name, upload, UploadInfo(len(upload.data), upload.filename, content_type))
        return name

    def infos(self, field_name: str) -> Mapping[str, UploadInfo]:
        return {name: item.info for name, item in self.pending.items() if item.field == field_name}

    def preferred_id(self) -> str | None:
        """The id a new record takes when the client sent none: the one its early uploads were written under."""
        early = self.early
        return early.record_id if early is not None and early.written and early.drawn_id else None

    def store(self, record_id: str, values: Mapping[str, Any]) -> None:
        kept = {name for item in self.collection.fields if isinstance(item, FileField) and item.name in values
                for name in to_unique_strings(item.typed(values[item.name]))}
        written = self._written_early(record_id, kept)
        # Files written before the turn are in the tenant's stored bytes already, so in what ``room`` left out.
        size = sum(item.info.size for name, item in self.pending.items() if name in kept and name not in written)
        if self.room is not None and size > self.room:
            raise ApiError(403, STORAGE_QUOTA_MESSAGE)
        for name, item in self.pending.items():
            if name not in kept or name in written:
                continue
            path = f"{self.collection.id}/{record_id}/{name}"
            try:
                self.files.create(path, item.upload.data)  # a new name: written in place, fsyncs at once
            except StorageError as err:
                log.warning("%s: upload of %s failed: %s", self.files.prefix, path, err)
                raise RecordValidationError({}) from err  # PocketBase: "Failed to create/update record."
            self.changes.uploaded.append((self.files, path))

    def _written_early(self, record_id: str, kept: set[str]) -> set[str]:
        """The kept names already in the store under ``record_id``; the early uploads not kept move to the
        changes' discarded files (deleted whatever the transaction's outcome)."""
        early = self.early
        if early is None or not early.written:
            return set()
        usable = record_id == early.record_id and early.collection_id == self.collection.id
        written: set[str] = set()
        for _upload, named in early.named.values():
            path = early.path(named.name)
            if usable and named.name in kept and named.name in self.pending:
                written.add(named.name)
            elif (early.files, path) in self.changes.uploaded:
                self.changes.uploaded.remove((early.files, path))
                self.changes.discarded.append((early.files, path))
        return written


def with_uploads(resolved: dict[str, Any], body: dict[str, Any], uploads: Mapping[str, list[UploadedFile]],
                 pending: PendingUploads) -> dict[str, Any]:
    """``resolved`` (the submitted ``body`` with its modifiers resolved) with each upload's stored name under
    the key it was sent with: a plain key's names after the ones sent with it as text, ``+name``/``name+``
    to be resolved again."""
    data = dict(resolved)
    for key, files in uploads.items():
        plain = not key.startswith("+") and not key.endswith("+")
        field_name = key.strip("+")
        names: list[Any] = list(to_unique_strings(body[key])) if plain and body.get(key) is not None else []
        names += [pending.add(field_name, upload) for upload in files]
        data[key] = names
    return data


def obsolete_files(collection: Collection, before: Row, after: Row) -> list[str]:
    """The files an update dropped (paths relative to the tenant's storage)."""
    paths = []
    for item in collection.fields:
        if isinstance(item, FileField):
            kept = set(to_unique_strings(item.typed(after.get(item.name, ""))))
            paths += [f"{collection.id}/{before['id']}/{name}"
                      for name in to_unique_strings(item.typed(before.get(item.name, ""))) if name not in kept]
    return paths
