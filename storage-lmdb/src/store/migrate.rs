//! The upgrade from schemas 2 to 6 ([`upgrade`]): from 2 to 4, `terms` rebuilt with
//! this build's tokenizer (accent folding, bigrams for space-less scripts) and
//! posting flags (name, path); from 2 to 5, the 5 → 6 steps: `columns` filled from
//! the records (`upgrade_columns`, which fills `by_seeders` too) and every torrent
//! classified (`upgrade_f`); from 6, `by_seeders` filled from `columns`
//! (`upgrade_seeders`, 6 → 7); then the
//! schema version raised, all in the one write transaction `Store::open` runs it in.
//! Nothing else is rewritten. If the process dies (or the map cannot
//! grow) before the commit, the database is exactly the old one, still at its old
//! version, and the next open starts the upgrade again.

use std::ops::Bound;

use heed::RwTxn;

use super::write::write_postings;
use super::{lmdb, upgrade_f, Dbs, Result, K_SCHEMA, SCHEMA_VERSION};
use crate::codec;
use crate::tokenize::TermIndex;
use crate::types::FileEntry;

/// Torrents tokenized at once (their postings are appended before the next chunk).
const CHUNK: usize = 20_000;

#[cfg(test)]
thread_local! {
    /// Tests: fail the upgrade after its last write, before the commit, as a crash
    /// there would (an uncommitted LMDB transaction is never seen).
    pub(super) static FAIL_BEFORE_COMMIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Upgrades a database of schema `from` (2 to 6) in `txn` and sets the schema
/// version; returns how many torrents were indexed (for 2 to 4) or classified.
pub(super) fn upgrade(txn: &mut RwTxn, dbs: &Dbs, from: u32) -> Result<u64> {
    let mut done = 0;
    if from < 5 {
        done = rebuild_terms(txn, dbs)?;
    }
    if from < 6 {
        // 5 → 6, one line per step (the `columns` fill writes `by_seeders` too).
        super::upgrade_columns::upgrade(txn, dbs)?;
        done = done.max(upgrade_f::upgrade(txn, dbs)?);
    } else {
        // 6 → 7.
        done = super::upgrade_seeders::upgrade(txn, dbs)?;
    }
    dbs.meta
        .put(txn, K_SCHEMA, &SCHEMA_VERSION.to_le_bytes())
        .map_err(lmdb("writing meta"))?;
    #[cfg(test)]
    if FAIL_BEFORE_COMMIT.with(|f| f.get()) {
        return Err(crate::error::StoreError::InvalidInput(
            "test: upgrade interrupted".into(),
        ));
    }
    Ok(done)
}

/// Rebuilds `terms` from `torrents` and `files`; returns how many torrents were
/// indexed.
pub(super) fn rebuild_terms(txn: &mut RwTxn, dbs: &Dbs) -> Result<u64> {
    dbs.terms.clear(txn).map_err(lmdb("clearing terms"))?;
    let mut after: Option<[u8; 4]> = None;
    let mut done = 0u64;
    loop {
        // Read a chunk of records in doc id order.
        let mut chunk: Vec<(u32, String, Vec<FileEntry>)> = Vec::with_capacity(CHUNK);
        {
            let range = match &after {
                Some(k) => (Bound::Excluded(&k[..]), Bound::Unbounded),
                None => (Bound::Unbounded, Bound::Unbounded),
            };
            for r in dbs
                .torrents
                .range(txn, &range)
                .map_err(lmdb("reading torrents"))?
            {
                let (k, v) = r.map_err(lmdb("reading torrents"))?;
                let Ok(docid) = codec::docid_from(k) else {
                    continue;
                };
                after = Some(codec::docid_key(docid));
                // A record that does not decode is left unindexed (as the writer
                // would never have indexed it); `db check` reports it.
                let Ok(st) = codec::decode_torrent(docid, v) else {
                    continue;
                };
                let files = match dbs.files.get(txn, k).map_err(lmdb("reading files"))? {
                    Some(fv) => codec::decode_files(fv).unwrap_or_default(),
                    None => Vec::new(),
                };
                chunk.push((docid, st.rec.name, files));
                if chunk.len() == CHUNK {
                    break;
                }
            }
        }
        if chunk.is_empty() {
            break;
        }
        done += chunk.len() as u64;
        // Tokenize the chunk through one dictionary, then append per term.
        let mut idx = TermIndex::new();
        let mut per_term: Vec<Vec<(u32, u8)>> = Vec::new();
        let mut out = Vec::new();
        for (docid, name, files) in &chunk {
            idx.torrent(name, files, &mut out);
            for &(t, flags) in &out {
                let t = t as usize;
                if per_term.len() <= t {
                    per_term.resize_with(t + 1, Vec::new);
                }
                per_term[t].push((*docid, flags));
            }
        }
        let mut order: Vec<usize> = (0..idx.terms.len()).collect();
        order.sort_unstable_by(|&a, &b| idx.terms[a].cmp(&idx.terms[b]));
        write_postings(
            txn,
            dbs,
            order.iter().map(|&i| {
                (
                    idx.terms[i].as_str(),
                    per_term.get(i).map_or(&[][..], |p| p.as_slice()),
                )
            }),
        )?;
    }
    Ok(done)
}
