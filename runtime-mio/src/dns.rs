//! Router name resolution off the hot path: a thread resolves `host:port` names
//! and hands the results to the event loop through a channel and a mio `Waker`.
//! Names that fail are retried with backoff (5 s doubling to 5 min) until they
//! resolve or the loop goes away. Failures are reported, never fatal.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use magnetar_core::pump;

/// One resolution result.
#[derive(Debug)]
pub struct Resolved {
    pub name: String,
    pub result: Result<Vec<SocketAddr>, String>,
}

/// Starts resolving `names`; results arrive on the receiver, each followed by a wake.
pub fn spawn(names: Vec<String>, waker: Arc<mio::Waker>) -> Receiver<Resolved> {
    let (tx, rx) = mpsc::channel();
    if names.is_empty() {
        return rx;
    }
    let spawned = std::thread::Builder::new()
        .name("magnetar-dns".into())
        .spawn(move || resolve_loop(names, tx, waker));
    if let Err(e) = spawned {
        tracing::error!("could not start the DNS thread: {e}");
    }
    rx
}

fn resolve_loop(mut names: Vec<String>, tx: Sender<Resolved>, waker: Arc<mio::Waker>) {
    let mut backoff = pump::DNS_RETRY_FIRST;
    loop {
        let mut failed = Vec::new();
        for name in names {
            let result = pump::resolved(name.to_socket_addrs());
            if result.is_err() {
                failed.push(name.clone());
            }
            if tx.send(Resolved { name, result }).is_err() {
                return; // the loop is gone
            }
            let _ = waker.wake();
        }
        if failed.is_empty() {
            return;
        }
        names = failed;
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(pump::DNS_RETRY_MAX);
    }
}
