//! What remote parties do wrong. Remote garbage is never an `Err` out of the API: it
//! becomes a counted [`Fault`] (in [`crate::stats::DhtStats::faults`]) and a `tracing`
//! event. KRPC faults that deserve an answer are answered with the BEP 5 error codes
//! 201 to 204 ([`crate::krpc::error_code`]).

use crate::krpc::DecodeError;

/// A fault caused by a remote DHT node.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// The datagram did not decode.
    Malformed(DecodeError),
    /// A response or error matched no outstanding transaction.
    UnknownTransaction,
    /// A response came from an address other than the one we asked.
    WrongAddress,
    /// A response lacks what its query needs (e.g. get_peers without a token).
    BadResponse,
    /// announce_peer with an invalid token.
    BadToken,
    /// Query over the per-IP answer rate.
    RateLimited,
    /// From an address we never send to (bogon/private without `allow_private`).
    FilteredSource,
    /// A reply named a node (`nodes`, `nodes6`) or peer (`values`) at an address
    /// the address filter refuses ([`crate::addr::is_sendable`]); it was dropped.
    FilteredAddress,
    /// The node's id changed for the same address, or it used our own id.
    SuspectId,
}

impl Fault {
    /// The KRPC error code that answers a faulty *query*, if one should be sent.
    pub fn krpc_code(&self) -> Option<i64> {
        use crate::krpc::error_code::*;
        match self {
            Fault::Malformed(_) => Some(PROTOCOL),
            Fault::BadToken => Some(PROTOCOL),
            Fault::RateLimited => Some(SERVER),
            _ => None,
        }
    }
}
