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
mod link;
mod recontact;
mod report;
mod stream;

use crate::mse::{MseConfig, MseError};
use crate::session::{PeerInfo, Progress, Session, SessionConfig};
use crate::time::Timestamp;
use crate::{ApiMisuse, CloseReason, ConnId, Event, Output, SocketId};
use cache::PeerCache;
pub use link::{UtpLink, MAX_WAITING as MAX_UTP_WAITING};
use recontact::Recontact;
pub use recontact::{RECONTACT_MAX, RECONTACT_PER_PEER, RECONTACT_TTL};
pub use report::{
    AfterFailure, Encryption, EncryptionPolicy, EncryptionStats, FetchConfig, FetchFailure,
    FetchOutput, FetchStats, HolepunchStats, MetadataFailed, MetadataFetched, PeerCapability,
    PeerSessionReport, SessionOutcome, Transport, TransportChoice, TransportStats, WireMode,
};
use stream::Stream;

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Conn(u32, u32),
    Job(InfoHash),
    /// The end of a local back-off (see `Fetcher::local_backoff_until`).
    Resume,
    /// The Diffie-Hellman budget has room again (see `Fetcher::dh_queue`).
    DhResume,
    /// A job's holepunch redial is due, or its wait for the target ends
    /// (`Job::hp_redial`, `Job::hp_await`).
    Holepunch(InfoHash),
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
    /// The byte-stream layer between the transport and the session.
    stream: Stream,
    mode: WireMode,
    /// This attempt is the one retry the other way.
    retry: bool,
    /// TCP or uTP.
    transport: Transport,
    /// This attempt is the one retry over the other transport.
    transport_retry: bool,
    /// Why it runs over `transport`.
    choice: TransportChoice,
    /// Connected, waiting for the Diffie-Hellman budget.
    dh_wait: bool,
    /// A uTP attempt that a relay's BEP 55 `connect` started.
    holepunch: bool,
    /// The session is a relay only (counted once).
    relay: bool,
    /// The other candidate stream to the same peer when a uTP SYN crossed
    /// (see [`Fetcher::adopt_crossed`]): while it lives, this one ending
    /// without metadata is no verdict on the peer.
    sibling: Option<ConnId>,
    /// Raw bytes received from the transport.
    raw_in: u64,
    bytes_out: u64,
    pex_added: u32,
}

/// The one retry the other way (plaintext / MSE) after a refusal: over the
/// transport that was refused, which did connect (a TCP connect would waste an
/// attempt on a peer whose uTP stream just carried the refusal), for the same
/// reason it was chosen, and without a second transport fallback when the
/// refused attempt was one.
#[derive(Copy, Clone, Debug)]
struct ModeRetry {
    mode: WireMode,
    transport: Transport,
    choice: TransportChoice,
    transport_retry: bool,
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
    /// Peers to retry the other way (plaintext / MSE) once.
    retry_mode: BTreeMap<SocketAddr, ModeRetry>,
    /// Peers that PEX flagged as preferring encryption (a subset of `seen`).
    prefers_encryption: BTreeSet<SocketAddr>,
    /// Peers to retry over the other transport once.
    retry_transport: BTreeMap<SocketAddr, Transport>,
    /// Peers that PEX flagged as uTP and not reachable (a subset of `seen`).
    pex_utp: BTreeSet<SocketAddr>,
    /// Peers a connected peer's PEX flagged as holepunch-capable and not
    /// reachable (0x08 without 0x10): TCP first, then straight to a relay.
    pex_holepunch: BTreeSet<SocketAddr>,
    /// BEP 55: peers no direct attempt reached, waiting for a relay (each
    /// peer once per job; see `hp_known`).
    hp_candidates: VecDeque<SocketAddr>,
    hp_known: BTreeSet<SocketAddr>,
    /// Rendezvous sent, by target, and the relay asked.
    hp_pending: BTreeMap<SocketAddr, ConnId>,
    /// Targets a relay answered `connect` for: their next attempt is the
    /// holepunch.
    hp_go: BTreeSet<SocketAddr>,
    /// Rendezvous sent for this job (at most `MAX_RENDEZVOUS_PER_JOB`).
    hp_asked: u32,
    /// Targets a relay introduced us to, and until when their own uTP
    /// connection to us is welcome (`HP_AWAIT` after our last attempt to
    /// them ended): the job stays open meanwhile.
    hp_await: BTreeMap<SocketAddr, Timestamp>,
    /// Holepunch redials: when the next is due, how many this target had so
    /// far (at most `HP_REDIALS`), and in which mode (the first attempt's).
    hp_redial: BTreeMap<SocketAddr, (Option<Timestamp>, u32, WireMode)>,
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
    /// Private keys and pads of MSE handshakes (a child stream).
    mse_rng: Rng,
    mse_cfg: MseConfig,
    /// The Diffie-Hellman budget: handshakes available, in billionths.
    dh_tokens: u64,
    dh_refilled: Timestamp,
    /// Connections waiting for the budget (each at most once; bounded by
    /// `max_sessions`).
    dh_queue: VecDeque<ConnId>,
    /// Whether the owner runs uTP ([`Fetcher::with_utp`]).
    utp: bool,
    /// Peers heard over UDP: the socket and the time (the connection strategy;
    /// at most `UDP_CONTACTS_MAX`, oldest forgotten first).
    udp_contacts: BTreeMap<SocketAddr, (SocketId, Timestamp)>,
    udp_order: BTreeSet<(Timestamp, SocketAddr)>,
    /// Peers whose transport nobody knows yet, and the job that is finding
    /// out (its attempts, retries and fallback in flight): other jobs wait
    /// for what it learns instead of paying the same failed connects (a
    /// uTP-only peer costs one job's TCP attempts per session, not every
    /// job's). Cleared when a handshake gets through (the cache learns the
    /// transport at once) or the job is done with the peer.
    probing: BTreeMap<SocketAddr, InfoHash>,
    /// Peers no direct attempt reached, retried when they next send us a
    /// datagram (see `recontact`).
    recontact: Recontact,
    stats: FetchStats,
}

/// Peers heard over UDP remembered at most.
const UDP_CONTACTS_MAX: usize = 4096;
/// How long a datagram from a peer counts as an open path to it (a NAT keeps
/// a UDP mapping for a minute or more after the peer's last packet).
const UDP_CONTACT_TTL: Duration = Duration::from_secs(120);

/// Most BEP 55 rendezvous one fetch job sends (each to one relay, for one
/// target that no direct attempt reached).
pub const MAX_RENDEZVOUS_PER_JOB: u32 = 8;

/// How long after a holepunch attempt to a target ends its own uTP
/// connection to us is still adopted (it dials us too, and keeps dialling:
/// libtorrent retries a peer it failed to reach), and the job kept open for it.
const HP_AWAIT: Duration = Duration::from_secs(20);
/// Redials of a holepunch target whose stream ended before the BitTorrent
/// handshake, per job: over the mapping the punch opened, after
/// `HP_REDIAL_FIRST`, doubling. A target with its own connection to us still
/// pending keeps one of the two and may drop ours (libtorrent compares
/// ports, or picks at random); once its attempt is over, ours has no rival.
const HP_REDIALS: u32 = 4;
const HP_REDIAL_FIRST: Duration = Duration::from_secs(2);

/// One MSE handshake in the budget's units.
const DH_UNIT: u64 = 1_000_000_000;

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
        let dh_tokens = u64::from(cfg.max_dh_per_sec).saturating_mul(DH_UNIT);
        let mse_rng = rng.child(0x004d_5345);
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
            mse_rng,
            mse_cfg: MseConfig::default(),
            dh_tokens,
            dh_refilled: Timestamp::ZERO,
            dh_queue: VecDeque::new(),
            utp: false,
            udp_contacts: BTreeMap::new(),
            udp_order: BTreeSet::new(),
            probing: BTreeMap::new(),
            recontact: Recontact::default(),
            stats: FetchStats::default(),
        }
    }

    /// Lets the fetcher open uTP streams (default: TCP only). Its owner then
    /// reads [`Fetcher::poll_outcome`], opens a stream for each
    /// [`FetchOutput::UtpConnect`] and routes that connection's `Send` and
    /// `Close` to it ([`UtpLink`] does all of that with a [`crate::utp::Utp`]).
    ///
    /// The strategy, per peer: the transport that worked before (capability
    /// cache); else uTP first from the socket a peer talked to us on (a
    /// datagram from that address within the last two minutes, see
    /// [`Fetcher::note_udp_contact`]) or for a peer that PEX flags as uTP and
    /// not reachable; else TCP first. A connect refused or timed out is tried
    /// once over the other transport.
    pub fn with_utp(mut self, on: bool) -> Self {
        self.utp = on;
        self
    }

    /// A valid datagram came from `from` on socket `local` (a DHT query or
    /// reply, a uTP packet): a uTP stream from that socket to that address
    /// passes the peer's NAT for a while.
    pub fn note_udp_contact(&mut self, now: Timestamp, from: SocketAddr, local: SocketId) {
        if !self.utp {
            return;
        }
        let from = canonical(from);
        if let Some((_, t)) = self.udp_contacts.insert(from, (local, now)) {
            self.udp_order.remove(&(t, from));
        } else if self.udp_contacts.len() > UDP_CONTACTS_MAX {
            if let Some((_, old)) = self.udp_order.pop_first() {
                self.udp_contacts.remove(&old);
                self.stats.transport.udp_contacts_evicted += 1;
            }
        }
        self.udp_order.insert((now, from));
        self.stats.transport.udp_contacts = self.udp_contacts.len();
        self.recontacted(now, from);
    }

    /// The socket `peer` talked to us on recently, if it did.
    fn udp_contact(&self, now: Timestamp, peer: &SocketAddr) -> Option<SocketId> {
        let (local, t) = self.udp_contacts.get(peer)?;
        (now.since(*t) <= UDP_CONTACT_TTL).then_some(*local)
    }

    /// The first transport for `peer` (see [`Fetcher::with_utp`]).
    fn first_transport(
        &self,
        now: Timestamp,
        peer: &SocketAddr,
        pex_utp: bool,
    ) -> (Transport, TransportChoice) {
        if !self.utp {
            return (Transport::Tcp, TransportChoice::Default);
        }
        if let Some(t) = self.cache.get(peer).and_then(|c| c.transport) {
            return (t, TransportChoice::Remembered);
        }
        if self.udp_contact(now, peer).is_some() {
            (Transport::Utp, TransportChoice::UdpContact)
        } else if pex_utp {
            (Transport::Utp, TransportChoice::PexUtp)
        } else {
            (Transport::Tcp, TransportChoice::Default)
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
        // A job a peer's contact started is the owner's from now on.
        self.recontact.jobs.remove(&ih);
        self.start_fetch(now, ih, peers)
    }

    fn start_fetch(
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
                    retry_mode: BTreeMap::new(),
                    prefers_encryption: BTreeSet::new(),
                    retry_transport: BTreeMap::new(),
                    pex_utp: BTreeSet::new(),
                    pex_holepunch: BTreeSet::new(),
                    hp_candidates: VecDeque::new(),
                    hp_known: BTreeSet::new(),
                    hp_pending: BTreeMap::new(),
                    hp_go: BTreeSet::new(),
                    hp_asked: 0,
                    hp_await: BTreeMap::new(),
                    hp_redial: BTreeMap::new(),
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

    /// The driver connected `conn`: its session starts and sends the handshake
    /// (in clear, or MSE's first message when the Diffie-Hellman budget allows;
    /// else the connection waits for it). Stale ids are counted and ignored.
    pub fn handle_connected(&mut self, now: Timestamp, conn: ConnId) {
        let Some(c) = slot_conn(&mut self.slots, conn) else {
            self.stats.stale_conn_events += 1;
            return;
        };
        if c.session.is_some() || c.dh_wait {
            return;
        }
        c.connected_at = Some(now);
        c.last_rx = now;
        *self
            .stats
            .transport
            .connected
            .entry(c.transport)
            .or_insert(0) += 1;
        self.local_backoff = LOCAL_BACKOFF_MIN;
        let mode = c.mode;
        if mode == WireMode::Encrypted && !self.dh_take(now) {
            if let Some(c) = self.conn_mut(conn) {
                c.dh_wait = true;
            }
            self.stats.encryption.dh_deferred += 1;
            self.dh_queue.push_back(conn);
            self.refresh_deadline(conn);
            // Sets the timer for when the budget has room.
            self.run_dh_queue(now);
            return;
        }
        self.start_session(conn);
    }

    /// A peer's uTP SYN crossed our own dialling (see
    /// [`crate::utp::UtpEvent::Crossed`]: a BEP 55 holepunch dials from both
    /// ends at once) and the uTP manager accepted it as a stream. Returns the
    /// connection id for that stream, or `None` (the caller aborts it).
    ///
    /// - With `attempt`, our uTP connection to that peer still in flight
    ///   (half-open, or a holepunch at any stage) and not paired yet: a
    ///   second session for the same job and peer. The peer keeps one of the
    ///   two connections and drops the other (libtorrent closes one of two
    ///   with the same endpoint or peer id, comparing ports or ids, or at
    ///   random), so both run until one delivers the metadata; the one that
    ///   ends first without it while the other lives is counted
    ///   (`HolepunchStats::crossed_lost`) and is no verdict on the peer (no
    ///   retry, no cache entry, no failure reason).
    /// - Otherwise, from a holepunch target a running job still waits for
    ///   (`HP_AWAIT` after our last attempt to it ended): a holepunch session
    ///   of that job.
    ///
    /// The peer speaks first on its own connection, so the session is in
    /// clear unless the policy requires encryption.
    pub fn adopt_crossed(
        &mut self,
        now: Timestamp,
        attempt: Option<ConnId>,
        from: SocketAddr,
    ) -> Option<ConnId> {
        let from = canonical(from);
        let pair = attempt.and_then(|a| {
            let c = self.slots.get(a.index as usize)?.conn.as_ref()?;
            let sibling_live = c.sibling.is_some_and(|s| self.is_live(s));
            (c.id == a
                && c.transport == Transport::Utp
                && (c.holepunch || c.connected_at.is_none())
                && !sibling_live)
                .then_some((c.ih, c.peer, c.holepunch, c.choice, a))
        });
        let (ih, peer, holepunch, choice, sibling) = match pair {
            Some((ih, peer, hp, choice, a)) => (ih, peer, hp, choice, Some(a)),
            None => {
                let ih = self
                    .jobs
                    .iter()
                    .find(|(_, j)| j.hp_await.get(&from).is_some_and(|t| *t >= now))
                    .map(|(ih, _)| *ih)?;
                (ih, from, true, TransportChoice::Holepunch, None)
            }
        };
        let mode = if self.cfg.encryption == EncryptionPolicy::Require {
            WireMode::Encrypted
        } else {
            WireMode::Plaintext
        };
        let id = self.new_conn(now, ih, peer, (Transport::Utp, choice, mode))?;
        if let Some(c) = slot_conn(&mut self.slots, id) {
            // The peer's own connection: a refusal on it says nothing about
            // encryption, and no other transport is tried after it.
            c.retry = true;
            c.transport_retry = true;
            c.holepunch = holepunch;
            c.sibling = sibling;
        }
        if let Some(a) = sibling.and_then(|a| slot_conn(&mut self.slots, a)) {
            a.sibling = Some(id);
        }
        self.stats.holepunch.crossed += 1;
        if holepunch {
            self.stats.holepunch.attempts += 1;
        }
        let ts = &mut self.stats.transport;
        *ts.attempts.entry(Transport::Utp).or_insert(0) += 1;
        *ts.chosen.entry((Transport::Utp, choice)).or_insert(0) += 1;
        match mode {
            WireMode::Plaintext => self.stats.encryption.plaintext_attempts += 1,
            WireMode::Encrypted => self.stats.encryption.encrypted_attempts += 1,
        }
        tracing::debug!(%peer, %ih, paired = sibling.is_some(), "holepunch: the peer's own uTP connection adopted");
        Some(id)
    }

    /// Creates the session and its stream, and sends their first bytes.
    fn start_session(&mut self, conn: ConnId) {
        let (peer_id, session_cfg, mse_cfg) = (&self.peer_id, &self.session_cfg, &self.mse_cfg);
        let Some(c) = slot_conn(&mut self.slots, conn) else {
            return;
        };
        c.dh_wait = false;
        let mut s = Session::new(c.ih, peer_id, session_cfg);
        c.stream = Stream::new(c.mode, mse_cfg, c.ih.0, &mut self.mse_rng);
        let hello = s.take_output().unwrap_or_default();
        c.session = Some(s);
        // MSE queues the handshake: it always fits.
        let bytes: Vec<u8> = c.stream.send(hello).unwrap_or_default();
        if !bytes.is_empty() {
            c.bytes_out += bytes.len() as u64;
            self.stats.bytes_out += bytes.len() as u64;
            self.out.push_back(FetchOutput::Output(Output::Send {
                conn,
                bytes: Bytes::from(bytes),
            }));
        }
        self.refresh_deadline(conn);
    }

    /// Takes one MSE handshake from the budget if it has one (refilled at
    /// `max_dh_per_sec`, holding one second's worth; 0 means no cap).
    fn dh_take(&mut self, now: Timestamp) -> bool {
        let rate = u64::from(self.cfg.max_dh_per_sec);
        if rate == 0 {
            return true;
        }
        let cap = rate.saturating_mul(DH_UNIT);
        let elapsed = now.since(self.dh_refilled).as_nanos();
        let elapsed = u64::try_from(elapsed).unwrap_or(u64::MAX);
        self.dh_tokens = self
            .dh_tokens
            .saturating_add(elapsed.saturating_mul(rate))
            .min(cap);
        self.dh_refilled = self.dh_refilled.max(now);
        if self.dh_tokens >= DH_UNIT {
            self.dh_tokens -= DH_UNIT;
            true
        } else {
            false
        }
    }

    /// Starts the connections waiting for the budget, as far as it allows, and
    /// sets a timer for the rest.
    fn run_dh_queue(&mut self, now: Timestamp) {
        while let Some(&id) = self.dh_queue.front() {
            let waiting = matches!(self.conn_mut(id), Some(c) if c.dh_wait);
            if !waiting {
                self.dh_queue.pop_front();
                continue;
            }
            if !self.dh_take(now) {
                let rate = u64::from(self.cfg.max_dh_per_sec).max(1);
                let missing = DH_UNIT.saturating_sub(self.dh_tokens);
                let wait = Duration::from_nanos(missing.div_ceil(rate).max(1));
                self.timers.insert((now.add(wait), TimerKey::DhResume));
                return;
            }
            self.dh_queue.pop_front();
            self.start_session(id);
        }
    }

    /// Bytes the peer sent on `conn`, in any chunking: through the stream
    /// layer (MSE or pass-through) to the session.
    pub fn handle_data(&mut self, now: Timestamp, conn: ConnId, bytes: &[u8]) {
        match self.conn_mut(conn) {
            None => {
                self.stats.stale_conn_events += 1;
                return;
            }
            // Data before "connected": the driver skipped an event; treat the
            // connection as established.
            Some(c) if c.session.is_none() && !c.dh_wait => self.handle_connected(now, conn),
            Some(_) => {}
        }
        self.stats.bytes_in += bytes.len() as u64;
        let Some(c) = self.conn_mut(conn) else {
            return;
        };
        c.last_rx = now;
        c.raw_in += bytes.len() as u64;
        // A peer that speaks while we wait for the budget: its bytes can only be
        // MSE's answer to a message we have not sent; they are dropped.
        if c.dh_wait {
            return;
        }
        let Conn {
            session, stream, ..
        } = c;
        let Some(s) = session.as_mut() else {
            return;
        };
        let was_handshaking = stream.handshaking();
        let payload = match stream.receive(bytes) {
            Ok(p) => p,
            Err(e) => {
                let ih = c.ih;
                self.end_conn(now, conn, SessionOutcome::Failed(mse_reason(e)), true);
                self.schedule(now);
                self.check_job_exhausted(now, ih);
                return;
            }
        };
        let mut wire = stream.take_output();
        let established = was_handshaking && !stream.handshaking();
        let enc = stream.encryption();
        let progress = if payload.is_empty() {
            Progress::Continue
        } else {
            s.feed(&payload)
        };
        let reply = s.take_output();
        let pex = s.take_pex();
        let pex_enc = s.take_pex_prefers_encryption();
        let pex_utp = s.take_pex_utp();
        let pex_hp = s.take_pex_holepunch();
        let hp_msgs = s.take_holepunch();
        let phase = s.phase();
        let new_relay = phase == crate::session::Phase::Relay && !c.relay;
        if new_relay {
            c.relay = true;
        }
        if let (Some(b), Progress::Continue) = (reply, &progress) {
            match stream.send(b) {
                Ok(w) => wire.extend_from_slice(&w),
                Err(e) => {
                    let ih = c.ih;
                    self.end_conn(now, conn, SessionOutcome::Failed(mse_reason(e)), true);
                    self.schedule(now);
                    self.check_job_exhausted(now, ih);
                    return;
                }
            }
        }
        let first_handshake = c.handshake_at.is_none() && phase > crate::session::Phase::Handshake;
        if first_handshake {
            c.handshake_at = Some(now);
        }
        let learned = first_handshake.then(|| (c.peer, c.transport, c.stream.encryption()));
        c.pex_added += pex.len() as u32;
        let (ih, mode) = (c.ih, c.mode);
        if !wire.is_empty() {
            c.bytes_out += wire.len() as u64;
        }
        if established {
            let e = &mut self.stats.encryption;
            e.encrypted_ok += 1;
            match enc {
                Encryption::Rc4 => e.selected_rc4 += 1,
                _ => e.selected_plaintext += 1,
            }
        }
        if first_handshake && mode == WireMode::Plaintext {
            self.stats.encryption.plaintext_ok += 1;
        }
        if let Some((peer, transport, enc)) = learned {
            self.learn_transport(peer, transport, enc);
        }
        if !wire.is_empty() {
            self.stats.bytes_out += wire.len() as u64;
            self.out.push_back(FetchOutput::Output(Output::Send {
                conn,
                bytes: Bytes::from(wire),
            }));
        }
        if !pex.is_empty() {
            self.stats.pex_received += pex.len() as u64;
            let pex = self.intake(&pex);
            self.add_peers(ih, &pex);
            if let Some(job) = self.jobs.get_mut(&ih) {
                for p in pex_enc {
                    let p = canonical(p);
                    if job.seen.contains(&p) {
                        job.prefers_encryption.insert(p);
                    }
                }
                for p in pex_utp {
                    let p = canonical(p);
                    if job.seen.contains(&p) {
                        job.pex_utp.insert(p);
                    }
                }
                for p in pex_hp {
                    let p = canonical(p);
                    if job.seen.contains(&p) {
                        job.pex_holepunch.insert(p);
                    }
                }
            }
            self.mark_runnable(ih);
        }
        if new_relay {
            self.stats.holepunch.relay_sessions += 1;
        }
        self.on_holepunch_msgs(ih, hp_msgs);
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
        let in_mse = c.dh_wait || c.stream.handshaking();
        let r = match reason {
            CloseReason::Refused => FailReason::ConnectRefused,
            CloseReason::ConnectTimedOut => FailReason::ConnectTimeout,
            CloseReason::LocalError => FailReason::LocalError,
            CloseReason::Eof | CloseReason::Reset if c.connected_at.is_none() => {
                FailReason::ConnectRefused
            }
            CloseReason::Eof | CloseReason::Reset if in_mse => FailReason::ClosedDuringMse,
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
                TimerKey::DhResume => self.run_dh_queue(now),
                TimerKey::Holepunch(ih) => self.holepunch_timer(now, ih),
                TimerKey::Conn(index, generation) => {
                    let id = ConnId { index, generation };
                    let idle = self.cfg.idle_timeout;
                    let Some(c) = self.conn_mut(id) else { continue };
                    let relay_only = c.relay;
                    let r = if relay_only {
                        FailReason::NoUtMetadata
                    } else if c.dh_wait || (c.session.is_some() && c.stream.handshaking()) {
                        FailReason::DhTimeout
                    } else if c.session.is_none() {
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
            // Only with `with_utp`, whose owner reads `poll_outcome`; a driver
            // without uTP gets a TCP connect.
            FetchOutput::UtpConnect { conn, to, .. } => Output::Connect { conn, to },
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
            let (per_ip, probing) = (&self.per_ip, &self.probing);
            let free = |p: &SocketAddr| {
                per_ip.get(&p.ip()).copied().unwrap_or(0) < per_ip_cap
                    && probing.get(p).is_none_or(|owner| *owner == ih)
            };
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

    /// The handshake to try first with `peer` over `transport`: what it
    /// refused over that transport since it last accepted one there, or what
    /// it accepted last (the capability cache), then its PEX flag, then the
    /// policy. A refusal over the other transport does not count (see
    /// [`PeerCapability::refused_tcp`]).
    fn first_mode(&self, peer: &SocketAddr, transport: Transport, pex_prefers: bool) -> WireMode {
        let policy = self.cfg.encryption;
        if policy == EncryptionPolicy::Require {
            return WireMode::Encrypted;
        }
        if let Some(c) = self.cache.get(peer) {
            match c.refused(transport) {
                Some(WireMode::Plaintext) => return WireMode::Encrypted,
                Some(WireMode::Encrypted) => return WireMode::Plaintext,
                None => {}
            }
            if let Some(e) = c.encryption {
                return e.mode();
            }
        }
        if pex_prefers || policy == EncryptionPolicy::PreferEncrypted {
            WireMode::Encrypted
        } else {
            WireMode::Plaintext
        }
    }

    /// A new connection attempt for `ih` to `peer` over `transport` (chosen for
    /// `choice`, in `mode`), in a free slot or a new one, with its connect
    /// deadline, counted against the peer's IP, the active connections and its
    /// job. It is no retry, no holepunch and has no sibling: the caller sets
    /// those. `None` only if the slot is missing (it never is).
    fn new_conn(
        &mut self,
        now: Timestamp,
        ih: InfoHash,
        peer: SocketAddr,
        (transport, choice, mode): (Transport, TransportChoice, WireMode),
    ) -> Option<ConnId> {
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
        let slot = self.slots.get_mut(index as usize)?;
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
            stream: Stream::Plain,
            mode,
            retry: false,
            transport,
            transport_retry: false,
            choice,
            dh_wait: false,
            holepunch: false,
            relay: false,
            sibling: None,
            raw_in: 0,
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
        Some(id)
    }

    fn open_conn(&mut self, now: Timestamp, ih: InfoHash, peer: SocketAddr) {
        let (retry, pex_prefers, retry_transport, pex_utp, holepunch) = match self.jobs.get_mut(&ih)
        {
            Some(job) => (
                job.retry_mode.remove(&peer),
                job.prefers_encryption.contains(&peer),
                job.retry_transport.remove(&peer),
                // A direct uTP SYN to a peer behind a NAT that has no
                // mapping for us is dropped, and leaves the NAT a
                // conntrack entry for our address and port that makes it
                // map the peer's own SYN of a later holepunch to another
                // port (Linux MASQUERADE does): a peer a relay can
                // introduce gets TCP first, then the relay.
                job.pex_utp.contains(&peer) && !job.pex_holepunch.contains(&peer),
                job.hp_go.remove(&peer),
            ),
            None => (None, false, None, false, false),
        };
        let (transport, choice) = match (retry_transport, retry) {
            _ if holepunch => (Transport::Utp, TransportChoice::Holepunch),
            (Some(t), _) => (t, TransportChoice::Fallback),
            (None, Some(r)) => (r.transport, r.choice),
            (None, None) => self.first_transport(now, &peer, pex_utp),
        };
        if holepunch {
            self.stats.holepunch.attempts += 1;
            if let Some(job) = self.jobs.get_mut(&ih) {
                job.hp_await.insert(peer, now.add(HP_AWAIT));
            }
        }
        let local = self.udp_contact(now, &peer).unwrap_or(SocketId(0));
        let ts = &mut self.stats.transport;
        *ts.attempts.entry(transport).or_insert(0) += 1;
        *ts.chosen.entry((transport, choice)).or_insert(0) += 1;
        // A holepunch's stream may be the target's own connection to us (the
        // uTP manager takes its crossed SYN), and an outgoing libtorrent
        // connection speaks its BitTorrent handshake in clear: so do we,
        // unless the policy requires encryption.
        let mode = match retry {
            Some(r) => r.mode,
            None if holepunch && self.cfg.encryption != EncryptionPolicy::Require => {
                WireMode::Plaintext
            }
            None => self.first_mode(&peer, transport, pex_prefers),
        };
        match mode {
            WireMode::Plaintext => self.stats.encryption.plaintext_attempts += 1,
            WireMode::Encrypted => self.stats.encryption.encrypted_attempts += 1,
        }
        let Some(id) = self.new_conn(now, ih, peer, (transport, choice, mode)) else {
            return;
        };
        if let Some(c) = slot_conn(&mut self.slots, id) {
            c.retry = retry.is_some();
            // A holepunch is the last resort: no fallback after it.
            c.transport_retry =
                retry_transport.is_some() || holepunch || retry.is_some_and(|r| r.transport_retry);
            c.holepunch = holepunch;
        }
        if self.utp && self.cache.get(&peer).is_none_or(|c| c.transport.is_none()) {
            self.probing.entry(peer).or_insert(ih);
        }
        self.out.push_back(match transport {
            Transport::Tcp => FetchOutput::Output(Output::Connect { conn: id, to: peer }),
            Transport::Utp => FetchOutput::UtpConnect {
                conn: id,
                local,
                to: peer,
            },
        });
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
        // A crossed pair: the survivor goes on alone, and this one's failure
        // says nothing about the peer (the peer dropped it as a duplicate, or
        // our SYN never reached it).
        let sibling_lives = match c.sibling.and_then(|s| slot_conn(&mut self.slots, s)) {
            Some(s) => {
                s.sibling = None;
                true
            }
            None => false,
        };
        let absorbed = sibling_lives && matches!(outcome, SessionOutcome::Failed(_));
        if absorbed {
            self.stats.holepunch.crossed_lost += 1;
        }
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
        let encryption = match (&c.stream, c.mode) {
            (Stream::Plain, WireMode::Encrypted) => Encryption::MseIncomplete,
            (st, _) => st.encryption(),
        };
        if let Stream::Mse(m) = &c.stream {
            self.stats.encryption.modpows += u64::from(m.modpows());
        }
        let failed = matches!(outcome, SessionOutcome::Failed(_));
        // The other way, once, for a peer that refused this one as forced-
        // encryption peers refuse plaintext (closed right after our handshake,
        // before any reply) or plaintext-only peers refuse MSE (closed, or
        // silent, during it).
        let refused = match outcome {
            SessionOutcome::Failed(FailReason::ClosedBeforeHandshake)
                if c.mode == WireMode::Plaintext && c.raw_in == 0 =>
            {
                Some(WireMode::Plaintext)
            }
            SessionOutcome::Failed(FailReason::ClosedDuringMse | FailReason::DhTimeout)
                if c.mode == WireMode::Encrypted && c.raw_in == 0 =>
            {
                Some(WireMode::Encrypted)
            }
            _ => None,
        };
        // What the peer refused over this transport before (since it last
        // accepted a handshake there), in this job or an earlier one: the
        // other way was tried already if that is it.
        let refused_before = self.cache.get(&c.peer).and_then(|p| p.refused(c.transport));
        let retry_with = match refused {
            // A holepunch is redialled instead (below).
            _ if absorbed || c.holepunch => None,
            Some(WireMode::Plaintext)
                if !c.retry && refused_before != Some(WireMode::Encrypted) =>
            {
                Some(WireMode::Encrypted)
            }
            Some(WireMode::Encrypted)
                if !c.retry
                    && self.cfg.encryption != EncryptionPolicy::Require
                    && refused_before != Some(WireMode::Plaintext) =>
            {
                Some(WireMode::Plaintext)
            }
            _ => None,
        };
        match c.mode {
            WireMode::Plaintext if failed && c.handshake_at.is_none() => {
                self.stats.encryption.plaintext_failed += 1;
            }
            WireMode::Encrypted if failed && encryption == Encryption::MseIncomplete => {
                self.stats.encryption.encrypted_failed += 1;
            }
            _ => {}
        }
        let learned = c.handshake_at.map(|_| encryption);
        // The other transport, once, for a peer this one did not reach.
        // A TCP peer that accepts the connection and closes it before a byte,
        // both ways when the handshake was retried the other way, has TCP off
        // (libtorrent with `enable_incoming_tcp` off does that): uTP next.
        let tcp_closed_silently = c.transport == Transport::Tcp
            && c.raw_in == 0
            && retry_with.is_none()
            && matches!(
                outcome,
                SessionOutcome::Failed(
                    FailReason::ClosedBeforeHandshake | FailReason::ClosedDuringMse
                )
            );
        // A peer a relay can introduce goes to the relay instead of uTP (see
        // `open_conn`).
        let punchable = c.transport == Transport::Tcp
            && self
                .jobs
                .get(&c.ih)
                .is_some_and(|j| j.pex_holepunch.contains(&c.peer));
        let transport_retry = match outcome {
            _ if absorbed => None,
            SessionOutcome::Failed(FailReason::ConnectRefused | FailReason::ConnectTimeout)
                if self.utp && !c.transport_retry && c.connected_at.is_none() && !punchable =>
            {
                Some(c.transport.other())
            }
            SessionOutcome::Failed(_) if self.utp && !c.transport_retry && tcp_closed_silently => {
                Some(Transport::Utp)
            }
            _ => None,
        };
        if let Some(s) = &c.session {
            let h = s.holepunch_counts();
            let hs = &mut self.stats.holepunch;
            hs.malformed += u64::from(h.malformed);
            hs.dropped += u64::from(h.dropped);
            hs.relay_requests += u64::from(h.relay_requests);
        }
        if c.holepunch {
            let hs = &mut self.stats.holepunch;
            if c.connected_at.is_some() {
                hs.connected += 1;
            }
            match outcome {
                SessionOutcome::Ok => hs.ok += 1,
                SessionOutcome::Failed(_) => hs.failed += 1,
                SessionOutcome::Cancelled => {}
            }
            tracing::debug!(peer = %c.peer, ih = %c.ih, outcome = ?outcome, "holepunch session ended");
        }
        // No direct attempt reached the peer (and none is left): a relay may
        // introduce us (BEP 55).
        let needs_relay = self.utp
            && !absorbed
            && !c.holepunch
            && transport_retry.is_none()
            && c.connected_at.is_none()
            && matches!(
                outcome,
                SessionOutcome::Failed(FailReason::ConnectRefused | FailReason::ConnectTimeout)
            );
        match outcome {
            SessionOutcome::Ok => *self.stats.transport.ok.entry(c.transport).or_insert(0) += 1,
            SessionOutcome::Failed(r) => {
                *self
                    .stats
                    .transport
                    .failed
                    .entry((c.transport, r))
                    .or_insert(0) += 1;
            }
            SessionOutcome::Cancelled => {}
        }
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
        } else if !absorbed {
            let worked = c.handshake_at.map(|_| c.transport);
            let (peer, attempt) = (c.peer, c.transport);
            if self
                .cache
                .update(peer, &info, outcome, attempt, learned, refused, worked)
            {
                self.stats.cache_evictions += 1;
            }
            // What failed outright is learned too: the next fetch from this
            // peer (another job's, even if this one ends first) starts with
            // the other transport.
            if let Some(t) = transport_retry {
                self.cache.prefer(&peer, t);
            }
        }
        // A holepunch target: its own connection stays welcome for a while,
        // and one that ended before the handshake is redialled (paced).
        // A close before any reply looks like a refusal of the handshake,
        // but the target may have dropped our stream as a duplicate of its
        // own pending one: the same handshake again, and only the last
        // redial the other way (an encryption-forcing target gets one MSE try).
        let flipped = match refused {
            Some(WireMode::Plaintext) => Some(WireMode::Encrypted),
            Some(WireMode::Encrypted) if self.cfg.encryption != EncryptionPolicy::Require => {
                Some(WireMode::Plaintext)
            }
            _ => None,
        };
        let redial = c.holepunch
            && !absorbed
            && c.handshake_at.is_none()
            && matches!(outcome, SessionOutcome::Failed(r) if r != FailReason::InfohashTimeout);
        let mut hp_timers = Vec::new();
        if let Some(job) = self.jobs.get_mut(&c.ih) {
            if c.holepunch && !absorbed {
                let until = now.add(HP_AWAIT);
                job.hp_await.insert(c.peer, until);
                hp_timers.push(until);
            }
            if redial {
                let e = job.hp_redial.entry(c.peer).or_insert((None, 0, c.mode));
                if e.0.is_none() && e.1 < HP_REDIALS {
                    let due = now.add(HP_REDIAL_FIRST * (1u32 << e.1));
                    let mode = match flipped {
                        Some(m) if e.1 + 1 == HP_REDIALS => m,
                        _ => e.2,
                    };
                    *e = (Some(due), e.1 + 1, mode);
                    hp_timers.push(due);
                }
            }
        }
        for t in hp_timers {
            self.timers.insert((t, TimerKey::Holepunch(c.ih)));
        }
        if let Some(job) = self.jobs.get_mut(&c.ih) {
            job.conns.retain(|x| *x != id);
            if needs_relay && job.hp_known.insert(c.peer) {
                job.hp_candidates.push_back(c.peer);
            }

            if local {
                job.pending.push_front(c.peer);
                job.tried = job.tried.saturating_sub(1);
            } else if let Some(t) = transport_retry {
                job.retry_transport.insert(c.peer, t);
                job.pending.push_front(c.peer);
            } else if let Some(m) = retry_with {
                job.retry_mode.insert(
                    c.peer,
                    ModeRetry {
                        mode: m,
                        transport: c.transport,
                        choice: c.choice,
                        transport_retry: c.transport_retry,
                    },
                );
                job.pending.push_front(c.peer);
                match m {
                    WireMode::Encrypted => self.stats.encryption.retried_encrypted += 1,
                    WireMode::Plaintext => self.stats.encryption.retried_plaintext += 1,
                }
            } else if let (SessionOutcome::Failed(r), false) = (outcome, absorbed) {
                job.reasons.push((c.peer, r));
            }
        }
        // The job that was finding out this peer's transport is done with it
        // unless a retry or a redial of it is queued.
        if self.probing.get(&c.peer) == Some(&c.ih) {
            let queued = self.jobs.get(&c.ih).is_some_and(|j| {
                j.retry_mode.contains_key(&c.peer)
                    || j.retry_transport.contains_key(&c.peer)
                    || j.hp_go.contains(&c.peer)
                    || j.hp_redial.get(&c.peer).is_some_and(|r| r.0.is_some())
                    || j.conns.iter().any(|x| {
                        self.slots
                            .get(x.index as usize)
                            .and_then(|s| s.conn.as_ref())
                            .is_some_and(|o| o.id == *x && o.peer == c.peer)
                    })
            });
            if !queued {
                self.probing.remove(&c.peer);
                self.wake_ip(c.peer.ip());
            }
        }
        if needs_relay {
            self.wait_for_contact(now, c.peer, c.ih);
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
            encryption,
            transport: c.transport,
        };
        self.out
            .push_back(FetchOutput::Output(Output::Event(Event::PeerSession(
                Box::new(report),
            ))));
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
                if self.recontact.jobs.remove(&ih) {
                    self.stats.transport.recontact_fetched += 1;
                }
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
        let released: Vec<SocketAddr> = self
            .probing
            .iter()
            .filter(|(_, o)| **o == ih)
            .map(|(p, _)| *p)
            .collect();
        for p in released {
            self.probing.remove(&p);
            self.wake_ip(p.ip());
        }
        self.stats.holepunch.unanswered += job.hp_pending.len() as u64;
        self.stats.holepunch.no_relay += job.hp_candidates.len() as u64;
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
        if self.recontact.jobs.remove(&ih) {
            // Its owner had this infohash's failure already.
            self.stats.transport.recontact_failed += 1;
            return;
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
        // Peers no direct attempt reached go to a relay, if one is connected.
        self.try_holepunch(now, ih);
        let exhausted = match self.jobs.get(&ih) {
            Some(j) => {
                j.conns.is_empty()
                    && !j.has_pending()
                    && !j.hp_await.values().any(|t| *t > now)
                    && !j.hp_redial.values().any(|r| r.0.is_some())
            }
            None => false,
        };
        if exhausted {
            self.fail_job(now, ih, None, false);
        }
    }
}

impl Fetcher {
    /// A handshake got through to `peer` over `transport`: the cache learns
    /// it now (not when the session ends), and jobs waiting for the job that
    /// was finding out may go on.
    fn learn_transport(&mut self, peer: SocketAddr, transport: Transport, enc: Encryption) {
        if self.probing.remove(&peer).is_some() {
            if self.cache.update(
                peer,
                &PeerInfo::default(),
                SessionOutcome::Cancelled,
                transport,
                Some(enc),
                None,
                Some(transport),
            ) {
                self.stats.cache_evictions += 1;
            }
            self.wake_ip(peer.ip());
        }
    }

    /// Jobs blocked on `ip` (its per-IP slots, or a peer there being probed)
    /// may try again.
    fn wake_ip(&mut self, ip: IpAddr) {
        if let Some(b) = self.blocked_on.remove(&ip) {
            for ih in b {
                if self.blocked.remove(&ih) {
                    self.mark_runnable(ih);
                }
            }
        }
    }

    /// A job's holepunch timer: due redials start (a uTP attempt over the
    /// mapping the punch opened, unless a session with that target is
    /// running), waits that are over end, and the job ends if nothing is left.
    fn holepunch_timer(&mut self, now: Timestamp, ih: InfoHash) {
        let Some(job) = self.jobs.get(&ih) else {
            return;
        };
        let running: BTreeSet<SocketAddr> = job
            .conns
            .iter()
            .filter_map(|id| {
                let c = self.slots.get(id.index as usize)?.conn.as_ref()?;
                (c.id == *id).then_some(c.peer)
            })
            .collect();
        let Some(job) = self.jobs.get_mut(&ih) else {
            return;
        };
        job.hp_await.retain(|_, t| *t > now);
        let mut redials = 0;
        for (peer, r) in job.hp_redial.iter_mut() {
            if r.0.is_none_or(|t| t > now) {
                continue;
            }
            r.0 = None;
            if running.contains(peer) {
                continue;
            }
            job.hp_go.insert(*peer);
            job.retry_mode.insert(
                *peer,
                ModeRetry {
                    mode: r.2,
                    transport: Transport::Utp,
                    choice: TransportChoice::Holepunch,
                    transport_retry: true,
                },
            );
            job.pending.push_front(*peer);
            redials += 1;
        }
        self.stats.holepunch.redials += redials;
        self.mark_runnable(ih);
        self.schedule(now);
        self.check_job_exhausted(now, ih);
    }

    /// A relay's `connect` and `error` messages (BEP 55) for job `ih`.
    fn on_holepunch_msgs(&mut self, ih: InfoHash, msgs: Vec<crate::wire::HolepunchMsg>) {
        use crate::wire::{HolepunchErrorCode, HolepunchKind};
        for m in msgs {
            let addr = canonical(m.addr);
            let hs = &mut self.stats.holepunch;
            let Some(job) = self.jobs.get_mut(&ih) else {
                return;
            };
            let asked = job.hp_pending.remove(&addr).is_some();
            match (m.kind, asked) {
                (HolepunchKind::Connect, true) => {
                    hs.connects += 1;
                    job.hp_go.insert(addr);
                    job.pending.push_front(addr);
                    tracing::debug!(peer = %addr, ih = %ih, "holepunch: relay says connect");
                }
                (HolepunchKind::Connect, false) => hs.connects_unsolicited += 1,
                (HolepunchKind::Error, true) => {
                    let name = HolepunchErrorCode::from_code(m.err).name();
                    *hs.errors.entry(name).or_insert(0) += 1;
                    tracing::debug!(peer = %addr, ih = %ih, error = name, "holepunch: relay refused");
                }
                (HolepunchKind::Error, false) => hs.errors_unsolicited += 1,
                // The session answers rendezvous itself and never hands them back.
                (HolepunchKind::Rendezvous, _) => {}
            }
        }
        self.mark_runnable(ih);
    }

    /// Sends a `rendezvous` for each peer of job `ih` that no direct attempt
    /// reached, through a connected peer that offered `ut_holepunch` (at most
    /// [`MAX_RENDEZVOUS_PER_JOB`]); ends relay-only sessions that can no longer
    /// serve (nothing left to ask them, nothing else in flight, and no PEX to
    /// come from them).
    fn try_holepunch(&mut self, now: Timestamp, ih: InfoHash) {
        use crate::wire::{HolepunchKind, HolepunchMsg};
        let Some(job) = self.jobs.get_mut(&ih) else {
            return;
        };
        while let Some(&target) = job.hp_candidates.front() {
            if job.hp_asked >= MAX_RENDEZVOUS_PER_JOB {
                self.stats.holepunch.no_relay += job.hp_candidates.len() as u64;
                job.hp_candidates.clear();
                break;
            }
            let relay = job.conns.iter().copied().find(|&id| {
                self.slots
                    .get(id.index as usize)
                    .filter(|s| s.generation == id.generation)
                    .and_then(|s| s.conn.as_ref())
                    .is_some_and(|c| {
                        c.peer != target && c.session.as_ref().is_some_and(Session::can_relay)
                    })
            });
            let Some(relay) = relay else {
                // None yet: the candidates wait for one (or the job's end).
                break;
            };
            job.hp_candidates.pop_front();
            let Some(c) = slot_conn(&mut self.slots, relay) else {
                break;
            };
            let Some(s) = c.session.as_mut() else {
                break;
            };
            let m = HolepunchMsg {
                kind: HolepunchKind::Rendezvous,
                addr: target,
                err: 0,
            };
            if !s.send_holepunch(&m) {
                continue;
            }
            let bytes = s.take_output().unwrap_or_default();
            let Ok(wire) = c.stream.send(bytes) else {
                continue;
            };
            if !wire.is_empty() {
                c.bytes_out += wire.len() as u64;
                self.stats.bytes_out += wire.len() as u64;
                self.out.push_back(FetchOutput::Output(Output::Send {
                    conn: relay,
                    bytes: Bytes::from(wire),
                }));
            }
            job.hp_asked += 1;
            job.hp_pending.insert(target, relay);
            self.stats.holepunch.rendezvous_sent += 1;
            tracing::debug!(peer = %target, relay = %c.peer, ih = %ih, "holepunch: rendezvous sent");
        }
        // Relay-only sessions serve while something may still need them.
        let busy = !job.hp_candidates.is_empty()
            || !job.hp_pending.is_empty()
            || !job.hp_go.is_empty()
            || job.has_pending();
        let mut relays = Vec::new();
        let mut others = 0;
        for &id in &job.conns {
            match self
                .slots
                .get(id.index as usize)
                .filter(|s| s.generation == id.generation)
                .and_then(|s| s.conn.as_ref())
            {
                // One that offers PEX may still name peers to ask about: it
                // stays until its own deadline.
                Some(c) if c.relay => {
                    let pex = c
                        .session
                        .as_ref()
                        .is_some_and(|s| s.peer_info().ut_pex.is_some());
                    if !pex {
                        relays.push(id);
                    }
                }
                Some(_) => others += 1,
                None => {}
            }
        }
        if !busy && others == 0 {
            for id in relays {
                self.end_conn(
                    now,
                    id,
                    SessionOutcome::Failed(FailReason::NoUtMetadata),
                    true,
                );
            }
        }
    }
}

/// The session failure for an MSE failure (the answering side's own reasons
/// cannot come from our initiator; a full queue is ours, not the peer's).
fn mse_reason(e: MseError) -> FailReason {
    match e {
        MseError::BadPublicKey(_) => FailReason::MseBadPublicKey,
        MseError::SyncNotFound => FailReason::MseSyncNotFound,
        MseError::SelectUnsupported | MseError::ProvideUnsupported | MseError::UnknownInfoHash => {
            FailReason::MseSelectUnsupported
        }
        MseError::StreamCorrupt => FailReason::MseStreamCorrupt,
        MseError::PadTooLong => FailReason::MsePadTooLong,
        _ => FailReason::LocalError,
    }
}

impl Fetcher {
    /// Whether `id` is a connection in flight.
    fn is_live(&self, id: ConnId) -> bool {
        self.slots
            .get(id.index as usize)
            .is_some_and(|s| s.generation == id.generation && s.conn.is_some())
    }
}

fn slot_conn(slots: &mut [Slot], id: ConnId) -> Option<&mut Conn> {
    let slot = slots.get_mut(id.index as usize)?;
    if slot.generation != id.generation {
        return None;
    }
    slot.conn.as_mut()
}
