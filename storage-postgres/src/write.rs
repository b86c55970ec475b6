//! The batched writer: a batch of [`Op`]s is merged per infohash in memory, copied
//! (binary `COPY`) into temporary staging tables, and stored by one idempotent
//! upsert (`INSERT … SELECT … ON CONFLICT (infohash) DO UPDATE`) whose CTEs add the
//! file lists and info dicts of the torrents it inserted. Several writers storing
//! the same torrent at once store it once: the second one's insert waits for the
//! first's commit and then merges into the row (files and info are added only by
//! the insert that created the row). Sightings and scrapes follow as `UPDATE … FROM
//! unnest(…)`, all in one transaction. Rows are inserted in infohash order (one
//! lock order for every writer); doc ids are drawn in discovery order first, as
//! the LMDB store gives them. A deadlock or serialization failure runs the batch
//! again (bounded).
//!
//! Around the torrents, in the same transaction (see [`records`](crate::records)):
//! first the bucket locks and the filter marks (a tombstoned infohash is then not
//! stored: counted in [`BatchReport::tombstoned`]), last the peers, nodes, sessions
//! and requests. Each new torrent is classified (`magnetar_core::classify`, as the
//! LMDB writer does) before the transaction; its facets and facet keys are staged
//! with it and inserted by the upsert's CTEs, like its files.

use std::collections::BTreeMap;

use magnetar_storage::{FileEntry, HashKind, InfoHash, Op, Sources, TorrentInput};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use postgres::Client;

use crate::error::{PgError, Result};
use crate::facets::FacetRow;
use crate::records;
use crate::vector::search_vector;

/// The store options a batch's writes depend on.
pub(crate) struct BatchSettings {
    /// `PgOptions::keep_info`.
    pub keep_info: bool,
    /// `PgOptions::max_requests`.
    pub max_requests: u64,
}

/// What one batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Torrents stored for the first time (by this batch).
    pub torrents_new: u64,
    /// `Op::Torrent`s merged into a stored torrent (or a repeat within the batch).
    pub torrents_updated: u64,
    /// `Op::Seen`s merged into a stored torrent.
    pub seen_updated: u64,
    /// `Op::Seen`/`Op::Scrape` for an infohash the store does not know.
    pub seen_unknown: u64,
    /// `Op::Scrape`s merged into a stored torrent.
    pub scrapes_updated: u64,
    /// Torrents refused (a value PostgreSQL cannot hold, such as a size above
    /// 2^63 − 1); counted, the rest of the batch is stored.
    pub rejected: u64,
    /// Ops this store does not keep: none since schema 2 (every `Op` is kept);
    /// the field stays for callers that report it.
    pub ignored: u64,
    /// Peer records written (`Op::Peer`).
    pub peers: u64,
    /// DHT node records written (`Op::Node`).
    pub nodes: u64,
    /// Session records written (`Op::Session`).
    pub sessions: u64,
    /// Metadata request records appended (`Op::Request`).
    pub requests: u64,
    /// New torrents not stored because their infohash has a tombstone.
    pub tombstoned: u64,
    /// Times the transaction was run again after a deadlock or serialization failure.
    pub retries: u32,
}

/// Most attempts of one batch (deadlocks between writers are resolved by the
/// server aborting one transaction; it is run again).
const MAX_ATTEMPTS: u32 = 8;

pub(crate) const CREATE_STAGING: &str = "
SET temp_buffers = '64MB';
CREATE TEMP TABLE IF NOT EXISTS stage_t (
    ord int4, infohash bytea, kind int2, v2 bytea, name text, total_size int8,
    piece_length int8, piece_count int8, file_count int8, private bool, source text,
    discovered_at int8, last_seen_at int8, sources int2, seeders int8, leechers int8,
    scraped_at int8, info bytea, search text,
    f_kind int2, f_category int4, f_title text, f_year int4, f_season_lo int4,
    f_season_hi int4, f_episode_lo int8, f_episode_hi int8, f_date_y int4, f_date_m int2,
    f_date_d int2, f_resolution int2, f_source int2, f_codec int2, f_audio int2,
    f_languages int8, f_keys int8[], name_raw bytea, source_raw bytea)
    ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_f (
    infohash bytea, idx int4, path text, size int8, path_raw bytea) ON COMMIT DELETE ROWS;
ALTER TABLE stage_t ALTER COLUMN info SET STORAGE EXTERNAL;";

const UPSERT: &str = "
WITH up AS (
    INSERT INTO torrents AS t (infohash, id, kind, v2, name, total_size, piece_length,
        piece_count, file_count, private, source, discovered_at, last_seen_at, sources,
        seeders, leechers, scraped_at, has_info, search, name_raw, source_raw)
    SELECT infohash, id, kind, v2, name, total_size, piece_length, piece_count,
        file_count, private, source, discovered_at, last_seen_at, sources, seeders,
        leechers, scraped_at, info IS NOT NULL, search::tsvector, name_raw, source_raw
    FROM (SELECT nextval('torrent_ids') AS id, o.*
          FROM (SELECT * FROM stage_t st
                WHERE NOT EXISTS (SELECT 1 FROM tombstones tb WHERE tb.infohash = st.infohash)
                ORDER BY ord) o) s
    ORDER BY infohash
    ON CONFLICT (infohash) DO UPDATE SET
        last_seen_at = greatest(t.last_seen_at, EXCLUDED.last_seen_at),
        sources = t.sources | EXCLUDED.sources,
        seeders = CASE WHEN magnetar_counts_newer(EXCLUDED.seeders, EXCLUDED.leechers,
                EXCLUDED.scraped_at, t.seeders, t.leechers, t.scraped_at)
            THEN coalesce(EXCLUDED.seeders, t.seeders) ELSE t.seeders END,
        leechers = CASE WHEN magnetar_counts_newer(EXCLUDED.seeders, EXCLUDED.leechers,
                EXCLUDED.scraped_at, t.seeders, t.leechers, t.scraped_at)
            THEN coalesce(EXCLUDED.leechers, t.leechers) ELSE t.leechers END,
        scraped_at = CASE WHEN magnetar_counts_newer(EXCLUDED.seeders, EXCLUDED.leechers,
                EXCLUDED.scraped_at, t.seeders, t.leechers, t.scraped_at)
            THEN coalesce(EXCLUDED.scraped_at, t.scraped_at) ELSE t.scraped_at END,
        kind = CASE WHEN t.v2 IS NULL AND EXCLUDED.v2 IS NOT NULL
            THEN EXCLUDED.kind ELSE t.kind END,
        v2 = coalesce(t.v2, EXCLUDED.v2),
        has_info = t.has_info OR EXCLUDED.has_info
    RETURNING t.id, t.infohash, (t.xmax = 0) AS fresh
), f AS (
    INSERT INTO files (torrent_id, idx, path, size, path_raw)
    SELECT up.id, sf.idx, sf.path, sf.size, sf.path_raw
    FROM up JOIN stage_f sf ON sf.infohash = up.infohash
    WHERE up.fresh
    ON CONFLICT DO NOTHING
    RETURNING 1
), i AS (
    INSERT INTO info (torrent_id, dict)
    SELECT up.id, s.info FROM up JOIN stage_t s ON s.infohash = up.infohash
    WHERE s.info IS NOT NULL
    ON CONFLICT DO NOTHING
    RETURNING 1
), fc AS (
    INSERT INTO facets (torrent_id, kind, category, title, year, season_lo, season_hi,
        episode_lo, episode_hi, date_y, date_m, date_d, resolution, source, video_codec,
        audio, languages)
    SELECT up.id, s.f_kind, s.f_category, s.f_title, s.f_year, s.f_season_lo,
        s.f_season_hi, s.f_episode_lo, s.f_episode_hi, s.f_date_y, s.f_date_m, s.f_date_d,
        s.f_resolution, s.f_source, s.f_codec, s.f_audio, s.f_languages
    FROM up JOIN stage_t s ON s.infohash = up.infohash
    WHERE up.fresh
    ON CONFLICT DO NOTHING
    RETURNING 1
), fk AS (
    INSERT INTO facet_keys (key, torrent_id)
    SELECT k.key, up.id
    FROM up JOIN stage_t s ON s.infohash = up.infohash
        CROSS JOIN LATERAL unnest(s.f_keys) AS k(key)
    WHERE up.fresh
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT count(*) FILTER (WHERE fresh), count(*) FILTER (WHERE NOT fresh) FROM up";

/// Sightings (`Op::Seen`, kind 1) and scrapes (`Op::Scrape`, kind 2), as the LMDB
/// store's `apply_sightings` merges them. One infohash at most once per statement.
const SIGHTINGS: &str = "
UPDATE torrents t SET
    last_seen_at = greatest(t.last_seen_at, coalesce(s.at, t.last_seen_at)),
    sources = t.sources | s.sources,
    seeders = CASE WHEN magnetar_counts_newer(s.seeders, s.leechers, s.scraped_at,
            t.seeders, t.leechers, t.scraped_at)
        THEN coalesce(s.seeders, t.seeders) ELSE t.seeders END,
    leechers = CASE WHEN magnetar_counts_newer(s.seeders, s.leechers, s.scraped_at,
            t.seeders, t.leechers, t.scraped_at)
        THEN coalesce(s.leechers, t.leechers) ELSE t.leechers END,
    scraped_at = CASE WHEN magnetar_counts_newer(s.seeders, s.leechers, s.scraped_at,
            t.seeders, t.leechers, t.scraped_at)
        THEN coalesce(s.scraped_at, t.scraped_at) ELSE t.scraped_at END
FROM (SELECT * FROM unnest($1::bytea[], $2::int2[], $3::int8[], $4::int2[], $5::int8[],
        $6::int8[], $7::int8[]) AS u(infohash, kind, at, sources, seeders, leechers, scraped_at)
      ORDER BY infohash) s
WHERE t.infohash = s.infohash
RETURNING s.kind";

/// A torrent of the batch, merged over its repeats, ready to copy.
struct Row<'a> {
    t: &'a TorrentInput,
    kind: HashKind,
    v2: Option<[u8; 32]>,
    last_seen_at: u64,
    sources: Sources,
    seeders: Option<u32>,
    leechers: Option<u32>,
    scraped_at: Option<u64>,
    info: Option<&'a [u8]>,
}

fn i64_of(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| PgError::InvalidInput(format!("{what} {v} is above 2^63 - 1")))
}

/// PostgreSQL `text` cannot hold NUL: the text column gets each NUL as U+FFFD and
/// the raw column (schema 4) the exact bytes; the raw column is NULL when the text
/// is stored unaltered.
fn text(s: &str) -> (std::borrow::Cow<'_, str>, Option<&[u8]>) {
    if s.contains('\0') {
        (s.replace('\0', "\u{FFFD}").into(), Some(s.as_bytes()))
    } else {
        (s.into(), None)
    }
}

/// The LMDB store's `merge_scrape` on a row being built.
fn merge_scrape(r: &mut Row<'_>, s: Option<u32>, l: Option<u32>, at: Option<u64>) {
    if s.is_none() && l.is_none() {
        return;
    }
    let newer = match (at, r.scraped_at) {
        (Some(new), Some(old)) => new >= old,
        (Some(_), None) => true,
        (None, Some(_)) => r.seeders.is_none() && r.leechers.is_none(),
        (None, None) => true,
    };
    if !newer {
        return;
    }
    if s.is_some() {
        r.seeders = s;
    }
    if l.is_some() {
        r.leechers = l;
    }
    if at.is_some() {
        r.scraped_at = at;
    }
}

/// The batch's torrents, one row per infohash (the first op of an infohash gives
/// the record, later ones merge as sightings), in discovery order (time, then
/// infohash: the LMDB store's doc id order within a batch).
fn rows<'a>(ops: &'a [Op], keep_info: bool, rep: &mut BatchReport) -> Vec<Row<'a>> {
    let mut by_hash: BTreeMap<InfoHash, Row<'a>> = BTreeMap::new();
    for op in ops {
        let Op::Torrent(t) = op else { continue };
        let t = &**t;
        match by_hash.get_mut(&t.infohash) {
            Some(r) => {
                rep.torrents_updated += 1;
                r.last_seen_at = r.last_seen_at.max(t.discovered_at);
                r.sources = r.sources | t.sources;
                merge_scrape(r, t.seeders, t.leechers, t.scraped_at);
                if r.v2.is_none() && t.v2.is_some() && t.kind != HashKind::V1 {
                    r.v2 = t.v2;
                    r.kind = t.kind;
                }
                if keep_info && r.info.is_none() {
                    r.info = t.info.as_deref();
                }
            }
            None => {
                let v2 = t.v2.filter(|_| t.kind != HashKind::V1);
                let mut r = Row {
                    t,
                    kind: if v2.is_some() { t.kind } else { HashKind::V1 },
                    v2,
                    last_seen_at: t.discovered_at,
                    sources: t.sources,
                    seeders: None,
                    leechers: None,
                    scraped_at: None,
                    info: if keep_info { t.info.as_deref() } else { None },
                };
                merge_scrape(&mut r, t.seeders, t.leechers, t.scraped_at);
                by_hash.insert(t.infohash, r);
            }
        }
    }
    let mut v: Vec<Row<'a>> = by_hash.into_values().collect();
    v.sort_by_key(|r| (r.t.discovered_at, r.t.infohash));
    v
}

fn kind_code(k: HashKind) -> i16 {
    match k {
        HashKind::V1 => 1,
        HashKind::V2 => 2,
        HashKind::Hybrid => 3,
    }
}

/// Checks that a row's integers fit PostgreSQL's `bigint`.
fn check(r: &Row<'_>) -> Result<()> {
    i64_of(r.t.total_size, "total size")?;
    i64_of(r.t.discovered_at, "discovery time")?;
    i64_of(r.last_seen_at, "last-seen time")?;
    if let Some(s) = r.scraped_at {
        i64_of(s, "scrape time")?;
    }
    for f in &r.t.files {
        i64_of(f.size, "file size")?;
    }
    if r.t.files.len() > i32::MAX as usize {
        return Err(PgError::InvalidInput("more than 2^31 files".into()));
    }
    Ok(())
}

/// Sightings in rounds: the k-th sighting of each infohash goes to round k, so no
/// statement touches a row twice and each torrent's sightings keep their order.
type Sighting = (
    InfoHash,
    i16,
    Option<i64>,
    i16,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

fn sighting_rounds(ops: &[Op], rep: &mut BatchReport) -> Vec<Vec<Sighting>> {
    let mut count: BTreeMap<InfoHash, usize> = BTreeMap::new();
    let mut rounds: Vec<Vec<Sighting>> = Vec::new();
    for op in ops {
        let s: Sighting = match op {
            Op::Seen {
                infohash,
                at,
                sources,
                seeders,
                leechers,
            } => {
                let Ok(at) = i64::try_from(*at) else {
                    rep.rejected += 1;
                    continue;
                };
                (
                    *infohash,
                    1,
                    Some(at),
                    i16::from(sources.0),
                    seeders.map(i64::from),
                    leechers.map(i64::from),
                    Some(at),
                )
            }
            Op::Scrape {
                infohash,
                at,
                seeders,
                leechers,
            } => {
                let Ok(at) = i64::try_from(*at) else {
                    rep.rejected += 1;
                    continue;
                };
                (
                    *infohash,
                    2,
                    None,
                    0,
                    Some(i64::from(*seeders)),
                    Some(i64::from(*leechers)),
                    Some(at),
                )
            }
            _ => continue,
        };
        let k = count.entry(s.0).or_insert(0);
        if rounds.len() <= *k {
            rounds.push(Vec::new());
        }
        rounds[*k].push(s);
        *k += 1;
    }
    rounds
}

/// Applies one batch in one transaction (see the module doc).
pub(crate) fn apply_batch(
    client: &mut Client,
    ops: &[Op],
    settings: &BatchSettings,
) -> Result<BatchReport> {
    let mut rep = BatchReport::default();
    let mut all = rows(ops, settings.keep_info, &mut rep);
    let before = all.len();
    all.retain(|r| check(r).is_ok());
    rep.rejected += (before - all.len()) as u64;
    let vectors: Vec<String> = all
        .iter()
        .map(|r| search_vector(&r.t.name, &r.t.files))
        .collect();
    let facets: Vec<FacetRow> = all
        .iter()
        .map(|r| FacetRow::of(&r.t.name, &r.t.files))
        .collect();
    let rounds = sighting_rounds(ops, &mut rep);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut r = rep;
        match try_batch(
            client, ops, &all, &vectors, &facets, &rounds, settings, &mut r,
        ) {
            Ok(()) => return Ok(r),
            Err(e) if attempt < MAX_ATTEMPTS && is_retryable(&e) => {
                rep.retries += 1;
                // Back off a little, more each time, so the other writer finishes.
                std::thread::sleep(std::time::Duration::from_millis(5 << attempt.min(6)));
            }
            Err(e) => return Err(e),
        }
    }
}

fn is_retryable(e: &PgError) -> bool {
    matches!(e.sqlstate(), Some("40P01" | "40001"))
}

#[allow(clippy::too_many_arguments)]
fn try_batch(
    client: &mut Client,
    ops: &[Op],
    rows: &[Row<'_>],
    vectors: &[String],
    facets: &[FacetRow],
    rounds: &[Vec<Sighting>],
    settings: &BatchSettings,
    rep: &mut BatchReport,
) -> Result<()> {
    let mut tx = client
        .transaction()
        .map_err(PgError::db("starting a batch"))?;
    // Marks first, as the LMDB writer applies them: they decide what this batch's
    // torrents become (under the bucket locks, see `records::lock_buckets`).
    records::lock_buckets(&mut tx, ops)?;
    records::write_marks(&mut tx, ops)?;
    if !rows.is_empty() {
        let sink = tx
            .copy_in("COPY stage_t FROM STDIN (FORMAT binary)")
            .map_err(PgError::db("copying torrents"))?;
        let types = [
            Type::INT4,
            Type::BYTEA,
            Type::INT2,
            Type::BYTEA,
            Type::TEXT,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::BOOL,
            Type::TEXT,
            Type::INT8,
            Type::INT8,
            Type::INT2,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::BYTEA,
            Type::TEXT,
            Type::INT2,
            Type::INT4,
            Type::TEXT,
            Type::INT4,
            Type::INT4,
            Type::INT4,
            Type::INT8,
            Type::INT8,
            Type::INT4,
            Type::INT2,
            Type::INT2,
            Type::INT2,
            Type::INT2,
            Type::INT2,
            Type::INT2,
            Type::INT8,
            Type::INT8_ARRAY,
            Type::BYTEA,
            Type::BYTEA,
        ];
        let mut w = BinaryCopyInWriter::new(sink, &types);
        for (ord, ((r, vec), f)) in rows.iter().zip(vectors).zip(facets).enumerate() {
            let t = r.t;
            let ord = ord as i32;
            let ih: &[u8] = &t.infohash;
            let v2: Option<&[u8]> = r.v2.as_ref().map(|v| &v[..]);
            let (name, name_raw) = text(&t.name);
            let (source, source_raw) = match t.source.as_deref().map(text) {
                Some((s, raw)) => (Some(s), raw),
                None => (None, None),
            };
            let size = t.total_size as i64;
            let pl = i64::from(t.piece_length);
            let pc = i64::from(t.piece_count);
            let fc = t.files.len() as i64;
            let disc = t.discovered_at as i64;
            let last = r.last_seen_at as i64;
            let src = i16::from(r.sources.0);
            let seeders = r.seeders.map(i64::from);
            let leechers = r.leechers.map(i64::from);
            let scraped = r.scraped_at.map(|x| x as i64);
            w.write(&[
                &ord,
                &ih,
                &kind_code(r.kind),
                &v2,
                &name.as_ref(),
                &size,
                &pl,
                &pc,
                &fc,
                &t.private,
                &source.as_deref(),
                &disc,
                &last,
                &src,
                &seeders,
                &leechers,
                &scraped,
                &r.info,
                &vec.as_str(),
                &f.kind,
                &f.category,
                &f.title,
                &f.year,
                &f.season.0,
                &f.season.1,
                &f.episode.0,
                &f.episode.1,
                &f.date.0,
                &f.date.1,
                &f.date.2,
                &f.resolution,
                &f.source,
                &f.video_codec,
                &f.audio,
                &f.languages,
                &f.keys,
                &name_raw,
                &source_raw,
            ])
            .map_err(PgError::db("copying torrents"))?;
        }
        w.finish().map_err(PgError::db("copying torrents"))?;
        let sink = tx
            .copy_in("COPY stage_f FROM STDIN (FORMAT binary)")
            .map_err(PgError::db("copying files"))?;
        let mut w = BinaryCopyInWriter::new(
            sink,
            &[Type::BYTEA, Type::INT4, Type::TEXT, Type::INT8, Type::BYTEA],
        );
        for r in rows {
            let ih: &[u8] = &r.t.infohash;
            for (i, FileEntry { path, size }) in r.t.files.iter().enumerate() {
                let i = i as i32;
                let size = *size as i64;
                let (p, raw) = text(path);
                w.write(&[&ih, &i, &p.as_ref(), &size, &raw])
                    .map_err(PgError::db("copying files"))?;
            }
        }
        w.finish().map_err(PgError::db("copying files"))?;
        // Temporary tables have no statistics: without them the planner joins
        // the staged files to the upserted rows with a nested loop (rows × files
        // per batch). Sampled in well under a millisecond at batch sizes.
        tx.batch_execute("ANALYZE stage_t, stage_f")
            .map_err(PgError::db("analysing the staging tables"))?;
        let dead: i64 = tx
            .query_one(
                "SELECT count(*) FROM stage_t s \
                 WHERE EXISTS (SELECT 1 FROM tombstones tb WHERE tb.infohash = s.infohash)",
                &[],
            )
            .map_err(PgError::db("reading tombstones"))?
            .get(0);
        rep.tombstoned += dead as u64;
        let row = tx
            .query_one(UPSERT, &[])
            .map_err(PgError::db("storing torrents"))?;
        let fresh: i64 = row.get(0);
        let known: i64 = row.get(1);
        rep.torrents_new += fresh as u64;
        rep.torrents_updated += known as u64;
    }
    let mut asked = 0u64;
    for round in rounds {
        let ih: Vec<&[u8]> = round.iter().map(|s| &s.0[..]).collect();
        let kind: Vec<i16> = round.iter().map(|s| s.1).collect();
        let at: Vec<Option<i64>> = round.iter().map(|s| s.2).collect();
        let src: Vec<i16> = round.iter().map(|s| s.3).collect();
        let se: Vec<Option<i64>> = round.iter().map(|s| s.4).collect();
        let le: Vec<Option<i64>> = round.iter().map(|s| s.5).collect();
        let sc: Vec<Option<i64>> = round.iter().map(|s| s.6).collect();
        asked += round.len() as u64;
        for r in tx
            .query(SIGHTINGS, &[&ih, &kind, &at, &src, &se, &le, &sc])
            .map_err(PgError::db("storing sightings"))?
        {
            match r.get::<_, i16>(0) {
                1 => rep.seen_updated += 1,
                _ => rep.scrapes_updated += 1,
            }
        }
    }
    rep.seen_unknown += asked - rep.seen_updated - rep.scrapes_updated;
    records::write_records(&mut tx, ops, settings.max_requests, rep)?;
    tx.commit().map_err(PgError::db("committing a batch"))?;
    Ok(())
}
