//! Trackers as a fallback source of peers: sans-IO clients for UDP trackers
//! (BEP 15, [`udp`]) and HTTP trackers (BEP 3/23/7 and the scrape convention,
//! [`http`]), and the scheduler that asks them ([`Trackers`]).
//!
//! The crawler asks the configured trackers for the infohashes whose DHT peer
//! search found nobody ([`Trackers::ask`]); peers that come back go through the
//! address filter and into the fetcher, and every answer becomes an
//! [`crate::Event::TrackerReply`] with the tracker's seeder and leecher counts.
//!
//! IO is the crawler's: UDP requests leave through the DHT socket of the tracker's
//! family ([`TrackerOutput::Transmit`]) and replies are recognised by their source
//! address ([`Trackers::owns_addr`]); HTTP requests use the same TCP outputs as the
//! fetcher, with [`ConnId`]s from a range of their own ([`owns_conn`]).
//!
//! Per tracker: one request in flight, a bounded queue of asks (duplicates and
//! overflow counted and dropped), the torrent's `interval`/`min interval` honoured
//! before the same infohash is asked again, and a doubling back-off after failures.
//! All trackers share one request budget (`requests_per_sec`). Every byte from a
//! tracker is untrusted: a bad reply is a counted failure, never a panic.

pub mod http;
pub mod udp;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;

use crate::addr::{canonical, is_sendable, Family};
use crate::id::InfoHash;
use crate::rng::Rng;
use crate::time::{min_deadline, Timestamp};
use crate::{CloseReason, ConnId};

use http::{HttpError, Parsed};
use udp::{UdpError, UdpReply};

/// HTTP tracker connections use `ConnId`s whose index is at least this (tracker `i`
/// has index `CONN_BASE + i`); the fetcher's indices stay far below.
pub const CONN_BASE: u32 = 0xF000_0000;
/// How long a UDP connection id may be used (BEP 15: one minute).
const CONNECTION_ID_TTL: Duration = Duration::from_secs(60);
/// BEP 15's first retransmission timeout; the n-th waits `15 · 2^n` s.
const UDP_TIMEOUT: Duration = Duration::from_secs(15);

/// Whether `conn` belongs to the tracker clients (not to the fetcher).
pub fn owns_conn(conn: ConnId) -> bool {
    conn.index >= CONN_BASE
}

/// The protocol of a tracker URL.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `udp://` (BEP 15).
    Udp,
    /// `http://` (BEP 3).
    Http,
}

/// A tracker URL: `udp://host:port[/…]` or `http://host[:port]/path[?query]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackerUrl {
    /// As given.
    pub raw: String,
    /// Its protocol.
    pub scheme: Scheme,
    /// The host name or IP literal (without brackets).
    pub host: String,
    /// The port.
    pub port: u16,
    /// For HTTP: the path with any query (`/announce`).
    pub path: String,
    /// The address to use: set when the host is an IP literal, or by the driver
    /// after resolving the name ([`TrackerUrl::needs_resolving`]).
    pub addr: Option<SocketAddr>,
}

/// Why a tracker URL was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlError(pub String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UrlError {}

impl FromStr for TrackerUrl {
    type Err = UrlError;
    fn from_str(raw: &str) -> Result<Self, UrlError> {
        let err = |m: &str| UrlError(format!("{raw}: {m}"));
        let (scheme, rest) = if let Some(r) = raw.strip_prefix("udp://") {
            (Scheme::Udp, r)
        } else if let Some(r) = raw.strip_prefix("http://") {
            (Scheme::Http, r)
        } else {
            return Err(err("only udp:// and http:// trackers are supported"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let (h, p) = r.split_once(']').ok_or_else(|| err("unclosed '['"))?;
            (h, p.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(err("no host"));
        }
        let port = match (port, scheme) {
            (Some(p), _) => p.parse().map_err(|_| err("bad port"))?,
            (None, Scheme::Http) => 80,
            (None, Scheme::Udp) => return Err(err("a udp:// tracker needs a port")),
        };
        if port == 0 {
            return Err(err("port 0"));
        }
        let path = match (scheme, path) {
            (Scheme::Http, "") => "/".to_string(),
            (Scheme::Http, p) if p.starts_with('?') => format!("/{p}"),
            (_, p) => p.to_string(),
        };
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(err("spaces or control characters in the path"));
        }
        let addr = host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, port));
        Ok(TrackerUrl {
            raw: raw.to_string(),
            scheme,
            host: host.to_string(),
            port,
            path,
            addr,
        })
    }
}

impl TrackerUrl {
    /// Whether the host is a name the driver must resolve (`host:port`).
    pub fn needs_resolving(&self) -> Option<String> {
        self.addr
            .is_none()
            .then(|| format!("{}:{}", self.host, self.port))
    }
}

impl fmt::Display for TrackerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Tracker settings. Empty `urls`: no tracker is ever asked.
#[derive(Clone, Debug)]
pub struct TrackerConfig {
    /// The trackers to ask.
    pub urls: Vec<TrackerUrl>,
    /// Requests per second over all trackers (connects, announces, scrapes).
    pub requests_per_sec: u32,
    /// Requests that may go at once after a quiet spell.
    pub burst: u32,
    /// Asks waiting per tracker; beyond it they are dropped (counted).
    pub queue: usize,
    /// UDP retransmissions before a request fails (waits `15 · 2^n` s, n ≤ this).
    pub max_retransmits: u32,
    /// Deadline of one HTTP request, connect included.
    pub http_timeout: Duration,
    /// Peers asked for per announce.
    pub num_want: u32,
    /// The port announced (the DHT port: a crawler serves nothing).
    pub port: u16,
    /// A torrent's `interval` is honoured up to this long.
    pub max_interval: Duration,
    /// Wait after a tracker's first failure; doubles while failures repeat.
    pub backoff: Duration,
    /// The longest wait after failures.
    pub max_backoff: Duration,
    /// Infohashes remembered per tracker with the time they may be asked again.
    pub remember: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            urls: Vec::new(),
            requests_per_sec: 4,
            burst: 4,
            queue: 1024,
            max_retransmits: 2,
            http_timeout: Duration::from_secs(15),
            num_want: 50,
            port: 6881,
            max_interval: Duration::from_secs(6 * 3600),
            backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(3600),
            remember: 16_384,
        }
    }
}

/// What a tracker is asked.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ask {
    /// Peers (and counts) of a torrent.
    Announce(InfoHash),
    /// Counts only.
    Scrape(InfoHash),
}

impl Ask {
    fn info_hash(&self) -> InfoHash {
        match self {
            Ask::Announce(h) | Ask::Scrape(h) => *h,
        }
    }
}

/// A tracker's answer, for the application (seeders and leechers with their source).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackerReply {
    /// The torrent.
    pub info_hash: InfoHash,
    /// The tracker's URL, as configured.
    pub tracker: String,
    /// Whether it answered an announce (with peers) or a scrape.
    pub scrape: bool,
    /// The peers that passed the address filter (announces only).
    pub peers: Vec<SocketAddr>,
    /// Seeders, when the tracker said.
    pub seeders: Option<u32>,
    /// Leechers, when the tracker said.
    pub leechers: Option<u32>,
    /// Completed downloads (scrapes only).
    pub downloaded: Option<u32>,
}

/// What the tracker clients ask the crawler to do.
#[derive(Clone, Debug)]
pub enum TrackerOutput {
    /// Send a datagram from the DHT socket of `family`.
    Transmit {
        /// The socket's family.
        family: Family,
        /// The tracker.
        to: SocketAddr,
        /// The request.
        payload: Bytes,
    },
    /// Open a TCP connection.
    Connect {
        /// Its id (tracker range).
        conn: ConnId,
        /// The tracker.
        to: SocketAddr,
    },
    /// Write the request.
    Send {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        bytes: Bytes,
    },
    /// Close a connection.
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// An answer.
    Reply(TrackerReply),
}

/// Tracker counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// Asks queued (one per tracker).
    pub asked: u64,
    /// Asks dropped: the tracker's queue was full.
    pub queue_dropped: u64,
    /// Infohashes not asked: their peer search found nobody, and nothing showed
    /// that they are torrents (heard only in get_peers queries from one address:
    /// most such infohashes are other nodes' random lookup targets).
    pub unconfirmed: u64,
    /// Asks skipped: already queued, or the torrent's interval has not passed.
    pub skipped: u64,
    /// Asks dropped: the tracker has no address (its name did not resolve).
    pub no_address: u64,
    /// Requests sent: UDP connects, announces, scrapes, HTTP requests.
    pub requests: u64,
    /// UDP retransmissions.
    pub retransmits: u64,
    /// Announces answered.
    pub announces: u64,
    /// Scrapes answered.
    pub scrapes: u64,
    /// Peers received that passed the address filter.
    pub peers: u64,
    /// Peers refused by the address filter.
    pub peers_filtered: u64,
    /// Requests that got no answer in time (after the retransmissions).
    pub timeouts: u64,
    /// Refusals of a torrent: a UDP error action, an HTTP `failure reason`, or an
    /// unusable UDP answer to the request (no back-off; the torrent waits
    /// `max_backoff` before it is asked of that tracker again).
    pub refused: u64,
    /// Undecodable UDP replies, by kind.
    pub udp_malformed: BTreeMap<UdpError, u64>,
    /// HTTP responses that were unusable, by kind.
    pub http_malformed: BTreeMap<HttpError, u64>,
    /// Datagrams from a tracker that answered nothing in flight (late, duplicate,
    /// wrong transaction id, or the wrong action).
    pub unexpected: u64,
    /// TCP connections that failed or closed before an answer.
    pub connect_failures: u64,
    /// Requests that failed for the tracker's sake: timeouts, connections, HTTP
    /// errors, garbage (each starts the tracker's back-off).
    pub failed: u64,
}

enum Flight {
    UdpConnect { tid: u32, attempt: u32 },
    UdpRequest { tid: u32, attempt: u32 },
    Http { conn: ConnId, buf: Vec<u8> },
}

struct InFlight {
    ask: Ask,
    deadline: Timestamp,
    state: Flight,
}

struct Tracker {
    url: TrackerUrl,
    queue: VecDeque<Ask>,
    queued: BTreeSet<Ask>,
    /// Infohash → when it may be announced again (the torrent's interval).
    again: BTreeMap<InfoHash, Timestamp>,
    again_order: BTreeSet<(Timestamp, InfoHash)>,
    /// No request before this (back-off).
    next_at: Timestamp,
    failures: u32,
    connection: Option<(u64, Timestamp)>,
    flight: Option<InFlight>,
}

/// The tracker clients: see the module docs.
pub struct Trackers {
    cfg: TrackerConfig,
    rng: Rng,
    peer_id: [u8; 20],
    key: u32,
    allow_private: bool,
    list: Vec<Tracker>,
    /// Budget: theoretical arrival time (GCRA).
    tat: Timestamp,
    generation: u32,
    out: VecDeque<TrackerOutput>,
    stats: TrackerStats,
}

impl Trackers {
    /// Clients for `cfg.urls`, announcing as `peer_id`.
    pub fn new(cfg: TrackerConfig, mut rng: Rng, peer_id: [u8; 20], allow_private: bool) -> Self {
        let list = cfg
            .urls
            .iter()
            .map(|u| Tracker {
                url: u.clone(),
                queue: VecDeque::new(),
                queued: BTreeSet::new(),
                again: BTreeMap::new(),
                again_order: BTreeSet::new(),
                next_at: Timestamp::ZERO,
                failures: 0,
                connection: None,
                flight: None,
            })
            .collect();
        let key = rng.next_u32();
        Trackers {
            cfg,
            rng,
            peer_id,
            key,
            allow_private,
            list,
            tat: Timestamp::ZERO,
            generation: 0,
            out: VecDeque::new(),
            stats: TrackerStats::default(),
        }
    }

    /// Whether any tracker is configured.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The counters.
    pub fn stats(&self) -> &TrackerStats {
        &self.stats
    }

    /// Asks waiting, over all trackers.
    pub fn queued(&self) -> usize {
        self.list.iter().map(|t| t.queue.len()).sum()
    }

    /// Host names (`host:port`) still to resolve.
    pub fn unresolved(&self) -> Vec<String> {
        self.list
            .iter()
            .filter_map(|t| t.url.needs_resolving())
            .collect()
    }

    /// The driver resolved `name` (`host:port`): trackers of that name use the
    /// first address (IPv4 first).
    pub fn resolved(&mut self, name: &str, addrs: &[SocketAddr]) {
        let pick = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied();
        for t in &mut self.list {
            if t.url.needs_resolving().as_deref() == Some(name) {
                t.url.addr = pick.map(canonical);
            }
        }
    }

    /// Counts an infohash that is not asked for lack of evidence that it is a
    /// torrent ([`TrackerStats::unconfirmed`]).
    pub fn unconfirmed(&mut self) {
        self.stats.unconfirmed += 1;
    }

    /// Queues `ask` on every tracker (those that cannot answer it skip it).
    pub fn ask(&mut self, now: Timestamp, ask: Ask) {
        for i in 0..self.list.len() {
            self.enqueue(i, now, ask);
        }
        self.run(now);
    }

    fn enqueue(&mut self, i: usize, now: Timestamp, ask: Ask) {
        let cap = self.cfg.queue;
        let Some(t) = self.list.get_mut(i) else {
            return;
        };
        if t.url.addr.is_none() {
            self.stats.no_address += 1;
            return;
        }
        if let Ask::Scrape(_) = ask {
            if t.url.scheme == Scheme::Http && http::scrape_path(&t.url.path).is_none() {
                return;
            }
        }
        let ih = ask.info_hash();
        let waiting =
            matches!(ask, Ask::Announce(_)) && t.again.get(&ih).is_some_and(|&at| at > now);
        if waiting || t.queued.contains(&ask) || t.flight.as_ref().is_some_and(|f| f.ask == ask) {
            self.stats.skipped += 1;
            return;
        }
        if t.queue.len() >= cap {
            self.stats.queue_dropped += 1;
            return;
        }
        t.queue.push_back(ask);
        t.queued.insert(ask);
        self.stats.asked += 1;
    }

    /// Whether `from` is a UDP tracker's address (its datagrams are for [`Trackers::on_datagram`]).
    pub fn owns_addr(&self, from: &SocketAddr) -> bool {
        self.list
            .iter()
            .any(|t| t.url.scheme == Scheme::Udp && t.url.addr == Some(*from))
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<TrackerOutput> {
        self.out.pop_front()
    }

    /// The earliest time something is due: a request's deadline, or the next
    /// request a tracker may send (back-off, budget).
    pub fn deadline(&self) -> Option<Timestamp> {
        let mut d = None;
        for t in &self.list {
            match &t.flight {
                Some(f) => d = min_deadline(d, Some(f.deadline)),
                None if !t.queue.is_empty() => {
                    d = min_deadline(d, Some(t.next_at.max(self.budget_at())))
                }
                None => {}
            }
        }
        d
    }

    fn spacing(&self) -> Duration {
        Duration::from_secs(1) / self.cfg.requests_per_sec.max(1)
    }

    /// When the budget next allows a request.
    fn budget_at(&self) -> Timestamp {
        self.tat
            .sub(self.spacing() * self.cfg.burst.saturating_sub(1))
    }

    fn take_budget(&mut self, now: Timestamp) -> bool {
        if self.budget_at() > now {
            return false;
        }
        self.tat = self.tat.max(now).add(self.spacing());
        true
    }

    /// Timers: retransmissions and deadlines, then new requests.
    pub fn on_timeout(&mut self, now: Timestamp) {
        for i in 0..self.list.len() {
            let Some(f) = self.list[i].flight.as_ref() else {
                continue;
            };
            if f.deadline > now {
                continue;
            }
            let max = self.cfg.max_retransmits;
            match f.state {
                Flight::UdpConnect { attempt, .. } | Flight::UdpRequest { attempt, .. }
                    if attempt < max =>
                {
                    self.stats.retransmits += 1;
                    let connect = matches!(f.state, Flight::UdpConnect { .. });
                    let ask = f.ask;
                    self.send_udp(i, now, ask, connect, attempt + 1);
                }
                Flight::Http { conn, .. } => {
                    self.out.push_back(TrackerOutput::Close { conn });
                    self.stats.timeouts += 1;
                    self.fail(i, now);
                }
                _ => {
                    self.stats.timeouts += 1;
                    // The connection id may be what the tracker ignores.
                    self.list[i].connection = None;
                    self.fail(i, now);
                }
            }
        }
        self.run(now);
    }

    /// Starts what may start: each idle tracker past its back-off takes its next
    /// ask, while the budget lasts.
    fn run(&mut self, now: Timestamp) {
        for i in 0..self.list.len() {
            let t = &self.list[i];
            if t.flight.is_some() || t.next_at > now || t.queue.is_empty() {
                continue;
            }
            if !self.take_budget(now) {
                return;
            }
            let t = &mut self.list[i];
            let Some(ask) = t.queue.pop_front() else {
                continue;
            };
            t.queued.remove(&ask);
            self.start(i, now, ask);
        }
    }

    fn start(&mut self, i: usize, now: Timestamp, ask: Ask) {
        let t = &self.list[i];
        let Some(to) = t.url.addr else {
            return;
        };
        match t.url.scheme {
            Scheme::Udp => {
                let valid = t.connection.is_some_and(|(_, until)| until > now);
                self.send_udp(i, now, ask, !valid, 0);
            }
            Scheme::Http => {
                self.generation = self.generation.wrapping_add(1) % (u32::MAX - 1);
                let conn = ConnId {
                    index: CONN_BASE.saturating_add(i as u32),
                    generation: self.generation,
                };
                self.stats.requests += 1;
                self.out.push_back(TrackerOutput::Connect { conn, to });
                self.list[i].flight = Some(InFlight {
                    ask,
                    deadline: now.add(self.cfg.http_timeout),
                    state: Flight::Http {
                        conn,
                        buf: Vec::new(),
                    },
                });
            }
        }
    }

    fn send_udp(&mut self, i: usize, now: Timestamp, ask: Ask, connect: bool, attempt: u32) {
        let t = &self.list[i];
        let Some(to) = t.url.addr else {
            return;
        };
        let tid = self.rng.next_u32();
        let payload = if connect {
            udp::connect_request(tid).to_vec()
        } else {
            let cid = t.connection.map_or(0, |(c, _)| c);
            match ask {
                Ask::Announce(info_hash) => udp::announce_request(&udp::AnnounceRequest {
                    connection_id: cid,
                    transaction_id: tid,
                    info_hash,
                    peer_id: self.peer_id,
                    downloaded: 0,
                    left: 1,
                    uploaded: 0,
                    event: 0,
                    key: self.key,
                    num_want: i32::try_from(self.cfg.num_want).unwrap_or(-1),
                    port: self.cfg.port,
                }),
                Ask::Scrape(h) => udp::scrape_request(cid, tid, &[h]),
            }
        };
        let wait = UDP_TIMEOUT * (1u32 << attempt.min(8));
        self.stats.requests += 1;
        self.out.push_back(TrackerOutput::Transmit {
            family: Family::of(&to),
            to,
            payload: Bytes::from(payload),
        });
        let state = if connect {
            Flight::UdpConnect { tid, attempt }
        } else {
            Flight::UdpRequest { tid, attempt }
        };
        self.list[i].flight = Some(InFlight {
            ask,
            deadline: now.add(wait),
            state,
        });
    }

    /// A request failed: back off.
    fn fail(&mut self, i: usize, now: Timestamp) {
        self.stats.failed += 1;
        let t = &mut self.list[i];
        t.flight = None;
        t.failures = t.failures.saturating_add(1);
        let back = self
            .cfg
            .backoff
            .saturating_mul(1u32 << (t.failures - 1).min(16))
            .min(self.cfg.max_backoff);
        t.next_at = now.add(back);
    }

    /// A request succeeded.
    fn succeed(&mut self, i: usize, now: Timestamp, interval: Option<u32>, reply: TrackerReply) {
        self.answered(i, now);
        if !reply.scrape {
            let wait = Duration::from_secs(interval.unwrap_or(0) as u64).min(self.cfg.max_interval);
            self.not_before(i, reply.info_hash, now.add(wait));
        }
        self.out.push_back(TrackerOutput::Reply(reply));
    }

    /// The tracker answered (whatever it said): no back-off.
    fn answered(&mut self, i: usize, now: Timestamp) {
        let t = &mut self.list[i];
        t.flight = None;
        t.failures = 0;
        t.next_at = now;
    }

    /// The tracker refused this torrent (an error, a `failure reason`, or an
    /// unusable answer to the request; opentracker answers a torrent off its
    /// whitelist with an empty announce): counted, the torrent is not asked of it
    /// again for `max_backoff`, and the tracker goes on with the next ask.
    fn refuse(&mut self, i: usize, now: Timestamp) {
        self.stats.refused += 1;
        let Some(ask) = self.list[i].flight.as_ref().map(|f| f.ask) else {
            return;
        };
        self.answered(i, now);
        if let Ask::Announce(ih) = ask {
            self.not_before(i, ih, now.add(self.cfg.max_backoff));
        }
    }

    /// Remembers (bounded, the earliest forgotten first) when `ih` may be
    /// announced to tracker `i` again.
    fn not_before(&mut self, i: usize, ih: InfoHash, at: Timestamp) {
        let t = &mut self.list[i];
        if let Some(old) = t.again.remove(&ih) {
            t.again_order.remove(&(old, ih));
        }
        while t.again.len() >= self.cfg.remember {
            match t.again_order.pop_first() {
                Some((_, old)) => {
                    t.again.remove(&old);
                }
                None => break,
            }
        }
        t.again.insert(ih, at);
        t.again_order.insert((at, ih));
    }

    fn filter(&mut self, peers: Vec<SocketAddr>) -> Vec<SocketAddr> {
        let n = peers.len();
        let ok: Vec<SocketAddr> = peers
            .into_iter()
            .map(canonical)
            .filter(|p| is_sendable(p, self.allow_private))
            .collect();
        self.stats.peers_filtered += (n - ok.len()) as u64;
        self.stats.peers += ok.len() as u64;
        ok
    }

    /// A datagram from a UDP tracker's address.
    pub fn on_datagram(&mut self, now: Timestamp, from: SocketAddr, bytes: &[u8]) {
        self.udp_reply(now, from, bytes);
        self.run(now);
    }

    fn udp_reply(&mut self, now: Timestamp, from: SocketAddr, bytes: &[u8]) {
        let Some(i) = self
            .list
            .iter()
            .position(|t| t.url.scheme == Scheme::Udp && t.url.addr == Some(from))
        else {
            return;
        };
        let reply = match udp::decode_reply(bytes, Family::of(&from)) {
            Ok(r) => r,
            Err(e) => {
                *self.stats.udp_malformed.entry(e).or_default() += 1;
                // An unusable answer to the request in flight (its transaction
                // id): a failed connect backs off, a failed announce or scrape
                // is that torrent's refusal. Anything else only counts.
                let tid = bytes
                    .get(4..8)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                match self.list[i].flight.as_ref().map(|f| &f.state) {
                    Some(Flight::UdpConnect { tid: t, .. }) if Some(*t) == tid => self.fail(i, now),
                    Some(Flight::UdpRequest { tid: t, .. }) if Some(*t) == tid => {
                        self.refuse(i, now)
                    }
                    _ => self.stats.unexpected += 1,
                }
                return;
            }
        };
        let Some(f) = self.list[i].flight.as_ref() else {
            self.stats.unexpected += 1;
            return;
        };
        let ask = f.ask;
        let (tid, connecting) = match f.state {
            Flight::UdpConnect { tid, .. } => (tid, true),
            Flight::UdpRequest { tid, .. } => (tid, false),
            Flight::Http { .. } => {
                self.stats.unexpected += 1;
                return;
            }
        };
        if reply.transaction_id() != tid {
            self.stats.unexpected += 1;
            return;
        }
        let tracker = self.list[i].url.raw.clone();
        match (reply, connecting, ask) {
            (UdpReply::Connect { connection_id, .. }, true, _) => {
                self.list[i].connection = Some((connection_id, now.add(CONNECTION_ID_TTL)));
                self.send_udp(i, now, ask, false, 0);
            }
            (
                UdpReply::Announce {
                    interval,
                    leechers,
                    seeders,
                    peers,
                    ..
                },
                false,
                Ask::Announce(info_hash),
            ) => {
                self.stats.announces += 1;
                let peers = self.filter(peers);
                let r = TrackerReply {
                    info_hash,
                    tracker,
                    scrape: false,
                    peers,
                    seeders: Some(seeders),
                    leechers: Some(leechers),
                    downloaded: None,
                };
                self.succeed(i, now, Some(interval), r);
            }
            (UdpReply::Scrape { counts, .. }, false, Ask::Scrape(info_hash)) => {
                self.stats.scrapes += 1;
                let c = counts.first().copied().unwrap_or_default();
                let r = TrackerReply {
                    info_hash,
                    tracker,
                    scrape: true,
                    peers: Vec::new(),
                    seeders: Some(c.complete),
                    leechers: Some(c.incomplete),
                    downloaded: Some(c.downloaded),
                };
                self.succeed(i, now, None, r);
            }
            (UdpReply::Error { message, .. }, connecting, _) => {
                tracing::debug!(tracker = %tracker, %message, "tracker refused");
                // (An expired connection id is one reason for an error.)
                self.list[i].connection = None;
                if connecting {
                    self.stats.refused += 1;
                    self.fail(i, now);
                } else {
                    self.refuse(i, now);
                }
            }
            _ => {
                // A well-formed reply of the wrong action for the transaction.
                self.stats.unexpected += 1;
                self.fail(i, now);
            }
        }
    }

    fn http_flight(&mut self, conn: ConnId) -> Option<(usize, &mut InFlight)> {
        let i = conn.index.checked_sub(CONN_BASE)? as usize;
        let f = self.list.get_mut(i)?.flight.as_mut()?;
        match f.state {
            Flight::Http { conn: c, .. } if c == conn => Some((i, f)),
            _ => None,
        }
    }

    /// An HTTP tracker's connection is up: send the request.
    pub fn on_connected(&mut self, now: Timestamp, conn: ConnId) {
        let Some((i, f)) = self.http_flight(conn) else {
            self.stats.unexpected += 1;
            return;
        };
        let ask = f.ask;
        let url = &self.list[i].url;
        let req = match ask {
            Ask::Announce(h) => Some(http::announce_request(
                url,
                &h,
                &self.peer_id,
                self.cfg.port,
                self.cfg.num_want,
            )),
            Ask::Scrape(h) => http::scrape_request(url, &[h]),
        };
        match req {
            Some(bytes) => self.out.push_back(TrackerOutput::Send {
                conn,
                bytes: Bytes::from(bytes),
            }),
            None => {
                self.out.push_back(TrackerOutput::Close { conn });
                self.fail(i, now);
            }
        }
    }

    /// Bytes of an HTTP tracker's response.
    pub fn on_data(&mut self, now: Timestamp, conn: ConnId, bytes: &[u8]) {
        let Some((i, f)) = self.http_flight(conn) else {
            self.stats.unexpected += 1;
            return;
        };
        if let Flight::Http { buf, .. } = &mut f.state {
            // One byte over the cap is enough to refuse it.
            let room = (http::MAX_RESPONSE + 1).saturating_sub(buf.len());
            buf.extend_from_slice(bytes.get(..bytes.len().min(room)).unwrap_or(&[]));
        }
        self.http_progress(i, now, false);
        self.run(now);
    }

    /// An HTTP tracker's connection ended (or never opened).
    pub fn on_closed(&mut self, now: Timestamp, conn: ConnId, reason: CloseReason) {
        let Some((i, _)) = self.http_flight(conn) else {
            return;
        };
        if reason == CloseReason::Eof {
            self.http_progress(i, now, true);
        } else {
            self.stats.connect_failures += 1;
            self.fail(i, now);
        }
        self.run(now);
    }

    fn http_progress(&mut self, i: usize, now: Timestamp, eof: bool) {
        let Some(f) = self.list[i].flight.as_ref() else {
            return;
        };
        let (conn, buf) = match &f.state {
            Flight::Http { conn, buf } => (*conn, buf),
            _ => return,
        };
        let ask = f.ask;
        let body = match http::parse_response(buf, eof) {
            Ok(Parsed::Partial) => return,
            Ok(Parsed::Body(b)) => b,
            Err(e) => {
                *self.stats.http_malformed.entry(e).or_default() += 1;
                if !eof {
                    self.out.push_back(TrackerOutput::Close { conn });
                }
                self.fail(i, now);
                return;
            }
        };
        if !eof {
            self.out.push_back(TrackerOutput::Close { conn });
        }
        let tracker = self.list[i].url.raw.clone();
        match ask {
            Ask::Announce(info_hash) => match http::decode_announce(&body) {
                Err(e) => {
                    *self.stats.http_malformed.entry(e).or_default() += 1;
                    self.fail(i, now);
                }
                Ok(a) if a.failure.is_some() => {
                    tracing::debug!(tracker = %tracker, reason = ?a.failure, "tracker refused");
                    self.refuse(i, now);
                }
                Ok(a) => {
                    self.stats.announces += 1;
                    let peers = self.filter(a.peers);
                    let interval = match (a.interval, a.min_interval) {
                        (Some(x), Some(m)) => Some(x.max(m)),
                        (x, m) => x.or(m),
                    };
                    let counted = a.complete.is_some() || a.incomplete.is_some();
                    let r = TrackerReply {
                        info_hash,
                        tracker,
                        scrape: false,
                        peers,
                        seeders: a.complete,
                        leechers: a.incomplete,
                        downloaded: None,
                    };
                    self.succeed(i, now, interval, r);
                    if !counted {
                        // No counts in the announce: ask the scrape for them.
                        self.enqueue(i, now, Ask::Scrape(info_hash));
                    }
                }
            },
            Ask::Scrape(info_hash) => match http::decode_scrape(&body, &info_hash) {
                Err(e) => {
                    *self.stats.http_malformed.entry(e).or_default() += 1;
                    self.fail(i, now);
                }
                Ok(Err(reason)) => {
                    tracing::debug!(tracker = %tracker, %reason, "tracker refused a scrape");
                    self.refuse(i, now);
                }
                Ok(Ok(c)) => {
                    self.stats.scrapes += 1;
                    let r = TrackerReply {
                        info_hash,
                        tracker,
                        scrape: true,
                        peers: Vec::new(),
                        seeders: c.map(|c| c.complete),
                        leechers: c.map(|c| c.incomplete),
                        downloaded: c.map(|c| c.downloaded),
                    };
                    self.succeed(i, now, None, r);
                }
            },
        }
    }
}

#[cfg(test)]
mod tests;
