"""SQL fragments with their bound values, and what a resolver answers for an identifier (PocketBase's
``ResolverResult``, ``Join``, ``MultiMatchSubquery``)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final, Protocol

from pbfast.pocketbase.dbutils.identifiers import quote

__all__ = ["Join", "MultiMatch", "NullFallback", "ResolvedField", "Resolver", "RuleJoin", "Sql", "col", "columnify",
           "fmt"]

@dataclass(frozen=True, slots=True)
class Sql:
    """A piece of SQL text with ``?`` placeholders and their values, in text order."""

    text: str
    params: tuple[Any, ...] = ()

    def __add__(self, other: Sql | str) -> Sql:
        if isinstance(other, str):
            return Sql(self.text + other, self.params)
        return Sql(self.text + other.text, self.params + other.params)

    def __radd__(self, other: str) -> Sql:
        return Sql(other + self.text, self.params)

    @staticmethod
    def param(value: Any) -> Sql:
        """A single bound value."""
        return Sql("?", (value,))

    @staticmethod
    def join(separator: str, items: Iterable[Sql]) -> Sql:
        """``separator``-joined fragments."""
        parts = list(items)
        return Sql(separator.join(p.text for p in parts), tuple(itertools.chain.from_iterable(p.params for p in parts)))


def fmt(template: str, *args: Sql | str) -> Sql:
    """Fill the ``{}`` slots of ``template`` (SQL text) with fragments or raw SQL strings."""
    pieces = template.split("{}")
    if len(pieces) != len(args) + 1:
        raise AssertionError(f"template {template!r} expects {len(pieces) - 1} args")
    text: list[str] = [pieces[0]]
    params: list[Any] = []
    for arg, piece in zip(args, pieces[1:], strict=True):
        if isinstance(arg, Sql):
            text.append(arg.text)
            params.extend(arg.params)
        else:
            text.append(arg)
        text.append(piece)
    return Sql("".join(text), tuple(params))


def col(alias: str, column: str) -> str:
    return quote(alias) + "." + quote(column)


_COLUMNIFY_RE: Final = re.compile(r"[^\w.*\-@#]+", re.ASCII)


def columnify(name: str) -> str:
    """Strip characters that are invalid in a db identifier (PocketBase's ``inflector.Columnify``)."""
    return _COLUMNIFY_RE.sub("", name)


# ---------------------------------------------------------------------------------------------------------
# resolver results
# ---------------------------------------------------------------------------------------------------------


class NullFallback(IntEnum):
    """How ``=``/``!=`` treat NULL vs ``''`` for an operand (PocketBase's ``NullFallbackPreference``)."""

    AUTO = 0
    DISABLED = 1
    ENFORCED = 2


@dataclass(frozen=True, slots=True)
class Join:
    """``LEFT JOIN <table> <alias> [ON <on>]``; ``table`` is a quoted table name or a table function."""

    table: Sql
    alias: str
    on: Sql | None = None

    def sql(self) -> Sql:
        """The JOIN clause."""
        clause = fmt("LEFT JOIN {} {}", self.table, quote(self.alias))
        return clause if self.on is None else fmt("{} ON {}", clause, self.on)


@dataclass(slots=True)
class MultiMatch:
    """The per-record subquery over all values of a multi-valued operand (PocketBase's
    ``MultiMatchSubquery``): ``SELECT <value> AS multiMatchValue FROM <table> <alias> <joins> WHERE
    <alias>.id = <target>.id``."""

    target_alias: str
    from_table: str
    from_alias: str
    value: Sql = field(default_factory=lambda: Sql(""))
    joins: list[Join] = field(default_factory=list)

    def sql(self) -> Sql:
        """The subquery SQL (without parentheses)."""
        joins = Sql.join(" ", (j.sql() for j in self.joins))
        return fmt("SELECT {} AS \"multiMatchValue\" FROM {} {} {} WHERE {} = {}",
                    self.value, quote(self.from_table), quote(self.from_alias), joins,
                    col(self.from_alias, "id"), col(self.target_alias, "id"))


@dataclass(frozen=True, slots=True)
class RuleJoin:
    """A joined collection whose list rule must also hold for the joined row (non-superuser filters)."""

    alias: str
    rule: str
    resolver: Resolver


@dataclass(frozen=True, slots=True)
class ResolvedField:
    """What an identifier stands for in SQL (PocketBase's ``ResolverResult``).

    Attributes:
        sql: the operand expression (a quoted column, ``NULL``, a bound value, a JSON extract ...).
        null_fallback: NULL/'' normalisation preference for ``=``/``!=``.
        multi_match: set for multi-valued operands (every value must match unless an ``?`` operator is used).
        joins: LEFT JOINs the expression needs (shared by alias with the other operands of the filter).
        rule_joins: joined collections whose list rule constrains the joined rows.
        after_build: wraps the final comparison (e.g. the email visibility constraint).
        params: the operand's own values as PocketBase counts them for its NULL/'' and LIKE logic
            (defaults to ``sql.params``).
    """

    sql: Sql
    null_fallback: NullFallback = NullFallback.AUTO
    multi_match: MultiMatch | None = None
    joins: tuple[Join, ...] = ()
    rule_joins: tuple[RuleJoin, ...] = ()
    after_build: Callable[[Sql], Sql] | None = None
    params: tuple[Any, ...] | None = None

    @property
    def multi_valued(self) -> bool:
        """Whether the operand stands for several values per record (JSON array / to-many relation)."""
        return self.multi_match is not None

    @property
    def values(self) -> tuple[Any, ...]:
        """:attr:`params` with its default applied."""
        return self.sql.params if self.params is None else self.params


class Resolver(Protocol):
    """Maps filter identifiers (``title``, ``rel.name``, ``@request.auth.id`` ...) to SQL operands."""

    def resolve(self, identifier: str) -> ResolvedField:
        """The SQL operand for ``identifier``.

        Raises:
            FilterError: if the identifier is unknown or not allowed.
        """
        ...
