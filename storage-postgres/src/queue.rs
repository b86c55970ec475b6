//! The fleet's shared work queue (issue 21 §2): infohashes a crawler discovered
//! in another shard's slice, for that shard to fetch, with leases so that the
//! work of a crawler that died is taken over.
//!
//! # Table (migration 3)
//! `crawl_queue`: `infohash` (PK), `shard` (the owner, `top32 · N >> 32`, see
//! `magnetar_core::shard`), `discovered_at` (Unix s, first offer), `offered_by`
//! (the first offerer's name), `claimed_by` (the claimer's name, NULL while
//! unclaimed), `lease_until` (Unix s: the claim holds until then; for an
//! unclaimed row, NULL or the time before which it is not handed out again),
//! `attempts` (claims so far), `done`.
//!
//! # Protocol
//! * [`Queue::offer`]: one `INSERT … ON CONFLICT DO NOTHING` per batch, rows in
//!   infohash order (so two writers' batches lock in one order and never
//!   deadlock), skipping infohashes already in `torrents`. Three writers offering
//!   the same infohash make one row; the first offer's `discovered_at` stays.
//! * [`Queue::claim`]`(shard, n, lease)`: in one transaction, up to `n` rows by
//!   `SELECT … FOR UPDATE SKIP LOCKED` then `UPDATE` (claimed_by, lease_until =
//!   now + lease, attempts + 1): first the shard's own unclaimed rows (oldest
//!   first), then anyone's rows whose claim expired more than `grace` ago (a
//!   claimer that died: its work is taken over) or that stayed unclaimed for
//!   `orphan_after` (a shard that is not running at all). A row is never handed
//!   to two claimers while its lease holds: the row lock serialises claimers and
//!   the `lease_until` test excludes held rows.
//! * [`Queue::complete`]: fetched (or given up): `done`. [`Queue::release`]:
//!   back to the queue, not before `retry_after` (a claimer stopping cleanly, or
//!   a fetch that failed).
//! * [`Queue::prune_done`]: done rows whose lease ended long ago are deleted,
//!   in bounded batches (the table holds pending work, not history).
//! * [`Queue::stored`]: which of some infohashes are in `torrents` already (the
//!   check before fetching; the app keeps a local cache in front of it).
//!
//! # Clock
//! Leases are measured on the database server's clock (`clock_timestamp()`), not
//! the crawlers': hosts whose clocks disagree still agree on when a lease
//! expires. Tests set a fixed clock ([`Queue::set_clock`]) instead of sleeping.
//!
//! All shards of a fleet must use the same `N`: `shard` is written by the
//! offerer with its `N`.

use std::time::Duration;

use magnetar_storage::InfoHash;
use postgres::{Client, NoTls};

use crate::error::{PgError, Result};
use crate::migrate::migrate;

/// Migration 3: the queue table.
pub(crate) const V3: &str = r#"
CREATE TABLE crawl_queue (
    infohash      bytea    PRIMARY KEY CHECK (octet_length(infohash) = 20),
    shard         smallint NOT NULL CHECK (shard >= 0),
    discovered_at bigint   NOT NULL,
    offered_by    text     NOT NULL,
    claimed_by    text,
    lease_until   bigint,
    attempts      integer  NOT NULL DEFAULT 0,
    done          boolean  NOT NULL DEFAULT false
);
-- A shard's own work, oldest first.
CREATE INDEX crawl_queue_own ON crawl_queue (shard, discovered_at) WHERE NOT done;
-- Expired claims and orphans, for takeover.
CREATE INDEX crawl_queue_lease ON crawl_queue (lease_until) WHERE NOT done;
"#;

/// Migration 7: done rows by the end of their lease, so that
/// [`Queue::prune_done`] (every crawler, every ten minutes) reads only the rows
/// it deletes instead of scanning a queue of millions of rows.
pub(crate) const V7: &str = r#"
CREATE INDEX crawl_queue_done ON crawl_queue (lease_until) WHERE done;
"#;

/// How claims treat other shards' work.
#[derive(Copy, Clone, Debug)]
pub struct ClaimOptions {
    /// How long a claim holds.
    pub lease: Duration,
    /// A claim expired this long ago is anyone's (its claimer is taken for dead).
    pub grace: Duration,
    /// An unclaimed row this old is anyone's (its shard is not running).
    pub orphan_after: Duration,
}

impl Default for ClaimOptions {
    fn default() -> Self {
        ClaimOptions {
            lease: Duration::from_secs(3600),
            grace: Duration::from_secs(300),
            orphan_after: Duration::from_secs(1800),
        }
    }
}

/// One claimed row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    /// The infohash to fetch.
    pub info_hash: InfoHash,
    /// Its owner shard (another one's when this is a takeover).
    pub shard: i16,
    /// Claims so far, this one included.
    pub attempts: i32,
    /// The lease's end (server clock, Unix s).
    pub lease_until: i64,
    /// Seconds since the row was first offered (server clock).
    pub age: i64,
}

/// Queue counters of one connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueTotals {
    /// Infohashes offered (before deduplication).
    pub offered: u64,
    /// Of those, the rows inserted (new to the queue).
    pub inserted: u64,
    /// Rows claimed.
    pub claimed: u64,
    /// Of those, other shards' rows taken over.
    pub taken_over: u64,
    /// Rows completed.
    pub completed: u64,
    /// Rows released.
    pub released: u64,
    /// Done rows deleted ([`Queue::prune_done`]).
    pub pruned: u64,
}

/// A connection to the shared queue.
pub struct Queue {
    client: Client,
    name: String,
    clock: Option<i64>,
    totals: QueueTotals,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("name", &self.name).finish()
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

const NOW: &str = "coalesce($1::bigint, extract(epoch FROM clock_timestamp())::bigint)";

impl Queue {
    /// Connects (migrating the schema, as [`crate::PgStore::connect`]); `name`
    /// identifies this crawler in `offered_by` and `claimed_by` (e.g. host and
    /// shard).
    pub fn connect(url: &str, name: &str) -> Result<Queue> {
        let mut client = Client::connect(url, NoTls).map_err(PgError::db("connecting"))?;
        migrate(&mut client)?;
        Ok(Queue {
            client,
            name: name.to_owned(),
            clock: None,
            totals: QueueTotals::default(),
        })
    }

    /// Fixes the clock (Unix s) for tests; `None` uses the server's.
    #[doc(hidden)]
    pub fn set_clock(&mut self, now: Option<i64>) {
        self.clock = now;
    }

    /// This connection's counters.
    pub fn totals(&self) -> &QueueTotals {
        &self.totals
    }

    /// This crawler's name in the queue.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Offers infohashes owned by other shards (`(infohash, owner shard)`).
    /// Idempotent; returns the rows inserted.
    pub fn offer(&mut self, items: &[(InfoHash, u16)]) -> Result<u64> {
        let mut rows: Vec<(InfoHash, i16)> = items
            .iter()
            .map(|(ih, s)| (*ih, i16::try_from(*s).unwrap_or(i16::MAX)))
            .collect();
        rows.sort();
        rows.dedup_by(|a, b| a.0 == b.0);
        self.totals.offered += items.len() as u64;
        if rows.is_empty() {
            return Ok(0);
        }
        let ihs: Vec<&[u8]> = rows.iter().map(|r| &r.0[..]).collect();
        let shards: Vec<i16> = rows.iter().map(|r| r.1).collect();
        let n = self
            .client
            .execute(
                &format!(
                    "INSERT INTO crawl_queue (infohash, shard, discovered_at, offered_by)
                     SELECT u.ih, u.shard, {NOW}, $4
                     FROM unnest($2::bytea[], $3::smallint[]) WITH ORDINALITY
                          AS u(ih, shard, ord)
                     WHERE NOT EXISTS (SELECT 1 FROM torrents t WHERE t.infohash = u.ih)
                     ORDER BY u.ord
                     ON CONFLICT (infohash) DO NOTHING"
                ),
                &[&self.clock, &ihs, &shards, &self.name],
            )
            .map_err(PgError::db("offering to the queue"))?;
        self.totals.inserted += n;
        Ok(n)
    }

    /// Claims up to `n` rows for `shard`: its own first, then others' taken over
    /// (see the module doc).
    pub fn claim(&mut self, shard: u16, n: usize, opts: &ClaimOptions) -> Result<Vec<Claimed>> {
        let shard = i16::try_from(shard).unwrap_or(i16::MAX);
        let (clock, name) = (self.clock, self.name.clone());
        let (lease, grace, orphan) = (secs(opts.lease), secs(opts.grace), secs(opts.orphan_after));
        let mut tx = self
            .client
            .transaction()
            .map_err(PgError::db("starting a claim"))?;
        let mut out = Vec::new();
        // Own work: unclaimed (or released and due again).
        let own = format!(
            "WITH c AS (SELECT {NOW} AS now),
                  picked AS (
                SELECT q.infohash FROM crawl_queue q, c
                WHERE NOT q.done AND q.shard = $2 AND q.claimed_by IS NULL
                  AND (q.lease_until IS NULL OR q.lease_until <= c.now)
                ORDER BY q.discovered_at, q.infohash
                LIMIT $3
                FOR UPDATE OF q SKIP LOCKED)
             UPDATE crawl_queue q
             SET claimed_by = $4, lease_until = c.now + $5, attempts = q.attempts + 1
             FROM picked, c
             WHERE q.infohash = picked.infohash
             RETURNING q.infohash, q.shard, q.attempts, q.lease_until,
                 c.now - q.discovered_at"
        );
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        for r in tx
            .query(&own, &[&clock, &shard, &limit, &name, &lease])
            .map_err(PgError::db("claiming own work"))?
        {
            out.push(claimed(&r)?);
        }
        let own_n = out.len();
        if out.len() < n {
            // Takeover: claims expired `grace` ago, orphans unclaimed `orphan_after`.
            let other = format!(
                "WITH c AS (SELECT {NOW} AS now),
                      picked AS (
                    SELECT q.infohash FROM crawl_queue q, c
                    WHERE NOT q.done AND q.lease_until IS NOT NULL
                      AND q.lease_until < c.now - $2 AND q.claimed_by IS NOT NULL
                    UNION
                    SELECT q.infohash FROM crawl_queue q, c
                    WHERE NOT q.done AND q.claimed_by IS NULL AND q.shard <> $6
                      AND coalesce(q.lease_until, q.discovered_at) < c.now - $7
                    ),
                      locked AS (
                    SELECT q.infohash FROM crawl_queue q JOIN picked USING (infohash)
                    ORDER BY q.discovered_at, q.infohash
                    LIMIT $3
                    FOR UPDATE OF q SKIP LOCKED)
                 UPDATE crawl_queue q
                 SET claimed_by = $4, lease_until = c.now + $5, attempts = q.attempts + 1
                 FROM locked, c
                 WHERE q.infohash = locked.infohash
                 RETURNING q.infohash, q.shard, q.attempts, q.lease_until,
                 c.now - q.discovered_at"
            );
            let rest = i64::try_from(n - out.len()).unwrap_or(i64::MAX);
            for r in tx
                .query(
                    &other,
                    &[&clock, &grace, &rest, &name, &lease, &shard, &orphan],
                )
                .map_err(PgError::db("taking over expired work"))?
            {
                out.push(claimed(&r)?);
            }
        }
        tx.commit().map_err(PgError::db("committing a claim"))?;
        self.totals.claimed += out.len() as u64;
        self.totals.taken_over += (out.len() - own_n) as u64;
        Ok(out)
    }

    /// Marks rows done (fetched, or given up). Only this claimer's rows.
    pub fn complete(&mut self, ihs: &[InfoHash]) -> Result<u64> {
        let ihs: Vec<&[u8]> = ihs.iter().map(|ih| &ih[..]).collect();
        let n = self
            .client
            .execute(
                "UPDATE crawl_queue SET done = true
                 WHERE infohash = ANY($1) AND claimed_by = $2 AND NOT done",
                &[&ihs, &self.name],
            )
            .map_err(PgError::db("completing queue rows"))?;
        self.totals.completed += n;
        Ok(n)
    }

    /// Gives rows back, due again `retry_after` from now. Only this claimer's rows.
    pub fn release(&mut self, ihs: &[InfoHash], retry_after: Duration) -> Result<u64> {
        let ihs: Vec<&[u8]> = ihs.iter().map(|ih| &ih[..]).collect();
        let n = self
            .client
            .execute(
                &format!(
                    "UPDATE crawl_queue SET claimed_by = NULL, lease_until = {NOW} + $4
                     WHERE infohash = ANY($2) AND claimed_by = $3 AND NOT done"
                ),
                &[&self.clock, &ihs, &self.name, &secs(retry_after)],
            )
            .map_err(PgError::db("releasing queue rows"))?;
        self.totals.released += n;
        Ok(n)
    }

    /// Deletes up to `limit` done rows whose lease ended `keep` ago or more, and
    /// returns how many: a fleet's queue holds pending work, not its history. A
    /// pruned infohash offered again is checked against `torrents` like any
    /// offer (a given-up one comes back as new work). Rows other claimers are
    /// locking are skipped.
    pub fn prune_done(&mut self, keep: Duration, limit: i64) -> Result<u64> {
        let n = self
            .client
            .execute(
                &format!(
                    "DELETE FROM crawl_queue WHERE infohash IN (
                         SELECT infohash FROM crawl_queue
                         WHERE done AND lease_until <= {NOW} - $2
                         LIMIT $3 FOR UPDATE SKIP LOCKED)"
                ),
                &[&self.clock, &secs(keep), &limit.max(0)],
            )
            .map_err(PgError::db("pruning done queue rows"))?;
        self.totals.pruned += n;
        Ok(n)
    }

    /// Which of `ihs` the shared store holds already (`torrents`).
    pub fn stored(&mut self, ihs: &[InfoHash]) -> Result<Vec<InfoHash>> {
        let keys: Vec<&[u8]> = ihs.iter().map(|ih| &ih[..]).collect();
        let rows = self
            .client
            .query(
                "SELECT infohash FROM torrents WHERE infohash = ANY($1)",
                &[&keys],
            )
            .map_err(PgError::db("looking up stored torrents"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let b: &[u8] = r.get(0);
            if let Ok(ih) = InfoHash::try_from(b) {
                out.push(ih);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Whether the shared store holds `ih`.
    pub fn is_stored(&mut self, ih: &InfoHash) -> Result<bool> {
        Ok(!self.stored(std::slice::from_ref(ih))?.is_empty())
    }

    /// Rows not done, and of those the ones claimed (a gauge for `/metrics`).
    pub fn pending(&mut self) -> Result<(u64, u64)> {
        let r = self
            .client
            .query_one(
                "SELECT count(*), count(claimed_by) FROM crawl_queue WHERE NOT done",
                &[],
            )
            .map_err(PgError::db("counting the queue"))?;
        let (a, b): (i64, i64) = (r.get(0), r.get(1));
        Ok((a.max(0) as u64, b.max(0) as u64))
    }

    /// Whether the connection is lost (the server went away): make a new one.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// The connection, for tests.
    #[doc(hidden)]
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

fn claimed(r: &postgres::Row) -> Result<Claimed> {
    let b: &[u8] = r.get(0);
    let info_hash = InfoHash::try_from(b)
        .map_err(|_| PgError::InvalidInput("a queue row's infohash is not 20 bytes".into()))?;
    Ok(Claimed {
        info_hash,
        shard: r.get(1),
        attempts: r.get(2),
        lease_until: r.get(3),
        age: r.get(4),
    })
}
