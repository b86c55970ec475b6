//! What a runtime does for the pump, and the classification of its errors.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;

use bytes::Bytes;

use super::Decision;
use crate::{CloseReason, ConnId, Crawler, Event, SocketId, Timestamp};

/// How a datagram send went.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// Handed to the kernel.
    Sent,
    /// The socket's send buffer was full: dropped (UDP may lose it anyway).
    WouldBlock,
    /// Any other error (logged by the runtime if it wants; counted by the pump).
    Failed,
}

impl Transmit {
    /// Classifies the result of a non-blocking `send_to` (errors other than
    /// `WouldBlock` are logged at trace level).
    pub fn from_result<T>(r: &io::Result<T>, to: SocketAddr) -> Self {
        match r {
            Ok(_) => Transmit::Sent,
            Err(e) if e.kind() == ErrorKind::WouldBlock => Transmit::WouldBlock,
            Err(e) => {
                tracing::trace!(%to, "send_to: {e}");
                Transmit::Failed
            }
        }
    }
}

/// How starting a connection went.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Connect {
    /// Under way: the runtime reports `TcpConnected` or `TcpClosed` later.
    Started,
    /// Out of file descriptors: the pump backs off connects for a while.
    FdExhausted,
    /// Failed locally for another reason (`TcpClosed { LocalError }`, counted).
    LocalError,
    /// Failed at once with this reason (`TcpClosed { reason }`).
    Failed(CloseReason),
}

impl Connect {
    /// Classifies a failed connect (or socket creation): fd exhaustion, else
    /// `Failed` with [`close_reason`].
    pub fn from_error(e: &io::Error) -> Self {
        if is_fd_exhaustion(e) {
            Connect::FdExhausted
        } else {
            Connect::Failed(close_reason(e))
        }
    }
}

/// The runtime side of the pump: its sockets, its connections, its clock and its
/// event sink. Every method is called from inside a drain; none may call back
/// into the pump.
pub trait Io {
    /// The runtime's clock (monotonic; the pump never reads a clock itself).
    fn now(&mut self) -> Timestamp;
    /// Sends one datagram from socket `local` (non-blocking).
    fn transmit(&mut self, local: SocketId, to: SocketAddr, payload: Bytes) -> Transmit;
    /// Reads one datagram from socket `local` into `buf`: its length and sender.
    /// `WouldBlock` ends a batch; `Interrupted` is retried; other errors are
    /// counted and the batch goes on. Runtimes that are handed datagrams one by
    /// one (the simulator) keep the default, which would block.
    fn recv(&mut self, local: SocketId, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let _ = (local, buf);
        Err(ErrorKind::WouldBlock.into())
    }
    /// Starts connecting `conn` to `to` (the pump has checked the connection cap
    /// and the EMFILE back-off already).
    fn connect(&mut self, conn: ConnId, to: SocketAddr) -> Connect;
    /// Queues bytes on a connection (ignored when it is gone).
    fn send(&mut self, conn: ConnId, bytes: Bytes);
    /// Closes a connection (the crawler asked; no `TcpClosed` is expected).
    fn close(&mut self, conn: ConnId);
    /// Peer connections open now (for the cap).
    fn open_conns(&self) -> usize;
    /// One event for the sink (storage, an event stream, the simulator's tally).
    /// For `InfohashDiscovered`, the answer says whether to acquire it
    /// ([`Decision::Nothing`] when the answer comes later, through
    /// [`Pump::decided`](super::Pump::decided)). `crawler` is there for sinks that
    /// start work of their own (the simulator's baseline harness).
    fn event(&mut self, crawler: &mut Crawler, e: Event) -> Decision;
    /// Called when the crawler is drained, before the runtime parks: start any
    /// work of the runtime's own that waits for room; true if something started
    /// (the drain then goes on). Runtimes keep the default.
    fn before_park(&mut self, crawler: &mut Crawler) -> bool {
        let _ = crawler;
        false
    }
}

/// Why a connection ended, from the OS error that ended it.
pub fn close_reason(e: &io::Error) -> CloseReason {
    match e.kind() {
        ErrorKind::ConnectionRefused => CloseReason::Refused,
        ErrorKind::TimedOut => CloseReason::ConnectTimedOut,
        _ => CloseReason::Reset,
    }
}

/// The process (or the system) is out of descriptors or buffers: EMFILE (24),
/// ENFILE (23), ENOBUFS (105), ENOMEM (12).
pub fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// The local address a runtime binds a peer connection to before connecting
/// to `to`: the first of the crawler's bound UDP addresses (`binds`) of `to`'s
/// family with a specific IP, port 0 (any). A crawler bound to its own address
/// (several crawlers on one host, each with an address of its own) then meets
/// peers over TCP from the address its DHT node and its uTP use, not from the
/// host's default source address. `None` when every bind of that family is the
/// unspecified address: the kernel chooses, as before.
pub fn tcp_source(binds: &[SocketAddr], to: &SocketAddr) -> Option<SocketAddr> {
    binds
        .iter()
        .find(|b| b.is_ipv4() == to.is_ipv4() && !b.ip().is_unspecified())
        .map(|b| SocketAddr::new(b.ip(), 0))
}

/// A router name's resolution as the bootstrap code wants it: the addresses, or
/// why there are none (an empty answer is a failure too).
pub fn resolved<A: IntoIterator<Item = SocketAddr>>(
    r: io::Result<A>,
) -> Result<Vec<SocketAddr>, String> {
    match r {
        Ok(addrs) => {
            let v: Vec<SocketAddr> = addrs.into_iter().collect();
            if v.is_empty() {
                Err("no addresses".to_string())
            } else {
                Ok(v)
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn tcp_source_is_the_first_specific_bind_of_the_family() {
        let v4 = a("192.0.2.7:6881");
        let v6 = a("[2001:db8::1]:6881");
        // Unspecified binds: the kernel chooses.
        assert_eq!(tcp_source(&[a("0.0.0.0:6881")], &v4), None);
        assert_eq!(tcp_source(&[a("[::]:6881")], &v6), None);
        // A specific bind of the family, port 0.
        let binds = [a("0.0.0.0:6881"), a("10.0.0.2:6882"), a("10.0.0.3:6883")];
        assert_eq!(tcp_source(&binds, &v4), Some(a("10.0.0.2:0")));
        // No bind of the other family: none.
        assert_eq!(tcp_source(&binds, &v6), None);
        let binds = [a("10.0.0.2:6881"), a("[2001:db8::5]:6881")];
        assert_eq!(tcp_source(&binds, &v6), Some(a("[2001:db8::5]:0")));
        assert_eq!(tcp_source(&[], &v4), None);
    }
}
