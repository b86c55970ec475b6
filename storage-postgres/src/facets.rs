//! The classifier's facets in PostgreSQL (schema 2): written with each new torrent
//! (classified by `magnetar_core::classify` exactly as the LMDB writer does, through
//! [`Facets::of_torrent`]), read back as [`Facets`], and matched by a
//! [`FacetFilter`] with the LMDB store's semantics: the filter's clauses all hold,
//! a clause holds when one of the torrent's index keys ([`Facets::index_keys`])
//! falls in one of its ranges ([`FacetFilter::key_ranges`], the same compiler,
//! validation and messages as the LMDB store).

use magnetar_storage::classify::{
    AudioFormat, Classification, ContentKind, Languages, Resolution, Source, VideoCodec,
};
use std::collections::BTreeMap;

use magnetar_storage::{FacetFilter, Facets, FileEntry, InfoHash, ReclassifyReport};
use postgres::Row;

use crate::error::{PgError, Result};
use crate::PgStore;

/// The facets of one torrent as the staging table takes them.
pub(crate) struct FacetRow {
    pub kind: i16,
    pub category: i32,
    pub title: Option<String>,
    pub year: Option<i32>,
    pub season: (Option<i32>, Option<i32>),
    pub episode: (Option<i64>, Option<i64>),
    pub date: (Option<i32>, Option<i16>, Option<i16>),
    pub resolution: Option<i16>,
    pub source: Option<i16>,
    pub video_codec: Option<i16>,
    pub audio: Option<i16>,
    pub languages: i64,
    pub keys: Vec<i64>,
}

impl FacetRow {
    /// Classifies a torrent as the LMDB writer does.
    pub(crate) fn of(name: &str, files: &[FileEntry]) -> FacetRow {
        let f = Facets::of_torrent(name, files);
        let c = &f.class;
        FacetRow {
            kind: i16::from(c.kind.code()),
            category: i32::from(f.category),
            // NUL cannot be stored in text (titles come from names).
            title: c.title.as_ref().map(|t| t.replace('\0', "\u{FFFD}")),
            year: c.year.map(i32::from),
            season: (
                c.seasons.map(|s| i32::from(s.0)),
                c.seasons.map(|s| i32::from(s.1)),
            ),
            episode: (
                c.episodes.map(|e| i64::from(e.0)),
                c.episodes.map(|e| i64::from(e.1)),
            ),
            date: (
                c.date.map(|d| i32::from(d.0)),
                c.date.map(|d| i16::from(d.1)),
                c.date.map(|d| i16::from(d.2)),
            ),
            resolution: c.resolution.map(|x| i16::from(x.code())),
            source: c.source.map(|x| i16::from(x.code())),
            video_codec: c.video_codec.map(|x| i16::from(x.code())),
            audio: c.audio.map(|x| i16::from(x.code())),
            languages: i64::from(c.languages.0),
            // Keys are below 2^40 (a tag byte and at most 32 bits of value).
            keys: f.index_keys().into_iter().map(|k| k as i64).collect(),
        }
    }
}

/// The columns [`facets_of_row`] reads, in its order (table alias `f`).
pub(crate) const FACET_COLUMNS: &str = "f.kind, f.category, f.title, f.year, f.season_lo, \
    f.season_hi, f.episode_lo, f.episode_hi, f.date_y, f.date_m, f.date_d, f.resolution, \
    f.source, f.video_codec, f.audio, f.languages";

fn code<T>(v: Option<i16>, from: fn(u8) -> Option<T>) -> Option<T> {
    v.and_then(|c| u8::try_from(c).ok()).and_then(from)
}

/// Facets from a row of [`FACET_COLUMNS`] starting at column `at`; `None` when the
/// row has no facets (an outer join found none) or a value is out of range. Codes
/// this build does not know read as unknown, as the LMDB store's decoder does.
pub(crate) fn facets_of_row(r: &Row, at: usize) -> Option<Facets> {
    let kind: i16 = r.try_get::<_, Option<i16>>(at).ok()??;
    let category = u16::try_from(r.try_get::<_, i32>(at + 1).ok()?).ok()?;
    let pair16 = |i: usize| -> Option<Option<(u16, u16)>> {
        let a: Option<i32> = r.try_get(i).ok()?;
        let b: Option<i32> = r.try_get(i + 1).ok()?;
        Some(match (a, b) {
            (Some(a), Some(b)) => Some((u16::try_from(a).ok()?, u16::try_from(b).ok()?)),
            _ => None,
        })
    };
    let episodes = {
        let a: Option<i64> = r.try_get(at + 6).ok()?;
        let b: Option<i64> = r.try_get(at + 7).ok()?;
        match (a, b) {
            (Some(a), Some(b)) => Some((u32::try_from(a).ok()?, u32::try_from(b).ok()?)),
            _ => None,
        }
    };
    let date = {
        let y: Option<i32> = r.try_get(at + 8).ok()?;
        let m: Option<i16> = r.try_get(at + 9).ok()?;
        let d: Option<i16> = r.try_get(at + 10).ok()?;
        match (y, m, d) {
            (Some(y), Some(m), Some(d)) => Some((
                u16::try_from(y).ok()?,
                u8::try_from(m).ok()?,
                u8::try_from(d).ok()?,
            )),
            _ => None,
        }
    };
    let opt = |i: usize| -> Option<Option<i16>> { r.try_get(i).ok() };
    let class = Classification {
        kind: u8::try_from(kind)
            .ok()
            .and_then(ContentKind::from_code)
            .unwrap_or_default(),
        title: r.try_get(at + 2).ok()?,
        year: match r.try_get::<_, Option<i32>>(at + 3).ok()? {
            Some(y) => Some(u16::try_from(y).ok()?),
            None => None,
        },
        seasons: pair16(at + 4)?,
        episodes,
        date,
        resolution: code(opt(at + 11)?, Resolution::from_code),
        source: code(opt(at + 12)?, Source::from_code),
        video_codec: code(opt(at + 13)?, VideoCodec::from_code),
        audio: code(opt(at + 14)?, AudioFormat::from_code),
        languages: Languages(u32::try_from(r.try_get::<_, i64>(at + 15).ok()?).ok()?),
    };
    Some(Facets { category, class })
}

/// The SQL condition (on `torrents t`) of a facet filter: one `t.id IN (…)` per
/// clause over `facet_keys` ranges. Keys are integers computed here, not user
/// text, so they are written into the SQL. Errors are the LMDB store's.
pub(crate) fn filter_sql(f: &FacetFilter) -> Result<String> {
    let clauses = f.key_ranges().map_err(|e| match e {
        magnetar_storage::StoreError::InvalidQuery(m) => PgError::InvalidQuery(m),
        e => PgError::InvalidQuery(e.to_string()),
    })?;
    let mut out = String::new();
    for c in clauses {
        let ranges: Vec<String> = c
            .iter()
            .map(|(lo, hi)| {
                if lo == hi {
                    format!("k.key = {lo}")
                } else {
                    format!("k.key BETWEEN {lo} AND {hi}")
                }
            })
            .collect();
        if ranges.is_empty() {
            out.push_str(" AND false");
            continue;
        }
        out.push_str(&format!(
            " AND t.id IN (SELECT k.torrent_id FROM facet_keys k WHERE {})",
            ranges.join(" OR ")
        ));
    }
    Ok(out)
}

impl PgStore {
    /// The facets of a stored torrent (found by its infohash, or by the truncated
    /// v2 hash of a hybrid), or `None` when unknown or unclassified.
    pub fn facets(&mut self, infohash: &InfoHash) -> Result<Option<Facets>> {
        let ih: &[u8] = infohash;
        let row = self
            .client()
            .query_opt(
                &format!(
                    "SELECT {FACET_COLUMNS} FROM facets f \
                     WHERE f.torrent_id = magnetar_torrent_id($1)"
                ),
                &[&ih],
            )
            .map_err(PgError::db("reading facets"))?;
        Ok(row.as_ref().and_then(|r| facets_of_row(r, 0)))
    }

    /// The facets of each infohash, in order (`None`: unknown or unclassified).
    pub fn facets_of(&mut self, infohashes: &[InfoHash]) -> Result<Vec<Option<Facets>>> {
        let ihs: Vec<&[u8]> = infohashes.iter().map(|h| &h[..]).collect();
        let rows = self
            .client()
            .query(
                &format!(
                    "SELECT u.n, {FACET_COLUMNS} \
                     FROM unnest($1::bytea[]) WITH ORDINALITY AS u(ih, n) \
                     LEFT JOIN facets f ON f.torrent_id = magnetar_torrent_id(u.ih) \
                     ORDER BY u.n"
                ),
                &[&ihs],
            )
            .map_err(PgError::db("reading facets"))?;
        let mut out = vec![None; infohashes.len()];
        for r in rows {
            let n: i64 = r.get(0);
            if let Some(slot) = usize::try_from(n - 1).ok().and_then(|i| out.get_mut(i)) {
                *slot = facets_of_row(&r, 1);
            }
        }
        Ok(out)
    }
}

/// Torrents classified per statement by [`PgStore::reclassify`].
const RECLASSIFY_CHUNK: i64 = 5_000;

impl PgStore {
    /// Clears the facets and classifies every stored torrent again (after a
    /// classifier change), in one transaction, in chunks of torrents by id: the
    /// LMDB store's `reclassify`, with its report.
    pub fn reclassify(&mut self) -> Result<ReclassifyReport> {
        let mut rep = ReclassifyReport::default();
        let mut per_kind = [0u64; 256];
        let mut tx = self
            .client()
            .transaction()
            .map_err(PgError::db("starting to reclassify"))?;
        let old: BTreeMap<i64, (i16, i32)> = tx
            .query("SELECT torrent_id, kind, category FROM facets", &[])
            .map_err(PgError::db("reading facets"))?
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
        tx.batch_execute("DELETE FROM facet_keys; DELETE FROM facets;")
            .map_err(PgError::db("clearing facets"))?;
        let mut after = i64::MIN;
        loop {
            let rows = tx
                .query(
                    "SELECT id, name FROM torrents WHERE id > $1 ORDER BY id LIMIT $2",
                    &[&after, &RECLASSIFY_CHUNK],
                )
                .map_err(PgError::db("reading torrents"))?;
            let Some(last) = rows.last() else { break };
            after = last.get(0);
            let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
            let mut files: BTreeMap<i64, Vec<FileEntry>> = BTreeMap::new();
            for r in tx
                .query(
                    "SELECT torrent_id, path, size FROM files WHERE torrent_id = ANY($1) \
                     ORDER BY torrent_id, idx",
                    &[&ids],
                )
                .map_err(PgError::db("reading files"))?
            {
                files.entry(r.get(0)).or_default().push(FileEntry {
                    path: r.get(1),
                    size: u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
                });
            }
            let mut c = Columns::default();
            for r in &rows {
                let id: i64 = r.get(0);
                let name: String = r.get(1);
                let f = FacetRow::of(&name, files.get(&id).map_or(&[][..], Vec::as_slice));
                rep.torrents += 1;
                per_kind[usize::from(f.kind as u8)] += 1;
                if old.get(&id).is_some_and(|o| *o != (f.kind, f.category)) {
                    rep.changed += 1;
                }
                c.push(id, f);
            }
            c.insert(&mut tx)?;
        }
        tx.commit().map_err(PgError::db("committing the facets"))?;
        rep.per_kind = ContentKind::ALL
            .iter()
            .filter_map(|k| {
                let n = per_kind[usize::from(k.code())];
                (n > 0).then_some((*k, n))
            })
            .collect();
        Ok(rep)
    }
}

/// Facet rows as column arrays, for one `INSERT … SELECT FROM unnest(…)`.
#[derive(Default)]
struct Columns {
    id: Vec<i64>,
    kind: Vec<i16>,
    category: Vec<i32>,
    title: Vec<Option<String>>,
    year: Vec<Option<i32>>,
    s_lo: Vec<Option<i32>>,
    s_hi: Vec<Option<i32>>,
    e_lo: Vec<Option<i64>>,
    e_hi: Vec<Option<i64>>,
    d_y: Vec<Option<i32>>,
    d_m: Vec<Option<i16>>,
    d_d: Vec<Option<i16>>,
    res: Vec<Option<i16>>,
    src: Vec<Option<i16>>,
    codec: Vec<Option<i16>>,
    audio: Vec<Option<i16>>,
    langs: Vec<i64>,
    key: Vec<i64>,
    key_id: Vec<i64>,
}

impl Columns {
    fn push(&mut self, id: i64, f: FacetRow) {
        self.id.push(id);
        self.kind.push(f.kind);
        self.category.push(f.category);
        self.title.push(f.title);
        self.year.push(f.year);
        self.s_lo.push(f.season.0);
        self.s_hi.push(f.season.1);
        self.e_lo.push(f.episode.0);
        self.e_hi.push(f.episode.1);
        self.d_y.push(f.date.0);
        self.d_m.push(f.date.1);
        self.d_d.push(f.date.2);
        self.res.push(f.resolution);
        self.src.push(f.source);
        self.codec.push(f.video_codec);
        self.audio.push(f.audio);
        self.langs.push(f.languages);
        for k in f.keys {
            self.key.push(k);
            self.key_id.push(id);
        }
    }

    fn insert(&self, tx: &mut postgres::Transaction<'_>) -> Result<()> {
        tx.execute(
            "INSERT INTO facets (torrent_id, kind, category, title, year, season_lo, season_hi,
                 episode_lo, episode_hi, date_y, date_m, date_d, resolution, source,
                 video_codec, audio, languages)
             SELECT * FROM unnest($1::int8[], $2::int2[], $3::int4[], $4::text[], $5::int4[],
                 $6::int4[], $7::int4[], $8::int8[], $9::int8[], $10::int4[], $11::int2[],
                 $12::int2[], $13::int2[], $14::int2[], $15::int2[], $16::int2[], $17::int8[])
             ON CONFLICT DO NOTHING",
            &[
                &self.id,
                &self.kind,
                &self.category,
                &self.title,
                &self.year,
                &self.s_lo,
                &self.s_hi,
                &self.e_lo,
                &self.e_hi,
                &self.d_y,
                &self.d_m,
                &self.d_d,
                &self.res,
                &self.src,
                &self.codec,
                &self.audio,
                &self.langs,
            ],
        )
        .map_err(PgError::db("writing facets"))?;
        tx.execute(
            "INSERT INTO facet_keys (key, torrent_id)
             SELECT * FROM unnest($1::int8[], $2::int8[]) ON CONFLICT DO NOTHING",
            &[&self.key, &self.key_id],
        )
        .map_err(PgError::db("writing facet keys"))?;
        Ok(())
    }
}
