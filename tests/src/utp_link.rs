//! uTP streams in virtual time: two `core::utp::Utp` managers joined by a
//! seeded datagram link with latency, jitter (which reorders), random loss and
//! duplication, and a bounded queue (tail drop). Every delivery goes into a
//! [`TraceHash`], so two runs with one seed can be compared.
//!
//! [`transfer`] runs the common experiment: A opens a stream to B, writes a
//! byte string as fast as its send buffer takes it and closes; B reads
//! everything. The outcome says what B read and why each side ended.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use magnetar_core::utp::{StreamId, Utp, UtpCloseReason, UtpConfig, UtpEvent};
use magnetar_core::{Rng, SocketId, Timestamp};

use crate::util::TraceHash;

/// The link between the two endpoints (both directions alike).
#[derive(Clone, Copy, Debug)]
pub struct LinkConfig {
    /// One-way base latency.
    pub latency: Duration,
    /// Extra delay, uniform in `0..jitter` per datagram (reorders them).
    pub jitter: Duration,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Datagrams in flight per direction at most; more are tail-dropped.
    pub queue: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            latency: Duration::from_millis(25),
            jitter: Duration::from_millis(5),
            loss: 0.0,
            duplicate: 0.0,
            queue: 4096,
        }
    }
}

/// What the link did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams handed to the link.
    pub sent: u64,
    /// Lost at random.
    pub lost: u64,
    /// Tail-dropped because the queue was full.
    pub queue_drops: u64,
    /// Delivered twice.
    pub duplicated: u64,
    /// Deliveries.
    pub delivered: u64,
    /// Deliveries that overtook an earlier datagram of their direction.
    pub reordered: u64,
}

/// The result of [`transfer`].
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The bytes B read, in order.
    pub received: Vec<u8>,
    /// Why A's stream ended (None: still open at the time limit).
    pub a_closed: Option<UtpCloseReason>,
    /// Why B's stream ended.
    pub b_closed: Option<UtpCloseReason>,
    /// Virtual time at the end.
    pub end: Timestamp,
    /// The trace hash over every delivery.
    pub trace: u64,
    /// The link's counters.
    pub link: LinkStats,
    /// A's and B's uTP counters.
    pub a_stats: magnetar_core::utp::UtpStats,
    /// B's counters.
    pub b_stats: magnetar_core::utp::UtpStats,
}

const A: u64 = 1;
const B: u64 = 2;

fn addr(n: u64) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n as u8], 6881))
}

/// Runs the transfer of `data` from A to B over a link seeded with `seed`, for
/// at most `limit` of virtual time and a bounded number of steps.
pub fn transfer(seed: u64, link: LinkConfig, data: &[u8], limit: Duration) -> Outcome {
    let root = Rng::new(seed);
    let mut rng = root.child(100);
    let mut a = Utp::new(UtpConfig::default(), root.child(1));
    let mut b = Utp::new(
        UtpConfig {
            accept_incoming: true,
            ..UtpConfig::default()
        },
        root.child(2),
    );
    let sock = SocketId(0);
    let mut now = Timestamp::ZERO;
    let end_at = Timestamp::ZERO.add(limit);
    let mut queue: BTreeMap<(Timestamp, u64), (u64, Vec<u8>)> = BTreeMap::new();
    let mut in_flight = [0usize; 2];
    let mut last_delivered_no = [0u64; 2];
    let mut n = 0u64;
    let mut trace = TraceHash::default();
    let mut stats = LinkStats::default();
    let sa: StreamId = a.connect(now, sock, addr(B)).expect("connect");
    let mut sb: Option<StreamId> = None;
    let mut sent = 0usize;
    let mut closed_a = false;
    let mut received = Vec::new();
    let (mut a_closed, mut b_closed) = (None, None);
    for _ in 0..20_000_000u64 {
        // The applications.
        if a_closed.is_none() {
            if sent < data.len() {
                if let Ok(k) = a.write(now, sa, data.get(sent..).unwrap_or(&[])) {
                    sent += k;
                }
            } else if !closed_a {
                closed_a = true;
                let _ = a.close(now, sa);
            }
        }
        if let Some(s) = sb {
            let _ = b.read(now, s, &mut received, usize::MAX);
        }
        // Events.
        while let Some(e) = a.poll_event() {
            if let UtpEvent::Closed { stream, reason } = e {
                if stream == sa {
                    a_closed = Some(reason);
                }
            }
        }
        while let Some(e) = b.poll_event() {
            match e {
                UtpEvent::Incoming { stream, .. } if sb.is_none() => sb = Some(stream),
                UtpEvent::Closed { stream, reason } if Some(stream) == sb => {
                    b_closed = Some(reason)
                }
                _ => {}
            }
        }
        // Datagrams into the link.
        for (from, m) in [(A, &mut a), (B, &mut b)] {
            let dir = (from - 1) as usize;
            while let Some(t) = m.poll_transmit() {
                stats.sent += 1;
                if rng.chance(link.loss) {
                    stats.lost += 1;
                    continue;
                }
                let copies = if rng.chance(link.duplicate) { 2 } else { 1 };
                for _ in 0..copies {
                    if in_flight[dir] >= link.queue {
                        stats.queue_drops += 1;
                        continue;
                    }
                    let j = rng.below(link.jitter.as_nanos() as u64 + 1);
                    let at = now.add(link.latency).add(Duration::from_nanos(j));
                    n += 1;
                    in_flight[dir] += 1;
                    queue.insert((at, n), (from, t.payload.to_vec()));
                }
                if copies == 2 {
                    stats.duplicated += 1;
                }
            }
        }
        if a_closed.is_some() && (b_closed.is_some() || sb.is_none()) && queue.is_empty() {
            break;
        }
        let next = [queue.keys().next().map(|k| k.0), a.deadline(), b.deadline()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next else { break };
        if next > end_at {
            break;
        }
        now = now.max(next);
        while let Some(entry) = queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((at, no), (from, bytes)) = entry.remove_entry();
            let dir = (from - 1) as usize;
            in_flight[dir] -= 1;
            if no < last_delivered_no[dir] {
                stats.reordered += 1;
            }
            last_delivered_no[dir] = last_delivered_no[dir].max(no);
            stats.delivered += 1;
            trace.record(at.as_nanos(), from, 3 - from, &bytes);
            if from == A {
                b.handle_datagram(now, sock, addr(A), &bytes);
            } else {
                a.handle_datagram(now, sock, addr(B), &bytes);
            }
        }
        a.handle_timeout(now);
        b.handle_timeout(now);
    }
    Outcome {
        received,
        a_closed,
        b_closed,
        end: now,
        trace: trace.value(),
        link: stats,
        a_stats: a.stats(),
        b_stats: b.stats(),
    }
}
