//! Totals, rankings and activity over time (the dashboard and `magnetar stats`),
//! with the LMDB store's method names, signatures and results.
//!
//! Intentional differences from the LMDB store:
//! - [`Stats`]: `posting_blocks` is 0 (no posting blocks: search uses a GIN
//!   index), `disk_bytes` is the database's size (`pg_database_size`), `used_bytes`
//!   the magnetar tables with their indexes and TOAST (`pg_total_relation_size`),
//!   `map_size` 0 (no memory map). The counts are exact (`count(*)`), where LMDB
//!   keeps counters: on a very large database `stats` costs a scan of an index.
//! - Rankings with ties are ordered by Rust's byte order of the name, as LMDB's are
//!   (the grouping is SQL, the order is made here, not by a collation).
//!
//! Time bucketing is LMDB's exactly: the same window (`hours` hours ending with the
//! one holding `now`), the same walk from the newest entry stopping at the first
//! older than the window, the same [`MAX_HISTORY_SCAN`] bound and `truncated` flag.

use std::collections::BTreeMap;

use magnetar_storage::{ClientStats, Hourly, SessionYield, Stats, MAX_HISTORY_SCAN};

use crate::error::{PgError, Result};
use crate::PgStore;

/// The tables of a magnetar database (their sizes make `used_bytes`).
const TABLES: &[&str] = &[
    "torrents",
    "files",
    "info",
    "peers",
    "nodes",
    "sessions",
    "requests",
    "tombstones",
    "hidden",
    "facets",
    "facet_keys",
];

/// LMDB's `history::window`: the first bucket's start and the number of hours.
fn window(now: u64, hours: u32) -> (u64, usize) {
    let hours = hours.clamp(1, 24 * 31) as usize;
    let end_hour = now / 3600;
    let start = (end_hour + 1).saturating_sub(hours as u64) * 3600;
    (start, hours)
}

const SCAN: i64 = MAX_HISTORY_SCAN as i64;

impl PgStore {
    /// Totals (see the module doc for what differs from LMDB).
    pub fn stats(&mut self) -> Result<Stats> {
        let tables: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
        let r = self
            .client()
            .query_one(
                "SELECT (SELECT count(*) FROM torrents),
                        (SELECT count(*) FROM torrents WHERE has_info),
                        (SELECT count(*) FROM peers),
                        (SELECT count(*) FROM nodes),
                        (SELECT count(*) FROM sessions),
                        (SELECT count(*) FROM requests),
                        pg_database_size(current_database()),
                        (SELECT coalesce(sum(pg_total_relation_size(t::regclass)), 0)::int8
                         FROM unnest($1::text[]) t)",
                &[&tables],
            )
            .map_err(PgError::db("reading totals"))?;
        let u = |i: usize| r.get::<_, i64>(i).max(0) as u64;
        Ok(Stats {
            torrents: u(0),
            torrents_with_info: u(1),
            posting_blocks: 0,
            peers: u(2),
            nodes: u(3),
            sessions: u(4),
            requests: u(5),
            disk_bytes: u(6),
            used_bytes: u(7),
            map_size: 0,
        })
    }

    /// Per-session yield (new torrents per hour), oldest session first. `now` (Unix
    /// seconds) ends sessions that are still running.
    pub fn session_yields(&mut self, now: u64) -> Result<Vec<SessionYield>> {
        Ok(self
            .sessions()?
            .into_iter()
            .map(|s| {
                let end = s.ended_at.unwrap_or(now).max(s.started_at);
                let hours = ((end - s.started_at) as f64 / 3600.0).max(1.0 / 3600.0);
                SessionYield {
                    torrents_per_hour: s.counters.torrents_new as f64 / hours,
                    session: s,
                }
            })
            .collect())
    }

    /// Kept requests grouped by `col`: (value, requests, successes).
    fn request_groups(
        &mut self,
        col: &str,
        failures_only: bool,
    ) -> Result<Vec<(String, u64, u64)>> {
        let filter = if failures_only {
            "WHERE outcome = 1"
        } else {
            ""
        };
        let rows = self
            .client()
            .query(
                &format!(
                    "SELECT {col}, count(*), count(*) FILTER (WHERE outcome = 0) \
                     FROM requests {filter} GROUP BY {col}"
                ),
                &[],
            )
            .map_err(PgError::db("reading requests"))?;
        // Grouped by bytes: one group per distinct string (a collation could merge
        // none, but the order is made in Rust).
        let mut m: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for r in rows {
            let e = m.entry(r.get(0)).or_default();
            e.0 += r.get::<_, i64>(1) as u64;
            e.1 += r.get::<_, i64>(2) as u64;
        }
        Ok(m.into_iter().map(|(k, (a, b))| (k, a, b)).collect())
    }

    /// Failure reasons of the kept metadata requests, most frequent first.
    pub fn failure_reasons(&mut self) -> Result<Vec<(String, u64)>> {
        let mut v: Vec<(String, u64)> = self
            .request_groups("reason", true)?
            .into_iter()
            .map(|(k, n, _)| (k, n))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(v)
    }

    fn outcomes(&mut self, col: &str) -> Result<Vec<(String, u64, u64)>> {
        let mut v = self.request_groups(col, false)?;
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(v)
    }

    /// Kept requests by handshake: (name, requests, successes), most requests first.
    pub fn encryption_outcomes(&mut self) -> Result<Vec<(String, u64, u64)>> {
        self.outcomes("encryption")
    }

    /// Kept requests by transport: (name, requests, successes), most requests first.
    pub fn transport_outcomes(&mut self) -> Result<Vec<(String, u64, u64)>> {
        self.outcomes("transport")
    }

    /// Clients ranked by ut_metadata successes over the kept requests.
    pub fn top_clients(&mut self, limit: usize) -> Result<Vec<ClientStats>> {
        let mut v: Vec<ClientStats> = self
            .request_groups("client", false)?
            .into_iter()
            .map(|(client, requests, successes)| ClientStats {
                client,
                requests,
                successes,
                success_rate: successes as f64 / requests.max(1) as f64,
            })
            .collect();
        v.sort_by(|a, b| {
            b.successes
                .cmp(&a.successes)
                .then_with(|| a.client.cmp(&b.client))
        });
        v.truncate(limit);
        Ok(v)
    }

    /// Torrents discovered per hour over the `hours` hours ending with the one that
    /// holds `now` (Unix seconds). Hidden torrents count (as in LMDB's `by_time`);
    /// removed ones do not.
    pub fn discoveries_per_hour(&mut self, now: u64, hours: u32) -> Result<Hourly> {
        let (start, n) = window(now, hours);
        let mut h = Hourly {
            start,
            counts: vec![0; n],
            ..Hourly::default()
        };
        let s = i64::try_from(start).unwrap_or(i64::MAX);
        // The newest MAX_HISTORY_SCAN entries at or after the window's start (LMDB
        // walks `by_time` from the end and stops at the first older entry).
        let rows = self
            .client()
            .query(
                "SELECT (w.discovered_at - $1) / 3600, count(*) FROM
                     (SELECT discovered_at FROM torrents WHERE discovered_at >= $1
                      ORDER BY discovered_at DESC, id DESC LIMIT $2) w
                 GROUP BY 1",
                &[&s, &SCAN],
            )
            .map_err(PgError::db("listing by time"))?;
        let mut walked = 0i64;
        for r in rows {
            let b: i64 = r.get(0);
            let c: i64 = r.get(1);
            walked += c;
            if let Some(x) = usize::try_from(b).ok().and_then(|b| h.counts.get_mut(b)) {
                *x += c as u64;
            }
        }
        if walked >= SCAN {
            // LMDB stops (truncated) on reaching one entry past the bound.
            let more: bool = self
                .client()
                .query_one(
                    "SELECT (SELECT count(*) FROM (SELECT 1 FROM torrents LIMIT $1) x) > $2",
                    &[&(SCAN + 1), &SCAN],
                )
                .map_err(PgError::db("listing by time"))?
                .get(0);
            h.truncated = more;
        }
        Ok(h)
    }

    /// Metadata requests per hour, and the failed ones, over the same window as
    /// [`PgStore::discoveries_per_hour`]: the kept requests newest first (by id),
    /// up to the first one started before the window (LMDB's walk).
    pub fn requests_per_hour(&mut self, now: u64, hours: u32) -> Result<Hourly> {
        let (start, n) = window(now, hours);
        let mut h = Hourly {
            start,
            counts: vec![0; n],
            failed: vec![0; n],
            ..Hourly::default()
        };
        let s = i64::try_from(start).unwrap_or(i64::MAX);
        let start_ms = s.saturating_mul(1000);
        let rows = self
            .client()
            .query(
                "WITH cut AS (
                     SELECT coalesce((SELECT id FROM requests WHERE started_at_ms < $1
                                      ORDER BY id DESC LIMIT 1), 0) AS id)
                 SELECT (w.started_at_ms / 1000 - $2) / 3600, count(*),
                        count(*) FILTER (WHERE w.outcome = 1)
                 FROM (SELECT started_at_ms, outcome FROM requests, cut
                       WHERE requests.id > cut.id ORDER BY requests.id DESC LIMIT $3) w
                 GROUP BY 1",
                &[&start_ms, &s, &SCAN],
            )
            .map_err(PgError::db("listing requests"))?;
        let mut walked = 0i64;
        for r in rows {
            let b: i64 = r.get(0);
            let c: i64 = r.get(1);
            let f: i64 = r.get(2);
            walked += c;
            if let Ok(b) = usize::try_from(b) {
                if let (Some(x), Some(y)) = (h.counts.get_mut(b), h.failed.get_mut(b)) {
                    *x += c as u64;
                    *y += f as u64;
                }
            }
        }
        if walked >= SCAN {
            let more: bool = self
                .client()
                .query_one(
                    "SELECT (SELECT count(*) FROM (SELECT 1 FROM requests LIMIT $1) x) > $2",
                    &[&(SCAN + 1), &SCAN],
                )
                .map_err(PgError::db("listing requests"))?
                .get(0);
            h.truncated = more;
        }
        Ok(h)
    }
}
