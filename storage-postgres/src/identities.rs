//! Node ids kept per host (schema 5): a crawler on PostgreSQL reuses its DHT
//! identities' ids across runs as it does on LMDB (core's identity logic decides
//! whether a kept id is still valid). Rows are keyed by (host, key): `host` is the
//! crawler's `--node-name` (default: the host name), so the crawlers of a fleet
//! sharing one database keep their ids apart; `key` is the identity's name
//! (`node_id/IP#rank`, as in the LMDB store).

use std::sync::Mutex;

use postgres::{Client, NoTls};

use crate::error::{PgError, Result};
use crate::migrate::migrate;

/// Schema 5.
pub(crate) const V5: &str = r#"
CREATE TABLE node_ids (
    host        text   NOT NULL,
    key         text   NOT NULL,
    node_id     bytea  NOT NULL,
    updated_at  bigint NOT NULL,
    PRIMARY KEY (host, key)
);
"#;

/// The node ids of one host. A lost connection is made again at the next call.
pub struct PgIdentities {
    url: String,
    host: String,
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for PgIdentities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgIdentities")
            .field("host", &self.host)
            .finish()
    }
}

impl PgIdentities {
    /// Connects to `url` (migrating the schema) for `host`'s ids.
    pub fn connect(url: &str, host: &str) -> Result<PgIdentities> {
        let mut client = Client::connect(url, NoTls).map_err(PgError::db("connecting"))?;
        migrate(&mut client)?;
        Ok(PgIdentities {
            url: url.to_owned(),
            host: host.to_owned(),
            client: Mutex::new(Some(client)),
        })
    }

    /// The host name the ids are kept under.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn with<T>(&self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let mut g = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if g.as_ref().is_some_and(Client::is_closed) {
            *g = None;
        }
        if g.is_none() {
            *g = Some(Client::connect(&self.url, NoTls).map_err(PgError::db("connecting"))?);
        }
        match g.as_mut() {
            Some(c) => f(c),
            None => Err(PgError::Server("not connected".into())),
        }
    }

    /// The id kept under `key` for this host, if any.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let host = self.host.clone();
        self.with(|c| {
            let row = c
                .query_opt(
                    "SELECT node_id FROM node_ids WHERE host = $1 AND key = $2",
                    &[&host, &key],
                )
                .map_err(PgError::db("reading a node id"))?;
            Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
        })
    }

    /// Keeps `id` under `key` for this host (replacing the one kept).
    pub fn save(&self, key: &str, id: &[u8]) -> Result<()> {
        let host = self.host.clone();
        self.with(|c| {
            c.execute(
                "INSERT INTO node_ids (host, key, node_id, updated_at)
                 VALUES ($1, $2, $3, extract(epoch FROM clock_timestamp())::bigint)
                 ON CONFLICT (host, key) DO UPDATE
                 SET node_id = excluded.node_id, updated_at = excluded.updated_at",
                &[&host, &key, &id],
            )
            .map_err(PgError::db("saving a node id"))?;
            Ok(())
        })
    }
}
