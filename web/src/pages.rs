//! The web pages, rendered on the server with maud (every interpolated string is
//! HTML-escaped by the template engine). No JavaScript: sorting and paging are
//! links, the file tree is `<details>`, the charts are SVG drawn here.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use magnetar_storage::{category_name, magnet_of, to_hex, Facets, TorrentRecord};
use maud::{html, Markup, DOCTYPE};

use crate::index::{now_secs, Dashboard, SearchRequest, Sort};
use crate::util::{self, human_size, utc, BadRequest, Dir, Params};
use crate::AppState;

const STYLE: &str = include_str!("../static/style.css");
/// Results per page on the search and recent pages.
const PAGE: u64 = 50;

pub async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

fn layout(title: &str, q: &str, body: Markup) -> Markup {
    layout_cat(title, q, "", body)
}

/// The categories of the search form's select: (value, label).
const CATEGORY_CHOICES: &[(&str, &str)] = &[
    ("", "All categories"),
    ("movies", "Movies"),
    ("tv", "TV"),
    ("audio", "Audio"),
    ("books", "Books"),
    ("pc", "Software and games"),
    ("xxx", "Adult"),
    ("8000", "Other"),
];

/// The page layout, with `cat` selected in the search form's category select.
fn layout_cat(title: &str, q: &str, cat: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · magnetar" }
                link rel="stylesheet" href="/static/style.css";
            }
            body {
                header {
                    a.brand href="/" { "magnetar" }
                    form.search action="/search" method="get" role="search" {
                        input type="search" name="q" value=(q) maxlength="256"
                            placeholder="Search names and files" aria-label="Search";
                        select name="category" aria-label="Category" {
                            @for (v, label) in CATEGORY_CHOICES {
                                option value=(v) selected[*v == cat] { (label) }
                            }
                        }
                        button type="submit" { "Search" }
                    }
                    nav { a href="/recent" { "Recent" } " · " a href="/stats" { "Stats" } }
                }
                main { (body) }
            }
        }
    }
}

fn html_page(status: StatusCode, m: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        m.into_string(),
    )
        .into_response()
}

fn error_page(e: BadRequest) -> Response {
    html_page(
        e.0,
        layout(
            "Error",
            "",
            html! { h1 { "Error " (e.0.as_u16()) } p { (e.1) } },
        ),
    )
}

pub fn not_found_page(msg: &str) -> Response {
    html_page(
        StatusCode::NOT_FOUND,
        layout("Not found", "", html! { h1 { "Not found" } p { (msg) } }),
    )
}

pub async fn home(State(st): State<AppState>) -> Response {
    let totals = st.index.run(|ix| ix.totals()).await;
    let n = totals.map(|s| s.torrents).unwrap_or(0);
    html_page(
        StatusCode::OK,
        layout(
            "Search",
            "",
            html! {
                h1 { "Search " (n) " torrents" }
                p.mute { "Every word must match a name or a file path; the last word may be a prefix." }
                p { a href="/recent" { "Newest torrents" } " · " a href="/stats" { "Crawler statistics" } }
            },
        ),
    )
}

/// The link to a search page with one parameter changed.
fn search_link(r: &SearchRequest, sort: Sort, desc: bool, offset: usize) -> String {
    let mut params = vec![
        ("q", r.q.as_str()),
        ("sort", sort.as_str()),
        ("order", if desc { "desc" } else { "asc" }),
    ];
    if let Some(c) = &r.category {
        params.push(("category", c.as_str()));
    }
    for (k, v) in &r.attributes {
        params.push((k.as_str(), v.as_str()));
    }
    let offset = offset.to_string();
    params.push(("offset", &offset));
    serde_urlencoded::to_string(params)
        .map(|s| format!("/search?{s}"))
        .unwrap_or_else(|_| "/search".into())
}

fn scrape(r: &TorrentRecord, now: u64) -> Markup {
    let c = |v: Option<u32>| v.map_or("?".to_string(), |v| v.to_string());
    html! {
        (c(r.seeders)) " / " (c(r.leechers))
        @if let Some(t) = r.scraped_at {
            br; span.mute { (util::age(now.saturating_sub(t))) " ago" }
        }
    }
}

/// The category shown for a row: the Torznab category's name, or its kind.
fn category_cell(f: Option<&Facets>) -> Markup {
    html! {
        @if let Some(f) = f {
            span title=(f.class.kind.as_str()) { (category_name(f.category)) }
        } @else {
            span.mute { "?" }
        }
    }
}

fn results_table(rows: &[TorrentRecord], facets: &[Option<Facets>], head: Markup) -> Markup {
    let now = now_secs();
    html! {
        table {
            thead { (head) }
            tbody {
                @for (i, r) in rows.iter().enumerate() {
                    @let hex = to_hex(&r.infohash);
                    tr {
                        td.name { a href={ "/torrent/" (hex) } { (r.name) } }
                        td.cat.wide { (category_cell(facets.get(i).and_then(Option::as_ref))) }
                        td.n { (human_size(r.total_size)) }
                        td.n.wide { (r.file_count) }
                        td.n { (scrape(r, now)) }
                        td.n.wide { (utc(r.discovered_at)) }
                        td { a href=(magnet_of(r)) title="Magnet link" { "magnet" } }
                    }
                }
            }
        }
    }
}

fn plain_head() -> Markup {
    html! { tr { th { "Name" } th.cat.wide { "Category" } th.n { "Size" } th.n.wide { "Files" } th.n { "S / L" } th.n.wide { "Discovered (UTC)" } th { "" } } }
}

pub async fn search(State(st): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let r = match Params::parse(raw.as_deref()).and_then(|p| util::search_request(&p, PAGE)) {
        Ok(r) => r,
        Err(e) => return error_page(e),
    };
    if r.q.is_empty() && r.category.is_none() && r.attributes.is_empty() {
        return html_page(
            StatusCode::OK,
            layout(
                "Search",
                "",
                html! { h1 { "Search" } p { "Type some words above." } },
            ),
        );
    }
    let req = r.clone();
    let page = match st.index.run(move |ix| ix.search(&req)).await {
        Ok(p) => p,
        Err(e) => return error_page(e.into()),
    };
    // A sortable column header: clicking the current sort flips its order.
    let th = |label: &str, sort: Sort, class: &str| {
        let desc = if r.sort == sort { !r.desc } else { true };
        let mark = if r.sort == sort {
            if r.desc {
                " ▼"
            } else {
                " ▲"
            }
        } else {
            ""
        };
        html! { th class=(class) { a href=(search_link(&r, sort, desc, 0)) { (label) (mark) } } }
    };
    let head = html! {
        tr {
            (th("Name", Sort::Relevance, ""))
            th.cat.wide { "Category" }
            (th("Size", Sort::Size, "n"))
            th.n.wide { "Files" }
            th.n { "S / L" }
            (th("Discovered (UTC)", Sort::Discovered, "n wide"))
            th { "" }
        }
    };
    let first = r.offset + 1;
    let last = r.offset + page.hits.len();
    let prev =
        (r.offset > 0).then(|| search_link(&r, r.sort, r.desc, r.offset.saturating_sub(r.limit)));
    let next = (last < page.total && last + r.limit <= crate::index::MAX_DEPTH)
        .then(|| search_link(&r, r.sort, r.desc, last));
    html_page(
        StatusCode::OK,
        layout_cat(
            if r.q.is_empty() { "Browse" } else { &r.q },
            &r.q,
            r.category.as_deref().unwrap_or(""),
            html! {
                p.mute {
                    @if page.total == 0 { "No torrent matches." }
                    @else { (first) "–" (last) " of " (page.total) " matches" }
                    @if page.prefix_truncated { " (the last word matched too many words; only the first were used)" }
                }
                @if !page.hits.is_empty() { (results_table(&page.hits, &page.facets, head)) }
                nav.pager {
                    @if let Some(p) = prev { a href=(p) rel="prev" { "← Previous" } }
                    @if let Some(n) = next { a href=(n) rel="next" { "Next →" } }
                }
            },
        ),
    )
}

pub async fn recent(State(st): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let offset = match Params::parse(raw.as_deref()).and_then(|p| p.num("offset", 0, 0, 1_000)) {
        Ok(o) => o as usize,
        Err(e) => return error_page(e),
    };
    let (rows, facets) = match st
        .index
        .run(move |ix| {
            let v = ix.recent(offset, PAGE as usize)?;
            let f = ix.facets_of(&v)?;
            Ok((v, f))
        })
        .await
    {
        Ok(v) => v,
        Err(e) => return error_page(e.into()),
    };
    let next = offset + rows.len();
    html_page(
        StatusCode::OK,
        layout(
            "Recent",
            "",
            html! {
                h1 { "Newest torrents" }
                (results_table(&rows, &facets, plain_head()))
                nav.pager {
                    @if offset > 0 { a href={ "/recent?offset=" (offset.saturating_sub(PAGE as usize)) } rel="prev" { "← Newer" } }
                    @if rows.len() == PAGE as usize && next <= 1_000 { a href={ "/recent?offset=" (next) } rel="next" { "Older →" } }
                }
            },
        ),
    )
}

fn tree(d: &Dir) -> Markup {
    html! {
        ul.files {
            @for (name, sub) in &d.dirs {
                li {
                    details {
                        summary { (name) "/ " span.mute { "(" (sub.count) " files, " (human_size(sub.size)) ")" } }
                        (tree(sub))
                    }
                }
            }
            @for (name, size) in &d.files {
                li { (name) " " span.mute { (human_size(*size)) } }
            }
        }
    }
}

pub async fn torrent(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    let ih = match util::parse_infohash(&id) {
        Ok(ih) => ih,
        Err(e) => return error_page(e),
    };
    let (t, facets) = match st
        .index
        .run(move |ix| Ok((ix.torrent(&ih)?, ix.facets(&ih)?)))
        .await
    {
        Ok((Some(t), f)) => (t, f),
        Ok((None, _)) => return not_found_page("No torrent with this infohash is stored."),
        Err(e) => return error_page(e.into()),
    };
    let r = &t.record;
    let hex = to_hex(&r.infohash);
    let now = now_secs();
    let root = util::file_tree(&t.files);
    let open_tree = t.files.len() <= 50;
    html_page(
        StatusCode::OK,
        layout(
            &r.name,
            "",
            html! {
                h1 { (r.name) }
                p {
                    a href=(magnet_of(r)) { "Magnet link" }
                    @if r.has_info { " · " a href={ "/api/v1/torrents/" (hex) ".torrent" } download { ".torrent file" } }
                    " · " a href={ "/api/v1/torrents/" (hex) } { "JSON" }
                }
                dl.fields {
                    dt { "Infohash" } dd { code { (hex) } }
                    @if let Some(v2) = r.v2 { dt { "v2 infohash" } dd { code { (to_hex(&v2)) } } }
                    dt { "Kind" } dd { (r.kind.as_str()) }
                    dt { "Category" } dd {
                        @if let Some(f) = &facets {
                            (category_name(f.category)) " (" (f.category) ", " (f.class.kind.as_str()) ")"
                        } @else { "not classified" }
                    }
                    @if let Some(f) = &facets {
                        @for (k, v) in f.attributes() { dt { (k) } dd { (v) } }
                    }
                    dt { "Size" } dd { (human_size(r.total_size)) " (" (r.total_size) " bytes)" }
                    dt { "Files" } dd { (r.file_count) }
                    dt { "Pieces" } dd { (r.piece_count) " × " (human_size(u64::from(r.piece_length))) }
                    dt { "Seeders / leechers" } dd {
                        @match (r.seeders, r.leechers) {
                            (None, None) => { "unknown" },
                            (s, l) => {
                                (s.map_or("?".into(), |v| v.to_string())) " / " (l.map_or("?".into(), |v| v.to_string()))
                                @if let Some(at) = r.scraped_at { " (measured " (util::age(now.saturating_sub(at))) " ago)" }
                            },
                        }
                    }
                    dt { "Discovered" } dd { (utc(r.discovered_at)) " UTC" }
                    dt { "Last seen" } dd { (utc(r.last_seen_at)) " UTC" }
                    dt { "Found by" } dd { (util::source_names(r).join(", ")) }
                    dt { "Private" } dd { (if r.private { "yes" } else { "no" }) }
                    @if let Some(s) = &r.source { dt { "Source" } dd { (s) } }
                }
                h2 { "Files" }
                @if t.files.len() > util::MAX_FILES_SHOWN {
                    p.mute { "The first " (util::MAX_FILES_SHOWN) " of " (t.files.len()) " files." }
                }
                details open[open_tree] {
                    summary { (root.count) " files, " (human_size(root.size)) }
                    (tree(&root))
                }
            },
        ),
    )
}

/// A bar chart: one bar per value, labels under the first and last.
fn bars(values: &[u64], labels: (&str, &str), title: &str) -> Markup {
    let (w, h, pad) = (600.0f64, 160.0f64, 20.0f64);
    let top = values.iter().copied().max().unwrap_or(0);
    if top == 0 {
        return html! { p.mute { "None in this window." } };
    }
    let max = top as f64;
    let n = values.len().max(1) as f64;
    let bw = (w - 2.0 * pad) / n;
    html! {
        svg.chart viewBox={ "0 0 " (w) " " (h + 30.0) } role="img" aria-label=(title) {
            title { (title) }
            @for (i, v) in values.iter().enumerate() {
                @let bh = (*v as f64 / max) * h;
                rect x=(format!("{:.1}", pad + i as f64 * bw)) y=(format!("{:.1}", h - bh + 5.0))
                     width=(format!("{:.1}", (bw - 1.0).max(0.5))) height=(format!("{:.1}", bh))
                     fill="#3b82f6" { title { (v) } }
            }
            line x1=(pad) y1=(h + 5.0) x2=(w - pad) y2=(h + 5.0) stroke="#888" {}
            text x=(pad) y=(h + 22.0) { (labels.0) }
            text x=(w - pad) y=(h + 22.0) text-anchor="end" { (labels.1) }
            text x=(pad) y="12" { "max " (top) " per hour" }
        }
    }
}

/// Horizontal bars with a label each.
fn hbars(rows: &[(String, u64)], title: &str) -> Markup {
    let rows = &rows[..rows.len().min(12)];
    let (w, row) = (600.0f64, 22.0f64);
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1) as f64;
    let h = row * rows.len().max(1) as f64;
    html! {
        svg.chart viewBox={ "0 0 " (w) " " (h) } role="img" aria-label=(title) {
            title { (title) }
            @for (i, (label, v)) in rows.iter().enumerate() {
                @let y = i as f64 * row;
                rect x="220" y=(format!("{:.1}", y + 3.0)) width=(format!("{:.1}", (*v as f64 / max) * 300.0 + 1.0))
                     height=(row - 6.0) fill="#10b981" {}
                text x="214" y=(format!("{:.1}", y + 15.0)) text-anchor="end" {
                    (if label.chars().count() > 32 { format!("{}…", label.chars().take(31).collect::<String>()) } else { label.clone() })
                }
                text x=(format!("{:.1}", 226.0 + (*v as f64 / max) * 300.0)) y=(format!("{:.1}", y + 15.0)) { (v) }
            }
        }
    }
}

fn dashboard(d: &Dashboard) -> Markup {
    let s = &d.stats;
    let hours = d.discoveries.counts.len() as u64;
    let labels = (
        format!("{} UTC", utc(d.discoveries.start)),
        "now".to_string(),
    );
    let funnel: Vec<(String, u64)> = d
        .funnel()
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    let clients: Vec<(String, u64)> = d
        .clients
        .iter()
        .map(|c| {
            (
                format!(
                    "{} ({:.0} %)",
                    if c.client.is_empty() {
                        "(unknown)"
                    } else {
                        &c.client
                    },
                    c.success_rate * 100.0
                ),
                c.requests,
            )
        })
        .collect();
    html! {
        h1 { "Statistics" }
        div.cards {
            div { b { (s.torrents) } "torrents" }
            div { b { (s.torrents_with_info) } "with info dict" }
            div { b { (s.peers) } "peers" }
            div { b { (s.nodes) } "DHT nodes" }
            div { b { (s.sessions) } "crawl sessions" }
            div { b { (human_size(s.disk_bytes)) } "on disk" }
        }
        h2 { "Torrents discovered per hour (last " (hours) " h)" }
        (bars(&d.discoveries.counts, (&labels.0, &labels.1), "Torrents discovered per hour"))
        h2 { "Metadata requests per hour" }
        (bars(&d.requests.counts, (&labels.0, &labels.1), "Metadata requests per hour"))
        @if d.requests.failed.iter().any(|&f| f > 0) {
            p.mute { "Of which failed: " (d.requests.failed.iter().sum::<u64>()) " in the window." }
        }
        h2 { "Metadata funnel (all sessions)" }
        (hbars(&funnel, "Metadata funnel"))
        h2 { "Failure reasons (kept request records)" }
        @if d.failure_reasons.is_empty() { p.mute { "None recorded." } }
        @else { (hbars(&d.failure_reasons, "Failure reasons")) }
        h2 { "Top clients (ut_metadata requests, success rate)" }
        @if clients.is_empty() { p.mute { "None recorded." } }
        @else { (hbars(&clients, "Top clients")) }
        p.mute { "Figures are refreshed every 15 s. " a href="/api/v1/stats" { "JSON" } }
    }
}

pub async fn stats(State(st): State<AppState>) -> Response {
    match st.index.run(|ix| ix.dashboard()).await {
        Ok(d) => html_page(StatusCode::OK, layout("Statistics", "", dashboard(&d))),
        Err(e) => error_page(e.into()),
    }
}
