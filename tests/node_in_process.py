"""A tenant node's RSGI app called in process as granian calls it, for a GET through the node's routes (the
cluster token and epoch 1 sent as the gateway sends them); no network. Shared by tests of the list and expand
paths."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from pbfast.cluster.wire import CLUSTER_TOKEN_HEADER, EPOCH_HEADER

if TYPE_CHECKING:
    from pbfast.tenant_node.app import TenantNodeApp


class RecordedAnswer:
    """Stands in for granian's protocol: an empty body in, the answer's status and body kept."""

    def __init__(self) -> None:
        self.status = 0
        self.body = b""

    async def __call__(self) -> bytes:
        return b""

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.body = status, body


class NodeScope:
    """A GET's scope as the gateway forwards it to a node."""

    def __init__(self, path: str, query: str, token: str) -> None:
        self.proto, self.http_version, self.scheme, self.method = "http", "1.1", "http", "GET"
        self.path, self.query_string, self.client, self.authority = path, query, "127.0.0.1:1", None
        self.headers = {CLUSTER_TOKEN_HEADER: token, EPOCH_HEADER: "1"}


def get(loop: asyncio.AbstractEventLoop, app: TenantNodeApp, token: str, path: str, query: str) -> RecordedAnswer:
    """The node's answer to ``GET path?query``."""
    answer = RecordedAnswer()
    loop.run_until_complete(app.__rsgi__(NodeScope(path, query, token), answer))  # type: ignore[arg-type]
    return answer
