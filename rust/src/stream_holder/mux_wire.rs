//! The multiplexed connection's wire format: one connection per gateway and holder carries all the
//! gateway's held streams of that node, each record tagged with the gateway's stream id.
//!
//! After the hello `<cluster token> mux\n`:
//! - gateway → holder, fixed 17-byte commands: `op (u8) · id (u64 LE) · ticket (u64 LE)`; [`ATTACH`] takes
//!   the admitted stream of `ticket` as `id`, [`CLOSE`] says the client of `id` went away (ticket 0);
//! - holder → gateway, records `kind (u8) · id (u64 LE) · length (u32 LE) · bytes`: [`DATA`] (whole SSE
//!   frames), [`END`] (the stream's clean end: moves, idle time, shutdown), [`BROKEN`] (overflow, an
//!   unknown or expired ticket). Length is 0 for the last two.

use std::io;
use std::time::Duration;

/// How long either end waits by default for its peer to take or acknowledge bytes, or to answer keepalive
/// probes, before it drops the connection (and ends its streams): a peer host that died, or a network
/// partition, sends no FIN, and TCP's own retries take ~15 min. A setting on both ends (the gateway's
/// `--gateway-held-stream-timeout`, the node's `--realtime-gateway-timeout`).
pub const PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// TCP keepalive (probes after a third of `timeout` idle, at most 10 s, then every sixth, at most 5 s) and a
/// user timeout of `timeout` on a mux socket.
pub fn watch_peer(socket: &tokio::net::TcpStream, timeout: Duration) -> io::Result<()> {
    let socket = socket2::SockRef::from(socket);
    let idle = (timeout / 3).clamp(Duration::from_secs(1), Duration::from_secs(10));
    let interval = (timeout / 6).clamp(Duration::from_secs(1), Duration::from_secs(5));
    let keepalive = socket2::TcpKeepalive::new().with_time(idle).with_interval(interval).with_retries(4);
    socket.set_tcp_keepalive(&keepalive)?;
    socket.set_tcp_user_timeout(Some(timeout))
}

/// Command: attach the admitted stream of a ticket under an id.
pub const ATTACH: u8 = 1;
/// Command: the gateway's client of an id is gone.
pub const CLOSE: u8 = 2;
pub const COMMAND_LEN: usize = 17;

/// Record: frames of a stream.
pub const DATA: u8 = 1;
/// Record: the stream ended cleanly (after its last data).
pub const END: u8 = 2;
/// Record: the stream is broken (the client should reconnect).
pub const BROKEN: u8 = 3;
pub const RECORD_HEAD: usize = 13;
/// Longest data record; a longer queue goes out as several.
pub const MAX_DATA: usize = 1 << 20;

pub fn command(op: u8, id: u64, ticket: u64) -> [u8; COMMAND_LEN] {
    let mut bytes = [0u8; COMMAND_LEN];
    bytes[0] = op;
    bytes[1..9].copy_from_slice(&id.to_le_bytes());
    bytes[9..].copy_from_slice(&ticket.to_le_bytes());
    bytes
}

/// The whole commands at the start of `bytes` as `(op, id, ticket)`, and how many bytes they took.
pub fn commands(bytes: &[u8]) -> (Vec<(u8, u64, u64)>, usize) {
    let parsed: Vec<_> = bytes
        .chunks_exact(COMMAND_LEN)
        .map(|c| (c[0], u64::from_le_bytes(c[1..9].try_into().unwrap_or_default()), u64::from_le_bytes(c[9..].try_into().unwrap_or_default())))
        .collect();
    let used = parsed.len() * COMMAND_LEN;
    (parsed, used)
}

/// Append a record to `out` (data longer than [`MAX_DATA`] goes as several records).
pub fn push_record(out: &mut Vec<u8>, kind: u8, id: u64, data: &[u8]) {
    let mut chunks = data.chunks(MAX_DATA).peekable();
    if chunks.peek().is_none() {
        push_head(out, kind, id, 0);
        return;
    }
    for chunk in chunks {
        push_head(out, kind, id, chunk.len());
        out.extend_from_slice(chunk);
    }
}

fn push_head(out: &mut Vec<u8>, kind: u8, id: u64, length: usize) {
    out.push(kind);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(length as u32).to_le_bytes());
}

/// A record parsed from the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: u8,
    pub id: u64,
    pub data: &'a [u8],
}

/// A record no holder writes (an unknown kind, a length past [`MAX_DATA`]): the connection is broken.
#[derive(Debug, PartialEq, Eq)]
pub struct BadRecord;

/// The first whole record in `bytes` and the bytes it took; None while incomplete.
pub fn record(bytes: &[u8]) -> Result<Option<(Record<'_>, usize)>, BadRecord> {
    if bytes.len() < RECORD_HEAD {
        return Ok(None);
    }
    let kind = bytes[0];
    let id = u64::from_le_bytes(bytes[1..9].try_into().map_err(|_| BadRecord)?);
    let length = u32::from_le_bytes(bytes[9..13].try_into().map_err(|_| BadRecord)?) as usize;
    if !matches!(kind, DATA | END | BROKEN) || length > MAX_DATA {
        return Err(BadRecord);
    }
    let Some(data) = bytes.get(RECORD_HEAD..RECORD_HEAD + length) else { return Ok(None) };
    Ok(Some((Record { kind, id, data }, RECORD_HEAD + length)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_read_whole_and_a_partial_one_waits() {
        let mut bytes = command(ATTACH, 7, 0xfeed).to_vec();
        bytes.extend_from_slice(&command(CLOSE, 9, 0));
        bytes.extend_from_slice(&[ATTACH, 1, 2]);
        let (parsed, used) = commands(&bytes);
        assert_eq!(parsed, vec![(ATTACH, 7, 0xfeed), (CLOSE, 9, 0)]);
        assert_eq!(used, 2 * COMMAND_LEN);
    }

    #[test]
    fn records_round_trip_and_long_data_is_split() {
        let mut out = Vec::new();
        push_record(&mut out, DATA, 3, b"data:x\n\n");
        push_record(&mut out, END, 3, b"");
        let (first, used) = record(&out).unwrap().unwrap();
        assert_eq!(first, Record { kind: DATA, id: 3, data: b"data:x\n\n" });
        let (second, rest) = record(&out[used..]).unwrap().unwrap();
        assert_eq!(second, Record { kind: END, id: 3, data: b"" });
        assert_eq!(used + rest, out.len());
        assert_eq!(record(&out[..used - 1]), Ok(None));

        let mut long = Vec::new();
        push_record(&mut long, DATA, 1, &vec![b'a'; MAX_DATA + 5]);
        let (head, used) = record(&long).unwrap().unwrap();
        assert_eq!(head.data.len(), MAX_DATA);
        assert_eq!(record(&long[used..]).unwrap().unwrap().0.data.len(), 5);
        assert!(record(&[9u8; RECORD_HEAD]).is_err());
    }

    #[tokio::test]
    async fn a_watched_socket_probes_its_peer_and_gives_up_after_the_peer_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        watch_peer(&socket, PEER_TIMEOUT).unwrap();
        let socket = socket2::SockRef::from(&socket);
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_user_timeout().unwrap(), Some(PEER_TIMEOUT));
        assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(10));
    }
}
