//! Header rewriting of the data path: what a node receives and what a client gets back.
//!
//! To a node: hop-by-hop headers (`Connection` and every header it names, `Keep-Alive`, `Proxy-*`, `TE`,
//! `Trailer`, `Transfer-Encoding`, `Upgrade`), `Expect`, `Content-Length` (hyper frames the body) and
//! every client-sent `x-pbfast-*` header are dropped, so a client can never forge the cluster token, the
//! epoch or the gateway's internal headers; `X-Forwarded-For` gets the client's address appended and
//! `X-Forwarded-Proto`/`-Host` are set; `X-Request-Id` is the client's when usable, else a new one (see
//! [`request_id`]), and goes back to the client too. To a client: hop-by-hop headers are dropped.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::wire;

/// A client connection's peer address, formatted once per connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub ip: IpAddr,
    /// `ip` as a header value (`X-Forwarded-For`, `x-pbfast-client`).
    pub value: HeaderValue,
}

impl Peer {
    pub fn new(ip: IpAddr) -> Self {
        let value = HeaderValue::from_str(&ip.to_string()).expect("an IP address is a valid header value");
        Peer { ip, value }
    }
}

pub const CLUSTER_TOKEN: HeaderName = HeaderName::from_static(wire::CLUSTER_TOKEN);
pub const EPOCH: HeaderName = HeaderName::from_static(wire::EPOCH);
/// Set by a node on its "the tenant has moved" answer (stale epoch).
pub const MOVED: HeaderName = HeaderName::from_static(wire::MOVED);
/// The client's address, on requests handed to the gateway's Python side.
pub const CLIENT: HeaderName = HeaderName::from_static(wire::CLIENT);
/// One request's id, followed through the gateway's and the node's logs (`pbfast/request_ids.py`).
pub const REQUEST_ID: HeaderName = HeaderName::from_static(wire::REQUEST_ID);
/// The longest client-sent request id kept.
pub const MAX_REQUEST_ID: usize = 128;
const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const TRAILERS: HeaderName = HeaderName::from_static("trailers");
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// The request's id: the client's when it is 1-128 visible ASCII characters, else a new one (32 hex
/// digits: a random per-thread prefix and a counter, so unique without a shared counter).
pub fn request_id(client: Option<&HeaderValue>) -> HeaderValue {
    if let Some(value) = client {
        let bytes = value.as_bytes();
        if !bytes.is_empty() && bytes.len() <= MAX_REQUEST_ID && bytes.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
            return value.clone();
        }
    }
    thread_local! {
        static NEXT: std::cell::Cell<(u64, u64)> = std::cell::Cell::new((random_u64(), 0));
    }
    let (prefix, counter) = NEXT.with(|next| {
        let (prefix, counter) = next.get();
        next.set((prefix, counter.wrapping_add(1)));
        (prefix, counter)
    });
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    for (i, digit) in id.iter_mut().enumerate() {
        let word = if i < 16 { prefix } else { counter };
        *digit = HEX[((word >> (60 - 4 * (i % 16))) & 15) as usize];
    }
    HeaderValue::from_bytes(&id).expect("hex digits are a valid header value")
}

/// 64 random bits from the standard library's randomly keyed hasher (no extra crate for a per-thread seed).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(std::process::id().into());
    hasher.finish()
}

/// A hop-by-hop header (never forwarded in either direction).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == TRAILERS
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == HTTP2_SETTINGS
        || name.as_str().starts_with("proxy-")
}

/// The lower-cased tokens of the `Connection` headers (the extra headers they declare hop-by-hop).
fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    let mut tokens = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        if let Ok(text) = value.to_str() {
            tokens.extend(
                text.split(',')
                    .map(|t| t.trim().to_ascii_lowercase())
                    .filter(|t| !t.is_empty() && t != "close" && t != "keep-alive"),
            );
        }
    }
    tokens
}

/// Sum of `name: value\r\n` sizes, the measure of the header size limit.
pub fn header_bytes(headers: &HeaderMap) -> usize {
    headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum()
}

/// Whether a client's header is dropped on the way to a node (see the module docs); `listed`: the
/// tokens of the request's `Connection` headers.
fn dropped_for_node(name: &HeaderName, listed: &[String]) -> bool {
    is_hop_by_hop(name)
        || name == header::CONTENT_LENGTH
        || name == header::EXPECT
        || name == header::HOST
        || name == FORWARDED_FOR
        || name == FORWARDED_PROTO
        || name == FORWARDED_HOST
        || name.as_str().starts_with(wire::PREFIX)
        || (!listed.is_empty() && listed.iter().any(|t| t == name.as_str()))
}

/// The `X-Forwarded-For` a node receives: the client's chain plus the client.
fn forwarded_for(headers: &HeaderMap, client: &Peer) -> Option<HeaderValue> {
    let mut chain: Option<Vec<u8>> = None;
    for value in headers.get_all(FORWARDED_FOR) {
        let chain = chain.get_or_insert_with(Vec::new);
        if !chain.is_empty() {
            chain.extend_from_slice(b", ");
        }
        chain.extend_from_slice(value.as_bytes());
    }
    match chain {
        None => Some(client.value.clone()),
        Some(mut chain) => {
            chain.extend_from_slice(b", ");
            chain.extend_from_slice(client.value.as_bytes());
            HeaderValue::from_bytes(&chain).ok()
        }
    }
}

fn listed_tokens(headers: &HeaderMap) -> Vec<String> {
    if headers.contains_key(header::CONNECTION) { connection_tokens(headers) } else { Vec::new() }
}

/// The headers a node receives for a client request with `headers` from `client`, for route `epoch`.
pub fn to_node(
    headers: &HeaderMap,
    client: &Peer,
    host: Option<&HeaderValue>,
    token: &HeaderValue,
    epoch: u64,
) -> HeaderMap {
    let listed = listed_tokens(headers);
    let mut out = HeaderMap::with_capacity(headers.keys_len() + 6);
    for (name, value) in headers {
        if !dropped_for_node(name, &listed) {
            out.append(name.clone(), value.clone());
        }
    }
    if let Some(value) = forwarded_for(headers, client) {
        out.insert(FORWARDED_FOR, value);
    }
    out.insert(FORWARDED_PROTO, HeaderValue::from_static("http"));
    if let Some(host) = host {
        out.insert(header::HOST, host.clone());
        out.insert(FORWARDED_HOST, host.clone());
    }
    out.insert(CLUSTER_TOKEN, token.clone());
    out.insert(EPOCH, HeaderValue::from(epoch));
    out
}

/// The same headers as [`to_node`], written as `name: value\r\n` lines into `out` (for a request
/// sent as raw bytes); `host` defaults to `authority`.
pub fn write_to_node(
    out: &mut Vec<u8>,
    headers: &HeaderMap,
    client: &Peer,
    host: Option<&HeaderValue>,
    authority: &str,
    token: &HeaderValue,
    epoch: u64,
) {
    fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    let listed = listed_tokens(headers);
    match host {
        Some(host) => {
            line(out, b"host", host.as_bytes());
            line(out, b"x-forwarded-host", host.as_bytes());
        }
        None => line(out, b"host", authority.as_bytes()),
    }
    for (name, value) in headers {
        if !dropped_for_node(name, &listed) {
            line(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    if let Some(value) = forwarded_for(headers, client) {
        line(out, b"x-forwarded-for", value.as_bytes());
    }
    line(out, b"x-forwarded-proto", b"http");
    line(out, wire::CLUSTER_TOKEN.as_bytes(), token.as_bytes());
    let mut digits = itoa_u64(epoch);
    line(out, wire::EPOCH.as_bytes(), digits.as_bytes_mut());
}

/// `n` in decimal, without allocating.
struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    fn as_bytes_mut(&mut self) -> &[u8] {
        &self.buf[self.start..]
    }
}

fn itoa_u64(mut n: u64) -> Digits {
    let mut buf = [0u8; 20];
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    Digits { buf, start }
}

/// The headers of a request handed to the gateway's Python side: the client's, minus hop-by-hop and
/// `x-pbfast-*` headers, plus the client's address.
pub fn to_fallback(headers: &HeaderMap, client: &Peer) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.keys_len() + 1);
    for (name, value) in headers {
        if name.as_str().starts_with(wire::PREFIX) || (is_hop_by_hop(name) && name != header::TRANSFER_ENCODING) {
            continue;
        }
        if name == header::TRANSFER_ENCODING || name == header::CONTENT_LENGTH {
            continue; // hyper frames the body it sends
        }
        out.append(name.clone(), value.clone());
    }
    out.insert(CLIENT, client.value.clone());
    out
}

/// HTTP/2 clients may send a cookie in several `cookie` fields; HTTP/1.1 allows one (RFC 9113 8.2.3): join
/// them with "; " before the request goes on over HTTP/1.1.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    if values.nth(1).is_none() {
        return;
    }
    let mut joined = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value); // replaces every field
    }
}

/// Drop hop-by-hop and the cluster's internal (`x-pbfast-*`) headers from a node's answer (in place).
pub fn strip_response(headers: &mut HeaderMap) {
    let listed = if headers.contains_key(header::CONNECTION) { connection_tokens(headers) } else { Vec::new() };
    let drop: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            is_hop_by_hop(name) || name.as_str().starts_with(wire::PREFIX) || listed.iter().any(|t| t == name.as_str())
        })
        .cloned()
        .collect();
    for name in drop {
        headers.remove(name);
    }
}

/// The CORS headers PocketBase's default middleware puts on every answer, for the gateway's own answers
/// (its errors: a moved or unreachable tenant, a refused body) so that a browser app on another origin
/// reads their status instead of a CORS failure; the node's answers carry their own.
pub fn mark_cors(headers: &mut HeaderMap, origin: bool) {
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http2_cookie_fields_are_joined() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1"));
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        join_cookies(&mut headers);
        assert_eq!(headers.get_all(header::COOKIE).iter().collect::<Vec<_>>(), ["a=1; b=2"]);
        join_cookies(&mut headers); // one field: unchanged
        assert_eq!(headers[header::COOKIE], "a=1; b=2");
    }

    #[test]
    fn request_ids_are_the_clients_when_usable_else_new_and_unique() {
        let given = HeaderValue::from_static("abc-123_XYZ.~!");
        assert_eq!(request_id(Some(&given)), given);
        let long = HeaderValue::from_str(&"a".repeat(MAX_REQUEST_ID + 1)).unwrap();
        for unusable in [HeaderValue::from_static(""), HeaderValue::from_static("has space"), long,
                         HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()] {
            let id = request_id(Some(&unusable));
            assert_ne!(id, unusable);
            assert!(id.len() == 32 && id.as_bytes().iter().all(u8::is_ascii_hexdigit));
        }
        let (a, b) = (request_id(None), request_id(None));
        assert_ne!(a, b);
        assert_eq!(a.as_bytes()[..16], b.as_bytes()[..16]); // one thread's prefix
    }

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn node_headers_drop_hop_by_hop_and_forgeries() {
        let incoming = map(&[
            ("host", "acme.example"),
            ("x-pbfast-cluster-token", "forged"),
            ("x-pbfast-epoch", "999"),
            ("x-pbfast-tenant", "beta"),
            ("x-forwarded-for", "10.1.2.3"),
            ("x-forwarded-for", "10.4.5.6"),
            ("x-forwarded-proto", "https"),
            ("keep-alive", "timeout=9"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic eA=="),
            ("connection", "close, X-Drop-Me"),
            ("x-drop-me", "1"),
            ("expect", "100-continue"),
            ("content-length", "12"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("x-custom", "kept"),
        ]);
        let token = HeaderValue::from_static("secret");
        let out = to_node(&incoming, &Peer::new("127.0.0.1".parse().unwrap()), incoming.get("host"), &token, 7);
        assert_eq!(out["x-pbfast-cluster-token"], "secret");
        assert_eq!(out["x-pbfast-epoch"], "7");
        assert!(out.get("x-pbfast-tenant").is_none());
        assert_eq!(out["x-forwarded-for"], "10.1.2.3, 10.4.5.6, 127.0.0.1");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(out["x-forwarded-host"], "acme.example");
        assert_eq!(out["host"], "acme.example");
        let cookies: Vec<_> = out.get_all("cookie").iter().collect();
        assert_eq!(cookies, vec!["a=1", "b=2"]);
        assert_eq!(out["x-custom"], "kept");
        for gone in ["keep-alive", "te", "proxy-authorization", "x-drop-me", "connection", "expect", "content-length"] {
            assert!(out.get(gone).is_none(), "{gone}");
        }
    }

    #[test]
    fn raw_node_headers_match_the_map() {
        let incoming = map(&[
            ("host", "acme.example"),
            ("x-pbfast-epoch", "999"),
            ("x-forwarded-for", "10.1.2.3"),
            ("connection", "x-drop-me"),
            ("x-drop-me", "1"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
        ]);
        let token = HeaderValue::from_static("secret");
        let peer = Peer::new("127.0.0.1".parse().unwrap());
        let mut raw = Vec::new();
        write_to_node(&mut raw, &incoming, &peer, incoming.get("host"), "n:1", &token, 1234567890);
        let text = String::from_utf8(raw).unwrap();
        let mut lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
        lines.sort();
        let map = to_node(&incoming, &peer, incoming.get("host"), &token, 1234567890);
        let mut expected: Vec<String> =
            map.iter().map(|(n, v)| format!("{}: {}", n, v.to_str().unwrap())).collect();
        expected.sort();
        assert_eq!(lines, expected);
        let mut bare = Vec::new();
        write_to_node(&mut bare, &HeaderMap::new(), &peer, None, "node-a:8070", &token, 0);
        let bare = String::from_utf8(bare).unwrap();
        assert!(bare.starts_with("host: node-a:8070\r\n") && bare.contains("x-pbfast-epoch: 0\r\n"));
    }

    #[test]
    fn fallback_headers_carry_the_client_and_no_forgery() {
        let incoming = map(&[("host", "gw"), ("x-pbfast-client", "6.6.6.6"), ("authorization", "Bearer t")]);
        let out = to_fallback(&incoming, &Peer::new("192.0.2.1".parse().unwrap()));
        assert_eq!(out["x-pbfast-client"], "192.0.2.1");
        assert_eq!(out.get_all("x-pbfast-client").iter().count(), 1);
        assert_eq!(out["authorization"], "Bearer t");
    }

    #[test]
    fn response_hop_by_hop_removed() {
        let mut answer = map(&[
            ("content-type", "application/json"),
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("x-pbfast-moved", "1"),
            ("x-from-node", "yes"),
        ]);
        strip_response(&mut answer);
        let names: Vec<_> = answer.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["content-type", "x-from-node"]);
    }

    #[test]
    fn the_gateways_own_answers_carry_cors_headers() {
        let mut headers = HeaderMap::new();
        mark_cors(&mut headers, false);
        assert_eq!(headers.get(header::VARY).unwrap(), "Origin");
        assert!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        mark_cors(&mut headers, true);
        assert_eq!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(), "*");
    }
}
