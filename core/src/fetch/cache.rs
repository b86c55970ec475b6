//! The peer capability cache: what sessions taught us about peer addresses
//! (client, metadata support, successes and failures), bounded, LRU.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::session::PeerInfo;

use super::{Encryption, PeerCapability, SessionOutcome, Transport, WireMode};

struct CacheEntry {
    cap: PeerCapability,
    seq: u64,
}

/// Peer capabilities by address, at most `cap` of them (least recently
/// updated evicted first; `cap == 0` remembers nothing).
pub(super) struct PeerCache {
    map: BTreeMap<SocketAddr, CacheEntry>,
    lru: BTreeMap<u64, SocketAddr>,
    seq: u64,
    cap: usize,
}

impl PeerCache {
    /// An empty cache of at most `cap` entries.
    pub fn new(cap: usize) -> Self {
        PeerCache {
            map: BTreeMap::new(),
            lru: BTreeMap::new(),
            seq: 0,
            cap,
        }
    }

    /// Peers remembered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// What the cache knows about `peer`.
    pub fn get(&self, peer: &SocketAddr) -> Option<&PeerCapability> {
        self.map.get(peer).map(|e| &e.cap)
    }

    /// `peer` did not take a connection over the other transport (refused,
    /// timed out, or closed before a byte both ways): unless something worked
    /// before, `transport` is the one to try first next time.
    pub fn prefer(&mut self, peer: &SocketAddr, transport: Transport) {
        if let Some(e) = self.map.get_mut(peer) {
            if e.cap.transport.is_none() {
                e.cap.transport = Some(transport);
            }
        }
    }

    /// Learns from a session with `peer` over `attempt` that ended with
    /// `outcome`, whose stream got past the handshake as `learned` or was
    /// refused in `refused` mode (remembered for `attempt` only), and whose
    /// transport `worked` when it got the peer's handshake. True when an
    /// entry was evicted to make room.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        peer: SocketAddr,
        info: &PeerInfo,
        outcome: SessionOutcome,
        attempt: Transport,
        learned: Option<Encryption>,
        refused: Option<WireMode>,
        worked: Option<Transport>,
    ) -> bool {
        if self.cap == 0 {
            return false;
        }
        self.seq += 1;
        let seq = self.seq;
        let mut evicted = false;
        if !self.map.contains_key(&peer) && self.map.len() >= self.cap {
            if let Some((_, old)) = self.lru.pop_first() {
                self.map.remove(&old);
                evicted = true;
            }
        }
        let e = self.map.entry(peer).or_insert(CacheEntry {
            cap: PeerCapability::default(),
            seq,
        });
        self.lru.remove(&e.seq);
        e.seq = seq;
        self.lru.insert(seq, peer);
        if let Some(c) = info.best_client() {
            e.cap.client = Some(c.to_owned());
        }
        if info.ut_metadata.is_some() {
            e.cap.ut_metadata = Some(true);
        }
        if learned.is_some() {
            e.cap.encryption = learned;
            *e.cap.refused_mut(attempt) = None;
        }
        if refused.is_some() {
            *e.cap.refused_mut(attempt) = refused;
        }
        if worked.is_some() {
            e.cap.transport = worked;
        }
        match outcome {
            SessionOutcome::Ok => {
                e.cap.successes = e.cap.successes.saturating_add(1);
                e.cap.last_failure = None;
            }
            SessionOutcome::Failed(r) => {
                e.cap.failures = e.cap.failures.saturating_add(1);
                e.cap.last_failure = Some(r);
                if r.never_serves() {
                    e.cap.ut_metadata = Some(false);
                }
            }
            SessionOutcome::Cancelled => {}
        }
        evicted
    }
}
