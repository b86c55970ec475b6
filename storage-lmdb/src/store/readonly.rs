//! Opening the store for reading only ([`Store::open_read_only`]).
//!
//! [`Store::open`] opens its tables in a write transaction (it creates what is
//! missing and may migrate), and LMDB has one writer at a time over every process:
//! a reader that opens that way waits for a crawler's commit in progress. This path
//! opens the environment with `MDB_RDONLY` and its tables in a read transaction, so
//! it never takes the writer's lock; it creates nothing and migrates nothing (a
//! database that needs an upgrade is refused with a message saying how to run one).
//! Every write through such a store fails (LMDB refuses a write transaction on a
//! read-only environment).

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, RwLock};

use heed::types::Bytes;
use heed::{CommitOrAbort, DatabaseFlags, EnvFlags, EnvOpenOptions};

use super::{
    is_dup_sort, lmdb, round_map, Dbs, Inner, Result, Store, StoreOptions, K_SCHEMA, MAX_DBS,
    MIGRATES_FROM, SCHEMA_VERSION, TABLES, TABLE_COUNT,
};
use crate::error::StoreError;

/// Why the read transaction that opens the tables gave up.
enum Refused {
    /// No `meta` table or no schema version in it: not a magnetar database (or one
    /// whose creation never committed).
    NotADatabase,
    /// Another schema version (`migrate`: one this build upgrades on a writing open).
    Schema { found: u32, migrate: bool },
    /// A table of this schema is missing.
    Missing(&'static str),
}

impl Store {
    /// Opens an existing store for reading only, without ever waiting for another
    /// process's write transaction (see the module doc). `opts.durability` and
    /// `opts.initial_map_size` apply as for [`Store::open`]; nothing is created.
    pub fn open_read_only(opts: StoreOptions) -> Result<Store> {
        let path = opts.path.clone();
        if !path.join("data.mdb").is_file() {
            return Err(StoreError::InvalidInput(format!(
                "no magnetar database at {}",
                path.display()
            )));
        }
        let mut b = EnvOpenOptions::new().read_txn_without_tls();
        b.map_size(round_map(opts.initial_map_size))
            .max_dbs(MAX_DBS)
            .max_readers(opts.max_readers);
        // SAFETY: MDB_RDONLY only forbids write transactions in this environment;
        // it cannot cause memory unsafety.
        #[allow(unsafe_code)]
        unsafe {
            b.flags(EnvFlags::READ_ONLY);
        }
        // SAFETY: as in `open_env`: one open per environment and process (heed's
        // registry refuses a second), and the files are only touched by LMDB.
        #[allow(unsafe_code)]
        let env = unsafe { b.open(&path) };
        let env = env.map_err(|e| match e {
            heed::Error::EnvAlreadyOpened => StoreError::AlreadyOpen { path: path.clone() },
            e => StoreError::Lmdb {
                context: "opening the environment read-only",
                source: e,
            },
        })?;
        let rtxn = env
            .read_txn()
            .map_err(lmdb("starting the opening read transaction"))?;
        let outcome = env.open_databases_and_commit(
            rtxn,
            |opener, rtxn| -> std::result::Result<_, heed::Error> {
                let open = |name: &str| {
                    let mut o = opener.database_options().types::<Bytes, Bytes>();
                    o.name(name);
                    if is_dup_sort(name) {
                        o.flags(DatabaseFlags::DUP_SORT);
                    }
                    o.open(rtxn)
                };
                // The schema first: nothing else is opened in a database of another.
                let Some(meta) = open("meta")? else {
                    return Ok(CommitOrAbort::Abort(Refused::NotADatabase));
                };
                let found = match meta.get(rtxn, K_SCHEMA)? {
                    None => return Ok(CommitOrAbort::Abort(Refused::NotADatabase)),
                    Some(v) => <[u8; 4]>::try_from(v).map_or(u32::MAX, u32::from_le_bytes),
                };
                if found != SCHEMA_VERSION {
                    let migrate = MIGRATES_FROM.contains(&found);
                    return Ok(CommitOrAbort::Abort(Refused::Schema { found, migrate }));
                }
                let mut dbs = Vec::with_capacity(TABLES.len());
                for name in TABLES {
                    match open(name)? {
                        Some(db) => dbs.push(db),
                        None => return Ok(CommitOrAbort::Abort(Refused::Missing(name))),
                    }
                }
                let arr: [_; TABLE_COUNT] = std::array::from_fn(|i| dbs[i]);
                Ok(CommitOrAbort::Commit(arr))
            },
        );
        let dbs = match outcome.map_err(lmdb("opening the databases"))? {
            CommitOrAbort::Commit(d) => d,
            CommitOrAbort::Abort(Refused::NotADatabase) => {
                return Err(StoreError::InvalidInput(format!(
                    "no magnetar database at {} (no schema version recorded)",
                    path.display()
                )))
            }
            CommitOrAbort::Abort(Refused::Schema {
                found,
                migrate: true,
            }) => {
                return Err(StoreError::InvalidInput(format!(
                    "the database at {} has schema {found} and must be upgraded to schema \
                     {SCHEMA_VERSION} before it can be read: run a command that writes it once \
                     (`magnetar db check`, or `magnetar crawl`)",
                    path.display()
                )))
            }
            CommitOrAbort::Abort(Refused::Schema { found, .. }) => {
                return Err(StoreError::SchemaVersion {
                    path,
                    found,
                    supported: SCHEMA_VERSION,
                })
            }
            CommitOrAbort::Abort(Refused::Missing(table)) => {
                return Err(StoreError::InvalidInput(format!(
                    "the database at {} has no `{table}` table",
                    path.display()
                )))
            }
        };
        Ok(Store {
            inner: Arc::new(Inner {
                env,
                dbs: Dbs::from_tables(dbs),
                gate: RwLock::new(()),
                opts,
                writer_running: AtomicBool::new(false),
                order_mode: AtomicUsize::new(0),
            }),
        })
    }
}
