"""A record create's uploads written to the store before the tenant's turn (:func:`write_early`), so that the
turn itself only validates and inserts the row: the upload's fsyncs (its bytes, its directories: ~75 % of a
turn on a loaded disk) no longer keep the tenant's other requests waiting, and several requests' fsyncs,
issued at once from their threads, share the file system's journal commits.

How the turn sees them: :class:`EarlyUploads` holds the parsed form (read once, on the event loop), the record
id the files were written under (the client's, or one drawn here that the save then uses) and each upload's
stored name; :class:`~pbfast.pocketbase.apis.file_uploads.PendingUploads` takes those names instead of drawing
new ones and writes nothing for them. What the saved record does not keep, and everything of a request that is
refused or fails (its rules, validation, unique constraints, quota, a closed tenant), is deleted as the
in-turn uploads always were (:class:`~pbfast.pocketbase.filesystem.FileChanges`); the caller makes sure of it
for a request that never reaches its turn.

Only where PocketBase would write the files too: a multipart create to an existing, non-view collection whose
create rule is not null (null: only a superuser may create, and who is asking is known only in the turn), with
uploads for its file fields that each fit the field's ``maxSize`` and ``mimeTypes``, an id that is a plain
path segment, and room in the tenant's storage quota. Anything else takes the in-turn path unchanged.

Crashes: before the files, a note listing them is made durable in the tenant's ``deleted/`` prefix, due in
:data:`NOTE_DUE_SECONDS` (:mod:`~pbfast.pocketbase.filesystem.retention` then deletes those no record
references); once the request is done (committed or not) the note is deleted. A crash between the write and
the commit so leaves at most files that the tenant's next sweep (on open, then hourly) removes.

Thread-safety: :func:`plan_early` runs on the event loop; :func:`write_early` blocks (run it on a thread);
an :class:`EarlyUploads` belongs to one request.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Final

import orjson

from pbfast.logs import component_logger
from pbfast.pocketbase.apis.form_body import FormBody, record_form_body
from pbfast.pocketbase.apis.multipart import UploadedFile
from pbfast.pocketbase.apis.request import TenantRequest, record_body_limit
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.fields import FileField
from pbfast.pocketbase.filesystem import FileChanges, StorageError, TenantFiles, files_of
from pbfast.pocketbase.filesystem.names import detect_type, normalize_name, random_suffix
from pbfast.pocketbase.gocompat.regexp import generate_by_pattern

__all__ = ["MAX_EARLY_WRITES", "NOTE_DUE_SECONDS", "EarlyUploads", "plan_early", "write_early"]

log = component_logger("Files")

NOTE_DUE_SECONDS: Final = 3600.0  # a crash's leftovers go at the first sweep after this (requests end long before)
MAX_EARLY_WRITES: Final = 32  # early writes in flight per process; more take the in-turn path (bounded disk use)
_PLAIN_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,255}")  # a client's id the files may be stored under

_in_flight = threading.BoundedSemaphore(MAX_EARLY_WRITES)


@dataclass(slots=True)
class _Named:
    name: str  # the stored name (PocketBase's, with its random suffix)
    content_type: str  # sniffed from the bytes


@dataclass(slots=True)
class EarlyUploads:
    """One create's uploads written before its turn (see the module doc)."""

    form: FormBody
    collection_id: str
    record_id: str
    drawn_id: bool  # the id was drawn here, from the id field's pattern (the client sent none): the save uses it
    files: TenantFiles
    changes: FileChanges
    named: dict[int, tuple[UploadedFile, _Named]] = field(default_factory=dict)  # by id() of the upload
    written: bool = False
    _slot: bool = False
    _turn_started: bool = False
    _released: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def name_of(self, upload: UploadedFile) -> _Named | None:
        found = self.named.get(id(upload))
        return found[1] if found is not None and found[0] is upload and self.written else None

    def path(self, name: str) -> str:
        return f"{self.collection_id}/{self.record_id}/{name}"

    def begin_turn(self) -> bool:
        """The request's turn starts (on its thread): False when the request was released meanwhile (it went
        away), and the turn must do nothing. Once started, the turn releases it at its end (:meth:`release`)."""
        with self._lock:
            if self._released:
                return False
            self._turn_started = True
            return True

    def release_unless_started(self) -> None:
        """The request is done on the event loop: release it unless its turn started (a cancelled wait does
        not stop a started turn, which may still commit: the turn releases it then)."""
        with self._lock:
            if self._turn_started:
                return
        self.release()

    def release(self) -> None:
        """The request is done: whatever of its files its transaction did not keep goes (a committed save handed
        its files over already), then its note."""
        with self._lock:
            if self._released:
                return
            self._released = True
        self.changes.rolled_back()
        if self._slot:
            self._slot = False
            _in_flight.release()


def plan_early(request: TenantRequest) -> EarlyUploads | None:
    """What :func:`write_early` would write for this create, or None where the in-turn path must answer (see the
    module doc). Parses the form (a malformed one: None; the handler answers it)."""
    tenant = request.tenant
    collection = tenant.collection(request.params.get("collection", ""))
    if collection is None or collection.type == "view" or collection.createRule is None:
        return None
    if not (request.header("content-type") or "").lower().lstrip().startswith("multipart/form-data"):
        return None
    try:
        form = record_form_body(request, record_body_limit(collection))
    except Exception:  # noqa: BLE001 - the handler parses it again and answers
        return None
    if form is None or not form.multipart or form.empty or not form.files:
        return None
    sent_id = form.data.get("id", "")
    drawn = sent_id == ""
    record_id = _drawn_id(collection) if drawn else sent_id
    if not (isinstance(record_id, str) and _PLAIN_ID.fullmatch(record_id)):
        return None
    uploads = _field_uploads(collection, form)
    if uploads is None:
        return None
    files = files_of(tenant)
    size = sum(len(upload.data) for upload, _ in uploads)
    if tenant.max_bytes is not None and files.stored_bytes + size > tenant.max_bytes:
        return None  # the turn answers the quota (it measures the database too)
    if not _in_flight.acquire(blocking=False):
        return None
    early = EarlyUploads(form, collection.id, record_id, drawn, files, request.file_changes, _slot=True)
    for upload, _field in uploads:
        early.named[id(upload)] = (upload, _Named(normalize_name(upload.filename, upload.data),
                                                  detect_type(upload.data)[0]))
    return early


def _drawn_id(collection: Collection) -> str | None:
    """An id drawn as the collection's id field draws one for a create that sends none (None: it draws none)."""
    field = collection.field("id")
    pattern = getattr(field, "autogenerate_pattern", "") if field is not None else ""
    try:
        return generate_by_pattern(pattern) if pattern else None
    except Exception:  # noqa: BLE001 - the turn draws it and answers as PocketBase does
        return None


def _field_uploads(collection: Collection, form: FormBody) -> list[tuple[UploadedFile, FileField]] | None:
    """The uploads sent for the collection's file fields, or None when one breaks its field's ``maxSize`` or
    ``mimeTypes`` (PocketBase refuses those before writing anything) or there are none."""
    found: list[tuple[UploadedFile, FileField]] = []
    for item in collection.fields:
        if not isinstance(item, FileField):
            continue
        for key in (item.name, "+" + item.name, item.name + "+"):
            for upload in form.files.get(key, ()):
                if len(upload.data) > item.effective_max_size():
                    return None
                if item.mime_types and detect_type(upload.data)[0].split(";")[0].strip() not in item.mime_types:
                    return None
                found.append((upload, item))
    return found or None


def write_early(early: EarlyUploads) -> bool:
    """Write the planned files (the note first, see the module doc); whether they were all written. On a
    failure what was written is deleted again and the in-turn path takes over. Blocks: call on a thread."""
    files = early.files
    note = None
    paths = [early.path(named.name) for _, named in early.named.values()]
    try:
        if files.deleted_prefix:
            note = f"{files.deleted_prefix}{int(time.time() + NOTE_DUE_SECONDS)}-{random_suffix()}.json"
            files.store.create(note, orjson.dumps(paths))
            early.changes.notes.append((files, note))
        for (upload, _named), path in zip(early.named.values(), paths, strict=True):
            files.create(path, upload.data)
            early.changes.uploaded.append((files, path))
    except StorageError as err:
        log.warning("%s: early write of an upload failed (written in the turn instead): %s", files.prefix, err)
        early.changes.rolled_back()
        return False
    with early._lock:
        early.written = not early._released
    if not early.written:  # the request went away while its files were written
        early.changes.rolled_back()
    return early.written
