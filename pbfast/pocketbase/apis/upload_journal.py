"""A tenant's journal of pending early uploads on the local object store: the crash note of
:mod:`~pbfast.pocketbase.apis.early_uploads`, kept open across batches instead of one note file per batch.

Why: a note per batch cost a new file's fsync, its directory's fsync, and its create and unlink (two of the
five fsyncs of a lone upload, each a device flush on a journal-less disk). Here a batch appends one line (the
JSON list of its store paths) to the journal's current file, which exists and is durable already: one
``fdatasync``, done by the extension in the same call that then creates the files
(:meth:`~pbfast.pocketbase.filesystem.store.LocalObjectStore.append_then_create_many`), so the line is durable
before any file of the batch is written.

Files ("generations"): ``{deleted prefix}pending-{due}-{random}.jsonl``, one line per batch. A generation takes
lines for :data:`ROLL_SECONDS` (or :data:`ROLL_BYTES`) after it was created, then the next batch starts a new one
(created and made durable, its directory entry too, with that batch's line). Its due time is its creation plus
:data:`NOTE_DUE_SECONDS` plus :data:`ROLL_SECONDS`: every request it names started before its last line, an hour
before it is due, as with the per-batch notes. :func:`~pbfast.pocketbase.filesystem.retention.sweep_deleted`
reads both forms (its ``pending-`` prefix keeps a node of the older code from reading one as a single JSON list).

Compaction: once every request a generation names is done (committed, refused or gone), the generation is
emptied (truncated, while it still takes lines) or deleted (after its time, or when a newer one took over). Neither
is fsynced: lost to a power cut, they leave lines naming files that are gone or that a committed record
references, and the sweep deletes neither of those. A crash (kill -9, power loss) leaves the lines of requests in
flight: their files, named by no record, go at the tenant's first sweep after the generation is due.

Reserved ids (:meth:`UploadJournal.take_reserved`): a create that sends no id takes, where it can, one of
:data:`RESERVED_IDS` ids drawn ahead for its collection whose record directories a line names already
(``"{collectionId}/{id}/"``: the sweep deletes such a prefix unless a record has that id). Its batch then needs no
line for it: its files' fsyncs are the only flushes it waits for. A reservation is handed out only for
:data:`RESERVATION_SECONDS` after its line was written (so well before its generation is due: the sweep never deletes
a directory a pending upload is being written into) and holds its generation until it runs out, or until the
next create finds it expired (an idle tenant's stays until then, or until the sweep deletes it once due).

Thread-safety: :meth:`UploadJournal.write` runs on the early-upload writer threads (the append and the files'
creation outside the lock, so two writers' batches of one tenant write at once); :meth:`Generation.done` on any
thread; the journal's lock guards which generation is current and every generation's counters.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import orjson

from pbfast.logs import component_logger
from pbfast.pocketbase.filesystem import LocalObjectStore, StorageError, TenantFiles
from pbfast.pocketbase.filesystem.names import random_suffix

__all__ = ["JOURNAL_PREFIX", "NOTE_DUE_SECONDS", "ROLL_BYTES", "ROLL_SECONDS", "Generation", "UploadJournal",
           "journal_of"]

log = component_logger("Files")

NOTE_DUE_SECONDS: Final = 3600.0  # a crash's leftovers go at the first sweep after this (requests end long before)
ROLL_SECONDS: Final = 60.0  # a generation takes lines this long after its creation
ROLL_BYTES: Final = 1 << 20  # ... or until it is this large (~15,000 uploads' names)
JOURNAL_PREFIX: Final = "pending-"
RESERVED_IDS: Final = 32  # ids reserved a line (0: none)
RESERVATION_SECONDS: Final = 30.0  # a reservation's ids are handed out this long after its line

_journals: weakref.WeakKeyDictionary[TenantFiles, UploadJournal] = weakref.WeakKeyDictionary()
_journals_lock = threading.Lock()


def journal_of(files: TenantFiles, tidy_later: Callable[[Callable[[], None]], None]) -> UploadJournal | None:
    """The journal of a tenant's files (one per process), or None where there is none: no ``deleted/`` prefix
    (no configured store) or a store other than the local one (S3 has no append: a note per batch there)."""
    if not files.deleted_prefix or not isinstance(files.store, LocalObjectStore):
        return None
    found = _journals.get(files)
    if found is None:
        with _journals_lock:
            found = _journals.get(files)
            if found is None:
                found = _journals[files] = UploadJournal(files, files.store, tidy_later)
    return found


@dataclass(slots=True)
class _Reservation:
    ids: list[str]
    generation: Generation  # held (one request's worth) until the reservation expires or runs out
    expires: float


class Generation:
    """One file of a journal (see the module doc); held by each request of the batches it names until
    :meth:`done`."""

    __slots__ = ("created", "gone", "journal", "key", "left", "size")

    def __init__(self, journal: UploadJournal, key: str, created: float, size: int) -> None:
        self.journal, self.key, self.created, self.size = journal, key, created, size
        self.left = 0  # requests named here and not done yet
        self.gone = False  # deleted (or being deleted)

    def done(self) -> None:
        """One request named here is done (any thread): the last one leaves the file to be emptied or deleted."""
        self.journal.request_done(self)


class UploadJournal:
    """A tenant's journal of pending early uploads (see the module doc)."""

    def __init__(self, files: TenantFiles, store: LocalObjectStore,
                 tidy_later: Callable[[Callable[[], None]], None]) -> None:
        self.files, self._store = files, store
        self._tidy_later = tidy_later  # runs blocking work off the caller's thread (the writer threads)
        self._lock = threading.Lock()
        self._current: Generation | None = None
        self.reserved_ids = RESERVED_IDS
        self._reserved: dict[tuple[str, str], _Reservation] = {}  # by collection id and id pattern
        self._reserving: set[tuple[str, str]] = set()

    @property
    def current(self) -> Generation | None:
        return self._current

    def write(self, line: bytes, items: list[tuple[str, bytes]], requests: int) -> Generation:
        """Note ``line`` (a batch's paths, one JSON list and a newline) durably, then create ``items`` (storage
        paths and bytes) as :meth:`TenantFiles.create_many` does. The generation returned is held by the batch's
        ``requests`` (each calls :meth:`Generation.done`). Raises :class:`StorageError` (nothing is created, and
        nothing held)."""
        retired: Generation | None = None
        with self._lock:
            now = time.time()
            generation = self._current
            fresh = generation is None or now - generation.created >= ROLL_SECONDS or generation.size >= ROLL_BYTES
            if fresh:  # created under the lock: no other writer appends to it before it and its entry are durable
                key = (f"{self.files.deleted_prefix}{JOURNAL_PREFIX}{int(now + NOTE_DUE_SECONDS + ROLL_SECONDS)}-"
                       f"{random_suffix()}.jsonl")
                self._store.create_many([(key, line)])
                if generation is not None and generation.left == 0 and not generation.gone:
                    generation.gone, retired = True, generation
                generation = self._current = Generation(self, key, now, len(line))
            else:
                assert generation is not None
                generation.size += len(line)
            generation.left += requests
        if retired is not None:
            self._delete(retired)
        try:
            self.files.create_many(items, None if fresh else (generation.key, line))
        except BaseException:
            with self._lock:  # the file may be gone or damaged: the next batch starts a new one
                if self._current is generation:
                    self._current = None
            for _ in range(requests):
                generation.done()
            raise
        return generation

    def reserved(self, collection_id: str) -> int:
        """Ids at hand for creates in the collection (expired or not)."""
        with self._lock:
            return sum(len(found.ids) for key, found in self._reserved.items() if key[0] == collection_id)

    def take_reserved(self, collection_id: str, pattern: str,
                      draw: Callable[[], str | None]) -> tuple[str, Generation] | None:
        """An id reserved for a create in the collection (see the module doc) and its generation, held for the
        request (it calls :meth:`Generation.done`); None when none is at hand. Running low or out, more are reserved
        on a writer thread with ``draw`` (an id from ``pattern``, or None). Never blocks (the event loop calls it)."""
        if self.reserved_ids <= 0:
            return None
        key = (collection_id, pattern)
        released: Generation | None = None
        taken: tuple[str, Generation] | None = None
        with self._lock:
            found = self._reserved.get(key)
            if found is not None and (time.time() >= found.expires or not found.ids):
                del self._reserved[key]
                released, found = found.generation, None
            if found is not None:
                taken = found.ids.pop(), found.generation
                found.generation.left += 1
                if not found.ids:  # used up: its hold goes now, not at the next create
                    del self._reserved[key]
                    released = found.generation
            low = found is None or len(found.ids) <= self.reserved_ids // 4
            reserve = low and key not in self._reserving
            if reserve:
                self._reserving.add(key)
        if released is not None:
            released.done()
        if reserve:
            self._tidy_later(lambda: self._reserve(key, draw))
        return taken

    def _reserve(self, key: tuple[str, str], draw: Callable[[], str | None]) -> None:
        """Reserve ids for a collection: their directories noted in one line (on a writer thread)."""
        try:
            ids = [found for found in (draw() for _ in range(self.reserved_ids)) if found is not None]
            if not ids:
                return
            generation = self.write(orjson.dumps([f"{key[0]}/{found}/" for found in ids]) + b"\n", [], 1)
            with self._lock:
                replaced = self._reserved.get(key)
                self._reserved[key] = _Reservation(ids, generation, time.time() + RESERVATION_SECONDS)
            if replaced is not None:
                replaced.generation.done()
        except StorageError as err:
            log.warning("%s: reserving record ids failed (drawn one by one): %s", self.files.prefix, err)
        finally:
            with self._lock:
                self._reserving.discard(key)

    def request_done(self, generation: Generation) -> None:
        with self._lock:
            generation.left -= 1
            idle = generation.left == 0
        if idle:
            self._tidy_later(lambda: self._tidy(generation))

    def _tidy(self, generation: Generation) -> None:
        """Empty or delete a generation none of whose requests is pending (on a writer thread)."""
        with self._lock:
            if generation.left or generation.gone:
                return  # a newer batch's line is in it, or it went already
            if generation is self._current and time.time() - generation.created < ROLL_SECONDS:
                if generation.size:
                    try:  # under the lock: no line is appended meanwhile (a writer holds it by `left` first)
                        self._store.empty(generation.key)
                        generation.size = 0
                    except StorageError as err:
                        log.warning("%s: emptying the journal %s failed (the sweep does): %s", self.files.prefix,
                                    generation.key, err)
                return
            generation.gone = True
            if generation is self._current:
                self._current = None
        self._delete(generation)

    def _delete(self, generation: Generation) -> None:
        try:
            self._store.delete(generation.key)
        except StorageError as err:
            log.warning("%s: deleting the journal %s failed (the sweep does): %s", self.files.prefix, generation.key,
                        err)
