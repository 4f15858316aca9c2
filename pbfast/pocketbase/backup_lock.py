"""Which backup or restore of a tenant runs now, known to every process that opens the tenant's directory (a
node's worker processes and its main process, which each serve the tenant's backup routes or its backup cron):
an exclusive ``flock`` on ``<tenant dir>/.backup-running``, held while it runs, the backup's name written in the
file. The lock goes with the process that holds it, also when it dies."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Final

__all__ = ["BackupLock", "running_backup"]

LOCK_FILE: Final = ".backup-running"  # not in a backup's archive: that takes the databases and files only
_MAX_NAME: Final = 1024


class BackupLock:
    """A held lock (:meth:`take`); :meth:`release` once the backup or restore is over."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def take(cls, directory: Path, name: str) -> BackupLock | None:
        """The lock for ``name``, None while another backup or restore of the tenant holds it."""
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, name.encode()[:_MAX_NAME], 0)
        return cls(fd)

    def release(self) -> None:
        try:
            os.ftruncate(self._fd, 0)
        finally:
            os.close(self._fd)  # drops the lock


def running_backup(directory: Path) -> str | None:
    """The name of the backup or restore of the tenant that runs now (in any process; "" when its name is
    not written yet), None when none does."""
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, _MAX_NAME, 0).decode(errors="replace")
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
