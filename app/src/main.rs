//! The `magnetar` binary: the crawler (a mio event loop around the sans-IO core, or
//! the tokio driver with `--runtime tokio`)
//! and the commands that read and maintain its database.

#[cfg(test)]
mod cli_tests;
mod commands;
mod crawl;
mod dbcopy;
mod doctor;
mod filter;
// A few of its methods serve only the tests and the bench binary.
#[allow(dead_code)]
mod ingest;
mod metrics;
mod queue;
mod sink;
mod sys;
mod tokio_run;

use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use magnetar_core::routing::RoutingConfig;
use magnetar_core::{Config, IdentityConfig};

/// The public routers a fresh node bootstraps from (after any saved nodes).
const DEFAULT_ROUTERS: &[&str] = &[
    "router.bittorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "router.utorrent.com:6881",
    "dht.libtorrent.org:25401",
];

/// magnetar: a BitTorrent Mainline DHT crawler and torrent-metadata indexer.
///
/// `magnetar crawl` joins the DHT, harvests infohashes and fetches their metadata
/// into a local database; the other commands search and maintain that database.
/// Logging follows RUST_LOG (e.g. RUST_LOG=magnetar=debug).
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(
        long,
        value_enum,
        default_value = "text",
        env = "MAGNETAR_LOG_FORMAT",
        global = true
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum EncryptionArg {
    PreferPlaintext,
    PreferEncrypted,
    Require,
}

impl From<EncryptionArg> for magnetar_core::fetch::EncryptionPolicy {
    fn from(e: EncryptionArg) -> Self {
        use magnetar_core::fetch::EncryptionPolicy as P;
        match e {
            EncryptionArg::PreferPlaintext => P::PreferPlaintext,
            EncryptionArg::PreferEncrypted => P::PreferEncrypted,
            EncryptionArg::Require => P::Require,
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum DurabilityArg {
    Durable,
    NoMetaSync,
    NoSync,
}

impl From<DurabilityArg> for magnetar_storage::Durability {
    fn from(d: DurabilityArg) -> Self {
        match d {
            DurabilityArg::Durable => magnetar_storage::Durability::Durable,
            DurabilityArg::NoMetaSync => magnetar_storage::Durability::NoMetaSync,
            DurabilityArg::NoSync => magnetar_storage::Durability::NoSync,
        }
    }
}

/// `search --sort`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum SortArg {
    Relevance,
    Newest,
    Size,
    Seeders,
    Files,
}

impl From<SortArg> for magnetar_storage::SortBy {
    fn from(s: SortArg) -> Self {
        match s {
            SortArg::Relevance => magnetar_storage::SortBy::Relevance,
            SortArg::Newest => magnetar_storage::SortBy::Discovered,
            SortArg::Size => magnetar_storage::SortBy::Size,
            SortArg::Seeders => magnetar_storage::SortBy::Seeders,
            SortArg::Files => magnetar_storage::SortBy::Files,
        }
    }
}

/// `search --order`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum OrderArg {
    Asc,
    Desc,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Runtime {
    Mio,
    Tokio,
}

#[derive(Args, Debug, Clone)]
struct DbArg {
    /// Database directory (an LMDB environment).
    /// Default: $XDG_DATA_HOME/magnetar, else ~/.local/share/magnetar.
    #[arg(long, value_name = "PATH", env = "MAGNETAR_DB")]
    db: Option<PathBuf>,
    /// The store: an LMDB directory (as --db), or a PostgreSQL database given as a
    /// `postgres://` / `postgresql://` URL or a libpq `host=… dbname=…` string
    /// (crawl, serve, search, show, recent, stats, export; other commands need LMDB).
    #[arg(
        long,
        value_name = "PATH|URL",
        env = "MAGNETAR_STORE",
        hide_env_values = true
    )]
    store: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Crawl the DHT and index the torrents found (runs until SIGINT/SIGTERM or --duration).
    Crawl(Box<CrawlArgs>),
    /// Why it finds nothing: a short crawl, then a verdict per line.
    ///
    /// Crawls with the crawl's options (--duration defaults to 60 s here, and a
    /// temporary database is used unless --db is given), then reports, each line ok,
    /// warn or fail with advice: the sockets, whether unsolicited queries reach us,
    /// NAT by BEP 42 votes, the open-file limit, the conntrack table, and the
    /// metadata funnel. Exits with status 2 when a line fails.
    Doctor(Box<CrawlArgs>),
    /// Search stored torrents by words of their names and file paths (the last word
    /// may be a prefix). Query language: `"a phrase"`, `-word` to exclude,
    /// `name:word` / `path:word` to look only at names or file paths; accents and
    /// case are ignored (`epopee` finds "Épopée"); Chinese and Japanese are matched
    /// by character pairs (`語` finds "日本語").
    Search {
        /// Words to look for (joined by spaces; to exclude a word, quote the query,
        /// `'ubuntu -desktop'`, or put the words after `--`). Optional with
        /// --category or an attribute filter: every torrent that passes it.
        #[arg(required_unless_present_any = ["category", "year", "season", "episode", "resolution"], value_name = "WORDS")]
        words: Vec<String>,
        /// Most results to print.
        #[arg(long, short = 'n', default_value_t = 20, env = "MAGNETAR_SEARCH_LIMIT",
              value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
        /// Matches to skip (paging), at most 100,000.
        #[arg(long, default_value_t = 0, env = "MAGNETAR_SEARCH_OFFSET")]
        offset: usize,
        /// Sort by relevance, newest (discovery time), size, seeders or files.
        #[arg(long, value_enum, default_value_t = SortArg::Relevance, env = "MAGNETAR_SEARCH_SORT")]
        sort: SortArg,
        /// Sort direction: desc (largest, newest, most first; the default) or asc.
        #[arg(long, value_enum, default_value_t = OrderArg::Desc, env = "MAGNETAR_SEARCH_ORDER")]
        order: OrderArg,
        /// Only torrents of at least this total size: bytes, or with a unit (700MB,
        /// 1.5GiB; kB/MB/GB/TB are powers of 1000, K/M/G/T and KiB/MiB/GiB/TiB of 1024).
        #[arg(long, value_name = "SIZE", env = "MAGNETAR_SEARCH_MIN_SIZE")]
        min_size: Option<String>,
        /// Only torrents of at most this total size (units as for --min-size).
        #[arg(long, value_name = "SIZE", env = "MAGNETAR_SEARCH_MAX_SIZE")]
        max_size: Option<String>,
        /// Only torrents discovered since: Unix seconds, a UTC date or time
        /// (2026-11-01, 2026-11-01T12:00:00Z) or an age (30m, 24h, 7d).
        #[arg(long, value_name = "WHEN", env = "MAGNETAR_SEARCH_SINCE")]
        since: Option<String>,
        /// Only torrents of this category: a kind (movie, tv_episode, tv_season,
        /// music, audiobook, ebook, comic, software, game, disc_image, archive,
        /// images, adult, other), a group (movies, tv, audio, books, pc, xxx), a
        /// Torznab number (2000, 2040, ...), or several separated by commas.
        #[arg(long, env = "MAGNETAR_SEARCH_CATEGORY")]
        category: Option<String>,
        /// Only torrents of this year (or range, 1990-1999), from the name.
        #[arg(long, value_name = "YEAR", env = "MAGNETAR_SEARCH_YEAR")]
        year: Option<String>,
        /// Only torrents of this TV season (or range), from the name.
        #[arg(long, value_name = "N", env = "MAGNETAR_SEARCH_SEASON")]
        season: Option<String>,
        /// Only torrents of this episode (or range), from the name.
        #[arg(long, value_name = "N", env = "MAGNETAR_SEARCH_EPISODE")]
        episode: Option<String>,
        /// Only torrents of this resolution (480p, 720p, 1080p, 2160p, ...).
        #[arg(long, value_name = "RES", env = "MAGNETAR_SEARCH_RESOLUTION")]
        resolution: Option<String>,
        /// One JSON object per line instead of a table.
        #[arg(long, env = "MAGNETAR_SEARCH_JSON")]
        json: bool,
        #[command(flatten)]
        db: DbArg,
    },
    /// Run the classifier again over every stored torrent (after its rules changed)
    /// and print the torrents per kind. One write transaction; refused while a
    /// crawler runs on the database (stop it, reclassify, start it again).
    Reclassify {
        #[command(flatten)]
        db: DbArg,
    },
    /// Show one torrent: its fields, classification, file tree and magnet link.
    Show {
        /// The infohash: 40 hex digits, a unique prefix of at least 8, or a magnet
        /// URI (`magnet:?xt=urn:btih:` with hex or base32).
        #[arg(value_name = "INFOHASH|PREFIX|MAGNET")]
        infohash: String,
        #[command(flatten)]
        db: DbArg,
    },
    /// List the most recently discovered torrents.
    Recent {
        /// How many.
        #[arg(short = 'n', long = "count", default_value_t = 20, env = "MAGNETAR_RECENT_COUNT", value_parser = clap::value_parser!(u32).range(1..=100_000))]
        n: u32,
        /// One JSON object per line instead of a table (the fields of `search --json`).
        #[arg(long, env = "MAGNETAR_RECENT_JSON")]
        json: bool,
        #[command(flatten)]
        db: DbArg,
    },
    /// Export torrents as JSON lines or as .torrent files.
    Export {
        /// What to write: JSON lines, or one .torrent file per torrent with a kept info dict.
        #[arg(
            long,
            value_enum,
            default_value = "jsonl",
            env = "MAGNETAR_EXPORT_FORMAT"
        )]
        format: ExportFormat,
        /// Only torrents discovered at or after T: Unix seconds, a UTC date or time
        /// (2026-11-01, 2026-11-01T12:00:00Z), or an age such as 90m, 24h, 7d.
        #[arg(long, value_name = "T", env = "MAGNETAR_EXPORT_SINCE")]
        since: Option<String>,
        /// Output file for jsonl (default: stdout); output directory for torrent (required).
        #[arg(long, value_name = "PATH", env = "MAGNETAR_EXPORT_OUT")]
        out: Option<PathBuf>,
        #[command(flatten)]
        db: DbArg,
    },
    /// Import torrents from a JSON lines export or a magnetico SQLite database.
    Import {
        #[arg(value_enum)]
        kind: ImportKind,
        /// The file to import.
        path: PathBuf,
        #[command(flatten)]
        db: DbArg,
    },
    /// Serve the web interface, the JSON API (/api/v1), Torznab (/torznab/api) and
    /// the RSS feed (/feed) over a database, read-only; works while a crawler writes
    /// the same database.
    Serve {
        #[command(flatten)]
        http: HttpArgs,
        #[command(flatten)]
        db: DbArg,
        #[command(subcommand)]
        cmd: Option<ServeCmd>,
    },
    /// Database totals, per-session yield, failure reasons and top clients.
    Stats {
        #[command(flatten)]
        db: DbArg,
    },
    /// Database maintenance.
    Db {
        #[command(subcommand)]
        cmd: DbCmd,
    },
    /// Remove torrents (record, files, info dict, search index) and leave tombstones:
    /// a deleted infohash is never fetched or stored again. Refused while a crawler
    /// runs.
    Delete {
        /// Infohashes: 40 hex digits (stored or not: a tombstone is left either
        /// way), a unique prefix of at least 8 of a stored one, or a magnet URI.
        #[arg(required = true, value_name = "INFOHASH")]
        infohashes: Vec<String>,
        #[command(flatten)]
        db: DbArg,
    },
    /// Content rules files: check one, or apply one to what is stored.
    Filter {
        #[command(subcommand)]
        cmd: FilterCmd,
    },
}

#[derive(Subcommand, Debug)]
enum FilterCmd {
    /// Check a rules file: prints the rules, or the line and column of the first
    /// error (exit status 2).
    Check {
        /// The rules file.
        file: PathBuf,
    },
    /// Apply a rules file to the stored torrents: `drop` matches are removed and
    /// tombstoned, `hide` matches hidden; says what it did per rule. Refused while
    /// a crawler runs.
    Apply {
        /// The rules file (the crawler's --filter-rules variable).
        #[arg(long = "rules", value_name = "FILE", env = "MAGNETAR_FILTER_RULES")]
        filter_rules: PathBuf,
        /// Say what would be removed or hidden, change nothing.
        #[arg(long, env = "MAGNETAR_FILTER_DRY_RUN")]
        dry_run: bool,
        /// Also show again the hidden torrents that no rule of this file hides
        /// (after a `hide` rule was taken out of the file).
        #[arg(long, env = "MAGNETAR_FILTER_UNHIDE")]
        unhide: bool,
        #[command(flatten)]
        db: DbArg,
    },
}

#[derive(Args, Debug, Clone)]
struct HttpArgs {
    /// Address to serve at.
    #[arg(
        long,
        value_name = "ADDR:PORT",
        default_value = "127.0.0.1:8080",
        env = "MAGNETAR_SERVE_LISTEN"
    )]
    listen: SocketAddr,
    /// Access token (at least 16 characters), needed on any address but loopback:
    /// sent as `Authorization: Bearer TOKEN`, as the password of HTTP basic auth
    /// (any user name), or as Torznab's `apikey`.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "MAGNETAR_SERVE_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// HTTP basic-auth credentials: a file of `USER:PHC-HASH` lines (argon2 hashes,
    /// made by `magnetar serve hash-password USER`); like a token, they let the
    /// server listen on any address.
    #[arg(long, value_name = "PATH", env = "MAGNETAR_SERVE_BASIC_AUTH_FILE")]
    basic_auth_file: Option<PathBuf>,
    /// Serve a non-loopback address without a token (anyone who can reach it may
    /// read the index).
    #[arg(
        long,
        env = "MAGNETAR_SERVE_NO_AUTH",
        conflicts_with_all = ["token", "basic_auth_file"]
    )]
    no_auth: bool,
}

#[derive(Subcommand, Debug)]
enum ServeCmd {
    /// Print a `USER:HASH` line for --basic-auth-file: the password is read from
    /// standard input (its first line) and hashed with argon2id (m=19456 KiB, t=2,
    /// p=1, a random salt).
    HashPassword {
        /// The user name (no ':', no spaces).
        user: String,
    },
}

#[derive(Subcommand, Debug)]
enum DbCmd {
    /// Copy every torrent (files, sources, counts, info dicts) from one store to
    /// another: LMDB directories and PostgreSQL URLs (`postgres://…` or
    /// `host=… dbname=…`), either way. Running it again copies nothing twice; the
    /// same store as source and target is refused, as is an LMDB target a
    /// crawler holds.
    Copy {
        /// The source: an LMDB directory or a PostgreSQL URL.
        #[arg(long, value_name = "PATH|URL", env = "MAGNETAR_COPY_FROM")]
        from: String,
        /// The target: an LMDB directory (created when missing) or a PostgreSQL URL.
        #[arg(long, value_name = "PATH|URL", env = "MAGNETAR_COPY_TO")]
        to: String,
        /// Torrents per written batch.
        #[arg(long, value_name = "N", default_value_t = 1000, env = "MAGNETAR_COPY_BATCH",
              value_parser = clap::value_parser!(u32).range(1..=100_000))]
        batch: u32,
    },
    /// Check the database's integrity (every index against the torrents); exits with
    /// status 2 when anything is damaged. Safe while a crawler runs.
    Check {
        #[command(flatten)]
        db: DbArg,
    },
    /// Rewrite the database without free pages (refused while a crawler runs).
    Compact {
        #[command(flatten)]
        db: DbArg,
    },
    /// Drop old request, peer and node records (torrents are kept; refused while a
    /// crawler runs).
    Prune {
        /// Keep request records this many days.
        #[arg(long, default_value_t = 30, env = "MAGNETAR_PRUNE_REQUESTS_DAYS")]
        requests_days: u64,
        /// Keep at most this many request records.
        #[arg(long, env = "MAGNETAR_PRUNE_REQUESTS_MAX")]
        requests_max: Option<u64>,
        /// Drop peers not seen for this many days.
        #[arg(long, default_value_t = 30, env = "MAGNETAR_PRUNE_PEERS_DAYS")]
        peers_days: u64,
        /// Drop DHT nodes not seen for this many days.
        #[arg(long, default_value_t = 7, env = "MAGNETAR_PRUNE_NODES_DAYS")]
        nodes_days: u64,
        /// Also remove torrents not seen (discovered or announced again) for this
        /// many days. Pruned torrents are not tombstoned: they may come back.
        #[arg(long, value_name = "DAYS", env = "MAGNETAR_PRUNE_UNSEEN_DAYS")]
        unseen_days: Option<u64>,
        /// Also remove torrents discovered more than this many days ago whose
        /// seeder count is unknown or zero (the last measurement, if any).
        #[arg(long, value_name = "DAYS", env = "MAGNETAR_PRUNE_NO_SEEDERS_DAYS")]
        no_seeders_days: Option<u64>,
        /// Also remove torrents of this content kind (classified on the fly: movie,
        /// adult, software, ...); with --unseen-days or --no-seeders-days, only those
        /// of this kind that match them.
        #[arg(long, value_name = "KIND", env = "MAGNETAR_PRUNE_CATEGORY")]
        category: Option<String>,
        /// Say what would go (counts and the first torrents), change nothing.
        #[arg(long, env = "MAGNETAR_PRUNE_DRY_RUN")]
        dry_run: bool,
        #[command(flatten)]
        db: DbArg,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum ExportFormat {
    Jsonl,
    Torrent,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum ImportKind {
    Jsonl,
    Magnetico,
}

#[derive(Args, Debug)]
struct CrawlArgs {
    #[command(flatten)]
    db: DbArg,

    /// UDP address(es) to bind, one DHT identity each (IPv4 or IPv6). Overrides
    /// --identities and --ipv6. Default: 0.0.0.0:6881 (and [::]:6881), the next
    /// ports for more identities; a busy default port falls back to a random one.
    #[arg(long, value_name = "ADDR:PORT", num_args = 1.., env = "MAGNETAR_BIND", value_delimiter = ',')]
    bind: Vec<SocketAddr>,

    /// DHT identities (node ids) per address family, on consecutive ports.
    #[arg(long, value_name = "N", default_value_t = 1, env = "MAGNETAR_IDENTITIES",
          value_parser = clap::value_parser!(u16).range(1..=64))]
    identities: u16,

    /// Also run IPv6 identities (the default; skipped with a warning when IPv6 is unavailable).
    #[arg(long, overrides_with = "no_ipv6", env = "MAGNETAR_IPV6")]
    ipv6: bool,
    /// Run IPv4 identities only.
    #[arg(long, overrides_with = "ipv6", env = "MAGNETAR_NO_IPV6")]
    no_ipv6: bool,

    /// Our external IP address(es), one per family, for BEP 42 node ids from the
    /// start (otherwise the address is voted on by the nodes that answer us, and the
    /// identities switch to BEP 42 ids when the vote settles).
    #[arg(long, value_name = "IP", num_args = 1.., env = "MAGNETAR_EXTERNAL_IP", value_delimiter = ',')]
    external_ip: Vec<IpAddr>,

    /// This crawler's shard of a fleet, I/N (0 ≤ I < N ≤ 256): its node ids and
    /// its BEP 51 walk stay in slice I of N of the keyspace, and it fetches the
    /// infohashes of that slice only; the others go to the shared queue
    /// (--queue) for the crawler that owns them. 0/1 (default): unsharded.
    #[arg(long, value_name = "I/N", default_value = "0/1", env = "MAGNETAR_SHARD",
          value_parser = parse_shard)]
    shard: magnetar_core::Shard,

    /// The fleet's shared work queue, a PostgreSQL URL (`postgres://…` or a
    /// libpq string): infohashes of other shards are offered there, this
    /// shard's work is claimed from it under a lease (taken over by another
    /// shard if this crawler dies), and the torrents stored there are not
    /// fetched again. Default: the --store URL when the store is PostgreSQL
    /// and --shard is given.
    #[arg(long, value_name = "URL", env = "MAGNETAR_QUEUE")]
    queue: Option<String>,

    /// This host's name in a shared PostgreSQL store: its node ids are kept
    /// under it with their bind addresses (default: the host name). Hosts
    /// that share a name (containers) and bind the same addresses need
    /// distinct names.
    #[arg(long, value_name = "NAME", env = "MAGNETAR_NODE_NAME", value_parser = parse_node_name)]
    node_name: Option<String>,

    /// How long a claim on the shared queue holds, seconds: a crawler that dies
    /// leaves its claimed work to the others once the lease and --queue-grace
    /// have passed.
    #[arg(long, value_name = "SECS", default_value_t = 3600, env = "MAGNETAR_QUEUE_LEASE",
          value_parser = clap::value_parser!(u64).range(1..=7 * 86_400))]
    queue_lease: u64,

    /// Seconds after a lease expired before another crawler takes the work over.
    #[arg(long, value_name = "SECS", default_value_t = 300, env = "MAGNETAR_QUEUE_GRACE",
          value_parser = clap::value_parser!(u64).range(0..=7 * 86_400))]
    queue_grace: u64,

    /// Seconds an offered infohash stays unclaimed before any crawler takes it
    /// (its shard is not running).
    #[arg(long, value_name = "SECS", default_value_t = 1800, env = "MAGNETAR_QUEUE_ORPHAN_AFTER",
          value_parser = clap::value_parser!(u64).range(1..=30 * 86_400))]
    queue_orphan_after: u64,

    /// Outgoing DHT query budget, packets per second (answers to queries are not counted).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 2000,
        env = "MAGNETAR_MAX_PPS"
    )]
    max_pps: u32,

    /// Metadata fetches (peer connections) in flight; capped under the open-file limit.
    #[arg(long, value_name = "N", default_value_t = 1000, env = "MAGNETAR_MAX_LEECHES",
          value_parser = clap::value_parser!(u32).range(1..))]
    max_leeches: u32,

    /// Peer-wire encryption (MSE/PE) when fetching metadata. prefer-plaintext
    /// (default): the plain BitTorrent handshake first, MSE for peers that refuse
    /// it (retried once), that needed it before, or that PEX flags as preferring
    /// it. prefer-encrypted: MSE first, plaintext for peers that refuse MSE.
    /// require: MSE only.
    #[arg(
        long,
        value_enum,
        default_value = "prefer-plaintext",
        env = "MAGNETAR_ENCRYPTION"
    )]
    encryption: EncryptionArg,

    /// MSE handshakes started per second at most (each costs two 768-bit modular
    /// exponentiations); connections over the budget wait. 0: no cap.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 2000,
        env = "MAGNETAR_MAX_DH_PER_SEC"
    )]
    max_dh_per_sec: u32,

    /// Fetch metadata over TCP only: no uTP streams on the DHT socket. By
    /// default a peer that talked to us over UDP gets uTP first, any other TCP
    /// first and uTP after a refusal or connect timeout.
    #[arg(long, env = "MAGNETAR_NO_UTP")]
    no_utp: bool,

    /// uTP datagrams sent per second at most (the metadata transfer budget,
    /// separate from --max-pps, the DHT query budget). 0: no cap.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 20_000,
        env = "MAGNETAR_UTP_PACKETS_PER_SEC"
    )]
    utp_packets_per_sec: u32,

    /// How hard database commits are pushed to disk. durable (default): every commit
    /// is fsync'ed and survives power loss. no-meta-sync: an OS crash or power loss may
    /// undo the last committed batch. no-sync: an OS crash or power loss may undo every
    /// batch since the OS last flushed (~30 s) and, on a file system that reorders
    /// writes, corrupt the database. A crash of magnetar itself loses nothing in any mode.
    #[arg(
        long,
        value_enum,
        default_value = "durable",
        env = "MAGNETAR_DURABILITY"
    )]
    durability: DurabilityArg,

    /// Content rules file (`[label:] drop|hide words|infohashes|kinds ITEMS`, see
    /// README): read at start (an error refuses to start, with its line and column)
    /// and again on SIGHUP (a file with an error is refused, logged and counted; the
    /// old rules stay in force).
    #[arg(long, value_name = "FILE", env = "MAGNETAR_FILTER_RULES")]
    filter_rules: Option<PathBuf>,

    /// Also send every stored torrent to another indexer: `--sink bitmagnet URL`
    /// streams them to a running bitmagnet's import endpoint
    /// (`http://HOST:PORT`, `/import` by default) as JSON lines, in batches, from
    /// a bounded queue that never slows the crawl (see /metrics
    /// `magnetar_sink_bitmagnet_*`).
    #[arg(long, num_args = 2, value_names = ["KIND", "URL"], env = "MAGNETAR_SINK", value_delimiter = ' ')]
    sink: Vec<String>,

    /// Do not keep raw info dicts (saves ~95 % of the disk; `export --format torrent`
    /// then has nothing to write for the torrents stored meanwhile).
    #[arg(long, env = "MAGNETAR_NO_INFO_DICTS")]
    no_info_dicts: bool,

    /// Bootstrap node(s) instead of the public routers (saved nodes are still tried first).
    #[arg(long, value_name = "HOST:PORT", num_args = 1.., env = "MAGNETAR_BOOTSTRAP", value_delimiter = ',')]
    bootstrap: Vec<String>,

    /// Trackers to ask for peers of the infohashes whose DHT peer search found nobody
    /// (`udp://HOST:PORT`, BEP 15, or `http://HOST[:PORT]/announce`); none by default.
    #[arg(long, value_name = "URL", num_args = 1.., env = "MAGNETAR_TRACKERS", value_delimiter = ',')]
    trackers: Vec<String>,

    /// Talk to loopback and private (RFC 1918, ULA, link-local) addresses too, and drop
    /// the one-node-per-/24 routing rule (for LANs and tests).
    #[arg(long, env = "MAGNETAR_ALLOW_PRIVATE")]
    allow_private: bool,

    /// Answer queries with node ids forged next to the asker's (more announces, but
    /// bends BEP 5: our id is not stable).
    #[arg(long, env = "MAGNETAR_NEIGHBOUR_MODE")]
    neighbour_mode: bool,

    /// Budget for keeping stored torrents' seeder/leecher counts (BEP 33) fresh,
    /// packets per second inside --max-pps: stored torrents seen again whose
    /// counts are older than --scrape-max-age are scraped again, most recently
    /// seen first. 0 turns it off.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 32,
        env = "MAGNETAR_SCRAPE_REFRESH_PPS"
    )]
    scrape_refresh_pps: u32,

    /// Seconds after which a stored torrent's seeder/leecher counts are old
    /// enough to be scraped again when it is seen again.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = ingest::SCRAPE_MAX_AGE.as_secs(),
        env = "MAGNETAR_SCRAPE_MAX_AGE"
    )]
    scrape_max_age: u64,

    /// Serve Prometheus metrics at http://ADDR/metrics (the old minimal responder;
    /// `--http` serves /metrics too, beside the web interface).
    #[arg(long, value_name = "ADDR:PORT", env = "MAGNETAR_METRICS")]
    metrics: Option<SocketAddr>,

    /// Serve the web interface, the JSON API, Torznab, the RSS feed and /metrics at
    /// http://ADDR/ while crawling (as `magnetar serve` does).
    #[arg(long, value_name = "ADDR:PORT", env = "MAGNETAR_HTTP")]
    http: Option<SocketAddr>,

    /// Access token of the `--http` server (at least 16 characters), needed on any
    /// address but loopback (see `magnetar serve --token`).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "MAGNETAR_HTTP_TOKEN",
        hide_env_values = true
    )]
    http_token: Option<String>,

    /// Basic-auth credentials of the `--http` server: a file of `USER:PHC-HASH`
    /// lines (see `magnetar serve --basic-auth-file`).
    #[arg(long, value_name = "PATH", env = "MAGNETAR_HTTP_BASIC_AUTH_FILE")]
    http_basic_auth_file: Option<PathBuf>,

    /// Serve `--http` on a non-loopback address without a token.
    #[arg(
        long,
        env = "MAGNETAR_HTTP_NO_AUTH",
        conflicts_with_all = ["http_token", "http_basic_auth_file"]
    )]
    http_no_auth: bool,

    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "SECS", env = "MAGNETAR_DURATION")]
    duration: Option<u64>,

    /// Event loop implementation.
    #[arg(long, value_enum, default_value = "mio", env = "MAGNETAR_RUNTIME")]
    runtime: Runtime,

    /// Seed for node ids and all protocol randomness (default: from the OS).
    #[arg(long, hide = true, env = "MAGNETAR_SEED")]
    seed: Option<u64>,

    /// Answers per remote IP per second (benchmarks on loopback raise it).
    #[arg(
        long,
        hide = true,
        default_value_t = 10,
        env = "MAGNETAR_PER_IP_ANSWERS"
    )]
    per_ip_answers: u32,

    /// Seconds into the crawl at which the log gets the doctor's report (once).
    #[arg(
        long,
        hide = true,
        default_value_t = doctor::LOG_AFTER.as_secs(),
        env = "MAGNETAR_DOCTOR_AFTER"
    )]
    doctor_after: u64,

    /// Seconds between status lines.
    #[arg(
        long,
        hide = true,
        default_value_t = 10,
        env = "MAGNETAR_STATUS_INTERVAL"
    )]
    status_interval: u64,
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => b.try_init(),
        LogFormat::Json => b.json().try_init(),
    };
}

fn os_seed() -> u64 {
    // RandomState is keyed from OS entropy.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

/// An error for the user: printed as `magnetar: <message>`, exit status 2.
pub(crate) struct Fail(pub(crate) String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Self {
        Fail(e.to_string())
    }
}

impl DbArg {
    /// `--db` or `--store`, else the default LMDB location.
    fn location(&self) -> Result<commands::StoreLoc, Fail> {
        match (&self.db, &self.store) {
            (Some(_), Some(_)) => Err(Fail(
                "--db and --store both name a database (or MAGNETAR_DB and MAGNETAR_STORE \
                 are both set): give one"
                    .into(),
            )),
            (Some(p), None) => Ok(commands::StoreLoc::Lmdb(p.clone())),
            (None, Some(s)) => Ok(commands::StoreLoc::parse(s)),
            (None, None) => magnetar_storage::default_data_dir()
                .map(commands::StoreLoc::Lmdb)
                .map_err(|e| Fail(e.to_string())),
        }
    }

    /// The LMDB directory, for the commands only LMDB supports: a PostgreSQL
    /// `--store` is refused with a message saying so.
    fn path(&self) -> Result<PathBuf, Fail> {
        match self.location()? {
            commands::StoreLoc::Lmdb(p) => Ok(p),
            commands::StoreLoc::Postgres(_) => Err(Fail(
                "this command works on an LMDB database only (--db PATH or --store PATH); \
                 the PostgreSQL store supports crawl, serve, search, show, recent, stats \
                 and export"
                    .into(),
            )),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match dispatch(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed stdout pipe (`| head`) ends the command quietly.
        Err(_) if commands::STDOUT_CLOSED.load(std::sync::atomic::Ordering::SeqCst) => {
            ExitCode::SUCCESS
        }
        Err(Fail(msg)) => {
            eprintln!("magnetar: {msg}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(cmd: Cmd) -> Result<(), Fail> {
    match cmd {
        Cmd::Crawl(a) => cmd_crawl(*a),
        Cmd::Doctor(a) => cmd_doctor(*a),
        Cmd::Search {
            words,
            limit,
            offset,
            sort,
            order,
            min_size,
            max_size,
            since,
            category,
            year,
            season,
            episode,
            resolution,
            json,
            db,
        } => commands::search(
            &db.location()?,
            &commands::SearchArgs {
                query: words.join(" "),
                limit: limit as usize,
                offset,
                sort: sort.into(),
                descending: order == OrderArg::Desc,
                min_size,
                max_size,
                since,
                category,
                attributes: [
                    ("year", year),
                    ("season", season),
                    ("episode", episode),
                    ("resolution", resolution),
                ]
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_string(), v?)))
                .collect(),
                json,
            },
        ),
        Cmd::Reclassify { db } => commands::reclassify(&db.path()?),
        Cmd::Show { infohash, db } => commands::show(&db.location()?, &infohash),
        Cmd::Recent { n, json, db } => commands::recent(&db.location()?, n as usize, json),
        Cmd::Export {
            format,
            since,
            out,
            db,
        } => commands::export(
            &db.location()?,
            format == ExportFormat::Torrent,
            since.as_deref(),
            out,
        ),
        Cmd::Import { kind, path, db } => {
            commands::import(&db.path()?, kind == ImportKind::Magnetico, &path)
        }
        Cmd::Stats { db } => commands::stats(&db.location()?),
        Cmd::Serve {
            cmd: Some(ServeCmd::HashPassword { user }),
            ..
        } => hash_password(&user),
        Cmd::Serve {
            http,
            db,
            cmd: None,
        } => cmd_serve(&http, &db.location()?),
        Cmd::Db {
            cmd: DbCmd::Copy { from, to, batch },
        } => dbcopy::db_copy(&from, &to, batch as usize),
        Cmd::Db {
            cmd: DbCmd::Check { db },
        } => commands::check(&db.path()?),
        Cmd::Db {
            cmd: DbCmd::Compact { db },
        } => commands::compact(&db.path()?),
        Cmd::Db {
            cmd:
                DbCmd::Prune {
                    requests_days,
                    requests_max,
                    peers_days,
                    nodes_days,
                    unseen_days,
                    no_seeders_days,
                    category,
                    dry_run,
                    db,
                },
        } => commands::prune(
            &db.path()?,
            requests_days,
            requests_max,
            peers_days,
            nodes_days,
            &commands::TorrentPrune {
                unseen_days,
                no_seeders_days,
                category,
                dry_run,
            },
        ),
        Cmd::Delete { infohashes, db } => commands::delete(&db.path()?, &infohashes),
        Cmd::Filter {
            cmd: FilterCmd::Check { file },
        } => commands::filter_check(&file),
        Cmd::Filter {
            cmd:
                FilterCmd::Apply {
                    filter_rules,
                    dry_run,
                    unhide,
                    db,
                },
        } => commands::filter_apply(&db.path()?, &filter_rules, dry_run, unhide),
    }
}

/// `magnetar serve hash-password USER`: a credentials line, the password from stdin.
fn hash_password(user: &str) -> Result<(), Fail> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Fail(format!("cannot read the password from stdin: {e}")))?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    let out = magnetar_web::basic::credential_line(user, password).map_err(Fail)?;
    println!("{out}");
    Ok(())
}

/// The credentials of `flag`'s file, if given (a malformed file refuses the start).
fn load_credentials(
    flag: &str,
    path: Option<&std::path::Path>,
) -> Result<Option<magnetar_web::Credentials>, Fail> {
    path.map(|p| magnetar_web::Credentials::load(p).map_err(|e| Fail(format!("{flag}: {e}"))))
        .transpose()
}

/// `magnetar serve`: the HTTP server over an existing database until SIGINT/SIGTERM.
fn cmd_serve(h: &HttpArgs, db: &commands::StoreLoc) -> Result<(), Fail> {
    let users = load_credentials("--basic-auth-file", h.basic_auth_file.as_deref())?;
    let access = magnetar_web::Access::decide_with(h.listen, h.token.as_deref(), users, h.no_auth)
        .map_err(|e| {
            Fail(format!(
                "--listen: {}",
                e.message_with("--token", Some("--basic-auth-file"), "--no-auth")
            ))
        })?;
    // No maintenance lock: a reader takes none, and serving beside a crawler is the
    // point; opened read-only, so it never waits for the crawler's commit. (Compaction, which swaps the file, refuses to run while a crawler holds
    // the lock; run it with the server stopped too.)
    // PostgreSQL: a pool of 8 connections, one per blocking-pool thread.
    let store = commands::open_index(db, 8)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .map_err(|e| Fail(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(h.listen)
            .await
            .map_err(|e| Fail(format!("--listen {}: cannot listen: {e}", h.listen)))?;
        let local = listener.local_addr()?;
        tracing::info!(db = %db.label(), store = store.kind(), "serving at http://{local}/");
        // `/metrics`: the server's own counters (connections, refusals), rendered
        // once a second as the crawler renders its own.
        let counters = std::sync::Arc::new(magnetar_web::ServerCounters::default());
        let text: metrics::Shared = std::sync::Arc::default();
        let (c, t) = (counters.clone(), text.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                let rendered = metrics::render(metrics::http(&c));
                if let Ok(mut t) = t.lock() {
                    *t = rendered;
                }
            }
        });
        let cfg = magnetar_web::Config {
            access,
            limits: magnetar_web::Limits::default(),
            metrics: Some(text),
        };
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
            tracing::info!("stopping the HTTP server");
        };
        magnetar_web::serve(listener, store, cfg, counters, shutdown).await;
        Ok::<(), Fail>(())
    })?;
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// Binds the UDP sockets: explicit `--bind`s must all work; defaults fall back to a
/// random port when busy, and IPv6 is skipped with a warning when unavailable.
fn bind_sockets(a: &CrawlArgs) -> Result<Vec<(SocketAddr, std::net::UdpSocket)>, Fail> {
    let mut out = Vec::new();
    if !a.bind.is_empty() {
        for b in &a.bind {
            let s = crawl::bind_udp(*b).map_err(|e| Fail(format!("cannot bind UDP {b}: {e}")))?;
            out.push((s.local_addr()?, s));
        }
        return Ok(out);
    }
    let ipv6 = !a.no_ipv6;
    for i in 0..a.identities {
        let port = 6881 + i;
        let mut fams: Vec<SocketAddr> = vec![SocketAddr::from(([0, 0, 0, 0], port))];
        if ipv6 {
            fams.push(SocketAddr::from(([0u16; 8], port)));
        }
        for addr in fams {
            let r = crawl::bind_udp(addr).or_else(|e| {
                if e.kind() == std::io::ErrorKind::AddrInUse {
                    tracing::warn!("UDP {addr} is in use; using a random port");
                    crawl::bind_udp(SocketAddr::new(addr.ip(), 0))
                } else {
                    Err(e)
                }
            });
            match r {
                Ok(s) => out.push((s.local_addr()?, s)),
                Err(e) if addr.is_ipv6() => {
                    tracing::warn!("IPv6 unavailable ({addr}: {e}); continuing with IPv4 only");
                }
                Err(e) => return Err(Fail(format!("cannot bind UDP {addr}: {e}"))),
            }
        }
    }
    Ok(out)
}

fn cmd_crawl(a: CrawlArgs) -> Result<(), Fail> {
    let db = a.db.location()?;
    let out = crawl_at(&a, &db)?;
    tracing::info!(
        datagrams_in = out.stats.dht.datagrams_in,
        datagrams_out = out.stats.dht.datagrams_out,
        emfile = out.counters.emfile,
        "session totals"
    );
    Ok(())
}

/// `magnetar doctor`: a short crawl, then the report on stdout.
fn cmd_doctor(mut a: CrawlArgs) -> Result<(), Fail> {
    let secs = *a.duration.get_or_insert(60);
    // A temporary database unless --db is given: a crawler running on the usual
    // one holds it.
    let tmp = match &a.db.db {
        Some(_) => None,
        None => {
            let dir = std::env::temp_dir().join(format!(
                "magnetar-doctor-{}-{:x}",
                std::process::id(),
                os_seed()
            ));
            a.db.db = Some(dir.clone());
            Some(dir)
        }
    };
    let db = commands::StoreLoc::Lmdb(a.db.path()?);
    eprintln!("magnetar doctor: crawling for {secs} s…");
    let r = crawl_at(&a, &db);
    if let Some(dir) = tmp {
        let _ = std::fs::remove_dir_all(dir);
    }
    let out = r?;
    let sockets: Vec<SocketAddr> = out.sockets.clone();
    let i = doctor::gather(
        &sockets,
        &out.stats,
        &out.observed,
        a.max_leeches as u64,
        a.max_pps as u64,
        out.elapsed,
    );
    let lines = doctor::report(&i);
    let mut o = std::io::stdout().lock();
    for l in &lines {
        std::io::Write::write_fmt(&mut o, format_args!("{l}\n")).map_err(commands::out_err)?;
    }
    if lines.iter().any(|l| l.verdict == doctor::Verdict::Fail) {
        return Err(Fail("at least one check failed (see above)".into()));
    }
    Ok(())
}

/// What a crawl reports to its command.
struct Ran {
    stats: magnetar_core::Stats,
    counters: magnetar_core::pump::RuntimeCounters,
    observed: doctor::Observed,
    sockets: Vec<SocketAddr>,
    elapsed: Duration,
}

/// Parses `--trackers` and resolves their host names (once, at start; a name
/// that does not resolve leaves its tracker unused, with a warning).
fn tracker_urls(urls: &[String]) -> Result<Vec<magnetar_core::tracker::TrackerUrl>, Fail> {
    let mut out = Vec::new();
    for u in urls {
        let mut t: magnetar_core::tracker::TrackerUrl =
            u.parse().map_err(|e| Fail(format!("--trackers {e}")))?;
        if let Some(name) = t.needs_resolving() {
            use std::net::ToSocketAddrs;
            match magnetar_core::pump::resolved(name.to_socket_addrs()) {
                Ok(addrs) => {
                    t.addr = addrs
                        .iter()
                        .find(|a| a.is_ipv4())
                        .or(addrs.first())
                        .copied()
                }
                Err(e) => tracing::warn!(tracker = %u, "cannot resolve the tracker: {e}"),
            }
        }
        tracing::info!(tracker = %u, addr = ?t.addr, "tracker");
        out.push(t);
    }
    Ok(out)
}

/// The node ids an earlier run kept, by identity; with a shard, a kept id
/// outside the slice (another shard's, or unsharded) is drawn anew.
fn kept_ids(
    r: &crawl::IdRecords,
    shard: magnetar_core::Shard,
) -> Vec<Option<magnetar_core::NodeId>> {
    let mut saved = crawl::saved_ids(&r.store, &r.keys);
    if shard.is_sharded() {
        for s in &mut saved {
            if s.is_some_and(|id| !shard.contains(&id.0)) {
                *s = None;
            }
        }
    }
    saved
}

/// `--node-name`: printable, 1 to 255 bytes.
fn parse_node_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 255 || s.chars().any(char::is_control) {
        return Err("a name of 1 to 255 bytes without control characters".into());
    }
    Ok(s.to_owned())
}

/// `--shard I/N`.
fn parse_shard(s: &str) -> Result<magnetar_core::Shard, String> {
    magnetar_core::Shard::parse(s).map_err(|e| e.to_string())
}

/// Binds, opens the database at `db`, crawls until --duration or a signal.
fn crawl_at(a: &CrawlArgs, loc: &commands::StoreLoc) -> Result<Ran, Fail> {
    for b in &a.bootstrap {
        if b.rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            return Err(Fail(format!("--bootstrap {b}: expected HOST:PORT")));
        }
    }
    for fam in [false, true] {
        if a.external_ip
            .iter()
            .filter(|ip| ip.is_ipv6() == fam)
            .count()
            > 1
        {
            return Err(Fail("--external-ip: at most one address per family".into()));
        }
    }
    for ip in &a.external_ip {
        if magnetar_core::bep42_verify(&magnetar_core::NodeId::ZERO, *ip) {
            tracing::warn!(%ip, "--external-ip is not a public address: BEP 42 does not apply to it");
        }
    }
    let trackers = tracker_urls(&a.trackers)?;
    if a.shard.is_sharded() && a.queue.is_none() && !matches!(loc, commands::StoreLoc::Postgres(_))
    {
        tracing::warn!(shard = %a.shard, "--shard without --queue: the infohashes of the other shards' slices are offered to nobody");
    }
    let rules = match &a.filter_rules {
        Some(p) => filter::load(p).map_err(|e| Fail(format!("--filter-rules {e}")))?,
        None => Default::default(),
    };
    let sockets = bind_sockets(a)?;
    let bound: Vec<SocketAddr> = sockets.iter().map(|(addr, _)| *addr).collect();
    for addr in &bound {
        tracing::info!(%addr, "UDP socket bound");
    }
    let http_access = match a.http {
        Some(addr) => {
            let users =
                load_credentials("--http-basic-auth-file", a.http_basic_auth_file.as_deref())?;
            Some(
                magnetar_web::Access::decide_with(
                    addr,
                    a.http_token.as_deref(),
                    users,
                    a.http_no_auth,
                )
                .map_err(|e| {
                    Fail(format!(
                        "--http: {}",
                        e.message_with(
                            "--http-token",
                            Some("--http-basic-auth-file"),
                            "--http-no-auth"
                        )
                    ))
                })?,
            )
        }
        None => None,
    };
    let mut metrics = match a.metrics {
        Some(addr) => {
            let (shared, local) = metrics::serve(addr)
                .map_err(|e| Fail(format!("--metrics {addr}: cannot listen: {e}")))?;
            tracing::info!("metrics at http://{local}/metrics");
            Some(shared)
        }
        None => None,
    };
    if a.http.is_some() && metrics.is_none() {
        metrics = Some(metrics::Shared::default());
    }
    // Sockets and the metrics listener first, then the store: a run rejected for its
    // arguments writes nothing. The lock keeps maintenance commands (db compact,
    // db prune, import) off the database while we write, and refuses to crawl one
    // under maintenance; held until this function returns.
    let seed = a.seed.unwrap_or_else(os_seed);
    let mut cfg = Config::new(seed, sockets[0].0);
    cfg.crawl.shard = a.shard;
    let (_lock, sink, index, id_records): (
        _,
        Box<dyn magnetar_storage::backend::IndexSink>,
        std::sync::Arc<dyn magnetar_storage::backend::ReadIndex>,
        _,
    ) = match loc {
        commands::StoreLoc::Lmdb(db) => {
            let lock = commands::lock_db(db, "crawl")?;
            let store = commands::open_or_create_with(db, |o| {
                o.durability = a.durability.into();
                o.keep_info = !a.no_info_dicts;
            })?;
            let writer = store
                .writer(magnetar_storage::WriterConfig::default())
                .map_err(|e| Fail(format!("database {}: {e}", db.display())))?;
            tracing::info!(
                db = %db.display(),
                durability = ?a.durability,
                info_dicts = !a.no_info_dicts,
                "database open"
            );
            // Node ids: the ones kept by the last run while still valid, else new ones
            // (core's identity logic, which the simulator's crawler shares); kept at once.
            let id_records = crawl::IdRecords {
                store: crawl::IdStore::Lmdb(store.clone()),
                keys: crawl::identity_keys(&bound),
            };
            let saved = kept_ids(&id_records, a.shard);
            cfg.identities = IdentityConfig::for_sockets(&bound, &a.external_ip, &saved);
            let sink = magnetar_storage::backend::LmdbSink {
                store: store.clone(),
                writer,
            };
            (
                Some(lock),
                Box::new(sink) as Box<dyn magnetar_storage::backend::IndexSink>,
                std::sync::Arc::new(store)
                    as std::sync::Arc<dyn magnetar_storage::backend::ReadIndex>,
                Some((id_records, saved)),
            )
        }
        commands::StoreLoc::Postgres(url) => {
            // The writer connects (and migrates) on its own and retries while the
            // database is down; the reader for --http is connected now, so a wrong
            // URL fails at once. Node ids are kept in PostgreSQL under this host's
            // --node-name (schema 5), reused while valid as on LMDB.
            let label = commands::redact(url);
            let reader = magnetar_storage_pg::PgReader::connect(url, 4)
                .map_err(|e| Fail(format!("store {label}: {e}")))?;
            let mut wcfg = magnetar_storage_pg::PgWriterConfig::default();
            wcfg.store.keep_info = !a.no_info_dicts;
            let sink = magnetar_storage_pg::PgSink::start(url, wcfg);
            tracing::info!(store = %label, info_dicts = !a.no_info_dicts, "PostgreSQL store");
            let node_name = match &a.node_name {
                Some(n) => n.clone(),
                None => queue::host_name(),
            };
            let ids = magnetar_storage_pg::PgIdentities::connect(url, &node_name)
                .map_err(|e| Fail(format!("store {label}: {e}")))?;
            let id_records = crawl::IdRecords {
                store: crawl::IdStore::Pg(Box::new(ids)),
                keys: crawl::identity_keys(&bound),
            };
            let saved = kept_ids(&id_records, a.shard);
            tracing::info!(node_name = %node_name, kept = saved.iter().flatten().count(), "node ids kept in PostgreSQL");
            cfg.identities = IdentityConfig::for_sockets(&bound, &a.external_ip, &saved);
            (
                None,
                Box::new(sink) as Box<dyn magnetar_storage::backend::IndexSink>,
                std::sync::Arc::new(reader)
                    as std::sync::Arc<dyn magnetar_storage::backend::ReadIndex>,
                Some((id_records, saved)),
            )
        }
    };
    cfg.fill_node_ids();
    let id_records = id_records.map(|(r, saved)| {
        r.save_all(&cfg.identities, &saved);
        r
    });
    // The web server shares the crawler's environment (LMDB allows one per process);
    // it only reads, in read transactions that never block the writer.
    let _http = match (a.http, http_access) {
        (Some(addr), Some(access)) => {
            let cfg = magnetar_web::Config {
                access,
                limits: magnetar_web::Limits::default(),
                metrics: metrics.clone(),
            };
            let bg = magnetar_web::spawn(addr, index, cfg)
                .map_err(|e| Fail(format!("--http {addr}: cannot listen: {e}")))?;
            tracing::info!("web interface at http://{}/", bg.local_addr);
            Some(bg)
        }
        _ => None,
    };
    // The queue lives in the shared PostgreSQL store unless --queue names another.
    let queue_url = match (&a.queue, loc) {
        (Some(url), _) => Some(url.clone()),
        (None, commands::StoreLoc::Postgres(url)) if a.shard.is_sharded() => Some(url.clone()),
        _ => None,
    };
    let queue: Option<Box<dyn queue::WorkQueue>> = match &queue_url {
        Some(url) => {
            let name = queue::crawler_name(a.shard);
            let opts = magnetar_storage_pg::ClaimOptions {
                lease: Duration::from_secs(a.queue_lease),
                grace: Duration::from_secs(a.queue_grace),
                orphan_after: Duration::from_secs(a.queue_orphan_after),
            };
            tracing::info!(
                lease_s = a.queue_lease,
                grace_s = a.queue_grace,
                orphan_after_s = a.queue_orphan_after,
                "shared queue"
            );
            let q = queue::PgQueue::connect(url, &name, a.shard, opts)
                .map_err(|e| Fail(format!("--queue: {e}")))?;
            Some(Box::new(q))
        }
        None => None,
    };
    tracing::info!(shard = %a.shard, queue = queue_url.is_some(), "shard");
    let sharing = queue::Sharing::new(a.shard, queue);
    let mut ingest = ingest::Ingest::with_sink(sink);
    ingest.set_scrape_max_age(Duration::from_secs(a.scrape_max_age));
    if let Some(p) = &a.filter_rules {
        tracing::info!(rules = rules.rules().len(), file = %p.display(), "filter rules loaded");
        let f = filter::Filter::new(rules, Some(p.clone()));
        // SIGHUP: the rules are read again at the next status tick (both runtimes).
        signal_hook::flag::register(signal_hook::consts::SIGHUP, f.reload_flag())
            .map_err(|e| Fail(format!("cannot handle SIGHUP: {e}")))?;
        ingest.set_filter(f);
    }
    match a.sink.as_slice() {
        [] => {}
        [kind, url] if kind == "bitmagnet" => {
            let sink =
                sink::BitmagnetSink::start(url, sink::SinkConfig::default()).map_err(Fail)?;
            tracing::info!(url = %sink::import_url(url).map_err(Fail)?, "sending torrents to bitmagnet");
            ingest.set_bitmagnet(sink);
        }
        [kind, _] => {
            return Err(Fail(format!(
                "--sink {kind}: unknown kind (expected bitmagnet)"
            )))
        }
        _ => {
            return Err(Fail(
                "--sink: expected KIND URL (e.g. --sink bitmagnet http://localhost:3333)".into(),
            ))
        }
    }
    // A crawler-sized routing table (~8,200 nodes per identity).
    cfg.dht.routing = RoutingConfig::wide(4096);
    cfg.allow_private = a.allow_private;
    if a.allow_private {
        cfg.dht.routing.one_per_subnet = false;
    }
    cfg.dht.per_ip_answers_per_sec = a.per_ip_answers.max(1);
    cfg.crawl.max_pps = a.max_pps;
    cfg.crawl.neighbour_mode = a.neighbour_mode;
    cfg.fetch.encryption = a.encryption.into();
    cfg.fetch.max_dh_per_sec = a.max_dh_per_sec;
    // The refresh budget lives inside the global one.
    cfg.crawl.refresh_pps = match a.max_pps {
        0 => a.scrape_refresh_pps,
        max => a.scrape_refresh_pps.min(max),
    };
    cfg.trackers.urls = trackers;
    cfg.trackers.port = sockets[0].0.port();
    cfg.fetch.utp = !a.no_utp;
    cfg.fetch.utp_packets_per_sec = a.utp_packets_per_sec;
    let routers = if a.bootstrap.is_empty() {
        DEFAULT_ROUTERS.iter().map(|s| s.to_string()).collect()
    } else {
        a.bootstrap.clone()
    };
    let opts = crawl::CrawlOptions {
        config: cfg,
        routers,
        duration: a.duration.map(Duration::from_secs),
        metrics,
        status_interval: Duration::from_secs(a.status_interval.max(1)),
        max_leeches: a.max_leeches as usize,
        doctor_after: Duration::from_secs(a.doctor_after),
        id_records,
        http: _http.as_ref().map(|bg| bg.counters.clone()),
        sharing,
    };
    let t0 = std::time::Instant::now();
    let sockets = sockets.into_iter().map(|(_, s)| s).collect();
    let out = if a.runtime == Runtime::Tokio {
        tokio_run::run(opts, sockets, ingest)
    } else {
        crawl::run(opts, sockets, ingest)
    }
    .map_err(|e| Fail(format!("crawl failed: {e}")))?;
    Ok(Ran {
        stats: out.stats,
        counters: out.counters,
        observed: out.observed,
        sockets: bound,
        elapsed: t0.elapsed(),
    })
}
