//! Maintenance: retention ([`Store::prune`] of requests, peers and nodes), the
//! integrity check ([`Store::integrity_check`]: every table against the others) and
//! compaction ([`compact`]: a compacting copy swapped in while the store is closed).

use std::collections::HashMap;

use heed::{RoTxn, RwTxn};

use super::{
    delete_first, docid_of, lmdb, open_env, read_u64, wait_closed, Dbs, MetaCounters, Result,
    Store, StoreOptions, K_NEXT_DOCID, K_REQUESTS, K_TORRENTS, K_WITH_INFO,
};
use crate::codec;
use crate::error::{hex, StoreError};
use crate::tokenize::torrent_terms;
use crate::types::{truncate_v2, HashKind, PeerStatus};

/// Result of [`Store::integrity_check`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntegrityReport {
    /// Records in `torrents`.
    pub torrents: u64,
    /// File lists that decoded.
    pub files_lists: u64,
    /// Postings in `terms`.
    pub postings: u64,
    /// Entries in `by_time`.
    pub by_time: u64,
    /// Raw info dicts in `info`.
    pub info_dicts: u64,
    /// Records in `facets` that decoded.
    pub facets: u64,
    /// Postings in `facet_terms`.
    pub facet_postings: u64,
    /// Torrents whose stored facets differ from a fresh classification (rules changed
    /// since they were classified, or damage): `magnetar reclassify` rewrites them.
    pub facets_stale: u64,
    /// Number of problems found (only the first 100 are described).
    pub problem_count: u64,
    /// The first 100 problems, described.
    pub problems: Vec<String>,
}

impl IntegrityReport {
    /// No problem was found.
    pub fn is_ok(&self) -> bool {
        self.problem_count == 0
    }
    fn problem(&mut self, p: String) {
        self.problem_count += 1;
        if self.problems.len() < 100 {
            self.problems.push(p);
        }
    }
}

/// Retention for `Store::prune`. `None` keeps everything of that kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Reference time, Unix seconds.
    pub now: u64,
    /// Requests started longer ago than this are dropped.
    pub requests_max_age_secs: Option<u64>,
    /// Only the newest this many requests are kept.
    pub requests_max_count: Option<u64>,
    /// Peers not seen for this long are dropped (blacklisted ones are kept).
    pub peers_max_age_secs: Option<u64>,
    /// DHT nodes not seen for this long are dropped.
    pub nodes_max_age_secs: Option<u64>,
}

/// What `prune` removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Metadata request records removed.
    pub requests: u64,
    /// Peer records removed.
    pub peers: u64,
    /// DHT node records removed.
    pub nodes: u64,
}

impl Store {
    /// Walks every table and checks that they agree: every torrent decodes, has its
    /// `ids` entry (pointing back at it), its by_size and by_time entries, its file
    /// list (with file_count files), its `columns` entry and exactly the postings its
    /// name and paths produce; by_time has no stray entry; the counters match the tables.
    /// Facets: every torrent has a `facets` record, equal to what the classifier says of
    /// it now (else it is counted as stale), and `facet_terms` holds exactly the
    /// postings of the stored facets, none for a doc that is no torrent. Runs in one
    /// read transaction (a consistent snapshot).
    pub fn integrity_check(&self) -> Result<IntegrityReport> {
        self.read(integrity_txn)
    }

    /// Applies retention to requests, peers and nodes.
    pub fn prune(&self, policy: &RetentionPolicy) -> Result<PruneReport> {
        let (r, _) = self.write(|txn, dbs| prune_txn(txn, dbs, policy))?;
        Ok(r)
    }
}

fn prune_txn(txn: &mut RwTxn, dbs: &Dbs, p: &RetentionPolicy) -> Result<PruneReport> {
    let mut rep = PruneReport::default();
    let mut meta = MetaCounters::load(txn, &dbs.meta)?;
    if let Some(age) = p.requests_max_age_secs {
        let cutoff_ms = p.now.saturating_sub(age).saturating_mul(1000);
        let mut n = 0u64;
        for r in dbs.requests.iter(txn).map_err(lmdb("pruning requests"))? {
            let (_, v) = r.map_err(lmdb("pruning requests"))?;
            match codec::decode_request(v) {
                Ok(req) if req.started_at_ms < cutoff_ms => n += 1,
                _ => break,
            }
        }
        let d = delete_first(txn, &dbs.requests, n)?;
        rep.requests += d;
        meta.requests = meta.requests.saturating_sub(d);
    }
    if let Some(max) = p.requests_max_count {
        if meta.requests > max {
            let d = delete_first(txn, &dbs.requests, meta.requests - max)?;
            rep.requests += d;
            meta.requests -= d;
        }
    }
    if let Some(age) = p.peers_max_age_secs {
        let cutoff = p.now.saturating_sub(age);
        let mut dead = Vec::new();
        for r in dbs.peers.iter(txn).map_err(lmdb("pruning peers"))? {
            let (k, v) = r.map_err(lmdb("pruning peers"))?;
            let Ok(addr) = codec::addr_from_key(k) else {
                continue;
            };
            if let Ok(peer) = codec::decode_peer(addr, v) {
                if peer.last_seen < cutoff && peer.status != PeerStatus::Blacklisted {
                    dead.push(k.to_vec());
                }
            }
        }
        for k in dead {
            dbs.peers.delete(txn, &k).map_err(lmdb("pruning peers"))?;
            rep.peers += 1;
        }
    }
    if let Some(age) = p.nodes_max_age_secs {
        let cutoff = p.now.saturating_sub(age);
        let mut dead = Vec::new();
        for r in dbs.nodes.iter(txn).map_err(lmdb("pruning nodes"))? {
            let (k, v) = r.map_err(lmdb("pruning nodes"))?;
            let Ok(id) = <[u8; 20]>::try_from(k) else {
                continue;
            };
            if let Ok(n) = codec::decode_node(id, v) {
                if n.last_seen < cutoff {
                    dead.push(id);
                }
            }
        }
        for k in dead {
            dbs.nodes.delete(txn, &k).map_err(lmdb("pruning nodes"))?;
            rep.nodes += 1;
        }
    }
    meta.store(txn, &dbs.meta)?;
    Ok(rep)
}

fn term_hash(term: &[u8], flags: u8) -> u64 {
    // FNV-1a: stable and dependency-free; only compares two walks of the same data.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in term.iter().chain(std::iter::once(&flags)) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Mix so that sums of hashes do not cancel.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

fn integrity_txn(txn: &RoTxn, dbs: &Dbs) -> Result<IntegrityReport> {
    let mut rep = IntegrityReport::default();
    // docid -> (expected postings, expected hash sum) from the torrents walk, and
    // (actual postings, actual hash sum) from the terms walk.
    let mut expected: HashMap<u32, (u64, u64)> = HashMap::new();
    // The same for the facet keys of each doc's stored facets and `facet_terms`.
    let mut expected_facets: HashMap<u32, (u64, u64)> = HashMap::new();
    let mut first_stale: Option<String> = None;
    let mut with_info = 0u64;
    let mut hybrids = 0u64;
    let mut last_docid: Option<u32> = None;
    let any_hidden = super::any_hidden(txn, dbs)?;
    for r in dbs.torrents.iter(txn).map_err(lmdb("checking torrents"))? {
        let (k, v) = r.map_err(lmdb("checking torrents"))?;
        rep.torrents += 1;
        let Ok(docid) = codec::docid_from(k) else {
            rep.problem(format!("torrents key {} is not 4 bytes", hex(k)));
            continue;
        };
        last_docid = Some(docid);
        let st = match codec::decode_torrent(docid, v) {
            Ok(st) => st,
            Err(e) => {
                rep.problem(format!("torrent doc {docid}: {e}"));
                continue;
            }
        };
        let ih = st.rec.infohash;
        let dk = codec::docid_key(docid);
        match docid_of(txn, dbs, &ih) {
            Ok(Some(d)) if d == docid => {}
            Ok(Some(_)) | Err(StoreError::Corrupt { .. }) => {
                rep.problem(format!("torrent {}: ids entry disagrees", hex(&ih)))
            }
            Ok(None) => rep.problem(format!("torrent {}: no ids entry", hex(&ih))),
            Err(e) => return Err(e),
        }
        if let (HashKind::Hybrid, Some(v2)) = (st.rec.kind, &st.rec.v2) {
            hybrids += 1;
            let v2 = truncate_v2(v2);
            match dbs.ids_v2.get(txn, &v2).map_err(lmdb("checking ids_v2"))? {
                Some(v) if codec::docid_from(v) == Ok(docid) => {}
                Some(_) => rep.problem(format!("torrent {}: ids_v2 entry disagrees", hex(&ih))),
                None => rep.problem(format!("torrent {}: no ids_v2 entry", hex(&ih))),
            }
        }
        let bs = codec::by_size_key(st.rec.total_size, st.docid);
        if dbs
            .by_size
            .get(txn, &bs)
            .map_err(lmdb("checking by_size"))?
            .is_none()
        {
            rep.problem(format!("torrent {}: no by_size entry", hex(&ih)));
        }
        if super::columns::get(txn, dbs, docid)? != Some(codec::SortFields::of(&st.rec)) {
            rep.problem(format!("torrent {}: columns entry disagrees", hex(&ih)));
        }
        let bt = codec::by_time_key(st.rec.discovered_at, docid);
        if dbs
            .by_time
            .get(txn, &bt)
            .map_err(lmdb("checking by_time"))?
            .is_none()
        {
            rep.problem(format!("torrent {}: no by_time entry", hex(&ih)));
        }
        let stored = match super::facets::facets_by_docid(txn, dbs, docid) {
            Ok(Some(f)) => {
                rep.facets += 1;
                let mut e = (0u64, 0u64);
                for k in super::facets::keys(&f) {
                    e.0 += 1;
                    e.1 = e.1.wrapping_add(term_hash(k.bytes(), 0));
                }
                expected_facets.insert(docid, e);
                Some(f)
            }
            Ok(None) => {
                rep.problem(format!(
                    "torrent {}: no facets entry (never classified: run `magnetar reclassify`)",
                    hex(&ih)
                ));
                None
            }
            Err(StoreError::Corrupt { what, .. }) => {
                rep.problem(format!("torrent {}: facets entry: {what}", hex(&ih)));
                None
            }
            Err(e) => return Err(e),
        };
        let files = match dbs.files.get(txn, &dk).map_err(lmdb("checking files"))? {
            Some(fv) => match codec::decode_files(fv) {
                Ok(f) => {
                    rep.files_lists += 1;
                    f
                }
                Err(e) => {
                    rep.problem(format!("torrent {}: files: {e}", hex(&ih)));
                    continue;
                }
            },
            None => {
                rep.problem(format!("torrent {}: no file list", hex(&ih)));
                continue;
            }
        };
        if files.len() as u64 != u64::from(st.rec.file_count) {
            rep.problem(format!(
                "torrent {}: {} files stored, record says {}",
                hex(&ih),
                files.len(),
                st.rec.file_count
            ));
        }
        let has_info = dbs
            .info
            .get(txn, &dk)
            .map_err(lmdb("checking info"))?
            .is_some();
        if has_info {
            rep.info_dicts += 1;
        }
        if has_info != st.rec.has_info {
            rep.problem(format!(
                "torrent {}: has_info flag disagrees with info",
                hex(&ih)
            ));
        }
        if st.rec.has_info {
            with_info += 1;
        }
        if let Some(f) = stored {
            let fresh = super::facets::of_torrent(&st.rec.name, &files);
            if f != fresh {
                rep.facets_stale += 1;
                first_stale.get_or_insert_with(|| {
                    format!(
                        "{}: stored {} ({}), now {} ({})",
                        hex(&ih),
                        f.class.kind.as_str(),
                        f.category,
                        fresh.class.kind.as_str(),
                        fresh.category
                    )
                });
            }
        }
        let mut e = (0u64, 0u64);
        // A hidden torrent (operator filter rules) has no postings.
        let hidden = super::is_hidden(txn, dbs, any_hidden, &ih)?;
        for (term, flags) in torrent_terms(&st.rec.name, &files)
            .into_iter()
            .filter(|_| !hidden)
        {
            e.0 += 1;
            e.1 = e.1.wrapping_add(term_hash(term.as_bytes(), flags));
        }
        expected.insert(st.docid, e);
    }
    let mut actual: HashMap<u32, (u64, u64)> = HashMap::new();
    let mut last_term: Option<Vec<u8>> = None;
    let mut prev_doc: Option<u32> = None;
    for r in dbs.terms.iter(txn).map_err(lmdb("checking terms"))? {
        let (k, v) = r.map_err(lmdb("checking terms"))?;
        let mut ps = Vec::new();
        match codec::block_decode(v, &mut ps) {
            Ok(()) => {
                if last_term.as_deref() == Some(k) && ps.first().map(|p| p >> 2) <= prev_doc {
                    rep.problem(format!(
                        "terms {}: blocks overlap or are out of order",
                        hex(k)
                    ));
                }
                if last_term.as_deref() != Some(k) {
                    last_term = Some(k.to_vec());
                }
                prev_doc = ps.last().map(|p| p >> 2);
                for p in ps {
                    rep.postings += 1;
                    let a = actual.entry(p >> 2).or_default();
                    a.0 += 1;
                    a.1 = a.1.wrapping_add(term_hash(k, (p & 3) as u8));
                }
            }
            Err(e) => rep.problem(format!("terms {}: {e}", hex(k))),
        }
    }
    for (docid, e) in &expected {
        let a = actual.remove(docid).unwrap_or_default();
        if a != *e {
            rep.problem(format!(
                "doc {docid}: {} postings stored, {} expected (or different terms)",
                a.0, e.0
            ));
        }
    }
    for docid in actual.keys() {
        rep.problem(format!("postings for doc {docid}, which is no torrent"));
    }
    check_facet_terms(txn, dbs, &mut rep, expected_facets)?;
    if rep.facets_stale > 0 {
        rep.problem(format!(
            "{} torrent(s) have facets that differ from a fresh classification (first {}): the rules changed since they were stored, or the facets are damaged; run `magnetar reclassify`",
            rep.facets_stale,
            first_stale.as_deref().unwrap_or("?")
        ));
    }
    for r in dbs.by_time.iter(txn).map_err(lmdb("checking by_time"))? {
        let (k, _) = r.map_err(lmdb("checking by_time"))?;
        rep.by_time += 1;
        let ok = k.len() == 12 && {
            let at = k
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes);
            let docid = k.get(8..).and_then(|b| codec::docid_from(b).ok());
            match (at, docid) {
                (Some(at), Some(d)) => match dbs
                    .torrents
                    .get(txn, &codec::docid_key(d))
                    .map_err(lmdb("checking by_time"))?
                {
                    Some(v) => codec::torrent_keys(v).is_ok_and(|t| t.1 == at),
                    None => false,
                },
                _ => false,
            }
        };
        if !ok {
            rep.problem(format!("by_time entry {} has no matching torrent", hex(k)));
        }
    }
    let ids = dbs.ids.len(txn).map_err(lmdb("checking ids"))?
        + dbs.ids_delta.len(txn).map_err(lmdb("checking ids"))?;
    let v2_ids = dbs.ids_v2.len(txn).map_err(lmdb("checking ids_v2"))?;
    if v2_ids != hybrids {
        rep.problem(format!(
            "ids_v2 has {v2_ids} entries for {hybrids} hybrid torrents"
        ));
    }
    let by_size = dbs.by_size.len(txn).map_err(lmdb("checking by_size"))?;
    let (col_entries, col_bad) = super::columns::count(txn, dbs)?;
    if col_entries != rep.torrents || col_bad != 0 {
        rep.problem(format!(
            "columns has {col_entries} entries for {} torrents ({col_bad} chunks of a bad size)",
            rep.torrents
        ));
    }
    for p in super::columns::check_seeders(txn, dbs)? {
        rep.problem(p);
    }
    let counted = read_u64(txn, &dbs.meta, K_TORRENTS)?;
    if counted != rep.torrents
        || ids != rep.torrents
        || rep.by_time != rep.torrents
        || by_size != rep.torrents
    {
        rep.problem(format!(
            "counts disagree: meta {counted}, torrents {}, ids {ids}, by_time {}, by_size {by_size}",
            rep.torrents, rep.by_time
        ));
    }
    if let Some(last) = last_docid {
        if u64::from(last) >= read_u64(txn, &dbs.meta, K_NEXT_DOCID)? {
            rep.problem(format!("doc id {last} is not below next_docid"));
        }
    }
    if read_u64(txn, &dbs.meta, K_WITH_INFO)? != with_info || with_info != rep.info_dicts {
        rep.problem(format!(
            "info count disagrees: {with_info} flagged, {} stored",
            rep.info_dicts
        ));
    }
    let requests = dbs.requests.len(txn).map_err(lmdb("checking requests"))?;
    if read_u64(txn, &dbs.meta, K_REQUESTS)? != requests {
        rep.problem(format!(
            "request count disagrees with the {requests} stored"
        ));
    }
    Ok(rep)
}

/// Walks `facet_terms` and compares each doc's postings with `expected` (count and hash
/// sum of the keys of its stored facets).
fn check_facet_terms(
    txn: &RoTxn,
    dbs: &Dbs,
    rep: &mut IntegrityReport,
    mut expected: HashMap<u32, (u64, u64)>,
) -> Result<()> {
    let mut actual: HashMap<u32, (u64, u64)> = HashMap::new();
    let mut last_key: Option<Vec<u8>> = None;
    let mut prev_doc: Option<u32> = None;
    for r in dbs
        .facet_terms
        .iter(txn)
        .map_err(lmdb("checking facet_terms"))?
    {
        let (k, v) = r.map_err(lmdb("checking facet_terms"))?;
        let mut ps = Vec::new();
        if let Err(e) = codec::block_decode(v, &mut ps) {
            rep.problem(format!("facet_terms {}: {e}", hex(k)));
            continue;
        }
        if last_key.as_deref() == Some(k) && ps.first().map(|p| p >> 2) <= prev_doc {
            rep.problem(format!(
                "facet_terms {}: blocks overlap or are out of order",
                hex(k)
            ));
        }
        if last_key.as_deref() != Some(k) {
            last_key = Some(k.to_vec());
        }
        prev_doc = ps.last().map(|p| p >> 2);
        for p in ps {
            rep.facet_postings += 1;
            let a = actual.entry(p >> 2).or_default();
            a.0 += 1;
            a.1 = a.1.wrapping_add(term_hash(k, (p & 3) as u8));
        }
    }
    let mut docs: Vec<(u32, (u64, u64))> = expected.drain().collect();
    docs.sort_unstable();
    for (docid, e) in docs {
        let a = actual.remove(&docid).unwrap_or_default();
        if a != e {
            rep.problem(format!(
                "doc {docid}: {} facet postings stored, {} expected from its facets (or other keys): run `magnetar reclassify`",
                a.0, e.0
            ));
        }
    }
    let mut stray: Vec<u32> = actual.into_keys().collect();
    stray.sort_unstable();
    for docid in stray {
        rep.problem(format!(
            "facet_terms: postings for doc {docid}, which has no facets (no torrent, or its facets entry is gone)"
        ));
    }
    Ok(())
}

/// Copies the environment at `opts.path` with compaction and swaps the copy in.
///
/// The store must not be open anywhere (in this process it returns `AlreadyOpen`;
/// other processes must be stopped by the caller). The copy is written next to
/// `data.mdb` and renamed over it only once complete and synced, so a crash during
/// compaction leaves the original intact. Returns (bytes before, bytes after).
pub fn compact(opts: &StoreOptions) -> Result<(u64, u64)> {
    let data = opts.path.join("data.mdb");
    let tmp = opts.path.join("data.mdb.compact");
    let before = std::fs::metadata(&data)
        .map_err(StoreError::io(format!("reading {}", data.display())))?
        .len();
    // Refuse a database of another schema version before touching anything.
    drop(Store::open(opts.clone())?);
    wait_closed(&opts.path);
    let env = open_env(opts)?;
    let _ = std::fs::remove_file(&tmp);
    let file = env
        .copy_to_path(&tmp, heed::CompactionOption::Enabled)
        .map_err(lmdb("copying with compaction"))?;
    file.sync_all()
        .map_err(StoreError::io(format!("syncing {}", tmp.display())))?;
    drop(file);
    env.prepare_for_closing().wait();
    std::fs::rename(&tmp, &data).map_err(StoreError::io(format!(
        "renaming {} over {}",
        tmp.display(),
        data.display()
    )))?;
    if let Ok(dir) = std::fs::File::open(&opts.path) {
        let _ = dir.sync_all();
    }
    let after = std::fs::metadata(&data)
        .map_err(StoreError::io(format!("reading {}", data.display())))?
        .len();
    Ok((before, after))
}
