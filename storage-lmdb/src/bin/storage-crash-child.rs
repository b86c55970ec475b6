//! Child process for the crash-safety test: writes batches of synthetic torrents
//! forever and prints each batch number once the batch is durably committed.
//!
//! Usage: `storage-crash-child <db dir> <seed> <first batch> [initial map size]`

use std::io::Write;

use magnetar_storage::synth::Synth;
use magnetar_storage::{Op, Sources, Store, StoreOptions, WriterConfig};

/// Torrents in one batch of the child.
pub const PER_BATCH: u64 = 300;

fn main() {
    if let Err(e) = run() {
        eprintln!("storage-crash-child: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: storage-crash-child <db dir> <seed> <first batch> [map size]".into());
    }
    let seed: u64 = args[2].parse()?;
    let first: u64 = args[3].parse()?;
    let mut opts = StoreOptions::new(&args[1]);
    // Merge `ids_delta` into `ids` every few batches, so kills also land in merges.
    opts.ids_delta_max = Some(700);
    if let Some(m) = args.get(4) {
        opts.initial_map_size = m.parse()?;
    }
    let store = Store::open(opts)?;
    let writer = store.writer(WriterConfig {
        max_batch: 1000,
        ..WriterConfig::default()
    })?;
    let out = std::io::stdout();
    for b in first.. {
        let mut synth = Synth::new(seed ^ b.wrapping_mul(0x9e37_79b9));
        for i in 0..PER_BATCH {
            let t = synth.torrent(1_700_000_000 + b * 1000 + i, i % 3 == 0);
            writer.send(Op::Torrent(Box::new(t.clone())))?;
            if i % 10 == 0 {
                // A repeat and a sighting: idempotency under crashes.
                writer.send(Op::Torrent(Box::new(t.clone())))?;
                writer.send(Op::Seen {
                    infohash: t.infohash,
                    at: t.discovered_at + 5,
                    sources: Sources::ANNOUNCE,
                    seeders: Some(3),
                    leechers: None,
                })?;
            }
        }
        writer.flush()?;
        let mut o = out.lock();
        writeln!(o, "{b}")?;
        o.flush()?;
    }
    Ok(())
}
