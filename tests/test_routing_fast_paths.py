"""The shortcuts on the request path route exactly as the generic router does: a forwarded tenant request's
``/t/{id}`` taken without the node router (:func:`pbfast.http.forwarded_target`), route templates matched
by their precomputed literal and parameter positions (``Router.match``); and a request without a body by its
headers is not made to wait for one."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from pbfast.http import Request, Router, _bind, forwarded_target, path_segments
from pbfast.request_ids import WithRequestId

TRICKY_PATHS = ["/t/a", "/t/a/", "/t/a/api/health", "/t/a//api", "/t//api", "/t/", "/t", "/t/./x", "/t/../x",
                "/t/a\x01b/x", "/t/a/b/../c", "/tt/a/x", "/t/%2e/x", "/t/a/api/collections/x/records/1",
                "/api/health", "/", "t/a/x", "/t/a\x7f/x"]


Handler = Callable[[], None]


def _health() -> None: ...


def _release() -> None: ...


def _forwarded() -> None: ...


def test_the_forwarded_shortcut_takes_what_the_mount_takes() -> None:
    router: Router[Handler] = Router()
    router.add("GET", "/api/health", _health)
    router.add("POST", "/api/node/tenants/{id}/release", _release)
    router.mount("/t/{id}", _forwarded)
    for path in TRICKY_PATHS:
        match = router.match("GET", path)
        expected = (match.params["id"], match.path) if match.handler is _forwarded else None
        assert forwarded_target(path) == expected, path


def test_templates_bind_as_segment_by_segment() -> None:
    templates = ["/api/collections/{collection}/records/{id}", "/api/files/{collection}/{id}/{filename}",
                 "/a/{x}", "/{x}/b", "/{x}", "/a", "/a/b/c", "/{x}/{y}", "/api/backups/{key}/restore"]
    words = ["api", "collections", "records", "a", "b", "{x}", "restore", "id1"]
    for template in templates:
        segments = path_segments(template)
        assert segments is not None
        router: Router[Handler] = Router()
        router.add("GET", template, _health)
        for parts in itertools.product(words, repeat=len(segments)):
            match = router.match("GET", "/" + "/".join(parts))
            bound = _bind(segments, parts)
            assert (match.params if match.handler is not None else None) == bound, (template, parts)


class _UnreadProtocol:
    """A request's protocol whose body may not be asked for."""

    async def __call__(self) -> bytes:
        raise AssertionError("the body was read")

    def __aiter__(self) -> _UnreadProtocol:
        raise AssertionError("the body was read")


def test_a_request_without_a_body_by_its_headers_does_not_wait_for_one() -> None:
    for headers in ({}, {"content-length": "0"}):
        scope = SimpleNamespace(method="POST", headers=headers, http_version="1.1")
        request = Request(scope, _UnreadProtocol(), "/x", {})  # type: ignore[arg-type]
        assert asyncio.run(request.body()) == b""
    for headers, version in (({"content-length": "0", "transfer-encoding": "chunked"}, "1.1"), ({}, "2")):
        scope = SimpleNamespace(method="POST", headers=headers, http_version=version)
        request = Request(scope, _UnreadProtocol(), "/x", {})  # type: ignore[arg-type]
        with pytest.raises(AssertionError, match="the body was read"):
            asyncio.run(request.body())


def test_a_control_character_anywhere_in_a_path_or_tenant_id_names_no_route() -> None:
    """The check for control characters (str methods for ASCII, the regex otherwise) refuses exactly
    ``\\x00``-``\\x1f`` and ``\\x7f``, in an ASCII path and in one with other characters too."""
    for code in range(0x80):
        refused = code < 0x20 or code == 0x7F
        for path in (f"/api/a{chr(code)}b", f"/api/é{chr(code)}b"):
            if chr(code) in "/.":
                continue  # a separator or a dot: not what this is about
            assert (path_segments(path) is None) == refused, (code, path)
        assert (forwarded_target(f"/t/a{chr(code)}b/api") is None) == refused, code
        assert (forwarded_target(f"/t/é{chr(code)}/api") is None) == refused, code


def test_an_answer_keeps_its_own_request_id_in_any_spelling_and_gets_one_otherwise() -> None:
    sent: list[list[tuple[str, str]]] = []
    inner = SimpleNamespace(response_bytes=lambda status, headers, body: sent.append(headers))
    wrapped = WithRequestId(inner, "id-1")  # type: ignore[arg-type]
    for own in ("x-request-id", "X-Request-ID", "X-REQUEST-ID"):
        wrapped.response_bytes(200, [("content-type", "application/json"), (own, "theirs")], b"{}")
        assert sent.pop() == [("content-type", "application/json"), (own, "theirs")]
    wrapped.response_bytes(200, [("content-type", "application/json"), ("x-request-idx", "a")], b"{}")
    assert sent.pop()[-1] == ("x-request-id", "id-1")
