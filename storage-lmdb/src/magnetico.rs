//! Import of a magnetico SQLite database (feature `magnetico`).
//!
//! Reads `torrents(id, info_hash BLOB, name, total_size, discovered_on)` and
//! `files(torrent_id, size, path)` with a merge join on the torrent id, so memory
//! stays bounded by one batch whatever the database size.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::error::StoreError;
use crate::export::ImportReport;
use crate::store::{Result, Store};
use crate::types::*;

fn sql(e: rusqlite::Error) -> StoreError {
    StoreError::Magnetico(e.to_string())
}

impl Store {
    /// Imports a magnetico database (opened read-only). Idempotent. Rows with a bad
    /// infohash or values of the wrong type are counted and skipped.
    pub fn import_magnetico(&self, path: &Path) -> Result<ImportReport> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| StoreError::Magnetico(format!("opening {}: {e}", path.display())))?;
        let mut rep = ImportReport::default();
        let mut ts = conn
            .prepare(
                "SELECT id, info_hash, name, total_size, discovered_on FROM torrents ORDER BY id",
            )
            .map_err(sql)?;
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
            let Ok(infohash) = <InfoHash>::try_from(ih.as_slice()) else {
                rep.skip(format!(
                    "torrent id {id}: info_hash is {} bytes, not 20",
                    ih.len()
                ));
                continue;
            };
            batch.push(Op::Torrent(Box::new(TorrentInput {
                infohash,
                name,
                total_size: total_size.max(0) as u64,
                piece_length: 0,
                piece_count: 0,
                private: false,
                source: None,
                files,
                discovered_at: discovered_on.max(0) as u64,
                sources: Sources::IMPORT,
                seeders: None,
                leechers: None,
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
