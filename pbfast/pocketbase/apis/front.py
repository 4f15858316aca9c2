"""What PocketBase 0.40 answers before any of its routes: Go's ``ServeMux`` redirects a path that is not in its
clean form, then its CORS middleware (the default configuration: any origin) answers every ``OPTIONS`` request
and marks every other answer.

- **Clean paths**: a path with an empty segment (``//``) is answered 307 with the cleaned path (and the query
  as sent) in ``Location``, whatever the method, before any route, CORS, rate limit or log. The ``Location``
  keeps the prefix the client addressed the tenant under (``/t/{id}`` unless its Host names the tenant).
  Go cleans the escaped path, where ``%2F`` and ``%2E`` are no separators or dots; the node cleans the
  routing path (:func:`pbfast.http.routing_path`, from the client's spelling the gateway forwards), where
  they stay encoded. Without that spelling (a request not through the native gateway) an encoded ``/``
  reads as a separator, as before.
- **CORS**: every answer varies by ``Origin``; a request with an ``Origin`` gets
  ``Access-Control-Allow-Origin: *``; an ``OPTIONS`` request (a preflight, or not) is answered 204 with no
  body, and with an ``Origin`` the allowed methods and the requested headers echoed back.
- **Security headers** (its ``securityHeaders`` middleware, after CORS): every other answer, errors and
  unknown routes too, carries ``X-XSS-Protection``, ``X-Content-Type-Options: nosniff``,
  ``X-Frame-Options: SAMEORIGIN`` and ``Cross-Origin-Opener-Policy: same-origin``; a served record file
  leaves ``X-Frame-Options`` out (files may be embedded).
"""

from __future__ import annotations

import html
from typing import Any, Final
from urllib.parse import quote

from pbfast.http import HTTPProtocol, Scope, StatusRecorder

__all__ = ["NO_FRAME_OPTIONS", "SECURITY_HEADERS", "CorsRecorder", "answered_before_routes", "clean_path",
           "client_prefix", "cors_headers", "redirect_location"]

ALLOWED_METHODS: Final = "GET,HEAD,PUT,PATCH,POST,DELETE"
_VARY_ORIGIN: Final = ("vary", "Origin")
_ANY_ORIGIN: Final = ("access-control-allow-origin", "*")
_PATH_SAFE: Final = "/$&+,:;=@"  # what Go leaves unescaped in a URL path (besides letters, digits and -._~)
SECURITY_HEADERS: Final = (("x-xss-protection", "1; mode=block"), ("x-content-type-options", "nosniff"),
                           ("x-frame-options", "SAMEORIGIN"), ("cross-origin-opener-policy", "same-origin"))
# A handler's own value of a security header replaces the middleware's (Go's Header().Set after it); this
# empty one removes X-Frame-Options (Go's Header().Del, as PocketBase's file download does).
NO_FRAME_OPTIONS: Final = ("x-frame-options", "")


def cors_headers(scope: Scope) -> list[tuple[str, str]]:
    """The CORS middleware's headers on an answer that is not a preflight's."""
    return [_VARY_ORIGIN, _ANY_ORIGIN] if scope.headers.get("origin") else [_VARY_ORIGIN]


def clean_path(path: str) -> str:
    """Go's ``cleanPath``: rooted, no empty, ``.`` or ``..`` segment (``..`` stops at the root), a trailing
    ``/`` kept."""
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    cleaned = "/" + "/".join(segments)
    if path.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


def redirect_location(prefix: str, path: str, query: str) -> str | None:
    """Where a request for ``path`` (tenant-relative, a routing path: ``%`` only in escapes) is redirected, under the client's ``prefix``;
    None when it is clean."""
    cleaned = clean_path(path)
    if cleaned == path:
        return None
    return quote(prefix + cleaned, safe=_PATH_SAFE + "%") + (f"?{query}" if query else "")


def client_prefix(tenant_id: str, scope: Scope) -> str:
    """The path prefix under which the client addressed the tenant: none when its Host names the tenant
    (``{id}.<base domain>``, which the gateway prefers), else the gateway's ``/t/{id}``."""
    host = (scope.headers.get("host") or "").lower()
    return "" if host.startswith(tenant_id + ".") else f"/t/{tenant_id}"


def answered_before_routes(tenant_id: str, path: str, scope: Scope, proto: HTTPProtocol) -> bool:
    """Answer what PocketBase answers before its routes for a request to ``tenant_id`` at tenant-relative
    ``path`` (see the module doc); True when answered."""
    location = redirect_location(client_prefix(tenant_id, scope), path, scope.query_string) if "//" in path else None
    if location is not None:
        _redirect(scope.method, location, proto)
        return True
    if scope.method != "OPTIONS":
        return False
    headers = [_VARY_ORIGIN]
    if scope.headers.get("origin"):
        headers += [_ANY_ORIGIN, ("vary", "Access-Control-Request-Method"),
                    ("vary", "Access-Control-Request-Headers"), ("access-control-allow-methods", ALLOWED_METHODS)]
        requested = scope.headers.get("access-control-request-headers")
        if requested:
            headers.append(("access-control-allow-headers", requested))
    proto.response_empty(204, headers)
    return True


def _redirect(method: str, location: str, proto: HTTPProtocol) -> None:
    """Go's ``http.Redirect`` with 307: a small HTML body for GET (its type for HEAD too), nothing else."""
    headers = [("location", location)]
    if method in ("GET", "HEAD"):
        headers.append(("content-type", "text/html; charset=utf-8"))
    if method == "GET":
        body = f'<a href="{html.escape(location, quote=True)}">Temporary Redirect</a>.\n\n'.encode()
        proto.response_bytes(307, headers, body)
    else:
        proto.response_empty(307, headers)


def _answer_headers(headers: list[tuple[str, str]], origin: bool) -> tuple[tuple[str, str], ...]:
    """An answer's ``headers`` with the CORS and security headers (see :class:`CorsRecorder`)."""
    own = {name for name, _ in headers}
    if NO_FRAME_OPTIONS in headers:
        headers = [header for header in headers if header != NO_FRAME_OPTIONS]
    extra = (_VARY_ORIGIN, _ANY_ORIGIN) if origin else (_VARY_ORIGIN,)
    return (*headers, *extra, *(header for header in SECURITY_HEADERS if header[0] not in own))


# What _answer_headers made, by the answer's headers and whether the request had an Origin; cleared when full
# (answers with headers of their own values, a Location say, would otherwise grow it without bound).
_ANSWER_HEADERS: dict[tuple[object, ...], tuple[tuple[str, str], ...]] = {}
_ANSWER_HEADERS_KEPT = 256


class CorsRecorder(StatusRecorder):
    """A :class:`StatusRecorder` that adds the CORS middleware's headers to the answer of a request that is not
    a preflight (``Vary: Origin``; with an ``Origin``, ``Access-Control-Allow-Origin: *``), and the security
    headers the handler did not set itself (:data:`SECURITY_HEADERS`, :data:`NO_FRAME_OPTIONS`)."""

    __slots__ = ("origin",)

    def __init__(self, inner: HTTPProtocol, scope: Scope) -> None:
        super().__init__(inner)
        self.origin = bool(scope.headers.get("origin"))

    def _headers(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        # Most answers carry one of a few header lists (a JSON answer's, an error's): each one's result is
        # kept, keyed by its headers and whether the request had an Origin (a copy is handed out).
        key = (*headers, self.origin)
        try:
            made = _ANSWER_HEADERS[key]
        except KeyError:
            made = _answer_headers(headers, self.origin)
            if len(_ANSWER_HEADERS) >= _ANSWER_HEADERS_KEPT:
                _ANSWER_HEADERS.clear()
            _ANSWER_HEADERS[key] = made
        except TypeError:  # a header value that is not hashable (never a str): worked out afresh
            return list(_answer_headers(headers, self.origin))
        return list(made)

    def response_empty(self, status: int, headers: list[tuple[str, str]]) -> None:
        super().response_empty(status, self._headers(headers))

    def response_str(self, status: int, headers: list[tuple[str, str]], body: str) -> None:
        super().response_str(status, self._headers(headers), body)

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        # StatusRecorder.response_bytes, without super() (every JSON answer comes this way)
        self.status = status
        self.inner.response_bytes(status, self._headers(headers), body)

    def response_file(self, status: int, headers: list[tuple[str, str]], file: str) -> None:
        super().response_file(status, self._headers(headers), file)

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> Any:
        return super().response_stream(status, self._headers(headers))
