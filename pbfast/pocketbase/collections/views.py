"""View collections: a view query checked (one read-only SELECT), its fields inferred as PocketBase's
``CreateViewFields`` does, a sample of its rows read as ``DryRunView`` reads them (the check PocketBase makes
before it saves a view collection), and its SQL view written with a text ``id`` column."""

from __future__ import annotations

import dataclasses
from typing import Any, Final

import apsw
import apsw.ext

from pbfast.pocketbase.fields import Field, decode_field
from pbfast.pocketbase.collections.model import CollectionMap
from pbfast.pocketbase.collections.table_sync import random_suffix
from pbfast.pocketbase.collections.view_parser import default_field_definition, parse_identifiers, suggested_fields
from pbfast.pocketbase.dbutils.identifiers import backquote
from pbfast.pocketbase.dbutils.transaction import sqlite_error_text
from pbfast.pocketbase.sqlite_guard import execute_one, read_only_select

__all__ = ["DRY_RUN_SAMPLE_SIZE", "ViewFieldsError", "ViewSample", "dry_run_view", "save_view", "view_fields"]

DRY_RUN_SAMPLE_SIZE: Final = 10


def _normalize_view_query(query: str) -> str:
    return query.strip().strip(";")


def view_fields(conn: apsw.Connection, query: str, others: CollectionMap) -> list[Field]:
    """The fields of a view collection (PocketBase's ``CreateViewFields``): one per column of the query's
    result, the field :func:`~.view_parser.suggested_fields` suggests for its name, else a json field; an
    ``id`` column is required. Raises ValueError (the query's text could not be read), apsw.Error (SQLite
    refused it), SqlRefused, or :class:`ViewFieldsError`."""
    query = _normalize_view_query(query)
    suggested = suggested_fields(query, others)
    columns = _check_view_table_info(conn, query)
    read_only_select(conn, query)  # after the table info check, whose errors PocketBase answers first
    result: list[Field] = []
    for name, _ in columns:
        field = suggested.get(name)
        result.append(field if field is not None else
                      decode_field(default_field_definition(name), existing_ids=[f.id for f in result]))
    if not any(name == "id" for name, _ in columns):
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


def _with_text_id(conn: apsw.Connection, query: str) -> tuple[str, str]:
    """``query`` wrapped so that its ``id`` column is text (PocketBase's ``normalizeViewQueryId``: record ids
    are strings, so a view on ``ROW_NUMBER() OVER()`` ids still finds its records by id), unchanged when the
    column already has the TEXT type; with the wrapped text as PocketBase shows it in a failed query's
    message (its ``[[column]]`` quoting placeholders left in)."""
    columns = _check_view_table_info(conn, query)
    if any(name.lower() == "id" and kind.upper() == "TEXT" for name, kind in columns):
        return query, query
    names = [column.alias for column in parse_identifiers(query)[0]]
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
