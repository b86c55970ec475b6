//! Schema 5 → 6, search's column table: `columns` filled from `torrents` (see
//! `columns`), in the upgrade's one write transaction.

use heed::RwTxn;

use super::{columns, Dbs, Result};

/// Fills `columns` from every stored record; returns how many entries were written.
pub(super) fn upgrade(txn: &mut RwTxn, dbs: &Dbs) -> Result<u64> {
    columns::rebuild(txn, dbs)
}
