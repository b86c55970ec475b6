//! Everything a batch holds besides torrents and sightings (schema 2), written in
//! the batch's transaction as the LMDB writer writes it, and read back with the
//! LMDB store's method names and meanings:
//!
//! - filter marks (`Op::Tombstone`, `Op::Hide`), before the batch's torrents: a
//!   tombstone is kept (the latest at/label win) and its stored torrent removed with
//!   its files, info dict, facets and hidden mark (foreign keys cascade); the
//!   upsert never stores a tombstoned infohash. A hidden mark is kept; the torrent
//!   stays stored but search, `recent` and the facet filters leave it out.
//! - peers, nodes, sessions: one upsert per table, the batch's last record of a
//!   key winning (LMDB: the latest `put`), in key order.
//! - requests: appended in batch order (increasing ids), then the oldest deleted
//!   beyond `max_requests`.
//!
//! # Concurrent writers
//! A tombstone written while another writer stores the same infohash must not let
//! the torrent back in. Each batch first takes transaction-scoped advisory locks on
//! the infohash buckets it touches (64 buckets by the first byte), exclusively for
//! a bucket holding one of its tombstones, shared otherwise, in bucket order (no
//! deadlock between them). A tombstone's delete then runs after every writer that
//! could be storing that infohash has committed, and a writer storing it after the
//! tombstone committed sees it (each statement takes a new snapshot under READ
//! COMMITTED). Upserts of peers, nodes and sessions are idempotent (the last commit
//! wins, as the last `put` does in LMDB).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use magnetar_storage::{
    FilterMark, FilterTotals, InfoHash, NodeRecord, NodeStatus, Op, PeerRecord, PeerStatus,
    QueryCounts, RequestOutcome, RequestRecord, SessionCounters, SessionRecord, TorrentRemoval,
};
use postgres::{Row, Transaction};

use crate::error::{PgError, Result};
use crate::write::BatchReport;
use crate::PgStore;

/// Labels are cut to this many bytes when stored (the LMDB store's bound).
pub const MAX_LABEL_BYTES: usize = 200;

/// Advisory lock keys of the infohash buckets: this base plus the bucket (0..64).
/// "mgtb" in ASCII, shifted clear of the migration lock's key.
const BUCKET_LOCK_BASE: i64 = 0x6d67_7462 << 16;
const BUCKETS: u8 = 64;

fn bucket(ih: &InfoHash) -> i64 {
    BUCKET_LOCK_BASE + i64::from(ih[0] % BUCKETS)
}

/// Takes the batch's bucket locks (see the module doc).
pub(crate) fn lock_buckets(tx: &mut Transaction<'_>, ops: &[Op]) -> Result<()> {
    let mut want: BTreeMap<i64, bool> = BTreeMap::new();
    for o in ops {
        match o {
            Op::Tombstone { infohash, .. } => {
                want.insert(bucket(infohash), true);
            }
            Op::Torrent(t) => {
                want.entry(bucket(&t.infohash)).or_insert(false);
            }
            _ => {}
        }
    }
    if want.is_empty() {
        return Ok(());
    }
    let keys: Vec<i64> = want.keys().copied().collect();
    let excl: Vec<bool> = want.values().copied().collect();
    // In key order (a BTreeMap): every writer locks buckets in one order.
    tx.execute("SELECT magnetar_lock_buckets($1, $2)", &[&keys, &excl])
        .map_err(PgError::db("locking infohash buckets"))?;
    Ok(())
}

/// A label as stored: at most [`MAX_LABEL_BYTES`] (cut at a character boundary),
/// NUL as U+FFFD.
fn label(s: &str) -> String {
    let mut end = s.len().min(MAX_LABEL_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].replace('\0', "\u{FFFD}")
}

fn i64_of(v: u64) -> Option<i64> {
    i64::try_from(v).ok()
}

type Marks = (Vec<Vec<u8>>, Vec<i64>, Vec<String>);

/// The marks of one kind, the batch's last of an infohash winning, in key order.
fn marks(ops: &[Op], tombstones: bool) -> Marks {
    let mut by: BTreeMap<InfoHash, (i64, String)> = BTreeMap::new();
    for o in ops {
        let (ih, at, l) = match (o, tombstones) {
            (
                Op::Tombstone {
                    infohash,
                    at,
                    label,
                },
                true,
            )
            | (
                Op::Hide {
                    infohash,
                    at,
                    label,
                },
                false,
            ) => (infohash, at, label),
            _ => continue,
        };
        // A time past bigint's range is kept as the largest (marks are not
        // refused: a lost tombstone would let the torrent back in).
        by.insert(*ih, (i64_of(*at).unwrap_or(i64::MAX), label(l)));
    }
    let mut out: Marks = (Vec::new(), Vec::new(), Vec::new());
    for (ih, (at, l)) in by {
        out.0.push(ih.to_vec());
        out.1.push(at);
        out.2.push(l);
    }
    out
}

/// Tombstones (with the removal of their torrents), then hidden marks.
pub(crate) fn write_marks(tx: &mut Transaction<'_>, ops: &[Op]) -> Result<()> {
    let (ih, at, lb) = marks(ops, true);
    if !ih.is_empty() {
        tx.execute(
            "INSERT INTO tombstones (infohash, at, label) \
             SELECT * FROM unnest($1::bytea[], $2::int8[], $3::text[]) \
             ON CONFLICT (infohash) DO UPDATE SET at = EXCLUDED.at, label = EXCLUDED.label",
            &[&ih, &at, &lb],
        )
        .map_err(PgError::db("writing tombstones"))?;
        tx.execute(
            "WITH gone AS (
                 DELETE FROM torrents WHERE id IN
                     (SELECT magnetar_torrent_id(ih) FROM unnest($1::bytea[]) AS u(ih))
                 RETURNING infohash)
             DELETE FROM hidden h USING gone WHERE h.infohash = gone.infohash",
            &[&ih],
        )
        .map_err(PgError::db("removing tombstoned torrents"))?;
    }
    let (ih, at, lb) = marks(ops, false);
    if !ih.is_empty() {
        tx.execute(
            "INSERT INTO hidden (infohash, at, label) \
             SELECT * FROM unnest($1::bytea[], $2::int8[], $3::text[]) \
             ON CONFLICT (infohash) DO UPDATE SET at = EXCLUDED.at, label = EXCLUDED.label",
            &[&ih, &at, &lb],
        )
        .map_err(PgError::db("writing hidden marks"))?;
    }
    Ok(())
}

fn peer_status_code(s: PeerStatus) -> i16 {
    match s {
        PeerStatus::Good => 0,
        PeerStatus::Unknown => 1,
        PeerStatus::Bad => 2,
        PeerStatus::Blacklisted => 3,
    }
}

fn peer_status_of(c: i16) -> Option<PeerStatus> {
    Some(match c {
        0 => PeerStatus::Good,
        1 => PeerStatus::Unknown,
        2 => PeerStatus::Bad,
        3 => PeerStatus::Blacklisted,
        _ => return None,
    })
}

fn node_status_code(s: NodeStatus) -> i16 {
    match s {
        NodeStatus::Good => 0,
        NodeStatus::Questionable => 1,
        NodeStatus::Bad => 2,
    }
}

fn node_status_of(c: i16) -> Option<NodeStatus> {
    Some(match c {
        0 => NodeStatus::Good,
        1 => NodeStatus::Questionable,
        2 => NodeStatus::Bad,
        _ => return None,
    })
}

fn counts(q: &QueryCounts) -> Vec<i64> {
    [
        q.ping,
        q.find_node,
        q.get_peers,
        q.announce_peer,
        q.sample_infohashes,
        q.other,
    ]
    .iter()
    .map(|&v| i64::from(v))
    .collect()
}

fn counts_of(v: &[i64]) -> Option<QueryCounts> {
    let g = |i: usize| v.get(i).and_then(|&x| u32::try_from(x).ok());
    Some(QueryCounts {
        ping: g(0)?,
        find_node: g(1)?,
        get_peers: g(2)?,
        announce_peer: g(3)?,
        sample_infohashes: g(4)?,
        other: g(5)?,
    })
}

fn text(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

/// Peers, nodes, sessions and requests of a batch.
pub(crate) fn write_records(
    tx: &mut Transaction<'_>,
    ops: &[Op],
    max_requests: u64,
    rep: &mut BatchReport,
) -> Result<()> {
    // Peers: the last record of an address wins.
    let mut peers: BTreeMap<(IpAddr, u16), &PeerRecord> = BTreeMap::new();
    let mut nodes: BTreeMap<[u8; 20], &NodeRecord> = BTreeMap::new();
    let mut sessions: BTreeMap<u64, &SessionRecord> = BTreeMap::new();
    let mut requests: Vec<&RequestRecord> = Vec::new();
    for o in ops {
        match o {
            Op::Peer(p) => {
                if i64_of(p.last_seen).is_none() {
                    rep.rejected += 1;
                    continue;
                }
                rep.peers += 1;
                peers.insert((p.addr.ip(), p.addr.port()), p);
            }
            Op::Node(n) => {
                if i64_of(n.last_seen).is_none() {
                    rep.rejected += 1;
                    continue;
                }
                rep.nodes += 1;
                nodes.insert(n.id, n);
            }
            Op::Session(s) => {
                let c = &s.counters;
                let fits = [
                    s.id,
                    s.started_at,
                    s.ended_at.unwrap_or(0),
                    c.infohashes_discovered,
                    c.metadata_fetched,
                    c.metadata_failed,
                    c.torrents_new,
                    c.dht_queries_sent,
                    c.dht_responses_received,
                    s.peak_rss_bytes,
                    s.cpu_ms,
                ]
                .iter()
                .all(|&v| i64_of(v).is_some());
                if !fits {
                    rep.rejected += 1;
                    continue;
                }
                rep.sessions += 1;
                sessions.insert(s.id, s);
            }
            Op::Request(r) => {
                if i64_of(r.started_at_ms).is_none() {
                    rep.rejected += 1;
                    continue;
                }
                rep.requests += 1;
                requests.push(r);
            }
            _ => {}
        }
    }
    if !peers.is_empty() {
        let mut ip = Vec::new();
        let mut port = Vec::new();
        let mut client = Vec::new();
        let (mut att, mut suc, mut fail) = (Vec::new(), Vec::new(), Vec::new());
        let mut rtt: Vec<Option<i64>> = Vec::new();
        let mut utm: Vec<Option<bool>> = Vec::new();
        let mut err = Vec::new();
        let mut status = Vec::new();
        let mut seen = Vec::new();
        for ((a, p), r) in &peers {
            ip.push(*a);
            port.push(i32::from(*p));
            client.push(text(&r.client));
            att.push(i64::from(r.attempts));
            suc.push(i64::from(r.successes));
            fail.push(i64::from(r.failures));
            rtt.push(r.rtt_ms.map(i64::from));
            utm.push(r.ut_metadata);
            err.push(text(&r.last_error));
            status.push(peer_status_code(r.status));
            seen.push(r.last_seen as i64);
        }
        tx.execute(
            "INSERT INTO peers (ip, port, client, attempts, successes, failures, rtt_ms,
                 ut_metadata, last_error, status, last_seen)
             SELECT * FROM unnest($1::inet[], $2::int4[], $3::text[], $4::int8[], $5::int8[],
                 $6::int8[], $7::int8[], $8::bool[], $9::text[], $10::int2[], $11::int8[])
             ON CONFLICT (ip, port) DO UPDATE SET client = EXCLUDED.client,
                 attempts = EXCLUDED.attempts, successes = EXCLUDED.successes,
                 failures = EXCLUDED.failures, rtt_ms = EXCLUDED.rtt_ms,
                 ut_metadata = EXCLUDED.ut_metadata, last_error = EXCLUDED.last_error,
                 status = EXCLUDED.status, last_seen = EXCLUDED.last_seen",
            &[
                &ip, &port, &client, &att, &suc, &fail, &rtt, &utm, &err, &status, &seen,
            ],
        )
        .map_err(PgError::db("writing peers"))?;
    }
    if !nodes.is_empty() {
        let mut id = Vec::new();
        let mut ip = Vec::new();
        let mut port = Vec::new();
        let mut rtt: Vec<Option<i64>> = Vec::new();
        let mut q = Vec::new();
        let mut r = Vec::new();
        let mut status = Vec::new();
        let mut seen = Vec::new();
        for (k, n) in &nodes {
            id.push(k.to_vec());
            ip.push(n.addr.ip());
            port.push(i32::from(n.addr.port()));
            rtt.push(n.rtt_ms.map(i64::from));
            q.extend(counts(&n.queries));
            r.extend(counts(&n.responses));
            status.push(node_status_code(n.status));
            seen.push(n.last_seen as i64);
        }
        // The counters go as flat arrays, six per node (arrays of arrays do not
        // unnest row by row).
        tx.execute(
            "INSERT INTO nodes (id, ip, port, rtt_ms, queries, responses, status, last_seen)
             SELECT u.id, u.ip, u.port, u.rtt,
                 ($5::int8[])[(u.n - 1) * 6 + 1 : u.n * 6],
                 ($6::int8[])[(u.n - 1) * 6 + 1 : u.n * 6], u.status, u.seen
             FROM unnest($1::bytea[], $2::inet[], $3::int4[], $4::int8[], $7::int2[],
                 $8::int8[]) WITH ORDINALITY AS u(id, ip, port, rtt, status, seen, n)
             ON CONFLICT (id) DO UPDATE SET ip = EXCLUDED.ip, port = EXCLUDED.port,
                 rtt_ms = EXCLUDED.rtt_ms, queries = EXCLUDED.queries,
                 responses = EXCLUDED.responses, status = EXCLUDED.status,
                 last_seen = EXCLUDED.last_seen",
            &[&id, &ip, &port, &rtt, &q, &r, &status, &seen],
        )
        .map_err(PgError::db("writing nodes"))?;
    }
    if !sessions.is_empty() {
        let mut cols: Vec<Vec<i64>> = vec![Vec::new(); 10];
        let mut ended: Vec<Option<i64>> = Vec::new();
        for (id, s) in &sessions {
            let c = &s.counters;
            for (i, v) in [
                *id,
                s.started_at,
                c.infohashes_discovered,
                c.metadata_fetched,
                c.metadata_failed,
                c.torrents_new,
                c.dht_queries_sent,
                c.dht_responses_received,
                s.peak_rss_bytes,
                s.cpu_ms,
            ]
            .into_iter()
            .enumerate()
            {
                cols[i].push(v as i64);
            }
            ended.push(s.ended_at.map(|v| v as i64));
        }
        tx.execute(
            "INSERT INTO sessions (id, started_at, ended_at, infohashes_discovered,
                 metadata_fetched, metadata_failed, torrents_new, dht_queries_sent,
                 dht_responses_received, peak_rss_bytes, cpu_ms)
             SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::int8[],
                 $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[])
             ON CONFLICT (id) DO UPDATE SET started_at = EXCLUDED.started_at,
                 ended_at = EXCLUDED.ended_at,
                 infohashes_discovered = EXCLUDED.infohashes_discovered,
                 metadata_fetched = EXCLUDED.metadata_fetched,
                 metadata_failed = EXCLUDED.metadata_failed,
                 torrents_new = EXCLUDED.torrents_new,
                 dht_queries_sent = EXCLUDED.dht_queries_sent,
                 dht_responses_received = EXCLUDED.dht_responses_received,
                 peak_rss_bytes = EXCLUDED.peak_rss_bytes, cpu_ms = EXCLUDED.cpu_ms",
            &[
                &cols[0], &cols[1], &ended, &cols[2], &cols[3], &cols[4], &cols[5], &cols[6],
                &cols[7], &cols[8], &cols[9],
            ],
        )
        .map_err(PgError::db("writing sessions"))?;
    }
    if !requests.is_empty() {
        let mut ih = Vec::new();
        let mut ip = Vec::new();
        let mut port = Vec::new();
        let mut at = Vec::new();
        let mut dur = Vec::new();
        let mut outcome = Vec::new();
        let mut reason = Vec::new();
        let mut pieces = Vec::new();
        let mut client = Vec::new();
        let mut enc = Vec::new();
        let mut tr = Vec::new();
        for r in &requests {
            ih.push(r.infohash.to_vec());
            ip.push(r.peer.ip());
            port.push(i32::from(r.peer.port()));
            at.push(r.started_at_ms as i64);
            dur.push(i64::from(r.duration_ms));
            outcome.push(match r.outcome {
                RequestOutcome::Success => 0i16,
                RequestOutcome::Failure => 1,
            });
            reason.push(text(&r.reason));
            pieces.push(i64::from(r.pieces));
            client.push(text(&r.client));
            enc.push(text(&r.encryption));
            tr.push(text(&r.transport));
        }
        tx.execute(
            "INSERT INTO requests (infohash, ip, port, started_at_ms, duration_ms, outcome,
                 reason, pieces, client, encryption, transport)
             SELECT ih, ip, port, at, dur, outcome, reason, pieces, client, enc, tr
             FROM unnest($1::bytea[], $2::inet[], $3::int4[], $4::int8[], $5::int8[],
                 $6::int2[], $7::text[], $8::int8[], $9::text[], $10::text[], $11::text[])
                 WITH ORDINALITY AS u(ih, ip, port, at, dur, outcome, reason, pieces, client,
                     enc, tr, n)
             ORDER BY n",
            &[
                &ih, &ip, &port, &at, &dur, &outcome, &reason, &pieces, &client, &enc, &tr,
            ],
        )
        .map_err(PgError::db("writing requests"))?;
        // Retention: ids only grow, so the newest `max_requests` ids bound what is
        // kept (a batch rolled back leaves a gap in the ids: then a few fewer).
        let max = i64::try_from(max_requests).unwrap_or(i64::MAX);
        tx.execute(
            "DELETE FROM requests WHERE id <= (SELECT max(id) FROM requests) - $1",
            &[&max],
        )
        .map_err(PgError::db("trimming requests"))?;
    }
    Ok(())
}

fn mark_of(r: &Row) -> Option<FilterMark> {
    Some(FilterMark {
        at: u64::try_from(r.try_get::<_, i64>(0).ok()?).ok()?,
        label: r.try_get(1).ok()?,
    })
}

fn peer_of(addr: SocketAddr, r: &Row) -> Option<PeerRecord> {
    let u32_of = |i: usize| -> Option<u32> { u32::try_from(r.try_get::<_, i64>(i).ok()?).ok() };
    Some(PeerRecord {
        addr,
        client: r.try_get(0).ok()?,
        attempts: u32_of(1)?,
        successes: u32_of(2)?,
        failures: u32_of(3)?,
        rtt_ms: match r.try_get::<_, Option<i64>>(4).ok()? {
            Some(v) => Some(u32::try_from(v).ok()?),
            None => None,
        },
        ut_metadata: r.try_get(5).ok()?,
        last_error: r.try_get(6).ok()?,
        status: peer_status_of(r.try_get(7).ok()?)?,
        last_seen: u64::try_from(r.try_get::<_, i64>(8).ok()?).ok()?,
    })
}

fn addr_of(r: &Row, ip: usize, port: usize) -> Option<SocketAddr> {
    let ip: IpAddr = r.try_get(ip).ok()?;
    let port = u16::try_from(r.try_get::<_, i32>(port).ok()?).ok()?;
    Some(SocketAddr::new(ip, port))
}

fn node_of(r: &Row) -> Option<NodeRecord> {
    let id: Vec<u8> = r.try_get(0).ok()?;
    Some(NodeRecord {
        id: <[u8; 20]>::try_from(id.as_slice()).ok()?,
        addr: addr_of(r, 1, 2)?,
        rtt_ms: match r.try_get::<_, Option<i64>>(3).ok()? {
            Some(v) => Some(u32::try_from(v).ok()?),
            None => None,
        },
        queries: counts_of(&r.try_get::<_, Vec<i64>>(4).ok()?)?,
        responses: counts_of(&r.try_get::<_, Vec<i64>>(5).ok()?)?,
        status: node_status_of(r.try_get(6).ok()?)?,
        last_seen: u64::try_from(r.try_get::<_, i64>(7).ok()?).ok()?,
    })
}

fn session_of(r: &Row) -> Option<SessionRecord> {
    let u = |i: usize| -> Option<u64> { u64::try_from(r.try_get::<_, i64>(i).ok()?).ok() };
    Some(SessionRecord {
        id: u(0)?,
        started_at: u(1)?,
        ended_at: match r.try_get::<_, Option<i64>>(2).ok()? {
            Some(v) => Some(u64::try_from(v).ok()?),
            None => None,
        },
        counters: SessionCounters {
            infohashes_discovered: u(3)?,
            metadata_fetched: u(4)?,
            metadata_failed: u(5)?,
            torrents_new: u(6)?,
            dht_queries_sent: u(7)?,
            dht_responses_received: u(8)?,
        },
        peak_rss_bytes: u(9)?,
        cpu_ms: u(10)?,
    })
}

/// The columns [`request_of`] reads.
pub(crate) const REQUEST_COLUMNS: &str = "infohash, ip, port, started_at_ms, duration_ms, \
    outcome, reason, pieces, client, encryption, transport";

pub(crate) fn request_of(r: &Row) -> Option<RequestRecord> {
    let ih: Vec<u8> = r.try_get(0).ok()?;
    Some(RequestRecord {
        infohash: <[u8; 20]>::try_from(ih.as_slice()).ok()?,
        peer: addr_of(r, 1, 2)?,
        started_at_ms: u64::try_from(r.try_get::<_, i64>(3).ok()?).ok()?,
        duration_ms: u32::try_from(r.try_get::<_, i64>(4).ok()?).ok()?,
        outcome: match r.try_get::<_, i16>(5).ok()? {
            0 => RequestOutcome::Success,
            1 => RequestOutcome::Failure,
            _ => return None,
        },
        reason: r.try_get(6).ok()?,
        pieces: u32::try_from(r.try_get::<_, i64>(7).ok()?).ok()?,
        client: r.try_get(8).ok()?,
        encryption: r.try_get(9).ok()?,
        transport: r.try_get(10).ok()?,
    })
}

impl PgStore {
    /// Removes the stored torrents of `infohashes` (record, files, info dict,
    /// facets, hidden mark), in one transaction. With `tombstone`, every infohash
    /// (stored or not) is also remembered as a tombstone, so that it is never
    /// stored again; without, a removed torrent may come back. (`magnetar delete`,
    /// `filter apply`; the LMDB store's counts.)
    pub fn remove_torrents(
        &mut self,
        infohashes: &[InfoHash],
        tombstone: Option<&FilterMark>,
    ) -> Result<TorrentRemoval> {
        let mut tx = self
            .client()
            .transaction()
            .map_err(PgError::db("starting a removal"))?;
        let ihs: Vec<Vec<u8>> = infohashes.iter().map(|h| h.to_vec()).collect();
        if tombstone.is_some() {
            let mut keys: Vec<i64> = infohashes.iter().map(bucket).collect();
            keys.sort_unstable();
            keys.dedup();
            let excl = vec![true; keys.len()];
            tx.execute("SELECT magnetar_lock_buckets($1, $2)", &[&keys, &excl])
                .map_err(PgError::db("locking infohash buckets"))?;
        }
        let removed: i64 = tx
            .query_one(
                "WITH gone AS (
                     DELETE FROM torrents WHERE id IN
                         (SELECT magnetar_torrent_id(ih) FROM unnest($1::bytea[]) AS u(ih))
                     RETURNING infohash),
                 h AS (DELETE FROM hidden h USING gone WHERE h.infohash = gone.infohash)
                 SELECT count(*) FROM gone",
                &[&ihs],
            )
            .map_err(PgError::db("removing torrents"))?
            .get(0);
        let mut rep = TorrentRemoval {
            removed: removed as u64,
            not_stored: infohashes.len() as u64 - (removed as u64).min(infohashes.len() as u64),
            tombstoned: 0,
        };
        if let Some(m) = tombstone {
            let mut distinct: Vec<Vec<u8>> = ihs.clone();
            distinct.sort_unstable();
            distinct.dedup();
            let at = i64_of(m.at).unwrap_or(i64::MAX);
            tx.execute(
                "INSERT INTO tombstones (infohash, at, label) \
                 SELECT ih, $2, $3 FROM unnest($1::bytea[]) AS u(ih) \
                 ON CONFLICT (infohash) DO UPDATE SET at = EXCLUDED.at, label = EXCLUDED.label",
                &[&distinct, &at, &label(&m.label)],
            )
            .map_err(PgError::db("writing tombstones"))?;
            rep.tombstoned = infohashes.len() as u64;
        }
        tx.commit().map_err(PgError::db("committing a removal"))?;
        Ok(rep)
    }

    /// Hides the torrents of `marks` (search, `recent` and facet filters leave
    /// them out); returns how many stored torrents were newly hidden. A mark for
    /// an infohash not stored is kept for when it comes.
    pub fn hide_torrents(&mut self, marks: &[(InfoHash, FilterMark)]) -> Result<u64> {
        let mut tx = self
            .client()
            .transaction()
            .map_err(PgError::db("starting to hide"))?;
        let mut n = 0;
        for (ih, m) in marks {
            let ih: &[u8] = ih;
            let at = i64_of(m.at).unwrap_or(i64::MAX);
            let newly: bool = tx
                .query_one(
                    "WITH prev AS (SELECT 1 FROM hidden WHERE infohash = $1),
                     up AS (INSERT INTO hidden (infohash, at, label) VALUES ($1, $2, $3)
                            ON CONFLICT (infohash) DO UPDATE
                            SET at = EXCLUDED.at, label = EXCLUDED.label)
                     SELECT NOT EXISTS (SELECT 1 FROM prev)
                        AND magnetar_torrent_id($1) IS NOT NULL",
                    &[&ih, &at, &label(&m.label)],
                )
                .map_err(PgError::db("writing hidden marks"))?
                .get(0);
            n += u64::from(newly);
        }
        tx.commit()
            .map_err(PgError::db("committing hidden marks"))?;
        Ok(n)
    }

    /// Unhides the torrents of `infohashes` (their marks go); returns how many
    /// stored torrents were unhidden.
    pub fn unhide_torrents(&mut self, infohashes: &[InfoHash]) -> Result<u64> {
        let mut tx = self
            .client()
            .transaction()
            .map_err(PgError::db("starting to unhide"))?;
        let mut n = 0;
        for ih in infohashes {
            let ih: &[u8] = ih;
            let stored: bool = tx
                .query_one(
                    "WITH d AS (DELETE FROM hidden WHERE infohash = $1 RETURNING 1)
                     SELECT EXISTS (SELECT 1 FROM d) AND magnetar_torrent_id($1) IS NOT NULL",
                    &[&ih],
                )
                .map_err(PgError::db("removing hidden marks"))?
                .get(0);
            n += u64::from(stored);
        }
        tx.commit()
            .map_err(PgError::db("committing unhidden marks"))?;
        Ok(n)
    }

    fn mark(&mut self, table: &str, infohash: &InfoHash) -> Result<Option<FilterMark>> {
        let ih: &[u8] = infohash;
        let row = self
            .client()
            .query_opt(
                &format!("SELECT at, label FROM {table} WHERE infohash = $1"),
                &[&ih],
            )
            .map_err(PgError::db("reading filter marks"))?;
        match row {
            None => Ok(None),
            Some(r) => mark_of(&r).map(Some).ok_or_else(|| {
                PgError::InvalidInput(format!("a {table} mark has a value out of range"))
            }),
        }
    }

    /// The tombstone of an infohash, if it has one.
    pub fn tombstone(&mut self, infohash: &InfoHash) -> Result<Option<FilterMark>> {
        self.mark("tombstones", infohash)
    }

    /// The hidden mark of an infohash, if it has one.
    pub fn hidden_mark(&mut self, infohash: &InfoHash) -> Result<Option<FilterMark>> {
        self.mark("hidden", infohash)
    }

    /// How many tombstones and hidden marks there are.
    pub fn filter_totals(&mut self) -> Result<FilterTotals> {
        let r = self
            .client()
            .query_one(
                "SELECT (SELECT count(*) FROM tombstones), (SELECT count(*) FROM hidden)",
                &[],
            )
            .map_err(PgError::db("counting filter marks"))?;
        Ok(FilterTotals {
            tombstones: r.get::<_, i64>(0) as u64,
            hidden: r.get::<_, i64>(1) as u64,
        })
    }

    /// Tombstones and hidden marks by rule label: (label, tombstones, hidden), most
    /// first (then by label); reads at most `max_scan` marks of each table (in
    /// infohash order, as LMDB walks them).
    pub fn filter_labels(&mut self, max_scan: u64) -> Result<Vec<(String, u64, u64)>> {
        let n = i64::try_from(max_scan).unwrap_or(i64::MAX);
        let rows = self
            .client()
            .query(
                "SELECT label, sum(t)::int8, sum(h)::int8 FROM (
                     (SELECT label, 1 AS t, 0 AS h FROM tombstones ORDER BY infohash LIMIT $1)
                     UNION ALL
                     (SELECT label, 0, 1 FROM hidden ORDER BY infohash LIMIT $1)) m
                 GROUP BY label",
                &[&n],
            )
            .map_err(PgError::db("reading filter marks"))?;
        let mut v: Vec<(String, u64, u64)> = rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    r.get::<_, i64>(1) as u64,
                    r.get::<_, i64>(2) as u64,
                )
            })
            .collect();
        v.sort_by(|a, b| (b.1 + b.2).cmp(&(a.1 + a.2)).then_with(|| a.0.cmp(&b.0)));
        Ok(v)
    }

    /// The stored record of one peer.
    pub fn peer(&mut self, addr: &SocketAddr) -> Result<Option<PeerRecord>> {
        let ip = addr.ip();
        let port = i32::from(addr.port());
        let row = self
            .client()
            .query_opt(
                "SELECT client, attempts, successes, failures, rtt_ms, ut_metadata, \
                 last_error, status, last_seen FROM peers WHERE ip = $1 AND port = $2",
                &[&ip, &port],
            )
            .map_err(PgError::db("reading a peer"))?;
        match row {
            None => Ok(None),
            Some(r) => peer_of(*addr, &r).map(Some).ok_or_else(|| {
                PgError::InvalidInput(format!("the peer {addr} has a value out of range"))
            }),
        }
    }

    /// Nodes for the next bootstrap: good ones first, then questionable, most
    /// recently seen first (then by id, LMDB's key order); bad nodes are left out.
    pub fn saved_nodes(&mut self, limit: usize) -> Result<Vec<NodeRecord>> {
        let n = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .client()
            .query(
                "SELECT id, ip, port, rtt_ms, queries, responses, status, last_seen \
                 FROM nodes WHERE status <> 2 \
                 ORDER BY (status <> 0), last_seen DESC, id LIMIT $1",
                &[&n],
            )
            .map_err(PgError::db("listing nodes"))?;
        // Records that do not read are skipped, as LMDB skips undecodable ones.
        Ok(rows.iter().filter_map(node_of).collect())
    }

    /// All sessions, oldest first (by id).
    pub fn sessions(&mut self) -> Result<Vec<SessionRecord>> {
        let rows = self
            .client()
            .query(
                "SELECT id, started_at, ended_at, infohashes_discovered, metadata_fetched, \
                 metadata_failed, torrents_new, dht_queries_sent, dht_responses_received, \
                 peak_rss_bytes, cpu_ms FROM sessions ORDER BY id",
                &[],
            )
            .map_err(PgError::db("listing sessions"))?;
        Ok(rows.iter().filter_map(session_of).collect())
    }

    /// The most recent metadata requests, newest first.
    pub fn recent_requests(&mut self, n: usize) -> Result<Vec<RequestRecord>> {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let rows = self
            .client()
            .query(
                &format!("SELECT {REQUEST_COLUMNS} FROM requests ORDER BY id DESC LIMIT $1"),
                &[&n],
            )
            .map_err(PgError::db("listing requests"))?;
        Ok(rows.iter().filter_map(request_of).collect())
    }
}
