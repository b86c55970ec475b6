//! What the handlers share: query parsing with caps, errors as JSON, infohash
//! parsing, the file tree, formatting.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use magnetar_storage::{magnet_of, to_hex, Facets, FileEntry, InfoHash, Torrent, TorrentRecord};
use serde_json::{json, Value};

use crate::index::{self, SearchRequest, Sort, MAX_DEPTH, MAX_LIMIT, MAX_QUERY_BYTES};

/// A JSON error body `{"error": {"status": N, "message": "…"}}`.
pub fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"status": status.as_u16(), "message": message}})),
    )
        .into_response()
}

/// A client error: the status and a message for the user.
#[derive(Debug)]
pub struct BadRequest(pub StatusCode, pub String);

impl BadRequest {
    pub fn new(msg: impl Into<String>) -> BadRequest {
        BadRequest(StatusCode::BAD_REQUEST, msg.into())
    }
}

impl From<index::IndexError> for BadRequest {
    fn from(e: index::IndexError) -> Self {
        match e {
            index::IndexError::Unsupported(m) => BadRequest(StatusCode::BAD_REQUEST, m),
            other => {
                tracing::warn!("http: {other}");
                BadRequest(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the database could not be read".into(),
                )
            }
        }
    }
}

/// The decoded pairs of a query string (form encoding); undecodable input gives
/// no pairs.
pub fn query_pairs(q: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default()
}

/// Query parameters, looked up by name.
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(raw: Option<&str>) -> Result<Params, BadRequest> {
        match raw {
            None => Ok(Params(Vec::new())),
            Some(q) => serde_urlencoded::from_str::<Vec<(String, String)>>(q)
                .map(Params)
                .map_err(|_| BadRequest::new("the query string is not valid form encoding")),
        }
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
    /// A number in `lo..=hi`, or `default` when absent or empty.
    pub fn num(&self, k: &str, default: u64, lo: u64, hi: u64) -> Result<u64, BadRequest> {
        match self.get(k).filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (lo..=hi).contains(&n) => Ok(n),
                _ => Err(BadRequest::new(format!(
                    "`{k}` must be a whole number from {lo} to {hi}"
                ))),
            },
        }
    }
    pub fn opt_num(&self, k: &str) -> Result<Option<u64>, BadRequest> {
        match self.get(k).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| BadRequest::new(format!("`{k}` must be a whole number"))),
        }
    }
    /// The query text, capped.
    pub fn query(&self, k: &str) -> Result<String, BadRequest> {
        let q = self.get(k).unwrap_or("").trim();
        if q.len() > MAX_QUERY_BYTES {
            return Err(BadRequest::new(format!(
                "`{k}` is longer than {MAX_QUERY_BYTES} bytes"
            )));
        }
        Ok(q.to_string())
    }
}

/// A search request from `q`, `sort`, `order`, `offset`, `limit` and the filters.
pub fn search_request(p: &Params, default_limit: u64) -> Result<SearchRequest, BadRequest> {
    let q = p.query("q")?;
    let sort = match p.get("sort").filter(|s| !s.is_empty()) {
        None => Sort::Relevance,
        Some(s) => Sort::parse(s).ok_or_else(|| {
            BadRequest::new("`sort` must be relevance, discovered, size, seeders or files")
        })?,
    };
    let desc = match p.get("order").filter(|s| !s.is_empty()) {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(_) => return Err(BadRequest::new("`order` must be asc or desc")),
    };
    let limit = p.num("limit", default_limit, 1, MAX_LIMIT as u64)? as usize;
    let offset = p.num("offset", 0, 0, (MAX_DEPTH - limit) as u64)? as usize;
    // Facet filters: short strings, checked by the store (an unknown name is a 400).
    let short = |k: &str| -> Result<Option<String>, BadRequest> {
        match p.get(k).map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) if v.len() <= 64 => Ok(Some(v.to_string())),
            Some(_) => Err(BadRequest::new(format!("`{k}` is longer than 64 bytes"))),
        }
    };
    let category = short("category")?;
    let mut attributes = Vec::new();
    for k in ["year", "season", "episode", "resolution"] {
        if let Some(v) = short(k)? {
            attributes.push((k.to_string(), v));
        }
    }
    Ok(SearchRequest {
        q,
        sort,
        desc,
        offset,
        limit,
        min_size: p.opt_num("min_size")?,
        max_size: p.opt_num("max_size")?,
        after: p.opt_num("after")?,
        before: p.opt_num("before")?,
        category,
        attributes,
    })
}

/// Facets as JSON (`null` when not classified).
pub fn facets_json(f: Option<&Facets>) -> Value {
    f.map_or(Value::Null, Facets::to_json)
}

/// 40 hex digits → an infohash; anything else is a 400 with a message.
pub fn parse_infohash(s: &str) -> Result<InfoHash, BadRequest> {
    if s.len() != 40 {
        return Err(BadRequest::new(
            "an infohash is 40 hexadecimal digits".to_string(),
        ));
    }
    magnetar_storage::parse_infohash_hex(s)
        .map_err(|_| BadRequest::new("an infohash is 40 hexadecimal digits"))
}

pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() > 1024 {
        return None;
    }
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

// Sizes, ages and UTC dates are shared with the CLI: `magnetar_storage::fmt`.
pub use magnetar_storage::fmt::{age, human_size};

/// `2026-12-07 11:38` (UTC).
pub fn utc(secs: u64) -> String {
    magnetar_storage::fmt::utc_minutes(secs)
}

/// RFC 2822 date for RSS and Torznab: `Mon, 07 Dec 2026 11:38:50 +0000`.
pub fn rfc2822(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let c = magnetar_storage::fmt::civil(secs);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} +0000",
        DAYS[c.weekday as usize % 7],
        c.day,
        MONTHS[(c.month as usize).clamp(1, 12) - 1],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

/// The names of the set source bits.
pub fn source_names(r: &TorrentRecord) -> Vec<&'static str> {
    use magnetar_storage::Sources;
    [
        (Sources::ANNOUNCE, "announce"),
        (Sources::SAMPLE, "sample"),
        (Sources::GET_PEERS, "get_peers"),
        (Sources::IMPORT, "import"),
    ]
    .into_iter()
    .filter(|(s, _)| r.sources.contains(*s))
    .map(|(_, n)| n)
    .collect()
}

/// Files listed at most in one answer (the rest are counted).
pub const MAX_FILES_SHOWN: usize = 5_000;

/// A directory of the file tree: subdirectories and files by name.
#[derive(Default, Debug)]
pub struct Dir {
    pub dirs: BTreeMap<String, Dir>,
    pub files: Vec<(String, u64)>,
    pub size: u64,
    pub count: u64,
}

/// The tree of the first [`MAX_FILES_SHOWN`] files.
pub fn file_tree(files: &[FileEntry]) -> Dir {
    let mut root = Dir::default();
    for f in files.iter().take(MAX_FILES_SHOWN) {
        let mut parts: Vec<&str> = f.path.split('/').collect();
        let leaf = parts.pop().unwrap_or("");
        let mut d = &mut root;
        d.size += f.size;
        d.count += 1;
        for p in parts {
            d = d.dirs.entry(p.to_string()).or_default();
            d.size += f.size;
            d.count += 1;
        }
        d.files.push((leaf.to_string(), f.size));
    }
    root
}

fn tree_json(d: &Dir) -> Value {
    let mut children: Vec<Value> = d
        .dirs
        .iter()
        .map(|(name, sub)| {
            json!({"name": name, "size": sub.size, "children": tree_json_children(sub)})
        })
        .collect();
    children.extend(
        d.files
            .iter()
            .map(|(name, size)| json!({"name": name, "size": size})),
    );
    Value::Array(children)
}

fn tree_json_children(d: &Dir) -> Value {
    tree_json(d)
}

/// A record's JSON (list entries), with its facets (`category` 8000 and `facets`
/// null when not classified).
pub fn record_json(r: &TorrentRecord, f: Option<&Facets>) -> Value {
    json!({
        "category": f.map_or(8000, |f| f.category),
        "facets": facets_json(f),
        "infohash": to_hex(&r.infohash),
        "name": r.name,
        "size": r.total_size,
        "files": r.file_count,
        "discovered_at": r.discovered_at,
        "seeders": r.seeders,
        "leechers": r.leechers,
        "scraped_at": r.scraped_at,
        "magnet": magnet_of(r),
    })
}

/// A torrent's whole JSON: every stored field, the files, their tree, the magnet.
pub fn torrent_json(t: &Torrent, f: Option<&Facets>) -> Value {
    let r = &t.record;
    let hex = to_hex(&r.infohash);
    json!({
        "category": f.map_or(8000, |f| f.category),
        "facets": facets_json(f),
        "infohash": hex,
        "hash_kind": r.kind.as_str(),
        "v2_infohash": r.v2.map(|h| to_hex(&h)),
        "name": r.name,
        "size": r.total_size,
        "piece_length": r.piece_length,
        "piece_count": r.piece_count,
        "file_count": r.file_count,
        "private": r.private,
        "source": r.source,
        "discovered_at": r.discovered_at,
        "last_seen_at": r.last_seen_at,
        "sources": source_names(r),
        "seeders": r.seeders,
        "leechers": r.leechers,
        "scraped_at": r.scraped_at,
        "has_info": r.has_info,
        "magnet": magnet_of(r),
        "torrent_url": r.has_info.then(|| format!("/api/v1/torrents/{hex}.torrent")),
        "files": t.files.iter().take(MAX_FILES_SHOWN)
            .map(|f| json!({"path": f.path, "size": f.size})).collect::<Vec<_>>(),
        "files_truncated": t.files.len() > MAX_FILES_SHOWN,
        "tree": tree_json(&file_tree(&t.files)),
    })
}

/// A `.torrent` file around a kept info dict.
pub fn torrent_file(info: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(info.len() + 8);
    b.extend_from_slice(b"d4:info");
    b.extend_from_slice(info);
    b.push(b'e');
    b
}

/// A file name safe for `Content-Disposition` (ASCII letters, digits, `-._ `).
pub fn safe_filename(name: &str) -> String {
    let s: String = name
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._ ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_matches(|c| c == '.' || c == ' ').to_string();
    if s.is_empty() {
        "torrent".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        // 2026-12-07 11:38:50 UTC was a Monday.
        assert_eq!(rfc2822(1_796_643_530), "Mon, 07 Dec 2026 11:38:50 +0000");
    }

    #[test]
    fn tree_nests_and_sums() {
        let files = vec![
            FileEntry {
                path: "a/b/c.txt".into(),
                size: 3,
            },
            FileEntry {
                path: "a/d.txt".into(),
                size: 4,
            },
        ];
        let t = file_tree(&files);
        assert_eq!(t.size, 7);
        assert_eq!(t.dirs["a"].size, 7);
        assert_eq!(t.dirs["a"].dirs["b"].files, vec![("c.txt".to_string(), 3)]);
    }

    #[test]
    fn filenames_are_tamed() {
        assert_eq!(safe_filename("\"><x>.mkv"), "___x_.mkv");
        assert_eq!(safe_filename("..."), "torrent");
    }
}
