"""View collections: a view query checked (one read-only SELECT), its fields inferred as PocketBase's
``CreateViewFields`` does, a sample of its rows read as ``DryRunView`` reads them (the check PocketBase makes
before it saves a view collection), and its SQL view written with a text ``id`` column."""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterator
from typing import Any, Final

import apsw
import apsw.ext

from pbfast.pocketbase.fields import DEFAULT_ID_PATTERN, Field, decode_field
from pbfast.pocketbase.collections.model import CollectionMap
from pbfast.pocketbase.collections.table_sync import random_suffix
from pbfast.pocketbase.dbutils.identifiers import backquote
from pbfast.pocketbase.dbutils.transaction import sqlite_error_text
from pbfast.pocketbase.sqlite_guard import execute_one, read_only_select

__all__ = ["DRY_RUN_SAMPLE_SIZE", "ViewFieldsError", "ViewSample", "dry_run_view", "save_view", "view_fields"]

DRY_RUN_SAMPLE_SIZE: Final = 10


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


def _check_view_table_info(conn: apsw.Connection, query: str) -> list[tuple[str, str]]:
    """Create the view under a temporary name and read its table info (each column's name and declared
    type), as PocketBase does to validate a view query (missing tables or columns only surface then, worded
    as SQLite words them there)."""
    temp = "_temp_" + random_suffix(6)
    conn.execute("SAVEPOINT pb_view_check")
    try:
        execute_one(conn, f"CREATE VIEW {backquote(temp)} AS SELECT * FROM ({query})")
        return [(str(name), str(kind or "")) for name, kind in
                conn.execute("SELECT name, type FROM pragma_table_info(?)", (temp,))]
    finally:
        conn.execute("ROLLBACK TO pb_view_check")
        conn.execute("RELEASE pb_view_check")


class ViewFieldsError(ValueError):
    """A view query without an ``id`` column; ``fields`` are the ones resolved anyway (PocketBase keeps
    them, so the collection then fails the primary key check too)."""

    def __init__(self, message: str, resolved: list[Field]) -> None:
        super().__init__(message)
        self.fields = resolved


def _has_select_word(query: str) -> bool:
    """Whether ``query`` has the word SELECT outside parentheses and quotes: PocketBase's column parser
    reads the select list from there, and finds no column in a query such as ``(select 1 as id)``."""
    top = [" "] * len(query)
    for index, char in _top_level(query, clamp=False):
        top[index] = char
    return re.search(r"(?i)(?:^|[\s,])select(?:[\s,]|$)", "".join(top)) is not None


def _with_text_id(conn: apsw.Connection, query: str) -> tuple[str, str]:
    """``query`` wrapped so that its ``id`` column is text (PocketBase's ``normalizeViewQueryId``: record ids
    are strings, so a view on ``ROW_NUMBER() OVER()`` ids still finds its records by id), unchanged when the
    column already has the TEXT type; with the wrapped text as PocketBase shows it in a failed query's
    message (its ``[[column]]`` quoting placeholders left in)."""
    columns = _check_view_table_info(conn, query)
    if any(name.lower() == "id" and kind.upper() == "TEXT" for name, kind in columns):
        return query, query
    names = [name for name, _ in columns] if _has_select_word(query) else []
    executed = ",".join(f"CAST({backquote(n)} as TEXT) {backquote(n)}" if n == "id" else backquote(n) for n in names)
    shown = ",".join(f"CAST([[{n}]] as TEXT) [[{n}]]" if n == "id" else f"[[{n}]]" for n in names)
    return f"SELECT {executed} FROM ({query})", f"SELECT {shown} FROM ({query})"


@dataclasses.dataclass
class ViewSample:
    """A view query's fields and the first rows of its records, as PocketBase's ``DryRunView`` reads them
    (through a throwaway view collection named ``name``)."""

    name: str
    fields: list[Field]
    rows: list[dict[str, Any]]


def dry_run_view(conn: apsw.Connection, query: str, others: CollectionMap) -> ViewSample:
    """PocketBase's ``DryRunView``: the fields of ``query`` (:func:`view_fields`), then up to
    :data:`DRY_RUN_SAMPLE_SIZE` of its rows, refused when one has an empty id or two share one. Raises
    ValueError (worded as PocketBase's), :class:`ViewFieldsError`, SqlRefused or apsw.Error."""
    fields = view_fields(conn, query, others)
    query = _normalize_view_query(query)
    name = "temp_view_" + random_suffix(5)
    executed, shown = _with_text_id(conn, query)
    select = "SELECT {table}.* FROM (SELECT * FROM ({query})) {table} LIMIT {limit}"
    sql = select.format(table=backquote(name), query=executed, limit=DRY_RUN_SAMPLE_SIZE)
    try:
        read_only_select(conn, sql)  # one statement, as the tenant's SQL always runs
        cursor = conn.cursor()
        # rows as dicts, named while the statement runs (once done, as with no rows, it has no description)
        cursor.row_trace = lambda running, row: dict(zip((column[0] for column in running.getdescription()), row,
                                                         strict=True))
        rows: list[dict[str, Any]] = list(cursor.execute(sql))
    except apsw.Error as err:
        failed = select.format(table=backquote(name), query=shown, limit=DRY_RUN_SAMPLE_SIZE)
        raise ValueError(f"failed to retrieve query records: {sqlite_error_text(err)}; failed query: {failed}") \
            from err
    seen: set[object] = set()
    for row in rows:
        record_id = row.get("id")
        if record_id is None or record_id == "":
            raise ValueError("the query could return records with empty or invalid ids")
        if record_id in seen:
            raise ValueError("the query could return records with non-unique ids")
        seen.add(record_id)
    return ViewSample(name, fields, rows)


def save_view(conn: apsw.Connection, name: str, query: str) -> None:
    conn.execute(f"DROP VIEW IF EXISTS {backquote(name)}")
    executed, _ = _with_text_id(conn, read_only_select(conn, query))
    execute_one(conn, f"CREATE VIEW {backquote(name)} AS SELECT * FROM ({executed})")
