"""Clients of the control plane API, failing over between its members.

:class:`ControlPlaneClient` (asyncio, used by tenant nodes and gateways with the cluster token) and
:class:`SyncControlPlaneClient` (blocking, used by the ``pbfast`` CLI with the admin token) share one rule:
try the member that answered last; on a connection error, a timeout or a 503 (no quorum there) try the
next member; give up after one round with :class:`ControlPlaneUnavailable`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson

from pbfast.config import Address

__all__ = ["ControlPlaneClient", "ControlPlaneError", "ControlPlaneUnavailable", "SyncControlPlaneClient"]

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=2.0)


def _timeout(seconds: float | None) -> Any:
    """A request's own time limit (``seconds`` for the answer; connecting stays as short as usual, so a
    dead member is passed over quickly), or the client's default."""
    if seconds is None:
        return httpx.USE_CLIENT_DEFAULT
    return httpx.Timeout(seconds, connect=DEFAULT_TIMEOUT.connect)


class ControlPlaneError(RuntimeError):
    """The control plane answered with an error (``status``, PocketBase-shaped ``body``)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        super().__init__(f"{status}: {body.get('message', 'error')}")


class ControlPlaneUnavailable(RuntimeError):
    """No control plane member could be reached (or none had a quorum)."""


def _decode(response: httpx.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = {"status": response.status_code, "message": response.text[:200], "data": {}}
    if response.status_code >= 400:
        raise ControlPlaneError(response.status_code, body if isinstance(body, dict) else {"message": str(body)})
    return body


class _Members:
    def __init__(self, addresses: Sequence[Address | str]) -> None:
        urls = [a.url if isinstance(a, Address) else (a if "://" in a else f"http://{a}") for a in addresses]
        if not urls:
            raise ValueError("at least one control plane address is needed")
        self.urls = [url.rstrip("/") for url in urls]
        self.preferred = 0

    def order(self) -> list[int]:
        count = len(self.urls)
        return [(self.preferred + i) % count for i in range(count)]


class ControlPlaneClient:
    """Async client. Thread-safety: one event loop."""

    def __init__(self, addresses: Sequence[Address | str], token: str,
                 timeout: httpx.Timeout = DEFAULT_TIMEOUT) -> None:
        self._members = _Members(addresses)
        self._http = httpx.AsyncClient(timeout=timeout, headers={"authorization": f"Bearer {token}"})

    async def request(self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None,
                      timeout: float | None = None) -> Any:
        last_error = "no member tried"
        for index in self._members.order():
            url = self._members.urls[index] + path
            try:
                response = await self._http.request(
                    method, url, content=None if json is None else orjson.dumps(json), params=params,
                    headers={"content-type": "application/json"} if json is not None else None,
                    timeout=_timeout(timeout))
            except httpx.TransportError as err:
                last_error = f"{url}: {type(err).__name__}"
                continue
            if response.status_code == 503:
                last_error = f"{url}: 503 {response.text[:120]}"
                continue
            self._members.preferred = index
            return _decode(response)
        raise ControlPlaneUnavailable(f"no control plane member answered ({last_error})")

    async def aclose(self) -> None:
        await self._http.aclose()


class SyncControlPlaneClient:
    """Blocking client for the CLI."""

    def __init__(self, addresses: Sequence[Address | str], token: str,
                 timeout: httpx.Timeout = DEFAULT_TIMEOUT) -> None:
        self._members = _Members(addresses)
        self._http = httpx.Client(timeout=timeout, headers={"authorization": f"Bearer {token}"})

    def request(self, method: str, path: str, json: Any = None, params: dict[str, Any] | None = None,
                timeout: float | None = None, retry_elsewhere: bool = True) -> Any:
        """One API call. ``retry_elsewhere=False`` is for a request that must not run twice (it may have
        done part of its work before failing): it goes to another member only if it could not even connect,
        and a 503 is raised as :class:`ControlPlaneError` with the member's message."""
        last_error = "no member tried"
        for index in self._members.order():
            url = self._members.urls[index] + path
            try:
                response = self._http.request(
                    method, url, content=None if json is None else orjson.dumps(json), params=params,
                    headers={"content-type": "application/json"} if json is not None else None,
                    timeout=_timeout(timeout))
            except httpx.TransportError as err:
                if not retry_elsewhere and not isinstance(err, httpx.ConnectError):
                    raise ControlPlaneUnavailable(f"{url}: {type(err).__name__}; the request may or may not have "
                                                  "taken effect") from err
                last_error = f"{url}: {type(err).__name__}"
                continue
            if response.status_code == 503 and retry_elsewhere:
                last_error = f"{url}: 503 {response.text[:120]}"
                continue
            self._members.preferred = index
            return _decode(response)
        raise ControlPlaneUnavailable(f"no control plane member answered ({last_error})")

    def upload(self, method: str, path: str, data: Any) -> Any:
        """Send a file-like body (not retried on another member: it is consumed)."""
        url = self._members.urls[self._members.preferred] + path
        try:
            response = self._http.request(method, url, content=iter(lambda: data.read(1 << 20), b""),
                                          headers={"content-type": "application/vnd.sqlite3"},
                                          timeout=httpx.Timeout(600.0, connect=5.0))
        except httpx.TransportError as err:
            raise ControlPlaneUnavailable(f"{url}: {type(err).__name__}") from err
        return _decode(response)

    def download(self, path: str, target: Path) -> int:
        """Stream a response body into ``target``; returns its size."""
        url = self._members.urls[self._members.preferred] + path
        try:
            with self._http.stream("GET", url, timeout=httpx.Timeout(600.0, connect=5.0)) as response:
                if response.status_code >= 400:
                    response.read()
                    _decode(response)
                size = 0
                with open(target, "wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
                        size += len(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                return size
        except httpx.TransportError as err:
            raise ControlPlaneUnavailable(f"{url}: {type(err).__name__}") from err

    def close(self) -> None:
        self._http.close()
