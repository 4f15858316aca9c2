"""A record create's or update's uploads written to the store before the tenant's turn (:func:`write_early`), so
that the turn itself only validates and saves the row: the upload's fsyncs (its bytes, its directories: ~75 % of a
turn on a loaded disk) no longer keep the tenant's other requests waiting, and several requests' fsyncs,
issued at once from their threads, share the file system's journal commits.

How the turn sees them: :class:`EarlyUploads` holds the parsed form (read once, on the event loop), the record
id the files were written under (the client's, or one drawn here that the save then uses) and each upload's
stored name; :class:`~pbfast.pocketbase.apis.file_uploads.PendingUploads` takes those names instead of drawing
new ones and writes nothing for them. What the saved record does not keep, and everything of a request that is
refused or fails (its rules, validation, unique constraints, quota, a closed tenant), is deleted as the
in-turn uploads always were (:class:`~pbfast.pocketbase.filesystem.FileChanges`); the caller makes sure of it
for a request that never reaches its turn.

Only where PocketBase would write the files too: a multipart create (update) to an existing, non-view collection
whose create (update) rule does not refuse the request for certain before the turn (a null rule for anyone but a
superuser's token, a rule of request values only that fails: :mod:`.early_rules`) and that has no password field, with uploads for its file fields that each fit the field's ``maxSize`` and
``mimeTypes``, an id that is a plain path segment, and room in the tenant's storage quota. Anything else takes
the in-turn path unchanged. An update's files go beside the record's others under their new, randomly suffixed
names; the files its new values replace are deleted after the commit as in the in-turn path (``field-``, a new
value for a single file field), and a record missing or not visible to the caller (404 in the turn) leaves none.

Writes go in batches (:class:`_Writers`): the requests waiting when a writer thread is free, one tenant's
files written together and fsynced in one round. Crashes: before a batch's files, a note listing them is made
durable in the tenant's ``deleted/`` prefix, due in :data:`NOTE_DUE_SECONDS`
(:mod:`~pbfast.pocketbase.filesystem.retention` then deletes those no record references). On the local store the
note is a line appended to the tenant's journal of pending uploads (:mod:`.upload_journal`: one ``fdatasync``,
emptied once its requests are done); on S3 it is an object per batch, deleted once every request of the batch is
done (committed or not). A crash between the write and the commit so leaves at most files that the tenant's next
sweep (on open, then hourly) removes.

Thread-safety: :func:`plan_early` and :func:`write_early` run on the event loop (the writes on the writer
threads); an :class:`EarlyUploads` belongs to one request, its flags guarded by its lock (the loop, a writer
thread and the request's database thread touch it).
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Final

import orjson

from pbfast.logs import component_logger
from pbfast.pocketbase.apis.early_rules import refused_before_turn
from pbfast.pocketbase.apis.form_body import FormBody, record_form_body
from pbfast.pocketbase.apis.multipart import UploadedFile
from pbfast.pocketbase.apis.request import TenantRequest, record_body_limit
from pbfast.pocketbase.apis.upload_journal import NOTE_DUE_SECONDS, Generation, journal_of
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.fields import FileField, PasswordField
from pbfast.pocketbase.filesystem import FileChanges, StorageError, TenantFiles, files_of
from pbfast.pocketbase.filesystem.names import detect_type, normalize_name, random_suffix
from pbfast.pocketbase.gocompat.regexp import generate_by_pattern

__all__ = ["MAX_BATCH", "MAX_EARLY_WRITES", "NOTE_DUE_SECONDS", "WRITER_THREADS", "EarlyUploads", "plan_early", "write_early"]

log = component_logger("Files")

MAX_EARLY_WRITES: Final = 32  # early writes in flight per process; more take the in-turn path (bounded disk use)
MAX_BATCH: Final = 64  # requests one batch of early writes takes at most
WRITER_THREADS: Final = 2  # a slow store (S3) of one tenant does not hold every other's writes
_PLAIN_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,255}")  # a client's id the files may be stored under

_in_flight = threading.BoundedSemaphore(MAX_EARLY_WRITES)
_writers: _Writers


@dataclass(slots=True)
class _Named:
    name: str  # the stored name (PocketBase's, with its random suffix)
    content_type: str  # sniffed from the bytes


class _SharedNote:
    """A note listing the uploads of one batch of early writes (see the module doc), deleted once every request
    of the batch is done."""

    def __init__(self, files: TenantFiles, key: str, requests: int) -> None:
        self.files, self.key = files, key
        self._left = requests
        self._lock = threading.Lock()

    def done(self) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:  # on a writer thread, with the next batch when they are busy
            _writers.later(lambda: _delete_note(self.files, self.key))


@dataclass(slots=True)
class EarlyUploads:
    """One create's or update's uploads written before its turn (see the module doc)."""

    form: FormBody
    collection_id: str
    record_id: str
    drawn_id: bool  # the id was drawn here, from the id field's pattern (the client sent none): the save uses it
    files: TenantFiles
    changes: FileChanges
    named: dict[int, tuple[UploadedFile, _Named]] = field(default_factory=dict)  # by id() of the upload
    written: bool = False
    note: _SharedNote | Generation | None = None
    in_journal: bool = False  # its record id was reserved: the journal names its directory, and `note` is held
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
            note = self.note
        self.changes.rolled_back()
        if note is not None:
            note.done()
        if self._slot:
            self._slot = False
            _in_flight.release()


def plan_early(request: TenantRequest, update: bool = False) -> EarlyUploads | None:
    """What :func:`write_early` would write for this create (``update``: this update of the record
    ``params["id"]``), or None where the in-turn path must answer (see the module doc). Parses the form (a
    malformed one: None; the handler answers it)."""
    if not (request.header("content-type") or "").lower().lstrip().startswith("multipart/form-data"):
        return None  # (first: most writes are JSON)
    tenant = request.tenant
    collection = tenant.collection(request.params.get("collection", ""))
    if collection is None or collection.type == "view":
        return None
    if refused_before_turn(request, collection, collection.updateRule if update else collection.createRule):
        return None  # the turn refuses it (a refused client costs no write, fsyncs and delete)
    if any(isinstance(item, PasswordField) for item in collection.fields):
        # A password (every auth collection's, any collection's password field) is hashed off the turn, which then
        # runs again (auth.BcryptFirst): the first run's rollback would drop the files written for the create.
        return None
    try:
        form = record_form_body(request, record_body_limit(collection))
    except Exception:  # noqa: BLE001 - the handler parses it again and answers
        return None
    if form is None or not form.multipart or form.empty or not form.files:
        return None
    record_id: object
    if update:  # the record's files go beside its others (a missing record: 404 in the turn, and they go)
        drawn, record_id = False, request.params.get("id", "")
    else:
        sent_id = form.data.get("id", "")
        drawn = sent_id == ""
        record_id = "" if drawn else sent_id
    if not (drawn or (isinstance(record_id, str) and _PLAIN_ID.fullmatch(record_id))):
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
    held: Generation | None = None
    if drawn:  # one the journal names already (no line of its own to wait for), else drawn here
        journal = journal_of(files, _writers.later)
        pattern = _id_pattern(collection)
        taken = journal.take_reserved(collection.id, pattern, lambda: _drawn_id(collection)) \
            if journal is not None and pattern else None
        record_id, held = taken if taken is not None else (_drawn_id(collection), None)
        if not (isinstance(record_id, str) and _PLAIN_ID.fullmatch(record_id)):
            _in_flight.release()
            return None
    assert isinstance(record_id, str)
    early = EarlyUploads(form, collection.id, record_id, drawn, files, request.file_changes, note=held,
                         in_journal=held is not None, _slot=True)
    for upload, content_type in uploads:
        early.named[id(upload)] = (upload, _Named(normalize_name(upload.filename, upload.data), content_type))
    return early


def _id_pattern(collection: Collection) -> str:
    field = collection.field("id")
    pattern = getattr(field, "autogenerate_pattern", "") if field is not None else ""
    return pattern if isinstance(pattern, str) else ""


def _drawn_id(collection: Collection) -> str | None:
    """An id drawn as the collection's id field draws one for a create that sends none (None: it draws none, or
    not one the files may be stored under)."""
    pattern = _id_pattern(collection)
    try:
        drawn = generate_by_pattern(pattern) if pattern else None
    except Exception:  # noqa: BLE001 - the turn draws it and answers as PocketBase does
        return None
    return drawn if drawn is not None and _PLAIN_ID.fullmatch(drawn) else None


def _field_uploads(collection: Collection, form: FormBody) -> list[tuple[UploadedFile, str]] | None:
    """The uploads sent for the collection's file fields with their sniffed types, or None when one breaks its
    field's ``maxSize`` or ``mimeTypes`` (PocketBase refuses those before writing anything) or there are none."""
    found: list[tuple[UploadedFile, str]] = []
    for item in collection.fields:
        if not isinstance(item, FileField):
            continue
        for key in (item.name, "+" + item.name, item.name + "+"):
            for upload in form.files.get(key, ()):
                content_type = detect_type(upload.data)[0]
                if len(upload.data) > item.effective_max_size():
                    return None
                if item.mime_types and content_type.split(";")[0].strip() not in item.mime_types:
                    return None
                found.append((upload, content_type))
    return found or None


async def write_early(early: EarlyUploads) -> bool:
    """Write the planned files before the request's turn (see the module doc); whether they were all written
    (else nothing of them stays, and the in-turn path takes over)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bool] = loop.create_future()
    _writers.submit(early, loop, done)
    return await done


class _Writers:
    """Threads that write early uploads in batches: each takes every request waiting (up to
    :data:`MAX_BATCH`), writes one note per tenant for the batch, then all its files, then fsyncs them all. A
    request's hand-over costs a queue put and a wake-up of the loop, and a batch's fsyncs share the journal's
    commits. Started on first use in each process (a forked worker starts its own)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | Callable[[], None]] = queue.SimpleQueue()
        self._started_in = 0
        self._start_lock = threading.Lock()

    def submit(self, early: EarlyUploads, loop: asyncio.AbstractEventLoop, done: asyncio.Future[bool]) -> None:
        self._started().put((early, loop, done))

    def later(self, work: Callable[[], None]) -> None:
        """Blocking tidy-up (a batch's note deleted, a journal emptied) once requests are done: a writer thread
        takes it with its next batch (a busy writer wakes for nothing extra), then runs it."""
        self._started().put(work)

    def _started(self) -> queue.SimpleQueue[_Job | Callable[[], None]]:
        if self._started_in != os.getpid():
            with self._start_lock:
                if self._started_in != os.getpid():
                    self._jobs = queue.SimpleQueue()
                    for index in range(WRITER_THREADS):
                        threading.Thread(target=self._run, args=(self._jobs,), name=f"pbfast-uploads-{index}",
                                         daemon=True).start()
                    self._started_in = os.getpid()
        return self._jobs

    @staticmethod
    def _run(jobs: queue.SimpleQueue[_Job | Callable[[], None]]) -> None:
        while True:
            batch = [jobs.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(jobs.get_nowait())
                except queue.Empty:
                    break
            by_tenant: dict[int, list[_Job]] = {}
            tidy: list[Callable[[], None]] = []
            for job in batch:
                if isinstance(job, tuple):
                    by_tenant.setdefault(id(job[0].files), []).append(job)
                else:
                    tidy.append(job)
            for group in by_tenant.values():
                try:
                    written = _write_batch([early for early, _, _ in group])
                except BaseException as err:  # noqa: BLE001 - each request takes the in-turn path
                    log.error("early upload writes failed: %r", err, exc_info=err)
                    written = False
                for early, loop, done in group:
                    _settle(loop, done, _written(early, written))
            for work in tidy:
                try:
                    work()
                except Exception:  # noqa: BLE001 - the writer thread must live on for the next batches
                    log.exception("tidying up after early uploads failed")


_Job = tuple[EarlyUploads, asyncio.AbstractEventLoop, "asyncio.Future[bool]"]


def _settle(loop: asyncio.AbstractEventLoop, done: asyncio.Future[bool], written: bool) -> None:
    def settle() -> None:
        if not done.cancelled():
            done.set_result(written)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop closed (shutdown): nobody waits
        pass


def _write_batch(batch: list[EarlyUploads]) -> bool:
    """Write the files of several requests of one tenant: their note first (durable before any file), then the
    files with one round of fsyncs. On a failure nothing stays."""
    files = batch[0].files
    items = [(early.path(named.name), upload.data) for early in batch for upload, named in early.named.values()]
    note: _SharedNote | Generation | None = None
    try:
        journal = journal_of(files, _writers.later)
        if journal is not None:  # the local store: a line of the tenant's journal, in the files' call
            unnamed = [early for early in batch if not early.in_journal]  # reserved ids: named already
            if unnamed:
                line = [early.path(named.name) for early in unnamed for _, named in early.named.values()]
                note = journal.write(orjson.dumps(line) + b"\n", items, len(unnamed))
            else:
                files.create_many(items)
        else:
            if files.deleted_prefix:
                key = f"{files.deleted_prefix}{int(time.time() + NOTE_DUE_SECONDS)}-{random_suffix()}.json"
                # durable before any file (its directory's entry too): one call of the extension, as the files
                files.store.create_many([(key, orjson.dumps([path for path, _ in items]))])
                note = _SharedNote(files, key, len(batch))
            files.create_many(items)
    except StorageError as err:
        log.warning("%s: early writes of %d requests' uploads failed (written in their turns instead): %s",
                    files.prefix, len(batch), err)
        if isinstance(note, _SharedNote):
            _delete_note(files, note.key)
        return False
    for early in batch:
        _hand_over(early, None if early.in_journal else note)  # a reserved id's request holds its own
    return True


def _delete_note(files: TenantFiles, key: str) -> None:
    try:
        files.store.delete(key)
    except StorageError as err:
        log.warning("%s: deleting the note %s failed (the sweep does): %s", files.prefix, key, err)
    except Exception:  # noqa: BLE001 - runs on a writer thread, which must live on for the next batches
        log.exception("%s: deleting the note %s failed (the sweep does)", files.prefix, key)


def _hand_over(early: EarlyUploads, note: _SharedNote | Generation | None) -> None:
    """The request's files are written: it uses them, or, released meanwhile (it went away), they go."""
    paths = [(early.files, early.path(named.name)) for _, named in early.named.values()]
    with early._lock:
        released = early._released
        if not released:
            if note is not None:
                early.note = note
            early.changes.uploaded += paths
            early.written = True
    if released:
        FileChanges(uploaded=paths).rolled_back()
        if note is not None:
            note.done()


def _written(early: EarlyUploads, written: bool) -> bool:
    with early._lock:
        return written and early.written


_writers = _Writers()
