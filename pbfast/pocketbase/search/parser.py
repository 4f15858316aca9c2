"""fexpr's parser: a filter's tokens as a tree of join-tagged expression groups."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Final

from pbfast.pocketbase.gocompat import go_quote
from pbfast.pocketbase.search.errors import FilterError
from pbfast.pocketbase.search.scanner import (
    JOIN_AND,
    JOIN_OR,
    T_COMMENT,
    T_EOF,
    T_FUNCTION,
    T_IDENTIFIER,
    T_JOIN,
    T_NUMBER,
    T_SIGN,
    T_TEXT,
    T_WS,
    GroupSpan,
    Scanner,
    Token,
)

__all__ = ["Expr", "ExprGroup", "parse"]

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

    scanner: Scanner
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
    stack = [_ParseFrame(Scanner(text, group_ends=group_ends, spans=True), JOIN_AND)]
    while True:
        frame = stack[-1]
        token = frame.scanner.scan_or_span()
        if isinstance(token, GroupSpan):
            inner = Scanner(text, token.start, token.end, group_ends, spans=True)
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
