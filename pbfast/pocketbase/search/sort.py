"""The ``sort`` query parameter (PocketBase's ``tools/search/sort.go``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pbfast.pocketbase.dbutils.identifiers import quote
from pbfast.pocketbase.search.builder import compile_operand
from pbfast.pocketbase.search.errors import FilterError, QueryParamError
from pbfast.pocketbase.search.sql import ResolvedField, Resolver, Sql

__all__ = ["MAX_SORT_FIELDS", "MAX_SORT_FIELD_LENGTH", "SortField", "compile_sort", "compile_sort_operands", "parse_sort"]

MAX_SORT_FIELDS: Final = 8
MAX_SORT_FIELD_LENGTH: Final = 255


@dataclass(frozen=True, slots=True)
class SortField:
    """One ``sort`` item: a field name and ``ASC``/``DESC``."""

    name: str
    direction: str


def parse_sort(expression: str) -> list[SortField]:
    """Split ``-created,+title,id`` into sort fields (``-`` = DESC, optional ``+`` = ASC)."""
    fields: list[SortField] = []
    for raw in expression.split(","):
        name = raw.strip()
        if name.startswith("-"):
            fields.append(SortField(name[1:], "DESC"))
        else:
            fields.append(SortField(name.removeprefix("+"), "ASC"))
    return fields


def compile_sort(expression: str, resolver: Resolver, *, max_fields: int = MAX_SORT_FIELDS,
                 table_alias: str | None = None) -> str:
    """Compile a ``sort`` parameter into the body of an ``ORDER BY`` clause (``""`` for an empty sort).

    Supports ``@random``, ``@rowid``, plain fields, JSON paths (``json.a.b``), modifiers such as
    ``:lower``/``:length`` and relation paths (``rel.title``, ``coll_via_rel.name``), the latter as a
    correlated scalar subquery taking the first related row.

    Args:
        expression: e.g. ``-created,title``.
        resolver: the same resolver used for the filter.
        max_fields: PocketBase allows 8 sort fields.
        table_alias: the main table's alias for ``@rowid`` (default: ``resolver.table_alias`` if present).

    Raises:
        QueryParamError: too many fields, a too long name or an invalid sort field (``invalid sort
            field "x"``), which PocketBase answers with 400.
    """
    return compile_sort_operands(expression, resolver, max_fields, table_alias, [])


def compile_sort_operands(expression: str, resolver: Resolver, max_fields: int, table_alias: str | None,
                          operands: list[ResolvedField]) -> str:
    """:func:`compile_sort`, collecting the resolved sort fields into ``operands`` (their joins take part in
    the list query: see :func:`~pbfast.pocketbase.search.provider.compile_list_query`)."""
    if expression == "":
        return ""
    fields = parse_sort(expression)
    if len(fields) > max_fields:
        raise QueryParamError("max sort expressions limit reached")
    alias = table_alias or getattr(resolver, "table_alias", None)
    parts: list[str] = []
    for sort_field in fields:
        if len(sort_field.name.encode()) > MAX_SORT_FIELD_LENGTH:
            raise QueryParamError("max sort field length limit reached")
        if sort_field.name == "@random":
            parts.append("RANDOM()")
            continue
        if sort_field.name == "@rowid":
            rowid = "_rowid_" if not alias else quote(alias) + "._rowid_"
            parts.append(f"{rowid} {sort_field.direction}")
            continue
        try:
            resolved, joins = compile_operand(sort_field.name, resolver)
        except FilterError as exc:
            raise QueryParamError(f"invalid sort field {sort_field.name!r}") from exc
        operands.append(resolved)
        text = resolved.sql.text
        if resolved.values or resolved.sql.params or text == "" or text.lower() == "null":
            raise QueryParamError(f"invalid sort field {sort_field.name!r}")
        if joins:
            join_sql = Sql.join(" ", (j.sql() for j in joins))
            if join_sql.params:
                raise QueryParamError(f"invalid sort field {sort_field.name!r} (request-bound joins can't be sorted)")
            text = f'(SELECT {text} FROM (SELECT 1) "__pbf_base" {join_sql.text} LIMIT 1)'
        parts.append(f"{text} {sort_field.direction}")
    return ", ".join(parts)
