//! The records the runtimes hand to the store and get back from it.
//!
//! Times are Unix seconds (wall clock, stamped by the runtime) unless a field says
//! otherwise. This crate does not depend on magnetar-core: the runtimes convert core
//! events into these records.

use std::net::SocketAddr;

/// A BitTorrent infohash as the DHT knows it: SHA-1 of the info dict (v1), or the
/// SHA-256 of a v2-only torrent's info dict truncated to 20 bytes.
pub type InfoHash = [u8; 20];

/// A BitTorrent v2 infohash: the full SHA-256 of the info dict (BEP 52).
pub type InfoHashV2 = [u8; 32];

/// Which BitTorrent versions a torrent's info dict describes (BEP 52).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HashKind {
    /// v1 only: the infohash is the SHA-1 of the info dict.
    #[default]
    V1,
    /// v2 only: the infohash is the SHA-256 truncated to 20 bytes; the full hash is
    /// kept beside it.
    V2,
    /// Both (a hybrid): the infohash is the v1 SHA-1; the torrent is also found by
    /// its v2 hash (truncated or full).
    Hybrid,
}

impl HashKind {
    /// `v1`, `v2` or `hybrid`.
    pub fn as_str(self) -> &'static str {
        match self {
            HashKind::V1 => "v1",
            HashKind::V2 => "v2",
            HashKind::Hybrid => "hybrid",
        }
    }

    /// The kind of a torrent with these hashes: v2 when it has no v1 hash, hybrid
    /// when it has both.
    pub fn of(has_v1: bool, v2: Option<&InfoHashV2>) -> HashKind {
        match (has_v1, v2.is_some()) {
            (_, false) => HashKind::V1,
            (false, true) => HashKind::V2,
            (true, true) => HashKind::Hybrid,
        }
    }
}

/// The 20 bytes the DHT uses for a v2 hash (its first 20).
pub fn truncate_v2(v2: &InfoHashV2) -> InfoHash {
    let mut out = [0u8; 20];
    out.copy_from_slice(&v2[..20]);
    out
}

/// How an infohash was discovered: a bitset, merged (OR) on every sighting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Sources(pub u8);

impl Sources {
    /// Seen in an `announce_peer` query.
    pub const ANNOUNCE: Sources = Sources(1);
    /// Seen in a BEP 51 `sample_infohashes` reply.
    pub const SAMPLE: Sources = Sources(2);
    /// Seen in a `get_peers` query.
    pub const GET_PEERS: Sources = Sources(4);
    /// Came from an import (JSON lines or magnetico).
    pub const IMPORT: Sources = Sources(8);

    /// True when every bit of `other` is set here.
    pub fn contains(self, other: Sources) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Sources {
    type Output = Sources;
    fn bitor(self, rhs: Sources) -> Sources {
        Sources(self.0 | rhs.0)
    }
}

/// One file of a torrent. `path` joins the path components with `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
}

/// A torrent whose metadata was fetched (or imported): what the runtime sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TorrentInput {
    /// The v1 infohash; for a v2-only torrent, its truncated v2 hash.
    pub infohash: InfoHash,
    /// v1, v2 or hybrid.
    pub kind: HashKind,
    /// The full SHA-256 infohash (v2 and hybrid torrents).
    pub v2: Option<InfoHashV2>,
    pub name: String,
    pub total_size: u64,
    pub piece_length: u32,
    pub piece_count: u32,
    pub private: bool,
    /// The info dict's `source` key, if any.
    pub source: Option<String>,
    /// For a single-file torrent, one entry whose path is the name.
    pub files: Vec<FileEntry>,
    pub discovered_at: u64,
    pub sources: Sources,
    /// BEP 33 scrape, if known.
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
    /// When the scrape was measured (Unix seconds), if known.
    pub scraped_at: Option<u64>,
    /// The raw bencoded info dict (its SHA-1 is the infohash). Stored only when the
    /// store keeps info dicts (`StoreOptions::keep_info`).
    pub info: Option<Vec<u8>>,
}

/// A stored torrent (without its file list).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TorrentRecord {
    /// The v1 infohash; for a v2-only torrent, its truncated v2 hash.
    pub infohash: InfoHash,
    /// v1, v2 or hybrid.
    pub kind: HashKind,
    /// The full SHA-256 infohash (v2 and hybrid torrents).
    pub v2: Option<InfoHashV2>,
    pub name: String,
    pub total_size: u64,
    pub piece_length: u32,
    pub piece_count: u32,
    pub file_count: u32,
    pub private: bool,
    pub source: Option<String>,
    pub discovered_at: u64,
    pub last_seen_at: u64,
    pub sources: Sources,
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
    /// When `seeders`/`leechers` were measured (Unix seconds); `None` for counts
    /// stored before this was recorded (or no counts).
    pub scraped_at: Option<u64>,
    /// The raw info dict is stored (a `.torrent` can be exported).
    pub has_info: bool,
}

/// A stored torrent with its files, as returned by `Store::get`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Torrent {
    pub record: TorrentRecord,
    pub files: Vec<FileEntry>,
}

/// What the store knows of a peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PeerStatus {
    Good,
    #[default]
    Unknown,
    Bad,
    Blacklisted,
}

/// A BitTorrent peer, as last written by the runtime (the runtime owns the counters
/// and writes the whole record; the store keeps the latest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRecord {
    pub addr: SocketAddr,
    /// Client name from the extension handshake (`v`), empty if unknown.
    pub client: String,
    pub attempts: u32,
    pub successes: u32,
    pub failures: u32,
    pub rtt_ms: Option<u32>,
    /// Whether the peer supports ut_metadata (BEP 9), if known.
    pub ut_metadata: Option<bool>,
    pub last_error: String,
    pub status: PeerStatus,
    pub last_seen: u64,
}

/// Status of a DHT node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NodeStatus {
    Good,
    #[default]
    Questionable,
    Bad,
}

/// Per-query-type counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueryCounts {
    pub ping: u32,
    pub find_node: u32,
    pub get_peers: u32,
    pub announce_peer: u32,
    pub sample_infohashes: u32,
    pub other: u32,
}

/// A DHT node; the next start bootstraps from these (`Store::saved_nodes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: [u8; 20],
    pub addr: SocketAddr,
    pub rtt_ms: Option<u32>,
    /// Queries we sent to it, by type.
    pub queries: QueryCounts,
    /// Responses we got from it, by type.
    pub responses: QueryCounts,
    pub status: NodeStatus,
    pub last_seen: u64,
}

/// Counters of one crawl session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCounters {
    pub infohashes_discovered: u64,
    pub metadata_fetched: u64,
    pub metadata_failed: u64,
    pub torrents_new: u64,
    pub dht_queries_sent: u64,
    pub dht_responses_received: u64,
}

/// One run of the crawler. Written at start, periodically and at the end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: u64,
    pub started_at: u64,
    pub ended_at: Option<u64>,
    pub counters: SessionCounters,
    pub peak_rss_bytes: u64,
    pub cpu_ms: u64,
}

/// Outcome of one metadata request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    Success,
    Failure,
}

/// One metadata (ut_metadata) request to one peer; kept with bounded retention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    pub infohash: InfoHash,
    pub peer: SocketAddr,
    /// Start time in Unix milliseconds.
    pub started_at_ms: u64,
    pub duration_ms: u32,
    pub outcome: RequestOutcome,
    /// Failure reason (e.g. "timeout", "no_ut_metadata", "hash_mismatch"); empty on success.
    pub reason: String,
    pub pieces: u32,
    pub client: String,
    /// The session's handshake: "plaintext", "rc4", "mse_plaintext" (MSE, then
    /// plaintext), "mse_incomplete"; empty in records written before it was kept.
    pub encryption: String,
    /// The session's transport: "tcp" or "utp"; empty in records written
    /// before it was kept.
    pub transport: String,
}

/// One write for the writer thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A torrent with metadata. Idempotent: a known infohash only updates
    /// last_seen_at, sources and the scrape (and adds the info dict if it was missing).
    Torrent(Box<TorrentInput>),
    /// A known infohash was seen again. Ignored (and counted) when unknown.
    Seen {
        infohash: InfoHash,
        at: u64,
        sources: Sources,
        seeders: Option<u32>,
        leechers: Option<u32>,
    },
    /// A BEP 33 scrape of a stored torrent, measured at `at`: replaces its counts
    /// unless they were measured later. Ignored (and counted) when unknown.
    Scrape {
        infohash: InfoHash,
        at: u64,
        seeders: u32,
        leechers: u32,
    },
    Peer(PeerRecord),
    Node(NodeRecord),
    Session(SessionRecord),
    Request(RequestRecord),
    /// An operator rule (or `magnetar delete`) keeps this infohash out for good: it is
    /// remembered as a tombstone (with the rule's label and the time) and, if stored,
    /// removed. A later `Op::Torrent` of it is not stored. Applied before the
    /// batch's torrents.
    Tombstone {
        infohash: InfoHash,
        at: u64,
        label: String,
    },
    /// An operator rule hides this infohash: stored, but never indexed for search
    /// nor listed by `recent` and exports. If stored, its postings are removed; a
    /// later `Op::Torrent` of it is stored without postings. Applied before the
    /// batch's torrents.
    Hide {
        infohash: InfoHash,
        at: u64,
        label: String,
    },
}

/// A filter mark of an infohash ([`Op::Tombstone`], [`Op::Hide`]): which rule, when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterMark {
    /// Unix seconds.
    pub at: u64,
    /// The rule's label (`delete` for `magnetar delete`).
    pub label: String,
}
