"""A collection's table kept in step with its definition (PocketBase's ``SyncRecordTableSchema``): create,
or migrate in place keeping the rows (add/rename/drop columns, single/multiple conversion, indexes)."""

from __future__ import annotations

import secrets
import string
from typing import Any

import apsw

from pbfast.pocketbase.collections.errors import CollectionValidationError, error_item
from pbfast.pocketbase.collections.model import Collection
from pbfast.pocketbase.collections.validate import table_exists
from pbfast.pocketbase.dbutils.identifiers import backquote
from pbfast.pocketbase.dbutils.index import parse_index
from pbfast.pocketbase.dbutils.transaction import sqlite_error_text
from pbfast.pocketbase.sqlite_guard import SqlRefused, execute_one

__all__ = ["random_suffix", "sync_table"]

def _create_table(conn: apsw.Connection, collection: Collection) -> None:
    columns = sorted((f.name, f.column_type()) for f in collection.fields)
    body = ", ".join(f"{backquote(name)} {definition}" for name, definition in columns)
    conn.execute(f"CREATE TABLE {backquote(collection.name)} ({body})")


def _create_indexes(conn: apsw.Connection, collection: Collection) -> None:
    errors: dict[str, Any] = {}
    for position, raw in enumerate(collection.indexes):
        parsed = parse_index(raw)
        parsed.table_name = collection.name
        if not parsed.is_valid():
            errors[str(position)] = error_item("validation_invalid_index_expression", "Invalid CREATE INDEX expression.")
            continue
        try:
            execute_one(conn, parsed.build())
        except (apsw.Error, SqlRefused) as err:
            errors[str(position)] = error_item("validation_invalid_index_expression",
                                          f"Failed to create index {parsed.index_name} - {sqlite_error_text(err)}.")
    if errors:
        raise CollectionValidationError("", {"indexes": errors})


def _drop_indexes(conn: apsw.Connection, collection: Collection) -> None:
    for raw in collection.indexes:
        parsed = parse_index(raw)
        if parsed.index_name:
            conn.execute(f"DROP INDEX IF EXISTS {backquote(parsed.index_name)}")


def random_suffix(length: int = 5) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def sync_table(conn: apsw.Connection, new: Collection, old: Collection | None) -> None:
    """PocketBase's ``SyncRecordTableSchema``: create the table, or migrate it in place (data kept)."""
    if old is None or not table_exists(conn, old.name):
        _create_table(conn, new)
        _create_indexes(conn, new)
        return
    table = new.name
    # As PocketBase: a new name in another case keeps the table (SQLite's names are case-insensitive, and
    # SQLite refuses that rename).
    rename_table = old.name.lower() != new.name.lower()
    fields_changed = [f.to_json() for f in old.fields] != [f.to_json() for f in new.fields]
    update_indexes = rename_table or fields_changed or old.indexes != new.indexes
    if update_indexes:
        _drop_indexes(conn, old)
    if rename_table:
        conn.execute(f"ALTER TABLE {backquote(old.name)} RENAME TO {backquote(new.name)}")
    for old_field in old.fields:
        if new.field_by_id(old_field.id) is None:
            try:
                conn.execute(f"ALTER TABLE {backquote(table)} DROP COLUMN {backquote(old_field.name)}")
            except apsw.Error as err:
                raise RuntimeError(f"failed to drop column {old_field.name}: {err}") from err
    pending: dict[str, str] = {}
    for new_field in new.fields:
        previous = old.field_by_id(new_field.id)
        if previous is None:
            temp = new_field.name + random_suffix()
            pending[temp] = new_field.name
            conn.execute(f"ALTER TABLE {backquote(table)} ADD {backquote(temp)} {new_field.column_type()}")
        elif previous.name != new_field.name:
            temp = new_field.name + random_suffix()
            pending[temp] = new_field.name
            conn.execute(f"ALTER TABLE {backquote(table)} RENAME COLUMN {backquote(previous.name)} TO {backquote(temp)}")
    for temp, final in pending.items():
        conn.execute(f"ALTER TABLE {backquote(table)} RENAME COLUMN {backquote(temp)} TO {backquote(final)}")
    _normalize_single_multiple(conn, new, old)
    if update_indexes:
        _create_indexes(conn, new)


def _normalize_single_multiple(conn: apsw.Connection, new: Collection, old: Collection) -> None:
    """Convert the stored values of fields switched between single and multiple (``maxSelect``)."""
    for new_field in new.fields:
        old_field = old.field_by_id(new_field.id)
        was_multiple = old_field.is_multiple() if old_field is not None else False
        if was_multiple == new_field.is_multiple():
            continue
        views = conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND type = 'view'").fetchall()
        for view_name, _ in views:
            conn.execute(f"DROP VIEW IF EXISTS {backquote(str(view_name))}")
        name = new_field.name
        temp = "_" + name + random_suffix()
        table = backquote(new.name)
        conn.execute(f"ALTER TABLE {table} RENAME COLUMN {backquote(name)} TO {backquote(temp)}")
        conn.execute(f"ALTER TABLE {table} ADD {backquote(name)} {new_field.column_type()}")
        column, source = backquote(name), backquote(temp)
        if new_field.is_multiple():
            conn.execute(
                f"UPDATE {table} SET {column} = (CASE WHEN COALESCE({source}, '') = '' THEN '[]' ELSE (CASE WHEN "
                f"json_valid({source}) AND json_type({source}) == 'array' THEN {source} ELSE json_array({source}) "
                "END) END)")
        else:
            conn.execute(
                f"UPDATE {table} SET {column} = (CASE WHEN COALESCE({source}, '[]') = '[]' THEN '' ELSE (CASE WHEN "
                f"json_valid({source}) AND json_type({source}) == 'array' THEN "
                f"COALESCE(json_extract({source}, '$[#-1]'), '') ELSE {source} END) END)")
        conn.execute(f"ALTER TABLE {table} DROP COLUMN {backquote(temp)}")
        for _, sql in views:
            conn.execute(str(sql))
