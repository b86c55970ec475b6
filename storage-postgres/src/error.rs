//! Errors of the PostgreSQL store.

use std::fmt;

/// What went wrong, with enough context to act on it.
#[derive(Debug)]
pub enum PgError {
    /// The server refused or failed a statement, or the connection broke.
    Db {
        /// What the store was doing.
        context: &'static str,
        /// The client's error (its SQLSTATE, if the server sent one, is in it).
        source: postgres::Error,
    },
    /// The database holds a schema newer than this build knows: refused rather
    /// than written with the wrong assumptions.
    SchemaTooNew {
        /// The newest migration applied to the database.
        found: i32,
        /// The newest migration this build has.
        known: i32,
    },
    /// A read-only open found no magnetar schema in the database (read commands
    /// never create one).
    NoSchema,
    /// A read-only open found an older schema than this build reads (read
    /// commands never migrate).
    SchemaTooOld {
        /// The newest migration applied to the database.
        found: i32,
        /// The newest migration this build has.
        known: i32,
    },
    /// A query this store does not accept (same rules and messages as the LMDB
    /// store's `StoreError::InvalidQuery`).
    InvalidQuery(String),
    /// A feature the store does not have yet.
    Unsupported(String),
    /// A value that cannot be stored (e.g. a size above 2^63 − 1).
    InvalidInput(String),
    /// The test server could not be started or stopped (see [`crate::testing`]), or
    /// the writer thread stopped (see [`crate::writer`]).
    Server(String),
}

impl PgError {
    pub(crate) fn db(context: &'static str) -> impl FnOnce(postgres::Error) -> PgError {
        move |source| PgError::Db { context, source }
    }

    /// The SQLSTATE code of a server error, if this is one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            PgError::Db { source, .. } => source.code().map(|c| c.code()),
            _ => None,
        }
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgError::Db { context, source } => {
                // The server's message and detail, not just "db error".
                if let Some(e) = source.as_db_error() {
                    write!(f, "{context}: {} ({})", e.message(), e.code().code())?;
                    if let Some(d) = e.detail() {
                        write!(f, ": {d}")?;
                    }
                    Ok(())
                } else {
                    write!(f, "{context}: {source}")
                }
            }
            PgError::SchemaTooNew { found, known } => write!(
                f,
                "the database has schema version {found}, newer than this build knows \
                 ({known}): run a newer magnetar against it"
            ),
            PgError::NoSchema => write!(
                f,
                "the database holds no magnetar tables: point the command at the \
                 crawlers' database, or create them with `magnetar crawl --store URL` \
                 or `magnetar db copy` (reading commands never create them)"
            ),
            PgError::SchemaTooOld { found, known } => write!(
                f,
                "the database has schema version {found} and must be upgraded to \
                 {known} before this build can read it: run `magnetar crawl --store URL` \
                 of this build once (reading commands never change the schema)"
            ),
            PgError::InvalidQuery(m) => write!(f, "invalid search query: {m}"),
            PgError::Unsupported(m) => write!(f, "not supported: {m}"),
            PgError::InvalidInput(m) => write!(f, "invalid input: {m}"),
            PgError::Server(m) => write!(f, "PostgreSQL server: {m}"),
        }
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PgError::Db { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, PgError>;
