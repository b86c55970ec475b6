//! Leech scheduler: per-infohash peer queues, parallel sessions, caps, deadlines,
//! retries and a peer capability cache.
//!
//! The [`Fetcher`] owns every metadata connection. It allocates [`ConnId`]s (slot
//! index plus generation, so a stale id never matches a reused slot), asks the
//! driver to connect, feeds each connection's bytes to a [`Session`], and reports
//! one [`Event::PeerSession`] per session plus exactly one
//! [`Event::MetadataFetched`] or [`Event::MetadataFailed`] per infohash.
//!
//! Bounds: `max_jobs` infohashes, `max_peers_per_infohash` peers per infohash
//! (duplicates and overflow are counted and dropped), `max_sessions` connections in
//! total, `max_sessions_per_ip` per IP, `peer_cache_size` cache entries (LRU).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;

use crate::addr::{canonical, is_sendable};
use crate::id::InfoHash;
use crate::metadata::{self, HashKind, InfoError};
use crate::rng::Rng;
pub use crate::session::FailReason;

mod cache;
mod report;

use crate::session::{PeerInfo, Progress, Session, SessionConfig};
use crate::time::Timestamp;
use crate::{ApiMisuse, CloseReason, ConnId, Event, Output};
use cache::PeerCache;
pub use report::{
    AfterFailure, FetchConfig, FetchFailure, FetchOutput, FetchStats, MetadataFailed,
    MetadataFetched, PeerCapability, PeerSessionReport, SessionOutcome,
};

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Conn(u32, u32),
    Job(InfoHash),
    /// The end of a local back-off (see `Fetcher::local_backoff_until`).
    Resume,
}

struct Conn {
    id: ConnId,
    ih: InfoHash,
    peer: SocketAddr,
    started_at: Timestamp,
    connected_at: Option<Timestamp>,
    handshake_at: Option<Timestamp>,
    last_rx: Timestamp,
    deadline: Timestamp,
    session: Option<Session>,
    bytes_out: u64,
    pex_added: u32,
}

struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

struct Job {
    started_at: Timestamp,
    deadline: Timestamp,
    /// Peers to try first (unknown or known good).
    pending: VecDeque<SocketAddr>,
    /// Peers that failed before (tried after `pending`).
    later: VecDeque<SocketAddr>,
    seen: BTreeSet<SocketAddr>,
    conns: Vec<ConnId>,
    reasons: Vec<(SocketAddr, FailReason)>,
    tried: u32,
    in_runnable: bool,
}

impl Job {
    fn has_pending(&self) -> bool {
        !self.pending.is_empty() || !self.later.is_empty()
    }
}

/// The metadata fetcher. See the module docs.
pub struct Fetcher {
    cfg: FetchConfig,
    session_cfg: SessionConfig,
    peer_id: [u8; 20],
    slots: Vec<Slot>,
    free: Vec<u32>,
    active: usize,
    per_ip: BTreeMap<IpAddr, u32>,
    jobs: BTreeMap<InfoHash, Job>,
    runnable: VecDeque<InfoHash>,
    /// Jobs waiting only on per-IP slots.
    blocked: BTreeSet<InfoHash>,
    /// For each IP at its session cap, the blocked jobs with a peer there: only
    /// those can proceed when that IP frees a slot (waking every blocked job on
    /// every freed slot made scheduling quadratic in the number of jobs).
    blocked_on: BTreeMap<IpAddr, BTreeSet<InfoHash>>,
    timers: BTreeSet<(Timestamp, TimerKey)>,
    out: VecDeque<FetchOutput>,
    cache: PeerCache,
    /// After a local error (our side, not the peer's: EMFILE and the like) no new
    /// connection starts before this time; the back-off doubles while errors
    /// repeat and resets on the next successful connect.
    local_backoff_until: Option<Timestamp>,
    local_backoff: Duration,
    /// The address filter's policy (see [`Fetcher::with_allow_private`]).
    allow_private: bool,
    stats: FetchStats,
}

/// First pause after a local connect error, and the most it grows to.
const LOCAL_BACKOFF_MIN: Duration = Duration::from_millis(250);
const LOCAL_BACKOFF_MAX: Duration = Duration::from_secs(8);

impl Fetcher {
    /// A fetcher with no jobs; `rng` seeds its BEP 20 peer id and its choices.
    pub fn new(cfg: FetchConfig, mut rng: Rng) -> Self {
        // BEP 20 style: -MG0100- then 12 random alphanumerics.
        const ALNUM: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let mut peer_id = *b"-MG0100-000000000000";
        for b in peer_id.iter_mut().skip(8) {
            *b = ALNUM[rng.index(ALNUM.len())];
        }
        let session_cfg = SessionConfig {
            max_metadata_size: cfg.max_metadata_size,
            max_frame: cfg.max_frame,
            request_window: cfg.request_window,
            client_version: cfg.client_version.clone(),
        };
        let cache = PeerCache::new(cfg.peer_cache_size);
        Fetcher {
            cfg,
            session_cfg,
            peer_id,
            slots: Vec::new(),
            free: Vec::new(),
            active: 0,
            per_ip: BTreeMap::new(),
            jobs: BTreeMap::new(),
            runnable: VecDeque::new(),
            blocked: BTreeSet::new(),
            blocked_on: BTreeMap::new(),
            timers: BTreeSet::new(),
            out: VecDeque::new(),
            cache,
            local_backoff_until: None,
            local_backoff: LOCAL_BACKOFF_MIN,
            allow_private: false,
            stats: FetchStats::default(),
        }
    }

    /// Sets the address filter's policy: whether peers at loopback, private,
    /// link-local and similar addresses may be connected to (default: no; the
    /// crawler passes [`crate::Config::allow_private`]). Every peer, from
    /// [`Fetcher::fetch`] or from PEX, passes [`crate::addr::is_sendable`] with
    /// this policy before it is queued; rejected ones count in
    /// [`FetchStats::peers_invalid`].
    pub fn with_allow_private(mut self, allow: bool) -> Self {
        self.allow_private = allow;
        self
    }

    /// Our BEP 3 peer id.
    pub fn peer_id(&self) -> &[u8; 20] {
        &self.peer_id
    }

    /// Starts fetching `ih` from `peers`, or adds peers to a running fetch.
    pub fn fetch(
        &mut self,
        now: Timestamp,
        ih: InfoHash,
        peers: &[SocketAddr],
    ) -> Result<(), ApiMisuse> {
        let peers = self.intake(peers);
        if !self.jobs.contains_key(&ih) {
            if peers.is_empty() {
                return Err(ApiMisuse::Invalid("no usable peers"));
            }
            if self.jobs.len() >= self.cfg.max_jobs {
                self.stats.jobs_rejected_full += 1;
                return Err(ApiMisuse::Full);
            }
            let deadline = now.add(self.cfg.infohash_timeout);
            self.jobs.insert(
                ih,
                Job {
                    started_at: now,
                    deadline,
                    pending: VecDeque::new(),
                    later: VecDeque::new(),
                    seen: BTreeSet::new(),
                    conns: Vec::new(),
                    reasons: Vec::new(),
                    tried: 0,
                    in_runnable: false,
                },
            );
            self.timers.insert((deadline, TimerKey::Job(ih)));
            self.stats.started += 1;
        }
        self.add_peers(ih, &peers);
        self.mark_runnable(ih);
        self.schedule(now);
        self.check_job_exhausted(now, ih);
        Ok(())
    }

    /// Whether `ih` has a fetch job (running or queued).
    pub fn is_fetching(&self, ih: &InfoHash) -> bool {
        self.jobs.contains_key(ih)
    }

    /// Infohashes being fetched or queued.
    pub fn jobs(&self) -> usize {
        self.jobs.len()
    }

    /// Connections in flight.
    pub fn sessions(&self) -> usize {
        self.active
    }

    /// Peers in the capability cache (at most `FetchConfig::peer_cache_size`).
    pub fn peer_cache_len(&self) -> usize {
        self.cache.len()
    }

    /// What the capability cache knows about `peer`.
    pub fn peer_capability(&self, peer: &SocketAddr) -> Option<&PeerCapability> {
        self.cache.get(peer)
    }

    /// The driver connected `conn`: its session starts and sends the handshake.
    /// Stale ids are counted and ignored.
    pub fn handle_connected(&mut self, now: Timestamp, conn: ConnId) {
        let Some(c) = slot_conn(&mut self.slots, conn) else {
            self.stats.stale_conn_events += 1;
            return;
        };
        if c.session.is_some() {
            return;
        }
        let mut s = Session::new(c.ih, &self.peer_id, &self.session_cfg);
        c.connected_at = Some(now);
        self.local_backoff = LOCAL_BACKOFF_MIN;
        c.last_rx = now;
        let bytes = s.take_output();
        c.session = Some(s);
        if let Some(b) = bytes {
            c.bytes_out += b.len() as u64;
            self.stats.bytes_out += b.len() as u64;
            self.out.push_back(FetchOutput::Output(Output::Send {
                conn,
                bytes: Bytes::from(b),
            }));
        }
        self.refresh_deadline(conn);
    }

    /// Bytes the peer sent on `conn`, in any chunking.
    pub fn handle_data(&mut self, now: Timestamp, conn: ConnId, bytes: &[u8]) {
        match self.conn_mut(conn) {
            None => {
                self.stats.stale_conn_events += 1;
                return;
            }
            // Data before "connected": the driver skipped an event; treat the
            // connection as established.
            Some(c) if c.session.is_none() => self.handle_connected(now, conn),
            Some(_) => {}
        }
        let Some(c) = self.conn_mut(conn) else {
            return;
        };
        let Some(s) = c.session.as_mut() else {
            return;
        };
        let progress = s.feed(bytes);
        let reply = s.take_output();
        let pex = s.take_pex();
        let phase = s.phase();
        c.last_rx = now;
        if c.handshake_at.is_none() && phase > crate::session::Phase::Handshake {
            c.handshake_at = Some(now);
        }
        c.pex_added += pex.len() as u32;
        let ih = c.ih;
        self.stats.bytes_in += bytes.len() as u64;
        if let Some(b) = reply {
            if matches!(progress, Progress::Continue) {
                if let Some(c) = self.conn_mut(conn) {
                    c.bytes_out += b.len() as u64;
                }
                self.stats.bytes_out += b.len() as u64;
                self.out.push_back(FetchOutput::Output(Output::Send {
                    conn,
                    bytes: Bytes::from(b),
                }));
            }
        }
        if !pex.is_empty() {
            self.stats.pex_received += pex.len() as u64;
            let pex = self.intake(&pex);
            self.add_peers(ih, &pex);
            self.mark_runnable(ih);
        }
        match progress {
            Progress::Continue => {
                self.refresh_deadline(conn);
            }
            Progress::Failed(r) => {
                self.end_conn(now, conn, SessionOutcome::Failed(r), true);
            }
            Progress::Done(v) => {
                self.on_verified(now, conn, v.raw, v.hash);
            }
        }
        self.schedule(now);
        self.check_job_exhausted(now, ih);
    }

    /// `conn` closed (as the driver saw it): the session ends with a reason from `reason`.
    pub fn handle_closed(&mut self, now: Timestamp, conn: ConnId, reason: CloseReason) {
        let Some(c) = self.conn_mut(conn) else {
            self.stats.stale_conn_events += 1;
            return;
        };
        let ih = c.ih;
        let handshaken = c.handshake_at.is_some();
        let r = match reason {
            CloseReason::Refused => FailReason::ConnectRefused,
            CloseReason::ConnectTimedOut => FailReason::ConnectTimeout,
            CloseReason::LocalError => FailReason::LocalError,
            CloseReason::Eof | CloseReason::Reset if c.connected_at.is_none() => {
                FailReason::ConnectRefused
            }
            CloseReason::Eof | CloseReason::Reset if handshaken => FailReason::ClosedMidTransfer,
            CloseReason::Eof | CloseReason::Reset => FailReason::ClosedBeforeHandshake,
        };
        self.end_conn(now, conn, SessionOutcome::Failed(r), false);
        self.schedule(now);
        self.check_job_exhausted(now, ih);
    }

    /// Fires every deadline due at `now`: connection (connect, idle, peer), infohash
    /// and the end of a local back-off.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while let Some(&(t, key)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.remove(&(t, key));
            match key {
                TimerKey::Job(ih) => self.job_timed_out(now, ih),
                // `schedule` below resumes connecting.
                TimerKey::Resume => {}
                TimerKey::Conn(index, generation) => {
                    let id = ConnId { index, generation };
                    let idle = self.cfg.idle_timeout;
                    let Some(c) = self.conn_mut(id) else { continue };
                    let r = if c.session.is_none() {
                        FailReason::ConnectTimeout
                    } else if c.last_rx.add(idle) <= now {
                        FailReason::IdleTimeout
                    } else {
                        FailReason::PeerTimeout
                    };
                    let ih = c.ih;
                    self.end_conn(now, id, SessionOutcome::Failed(r), true);
                    self.schedule(now);
                    self.check_job_exhausted(now, ih);
                }
            }
        }
        self.schedule(now);
    }

    /// Connect, Send, Close and Event outputs only; `None` when drained. A
    /// failed fetch comes out as a `MetadataFailed` that nobody manages
    /// ([`AfterFailure::NotManaged`]); an owner that decides what happens next
    /// reads [`Fetcher::poll_outcome`] instead.
    #[must_use = "an output taken is gone: carry it out"]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front().map(|o| match o {
            FetchOutput::Output(o) => o,
            FetchOutput::Failed(f) => Output::Event(Event::MetadataFailed(Box::new(
                f.into_event(AfterFailure::NotManaged),
            ))),
        })
    }

    /// The next output, with a failed fetch as a [`FetchFailure`] from which
    /// the owner builds the `MetadataFailed` event; `None` when drained.
    #[must_use = "an output taken is gone: carry it out"]
    pub fn poll_outcome(&mut self) -> Option<FetchOutput> {
        self.out.pop_front()
    }

    /// The earliest pending deadline, if any: call [`Fetcher::handle_timeout`] then.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// The fetcher's counters.
    pub fn stats(&self) -> &FetchStats {
        &self.stats
    }

    // ---- internals ----

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        slot_conn(&mut self.slots, id)
    }

    fn mark_runnable(&mut self, ih: InfoHash) {
        if let Some(job) = self.jobs.get_mut(&ih) {
            if !job.in_runnable && job.has_pending() {
                job.in_runnable = true;
                self.runnable.push_back(ih);
            }
        }
    }

    /// The fetcher's peer intake, the one place where peer addresses enter it
    /// (API and PEX): canonical form, then the address filter; rejected ones are
    /// counted.
    fn intake(&mut self, peers: &[SocketAddr]) -> Vec<SocketAddr> {
        let mut ok = Vec::with_capacity(peers.len());
        for &p in peers {
            let p = canonical(p);
            if is_sendable(&p, self.allow_private) {
                ok.push(p);
            } else {
                self.stats.peers_invalid += 1;
            }
        }
        ok
    }

    /// Queues peers that passed [`Fetcher::intake`].
    fn add_peers(&mut self, ih: InfoHash, peers: &[SocketAddr]) {
        let cap = self.cfg.max_peers_per_infohash;
        for &p in peers {
            let Some(job) = self.jobs.get_mut(&ih) else {
                return;
            };
            if job.seen.contains(&p) {
                self.stats.peers_duplicate += 1;
                continue;
            }
            if job.seen.len() >= cap {
                self.stats.peers_dropped_cap += 1;
                continue;
            }
            job.seen.insert(p);
            self.stats.peers_added += 1;
            match self.cache.get(&p) {
                Some(c) if c.ut_metadata == Some(false) => {
                    self.stats.peers_skipped_cache += 1;
                    job.reasons.push((p, FailReason::KnownNoMetadata));
                }
                Some(c) if c.successes > 0 => job.pending.push_front(p),
                Some(c) if c.last_failure.is_some() => job.later.push_back(p),
                _ => job.pending.push_back(p),
            }
        }
    }

    /// Starts sessions while capacity allows.
    fn schedule(&mut self, now: Timestamp) {
        if let Some(until) = self.local_backoff_until {
            if now < until {
                return;
            }
            self.local_backoff_until = None;
        }
        while self.active < self.cfg.max_sessions {
            let Some(ih) = self.runnable.pop_front() else {
                break;
            };
            if let Some(job) = self.jobs.get_mut(&ih) {
                job.in_runnable = false;
            }
            self.start_for(now, ih);
        }
    }

    fn start_for(&mut self, now: Timestamp, ih: InfoHash) {
        loop {
            let per_ip_cap = self.cfg.max_sessions_per_ip as u32;
            let at_global = self.active >= self.cfg.max_sessions;
            let Some(job) = self.jobs.get_mut(&ih) else {
                return;
            };
            if job.conns.len() >= self.cfg.peers_per_infohash || !job.has_pending() {
                return;
            }
            if at_global {
                // Resume this job first when capacity frees up.
                job.in_runnable = true;
                self.runnable.push_front(ih);
                return;
            }
            let per_ip = &self.per_ip;
            let free = |p: &SocketAddr| per_ip.get(&p.ip()).copied().unwrap_or(0) < per_ip_cap;
            let peer = if let Some(i) = job.pending.iter().position(free) {
                job.pending.remove(i)
            } else if let Some(i) = job.later.iter().position(free) {
                job.later.remove(i)
            } else {
                None
            };
            let Some(peer) = peer else {
                for p in job.pending.iter().chain(job.later.iter()) {
                    self.blocked_on.entry(p.ip()).or_default().insert(ih);
                }
                self.blocked.insert(ih);
                return;
            };
            job.tried += 1;
            self.open_conn(now, ih, peer);
        }
    }

    fn open_conn(&mut self, now: Timestamp, ih: InfoHash, peer: SocketAddr) {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    conn: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return;
        };
        let id = ConnId {
            index,
            generation: slot.generation,
        };
        let deadline = now.add(self.cfg.connect_timeout);
        slot.conn = Some(Conn {
            id,
            ih,
            peer,
            started_at: now,
            connected_at: None,
            handshake_at: None,
            last_rx: now,
            deadline,
            session: None,
            bytes_out: 0,
            pex_added: 0,
        });
        self.timers
            .insert((deadline, TimerKey::Conn(id.index, id.generation)));
        *self.per_ip.entry(peer.ip()).or_insert(0) += 1;
        self.active += 1;
        if let Some(job) = self.jobs.get_mut(&ih) {
            job.conns.push(id);
        }
        self.stats.sessions_started += 1;
        self.out
            .push_back(FetchOutput::Output(Output::Connect { conn: id, to: peer }));
    }

    fn refresh_deadline(&mut self, id: ConnId) {
        let (peer_t, idle_t) = (self.cfg.peer_timeout, self.cfg.idle_timeout);
        let Some(c) = self.conn_mut(id) else {
            return;
        };
        let new = c.started_at.add(peer_t).min(c.last_rx.add(idle_t));
        let old = c.deadline;
        if new == old {
            return;
        }
        c.deadline = new;
        let key = TimerKey::Conn(id.index, id.generation);
        self.timers.remove(&(old, key));
        self.timers.insert((new, key));
    }

    /// Removes a connection, reports it, and updates its job and the cache.
    fn end_conn(&mut self, now: Timestamp, id: ConnId, outcome: SessionOutcome, close: bool) {
        let Some(slot) = self.slots.get_mut(id.index as usize) else {
            return;
        };
        if slot.generation != id.generation {
            return;
        }
        let Some(c) = slot.conn.take() else {
            return;
        };
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
        self.timers
            .remove(&(c.deadline, TimerKey::Conn(id.index, id.generation)));
        self.active = self.active.saturating_sub(1);
        let ip = c.peer.ip();
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
            // A per-IP slot freed: jobs blocked on this IP may proceed.
            if let Some(b) = self.blocked_on.remove(&ip) {
                for ih in b {
                    if self.blocked.remove(&ih) {
                        self.mark_runnable(ih);
                    }
                }
            }
        }
        if close {
            self.out
                .push_back(FetchOutput::Output(Output::Close { conn: id }));
        }
        let info: PeerInfo = c
            .session
            .as_ref()
            .map(|s| s.peer_info().clone())
            .unwrap_or_default();
        let (pieces, bytes_in) = c
            .session
            .as_ref()
            .map(|s| (s.pieces(), s.bytes_in()))
            .unwrap_or((0, 0));
        self.stats.pieces_received += u64::from(pieces);
        match outcome {
            SessionOutcome::Ok => self.stats.sessions_ok += 1,
            SessionOutcome::Cancelled => self.stats.sessions_cancelled += 1,
            SessionOutcome::Failed(r) => {
                self.stats.sessions_failed += 1;
                *self.stats.failures.entry(r).or_insert(0) += 1;
                tracing::debug!(peer = %c.peer, ih = %c.ih, reason = ?r, "metadata session failed");
            }
        }
        let local = outcome == SessionOutcome::Failed(FailReason::LocalError);
        if local {
            // Not the peer's fault: keep its record clean, put it back first in
            // line, and pause new connects for a while.
            self.stats.local_backoffs += 1;
            let until = now.add(self.local_backoff);
            self.local_backoff = (self.local_backoff * 2).min(LOCAL_BACKOFF_MAX);
            if self.local_backoff_until.is_none_or(|t| t < until) {
                self.local_backoff_until = Some(until);
                self.timers.insert((until, TimerKey::Resume));
            }
        } else {
            self.cache_update(c.peer, &info, outcome);
        }
        if let Some(job) = self.jobs.get_mut(&c.ih) {
            job.conns.retain(|x| *x != id);
            if local {
                job.pending.push_front(c.peer);
                job.tried = job.tried.saturating_sub(1);
            } else if let SessionOutcome::Failed(r) = outcome {
                job.reasons.push((c.peer, r));
            }
        }
        self.mark_runnable(c.ih);
        let report = PeerSessionReport {
            info_hash: c.ih,
            peer: c.peer,
            conn: c.id,
            started_at: c.started_at,
            duration: now.since(c.started_at),
            outcome,
            connect_time: c.connected_at.map(|t| t.since(c.started_at)),
            rtt: match (c.connected_at, c.handshake_at) {
                (Some(a), Some(b)) => Some(b.since(a)),
                _ => None,
            },
            pieces,
            bytes_in,
            bytes_out: c.bytes_out,
            client: info.client,
            version: info.version,
            peer_id: info.peer_id,
            ut_metadata: info.ut_metadata,
            ut_pex: info.ut_pex,
            metadata_size: info.metadata_size,
            fast: info.fast,
            dht: info.dht,
            yourip: info.yourip,
            listen_port: info.listen_port,
            reqq: info.reqq,
            pex_added: c.pex_added,
        };
        self.out
            .push_back(FetchOutput::Output(Output::Event(Event::PeerSession(
                Box::new(report),
            ))));
    }

    fn cache_update(&mut self, peer: SocketAddr, info: &PeerInfo, outcome: SessionOutcome) {
        if self.cache.update(peer, info, outcome) {
            self.stats.cache_evictions += 1;
        }
    }

    fn on_verified(&mut self, now: Timestamp, id: ConnId, raw: Vec<u8>, hash: HashKind) {
        let Some(c) = self.conn_mut(id) else {
            return;
        };
        let (ih, peer) = (c.ih, c.peer);
        let (client, pieces) = c
            .session
            .as_ref()
            .map(|s| (s.peer_info().best_client().map(str::to_owned), s.pieces()))
            .unwrap_or((None, 0));
        if hash == HashKind::Sha256Truncated {
            self.stats.v2_hash_matches += 1;
        }
        match metadata::parse_info(&raw) {
            Ok(info) => {
                self.end_conn(now, id, SessionOutcome::Ok, true);
                let Some(job) = self.jobs.get(&ih) else {
                    return;
                };
                let ev = MetadataFetched {
                    info_hash: ih,
                    info,
                    raw: Bytes::from(raw),
                    peer,
                    client,
                    hash,
                    elapsed: now.since(job.started_at),
                    pieces,
                    peers_tried: job.tried,
                };
                self.stats.fetched += 1;
                self.finish_job(now, ih);
                self.out
                    .push_back(FetchOutput::Output(Output::Event(Event::MetadataFetched(
                        Box::new(ev),
                    ))));
            }
            Err(e) => {
                // The bytes are authoritative (they hash to the infohash): no other
                // peer can do better.
                self.end_conn(
                    now,
                    id,
                    SessionOutcome::Failed(FailReason::InvalidInfo(e)),
                    true,
                );
                self.fail_job(now, ih, Some(e), false);
            }
        }
    }

    /// Removes a job, cancelling its sessions. Returns it.
    fn finish_job(&mut self, now: Timestamp, ih: InfoHash) -> Option<Job> {
        let conns = self.jobs.get(&ih).map(|j| j.conns.clone())?;
        for id in conns {
            self.end_conn(now, id, SessionOutcome::Cancelled, true);
        }
        let job = self.jobs.remove(&ih)?;
        self.timers.remove(&(job.deadline, TimerKey::Job(ih)));
        self.blocked.remove(&ih);
        Some(job)
    }

    fn fail_job(
        &mut self,
        now: Timestamp,
        ih: InfoHash,
        info_error: Option<InfoError>,
        timed_out: bool,
    ) {
        if timed_out {
            if let Some(job) = self.jobs.get(&ih) {
                let running = job.conns.clone();
                for id in running {
                    self.end_conn(
                        now,
                        id,
                        SessionOutcome::Failed(FailReason::InfohashTimeout),
                        true,
                    );
                }
            }
        }
        let was_blocked = self.blocked.contains(&ih);
        let Some(mut job) = self.finish_job(now, ih) else {
            return;
        };
        let untried = if was_blocked {
            FailReason::PeerLimit
        } else {
            FailReason::NotTried
        };
        for p in job.pending.drain(..).chain(job.later.drain(..)) {
            job.reasons.push((p, untried));
        }
        self.stats.failed += 1;
        if timed_out {
            self.stats.jobs_timed_out += 1;
        }
        let failure = FetchFailure {
            info_hash: ih,
            reasons: job.reasons,
            elapsed: now.since(job.started_at),
            peers_tried: job.tried,
            info_error,
            timed_out,
        };
        self.out.push_back(FetchOutput::Failed(Box::new(failure)));
    }

    fn job_timed_out(&mut self, now: Timestamp, ih: InfoHash) {
        self.fail_job(now, ih, None, true);
    }

    /// Fails a job that has nothing running and nothing left to try.
    fn check_job_exhausted(&mut self, now: Timestamp, ih: InfoHash) {
        let exhausted = match self.jobs.get(&ih) {
            Some(j) => j.conns.is_empty() && !j.has_pending(),
            None => false,
        };
        if exhausted {
            self.fail_job(now, ih, None, false);
        }
    }
}

fn slot_conn(slots: &mut [Slot], id: ConnId) -> Option<&mut Conn> {
    let slot = slots.get_mut(id.index as usize)?;
    if slot.generation != id.generation {
        return None;
    }
    slot.conn.as_mut()
}
