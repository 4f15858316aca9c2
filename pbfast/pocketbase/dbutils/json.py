"""SQL over JSON columns, as PocketBase writes it (``tools/dbutils/json.go``): a column that holds a JSON
array, or a single plain value that is treated as a one-item array."""

from __future__ import annotations

__all__ = ["json_array_length", "json_each", "json_extract"]


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def json_each(column: str) -> str:
    """``json_each`` over the values of ``column`` (an SQL expression)."""
    return (f"json_each(CASE WHEN iif(json_valid({column}), json_type({column})='array', FALSE) "
            f"THEN {column} ELSE json_array({column}) END)")


def json_array_length(column: str) -> str:
    """How many values ``column`` holds (an empty string or NULL: none)."""
    return (f"json_array_length(CASE WHEN iif(json_valid({column}), json_type({column})='array', FALSE) "
            f"THEN {column} ELSE (CASE WHEN {column} = '' OR {column} IS NULL THEN json_array() "
            f"ELSE json_array({column}) END) END)")


def json_extract(column: str, path: str) -> str:
    """The value at ``path`` (``a.b[0]``; ``""``: the whole value) of a JSON column, or of a plain value."""
    # the path is made only of columnified identifier characters, digits and brackets (no quotes),
    # so it is inlined like in PocketBase: json paths must stay parameter-free for sort expressions
    if path and not path.startswith("["):
        path = "." + path
    return (f"(CASE WHEN json_valid({column}) THEN JSON_EXTRACT({column}, {_sql_string('$' + path)}) "
            f"ELSE JSON_EXTRACT(json_object('pb', {column}), {_sql_string('$.pb' + path)}) END)")
