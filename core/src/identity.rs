//! One DHT identity: a UDP socket, the node ID it shows, and its routing table.

use std::net::SocketAddr;
use std::time::Duration;

use crate::addr::Family;
use crate::id::NodeId;
use crate::routing::RoutingTable;
use crate::time::Timestamp;
use crate::SocketId;

/// One UDP identity: a socket, its node ID and its routing table.
pub struct Identity {
    /// The socket it sends and receives on.
    pub socket: SocketId,
    /// The address that socket is bound to.
    pub bind: SocketAddr,
    /// The socket's address family.
    pub family: Family,
    /// Its node ID.
    pub id: NodeId,
    /// Its routing table.
    pub table: RoutingTable,
    pub(crate) bootstrapped: bool,
    pub(crate) bootstrap_attempt: u32,
    pub(crate) next_bootstrap: Option<Timestamp>,
    pub(crate) bootstrap_backoff: Duration,
    pub(crate) self_lookup: Option<u64>,
}
