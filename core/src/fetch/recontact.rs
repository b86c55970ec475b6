//! Peers waiting for contact: a peer no direct attempt reached (its connect
//! refused or timed out over every transport tried) is remembered, with the
//! infohashes it was wanted for, until it next sends us a datagram. A NAT-ed
//! peer's mapping to our socket is open right after that datagram (for about
//! a minute), so the fetcher retries it at once, over uTP from the socket it
//! talked to ([`Fetcher::note_udp_contact`] calls [`Fetcher::recontacted`]),
//! for each infohash it was wanted for: back into that job's queue, first in
//! line, if the job still runs; else a job of its own for that infohash (a
//! client holds many torrents; the per-IP session cap spaces the attempts,
//! and the peer's own uTP packets keep its mapping open meanwhile). Without this, a NAT-ed torrent was
//! fetched only when a fetch happened to fall within the minute after its
//! holder's last datagram to us.
//!
//! Bounds: at most [`RECONTACT_MAX`] (peer, infohash) pairs (the oldest
//! forgotten first, counted), [`RECONTACT_PER_PEER`] per peer (the oldest
//! pair of that peer forgotten, counted), each for at most [`RECONTACT_TTL`];
//! one retry per contact (the entries are taken; a retry that fails again
//! puts its pair back). The retries run
//! within the fetcher's usual budgets (`max_jobs`, sessions, per-IP caps).
//! A job the fetcher started this way reports its success as any other
//! ([`crate::Event::MetadataFetched`]) but not its failure: its owner has had
//! that infohash's failure already (counted in
//! `TransportStats::recontact_failed`). A [`Fetcher::fetch`] by the owner for
//! the same infohash makes the job the owner's.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use crate::id::InfoHash;
use crate::time::Timestamp;

use super::Fetcher;

/// (Peer, infohash) pairs waiting for contact, at most.
pub const RECONTACT_MAX: usize = 4096;
/// Infohashes one peer waits for, at most.
pub const RECONTACT_PER_PEER: usize = 64;
/// How long a peer waits for contact.
pub const RECONTACT_TTL: Duration = Duration::from_secs(3600);

/// See the module docs.
#[derive(Debug, Default)]
pub(super) struct Recontact {
    /// (Peer, infohash wanted from it) → when it was last not reached.
    by_pair: BTreeMap<(SocketAddr, InfoHash), Timestamp>,
    order: BTreeSet<(Timestamp, SocketAddr, InfoHash)>,
    /// Jobs started by a contact and not (yet) the owner's.
    pub jobs: BTreeSet<InfoHash>,
}

impl Recontact {
    /// Pairs waiting.
    pub fn len(&self) -> usize {
        self.by_pair.len()
    }

    fn forget(&mut self, t: Timestamp, peer: SocketAddr, ih: InfoHash) {
        self.by_pair.remove(&(peer, ih));
        self.order.remove(&(t, peer, ih));
    }

    /// Remembers `peer` for `ih`; returns how many pairs were forgotten to
    /// make room.
    fn insert(&mut self, now: Timestamp, peer: SocketAddr, ih: InfoHash) -> u64 {
        self.expire(now);
        if let Some(t) = self.by_pair.insert((peer, ih), now) {
            self.order.remove(&(t, peer, ih));
        }
        self.order.insert((now, peer, ih));
        let mut evicted = 0;
        let mine: Vec<(Timestamp, InfoHash)> = self
            .by_pair
            .range((peer, InfoHash::ZERO)..=(peer, InfoHash([0xff; 20])))
            .map(|(k, t)| (*t, k.1))
            .collect();
        if mine.len() > RECONTACT_PER_PEER {
            if let Some(&(t, old)) = mine.iter().min() {
                self.forget(t, peer, old);
                evicted += 1;
            }
        }
        if self.by_pair.len() > RECONTACT_MAX {
            if let Some((t, p, old)) = self.order.pop_first() {
                self.forget(t, p, old);
                evicted += 1;
            }
        }
        evicted
    }

    /// Takes `peer`'s live entries.
    fn take(&mut self, now: Timestamp, peer: &SocketAddr) -> Vec<InfoHash> {
        let mine: Vec<(InfoHash, Timestamp)> = self
            .by_pair
            .range((*peer, InfoHash::ZERO)..=(*peer, InfoHash([0xff; 20])))
            .map(|(k, t)| (k.1, *t))
            .collect();
        let mut live = Vec::new();
        for (ih, t) in mine {
            self.forget(t, *peer, ih);
            if now.since(t) <= RECONTACT_TTL {
                live.push(ih);
            }
        }
        live
    }

    /// Forgets entries older than [`RECONTACT_TTL`].
    fn expire(&mut self, now: Timestamp) {
        while let Some(&(t, p, ih)) = self.order.first() {
            if now.since(t) <= RECONTACT_TTL {
                break;
            }
            self.forget(t, p, ih);
        }
    }
}

impl Fetcher {
    /// No direct attempt reached `peer` for `ih`: wait for its next datagram.
    pub(super) fn wait_for_contact(&mut self, now: Timestamp, peer: SocketAddr, ih: InfoHash) {
        if !self.utp {
            return;
        }
        let t = &mut self.stats.transport;
        t.recontact_evicted += self.recontact.insert(now, peer, ih);
        t.recontact_waiting = self.recontact.len();
    }

    /// `peer` sent us a datagram (its NAT's mapping to us is open): if it
    /// waits for contact, retry it now (see the module docs).
    pub(super) fn recontacted(&mut self, now: Timestamp, peer: SocketAddr) {
        let ihs = self.recontact.take(now, &peer);
        if ihs.is_empty() {
            return;
        }
        self.stats.transport.recontact_waiting = self.recontact.len();
        for ih in ihs {
            self.retry_for(now, peer, ih);
        }
    }

    /// One retry of `peer` for `ih` (see [`Fetcher::recontacted`]).
    fn retry_for(&mut self, now: Timestamp, peer: SocketAddr, ih: InfoHash) {
        if let Some(job) = self.jobs.get_mut(&ih) {
            let slots = &self.slots;
            let running = job.conns.iter().any(|id| {
                slots
                    .get(id.index as usize)
                    .and_then(|s| s.conn.as_ref())
                    .is_some_and(|c| c.id == *id && c.peer == peer)
            });
            if running {
                // An attempt to it is under way (over the path just opened, if
                // it is uTP from that socket).
                return;
            }
            job.pending.retain(|p| *p != peer);
            job.later.retain(|p| *p != peer);
            job.retry_transport.remove(&peer);
            job.retry_mode.remove(&peer);
            job.seen.insert(peer);
            job.pending.push_front(peer);
            self.stats.transport.recontact_retries += 1;
            self.mark_runnable(ih);
            self.schedule(now);
            return;
        }
        if self.jobs.len() >= self.cfg.max_jobs {
            self.stats.transport.recontact_no_room += 1;
            return;
        }
        self.recontact.jobs.insert(ih);
        self.stats.transport.recontact_retries += 1;
        if self.start_fetch(now, ih, &[peer]).is_err() {
            self.recontact.jobs.remove(&ih);
            self.stats.transport.recontact_no_room += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use crate::fetch::{FetchConfig, Fetcher, SessionOutcome, Transport, TransportChoice};
    use crate::session::FailReason;
    use crate::testkit::{build_info, InfoSpec, UtpSwarm};
    use crate::{Event, Rng, SocketId};

    fn seeder() -> SocketAddr {
        "10.0.0.7:51413".parse().unwrap()
    }

    fn sessions(ev: &[Event]) -> Vec<(Transport, SessionOutcome)> {
        ev.iter()
            .filter_map(|e| match e {
                Event::PeerSession(r) => Some((r.transport, r.outcome)),
                _ => None,
            })
            .collect()
    }

    fn count(ev: &[Event]) -> (usize, usize) {
        let ok = ev
            .iter()
            .filter(|e| matches!(e, Event::MetadataFetched(_)))
            .count();
        let failed = ev
            .iter()
            .filter(|e| matches!(e, Event::MetadataFailed(_)))
            .count();
        (ok, failed)
    }

    #[test]
    fn a_nat_ed_peer_no_attempt_reached_is_retried_over_utp_when_it_next_talks_to_us() {
        let mut w = UtpSwarm::new(5, Duration::from_millis(20), 0);
        let info = build_info(&InfoSpec::single("nat.bin", 100 << 20));
        let ih = w.set_seeder(seeder(), info.into());
        w.put_behind_a_nat();
        let mut f = Fetcher::new(FetchConfig::default(), Rng::new(3))
            .with_allow_private(true)
            .with_utp(true);
        let mut ev = Vec::new();
        f.fetch(w.now(), ih, &[seeder()]).unwrap();
        w.run_into(&mut f, 100_000, &mut ev);
        // TCP never gets through a NAT, nor uTP without a mapping.
        assert_eq!(count(&ev), (0, 1), "{ev:?}");
        assert_eq!(
            sessions(&ev),
            [
                (
                    Transport::Tcp,
                    SessionOutcome::Failed(FailReason::ConnectRefused)
                ),
                (
                    Transport::Utp,
                    SessionOutcome::Failed(FailReason::ConnectTimeout)
                )
            ]
        );
        assert_eq!(f.stats().transport.recontact_waiting, 1);

        // A datagram from that address that did not come through its NAT's
        // mapping to us (a forged one, say): the retry fails, unreported (the
        // owner had the failure), and the peer waits again.
        ev.clear();
        f.note_udp_contact(w.now(), seeder(), SocketId(0));
        w.run_into(&mut f, 100_000, &mut ev);
        assert_eq!(count(&ev), (0, 0), "{ev:?}");
        let t = &f.stats().transport;
        assert_eq!(
            (t.recontact_retries, t.recontact_failed, t.recontact_waiting),
            (1, 1, 1)
        );

        // It sends us a DHT query: uTP from that socket, at once.
        ev.clear();
        w.seeder_sends_us_a_datagram();
        f.note_udp_contact(w.now(), seeder(), SocketId(0));
        w.run_into(&mut f, 100_000, &mut ev);
        assert_eq!(count(&ev), (1, 0), "{ev:?}");
        assert_eq!(sessions(&ev), [(Transport::Utp, SessionOutcome::Ok)]);
        let t = &f.stats().transport;
        assert_eq!(
            (
                t.recontact_retries,
                t.recontact_fetched,
                t.recontact_waiting
            ),
            (2, 1, 0)
        );
        // Both retries went over uTP (from the socket the peer talked to: the
        // connect takes the contact's socket whatever the choice's label). The
        // label is `Remembered` once the cache has learnt that TCP failed
        // outright, `UdpContact` before.
        let utp_retries: u64 = [TransportChoice::UdpContact, TransportChoice::Remembered]
            .iter()
            .filter_map(|c| t.chosen.get(&(Transport::Utp, *c)))
            .sum();
        assert_eq!(utp_retries, 2, "{:?}", t.chosen);
        // Another datagram from it starts nothing.
        f.note_udp_contact(w.now(), seeder(), SocketId(0));
        assert_eq!(f.jobs(), 0);
    }

    #[test]
    fn a_peer_waiting_for_contact_rejoins_its_running_job_first_in_line() {
        // Two peers for one torrent: the NAT-ed seeder and one that never
        // answers; the job runs on while the seeder waits for contact.
        let mut w = UtpSwarm::new(8, Duration::from_millis(20), 0);
        let info = build_info(&InfoSpec::single("nat2.bin", 100 << 20));
        let ih = w.set_seeder(seeder(), info.into());
        w.put_behind_a_nat();
        let cfg = FetchConfig {
            peers_per_infohash: 1,
            ..FetchConfig::default()
        };
        let mut f = Fetcher::new(cfg, Rng::new(3))
            .with_allow_private(true)
            .with_utp(true);
        let silent: SocketAddr = "10.0.0.9:6881".parse().unwrap();
        let mut ev = Vec::new();
        // The seeder first (TCP refused, uTP times out), then the silent one.
        f.fetch(w.now(), ih, &[seeder(), silent]).unwrap();
        let t0 = w.now();
        // Run until the seeder waits for contact.
        for _ in 0..1000 {
            w.run_into(&mut f, 1, &mut ev);
            if f.stats().transport.recontact_waiting == 1 {
                break;
            }
        }
        assert_eq!(f.stats().transport.recontact_waiting, 1, "{ev:?}");
        assert!(f.is_fetching(&ih));
        assert!(w.now() > t0);
        w.seeder_sends_us_a_datagram();
        f.note_udp_contact(w.now(), seeder(), SocketId(0));
        w.run_into(&mut f, 100_000, &mut ev);
        assert_eq!(count(&ev), (1, 0), "{ev:?}");
        let t = &f.stats().transport;
        assert_eq!((t.recontact_retries, t.recontact_fetched), (1, 0));
        let last = ev.iter().rev().find_map(|e| match e {
            Event::MetadataFetched(m) => Some(m.peer),
            _ => None,
        });
        assert_eq!(last, Some(seeder()));
    }
}
