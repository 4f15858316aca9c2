"""A tenant's application settings as PocketBase stores them (``core/settings_model.go``): one JSON
document in ``_params`` under the id ``settings``, read over PocketBase's defaults. Only what pbfast acts
on is typed here (the ``batch`` section); an imported PocketBase data dir keeps its settings.

There is no settings API yet (issue 17): the settings come with the data dir (an import, a restore) or
are the defaults of a fresh tenant. A value that is not what PocketBase's Go types accept keeps the
default; a document that is not JSON (PocketBase can store it encrypted) gives the defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import apsw
import orjson

__all__ = ["BatchSettings", "load_batch_settings"]

SETTINGS_ID: Final = "settings"


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """PocketBase's ``BatchConfig`` (``POST /api/batch``); off by default, as in PocketBase.

    ``timeout``: seconds a batch's transaction may take (0: PocketBase's 3); ``max_body_size``: bytes of a
    batch request's body (0: PocketBase's 128 MiB)."""

    enabled: bool = False
    max_requests: int = 50
    timeout: int = 3
    max_body_size: int = 0

    DEFAULT_TIMEOUT = 3
    DEFAULT_MAX_BODY_SIZE = 128 << 20

    @property
    def effective_timeout(self) -> int:
        return self.timeout if self.timeout > 0 else self.DEFAULT_TIMEOUT

    @property
    def effective_max_body_size(self) -> int:
        return self.max_body_size if self.max_body_size > 0 else self.DEFAULT_MAX_BODY_SIZE


def _stored_settings(conn: apsw.Connection) -> dict[str, Any]:
    try:
        row = conn.execute("SELECT value FROM _params WHERE id = ?", (SETTINGS_ID,)).fetchone()
    except apsw.SQLError:  # no _params table: not a PocketBase data dir we created or imported
        return {}
    if row is None or row[0] is None:
        return {}
    try:
        value = orjson.loads(row[0])
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _integer(value: object, default: int) -> int:
    """A JSON number Go decodes into an int (a whole number; bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    if isinstance(value, float) and not value.is_integer():
        return default
    return int(value)


def load_batch_settings(conn: apsw.Connection) -> BatchSettings:
    """The tenant's ``batch`` settings, over PocketBase's defaults."""
    batch = _stored_settings(conn).get("batch")
    if not isinstance(batch, dict):
        return BatchSettings()
    default = BatchSettings()
    enabled = batch.get("enabled")
    return BatchSettings(
        enabled=enabled if isinstance(enabled, bool) else default.enabled,
        max_requests=_integer(batch.get("maxRequests"), default.max_requests),
        timeout=_integer(batch.get("timeout"), default.timeout),
        max_body_size=_integer(batch.get("maxBodySize"), default.max_body_size),
    )
