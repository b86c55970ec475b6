//! Schema 6 → 7, the seeders order: `by_seeders` filled from `columns` (see
//! `columns`), in the upgrade's one write transaction. (From schemas 2 to 5 the
//! `columns` fill writes it too.)

use heed::RwTxn;

use super::{columns, Dbs, Result};

/// Fills `by_seeders` from every `columns` entry with known seeders; returns how
/// many entries were written.
pub(super) fn upgrade(txn: &mut RwTxn, dbs: &Dbs) -> Result<u64> {
    columns::rebuild_seeders(txn, dbs)
}
