//! The one error type of the crate.

use std::fmt;
use std::path::PathBuf;

/// Every public function of this crate returns `Result<_, StoreError>`.
#[derive(Debug)]
pub enum StoreError {
    /// An LMDB or heed error, with what we were doing.
    Lmdb {
        context: &'static str,
        source: heed::Error,
    },
    /// A file-system error, with the path involved.
    Io {
        context: String,
        source: std::io::Error,
    },
    /// The database was written by another schema version and cannot be migrated.
    SchemaVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// A stored record could not be decoded. Nothing was changed.
    Corrupt {
        db: &'static str,
        key: String,
        what: &'static str,
    },
    /// The environment is already open in this process (LMDB allows one open per process).
    AlreadyOpen { path: PathBuf },
    /// The map could not be grown any further.
    MapFull { map_size: usize, limit: usize },
    /// The writer thread failed or stopped; the message is the original error.
    Writer { message: String },
    /// Bad input given by the caller (never remote data: that is a counted skip).
    InvalidInput(String),
    /// No data directory could be determined (neither XDG_DATA_HOME nor HOME set).
    NoDataDir,
    /// Error from the magnetico SQLite importer.
    Magnetico(String),
    /// A search query the store refuses (too long, too many terms, an offset past
    /// the cap): the message says what and the limit.
    InvalidQuery(String),
    /// A feature asked for that this store does not have yet (e.g. category
    /// filters before the classifier's facets exist).
    Unsupported(String),
    /// An error of another store behind the common interface ([`crate::backend`]),
    /// e.g. PostgreSQL's: the message says which store and what it was doing.
    Backend(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Lmdb { context, source } => {
                write!(f, "LMDB error while {context}: {source}")
            }
            StoreError::Io { context, source } => write!(f, "I/O error while {context}: {source}"),
            StoreError::SchemaVersion {
                path,
                found,
                supported,
            } => write!(
                f,
                "the database at {} has schema version {found}, but this build of magnetar \
                 supports schema version {supported} and has no migration from {found}; \
                 open it with a matching magnetar build (export JSON lines there and import \
                 them here), or point magnetar at another directory",
                path.display()
            ),
            StoreError::Corrupt { db, key, what } => {
                write!(f, "corrupt record in `{db}` at key {key}: {what}")
            }
            StoreError::AlreadyOpen { path } => write!(
                f,
                "the database at {} is already open in this process; LMDB allows one open \
                 per process: share the existing Store (it is Clone) or close it first",
                path.display()
            ),
            StoreError::MapFull { map_size, limit } => write!(
                f,
                "the database map is full at {map_size} bytes and may not grow past the \
                 configured limit of {limit} bytes"
            ),
            StoreError::Writer { message } => write!(f, "storage writer failed: {message}"),
            StoreError::InvalidInput(m) => write!(f, "invalid input: {m}"),
            StoreError::NoDataDir => write!(
                f,
                "cannot find a data directory: set XDG_DATA_HOME or HOME, or pass a path"
            ),
            StoreError::Magnetico(m) => write!(f, "magnetico import: {m}"),
            StoreError::InvalidQuery(m) => write!(f, "invalid search query: {m}"),
            StoreError::Unsupported(m) => write!(f, "not supported: {m}"),
            StoreError::Backend(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Lmdb { source, .. } => Some(source),
            StoreError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl StoreError {
    pub(crate) fn lmdb(context: &'static str) -> impl FnOnce(heed::Error) -> StoreError {
        move |source| StoreError::Lmdb { context, source }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
        let context = context.into();
        move |source| StoreError::Io { context, source }
    }

    /// True when this is LMDB's MDB_MAP_FULL (the writer grows the map and retries).
    pub(crate) fn is_map_full(&self) -> bool {
        matches!(
            self,
            StoreError::Lmdb {
                source: heed::Error::Mdb(heed::MdbError::MapFull),
                ..
            }
        )
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// Parses 40 hex digits into an infohash.
pub fn parse_infohash_hex(s: &str) -> Result<[u8; 20], StoreError> {
    let b = s.as_bytes();
    if b.len() != 40 {
        return Err(StoreError::InvalidInput(format!(
            "infohash `{s}` is not 40 hex digits"
        )));
    }
    let mut out = [0u8; 20];
    for (i, pair) in b.chunks(2).enumerate() {
        let d = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        match (d(pair[0]), d(pair[1])) {
            (Some(h), Some(l)) => out[i] = (h << 4) | l,
            _ => {
                return Err(StoreError::InvalidInput(format!(
                    "infohash `{s}` has a non-hex digit"
                )))
            }
        }
    }
    Ok(out)
}
