"""Identifier quoting: the only two ways an identifier becomes SQL text.

Identifiers in pbfast's SQL come from collection definitions (validated names), never from request values,
and are always quoted: :func:`quote` (double quotes, standard SQL) in the queries pbfast writes, and
:func:`backquote` in the DDL and index statements that PocketBase writes with backquotes (SQLite keeps that
text in ``sqlite_master``, so it must read as PocketBase's). Embedded quote characters are doubled, so a
name can never end its quoting early.
"""

from __future__ import annotations

__all__ = ["backquote", "quote"]


def quote(identifier: str) -> str:
    """``identifier`` as a double-quoted SQLite identifier."""
    return '"' + identifier.replace('"', '""') + '"'


def backquote(identifier: str) -> str:
    """``identifier`` in backquotes, as PocketBase writes table and index statements."""
    return "`" + identifier.replace("`", "``") + "`"
