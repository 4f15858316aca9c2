"""HTML as a plain-text excerpt, as PocketBase's ``:excerpt`` modifier computes it (``tools/picker``)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Final

from pbfast.pocketbase.gocompat import trim_space

__all__ = ["excerpt"]

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
