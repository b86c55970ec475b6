//! Scrape refresh: BEP 33 counts of stored torrents kept fresh.
//!
//! Core never sees storage: the runtime's sink answers a re-sighting of a stored
//! torrent whose counts are missing or old with `Decision::Refresh`, and the pump
//! calls `Crawler::refresh_scrape`, which lands here. Refreshes wait in a bounded
//! stack, most recently seen first (the least recently seen is dropped when it is
//! full), and start from the crawl tick after sampling, exploration and
//! acquisitions, at most [`CrawlConfig::refresh_lookups`] at once, each a get_peers
//! traversal with `scrape=1` capped at [`CrawlConfig::refresh_lookup_queries`]
//! queries and charged that many packets of its own budget
//! ([`CrawlConfig::refresh_pps`]) up front. Its `PeersFound` event carries the
//! counts; the sink stores them with the time.
//!
//! [`CrawlConfig::refresh_lookups`]: super::CrawlConfig::refresh_lookups
//! [`CrawlConfig::refresh_lookup_queries`]: super::CrawlConfig::refresh_lookup_queries
//! [`CrawlConfig::refresh_pps`]: super::CrawlConfig::refresh_pps

use crate::id::InfoHash;
use crate::time::Timestamp;

use super::{Budget, CrawlConfig, Net, PeerSearch, Strategy};

/// The refresh stack and what runs.
pub(super) struct Refresh {
    budget: Budget,
    /// Waiting, least recently seen first (taken from the back).
    stack: std::collections::VecDeque<InfoHash>,
    waiting: std::collections::BTreeSet<InfoHash>,
    /// Running refresh traversals by lookup id.
    running: std::collections::BTreeMap<u64, InfoHash>,
}

impl Refresh {
    pub(super) fn new(cfg: &CrawlConfig) -> Self {
        let cost = cfg.refresh_lookup_queries.max(1);
        Refresh {
            budget: Budget::new(cfg.refresh_pps.max(1), cost.max(cfg.refresh_pps)),
            stack: std::collections::VecDeque::new(),
            waiting: std::collections::BTreeSet::new(),
            running: std::collections::BTreeMap::new(),
        }
    }

    /// Refreshes waiting.
    pub(super) fn waiting(&self) -> usize {
        self.stack.len()
    }

    /// Refreshes running.
    pub(super) fn running(&self) -> usize {
        self.running.len()
    }
}

impl Strategy {
    /// Queues a scrape refresh of a stored torrent just seen again (the most
    /// recently seen go first). Ignored while it is acquired, queued or running.
    pub fn refresh_scrape(&mut self, now: Timestamp, ih: InfoHash) {
        self.advance(now);
        if self.cfg.refresh_pps == 0 {
            self.stats.refresh_dropped += 1;
            return;
        }
        let r = &mut self.refresh;
        if self.acq.contains_key(&ih) || r.waiting.contains(&ih) {
            return;
        }
        if r.running.values().any(|x| *x == ih) {
            return;
        }
        if r.stack.len() >= self.cfg.refresh_queue.max(1) {
            if let Some(old) = r.stack.pop_front() {
                r.waiting.remove(&old);
            }
            self.stats.refresh_dropped += 1;
        }
        r.stack.push_back(ih);
        r.waiting.insert(ih);
        self.stats.refresh_queued += 1;
    }

    /// Starts waiting refreshes while there is room, refresh budget and global
    /// budget above `reserve` (called from the crawl tick, last).
    pub(super) fn refresh_tick(&mut self, reserve: u64, net: &mut impl Net) {
        let now = self.now;
        let cost = self.cfg.refresh_lookup_queries.max(1);
        while self.refresh.running.len() < self.cfg.refresh_lookups
            && self.refresh.budget.available(now) >= u64::from(cost)
            && self.pacer.available(now) > reserve
        {
            let Some(ih) = self.refresh.stack.pop_back() else {
                break;
            };
            self.refresh.waiting.remove(&ih);
            if self.acq.contains_key(&ih) {
                // Its acquisition scrapes it anyway.
                continue;
            }
            match net.start_peer_search(&mut self.pacer, ih, &[], cost, true, false) {
                PeerSearch::Running(lid) => {
                    self.refresh.running.insert(lid, ih);
                }
                PeerSearch::Finished => self.stats.refresh_done += 1,
                PeerSearch::Refused | PeerSearch::NoIdentity => {
                    // No lookup slot (or nobody to search from): later.
                    self.refresh.stack.push_back(ih);
                    self.refresh.waiting.insert(ih);
                    break;
                }
            }
            for _ in 0..cost {
                self.refresh.budget.try_take(now);
            }
            self.stats.refresh_started += 1;
        }
    }

    /// A lookup ended: true when it was a refresh (nothing more to do: its
    /// `PeersFound` carried the counts).
    pub(super) fn refresh_finished(&mut self, lid: u64) -> bool {
        if self.refresh.running.remove(&lid).is_some() {
            self.stats.refresh_done += 1;
            return true;
        }
        false
    }
}
