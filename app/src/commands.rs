//! The database commands: search, show, recent, export, import, stats, db.
//!
//! Read-only commands refuse a path that holds no database (they never create
//! one); `import` and `crawl` create it.

use std::io::{BufReader, BufWriter, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use magnetar_storage::{
    magnet_of, parse_torrent_ref, to_hex, DbLock, FacetFilter, Facets, RetentionPolicy,
    SearchQuery, SortBy, Store, StoreError, StoreOptions, TorrentRecord, TorrentRef,
};

use magnetar_core::classify::{classify, ContentKind};
use magnetar_storage::{FilterMark, InfoHash};

use std::sync::Arc;

use magnetar_storage::backend::ReadIndex;

use crate::crawl::wall_secs;
use crate::Fail;

/// Where the store is (`--db` / `--store`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLoc {
    /// An LMDB environment's directory.
    Lmdb(PathBuf),
    /// A PostgreSQL connection string (URL or libpq key=value).
    Postgres(String),
}

impl StoreLoc {
    /// A `postgres://` or `postgresql://` URL, or a libpq string starting with
    /// `host=`, is PostgreSQL; anything else an LMDB directory.
    pub fn parse(s: &str) -> StoreLoc {
        let t = s.trim_start();
        if t.starts_with("postgres://") || t.starts_with("postgresql://") || t.starts_with("host=")
        {
            StoreLoc::Postgres(s.to_owned())
        } else {
            StoreLoc::Lmdb(PathBuf::from(s))
        }
    }

    /// How messages name it (a URL's password is not shown).
    pub fn label(&self) -> String {
        match self {
            StoreLoc::Lmdb(p) => p.display().to_string(),
            StoreLoc::Postgres(u) => redact(u),
        }
    }
}

/// A connection string without its password (`postgres://user:pw@h` → `user:***@h`,
/// `password=pw` → `password=***`).
pub fn redact(url: &str) -> String {
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    {
        let scheme = &url[..url.len() - rest.len()];
        if let Some(at) = rest.find('@') {
            let cred = &rest[..at];
            if let Some(colon) = cred.find(':') {
                return format!("{scheme}{}:***{}", &cred[..colon], &rest[at..]);
            }
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***".to_string()
            } else {
                kv.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Opens a store for reading (search, show, recent, stats, export, serve): LMDB
/// read-only (never created), or a PostgreSQL reader with `pool` connections.
pub fn open_index(loc: &StoreLoc, pool: usize) -> Result<Arc<dyn ReadIndex>, Fail> {
    match loc {
        StoreLoc::Lmdb(p) => Ok(Arc::new(open_read_only(p)?)),
        StoreLoc::Postgres(url) => magnetar_storage_pg::PgReader::open(url, pool)
            .map(|r| Arc::new(r) as Arc<dyn ReadIndex>)
            .map_err(|e| Fail(format!("store {}: {e}", redact(url)))),
    }
}

fn ix_err(loc: &StoreLoc) -> impl Fn(magnetar_storage::StoreError) -> Fail + '_ {
    move |e| Fail(format!("database {}: {e}", loc.label()))
}

fn db_err(path: &Path) -> impl Fn(magnetar_storage::StoreError) -> Fail + '_ {
    move |e| Fail(format!("database {}: {e}", path.display()))
}

/// Set when whoever reads our stdout went away (`magnetar search … | head -1`): the
/// command then ends quietly with status 0, as `grep` or `ls` piped to `head` do.
pub(crate) static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// An error writing to stdout: a closed pipe is a quiet end (see [`STDOUT_CLOSED`]).
pub(crate) fn out_err(e: std::io::Error) -> Fail {
    if e.kind() == ErrorKind::BrokenPipe {
        STDOUT_CLOSED.store(true, Ordering::SeqCst);
        Fail("stdout closed".into())
    } else {
        Fail(format!("writing to stdout: {e}"))
    }
}

/// `writeln!` to stdout, mapping errors through [`out_err`].
macro_rules! out {
    ($o:expr, $($arg:tt)*) => {
        writeln!($o, $($arg)*).map_err(out_err)?
    };
}

/// Takes the database's maintenance lock for `role` (creating the directory when
/// missing): refused, naming the holder, while a crawler or another maintenance
/// command runs on it. Held until the returned guard is dropped.
pub fn lock_db(path: &Path, role: &str) -> Result<DbLock, Fail> {
    if path.exists() && !path.is_dir() {
        return Err(Fail(format!(
            "database {}: exists and is not a directory",
            path.display()
        )));
    }
    std::fs::create_dir_all(path)
        .map_err(|e| Fail(format!("database {}: cannot create: {e}", path.display())))?;
    DbLock::acquire(path, role).map_err(|e| Fail(e.to_string()))
}

/// Opens an existing database to write it (never creates one; upgrades an older
/// schema).
pub fn open_existing(path: &Path) -> Result<Store, Fail> {
    if !path.join("data.mdb").is_file() {
        return Err(no_database(path));
    }
    Store::open(StoreOptions::new(path)).map_err(db_err(path))
}

/// Opens an existing database for reading only (search, show, recent, stats,
/// export, serve): never creates one, and never waits for a crawler's commit in
/// progress (`Store::open_read_only` takes no write transaction).
pub fn open_read_only(path: &Path) -> Result<Store, Fail> {
    if !path.join("data.mdb").is_file() {
        return Err(no_database(path));
    }
    Store::open_read_only(StoreOptions::new(path)).map_err(db_err(path))
}

fn no_database(path: &Path) -> Fail {
    Fail(format!(
        "no magnetar database at {} (run `magnetar crawl` first, or pass --db PATH)",
        path.display()
    ))
}

/// Opens the database, creating its directory when missing.
pub fn open_or_create(path: &Path) -> Result<Store, Fail> {
    open_or_create_with(path, |_| {})
}

/// `open_or_create` with the store's options adjusted by `tune`.
pub fn open_or_create_with(
    path: &Path,
    tune: impl FnOnce(&mut StoreOptions),
) -> Result<Store, Fail> {
    if path.exists() && !path.is_dir() {
        return Err(Fail(format!(
            "database {}: exists and is not a directory",
            path.display()
        )));
    }
    std::fs::create_dir_all(path)
        .map_err(|e| Fail(format!("database {}: cannot create: {e}", path.display())))?;
    let mut opts = StoreOptions::new(path);
    tune(&mut opts);
    Store::open(opts).map_err(db_err(path))
}

// Sizes, ages and UTC dates are shared with the web server: `magnetar_storage::fmt`.
pub use magnetar_storage::fmt::{age, human_size, utc};

fn json_record(r: &TorrentRecord, facets: Option<&Facets>, now: u64) -> serde_json::Value {
    serde_json::json!({
        "infohash": to_hex(&r.infohash),
        "hash_kind": r.kind.as_str(),
        "v2_infohash": r.v2.map(|h| to_hex(&h)),
        "name": r.name,
        "size": r.total_size,
        "files": r.file_count,
        "discovered_at": r.discovered_at,
        "last_seen_at": r.last_seen_at,
        "seeders": r.seeders,
        "leechers": r.leechers,
        "scraped_at": r.scraped_at,
        "scrape_age_secs": r.scraped_at.map(|t| now.saturating_sub(t)),
        "magnet": magnet_of(r),
        "facets": facets.map(Facets::to_json),
    })
}

/// The stored facets of `records` (`None` for unclassified ones).
fn facets_of(
    store: &dyn ReadIndex,
    db: &StoreLoc,
    records: &[TorrentRecord],
) -> Result<Vec<Option<Facets>>, Fail> {
    let ihs: Vec<_> = records.iter().map(|r| r.infohash).collect();
    store.facets_of(&ihs).map_err(ix_err(db))
}

/// Unix seconds now (0 if the clock is before 1970).
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Seeders/leechers with the age of the measurement, `S 12 L 3 (2h)`; `?` for
/// unknown counts, `(age ?)` for counts stored without their time.
pub fn scrape_text(r: &TorrentRecord, now: u64) -> String {
    let c = |v: Option<u32>| v.map_or("?".to_string(), |v| v.to_string());
    if r.seeders.is_none() && r.leechers.is_none() {
        return "S ? L ?".to_string();
    }
    let when = r
        .scraped_at
        .map_or("age ?".to_string(), |t| age(now.saturating_sub(t)));
    format!("S {} L {} ({when})", c(r.seeders), c(r.leechers))
}

fn print_table(o: &mut impl Write, records: &[TorrentRecord]) -> Result<(), Fail> {
    let now = now_secs();
    for r in records {
        out!(
            o,
            "{}  {:>10}  {}  {:<20}  {}",
            to_hex(&r.infohash),
            human_size(r.total_size),
            utc(r.discovered_at),
            scrape_text(r, now),
            r.name
        );
    }
    Ok(())
}

/// What `magnetar search` was asked.
#[derive(Clone, Debug)]
pub struct SearchArgs {
    pub query: String,
    pub limit: usize,
    pub offset: usize,
    pub sort: SortBy,
    pub descending: bool,
    pub min_size: Option<String>,
    pub max_size: Option<String>,
    pub since: Option<String>,
    pub category: Option<String>,
    /// Attribute filters (name, value): year, season, episode, resolution.
    pub attributes: Vec<(String, String)>,
    pub json: bool,
}

/// A size: bytes, or a number with a unit (`700MB`, `1.5GiB`): kB/MB/GB/TB are
/// powers of 1000, K/M/G/T and KiB/MiB/GiB/TiB powers of 1024.
pub fn parse_size(flag: &str, s: &str) -> Result<u64, Fail> {
    let bad = || {
        Fail(format!(
            "{flag} {s}: expected bytes or a size with a unit, like 700MB, 1.5GiB or 4G"
        ))
    };
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024.0f64.powi(4),
        _ => return Err(bad()),
    };
    if let (Ok(n), "") = (num.parse::<u64>(), unit) {
        return Ok(n);
    }
    let n: f64 = num.parse().map_err(|_| bad())?;
    let v = (n * mult).round();
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(v as u64)
}

pub fn search(db: &StoreLoc, a: &SearchArgs) -> Result<(), Fail> {
    let mut q = SearchQuery::new(a.query.clone())
        .sort(a.sort)
        .page(a.offset, a.limit);
    q.descending = a.descending;
    let min = a
        .min_size
        .as_deref()
        .map(|s| parse_size("--min-size", s))
        .transpose()?;
    let max = a
        .max_size
        .as_deref()
        .map(|s| parse_size("--max-size", s))
        .transpose()?;
    q = q.size_range(min, max);
    if let Some(s) = &a.since {
        q = q.discovered_range(Some(parse_since(s, now_secs())?), None);
    }
    if a.category.is_some() || !a.attributes.is_empty() {
        q = q.facets(FacetFilter {
            category: a.category.clone(),
            attributes: a.attributes.clone(),
        });
    }
    let store = open_index(db, 1)?;
    let store = &*store;
    let res = store.query(&q).map_err(|e| match e {
        StoreError::InvalidQuery(_) | StoreError::Unsupported(_) => Fail(e.to_string()),
        e => ix_err(db)(e),
    })?;
    let mut o = std::io::stdout().lock();
    if a.json {
        let now = now_secs();
        let facets = facets_of(store, db, &res.hits)?;
        for (r, f) in res.hits.iter().zip(&facets) {
            out!(o, "{}", json_record(r, f.as_ref(), now));
        }
    } else {
        print_table(&mut o, &res.hits)?;
        eprintln!(
            "{} of {}{} match(es){}{}",
            res.hits.len(),
            if res.total_estimated { "about " } else { "" },
            res.total,
            if a.offset > 0 {
                format!(" after skipping {}", a.offset)
            } else {
                String::new()
            },
            if res.prefix_truncated {
                " (a prefix matched too many terms; only the first were used)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// Renders paths (`a/b/c`) as an indented tree with sizes on the files.
pub fn file_tree(files: &[(String, u64)]) -> String {
    let mut sorted: Vec<&(String, u64)> = files.iter().collect();
    sorted.sort();
    let mut out = String::new();
    let mut prev: Vec<&str> = Vec::new();
    for (path, size) in sorted {
        let parts: Vec<&str> = path.split('/').collect();
        let common = prev
            .iter()
            .zip(&parts)
            .take(parts.len().saturating_sub(1))
            .take_while(|(a, b)| a == b)
            .count();
        for (depth, part) in parts.iter().enumerate().skip(common) {
            let indent = "  ".repeat(depth + 1);
            if depth + 1 == parts.len() {
                out.push_str(&format!("{indent}{part}  ({})\n", human_size(*size)));
            } else {
                out.push_str(&format!("{indent}{part}/\n"));
            }
        }
        prev = parts;
    }
    out
}

/// Candidates listed for an ambiguous prefix.
const AMBIGUOUS_SHOWN: usize = 5;

/// The infohash `reference` names: 40 hex digits, a magnet URI, or a unique hex
/// prefix (at least 8 digits) of a stored torrent's infohash.
pub fn resolve(store: &dyn ReadIndex, db: &StoreLoc, reference: &str) -> Result<[u8; 20], Fail> {
    match parse_torrent_ref(reference).map_err(|e| Fail(e.to_string()))? {
        TorrentRef::Full(ih) => Ok(ih),
        TorrentRef::Prefix { bytes, nibbles } => {
            let p = reference.trim().to_ascii_lowercase();
            let found = store
                .infohashes_with_prefix(&bytes, nibbles, AMBIGUOUS_SHOWN + 1)
                .map_err(ix_err(db))?;
            match found.as_slice() {
                [] => Err(Fail(format!(
                    "no torrent in the database has an infohash starting with {p}"
                ))),
                [one] => Ok(*one),
                many => {
                    let mut msg = format!(
                        "infohash prefix {p} is ambiguous: it matches {} torrents; give more digits:",
                        if many.len() > AMBIGUOUS_SHOWN {
                            format!("more than {AMBIGUOUS_SHOWN}")
                        } else {
                            many.len().to_string()
                        }
                    );
                    for ih in many.iter().take(AMBIGUOUS_SHOWN) {
                        let name = store
                            .get(ih)
                            .ok()
                            .flatten()
                            .map(|t| t.record.name)
                            .unwrap_or_default();
                        msg.push_str(&format!("\n  {}  {name}", to_hex(ih)));
                    }
                    Err(Fail(msg))
                }
            }
        }
    }
}

pub fn show(db: &StoreLoc, reference: &str) -> Result<(), Fail> {
    if let Err(e) = parse_torrent_ref(reference) {
        return Err(Fail(e.to_string()));
    }
    let store = open_index(db, 1)?;
    let store = &*store;
    let ih = resolve(store, db, reference)?;
    let Some(t) = store.get(&ih).map_err(ix_err(db))? else {
        return Err(Fail(format!("{} is not in the database", to_hex(&ih))));
    };
    let r = &t.record;
    let count = |v: Option<u32>| v.map_or("unknown".to_string(), |v| v.to_string());
    let mut o = std::io::stdout().lock();
    out!(o, "name:          {}", r.name);
    out!(o, "infohash:      {}", to_hex(&r.infohash));
    out!(o, "bittorrent:    {}", r.kind.as_str());
    if let Some(v2) = &r.v2 {
        out!(o, "v2 infohash:   {}", to_hex(v2));
    }
    out!(
        o,
        "size:          {} ({} bytes)",
        human_size(r.total_size),
        r.total_size
    );
    out!(o, "files:         {}", r.file_count);
    out!(
        o,
        "pieces:        {} x {}",
        r.piece_count,
        human_size(r.piece_length as u64)
    );
    out!(o, "private:       {}", if r.private { "yes" } else { "no" });
    if let Some(s) = &r.source {
        out!(o, "source:        {s}");
    }
    out!(o, "discovered:    {} UTC", utc(r.discovered_at));
    out!(o, "last seen:     {} UTC", utc(r.last_seen_at));
    let mut src = Vec::new();
    for (bit, name) in [
        (magnetar_storage::Sources::ANNOUNCE, "announce"),
        (magnetar_storage::Sources::SAMPLE, "sample"),
        (magnetar_storage::Sources::GET_PEERS, "get_peers"),
        (magnetar_storage::Sources::IMPORT, "import"),
    ] {
        if r.sources.contains(bit) && bit.0 != 0 {
            src.push(name);
        }
    }
    out!(o, "sources:       {}", src.join(", "));
    let measured = match r.scraped_at {
        _ if r.seeders.is_none() && r.leechers.is_none() => String::new(),
        Some(t) => format!(
            "   (measured {} ago, {} UTC)",
            age(now_secs().saturating_sub(t)),
            utc(t)
        ),
        None => "   (measured at an unknown time)".to_string(),
    };
    out!(
        o,
        "seeders:       {}   leechers: {}{measured}",
        count(r.seeders),
        count(r.leechers)
    );
    out!(
        o,
        "info dict:     {}",
        if r.has_info { "kept" } else { "not kept" }
    );
    out!(o, "magnet:        {}", magnet_of(r));
    match store.facets(&ih).map_err(ix_err(db))? {
        Some(f) => {
            out!(
                o,
                "kind:          {} (Torznab {} {})",
                f.class.kind.as_str(),
                f.category,
                magnetar_storage::category_name(f.category)
            );
            for (k, v) in f.attributes() {
                out!(o, "  {:<13}{v}", format!("{k}:"));
            }
        }
        None => out!(
            o,
            "kind:          not classified (run `magnetar reclassify`)"
        ),
    }
    out!(o, "file tree:");
    let files: Vec<(String, u64)> = t.files.iter().map(|f| (f.path.clone(), f.size)).collect();
    write!(o, "{}", file_tree(&files)).map_err(out_err)?;
    Ok(())
}

pub fn recent(db: &StoreLoc, n: usize, json: bool) -> Result<(), Fail> {
    let store = open_index(db, 1)?;
    let store = &*store;
    let rs = store.recent(n).map_err(ix_err(db))?;
    let mut o = std::io::stdout().lock();
    if json {
        let now = now_secs();
        let facets = facets_of(store, db, &rs)?;
        for (r, f) in rs.iter().zip(&facets) {
            out!(o, "{}", json_record(r, f.as_ref(), now));
        }
        Ok(())
    } else {
        print_table(&mut o, &rs)
    }
}

/// `--since`: Unix seconds, a UTC date (`2026-11-01`) or time
/// (`2026-11-01T12:00:00Z`), or an age (`90s`, `30m`, `24h`, `7d`) before now.
pub fn parse_since(s: &str, now: u64) -> Result<u64, Fail> {
    let bad = || {
        Fail(format!(
            "--since {s}: expected Unix seconds, a UTC date or time like 2026-11-01 or \
             2026-11-01T12:00:00Z, or an age like 30m, 24h, 7d"
        ))
    };
    if let Ok(v) = s.parse::<u64>() {
        return Ok(v);
    }
    if s.len() >= 10 && s.as_bytes().get(4) == Some(&b'-') {
        return parse_utc(s).ok_or_else(bad);
    }
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    Ok(now.saturating_sub(n.saturating_mul(mult)))
}

/// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS[Z]` (UTC) as Unix seconds.
fn parse_utc(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let num = |x: &str, len: usize| -> Option<i64> {
        (x.len() == len && x.bytes().all(|b| b.is_ascii_digit()))
            .then(|| x.parse().ok())
            .flatten()
    };
    let mut d = date.split('-');
    let (y, m, day) = (num(d.next()?, 4)?, num(d.next()?, 2)?, num(d.next()?, 2)?);
    if d.next().is_some() || !(1..=12).contains(&m) {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if day < 1 || day > month_days[(m - 1) as usize] {
        return None;
    }
    let secs = match time {
        None => 0,
        Some(t) => {
            let mut p = t.split(':');
            let (h, mi, se) = (num(p.next()?, 2)?, num(p.next()?, 2)?, num(p.next()?, 2)?);
            if p.next().is_some() || h > 23 || mi > 59 || se > 60 {
                return None;
            }
            h * 3600 + mi * 60 + se
        }
    };
    let days = magnetar_storage::fmt::days_from_civil(y, m as u32, day as u32);
    u64::try_from(days * 86_400 + secs).ok()
}

pub fn export(
    db: &StoreLoc,
    torrent_files: bool,
    since: Option<&str>,
    out: Option<PathBuf>,
) -> Result<(), Fail> {
    let since = since.map(|s| parse_since(s, wall_secs())).transpose()?;
    if torrent_files {
        let Some(dir) = out else {
            return Err(Fail(
                "--format torrent needs --out DIR (the directory for the .torrent files)".into(),
            ));
        };
        let store = open_index(db, 1)?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| Fail(format!("{}: cannot create: {e}", dir.display())))?;
        let rep = store
            .export_torrent_files(&dir, since)
            .map_err(ix_err(db))?;
        eprintln!(
            "exported {} .torrent file(s) to {} ({} without a kept info dict, {} corrupt skipped)",
            rep.torrents,
            dir.display(),
            rep.skipped_no_info,
            rep.skipped_corrupt
        );
        return Ok(());
    }
    let store = open_index(db, 1)?;
    let rep = match out {
        Some(path) => {
            // Written to a temporary name and renamed when complete: no partial file.
            let tmp = path.with_extension("partial");
            let f =
                std::fs::File::create(&tmp).map_err(|e| Fail(format!("{}: {e}", tmp.display())))?;
            let mut w = BufWriter::new(f);
            let rep = store
                .export_jsonl(&mut w as &mut dyn Write, since)
                .map_err(ix_err(db));
            let done = rep.and_then(|rep| {
                w.flush()
                    .map_err(|e| Fail(format!("{}: {e}", tmp.display())))?;
                std::fs::rename(&tmp, &path)
                    .map_err(|e| Fail(format!("{}: {e}", path.display())))?;
                Ok(rep)
            });
            if done.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            done?
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = BufWriter::new(stdout.lock());
            let rep = store
                .export_jsonl(&mut w as &mut dyn Write, since)
                .map_err(|e| match e {
                    magnetar_storage::StoreError::Io { source, .. }
                        if source.kind() == ErrorKind::BrokenPipe =>
                    {
                        out_err(source)
                    }
                    e => ix_err(db)(e),
                })?;
            w.flush().map_err(out_err)?;
            rep
        }
    };
    eprintln!(
        "exported {} torrent(s){}",
        rep.torrents,
        rep.last_discovered_at
            .map(|t| format!("; next incremental export: --since {}", t + 1))
            .unwrap_or_default()
    );
    Ok(())
}

pub fn import(db: &Path, magnetico: bool, path: &Path) -> Result<(), Fail> {
    if !path.is_file() {
        return Err(Fail(format!("{}: no such file", path.display())));
    }
    let _lock = lock_db(db, "import")?;
    let store = open_or_create(db)?;
    let rep = if magnetico {
        store.import_magnetico(path).map_err(db_err(db))?
    } else {
        let f = std::fs::File::open(path).map_err(|e| Fail(format!("{}: {e}", path.display())))?;
        store.import_jsonl(BufReader::new(f)).map_err(db_err(db))?
    };
    eprintln!(
        "read {}, new {}, updated {}, skipped {}",
        rep.read, rep.new, rep.updated, rep.skipped
    );
    for e in &rep.errors {
        eprintln!("  skipped: {e}");
    }
    Ok(())
}

/// Tombstones and hidden marks `stats` reads at most to count them by rule.
const FILTER_LABELS_SCAN: u64 = 1_000_000;
/// Days `stats` measures growth over.
const GROWTH_DAYS: u32 = 7;

/// The database's growth per day: torrents discovered per day over the last
/// [`GROWTH_DAYS`] days (from the stored discovery times) and the bytes that takes
/// at the database's current bytes per torrent.
fn growth(
    o: &mut impl Write,
    store: &dyn ReadIndex,
    db: &StoreLoc,
    s: &magnetar_storage::Stats,
) -> Result<(), Fail> {
    let now = wall_secs();
    let h = store
        .discoveries_per_hour(now, GROWTH_DAYS * 24)
        .map_err(ix_err(db))?;
    let total: u64 = h.counts.iter().sum();
    // Full days only: the window's first `hours mod 24` and the current hour's
    // partial day are averaged in (a per-day mean over the window).
    let per_day = total as f64 / f64::from(GROWTH_DAYS);
    let per_torrent = if s.torrents > 0 {
        s.used_bytes as f64 / s.torrents as f64
    } else {
        0.0
    };
    out!(
        o,
        "growth:           {:.0} torrents/day over the last {GROWTH_DAYS} days (≈ {}/day at {} per torrent){}",
        per_day,
        human_size((per_day * per_torrent) as u64),
        human_size(per_torrent as u64),
        if h.truncated { " (window truncated)" } else { "" }
    );
    let days: Vec<String> = h
        .counts
        .chunks(24)
        .map(|c| c.iter().sum::<u64>().to_string())
        .collect();
    out!(o, "  per day (oldest first): {}", days.join(" "));
    Ok(())
}

pub fn stats(db: &StoreLoc) -> Result<(), Fail> {
    let store = open_index(db, 1)?;
    let store = &*store;
    let s = store.stats().map_err(ix_err(db))?;
    let mut o = std::io::stdout().lock();
    out!(
        o,
        "torrents:         {} ({} with info dict)",
        s.torrents,
        s.torrents_with_info
    );
    out!(o, "peers:            {}", s.peers);
    out!(o, "dht nodes:        {}", s.nodes);
    out!(o, "sessions:         {}", s.sessions);
    out!(o, "requests:         {}", s.requests);
    out!(
        o,
        "disk:             {} (used {}, map {})",
        human_size(s.disk_bytes),
        human_size(s.used_bytes),
        human_size(s.map_size)
    );
    growth(&mut o, store, db, &s)?;
    let f = store.filter_totals().map_err(ix_err(db))?;
    out!(
        o,
        "filtered:         {} tombstone(s) (never fetched again), {} hidden",
        f.tombstones,
        f.hidden
    );
    if f.tombstones + f.hidden > 0 {
        let labels = store
            .filter_labels(FILTER_LABELS_SCAN)
            .map_err(ix_err(db))?;
        for (label, t, h) in labels.iter().take(20) {
            out!(o, "  {t:>9} tombstoned  {h:>9} hidden  {label}");
        }
    }
    let yields = store.session_yields(wall_secs()).map_err(ix_err(db))?;
    if !yields.is_empty() {
        out!(o, "\nsessions (newest last):");
        out!(
            o,
            "  {:<19}  {:>9}  {:>9}  {:>9}  {:>8}  {:>10}  {:>9}",
            "started (UTC)",
            "duration",
            "new",
            "fetched",
            "failed",
            "new/hour",
            "peak RSS"
        );
        for y in yields.iter().rev().take(20).rev() {
            let ss = &y.session;
            let end = ss.ended_at.unwrap_or_else(wall_secs);
            out!(
                o,
                "  {:<19}  {:>8}s  {:>9}  {:>9}  {:>8}  {:>10.1}  {:>9}{}",
                utc(ss.started_at),
                end.saturating_sub(ss.started_at),
                ss.counters.torrents_new,
                ss.counters.metadata_fetched,
                ss.counters.metadata_failed,
                y.torrents_per_hour,
                human_size(ss.peak_rss_bytes),
                if ss.ended_at.is_none() {
                    "  (running or killed)"
                } else {
                    ""
                }
            );
        }
    }
    let reasons = store.failure_reasons().map_err(ix_err(db))?;
    // The funnel as far as it is stored: the session records' counters (every
    // session), and the kept request records (one per peer session).
    if !yields.is_empty() {
        let sum = |f: fn(&magnetar_storage::SessionCounters) -> u64| -> u64 {
            yields.iter().map(|y| f(&y.session.counters)).sum()
        };
        out!(o, "\nfunnel (all sessions):");
        out!(
            o,
            "  infohashes:  {}",
            crate::doctor::chain_text(&[
                ("discovered", sum(|c| c.infohashes_discovered)),
                ("metadata", sum(|c| c.metadata_fetched)),
                ("stored", sum(|c| c.torrents_new)),
            ])
        );
        if s.requests > 0 {
            out!(
                o,
                "  peer sessions (kept request records): {}",
                crate::doctor::chain_text(&crate::doctor::connection_steps(s.requests, &reasons))
            );
        }
        out!(
            o,
            "  (peers found, connected and handshake per infohash are not stored: see \
             magnetar_funnel_* in /metrics, or `magnetar doctor`)"
        );
    }
    if !reasons.is_empty() {
        out!(o, "\nfailure reasons:");
        for (r, n) in reasons.iter().take(20) {
            out!(o, "  {n:>9}  {r}");
        }
    }
    let enc = store.encryption_outcomes().map_err(ix_err(db))?;
    if !enc.is_empty() {
        out!(o, "\nhandshakes (kept request records):");
        for (name, n, ok) in enc {
            let name = if name.is_empty() {
                "(not recorded)"
            } else {
                &name
            };
            out!(
                o,
                "  {n:>9} requests  {:>5.1}% ok  {name}",
                ok as f64 * 100.0 / n.max(1) as f64
            );
        }
    }
    let tr = store.transport_outcomes().map_err(ix_err(db))?;
    if !tr.is_empty() {
        out!(o, "\ntransports (kept request records):");
        for (name, n, ok) in tr {
            let name = if name.is_empty() {
                "(not recorded)"
            } else {
                &name
            };
            out!(
                o,
                "  {n:>9} requests  {:>5.1}% ok  {name}",
                ok as f64 * 100.0 / n.max(1) as f64
            );
        }
    }
    let clients = store.top_clients(15).map_err(ix_err(db))?;
    if !clients.is_empty() {
        out!(o, "\ntop clients (ut_metadata requests):");
        for c in clients {
            let name = if c.client.is_empty() {
                "(unknown)"
            } else {
                &c.client
            };
            out!(
                o,
                "  {:>9} requests  {:>5.1}% ok  {}",
                c.requests,
                c.success_rate * 100.0,
                name
            );
        }
    }
    Ok(())
}

pub fn compact(db: &Path) -> Result<(), Fail> {
    if !db.join("data.mdb").is_file() {
        return Err(Fail(format!("no magnetar database at {}", db.display())));
    }
    let _lock = lock_db(db, "db compact")?;
    let (before, after) = magnetar_storage::compact(&StoreOptions::new(db)).map_err(db_err(db))?;
    eprintln!(
        "compacted {}: {} -> {}",
        db.display(),
        human_size(before),
        human_size(after)
    );
    Ok(())
}

/// `magnetar reclassify`: the classifier run again over every stored torrent, in one
/// write transaction; refused while a crawler (or another maintenance command) holds
/// the database.
pub fn reclassify(db: &Path) -> Result<(), Fail> {
    if !db.join("data.mdb").is_file() {
        return Err(Fail(format!("no magnetar database at {}", db.display())));
    }
    let _lock = lock_db(db, "reclassify")?;
    let store = open_existing(db)?;
    let t0 = std::time::Instant::now();
    let rep = store.reclassify().map_err(db_err(db))?;
    let mut o = std::io::stdout().lock();
    for (kind, n) in &rep.per_kind {
        out!(o, "{n:>10}  {}", kind.as_str());
    }
    eprintln!(
        "classified {} torrent(s) in {:.1} s; {} changed kind or category{}",
        rep.torrents,
        t0.elapsed().as_secs_f64(),
        rep.changed,
        if rep.skipped_corrupt > 0 {
            format!(
                "; {} corrupt record(s) skipped (see `magnetar db check`)",
                rep.skipped_corrupt
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

pub fn prune(
    db: &Path,
    requests_days: u64,
    requests_max: Option<u64>,
    peers_days: u64,
    nodes_days: u64,
    torrents: &TorrentPrune,
) -> Result<(), Fail> {
    let store = open_existing(db)?;
    let _lock = lock_db(db, "db prune")?;
    let kind = match &torrents.category {
        Some(c) => Some(parse_kind(c)?),
        None => None,
    };
    if torrents.dry_run || torrents.any() {
        prune_torrents(&store, db, torrents, kind)?;
        if torrents.dry_run {
            return Ok(());
        }
    }
    let rep = store
        .prune(&RetentionPolicy {
            now: wall_secs(),
            requests_max_age_secs: Some(requests_days * 86_400),
            requests_max_count: requests_max,
            peers_max_age_secs: Some(peers_days * 86_400),
            nodes_max_age_secs: Some(nodes_days * 86_400),
        })
        .map_err(db_err(db))?;
    eprintln!(
        "pruned {} request(s), {} peer(s), {} node(s)",
        rep.requests, rep.peers, rep.nodes
    );
    Ok(())
}

/// The torrent rules of `db prune` (issue 20 §4).
pub struct TorrentPrune {
    pub unseen_days: Option<u64>,
    pub no_seeders_days: Option<u64>,
    pub category: Option<String>,
    pub dry_run: bool,
}

impl TorrentPrune {
    fn any(&self) -> bool {
        self.unseen_days.is_some() || self.no_seeders_days.is_some() || self.category.is_some()
    }
}

/// A content kind by name (`movie`, `adult`, ...), or an error listing them.
fn parse_kind(s: &str) -> Result<ContentKind, Fail> {
    ContentKind::ALL
        .iter()
        .copied()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| {
            let names: Vec<&str> = ContentKind::ALL.iter().map(|k| k.as_str()).collect();
            Fail(format!(
                "--category {s:?}: not a content kind; one of {}",
                names.join(", ")
            ))
        })
}

/// Torrents removed per write transaction by `delete`, `filter apply`, `db prune`.
const REMOVE_CHUNK: usize = 5_000;
/// Torrents a dry run lists by name.
const DRY_RUN_SHOWN: usize = 20;

/// The torrent part of `db prune`: every torrent matching all the rules given
/// goes (removed as by `delete`, but without tombstones).
fn prune_torrents(
    store: &Store,
    db: &Path,
    p: &TorrentPrune,
    kind: Option<ContentKind>,
) -> Result<(), Fail> {
    let now = wall_secs();
    let unseen = p
        .unseen_days
        .map(|d| now.saturating_sub(d.saturating_mul(86_400)));
    let no_seeders = p
        .no_seeders_days
        .map(|d| now.saturating_sub(d.saturating_mul(86_400)));
    let mut gone: Vec<(InfoHash, String)> = Vec::new();
    let mut bytes = 0u64;
    if p.any() {
        store
            .for_each_torrent(|r, files, _| {
                let mut hit = true;
                if let Some(c) = unseen {
                    hit &= r.last_seen_at.max(r.discovered_at) < c;
                }
                if let Some(c) = no_seeders {
                    hit &= r.discovered_at < c && r.seeders.unwrap_or(0) == 0;
                }
                if let (true, Some(k)) = (hit, kind) {
                    hit &= classify(&r.name, files.iter().map(|f| (f.path.as_str(), f.size))).kind
                        == k;
                }
                if hit {
                    bytes += r.total_size;
                    gone.push((r.infohash, r.name.clone()));
                }
                true
            })
            .map_err(db_err(db))?;
    }
    let verb = if p.dry_run { "would remove" } else { "removed" };
    if p.dry_run {
        let mut o = std::io::stdout().lock();
        for (ih, name) in gone.iter().take(DRY_RUN_SHOWN) {
            out!(o, "{}  {name}", to_hex(ih));
        }
        if gone.len() > DRY_RUN_SHOWN {
            out!(o, "… and {} more", gone.len() - DRY_RUN_SHOWN);
        }
    } else {
        let ihs: Vec<InfoHash> = gone.iter().map(|g| g.0).collect();
        for chunk in ihs.chunks(REMOVE_CHUNK) {
            store.remove_torrents(chunk, None).map_err(db_err(db))?;
        }
    }
    eprintln!(
        "{verb} {} torrent(s) ({} of content; not tombstoned: they may be fetched again){}",
        gone.len(),
        human_size(bytes),
        if p.dry_run {
            "; nothing changed (dry run)"
        } else {
            ""
        }
    );
    Ok(())
}

/// `magnetar delete INFOHASH…`: removes the torrents and leaves tombstones.
pub fn delete(db: &Path, refs: &[String]) -> Result<(), Fail> {
    let store = open_existing(db)?;
    let _lock = lock_db(db, "delete")?;
    let mut ihs = Vec::with_capacity(refs.len());
    let loc = StoreLoc::Lmdb(db.to_path_buf());
    for r in refs {
        ihs.push(resolve(&store, &loc, r)?);
    }
    let mark = FilterMark {
        at: wall_secs(),
        label: "delete".into(),
    };
    let rep = store
        .remove_torrents(&ihs, Some(&mark))
        .map_err(db_err(db))?;
    for ih in &ihs {
        tracing::info!(target: "magnetar::filter", action = "delete", rule = "delete", infohash = %to_hex(ih), "deleted and tombstoned");
    }
    eprintln!(
        "removed {} torrent(s), {} not stored; {} tombstone(s) left (never fetched or stored again)",
        rep.removed, rep.not_stored, rep.tombstoned
    );
    Ok(())
}

/// `magnetar filter check FILE`.
pub fn filter_check(file: &Path) -> Result<(), Fail> {
    let rules = crate::filter::load(file).map_err(Fail)?;
    let mut o = std::io::stdout().lock();
    for r in rules.rules() {
        let action = match r.action {
            magnetar_core::filter::Action::Drop => "drop",
            magnetar_core::filter::Action::Hide => "hide",
        };
        out!(
            o,
            "line {:>4}  {action}  {}",
            r.line,
            crate::filter::rule_label(r)
        );
    }
    out!(
        o,
        "ok: {} rule(s) in {}",
        rules.rules().len(),
        file.display()
    );
    Ok(())
}

/// `magnetar filter apply --rules FILE [--dry-run]`: the rules applied to what is
/// stored; per rule, what was (or would be) removed and hidden.
pub fn filter_apply(db: &Path, file: &Path, dry_run: bool, unhide: bool) -> Result<(), Fail> {
    let rules = crate::filter::load(file).map_err(Fail)?;
    let store = open_existing(db)?;
    let _lock = lock_db(db, "filter apply")?;
    let now = wall_secs();
    let mut drops: Vec<(InfoHash, FilterMark)> = Vec::new();
    let mut hides: Vec<(InfoHash, FilterMark)> = Vec::new();
    let mut shows: Vec<InfoHash> = Vec::new();
    // rule label → (dropped, hidden)
    let mut per_rule: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    let mut shown = 0;
    let mut o = std::io::stdout().lock();
    let mut err = None;
    store
        .for_each_torrent(|r, files, hidden| {
            let kind = classify(&r.name, files.iter().map(|f| (f.path.as_str(), f.size))).kind;
            let Some(v) =
                rules.check(&r.infohash, kind, &r.name, files.iter().map(|f| f.path.as_str()))
            else {
                if unhide && hidden {
                    shows.push(r.infohash);
                }
                return true;
            };
            let label = crate::filter::rule_label(v.rule);
            let drop = v.action() == magnetar_core::filter::Action::Drop;
            if !drop && hidden {
                return true;
            }
            let e = per_rule.entry(label.clone()).or_default();
            let action = if drop { "drop" } else { "hide" };
            if drop {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
            if !dry_run {
                tracing::info!(target: "magnetar::filter", action, rule = %label, infohash = %to_hex(&r.infohash), name = %r.name, reason = ?v.reason, "filter decision");
            }
            if shown < DRY_RUN_SHOWN {
                shown += 1;
                if let Err(x) = writeln!(o, "{action}  {}  {}  ({label})", to_hex(&r.infohash), r.name) {
                    err = Some(x);
                    return false;
                }
            }
            let m = FilterMark { at: now, label };
            if drop {
                drops.push((r.infohash, m));
            } else {
                hides.push((r.infohash, m));
            }
            true
        })
        .map_err(db_err(db))?;
    if let Some(e) = err {
        return Err(out_err(e));
    }
    if !dry_run {
        for chunk in drops.chunks(REMOVE_CHUNK) {
            // One tombstone per rule label: group the chunk by label.
            let mut by_label: std::collections::BTreeMap<&str, Vec<InfoHash>> = Default::default();
            for (ih, m) in chunk {
                by_label.entry(m.label.as_str()).or_default().push(*ih);
            }
            for (label, ihs) in by_label {
                let m = FilterMark {
                    at: now,
                    label: label.to_owned(),
                };
                store.remove_torrents(&ihs, Some(&m)).map_err(db_err(db))?;
            }
        }
        for chunk in hides.chunks(REMOVE_CHUNK) {
            store.hide_torrents(chunk).map_err(db_err(db))?;
        }
        for chunk in shows.chunks(REMOVE_CHUNK) {
            store.unhide_torrents(chunk).map_err(db_err(db))?;
        }
    }
    let (verb_d, verb_h) = if dry_run {
        ("would remove", "would hide")
    } else {
        ("removed", "hid")
    };
    for (label, (d, h)) in &per_rule {
        out!(o, "rule {label}: {verb_d} {d}, {verb_h} {h}");
    }
    out!(
        o,
        "{verb_d} {} torrent(s) (tombstoned), {verb_h} {}{}{}",
        drops.len(),
        hides.len(),
        if unhide {
            format!(
                ", {} {} hidden by no rule of this file",
                if dry_run {
                    "would show again"
                } else {
                    "showed again"
                },
                shows.len()
            )
        } else {
            String::new()
        },
        if dry_run {
            "; nothing changed (dry run)"
        } else {
            ""
        }
    );
    Ok(())
}

/// `db check`: the store's integrity walk. Damage is an error (exit status 2),
/// after the problems are printed.
pub fn check(db: &Path) -> Result<(), Fail> {
    let store = open_existing(db)?;
    let rep = store.integrity_check().map_err(db_err(db))?;
    let mut o = std::io::stdout().lock();
    out!(o, "torrents:         {}", rep.torrents);
    out!(o, "file lists:       {}", rep.files_lists);
    out!(o, "postings:         {}", rep.postings);
    out!(o, "by_time entries:  {}", rep.by_time);
    out!(o, "info dicts:       {}", rep.info_dicts);
    out!(o, "facets:           {}", rep.facets);
    out!(o, "facet postings:   {}", rep.facet_postings);
    if rep.facets_stale > 0 {
        out!(o, "stale facets:     {}", rep.facets_stale);
    }
    if rep.is_ok() {
        out!(o, "ok: no problems found in {}", db.display());
        return Ok(());
    }
    out!(o, "problems:         {}", rep.problem_count);
    for p in &rep.problems {
        out!(o, "  {p}");
    }
    if rep.problem_count > rep.problems.len() as u64 {
        out!(
            o,
            "  … and {} more",
            rep.problem_count - rep.problems.len() as u64
        );
    }
    Err(Fail(format!(
        "database {}: {} problem(s) found",
        db.display(),
        rep.problem_count
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20");
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(3 * 1024 * 1024 + 17), "3.0 MiB");
        assert_eq!(parse_since("100", 1000).ok(), Some(100));
        assert_eq!(parse_since("2m", 1000).ok(), Some(880));
        assert!(parse_since("2x", 1000).is_err());
        // UTC dates and times (checked against `date -u -d … +%s`).
        assert_eq!(parse_since("1970-01-01", 5).ok(), Some(0));
        assert_eq!(parse_since("2026-11-01", 5).ok(), Some(1_793_491_200));
        assert_eq!(
            parse_since("2026-11-01T00:00:00Z", 5).ok(),
            Some(1_793_491_200)
        );
        assert_eq!(
            parse_since("2024-02-29T23:59:59Z", 5).ok(),
            Some(1_709_251_199)
        );
        assert!(parse_since("2023-02-29", 5).is_err());
        assert!(parse_since("2026-13-01", 5).is_err());
        assert!(parse_since("2026-11-01T24:00:00Z", 5).is_err());
        assert!(parse_since("2026-11-01T12:00", 5).is_err());
        assert!(parse_since("", 1000).is_err());
        let t = file_tree(&[
            ("a/b/c.txt".into(), 1),
            ("a/b/d.txt".into(), 2048),
            ("a/e.bin".into(), 3),
            ("z".into(), 4),
        ]);
        assert_eq!(
            t,
            "  a/\n    b/\n      c.txt  (1 B)\n      d.txt  (2.0 KiB)\n    e.bin  (3 B)\n  z  (4 B)\n"
        );
    }
}
