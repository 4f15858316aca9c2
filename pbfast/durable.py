"""Durable file writes: fsync a file or a directory, replace a small file atomically.

A rename is durable only once the directory that holds it is fsynced; a file's bytes only once the file
is. Several fsyncs issued at once (:func:`fsync_together`) share the file system's journal commits: on the
ext4 disks measured, a new file and its directories took 0.6-1.5 ms together against 3-6 ms one after another. Every small state file of pbfast (tokens, the node and instance ids, a local copy's marker) is written
the same way: to a temporary name beside it, fsynced, renamed over the old one, and the directory fsynced,
so a crash leaves either the old file or the whole new one.

Blocking: call from a worker thread where an event loop is running.
"""

from __future__ import annotations

import os
import queue
import secrets
import threading
from collections.abc import Sequence
from pathlib import Path

__all__ = ["fsync_directory", "fsync_file", "fsync_together", "temporary_name", "write_atomically"]

SYNC_THREADS = 4  # that fsync directories beside a caller's own fsync (fsync_together); they only wait on the disk


class _DirectorySyncs:
    """Threads that fsync the directories handed to them, each job answered through its own lock: a hand-over
    costs a queue put and a lock, not a ThreadPoolExecutor's future and condition (an upload makes two).
    Started on first use in each process (a forked child starts its own)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Path, threading.Lock, list[OSError]]] = queue.SimpleQueue()
        self._started_in = 0
        self._start_lock = threading.Lock()

    def submit(self, directory: Path, failures: list[OSError]) -> threading.Lock:
        """Queue an fsync of ``directory``; the lock returned is released once it is done (its error, if
        any, appended to ``failures``)."""
        if self._started_in != os.getpid():
            self._start()
        done = threading.Lock()
        done.acquire()
        self._jobs.put((directory, done, failures))
        return done

    def _start(self) -> None:
        with self._start_lock:
            if self._started_in == os.getpid():
                return
            self._jobs = queue.SimpleQueue()
            for index in range(SYNC_THREADS):
                threading.Thread(target=self._run, args=(self._jobs,), name=f"fsync-{index}", daemon=True).start()
            self._started_in = os.getpid()

    @staticmethod
    def _run(jobs: queue.SimpleQueue[tuple[Path, threading.Lock, list[OSError]]]) -> None:
        while True:
            directory, done, failures = jobs.get()
            try:
                fsync_directory(directory)
            except OSError as err:
                failures.append(err)
            finally:
                done.release()


_SYNCS = _DirectorySyncs()


def fsync_directory(directory: Path) -> None:
    """Make the entries of ``directory`` (renames, creations, removals) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Make the bytes of the file at ``path`` durable."""
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def fsync_together(fd: int, directories: Sequence[Path]) -> None:
    """Make the open file ``fd`` and the entries of ``directories`` durable, the fsyncs issued at once (each
    change they cover must be made before the call). Raises the first :class:`OSError` once all are done."""
    failures: list[OSError] = []
    pending = [_SYNCS.submit(directory, failures) for directory in dict.fromkeys(directories)]
    failure: OSError | None = None
    try:
        os.fsync(fd)
    except OSError as err:
        failure = err
    for done in pending:
        done.acquire()
    failure = failure or (failures[0] if failures else None)
    if failure is not None:
        raise failure


def temporary_name(path: Path) -> Path:
    """Where :func:`write_atomically` writes ``path`` first: ``.<name>.<pid>-<random>.tmp`` beside it, unique
    per writer (a leftover of a crash matches ``.<name>.*.tmp``)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def write_atomically(path: Path, data: bytes, mode: int = 0o666) -> None:
    """Replace the file at ``path`` with ``data``, atomically and durably. ``mode`` applies to a new file
    (less the umask, as for :func:`open`); the directory must exist."""
    temporary = temporary_name(path)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
