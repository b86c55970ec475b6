//! What the fetcher is configured with and what it reports: its config, the
//! metadata and failure outcomes, per-session reports, the peer capabilities it
//! remembers, and its counters.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;

use crate::id::InfoHash;
use crate::metadata::{HashKind, InfoError, TorrentInfo};
use crate::session::FailReason;
use crate::time::Timestamp;
use crate::{ConnId, Output, SocketId};

/// The fetcher's limits and timeouts (`Config::fetch`).
#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// Largest `metadata_size` accepted (default 10 MiB).
    pub max_metadata_size: usize,
    /// A TCP connect not completed in this long fails the session (default 3 s).
    pub connect_timeout: Duration,
    /// Deadline for a whole peer session, from the connect attempt.
    pub peer_timeout: Duration,
    /// Deadline for a whole infohash, from the first `fetch` call.
    pub infohash_timeout: Duration,
    /// Parallel sessions per infohash (P).
    pub peers_per_infohash: usize,
    /// Sessions in flight in total.
    pub max_sessions: usize,
    /// Sessions in flight to one IP address, across infohashes (default 2).
    pub max_sessions_per_ip: usize,
    /// Our BEP 10 `v`, if any.
    pub client_version: Option<String>,
    /// A connected peer silent this long fails with `IdleTimeout`.
    pub idle_timeout: Duration,
    /// Outstanding BEP 9 requests per session (also capped by the peer's `reqq`).
    pub request_window: u32,
    /// Peers remembered per infohash (queued, running or done); more are dropped.
    pub max_peers_per_infohash: usize,
    /// Infohashes being fetched or queued; `fetch` returns `Full` beyond this.
    pub max_jobs: usize,
    /// Entries in the peer capability cache (LRU).
    pub peer_cache_size: usize,
    /// Frame size cap (1 MiB).
    pub max_frame: usize,
    /// Plaintext or encrypted (MSE) first, or encrypted only.
    pub encryption: EncryptionPolicy,
    /// MSE handshakes started per second, at most (each costs two modular
    /// exponentiations); connections over it wait, counted in
    /// [`EncryptionStats::dh_deferred`]. The budget holds one second's worth.
    pub max_dh_per_sec: u32,
    /// Whether the crawler fetches over uTP too (the connection strategy of
    /// [`crate::fetch::Fetcher::with_utp`]); default on.
    pub utp: bool,
    /// uTP datagrams sent per second at most, over every stream (the transfer
    /// budget; separate from the DHT query budget); 0 for no cap. Datagrams
    /// over it wait in the uTP manager's bounded queue.
    pub utp_packets_per_sec: u32,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            max_metadata_size: 10 << 20,
            connect_timeout: Duration::from_secs(3),
            peer_timeout: Duration::from_secs(10),
            infohash_timeout: Duration::from_secs(60),
            peers_per_infohash: 3,
            max_sessions: 1000,
            max_sessions_per_ip: 2,
            client_version: None,
            idle_timeout: Duration::from_secs(5),
            request_window: 16,
            max_peers_per_infohash: 256,
            max_jobs: 100_000,
            peer_cache_size: 65_536,
            max_frame: crate::wire::MAX_FRAME,
            encryption: EncryptionPolicy::default(),
            max_dh_per_sec: 2000,
            utp: true,
            utp_packets_per_sec: 20_000,
        }
    }
}

/// Which handshake the fetcher tries first with a peer it knows nothing about,
/// and whether plaintext is allowed at all. Whatever comes first, a peer that
/// refuses it the way forced-encryption or plaintext-only peers do is tried
/// once the other way (unless `Require` forbids plaintext), and the outcome is
/// remembered in the capability cache.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EncryptionPolicy {
    /// The BitTorrent handshake in clear first (cheapest: no Diffie-Hellman,
    /// one round trip less), MSE when the peer refuses plaintext, was seen to
    /// need it, or says in PEX that it prefers it. The default: most peers
    /// accept both, so this costs the extra connection only for peers that
    /// force encryption, once each (the cache remembers). rtorrent's default
    /// (`allow`) is the same; libtorrent's (`pe_enabled`) is encrypted first.
    #[default]
    PreferPlaintext,
    /// MSE first, plaintext when the peer refuses MSE.
    PreferEncrypted,
    /// MSE only, never the plaintext handshake.
    Require,
}

/// The handshake one connection attempt uses.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WireMode {
    /// The BitTorrent handshake in clear.
    Plaintext,
    /// MSE first (offering RC4 and plaintext-after-handshake).
    Encrypted,
}

/// What a session's stream carried, as reported.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Encryption {
    /// Plaintext handshake (no MSE).
    #[default]
    Plaintext,
    /// MSE tried but not completed.
    MseIncomplete,
    /// MSE, then RC4 for the whole stream.
    Rc4,
    /// MSE, then plaintext after the handshake (the peer's `crypto_select`).
    MsePlaintext,
}

impl Encryption {
    /// A short lowercase name (records, metrics, logs).
    pub fn name(self) -> &'static str {
        match self {
            Encryption::Plaintext => "plaintext",
            Encryption::MseIncomplete => "mse_incomplete",
            Encryption::Rc4 => "rc4",
            Encryption::MsePlaintext => "mse_plaintext",
        }
    }

    /// The attempt's mode.
    pub fn mode(self) -> WireMode {
        match self {
            Encryption::Plaintext => WireMode::Plaintext,
            _ => WireMode::Encrypted,
        }
    }
}

/// The byte stream a session ran over.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    /// A TCP connection the runtime opened.
    #[default]
    Tcp,
    /// A uTP stream (BEP 29) on an identity's DHT socket.
    Utp,
}

impl Transport {
    /// A short lowercase name (records, metrics, logs).
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Utp => "utp",
        }
    }

    /// The other transport.
    pub fn other(self) -> Transport {
        match self {
            Transport::Tcp => Transport::Utp,
            Transport::Utp => Transport::Tcp,
        }
    }
}

/// Why a session ran over the transport it did (the connection strategy).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TransportChoice {
    /// The default: TCP first.
    Default,
    /// The peer sent us a datagram from this address recently (a DHT query or
    /// reply, an `implied_port` announce): uTP from the socket it talked to.
    UdpContact,
    /// PEX flagged the peer as speaking uTP and not as reachable (BEP 11 flags
    /// 0x04 without 0x10): behind a NAT, TCP would not get through.
    PexUtp,
    /// The capability cache: this transport worked with the peer before.
    Remembered,
    /// The other transport failed to connect (refused or timed out): once
    /// this way.
    Fallback,
    /// A relay answered our BEP 55 `rendezvous` with `connect`: uTP at once,
    /// while the target opens uTP to us (both NATs map the pair).
    Holepunch,
}

/// The fetcher's BEP 55 holepunch counters (part of [`FetchStats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HolepunchStats {
    /// `rendezvous` messages sent to a relay.
    pub rendezvous_sent: u64,
    /// Peers that needed a relay (every direct attempt failed to connect) but
    /// had none connected that offered `ut_holepunch`, or whose job's
    /// rendezvous budget was spent.
    pub no_relay: u64,
    /// `connect` answers to our rendezvous: a uTP attempt each.
    pub connects: u64,
    /// `connect` messages nobody asked for (ignored, as BEP 55 allows).
    pub connects_unsolicited: u64,
    /// `error` answers, by BEP 55 code name (`no_such_peer`, `not_connected`,
    /// `no_support`, `no_self`, `other`).
    pub errors: BTreeMap<&'static str, u64>,
    /// `error` messages for no rendezvous of ours (ignored).
    pub errors_unsolicited: u64,
    /// Rendezvous still unanswered when their job ended.
    pub unanswered: u64,
    /// Holepunched uTP sessions: started, connected, delivered metadata, failed.
    pub attempts: u64,
    /// See `attempts`.
    pub connected: u64,
    /// See `attempts`.
    pub ok: u64,
    /// See `attempts`.
    pub failed: u64,
    /// Sessions kept open only as relays (the peer offered `ut_holepunch` and
    /// no `ut_metadata`).
    pub relay_sessions: u64,
    /// `rendezvous` requests to us (we do not relay; answered `NotConnected`).
    pub relay_requests: u64,
    /// `ut_holepunch` payloads that did not decode, or came from a peer that
    /// never offered the extension.
    pub malformed: u64,
    /// `ut_holepunch` messages over a session's cap.
    pub dropped: u64,
    /// A peer's uTP SYN crossed our own dialling (a holepunch's simultaneous
    /// open): a candidate session on its stream (next to our attempt, or on
    /// its own for a target a fetch still waits for).
    pub crossed: u64,
    /// Candidate sessions of a crossed pair that ended without metadata while
    /// the other went on (the peer kept the other connection).
    pub crossed_lost: u64,
    /// Holepunch targets dialled again after their stream ended before the
    /// BitTorrent handshake (after 2, 4, 8, 16 s; at most 4 per target and
    /// fetch).
    pub redials: u64,
}

/// The fetcher's transport counters (part of [`FetchStats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Sessions started, by transport.
    pub attempts: BTreeMap<Transport, u64>,
    /// Sessions whose transport connected, by transport.
    pub connected: BTreeMap<Transport, u64>,
    /// Sessions that delivered verified metadata, by transport.
    pub ok: BTreeMap<Transport, u64>,
    /// Sessions that failed, by transport and reason.
    pub failed: BTreeMap<(Transport, FailReason), u64>,
    /// Why each session's transport was chosen.
    pub chosen: BTreeMap<(Transport, TransportChoice), u64>,
    /// uTP attempts the uTP socket manager could not open (its connection or
    /// half-open caps): failed as a local error.
    pub utp_unavailable: u64,
    /// uTP attempts that found those caps full and waited for a slot (a
    /// bounded queue, see `UtpLink`).
    pub utp_waited: u64,
    /// uTP streams aborted because a write did not fit their send buffer.
    pub utp_write_overflow: u64,
    /// Times uTP datagrams waited for the transfer budget
    /// (`FetchConfig::utp_packets_per_sec`).
    pub utp_budget_waits: u64,
    /// Peers heard over UDP, remembered for the strategy (gauge), and the
    /// oldest forgotten to make room (counted).
    pub udp_contacts: usize,
    /// See `udp_contacts`.
    pub udp_contacts_evicted: u64,
    /// Peers no direct attempt reached, waiting for their next datagram to be
    /// retried (gauge; see `Fetcher::note_udp_contact`).
    pub recontact_waiting: usize,
    /// Of those, the oldest forgotten to make room.
    pub recontact_evicted: u64,
    /// Retries started by a waiting peer's datagram.
    pub recontact_retries: u64,
    /// Retries for which no job could start (`max_jobs`).
    pub recontact_no_room: u64,
    /// Jobs a contact started that fetched the metadata, and that failed
    /// (not reported as failures: the owner had them already).
    pub recontact_fetched: u64,
    /// See `recontact_fetched`.
    pub recontact_failed: u64,
}

impl TransportStats {
    /// The count for `t` in one of the maps.
    pub fn get(map: &BTreeMap<Transport, u64>, t: Transport) -> u64 {
        map.get(&t).copied().unwrap_or(0)
    }

    /// Failures over `t`, every reason.
    pub fn failed_total(&self, t: Transport) -> u64 {
        self.failed
            .iter()
            .filter(|((x, _), _)| *x == t)
            .map(|(_, n)| *n)
            .sum()
    }
}

/// The fetcher's encryption counters (part of [`FetchStats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncryptionStats {
    /// Sessions started with the plaintext handshake.
    pub plaintext_attempts: u64,
    /// Of those, sessions that got the peer's BitTorrent handshake.
    pub plaintext_ok: u64,
    /// Of those, sessions that failed before the peer's BitTorrent handshake.
    pub plaintext_failed: u64,
    /// Sessions started with MSE.
    pub encrypted_attempts: u64,
    /// Of those, sessions whose MSE handshake completed.
    pub encrypted_ok: u64,
    /// Of those, sessions that failed before MSE completed (per reason in
    /// `FetchStats::failures`: `Mse*`, `DhTimeout`, `ClosedDuringMse`).
    pub encrypted_failed: u64,
    /// Completed MSE handshakes where the peer selected RC4.
    pub selected_rc4: u64,
    /// Completed MSE handshakes where the peer selected plaintext.
    pub selected_plaintext: u64,
    /// Peers that refused plaintext and were retried with MSE.
    pub retried_encrypted: u64,
    /// Peers that refused MSE and were retried in plaintext.
    pub retried_plaintext: u64,
    /// Connections that waited for the Diffie-Hellman budget.
    pub dh_deferred: u64,
    /// Modular exponentiations done.
    pub modpows: u64,
}

/// Verified metadata for an infohash.
#[derive(Clone, Debug)]
pub struct MetadataFetched {
    /// The infohash the metadata was verified against.
    pub info_hash: InfoHash,
    /// The parsed, validated info dict.
    pub info: TorrentInfo,
    /// The raw, verified info dict.
    pub raw: Bytes,
    /// The peer that served it.
    pub peer: SocketAddr,
    /// That peer's client (`v`, else BEP 20 peer id).
    pub client: Option<String>,
    /// Which digest matched (SHA-1, or truncated SHA-256 for v2).
    pub hash: HashKind,
    /// From the first `fetch` call to verification.
    pub elapsed: Duration,
    /// Metadata pieces (16 KiB) received from the serving peer.
    pub pieces: u32,
    /// Sessions started for this infohash (including the successful one).
    pub peers_tried: u32,
}

/// Every peer failed for an infohash (or its deadline passed, or the verified info
/// dict was invalid).
#[derive(Clone, Debug)]
pub struct MetadataFailed {
    /// The infohash.
    pub info_hash: InfoHash,
    /// Each peer's reason, in the order they ended (untried peers as `NotTried` or
    /// `KnownNoMetadata`).
    pub reasons: Vec<(SocketAddr, FailReason)>,
    /// Time from the first `fetch` call to the failure.
    pub elapsed: Duration,
    /// Sessions started for this infohash.
    pub peers_tried: u32,
    /// Set when the metadata hashed right but failed validation.
    pub info_error: Option<InfoError>,
    /// True when the infohash deadline ended the fetch.
    pub timed_out: bool,
    /// What happens next to this infohash (set by the crawl strategy).
    pub next: AfterFailure,
}

/// A failed fetch, before anyone has said what happens next to the infohash.
#[derive(Clone, Debug)]
pub struct FetchFailure {
    /// The infohash.
    pub info_hash: InfoHash,
    /// Each peer's reason, in the order they ended.
    pub reasons: Vec<(SocketAddr, FailReason)>,
    /// Time since the fetch started.
    pub elapsed: Duration,
    /// Sessions started.
    pub peers_tried: u32,
    /// Set when the metadata hashed right but failed validation.
    pub info_error: Option<InfoError>,
    /// True when the infohash deadline ended the fetch.
    pub timed_out: bool,
}

impl FetchFailure {
    /// The public event, with what happens next.
    pub fn into_event(self, next: AfterFailure) -> MetadataFailed {
        MetadataFailed {
            info_hash: self.info_hash,
            reasons: self.reasons,
            elapsed: self.elapsed,
            peers_tried: self.peers_tried,
            info_error: self.info_error,
            timed_out: self.timed_out,
            next,
        }
    }
}

/// What the fetcher hands out.
#[derive(Debug)]
pub enum FetchOutput {
    /// A driver output or a public event, final as it is.
    Output(Output),
    /// A failed fetch: its owner builds the `MetadataFailed` event.
    Failed(Box<FetchFailure>),
    /// Open a uTP stream for `conn` from socket `local` to `to` (only with
    /// [`crate::fetch::Fetcher::with_utp`]). Its owner runs the uTP manager
    /// and routes that connection's `Send` and `Close` to the stream (see
    /// [`crate::fetch::UtpLink`]).
    UtpConnect {
        /// The fetcher's connection.
        conn: ConnId,
        /// The identity's socket to open it from.
        local: SocketId,
        /// The peer.
        to: SocketAddr,
    },
}

/// What the crawler does after a failed fetch.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AfterFailure {
    /// The fetch was the runtime's own (`fetch_metadata`): core does not retry it.
    NotManaged,
    /// Only early peers (announcers, or the peers of an earlier attempt) failed: the
    /// crawl strategy goes on with a peer search for it, running or starting now.
    StillSearching,
    /// The crawl strategy tries again (a new peer search, or the same peers) at
    /// this time (exponential backoff).
    RetryAt(crate::Timestamp),
    /// The strategy gave up: backoff exhausted, or metadata that hashed right but
    /// is invalid (invalid for everyone).
    GivenUp,
}

/// How a session ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum SessionOutcome {
    /// This peer delivered verified metadata.
    Ok,
    /// The session failed, for this reason.
    Failed(FailReason),
    /// Closed by us because another peer delivered first (or the fetch ended).
    Cancelled,
}

/// One peer session's outcome.
#[derive(Clone, Debug)]
pub struct PeerSessionReport {
    /// The infohash the session fetched.
    pub info_hash: InfoHash,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The session's connection.
    pub conn: ConnId,
    /// When the connect was requested.
    pub started_at: Timestamp,
    /// From `started_at` to the session's end.
    pub duration: Duration,
    /// How the session ended.
    pub outcome: SessionOutcome,
    /// Connect time (connect request to TCP connected).
    pub connect_time: Option<Duration>,
    /// Round trip: TCP connected to the peer's handshake.
    pub rtt: Option<Duration>,
    /// Metadata pieces (16 KiB) received.
    pub pieces: u32,
    /// Bytes received from the peer.
    pub bytes_in: u64,
    /// Bytes sent to the peer.
    pub bytes_out: u64,
    /// Client from the peer id (BEP 20).
    pub client: Option<String>,
    /// Client from the extension handshake `v`.
    pub version: Option<String>,
    /// The peer id from the BEP 3 handshake.
    pub peer_id: Option<[u8; 20]>,
    /// The peer's `ut_metadata` id, when it advertised one.
    pub ut_metadata: Option<u8>,
    /// The peer's `ut_pex` id (BEP 11), when it advertised one.
    pub ut_pex: Option<u8>,
    /// The BEP 9 `metadata_size` the peer advertised, in bytes.
    pub metadata_size: Option<u32>,
    /// The handshake's Fast extension bit (BEP 6).
    pub fast: bool,
    /// The handshake's DHT bit (BEP 5).
    pub dht: bool,
    /// The extension handshake's `yourip`: how the peer sees us.
    pub yourip: Option<IpAddr>,
    /// The extension handshake's `p`: the peer's listen port.
    pub listen_port: Option<u16>,
    /// The extension handshake's `reqq`: requests the peer queues.
    pub reqq: Option<u32>,
    /// PEX contacts received in this session.
    pub pex_added: u32,
    /// The handshake used and, for MSE, what the peer selected.
    pub encryption: Encryption,
    /// The byte stream it ran over.
    pub transport: Transport,
}

/// What the capability cache remembers about a peer address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerCapability {
    /// The peer's client, when it said.
    pub client: Option<String>,
    /// `Some(false)` when the peer is known not to serve metadata.
    pub ut_metadata: Option<bool>,
    /// The reason of its latest failed session.
    pub last_failure: Option<FailReason>,
    /// Sessions that delivered metadata.
    pub successes: u32,
    /// Sessions that failed.
    pub failures: u32,
    /// The stream of the latest session that got past the handshake.
    pub encryption: Option<Encryption>,
    /// The mode the peer refused last over TCP (closed on it), if it did
    /// after its latest handshake over TCP. Kept per transport: a TCP
    /// "refusal" may be TCP switched off (libtorrent closes every incoming
    /// TCP connection then), which says nothing about uTP.
    pub refused_tcp: Option<WireMode>,
    /// The same over uTP.
    pub refused_utp: Option<WireMode>,
    /// The transport of the latest session that got the peer's handshake.
    pub transport: Option<Transport>,
}

impl PeerCapability {
    /// The mode the peer refused last over `t`, if it did (see
    /// [`PeerCapability::refused_tcp`]).
    pub fn refused(&self, t: Transport) -> Option<WireMode> {
        match t {
            Transport::Tcp => self.refused_tcp,
            Transport::Utp => self.refused_utp,
        }
    }

    pub(super) fn refused_mut(&mut self, t: Transport) -> &mut Option<WireMode> {
        match t {
            Transport::Tcp => &mut self.refused_tcp,
            Transport::Utp => &mut self.refused_utp,
        }
    }
}

/// The fetcher's counters, cumulative since it was created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Infohash fetches started.
    pub started: u64,
    /// Infohashes whose metadata was verified.
    pub fetched: u64,
    /// Infohash fetches that failed (every peer, or the deadline).
    pub failed: u64,
    /// `fetch` calls refused because `max_jobs` was reached.
    pub jobs_rejected_full: u64,
    /// Failed fetches that the infohash deadline ended (also in `failed`).
    pub jobs_timed_out: u64,
    /// Peer sessions started (connects requested).
    pub sessions_started: u64,
    /// Sessions that delivered verified metadata.
    pub sessions_ok: u64,
    /// Sessions that failed (per reason in `failures`).
    pub sessions_failed: u64,
    /// Sessions closed by us because the fetch ended first.
    pub sessions_cancelled: u64,
    /// Peers queued for an infohash.
    pub peers_added: u64,
    /// Peers offered again for an infohash that already had them.
    pub peers_duplicate: u64,
    /// Over `max_peers_per_infohash`.
    pub peers_dropped_cap: u64,
    /// Peers refused by the address filter ([`crate::addr::is_sendable`]): port 0,
    /// unspecified, bogon, or private without `allow_private`; from the API or PEX.
    pub peers_invalid: u64,
    /// Skipped because the cache says they never serve metadata.
    pub peers_skipped_cache: u64,
    /// PEX contacts received (BEP 11), over every session.
    pub pex_received: u64,
    /// Metadata pieces received, over every session.
    pub pieces_received: u64,
    /// Bytes received on metadata connections.
    pub bytes_in: u64,
    /// Bytes sent on metadata connections.
    pub bytes_out: u64,
    /// Metadata verified by the truncated SHA-256 of a v2 or hybrid torrent.
    pub v2_hash_matches: u64,
    /// Entries the peer capability cache evicted (LRU).
    pub cache_evictions: u64,
    /// Events for unknown or stale connection ids (ignored).
    pub stale_conn_events: u64,
    /// Session failures per reason.
    pub failures: BTreeMap<FailReason, u64>,
    /// Connections that failed on our side (`CloseReason::LocalError`, e.g. out of
    /// file descriptors): the peer was put back and new connects paused.
    pub local_backoffs: u64,
    /// Encryption attempts, outcomes, retries and the Diffie-Hellman budget.
    pub encryption: EncryptionStats,
    /// Attempts, connects, successes and failures by transport (TCP, uTP).
    pub transport: TransportStats,
    /// BEP 55 holepunch counters.
    pub holepunch: HolepunchStats,
}

impl FetchStats {
    /// Failures counted for `r`.
    pub fn failure_count(&self, r: FailReason) -> u64 {
        self.failures.get(&r).copied().unwrap_or(0)
    }
}
