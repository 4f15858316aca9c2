//! Listening TCP sockets with a deep accept queue.
//!
//! `std::net::TcpListener::bind` asks the kernel for a backlog of 128: a burst of connects beyond that
//! (hundreds of SDKs reconnecting at once to a gateway, or a gateway attaching hundreds of event streams
//! at once to a node's stream holder) overflows the queue, the kernel drops the SYNs, and the client's
//! connect only succeeds on its retransmission a second later: past a 1 s connect timeout. Every listener
//! of the crate binds through here instead.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Connections the kernel queues before they are accepted (capped by `net.core.somaxconn`).
pub const BACKLOG: i32 = 4096;

/// How a listener shares its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// The only socket on its address.
    Alone,
    /// One of several sockets on one address (SO_REUSEPORT: one per server thread).
    PerThread,
}

/// A non-blocking listener on `address` with [`BACKLOG`] and TCP_NODELAY inherited by accepted sockets.
pub fn tcp(address: SocketAddr, sharing: Sharing) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?; // TIME_WAIT leftovers of a previous run
    if sharing == Sharing::PerThread {
        socket.set_reuse_port(true)?; // the caller checked that nobody else listens there
    }
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// [`tcp`] on the first address `host` resolves to that can be bound.
pub fn tcp_on_host(host: &str, port: u16, sharing: Sharing) -> io::Result<TcpListener> {
    use std::net::ToSocketAddrs;
    let mut last = None;
    for address in (host, port).to_socket_addrs()? {
        match tcp(address, sharing) {
            Ok(listener) => return Ok(listener),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other(format!("{host} resolves to no address"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_past_the_default_backlog_connects_at_once() {
        let listener = tcp_on_host("127.0.0.1", 0, Sharing::Alone).unwrap();
        let address = listener.local_addr().unwrap();
        // Nobody accepts: every connect must still complete from the kernel's queue, well past 128.
        let started = std::time::Instant::now();
        let clients: Vec<_> = (0..600).map(|_| std::net::TcpStream::connect(address).unwrap()).collect();
        assert_eq!(clients.len(), 600);
        assert!(started.elapsed() < std::time::Duration::from_millis(900), "connects waited for SYN retransmits");
    }

    #[test]
    fn per_thread_sockets_share_one_port() {
        let first = tcp_on_host("127.0.0.1", 0, Sharing::PerThread).unwrap();
        let second = tcp(first.local_addr().unwrap(), Sharing::PerThread).unwrap();
        assert_eq!(first.local_addr().unwrap(), second.local_addr().unwrap());
    }
}
