//! Reads outside search: a torrent by infohash, its info dict, the newest torrents,
//! saved DHT nodes, peers, sessions and metadata requests, and the totals and
//! rankings built from them ([`Stats`], [`SessionYield`], [`ClientStats`]). Every
//! read runs in one read transaction; corrupt records are errors for point reads
//! and skipped in listings.

use std::collections::HashMap;
use std::net::SocketAddr;

use heed::RoTxn;

use super::{corrupt, docid_of, lmdb, read_u64, Db, Dbs, Result, Store, K_SCHEMA};
use super::{K_REQUESTS, K_TORRENTS, K_WITH_INFO};
use crate::codec;
use crate::types::*;

/// Totals, read from counters and LMDB's own page statistics (no scan).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Torrents stored.
    pub torrents: u64,
    /// Torrents whose info dict was fetched (kept or not).
    pub torrents_with_info: u64,
    /// Posting blocks in `terms` (each holds up to ~480 bytes of postings).
    pub posting_blocks: u64,
    /// Peer records.
    pub peers: u64,
    /// DHT node records.
    pub nodes: u64,
    /// Crawl sessions.
    pub sessions: u64,
    /// Metadata request records kept.
    pub requests: u64,
    /// Size of `data.mdb` on disk.
    pub disk_bytes: u64,
    /// Bytes in use (pages actually used by the B-trees).
    pub used_bytes: u64,
    /// Current size of the memory map (it grows by doubling).
    pub map_size: u64,
}

/// Yield of one crawl session.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionYield {
    /// The session's record.
    pub session: SessionRecord,
    /// New torrents per hour over the session's duration (end or now).
    pub torrents_per_hour: f64,
}

/// ut_metadata success of one client name.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientStats {
    /// Client name (from the extension handshake; empty if unknown).
    pub client: String,
    /// Kept requests to peers of this client.
    pub requests: u64,
    /// Of which succeeded.
    pub successes: u64,
    /// `successes / requests`.
    pub success_rate: f64,
}

impl Store {
    /// The torrent with its files, or None when unknown.
    pub fn get(&self, infohash: &InfoHash) -> Result<Option<Torrent>> {
        self.read(|txn, dbs| {
            let Some(docid) = docid_of(txn, dbs, infohash)? else {
                return Ok(None);
            };
            let dk = codec::docid_key(docid);
            let Some(v) = dbs
                .torrents
                .get(txn, &dk)
                .map_err(lmdb("reading a torrent"))?
            else {
                return Err(corrupt("torrents", infohash)(
                    "no record for a known infohash",
                ));
            };
            let t = codec::decode_torrent(docid, v).map_err(corrupt("torrents", infohash))?;
            let files = match dbs.files.get(txn, &dk).map_err(lmdb("reading files"))? {
                Some(v) => codec::decode_files(v).map_err(corrupt("files", infohash))?,
                None => Vec::new(),
            };
            Ok(Some(Torrent {
                record: t.rec,
                files,
            }))
        })
    }

    /// The stored torrent without its files (found by its infohash, or by the
    /// truncated v2 hash of a hybrid), or None when unknown or unreadable.
    pub fn record(&self, infohash: &InfoHash) -> Result<Option<TorrentRecord>> {
        self.read(|txn, dbs| match docid_of(txn, dbs, infohash)? {
            Some(docid) => record_by_docid(txn, dbs, docid),
            None => Ok(None),
        })
    }

    /// Whether the infohash is stored (the runtime's "already known?").
    pub fn contains(&self, infohash: &InfoHash) -> Result<bool> {
        self.read(|txn, dbs| Ok(docid_of(txn, dbs, infohash)?.is_some()))
    }

    /// The raw info dict, when kept.
    pub fn info_dict(&self, infohash: &InfoHash) -> Result<Option<Vec<u8>>> {
        self.read(|txn, dbs| {
            let Some(docid) = docid_of(txn, dbs, infohash)? else {
                return Ok(None);
            };
            Ok(dbs
                .info
                .get(txn, &codec::docid_key(docid))
                .map_err(lmdb("reading info"))?
                .map(<[u8]>::to_vec))
        })
    }

    /// Number of torrents, from a counter kept in `meta` (no scan).
    pub fn count(&self) -> Result<u64> {
        self.read(|txn, dbs| read_u64(txn, &dbs.meta, K_TORRENTS))
    }

    /// The schema version stored in `meta`.
    pub fn schema_version(&self) -> Result<u32> {
        self.read(
            |txn, dbs| match dbs.meta.get(txn, K_SCHEMA).map_err(lmdb("reading meta"))? {
                Some(v) => {
                    Ok(u32::from_le_bytes(v.try_into().map_err(|_| {
                        corrupt("meta", K_SCHEMA)("version is not 4 bytes")
                    })?))
                }
                None => Err(corrupt("meta", K_SCHEMA)("no schema version")),
            },
        )
    }

    /// The `n` most recently discovered torrents, newest first. Corrupt records are
    /// skipped.
    pub fn recent(&self, n: usize) -> Result<Vec<TorrentRecord>> {
        self.read(|txn, dbs| {
            // Hidden torrents (operator filter rules) are never listed.
            let any_hidden = super::filter::any_hidden(txn, dbs)?;
            let mut out = Vec::with_capacity(n.min(10_000));
            for r in dbs.by_time.rev_iter(txn).map_err(lmdb("listing by time"))? {
                if out.len() >= n {
                    break;
                }
                let (k, _) = r.map_err(lmdb("listing by time"))?;
                let Some(docid) = k.get(8..12).and_then(|s| codec::docid_from(s).ok()) else {
                    continue;
                };
                if let Some(rec) = record_by_docid(txn, dbs, docid)? {
                    if !super::filter::is_hidden(txn, dbs, any_hidden, &rec.infohash)? {
                        out.push(rec);
                    }
                }
            }
            Ok(out)
        })
    }

    /// Nodes for the next bootstrap: good ones first, then questionable, most recently
    /// seen first; bad nodes are left out.
    pub fn saved_nodes(&self, limit: usize) -> Result<Vec<NodeRecord>> {
        self.read(|txn, dbs| {
            let mut all = Vec::new();
            for r in dbs.nodes.iter(txn).map_err(lmdb("listing nodes"))? {
                let (k, v) = r.map_err(lmdb("listing nodes"))?;
                let Ok(id) = <[u8; 20]>::try_from(k) else {
                    continue;
                };
                if let Ok(n) = codec::decode_node(id, v) {
                    if n.status != NodeStatus::Bad {
                        all.push(n);
                    }
                }
            }
            all.sort_by_key(|n| (n.status != NodeStatus::Good, std::cmp::Reverse(n.last_seen)));
            all.truncate(limit);
            Ok(all)
        })
    }

    /// The stored record of one peer.
    pub fn peer(&self, addr: &SocketAddr) -> Result<Option<PeerRecord>> {
        let key = codec::addr_key(addr);
        self.read(
            |txn, dbs| match dbs.peers.get(txn, &key).map_err(lmdb("reading a peer"))? {
                Some(v) => Ok(Some(
                    codec::decode_peer(*addr, v).map_err(corrupt("peers", &key))?,
                )),
                None => Ok(None),
            },
        )
    }

    /// All sessions, oldest first.
    pub fn sessions(&self) -> Result<Vec<SessionRecord>> {
        self.read(|txn, dbs| {
            let mut out = Vec::new();
            for r in dbs.sessions.iter(txn).map_err(lmdb("listing sessions"))? {
                let (k, v) = r.map_err(lmdb("listing sessions"))?;
                let Ok(id) = <[u8; 8]>::try_from(k) else {
                    continue;
                };
                if let Ok(s) = codec::decode_session(u64::from_be_bytes(id), v) {
                    out.push(s);
                }
            }
            Ok(out)
        })
    }

    /// The most recent metadata requests, newest first.
    pub fn recent_requests(&self, n: usize) -> Result<Vec<RequestRecord>> {
        self.read(|txn, dbs| {
            let mut out = Vec::new();
            for r in dbs
                .requests
                .rev_iter(txn)
                .map_err(lmdb("listing requests"))?
            {
                if out.len() >= n {
                    break;
                }
                let (_, v) = r.map_err(lmdb("listing requests"))?;
                if let Ok(req) = codec::decode_request(v) {
                    out.push(req);
                }
            }
            Ok(out)
        })
    }

    /// Totals.
    pub fn stats(&self) -> Result<Stats> {
        let disk_bytes = std::fs::metadata(self.path().join("data.mdb"))
            .map(|m| m.len())
            .unwrap_or(0);
        let info = self.inner.env.info();
        self.read(|txn, dbs| {
            let len = |db: &Db| db.len(txn).map_err(lmdb("reading database stats"));
            let page = |db: &Db| -> Result<u64> {
                let s = db.stat(txn).map_err(lmdb("reading database stats"))?;
                Ok((s.branch_pages + s.leaf_pages + s.overflow_pages) as u64 * s.page_size as u64)
            };
            let mut used = 0;
            for db in [
                &dbs.torrents,
                &dbs.files,
                &dbs.info,
                &dbs.terms,
                &dbs.by_time,
                &dbs.by_size,
                &dbs.ids,
                &dbs.ids_delta,
                &dbs.ids_v2,
                &dbs.peers,
                &dbs.nodes,
                &dbs.sessions,
                &dbs.requests,
                &dbs.meta,
            ] {
                used += page(db)?;
            }
            Ok(Stats {
                torrents: read_u64(txn, &dbs.meta, K_TORRENTS)?,
                torrents_with_info: read_u64(txn, &dbs.meta, K_WITH_INFO)?,
                posting_blocks: len(&dbs.terms)?,
                peers: len(&dbs.peers)?,
                nodes: len(&dbs.nodes)?,
                sessions: len(&dbs.sessions)?,
                requests: read_u64(txn, &dbs.meta, K_REQUESTS)?,
                disk_bytes,
                used_bytes: used,
                map_size: info.map_size as u64,
            })
        })
    }

    /// Per-session yield (new torrents per hour), oldest session first. `now` (Unix
    /// seconds) ends sessions that are still running.
    pub fn session_yields(&self, now: u64) -> Result<Vec<SessionYield>> {
        Ok(self
            .sessions()?
            .into_iter()
            .map(|s| {
                let end = s.ended_at.unwrap_or(now).max(s.started_at);
                let hours = ((end - s.started_at) as f64 / 3600.0).max(1.0 / 3600.0);
                SessionYield {
                    torrents_per_hour: s.counters.torrents_new as f64 / hours,
                    session: s,
                }
            })
            .collect())
    }

    /// Failure reasons of the kept metadata requests, most frequent first.
    pub fn failure_reasons(&self) -> Result<Vec<(String, u64)>> {
        let mut m: HashMap<String, u64> = HashMap::new();
        self.for_each_request(|r| {
            if r.outcome == RequestOutcome::Failure {
                *m.entry(r.reason).or_default() += 1;
            }
        })?;
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(v)
    }

    /// Kept requests by handshake (`RequestRecord::encryption`): (name,
    /// requests, successes), most requests first.
    pub fn encryption_outcomes(&self) -> Result<Vec<(String, u64, u64)>> {
        let mut m: HashMap<String, (u64, u64)> = HashMap::new();
        self.for_each_request(|r| {
            let e = m.entry(r.encryption).or_default();
            e.0 += 1;
            if r.outcome == RequestOutcome::Success {
                e.1 += 1;
            }
        })?;
        let mut v: Vec<_> = m.into_iter().map(|(k, (a, b))| (k, a, b)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(v)
    }

    /// Kept requests by transport (`RequestRecord::transport`): (name,
    /// requests, successes), most requests first.
    pub fn transport_outcomes(&self) -> Result<Vec<(String, u64, u64)>> {
        let mut m: HashMap<String, (u64, u64)> = HashMap::new();
        self.for_each_request(|r| {
            let e = m.entry(r.transport).or_default();
            e.0 += 1;
            if r.outcome == RequestOutcome::Success {
                e.1 += 1;
            }
        })?;
        let mut v: Vec<_> = m.into_iter().map(|(k, (a, b))| (k, a, b)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(v)
    }

    /// Clients ranked by ut_metadata successes over the kept requests.
    pub fn top_clients(&self, limit: usize) -> Result<Vec<ClientStats>> {
        let mut m: HashMap<String, (u64, u64)> = HashMap::new();
        self.for_each_request(|r| {
            let e = m.entry(r.client).or_default();
            e.0 += 1;
            if r.outcome == RequestOutcome::Success {
                e.1 += 1;
            }
        })?;
        let mut v: Vec<ClientStats> = m
            .into_iter()
            .map(|(client, (requests, successes))| ClientStats {
                client,
                requests,
                successes,
                success_rate: successes as f64 / requests.max(1) as f64,
            })
            .collect();
        v.sort_by(|a, b| {
            b.successes
                .cmp(&a.successes)
                .then_with(|| a.client.cmp(&b.client))
        });
        v.truncate(limit);
        Ok(v)
    }

    fn for_each_request(&self, mut f: impl FnMut(RequestRecord)) -> Result<()> {
        self.read(|txn, dbs| {
            for r in dbs.requests.iter(txn).map_err(lmdb("listing requests"))? {
                let (_, v) = r.map_err(lmdb("listing requests"))?;
                if let Ok(req) = codec::decode_request(v) {
                    f(req);
                }
            }
            Ok(())
        })
    }
}

/// The record of `docid`, or None when it is missing or does not decode.
pub(super) fn record_by_docid(txn: &RoTxn, dbs: &Dbs, docid: u32) -> Result<Option<TorrentRecord>> {
    let dk = codec::docid_key(docid);
    let Some(v) = dbs
        .torrents
        .get(txn, &dk)
        .map_err(lmdb("reading a torrent"))?
    else {
        return Ok(None);
    };
    Ok(codec::decode_torrent(docid, v).ok().map(|t| t.rec))
}
