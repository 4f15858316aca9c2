"""PocketBase's list query parameters besides ``filter``: ``sort``, ``fields`` (incl. ``:excerpt``) and
``page``/``perPage``/``skipTotal``.

Behaviour follows PocketBase 0.40.x (``tools/search/sort.go``, ``tools/search/provider.go``,
``tools/picker``, ``tools/tokenizer``). Every invalid value raises :class:`QueryParamError` (a
:class:`~pbfast.pocketbase.filter.FilterError`), which PocketBase answers with ``400 "Something went wrong
while processing your request."``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any, Final, Protocol

from pbfast.pocketbase.dbutils.identifiers import quote
from pbfast.pocketbase.dbutils.tokenizer import UnbalancedTokenError, split_tokens
from pbfast.pocketbase.gocompat import atoi, cast_to_int, parse_bool, trim_space

from .filter import (
    MAX_FILTER_LENGTH,
    FilterError,
    ResolvedField,
    Resolver,
    Sql,
    compile_filters,
    compile_operand,
)

__all__ = [
    "DEFAULT_PER_PAGE",
    "MAX_PER_PAGE",
    "MAX_SORT_FIELDS",
    "MAX_SORT_FIELD_LENGTH",
    "ExcerptModifier",
    "FieldsSpec",
    "ListQuery",
    "Modifier",
    "QueryParamError",
    "SortField",
    "apply_fields",
    "apply_fields_many",
    "compile_list_query",
    "compile_sort",
    "excerpt",
    "parse_fields",
    "parse_paging",
    "parse_skip_total",
    "parse_sort",
]

DEFAULT_PER_PAGE: Final = 30
MAX_PER_PAGE: Final = 1000
MAX_SORT_FIELDS: Final = 8
MAX_SORT_FIELD_LENGTH: Final = 255


class QueryParamError(FilterError):
    """An invalid ``sort``/``fields``/``page``/``perPage``/``skipTotal`` value (PocketBase: 400)."""


# ---------------------------------------------------------------------------------------------------------
# sort
# ---------------------------------------------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class ListQuery:
    """The ``WHERE`` and ``ORDER BY`` parts of a records list query."""

    where: str
    params: list[Any]
    order_by: str


def compile_list_query(
    filters: Sequence[str | tuple[str, Resolver]],
    sort: str,
    resolver: Resolver,
    *,
    max_length: int | None = MAX_FILTER_LENGTH,
) -> ListQuery:
    """Compile the filters (e.g. the list rule and the ``filter`` parameter) and the ``sort`` of one list
    request together, like PocketBase's search provider does.

    Compared to :func:`compile_filters` + :func:`compile_sort` separately, this also applies the list
    rules of collections joined only for sorting (non-superusers sorting by ``rel.field`` only see records
    whose related record they may list).

    Raises:
        FilterError: an invalid filter; QueryParamError: an invalid sort.
    """
    sort_operands: list[ResolvedField] = []
    order_by = _compile_sort(sort, resolver, MAX_SORT_FIELDS, None, sort_operands)
    where, params = compile_filters(filters, resolver, max_length=max_length, joined_operands=sort_operands)
    return ListQuery(where, params, order_by)


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
    return _compile_sort(expression, resolver, max_fields, table_alias, [])


def _compile_sort(expression: str, resolver: Resolver, max_fields: int, table_alias: str | None,
                  operands: list[ResolvedField]) -> str:
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


# ---------------------------------------------------------------------------------------------------------
# paging
# ---------------------------------------------------------------------------------------------------------

def _atoi(raw: str, name: str) -> int:
    try:
        return atoi(raw)
    except ValueError as err:
        raise QueryParamError(f"invalid {name} value {raw!r}") from err


def parse_paging(page: str | None, per_page: str | None) -> tuple[int, int]:
    """``(page, perPage)`` from the raw query values, normalised like PocketBase.

    Missing or empty values take the defaults (page 1, perPage 30); ``page <= 0`` becomes 1, ``perPage <=
    0`` becomes 30 and ``perPage > 1000`` becomes 1000. Values must be base-10 integers (an optional sign,
    no spaces).

    Raises:
        QueryParamError: a non-integer value (PocketBase: 400).
    """
    page_value = _atoi(page, "page") if page else 1
    per_page_value = _atoi(per_page, "perPage") if per_page else DEFAULT_PER_PAGE
    if page_value <= 0:
        page_value = 1
    if per_page_value <= 0:
        per_page_value = DEFAULT_PER_PAGE
    elif per_page_value > MAX_PER_PAGE:
        per_page_value = MAX_PER_PAGE
    return page_value, per_page_value


def parse_skip_total(raw: str | None) -> bool:
    """The ``skipTotal`` query value (Go's ``strconv.ParseBool``; missing/empty = false).

    Raises:
        QueryParamError: any other value (PocketBase: 400).
    """
    if not raw:
        return False
    value = parse_bool(raw)
    if value is None:
        raise QueryParamError(f"invalid skipTotal value {raw!r}")
    return value


# ---------------------------------------------------------------------------------------------------------
# fields picker
# ---------------------------------------------------------------------------------------------------------


class Modifier(Protocol):
    """A ``field:modifier(args)`` value transformation."""

    def modify(self, value: Any) -> Any:
        """The modified value."""
        ...


FieldsSpec = dict[str, "Modifier | None"]
"""Parsed ``fields``: dotted path -> modifier (or ``None``)."""


@dataclass(frozen=True, slots=True)
class ExcerptModifier:
    """``:excerpt(max, withEllipsis?)``: HTML -> collapsed plain text of at most ``max`` characters."""

    max: int
    with_ellipsis: bool = False

    @staticmethod
    def from_args(args: Sequence[str]) -> ExcerptModifier:
        """Validate the raw arguments like PocketBase.

        Raises:
            QueryParamError: no/too many arguments or ``max <= 0``.
        """
        if not args:
            raise QueryParamError("max argument is required - expected (max, withEllipsis?)")
        if len(args) > 2:
            raise QueryParamError("too many arguments - expected (max, withEllipsis?)")
        max_length = cast_to_int(args[0])
        if max_length <= 0:
            raise QueryParamError("max argument must be > 0")
        with_ellipsis = bool(parse_bool(args[1])) if len(args) > 1 else False
        return ExcerptModifier(max_length, with_ellipsis)

    def modify(self, value: Any) -> Any:
        """The excerpt of a string value (other values are returned unchanged)."""
        if not isinstance(value, str):
            return value
        return excerpt(value, self.max, self.with_ellipsis)


_MODIFIER_FACTORIES: Final = {"excerpt": ExcerptModifier.from_args}


def _init_modifier(raw: str) -> Modifier:
    try:
        parts = split_tokens(raw, "(), ", ignore_parenthesis=True)
    except UnbalancedTokenError as exc:
        raise QueryParamError(str(exc)) from exc
    if not parts:
        raise QueryParamError(f"invalid or empty modifier expression {raw!r}")
    factory = _MODIFIER_FACTORIES.get(parts[0])
    if factory is None:
        raise QueryParamError(f"missing or invalid modifier {parts[0]!r}")
    return factory(parts[1:])


def parse_fields(expression: str) -> FieldsSpec:
    """Parse a ``fields`` parameter such as ``id,title,expand.rel.name,*,description:excerpt(200,true)``.

    Raises:
        QueryParamError: unbalanced quotes/parentheses, an unknown modifier or invalid modifier arguments
            (PocketBase: 400).
    """
    try:
        tokens = split_tokens(expression, ",")
    except UnbalancedTokenError as exc:
        raise QueryParamError(str(exc)) from exc
    spec: FieldsSpec = {}
    for token in tokens:
        name, sep, modifier = token.strip().partition(":")
        spec[name] = _init_modifier(modifier) if sep else None
    return spec


def apply_fields(record: Mapping[str, Any], spec: FieldsSpec | str) -> dict[str, Any]:
    """A copy of a JSON-ready record holding only the picked fields (modifiers applied).

    Nested paths (``expand.rel.name``) descend into objects and into lists of objects; ``*`` keeps every
    top-level key not otherwise listed. An empty spec keeps everything.
    """
    fields = dict(parse_fields(spec) if isinstance(spec, str) else spec)
    picked = _pick(dict(record), fields)
    assert isinstance(picked, dict)
    return picked


def apply_fields_many(records: Sequence[Mapping[str, Any]], spec: FieldsSpec | str) -> list[dict[str, Any]]:
    """:func:`apply_fields` for the items of a list response (one shared spec, like PocketBase)."""
    fields = dict(parse_fields(spec) if isinstance(spec, str) else spec)
    return [_pick_map(dict(r), fields) for r in records]


def _pick(data: Any, fields: FieldsSpec) -> Any:
    if isinstance(data, Mapping):
        return _pick_map(data, fields)
    if isinstance(data, list):
        if not data or not isinstance(data[0], Mapping):
            return data
        return [_pick_map(item, fields) if isinstance(item, Mapping) else item for item in data]
    return data


def _pick_map(data: Mapping[str, Any], fields: FieldsSpec) -> dict[str, Any]:
    if not fields:
        return dict(data)
    if "*" in fields:
        star = fields["*"]
        for key in data:
            if not any((f + ".").startswith(key + ".") for f in fields):
                fields[key] = star
    result: dict[str, Any] = {}
    for key, value in data.items():
        prefix = key + "."
        matching = {f: m for f, m in fields.items() if (f + ".").startswith(prefix)}
        if not matching:
            continue
        nested: FieldsSpec = {}
        for f, modifier in matching.items():
            remains = (f + ".").removeprefix(prefix).removesuffix(".")
            if remains == "":
                result[key] = modifier.modify(value) if modifier is not None else value
                break
            nested[remains] = modifier
        else:
            result[key] = _pick(value, nested)
    return result


# ---------------------------------------------------------------------------------------------------------
# excerpt (HTML -> plain text)
# ---------------------------------------------------------------------------------------------------------

_EXCLUDE_TAGS: Final = frozenset({
    "head", "style", "script", "iframe", "embed", "applet", "object", "svg", "img", "picture", "dialog",
    "template", "button", "form", "textarea", "input", "select", "option",
})
_INLINE_TAGS: Final = frozenset({
    "a", "abbr", "acronym", "b", "bdo", "big", "br", "button", "cite", "code", "em", "i", "label", "q",
    "small", "span", "strong", "strike", "sub", "sup", "time",
})
_VOID_TAGS: Final = frozenset({
    "area", "base", "basefont", "bgsound", "br", "col", "embed", "frame", "hr", "img", "input", "keygen",
    "link", "meta", "param", "source", "track", "wbr",
})
_HEAD_TAGS: Final = frozenset({"base", "basefont", "bgsound", "link", "meta", "noframes", "noscript", "script",
                               "style", "template", "title"})
_CLOSES_P: Final = frozenset({
    "address", "article", "aside", "blockquote", "center", "details", "dialog", "dir", "div", "dl",
    "fieldset", "figcaption", "figure", "footer", "header", "hgroup", "main", "menu", "nav", "ol", "p",
    "search", "section", "summary", "ul", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "listing", "form",
    "plaintext", "hr", "xmp",
})
_HEADINGS: Final = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_SPECIAL: Final = frozenset({
    "address", "applet", "area", "article", "aside", "base", "basefont", "bgsound", "blockquote", "body",
    "br", "button", "caption", "center", "col", "colgroup", "dd", "details", "dir", "div", "dl", "dt",
    "embed", "fieldset", "figcaption", "figure", "footer", "form", "frame", "frameset", "h1", "h2", "h3",
    "h4", "h5", "h6", "head", "header", "hgroup", "hr", "html", "iframe", "img", "input", "keygen", "li",
    "link", "listing", "main", "marquee", "menu", "meta", "nav", "noembed", "noframes", "noscript",
    "object", "ol", "p", "param", "plaintext", "pre", "script", "search", "section", "select", "source",
    "style", "summary", "table", "tbody", "td", "template", "textarea", "tfoot", "th", "thead", "title",
    "tr", "track", "ul", "wbr", "xmp",
})
_SCOPE_BOUNDARIES: Final = frozenset({"applet", "caption", "html", "table", "td", "th", "marquee", "object",
                                      "template", "svg", "math"})
_WS_RE: Final = re.compile(r"[\t\n\f\r ]+")


class _Node:
    __slots__ = ("children", "tag", "text")

    def __init__(self, tag: str | None, text: str = "") -> None:
        self.tag = tag  # None for text nodes, "#document" for the root
        self.text = text
        self.children: list[_Node] = []


class _TreeBuilder(HTMLParser):
    """A small approximation of the HTML5 tree construction (enough for text extraction)."""

    # raw text elements (scripting enabled, like Go's html.Parse); RCDATA ones are approximated as raw
    CDATA_CONTENT_ELEMENTS = (  # type: ignore[misc]
        "script", "style", "noscript", "noembed", "noframes", "iframe", "xmp", "textarea", "title")

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.document = _Node("#document")
        self.html = _Node("html")
        self.head = _Node("head")
        self.body = _Node("body")
        self.document.children.append(self.html)
        self.html.children.extend([self.head, self.body])
        self.stack: list[_Node] = [self.head]
        self.in_head = True
        self.head_element_open = False

    # -- helpers --

    def current(self) -> _Node:
        return self.stack[-1]

    def start_body(self) -> None:
        if self.in_head:
            self.in_head = False
            self.stack = [self.body]

    def has_in_scope(self, tag: str, extra: frozenset[str] = frozenset()) -> bool:
        for node in reversed(self.stack):
            if node.tag == tag:
                return True
            if node.tag in _SCOPE_BOUNDARIES or node.tag in extra or node.tag == "body":
                return False
        return False

    def pop_until(self, tag: str) -> None:
        while len(self.stack) > 1:
            node = self.stack.pop()
            if node.tag == tag:
                return

    def append(self, node: _Node) -> None:
        self.current().children.append(node)

    # -- HTMLParser callbacks --

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.open_tag(tag, self_closing=False)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.open_tag(tag, self_closing=True)

    def open_tag(self, tag: str, *, self_closing: bool) -> None:
        if tag in ("html", "body"):
            if tag == "body":
                self.start_body()
            return
        if tag == "head":
            return
        if self.in_head:
            if tag in _HEAD_TAGS and not self.head_element_open:
                node = _Node(tag)
                self.head.children.append(node)
                if tag not in _VOID_TAGS and not self_closing:
                    self.stack.append(node)
                    self.head_element_open = True
                return
            if self.head_element_open:  # inside <title>/<script>/... in the head
                node = _Node(tag)
                self.append(node)
                if tag not in _VOID_TAGS and not self_closing:
                    self.stack.append(node)
                return
            self.start_body()
        if tag == "image":
            tag = "img"
        if tag in _CLOSES_P and self.has_in_scope("p", frozenset({"button"})):
            self.pop_until("p")
        if tag in _HEADINGS and self.current().tag in _HEADINGS:
            self.stack.pop()
        if tag == "li" and self.has_in_scope("li", frozenset({"ol", "ul"})):
            self.pop_until("li")
        if tag in ("dd", "dt"):
            for name in ("dd", "dt"):
                if self.has_in_scope(name):
                    self.pop_until(name)
                    break
        node = _Node(tag)
        self.append(node)
        if tag in _VOID_TAGS or (self_closing and tag in ("svg", "math")):
            return
        self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("html", "body", "head"):
            if tag == "head" and self.in_head and not self.head_element_open:
                self.start_body()
            return
        if self.in_head:
            if self.head_element_open:
                if self.current().tag == tag and len(self.stack) == 2:
                    self.stack.pop()
                    self.head_element_open = False
                elif any(n.tag == tag for n in self.stack[1:]):
                    self.pop_until(tag)
                    if len(self.stack) == 1:
                        self.head_element_open = False
                return
            self.start_body()
        if tag == "br":
            self.append(_Node("br"))
            return
        if tag == "p" and not self.has_in_scope("p", frozenset({"button"})):
            self.append(_Node("p"))
            return
        if tag in _SPECIAL:
            if self.has_in_scope(tag):
                self.pop_until(tag)
            return
        for node in reversed(self.stack[1:]):
            if node.tag == tag:
                self.pop_until(tag)
                return
            if node.tag in _SPECIAL:
                return

    def handle_data(self, data: str) -> None:
        if self.in_head and not self.head_element_open:
            if data.strip("\t\n\f\r ") == "":
                return
            self.start_body()
        data = data.replace("\x00", "")
        if not data:
            return
        children = self.current().children
        if children and children[-1].tag is None:
            children[-1].text += data
        else:
            children.append(_Node(None, data))


def excerpt(html: str, max_length: int, with_ellipsis: bool = False) -> str:
    """Plain-text excerpt of an HTML string, as PocketBase's ``:excerpt`` modifier computes it.

    Tags are stripped (the content of ``script``, ``style``, ``svg``, form controls ... is dropped), block
    elements separate words with a space, whitespace runs collapse to one space, and the result is cut
    to ``max_length`` characters (plus ``...`` when ``with_ellipsis`` and something was cut).
    """
    builder = _TreeBuilder()
    builder.feed(html.replace("\r\n", "\n").replace("\r", "\n"))
    builder.close()

    out: list[str] = []
    size = 0  # UTF-8 bytes written (PocketBase stops descending past max+2 bytes)
    prev_space = False

    def write(text: str) -> None:
        nonlocal size
        out.append(text)
        size += len(text.encode())

    def walk(node: _Node) -> None:
        nonlocal prev_space
        if node.tag is None:
            text = _WS_RE.sub(" ", node.text)
            if prev_space:
                text = text.lstrip(" ")
            if text:
                prev_space = text.endswith(" ")
                write(text)
        if size > max_length + 2:
            return
        for child in node.children:
            if child.tag is not None and child.tag in _EXCLUDE_TAGS:
                continue
            is_block = child.tag is not None and child.tag not in _INLINE_TAGS
            if is_block and not prev_space:
                write(" ")
                prev_space = True
            walk(child)
            if is_block and not prev_space:
                write(" ")
                prev_space = True

    walk(builder.document)
    result = trim_space("".join(out))
    if len(result.encode()) > max_length and len(result) > max_length:
        result = trim_space(result[:max_length])
        if with_ellipsis:
            result += "..."
    return result
