"""The version of a tenant's collections, so that every connection to its database can tell when another one
(a worker process of the node) changed them: SQLite's ``user_version`` header field, which stock PocketBase
leaves alone, moved on in the same transaction as every change of ``_collections``."""

from __future__ import annotations

import apsw

__all__ = ["bump_schema_version", "schema_version"]

_MAX = (1 << 31) - 1  # user_version is a signed 32-bit integer


def schema_version(conn: apsw.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0]) if row else 0


def bump_schema_version(conn: apsw.Connection) -> None:
    """Move the version on; inside the transaction that changes ``_collections``."""
    conn.execute(f"PRAGMA user_version = {schema_version(conn) % _MAX + 1}")
