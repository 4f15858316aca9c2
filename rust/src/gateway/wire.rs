//! The headers the cluster's processes send each other, in one table: mirrors `pbfast/cluster/wire.py`
//! (`tests/test_wire_contract.py` checks that they agree), where their meaning is described.

/// Every client-sent header under this prefix is dropped, and so is every node-sent one.
pub const PREFIX: &str = "x-pbfast-";
/// The cluster token on a forwarded tenant request (the client's `Authorization` goes through).
pub const CLUSTER_TOKEN: &str = "x-pbfast-cluster-token";
/// The route's fencing epoch on a forwarded tenant request.
pub const EPOCH: &str = "x-pbfast-epoch";
/// Set by a node on its "the tenant has moved" answer (503, stale epoch or lost lease).
pub const MOVED: &str = "x-pbfast-moved";
/// The client's address, on requests handed to the gateway's Python side.
pub const CLIENT: &str = "x-pbfast-client";
/// One request's id, assigned by the gateway (or a client's kept), forwarded, logged and answered.
pub const REQUEST_ID: &str = "x-request-id";
/// On a `GET .../api/realtime` to a node, the cluster token: the node may answer with a held stream.
pub const STREAM_HOLDER: &str = "x-pbfast-stream-holder";
/// On a node's answer: the stream is held at `<port> <ticket>` on the node's host (`super::held`).
pub const STREAM_HELD: &str = "x-pbfast-stream-held";
/// Beside [`STREAM_HELD`]: the holder's multiplexed connection versions, `1` today (`super::held_mux`); a
/// node that does not send it (older, or with the mux off) is read with a connection per stream.
pub const STREAM_MUX: &str = "x-pbfast-stream-mux";
/// On a request forwarded to a node or handed to the Python side whose path holds a `%`: its path as sent
/// (percent-encoded, the client's but for the `/t/{id}` prefix a node's request gets),
/// since the node's server hands over the path decoded and PocketBase routes on the encoded one (`%2F` is
/// no separator there).
pub const RAW_PATH: &str = "x-pbfast-path";
