"""HTTP requests from the node to a tenant's OAuth2 provider (token exchange, user info).

The provider's URLs come from the tenant's settings, so each connection goes through
:func:`pbfast.pocketbase.egress.checked_address` (no loopback or link-local addresses unless the operator
allows them) and is made to the checked address (a second DNS answer cannot differ); TLS still verifies
the certificate against the URL's host. Every request finishes by a deadline (PocketBase gives the whole
login 30 s), answers are capped at :data:`MAX_ANSWER_BYTES`, and redirects are not followed. Blocking: run
it on a thread, never on the event loop.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from pbfast.pocketbase import egress

__all__ = ["MAX_ANSWER_BYTES", "HttpAnswer", "ProviderUnreachable", "request"]

MAX_ANSWER_BYTES: Final = 2 << 20


class ProviderUnreachable(Exception):
    """The request could not be made or answered in time (or the URL may not be used)."""


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    content_type: str
    body: bytes


class _PinnedHttp(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHttps(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]


def request(method: str, url: str, headers: dict[str, str], body: bytes | None, deadline: float,
            max_bytes: int = MAX_ANSWER_BYTES, *, public_only: bool = False) -> HttpAnswer:
    """One request, answered by ``deadline`` (``time.monotonic()``) with at most ``max_bytes``; raises
    :class:`ProviderUnreachable`. ``public_only``: public internet addresses only
    (:func:`~pbfast.pocketbase.egress.checked_public_address`)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProviderUnreachable(f"unsupported URL {url!r}")
    secure = parts.scheme == "https"
    try:
        port = parts.port or (443 if secure else 80)
    except ValueError as err:
        raise ProviderUnreachable(f"invalid port in {url!r}") from err
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ProviderUnreachable("the provider did not answer in time")
    try:
        address = (egress.checked_public_address if public_only else egress.checked_address)(parts.hostname, port)
        connection_type = _PinnedHttps if secure else _PinnedHttp
        connection = connection_type(parts.hostname, port, address, min(remaining, 15.0))
        try:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            connection.request(method, target, body=body, headers={"Accept": "application/json", **headers})
            answer = connection.getresponse()
            data = answer.read(max_bytes + 1)
            if len(data) > max_bytes or time.monotonic() > deadline:
                raise ProviderUnreachable("the provider's answer is too large or too late")
            return HttpAnswer(answer.status, answer.getheader("content-type") or "", data)
        finally:
            connection.close()
    except (OSError, http.client.HTTPException) as err:
        raise ProviderUnreachable(f"{method} {parts.scheme}://{parts.netloc}{parts.path}: {err}") from err
