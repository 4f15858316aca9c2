"""PocketBase's filter language (``fexpr``) compiled to SQLite ``WHERE`` expressions.

The grammar and the SQL semantics follow PocketBase 0.40.x (``tools/search/filter.go``,
``core/record_field_resolver*.go`` and the ``github.com/ganigeorgiev/fexpr`` scanner/parser) so that the
same filter selects the same records on a PocketBase ``data.db``:

* ``=``/``!=`` treat NULL and ``''`` alike (``x = ""`` and ``x = null`` match both), ``!=`` never yields
  NULL;
* ``~``/``!~`` are ``LIKE`` with ``%`` wrapping unless the value has an unescaped ``%``;
* multi-value operands (``rel_many.title``, ``select_many:each`` ...) must match for *every* item unless
  the ``?``-prefixed "any" operator is used;
* relations (``rel.field``), back-relations (``coll_via_field``), ``@collection.*``, ``@request.*`` and
  the ``:each``/``:length``/``:lower``/``:isset``/``:changed`` modifiers resolve like PocketBase's
  ``RecordFieldResolver``.

Identifiers only ever become SQL through the resolver (quoted column names taken from the schema); every
value that comes from the filter text or the request is a bound ``?`` parameter.

Where PocketBase LEFT JOINs relations into the main query (and de-duplicates with ``DISTINCT``), the
compiled expression is self-contained instead: it is wrapped in ``EXISTS (SELECT 1 FROM (SELECT 1) LEFT
JOIN ... WHERE <expr>)``, which selects the same rows, so a caller only has to run
``SELECT ... FROM "<table>" WHERE <sql>``.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any, Final, Protocol

from pbfast.pocketbase.dbutils.identifiers import quote
from pbfast.pocketbase.dbutils.index import single_column_unique_index
from pbfast.pocketbase.dbutils.json import json_array_length, json_each, json_extract
from pbfast.pocketbase.gocompat import format_datetime_value, go_quote, go_string, parse_float

__all__ = [
    "DEFAULT_FILTER_EXPR_LIMIT",
    "MAX_FILTER_LENGTH",
    "CollectionInfo",
    "Collections",
    "Expr",
    "ExprGroup",
    "FilterError",
    "Join",
    "MultiMatch",
    "NullFallback",
    "ResolvedField",
    "Resolver",
    "Sql",
    "TableResolver",
    "Token",
    "compile_filter",
    "compile_filters",
    "parse",
    "superuser_only_field",
    "tokenize",
]

DEFAULT_FILTER_EXPR_LIMIT: Final = 200
"""Max ``a op b`` expressions in one filter (PocketBase's ``DefaultFilterExprLimit``)."""

MAX_FILTER_LENGTH: Final = 3500
"""Max length in bytes of a client-side filter (PocketBase's ``MaxFilterLength``)."""

MAX_NESTED_RELS: Final = 6
"""Max relation hops in one identifier (PocketBase's ``maxNestedRels``)."""


class FilterError(ValueError):
    """An invalid filter (syntax, unknown field, limits ...).

    PocketBase answers these with ``400 {"status":400,"message":"Something went wrong while processing
    your request.","data":{}}``; the message here is for logs only.
    """


# ---------------------------------------------------------------------------------------------------------
# fexpr: scanner
# ---------------------------------------------------------------------------------------------------------

T_EOF: Final = "eof"
T_WS: Final = "whitespace"
T_JOIN: Final = "join"
T_SIGN: Final = "sign"
T_IDENTIFIER: Final = "identifier"
T_FUNCTION: Final = "function"
T_NUMBER: Final = "number"
T_TEXT: Final = "text"
T_GROUP: Final = "group"
T_COMMENT: Final = "comment"

JOIN_AND: Final = "&&"
JOIN_OR: Final = "||"

SIGN_OPS: Final = frozenset({"=", "!=", "~", "!~", "<", "<=", ">", ">=",
                             "?=", "?!=", "?~", "?!~", "?<", "?<=", "?>", "?>="})
_ANY_OPS: Final = frozenset(op for op in SIGN_OPS if op.startswith("?"))

_EOF: Final = "\x00"  # like fexpr, a NUL character ends the input
_MAX_FUNC_DEPTH: Final = 3


@dataclass(frozen=True, slots=True)
class Token:
    """One scanned token; ``args`` holds a function token's argument tokens."""

    type: str
    literal: str
    args: tuple[Token, ...] = ()


def _is_letter(ch: str) -> bool:
    return ("a" <= ch <= "z") or ("A" <= ch <= "Z")


def _is_digit(ch: str) -> bool:
    return "0" <= ch <= "9"


def _is_ws(ch: str) -> bool:
    return ch in (" ", "\t", "\n")


def _is_identifier_start(ch: str) -> bool:
    return _is_letter(ch) or ch in ("@", "_", "#")


def _is_number_start(ch: str) -> bool:
    return ch == "-" or _is_digit(ch)


def _is_sign_char(ch: str) -> bool:
    return ch in ("=", "?", "!", ">", "<", "~")


def _is_valid_identifier(literal: str) -> bool:
    return bool(literal) and literal[-1] not in (".", ":") and not (len(literal) == 1 and literal in "@_#")


@dataclass(frozen=True, slots=True)
class _GroupSpan:
    """Where a parenthesised group's inner text lies in the scanned text (``data[start:end]``)."""

    start: int
    end: int


class _Scanner:
    """A character-for-character port of fexpr's scanner semantics (not of its code).

    It scans ``text[start:end]`` as if that slice were the whole input, so a nested group is parsed in
    place rather than copied out. ``group_ends`` (shared by the scanners of one parse) remembers where each
    ``(`` seen outside quotes is closed: scanning a group again from the same ``(`` gives the same end as
    long as that end lies before the scanned range's end, so every character is looked at a bounded number
    of times however deep the nesting (copying each level's text would be quadratic).
    """

    def __init__(self, text: str, start: int = 0, end: int | None = None,
                 group_ends: dict[int, int] | None = None, *, spans: bool = False) -> None:
        self.data = text
        self.start = start
        self.pos = start
        self.end = len(text) if end is None else end
        self.group_ends = {} if group_ends is None else group_ends
        self.spans = spans  # groups come back as _GroupSpan instead of a T_GROUP token with a copy

    def read(self) -> str:
        if self.pos >= self.end:
            return _EOF
        ch = self.data[self.pos]
        self.pos += 1
        return ch

    def unread(self) -> None:
        if self.pos > self.start:
            self.pos -= 1

    def scan(self) -> Token:
        token = self.scan_or_span()
        if isinstance(token, _GroupSpan):
            return Token(T_GROUP, self.data[token.start:token.end])
        return token

    def scan_or_span(self) -> Token | _GroupSpan:
        ch = self.read()
        if ch == _EOF:
            return Token(T_EOF, "")
        self.unread()
        if _is_ws(ch):
            return self.scan_whitespace()
        if ch == "(":
            return self.scan_group()
        if _is_identifier_start(ch):
            return self.scan_identifier(_MAX_FUNC_DEPTH)
        if _is_number_start(ch):
            return self.scan_number()
        if ch in ("'", '"'):
            return self.scan_text(preserve_quotes=False)
        if _is_sign_char(ch):
            return self.scan_run(_is_sign_char, T_SIGN, SIGN_OPS, "invalid sign operator")
        if ch in ("&", "|"):
            return self.scan_run(lambda c: c in ("&", "|"), T_JOIN, {JOIN_AND, JOIN_OR}, "invalid join operator")
        if ch == "/":
            return self.scan_comment()
        raise FilterError(f"unexpected character {ch!r}")

    def scan_whitespace(self) -> Token:
        start = self.pos
        while True:
            ch = self.read()
            if ch == _EOF:
                break
            if not _is_ws(ch):
                self.unread()
                break
        return Token(T_WS, self.data[start:self.pos])

    def scan_number(self) -> Token:
        buf: list[str] = []
        had_dot = False
        while True:
            ch = self.read()
            if ch == _EOF:
                break
            if not _is_digit(ch) and (ch != "-" or buf) and (ch != "." or had_dot):
                self.unread()
                break
            buf.append(ch)
            if ch == ".":
                had_dot = True
        literal = "".join(buf)
        if literal == "-" or literal.startswith(".") or literal.endswith("."):
            raise FilterError(f"invalid number {go_quote(literal)}")
        return Token(T_NUMBER, literal)

    def scan_text(self, *, preserve_quotes: bool) -> Token:
        first = self.read()
        buf = [first]
        prev = ""
        closed = False
        while True:
            ch = self.read()
            if ch == _EOF:
                break
            buf.append(ch)
            if ch == first and prev != "\\":
                closed = True
                break
            prev = ch
        literal = "".join(buf)
        if not closed:
            raise FilterError(f"invalid quoted text {go_quote(literal)}")
        if not preserve_quotes:
            literal = literal[1:-1].replace("\\" + first, first)
        return Token(T_TEXT, literal)

    def scan_comment(self) -> Token:
        if self.read() != "/" or self.read() != "/":
            raise FilterError("invalid comment")
        buf: list[str] = []
        while True:
            ch = self.read()
            if ch in (_EOF, "\n"):
                break
            buf.append(ch)
        return Token(T_COMMENT, "".join(buf).strip())

    def scan_identifier(self, func_depth: int) -> Token:
        buf = [self.read()]
        while True:
            ch = self.read()
            if ch == _EOF:
                break
            if ch == "(":
                name = "".join(buf)
                if func_depth <= 0:
                    raise FilterError(f"max nested function arguments reached (max: {_MAX_FUNC_DEPTH})")
                if not _is_valid_identifier(name):
                    raise FilterError(f"invalid function name {go_quote(name)}")
                self.unread()
                return self.scan_function_args(name, func_depth)
            if not (_is_letter(ch) or _is_digit(ch) or ch in (".", ":", "_")):
                self.unread()
                break
            buf.append(ch)
        literal = "".join(buf)
        if not _is_valid_identifier(literal):
            raise FilterError(f"invalid identifier {go_quote(literal)}")
        return Token(T_IDENTIFIER, literal)

    def scan_run(self, accept: Callable[[str], bool], token_type: str, valid: Iterable[str], error: str) -> Token:
        start = self.pos
        while True:
            ch = self.read()
            if ch == _EOF:
                break
            if not accept(ch):
                self.unread()
                break
        literal = self.data[start:self.pos]
        if literal not in valid:
            raise FilterError(f"{error} {go_quote(literal)}")
        return Token(token_type, literal)

    def scan_group(self) -> Token | _GroupSpan:
        opening = self.pos
        known_end = self.group_ends.get(opening)
        if known_end is not None and known_end < self.end:
            self.pos = known_end + 1
        else:
            self.read()  # the opening "("
            open_positions = [opening]  # of the "(" not closed yet, innermost last
            while True:
                ch = self.read()
                if ch == _EOF:
                    break
                if ch == "(":
                    open_positions.append(self.pos - 1)
                elif ch in ("'", '"'):
                    self.unread()
                    self.scan_text(preserve_quotes=True)
                elif ch == ")":
                    self.group_ends[open_positions.pop()] = self.pos - 1
                    if not open_positions:
                        break
            if open_positions:
                raise FilterError(f"invalid formatted group - missing {len(open_positions)} closing bracket(s)")
        span = _GroupSpan(opening + 1, self.pos - 1)
        return span if self.spans else Token(T_GROUP, self.data[span.start:span.end])

    def scan_function_args(self, name: str, func_depth: int) -> Token:
        args: list[Token] = []
        expect_comma = False
        if self.read() != "(":
            raise FilterError(f"invalid or incomplete function call {go_quote(name)}")
        closed = False
        while True:
            ch = self.read()
            if ch == _EOF:
                break
            if ch == ")":
                closed = True
                break
            if _is_ws(ch):
                self.scan_whitespace()
                continue
            if ch == "/":
                self.unread()
                self.scan_comment()
                continue
            is_comma = ch == ","
            if expect_comma and not is_comma:
                raise FilterError(f"expected comma after the last argument in function {go_quote(name)}")
            if not expect_comma and is_comma:
                raise FilterError(f"unexpected comma in function {go_quote(name)}")
            expect_comma = False
            if is_comma:
                continue
            self.unread()
            if _is_identifier_start(ch):
                args.append(self.scan_identifier(func_depth - 1))
            elif _is_number_start(ch):
                args.append(self.scan_number())
            elif ch in ("'", '"'):
                args.append(self.scan_text(preserve_quotes=False))
            else:
                raise FilterError(f"unsupported argument character {ch!r} in function {name!r}")
            expect_comma = True
        if not closed:
            raise FilterError(f"invalid or incomplete function {go_quote(name)} (expected ')')")
        return Token(T_FUNCTION, name, tuple(args))


def tokenize(text: str) -> list[Token]:
    """All tokens of ``text`` (whitespace and comments included; groups are one token each).

    Raises:
        FilterError: on the first scanning error.
    """
    scanner = _Scanner(text)
    tokens: list[Token] = []
    while (token := scanner.scan()).type != T_EOF:
        tokens.append(token)
    return tokens


# ---------------------------------------------------------------------------------------------------------
# fexpr: parser
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expr:
    """``left op right``."""

    left: Token
    op: str
    right: Token


@dataclass(frozen=True, slots=True)
class ExprGroup:
    """An expression or a parenthesised list of groups, joined to what precedes it by ``join``."""

    join: str
    item: Expr | tuple[ExprGroup, ...]


_OPERAND_TYPES: Final = (T_IDENTIFIER, T_TEXT, T_NUMBER, T_FUNCTION)


@dataclass(slots=True)
class _ParseFrame:
    """The parser's state inside one (possibly parenthesised) list of groups."""

    scanner: _Scanner
    join_to_parent: str  # how the finished list joins what precedes it in the enclosing list
    result: list[ExprGroup] = field(default_factory=list)
    step: int = 0  # 0: before sign, 1: sign, 2: after sign, 3: join
    join: str = JOIN_AND
    left: Token | None = None
    op: str = ""

    def feed(self, token: Token) -> None:
        if self.step == 0:
            if token.type not in _OPERAND_TYPES:
                raise FilterError(f"expected left operand (identifier, function, text or number), "
                                  f"got {go_quote(token.literal)}")
            self.left, self.op, self.step = token, "", 1
        elif self.step == 1:
            if token.type != T_SIGN:
                raise FilterError(f"expected a sign operator, got {go_quote(token.literal)}")
            self.op, self.step = token.literal, 2
        elif self.step == 2:
            if token.type not in _OPERAND_TYPES:
                raise FilterError(f"expected right operand (identifier, function, text or number), "
                                  f"got {go_quote(token.literal)}")
            assert self.left is not None
            self.result.append(ExprGroup(self.join, Expr(self.left, self.op, token)))
            self.step = 3
        else:
            if token.type != T_JOIN:
                raise FilterError(f"expected && or ||, got {go_quote(token.literal)}")
            self.join = JOIN_OR if token.literal == JOIN_OR else JOIN_AND
            self.step = 0

    def finish(self) -> tuple[ExprGroup, ...]:
        if self.step != 3:
            if not self.result and self.left is None:
                raise FilterError("empty filter expression")
            raise FilterError("invalid or incomplete filter expression")
        return tuple(self.result)


@functools.lru_cache(maxsize=512)
def parse(text: str) -> tuple[ExprGroup, ...]:
    """Parse a filter into fexpr's AST (a flat list of join-tagged groups, nested for parentheses).

    Mirrors fexpr's state machine, quirks included (a parenthesised group may directly follow another one
    and reuses the previous join; a group in operand position replaces the pending expression). Nested
    groups are parsed with an explicit stack, so any depth parses in time linear in the text's length
    without recursion.

    Raises:
        FilterError: on syntax errors, including an empty or comment-only expression.
    """
    group_ends: dict[int, int] = {}
    stack = [_ParseFrame(_Scanner(text, group_ends=group_ends, spans=True), JOIN_AND)]
    while True:
        frame = stack[-1]
        token = frame.scanner.scan_or_span()
        if isinstance(token, _GroupSpan):
            inner = _Scanner(text, token.start, token.end, group_ends, spans=True)
            stack.append(_ParseFrame(inner, frame.join))
            continue
        if token.type == T_EOF:
            items = frame.finish()
            stack.pop()
            if not stack:
                return items
            parent = stack[-1]
            parent.result.append(ExprGroup(frame.join_to_parent, items))
            parent.step = 3
            continue
        if token.type in (T_WS, T_COMMENT):
            continue
        frame.feed(token)


# ---------------------------------------------------------------------------------------------------------
# SQL fragments
# ---------------------------------------------------------------------------------------------------------


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


def _fmt(template: str, *args: Sql | str) -> Sql:
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


def _col(alias: str, column: str) -> str:
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
        clause = _fmt("LEFT JOIN {} {}", self.table, quote(self.alias))
        return clause if self.on is None else _fmt("{} ON {}", clause, self.on)


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
        return _fmt("SELECT {} AS \"multiMatchValue\" FROM {} {} {} WHERE {} = {}",
                    self.value, quote(self.from_table), quote(self.from_alias), joins,
                    _col(self.from_alias, "id"), _col(self.target_alias, "id"))


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


# ---------------------------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------------------------


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
        return _fmt("{} " + null_eq + " {}", l_sql, r_sql)
    left_empty = _is_empty_identifier(left) or (
        left.null_fallback == NullFallback.AUTO and len(left.values) == 1 and _has_empty_value(left))
    right_empty = _is_empty_identifier(right) or (
        right.null_fallback == NullFallback.AUTO and len(right.values) == 1 and _has_empty_value(right))
    if left_empty and right_empty:
        # PocketBase keeps the operands' params bound even though the SQL no longer references them;
        # positional placeholders can't, and nothing observable depends on it
        return Sql(f"'' {eq} ''")
    if _is_known_non_empty(left) or _is_known_non_empty(right):
        return _fmt("{} " + eq + " {}", Sql("''") if left_empty else l_sql, Sql("''") if right_empty else r_sql)
    if left_empty:
        return _fmt("('' " + eq + " {} " + concat + " {} " + null_expr + ")", r_sql, r_sql)
    if right_empty:
        return _fmt("({} " + eq + " '' " + concat + " {} " + null_expr + ")", l_sql, l_sql)
    return _fmt("COALESCE({}, '') " + eq + " COALESCE({}, '')", l_sql, r_sql)


class _Build:
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
                expr = _fmt("{} " + like + " ('%' || {} || '%') ESCAPE '\\'", left.sql, right.sql)
            else:
                wrapped = Sql(right.sql.text, tuple(_wrap_like(v) for v in right.sql.params))
                expr = _fmt("{} " + like + " {} ESCAPE '\\'", left.sql, wrapped)
        elif base in ("<", "<=", ">", ">="):
            expr = _fmt("{} " + base + " {}", left.sql, right.sql)
        else:
            raise FilterError(f"unknown expression operator {go_quote(op)}")

        if op not in _ANY_OPS:
            if left.multi_match is not None and right.multi_match is not None:
                expr = _fmt("(({}) AND ({}))", expr, self.many_vs_many(left, op, right))
            elif left.multi_match is not None:
                expr = _fmt("(({}) AND ({}))", expr, self.many_vs_one(left, op, right, inverse=False))
            elif right.multi_match is not None:
                expr = _fmt("(({}) AND ({}))", expr, self.many_vs_one(right, op, left, inverse=True))

        if left.after_build is not None:
            expr = left.after_build(expr)
        if right.after_build is not None:
            expr = right.after_build(expr)
        return expr

    def many_vs_one(self, many: ResolvedField, op: str, other: ResolvedField, *, inverse: bool) -> Sql:
        assert many.multi_match is not None
        alias = self.alias("__sm")
        r1 = ResolvedField(Sql(_col(alias, "multiMatchValue")), null_fallback=many.null_fallback,
                           after_build=_not)
        r2 = ResolvedField(other.sql, params=other.params)
        where = self.operands(r2, op, r1) if inverse else self.operands(r1, op, r2)
        return _fmt("NOT EXISTS (SELECT 1 FROM ({}) {} WHERE {})", many.multi_match.sql(),
                    quote(alias), where)

    def many_vs_many(self, left: ResolvedField, op: str, right: ResolvedField) -> Sql:
        assert left.multi_match is not None and right.multi_match is not None
        l_alias, r_alias = self.alias("__ml"), self.alias("__mr")
        where = self.operands(
            ResolvedField(Sql(_col(l_alias, "multiMatchValue")), null_fallback=left.null_fallback),
            op,
            ResolvedField(Sql(_col(r_alias, "multiMatchValue")), null_fallback=right.null_fallback,
                          after_build=_not),
        )
        return _fmt("NOT EXISTS (SELECT 1 FROM ({}) {} LEFT JOIN ({}) {} WHERE {})",
                    left.multi_match.sql(), quote(l_alias), right.multi_match.sql(),
                    quote(r_alias), where)


def _join_part(parts: list[Sql], join: str, expr: Sql) -> None:
    if parts:
        parts.append(Sql("OR" if join == JOIN_OR else "AND"))
    parts.append(expr)


def _not(expr: Sql) -> Sql:
    return _fmt("NOT ({})", expr)


def _to_float(literal: str) -> float:
    try:
        return float(literal)
    except ValueError:
        return 0.0


# -- functions --------------------------------------------------------------------------------------------


def _fn_geo_distance(build: _Build, args: tuple[Token, ...]) -> ResolvedField:
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
    expr = _fmt("(6371 * acos(cos(radians({})) * cos(radians({})) * cos(radians({}) - radians({})) + "
                "sin(radians({})) * sin(radians({}))))", lat_a, lat_b, lon_b, lon_a, lat_a, lat_b)
    values = tuple(itertools.chain.from_iterable(r.values for r in resolved))
    return ResolvedField(expr, null_fallback=NullFallback.DISABLED, params=values)


def _fn_strftime(build: _Build, args: tuple[Token, ...]) -> ResolvedField:
    if not args:
        raise FilterError("[strftime] expected at least 1 arguments, got 0")
    if len(args) > 10:
        raise FilterError(f"[strftime] too many arguments (max allowed 10, got {len(args)})")
    if args[0].type != T_TEXT:
        raise FilterError("[strftime] expects the first argument to be a format string")
    fmt = build.token(args[0])
    if len(args) == 1:
        return ResolvedField(_fmt("strftime({})", fmt.sql), null_fallback=NullFallback.ENFORCED)
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
    expr = _fmt("strftime({})", Sql.join(",", [fmt.sql, time_value.sql, *(m.sql for m in modifiers)]))
    multi = None
    if time_value.multi_match is not None:
        mm = time_value.multi_match
        multi = replace(mm, value=_fmt("strftime({})", Sql.join(",", [fmt.sql, mm.value, *(m.sql for m in modifiers)])))
    values = fmt.values + time_value.values + tuple(itertools.chain.from_iterable(m.values for m in modifiers))
    return ResolvedField(expr, null_fallback=NullFallback.ENFORCED, multi_match=multi, params=values)


_FUNCTIONS: Final[dict[str, Callable[[_Build, tuple[Token, ...]], ResolvedField]]] = {
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
    build = _Build(resolver, max_expressions, now)
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


def _finish(build: _Build, parts: list[Sql]) -> Sql:
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
    return _fmt('EXISTS (SELECT 1 FROM (SELECT 1) "__pbf_base" {} WHERE {})', joins, where)


def compile_operand(identifier: str, resolver: Resolver) -> tuple[ResolvedField, tuple[Join, ...]]:
    """Resolve one identifier the way a filter operand is (used by the sort compiler).

    Returns:
        The resolved operand and all joins it needs.
    """
    build = _Build(resolver, 1, None)
    resolved = resolver.resolve(identifier)
    build.register(resolved)
    return resolved, tuple(build.joins.values())


# ---------------------------------------------------------------------------------------------------------
# TableResolver: PocketBase's RecordFieldResolver over data.db tables
# ---------------------------------------------------------------------------------------------------------

_MULTI_VALUE_TYPES: Final = frozenset({"select", "relation", "file"})
_MODIFIERS: Final = frozenset({"isset", "each", "length", "lower", "changed"})
_PLAIN_AUTH_FIELDS: Final = frozenset(
    "@request.auth." + n for n in ("id", "collectionId", "collectionName", "email", "emailVisibility", "verified"))
_ALLOWED_FIELD_PATTERNS: Final = tuple(re.compile(p, re.ASCII) for p in (
    r"\w+[\w.:]*",
    r"@request\.context",
    r"@request\.method",
    r"@request\.auth\.[\w.:]*\w+",
    r"@request\.body\.[\w.:]*\w+",
    r"@request\.query\.[\w.:]*\w+",
    r"@request\.headers\.[\w.:]*\w+",
    r"@collection\.\w+(:\w+)?\.[\w.:]*\w+",
))
_VIA_RE: Final = re.compile(r"(\w+)_via_(\w+)", re.ASCII)
_INT_RE: Final = re.compile(r"[+-]?[0-9]+")
@dataclass(frozen=True, slots=True)
class CollectionInfo:
    """The parts of a collection definition the resolver needs (fields by name, indexes, list rule)."""

    id: str
    name: str
    type: str
    fields: Mapping[str, Mapping[str, Any]]
    indexes: tuple[str, ...]
    list_rule: str | None

    @staticmethod
    def of(data: Mapping[str, Any]) -> CollectionInfo:
        """From a collection dict (``fields``/``indexes`` may be lists or their JSON text)."""
        fields = data.get("fields") or []
        if isinstance(fields, str | bytes):
            fields = json.loads(fields)
        indexes = data.get("indexes") or []
        if isinstance(indexes, str | bytes):
            indexes = json.loads(indexes)
        return CollectionInfo(
            id=str(data.get("id") or ""),
            name=str(data["name"]),
            type=str(data.get("type") or "base"),
            fields={str(f["name"]): f for f in fields},
            indexes=tuple(str(i) for i in indexes),
            list_rule=data.get("listRule"),
        )


def _is_multiple(field_def: Mapping[str, Any]) -> bool:
    try:
        return int(field_def.get("maxSelect") or 0) > 1
    except (TypeError, ValueError):
        return False


def _is_hidden(field_def: Mapping[str, Any]) -> bool:
    return bool(field_def.get("hidden"))


def _split_modifier(combined: str) -> tuple[str, str]:
    parts = combined.split(":")
    if len(parts) != 2:
        return combined, ""
    if parts[1] in _MODIFIERS:
        return parts[0], parts[1]
    raise FilterError(f"unknown modifier in {go_quote(combined)}")


class _Missing(Exception):
    """A @request.* path that doesn't exist (resolved gracefully)."""


def _extract_nested(data: Any, keys: Sequence[str]) -> Any:
    if isinstance(data, bytes | bytearray):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise _Missing from exc
    key = keys[0]
    if isinstance(data, Mapping):
        if key not in data:
            raise _Missing
        value = data[key]
    elif isinstance(data, list | tuple):
        if not _INT_RE.fullmatch(key):
            raise _Missing
        idx = int(key)
        if idx < 0 or idx >= len(data):
            raise _Missing
        value = data[idx]
    else:
        raise _Missing
    return value if len(keys) == 1 else _extract_nested(value, keys[1:])


def _to_slice(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _unique_strings(value: Any) -> list[str]:
    items: list[str]
    if value is None:
        items = []
    elif isinstance(value, str):
        if value == "":
            items = []
        elif "[" in value:
            try:
                decoded = json.loads(value)
                items = [str(v) for v in decoded] if isinstance(decoded, list) else [value]
            except ValueError:
                items = [value]
        else:
            items = [value]
    elif isinstance(value, list | tuple):
        items = [go_string(v) for v in value]
    else:
        items = [go_string(value)]
    seen: dict[str, None] = {}
    for item in items:
        if item != "":
            seen.setdefault(item, None)
    return list(seen)


def _json_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False, default=str)


SUPERUSER_ONLY_FIELD_PREFIXES: Final = ("@collection.", "@request.")


def superuser_only_field(value: str) -> str | None:
    """The ``@collection.``/``@request.`` prefix if ``value`` (a client ``filter`` or ``sort``) mentions one.

    PocketBase refuses these for non-superusers with ``403 "Only superusers can filter by <prefix>"``
    (a loose substring check, done before any parsing).
    """
    for prefix in SUPERUSER_ONLY_FIELD_PREFIXES:
        if prefix in value:
            return prefix
    return None


class Collections:
    """A tenant's collections indexed by id and name, for relation/back-relation/``@collection`` lookups.

    Build it once per schema version and pass it to every :class:`TableResolver`.
    """

    def __init__(self, collections: Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]] = ()) -> None:
        values = collections.values() if isinstance(collections, Mapping) else collections
        parsed = [CollectionInfo.of(data) for data in values]
        self.by_id: dict[str, CollectionInfo] = {c.id: c for c in parsed if c.id}
        self.by_name: dict[str, CollectionInfo] = {c.name: c for c in parsed}
        self.by_lower_name: dict[str, CollectionInfo] = {c.name.lower(): c for c in parsed}

    def __len__(self) -> int:
        return len(self.by_name)

    def get(self, name_or_id: str) -> CollectionInfo | None:
        """A collection by id, exact name or case-insensitive name."""
        return self.by_id.get(name_or_id) or self.by_name.get(name_or_id) or \
            self.by_lower_name.get(name_or_id.lower())


class TableResolver:
    """Resolves identifiers of one collection's table in a PocketBase ``data.db`` (PocketBase's
    ``RecordFieldResolver``).

    Args:
        table_name: the collection's name (= its table).
        fields: the collection's field definitions (``{"name","type","maxSelect","hidden",
            "collectionId",...}``), as in ``_collections.fields``.
        request_context: values for ``@request.*``: ``{"auth": <auth record dict incl. id, collectionId,
            collectionName ...> | None, "method": "GET", "context": "default", "query": {...},
            "headers": {...}, "body": {...}}``. ``None`` makes every ``@request.*`` identifier NULL.
        collections: every collection of the tenant (a :class:`Collections`, ``id -> collection dict`` or
            an iterable of dicts with ``id``, ``name``, ``type``, ``fields``, ``indexes``, ``listRule``), needed for
            relations, back-relations, ``@collection.*`` and ``@request.auth.<non-plain field>``.
        collection_id, collection_type, indexes, list_rule: the base collection's own metadata (taken from
            ``collections`` by name when omitted).
        allow_hidden_fields: ``True`` for superusers and API rules; ``False`` for client filters of
            other users (hidden fields are refused, joined collections' list rules apply, ``email`` of
            auth records only matches where ``emailVisibility`` is on).
        table_alias: the alias of the table in the caller's ``FROM`` (default: the table name).
    """

    def __init__(
        self,
        table_name: str,
        fields: Sequence[Mapping[str, Any]],
        request_context: Mapping[str, Any] | None = None,
        *,
        collections: Collections | Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]] | None = None,
        collection_id: str | None = None,
        collection_type: str | None = None,
        indexes: Sequence[str] | None = None,
        list_rule: str | None = None,
        allow_hidden_fields: bool = True,
        table_alias: str | None = None,
    ) -> None:
        if isinstance(collections, Collections):
            self.collections = collections
        else:
            self.collections = Collections(collections or ())
        known = self.collections.by_name.get(table_name)
        self.base = CollectionInfo(
            id=collection_id if collection_id is not None else (known.id if known else ""),
            name=table_name,
            type=collection_type if collection_type is not None else (known.type if known else "base"),
            fields={str(f["name"]): f for f in fields},
            indexes=tuple(indexes) if indexes is not None else (known.indexes if known else ()),
            list_rule=list_rule if list_rule is not None else (known.list_rule if known else None),
        )
        self.request_context = request_context
        self.allow_hidden_fields = allow_hidden_fields
        self.table_alias = table_alias or table_name
        self._alias_suffix = ""
        self._static: dict[str, Any] = {}
        if request_context is not None:
            headers = request_context.get("headers") or {}
            self._static = {
                "context": request_context.get("context", "default"),
                "method": request_context.get("method", "GET"),
                "query": dict(request_context.get("query") or {}),
                "headers": {str(k).lower().replace("-", "_"): v for k, v in headers.items()},
                "body": dict(request_context.get("body") or {}),
                "auth": request_context.get("auth"),
            }

    @classmethod
    def from_collection(
        cls,
        collection: Mapping[str, Any],
        request_context: Mapping[str, Any] | None = None,
        *,
        collections: Collections | Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]] | None = None,
        allow_hidden_fields: bool = True,
        table_alias: str | None = None,
    ) -> TableResolver:
        """A resolver for a collection dict (``id``, ``name``, ``type``, ``fields``, ``indexes``, ``listRule``)."""
        coll = CollectionInfo.of(collection)
        return cls(coll.name, list(coll.fields.values()), request_context, collections=collections,
                   collection_id=coll.id, collection_type=coll.type, indexes=coll.indexes,
                   list_rule=coll.list_rule, allow_hidden_fields=allow_hidden_fields, table_alias=table_alias)

    def with_hidden_fields(self, allow: bool) -> TableResolver:
        """A copy that allows (or refuses) hidden fields."""
        clone = object.__new__(TableResolver)
        clone.__dict__.update(self.__dict__)
        clone.allow_hidden_fields = allow
        return clone

    def _for_rule_join(self, coll: CollectionInfo, alias: str) -> TableResolver:
        clone = object.__new__(TableResolver)
        clone.__dict__.update(self.__dict__)
        clone.base = coll
        clone.table_alias = alias
        clone.allow_hidden_fields = True
        clone._alias_suffix = f"_r{zlib.crc32(alias.encode()):08x}"
        return clone

    @property
    def has_request(self) -> bool:
        """Whether a request context was given."""
        return self.request_context is not None

    def load_collection(self, name_or_id: str) -> CollectionInfo:
        """A collection by name or id (the base collection included)."""
        if name_or_id in (self.base.name, self.base.id):
            return self.base
        coll = self.collections.get(name_or_id)
        if coll is None:
            if not self.collections:
                raise FilterError(f"missing collection {go_quote(name_or_id)} (relations, back-relations and @collection "
                                  "need the resolver's collections registry)")
            raise FilterError(f"missing collection {go_quote(name_or_id)}")
        return coll

    def resolve(self, identifier: str) -> ResolvedField:
        """See :meth:`Resolver.resolve`."""
        if not any(p.fullmatch(identifier) for p in _ALLOWED_FIELD_PATTERNS):
            raise FilterError(f"failed to resolve field {go_quote(identifier)}")
        return _Runner(self, identifier).run()


class _Runner:
    """One identifier resolution (state of PocketBase's resolver runner)."""

    def __init__(self, resolver: TableResolver, name: str) -> None:
        self.r = resolver
        self.name = name
        self.props = name.split(".")
        self.coll_name = resolver.base.name
        self.alias = resolver.table_alias
        self.nullify_missing = self.props[0] == "@request"
        self.mm = MultiMatch(target_alias=self.alias, from_table=columnify(self.coll_name),
                             from_alias="__mm_" + self.alias)
        self.mm_alias = self.mm.from_alias
        self.with_mm = False
        self.joins: list[Join] = []
        self.rule_joins: list[RuleJoin] = []

    # -- helpers ------------------------------------------------------------------------------------------

    def result(self, sql: Sql, **kwargs: Any) -> ResolvedField:
        return ResolvedField(sql, joins=tuple(self.joins), rule_joins=tuple(self.rule_joins), **kwargs)

    def null(self) -> ResolvedField:
        return self.result(Sql("NULL"))

    def register_join(self, table: Sql, alias: str, on: Sql | None, coll: CollectionInfo | None) -> None:
        if not self.r.allow_hidden_fields and coll is not None:
            if coll.list_rule is None:
                raise FilterError(f"{go_quote(coll.name)} fields can be accessed only when allowHiddenFields is "
                                  "enabled or by superusers")
            if coll.list_rule != "":
                self.rule_joins = [j for j in self.rule_joins if j.alias != alias]
                self.rule_joins.append(RuleJoin(alias, coll.list_rule, self.r._for_rule_join(coll, alias)))
        self.joins = [j for j in self.joins if j.alias != alias]
        self.joins.append(Join(table, alias, on))

    def mm_join(self, table: Sql, alias: str, on: Sql | None = None) -> None:
        self.mm.joins.append(Join(table, alias, on))

    # -- entry --------------------------------------------------------------------------------------------

    def run(self) -> ResolvedField:
        head = self.props[0]
        if head == "@collection":
            return self.collection_field()
        if head == "@request":
            if not self.r.has_request:
                return self.null()
            if self.name.startswith("@request.auth."):
                return self.request_auth_field()
            if self.name.startswith("@request.body.") and len(self.props) > 2:
                field_name, modifier = _split_modifier(self.props[2])
                body_field = self.r.base.fields.get(field_name)
                if body_field is None:
                    return self.static_field(self.props[1:])
                if body_field.get("type") == "relation" and len(self.props) > 3:
                    return self.body_relation_field(body_field)
                if len(self.props) == 3:
                    if modifier == "each":
                        return self.body_each(body_field)
                    if modifier == "length":
                        return self.body_length(body_field)
                    if modifier == "lower":
                        return self.body_lower(body_field)
                    if modifier == "changed":
                        return self.body_changed(body_field)
            return self.static_field(self.props[1:])
        return self.active_props()

    # -- @request.* ---------------------------------------------------------------------------------------

    def static_field(self, path: list[str]) -> ResolvedField:
        path = list(path)
        last, modifier = _split_modifier(path[-1])
        path[-1] = last
        try:
            value = _extract_nested(self.r._static, path)
            missing = False
        except _Missing:
            value, missing = None, True
        if modifier == "isset":
            return self.result(Sql("FALSE" if missing else "TRUE"))
        if isinstance(value, str):
            field_def = self.r.base.fields.get(path[-1])
            if field_def is not None and field_def.get("type") == "number":
                number = parse_float(value)
                if number is not None:
                    value = number
        elif value is None or isinstance(value, bool | int | float):
            pass
        elif isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        else:
            value = _json_dumps(value)
        if modifier not in ("", "lower"):
            raise FilterError(f"invalid modifier sequence {last}:{modifier}")
        if value is None:
            return self.null()
        if modifier == "lower":
            return self.result(_fmt("LOWER({})", Sql.param(value)))
        return self.result(Sql.param(value))

    def auth_collection(self) -> CollectionInfo | None:
        auth = self.r._static.get("auth")
        if not isinstance(auth, Mapping):
            return None
        for key in ("collectionId", "collectionName"):
            ref = auth.get(key)
            if ref:
                try:
                    return self.r.load_collection(str(ref))
                except FilterError:
                    continue
        return None

    def request_auth_field(self) -> ResolvedField:
        auth = self.r._static.get("auth")
        if not isinstance(auth, Mapping) or not auth.get("collectionId") and not auth.get("collectionName"):
            return self.null()
        if self.name in _PLAIN_AUTH_FIELDS:
            return self.static_field(self.props[1:])
        coll = self.auth_collection()
        if coll is None:
            return self.null()
        auth_id = auth.get("id")
        self.coll_name = coll.name
        self.alias = "__auth_" + columnify(coll.name) + self.r._alias_suffix
        self.register_join(Sql(quote(columnify(coll.name))), self.alias,
                           _fmt(_col(self.alias, "id") + " = {}", Sql.param(auth_id)), coll)
        self.mm_alias = "__mm_" + self.alias
        self.mm_join(Sql(quote(columnify(coll.name))), self.mm_alias,
                     _fmt(_col(self.mm_alias, "id") + " = {}", Sql.param(auth_id)))
        self.props = self.props[2:]
        return self.active_props()

    def body_value(self, field_def: Mapping[str, Any]) -> Any:
        return self.r._static.get("body", {}).get(field_def["name"])

    def body_changed(self, field_def: Mapping[str, Any]) -> ResolvedField:
        name = field_def["name"]
        inner = f"@request.body.{name}:isset = true && @request.body.{name} != {name}"
        build = _Build(self.r, DEFAULT_FILTER_EXPR_LIMIT, None)
        expr = build.groups(parse(inner))
        return ResolvedField(
            "(" + expr + ")", null_fallback=NullFallback.DISABLED,
            joins=tuple(self.joins) + tuple(build.joins.values()),
            rule_joins=tuple(self.rule_joins) + tuple(build.rule_joins.values()), params=())

    def body_lower(self, field_def: Mapping[str, Any]) -> ResolvedField:
        value = self.body_value(field_def)
        text = "" if isinstance(value, list | tuple | dict) else go_string(value)
        return self.result(_fmt("LOWER({})", Sql.param(text)))

    def body_length(self, field_def: Mapping[str, Any]) -> ResolvedField:
        if field_def.get("type") not in _MULTI_VALUE_TYPES:
            raise FilterError(f"field {go_quote(field_def['name'])} doesn't support multivalue operations")
        return self.result(Sql(str(len(_to_slice(self.body_value(field_def))))))

    def body_each(self, field_def: Mapping[str, Any]) -> ResolvedField:
        if field_def.get("type") not in _MULTI_VALUE_TYPES:
            raise FilterError(f"field {go_quote(field_def['name'])} doesn't support multivalue operations")
        raw = _json_dumps(_to_slice(self.body_value(field_def)))
        clean = columnify(field_def["name"])
        je_alias = "__dataEach_je_" + clean + self.r._alias_suffix
        self.register_join(_fmt("json_each({})", Sql.param(raw)), je_alias, None, None)
        multi = None
        if _is_multiple(field_def):
            self.with_mm = True
        if self.with_mm:
            je_alias2 = "__mm_" + je_alias
            self.mm_join(_fmt("json_each({})", Sql.param(raw)), je_alias2)
            self.mm.value = Sql(_col(je_alias2, "value"))
            multi = self.mm
        return self.result(Sql(_col(je_alias, "value")), multi_match=multi, params=(raw,))

    def body_relation_field(self, field_def: Mapping[str, Any]) -> ResolvedField:
        try:
            rel_coll = self.r.load_collection(str(field_def.get("collectionId") or ""))
        except FilterError as exc:
            raise FilterError(f"failed to load collection {go_quote(field_def.get('collectionId'))} from data field "
                              f"{go_quote(field_def['name'])}") from exc
        ids = _unique_strings(self.body_value(field_def))
        if not ids:
            return self.null()
        self.coll_name = rel_coll.name
        self.alias = columnify(f"__data_{rel_coll.name}_{field_def['name']}") + self.r._alias_suffix

        def in_ids(alias: str) -> Sql:
            if len(ids) == 1:
                return _fmt(_col(alias, "id") + " = {}", Sql.param(ids[0]))
            return _fmt(_col(alias, "id") + " IN ({})", Sql.join(", ", (Sql.param(i) for i in ids)))

        self.register_join(Sql(quote(rel_coll.name)), self.alias, in_ids(self.alias), rel_coll)
        if _is_multiple(field_def):
            self.with_mm = True
        self.mm_alias = "__mm_" + self.alias
        self.mm_join(Sql(quote(rel_coll.name)), self.mm_alias, in_ids(self.mm_alias))
        self.props = self.props[3:]
        return self.active_props()

    # -- @collection.* ------------------------------------------------------------------------------------

    def collection_field(self) -> ResolvedField:
        if len(self.props) < 3:
            raise FilterError(f"invalid @collection field path in {go_quote(self.name)}")
        coll_ref, _, join_alias = self.props[1].partition(":")
        try:
            coll = self.r.load_collection(coll_ref)
        except FilterError as exc:
            raise FilterError(f"failed to load collection {go_quote(self.props[1])} from field path {go_quote(self.name)}") from exc
        self.coll_name = coll.name
        if join_alias:
            self.alias = columnify("__collection_alias_" + join_alias) + self.r._alias_suffix
        else:
            self.alias = columnify("__collection_" + coll.name) + self.r._alias_suffix
        self.with_mm = True
        self.register_join(Sql(quote(columnify(coll.name))), self.alias, None, coll)
        self.mm_alias = "__mm_" + self.alias
        self.mm_join(Sql(quote(columnify(coll.name))), self.mm_alias)
        self.props = self.props[2:]
        return self.active_props()

    # -- fields and relations -----------------------------------------------------------------------------

    def active_props(self) -> ResolvedField:
        total = len(self.props)
        for i, prop in enumerate(self.props):
            try:
                coll = self.r.load_collection(self.coll_name)
            except FilterError as exc:
                raise FilterError(f"failed to resolve field {go_quote(prop)}") from exc
            if i == total - 1:
                return self.finalize(coll, prop)
            field_def = coll.fields.get(prop)
            if field_def is not None and _is_hidden(field_def) and not self.r.allow_hidden_fields:
                raise FilterError(f"non-filterable field {go_quote(prop)}")
            if field_def is not None and field_def.get("type") in ("json", "geoPoint"):
                return self.json_path(prop, self.props[i + 1:])
            if i >= MAX_NESTED_RELS:
                raise FilterError(f"max nested relations reached for field {go_quote(prop)}")
            if field_def is None:
                back = self.back_relation(coll, prop)
                if back is not None:
                    return back
                continue
            if field_def.get("type") != "relation":
                raise FilterError(f"field {go_quote(prop)} is not a valid relation")
            try:
                rel_coll = self.r.load_collection(str(field_def.get("collectionId") or ""))
            except FilterError as exc:
                raise FilterError(f"failed to load field {go_quote(prop)} collection: {exc}") from exc
            multiple = _is_multiple(field_def)
            if not multiple and i == total - 2 and self.props[i + 1] == "id":
                # "rel.id" is the same as "rel" for single relations (no join needed)
                return self.finalize(coll, str(field_def["name"]))
            clean = columnify(str(field_def["name"]))
            prefixed = _col(self.alias, clean)
            new_alias = self.alias + "_" + clean + self.r._alias_suffix
            rel_table = Sql(quote(columnify(rel_coll.name)))
            if not multiple:
                self.register_join(rel_table, new_alias, Sql(f"{_col(new_alias, 'id')} = {prefixed}"), rel_coll)
            else:
                je_alias = "__je_" + new_alias
                self.register_join(Sql(json_each(prefixed)), je_alias, None, None)
                self.register_join(rel_table, new_alias, Sql(f"{_col(new_alias, 'id')} = {_col(je_alias, 'value')}"),
                                   rel_coll)
            self.coll_name = rel_coll.name
            self.alias = new_alias
            if multiple:
                self.with_mm = True
            new_alias2 = self.mm_alias + "_" + clean
            prefixed2 = _col(self.mm_alias, clean)
            if not multiple:
                self.mm_join(rel_table, new_alias2, Sql(f"{_col(new_alias2, 'id')} = {prefixed2}"))
            else:
                je_alias2 = self.mm_alias + "_" + clean + "_je"
                self.mm_join(Sql(json_each(prefixed2)), je_alias2)
                self.mm_join(rel_table, new_alias2, Sql(f"{_col(new_alias2, 'id')} = {_col(je_alias2, 'value')}"))
            self.mm_alias = new_alias2
        raise FilterError(f"failed to resolve field {go_quote(self.name)}")

    def json_path(self, prop: str, rest: Sequence[str]) -> ResolvedField:
        path: list[str] = []
        for j, part in enumerate(rest):
            if _INT_RE.fullmatch(part):
                path.append("[" + columnify(part) + "]")
            else:
                if j > 0:
                    path.append(".")
                path.append(columnify(part))
        json_path = "".join(path)
        clean = columnify(prop)
        multi = None
        if self.with_mm:
            self.mm.value = Sql(json_extract(_col(self.mm_alias, clean), json_path))
            multi = self.mm
        return self.result(Sql(json_extract(_col(self.alias, clean), json_path)),
                           null_fallback=NullFallback.DISABLED, multi_match=multi)

    def back_relation(self, coll: CollectionInfo, prop: str) -> ResolvedField | None:
        """Join ``<collection>_via_<relField>``; returns a NULL operand if it resolves gracefully to nothing."""
        match = _VIA_RE.fullmatch(prop)
        if match is None:
            if self.nullify_missing:
                return self.null()
            raise FilterError(f"failed to resolve field {go_quote(prop)}")
        try:
            back_coll = self.r.load_collection(match.group(1))
        except FilterError as exc:
            if self.nullify_missing:
                return self.null()
            raise FilterError(f"failed to load back relation field {go_quote(prop)} collection") from exc
        back_field = back_coll.fields.get(match.group(2))
        if back_field is None:
            if self.nullify_missing:
                return self.null()
            raise FilterError(f"missing back relation field {go_quote(match.group(2))}")
        if back_field.get("type") != "relation":
            if self.nullify_missing:
                return self.null()
            raise FilterError(f"invalid back relation field {go_quote(match.group(2))}")
        if _is_hidden(back_field) and not self.r.allow_hidden_fields:
            raise FilterError(f"non-filterable back relation field {go_quote(back_field['name'])}")
        if str(back_field.get("collectionId") or "") != coll.id:
            if self.nullify_missing:
                return self.null()
            raise FilterError(f"invalid collection reference of a back relation field {go_quote(back_field['name'])}")

        clean_prop = columnify(prop)
        clean_back = columnify(str(back_field["name"]))
        new_alias = self.alias + "_" + clean_prop + self.r._alias_suffix
        back_table = Sql(quote(columnify(back_coll.name)))
        multiple = _is_multiple(back_field)
        if not multiple:
            self.register_join(back_table, new_alias, Sql(f"{_col(new_alias, clean_back)} = {_col(self.alias, 'id')}"),
                               back_coll)
        else:
            je_alias = "__je_" + new_alias
            self.register_join(back_table, new_alias, Sql(
                f"{_col(self.alias, 'id')} IN (SELECT {_col(je_alias, 'value')} FROM "
                f"{json_each(_col(new_alias, clean_back))} {quote(je_alias)})"), back_coll)
        self.coll_name = back_coll.name
        self.alias = new_alias
        if multiple:
            self.with_mm = True
        elif not self.with_mm:
            self.with_mm = single_column_unique_index(back_coll.indexes, str(back_field["name"])) is None
        new_alias2 = self.mm_alias + "_" + clean_prop + self.r._alias_suffix
        if not multiple:
            self.mm_join(back_table, new_alias2, Sql(f"{_col(new_alias2, clean_back)} = {_col(self.mm_alias, 'id')}"))
        else:
            je_alias2 = "__je_" + new_alias2
            self.mm_join(back_table, new_alias2, Sql(
                f"{_col(self.mm_alias, 'id')} IN (SELECT {_col(je_alias2, 'value')} FROM "
                f"{json_each(_col(new_alias2, clean_back))} {quote(je_alias2)})"))
        self.mm_alias = new_alias2
        return None

    def finalize(self, coll: CollectionInfo, prop: str) -> ResolvedField:
        name, modifier = _split_modifier(prop)
        field_def = coll.fields.get(name)
        if field_def is None:
            if self.nullify_missing:
                return self.null()
            raise FilterError(f"unknown field {go_quote(name)}")
        if _is_hidden(field_def) and not self.r.allow_hidden_fields:
            raise FilterError(f"non-filterable field {go_quote(name)}")
        field_type = field_def.get("type")
        multivaluer = field_type in _MULTI_VALUE_TYPES
        clean = columnify(str(field_def["name"]))
        column = _col(self.alias, clean)

        if modifier == "length" and multivaluer:
            multi = None
            if self.with_mm:
                self.mm.value = Sql(json_array_length(_col(self.mm_alias, clean)))
                multi = self.mm
            return self.result(Sql(json_array_length(column)), multi_match=multi)

        if modifier == "each" and multivaluer:
            je_alias = "__je_" + self.alias + "_" + clean + self.r._alias_suffix
            self.register_join(Sql(json_each(column)), je_alias, None, None)
            if _is_multiple(field_def):
                self.with_mm = True
            multi = None
            if self.with_mm:
                je_alias2 = "__je_" + self.mm_alias + "_" + clean + self.r._alias_suffix
                self.mm_join(Sql(json_each(_col(self.mm_alias, clean))), je_alias2)
                self.mm.value = Sql(_col(je_alias2, "value"))
                multi = self.mm
            return self.result(Sql(_col(je_alias, "value")), multi_match=multi)

        sql = Sql(column)
        null_fallback = NullFallback.AUTO
        multi = None
        if self.with_mm:
            self.mm.value = Sql(_col(self.mm_alias, clean))
            multi = self.mm
        after_build = None
        if field_def["name"] == "email" and not self.r.allow_hidden_fields and coll.type == "auth":
            visibility = _col(self.alias, "emailVisibility")

            def after_build(expr: Sql) -> Sql:
                return _fmt("(({}) AND (" + visibility + " = TRUE))", expr)

        if field_type == "json":
            null_fallback = NullFallback.DISABLED
            sql = Sql(json_extract(column, ""))
            if self.with_mm:
                self.mm.value = Sql(json_extract(_col(self.mm_alias, clean), ""))
        if modifier == "lower":
            sql = _fmt("LOWER({})", sql)
            if self.with_mm:
                self.mm.value = _fmt("LOWER({})", self.mm.value)
        return self.result(sql, null_fallback=null_fallback, multi_match=multi, after_build=after_build)
