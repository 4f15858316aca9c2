"""View collections: a view query checked (one read-only SELECT), its fields inferred as PocketBase's
``CreateViewFields`` does, and its SQL view written."""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterator
from typing import Final

import apsw
import apsw.ext

from pbfast.pocketbase.fields import DEFAULT_ID_PATTERN, Field, decode_field
from pbfast.pocketbase.collections.model import CollectionMap
from pbfast.pocketbase.collections.table_sync import random_suffix
from pbfast.pocketbase.dbutils.identifiers import backquote
from pbfast.pocketbase.sqlite_guard import execute_one, read_only_select

__all__ = ["ViewFieldsError", "save_view", "view_fields"]


def _top_level(text: str, *, clamp: bool) -> Iterator[tuple[int, str]]:
    """``(index, char)`` of the characters of an SQL text outside quotes (``'``, ``"``, backquotes, ``[ ]``)
    and parentheses; with ``clamp`` a stray ``)`` does not take the depth below zero."""
    depth, quote = 0, ""
    for index, char in enumerate(text):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"`":
            quote = char
        elif char == "[":
            quote = "]"
        elif char == "(":
            depth += 1
        elif char == ")":
            depth = max(depth - 1, 0) if clamp else depth - 1
        elif depth == 0:
            yield index, char


def _split_top_level(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside quotes and parentheses, dropping empty trailing text."""
    parts: list[str] = []
    start = 0
    for index, char in _top_level(text, clamp=True):
        if char == separator:
            parts.append(text[start:index].strip())
            start = index + 1
    tail = text[start:].strip()
    if tail:
        parts.append(tail)
    return parts


_CAST_RE: Final = re.compile(r"(?is)^cast\s*\(.*\s+as\s+(\w+)\s*\)$")
_SELECT_RE: Final = re.compile(r"(?is)^\s*select\s+(?:distinct\s+|all\s+)?")


def _normalize_view_query(query: str) -> str:
    return query.strip().strip(";")


def _select_expressions(query: str) -> list[str]:
    """The select-list expressions of ``query`` (top level, up to its first top-level FROM)."""
    head = _SELECT_RE.match(query)
    if not head:
        return []
    rest = query[head.end():]
    end = len(rest)
    for index, _ in _top_level(rest, clamp=False):
        if rest[index:index + 4].lower() == "from" and (index == 0 or not (rest[index - 1].isalnum()
                                                                           or rest[index - 1] == "_")) \
                and (index + 4 >= len(rest) or not (rest[index + 4].isalnum() or rest[index + 4] == "_")):
            end = index
            break
    return _split_top_level(rest[:end], ",")


def view_fields(conn: apsw.Connection, query: str, others: CollectionMap) -> list[Field]:
    """The fields of a view collection (PocketBase's ``CreateViewFields``): columns read straight from a
    collection's field clone that field (new ``_clone_xxxx`` id), a collection's ``id`` becomes a single
    relation to it, ``count()``/``total()``/``cast(... as type)`` become number/text/bool fields, anything
    else a json field; an ``id`` column is required."""
    query = _normalize_view_query(query)
    expressions = _select_expressions(query)
    for expression in expressions:
        if expression == "*" or expression.endswith(".*"):
            raise ValueError("wildcard columns (*) are not supported - manually type the collection field names "
                             "you want the view query to have")
    _check_view_table_info(conn, query)
    read_only_select(conn, query)  # after the table info check, whose errors PocketBase answers first
    described = apsw.ext.query_info(conn, f"SELECT * FROM ({query})").description_full or ()
    by_table = {c.name.lower(): c for c in others.values()}
    result: list[Field] = []
    has_id = False
    for position, (name, _decltype, _database, table, origin) in enumerate(described):
        expression = expressions[position] if len(expressions) == len(described) else ""
        lowered = expression.lower()
        definition: dict[str, object]
        if name == "id":
            has_id = True
            definition = {"name": "id", "type": "text", "system": True, "required": True, "primaryKey": True,
                          "pattern": DEFAULT_ID_PATTERN}
        elif lowered.startswith("count("):
            definition = {"name": name, "type": "number", "onlyInt": True}
        elif lowered.startswith("total("):
            definition = {"name": name, "type": "number"}
        elif (cast := _CAST_RE.match(lowered.rsplit(" as ", 1)[0] if ")" in lowered else lowered)) and \
                cast.group(1) in ("real", "decimal", "numeric", "int", "integer", "text", "boolean", "bool"):
            kind = cast.group(1)
            definition = ({"name": name, "type": "number", "onlyInt": kind in ("int", "integer")}
                          if kind in ("real", "decimal", "numeric", "int", "integer") else
                          {"name": name, "type": "text"} if kind == "text" else {"name": name, "type": "bool"})
        else:
            source = by_table.get(str(table).lower()) if table else None
            source_field = source.field(str(origin)) if source is not None and origin else None
            if source is not None and str(origin).lower() == "id":
                definition = {"name": name, "type": "relation", "maxSelect": 1, "collectionId": source.id}
            elif source_field is not None:
                result.append(dataclasses.replace(copy.deepcopy(source_field), id="_clone_" + random_suffix(4),
                                                  name=name))
                continue
            else:
                definition = {"name": name, "type": "json", "maxSize": 1}
        result.append(decode_field(definition, existing_ids=[f.id for f in result]))
    if not has_id:
        raise ViewFieldsError("missing required id column (you can use `(ROW_NUMBER() OVER()) as id` if you "
                               "don't have one)", result)
    return result


def _check_view_table_info(conn: apsw.Connection, query: str) -> None:
    """Create the view under a temporary name and read its table info, as PocketBase does to validate a
    view query (missing tables or columns only surface then, worded as SQLite words them there)."""
    temp = "_temp_" + random_suffix(6)
    conn.execute("SAVEPOINT pb_view_check")
    try:
        execute_one(conn, f"CREATE VIEW {backquote(temp)} AS SELECT * FROM ({query})")
        conn.execute("SELECT * FROM pragma_table_info(?)", (temp,)).fetchall()
    finally:
        conn.execute("ROLLBACK TO pb_view_check")
        conn.execute("RELEASE pb_view_check")


class ViewFieldsError(ValueError):
    """A view query without an ``id`` column; ``fields`` are the ones resolved anyway (PocketBase keeps
    them, so the collection then fails the primary key check too)."""

    def __init__(self, message: str, resolved: list[Field]) -> None:
        super().__init__(message)
        self.fields = resolved


def save_view(conn: apsw.Connection, name: str, query: str) -> None:
    conn.execute(f"DROP VIEW IF EXISTS {backquote(name)}")
    execute_one(conn, f"CREATE VIEW {backquote(name)} AS SELECT * FROM ({read_only_select(conn, query)})")
