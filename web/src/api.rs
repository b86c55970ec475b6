//! The JSON API, `/api/v1` (described in `web/openapi.yaml`).

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::index::MAX_LIMIT;
use crate::util::{self, BadRequest, Params};
use crate::AppState;

fn fail(e: BadRequest) -> Response {
    util::error(e.0, &e.1)
}

/// `GET /api/v1/search?q=&sort=&order=&offset=&limit=&category=&year=&season=&episode=&resolution=`
pub async fn search(State(st): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let r = match Params::parse(raw.as_deref()).and_then(|p| util::search_request(&p, 20)) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if r.q.is_empty() && r.category.is_none() && r.attributes.is_empty() {
        return fail(BadRequest::new(
            "`q` is required (1 to 256 bytes), unless `category` or an attribute filter is given",
        ));
    }
    let req = r.clone();
    match st.index.run(move |ix| ix.search(&req)).await {
        Ok(page) => Json(json!({
            "query": r.q,
            "sort": r.sort.as_str(),
            "order": if r.desc { "desc" } else { "asc" },
            "offset": r.offset,
            "limit": r.limit,
            "category": r.category,
            "total": page.total,
            "total_estimated": page.total_estimated,
            "prefix_truncated": page.prefix_truncated,
            "results": page.hits.iter().zip(&page.facets)
                .map(|(h, f)| util::record_json(h, f.as_ref())).collect::<Vec<_>>(),
        }))
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
    match st
        .index
        .run(move |ix| Ok((ix.torrent(&ih)?, ix.facets(&ih)?)))
        .await
    {
        Ok((Some(t), f)) => Json(util::torrent_json(&t, f.as_ref())).into_response(),
        Ok((None, _)) => util::error(StatusCode::NOT_FOUND, "no torrent with this infohash"),
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
    match st
        .index
        .run(move |ix| {
            let v = ix.recent(offset, limit)?;
            let f = ix.facets_of(&v)?;
            Ok((v, f))
        })
        .await
    {
        Ok((v, f)) => Json(json!({
            "offset": offset,
            "limit": limit,
            "results": v.iter().zip(&f).map(|(h, f)| util::record_json(h, f.as_ref())).collect::<Vec<_>>(),
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
