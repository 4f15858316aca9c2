"""Token files: ``<data-dir>/admin.token`` and ``cluster.token``, created once with mode 0600 and an atomic
rename, read back on every start."""

from __future__ import annotations

import secrets
import stat
from pathlib import Path

from pbfast.durable import write_atomically

__all__ = ["ADMIN_TOKEN_FILE", "CLUSTER_TOKEN_FILE", "TokenFileError", "load_or_create_token"]

ADMIN_TOKEN_FILE = "admin.token"
CLUSTER_TOKEN_FILE = "cluster.token"


class TokenFileError(RuntimeError):
    """The token file exists but cannot be used (unreadable, empty, or open to other users)."""


def load_or_create_token(data_dir: Path, file_name: str) -> tuple[str, Path, bool]:
    """Return ``(token, path, created)``: the stored token, or a new random one written durably.

    The new file is written to a temporary name with mode 0600, fsynced, then renamed into place, so a
    crash never leaves a half-written token. A stored file readable by group or others is refused.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / file_name
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None:
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise TokenFileError(f"{path} is accessible by other users; run 'chmod 600 {path}'")
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as err:
            raise TokenFileError(f"cannot read {path}: {err.strerror}") from err
        if not token:
            raise TokenFileError(f"{path} is empty; delete it to generate a new token")
        return token, path, False

    token = secrets.token_urlsafe(32)
    write_atomically(path, (token + "\n").encode(), 0o600)
    return token, path, True
