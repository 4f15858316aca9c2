"""The headers the cluster's processes send each other, in one table; ``rust/src/gateway/wire.rs`` mirrors it
for the native data path (``tests/test_wire_contract.py`` checks that they agree).

- a gateway forwards a tenant's request to its node as ``/t/{id}/...`` with the cluster token in
  :data:`CLUSTER_TOKEN_HEADER` (the client's own ``Authorization`` goes through untouched) and the route's
  fencing epoch in :data:`EPOCH_HEADER`;
- a node that refuses the epoch (the tenant moved, or the node lost its lease) answers 503 with
  ``Retry-After`` and :data:`MOVED_HEADER` (:data:`MOVED_ANSWER_HEADERS`): the gateway then waits for a newer
  route and sends the request again (:func:`is_moved`);
- the native data path hands the requests it does not forward itself to the gateway's Python side with the
  client's address in :data:`CLIENT_HEADER`;
- every request carries its id in :data:`REQUEST_ID_HEADER` from the gateway on (a client's own kept when
  it is sane), and every answer returns it (:mod:`pbfast.request_ids`);
- a gateway sends ``GET .../api/realtime`` with the cluster token in :data:`STREAM_HOLDER_HEADER`: a node
  holding its event streams outside its HTTP server answers the stream's head at once, with
  :data:`STREAM_HELD_HEADER` ``<port> <ticket>``, and the gateway reads the stream from the node's stream
  holder at that port (``rust/src/gateway/held.rs``, ``rust/src/stream_holder/``): over its multiplexed
  connection for the tenant when the answer also says :data:`STREAM_MUX_HEADER` ``1`` (the mux versions the
  holder speaks), else over a connection of its own (a node from before the mux, or with it off);
- a gateway forwards a tenant's request whose path holds a ``%`` with that path as the client sent it in
  :data:`RAW_PATH_HEADER`: the node's server hands over the path decoded, and PocketBase routes on the
  encoded one (``%2F`` is no separator there).

Every header under :data:`HEADER_PREFIX` a client sends is dropped by the gateway, and every one a node
answers with is dropped before the client sees it: the cluster's headers are never forged or leaked.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["CLIENT_HEADER", "CLUSTER_TOKEN_HEADER", "EPOCH_HEADER", "HEADER_PREFIX", "MOVED_ANSWER_HEADERS",
           "MOVED_HEADER", "RAW_PATH_HEADER", "REQUEST_ID_HEADER", "STREAM_HELD_HEADER", "STREAM_HOLDER_HEADER", "STREAM_MUX_HEADER",
           "is_moved"]

HEADER_PREFIX = "x-pbfast-"
CLUSTER_TOKEN_HEADER = "x-pbfast-cluster-token"
EPOCH_HEADER = "x-pbfast-epoch"
MOVED_HEADER = "x-pbfast-moved"
CLIENT_HEADER = "x-pbfast-client"
REQUEST_ID_HEADER = "x-request-id"
STREAM_HOLDER_HEADER = "x-pbfast-stream-holder"
STREAM_HELD_HEADER = "x-pbfast-stream-held"
STREAM_MUX_HEADER = "x-pbfast-stream-mux"
RAW_PATH_HEADER = "x-pbfast-path"

MOVED_ANSWER_HEADERS = [("retry-after", "1"), (MOVED_HEADER, "1")]


def is_moved(status: int, headers: Iterable[tuple[str, str]]) -> bool:
    """Whether a node's answer says the tenant has moved (lower-case header names)."""
    return status == 503 and any(name == MOVED_HEADER for name, _ in headers)
