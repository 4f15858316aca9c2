"""PocketBase's ``search.SimpleFieldResolver``: filters and sorts over a plain table whose allowed fields are
listed (names or anchored patterns); ``col.a.b`` reads a JSON column's path. Used by the logs API."""

from __future__ import annotations

import re
from collections.abc import Sequence

from pbfast.pocketbase.dbutils.identifiers import quote
from pbfast.pocketbase.gocompat import go_quote
from pbfast.pocketbase.search.errors import FilterError
from pbfast.pocketbase.search.sql import NullFallback, ResolvedField, Sql, columnify

__all__ = ["SimpleFieldResolver"]

_GO_INT = re.compile(r"[+-]?[0-9]+")  # what Go's strconv.Atoi accepts: an array index


class SimpleFieldResolver:
    """Resolves only ``allowed`` identifiers: exact names, or patterns (entries starting with ``^``)."""

    def __init__(self, allowed: Sequence[str]) -> None:
        self._names = frozenset(entry for entry in allowed if not entry.startswith("^"))
        self._patterns = tuple(re.compile(entry, re.ASCII) for entry in allowed if entry.startswith("^"))

    def resolve(self, identifier: str) -> ResolvedField:
        if identifier not in self._names and not any(p.search(identifier) for p in self._patterns):
            raise FilterError(f"failed to resolve field {go_quote(identifier)}")
        column, *path = identifier.split(".")
        if not path:
            return ResolvedField(Sql(quote(columnify(column))))
        json_path = "$" + "".join(f"[{columnify(part)}]" if _GO_INT.fullmatch(part) else f".{columnify(part)}"
                                  for part in path)
        # The path is made of [\w.*\-@#] characters only (columnify): safe inside the quotes.
        return ResolvedField(Sql(f"JSON_EXTRACT({quote(columnify(column))}, '{json_path}')"),
                             null_fallback=NullFallback.DISABLED)
