//! Versioned schema migrations.
//!
//! `schema_migrations` holds one row per applied migration (version, name, time).
//! Each migration runs in a transaction of its own that first takes a
//! transaction-scoped advisory lock, so crawlers starting at once migrate one at a
//! time and each migration is applied exactly once (the others find it done). A
//! database whose newest migration is above [`SCHEMA_VERSION`] is refused
//! ([`PgError::SchemaTooNew`]): an older build must not write a schema it does not
//! know. Migrations are never edited once released; a change is a new migration.

use postgres::Client;

use crate::error::{PgError, Result};

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = 7;

/// Advisory lock key of migrations ("magnetar" in ASCII, truncated to 63 bits).
const MIGRATION_LOCK: i64 = 0x6d61_676e_6574_6172 & i64::MAX;

/// A migration: its version, a name, and the SQL run in its transaction.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in version order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "torrents, files, info dicts, full-text search",
        sql: V1,
    },
    Migration {
        version: 2,
        name: "peers, nodes, sessions, requests, tombstones, hidden, facets",
        sql: V2,
    },
    Migration {
        version: 3,
        name: "the fleet's shared work queue with leases",
        sql: crate::queue::V3,
    },
    Migration {
        version: 4,
        name: "raw bytes of names, sources and paths holding NUL; delete trigger for foreign keys",
        sql: V4,
    },
    Migration {
        version: 5,
        name: "node ids kept per host",
        sql: crate::identities::V5,
    },
    Migration {
        version: 6,
        name: "indexes for the seeders (unknown last) and file-count orders",
        sql: V6,
    },
    Migration {
        version: 7,
        name: "index of done queue rows by lease end, for pruning",
        sql: crate::queue::V7,
    },
];

/// Schema 1. Integers the LMDB record holds as u64/u32 are `bigint` (sizes and
/// times above 2^63 − 1 are refused by the writer); `kind` is 1 v1, 2 v2, 3 hybrid.
///
/// `search` is the full-text document, maintained by the writer: the terms of the
/// name (weight A) and of the file paths (weight B) from the same tokenizer as the
/// LMDB store (`magnetar_storage::torrent_terms`: NFKD accent folding, case folding,
/// CJK and other space-less scripts as bigrams), with positions (one gap between
/// the name and each path) so that `<->` phrase queries stay inside one text. It is
/// not `to_tsvector(...)`: PostgreSQL's parser splits `x86_64` or `22.04`
/// differently and has no bigrams, so results would differ from the LMDB store's.
/// Prefixes are tsquery `:*` prefix matches on the GIN index. `unaccent` and
/// `pg_trgm` give SQL users the same folding (`magnetar_fold(name)`) and a trigram
/// index for substring matches on names (`magnetar_fold(name) LIKE '%…%'`); the
/// query language does not use them yet.
const V1: &str = r#"
CREATE EXTENSION IF NOT EXISTS unaccent;
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE FUNCTION magnetar_fold(text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT lower(unaccent('unaccent'::regdictionary, $1)) $$;

-- Whether counts (new_s, new_l measured at new_at) replace the stored ones: the
-- rule of the LMDB store's merge_scrape (undated counts are older than any dated).
CREATE FUNCTION magnetar_counts_newer(new_s bigint, new_l bigint, new_at bigint,
                                      old_s bigint, old_l bigint, old_at bigint)
    RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE
        WHEN new_s IS NULL AND new_l IS NULL THEN false
        WHEN new_at IS NOT NULL AND old_at IS NOT NULL THEN new_at >= old_at
        WHEN new_at IS NOT NULL THEN true
        WHEN old_at IS NOT NULL THEN old_s IS NULL AND old_l IS NULL
        ELSE true END $$;

-- Doc ids: given in discovery order within a batch (as the LMDB store's), the
-- tie-break of every order.
CREATE SEQUENCE torrent_ids AS bigint;

CREATE TABLE torrents (
    infohash      bytea    PRIMARY KEY CHECK (octet_length(infohash) = 20),
    id            bigint   NOT NULL UNIQUE,
    kind          smallint NOT NULL CHECK (kind IN (1, 2, 3)),
    v2            bytea    CHECK (v2 IS NULL OR octet_length(v2) = 32),
    name          text     NOT NULL,
    total_size    bigint   NOT NULL CHECK (total_size >= 0),
    piece_length  bigint   NOT NULL CHECK (piece_length >= 0),
    piece_count   bigint   NOT NULL CHECK (piece_count >= 0),
    file_count    bigint   NOT NULL CHECK (file_count >= 0),
    private       boolean  NOT NULL,
    source        text,
    discovered_at bigint   NOT NULL,
    last_seen_at  bigint   NOT NULL,
    sources       smallint NOT NULL,
    seeders       bigint,
    leechers      bigint,
    scraped_at    bigint,
    has_info      boolean  NOT NULL,
    search        tsvector NOT NULL
);
CREATE INDEX torrents_search ON torrents USING gin (search);
CREATE INDEX torrents_name_trgm ON torrents USING gin (magnetar_fold(name) gin_trgm_ops);
CREATE INDEX torrents_v2 ON torrents (substring(v2 FROM 1 FOR 20)) WHERE v2 IS NOT NULL;
CREATE INDEX torrents_discovered ON torrents (discovered_at, id);
CREATE INDEX torrents_size ON torrents (total_size, id);
CREATE INDEX torrents_seeders ON torrents (seeders, id);

CREATE TABLE files (
    torrent_id bigint  NOT NULL REFERENCES torrents (id) ON DELETE CASCADE,
    idx        integer NOT NULL,
    path       text    NOT NULL,
    size       bigint  NOT NULL CHECK (size >= 0),
    PRIMARY KEY (torrent_id, idx)
);

CREATE TABLE info (
    torrent_id bigint PRIMARY KEY REFERENCES torrents (id) ON DELETE CASCADE,
    dict       bytea  NOT NULL
);
-- Info dicts are mostly SHA-1 piece hashes: incompressible, so not compressed
-- (TOAST still moves them out of line).
ALTER TABLE info ALTER COLUMN dict SET STORAGE EXTERNAL;
"#;

/// Schema 2: everything else the LMDB store keeps (issue 21), with its layouts'
/// meaning (see `magnetar-storage`'s crate doc) as columns.
///
/// - `peers`, `nodes`, `sessions`: the latest record of a key wins (as LMDB's
///   `put`). u32 counters are `bigint`; `rtt_ms` NULL is unknown; `status` codes
///   are the LMDB codec's (peers: 0 good, 1 unknown, 2 bad, 3 blacklisted; nodes:
///   0 good, 1 questionable, 2 bad); `queries`/`responses` are the six
///   `QueryCounts` in field order (ping, find_node, get_peers, announce_peer,
///   sample_infohashes, other).
/// - `requests`: appended under increasing ids (an identity column), the oldest
///   deleted past `PgOptions::max_requests` (LMDB's `max_requests`); `outcome` 0
///   success, 1 failure.
/// - `tombstones`, `hidden`: the filter marks, keyed by infohash (a mark may
///   precede its torrent); labels cut to 200 bytes as in LMDB.
/// - `facets`: the classifier's facets of each torrent (written with it, from
///   `magnetar_core::classify` as the LMDB writer calls it): kind code, Torznab
///   category and the attributes (codes as `magnetar_core::classify`'s `code()`).
/// - `facet_keys`: (key, torrent) for each of a torrent's facet index keys
///   (`Facets::index_keys`: `tag << 32 | value`, LMDB's `facet_terms` keys as
///   numbers), so that a category or attribute filter is a union of key ranges on
///   the primary key's B-tree, as LMDB answers it from `facet_terms`.
const V2: &str = r#"
CREATE TABLE peers (
    ip          inet     NOT NULL,
    port        integer  NOT NULL CHECK (port BETWEEN 0 AND 65535),
    client      text     NOT NULL,
    attempts    bigint   NOT NULL,
    successes   bigint   NOT NULL,
    failures    bigint   NOT NULL,
    rtt_ms      bigint,
    ut_metadata boolean,
    last_error  text     NOT NULL,
    status      smallint NOT NULL,
    last_seen   bigint   NOT NULL,
    PRIMARY KEY (ip, port)
);

CREATE TABLE nodes (
    id        bytea    PRIMARY KEY CHECK (octet_length(id) = 20),
    ip        inet     NOT NULL,
    port      integer  NOT NULL CHECK (port BETWEEN 0 AND 65535),
    rtt_ms    bigint,
    queries   bigint[] NOT NULL CHECK (cardinality(queries) = 6),
    responses bigint[] NOT NULL CHECK (cardinality(responses) = 6),
    status    smallint NOT NULL,
    last_seen bigint   NOT NULL
);
-- saved_nodes: good first, then questionable, newest first.
CREATE INDEX nodes_bootstrap ON nodes ((status <> 0), last_seen DESC, id) WHERE status <> 2;

CREATE TABLE sessions (
    id                     bigint PRIMARY KEY,
    started_at             bigint NOT NULL,
    ended_at               bigint,
    infohashes_discovered  bigint NOT NULL,
    metadata_fetched       bigint NOT NULL,
    metadata_failed        bigint NOT NULL,
    torrents_new           bigint NOT NULL,
    dht_queries_sent       bigint NOT NULL,
    dht_responses_received bigint NOT NULL,
    peak_rss_bytes         bigint NOT NULL,
    cpu_ms                 bigint NOT NULL
);

CREATE TABLE requests (
    id            bigint   GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    infohash      bytea    NOT NULL CHECK (octet_length(infohash) = 20),
    ip            inet     NOT NULL,
    port          integer  NOT NULL,
    started_at_ms bigint   NOT NULL,
    duration_ms   bigint   NOT NULL,
    outcome       smallint NOT NULL CHECK (outcome IN (0, 1)),
    reason        text     NOT NULL,
    pieces        bigint   NOT NULL,
    client        text     NOT NULL,
    encryption    text     NOT NULL,
    transport     text     NOT NULL
);

CREATE TABLE tombstones (
    infohash bytea  PRIMARY KEY CHECK (octet_length(infohash) = 20),
    at       bigint NOT NULL,
    label    text   NOT NULL
);

CREATE TABLE hidden (
    infohash bytea  PRIMARY KEY CHECK (octet_length(infohash) = 20),
    at       bigint NOT NULL,
    label    text   NOT NULL
);

CREATE TABLE facets (
    torrent_id  bigint   PRIMARY KEY REFERENCES torrents (id) ON DELETE CASCADE,
    kind        smallint NOT NULL,
    category    integer  NOT NULL,
    title       text,
    year        integer,
    season_lo   integer,
    season_hi   integer,
    episode_lo  bigint,
    episode_hi  bigint,
    date_y      integer,
    date_m      smallint,
    date_d      smallint,
    resolution  smallint,
    source      smallint,
    video_codec smallint,
    audio       smallint,
    languages   bigint   NOT NULL
);
CREATE INDEX facets_category ON facets (category);

CREATE TABLE facet_keys (
    key        bigint NOT NULL,
    torrent_id bigint NOT NULL REFERENCES torrents (id) ON DELETE CASCADE,
    PRIMARY KEY (key, torrent_id)
);
CREATE INDEX facet_keys_torrent ON facet_keys (torrent_id);

-- The torrent an infohash names: its own, else the hybrid whose truncated v2 hash
-- it is (as the LMDB store's ids, then ids_v2).
CREATE FUNCTION magnetar_torrent_id(ih bytea) RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(
        (SELECT id FROM torrents WHERE infohash = ih),
        (SELECT id FROM torrents WHERE v2 IS NOT NULL AND kind = 3
             AND substring(v2 FROM 1 FOR 20) = ih ORDER BY id LIMIT 1)) $$;

-- A batch's advisory locks on infohash buckets, in the order given (exclusive where
-- `excl`, else shared); see the writer's `records` module.
CREATE FUNCTION magnetar_lock_buckets(keys bigint[], excl boolean[]) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
        IF excl[i] THEN
            PERFORM pg_advisory_xact_lock(keys[i]);
        ELSE
            PERFORM pg_advisory_xact_lock_shared(keys[i]);
        END IF;
    END LOOP;
END $$;
"#;

/// Schema 4: lossless names, sources and paths. PostgreSQL `text` cannot hold NUL,
/// which a torrent's name, `source` or file path may contain (the LMDB store keeps
/// any valid UTF-8). The text column keeps a searchable, printable form (each NUL
/// replaced by U+FFFD); the `*_raw` column holds the exact UTF-8 bytes, and only
/// when the text had to be altered (NULL otherwise: no cost for the usual row).
/// Readers take `coalesce(raw, convert_to(text, 'UTF8'))`.
///
/// It also replaces the foreign keys of `files` and `info` (one `SELECT … FOR KEY
/// SHARE` per inserted row: about a third of a batch's upsert, BENCHMARKS.md) by a
/// statement-level trigger that keeps `ON DELETE CASCADE`'s meaning: deleting
/// torrents deletes their files and info dicts. Rows of `files` and `info` are only
/// inserted by the upsert, for the torrent rows it has just written.
const V4: &str = r#"
ALTER TABLE torrents ADD COLUMN name_raw bytea, ADD COLUMN source_raw bytea;
ALTER TABLE files ADD COLUMN path_raw bytea;

ALTER TABLE files DROP CONSTRAINT files_torrent_id_fkey;
ALTER TABLE info DROP CONSTRAINT info_torrent_id_fkey;
CREATE FUNCTION magnetar_torrents_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM files f USING gone g WHERE f.torrent_id = g.id;
    DELETE FROM info i USING gone g WHERE i.torrent_id = g.id;
    RETURN NULL;
END $$;
CREATE TRIGGER torrents_deleted AFTER DELETE ON torrents
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
    EXECUTE FUNCTION magnetar_torrents_deleted();
"#;

/// Schema 6: the seeders order with unknown counts last in both directions, and
/// the file-count order, walkable from either end (as the time and size orders
/// already are), so that a search sorted by them reads its page from the index
/// instead of sorting every match. `(seeders, id)` (schema 1) walked forward is
/// seeders ascending with unknown last; `(seeders NULLS FIRST, id)` walked
/// backward is seeders descending with unknown last.
const V6: &str = r#"
CREATE INDEX torrents_seeders_desc ON torrents (seeders NULLS FIRST, id);
CREATE INDEX torrents_files ON torrents (file_count, id);
"#;

/// Brings the database to [`SCHEMA_VERSION`]; returns the version it found before.
pub fn migrate(client: &mut Client) -> Result<i32> {
    migrate_with(client, MIGRATIONS)
}

/// [`migrate`] with a given list (tests use a longer one to play a newer build).
#[doc(hidden)]
pub fn migrate_with(client: &mut Client, migrations: &[Migration]) -> Result<i32> {
    let known = migrations.last().map_or(0, |m| m.version);
    let mut found_first = None;
    loop {
        let mut tx = client
            .transaction()
            .map_err(PgError::db("starting a migration"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(PgError::db("locking the schema for migration"))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    integer     PRIMARY KEY,
                 name       text        NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .map_err(PgError::db("creating schema_migrations"))?;
        let found: i32 = tx
            .query_one(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                &[],
            )
            .map_err(PgError::db("reading schema_migrations"))?
            .get(0);
        found_first.get_or_insert(found);
        if found > known {
            return Err(PgError::SchemaTooNew { found, known });
        }
        let Some(m) = migrations.iter().find(|m| m.version > found) else {
            tx.commit().map_err(PgError::db("ending the migration"))?;
            return Ok(found_first.unwrap_or(found));
        };
        tx.batch_execute(m.sql)
            .map_err(PgError::db("running a migration"))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .map_err(PgError::db("recording a migration"))?;
        tx.commit().map_err(PgError::db("committing a migration"))?;
    }
}

/// The newest migration applied (0 for an empty database).
pub fn schema_version(client: &mut Client) -> Result<i32> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .map_err(PgError::db("looking for schema_migrations"))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .map_err(PgError::db("reading schema_migrations"))?
        .get(0))
}
