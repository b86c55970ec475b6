//! `magnetar db copy --from PATH|URL --to PATH|URL`: every torrent from one store
//! to another, LMDB or PostgreSQL either way (see `magnetar_storage_pg::copy` for
//! what is copied and why a round trip gives the same export).
//!
//! A PostgreSQL store is named by a `postgres://` / `postgresql://` URL or a
//! libpq string (`host=/run/postgresql dbname=magnetar`); anything else is an
//! LMDB directory. The LMDB source is read in a snapshot (safe while a crawler
//! writes it); an LMDB target is locked as for `import` (refused while a crawler
//! or another maintenance command holds it). The same store as source and target
//! is refused (the same directory; for PostgreSQL, the same database of the same
//! server, whatever the URLs look like).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use magnetar_storage_pg::copy::{copy, same_pg_database, CopyReport, Source, Target};
use magnetar_storage_pg::{PgOptions, PgStore};

use crate::commands::{lock_db, open_or_create, open_read_only};
use crate::Fail;

/// Where a store is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    Lmdb(PathBuf),
    Pg(String),
}

/// A PostgreSQL URL or libpq string, else an LMDB directory.
pub fn place_of(s: &str) -> Place {
    let pg = s.starts_with("postgres://")
        || s.starts_with("postgresql://")
        || s.split_whitespace()
            .any(|kv| kv.starts_with("host=") || kv.starts_with("dbname="));
    if pg {
        Place::Pg(s.to_string())
    } else {
        Place::Lmdb(PathBuf::from(s))
    }
}

fn pg(url: &str) -> Result<PgStore, Fail> {
    PgStore::connect(url, PgOptions::default()).map_err(|e| Fail(format!("{url}: {e}")))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Runs `db copy`, printing progress (at most every 2 s) and the totals on stderr.
pub fn db_copy(from: &str, to: &str, batch: usize) -> Result<(), Fail> {
    let (from, to) = (place_of(from), place_of(to));
    let t0 = Instant::now();
    let mut last = Instant::now();
    let progress = |r: &CopyReport| {
        if last.elapsed() >= Duration::from_secs(2) {
            last = Instant::now();
            eprintln!(
                "copied {} torrent(s): {} new, {} already there, {} skipped ({:.0}/s)",
                r.read,
                r.new,
                r.updated,
                r.skipped,
                r.read as f64 / t0.elapsed().as_secs_f64().max(1e-3)
            );
        }
    };
    let rep = match (&from, &to) {
        (Place::Lmdb(a), Place::Lmdb(b)) => {
            if same_dir(a, b) {
                return Err(Fail(format!(
                    "db copy: {} is both the source and the target",
                    a.display()
                )));
            }
            let src = open_read_only(a)?;
            let _lock = lock_db(b, "db copy")?;
            let dst = open_or_create(b)?;
            copy(Source::Lmdb(&src), Target::Lmdb(&dst), batch, progress)
        }
        (Place::Lmdb(a), Place::Pg(u)) => {
            let src = open_read_only(a)?;
            let mut dst = pg(u)?;
            copy(Source::Lmdb(&src), Target::Pg(&mut dst), batch, progress)
        }
        (Place::Pg(u), Place::Lmdb(b)) => {
            let mut src = pg(u)?;
            let _lock = lock_db(b, "db copy")?;
            let dst = open_or_create(b)?;
            copy(Source::Pg(&mut src), Target::Lmdb(&dst), batch, progress)
        }
        (Place::Pg(u), Place::Pg(v)) => {
            let mut src = pg(u)?;
            let mut dst = pg(v)?;
            if same_pg_database(&mut src, &mut dst).map_err(|e| Fail(e.to_string()))? {
                return Err(Fail(format!(
                    "db copy: {u} and {v} are the same database (source and target)"
                )));
            }
            copy(Source::Pg(&mut src), Target::Pg(&mut dst), batch, progress)
        }
    }
    .map_err(|e| Fail(format!("db copy: {e}")))?;
    eprintln!(
        "copied {} torrent(s) in {:.1} s: {} new, {} already there, {} skipped, {} batch(es)",
        rep.read,
        t0.elapsed().as_secs_f64(),
        rep.new,
        rep.updated,
        rep.skipped,
        rep.batches
    );
    Ok(())
}
