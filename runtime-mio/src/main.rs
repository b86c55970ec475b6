//! The `magnetar` binary.

use clap::{Parser, Subcommand};

/// magnetar: a BitTorrent Mainline DHT crawler and torrent-metadata indexer.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Crawl the DHT and index the torrents found.
    Crawl,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Crawl => {
            eprintln!("magnetar crawl: not yet implemented (see the runtime-mio issue)");
            std::process::ExitCode::from(2)
        }
    }
}
