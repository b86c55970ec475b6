//! `/metrics`: the Prometheus text and a tiny HTTP/1.0 responder on its own
//! thread. The event loop renders the text once a second into a shared string
//! ([`prometheus`]); requests only copy it, so a slow scraper never touches the
//! hot path.
//!
//! The core hands over its counters as data (`magnetar_core::report`); the text
//! is written by `prometheus-client` in the Prometheus text format 0.0.4, not
//! OpenMetrics: no `# EOF`, and names, labels and types exactly as before (the
//! golden test below holds them).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use magnetar_core::report::{families, metrics, Family, Kind, Metric};
use magnetar_core::Stats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The `Content-Type` of the text [`prometheus`] renders.
const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The latest rendered text.
pub type Shared = Arc<Mutex<String>>;

/// Binds `addr` (errors are the caller's to report) and serves on a thread.
pub fn serve(addr: SocketAddr) -> std::io::Result<(Shared, SocketAddr)> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let shared: Shared = Arc::new(Mutex::new(String::new()));
    let text = shared.clone();
    std::thread::Builder::new()
        .name("magnetar-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => {
                        if let Err(e) = answer(s, &text) {
                            tracing::debug!("metrics request: {e}");
                        }
                    }
                    Err(e) => {
                        tracing::warn!("metrics accept: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok((shared, local))
}

fn answer(mut s: TcpStream, text: &Shared) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0u8; 4096];
    let mut n = 0;
    while n < buf.len() {
        let r = s.read(&mut buf[n..])?;
        if r == 0 {
            break;
        }
        n += r;
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n")
            || buf[..n].windows(2).any(|w| w == b"\n\n")
        {
            break;
        }
    }
    let req = String::from_utf8_lossy(&buf[..n]);
    let path = req.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = if path == "/metrics" || path == "/" {
        let body = text.lock().map(|t| t.clone()).unwrap_or_default();
        ("200 OK", body)
    } else {
        ("404 Not Found", "not found: try /metrics\n".to_string())
    };
    let head = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    s.flush()
}

/// Every core counter, then the runtime's `extra` metrics, as Prometheus text
/// (format 0.0.4). Samples of one name are written together under one `# HELP`
/// and `# TYPE`, in the order the names first appear.
pub fn prometheus(s: &Stats, extra: &[Metric]) -> String {
    let mut all = metrics(s);
    all.extend_from_slice(extra);
    render(all)
}

/// `metrics` alone as Prometheus text (`magnetar serve`'s `/metrics`: no crawler).
pub fn render(all: Vec<Metric>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Families(families(all))));
    let mut out = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail, and `Families::encode` only passes on
    // the writer's errors.
    if let Err(e) = prometheus_text::encode(&mut out, &registry) {
        tracing::warn!("metrics rendering: {e}");
    }
    out
}

/// The web server's counters (inside the crawler, `crawl --http`, and on
/// `magnetar serve`'s own `/metrics`): connections accepted and refused at the bound, and requests refused by the
/// access check by reason (every reason is written, so the label set is fixed).
pub fn http(c: &magnetar_web::ServerCounters) -> Vec<Metric> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = vec![
        Metric::counter(
            "magnetar_http_connections_total",
            "HTTP connections accepted.",
            c.connections.load(Relaxed),
        ),
        Metric::counter(
            "magnetar_http_connections_refused_total",
            "HTTP connections closed at once: the connection bound was reached.",
            c.refused_connections.load(Relaxed),
        ),
    ];
    for why in magnetar_web::Refusal::ALL {
        out.push(
            Metric::counter(
                "magnetar_http_auth_refused_total",
                "HTTP requests refused by the access check (401; busy: 503, too many \
                 password checks waiting).",
                c.refused(why),
            )
            .with_label("reason", why.label()),
        );
    }
    out
}

/// The families of one scrape, handed to the library's encoder.
#[derive(Debug)]
struct Families(Vec<Family>);

/// Values that are whole numbers are written as integers (`3`, not `3.0`), as
/// the hand-written renderer did; others in the library's float format. Whole
/// up to 2^53, where every integer is still exact.
fn whole(v: f64) -> Option<i64> {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    (v.fract() == 0.0 && v.abs() <= EXACT).then_some(v as i64)
}

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            // The text encoder appends `_total` to a counter's name, and the core
            // names counters with it: strip it here so the name stays as scraped.
            // A counter without the suffix cannot keep its name as a counter; it
            // is written untyped rather than renamed.
            let (name, t) = match f.kind {
                Kind::Counter => match f.name.strip_suffix("_total") {
                    Some(stem) => (stem, MetricType::Counter),
                    None => (f.name.as_str(), MetricType::Unknown),
                },
                Kind::Gauge => (f.name.as_str(), MetricType::Gauge),
            };
            let mut family = encoder.encode_descriptor(name, &f.help, None, t)?;
            for sample in &f.samples {
                let labels: Vec<(&str, &str)> = sample
                    .labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let enc = family.encode_family(&labels)?;
                let v = sample.value;
                match (t, whole(v)) {
                    (MetricType::Counter, Some(n)) if n >= 0 => {
                        ConstCounter::new(n as u64).encode(enc)?
                    }
                    (MetricType::Counter, _) => ConstCounter::new(v).encode(enc)?,
                    (_, Some(n)) => ConstGauge::new(n).encode(enc)?,
                    (_, None) => ConstGauge::new(v).encode(enc)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use magnetar_core::crawl::CrawlStats;
    use magnetar_core::fetch::FetchStats;
    use magnetar_core::krpc::DecodeError;
    use magnetar_core::report::Metric;
    use magnetar_core::routing::RoutingStats;
    use magnetar_core::session::FailReason;
    use magnetar_core::Fault;
    use magnetar_core::Stats;
    use magnetar_core::{DhtStats, PacketCounts};
    use magnetar_storage::{Store, StoreOptions, WriterConfig};

    use super::prometheus;
    use magnetar_core::pump::RuntimeCounters;

    use crate::crawl;
    use crate::ingest::Ingest;

    /// `(sample name, label set, # TYPE)` of every sample `/metrics` can show,
    /// captured from the hand-written renderer that the library replaced.
    const GOLDEN: &str = include_str!("../tests/golden/metrics_names.txt");

    /// Distinct non-zero values, so that no counter is left at its default.
    struct Seq(u64);
    impl Seq {
        fn n(&mut self) -> u64 {
            self.0 += 1;
            self.0
        }
        fn u(&mut self) -> usize {
            self.n() as usize
        }
        fn packets(&mut self) -> PacketCounts {
            PacketCounts {
                ping: self.n(),
                find_node: self.n(),
                get_peers: self.n(),
                announce_peer: self.n(),
                sample_infohashes: self.n(),
                other: self.n(),
            }
        }
    }

    /// A `Stats` with every counter and gauge non-zero (struct literals without
    /// `..Default::default()`, so a new field fails to compile here until it is
    /// given a value and its metric a golden line).
    fn full_stats() -> Stats {
        let mut q = Seq(0);
        let mut faults = BTreeMap::new();
        for f in [
            Fault::Malformed(DecodeError::Bencode),
            Fault::Malformed(DecodeError::UnsortedKeys),
            Fault::UnknownTransaction,
            Fault::WrongAddress,
            Fault::BadResponse,
            Fault::BadToken,
            Fault::RateLimited,
            Fault::FilteredSource,
            Fault::FilteredAddress,
            Fault::SuspectId,
        ] {
            faults.insert(f, q.n());
        }
        let mut failures = BTreeMap::new();
        for r in [
            FailReason::ConnectRefused,
            FailReason::ConnectTimeout,
            FailReason::LocalError,
            FailReason::Malformed,
            FailReason::Rejected,
            FailReason::DhTimeout,
            FailReason::ClosedDuringMse,
            FailReason::MseBadPublicKey,
            FailReason::MseSyncNotFound,
            FailReason::MseSelectUnsupported,
            FailReason::MseStreamCorrupt,
            FailReason::MsePadTooLong,
        ] {
            failures.insert(r, q.n());
        }
        let dht = DhtStats {
            datagrams_in: q.n(),
            datagrams_out: q.n(),
            bytes_in: q.n(),
            bytes_out: q.n(),
            queries_in: q.packets(),
            queries_out: q.packets(),
            responses_in: q.n(),
            errors_in: q.n(),
            responses_out: q.n(),
            errors_out: q.n(),
            faults,
            timeouts_short: q.n(),
            timeouts_full: q.n(),
            dropped_tx_full: q.n(),
            dropped_filtered: q.n(),
            store_evictions: q.n(),
            rate_table_evictions: q.n(),
            dropped_lookups: q.n(),
            lookups_started: q.n(),
            lookups_done: q.n(),
            bootstrap_attempts: q.n(),
            unsorted_keys_accepted: q.n(),
            external_votes: q.n(),
            foreign_nodes: q.n(),
            external_votes_ignored: q.n(),
            external_address_changes: q.n(),
            identity_switches: q.n(),
        };
        let routing = RoutingStats {
            added: q.n(),
            removed: q.n(),
            rejected_bucket_full: q.n(),
            rejected_subnet: q.n(),
            rejected_table_full: q.n(),
            rejected_suspect: q.n(),
            splits: q.n(),
            rejected_own_id: q.n(),
            rejected_family: q.n(),
            rejected_id_in_use: q.n(),
            id_changes: q.n(),
            cached: q.n(),
            promoted: q.n(),
            evicted_failed: q.n(),
            replaced_bad: q.n(),
            displaced_unverified: q.n(),
            events_dropped: q.n(),
        };
        let fetch = FetchStats {
            started: q.n(),
            fetched: q.n(),
            failed: q.n(),
            jobs_rejected_full: q.n(),
            jobs_timed_out: q.n(),
            sessions_started: q.n(),
            sessions_ok: q.n(),
            sessions_failed: q.n(),
            sessions_cancelled: q.n(),
            peers_added: q.n(),
            peers_duplicate: q.n(),
            peers_dropped_cap: q.n(),
            peers_invalid: q.n(),
            peers_skipped_cache: q.n(),
            pex_received: q.n(),
            pieces_received: q.n(),
            bytes_in: q.n(),
            bytes_out: q.n(),
            v2_hash_matches: q.n(),
            cache_evictions: q.n(),
            stale_conn_events: q.n(),
            failures,
            local_backoffs: q.n(),
            encryption: magnetar_core::fetch::EncryptionStats {
                plaintext_attempts: q.n(),
                plaintext_ok: q.n(),
                plaintext_failed: q.n(),
                encrypted_attempts: q.n(),
                encrypted_ok: q.n(),
                encrypted_failed: q.n(),
                selected_rc4: q.n(),
                selected_plaintext: q.n(),
                retried_encrypted: q.n(),
                retried_plaintext: q.n(),
                dh_deferred: q.n(),
                modpows: q.n(),
            },
            transport: {
                use magnetar_core::fetch::{Transport, TransportChoice};
                let mut t = magnetar_core::fetch::TransportStats {
                    attempts: BTreeMap::new(),
                    connected: BTreeMap::new(),
                    ok: BTreeMap::new(),
                    failed: BTreeMap::new(),
                    chosen: BTreeMap::new(),
                    utp_unavailable: q.n(),
                    utp_waited: q.n(),
                    utp_write_overflow: q.n(),
                    utp_budget_waits: q.n(),
                    udp_contacts: q.u(),
                    udp_contacts_evicted: q.n(),
                    recontact_waiting: q.u(),
                    recontact_evicted: q.n(),
                    recontact_retries: q.n(),
                    recontact_no_room: q.n(),
                    recontact_fetched: q.n(),
                    recontact_failed: q.n(),
                };
                for tr in [Transport::Tcp, Transport::Utp] {
                    t.attempts.insert(tr, q.n());
                    t.connected.insert(tr, q.n());
                    t.ok.insert(tr, q.n());
                    t.failed.insert((tr, FailReason::ConnectRefused), q.n());
                    t.failed.insert((tr, FailReason::ConnectTimeout), q.n());
                }
                for c in [
                    (Transport::Tcp, TransportChoice::Default),
                    (Transport::Tcp, TransportChoice::Remembered),
                    (Transport::Tcp, TransportChoice::Fallback),
                    (Transport::Utp, TransportChoice::UdpContact),
                    (Transport::Utp, TransportChoice::PexUtp),
                    (Transport::Utp, TransportChoice::Remembered),
                    (Transport::Utp, TransportChoice::Fallback),
                    (Transport::Utp, TransportChoice::Holepunch),
                ] {
                    t.chosen.insert(c, q.n());
                }
                t
            },
            holepunch: magnetar_core::fetch::HolepunchStats {
                rendezvous_sent: q.n(),
                no_relay: q.n(),
                connects: q.n(),
                connects_unsolicited: q.n(),
                errors: [
                    "no_such_peer",
                    "not_connected",
                    "no_support",
                    "no_self",
                    "other",
                ]
                .into_iter()
                .map(|c| (c, q.n()))
                .collect(),
                errors_unsolicited: q.n(),
                unanswered: q.n(),
                attempts: q.n(),
                connected: q.n(),
                ok: q.n(),
                failed: q.n(),
                relay_sessions: q.n(),
                relay_requests: q.n(),
                malformed: q.n(),
                dropped: q.n(),
                crossed: q.n(),
                crossed_lost: q.n(),
                redials: q.n(),
            },
        };
        let crawl = CrawlStats {
            samples_sent: q.n(),
            sample_replies: q.n(),
            samples_received: q.n(),
            explore_sent: q.n(),
            new_from_announce: q.n(),
            new_from_get_peers: q.n(),
            new_from_sample: q.n(),
            duplicates: q.n(),
            book_nodes: q.u(),
            stored_estimate: q.n(),
            acquisitions_running: q.u(),
            acquisitions_queued: q.u(),
            book_full_drops: q.n(),
            bep51_yes: q.n(),
            bep51_no: q.n(),
            blacklisted: q.n(),
            budget_refused: q.n(),
            per_ip_refused: q.n(),
            ask_source_sent: q.n(),
            ask_source_hits: q.n(),
            acquisitions_started: q.n(),
            acquisitions_queued_drop: q.n(),
            acquire_no_peers: q.n(),
            fetched: q.n(),
            fetch_failed: q.n(),
            retries: q.n(),
            given_up: q.n(),
            retry_skips: q.n(),
            shard_offered: q.n(),
            shard_claimed: q.n(),
            shard_foreign_nodes: q.n(),
            candidates_deferred: q.n(),
            candidates_announced: q.n(),
            candidates_noseed: q.n(),
            candidates_dropped: q.n(),
            refresh_queued: q.n(),
            refresh_dropped: q.n(),
            refresh_started: q.n(),
            refresh_done: q.n(),
            refresh_waiting: q.u(),
            candidates_retried: q.n(),
            revived: q.n(),
            lookup_waits: q.n(),
            lookup_wait_drops: q.n(),
            lookup_wait_candidates_dropped: q.n(),
        };
        Stats {
            dht,
            routing,
            fetch,
            crawl,
            nodes: q.u(),
            dropped_outputs: q.n(),
            lookups_running: q.u(),
            transactions: q.u(),
            stored_infohashes: q.u(),
            tracker: magnetar_core::tracker::TrackerStats {
                asked: q.n(),
                queue_dropped: q.n(),
                unconfirmed: q.n(),
                skipped: q.n(),
                no_address: q.n(),
                requests: q.n(),
                retransmits: q.n(),
                announces: q.n(),
                scrapes: q.n(),
                peers: q.n(),
                peers_filtered: q.n(),
                timeouts: q.n(),
                refused: q.n(),
                udp_malformed: [(magnetar_core::tracker::udp::UdpError::Short, q.n())].into(),
                http_malformed: [(magnetar_core::tracker::http::HttpError::BadHead, q.n())].into(),
                unexpected: q.n(),
                connect_failures: q.n(),
                failed: q.n(),
            },
            utp: {
                use magnetar_core::utp::{UtpCloseReason, UtpFault, UtpStats};
                let mut faults = BTreeMap::new();
                for f in [
                    UtpFault::UnknownConnection,
                    UtpFault::UnexpectedPacket,
                    UtpFault::SeqOutOfWindow,
                    UtpFault::SynRefused,
                    UtpFault::SynCrossed,
                ] {
                    faults.insert(f, q.n());
                }
                let mut closed = BTreeMap::new();
                for r in [
                    UtpCloseReason::Finished,
                    UtpCloseReason::Reset,
                    UtpCloseReason::Refused,
                    UtpCloseReason::ConnectTimedOut,
                    UtpCloseReason::Aborted,
                ] {
                    closed.insert(r, q.n());
                }
                UtpStats {
                    datagrams_in: q.n(),
                    datagrams_out: q.n(),
                    bytes_in: q.n(),
                    bytes_out: q.n(),
                    faults,
                    connects: q.n(),
                    accepted: q.n(),
                    closed,
                    resets_sent: q.n(),
                    resets_limited: q.n(),
                    data_packets_out: q.n(),
                    retransmits: q.n(),
                    fast_resends: q.n(),
                    timeouts: q.n(),
                    window_probes: q.n(),
                    keepalives: q.n(),
                    duplicates_in: q.n(),
                    recv_window_drops: q.n(),
                    bytes_delivered: q.n(),
                    transmit_drops: q.n(),
                    event_drops: q.n(),
                    connections: q.u(),
                    half_open: q.u(),
                }
            },
        }
    }

    fn full_counters() -> RuntimeCounters {
        let mut q = Seq(1000);
        RuntimeCounters {
            infohashes_new: q.n(),
            infohashes_known: q.n(),
            acquire_full: q.n(),
            acquire_queued: q.n(),
            acquire_dropped: q.n(),
            udp_send_errors: q.n(),
            udp_send_would_block: q.n(),
            udp_recv_errors: q.n(),
            tcp_connect_local_errors: q.n(),
            emfile: q.n(),
            tcp_open: q.u(),
            dns_failures: q.n(),
            stream_dropped: q.n(),
            storage_waits: q.n(),
            storage_errors: q.n(),
        }
    }

    /// The whole `/metrics` text as the tokio runtime renders it with every
    /// counter non-zero (the mio runtime shows the same less `tokio_only`).
    fn full_text() -> String {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreOptions::new(dir.path())).unwrap();
        let writer = store.writer(WriterConfig::default()).unwrap();
        let mut ingest = Ingest::new(store, writer);
        // `crawl --sink bitmagnet`: its metrics (nothing is offered, so nothing is sent).
        ingest.set_bitmagnet(
            crate::sink::BitmagnetSink::start("http://127.0.0.1:9", Default::default()).unwrap(),
        );
        let counters = full_counters();
        // Every funnel step non-zero, so that each share lost is shown.
        let mut observed = crate::doctor::Observed::default();
        observed.connected = 3;
        observed.handshake = 2;
        observed.stored = 1;
        // The web server's counters, as `crawl --http` adds them.
        let web = magnetar_web::ServerCounters::default();
        let mut only = crawl::tokio_only(&counters);
        only.extend(super::http(&web));
        only.extend(crate::queue::metrics(
            magnetar_core::Shard::new(1, 3).unwrap(),
            true,
            &Default::default(),
        ));
        crawl::render_metrics(&full_stats(), &counters, 64, &mut ingest, only, &observed)
    }

    /// One sample line: name, labels, value.
    type Sample = (String, BTreeMap<String, String>, f64);

    /// Parses one sample line of the text format (0.0.4), labels unescaped.
    fn parse_sample(line: &str) -> Result<Sample, String> {
        let bad = |why: &str| format!("{why}: {line:?}");
        let name_end = line.find(['{', ' ']).ok_or_else(|| bad("no value"))?;
        let name = &line[..name_end];
        let valid_name = |s: &str| {
            !s.is_empty()
                && !s.starts_with(|c: char| c.is_ascii_digit())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        };
        if !valid_name(name) {
            return Err(bad("bad metric name"));
        }
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(r) = rest.strip_prefix('{') {
            rest = r;
            loop {
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let eq = rest.find('=').ok_or_else(|| bad("label without ="))?;
                let key = &rest[..eq];
                if !valid_name(key) || key.contains(':') {
                    return Err(bad("bad label name"));
                }
                rest = rest[eq + 1..]
                    .strip_prefix('"')
                    .ok_or_else(|| bad("label value not quoted"))?;
                let mut value = String::new();
                let mut chars = rest.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((i, '"')) => break i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            _ => return Err(bad("bad escape")),
                        },
                        Some((_, c)) => value.push(c),
                        None => return Err(bad("unterminated label value")),
                    }
                };
                if labels.insert(key.to_string(), value).is_some() {
                    return Err(bad("duplicate label"));
                }
                rest = &rest[end + 1..];
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
        }
        let value = rest
            .strip_prefix(' ')
            .ok_or_else(|| bad("no space before the value"))?;
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse::<f64>().map_err(|_| bad("bad value"))?,
        };
        Ok((name.to_string(), labels, value))
    }

    /// Parses a whole exposition (format 0.0.4) strictly: `# HELP` then `# TYPE`
    /// once per name, before its samples; the samples of one name together; no
    /// other comments (no OpenMetrics `# EOF`); no blank lines. Returns every
    /// sample with its name's type.
    fn parse(text: &str) -> Result<Vec<(Sample, String)>, String> {
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut helped = BTreeSet::new();
        let mut finished = BTreeSet::new();
        let mut current = String::new();
        let mut out = Vec::new();
        if !text.ends_with('\n') {
            return Err("no final newline".into());
        }
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or("");
                if !helped.insert(name.to_string()) {
                    return Err(format!("second HELP for {name}"));
                }
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, t) = rest.split_once(' ').ok_or("TYPE without a type")?;
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                    return Err(format!("unknown type {t} for {name}"));
                }
                if types.insert(name.to_string(), t.to_string()).is_some() {
                    return Err(format!("second TYPE for {name}"));
                }
            } else if line.starts_with('#') || line.is_empty() {
                return Err(format!("unexpected line {line:?}"));
            } else {
                let sample = parse_sample(line)?;
                let name = sample.0.clone();
                if name != current {
                    if !finished.insert(current.clone()) || finished.contains(&name) {
                        return Err(format!("samples of {name} not together"));
                    }
                    current = name.clone();
                }
                let t = types
                    .get(&name)
                    .cloned()
                    .ok_or(format!("{name} has no TYPE"))?;
                if !helped.contains(&name) {
                    return Err(format!("{name} has no HELP"));
                }
                out.push((sample, t));
            }
        }
        Ok(out)
    }

    /// The golden-file form: `TYPE name{k="v",…}`, one per sample, sorted.
    fn name_set(text: &str) -> BTreeSet<String> {
        let samples = parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let mut set = BTreeSet::new();
        for ((name, labels, _), t) in samples {
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            let line = format!("{t} {name}{{{}}}", labels.join(","));
            assert!(set.insert(line.clone()), "duplicate sample {line}");
        }
        set
    }

    #[test]
    fn names_labels_and_types_match_the_golden_file() {
        let got = name_set(&full_text());
        if std::env::var_os("MAGNETAR_UPDATE_GOLDEN").is_some() {
            let path = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/golden/metrics_names.txt"
            );
            let body: String = got.iter().map(|l| format!("{l}\n")).collect();
            std::fs::write(path, body).unwrap();
            return;
        }
        let want: BTreeSet<String> = GOLDEN.lines().map(str::to_string).collect();
        let missing: Vec<_> = want.difference(&got).collect();
        let extra: Vec<_> = got.difference(&want).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "missing {missing:#?}\nunexpected {extra:#?}"
        );
    }

    #[test]
    fn the_parser_rejects_what_is_not_the_text_format() {
        let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{k=\"v\\\"\"} 1\n";
        assert_eq!(parse(ok).unwrap().len(), 1);
        for bad in [
            "# HELP a A.\n# TYPE a counter\na 1\n# EOF\n",
            "# HELP a A.\n# TYPE a counter\na_total 1\n",
            "# HELP a A.\n# TYPE a counter\na 1\n# HELP b B.\n# TYPE b gauge\nb 1\na 2\n",
            "# HELP a A.\n# TYPE a counter\n# TYPE a counter\na 1\n",
            "# HELP a A.\n# TYPE a counter\na{k=v} 1\n",
            "# HELP a A.\n# TYPE a counter\na one\n",
            "# HELP a A.\n# TYPE a counter\na 1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    /// Moved from `magnetar_core::report` with the renderer; assertions kept.
    #[test]
    fn prometheus_is_well_formed() {
        let mut s = Stats::default();
        s.dht.fault(Fault::RateLimited);
        s.dht.queries_in.get_peers = 5;
        let text = prometheus(
            &s,
            &[Metric::gauge("x_total", "An \"extra\".", 1.5).with_label("k", "a\"b")],
        );
        assert!(text.contains("magnetar_dht_queries_in_total{method=\"get_peers\"} 5\n"));
        assert!(text.contains("magnetar_dht_faults_total{fault=\"RateLimited\"} 1\n"));
        assert!(text.contains("x_total{k=\"a\\\"b\"} 1.5\n"));
        // One HELP/TYPE per name, and every sample line has a name and a value.
        let mut seen = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(seen.insert(name.to_string()), "duplicate TYPE for {name}");
            } else if !line.starts_with('#') {
                let (name, value) = line.rsplit_once(' ').unwrap();
                assert!(!name.is_empty());
                value.parse::<f64>().unwrap();
            }
        }
        // And it reads back under the strict parser.
        parse(&text).unwrap();
    }

    #[test]
    fn help_text_and_values_are_written_as_before() {
        let mut s = Stats::default();
        s.dht.datagrams_in = 7;
        s.nodes = 3;
        let extra = [
            Metric::gauge("g_fraction", "A fraction.", 0.25),
            Metric::gauge("g_negative", "Below zero.", -2.0),
            Metric::gauge("g_multi", "Two lines\nand a \\.", 1.0),
        ];
        let text = prometheus(&s, &extra);
        for want in [
            // HELP exactly as given: no "." appended, no `_total` doubled.
            "# HELP magnetar_dht_datagrams_in_total UDP datagrams received.\n",
            "# TYPE magnetar_dht_datagrams_in_total counter\n",
            "magnetar_dht_datagrams_in_total 7\n",
            "# TYPE magnetar_nodes gauge\nmagnetar_nodes 3\n",
            "g_fraction 0.25\n",
            "g_negative -2\n",
            "# HELP g_multi Two lines\\nand a \\\\.\n",
        ] {
            assert!(text.contains(want), "no {want:?} in\n{text}");
        }
        assert!(!text.contains("_total_total"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        let samples = parse(&text).unwrap();
        let value = |n: &str| {
            samples
                .iter()
                .find(|((name, _, _), _)| name == n)
                .unwrap()
                .0
                 .2
        };
        assert_eq!(value("g_fraction"), 0.25);
        assert_eq!(value("magnetar_dht_datagrams_in_total"), 7.0);
    }

    #[test]
    fn a_name_split_across_the_list_is_written_as_one_family() {
        let extra = [
            Metric::counter("x_a_total", "A.", 1).with_label("k", "1"),
            Metric::gauge("x_b", "B.", 2.0),
            Metric::counter("x_a_total", "A.", 3).with_label("k", "2"),
        ];
        let text = prometheus(&Stats::default(), &extra);
        let samples = parse(&text).unwrap();
        let xa: Vec<f64> = samples
            .iter()
            .filter(|((n, _, _), t)| n == "x_a_total" && t == "counter")
            .map(|((_, _, v), _)| *v)
            .collect();
        assert_eq!(xa, [1.0, 3.0]);
    }

    #[test]
    fn a_counter_without_the_total_suffix_keeps_its_name() {
        let text = prometheus(
            &Stats::default(),
            &[Metric::counter("x_requests", "Odd name.", 4)],
        );
        assert!(
            text.contains("# TYPE x_requests untyped\nx_requests 4\n"),
            "{text}"
        );
        parse(&text).unwrap();
    }
}
