//! Classification facets (issue 20 §1): what `magnetar_core::classify` says of each
//! torrent, stored when the torrent is first written and answered by
//! [`FacetFilter`] queries.
//!
//! Two tables:
//!
//! - `facets`: doc id (u32 BE) → the torrent's [`Facets`] (layout byte 1, see
//!   [`encode`]). Appended with the torrent; read for `show`, JSON and feeds, and to
//!   check a few candidates against a filter.
//! - `facet_terms` (DUP_SORT): a facet key → posting blocks of doc ids (the block
//!   layout of `terms`, flags 0). Keys are one tag byte and a big-endian value, so
//!   that a numeric range is a key range: `k` kind code (u8), `c` Torznab category
//!   (u16), `y` year (u16), `r` resolution, `o` source, `v` video codec, `a` audio
//!   format (u8 codes), `s` season (u16; every season of a range, at most
//!   [`MAX_RANGE_KEYS`]), `e` episode (u32; likewise), `l` language bit (u8), `d` air
//!   date of a daily show (u32: year << 16 | month << 8 | day). A database written
//!   before `d` keys existed has none: `db check` reports its dated torrents and
//!   `magnetar reclassify` adds them.
//!
//! A filter's category is a union of key ranges, each attribute another union, and
//! the filter their intersection: answered from `facet_terms` (decoded postings,
//! intersected with the text's matches), or, when the text matched few torrents,
//! by reading those torrents' `facets` records.
//!
//! Classification is CPU work done with the batch's tokens (`prepare.rs`), off the
//! write transaction; only the appends happen in it.

use std::collections::HashMap;
use std::ops::Bound;

use heed::{PutFlags, RoTxn, RwTxn};
use magnetar_core::classify::{
    classify, AudioFormat, Classification, ContentKind, Languages, Resolution, Source, VideoCodec,
};

use super::{docid_of, lmdb, read_u64, Db, Dbs, Result, Store, K_NEXT_DOCID};
use crate::codec::{self, Dec, Enc};
use crate::error::StoreError;
use crate::types::{FileEntry, InfoHash};

/// A season or episode range is indexed under at most this many numbers (its first
/// ones); the stored record keeps the whole range.
pub const MAX_RANGE_KEYS: u32 = 100;

/// Below this many text matches, a facet filter reads the matches' `facets` records
/// instead of decoding the filter's posting lists.
const LOOKUP_MAX: usize = 256;

/// What the classifier said of a stored torrent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facets {
    /// The Torznab (newznab) category it was stored under (2000 movies, 5000 TV, 3000
    /// audio, 7000 books, 4000 PC, 6000 XXX, 8000 other, or a sub-category).
    pub category: u16,
    /// The classification: content kind and release-name attributes.
    pub class: Classification,
}

/// The facets of a torrent as the writer stores them.
pub(crate) fn of_torrent(name: &str, files: &[FileEntry]) -> Facets {
    let class = classify(name, files.iter().map(|f| (f.path.as_str(), f.size)));
    Facets {
        category: class.torznab(),
        class,
    }
}

/// Language hints and their short names (ISO 639-1, and "multi").
pub const LANGUAGE_NAMES: &[(u32, &str)] = &[
    (Languages::ENGLISH, "en"),
    (Languages::FRENCH, "fr"),
    (Languages::GERMAN, "de"),
    (Languages::ITALIAN, "it"),
    (Languages::SPANISH, "es"),
    (Languages::RUSSIAN, "ru"),
    (Languages::JAPANESE, "ja"),
    (Languages::KOREAN, "ko"),
    (Languages::CHINESE, "zh"),
    (Languages::PORTUGUESE, "pt"),
    (Languages::HINDI, "hi"),
    (Languages::MULTI, "multi"),
];

/// Named categories: a content kind's name (`movie`, `tv_episode`, …), or one of
/// these groups, or a Torznab number (`2000` is every movie category, `2040` only
/// HD movies).
pub const CATEGORY_GROUPS: &[(&str, &[u16])] = &[
    ("movies", &[2000]),
    ("tv", &[5000]),
    ("audio", &[3000]),
    ("books", &[7000]),
    ("pc", &[4000]),
    ("xxx", &[6000]),
];

/// The Torznab categories (and their names) a store can hold: the parents and the
/// sub-categories the classifier gives.
pub const TORZNAB_CATEGORIES: &[(u16, &str)] = &[
    (2000, "Movies"),
    (2030, "Movies/SD"),
    (2040, "Movies/HD"),
    (2045, "Movies/UHD"),
    (2050, "Movies/BluRay"),
    (2080, "Movies/WEB-DL"),
    (3000, "Audio"),
    (3010, "Audio/MP3"),
    (3030, "Audio/Audiobook"),
    (3040, "Audio/Lossless"),
    (4000, "PC"),
    (4020, "PC/ISO"),
    (4050, "PC/Games"),
    (5000, "TV"),
    (5010, "TV/WEB-DL"),
    (5030, "TV/SD"),
    (5040, "TV/HD"),
    (5045, "TV/UHD"),
    (6000, "XXX"),
    (6040, "XXX/x264"),
    (6045, "XXX/UHD"),
    (7000, "Books"),
    (7020, "Books/EBook"),
    (7030, "Books/Comics"),
    (8000, "Other"),
    (8010, "Other/Misc"),
];

impl Facets {
    /// The facets as JSON: `kind`, `category` and the attributes that are known.
    pub fn to_json(&self) -> serde_json::Value {
        let c = &self.class;
        let mut m = serde_json::Map::new();
        m.insert("kind".into(), c.kind.as_str().into());
        m.insert("category".into(), self.category.into());
        if let Some(t) = &c.title {
            m.insert("title".into(), t.as_str().into());
        }
        if let Some(y) = c.year {
            m.insert("year".into(), y.into());
        }
        if let Some((a, b)) = c.seasons {
            m.insert("seasons".into(), serde_json::json!([a, b]));
        }
        if let Some((a, b)) = c.episodes {
            m.insert("episodes".into(), serde_json::json!([a, b]));
        }
        if let Some((y, mo, d)) = c.date {
            m.insert("date".into(), format!("{y:04}-{mo:02}-{d:02}").into());
        }
        if let Some(r) = c.resolution {
            m.insert("resolution".into(), r.as_str().into());
        }
        if let Some(s) = c.source {
            m.insert("source".into(), s.as_str().into());
        }
        if let Some(v) = c.video_codec {
            m.insert("video_codec".into(), v.as_str().into());
        }
        if let Some(a) = c.audio {
            m.insert("audio".into(), a.as_str().into());
        }
        let langs = self.languages();
        if !langs.is_empty() {
            m.insert("languages".into(), langs.into());
        }
        serde_json::Value::Object(m)
    }

    /// The language hints' short names.
    pub fn languages(&self) -> Vec<&'static str> {
        LANGUAGE_NAMES
            .iter()
            .filter(|(bit, _)| self.class.languages.has(*bit))
            .map(|(_, n)| *n)
            .collect()
    }

    /// The known attributes as (name, value) text, for display.
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        let c = &self.class;
        let mut v = Vec::new();
        let range = |a: u64, b: u64| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        };
        if let Some(t) = &c.title {
            v.push(("title", t.clone()));
        }
        if let Some(y) = c.year {
            v.push(("year", y.to_string()));
        }
        if let Some((a, b)) = c.seasons {
            v.push(("season", range(a.into(), b.into())));
        }
        if let Some((a, b)) = c.episodes {
            v.push(("episode", range(a.into(), b.into())));
        }
        if let Some((y, mo, d)) = c.date {
            v.push(("date", format!("{y:04}-{mo:02}-{d:02}")));
        }
        if let Some(r) = c.resolution {
            v.push(("resolution", r.as_str().to_string()));
        }
        if let Some(s) = c.source {
            v.push(("source", s.as_str().to_string()));
        }
        if let Some(x) = c.video_codec {
            v.push(("video_codec", x.as_str().to_string()));
        }
        if let Some(a) = c.audio {
            v.push(("audio", a.as_str().to_string()));
        }
        let langs = self.languages();
        if !langs.is_empty() {
            v.push(("languages", langs.join(",")));
        }
        v
    }
}

/// The name of a Torznab category (its parent's for an unknown sub-category).
pub fn category_name(cat: u16) -> &'static str {
    TORZNAB_CATEGORIES
        .iter()
        .find(|(c, _)| *c == cat)
        .or_else(|| {
            TORZNAB_CATEGORIES
                .iter()
                .find(|(c, _)| *c == cat / 1000 * 1000)
        })
        .map_or("Other", |(_, n)| n)
}

// ------------------------------------------------------------------ record layout

const LAYOUT: u8 = 1;
const HAS_TITLE: u16 = 1;
const HAS_YEAR: u16 = 1 << 1;
const HAS_SEASONS: u16 = 1 << 2;
const HAS_EPISODES: u16 = 1 << 3;
const HAS_DATE: u16 = 1 << 4;
const HAS_RESOLUTION: u16 = 1 << 5;
const HAS_SOURCE: u16 = 1 << 6;
const HAS_CODEC: u16 = 1 << 7;
const HAS_AUDIO: u16 = 1 << 8;

/// A `facets` value: layout 1, kind code, category u16 LE, a presence mask u16 LE,
/// languages u32 LE, then the present fields in mask order (year u16 LE, seasons 2 ×
/// var, episodes 2 × var, date u16 LE + 2 × u8, resolution, source, codec and audio
/// codes u8, title str last but first in the mask). The writer uses [`encode_into`].
#[cfg(test)]
pub(crate) fn encode(f: &Facets) -> Vec<u8> {
    let mut v = Vec::with_capacity(32);
    encode_into(f, &mut v);
    v
}

/// A `facets` value (see `encode`) into `buf` (cleared first), so that a writer
/// reuses one buffer.
pub(crate) fn encode_into(f: &Facets, buf: &mut Vec<u8>) {
    buf.clear();
    let c = &f.class;
    let mut mask = 0u16;
    for (set, bit) in [
        (c.title.is_some(), HAS_TITLE),
        (c.year.is_some(), HAS_YEAR),
        (c.seasons.is_some(), HAS_SEASONS),
        (c.episodes.is_some(), HAS_EPISODES),
        (c.date.is_some(), HAS_DATE),
        (c.resolution.is_some(), HAS_RESOLUTION),
        (c.source.is_some(), HAS_SOURCE),
        (c.video_codec.is_some(), HAS_CODEC),
        (c.audio.is_some(), HAS_AUDIO),
    ] {
        if set {
            mask |= bit;
        }
    }
    let mut e = Enc(std::mem::take(buf));
    e.u8(LAYOUT);
    e.u8(c.kind.code());
    e.0.extend_from_slice(&f.category.to_le_bytes());
    e.0.extend_from_slice(&mask.to_le_bytes());
    e.u32(c.languages.0);
    if let Some(y) = c.year {
        e.0.extend_from_slice(&y.to_le_bytes());
    }
    if let Some((a, b)) = c.seasons {
        e.var(a.into());
        e.var(b.into());
    }
    if let Some((a, b)) = c.episodes {
        e.var(a.into());
        e.var(b.into());
    }
    if let Some((y, m, d)) = c.date {
        e.0.extend_from_slice(&y.to_le_bytes());
        e.u8(m);
        e.u8(d);
    }
    for code in [
        c.resolution.map(Resolution::code),
        c.source.map(Source::code),
        c.video_codec.map(VideoCodec::code),
        c.audio.map(AudioFormat::code),
    ]
    .into_iter()
    .flatten()
    {
        e.u8(code);
    }
    if let Some(t) = &c.title {
        e.str(t);
    }
    *buf = e.0;
}

fn u16le(d: &mut Dec) -> codec::DecodeResult<u16> {
    let b = d.take(2)?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

/// Decodes a `facets` value. Codes this build does not know (a newer build's) read
/// as unknown (`None`, kind `Other`); a malformed value is an error.
pub(crate) fn decode(v: &[u8]) -> codec::DecodeResult<Facets> {
    let mut d = Dec::new(v);
    if d.u8()? != LAYOUT {
        return Err("unknown facets layout");
    }
    let kind = ContentKind::from_code(d.u8()?).unwrap_or_default();
    let category = u16le(&mut d)?;
    let mask = u16le(&mut d)?;
    let languages = Languages(d.u32()?);
    let has = |b: u16| mask & b != 0;
    let small = |d: &mut Dec| -> codec::DecodeResult<u16> {
        u16::try_from(d.var()?).map_err(|_| "facet number out of range")
    };
    let big = |d: &mut Dec| -> codec::DecodeResult<u32> {
        u32::try_from(d.var()?).map_err(|_| "facet number out of range")
    };
    let mut c = Classification {
        kind,
        languages,
        ..Classification::default()
    };
    if has(HAS_YEAR) {
        c.year = Some(u16le(&mut d)?);
    }
    if has(HAS_SEASONS) {
        c.seasons = Some((small(&mut d)?, small(&mut d)?));
    }
    if has(HAS_EPISODES) {
        c.episodes = Some((big(&mut d)?, big(&mut d)?));
    }
    if has(HAS_DATE) {
        c.date = Some((u16le(&mut d)?, d.u8()?, d.u8()?));
    }
    if has(HAS_RESOLUTION) {
        c.resolution = Resolution::from_code(d.u8()?);
    }
    if has(HAS_SOURCE) {
        c.source = Source::from_code(d.u8()?);
    }
    if has(HAS_CODEC) {
        c.video_codec = VideoCodec::from_code(d.u8()?);
    }
    if has(HAS_AUDIO) {
        c.audio = AudioFormat::from_code(d.u8()?);
    }
    if has(HAS_TITLE) {
        c.title = Some(d.string()?);
    }
    d.end()?;
    Ok(Facets { category, class: c })
}

// --------------------------------------------------------------------- facet keys

const T_KIND: u8 = b'k';
const T_CATEGORY: u8 = b'c';
const T_YEAR: u8 = b'y';
const T_RESOLUTION: u8 = b'r';
const T_SOURCE: u8 = b'o';
const T_CODEC: u8 = b'v';
const T_AUDIO: u8 = b'a';
const T_SEASON: u8 = b's';
const T_EPISODE: u8 = b'e';
const T_LANGUAGE: u8 = b'l';
const T_DATE: u8 = b'd';

/// A date as a `d` key's value: year, month and day in one big-endian u32, so that
/// a range of dates is a key range.
fn date_value(y: u16, m: u8, d: u8) -> u32 {
    (u32::from(y) << 16) | (u32::from(m) << 8) | u32::from(d)
}

/// A `facet_terms` key: a tag byte and up to 4 value bytes (big-endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    len: u8,
    b: [u8; 5],
}

impl Key {
    fn new(tag: u8, v: &[u8]) -> Key {
        let mut b = [0u8; 5];
        b[0] = tag;
        let n = v.len().min(4);
        b[1..1 + n].copy_from_slice(&v[..n]);
        Key {
            len: 1 + n as u8,
            b,
        }
    }
    fn u8(tag: u8, v: u8) -> Key {
        Key::new(tag, &[v])
    }
    fn u16(tag: u8, v: u16) -> Key {
        Key::new(tag, &v.to_be_bytes())
    }
    fn u32(tag: u8, v: u32) -> Key {
        Key::new(tag, &v.to_be_bytes())
    }
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.b[..usize::from(self.len)]
    }
    /// The key as a number, `tag << 32 | value`: one tag's values have one width, so
    /// this orders keys as their bytes do (for stores that keep keys as integers).
    fn as_u64(&self) -> u64 {
        let v = self.b[1..usize::from(self.len)]
            .iter()
            .fold(0u64, |a, &x| a << 8 | u64::from(x));
        u64::from(self.b[0]) << 32 | v
    }
}

impl Facets {
    /// The facets the writer stores for a torrent (`magnetar_core::classify` of its
    /// name and files), for another store that must classify exactly as this one.
    pub fn of_torrent(name: &str, files: &[FileEntry]) -> Facets {
        of_torrent(name, files)
    }

    /// The `facet_terms` keys of these facets as numbers (`tag << 32 | value`,
    /// which compare as the keys' bytes do): what a [`FacetFilter`](super::FacetFilter)'s
    /// [`key_ranges`](super::FacetFilter::key_ranges) are matched against.
    #[doc(hidden)]
    pub fn index_keys(&self) -> Vec<u64> {
        keys(self).iter().map(Key::as_u64).collect()
    }
}

impl super::FacetFilter {
    /// The filter as clauses that must all hold, each a list of inclusive ranges
    /// of [`Facets::index_keys`] of which one key must fall in one (the same
    /// validation and messages as the store's `query`).
    #[doc(hidden)]
    pub fn key_ranges(&self) -> Result<Vec<Vec<(u64, u64)>>> {
        Ok(compile(self)?
            .clauses
            .iter()
            .map(|c| c.iter().map(|r| (r.lo.as_u64(), r.hi.as_u64())).collect())
            .collect())
    }
}

/// Every `facet_terms` key of a torrent's facets (sorted, no repeats).
pub(crate) fn keys(f: &Facets) -> Vec<Key> {
    let mut k = Vec::with_capacity(16);
    for_each_key(f, |key| k.push(key));
    k.sort_unstable();
    k.dedup();
    k
}

/// Calls `out` with every `facet_terms` key of a torrent's facets, in no particular
/// order and without allocating ([`keys`] is these, sorted). Keys of one torrent
/// never repeat: each has its own tag, or its own value within a tag (a range's
/// numbers, a language's bit).
pub(crate) fn for_each_key(f: &Facets, mut out: impl FnMut(Key)) {
    let c = &f.class;
    out(Key::u8(T_KIND, c.kind.code()));
    out(Key::u16(T_CATEGORY, f.category));
    if let Some(y) = c.year {
        out(Key::u16(T_YEAR, y));
    }
    if let Some(r) = c.resolution {
        out(Key::u8(T_RESOLUTION, r.code()));
    }
    if let Some(s) = c.source {
        out(Key::u8(T_SOURCE, s.code()));
    }
    if let Some(v) = c.video_codec {
        out(Key::u8(T_CODEC, v.code()));
    }
    if let Some(a) = c.audio {
        out(Key::u8(T_AUDIO, a.code()));
    }
    if let Some((a, b)) = c.seasons {
        let b = b.max(a).min(a.saturating_add(MAX_RANGE_KEYS as u16 - 1));
        for s in a..=b {
            out(Key::u16(T_SEASON, s));
        }
    }
    if let Some((a, b)) = c.episodes {
        let b = b.max(a).min(a.saturating_add(MAX_RANGE_KEYS - 1));
        for e in a..=b {
            out(Key::u32(T_EPISODE, e));
        }
    }
    if let Some((y, m, d)) = c.date {
        out(Key::u32(T_DATE, date_value(y, m, d)));
    }
    let mut langs = c.languages.0;
    while langs != 0 {
        let bit = langs.trailing_zeros() as u8;
        out(Key::u8(T_LANGUAGE, bit));
        langs &= langs - 1;
    }
}

// ----------------------------------------------------------------------- filters

/// An inclusive range of `facet_terms` keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyRange {
    lo: Key,
    hi: Key,
}

impl KeyRange {
    fn one(k: Key) -> KeyRange {
        KeyRange { lo: k, hi: k }
    }
    fn contains(&self, k: &Key) -> bool {
        self.lo.bytes() <= k.bytes() && k.bytes() <= self.hi.bytes()
    }
}

/// A [`FacetFilter`](super::FacetFilter) compiled to key ranges: a document matches
/// when, for every clause, one of its keys is in one of the clause's ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Compiled {
    clauses: Vec<Vec<KeyRange>>,
}

fn bad(msg: String) -> StoreError {
    StoreError::InvalidQuery(msg)
}

/// The names a category may be given, for error messages.
fn category_help() -> String {
    let mut v: Vec<&str> = ContentKind::ALL.iter().map(|k| k.as_str()).collect();
    v.extend(CATEGORY_GROUPS.iter().map(|(n, _)| *n));
    format!(
        "{}, or a Torznab number (2000 movies, 5000 TV, 3000 audio, 7000 books, 4000 PC, \
         6000 XXX, 8000 other, or a sub-category such as 2040)",
        v.join(", ")
    )
}

fn torznab_range(n: u16) -> KeyRange {
    if n % 1000 == 0 {
        KeyRange {
            lo: Key::u16(T_CATEGORY, n),
            hi: Key::u16(T_CATEGORY, n.saturating_add(999)),
        }
    } else {
        KeyRange::one(Key::u16(T_CATEGORY, n))
    }
}

/// The key ranges of a category name: a kind, a group, a Torznab number, or several
/// of these separated by commas (any of them).
pub(crate) fn category_ranges(s: &str) -> Result<Vec<KeyRange>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let p = part.trim().to_ascii_lowercase().replace(['-', ' '], "_");
        if p.is_empty() {
            continue;
        }
        if let Ok(n) = p.parse::<u16>() {
            if !(1000..10_000).contains(&n) {
                return Err(bad(format!(
                    "category {n} is not a Torznab category (1000 to 9999)"
                )));
            }
            out.push(torznab_range(n));
            continue;
        }
        let alias = match p.as_str() {
            "movies" | "film" | "films" => "movies",
            "episode" => "tv_episode",
            "season" | "season_pack" => "tv_season",
            "adult" | "porn" => "adult",
            "game" | "games" => "game",
            "book" | "ebooks" => "ebook",
            "comics" => "comic",
            "audiobooks" => "audiobook",
            "disc" | "iso" => "disc_image",
            "image" | "pictures" => "images",
            other => other,
        };
        if let Some(k) = ContentKind::ALL.iter().find(|k| k.as_str() == alias) {
            out.push(KeyRange::one(Key::u8(T_KIND, k.code())));
        } else if let Some((_, cats)) = CATEGORY_GROUPS.iter().find(|(n, _)| *n == alias) {
            out.extend(cats.iter().map(|&c| torznab_range(c)));
        } else {
            return Err(bad(format!(
                "unknown category {:?}; known: {}",
                part.trim(),
                category_help()
            )));
        }
    }
    if out.is_empty() {
        return Err(bad(format!(
            "an empty category; known: {}",
            category_help()
        )));
    }
    Ok(out)
}

/// A number or an inclusive range `a-b` of numbers.
fn number_range(name: &str, v: &str, max: u64) -> Result<(u64, u64)> {
    let parse = |s: &str| -> Result<u64> {
        s.trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| {
                bad(format!(
                    "{name} {v:?}: expected a number up to {max}, or a-b"
                ))
            })
    };
    match v.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (parse(a)?, parse(b)?);
            if a > b {
                return Err(bad(format!("{name} {v:?}: the range is empty")));
            }
            Ok((a, b))
        }
        None => {
            let n = parse(v)?;
            Ok((n, n))
        }
    }
}

/// An air date `YYYY-MM-DD` (that day), `YYYY-MM` (that month) or `YYYY` (that year),
/// as an inclusive range of `d` key values.
fn date_range(v: &str) -> Result<(u32, u32)> {
    let err = || bad(format!("date {v:?}: expected YYYY-MM-DD, YYYY-MM or YYYY"));
    let mut parts = v.split('-');
    let num = |p: Option<&str>, digits: usize, lo: u32, hi: u32| -> Result<Option<u32>> {
        match p {
            None => Ok(None),
            Some(p) if p.len() == digits && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u32>()
                .ok()
                .filter(|n| (lo..=hi).contains(n))
                .map(Some)
                .ok_or_else(err),
            Some(_) => Err(err()),
        }
    };
    let y = num(parts.next(), 4, 0, 9999)?.ok_or_else(err)?;
    let m = num(parts.next(), 2, 1, 12)?;
    let d = num(parts.next(), 2, 1, 31)?;
    if parts.next().is_some() || (m.is_none() && d.is_some()) {
        return Err(err());
    }
    let at = |m: u32, d: u32| (y << 16) | (m << 8) | d;
    Ok(match (m, d) {
        (Some(m), Some(d)) => (at(m, d), at(m, d)),
        (Some(m), None) => (at(m, 0), at(m, 255)),
        _ => (at(0, 0), at(255, 255)),
    })
}

/// Looks a label up among `all` (case, spaces, dots and dashes ignored).
fn by_label<T: Copy>(all: &[T], label: impl Fn(T) -> &'static str, v: &str) -> Option<T> {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    };
    let want = norm(v);
    all.iter().copied().find(|x| norm(label(*x)) == want)
}

/// The key ranges of one attribute filter (name, value).
pub(crate) fn attribute_ranges(name: &str, value: &str) -> Result<Vec<KeyRange>> {
    let name_l = name.trim().to_ascii_lowercase();
    let v = value.trim();
    let unknown = |what: &str, known: Vec<&str>| {
        bad(format!("unknown {what} {v:?}; known: {}", known.join(", ")))
    };
    Ok(match name_l.as_str() {
        "category" | "kind" => category_ranges(v)?,
        "year" => {
            let (a, b) = number_range("year", v, u64::from(u16::MAX))?;
            vec![KeyRange {
                lo: Key::u16(T_YEAR, a as u16),
                hi: Key::u16(T_YEAR, b as u16),
            }]
        }
        "season" => {
            let (a, b) = number_range("season", v, u64::from(u16::MAX))?;
            vec![KeyRange {
                lo: Key::u16(T_SEASON, a as u16),
                hi: Key::u16(T_SEASON, b as u16),
            }]
        }
        "episode" | "ep" => {
            let (a, b) = number_range("episode", v, u64::from(u32::MAX))?;
            vec![KeyRange {
                lo: Key::u32(T_EPISODE, a as u32),
                hi: Key::u32(T_EPISODE, b as u32),
            }]
        }
        "date" | "airdate" => {
            let (a, b) = date_range(v)?;
            vec![KeyRange {
                lo: Key::u32(T_DATE, a),
                hi: Key::u32(T_DATE, b),
            }]
        }
        "resolution" => {
            let r = by_label(Resolution::ALL, Resolution::as_str, v)
                .or_else(|| match v.to_ascii_lowercase().as_str() {
                    "4k" | "uhd" => Some(Resolution::P2160),
                    "8k" => Some(Resolution::P4320),
                    _ => None,
                })
                .ok_or_else(|| {
                    unknown(
                        "resolution",
                        Resolution::ALL.iter().map(|r| r.as_str()).collect(),
                    )
                })?;
            vec![KeyRange::one(Key::u8(T_RESOLUTION, r.code()))]
        }
        "source" => {
            let s = by_label(Source::ALL, Source::as_str, v)
                .or_else(|| match v.to_ascii_lowercase().as_str() {
                    "bluray" | "bdrip" | "brrip" => Some(Source::BluRay),
                    "web-dl" | "webdl" | "webrip" => Some(Source::Web),
                    "cam" => Some(Source::Camera),
                    _ => None,
                })
                .ok_or_else(|| {
                    unknown("source", Source::ALL.iter().map(|s| s.as_str()).collect())
                })?;
            vec![KeyRange::one(Key::u8(T_SOURCE, s.code()))]
        }
        "codec" | "video_codec" => {
            let c = by_label(VideoCodec::ALL, VideoCodec::as_str, v)
                .or_else(|| match v.to_ascii_lowercase().as_str() {
                    "x264" | "avc" => Some(VideoCodec::H264),
                    "x265" | "hevc" => Some(VideoCodec::H265),
                    _ => None,
                })
                .ok_or_else(|| {
                    unknown(
                        "video codec",
                        VideoCodec::ALL.iter().map(|c| c.as_str()).collect(),
                    )
                })?;
            vec![KeyRange::one(Key::u8(T_CODEC, c.code()))]
        }
        "audio" => {
            let a = by_label(AudioFormat::ALL, AudioFormat::as_str, v).ok_or_else(|| {
                unknown(
                    "audio format",
                    AudioFormat::ALL.iter().map(|a| a.as_str()).collect(),
                )
            })?;
            vec![KeyRange::one(Key::u8(T_AUDIO, a.code()))]
        }
        "language" | "lang" => {
            let l = v.to_ascii_lowercase();
            let (bit, _) = LANGUAGE_NAMES
                .iter()
                .find(|(_, n)| *n == l)
                .ok_or_else(|| {
                    unknown("language", LANGUAGE_NAMES.iter().map(|(_, n)| *n).collect())
                })?;
            vec![KeyRange::one(Key::u8(
                T_LANGUAGE,
                bit.trailing_zeros() as u8,
            ))]
        }
        _ => {
            return Err(bad(format!(
                "unknown attribute {name:?}; known: category, year, season, episode, \
                 date, resolution, source, codec, audio, language"
            )))
        }
    })
}

/// Compiles a filter (its category, then each attribute), refusing unknown names
/// and values with the list of known ones.
pub(crate) fn compile(f: &super::FacetFilter) -> Result<Compiled> {
    let mut clauses = Vec::new();
    if let Some(c) = &f.category {
        clauses.push(category_ranges(c)?);
    }
    if f.attributes.len() > 16 {
        return Err(bad("at most 16 attribute filters".into()));
    }
    for (n, v) in &f.attributes {
        clauses.push(attribute_ranges(n, v)?);
    }
    Ok(Compiled { clauses })
}

impl Compiled {
    /// Whether the filter asks for nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.clauses.is_empty()
    }

    /// Whether a torrent's facets pass the filter.
    pub(crate) fn accepts(&self, f: &Facets) -> bool {
        let keys = keys(f);
        self.clauses
            .iter()
            .all(|ranges| keys.iter().any(|k| ranges.iter().any(|r| r.contains(k))))
    }
}

/// A set of doc ids below `next_docid`, one bit each.
struct Bits(Vec<u64>);

impl Bits {
    fn clear(&mut self, d: u32) {
        if let Some(w) = self.0.get_mut(d as usize / 64) {
            *w &= !(1u64 << (d % 64));
        }
    }
    fn has(&self, d: u32) -> bool {
        self.0
            .get(d as usize / 64)
            .is_some_and(|w| w >> (d % 64) & 1 == 1)
    }
}

/// The doc ids with a key in one of `ranges`, as a bitmap over `words` words
/// (postings past it, which only a corrupt block can hold, are counted as skipped).
fn union_of(
    txn: &RoTxn,
    db: &Db,
    ranges: &[KeyRange],
    words: usize,
    skipped: &mut usize,
) -> Result<Bits> {
    let mut bits = vec![0u64; words];
    let mut buf: Vec<u32> = Vec::with_capacity(256);
    for r in ranges {
        let range = (Bound::Included(r.lo.bytes()), Bound::Included(r.hi.bytes()));
        for e in db.range(txn, &range).map_err(lmdb("reading facets"))? {
            let (_, v) = e.map_err(lmdb("reading facets"))?;
            buf.clear();
            if codec::block_decode(v, &mut buf).is_err() {
                *skipped += 1;
                continue;
            }
            for &p in &buf {
                let d = (p >> 2) as usize;
                match bits.get_mut(d / 64) {
                    Some(w) => *w |= 1 << (d % 64),
                    None => *skipped += 1,
                }
            }
        }
    }
    Ok(Bits(bits))
}

/// The bitmap of the doc ids that pass `c` (`None`: `c` is empty).
fn passing(txn: &RoTxn, dbs: &Dbs, c: &Compiled, skipped: &mut usize) -> Result<Option<Bits>> {
    let words = (read_u64(txn, &dbs.meta, K_NEXT_DOCID)? as usize).div_ceil(64);
    let mut acc: Option<Bits> = None;
    for clause in &c.clauses {
        let b = union_of(txn, &dbs.facet_terms, clause, words, skipped)?;
        acc = Some(match acc {
            None => b,
            Some(mut a) => {
                for (x, y) in a.0.iter_mut().zip(&b.0) {
                    *x &= y;
                }
                a
            }
        });
    }
    Ok(acc)
}

/// The doc ids (ascending) that pass `c`.
pub(crate) fn matching(
    txn: &RoTxn,
    dbs: &Dbs,
    c: &Compiled,
    skipped: &mut usize,
) -> Result<Vec<u32>> {
    let Some(mut bits) = passing(txn, dbs, c, skipped)? else {
        return Ok(Vec::new());
    };
    // Hidden torrents have no search postings, but they keep their facet postings:
    // a filter without words must leave them out here.
    clear_hidden(txn, dbs, &mut bits)?;
    let mut out = Vec::new();
    for (i, &w) in bits.0.iter().enumerate() {
        let mut w = w;
        while w != 0 {
            out.push((i * 64) as u32 + w.trailing_zeros());
            w &= w - 1;
        }
    }
    Ok(out)
}

/// Keeps the `matches` (doc id, score; ascending) that pass `c`: few are checked
/// one by one in `facets`, many against the bitmap of the filter's posting lists.
pub(crate) fn filter_matches(
    txn: &RoTxn,
    dbs: &Dbs,
    c: &Compiled,
    matches: &mut Vec<(u32, u32)>,
    skipped: &mut usize,
) -> Result<()> {
    if c.is_empty() {
        return Ok(());
    }
    if matches.len() <= LOOKUP_MAX {
        let mut keep = Vec::with_capacity(matches.len());
        for &m in matches.iter() {
            match facets_by_docid(txn, dbs, m.0) {
                Ok(Some(f)) if c.accepts(&f) => keep.push(m),
                Ok(_) => {}
                Err(StoreError::Corrupt { .. }) => *skipped += 1,
                Err(e) => return Err(e),
            }
        }
        *matches = keep;
        return Ok(());
    }
    if let Some(bits) = passing(txn, dbs, c, skipped)? {
        matches.retain(|m| bits.has(m.0));
    }
    Ok(())
}

/// The stored facets of a doc id (`None`: not classified).
pub(crate) fn facets_by_docid(txn: &RoTxn, dbs: &Dbs, docid: u32) -> Result<Option<Facets>> {
    let dk = codec::docid_key(docid);
    match dbs.facets.get(txn, &dk).map_err(lmdb("reading facets"))? {
        None => Ok(None),
        Some(v) => decode(v).map(Some).map_err(|what| StoreError::Corrupt {
            db: "facets",
            key: crate::error::hex(&dk),
            what,
        }),
    }
}

// ----------------------------------------------------------------------- writing

/// `codec::block_push(block, docid, 0)` without its temporary buffer (one
/// allocation a posting): the same bytes, the same refusals.
fn block_push0(block: &mut Vec<u8>, docid: u32) -> bool {
    let Some(last) = codec::block_last(block) else {
        return false;
    };
    if docid <= last {
        return false;
    }
    let mut v = u64::from(docid - last) << 2;
    let mut var = [0u8; 10];
    let mut n = 0;
    while v >= 0x80 {
        var[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    var[n] = v as u8;
    n += 1;
    if block.len() + n > codec::MAX_BLOCK {
        return false;
    }
    block[4..8].copy_from_slice(&docid.to_le_bytes());
    block.extend_from_slice(&var[..n]);
    true
}

/// Appends doc ids (ascending, each larger than every stored one of the key) to the
/// posting blocks of `key` in `db` (as `write_postings` does for `terms`).
fn append_postings(txn: &mut RwTxn, db: &Db, key: &[u8], docids: &[u32]) -> Result<()> {
    if docids.is_empty() {
        return Ok(());
    }
    let range = (Bound::Included(key), Bound::Included(key));
    let last: Option<Vec<u8>> = match db
        .rev_range(txn, &range)
        .map_err(lmdb("reading facet_terms"))?
        .next()
    {
        Some(r) => Some(r.map_err(lmdb("reading facet_terms"))?.1.to_vec()),
        None => None,
    };
    let mut rest = docids;
    if let Some(old) = last {
        let mut block = old.clone();
        let mut n = 0;
        while n < rest.len() && block_push0(&mut block, rest[n]) {
            n += 1;
        }
        if n > 0 {
            db.delete_one_duplicate(txn, key, &old)
                .map_err(lmdb("writing facet_terms"))?;
            db.put(txn, key, &block)
                .map_err(lmdb("writing facet_terms"))?;
            rest = &rest[n..];
        }
    }
    while let Some(&first) = rest.first() {
        let mut block = codec::block_new(first, 0);
        let mut n = 1;
        while n < rest.len() && block_push0(&mut block, rest[n]) {
            n += 1;
        }
        db.put(txn, key, &block)
            .map_err(lmdb("writing facet_terms"))?;
        rest = &rest[n..];
    }
    Ok(())
}

/// Writes the facets of new torrents: `docs` are (doc id, facets) with doc ids
/// ascending and larger than every stored one (records appended, postings extended).
///
/// Each record is encoded into one reused buffer; postings are grouped by key as
/// they come (doc ids ascend, so each key's list is in order without a sort) and
/// only the batch's distinct keys, a few hundred, are sorted. The tables end as
/// [`write_new_sorted`] (one sort of every (key, doc id) pair) left them.
pub(crate) fn write_new<'f>(
    txn: &mut RwTxn,
    dbs: &Dbs,
    docs: impl Iterator<Item = (u32, &'f Facets)>,
) -> Result<()> {
    let mut slot: HashMap<Key, usize, foldhash::fast::FixedState> =
        HashMap::with_capacity_and_hasher(256, foldhash::fast::FixedState::default());
    let mut lists: Vec<(Key, Vec<u32>)> = Vec::with_capacity(256);
    let mut in_order = true;
    let mut buf = Vec::with_capacity(64);
    for (docid, f) in docs {
        encode_into(f, &mut buf);
        dbs.facets
            .put_with_flags(txn, PutFlags::APPEND, &codec::docid_key(docid), &buf)
            .map_err(lmdb("writing facets"))?;
        for_each_key(f, |k| {
            let i = *slot.entry(k).or_insert_with(|| {
                lists.push((k, Vec::new()));
                lists.len() - 1
            });
            if let Some((_, ids)) = lists.get_mut(i) {
                match ids.last() {
                    Some(&last) if last == docid => {}
                    Some(&last) if last > docid => {
                        in_order = false;
                        ids.push(docid);
                    }
                    _ => ids.push(docid),
                }
            }
        });
    }
    if !in_order {
        // Not what callers give; kept correct all the same.
        for (_, ids) in &mut lists {
            ids.sort_unstable();
            ids.dedup();
        }
    }
    lists.sort_unstable_by_key(|l| l.0);
    for (k, ids) in &lists {
        append_postings(txn, &dbs.facet_terms, k.bytes(), ids)?;
    }
    Ok(())
}

/// The first version of [`write_new`]: every (key, doc id) pair of the batch in one
/// vector, sorted. Kept to show that [`write_new`] writes the same tables.
#[cfg(test)]
pub(crate) fn write_new_sorted<'f>(
    txn: &mut RwTxn,
    dbs: &Dbs,
    docs: impl Iterator<Item = (u32, &'f Facets)>,
) -> Result<()> {
    let mut postings: Vec<(Key, u32)> = Vec::new();
    for (docid, f) in docs {
        dbs.facets
            .put_with_flags(txn, PutFlags::APPEND, &codec::docid_key(docid), &encode(f))
            .map_err(lmdb("writing facets"))?;
        postings.extend(keys(f).into_iter().map(|k| (k, docid)));
    }
    postings.sort_unstable();
    let mut i = 0;
    let mut ids: Vec<u32> = Vec::new();
    while i < postings.len() {
        let k = postings[i].0;
        ids.clear();
        while i < postings.len() && postings[i].0 == k {
            ids.push(postings[i].1);
            i += 1;
        }
        append_postings(txn, &dbs.facet_terms, k.bytes(), &ids)?;
    }
    Ok(())
}

/// Torrents classified at once by [`classify_all`].
const CHUNK: usize = 20_000;

/// What [`Store::reclassify`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReclassifyReport {
    /// Torrents classified.
    pub torrents: u64,
    /// Torrents whose kind or category changed (always 0 for a first classification).
    pub changed: u64,
    /// Records that could not be decoded (left unclassified; `db check` reports them).
    pub skipped_corrupt: u64,
    /// Torrents per content kind, in kind code order (kinds with none left out).
    pub per_kind: Vec<(ContentKind, u64)>,
}

/// Clears both facet tables and classifies every stored torrent again, in chunks of
/// [`CHUNK`] records (memory is bounded by a chunk, its files and its postings), in
/// the caller's write transaction. Used by the schema upgrade and by
/// [`Store::reclassify`].
pub(crate) fn classify_all(txn: &mut RwTxn, dbs: &Dbs) -> Result<ReclassifyReport> {
    let mut rep = ReclassifyReport::default();
    let mut per_kind = [0u64; 256];
    let mut after: Option<[u8; 4]> = None;
    // The old kinds and categories are read first (to count what changes), then both
    // tables are cleared and refilled chunk by chunk, in doc id order.
    let mut old_kind: Vec<(u32, u8, u16)> = Vec::new();
    for r in dbs.facets.iter(txn).map_err(lmdb("reading facets"))? {
        let (k, v) = r.map_err(lmdb("reading facets"))?;
        if let (Ok(d), Ok(f)) = (codec::docid_from(k), decode(v)) {
            old_kind.push((d, f.class.kind.code(), f.category));
        }
    }
    dbs.facets.clear(txn).map_err(lmdb("clearing facets"))?;
    dbs.facet_terms
        .clear(txn)
        .map_err(lmdb("clearing facet_terms"))?;
    loop {
        let mut chunk: Vec<(u32, Facets)> = Vec::with_capacity(CHUNK.min(1024));
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
                    rep.skipped_corrupt += 1;
                    continue;
                };
                after = Some(codec::docid_key(docid));
                let Ok(st) = codec::decode_torrent(docid, v) else {
                    rep.skipped_corrupt += 1;
                    continue;
                };
                let files = match dbs.files.get(txn, k).map_err(lmdb("reading files"))? {
                    Some(fv) => codec::decode_files(fv).unwrap_or_default(),
                    None => Vec::new(),
                };
                chunk.push((docid, of_torrent(&st.rec.name, &files)));
                if chunk.len() == CHUNK {
                    break;
                }
            }
        }
        if chunk.is_empty() {
            break;
        }
        for (d, f) in &chunk {
            rep.torrents += 1;
            per_kind[usize::from(f.class.kind.code())] += 1;
            if let Ok(i) = old_kind.binary_search_by_key(d, |o| o.0) {
                let (_, k, c) = old_kind[i];
                if k != f.class.kind.code() || c != f.category {
                    rep.changed += 1;
                }
            }
        }
        write_new(txn, dbs, chunk.iter().map(|(d, f)| (*d, f)))?;
    }
    rep.per_kind = ContentKind::ALL
        .iter()
        .filter_map(|k| {
            let n = per_kind[usize::from(k.code())];
            (n > 0).then_some((*k, n))
        })
        .collect();
    Ok(rep)
}

impl Store {
    /// The stored facets of a torrent (`None`: unknown infohash, or not classified).
    pub fn facets(&self, infohash: &InfoHash) -> Result<Option<Facets>> {
        self.read(|txn, dbs| match docid_of(txn, dbs, infohash)? {
            Some(d) => facets_by_docid(txn, dbs, d),
            None => Ok(None),
        })
    }

    /// The stored facets of several torrents, in one read transaction (`None` for an
    /// unknown or unclassified one; a corrupt record reads as `None`).
    pub fn facets_of(&self, infohashes: &[InfoHash]) -> Result<Vec<Option<Facets>>> {
        self.read(|txn, dbs| {
            let mut out = Vec::with_capacity(infohashes.len());
            for ih in infohashes {
                let f = match docid_of(txn, dbs, ih)? {
                    Some(d) => match facets_by_docid(txn, dbs, d) {
                        Ok(f) => f,
                        Err(StoreError::Corrupt { .. }) => None,
                        Err(e) => return Err(e),
                    },
                    None => None,
                };
                out.push(f);
            }
            Ok(out)
        })
    }

    /// Runs the classifier again over every stored torrent (after its rules changed)
    /// and replaces the facets, in one write transaction: searches see the old facets
    /// or the new ones, never a mix, and the crawler's writer waits meanwhile (the
    /// `magnetar reclassify` command refuses to run beside a crawler). Memory is
    /// bounded by chunks of 20,000 torrents.
    pub fn reclassify(&self) -> Result<ReclassifyReport> {
        let (r, _) = self.write(classify_all)?;
        Ok(r)
    }
}

/// Clears the doc ids of hidden torrents (content filter, `hide`) from `bits`: one
/// lookup per hidden torrent, nothing when none is hidden.
fn clear_hidden(txn: &RoTxn, dbs: &Dbs, bits: &mut Bits) -> Result<()> {
    for r in dbs.hidden.iter(txn).map_err(lmdb("reading hidden"))? {
        let (k, _) = r.map_err(lmdb("reading hidden"))?;
        let Ok(ih) = InfoHash::try_from(k) else {
            continue;
        };
        if let Some(d) = docid_of(txn, dbs, &ih)? {
            bits.clear(d);
        }
    }
    Ok(())
}

/// Removes a removed torrent's facets: its record and its doc id from every
/// `facet_terms` posting list its facets put it in.
pub(crate) fn remove_of(txn: &mut RwTxn, dbs: &Dbs, docids: &[u32]) -> Result<()> {
    let mut by_key: std::collections::BTreeMap<Vec<u8>, Vec<u32>> = Default::default();
    for &d in docids {
        let dk = codec::docid_key(d);
        let f = match dbs.facets.get(txn, &dk).map_err(lmdb("reading facets"))? {
            Some(v) => decode(v).ok(),
            None => None,
        };
        if let Some(f) = f {
            for k in keys(&f) {
                by_key.entry(k.bytes().to_vec()).or_default().push(d);
            }
        }
        dbs.facets
            .delete(txn, &dk)
            .map_err(lmdb("removing facets"))?;
    }
    for (key, mut ids) in by_key {
        ids.sort_unstable();
        ids.dedup();
        super::filter::remove_from_blocks(txn, &dbs.facet_terms, &key, &ids)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str) -> Facets {
        of_torrent(name, &[])
    }

    #[test]
    fn facets_roundtrip_and_never_panic_on_garbage() {
        for name in [
            "The.Matrix.1999.1080p.BluRay.x264.DTS-GROUP",
            "Show.Name.S01E02.720p.HDTV.x265.AAC",
            "Show.Name.S01-S03.COMPLETE.MULTi.2160p.WEB-DL",
            "Daily.Show.2024.01.15.HDTV",
            "",
            "日本語のタイトル 2001",
        ] {
            let a = f(name);
            let v = encode(&a);
            assert_eq!(decode(&v).unwrap(), a, "{name}");
            for n in 0..v.len() {
                let _ = decode(&v[..n]); // never panics
            }
            assert!(decode(&v[..v.len() - 1]).is_err() || v.len() == 1);
        }
        assert!(decode(&[9, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        // Codes of a newer build read as unknown.
        let mut v = encode(&f("The.Matrix.1999.1080p.BluRay.x264"));
        v[1] = 200;
        assert_eq!(decode(&v).unwrap().class.kind, ContentKind::Other);
    }

    #[test]
    fn numeric_keys_and_ranges_decide_as_the_byte_keys_do() {
        let names = [
            "The.Matrix.1999.1080p.BluRay.x264.DTS-GROUP",
            "Show.Name.S01E02.720p.HDTV.x265.AAC",
            "Show.Name.S01-S03.COMPLETE.MULTi.2160p.WEB-DL",
            "Daily.Show.2024.01.15.HDTV",
            "Artist - Album (2001) FLAC",
            "",
        ];
        type Filter = (
            Option<&'static str>,
            &'static [(&'static str, &'static str)],
        );
        let filters: [Filter; 7] = [
            (Some("tv"), &[]),
            (Some("movies,audio"), &[]),
            (Some("2040"), &[]),
            (None, &[("season", "2")]),
            (None, &[("year", "1990-2001"), ("resolution", "1080p")]),
            (None, &[("language", "multi")]),
            (Some("tv_season"), &[("episode", "1-3")]),
        ];
        for name in names {
            let fa = f(name);
            let ks = keys(&fa);
            let nums = fa.index_keys();
            assert_eq!(nums.len(), ks.len());
            // The numbers order as the keys' bytes do (what a range means).
            for (i, a) in ks.iter().enumerate() {
                for (j, b) in ks.iter().enumerate() {
                    assert_eq!(
                        nums[i].cmp(&nums[j]),
                        a.bytes().cmp(b.bytes()),
                        "{name}: {a:?} {b:?}"
                    );
                }
            }
            for (cat, attrs) in filters {
                let filt = super::super::FacetFilter {
                    category: cat.map(str::to_string),
                    attributes: attrs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                };
                let ranges = filt.key_ranges().unwrap();
                let by_numbers = ranges.iter().all(|c| {
                    nums.iter()
                        .any(|k| c.iter().any(|(lo, hi)| lo <= k && k <= hi))
                });
                assert_eq!(
                    by_numbers,
                    compile(&filt).unwrap().accepts(&fa),
                    "{name} {filt:?}"
                );
            }
        }
    }

    #[test]
    fn filters_compile_and_accept() {
        let movie = f("The.Matrix.1999.1080p.BluRay.x264.DTS-GROUP");
        assert_eq!(movie.class.kind, ContentKind::Movie);
        let ep = f("Show.Name.S01E02.720p.HDTV.x264");
        let pack = f("Show.Name.S02.COMPLETE.1080p.WEB-DL");
        let c = |cat: Option<&str>, attrs: &[(&str, &str)]| {
            compile(&super::super::FacetFilter {
                category: cat.map(str::to_string),
                attributes: attrs
                    .iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect(),
            })
        };
        assert!(c(Some("movie"), &[]).unwrap().accepts(&movie));
        assert!(!c(Some("movie"), &[]).unwrap().accepts(&ep));
        assert!(c(Some("2000"), &[]).unwrap().accepts(&movie));
        assert!(c(Some("movies"), &[]).unwrap().accepts(&movie));
        assert!(c(Some("tv"), &[]).unwrap().accepts(&ep));
        assert!(c(Some("tv"), &[]).unwrap().accepts(&pack));
        assert!(c(Some("tv_season"), &[]).unwrap().accepts(&pack));
        assert!(!c(Some("tv_season"), &[]).unwrap().accepts(&ep));
        assert!(c(Some("music,movie"), &[]).unwrap().accepts(&movie));
        let hd = c(None, &[("resolution", "1080p")]).unwrap();
        assert!(hd.accepts(&movie) && !hd.accepts(&ep) && hd.accepts(&pack));
        assert!(c(None, &[("year", "1999")]).unwrap().accepts(&movie));
        assert!(c(None, &[("year", "1990-2000")]).unwrap().accepts(&movie));
        assert!(!c(None, &[("year", "2000")]).unwrap().accepts(&movie));
        let s1e2 = c(Some("tv"), &[("season", "1"), ("episode", "2")]).unwrap();
        assert!(s1e2.accepts(&ep) && !s1e2.accepts(&pack));
        assert!(c(None, &[("season", "2")]).unwrap().accepts(&pack));
        assert!(c(None, &[("codec", "x264")]).unwrap().accepts(&movie));
        assert!(c(None, &[("source", "bluray")]).unwrap().accepts(&movie));
        for (cat, attrs) in [
            (Some("nonsense"), vec![]),
            (Some("99999"), vec![]),
            (Some(""), vec![]),
            (None, vec![("year", "x")]),
            (None, vec![("year", "2001-1999")]),
            (None, vec![("colour", "red")]),
            (None, vec![("resolution", "999p")]),
        ] {
            let e = c(cat, &attrs).unwrap_err();
            assert!(matches!(e, StoreError::InvalidQuery(_)), "{e}");
        }
    }

    #[test]
    fn block_push0_writes_what_block_push_writes() {
        let mut rng = crate::synth::Rng::new(7);
        for _ in 0..200 {
            let first = rng.below(1 << 20) as u32;
            let (mut a, mut b) = (codec::block_new(first, 0), codec::block_new(first, 0));
            let mut d = first;
            for _ in 0..300 {
                // Gaps of every varint length, and repeats (refused by both).
                d = d.saturating_add(match rng.below(5) {
                    0 => 0,
                    1 => 1 + rng.below(30) as u32,
                    2 => 1 + rng.below(5_000) as u32,
                    3 => 1 + rng.below(1 << 20) as u32,
                    _ => 1 + rng.below(1 << 28) as u32,
                });
                let d = d.min(codec::MAX_DOCID);
                assert_eq!(codec::block_push(&mut a, d, 0), block_push0(&mut b, d));
                assert_eq!(a, b);
            }
        }
    }

    /// Facets of many kinds: the synthetic torrents' (as the bench writes them) and
    /// made-up ones with ranges, dates and languages.
    fn varied_facets(n: usize, seed: u64) -> Vec<Facets> {
        let mut synth = crate::synth::Synth::new(seed);
        let mut rng = crate::synth::Rng::new(seed);
        (0..n)
            .map(|i| {
                let t = synth.torrent(i as u64, false);
                let mut f = of_torrent(&t.name, &t.files);
                match rng.below(8) {
                    0 => f.class.seasons = Some((1 + rng.below(30) as u16, 200)),
                    1 => {
                        let a = rng.below(2_000) as u32;
                        f.class.episodes = Some((a, a + rng.below(150) as u32));
                    }
                    2 => f.class.date = Some((2000 + rng.below(30) as u16, 1, 1)),
                    3 => f.class.languages = Languages(rng.next_u64() as u32),
                    _ => {}
                }
                f
            })
            .collect()
    }

    /// Every (key, value) of a table, in key order.
    fn dump(store: &Store, table: fn(&Dbs) -> &Db) -> Vec<(Vec<u8>, Vec<u8>)> {
        store
            .read(|txn, dbs| {
                let mut out = Vec::new();
                for r in table(dbs).iter(txn).map_err(lmdb("test"))? {
                    let (k, v) = r.map_err(lmdb("test"))?;
                    out.push((k.to_vec(), v.to_vec()));
                }
                Ok(out)
            })
            .unwrap()
    }

    #[test]
    fn write_new_writes_the_tables_the_sorting_version_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| {
            let mut o = super::super::StoreOptions::new(dir.path().join(name));
            o.durability = super::super::Durability::NoSync;
            Store::open(o).unwrap()
        };
        let (new, old) = (open("new"), open("old"));
        let facets = varied_facets(6_000, 11);
        // Batches of several sizes (small ones extend the last blocks of many keys,
        // large ones fill new blocks), doc ids ascending across them.
        let mut docid = 0u32;
        for (b, size) in [1usize, 7, 300, 2_500, 40, 3_152].into_iter().enumerate() {
            let start = docid as usize;
            let batch = &facets[start..start + size];
            let docs = || batch.iter().enumerate().map(|(k, f)| (docid + k as u32, f));
            new.write(|txn, dbs| write_new(txn, dbs, docs())).unwrap();
            old.write(|txn, dbs| write_new_sorted(txn, dbs, docs()))
                .unwrap();
            docid += size as u32;
            assert_eq!(
                dump(&new, |d| &d.facet_terms),
                dump(&old, |d| &d.facet_terms),
                "facet_terms after batch {b}"
            );
        }
        let (fa, fb) = (dump(&new, |d| &d.facets), dump(&old, |d| &d.facets));
        assert_eq!(fa.len(), facets.len());
        assert_eq!(fa, fb);
        let terms = dump(&new, |d| &d.facet_terms);
        assert!(terms.len() > 500, "{} posting blocks", terms.len());
    }

    #[test]
    fn range_keys_are_bounded() {
        let mut x = f("Show.Name.S01E02");
        x.class.episodes = Some((1, u32::MAX));
        x.class.seasons = Some((1, u16::MAX));
        let k = keys(&x);
        assert!(k.len() <= 2 * MAX_RANGE_KEYS as usize + 40, "{}", k.len());
    }
}
