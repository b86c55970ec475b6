//! Acquisitions: from an infohash to its metadata (ask the sampling node, then
//! a peer search, then the fetcher), with pacing, candidates and retries.

use std::net::SocketAddr;

use crate::fetch::{AfterFailure, FetchFailure};
use crate::id::{InfoHash, NodeId};
use crate::krpc::QueryKind;
use crate::shard::Shard;
use crate::time::Timestamp;
use crate::{ApiMisuse, Event};

use super::{Acq, CrawlTx, Net, PeerSearch, Retry, Sent, Stage, Strategy};

impl Strategy {
    /// Finds peers for `ih` and fetches its metadata: asks the node that sampled it
    /// first, then a get_peers traversal, then the fetcher. Call it for discovered
    /// infohashes that storage does not have. Idempotent while running; ignored while
    /// a failed infohash waits out its backoff.
    pub fn acquire(
        &mut self,
        now: Timestamp,
        ih: InfoHash,
        net: &mut impl Net,
    ) -> Result<(), ApiMisuse> {
        self.advance(now);
        let shard = self.cfg.shard;
        if !shard.contains(&ih.0) {
            // Another shard's slice: its owner fetches it, once it claims it
            // from the shared queue. Forget the leads: nothing here uses them.
            self.stats.shard_offered += 1;
            if let Some(h) = self.hints.get(&ih) {
                if !h.wanted {
                    self.hints.remove(&ih);
                }
            }
            net.emit(Event::InfohashOffered {
                info_hash: ih,
                owner: Shard::owner_of(shard.count(), &ih.0),
            });
            return Ok(());
        }
        self.acquire_owned(ih, net)
    }

    /// An infohash claimed from the shared queue (this shard owns it, or took
    /// it over from a shard whose lease expired): acquired like one of its own
    /// slice, whatever its slice.
    pub fn acquire_claimed(
        &mut self,
        now: Timestamp,
        ih: InfoHash,
        net: &mut impl Net,
    ) -> Result<(), ApiMisuse> {
        self.advance(now);
        let r = self.acquire_owned(ih, net);
        if r.is_ok() {
            self.stats.shard_claimed += 1;
        }
        r
    }

    fn acquire_owned(&mut self, ih: InfoHash, net: &mut impl Net) -> Result<(), ApiMisuse> {
        if let Some(h) = self.hints.get_mut(&ih) {
            h.wanted = true;
        }
        if self.acq.contains_key(&ih) {
            return Ok(());
        }
        if let Some(r) = self.retry.get(&ih) {
            if r.next_at > self.now {
                self.stats.retry_skips += 1;
                return Ok(());
            }
        }
        if self.given_up.contains(&ih) {
            self.stats.retry_skips += 1;
            return Ok(());
        }
        // Acquisitions start from the crawl tick, after sampling has had its share
        // of the budget: discovering new infohashes comes first.
        if self.queued.contains(&ih) || self.deferred.contains_key(&ih) {
            return Ok(());
        }
        if self.queue_len() >= self.cfg.acquire_queue {
            self.stats.acquisitions_queued_drop += 1;
            return Err(ApiMisuse::Full);
        }
        self.queued.insert(ih);
        self.acq_queue.push_back(ih);
        // A cheap acquisition (announced peers to fetch from, or the sampling node to
        // ask: one query at most) with nothing queued ahead of it, no retry due (nor
        // one for it: the tick retries its old peers first), room and budget above the
        // tick's reserve: start now rather than at the next tick, up to CRAWL_TICK
        // later, which was most of the time to metadata on a fast network. One that
        // needs a traversal (a get_peers capture), and any backlog, wait for the tick,
        // after sampling, as before.
        let h = &*self;
        let cheap = h
            .hints
            .get(&ih)
            .is_some_and(|x| !x.peers.is_empty() || !x.sources.is_empty());
        if cheap
            && h.queue_len() == 1
            && !h.retry.contains_key(&ih)
            && h.acq.len() < h.cfg.max_acquisitions
            && h.retry_due.first().is_none_or(|(t, _)| *t > self.now)
            && h.pacer.available(self.now) > (h.cfg.burst / 4) as u64
        {
            self.acq_queue.pop_front();
            self.queued.remove(&ih);
            self.start_acquisition(ih, net);
        }
        Ok(())
    }

    /// A new lead (a sampling node, an announced peer) for `ih`. If the driver
    /// asked for it and it is neither running nor waiting to start, but waits out
    /// a retry's backoff or was dropped as a candidate (its first search ran
    /// before anyone had announced it, as in a swarm that is starting), it is
    /// queued again now: the lead is what its search lacked. Leads per infohash
    /// are bounded (`MAX_SOURCES` nodes, 8 peers), and a given-up infohash stays
    /// given up. A node that sampled it is a lead for a candidate waiting out
    /// its grace, and for a search waiting for a lookup slot too: that node is
    /// asked at once (one query) rather than after the searches ahead.
    pub(super) fn revive(&mut self, ih: InfoHash, net: &mut impl Net) {
        if self.hints.get(&ih).is_some_and(|h| !h.sources.is_empty()) {
            if let Some(due) = self.deferred.remove(&ih) {
                self.deferred_due.remove(&(due, ih));
                self.stats.revived += 1;
                self.start_acquisition(ih, net);
                return;
            }
            let waiting = self
                .acq
                .get(&ih)
                .is_some_and(|a| a.stage == Stage::WaitLookup && !a.early);
            if waiting {
                self.unwait(&ih);
                self.acq.remove(&ih);
                self.stats.revived += 1;
                self.start_acquisition(ih, net);
                return;
            }
        }
        if !self.hints.get(&ih).is_some_and(|h| h.wanted)
            || self.acq.contains_key(&ih)
            || self.queued.contains(&ih)
            || self.deferred.contains_key(&ih)
            || self.given_up.contains(&ih)
            || self.queue_len() >= self.cfg.acquire_queue
        {
            return;
        }
        if let Some(r) = self.retry.remove(&ih) {
            self.retry_due.remove(&(r.next_at, ih));
        }
        self.stats.revived += 1;
        self.queued.insert(ih);
        self.acq_queue.push_back(ih);
    }

    /// The time the first source of `ih` may be asked, when it has only sources
    /// to ask (no announced peers) and every one of them is paced now.
    fn paced_until(&self, ih: &InfoHash) -> Option<Timestamp> {
        let hint = self.hints.get(ih)?;
        if !hint.peers.is_empty() {
            return None;
        }
        let at = hint
            .sources
            .iter()
            .map(|(_, _, addr)| self.pacer.ip_next_allowed(addr))
            .min()?;
        (at > self.now).then_some(at)
    }

    /// Parks a queued acquisition until `at`, when a source may be asked.
    fn pace(&mut self, ih: InfoHash, at: Timestamp) {
        if self.queued.insert(ih) {
            self.paced_due.insert((at, ih));
            self.paced.insert(ih, at);
        }
    }

    /// A paced acquisition whose hint gained a lead (a peer, or another source)
    /// goes back to the end of the queue, where it would have found it before.
    pub(super) fn unpace(&mut self, ih: InfoHash) {
        if let Some(at) = self.paced.remove(&ih) {
            self.paced_due.remove(&(at, ih));
            self.acq_queue.push_back(ih);
        }
    }

    pub(super) fn start_acquisition(&mut self, ih: InfoHash, net: &mut impl Net) {
        // Every source paced: wait until the first may be asked, before paying for
        // a copy of the hint, transaction tags and a limiter check per source.
        if let Some(at) = self.paced_until(&ih) {
            self.pace(ih, at);
            return;
        }
        self.stats.acquisitions_started += 1;
        let hint = self.hints.get(&ih).cloned().unwrap_or_default();
        if !hint.peers.is_empty() {
            self.acq.insert(ih, Acq::new(Stage::Fetching));
            self.start_fetch(ih, &hint.peers, net);
            return;
        }
        let grace = self.cfg.candidate_grace;
        if let Some(t) = hint.heard_at.filter(|_| hint.sources.is_empty()) {
            let due = t.add(grace);
            if due > self.now && self.deferred.len() < self.cfg.acquire_queue {
                // Wait for the announce that usually follows.
                self.stats.acquisitions_started -= 1;
                self.stats.candidates_deferred += 1;
                self.deferred.insert(ih, due);
                self.deferred_due.insert((due, ih));
                return;
            }
        }
        // Ask a node that sampled it; when one is paced (it just gave us up to 20
        // samples), another that sampled it too, each under its own per-IP pace.
        let mut throttled = false;
        let mut paced: Option<Timestamp> = None;
        for (i, id, addr) in hint.sources {
            let at = self.pacer.ip_next_allowed(&addr);
            if at > self.now {
                // This one is paced: no tag, no refused check.
                paced = Some(paced.map_or(at, |p| p.min(at)));
                continue;
            }
            let tag = self.tag(CrawlTx::AskSource { ih });
            let q = QueryKind::GetPeers {
                info_hash: ih,
                scrape: false,
                noseed: false,
            };
            match net.send_query(&mut self.pacer, i, addr, Some(id), tag, q) {
                Sent::Yes => {
                    self.stats.ask_source_sent += 1;
                    self.acq.insert(ih, Acq::new(Stage::AskSource));
                    return;
                }
                Sent::Throttled => throttled = true,
                Sent::No => {}
            }
            self.txs.remove(&tag);
        }
        if throttled {
            // Out of budget: ask later rather than pay for a traversal now.
            self.stats.acquisitions_started -= 1;
            if self.queued.insert(ih) {
                self.acq_queue.push_back(ih);
            }
            return;
        }
        if let Some(at) = paced {
            // Every source it could ask is paced: ask when the first may be.
            self.stats.acquisitions_started -= 1;
            self.pace(ih, at);
            return;
        }
        self.acquire_by_lookup(ih, &[], net);
    }

    pub(super) fn acquire_by_lookup(
        &mut self,
        ih: InfoHash,
        seeds: &[(NodeId, SocketAddr)],
        net: &mut impl Net,
    ) {
        if !self.cfg.lookup_on_miss {
            self.acquisition_failed(ih, true, net);
            return;
        }
        // Others wait for a slot already: behind them. A search with evidence
        // waits only behind others with evidence; a candidate's behind any, and
        // while `candidate_lookups` of them run.
        let candidate = !self.evidence_of_torrent(&ih);
        let behind = match self.lookup_wait.keys().next() {
            None => false,
            Some(&(first_is_candidate, _)) => candidate || !first_is_candidate,
        };
        if behind || (candidate && self.cand_lookups.len() >= self.cfg.candidate_lookups) {
            self.wait_for_lookup(ih, seeds, net);
            return;
        }
        self.launch_lookup(ih, seeds, candidate, net);
    }

    /// Starts the peer search of `ih` (of low priority for a `candidate`); when
    /// every lookup slot is busy it waits for one (or fails when the wait queue
    /// is full).
    fn launch_lookup(
        &mut self,
        ih: InfoHash,
        seeds: &[(NodeId, SocketAddr)],
        candidate: bool,
        net: &mut impl Net,
    ) {
        let cap = self.cfg.acquire_lookup_queries;
        // No scrape: libtorrent answers a scrape with filters instead of peers.
        // The counts come from a scrape refresh once the torrent is fetched.
        let lid = match net.start_peer_search(&mut self.pacer, ih, seeds, cap, false, candidate) {
            PeerSearch::NoIdentity => return,
            PeerSearch::Refused => {
                self.wait_for_lookup(ih, seeds, net);
                return;
            }
            PeerSearch::Finished => None,
            PeerSearch::Running(lid) => Some(lid),
        };
        self.lookup_started(ih, lid, candidate, net);
    }

    /// Takes `ih` out of the lookup wait queue, if it is there.
    pub(super) fn unwait(&mut self, ih: &InfoHash) {
        if let Some(key) = self.lookup_waiting.remove(ih) {
            self.lookup_wait.remove(&key);
        }
    }

    /// `ih` showed evidence of being a torrent: its peer search, waiting as a
    /// candidate's or running at low priority, is one of normal priority now.
    pub(super) fn promote(&mut self, ih: InfoHash, net: &mut impl Net) {
        if let Some(key) = self.lookup_waiting.get(&ih).copied() {
            if key.0 {
                if let Some(entry) = self.lookup_wait.remove(&key) {
                    let key = (false, key.1);
                    self.lookup_wait.insert(key, entry);
                    self.lookup_waiting.insert(ih, key);
                }
            }
        }
        if let Some(Stage::Lookup(lid)) = self.acq.get(&ih).map(|a| a.stage.clone()) {
            if self.cand_lookups.remove(&lid) {
                net.promote_search(lid);
            }
        }
    }

    /// Every lookup slot is busy: `ih` waits for one (it stays an acquisition
    /// running: a fetch from an announcer may go on meanwhile), or, with the
    /// wait queue full, fails and is retried with backoff. (It used to fail at
    /// once: a momentarily full lookup table cost the infohash minutes to hours.)
    fn wait_for_lookup(
        &mut self,
        ih: InfoHash,
        seeds: &[(NodeId, SocketAddr)],
        net: &mut impl Net,
    ) {
        self.unwait(&ih);
        let candidate = !self.evidence_of_torrent(&ih);
        if self.lookup_wait.len() >= self.cfg.lookup_wait_queue {
            if candidate {
                self.stats.lookup_wait_candidates_dropped += 1;
                self.acquisition_failed(ih, false, net);
                return;
            }
            // The newest waiting candidate gives way to a search with evidence.
            let newest = self.lookup_wait.last_key_value().map(|(k, v)| (*k, v.0));
            match newest {
                Some((key, old)) if key.0 => {
                    self.lookup_wait.remove(&key);
                    self.lookup_waiting.remove(&old);
                    self.stats.lookup_wait_candidates_dropped += 1;
                    let waiting = self
                        .acq
                        .get(&old)
                        .is_some_and(|a| a.stage == Stage::WaitLookup);
                    if waiting {
                        self.acquisition_failed(old, false, net);
                    }
                }
                _ => {
                    self.stats.lookup_wait_drops += 1;
                    self.acquisition_failed(ih, false, net);
                    return;
                }
            }
        }
        self.stats.lookup_waits += 1;
        let early = self.acq.get(&ih).is_some_and(|a| a.early);
        let mut a = Acq::new(Stage::WaitLookup);
        a.early = early;
        self.acq.insert(ih, a);
        let seeds = seeds.iter().take(16).copied().collect();
        let key = (candidate, self.wait_seq);
        self.wait_seq += 1;
        self.lookup_wait.insert(key, (ih, seeds));
        self.lookup_waiting.insert(ih, key);
    }

    /// Starts the peer searches that wait for a lookup slot while slots are
    /// free (from the crawl tick): those with evidence first, then candidates
    /// while fewer than `candidate_lookups` of theirs run, each oldest first.
    pub(super) fn start_waiting_lookups(&mut self, net: &mut impl Net) {
        while let Some(&key) = self.lookup_wait.keys().next() {
            let candidate = key.0;
            if candidate && self.cand_lookups.len() >= self.cfg.candidate_lookups {
                return;
            }
            let Some((ih, seeds)) = self.lookup_wait.remove(&key) else {
                return;
            };
            self.lookup_waiting.remove(&ih);
            let waiting = self
                .acq
                .get(&ih)
                .is_some_and(|a| a.stage == Stage::WaitLookup);
            if !waiting {
                // Fetched or failed meanwhile.
                continue;
            }
            let cap = self.cfg.acquire_lookup_queries;
            // No scrape, as in `launch_lookup`.
            let search = net.start_peer_search(&mut self.pacer, ih, &seeds, cap, false, candidate);
            let lid = match search {
                PeerSearch::NoIdentity | PeerSearch::Refused => {
                    self.lookup_wait.insert(key, (ih, seeds));
                    self.lookup_waiting.insert(ih, key);
                    return;
                }
                PeerSearch::Finished => None,
                PeerSearch::Running(lid) => Some(lid),
            };
            self.lookup_started(ih, lid, candidate, net);
        }
    }

    /// The peer search of `ih` (a `candidate`'s) started (`Some`) or finished
    /// at once (`None`).
    fn lookup_started(
        &mut self,
        ih: InfoHash,
        lid: Option<u64>,
        candidate: bool,
        net: &mut impl Net,
    ) {
        let early = self.acq.get(&ih).is_some_and(|a| a.early);
        // (The stage's lookup id is never read once the lookup is over.)
        let mut a = Acq::new(Stage::Lookup(lid.unwrap_or(0)));
        a.early = early;
        self.acq.insert(ih, a);
        match lid {
            Some(lid) => {
                self.acq_by_lookup.insert(lid, ih);
                if candidate {
                    self.cand_lookups.insert(lid);
                }
            }
            // The lookup finished at once (nothing to ask): treat as a miss.
            None => self.acquisition_failed(ih, true, net),
        }
    }

    /// An announced peer is the best lead: fetch from it at once, even while the
    /// acquisition is still asking for peers. The search goes on: an announcer is
    /// often a magnet leecher that has no metadata yet (BEP 9 clients announce at
    /// once), and then the peers the search finds take over.
    pub(super) fn fetch_announced(&mut self, ih: InfoHash, p: SocketAddr, net: &mut impl Net) {
        let Some(a) = self.acq.get_mut(&ih) else {
            return;
        };
        if a.stage == Stage::Fetching {
            self.start_fetch(ih, &[p], net);
            return;
        }
        a.early = true;
        if net.fetch(ih, &[p]).is_err() {
            if let Some(a) = self.acq.get_mut(&ih) {
                a.early = false;
            }
        }
    }

    pub(super) fn start_fetch(&mut self, ih: InfoHash, peers: &[SocketAddr], net: &mut impl Net) {
        if let Some(a) = self.acq.get_mut(&ih) {
            a.stage = Stage::Fetching;
        }
        if net.fetch(ih, peers).is_err() {
            self.acquisition_failed(ih, false, net);
        }
    }

    /// An acquisition ended without metadata: schedule a retry or give up.
    fn acquisition_failed(&mut self, ih: InfoHash, no_peers: bool, net: &mut impl Net) {
        self.acquisition_failed_with(ih, no_peers, &[], false, net);
    }

    /// Schedules the retry (returns its time) or gives up (`None`).
    fn acquisition_failed_with(
        &mut self,
        ih: InfoHash,
        no_peers: bool,
        peers: &[SocketAddr],
        final_: bool,
        net: &mut impl Net,
    ) -> Option<Timestamp> {
        self.acq.remove(&ih);
        self.unwait(&ih);
        if no_peers {
            self.stats.acquire_no_peers += 1;
            net.found_nobody(ih);
        }
        // A candidate nobody holds is most likely a random refresh target. But
        // its clients may not have announced yet when the first search runs
        // (the query we heard was part of a traversal that ends with the
        // announce), so it gets one more search a little later
        // (`candidate_retry`), then it is dropped. It is not remembered as
        // given up: refresh targets are random and never come back, and a
        // real torrent heard again deserves another search.
        let candidate = no_peers && self.hints.get(&ih).is_none_or(|h| h.candidate_only());
        let h = &mut *self;
        let attempts = h.retry.get(&ih).map_or(0, |r| r.attempts);
        if let Some(r) = h.retry.remove(&ih) {
            h.retry_due.remove(&(r.next_at, ih));
        }
        let backoff = match (final_, candidate) {
            (true, _) => None,
            (false, true) => h.cfg.candidate_retry.filter(|_| attempts == 0),
            (false, false) => h.cfg.retry_backoff.get(attempts).copied(),
        };
        if candidate {
            match backoff {
                Some(_) => h.stats.candidates_retried += 1,
                None => h.stats.candidates_dropped += 1,
            }
        }
        self.forget_hint_if_unseen(&ih);
        let h = &mut *self;
        if backoff.is_some() && h.retry.len() >= h.cfg.max_retry {
            // The earliest pending retry goes first.
            if let Some((_, old)) = h.retry_due.pop_first() {
                h.retry.remove(&old);
            }
        }
        let peers: Vec<SocketAddr> = peers.iter().take(8).copied().collect();
        match backoff {
            Some(d) => {
                let next_at = h.now.add(d);
                h.retry.insert(
                    ih,
                    Retry {
                        attempts: attempts + 1,
                        next_at,
                        peers,
                    },
                );
                h.retry_due.insert((next_at, ih));
                Some(next_at)
            }
            None => {
                h.stats.given_up += 1;
                if !candidate {
                    h.given_up.insert(h.now, &ih);
                }
                None
            }
        }
    }

    /// A lookup finished: continue the acquisition that started it, if any.
    pub fn on_lookup_done(
        &mut self,
        now: Timestamp,
        lid: u64,
        peers: &[SocketAddr],
        net: &mut impl Net,
    ) {
        self.advance(now);
        if self.refresh_finished(lid) {
            return;
        }
        self.cand_lookups.remove(&lid);
        let Some(ih) = self.acq_by_lookup.remove(&lid) else {
            return;
        };
        let fetching = match self.acq.get_mut(&ih) {
            None => return,
            Some(a) => {
                let f = a.stage == Stage::Fetching || a.early;
                if f {
                    // The search is over; the running fetch reports for itself.
                    a.stage = Stage::Fetching;
                }
                f
            }
        };
        if !peers.is_empty() {
            self.start_fetch(ih, peers, net);
        } else if !fetching {
            self.acquisition_failed(ih, true, net);
        }
    }

    /// Drops the hint of an infohash whose acquisition ended after it left the
    /// dedup window (the window drops the hints of the others as they leave it;
    /// without this, hints of infohashes acquired at that moment stayed forever).
    fn forget_hint_if_unseen(&mut self, ih: &InfoHash) {
        if !self.seen.contains(ih) && !self.acq.contains_key(ih) {
            self.hints.remove(ih);
        }
    }

    /// A fetch of an acquisition succeeded.
    pub fn on_fetched(&mut self, now: Timestamp, ih: InfoHash) {
        self.advance(now);
        self.stats.fetched += 1;
        self.acq.remove(&ih);
        self.unwait(&ih);
        if let Some(h) = self.hints.get_mut(&ih) {
            h.wanted = false;
        }
        // Stored now: its BEP 33 counts come from a scrape refresh.
        self.refresh_scrape(now, ih);
        self.forget_hint_if_unseen(&ih);
        if let Some(r) = self.retry.remove(&ih) {
            self.retry_due.remove(&(r.next_at, ih));
        }
    }

    /// A fetch failed: says what happens next to the infohash (and may start
    /// a peer search for it at once).
    pub fn on_fetch_failed(
        &mut self,
        now: Timestamp,
        m: &FetchFailure,
        net: &mut impl Net,
    ) -> AfterFailure {
        self.advance(now);
        self.stats.fetch_failed += 1;
        let ih = m.info_hash;
        let (searching, searched) = match self.acq.get_mut(&ih) {
            Some(a) => {
                a.early = false;
                (a.stage != Stage::Fetching, a.searched)
            }
            None => (false, true),
        };
        let invalid = m.info_error.is_some();
        if searching && !invalid {
            // Only the announcers failed; the search still out decides.
            return AfterFailure::StillSearching;
        }
        if !searched && !invalid {
            // Only announced (or hinted) peers were tried, and they failed:
            // search for peers now rather than retry in minutes.
            if let Some(h) = self.hints.get_mut(&ih) {
                h.peers.clear();
                // Confirmed by its announce already: no second grace.
                h.heard_at = None;
            }
            self.acq.remove(&ih);
            self.start_acquisition(ih, net);
            return AfterFailure::StillSearching;
        }
        if !self.acq.contains_key(&ih) {
            return AfterFailure::NotManaged;
        }
        let peers: Vec<SocketAddr> = m.reasons.iter().map(|(p, _)| *p).collect();
        // Metadata that hashed right but is invalid is invalid for everyone.
        match self.acquisition_failed_with(ih, false, &peers, invalid, net) {
            Some(t) => AfterFailure::RetryAt(t),
            None => AfterFailure::GivenUp,
        }
    }
}
