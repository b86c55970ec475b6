//! The [`Crawler`] façade: the single sans-IO object that drivers talk to.

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::config::Config;
use crate::fetch::Fetcher;
use crate::id::InfoHash;
use crate::rng::Rng;
use crate::stats::Stats;
use crate::time::Timestamp;
use crate::{ApiMisuse, Input, Output, SocketId};

pub struct Crawler {
    cfg: Config,
    rng: Rng,
    now: Timestamp,
    out: VecDeque<Output>,
    fetcher: Fetcher,
    stats: Stats,
}

impl Crawler {
    pub fn new(cfg: Config, now: Timestamp) -> Self {
        let rng = Rng::new(cfg.seed);
        let fetcher = Fetcher::new(cfg.fetch.clone(), rng.child(2));
        Crawler {
            cfg,
            rng,
            now,
            out: VecDeque::new(),
            fetcher,
            stats: Stats::default(),
        }
    }
    pub fn bootstrap(&mut self, now: Timestamp, routers: &[SocketAddr]) {
        self.now = self.now.max(now);
        let _ = &mut self.rng;
        for r in routers {
            self.out.push_back(Output::Transmit {
                local: SocketId(0),
                to: *r,
                payload: bytes::Bytes::new(),
            });
        }
    }
    pub fn handle_input(&mut self, input: Input<'_>) {
        self.now = self.now.max(input.at());
    }
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        if let Some(o) = self.fetcher.poll_output() {
            return o;
        }
        Output::Idle
    }
    pub fn fetch_metadata(
        &mut self,
        now: Timestamp,
        ih: InfoHash,
        peers: &[SocketAddr],
    ) -> Result<(), ApiMisuse> {
        let _ = self.cfg.allow_private;
        self.fetcher.fetch(now, ih, peers)
    }
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}
