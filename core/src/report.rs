//! Pure rendering of the crawler's counters for operators: the status line and
//! Prometheus text. Shared by every runtime (no IO here).
//!
//! A runtime takes a [`StatusSample`] every few seconds (from [`Stats`] plus the few
//! numbers only it knows, such as how many discovered infohashes storage did not
//! have), and renders [`status_line`] from two consecutive samples. For
//! `/metrics` it renders [`prometheus`] from the latest [`Stats`] plus its own
//! [`Metric`]s (storage counts, socket errors, …).
//!
//! ```
//! use magnetar_core::report::{prometheus, status_line, Metric, StatusSample};
//! use magnetar_core::{Stats, Timestamp};
//! let s = Stats::default();
//! let a = StatusSample::new(Timestamp::ZERO, &s, 0);
//! let b = StatusSample::new(Timestamp::from_secs(10), &s, 0);
//! assert!(status_line(&a, &b).starts_with("nodes 0"));
//! let text = prometheus(&s, &[Metric::gauge("magnetar_storage_torrents", "Torrents stored.", 3.0)]);
//! assert!(text.contains("magnetar_storage_torrents 3\n"));
//! ```

use std::fmt::Write;

use crate::stats::{PacketCounts, Stats};
use crate::time::Timestamp;

/// The numbers the status line shows, at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusSample {
    pub at: Timestamp,
    /// Nodes in the routing tables (all identities).
    pub nodes: usize,
    /// Nodes in the crawl's node book.
    pub book: usize,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    /// Distinct infohashes seen (new in core's dedup window).
    pub infohashes_seen: u64,
    /// Of those, the ones first seen in a get_peers query to us: candidates, not
    /// confirmed torrents (libtorrent, for one, sends get_peers for random targets
    /// when it refreshes its routing table). Announces and BEP 51 samples name
    /// torrents that someone has; fetched metadata confirms any of them.
    pub infohashes_get_peers: u64,
    /// Of those, the ones storage did not have (the runtime counts these).
    pub infohashes_new: u64,
    pub fetched: u64,
    pub failed: u64,
    /// Infohashes whose metadata fetch is running or queued.
    pub in_flight: u64,
    /// Peer connections open.
    pub sessions: u64,
}

impl StatusSample {
    /// A sample from the crawler's counters. `infohashes_new` is the runtime's count
    /// of discoveries that storage did not know.
    pub fn new(at: Timestamp, s: &Stats, infohashes_new: u64) -> Self {
        let f = &s.fetch;
        let ended = f.fetched + f.failed;
        let sessions_ended = f.sessions_ok + f.sessions_failed + f.sessions_cancelled;
        StatusSample {
            at,
            nodes: s.nodes,
            book: s.crawl.book_nodes,
            datagrams_in: s.dht.datagrams_in,
            datagrams_out: s.dht.datagrams_out,
            infohashes_seen: s.crawl.new_from_announce
                + s.crawl.new_from_get_peers
                + s.crawl.new_from_sample,
            infohashes_get_peers: s.crawl.new_from_get_peers,
            infohashes_new,
            fetched: f.fetched,
            failed: f.failed,
            in_flight: f.started.saturating_sub(ended),
            sessions: f.sessions_started.saturating_sub(sessions_ended),
        }
    }
}

fn per_sec(a: u64, b: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        0.0
    } else {
        b.saturating_sub(a) as f64 / secs
    }
}

/// One status line from two samples (`prev` earlier than `cur`): nodes known,
/// packets per second in and out, infohashes seen (of which get_peers candidates)
/// and new, metadata fetched,
/// failed and in flight, and the fetch rate per minute over the interval.
pub fn status_line(prev: &StatusSample, cur: &StatusSample) -> String {
    let secs = cur.at.since(prev.at).as_secs_f64();
    format!(
        "nodes {} (book {}) | pkt/s in {:.0} out {:.0} | infohashes seen {} (get_peers {}) new {} | \
         metadata fetched {} failed {} in flight {} (peers {}) | {:.1} fetched/min, {:.1} new ih/min",
        cur.nodes,
        cur.book,
        per_sec(prev.datagrams_in, cur.datagrams_in, secs),
        per_sec(prev.datagrams_out, cur.datagrams_out, secs),
        cur.infohashes_seen,
        cur.infohashes_get_peers,
        cur.infohashes_new,
        cur.fetched,
        cur.failed,
        cur.in_flight,
        cur.sessions,
        per_sec(prev.fetched, cur.fetched, secs) * 60.0,
        per_sec(prev.infohashes_new, cur.infohashes_new, secs) * 60.0,
    )
}

/// Prometheus metric kind.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// A metric the runtime adds to the core's (storage counts, socket errors, …).
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    /// Label pairs (`[]` for none).
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Metric {
    pub fn counter(name: &str, help: &str, value: u64) -> Self {
        Metric {
            name: name.into(),
            help: help.into(),
            kind: Kind::Counter,
            labels: Vec::new(),
            value: value as f64,
        }
    }
    pub fn gauge(name: &str, help: &str, value: f64) -> Self {
        Metric {
            name: name.into(),
            help: help.into(),
            kind: Kind::Gauge,
            labels: Vec::new(),
            value,
        }
    }
    pub fn with_label(mut self, k: &str, v: &str) -> Self {
        self.labels.push((k.into(), v.into()));
        self
    }
}

/// Writes Prometheus text exposition (format 0.0.4). Samples of one name must be
/// consecutive; `# HELP`/`# TYPE` are written once per name.
struct Writer {
    out: String,
    last: String,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl Writer {
    fn sample(&mut self, name: &str, help: &str, kind: Kind, labels: &[(&str, &str)], v: f64) {
        if self.last != name {
            let t = match kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(self.out, "# HELP {name} {help}");
            let _ = writeln!(self.out, "# TYPE {name} {t}");
            self.last = name.to_string();
        }
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", fmt_value(v));
    }
    fn counter(&mut self, name: &str, help: &str, v: u64) {
        self.sample(name, help, Kind::Counter, &[], v as f64);
    }
    fn gauge(&mut self, name: &str, help: &str, v: f64) {
        self.sample(name, help, Kind::Gauge, &[], v);
    }
    fn methods(&mut self, name: &str, help: &str, p: &PacketCounts) {
        for (m, v) in [
            ("ping", p.ping),
            ("find_node", p.find_node),
            ("get_peers", p.get_peers),
            ("announce_peer", p.announce_peer),
            ("sample_infohashes", p.sample_infohashes),
            ("other", p.other),
        ] {
            self.sample(name, help, Kind::Counter, &[("method", m)], v as f64);
        }
    }
}

/// Every core counter, then the runtime's `extra` metrics, as Prometheus text.
pub fn prometheus(s: &Stats, extra: &[Metric]) -> String {
    let mut w = Writer {
        out: String::with_capacity(8192),
        last: String::new(),
    };
    let d = &s.dht;
    w.counter(
        "magnetar_dht_datagrams_in_total",
        "UDP datagrams received.",
        d.datagrams_in,
    );
    w.counter(
        "magnetar_dht_datagrams_out_total",
        "UDP datagrams sent.",
        d.datagrams_out,
    );
    w.counter(
        "magnetar_dht_bytes_in_total",
        "UDP payload bytes received.",
        d.bytes_in,
    );
    w.counter(
        "magnetar_dht_bytes_out_total",
        "UDP payload bytes sent.",
        d.bytes_out,
    );
    w.methods(
        "magnetar_dht_queries_in_total",
        "KRPC queries received, by method.",
        &d.queries_in,
    );
    w.methods(
        "magnetar_dht_queries_out_total",
        "KRPC queries sent, by method.",
        &d.queries_out,
    );
    w.counter(
        "magnetar_dht_responses_in_total",
        "KRPC responses received.",
        d.responses_in,
    );
    w.counter(
        "magnetar_dht_errors_in_total",
        "KRPC errors received.",
        d.errors_in,
    );
    w.counter(
        "magnetar_dht_responses_out_total",
        "KRPC responses sent.",
        d.responses_out,
    );
    w.counter(
        "magnetar_dht_errors_out_total",
        "KRPC errors sent.",
        d.errors_out,
    );
    for (f, v) in &d.faults {
        let label = format!("{f:?}");
        w.sample(
            "magnetar_dht_faults_total",
            "Faults by remote nodes, by kind.",
            Kind::Counter,
            &[("fault", &label)],
            *v as f64,
        );
    }
    w.counter(
        "magnetar_dht_timeouts_short_total",
        "Queries past the short timeout.",
        d.timeouts_short,
    );
    w.counter(
        "magnetar_dht_timeouts_full_total",
        "Queries past the full timeout.",
        d.timeouts_full,
    );
    w.counter(
        "magnetar_dht_dropped_tx_full_total",
        "Queries dropped: transaction table full.",
        d.dropped_tx_full,
    );
    w.counter(
        "magnetar_dht_dropped_filtered_total",
        "Datagrams not sent: address filtered.",
        d.dropped_filtered,
    );
    w.counter(
        "magnetar_dht_store_evictions_total",
        "Announce store evictions.",
        d.store_evictions,
    );
    w.counter(
        "magnetar_dht_rate_table_evictions_total",
        "Rate limiter table evictions.",
        d.rate_table_evictions,
    );
    w.counter(
        "magnetar_dht_dropped_lookups_total",
        "Lookups not started: too many running.",
        d.dropped_lookups,
    );
    w.counter(
        "magnetar_dht_lookups_started_total",
        "Lookups started.",
        d.lookups_started,
    );
    w.counter(
        "magnetar_dht_lookups_done_total",
        "Lookups finished.",
        d.lookups_done,
    );
    w.counter(
        "magnetar_dht_bootstrap_attempts_total",
        "Bootstrap attempts.",
        d.bootstrap_attempts,
    );
    w.counter(
        "magnetar_dht_unsorted_keys_accepted_total",
        "Datagrams accepted with unsorted keys.",
        d.unsorted_keys_accepted,
    );
    w.counter(
        "magnetar_dht_external_votes_total",
        "External address votes received.",
        d.external_votes,
    );

    let r = &s.routing;
    w.counter(
        "magnetar_routing_added_total",
        "Nodes added to routing tables.",
        r.added,
    );
    w.counter(
        "magnetar_routing_removed_total",
        "Nodes removed from routing tables.",
        r.removed,
    );
    for (why, v) in [
        ("bucket_full", r.rejected_bucket_full),
        ("subnet", r.rejected_subnet),
        ("table_full", r.rejected_table_full),
        ("suspect", r.rejected_suspect),
        ("own_id", r.rejected_own_id),
        ("family", r.rejected_family),
        ("id_in_use", r.rejected_id_in_use),
    ] {
        w.sample(
            "magnetar_routing_rejected_total",
            "Nodes not added to routing tables, by reason.",
            Kind::Counter,
            &[("reason", why)],
            v as f64,
        );
    }
    w.counter("magnetar_routing_splits_total", "Bucket splits.", r.splits);
    w.counter(
        "magnetar_routing_id_changes_total",
        "Node ids seen changing at a known address.",
        r.id_changes,
    );
    w.counter(
        "magnetar_routing_cached_total",
        "Newcomers parked in a replacement cache.",
        r.cached,
    );
    w.counter(
        "magnetar_routing_promoted_total",
        "Cached nodes moved into a bucket.",
        r.promoted,
    );
    w.counter(
        "magnetar_routing_evicted_failed_total",
        "Bucket nodes removed for failing.",
        r.evicted_failed,
    );
    w.counter(
        "magnetar_routing_replaced_bad_total",
        "Bad nodes replaced by a newcomer.",
        r.replaced_bad,
    );
    w.counter(
        "magnetar_routing_displaced_unverified_total",
        "Unverified nodes displaced by a BEP 42-verified one.",
        r.displaced_unverified,
    );
    w.counter(
        "magnetar_routing_events_dropped_total",
        "Routing events dropped: queue full.",
        r.events_dropped,
    );

    let f = &s.fetch;
    w.counter(
        "magnetar_fetch_started_total",
        "Metadata fetches started.",
        f.started,
    );
    w.counter(
        "magnetar_fetch_fetched_total",
        "Metadata fetched and verified.",
        f.fetched,
    );
    w.counter(
        "magnetar_fetch_failed_total",
        "Metadata fetches that failed.",
        f.failed,
    );
    w.counter(
        "magnetar_fetch_jobs_rejected_full_total",
        "Fetches refused: too many jobs.",
        f.jobs_rejected_full,
    );
    w.counter(
        "magnetar_fetch_jobs_timed_out_total",
        "Fetches past their deadline.",
        f.jobs_timed_out,
    );
    w.counter(
        "magnetar_fetch_sessions_started_total",
        "Peer sessions started.",
        f.sessions_started,
    );
    w.counter(
        "magnetar_fetch_sessions_ok_total",
        "Peer sessions that delivered metadata.",
        f.sessions_ok,
    );
    w.counter(
        "magnetar_fetch_sessions_failed_total",
        "Peer sessions that failed.",
        f.sessions_failed,
    );
    w.counter(
        "magnetar_fetch_sessions_cancelled_total",
        "Peer sessions cancelled.",
        f.sessions_cancelled,
    );
    w.counter(
        "magnetar_fetch_peers_added_total",
        "Peers queued for fetches.",
        f.peers_added,
    );
    w.counter(
        "magnetar_fetch_peers_duplicate_total",
        "Duplicate peers ignored.",
        f.peers_duplicate,
    );
    w.counter(
        "magnetar_fetch_peers_dropped_cap_total",
        "Peers dropped over the per-infohash cap.",
        f.peers_dropped_cap,
    );
    w.counter(
        "magnetar_fetch_peers_invalid_total",
        "Invalid peer addresses ignored.",
        f.peers_invalid,
    );
    w.counter(
        "magnetar_fetch_peers_skipped_cache_total",
        "Peers skipped: known not to serve metadata.",
        f.peers_skipped_cache,
    );
    w.counter(
        "magnetar_fetch_pex_received_total",
        "PEX contacts received.",
        f.pex_received,
    );
    w.counter(
        "magnetar_fetch_pieces_received_total",
        "Metadata pieces received.",
        f.pieces_received,
    );
    w.counter(
        "magnetar_fetch_bytes_in_total",
        "Peer bytes received.",
        f.bytes_in,
    );
    w.counter(
        "magnetar_fetch_bytes_out_total",
        "Peer bytes sent.",
        f.bytes_out,
    );
    w.counter(
        "magnetar_fetch_v2_hash_matches_total",
        "Metadata matched by truncated SHA-256.",
        f.v2_hash_matches,
    );
    w.counter(
        "magnetar_fetch_cache_evictions_total",
        "Peer capability cache evictions.",
        f.cache_evictions,
    );
    w.counter(
        "magnetar_fetch_stale_conn_events_total",
        "Events for unknown connections.",
        f.stale_conn_events,
    );
    w.counter(
        "magnetar_fetch_local_backoffs_total",
        "Connects that failed on our side (e.g. EMFILE): peer kept, new connects paused.",
        f.local_backoffs,
    );
    for (reason, v) in &f.failures {
        let label = format!("{reason:?}");
        w.sample(
            "magnetar_fetch_session_failures_total",
            "Peer session failures, by reason.",
            Kind::Counter,
            &[("reason", &label)],
            *v as f64,
        );
    }

    let c = &s.crawl;
    w.counter(
        "magnetar_crawl_samples_sent_total",
        "sample_infohashes queries sent.",
        c.samples_sent,
    );
    w.counter(
        "magnetar_crawl_sample_replies_total",
        "sample_infohashes replies.",
        c.sample_replies,
    );
    w.counter(
        "magnetar_crawl_samples_received_total",
        "Infohashes received in samples.",
        c.samples_received,
    );
    w.counter(
        "magnetar_crawl_explore_sent_total",
        "Exploration find_node queries sent.",
        c.explore_sent,
    );
    for (src, v) in [
        ("announce", c.new_from_announce),
        ("get_peers", c.new_from_get_peers),
        ("sample", c.new_from_sample),
    ] {
        w.sample(
            "magnetar_crawl_infohashes_new_total",
            "Infohashes new to the dedup window, by source.",
            Kind::Counter,
            &[("source", src)],
            v as f64,
        );
    }
    w.counter(
        "magnetar_crawl_duplicates_total",
        "Infohashes already in the dedup window.",
        c.duplicates,
    );
    w.gauge(
        "magnetar_crawl_book_nodes",
        "Nodes in the crawl node book.",
        c.book_nodes as f64,
    );
    w.counter(
        "magnetar_crawl_book_full_drops_total",
        "Nodes dropped: node book full.",
        c.book_full_drops,
    );
    w.counter(
        "magnetar_crawl_bep51_yes_total",
        "Nodes found to support BEP 51.",
        c.bep51_yes,
    );
    w.counter(
        "magnetar_crawl_bep51_no_total",
        "Nodes found not to support BEP 51.",
        c.bep51_no,
    );
    w.counter(
        "magnetar_crawl_blacklisted_total",
        "Addresses blacklisted.",
        c.blacklisted,
    );
    w.counter(
        "magnetar_crawl_budget_refused_total",
        "Queries held back by the packet budget.",
        c.budget_refused,
    );
    w.counter(
        "magnetar_crawl_per_ip_refused_total",
        "Queries held back by per-IP pacing.",
        c.per_ip_refused,
    );
    w.counter(
        "magnetar_crawl_ask_source_sent_total",
        "get_peers sent to the sampling node.",
        c.ask_source_sent,
    );
    w.counter(
        "magnetar_crawl_ask_source_hits_total",
        "Sampling nodes that had peers.",
        c.ask_source_hits,
    );
    w.counter(
        "magnetar_crawl_acquisitions_started_total",
        "Acquisitions started.",
        c.acquisitions_started,
    );
    w.counter(
        "magnetar_crawl_acquisitions_queued_drop_total",
        "Acquisitions dropped: queue full.",
        c.acquisitions_queued_drop,
    );
    w.counter(
        "magnetar_crawl_acquire_no_peers_total",
        "Acquisitions that found no peers.",
        c.acquire_no_peers,
    );
    w.counter(
        "magnetar_crawl_fetched_total",
        "Acquisitions that fetched metadata.",
        c.fetched,
    );
    w.counter(
        "magnetar_crawl_fetch_failed_total",
        "Acquisitions whose fetch failed.",
        c.fetch_failed,
    );
    w.counter(
        "magnetar_crawl_retries_total",
        "Acquisitions retried.",
        c.retries,
    );
    w.counter(
        "magnetar_crawl_given_up_total",
        "Acquisitions given up.",
        c.given_up,
    );
    w.counter(
        "magnetar_crawl_retry_skips_total",
        "Acquire calls skipped during backoff.",
        c.retry_skips,
    );
    w.counter(
        "magnetar_crawl_candidates_deferred_total",
        "get_peers candidates held back waiting for their announce.",
        c.candidates_deferred,
    );
    w.counter(
        "magnetar_crawl_candidates_announced_total",
        "Deferred candidates whose announce arrived (no peer search).",
        c.candidates_announced,
    );
    w.counter(
        "magnetar_crawl_candidates_dropped_total",
        "get_peers candidates with no peers, given up at once.",
        c.candidates_dropped,
    );
    w.gauge(
        "magnetar_crawl_stored_estimate",
        "Infohashes the sampled nodes report storing (sum of BEP 51 num).",
        c.stored_estimate as f64,
    );

    w.gauge("magnetar_nodes", "Nodes in routing tables.", s.nodes as f64);
    w.counter(
        "magnetar_dropped_outputs_total",
        "Outputs dropped: output queue full.",
        s.dropped_outputs,
    );
    w.gauge(
        "magnetar_lookups_running",
        "Lookups running.",
        s.lookups_running as f64,
    );
    w.gauge(
        "magnetar_transactions",
        "Outstanding KRPC transactions.",
        s.transactions as f64,
    );
    w.gauge(
        "magnetar_stored_infohashes",
        "Infohashes in the announce store.",
        s.stored_infohashes as f64,
    );

    for m in extra {
        let labels: Vec<(&str, &str)> = m
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        w.sample(&m.name, &m.help, m.kind, &labels, m.value);
    }
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::Fault;

    #[test]
    fn status_line_rates() {
        let mut s = Stats::default();
        let a = StatusSample::new(Timestamp::ZERO, &s, 0);
        s.dht.datagrams_in = 1000;
        s.dht.datagrams_out = 500;
        s.fetch.started = 10;
        s.fetch.fetched = 3;
        s.fetch.failed = 2;
        s.nodes = 42;
        s.crawl.new_from_sample = 5;
        s.crawl.new_from_get_peers = 4;
        let b = StatusSample::new(Timestamp::from_secs(10), &s, 7);
        let line = status_line(&a, &b);
        assert!(line.contains("nodes 42"), "{line}");
        assert!(line.contains("in 100 out 50"), "{line}");
        assert!(line.contains("fetched 3 failed 2 in flight 5"), "{line}");
        assert!(line.contains("18.0 fetched/min"), "{line}");
        assert!(line.contains("seen 9 (get_peers 4) new 7"), "{line}");
        // A zero interval does not divide by zero.
        assert!(status_line(&b, &b).contains("in 0 out 0"));
    }

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
    }
}
