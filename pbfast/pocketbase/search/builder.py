"""PocketBase's filter language compiled to SQLite ``WHERE`` expressions (``tools/search/filter.go``).

The grammar and the SQL semantics follow PocketBase 0.40.x (``tools/search/filter.go``,
``core/record_field_resolver*.go`` and the fexpr scanner/parser) so that the same filter selects the same
records on a PocketBase ``data.db``:

* ``=``/``!=`` treat NULL and ``''`` alike (``x = ""`` and ``x = null`` match both), ``!=`` never yields
  NULL;
* ``~``/``!~`` are ``LIKE`` with ``%`` wrapping unless the value has an unescaped ``%``;
* multi-value operands (``rel_many.title``, ``select_many:each`` ...) must match for *every* item unless
  the ``?``-prefixed "any" operator is used.

Where PocketBase LEFT JOINs relations into the main query (and de-duplicates with ``DISTINCT``), the
compiled expression is self-contained instead: it is wrapped in ``EXISTS (SELECT 1 FROM (SELECT 1) LEFT
JOIN ... WHERE <expr>)``, which selects the same rows, so a caller only has to run
``SELECT ... FROM "<table>" WHERE <sql>``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pbfast.pocketbase.dbutils.identifiers import quote
from pbfast.pocketbase.gocompat import format_datetime_value, go_quote, go_string
from pbfast.pocketbase.search.errors import FilterError
from pbfast.pocketbase.search.parser import Expr, ExprGroup, parse
from pbfast.pocketbase.search.scanner import (
    JOIN_AND,
    JOIN_OR,
    SIGN_OPS,
    T_FUNCTION,
    T_IDENTIFIER,
    T_NUMBER,
    T_TEXT,
    Token,
)
from pbfast.pocketbase.search.sql import Join, NullFallback, ResolvedField, Resolver, RuleJoin, Sql, col, fmt

__all__ = ["DEFAULT_FILTER_EXPR_LIMIT", "MAX_FILTER_LENGTH", "FilterBuilder", "compile_filter", "compile_filters",
           "compile_operand"]

ANY_OPS: Final = frozenset(op for op in SIGN_OPS if op.startswith("?"))

DEFAULT_FILTER_EXPR_LIMIT: Final = 200
"""Max ``a op b`` expressions in one filter (PocketBase's ``DefaultFilterExprLimit``)."""

MAX_FILTER_LENGTH: Final = 3500
"""Max length in bytes of a client-side filter (PocketBase's ``MaxFilterLength``)."""


def _month_end(now: datetime) -> datetime:
    first_next = (now.replace(day=1) + timedelta(days=32)).replace(day=1)
    return (first_next - timedelta(days=1)).replace(hour=23, minute=59, second=59, microsecond=999999)


_MACROS: Final[dict[str, Callable[[datetime], Any]]] = {
    "@now": lambda now: format_datetime_value(now),
    "@yesterday": lambda now: format_datetime_value(now - timedelta(days=1)),
    "@tomorrow": lambda now: format_datetime_value(now + timedelta(days=1)),
    "@second": lambda now: now.second,
    "@minute": lambda now: now.minute,
    "@hour": lambda now: now.hour,
    "@day": lambda now: now.day,
    "@month": lambda now: now.month,
    "@weekday": lambda now: (now.weekday() + 1) % 7,  # Go: Sunday = 0
    "@year": lambda now: now.year,
    "@todayStart": lambda now: format_datetime_value(now.replace(hour=0, minute=0, second=0, microsecond=0)),
    "@todayEnd": lambda now: format_datetime_value(now.replace(hour=23, minute=59, second=59, microsecond=999999)),
    "@monthStart": lambda now: format_datetime_value(now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)),
    "@monthEnd": lambda now: format_datetime_value(_month_end(now)),
    "@yearStart": lambda now: format_datetime_value(now.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)),
    "@yearEnd": lambda now: format_datetime_value(now.replace(month=12, day=31, hour=23, minute=59, second=59,
                                                   microsecond=999999)),
}

_NORMALIZED_IDENTIFIERS: Final = {"null": "NULL", "true": "1", "false": "0"}


def _contains_unescaped(text: str, ch: str) -> bool:
    prev = ""
    for c in text:
        if c == ch and prev != "\\":
            return True
        prev = "" if (c == "\\" and prev == "\\") else c
    return False


def _escape_unescaped(text: str, chars: str) -> str:
    out: list[str] = []
    match = False
    for i in range(len(text) - 1, -1, -1):
        c = text[i]
        if match:
            if c != "\\":
                out.append("\\")
            match = False
        else:
            match = c in chars
        out.append(c)
        if i == 0 and match:
            out.append("\\")
    return "".join(reversed(out))


def _wrap_like(value: Any) -> str:
    text = go_string(value)
    if not _contains_unescaped(text, "%"):
        text = "%" + _escape_unescaped(text, "\\%_") + "%"
    return text


def _is_empty_identifier(r: ResolvedField) -> bool:
    return r.sql.text.lower() in ("", "null", "''", '""', "``")


def _has_empty_value(r: ResolvedField) -> bool:
    return any(v is None or (isinstance(v, str) and v == "") for v in r.values)


def _is_known_non_empty(r: ResolvedField) -> bool:
    if r.null_fallback == NullFallback.ENFORCED:
        return False
    if r.sql.text.lower() in ("1", "0", "false", "true"):
        return True
    return len(r.values) > 0 and not _has_empty_value(r) and not _is_empty_identifier(r)


def _equal_expr(equal: bool, left: ResolvedField, right: ResolvedField) -> Sql:
    eq, null_eq, concat, null_expr = ("=", "IS", "OR", "IS NULL") if equal else \
        ("IS NOT", "IS NOT", "AND", "IS NOT NULL")
    l_sql, r_sql = left.sql, right.sql
    if NullFallback.DISABLED in (left.null_fallback, right.null_fallback):
        return fmt("{} " + null_eq + " {}", l_sql, r_sql)
    left_empty = _is_empty_identifier(left) or (
        left.null_fallback == NullFallback.AUTO and len(left.values) == 1 and _has_empty_value(left))
    right_empty = _is_empty_identifier(right) or (
        right.null_fallback == NullFallback.AUTO and len(right.values) == 1 and _has_empty_value(right))
    if left_empty and right_empty:
        # PocketBase keeps the operands' params bound even though the SQL no longer references them;
        # positional placeholders can't, and nothing observable depends on it
        return Sql(f"'' {eq} ''")
    if _is_known_non_empty(left) or _is_known_non_empty(right):
        return fmt("{} " + eq + " {}", Sql("''") if left_empty else l_sql, Sql("''") if right_empty else r_sql)
    if left_empty:
        return fmt("('' " + eq + " {} " + concat + " {} " + null_expr + ")", r_sql, r_sql)
    if right_empty:
        return fmt("({} " + eq + " '' " + concat + " {} " + null_expr + ")", l_sql, l_sql)
    return fmt("COALESCE({}, '') " + eq + " COALESCE({}, '')", l_sql, r_sql)


class FilterBuilder:
    """State of one compilation: collected joins, rule joins and a counter for unique aliases."""

    def __init__(self, resolver: Resolver, max_expressions: int, now: datetime | None) -> None:
        self.resolver = resolver
        self.remaining = max_expressions
        self.now = now
        self.joins: dict[str, Join] = {}
        self.rule_joins: dict[str, RuleJoin] = {}
        self.counter = itertools.count(1)

    def alias(self, prefix: str) -> str:
        return f"{prefix}{next(self.counter)}"

    def now_utc(self) -> datetime:
        if self.now is None:
            self.now = datetime.now(UTC)
        return self.now

    def register(self, resolved: ResolvedField) -> None:
        for join in resolved.joins:
            self.joins[join.alias] = join  # same alias -> replaced in place (like PocketBase)
        for rule_join in resolved.rule_joins:
            self.rule_joins[rule_join.alias] = rule_join

    # -- groups -------------------------------------------------------------------------------------------

    def groups(self, groups: Sequence[ExprGroup]) -> Sql:
        """The SQL of a parsed filter, depth first with an explicit stack (no recursion limit). A list of
        one item is that item's SQL: nesting adds parentheses only where a list joins several items."""
        stack: list[tuple[Iterator[ExprGroup], list[Sql], str]] = [(iter(groups), [], JOIN_AND)]
        while True:
            items, parts, join_to_parent = stack[-1]
            group = next(items, None)
            if group is None:
                stack.pop()
                expr = parts[0] if len(parts) == 1 else "(" + Sql.join(" ", parts) + ")"
                if not stack:
                    return expr
                _join_part(stack[-1][1], join_to_parent, expr)
            elif isinstance(group.item, Expr):
                if self.remaining <= 0:
                    raise FilterError("max filter expressions limit reached")
                self.remaining -= 1
                _join_part(parts, group.join, self.expr(group.item))
            else:
                stack.append((iter(group.item), [], group.join))

    def expr(self, expr: Expr) -> Sql:
        try:
            left = self.token(expr.left)
        except FilterError as exc:
            raise FilterError(f"invalid left operand {go_quote(expr.left.literal)} - {exc}") from exc
        try:
            right = self.token(expr.right)
        except FilterError as exc:
            raise FilterError(f"invalid right operand {go_quote(expr.right.literal)} - {exc}") from exc
        return "(" + self.operands(left, expr.op, right) + ")"

    # -- operands -----------------------------------------------------------------------------------------

    def token(self, token: Token) -> ResolvedField:
        if token.type == T_IDENTIFIER:
            macro = _MACROS.get(token.literal)
            if macro is not None:
                return ResolvedField(Sql.param(macro(self.now_utc())))
            try:
                resolved = self.resolver.resolve(token.literal)
            except FilterError:
                normalized = _NORMALIZED_IDENTIFIERS.get(token.literal.lower())
                if normalized is None:
                    raise
                return ResolvedField(Sql(normalized))
            self.register(resolved)
            return resolved
        if token.type == T_TEXT:
            return ResolvedField(Sql.param(token.literal))
        if token.type == T_NUMBER:
            return ResolvedField(Sql.param(_to_float(token.literal)))
        if token.type == T_FUNCTION:
            function = _FUNCTIONS.get(token.literal)
            if function is None:
                raise FilterError(f"unknown function {go_quote(token.literal)}")
            return function(self, token.args)
        raise FilterError(f"unsupported token type {go_quote(token.type)}")

    def operands(self, left: ResolvedField, op: str, right: ResolvedField) -> Sql:
        base = op.removeprefix("?")
        if base == "=":
            expr = _equal_expr(True, left, right)
        elif base == "!=":
            expr = _equal_expr(False, left, right)
        elif base in ("~", "!~"):
            like = "LIKE" if base == "~" else "NOT LIKE"
            if not right.values:
                expr = fmt("{} " + like + " ('%' || {} || '%') ESCAPE '\\'", left.sql, right.sql)
            else:
                wrapped = Sql(right.sql.text, tuple(_wrap_like(v) for v in right.sql.params))
                expr = fmt("{} " + like + " {} ESCAPE '\\'", left.sql, wrapped)
        elif base in ("<", "<=", ">", ">="):
            expr = fmt("{} " + base + " {}", left.sql, right.sql)
        else:
            raise FilterError(f"unknown expression operator {go_quote(op)}")

        if op not in ANY_OPS:
            if left.multi_match is not None and right.multi_match is not None:
                expr = fmt("(({}) AND ({}))", expr, self.many_vs_many(left, op, right))
            elif left.multi_match is not None:
                expr = fmt("(({}) AND ({}))", expr, self.many_vs_one(left, op, right, inverse=False))
            elif right.multi_match is not None:
                expr = fmt("(({}) AND ({}))", expr, self.many_vs_one(right, op, left, inverse=True))

        if left.after_build is not None:
            expr = left.after_build(expr)
        if right.after_build is not None:
            expr = right.after_build(expr)
        return expr

    def many_vs_one(self, many: ResolvedField, op: str, other: ResolvedField, *, inverse: bool) -> Sql:
        assert many.multi_match is not None
        alias = self.alias("__sm")
        r1 = ResolvedField(Sql(col(alias, "multiMatchValue")), null_fallback=many.null_fallback,
                           after_build=_not)
        r2 = ResolvedField(other.sql, params=other.params)
        where = self.operands(r2, op, r1) if inverse else self.operands(r1, op, r2)
        return fmt("NOT EXISTS (SELECT 1 FROM ({}) {} WHERE {})", many.multi_match.sql(),
                    quote(alias), where)

    def many_vs_many(self, left: ResolvedField, op: str, right: ResolvedField) -> Sql:
        assert left.multi_match is not None and right.multi_match is not None
        l_alias, r_alias = self.alias("__ml"), self.alias("__mr")
        where = self.operands(
            ResolvedField(Sql(col(l_alias, "multiMatchValue")), null_fallback=left.null_fallback),
            op,
            ResolvedField(Sql(col(r_alias, "multiMatchValue")), null_fallback=right.null_fallback,
                          after_build=_not),
        )
        return fmt("NOT EXISTS (SELECT 1 FROM ({}) {} LEFT JOIN ({}) {} WHERE {})",
                    left.multi_match.sql(), quote(l_alias), right.multi_match.sql(),
                    quote(r_alias), where)


def _join_part(parts: list[Sql], join: str, expr: Sql) -> None:
    if parts:
        parts.append(Sql("OR" if join == JOIN_OR else "AND"))
    parts.append(expr)


def _not(expr: Sql) -> Sql:
    return fmt("NOT ({})", expr)


def _to_float(literal: str) -> float:
    try:
        return float(literal)
    except ValueError:
        return 0.0


# -- functions --------------------------------------------------------------------------------------------


def _fn_geo_distance(build: FilterBuilder, args: tuple[Token, ...]) -> ResolvedField:
    if len(args) != 4:
        raise FilterError(f"[geoDistance] expected 4 arguments, got {len(args)}")
    resolved: list[ResolvedField] = []
    for i, arg in enumerate(args):
        if arg.type not in (T_IDENTIFIER, T_NUMBER):
            raise FilterError(f"[geoDistance] argument {i} must be an identifier or number")
        try:
            resolved.append(build.token(arg))
        except FilterError as exc:
            raise FilterError(f"[geoDistance] failed to resolve argument {i}: {exc}") from exc
    lon_a, lat_a, lon_b, lat_b = (r.sql for r in resolved)
    expr = fmt("(6371 * acos(cos(radians({})) * cos(radians({})) * cos(radians({}) - radians({})) + "
                "sin(radians({})) * sin(radians({}))))", lat_a, lat_b, lon_b, lon_a, lat_a, lat_b)
    values = tuple(itertools.chain.from_iterable(r.values for r in resolved))
    return ResolvedField(expr, null_fallback=NullFallback.DISABLED, params=values)


def _fn_strftime(build: FilterBuilder, args: tuple[Token, ...]) -> ResolvedField:
    if not args:
        raise FilterError("[strftime] expected at least 1 arguments, got 0")
    if len(args) > 10:
        raise FilterError(f"[strftime] too many arguments (max allowed 10, got {len(args)})")
    if args[0].type != T_TEXT:
        raise FilterError("[strftime] expects the first argument to be a format string")
    layout = build.token(args[0])
    if len(args) == 1:
        return ResolvedField(fmt("strftime({})", layout.sql), null_fallback=NullFallback.ENFORCED)
    if args[1].type not in (T_TEXT, T_IDENTIFIER, T_NUMBER):
        raise FilterError("[strftime] expects the second argument to be of a valid time-value type")
    try:
        time_value = build.token(args[1])
    except FilterError as exc:
        raise FilterError(f"[strftime] failed to resolve time-value argument: {exc}") from exc
    modifiers: list[ResolvedField] = []
    for i, arg in enumerate(args[2:]):
        if arg.type != T_TEXT:
            raise FilterError(f"[strftime] invalid modifier argument {i} - can be only string")
        modifiers.append(build.token(arg))
    expr = fmt("strftime({})", Sql.join(",", [layout.sql, time_value.sql, *(m.sql for m in modifiers)]))
    multi = None
    if time_value.multi_match is not None:
        mm = time_value.multi_match
        multi = replace(mm, value=fmt("strftime({})", Sql.join(",", [layout.sql, mm.value, *(m.sql for m in modifiers)])))
    values = layout.values + time_value.values + tuple(itertools.chain.from_iterable(m.values for m in modifiers))
    return ResolvedField(expr, null_fallback=NullFallback.ENFORCED, multi_match=multi, params=values)


_FUNCTIONS: Final[dict[str, Callable[[FilterBuilder, tuple[Token, ...]], ResolvedField]]] = {
    "geoDistance": _fn_geo_distance,
    "strftime": _fn_strftime,
}


# ---------------------------------------------------------------------------------------------------------
# public compile API
# ---------------------------------------------------------------------------------------------------------


def compile_filter(
    expression: str,
    resolver: Resolver,
    *,
    max_expressions: int = DEFAULT_FILTER_EXPR_LIMIT,
    max_length: int | None = MAX_FILTER_LENGTH,
    now: datetime | None = None,
) -> tuple[str, list[Any]]:
    """Compile a PocketBase filter into a self-contained SQLite boolean expression.

    Args:
        expression: the filter, e.g. ``title ~ "abc" && (rel.active = true || created > @todayStart)``.
            An empty string compiles to ``1=1`` (PocketBase ignores an empty ``filter``/rule).
        resolver: maps identifiers to operands, e.g. a :class:`TableResolver`.
        max_expressions: max ``a op b`` terms (PocketBase: 200).
        max_length: max filter length in UTF-8 bytes for client-side filters (PocketBase: 3500); ``None``
            for API rules, which PocketBase doesn't limit.
        now: the moment for the date macros (default: the current UTC time).

    Returns:
        ``(sql, params)``: use as ``SELECT ... FROM "<table>" WHERE <sql>`` with ``params`` bound in order.

    Raises:
        FilterError: the filter is invalid (PocketBase answers ``400``).
    """
    return compile_filters([expression], resolver, max_expressions=max_expressions, max_length=max_length, now=now)


def compile_filters(
    expressions: Sequence[str | tuple[str, Resolver]],
    resolver: Resolver,
    *,
    max_expressions: int = DEFAULT_FILTER_EXPR_LIMIT,
    max_length: int | None = MAX_FILTER_LENGTH,
    now: datetime | None = None,
    joined_operands: Sequence[ResolvedField] = (),
) -> tuple[str, list[Any]]:
    """AND several filters with shared relation joins, as PocketBase does for a list rule plus ``filter``.

    Sharing matters for to-many relations: PocketBase joins each relation once for the whole query, so
    ``rel.a = 1`` in the rule and ``rel.b = 2`` in the filter must hold for the same related record.
    An item may be ``(expression, resolver)`` to compile it with another resolver of the same collection
    (PocketBase builds the list rule with hidden fields allowed and the client filter without).

    ``joined_operands`` are other operands of the same query (e.g. resolved sort fields) whose joins must
    take part: PocketBase adds the list-rule constraints of every collection joined for them too.

    Returns:
        ``(sql, params)`` like :func:`compile_filter`.
    """
    build = FilterBuilder(resolver, max_expressions, now)
    for operand in joined_operands:
        if operand.rule_joins:
            build.register(operand)
    parts: list[Sql] = []
    for item in expressions:
        text, item_resolver = (item, resolver) if isinstance(item, str) else item
        if text == "":
            continue
        if max_length is not None and len(text.encode()) > max_length:
            raise FilterError("max filter length limit reached")
        groups = parse(text)
        build.resolver = item_resolver
        build.remaining = max_expressions  # PocketBase applies the limit to each filter separately
        parts.append(build.groups(groups))
    sql = _finish(build, parts)
    return sql.text, list(sql.params)


def _finish(build: FilterBuilder, parts: list[Sql]) -> Sql:
    """AND the parts, add the list-rule constraints of joined collections and wrap the joins."""
    done_rules: set[str] = set()
    while len(done_rules) < len(build.rule_joins):
        for alias, rule_join in list(build.rule_joins.items()):
            if alias in done_rules:
                continue
            done_rules.add(alias)
            build.resolver = rule_join.resolver
            build.remaining = DEFAULT_FILTER_EXPR_LIMIT
            try:
                parts.append(build.groups(parse("id='' || (\n" + rule_join.rule + "\n)")))
            except FilterError as exc:
                raise FilterError(f"failed to build the joined collection ListRule filter: {exc}") from exc
    if not parts:
        return Sql("1=1")
    where = parts[0] if len(parts) == 1 else "(" + Sql.join(" AND ", parts) + ")"
    if not build.joins:
        return where
    joins = Sql.join(" ", (j.sql() for j in build.joins.values()))
    return fmt('EXISTS (SELECT 1 FROM (SELECT 1) "__pbf_base" {} WHERE {})', joins, where)


def compile_operand(identifier: str, resolver: Resolver) -> tuple[ResolvedField, tuple[Join, ...]]:
    """Resolve one identifier the way a filter operand is (used by the sort compiler).

    Returns:
        The resolved operand and all joins it needs.
    """
    build = FilterBuilder(resolver, 1, None)
    resolved = resolver.resolve(identifier)
    build.register(resolved)
    return resolved, tuple(build.joins.values())
