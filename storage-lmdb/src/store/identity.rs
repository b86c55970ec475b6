//! Small records an application keeps about its own identity between runs (for
//! `magnetar crawl`: each DHT identity's node id), in `meta` under keys that
//! start with `identity:`. Opaque bytes: storage knows nothing of the DHT.

use super::{lmdb, Result, Store};

/// Keys are namespaced so they never meet the counters kept in `meta`.
const PREFIX: &str = "identity:";
/// Cap on a value (a node id is 20 bytes).
const MAX_VALUE: usize = 256;

fn key(name: &str) -> Vec<u8> {
    let mut k = PREFIX.as_bytes().to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

impl Store {
    /// The bytes saved under `name` by [`Store::save_identity`], if any.
    pub fn identity(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let k = key(name);
        self.read(|txn, dbs| {
            Ok(dbs
                .meta
                .get(txn, &k)
                .map_err(lmdb("reading an identity record"))?
                .map(<[u8]>::to_vec))
        })
    }

    /// Saves `value` (at most 256 bytes; longer values are cut) under `name`, in
    /// its own small write transaction.
    pub fn save_identity(&self, name: &str, value: &[u8]) -> Result<()> {
        let k = key(name);
        let v = value.get(..MAX_VALUE).unwrap_or(value);
        self.write(|txn, dbs| {
            dbs.meta
                .put(txn, &k, v)
                .map_err(lmdb("writing an identity record"))
        })
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Store, StoreOptions};

    #[test]
    fn identity_records_round_trip_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(StoreOptions::new(dir.path())).unwrap();
            assert_eq!(s.identity("0.0.0.0#0").unwrap(), None);
            s.save_identity("0.0.0.0#0", &[7; 20]).unwrap();
            s.save_identity("::#0", &[9; 20]).unwrap();
            s.save_identity("0.0.0.0#0", &[8; 20]).unwrap();
        }
        crate::wait_closed(dir.path());
        let s = Store::open(StoreOptions::new(dir.path())).unwrap();
        assert_eq!(s.identity("0.0.0.0#0").unwrap(), Some(vec![8; 20]));
        assert_eq!(s.identity("::#0").unwrap(), Some(vec![9; 20]));
        // The store's own checks still hold with the records in `meta`.
        assert_eq!(s.integrity_check().unwrap().problem_count, 0);
    }
}
