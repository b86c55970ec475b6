//! The JSON API, `/api/v1` (described in `web/openapi.yaml`).

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use magnetar_storage::{magnet_of, to_hex, TorrentRecord};
use serde::Serialize;
use serde_json::json;

use crate::index::MAX_LIMIT;
use crate::util::{self, BadRequest, Params};
use crate::AppState;

fn fail(e: BadRequest) -> Response {
    util::error(e.0, &e.1)
}

/// One search hit, serialized straight from its record: the same JSON as
/// `util::record_json` (same keys, in its sorted order), without building a `Value`
/// tree per hit (a map and a `String` per key).
#[derive(Serialize)]
struct Hit<'a> {
    discovered_at: u64,
    files: u32,
    infohash: String,
    leechers: Option<u32>,
    magnet: String,
    name: &'a str,
    scraped_at: Option<u64>,
    seeders: Option<u32>,
    size: u64,
}

impl<'a> Hit<'a> {
    fn of(r: &'a TorrentRecord) -> Hit<'a> {
        Hit {
            discovered_at: r.discovered_at,
            files: r.file_count,
            infohash: to_hex(&r.infohash),
            leechers: r.leechers,
            magnet: magnet_of(r),
            name: &r.name,
            scraped_at: r.scraped_at,
            seeders: r.seeders,
            size: r.total_size,
        }
    }
}

/// A search answer (keys in sorted order, as `json!` wrote them).
#[derive(Serialize)]
struct SearchAnswer<'a> {
    limit: usize,
    offset: usize,
    order: &'static str,
    prefix_truncated: bool,
    query: &'a str,
    results: Vec<Hit<'a>>,
    sort: &'a str,
    total: usize,
    total_estimated: bool,
}

/// `GET /api/v1/search?q=&sort=&order=&offset=&limit=`
pub async fn search(State(st): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let r = match Params::parse(raw.as_deref()).and_then(|p| util::search_request(&p, 20)) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if r.q.is_empty() {
        return fail(BadRequest::new("`q` is required (1 to 256 bytes)"));
    }
    // The request goes to the blocking pool and comes back with the page.
    match st
        .index
        .run(move |ix| ix.search(&r).map(|page| (r, page)))
        .await
    {
        Ok((r, page)) => Json(SearchAnswer {
            limit: r.limit,
            offset: r.offset,
            order: if r.desc { "desc" } else { "asc" },
            prefix_truncated: page.prefix_truncated,
            query: &r.q,
            results: page.hits.iter().map(Hit::of).collect(),
            sort: r.sort.as_str(),
            total: page.total,
            total_estimated: page.total_estimated,
        })
        .into_response(),
        Err(e) => fail(e.into()),
    }
}

/// `GET /api/v1/torrents/{infohash}` and `GET /api/v1/torrents/{infohash}.torrent`
pub async fn torrent(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    let (hex, file) = match id.strip_suffix(".torrent") {
        Some(h) => (h, true),
        None => (id.as_str(), false),
    };
    let ih = match util::parse_infohash(hex) {
        Ok(ih) => ih,
        Err(e) => return fail(e),
    };
    if file {
        let r = st
            .index
            .run(move |ix| {
                let rec = ix.record(&ih)?;
                let info = match &rec {
                    Some(_) => ix.info_dict(&ih)?,
                    None => None,
                };
                Ok((rec, info))
            })
            .await;
        return match r {
            Ok((None, _)) => util::error(StatusCode::NOT_FOUND, "no torrent with this infohash"),
            Ok((Some(_), None)) => util::error(
                StatusCode::NOT_FOUND,
                "the info dict of this torrent is not kept (crawled with --no-info-dicts)",
            ),
            Ok((Some(rec), Some(info))) => {
                let disposition = format!(
                    "attachment; filename=\"{}.torrent\"",
                    util::safe_filename(&rec.name)
                );
                (
                    [
                        (header::CONTENT_TYPE, "application/x-bittorrent".to_string()),
                        (header::CONTENT_DISPOSITION, disposition),
                    ],
                    util::torrent_file(&info),
                )
                    .into_response()
            }
            Err(e) => fail(e.into()),
        };
    }
    match st.index.run(move |ix| ix.torrent(&ih)).await {
        Ok(Some(t)) => Json(util::torrent_json(&t)).into_response(),
        Ok(None) => util::error(StatusCode::NOT_FOUND, "no torrent with this infohash"),
        Err(e) => fail(e.into()),
    }
}

/// `GET /api/v1/recent?offset=&limit=`
pub async fn recent(State(st): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let (offset, limit) = match Params::parse(raw.as_deref()).and_then(|p| {
        let limit = p.num("limit", 20, 1, MAX_LIMIT as u64)?;
        let offset = p.num("offset", 0, 0, 1_000)?;
        Ok((offset as usize, limit as usize))
    }) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    match st.index.run(move |ix| ix.recent(offset, limit)).await {
        Ok(v) => Json(json!({
            "offset": offset,
            "limit": limit,
            "results": v.iter().map(util::record_json).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => fail(e.into()),
    }
}

/// `GET /api/v1/stats`
pub async fn stats(State(st): State<AppState>) -> Response {
    match st.index.run(|ix| ix.dashboard()).await {
        Ok(d) => {
            let s = &d.stats;
            let hourly = |h: &magnetar_storage::Hourly| {
                json!({
                    "start": h.start,
                    "bucket_secs": 3600,
                    "counts": h.counts,
                    "failed": h.failed,
                    "truncated": h.truncated,
                })
            };
            Json(json!({
                "generated_at": d.now,
                "totals": {
                    "torrents": s.torrents,
                    "torrents_with_info": s.torrents_with_info,
                    "peers": s.peers,
                    "nodes": s.nodes,
                    "sessions": s.sessions,
                    "requests": s.requests,
                    "disk_bytes": s.disk_bytes,
                    "used_bytes": s.used_bytes,
                },
                "discoveries_per_hour": hourly(&d.discoveries),
                "requests_per_hour": hourly(&d.requests),
                "funnel": d.funnel().iter().map(|(k, v)| json!({"step": k, "count": v})).collect::<Vec<_>>(),
                "failure_reasons": d.failure_reasons.iter().take(20)
                    .map(|(r, n)| json!({"reason": r, "count": n})).collect::<Vec<_>>(),
                "top_clients": d.clients.iter().map(|c| json!({
                    "client": c.client, "requests": c.requests,
                    "successes": c.successes, "success_rate": c.success_rate,
                })).collect::<Vec<_>>(),
                "sessions": d.sessions.iter().rev().take(20).map(|y| json!({
                    "id": y.session.id,
                    "started_at": y.session.started_at,
                    "ended_at": y.session.ended_at,
                    "torrents_new": y.session.counters.torrents_new,
                    "metadata_fetched": y.session.counters.metadata_fetched,
                    "metadata_failed": y.session.counters.metadata_failed,
                    "torrents_per_hour": y.torrents_per_hour,
                })).collect::<Vec<_>>(),
            }))
            .into_response()
        }
        Err(e) => fail(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use magnetar_storage::{HashKind, Sources};

    /// A hit serializes exactly as `util::record_json` writes it, known and unknown
    /// counts, hostile names included.
    #[test]
    fn hits_serialize_as_record_json_does() {
        for (i, name) in ["plain", "<script>alert(1)</script> \"q\" \\ é 語 \u{1}"]
            .iter()
            .enumerate()
        {
            let r = TorrentRecord {
                infohash: [i as u8 + 7; 20],
                kind: HashKind::V1,
                v2: None,
                name: name.to_string(),
                total_size: 1 << 40,
                piece_length: 1,
                piece_count: 1,
                file_count: 3,
                private: false,
                source: None,
                discovered_at: 1_700_000_000,
                last_seen_at: 1_700_000_001,
                sources: Sources::SAMPLE,
                seeders: (i == 0).then_some(5),
                leechers: (i == 0).then_some(0),
                scraped_at: (i == 0).then_some(1_700_000_002),
                has_info: false,
            };
            assert_eq!(
                serde_json::to_string(&Hit::of(&r)).unwrap(),
                util::record_json(&r).to_string()
            );
        }
    }
}
