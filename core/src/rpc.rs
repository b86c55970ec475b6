//! The transaction table (BEP 5 KRPC transactions): our outstanding queries, keyed
//! by (socket, tid, remote address), with a short and a full deadline each.
//!
//! Key types: [`Rpc`] (the table, one per crawler and shared by every identity),
//! [`Transaction`] and its [`TxKey`], [`Method`], [`Purpose`] (where a reply is
//! routed) and [`Expired`]. A reply matches only from the address the query went to;
//! anything else is a [`crate::fault::Fault`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::fault::Fault;
use crate::id::NodeId;
use crate::rng::Rng;
use crate::time::Timestamp;
use crate::SocketId;

/// The query a transaction carries.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    /// `ping`.
    Ping,
    /// `find_node`.
    FindNode,
    /// `get_peers`.
    GetPeers,
    /// `announce_peer`.
    AnnouncePeer,
    /// `sample_infohashes` (BEP 51).
    SampleInfohashes,
}

impl Method {
    /// The KRPC method name (`b"find_node"`, …).
    pub fn name(&self) -> &'static [u8] {
        match self {
            Method::Ping => b"ping",
            Method::FindNode => b"find_node",
            Method::GetPeers => b"get_peers",
            Method::AnnouncePeer => b"announce_peer",
            Method::SampleInfohashes => b"sample_infohashes",
        }
    }
}

/// Why we sent a query: where its reply is routed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Purpose {
    /// Routing-table maintenance ping.
    Ping,
    /// find_node to a bootstrap router or saved node.
    Bootstrap,
    /// Part of a lookup.
    Lookup(u64),
    /// Part of the crawl strategy; the tag is the strategy's own.
    Crawl(u64),
}

/// What a reply must match: our socket, the tid and the remote address.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxKey {
    /// The identity that sent the query.
    pub socket: SocketId,
    /// The 2-byte transaction id, big-endian on the wire.
    pub tid: u16,
    /// The address we sent the query to (a reply from any other address does not match).
    pub addr: SocketAddr,
}

/// One outstanding query of ours.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// Its key in the table.
    pub key: TxKey,
    /// The method sent.
    pub method: Method,
    /// Where the reply is routed.
    pub purpose: Purpose,
    /// When the query was sent (its deadlines and the RTT count from here).
    pub sent_at: Timestamp,
    /// The id we believe the remote has, if known.
    pub expect_id: Option<NodeId>,
    /// The short deadline has passed.
    pub short_fired: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Short,
    Full,
}

/// A deadline that passed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Expired {
    /// The short timeout: the transaction stays open, but a lookup may widen.
    Short(Transaction),
    /// The full timeout: the transaction is gone and counts as a failure.
    Full(Transaction),
}

/// Late transactions (past their short deadline) the table holds, as a
/// multiple of its cap: with the defaults (cap 4,096, short 1 s, full 10 s)
/// queries to silent nodes can go out at up to (1 + 4) × 4,096 / 10 s ≈ 2,000
/// a second, the default packet budget, instead of 410.
pub const LATE_FACTOR: usize = 4;

/// The transaction table, shared by every identity: at most `cap` *live*
/// transactions (`DhtConfig::max_transactions`: those still within their short
/// deadline), each with a short and a full deadline, expired in deadline order.
/// A transaction whose short deadline passed frees its slot and stays *late*
/// until its full deadline, so that a late reply is still matched: a silent
/// node holds a slot for the short timeout, not the full one. Late
/// transactions are bounded too ([`Rpc::late_cap`], `cap × LATE_FACTOR`); past
/// that the oldest fails at once (counted in [`Rpc::late_evicted`]). Tids are
/// drawn from the seeded [`Rng`].
pub struct Rpc {
    txs: BTreeMap<TxKey, Transaction>,
    deadlines: BTreeSet<(Timestamp, Phase, TxKey)>,
    /// The late transactions, oldest first (by the time they were sent).
    late: BTreeSet<(Timestamp, TxKey)>,
    rng: Rng,
    cap: usize,
    /// `late_cap` as a multiple of `cap` (0: no late table).
    late_factor: usize,
    short: Duration,
    full: Duration,
    /// Late transactions failed before their full deadline to keep the late
    /// table within its cap.
    pub late_evicted: u64,
}

impl Rpc {
    /// An empty table for at most `cap` transactions; `short` and `full` are the timeouts
    /// counted from each transaction's `sent_at`.
    pub fn new(rng: Rng, cap: usize, short: Duration, full: Duration) -> Self {
        Rpc {
            txs: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            late: BTreeSet::new(),
            rng,
            cap,
            late_factor: LATE_FACTOR,
            short,
            full,
            late_evicted: 0,
        }
    }

    /// The late table's size as a multiple of the cap; 0 keeps every
    /// transaction in its slot until its full timeout (as before the late
    /// table existed, for comparisons).
    pub fn with_late_factor(mut self, f: usize) -> Self {
        self.late_factor = f;
        self
    }

    /// Open transactions, live and late.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    /// Live transactions (within their short deadline): at most the cap.
    pub fn live_len(&self) -> usize {
        self.txs.len() - self.late.len()
    }

    /// Late transactions (past their short deadline, a reply still matches).
    pub fn late_len(&self) -> usize {
        self.late.len()
    }

    /// The cap on [`Rpc::late_len`].
    pub fn late_cap(&self) -> usize {
        self.cap.saturating_mul(self.late_factor)
    }

    /// True when no transaction is open.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// Opens a transaction and returns its 2-byte tid, or `None` if the table is full.
    pub fn start(
        &mut self,
        now: Timestamp,
        socket: SocketId,
        addr: SocketAddr,
        method: Method,
        purpose: Purpose,
        expect_id: Option<NodeId>,
    ) -> Option<[u8; 2]> {
        if self.live_len() >= self.cap {
            return None;
        }
        // Random tids: low fingerprint, and unpredictable to off-path spoofers.
        for _ in 0..8 {
            let tid = self.rng.next_u32() as u16;
            let key = TxKey { socket, tid, addr };
            if self.txs.contains_key(&key) {
                continue;
            }
            let tx = Transaction {
                key,
                method,
                purpose,
                sent_at: now,
                expect_id,
                short_fired: false,
            };
            self.txs.insert(key, tx);
            self.deadlines
                .insert((now.add(self.short), Phase::Short, key));
            self.deadlines
                .insert((now.add(self.full), Phase::Full, key));
            return Some(tid.to_be_bytes());
        }
        None
    }

    fn forget(&mut self, tx: &Transaction) {
        self.deadlines
            .remove(&(tx.sent_at.add(self.short), Phase::Short, tx.key));
        self.deadlines
            .remove(&(tx.sent_at.add(self.full), Phase::Full, tx.key));
        self.late.remove(&(tx.sent_at, tx.key));
        self.txs.remove(&tx.key);
    }

    /// Matches a response or error. Only (socket, tid, address) matches: a known tid
    /// from another address is [`Fault::WrongAddress`], anything else
    /// [`Fault::UnknownTransaction`].
    pub fn on_reply(
        &mut self,
        socket: SocketId,
        tid: &[u8],
        from: SocketAddr,
    ) -> Result<Transaction, Fault> {
        let tid = match <[u8; 2]>::try_from(tid) {
            Ok(b) => u16::from_be_bytes(b),
            Err(_) => return Err(Fault::UnknownTransaction),
        };
        let key = TxKey {
            socket,
            tid,
            addr: from,
        };
        if let Some(tx) = self.txs.get(&key).copied() {
            self.forget(&tx);
            return Ok(tx);
        }
        let lo = TxKey {
            socket,
            tid,
            addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        };
        let other = self
            .txs
            .range(lo..)
            .next()
            .is_some_and(|(k, _)| k.socket == socket && k.tid == tid);
        Err(if other {
            Fault::WrongAddress
        } else {
            Fault::UnknownTransaction
        })
    }

    /// The earliest pending deadline (short or full), if any transaction is open.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.deadlines.first().map(|d| d.0)
    }

    /// Pops every deadline at or before `now`, in deadline order.
    pub fn expire(&mut self, now: Timestamp, out: &mut Vec<Expired>) {
        while let Some(&(at, phase, key)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            match phase {
                Phase::Short => {
                    if let Some(tx) = self.txs.get_mut(&key) {
                        tx.short_fired = true;
                        let tx = *tx;
                        if self.late_factor == 0 {
                            // No late table: it keeps its slot.
                            out.push(Expired::Short(tx));
                            continue;
                        }
                        self.late.insert((tx.sent_at, key));
                        out.push(Expired::Short(tx));
                        // The late table is full: its oldest fails now.
                        if self.late.len() > self.late_cap() {
                            if let Some((_, old)) = self.late.first().copied() {
                                if let Some(o) = self.txs.get(&old).copied() {
                                    self.forget(&o);
                                    self.late_evicted += 1;
                                    out.push(Expired::Full(o));
                                }
                            }
                        }
                    }
                }
                Phase::Full => {
                    if let Some(tx) = self.txs.remove(&key) {
                        self.late.remove(&(tx.sent_at, key));
                        out.push(Expired::Full(tx));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn match_by_tid_and_address() {
        let mut r = Rpc::new(
            Rng::new(1),
            10,
            Duration::from_secs(1),
            Duration::from_secs(10),
        );
        let s = SocketId(0);
        let t0 = Timestamp::ZERO;
        let tid = r
            .start(t0, s, a("1.1.1.1:1"), Method::Ping, Purpose::Ping, None)
            .unwrap();
        assert_eq!(
            r.on_reply(s, &tid, a("2.2.2.2:1")),
            Err(Fault::WrongAddress)
        );
        assert_eq!(
            r.on_reply(SocketId(1), &tid, a("1.1.1.1:1")),
            Err(Fault::UnknownTransaction)
        );
        assert_eq!(
            r.on_reply(s, b"abc", a("1.1.1.1:1")),
            Err(Fault::UnknownTransaction)
        );
        let tx = r.on_reply(s, &tid, a("1.1.1.1:1")).unwrap();
        assert_eq!(tx.method, Method::Ping);
        // A second reply is unknown: the transaction is closed.
        assert_eq!(
            r.on_reply(s, &tid, a("1.1.1.1:1")),
            Err(Fault::UnknownTransaction)
        );
        assert!(r.is_empty());
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn short_then_full_timeouts_and_cap() {
        let mut r = Rpc::new(
            Rng::new(2),
            2,
            Duration::from_secs(1),
            Duration::from_secs(10),
        );
        let s = SocketId(0);
        let t0 = Timestamp::ZERO;
        r.start(
            t0,
            s,
            a("1.1.1.1:1"),
            Method::FindNode,
            Purpose::Lookup(7),
            None,
        )
        .unwrap();
        r.start(
            t0,
            s,
            a("1.1.1.2:1"),
            Method::FindNode,
            Purpose::Lookup(7),
            None,
        )
        .unwrap();
        assert!(r
            .start(
                t0,
                s,
                a("1.1.1.3:1"),
                Method::FindNode,
                Purpose::Lookup(7),
                None
            )
            .is_none());
        assert_eq!(r.poll_timeout(), Some(Timestamp::from_secs(1)));
        let mut out = Vec::new();
        r.expire(Timestamp::from_millis(999), &mut out);
        assert!(out.is_empty());
        r.expire(Timestamp::from_secs(1), &mut out);
        assert_eq!(out.len(), 2);
        assert!(out
            .iter()
            .all(|e| matches!(e, Expired::Short(t) if t.short_fired)));
        assert_eq!(r.len(), 2);
        out.clear();
        r.expire(Timestamp::from_secs(10), &mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|e| matches!(e, Expired::Full(_))));
        assert!(r.is_empty());
        assert_eq!(r.poll_timeout(), None);
    }

    /// A silent node holds a slot for the short timeout only: once it fires the
    /// slot is free for a new query, a late reply still matches, and the late
    /// table keeps to its cap by failing its oldest at once. (Before, a
    /// transaction held its slot for the full timeout: with the table full of
    /// silent nodes, nothing could be sent for 10 s.)
    #[test]
    fn a_short_timeout_frees_the_slot_and_a_late_reply_still_matches() {
        let mut r = Rpc::new(
            Rng::new(3),
            2,
            Duration::from_secs(1),
            Duration::from_secs(10),
        );
        let s = SocketId(0);
        let t0 = Timestamp::ZERO;
        let start = |r: &mut Rpc, t: Timestamp, ip: &str| {
            r.start(t, s, a(ip), Method::Ping, Purpose::Ping, None)
        };
        let first = start(&mut r, t0, "1.1.1.1:1").unwrap();
        start(&mut r, t0, "1.1.1.2:1").unwrap();
        assert!(start(&mut r, t0, "1.1.1.3:1").is_none(), "cap of live ones");
        let mut out = Vec::new();
        let t1 = Timestamp::from_secs(1);
        r.expire(t1, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!((r.live_len(), r.late_len()), (0, 2));
        // Both slots are free again.
        start(&mut r, t1, "1.1.1.3:1").unwrap();
        start(&mut r, t1, "1.1.1.4:1").unwrap();
        assert!(start(&mut r, t1, "1.1.1.5:1").is_none());
        // A late reply is still matched, and leaves the late table.
        let tx = r.on_reply(s, &first, a("1.1.1.1:1")).unwrap();
        assert!(tx.short_fired);
        assert_eq!((r.live_len(), r.late_len()), (2, 1));
        // The late table holds at most cap × LATE_FACTOR: fill it, and the
        // oldest fails at once when one more goes late.
        let mut t = t1;
        let mut n = 0;
        while r.late_len() < r.late_cap() {
            t = t.add(Duration::from_millis(100));
            out.clear();
            r.expire(t, &mut out);
            while r.live_len() < 2 {
                n += 1;
                start(&mut r, t, &format!("2.2.{}.{}:1", n / 200, n % 200)).unwrap();
            }
        }
        assert!(r.late_len() <= r.late_cap());
        let evicted = r.late_evicted;
        t = t.add(Duration::from_secs(1));
        out.clear();
        r.expire(t, &mut out);
        assert!(r.late_len() <= r.late_cap());
        assert!(r.late_evicted > evicted);
        assert!(out.iter().any(|e| matches!(e, Expired::Full(_))));
        // Everything still ends by the full deadline.
        out.clear();
        r.expire(t.add(Duration::from_secs(10)), &mut out);
        assert_eq!(r.len(), 0);
        assert_eq!(r.poll_timeout(), None);
    }
}
