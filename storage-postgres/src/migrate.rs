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
pub const SCHEMA_VERSION: i32 = 4;

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
        version: 4,
        name: "raw bytes of names, sources and paths holding NUL; delete trigger for foreign keys",
        sql: V4,
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
