//! Torznab (`/torznab/api`, for Sonarr, Radarr and Prowlarr) and the RSS 2.0 feed
//! of new torrents (`/feed?q=`). Both are RSS 2.0 documents written here with
//! every stranger-supplied string through [`xml`], which escapes markup and drops
//! the characters XML 1.0 cannot carry.

use std::fmt::Write;

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use magnetar_storage::{magnet_of, to_hex, Facets, TorrentRecord, TORZNAB_CATEGORIES};

use crate::index::{SearchRequest, Sort, MAX_LIMIT};
use crate::util::{self, Params};
use crate::AppState;

/// The category of a torrent that is not classified (Newznab's "Other").
pub const CATEGORY: u32 = 8000;
const TORZNAB_NS: &str = "http://torznab.com/schemas/2015/feed";

/// Text for XML: escapes `& < > " '` and drops characters XML 1.0 forbids.
pub fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\t' | '\n' | '\r' => o.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => o.push(c),
        }
    }
    o
}

fn xml_response(status: StatusCode, ct: &'static str, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, ct)], body).into_response()
}

/// A Torznab error document (codes from the Newznab API).
fn torznab_error(status: StatusCode, code: u32, msg: &str) -> Response {
    xml_response(
        status,
        "application/xml; charset=utf-8",
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<error code=\"{code}\" description=\"{}\"/>\n",
            xml(msg)
        ),
    )
}

/// The categories the classifier gives (`magnetar_storage::TORZNAB_CATEGORIES`):
/// each parent with its sub-categories.
fn caps() -> String {
    let mut cats = String::new();
    for &(id, name) in TORZNAB_CATEGORIES.iter().filter(|(id, _)| id % 1000 == 0) {
        let _ = writeln!(cats, "    <category id=\"{id}\" name=\"{}\">", xml(name));
        for &(sub, sname) in TORZNAB_CATEGORIES
            .iter()
            .filter(|(s, _)| *s != id && s / 1000 == id / 1000)
        {
            let _ = writeln!(cats, "      <subcat id=\"{sub}\" name=\"{}\"/>", xml(sname));
        }
        cats.push_str("    </category>\n");
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<caps>
  <server title="magnetar"/>
  <limits max="{MAX_LIMIT}" default="50"/>
  <searching>
    <search available="yes" supportedParams="q"/>
    <tv-search available="yes" supportedParams="q,season,ep"/>
    <movie-search available="yes" supportedParams="q,year"/>
  </searching>
  <categories>
{cats}  </categories>
</caps>
"#
    )
}

/// One `<item>` with the attributes Prowlarr and Sonarr read; its category is the
/// classifier's (parent and sub-category), [`CATEGORY`] when not classified.
fn item(o: &mut String, r: &TorrentRecord, f: Option<&Facets>, torznab: bool) {
    let hex = to_hex(&r.infohash);
    let magnet = xml(&magnet_of(r));
    let _ = write!(
        o,
        "<item>\n<title>{}</title>\n<guid isPermaLink=\"false\">{hex}</guid>\n<link>{magnet}</link>\n\
         <pubDate>{}</pubDate>\n<description>{} in {} files</description>\n",
        xml(&r.name),
        util::rfc2822(r.discovered_at),
        xml(&util::human_size(r.total_size)),
        r.file_count,
    );
    let _ = writeln!(
        o,
        "<enclosure url=\"{magnet}\" length=\"{}\" type=\"application/x-bittorrent\"/>",
        r.total_size
    );
    if torznab {
        let cat = f.map_or(CATEGORY, |f| u32::from(f.category));
        let parent = cat / 1000 * 1000;
        let _ = writeln!(
            o,
            "<size>{}</size>\n<category>{cat}</category>",
            r.total_size
        );
        let mut attr = |k: &str, v: String| {
            let _ = writeln!(o, "<torznab:attr name=\"{k}\" value=\"{}\"/>", xml(&v));
        };
        if parent != cat {
            attr("category", parent.to_string());
        }
        attr("category", cat.to_string());
        if let Some(c) = f.map(|f| &f.class) {
            if let Some(y) = c.year {
                attr("year", y.to_string());
            }
            if let Some((s, _)) = c.seasons {
                attr("season", s.to_string());
            }
            if let Some((e, _)) = c.episodes {
                attr("episode", e.to_string());
            }
            if let Some((y, m, d)) = c.date {
                attr("tvairdate", format!("{y:04}-{m:02}-{d:02}T00:00:00Z"));
            }
        }
        attr("size", r.total_size.to_string());
        attr("files", r.file_count.to_string());
        attr("infohash", hex.clone());
        attr("magneturl", magnet_of(r));
        attr("publishdate", util::rfc2822(r.discovered_at));
        if let Some(s) = r.seeders {
            attr("seeders", s.to_string());
        }
        if r.seeders.is_some() || r.leechers.is_some() {
            let peers = u64::from(r.seeders.unwrap_or(0)) + u64::from(r.leechers.unwrap_or(0));
            attr("peers", peers.to_string());
            if let Some(l) = r.leechers {
                attr("leechers", l.to_string());
            }
        }
        attr("downloadvolumefactor", "0".into());
        attr("uploadvolumefactor", "1".into());
    }
    o.push_str("</item>\n");
}

fn channel(
    title: &str,
    rows: &[TorrentRecord],
    facets: &[Option<Facets>],
    torznab: Option<(usize, usize)>,
) -> String {
    let mut o = String::with_capacity(1024 + rows.len() * 900);
    o.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    if torznab.is_some() {
        let _ = writeln!(o, "<rss version=\"2.0\" xmlns:torznab=\"{TORZNAB_NS}\">");
    } else {
        o.push_str("<rss version=\"2.0\">\n");
    }
    let _ = writeln!(
        o,
        "<channel>\n<title>{}</title>\n<link>/</link>\n<description>Torrents indexed by magnetar</description>",
        xml(title)
    );
    if let Some((offset, total)) = torznab {
        let _ = writeln!(
            o,
            "<torznab:response offset=\"{offset}\" total=\"{total}\"/>"
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let f = facets.get(i).and_then(Option::as_ref);
        item(&mut o, r, f, torznab.is_some());
    }
    o.push_str("</channel>\n</rss>\n");
    o
}

/// `GET /torznab/api?t=caps|search|tvsearch|movie&q=&season=&ep=&cat=&offset=&limit=`
/// (a daily show's episode: `season=YYYY&ep=MM/DD`, Sonarr's form, filters on the
/// classifier's air date; items carry it as `tvairdate`).
pub async fn torznab(State(st): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let bad = |m: &str| torznab_error(StatusCode::BAD_REQUEST, 201, m);
    let p = match Params::parse(raw.as_deref()) {
        Ok(p) => p,
        Err(e) => return bad(&e.1),
    };
    let t = p.get("t").unwrap_or("");
    if t == "caps" {
        return xml_response(StatusCode::OK, "application/xml; charset=utf-8", caps());
    }
    if !matches!(t, "search" | "tvsearch" | "movie") {
        return torznab_error(
            StatusCode::BAD_REQUEST,
            202,
            "t must be caps, search, tvsearch or movie",
        );
    }
    let q = match p.query("q") {
        Ok(q) => q,
        Err(e) => return bad(&e.1),
    };
    // What the store filters on: the classifier's season and episode (tvsearch), the
    // year (movie), and the categories asked (`cat`), else TV for tvsearch and movies
    // for movie.
    let mut attributes: Vec<(String, String)> = Vec::new();
    if t == "tvsearch" {
        let season = match p.opt_num("season") {
            Ok(s) => s,
            Err(e) => return bad(&e.1),
        };
        // Daily shows: Sonarr asks `season=YYYY&ep=MM/DD` (the air date).
        let daily = p.get("ep").and_then(|e| e.split_once('/'));
        if let Some((m, d)) = daily {
            let two = |v: &str, hi: u32| {
                (v.len() == 2 && v.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| v.parse::<u32>().ok())
                    .flatten()
                    .filter(|n| (1..=hi).contains(n))
            };
            match (season, two(m, 12), two(d, 31)) {
                (Some(y), Some(m), Some(d)) if (1000..=9999).contains(&y) => {
                    attributes.push(("date".into(), format!("{y:04}-{m:02}-{d:02}")));
                }
                _ => return bad("a daily show's ep is MM/DD, with season its year YYYY"),
            }
        }
        let ep = match p.opt_num("ep") {
            Ok(s) => s,
            Err(_) if daily.is_some() => None,
            Err(e) => return bad(&e.1),
        };
        match (season, ep) {
            _ if daily.is_some() => {}
            (Some(s), Some(e)) if s < 1000 && e < 10_000 => {
                attributes.push(("season".into(), s.to_string()));
                attributes.push(("episode".into(), e.to_string()));
            }
            (Some(s), None) if s < 1000 => attributes.push(("season".into(), s.to_string())),
            (None, None) => {}
            _ => return bad("season must be below 1000 and ep below 10000, ep only with season"),
        }
    }
    if t == "movie" {
        match p.opt_num("year") {
            Ok(Some(y)) if y <= 9999 => attributes.push(("year".into(), y.to_string())),
            Ok(None) => {}
            Ok(Some(_)) => return bad("year must be below 10000"),
            Err(e) => return bad(&e.1),
        }
    }
    let (limit, offset) = match p.num("limit", 50, 1, MAX_LIMIT as u64).and_then(|l| {
        Ok((
            l,
            p.num("offset", 0, 0, (crate::index::MAX_DEPTH as u64) - l)?,
        ))
    }) {
        Ok((l, o)) => (l as usize, o as usize),
        Err(e) => return bad(&e.1),
    };
    // Categories asked: numbers the classifier can give (others match nothing).
    let mut category = match t {
        "tvsearch" => Some("5000".to_string()),
        "movie" => Some("2000".to_string()),
        _ => None,
    };
    if let Some(cats) = p.get("cat").filter(|c| !c.trim().is_empty()) {
        let wanted: Vec<u32> = cats
            .split(',')
            .take(64)
            .filter_map(|c| c.trim().parse().ok())
            .filter(|c| (1000..10_000).contains(c))
            .collect();
        if wanted.is_empty() {
            return xml_response(
                StatusCode::OK,
                "application/rss+xml; charset=utf-8",
                channel("magnetar", &[], &[], Some((offset, 0))),
            );
        }
        let list: Vec<String> = wanted.iter().map(u32::to_string).collect();
        category = Some(list.join(","));
    }
    let q = q.trim().to_string();
    let r = if q.is_empty() && category.is_none() && attributes.is_empty() {
        st.index
            .run(move |ix| {
                let rows = ix.recent(offset.min(1_000), limit)?;
                let facets = ix.facets_of(&rows)?;
                let total = ix.totals()?.torrents as usize;
                Ok((rows, facets, total))
            })
            .await
    } else {
        let req = SearchRequest {
            q,
            sort: Sort::Discovered,
            desc: true,
            offset,
            limit,
            min_size: None,
            max_size: None,
            after: None,
            before: None,
            category,
            attributes,
        };
        st.index
            .run(move |ix| ix.search(&req).map(|p| (p.hits, p.facets, p.total)))
            .await
    };
    match r {
        Ok((rows, facets, total)) => xml_response(
            StatusCode::OK,
            "application/rss+xml; charset=utf-8",
            channel("magnetar", &rows, &facets, Some((offset, total))),
        ),
        Err(e) => {
            let e: util::BadRequest = e.into();
            torznab_error(e.0, 900, &e.1)
        }
    }
}

/// `GET /feed?q=`: the newest torrents, or the newest matching `q`.
pub async fn rss(State(st): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let q = match Params::parse(raw.as_deref()).and_then(|p| p.query("q")) {
        Ok(q) => q,
        Err(e) => return util::error(e.0, &e.1),
    };
    let title = if q.is_empty() {
        "magnetar: new torrents".to_string()
    } else {
        format!("magnetar: new torrents matching {q}")
    };
    let r = if q.is_empty() {
        st.index.run(|ix| ix.recent(0, 50)).await
    } else {
        let req = SearchRequest {
            q,
            sort: Sort::Discovered,
            desc: true,
            offset: 0,
            limit: 50,
            min_size: None,
            max_size: None,
            after: None,
            before: None,
            category: None,
            attributes: Vec::new(),
        };
        st.index
            .run(move |ix| ix.search(&req).map(|p| p.hits))
            .await
    };
    match r {
        Ok(rows) => xml_response(
            StatusCode::OK,
            "application/rss+xml; charset=utf-8",
            channel(&title, &rows, &[], None),
        ),
        Err(e) => {
            let e: util::BadRequest = e.into();
            util::error(e.0, &e.1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::xml;

    #[test]
    fn xml_escapes_and_drops_forbidden_characters() {
        assert_eq!(
            xml("<a href=\"x\">&'\u{1}\t"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;\t"
        );
    }
}
