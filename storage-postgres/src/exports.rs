//! Exports with the LMDB store's names, formats and order: JSON lines
//! ([`PgStore::export_jsonl`]) and `.torrent` files
//! ([`PgStore::export_torrent_files`]), every torrent discovered at or after
//! `since`, oldest first (ties by doc id, as LMDB's `by_time`). Hidden torrents are
//! never exported; tombstoned ones are not stored. The walk reads the torrents in
//! keyset pages of [`PAGE`] (no transaction held open across the whole export:
//! torrents written meanwhile after the current position may be exported too).

use std::io::Write;
use std::path::Path;

use magnetar_storage::backend::{write_json_line, write_torrent_file};
use magnetar_storage::{ExportReport, Facets, FileEntry, TorrentRecord};

use crate::error::{PgError, Result};
use crate::facets::{facets_of_row, FACET_COLUMNS};
use crate::search::{record_of, RECORD_COLUMNS, RECORD_COLUMN_COUNT};
use crate::PgStore;

/// Torrents read per page of the walk.
pub const PAGE: i64 = 1_000;

/// One exported torrent: record, files, info dict (when asked), facets.
type Item = (
    TorrentRecord,
    Vec<FileEntry>,
    Option<Vec<u8>>,
    Option<Facets>,
);

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> PgError {
    move |e| PgError::InvalidInput(format!("{context}: {e}"))
}

impl PgStore {
    /// Calls `f` with every stored torrent, its files and whether it is hidden, in
    /// doc id order (pages of [`PAGE`], not one snapshot); unreadable records are
    /// skipped. `f` returning false stops the walk. Returns how many torrents were
    /// visited. (The LMDB store's `for_each_torrent`.)
    pub fn for_each_torrent(
        &mut self,
        mut f: impl FnMut(&TorrentRecord, &[FileEntry], bool) -> bool,
    ) -> Result<u64> {
        let nrec = RECORD_COLUMN_COUNT;
        let mut after = i64::MIN;
        let mut n = 0;
        loop {
            let rows = self
                .client()
                .query(
                    &format!(
                        "SELECT {RECORD_COLUMNS}, t.id,
                             EXISTS (SELECT 1 FROM hidden h WHERE h.infohash = t.infohash)
                         FROM torrents t WHERE t.id > $1 ORDER BY t.id LIMIT $2"
                    ),
                    &[&after, &PAGE],
                )
                .map_err(PgError::db("walking torrents"))?;
            let Some(last) = rows.last() else {
                return Ok(n);
            };
            after = last.get(nrec);
            let ids: Vec<i64> = rows.iter().map(|r| r.get(nrec)).collect();
            let mut files: std::collections::BTreeMap<i64, Vec<FileEntry>> = Default::default();
            for r in self
                .client()
                .query(
                    "SELECT torrent_id, path, size FROM files WHERE torrent_id = ANY($1) \
                     ORDER BY torrent_id, idx",
                    &[&ids],
                )
                .map_err(PgError::db("walking files"))?
            {
                files.entry(r.get(0)).or_default().push(FileEntry {
                    path: r.get(1),
                    size: u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
                });
            }
            let full = rows.len() as i64 == PAGE;
            for r in rows {
                let Some(rec) = record_of(&r) else { continue };
                let id: i64 = r.get(nrec);
                let hidden: bool = r.get(nrec + 1);
                n += 1;
                if !f(&rec, files.get(&id).map_or(&[][..], Vec::as_slice), hidden) {
                    return Ok(n);
                }
            }
            if !full {
                return Ok(n);
            }
        }
    }

    /// Walks the exportable torrents (see the module doc); `f` returns whether the
    /// torrent was exported.
    fn walk_by_time(
        &mut self,
        since: Option<u64>,
        with_info: bool,
        report: &mut ExportReport,
        mut f: impl FnMut(Item) -> Result<bool>,
    ) -> Result<()> {
        let Ok(since) = i64::try_from(since.unwrap_or(0)) else {
            return Ok(());
        };
        let mut after: (i64, i64) = (since, i64::MIN);
        let nrec = RECORD_COLUMN_COUNT;
        loop {
            let rows = self
                .client()
                .query(
                    &format!(
                        "SELECT {RECORD_COLUMNS}, t.id, t.discovered_at, {FACET_COLUMNS}
                         FROM torrents t LEFT JOIN facets f ON f.torrent_id = t.id
                         WHERE t.discovered_at >= $1 AND (t.discovered_at, t.id) > ($1, $2)
                           AND NOT EXISTS (SELECT 1 FROM hidden h WHERE h.infohash = t.infohash)
                         ORDER BY t.discovered_at, t.id LIMIT $3"
                    ),
                    &[&after.0, &after.1, &PAGE],
                )
                .map_err(PgError::db("exporting"))?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            after = (last.get(nrec + 1), last.get(nrec));
            let ids: Vec<i64> = rows.iter().map(|r| r.get(nrec)).collect();
            let mut files: std::collections::BTreeMap<i64, Vec<FileEntry>> = Default::default();
            for r in self
                .client()
                .query(
                    "SELECT torrent_id, path, size FROM files WHERE torrent_id = ANY($1) \
                     ORDER BY torrent_id, idx",
                    &[&ids],
                )
                .map_err(PgError::db("exporting files"))?
            {
                files.entry(r.get(0)).or_default().push(FileEntry {
                    path: r.get(1),
                    size: u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
                });
            }
            let mut infos: std::collections::BTreeMap<i64, Vec<u8>> = Default::default();
            if with_info {
                for r in self
                    .client()
                    .query(
                        "SELECT torrent_id, dict FROM info WHERE torrent_id = ANY($1)",
                        &[&ids],
                    )
                    .map_err(PgError::db("exporting info dicts"))?
                {
                    infos.insert(r.get(0), r.get(1));
                }
            }
            let n = rows.len();
            for r in rows {
                let Some(rec) = record_of(&r) else {
                    report.skipped_corrupt += 1;
                    continue;
                };
                let id: i64 = r.get(nrec);
                let at = rec.discovered_at;
                let facets = facets_of_row(&r, nrec + 2);
                let fl = files.remove(&id).unwrap_or_default();
                let info = infos.remove(&id);
                if f((rec, fl, info, facets))? {
                    report.torrents += 1;
                    report.last_discovered_at = Some(at);
                }
            }
            if (n as i64) < PAGE {
                return Ok(());
            }
        }
    }

    /// Writes one JSON object per line for every torrent discovered at or after
    /// `since` (all when None), oldest first: the LMDB store's format.
    pub fn export_jsonl(
        &mut self,
        mut out: impl Write,
        since: Option<u64>,
    ) -> Result<ExportReport> {
        let mut report = ExportReport::default();
        self.walk_by_time(since, false, &mut report, |(rec, files, _, facets)| {
            write_json_line(&mut out, rec, files, facets)
                .map_err(|e| PgError::InvalidInput(format!("writing JSON: {e}")))?;
            Ok(true)
        })?;
        out.flush().map_err(io("writing JSON"))?;
        Ok(report)
    }

    /// Writes `<infohash>.torrent` (`d4:info<raw info dict>e`) into `dir` for every
    /// torrent discovered at or after `since` whose info dict is kept.
    pub fn export_torrent_files(&mut self, dir: &Path, since: Option<u64>) -> Result<ExportReport> {
        std::fs::create_dir_all(dir).map_err(io("creating the export directory"))?;
        let mut report = ExportReport::default();
        let mut no_info = 0;
        self.walk_by_time(since, true, &mut report, |(rec, _, info, _)| {
            let Some(info) = info else {
                no_info += 1;
                return Ok(false);
            };
            write_torrent_file(dir, &rec.infohash, &info)
                .map_err(|e| PgError::InvalidInput(format!("writing a .torrent file: {e}")))?;
            Ok(true)
        })?;
        report.skipped_no_info = no_info;
        Ok(report)
    }
}
