"""fexpr's scanner (``github.com/ganigeorgiev/fexpr``): a filter's text as tokens."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from pbfast.pocketbase.gocompat import go_quote
from pbfast.pocketbase.search.errors import FilterError

__all__ = ["JOIN_AND", "JOIN_OR", "SIGN_OPS", "GroupSpan", "Scanner", "Token", "tokenize"]

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
ANY_OPS: Final = frozenset(op for op in SIGN_OPS if op.startswith("?"))

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
class GroupSpan:
    """Where a parenthesised group's inner text lies in the scanned text (``data[start:end]``)."""

    start: int
    end: int


class Scanner:
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
        self.spans = spans  # groups come back as GroupSpan instead of a T_GROUP token with a copy

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
        if isinstance(token, GroupSpan):
            return Token(T_GROUP, self.data[token.start:token.end])
        return token

    def scan_or_span(self) -> Token | GroupSpan:
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

    def scan_group(self) -> Token | GroupSpan:
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
        span = GroupSpan(opening + 1, self.pos - 1)
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
    scanner = Scanner(text)
    tokens: list[Token] = []
    while (token := scanner.scan()).type != T_EOF:
        tokens.append(token)
    return tokens
