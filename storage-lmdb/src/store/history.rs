//! Activity over time for dashboards: torrents discovered and metadata requests
//! per hour over a recent window. Each walk starts at the newest end of an ordered
//! table (`by_time`, `requests`) and stops at the window's start or after
//! [`MAX_HISTORY_SCAN`] entries, so one call costs a bounded read whatever the
//! database's size.

use super::{lmdb, Result, Store};
use crate::codec;
use crate::types::RequestOutcome;

/// Entries one history call reads at most (a larger window is reported as
/// truncated rather than read whole).
pub const MAX_HISTORY_SCAN: usize = 2_000_000;

/// Counts per hour, oldest hour first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hourly {
    /// Unix seconds at which the first bucket starts (a multiple of 3600).
    pub start: u64,
    /// One value per hour.
    pub counts: Vec<u64>,
    /// For requests: the failed ones per hour (empty for discoveries).
    pub failed: Vec<u64>,
    /// The walk stopped at [`MAX_HISTORY_SCAN`] entries before the window's start.
    pub truncated: bool,
}

fn window(now: u64, hours: u32) -> (u64, usize) {
    let hours = hours.clamp(1, 24 * 31) as usize;
    let end_hour = now / 3600;
    let start = (end_hour + 1).saturating_sub(hours as u64) * 3600;
    (start, hours)
}

impl Store {
    /// Torrents discovered per hour over the `hours` hours ending with the one that
    /// holds `now` (Unix seconds); from `by_time`, newest first.
    pub fn discoveries_per_hour(&self, now: u64, hours: u32) -> Result<Hourly> {
        let (start, n) = window(now, hours);
        self.read(|txn, dbs| {
            let mut h = Hourly {
                start,
                counts: vec![0; n],
                ..Hourly::default()
            };
            for (seen, r) in dbs
                .by_time
                .rev_iter(txn)
                .map_err(lmdb("listing by time"))?
                .enumerate()
            {
                if seen >= MAX_HISTORY_SCAN {
                    h.truncated = true;
                    break;
                }
                let (k, _) = r.map_err(lmdb("listing by time"))?;
                let Some(t) = k
                    .get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                else {
                    continue;
                };
                if t < start {
                    break;
                }
                if let Some(c) = h.counts.get_mut(((t - start) / 3600) as usize) {
                    *c += 1;
                }
            }
            Ok(h)
        })
    }

    /// Metadata requests (one per peer session) per hour, and the failed ones, over
    /// the same window as [`Store::discoveries_per_hour`]; from the kept request
    /// records, newest first (their ids increase with time).
    pub fn requests_per_hour(&self, now: u64, hours: u32) -> Result<Hourly> {
        let (start, n) = window(now, hours);
        self.read(|txn, dbs| {
            let mut h = Hourly {
                start,
                counts: vec![0; n],
                failed: vec![0; n],
                ..Hourly::default()
            };
            for (seen, r) in dbs
                .requests
                .rev_iter(txn)
                .map_err(lmdb("listing requests"))?
                .enumerate()
            {
                if seen >= MAX_HISTORY_SCAN {
                    h.truncated = true;
                    break;
                }
                let (_, v) = r.map_err(lmdb("listing requests"))?;
                let Ok(req) = codec::decode_request(v) else {
                    continue;
                };
                let t = req.started_at_ms / 1000;
                if t < start {
                    break;
                }
                let i = ((t - start) / 3600) as usize;
                if let Some(c) = h.counts.get_mut(i) {
                    *c += 1;
                    if req.outcome == RequestOutcome::Failure {
                        h.failed[i] += 1;
                    }
                }
            }
            Ok(h)
        })
    }
}
