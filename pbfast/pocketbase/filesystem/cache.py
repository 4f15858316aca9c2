"""The node's bounded local cache of files read from the object store (originals and thumbs): files named
by a hash of their key in one directory, the least recently used dropped beyond ``max_bytes``. It starts
empty (a leftover directory from an earlier run is cleared): it is a cache, never the copy of record.

Thread-safety: any thread; the index is guarded by a lock, files are written to a temporary name and
renamed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Final

from pbfast.pocketbase.filesystem.store import StoredObject

__all__ = ["DEFAULT_CACHE_BYTES", "FileCache"]

DEFAULT_CACHE_BYTES: Final = 256 << 20
MAX_ENTRY_FRACTION: Final = 8  # a file larger than an eighth of the cache is never kept


class FileCache:
    def __init__(self, directory: Path, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._sizes: OrderedDict[str, int] = OrderedDict()  # key -> bytes, least recently used first
        self._total = 0
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.directory / hashlib.sha256(key.encode()).hexdigest()

    @property
    def total_bytes(self) -> int:
        return self._total

    def get(self, key: str) -> StoredObject | None:
        with self._lock:
            if key not in self._sizes:
                return None
            self._sizes.move_to_end(key)
        try:
            with open(self._path(key), "rb") as handle:
                return StoredObject(handle.read(), os.fstat(handle.fileno()).st_mtime)
        except OSError:
            self.drop(key)
            return None

    def put(self, key: str, stored: StoredObject) -> None:
        size = len(stored.data)
        if size > self.max_bytes // MAX_ENTRY_FRACTION:
            return
        try:
            fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
            with os.fdopen(fd, "wb") as handle:
                handle.write(stored.data)
            os.utime(temporary, (stored.modified, stored.modified))
            os.replace(temporary, self._path(key))
        except OSError:
            return  # a full disk only means a colder cache
        evicted: list[str] = []
        with self._lock:
            self._total += size - self._sizes.pop(key, 0)
            self._sizes[key] = size
            while self._total > self.max_bytes and self._sizes:
                old, old_size = self._sizes.popitem(last=False)
                self._total -= old_size
                evicted.append(old)
        for old in evicted:
            self._path(old).unlink(missing_ok=True)

    def drop(self, key: str) -> None:
        with self._lock:
            self._total -= self._sizes.pop(key, 0)
        self._path(key).unlink(missing_ok=True)

    def drop_prefix(self, prefix: str) -> None:
        with self._lock:
            keys = [key for key in self._sizes if key.startswith(prefix)]
        for key in keys:
            self.drop(key)
