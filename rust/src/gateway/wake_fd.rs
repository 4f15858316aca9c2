//! An eventfd the gateway's threads write to wake the Python event loop, which watches it
//! (`loop.add_reader`) and clears it before it looks at what woke it.
//!
//! Thread-safety: `notify` from any thread; `clear` from the watching thread.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub struct WakeFd {
    fd: OwnedFd,
}

impl WakeFd {
    /// A new non-blocking eventfd.
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd returns a new descriptor (or -1, checked).
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor owned by nobody else.
        Ok(WakeFd { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Make the descriptor readable (a no-op while it already is, but for the counter).
    pub fn notify(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a local buffer to the eventfd; a full counter (EAGAIN) is still readable.
        unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    /// Make it unreadable again (nothing to do when it was not readable).
    pub fn clear(&self) {
        let mut counter = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a local buffer; EAGAIN when the counter is 0.
        unsafe { libc::read(self.fd.as_raw_fd(), counter.as_mut_ptr().cast(), counter.len()) };
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(fd: RawFd) -> bool {
        let mut poll = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one pollfd on the stack, no wait.
        unsafe { libc::poll(&mut poll, 1, 0) == 1 }
    }

    #[test]
    fn notify_makes_it_readable_until_cleared() {
        let wake = WakeFd::new().unwrap();
        assert!(!readable(wake.raw()));
        wake.notify();
        wake.notify();
        assert!(readable(wake.raw()));
        wake.clear();
        assert!(!readable(wake.raw()));
        wake.clear(); // nothing to clear: no error, no block
    }
}
