"""PocketBase's ``tools/tokenizer``: split a text on separators outside quotes and parentheses.

Used by the CREATE INDEX parser (:mod:`.index`), the ``fields`` query parameter and the view query parser
(:mod:`pbfast.pocketbase.collections.views`).
"""

from __future__ import annotations

from pbfast.pocketbase.gocompat import go_quote

__all__ = ["UnbalancedTokenError", "split_tokens"]

_WHITESPACE = "\t\n\v\f\r \x85\xa0"


class UnbalancedTokenError(ValueError):
    """A token with an unclosed parenthesis or quote."""


def split_tokens(text: str, separators: str = ",", *, ignore_parenthesis: bool = False,
                 keep_separator: bool = False) -> list[str]:
    """Split ``text`` on ``separators`` outside quotes (``'``, ``"``, backquote) and parentheses, trimming each
    token and dropping empty ones; a backslash escapes the next character. With ``keep_separator`` each token
    ends with the separator that ended it (its ``KeepSeparator``).

    Raises:
        UnbalancedTokenError: on unbalanced parentheses or quotes.
    """
    cutset = "".join(c for c in _WHITESPACE if c not in separators)
    tokens: list[str] = []
    pos, n = 0, len(text)
    while pos < n:
        buf: list[str] = []
        depth = 0
        quote = ""
        prev = ""
        while pos < n:
            ch = text[pos]
            pos += 1
            if prev != "\\":
                if not ignore_parenthesis and ch == "(" and not quote:
                    depth += 1
                elif not ignore_parenthesis and ch == ")" and depth > 0 and not quote:
                    depth -= 1
                elif ch in ("'", '"', "`"):
                    if quote == ch:
                        quote = ""
                    elif not quote:
                        quote = ch
            if ch in separators and depth == 0 and not quote:
                if keep_separator:
                    buf.append(ch)
                break
            prev = ch
            buf.append(ch)
        if depth > 0 or quote:
            raise UnbalancedTokenError(f"unbalanced parenthesis or quoted expression: {go_quote(''.join(buf))}")
        token = "".join(buf).strip(cutset)
        if token:
            tokens.append(token)
    return tokens
