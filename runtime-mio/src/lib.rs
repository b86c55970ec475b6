//! # magnetar-mio
//!
//! The magnetar crawler driven by a hand-rolled [mio] event loop on one thread:
//! sockets, polling, timers and signals. Everything else a runtime does (the
//! drain/dispatch loop, the acquire policy, the counters, the connection cap) is
//! the core's driver pump ([`magnetar_core::pump`]), shared with the tokio driver
//! and the simulator. The application (`app/`, the `magnetar` binary) wires a
//! store to it through the pump's [`Storage`] trait.

mod crawl;
mod dns;

pub use crawl::{run, DnsCallback, RunOptions, RunReport, StatusCallback};
pub use magnetar_core::pump::{Decision, RuntimeCounters, Snapshot, Storage};
