//! JSON lines export/import and `.torrent` export.

use std::io::{BufRead, Write};
use std::ops::Bound;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{hex, parse_infohash_hex, StoreError};
use crate::store::{Result, Store};
use crate::types::*;

/// One line of the JSON lines export (and what the importer reads).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonTorrent {
    /// 40 lowercase hex digits.
    pub infohash: String,
    pub name: String,
    pub size: u64,
    pub files: Vec<JsonFile>,
    /// Unix seconds.
    pub discovered_at: u64,
    /// Ignored on import.
    #[serde(default)]
    pub magnet: String,
    /// `v1`, `v2` or `hybrid` (absent: v1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_kind: Option<String>,
    /// The full v2 infohash (SHA-256, 64 lowercase hex digits) of a v2 or hybrid
    /// torrent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v2_infohash: Option<String>,
    /// BEP 33 seeders and leechers, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeders: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leechers: Option<u32>,
    /// When those were measured (Unix seconds), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scraped_at: Option<u64>,
    /// The classifier's facets ([`Facets::to_json`](crate::Facets::to_json)), when
    /// classified. Ignored on import (the importer classifies again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facets: Option<serde_json::Value>,
}

/// A file of a [`JsonTorrent`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonFile {
    pub path: String,
    pub size: u64,
}

/// What an export wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportReport {
    pub torrents: u64,
    /// Corrupt records skipped (counted, not exported).
    pub skipped_corrupt: u64,
    /// Torrents without a kept info dict (`.torrent` export only).
    pub skipped_no_info: u64,
    /// Largest discovered_at exported: pass it + 1 as the next `since`.
    pub last_discovered_at: Option<u64>,
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub read: u64,
    pub new: u64,
    pub updated: u64,
    /// Bad lines or rows (counted; the first ones are described in `errors`).
    pub skipped: u64,
    pub errors: Vec<String>,
}

impl ImportReport {
    pub(crate) fn skip(&mut self, what: String) {
        self.skipped += 1;
        if self.errors.len() < 20 {
            self.errors.push(what);
        }
    }
}

/// `magnet:?xt=urn:btih:<hex>&dn=<name>&xl=<size>`.
pub fn magnet_uri(infohash: &InfoHash, name: &str, size: u64) -> String {
    magnet_with(&format!("xt=urn:btih:{}", hex(infohash)), name, size)
}

/// The magnet link of a stored torrent (BEP 9, BEP 52): `xt=urn:btih:<40 hex>` for
/// v1, `xt=urn:btmh:1220<64 hex>` (a SHA-256 multihash) for v2-only, and both for
/// a hybrid.
pub fn magnet_of(rec: &TorrentRecord) -> String {
    let btmh = rec.v2.map(|h| format!("xt=urn:btmh:1220{}", hex(&h)));
    let xt = match (rec.kind, btmh) {
        (HashKind::V2, Some(m)) => m,
        (HashKind::Hybrid, Some(m)) => format!("xt=urn:btih:{}&{m}", hex(&rec.infohash)),
        _ => format!("xt=urn:btih:{}", hex(&rec.infohash)),
    };
    magnet_with(&xt, &rec.name, rec.total_size)
}

fn magnet_with(xt: &str, name: &str, size: u64) -> String {
    let mut s = format!("magnet:?{xt}&dn=");
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s.push_str(&format!("&xl={size}"));
    s
}

/// A full v2 infohash: 64 hex digits.
pub(crate) fn parse_v2_hex(s: &str) -> Result<InfoHashV2> {
    let bad = || StoreError::InvalidInput(format!("`{s}` is not a v2 infohash (64 hex digits)"));
    if s.len() != 64 || !s.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// Records per batch for imports.
const IMPORT_BATCH: usize = 10_000;

impl Store {
    /// Walks torrents by discovery time from `since` (inclusive, Unix seconds).
    fn walk_by_time(
        &self,
        since: Option<u64>,
        report: &mut ExportReport,
        mut f: impl FnMut(
            TorrentRecord,
            Vec<FileEntry>,
            Option<&[u8]>,
            Option<crate::Facets>,
        ) -> Result<bool>,
    ) -> Result<()> {
        let start = since.unwrap_or(0).to_be_bytes();
        self.read(|txn, dbs| {
            // Hidden torrents (operator filter rules) are never exported.
            let any_hidden = crate::store::any_hidden(txn, dbs)?;
            let range = (Bound::Included(&start[..]), Bound::Unbounded);
            let it = dbs
                .by_time
                .range(txn, &range)
                .map_err(StoreError::lmdb("exporting"))?;
            for r in it {
                let (k, _) = r.map_err(StoreError::lmdb("exporting"))?;
                let Some(docid) = k.get(8..12).and_then(|s| codec::docid_from(s).ok()) else {
                    report.skipped_corrupt += 1;
                    continue;
                };
                let dk = codec::docid_key(docid);
                let rec = match dbs
                    .torrents
                    .get(txn, &dk)
                    .map_err(StoreError::lmdb("exporting"))?
                {
                    Some(v) => match codec::decode_torrent(docid, v) {
                        Ok(t) => t.rec,
                        Err(_) => {
                            report.skipped_corrupt += 1;
                            continue;
                        }
                    },
                    None => {
                        report.skipped_corrupt += 1;
                        continue;
                    }
                };
                if crate::store::is_hidden(txn, dbs, any_hidden, &rec.infohash)? {
                    continue;
                }
                let files = match dbs
                    .files
                    .get(txn, &dk)
                    .map_err(StoreError::lmdb("exporting"))?
                {
                    Some(v) => match codec::decode_files(v) {
                        Ok(f) => f,
                        Err(_) => {
                            report.skipped_corrupt += 1;
                            continue;
                        }
                    },
                    None => Vec::new(),
                };
                let info = if rec.has_info {
                    dbs.info
                        .get(txn, &dk)
                        .map_err(StoreError::lmdb("exporting"))?
                } else {
                    None
                };
                let at = rec.discovered_at;
                let facets = crate::store::facets_by_docid(txn, dbs, docid).unwrap_or(None);
                if f(rec, files, info, facets)? {
                    report.torrents += 1;
                    report.last_discovered_at = Some(at);
                }
            }
            Ok(())
        })
    }

    /// Writes one JSON object per line for every torrent discovered at or after
    /// `since` (all when None), oldest first.
    pub fn export_jsonl(&self, mut out: impl Write, since: Option<u64>) -> Result<ExportReport> {
        let mut report = ExportReport::default();
        self.walk_by_time(since, &mut report, |rec, files, _, facets| {
            write_json_line(&mut out, rec, files, facets)?;
            Ok(true)
        })?;
        out.flush().map_err(StoreError::io("writing JSON"))?;
        Ok(report)
    }

    /// Every torrent an export would write (hidden ones are not), oldest first (by
    /// discovery time, then doc id), with its files and its info dict when kept:
    /// what `magnetar db copy` reads. Runs in one read transaction (a snapshot: a
    /// crawler may write meanwhile); `f` returning an error stops the walk.
    pub fn walk_export(
        &self,
        since: Option<u64>,
        mut f: impl FnMut(TorrentRecord, Vec<FileEntry>, Option<&[u8]>) -> Result<()>,
    ) -> Result<ExportReport> {
        let mut report = ExportReport::default();
        self.walk_by_time(since, &mut report, |rec, files, info, _| {
            f(rec, files, info)?;
            Ok(true)
        })?;
        Ok(report)
    }

    /// Writes `<infohash>.torrent` (`d4:info<raw info dict>e`) into `dir` for every
    /// torrent discovered at or after `since` whose info dict is kept.
    pub fn export_torrent_files(&self, dir: &Path, since: Option<u64>) -> Result<ExportReport> {
        std::fs::create_dir_all(dir)
            .map_err(StoreError::io(format!("creating {}", dir.display())))?;
        let mut report = ExportReport::default();
        let mut no_info = 0;
        self.walk_by_time(since, &mut report, |rec, _, info, _| {
            let Some(info) = info else {
                no_info += 1;
                return Ok(false);
            };
            write_torrent_file(dir, &rec.infohash, info)?;
            Ok(true)
        })?;
        report.skipped_no_info = no_info;
        Ok(report)
    }

    /// Imports JSON lines as written by [`Store::export_jsonl`]. Idempotent: a known
    /// infohash only gets its sources and last_seen_at merged. Bad lines are counted
    /// and skipped.
    pub fn import_jsonl(&self, input: impl BufRead) -> Result<ImportReport> {
        let mut rep = ImportReport::default();
        let mut batch = Vec::with_capacity(IMPORT_BATCH);
        for (n, line) in input.lines().enumerate() {
            let line = line.map_err(StoreError::io("reading JSON lines"))?;
            if line.trim().is_empty() {
                continue;
            }
            rep.read += 1;
            let t: JsonTorrent = match serde_json::from_str(&line) {
                Ok(t) => t,
                Err(e) => {
                    rep.skip(format!("line {}: {e}", n + 1));
                    continue;
                }
            };
            let infohash = match parse_infohash_hex(&t.infohash) {
                Ok(ih) => ih,
                Err(e) => {
                    rep.skip(format!("line {}: {e}", n + 1));
                    continue;
                }
            };
            let v2 = match t.v2_infohash.as_deref().map(parse_v2_hex) {
                None => None,
                Some(Ok(h)) => Some(h),
                Some(Err(e)) => {
                    rep.skip(format!("line {}: {e}", n + 1));
                    continue;
                }
            };
            let kind = match (t.hash_kind.as_deref(), v2) {
                (_, None) => HashKind::V1,
                (Some("v2"), Some(_)) => HashKind::V2,
                (_, Some(_)) => HashKind::Hybrid,
            };
            batch.push(Op::Torrent(Box::new(TorrentInput {
                infohash,
                kind,
                v2,
                name: t.name,
                total_size: t.size,
                piece_length: 0,
                piece_count: 0,
                private: false,
                source: None,
                files: t
                    .files
                    .into_iter()
                    .map(|f| FileEntry {
                        path: f.path,
                        size: f.size,
                    })
                    .collect(),
                discovered_at: t.discovered_at,
                sources: Sources::IMPORT,
                seeders: t.seeders,
                leechers: t.leechers,
                scraped_at: t
                    .scraped_at
                    .filter(|_| t.seeders.is_some() || t.leechers.is_some()),
                info: None,
            })));
            if batch.len() >= IMPORT_BATCH {
                self.import_batch(&mut batch, &mut rep)?;
            }
        }
        self.import_batch(&mut batch, &mut rep)?;
        Ok(rep)
    }

    pub(crate) fn import_batch(&self, batch: &mut Vec<Op>, rep: &mut ImportReport) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let r = self.apply_batch(batch)?;
        rep.new += r.torrents_new;
        rep.updated += r.torrents_updated;
        rep.skipped += r.skipped_corrupt;
        batch.clear();
        Ok(())
    }
}

/// One line of a JSON lines export (`export_jsonl`), newline included: shared by
/// every store behind [`crate::backend::ReadIndex`], so their exports are identical.
pub fn write_json_line(
    out: &mut impl Write,
    rec: TorrentRecord,
    files: Vec<FileEntry>,
    facets: Option<crate::Facets>,
) -> Result<()> {
    let line = JsonTorrent {
        infohash: hex(&rec.infohash),
        magnet: magnet_of(&rec),
        hash_kind: Some(rec.kind.as_str().to_string()),
        v2_infohash: rec.v2.map(|h| hex(&h)),
        seeders: rec.seeders,
        leechers: rec.leechers,
        scraped_at: rec.scraped_at,
        facets: facets.map(|f| f.to_json()),
        name: rec.name,
        size: rec.total_size,
        files: files
            .into_iter()
            .map(|f| JsonFile {
                path: f.path,
                size: f.size,
            })
            .collect(),
        discovered_at: rec.discovered_at,
    };
    serde_json::to_writer(&mut *out, &line).map_err(|e| StoreError::Io {
        context: "writing JSON".into(),
        source: e.into(),
    })?;
    out.write_all(b"\n").map_err(StoreError::io("writing JSON"))
}

/// Writes `<infohash>.torrent` (`d4:info<raw info dict>e`) into `dir`.
pub fn write_torrent_file(dir: &Path, infohash: &InfoHash, info: &[u8]) -> Result<()> {
    let path = dir.join(format!("{}.torrent", hex(infohash)));
    let mut bytes = Vec::with_capacity(info.len() + 8);
    bytes.extend_from_slice(b"d4:info");
    bytes.extend_from_slice(info);
    bytes.push(b'e');
    std::fs::write(&path, bytes).map_err(StoreError::io(format!("writing {}", path.display())))
}
