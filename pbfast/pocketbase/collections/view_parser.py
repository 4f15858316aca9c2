"""PocketBase's raw view query parser (``core/view.go``'s ``identifiersParser`` and ``parseQueryToFields``):
the select list's columns and the FROM/JOIN tables read from the query text, loosely (no SQL grammar), and
each column's suggested field. PocketBase names a view's fields from these, and refuses a query whose select
list it cannot read (``invalid identifier parts [...]``, as for most UNIONs), so pbfast does the same."""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Final

from pbfast.pocketbase.collections.model import Collection, CollectionMap
from pbfast.pocketbase.collections.table_sync import random_suffix
from pbfast.pocketbase.dbutils.tokenizer import split_tokens
from pbfast.pocketbase.fields import DEFAULT_ID_PATTERN, Field, decode_field

__all__ = ["Identifier", "parse_identifiers", "suggested_fields"]

_JOIN_RE: Final = re.compile(r"(?im)\s+(full\s+outer\s+join|left\s+outer\s+join|right\s+outer\s+join|full\s+join|"
                             r"cross\s+join|inner\s+join|outer\s+join|left\s+join|right\s+join|join)\s+?")
_DISCARD_RE: Final = re.compile(r"(?im)\s+(where|group\s+by|having|order|limit|with)\s+?")
_COMMENTS_RE: Final = re.compile(r"(?m)(/\*[\s\S]*?\*/)|(--.+$)")
_CAST_RE: Final = re.compile(r"(?is)^cast\s*\(.*\s+as\s+(\w+)\s*\)$")
WILDCARD_ERROR: Final = ("wildcard columns (*) are not supported - manually type the collection field names you "
                         "want the view query to have")


@dataclasses.dataclass(frozen=True, slots=True)
class Identifier:
    original: str
    alias: str


def parse_identifiers(query: str) -> tuple[list[Identifier], list[Identifier]]:
    """The columns of the select list and the tables (FROM, then JOINs) of ``query``, as PocketBase reads them.
    Raises ValueError (PocketBase's messages) on a part it cannot read."""
    text = query.strip().strip(";")
    text = _COMMENTS_RE.sub(" ", text)
    text = _JOIN_RE.sub(" __pb_join__ ", text)
    text = _DISCARD_RE.sub(" __pb_discard__ ", text)
    parts: dict[str, list[str]] = {"select": [], "from": [], "join": []}
    active: list[str] | None = None
    part_type = ""
    skip = False
    for token in split_tokens(text, ", \n\t", keep_separator=True):
        word = token.strip().lower()
        if word in ("select", "from"):
            skip, part_type = False, word
            active = parts[word]
        elif word == "distinct":
            continue
        elif word == "__pb_join__":
            skip = False
            if part_type == "join":
                parts["join"].append(",")
            part_type = "join"
            active = parts["join"]
        elif word == "__pb_discard__":
            skip = True
        else:
            if part_type == "join" and word == "on":
                skip = True
            if not skip and active is not None:
                active.append(" " + token)
    columns = _identifiers("".join(parts["select"]))
    tables = _identifiers("".join(parts["from"])) + _identifiers("".join(parts["join"]))
    return columns, tables


def _identifiers(raw: str) -> list[Identifier]:
    return [_identifier(split_tokens(item, " \n\t")) for item in split_tokens(raw, ",")]


def _identifier(parts: list[str]) -> Identifier:
    if len(parts) == 3:
        if parts[1].lower() != "as":
            raise ValueError(f'invalid identifier part - expected "as", got {parts[1]}')
        original, alias = parts[0], parts[2]
    elif len(parts) == 2:
        original, alias = parts
    elif len(parts) == 1:
        original, alias = parts[0], parts[0].split(".")[-1]
    else:
        raise ValueError(f"invalid identifier parts [{' '.join(parts)}]")
    return Identifier(_trim_identifier(original), _trim_identifier(alias, "'"))


def _trim_identifier(raw: str, extra: str = "") -> str:
    chars = "`\"[];" + extra
    return ".".join(part.strip(chars) for part in raw.split("."))


def suggested_fields(query: str, collections: CollectionMap) -> dict[str, Field]:
    """PocketBase's ``parseQueryToFields``: a field for each column of the select list, by its alias (a
    collection's field cloned under a new ``_clone_xxxx`` id, its ``id`` as a single relation, ``count()``/
    ``total()``/casts as number, text or bool fields, anything else json). Raises ValueError."""
    columns, tables = parse_identifiers(query)
    by_alias = _collections_by_alias(tables, collections)
    main_alias = tables[0].alias if tables else None
    result: dict[str, Field] = {}
    for column in columns:
        if column.alias == "*":
            raise ValueError(WILDCARD_ERROR)
        result[column.alias] = _suggested_field(column, by_alias, main_alias, list(result.values()))
    return result


def _collections_by_alias(tables: list[Identifier], collections: CollectionMap) -> dict[str, Collection]:
    by_name = {c.name: c for c in collections.values()}  # exact names, as PocketBase matches them
    return {table.alias: by_name[table.original] for table in tables
            if "(" not in table.alias and table.original in by_name}


def _suggested_field(column: Identifier, by_alias: dict[str, Collection], main_alias: str | None,
                     taken: list[Field]) -> Field:
    name, lowered = column.alias, column.original.lower()
    definition: dict[str, object]
    if name == "id":
        definition = id_field_definition()
    elif lowered.startswith("count("):
        definition = {"name": name, "type": "number", "onlyInt": True}
    elif lowered.startswith("total("):
        definition = {"name": name, "type": "number"}
    elif (cast := _CAST_RE.match(lowered)) and cast.group(1) in ("real", "decimal", "numeric", "int", "integer",
                                                                 "text", "boolean", "bool"):
        kind = cast.group(1)
        definition = ({"name": name, "type": "number", "onlyInt": kind in ("int", "integer")}
                      if kind in ("real", "decimal", "numeric", "int", "integer") else
                      {"name": name, "type": "text"} if kind == "text" else {"name": name, "type": "bool"})
    else:
        parts = column.original.split(".")
        if len(parts) == 2:
            field_name, collection = parts[1], by_alias.get(parts[0])
        else:
            field_name, collection = parts[0], by_alias.get(main_alias) if main_alias is not None else None
        source = next((f for f in collection.fields if f.name.lower() == field_name.lower()), None) \
            if collection is not None else None
        if collection is None or source is None:
            definition = default_field_definition(name)
        elif field_name.lower() == "id":
            definition = {"name": name, "type": "relation", "maxSelect": 1, "collectionId": collection.id}
        else:
            return dataclasses.replace(copy.deepcopy(source), id="_clone_" + random_suffix(4), name=name)
    return decode_field(definition, existing_ids=[f.id for f in taken])


def id_field_definition() -> dict[str, object]:
    return {"name": "id", "type": "text", "system": True, "required": True, "primaryKey": True,
            "pattern": DEFAULT_ID_PATTERN}


def default_field_definition(name: str) -> dict[str, object]:
    """PocketBase's ``defaultViewField``: the id field for ``id``, else json."""
    return id_field_definition() if name == "id" else {"name": name, "type": "json", "maxSize": 1}
