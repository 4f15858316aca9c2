"""A worker process's line to its node's main process, over two Unix sockets in a private directory:

- the **hub** (:mod:`pbfast.tenant_node.worker_hub`): what a worker cannot decide alone, asked with the
  cluster token: admit a request and open its tenant (:meth:`WorkerLink.ensure`), confirm a durable write in
  the replica (:meth:`WorkerLink.sync`);
- the **node**: every request that reaches a worker but is not a tenant's (``/api/node/...`` from the
  control plane, ``/api/health``, ``/metrics``, anything else) is handed over whole, body and answer
  streamed, to the main process's ordinary node routes (:meth:`WorkerLink.hand_over`), which answer it as a
  single-process node does.

Thread-safety: event loop only.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from pbfast.cluster.wire import REQUEST_ID_HEADER
from pbfast.http import HTTPProtocol, Scope, send_error
from pbfast.logs import component_logger

__all__ = ["HubAnswer", "WorkerLink"]

log = component_logger("TenantWorker")

ENSURE_TIMEOUT_SECONDS = 25.0  # the main process waits up to its open wait (20 s) for a tenant to open
SYNC_TIMEOUT_SECONDS = 40.0
SMALL_BYTES = 1 << 20  # bodies up to this size with a length are read whole (either way)
_UNUSED_TLS = ssl.create_default_context()
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                         "upgrade", "host", "content-length", "expect", REQUEST_ID_HEADER})


@dataclass(slots=True)
class HubAnswer:
    """The main process's answer: ok, or the error to answer the client with."""

    status: int
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == 200


class WorkerLink:
    def __init__(self, hub_socket: str, node_socket: str, cluster_token: str) -> None:
        self._hub = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=hub_socket, verify=_UNUSED_TLS),
                                      verify=_UNUSED_TLS, base_url="http://main",
                                      headers={"authorization": f"Bearer {cluster_token}"})
        self._node_socket = node_socket
        self._node = self._node_client()

    def _node_client(self) -> httpx.AsyncClient:
        # One TLS context for all of them (never used on the Unix socket): httpx builds and loads a new CA
        # bundle for each client otherwise, ~80 ms of CPU per event stream handed over.
        return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=self._node_socket, verify=_UNUSED_TLS),
                                 verify=_UNUSED_TLS, base_url="http://main",
                                 timeout=httpx.Timeout(10.0, read=None, write=None))

    async def aclose(self) -> None:
        await self._hub.aclose()
        await self._node.aclose()

    # ---- the hub ------------------------------------------------------------------------------------

    async def _ask(self, path: str, body: dict[str, Any], timeout: float) -> HubAnswer:
        try:
            response = await self._hub.post(path, json=body, timeout=timeout)
            answer = response.json() if response.content else {}
        except (httpx.HTTPError, ValueError) as err:
            log.warning("the node's main process did not answer %s: %r", path, err)
            return HubAnswer(503, "The node is busy; retry shortly.", headers=[("retry-after", "1")])
        if response.status_code == 200:
            return HubAnswer(200)
        headers = [(name, value) for name, value in response.headers.multi_items()
                   if name.lower() in ("retry-after",) or name.lower().startswith("x-pbfast-")]
        return HubAnswer(response.status_code, str(answer.get("message", "")), answer.get("data") or {}, headers)

    async def ensure(self, tenant_id: str, epoch: int, counted: bool) -> HubAnswer:
        """Have the main process admit a request of ``tenant_id`` under ``epoch`` (and count it against the
        quota unless ``counted``) and open the tenant: 200, or the answer for the client."""
        return await self._ask(f"/tenants/{tenant_id}/ensure", {"epoch": epoch, "counted": counted},
                               ENSURE_TIMEOUT_SECONDS)

    async def sync(self, tenant_id: str) -> HubAnswer:
        """Have the main process confirm the tenant's writes in the replica (durable mode)."""
        return await self._ask(f"/tenants/{tenant_id}/sync", {}, SYNC_TIMEOUT_SECONDS)

    # ---- handing a request over -----------------------------------------------------------------------

    async def hand_over(self, scope: Scope, proto: HTTPProtocol, request_id: str | None, *,
                        long_lived: bool = False) -> None:
        """Answer a request with the main process's answer to it (the node's own routes; a tenant's requests
        the main process must answer). A streamed answer (an event stream) ends when the client goes.
        ``long_lived``: an event stream, on a connection of its own (thousands of them would otherwise fill
        the shared client's pool, whose bookkeeping grows with every connection it holds)."""
        if long_lived:
            async with self._node_client() as client:
                await self._hand_over(client, scope, proto, request_id)
        else:
            await self._hand_over(self._node, scope, proto, request_id)

    async def _hand_over(self, client: httpx.AsyncClient, scope: Scope, proto: HTTPProtocol,
                         request_id: str | None) -> None:
        headers = [(name, value) for name, value in scope.headers.items() if name.lower() not in _HOP_BY_HOP]
        if request_id:
            headers.append((REQUEST_ID_HEADER, request_id))
        content: bytes | AsyncIterator[bytes] | None = None
        if scope.method not in ("GET", "HEAD", "OPTIONS", "DELETE"):
            length = scope.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) <= SMALL_BYTES:
                content = await proto()
            else:
                content = _chunks(proto)
        url = wire_path(scope.path) + (f"?{scope.query_string}" if scope.query_string else "")
        try:
            request = client.build_request(scope.method, url, headers=headers, content=content)
            response = await client.send(request, stream=True)
        except httpx.HTTPError as err:
            log.warning("handing %s %s over to the main process failed: %r", scope.method, scope.path, err)
            send_error(proto, 503, "The node is busy; retry shortly.", headers=[("retry-after", "1")])
            return
        try:
            answer_headers = [(name, value) for name, value in response.headers.multi_items()
                              if name.lower() not in _HOP_BY_HOP or name.lower() == REQUEST_ID_HEADER]
            length = response.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) <= SMALL_BYTES:
                proto.response_bytes(response.status_code, answer_headers, await response.aread())
                return
            stream = proto.response_stream(response.status_code, answer_headers)  # type: ignore[attr-defined]
            await _relay(response, stream, getattr(proto, "client_disconnect", None))
        finally:
            await response.aclose()


async def _relay(response: httpx.Response, stream: Any,
                 client_disconnect: Callable[[], Awaitable[object]] | None) -> None:
    """Copy a streamed answer to the client until it ends, or the client goes (an event stream may stay quiet
    for minutes: its end must reach the main process at once, which then drops the stream)."""

    async def copy() -> None:
        async for chunk in response.aiter_raw():
            await stream.send_bytes(chunk)

    copying = asyncio.ensure_future(copy())
    if client_disconnect is None:
        await copying
        return
    # granian's awaitable passes for a future but lacks what gather needs (a gather over it never ends, and
    # the stream to the client with it): awaited only through asyncio.wait, and cancelled, never gathered.
    gone = asyncio.ensure_future(client_disconnect())
    try:
        await asyncio.wait({copying, gone}, return_when=asyncio.FIRST_COMPLETED)
        if copying.done():
            copying.result()  # a failure of the copy surfaces as before
    finally:
        if not gone.done():
            gone.cancel()
        if not copying.done():
            copying.cancel()
        await asyncio.gather(copying, return_exceptions=True)


def wire_path(path: str) -> str:
    """The request target that makes the main process see ``path`` as this worker saw it: the server hands
    the path over percent-decoded, so what decoding made of ``%3F``, ``%25``, ``%00``... is encoded again
    (else it would move the query's start, or fail), and so are dot segments (an HTTP client removes them) and a
    leading ``//`` (read as a host)."""
    segments = quote(path, safe="/!$&'()*+,;=:@~").split("/")
    target = "/".join("%2E" * len(segment) if segment in (".", "..") else segment for segment in segments)
    return "/%2F" + target[2:] if target.startswith("//") else target  # "//x" would name a host "x"


async def _chunks(proto: HTTPProtocol) -> AsyncIterator[bytes]:
    async for chunk in proto:
        if chunk:
            yield chunk
