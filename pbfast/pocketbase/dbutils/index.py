"""The one CREATE INDEX parser (PocketBase's ``dbutils.ParseIndex``/``Index.Build``), used to validate and
normalise a collection's indexes, to find identity fields and by the filter's back-relation joins."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from pbfast.pocketbase.dbutils.identifiers import backquote
from pbfast.pocketbase.dbutils.tokenizer import UnbalancedTokenError, split_tokens

__all__ = ["IndexColumn", "ParsedIndex", "parse_index", "single_column_unique_index"]

_INDEX_RE: Final = re.compile(
    r"create\s+(unique\s+)?\s*index\s*(if\s+not\s+exists\s+)?(\S*)\s+on\s+(\S*)\s*\(([\s\S]*)\)(?:\s*where\s+([\s\S]*))?",
    re.IGNORECASE | re.MULTILINE,
)
_INDEX_COLUMN_RE: Final = re.compile(r"^([\s\S]+?)(?:\s+collate\s+(\w+))?(?:\s+(asc|desc))?$",
                                     re.IGNORECASE | re.MULTILINE)
_TRIM: Final = "`\"'[]\r\n\t\f\v "


@dataclass
class IndexColumn:
    """One column (or expression) of a CREATE INDEX statement."""

    name: str
    collate: str = ""
    sort: str = ""


@dataclass
class ParsedIndex:
    """A CREATE INDEX statement split into its parts (PocketBase's ``dbutils.Index``)."""

    unique: bool = False
    optional: bool = False
    schema_name: str = ""
    index_name: str = ""
    table_name: str = ""
    columns: list[IndexColumn] = field(default_factory=list)
    where: str = ""

    def is_valid(self) -> bool:
        return bool(self.index_name and self.table_name and self.columns)

    def build(self) -> str:
        """The normalized statement PocketBase executes (and SQLite keeps in ``sqlite_master``)."""
        if not self.is_valid():
            return ""
        parts = ["CREATE ", "UNIQUE " if self.unique else "", "INDEX ", "IF NOT EXISTS " if self.optional else ""]
        if self.schema_name:
            parts.append(f"{backquote(self.schema_name)}.")
        parts.append(f"{backquote(self.index_name)} ON {backquote(self.table_name)} (")
        multi = len(self.columns) > 1
        rendered = []
        for column in self.columns:
            name = column.name.strip()
            if not name:
                continue
            text = name if ("(" in column.name or " " in column.name) else backquote(name)
            if column.collate:
                text += " COLLATE " + column.collate
            if column.sort:
                text += " " + column.sort.upper()
            rendered.append(text)
        if multi:
            parts.append("\n  " + ",\n  ".join(rendered) + ("\n" if rendered else ""))
        else:
            parts.append("".join(rendered))
        parts.append(")")
        if self.where:
            parts.append(" WHERE " + self.where)
        return "".join(parts)


def parse_index(statement: str) -> ParsedIndex:
    """Parse a CREATE INDEX statement; an unparsable one gives an invalid :class:`ParsedIndex` (unbalanced
    quotes or parentheses in its columns leave it without columns)."""
    result = ParsedIndex()
    match = _INDEX_RE.search(statement)
    if not match:
        return result
    result.unique = bool((match.group(1) or "").strip())
    result.optional = bool((match.group(2) or "").strip())
    try:
        name_parts = split_tokens(match.group(3), ".")
    except UnbalancedTokenError:
        name_parts = [match.group(3)]
    if len(name_parts) == 2:
        result.schema_name = name_parts[0].strip(_TRIM)
        result.index_name = name_parts[1].strip(_TRIM)
    elif name_parts:
        result.index_name = name_parts[0].strip(_TRIM)
    result.table_name = match.group(4).strip(_TRIM)
    try:
        raw_columns = split_tokens(match.group(5), ",")
    except UnbalancedTokenError:
        raw_columns = []
    for raw_column in raw_columns:
        column_match = _INDEX_COLUMN_RE.match(raw_column)
        if not column_match:
            continue
        name = column_match.group(1).strip(_TRIM)
        if not name:
            continue
        result.columns.append(IndexColumn(name, (column_match.group(2) or "").strip(),
                                          (column_match.group(3) or "").upper()))
    result.where = (match.group(6) or "").strip()
    return result


def single_column_unique_index(indexes: Iterable[str], column: str) -> ParsedIndex | None:
    """The first UNIQUE index of ``indexes`` on ``column`` alone (WHERE ignored; PocketBase's
    ``dbutils.FindSingleColumnUniqueIndex``), or None."""
    for raw in indexes:
        parsed = parse_index(raw)
        if parsed.unique and len(parsed.columns) == 1 and parsed.columns[0].name.lower() == column.lower():
            return parsed
    return None
