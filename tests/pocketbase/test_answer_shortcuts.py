"""The per-request shortcuts of the answer path give what the long way gives (issue 14): a record's JSON keeps a
stored str without its field's ``to_api`` only where ``to_api`` would give it back unchanged, and the CORS and
security headers of an answer, kept per header list, are the ones worked out afresh. No server: the functions
the request path calls, on every field type and odd stored value."""

from __future__ import annotations

from typing import Any

import pytest

from pbfast.pocketbase.apis.front import NO_FRAME_OPTIONS, SECURITY_HEADERS, CorsRecorder
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.fields.registry import decode_field
from pbfast.pocketbase.records.export import Viewer, _shown_value, record_json

FIELD_TYPES = ("text", "email", "url", "editor", "date", "autodate", "number", "bool", "select", "json", "file",
               "relation", "geoPoint", "password")
# Stored values as SQLite may hand them back: canonical texts, texts another writer left, other types.
STORED: tuple[object, ...] = ("", "plain", "2024-01-31 10:00:00.000Z", "2024-02-30 10:00:00.000Z",
                              "2024-01-31T10:00:00Z", "0999-01-01 00:00:00.000Z", "[\"a\",\"b\"]", "1", "true",
                              '{"lon":1,"lat":2}', 0, 1, 2.5, None, b"bytes")


def _collection(kind: str) -> Collection:
    raw = {"name": "f", "type": kind}
    if kind in ("select", "relation", "file"):
        raw["maxSelect"] = 2
    if kind == "select":
        raw["values"] = ["a", "b"]
    if kind == "relation":
        raw["collectionId"] = "pbc_other"
    if kind == "autodate":
        raw["onCreate"] = True
    return Collection(id="pbc_test", name="test", fields=[decode_field(raw)])


@pytest.mark.parametrize("kind", FIELD_TYPES)
def test_a_records_json_is_each_fields_to_api(kind: str) -> None:
    collection = _collection(kind)
    show = _shown_value(collection.fields[0])  # the long way: the field's to_api (a password's "", a point's struct)
    for stored in STORED:
        try:
            expected: Any = show(stored)
        except Exception as err:  # noqa: BLE001 - a value the field cannot show: the shortcut must not hide it
            with pytest.raises(type(err)):
                record_json(collection, {"f": stored}, Viewer(superuser=True))
            continue
        shown = record_json(collection, {"f": stored}, Viewer(superuser=True))["f"]
        assert shown == expected and type(shown) is type(expected), (kind, stored, shown, expected)


class _Proto:
    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] = []

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.headers = headers


class _Scope:
    def __init__(self, origin: str | None) -> None:
        self.headers = {"origin": origin} if origin else {}


def _answer(origin: str | None, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    proto = _Proto()
    CorsRecorder(proto, _Scope(origin)).response_bytes(200, headers, b"")  # type: ignore[arg-type]
    return proto.headers


def test_an_answers_cors_and_security_headers_are_worked_out_per_request() -> None:
    json_headers = [("content-type", "application/json")]
    for _ in range(2):  # the second time from what was kept
        assert _answer(None, json_headers) == [*json_headers, ("vary", "Origin"), *SECURITY_HEADERS]
        assert _answer("https://a.test", json_headers) == [*json_headers, ("vary", "Origin"),
                                                           ("access-control-allow-origin", "*"), *SECURITY_HEADERS]
        # a handler's own security header replaces the middleware's; NO_FRAME_OPTIONS removes X-Frame-Options
        own = [("x-frame-options", "DENY")]
        assert _answer(None, own) == [*own, ("vary", "Origin"),
                                      *(h for h in SECURITY_HEADERS if h[0] != "x-frame-options")]
        assert _answer(None, [NO_FRAME_OPTIONS]) == [("vary", "Origin"),
                                                     *(h for h in SECURITY_HEADERS if h[0] != "x-frame-options")]
    # what one answer's headers became is its own: changing it changes no later answer
    _answer(None, json_headers).append(("x-changed", "1"))
    assert ("x-changed", "1") not in _answer(None, json_headers)
    # header lists that are not hashable are worked out afresh
    odd: Any = [["content-type", "text/plain"]]
    assert _answer(None, odd)[-len(SECURITY_HEADERS):] == list(SECURITY_HEADERS)
