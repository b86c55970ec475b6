//! Child process for the read-only open test: holds LMDB's write transaction on a
//! database (as a crawler's commit in progress does) until its stdin closes.
//!
//! Usage: `storage-hold-writer <db dir>`. Prints `holding` once the write
//! transaction is begun (the writer's lock, shared by every process, is held), then
//! waits for end of file on stdin, aborts the transaction and exits.

use std::io::{Read, Write};

use heed::EnvOpenOptions;

fn main() {
    if let Err(e) = run() {
        eprintln!("storage-hold-writer: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: storage-hold-writer <db dir>")?;
    let mut b = EnvOpenOptions::new().read_txn_without_tls();
    b.map_size(1 << 30).max_dbs(16);
    // SAFETY: one open of this environment in this process; the files are only
    // touched by LMDB.
    #[allow(unsafe_code)]
    let env = unsafe { b.open(&path)? };
    let wtxn = env.write_txn()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "holding")?;
    out.flush()?;
    let mut rest = Vec::new();
    std::io::stdin().read_to_end(&mut rest)?;
    wtxn.abort();
    Ok(())
}
