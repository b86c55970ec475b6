//! The BEP 51 keyspace walk and find_node exploration: the node book fed by
//! every reply, the crawl tick, and what replies, failures and captures do.

use std::net::SocketAddr;
use std::ops::Bound::{Excluded, Unbounded};
use std::time::Duration;

use crate::id::NodeId;
use crate::krpc::QueryKind;
use crate::time::Timestamp;
use crate::{DiscoverySource, Event};

use super::{
    Acq, Bep51, CrawlReply, CrawlTx, Discovery, Net, Sent, Stage, Strategy, CRAWL_TICK,
    EXPLORE_BARREN, EXPLORE_FLOOR, MAX_SOURCES,
};

impl Strategy {
    /// An infohash heard in a query to us (capture).
    pub fn on_discovery(&mut self, now: Timestamp, d: Discovery, net: &mut impl Net) {
        self.advance(now);
        self.discovered(d, net);
    }

    /// Every infohash heard (capture or samples).
    fn discovered(&mut self, d: Discovery, net: &mut impl Net) {
        let Discovery {
            info_hash: ih,
            source,
            from,
            peer,
            sampled_by: src_node,
            noseed,
        } = d;
        if !self.cfg.enabled {
            net.emit(Event::InfohashDiscovered {
                info_hash: ih,
                source,
                from,
                peer,
            });
            return;
        }
        let new = self.note_seen(ih);
        let first_peer;
        let mut lead = false;
        let promoted;
        {
            let hint = self.hints.entry(ih).or_default();
            let had_evidence = hint.evidence;
            // A get_peers candidate that now has an announced peer is confirmed.
            first_peer = peer.is_some() && hint.heard_at.is_some() && hint.candidate_only();
            if let Some(p) = peer {
                if !hint.peers.contains(&p) && hint.peers.len() < 8 {
                    hint.peers.push(p);
                    lead = true;
                }
            }
            if let Some((i, id)) = src_node {
                if hint.sources.len() < MAX_SOURCES && !hint.sources.iter().any(|s| s.2 == from) {
                    hint.sources.push((i, id, from));
                    lead = true;
                }
            }
            if source == DiscoverySource::GetPeers && hint.heard_at.is_none() {
                hint.heard_at = Some(self.now);
            }
            match source {
                DiscoverySource::Announce | DiscoverySource::Sample => hint.evidence = true,
                DiscoverySource::GetPeers => match hint.querier {
                    None => hint.querier = Some(from.ip()),
                    Some(ip) if ip != from.ip() => hint.evidence = true,
                    Some(_) => {}
                },
            }
            // A seeder looks its torrent up with `noseed=1` (BEP 33); a table
            // refresh's get_peers for a random id never carries it.
            if source == DiscoverySource::GetPeers && noseed && !hint.evidence {
                hint.evidence = true;
                self.stats.candidates_noseed += 1;
            }
            // A seeder looks its torrent up again (libtorrent at every announce):
            // if our search came before its announce landed and found nobody, its
            // next lookup brings the acquisition back from the retry's backoff, a
            // few times at most.
            if source == DiscoverySource::GetPeers
                && noseed
                && self.retry.contains_key(&ih)
                && usize::from(hint.noseed_leads) < MAX_SOURCES
            {
                hint.noseed_leads += 1;
                lead = true;
            }
            promoted = hint.evidence && !had_evidence;
        }
        if promoted {
            self.promote(ih, net);
        }
        if lead {
            self.unpace(ih);
            self.revive(ih, net);
        }
        if let (true, Some(p)) = (first_peer, peer) {
            net.emit(Event::PeersFound {
                info_hash: ih,
                peers: vec![p],
                seeders: None,
                leechers: None,
            });
        }
        if peer.is_some() {
            // A candidate waiting for its announce: here it is.
            if let Some(due) = self.deferred.remove(&ih) {
                self.deferred_due.remove(&(due, ih));
                self.stats.candidates_announced += 1;
                self.start_acquisition(ih, net);
            }
        }
        if let Some(p) = peer {
            self.fetch_announced(ih, p, net);
        }
        if !new {
            return;
        }
        match source {
            DiscoverySource::Announce => self.stats.new_from_announce += 1,
            DiscoverySource::GetPeers => self.stats.new_from_get_peers += 1,
            DiscoverySource::Sample => self.stats.new_from_sample += 1,
        }
        net.emit(Event::InfohashDiscovered {
            info_hash: ih,
            source,
            from,
            peer,
        });
        if self.cfg.auto_acquire {
            let _ = self.acquire(self.now, ih, net);
        }
    }

    /// Feeds the nodes of any reply into the node book.
    pub fn learn_nodes(
        &mut self,
        now: Timestamp,
        i: usize,
        nodes: &[(NodeId, SocketAddr)],
        net: &impl Net,
    ) -> usize {
        self.advance(now);
        if !self.cfg.enabled {
            return 0;
        }
        let mut new = 0;
        for (id, a) in nodes {
            let ident = net.ident_for(a, id).unwrap_or(i);
            if self.learn(self.now, ident, *id, *a) {
                new += 1;
            }
        }
        new
    }

    /// A reply to a crawl query.
    pub fn on_reply(
        &mut self,
        now: Timestamp,
        tag: u64,
        reply: CrawlReply<'_, '_>,
        net: &mut impl Net,
    ) {
        self.advance(now);
        let Some(ctx) = self.txs.remove(&tag) else {
            return;
        };
        let CrawlReply {
            ident: i,
            from,
            response: r,
            nodes,
            peers,
        } = reply;
        match ctx {
            CrawlTx::Sample { addr } => {
                self.stats.sample_replies += 1;
                let mut fresh = 0usize;
                let mut count = 0usize;
                if let Some(s) = r.samples {
                    count = s.len();
                    self.stats.samples_received += count as u64;
                    for ih in s.iter() {
                        let before = self.stats.duplicates;
                        let d = Discovery {
                            info_hash: ih,
                            source: DiscoverySource::Sample,
                            from,
                            peer: None,
                            sampled_by: Some((i, r.id)),
                            noseed: false,
                        };
                        self.discovered(d, net);
                        if self.stats.duplicates == before {
                            fresh += 1;
                        }
                    }
                }
                let now = self.now;
                let cfg = &self.cfg;
                let (min_rev, max_int, productive) =
                    (cfg.min_revisit, cfg.max_interval, cfg.productive_revisit);
                let mut next = None;
                if let Some(n) = self.book.get_mut(&addr) {
                    n.in_flight = false;
                    n.failures = 0;
                    if r.samples.is_some() {
                        if n.bep51 != Bep51::Yes {
                            self.stats.bep51_yes += 1;
                        }
                        n.bep51 = Bep51::Yes;
                        n.num = r.num;
                        let interval =
                            Duration::from_secs(r.interval.unwrap_or(0).clamp(0, 21_600) as u64);
                        let mut wait = interval.clamp(min_rev, max_int.max(min_rev));
                        let more = r.num.is_some_and(|num| num > count as i64);
                        if let Some(p) = productive {
                            if fresh > 0 && more {
                                wait = wait.min(p.max(min_rev));
                            }
                        }
                        // The reply carried everything the node holds (`num` ≤
                        // samples): libtorrent rebuilds a sample that is not full at
                        // every request, whatever its `interval`, so the interval
                        // says nothing of when it will hold more (a node sampled
                        // as a swarm starts holds nothing yet, and said so for 6 h).
                        // Come back after `min_revisit`, doubling while it brings
                        // nothing new, up to its interval.
                        if r.num.is_some_and(|num| num <= count as i64) {
                            let back = min_rev.saturating_mul(1u32 << n.quiet.min(16));
                            wait = wait.min(back.max(min_rev));
                            n.quiet = if fresh > 0 {
                                0
                            } else {
                                n.quiet.saturating_add(1)
                            };
                        } else {
                            n.quiet = 0;
                        }
                        next = Some(now.add(wait));
                        tracing::debug!(
                            target: "magnetar::walk",
                            node = %addr,
                            id = %r.id.to_hex(),
                            num = r.num.unwrap_or(-1),
                            count,
                            fresh,
                            interval = interval.as_secs(),
                            next_secs = wait.as_secs(),
                            "sample reply"
                        );
                        if tracing::enabled!(target: "magnetar::walk", tracing::Level::TRACE) {
                            if let Some(s) = r.samples {
                                let all: Vec<String> = s.iter().map(|ih| ih.to_hex()).collect();
                                tracing::trace!(
                                    target: "magnetar::walk",
                                    node = %addr,
                                    samples = %all.join(","),
                                    "sample content"
                                );
                            }
                        }
                    } else {
                        if n.bep51 != Bep51::No {
                            self.stats.bep51_no += 1;
                        }
                        n.bep51 = Bep51::No;
                    }
                }
                self.schedule(addr, next);
                self.learn_nodes(now, i, nodes, &*net);
            }
            CrawlTx::Explore { addr } => {
                if let Some(n) = self.book.get_mut(&addr) {
                    n.in_flight = false;
                    n.failures = 0;
                }
                let new = self.learn_nodes(now, i, nodes, &*net);
                // How productive exploration is: an average of new nodes per reply.
                let y = &mut self.explore_yield;
                *y = *y * 0.95 + new as f64 * 0.05;
            }
            CrawlTx::AskSource { ih } => {
                self.learn_nodes(now, i, nodes, &*net);
                if !self.acq.contains_key(&ih) {
                    return;
                }
                let peers: Vec<SocketAddr> = peers.to_vec();
                let fetching = self
                    .acq
                    .get(&ih)
                    .is_some_and(|a| a.stage == Stage::Fetching);
                if peers.is_empty() && fetching {
                    return;
                }
                // (An early fetch from an announcer does not end the search: with no
                // peers here, the traversal below still runs.)
                if !peers.is_empty() {
                    self.stats.ask_source_hits += 1;
                    net.emit(Event::PeersFound {
                        info_hash: ih,
                        peers: peers.clone(),
                        seeders: None,
                        leechers: None,
                    });
                    self.start_fetch(ih, &peers, net);
                } else {
                    self.acquire_by_lookup(ih, nodes, net);
                }
            }
        }
    }

    /// An error reply, a refused send or a timeout for a crawl query.
    pub fn on_failure(&mut self, now: Timestamp, tag: u64, error_reply: bool, net: &mut impl Net) {
        self.advance(now);
        let Some(ctx) = self.txs.remove(&tag) else {
            return;
        };
        match ctx {
            CrawlTx::Sample { addr } | CrawlTx::Explore { addr } => {
                let is_sample = matches!(ctx, CrawlTx::Sample { .. });
                let now = self.now;
                let max_fail = self.cfg.max_node_failures;
                let mut drop = false;
                let mut next = None;
                if let Some(n) = self.book.get_mut(&addr) {
                    n.in_flight = false;
                    if error_reply && is_sample {
                        // Error 204 and friends: it does not do BEP 51.
                        if n.bep51 != Bep51::No {
                            self.stats.bep51_no += 1;
                        }
                        n.bep51 = Bep51::No;
                    } else if !error_reply {
                        n.failures = n.failures.saturating_add(1);
                        if n.failures >= max_fail {
                            drop = true;
                        } else if n.bep51 != Bep51::No {
                            next = Some(now.add(Duration::from_secs(30 * n.failures as u64)));
                        }
                    }
                }
                tracing::debug!(
                    target: "magnetar::walk",
                    node = %addr,
                    sample = is_sample,
                    error_reply,
                    drop,
                    "crawl query failed"
                );
                if drop {
                    self.blacklist(now, addr);
                } else {
                    self.schedule(addr, next);
                }
            }
            CrawlTx::AskSource { ih } => {
                let asking = self
                    .acq
                    .get(&ih)
                    .is_some_and(|a| a.stage == Stage::AskSource);
                if asking {
                    self.acquire_by_lookup(ih, &[], net);
                }
            }
        }
    }

    /// Sampling, exploration, retries and queued acquisitions.
    pub fn tick(&mut self, now: Timestamp, net: &mut impl Net) {
        self.advance(now);
        if !self.cfg.enabled || self.now < self.next_tick {
            return;
        }
        self.next_tick = self.now.add(CRAWL_TICK);
        let now = self.now;
        // Sampling: nodes that are due, while the budget keeps a reserve for lookups.
        let reserve = (self.cfg.burst / 4) as u64;
        let mut sent = 0;
        while sent < 1000 && self.pacer.available(now) > reserve {
            let Some(&(t, addr)) = self.due.first() else {
                break;
            };
            if t > now {
                break;
            }
            self.due.pop_first();
            let Some(n) = self.book.get_mut(&addr) else {
                continue;
            };
            n.next_at = None;
            if n.in_flight || n.bep51 == Bep51::No {
                continue;
            }
            n.in_flight = true;
            let (i, id) = (n.ident, n.id);
            // A target beside the node's own id: its reply lists its neighbours.
            let mut target = id;
            let tail: [u8; 12] = net.rng().bytes();
            target.0[8..].copy_from_slice(&tail);
            // A sharded walk stays in its slice (a node booked before its id
            // changed may lie outside: its reply then lists nodes of the slice).
            let target = self.cfg.shard.pull_in(target);
            let tag = self.tag(CrawlTx::Sample { addr });
            sent += 1;
            let q = QueryKind::SampleInfohashes { target };
            if net.send_query(&mut self.pacer, i, addr, Some(id), tag, q) == Sent::Yes {
                self.stats.samples_sent += 1;
            } else {
                self.txs.remove(&tag);
                if let Some(n) = self.book.get_mut(&addr) {
                    n.in_flight = false;
                }
                // Not sent (budget or pacing): try again shortly.
                self.schedule(addr, Some(now.add(Duration::from_secs(1))));
            }
        }
        // Exploration at a trickle (one per tick) while sampling is due: the walk
        // itself finds most nodes, as every sample reply lists some.
        let sampling_soon = self
            .due
            .first()
            .is_some_and(|(t, _)| *t <= now.add(Duration::from_secs(1)));
        // Exploration that stopped finding nodes slows to about one query a second.
        let barren = self.explore_yield < EXPLORE_BARREN;
        let tries_cap = if barren {
            u32::from(net.rng().below(40) == 0)
        } else if sampling_soon && self.book.len() >= EXPLORE_FLOOR {
            1
        } else {
            64
        };
        // Exploration: find_node with random targets to random known nodes.
        let mut tries = 0;
        while tries < tries_cap
            && self.pacer.available(now) > reserve
            && self.explore.available(now) > 0
        {
            tries += 1;
            // In the shard's slice (160 random bits when unsharded, as before).
            let probe = self.cfg.shard.random_id(net.rng());
            // Round-robin over the book, so every known node is asked in turn.
            let pick = match self.explore_cursor {
                Some(c) => self.book.range((Excluded(c), Unbounded)).next(),
                None => None,
            }
            .or_else(|| self.book.iter().next())
            .map(|(a, n)| (*a, n.ident, n.id, n.in_flight));
            if let Some((a, ..)) = pick {
                self.explore_cursor = Some(a);
            }
            let (addr, i, id) = match pick {
                Some((a, i, id, false)) => (a, i, id),
                Some(_) => continue,
                None => {
                    // Empty book: ask the routing table.
                    match net.nearest_contact(&probe) {
                        Some((a, id)) => (a, 0, id),
                        None => break,
                    }
                }
            };
            if !self.explore.try_take(now) {
                break;
            }
            let tag = self.tag(CrawlTx::Explore { addr });
            if let Some(n) = self.book.get_mut(&addr) {
                n.in_flight = true;
            }
            let q = QueryKind::FindNode { target: probe };
            if net.send_query(&mut self.pacer, i, addr, Some(id), tag, q) == Sent::Yes {
                self.stats.explore_sent += 1;
            } else {
                self.txs.remove(&tag);
                if let Some(n) = self.book.get_mut(&addr) {
                    n.in_flight = false;
                }
            }
        }
        // Paced acquisitions whose first source may be asked now go back to the end
        // of the queue, as they did when they went round it every tick.
        while let Some(&(t, ih)) = self.paced_due.first() {
            if t > now {
                break;
            }
            self.paced_due.pop_first();
            self.paced.remove(&ih);
            self.acq_queue.push_back(ih);
        }
        // Peer searches waiting for a lookup slot go first.
        self.start_waiting_lookups(net);
        // Retries that came due, and queued acquisitions, while there is room and
        // budget left after sampling and exploration.
        let mut started = 0;
        while self.acq.len() < self.cfg.max_acquisitions
            && self.pacer.available(now) > reserve
            && started < 1000
        {
            let deferred = self.deferred_due.first().copied();
            let ih = match self.retry_due.first() {
                Some(&(t, ih)) if t <= now => {
                    self.retry_due.pop_first();
                    self.stats.retries += 1;
                    ih
                }
                _ if deferred.is_some_and(|(t, _)| t <= now) => {
                    let Some((_, ih)) = self.deferred_due.pop_first() else {
                        break;
                    };
                    self.deferred.remove(&ih);
                    ih
                }
                _ => match self.acq_queue.pop_front() {
                    Some(ih) => {
                        self.queued.remove(&ih);
                        ih
                    }
                    None => break,
                },
            };
            if !self.acq.contains_key(&ih) {
                started += 1;
                let again = self
                    .retry
                    .get(&ih)
                    .filter(|r| r.attempts == 1 && !r.peers.is_empty());
                match again.map(|r| r.peers.clone()) {
                    Some(peers) => {
                        self.stats.acquisitions_started += 1;
                        self.acq.insert(ih, Acq::new(Stage::Fetching));
                        self.start_fetch(ih, &peers, net);
                    }
                    None => self.start_acquisition(ih, net),
                }
            }
        }
        // Last, the scrape refreshes of stored torrents, on their own budget.
        self.refresh_tick(reserve, net);
    }
}
