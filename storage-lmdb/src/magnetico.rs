//! Import of a magnetico SQLite database (feature `magnetico`).
//!
//! Reads `torrents(id, info_hash BLOB, name, total_size, discovered_on)` and
//! `files(torrent_id, size, path)` with a merge join on the torrent id, so memory
//! stays bounded by one batch whatever the database size. When the `torrents`
//! table has them (later magnetico schemas), `n_seeders` and `n_leechers` are
//! imported as the BEP 33 counts, measured at `updated_on` when that is set.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::error::StoreError;
use crate::export::ImportReport;
use crate::store::{Result, Store};
use crate::types::*;

fn sql(e: rusqlite::Error) -> StoreError {
    StoreError::Magnetico(e.to_string())
}

/// The column names of `table`.
fn columns(conn: &Connection, table: &str) -> Result<Vec<String>> {
    let mut st = conn
        .prepare(&format!("PRAGMA table_info({table})"))
        .map_err(sql)?;
    let names = st
        .query_map([], |r| r.get::<_, String>(1))
        .map_err(sql)?
        .collect::<rusqlite::Result<Vec<String>>>()
        .map_err(sql)?;
    Ok(names)
}

impl Store {
    /// Imports a magnetico database (opened read-only). Idempotent. Rows with a bad
    /// infohash or values of the wrong type are counted and skipped.
    pub fn import_magnetico(&self, path: &Path) -> Result<ImportReport> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| StoreError::Magnetico(format!("opening {}: {e}", path.display())))?;
        let mut rep = ImportReport::default();
        let cols = columns(&conn, "torrents")?;
        let has = |c: &str| cols.iter().any(|x| x == c);
        let counts = has("n_seeders") && has("n_leechers");
        let updated = counts && has("updated_on");
        let query = format!(
            "SELECT id, info_hash, name, total_size, discovered_on, {}, {}, {} FROM torrents ORDER BY id",
            if counts { "n_seeders" } else { "NULL" },
            if counts { "n_leechers" } else { "NULL" },
            if updated { "updated_on" } else { "NULL" },
        );
        let mut ts = conn.prepare(&query).map_err(sql)?;
        let mut fs = conn
            .prepare("SELECT torrent_id, size, path FROM files ORDER BY torrent_id")
            .map_err(sql)?;
        let mut trows = ts.query([]).map_err(sql)?;
        let mut frows = fs.query([]).map_err(sql)?;
        // The next file row not yet consumed: (torrent_id, size, path).
        let mut next_file: Option<(i64, i64, String)> = None;
        let mut files_done = false;
        let mut batch = Vec::with_capacity(10_000);
        while let Some(row) = trows.next().map_err(sql)? {
            rep.read += 1;
            let id: i64 = match row.get(0) {
                Ok(v) => v,
                Err(e) => {
                    rep.skip(format!("torrent row {}: id: {e}", rep.read));
                    continue;
                }
            };
            // Collect this torrent's files (skipping files of ids before it).
            let mut files = Vec::new();
            loop {
                if next_file.is_none() && !files_done {
                    match frows.next().map_err(sql)? {
                        Some(f) => {
                            let r: rusqlite::Result<(i64, i64, String)> =
                                (|| Ok((f.get(0)?, f.get(1)?, f.get(2)?)))();
                            match r {
                                Ok(v) => next_file = Some(v),
                                Err(e) => {
                                    rep.skip(format!("file row: {e}"));
                                    continue;
                                }
                            }
                        }
                        None => files_done = true,
                    }
                }
                match &next_file {
                    Some((tid, _, _)) if *tid < id => next_file = None,
                    Some((tid, _, _)) if *tid == id => {
                        if let Some((_, size, path)) = next_file.take() {
                            files.push(FileEntry {
                                path,
                                size: size.max(0) as u64,
                            });
                        }
                    }
                    _ => break,
                }
            }
            let parsed: rusqlite::Result<(Vec<u8>, String, i64, i64)> =
                (|| Ok((row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)))();
            let (ih, name, total_size, discovered_on) = match parsed {
                Ok(v) => v,
                Err(e) => {
                    rep.skip(format!("torrent id {id}: {e}"));
                    continue;
                }
            };
            // Counts: NULL, negative or not an integer is "unknown".
            let count = |i: usize| -> Option<u32> {
                row.get::<_, Option<i64>>(i)
                    .ok()
                    .flatten()
                    .and_then(|v| u32::try_from(v).ok())
            };
            let (seeders, leechers) = (count(5), count(6));
            let scraped_at = row
                .get::<_, Option<i64>>(7)
                .ok()
                .flatten()
                .and_then(|v| u64::try_from(v).ok())
                .filter(|&v| v > 0 && (seeders.is_some() || leechers.is_some()));
            let Ok(infohash) = <InfoHash>::try_from(ih.as_slice()) else {
                rep.skip(format!(
                    "torrent id {id}: info_hash is {} bytes, not 20",
                    ih.len()
                ));
                continue;
            };
            batch.push(Op::Torrent(Box::new(TorrentInput {
                infohash,
                kind: HashKind::V1,
                v2: None,
                name,
                total_size: total_size.max(0) as u64,
                piece_length: 0,
                piece_count: 0,
                private: false,
                source: None,
                files,
                discovered_at: discovered_on.max(0) as u64,
                sources: Sources::IMPORT,
                seeders,
                leechers,
                scraped_at,
                info: None,
            })));
            if batch.len() >= 10_000 {
                self.import_batch(&mut batch, &mut rep)?;
            }
        }
        self.import_batch(&mut batch, &mut rep)?;
        Ok(rep)
    }
}
