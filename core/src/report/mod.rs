//! The crawler's counters for operators, as data: the status line and the
//! metric samples behind `/metrics`. Shared by every runtime (no IO here, and no
//! text format: the runtime renders [`Family`]s with a Prometheus library).
//!
//! A runtime takes a [`StatusSample`] every few seconds (from [`Stats`] plus the few
//! numbers only it knows, such as how many discovered infohashes storage did not
//! have), and renders [`status_line`] from two consecutive samples. For
//! `/metrics` it takes [`metrics`] of the latest [`Stats`], appends its own
//! [`Metric`]s (storage counts, socket errors, …), groups them with [`families`]
//! and renders those.
//!
//! ```
//! use magnetar_core::report::{families, metrics, status_line, Kind, Metric, StatusSample};
//! use magnetar_core::{Stats, Timestamp};
//! let s = Stats::default();
//! let a = StatusSample::new(Timestamp::ZERO, &s, 0);
//! let b = StatusSample::new(Timestamp::from_secs(10), &s, 0);
//! assert!(status_line(&a, &b).starts_with("nodes 0"));
//! let mut all = metrics(&s);
//! all.push(Metric::gauge("magnetar_storage_torrents", "Torrents stored.", 3.0));
//! let fams = families(all);
//! let last = fams.last().unwrap();
//! assert_eq!((last.name.as_str(), last.kind), ("magnetar_storage_torrents", Kind::Gauge));
//! assert_eq!(last.samples[0].value, 3.0);
//! ```

use std::collections::BTreeMap;

use crate::fetch::{Transport, TransportStats};
use crate::stats::{PacketCounts, Stats};
use crate::time::Timestamp;

/// The numbers the status line shows, at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusSample {
    /// When the sample was taken.
    pub at: Timestamp,
    /// Nodes in the routing tables (all identities).
    pub nodes: usize,
    /// Nodes in the crawl's node book.
    pub book: usize,
    /// UDP datagrams received so far.
    pub datagrams_in: u64,
    /// UDP datagrams sent so far.
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
    /// Metadata fetched and verified so far.
    pub fetched: u64,
    /// Metadata fetches that failed so far.
    pub failed: u64,
    /// Infohashes whose metadata fetch is running or queued.
    pub in_flight: u64,
    /// Peer connections open.
    pub sessions: u64,
    /// Peer sessions that delivered metadata and that failed, over TCP.
    pub tcp_ok: u64,
    /// See `tcp_ok`.
    pub tcp_failed: u64,
    /// Peer sessions that delivered metadata and that failed, over uTP.
    pub utp_ok: u64,
    /// See `utp_ok`.
    pub utp_failed: u64,
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
            tcp_ok: TransportStats::get(&f.transport.ok, Transport::Tcp),
            tcp_failed: f.transport.failed_total(Transport::Tcp),
            utp_ok: TransportStats::get(&f.transport.ok, Transport::Utp),
            utp_failed: f.transport.failed_total(Transport::Utp),
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

/// `ok/ended (percent)` of sessions over one transport, since start.
fn ratio(ok: u64, failed: u64) -> String {
    let ended = ok.saturating_add(failed);
    if ended == 0 {
        return "0/0".to_owned();
    }
    format!("{ok}/{ended} ({:.0}%)", ok as f64 * 100.0 / ended as f64)
}

/// One status line from two samples (`prev` earlier than `cur`): nodes known,
/// packets per second in and out, infohashes seen (of which get_peers candidates)
/// and new, metadata fetched,
/// failed and in flight, the peer sessions' success ratio by transport (those
/// that delivered metadata of those ended, since start), and the fetch rate per
/// minute over the interval.
pub fn status_line(prev: &StatusSample, cur: &StatusSample) -> String {
    let secs = cur.at.since(prev.at).as_secs_f64();
    format!(
        "nodes {} (book {}) | pkt/s in {:.0} out {:.0} | infohashes seen {} (get_peers {}) new {} | \
         metadata fetched {} failed {} in flight {} (peers {}) | sessions ok tcp {} utp {} | {:.1} fetched/min, {:.1} new ih/min",
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
        ratio(cur.tcp_ok, cur.tcp_failed),
        ratio(cur.utp_ok, cur.utp_failed),
        per_sec(prev.fetched, cur.fetched, secs) * 60.0,
        per_sec(prev.infohashes_new, cur.infohashes_new, secs) * 60.0,
    )
}

/// Prometheus metric type. Only the two that magnetar exposes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A count that only goes up (its name ends in `_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
}

/// One sample with its metric's name, help and type: what the core exports for
/// its counters ([`metrics`]) and what a runtime adds to them (storage counts,
/// socket errors, …).
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// Metric name exactly as scraped (counters end in `_total`).
    pub name: String,
    /// The `# HELP` text.
    pub help: String,
    /// The `# TYPE`.
    pub kind: Kind,
    /// Label pairs (`[]` for none).
    pub labels: Vec<(String, String)>,
    /// The sample's value.
    pub value: f64,
}

impl Metric {
    /// A counter without labels. By Prometheus convention (and so that a
    /// library that appends the suffix keeps the name) `name` ends in `_total`.
    pub fn counter(name: &str, help: &str, value: u64) -> Self {
        Metric {
            name: name.into(),
            help: help.into(),
            kind: Kind::Counter,
            labels: Vec::new(),
            value: value as f64,
        }
    }

    /// A gauge without labels.
    pub fn gauge(name: &str, help: &str, value: f64) -> Self {
        Metric {
            name: name.into(),
            help: help.into(),
            kind: Kind::Gauge,
            labels: Vec::new(),
            value,
        }
    }

    /// The same metric with one more label pair.
    pub fn with_label(mut self, k: &str, v: &str) -> Self {
        self.labels.push((k.into(), v.into()));
        self
    }
}

/// One sample of a [`Family`]: its labels and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Label pairs (`[]` for none), in the order given.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// All samples of one metric name: what a text exposition writes under one
/// `# HELP` and `# TYPE`.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    /// Metric name exactly as scraped.
    pub name: String,
    /// The `# HELP` text (of the name's first sample).
    pub help: String,
    /// The `# TYPE` (of the name's first sample).
    pub kind: Kind,
    /// The samples, in the order given; never empty.
    pub samples: Vec<Sample>,
}

/// Groups samples by name into families, in the order each name first appears;
/// a family takes the help and type of its first sample. A name with no sample
/// (an empty fault map, say) has no family, as it has no line in the text.
pub fn families(metrics: impl IntoIterator<Item = Metric>) -> Vec<Family> {
    let mut out: Vec<Family> = Vec::new();
    // Name -> index in `out`. Names usually arrive together, so the last family
    // is checked first.
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for m in metrics {
        let sample = Sample {
            labels: m.labels,
            value: m.value,
        };
        let at = match out.last() {
            Some(f) if f.name == m.name => Some(out.len() - 1),
            _ => index.get(&m.name).copied(),
        };
        match at.and_then(|i| out.get_mut(i)) {
            Some(f) => f.samples.push(sample),
            None => {
                index.insert(m.name.clone(), out.len());
                out.push(Family {
                    name: m.name,
                    help: m.help,
                    kind: m.kind,
                    samples: vec![sample],
                });
            }
        }
    }
    out
}

/// Collects the samples [`metrics`] returns.
struct List(Vec<Metric>);

impl List {
    fn counter(&mut self, name: &str, help: &str, v: u64) {
        self.0.push(Metric::counter(name, help, v));
    }
    fn gauge(&mut self, name: &str, help: &str, v: f64) {
        self.0.push(Metric::gauge(name, help, v));
    }
    fn labelled(&mut self, name: &str, help: &str, label: (&str, &str), v: u64) {
        self.0
            .push(Metric::counter(name, help, v).with_label(label.0, label.1));
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
            self.labelled(name, help, ("method", m), v);
        }
    }
}

/// Every core counter and gauge as samples, the samples of one name together:
/// the core's part of `/metrics`. Names, labels and types are what dashboards
/// query; keep them stable. The fault and session-failure families have one
/// sample per kind seen so far (none before the first).
pub fn metrics(s: &Stats) -> Vec<Metric> {
    let mut w = List(Vec::with_capacity(160));
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
        w.labelled(
            "magnetar_dht_faults_total",
            "Faults by remote nodes, by kind.",
            ("fault", &label),
            *v,
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
    w.counter(
        "magnetar_dht_external_votes_ignored_total",
        "External address votes ignored (private address, wrong family, network already voted).",
        d.external_votes_ignored,
    );
    w.counter(
        "magnetar_dht_external_address_changes_total",
        "Times the external address vote settled on a new address.",
        d.external_address_changes,
    );
    w.counter(
        "magnetar_dht_identity_switches_total",
        "Identities that took a new BEP 42 node id for a settled external address.",
        d.identity_switches,
    );
    w.counter(
        "magnetar_dht_foreign_nodes_total",
        "Nodes of the other address family in replies, handed to that family's identity.",
        d.foreign_nodes,
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
        w.labelled(
            "magnetar_routing_rejected_total",
            "Nodes not added to routing tables, by reason.",
            ("reason", why),
            v,
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
        "Peer addresses refused by the address filter (port 0, bogon, private).",
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
    let e = &f.encryption;
    // One loop per family: a family's samples stay together.
    let modes = [
        (
            "plaintext",
            [e.plaintext_attempts, e.plaintext_ok, e.plaintext_failed],
        ),
        (
            "encrypted",
            [e.encrypted_attempts, e.encrypted_ok, e.encrypted_failed],
        ),
    ];
    for (i, name, help) in [
        (
            0,
            "magnetar_fetch_encryption_attempts_total",
            "Peer sessions started, by handshake (plaintext or MSE).",
        ),
        (
            1,
            "magnetar_fetch_encryption_ok_total",
            "Peer sessions whose handshake (plaintext, or MSE) completed, by handshake.",
        ),
        (
            2,
            "magnetar_fetch_encryption_failed_total",
            "Peer sessions that failed before their handshake completed, by handshake (reasons in magnetar_fetch_session_failures_total).",
        ),
    ] {
        for (mode, v) in &modes {
            w.labelled(name, help, ("mode", mode), v[i]);
        }
    }
    for (method, v) in [("rc4", e.selected_rc4), ("plaintext", e.selected_plaintext)] {
        w.labelled(
            "magnetar_fetch_encryption_selected_total",
            "Completed MSE handshakes, by the method the peer selected.",
            ("method", method),
            v,
        );
    }
    for (to, v) in [
        ("encrypted", e.retried_encrypted),
        ("plaintext", e.retried_plaintext),
    ] {
        w.labelled(
            "magnetar_fetch_encryption_retries_total",
            "Peers that refused one handshake and were retried with the other.",
            ("to", to),
            v,
        );
    }
    w.counter(
        "magnetar_fetch_dh_deferred_total",
        "Connections that waited for the Diffie-Hellman budget (--max-dh-per-sec).",
        e.dh_deferred,
    );
    w.counter(
        "magnetar_fetch_dh_modpows_total",
        "Modular exponentiations done for MSE.",
        e.modpows,
    );
    let t = &f.transport;
    for (name, help, map) in [
        (
            "magnetar_fetch_transport_attempts_total",
            "Peer sessions started, by transport (tcp, utp).",
            &t.attempts,
        ),
        (
            "magnetar_fetch_transport_connected_total",
            "Peer sessions whose transport connected, by transport.",
            &t.connected,
        ),
        (
            "magnetar_fetch_transport_ok_total",
            "Peer sessions that delivered verified metadata, by transport.",
            &t.ok,
        ),
    ] {
        for tr in [Transport::Tcp, Transport::Utp] {
            w.labelled(
                name,
                help,
                ("transport", tr.name()),
                TransportStats::get(map, tr),
            );
        }
    }
    for ((tr, reason), v) in &t.failed {
        let label = format!("{reason:?}");
        w.0.push(
            Metric::counter(
                "magnetar_fetch_transport_failures_total",
                "Peer session failures, by transport and reason.",
                *v,
            )
            .with_label("transport", tr.name())
            .with_label("reason", &label),
        );
    }
    for ((tr, choice), v) in &t.chosen {
        let label = format!("{choice:?}");
        w.0.push(
            Metric::counter(
                "magnetar_fetch_transport_chosen_total",
                "Peer sessions by transport and why it was chosen (Default: TCP first; UdpContact: the peer talked to us over UDP; PexUtp; Remembered; Fallback: the other one failed to connect).",
                *v,
            )
            .with_label("transport", tr.name())
            .with_label("choice", &label),
        );
    }
    w.counter(
        "magnetar_fetch_utp_unavailable_total",
        "uTP attempts the socket manager's caps refused (failed as local errors).",
        t.utp_unavailable,
    );
    w.counter(
        "magnetar_fetch_utp_waited_total",
        "uTP attempts that found the socket manager's caps full and waited for a slot.",
        t.utp_waited,
    );
    w.counter(
        "magnetar_fetch_utp_write_overflow_total",
        "uTP streams aborted: a write did not fit the send buffer.",
        t.utp_write_overflow,
    );
    w.counter(
        "magnetar_fetch_utp_budget_waits_total",
        "Times uTP datagrams waited for the transfer budget (--utp-packets-per-sec).",
        t.utp_budget_waits,
    );
    w.gauge(
        "magnetar_fetch_udp_contacts",
        "Peers heard over UDP recently, remembered for the connection strategy.",
        t.udp_contacts as f64,
    );
    w.counter(
        "magnetar_fetch_udp_contacts_evicted_total",
        "UDP contacts forgotten to make room (oldest first).",
        t.udp_contacts_evicted,
    );
    w.gauge(
        "magnetar_fetch_recontact_waiting",
        "Peers no direct attempt reached, waiting for their next datagram to be retried over uTP.",
        t.recontact_waiting as f64,
    );
    for (name, help, v) in [
        (
            "magnetar_fetch_recontact_evicted_total",
            "Peers waiting for contact forgotten to make room (oldest first).",
            t.recontact_evicted,
        ),
        (
            "magnetar_fetch_recontact_retries_total",
            "Retries of a peer no direct attempt reached, started by its next datagram to us.",
            t.recontact_retries,
        ),
        (
            "magnetar_fetch_recontact_no_room_total",
            "Such retries for which no fetch job could start (max jobs).",
            t.recontact_no_room,
        ),
        (
            "magnetar_fetch_recontact_fetched_total",
            "Fetch jobs started by a peer's contact that fetched the metadata.",
            t.recontact_fetched,
        ),
        (
            "magnetar_fetch_recontact_failed_total",
            "Fetch jobs started by a peer's contact that failed (not reported as fetch failures).",
            t.recontact_failed,
        ),
    ] {
        w.counter(name, help, v);
    }
    let h = &f.holepunch;
    for (name, help, v) in [
        (
            "magnetar_holepunch_rendezvous_sent_total",
            "BEP 55 rendezvous sent to a relay for a peer no direct attempt reached.",
            h.rendezvous_sent,
        ),
        (
            "magnetar_holepunch_no_relay_total",
            "Peers no direct attempt reached for which no relay was connected (or the job's rendezvous budget was spent).",
            h.no_relay,
        ),
        (
            "magnetar_holepunch_connects_total",
            "Relays' connect answers to our rendezvous (a uTP attempt each).",
            h.connects,
        ),
        (
            "magnetar_holepunch_connects_unsolicited_total",
            "connect messages for no rendezvous of ours (ignored).",
            h.connects_unsolicited,
        ),
        (
            "magnetar_holepunch_errors_unsolicited_total",
            "error messages for no rendezvous of ours (ignored).",
            h.errors_unsolicited,
        ),
        (
            "magnetar_holepunch_unanswered_total",
            "Rendezvous still unanswered when their fetch ended.",
            h.unanswered,
        ),
        (
            "magnetar_holepunch_attempts_total",
            "Holepunched uTP sessions started.",
            h.attempts,
        ),
        (
            "magnetar_holepunch_connected_total",
            "Holepunched uTP sessions whose stream connected.",
            h.connected,
        ),
        (
            "magnetar_holepunch_ok_total",
            "Holepunched uTP sessions that delivered verified metadata.",
            h.ok,
        ),
        (
            "magnetar_holepunch_failed_total",
            "Holepunched uTP sessions that failed.",
            h.failed,
        ),
        (
            "magnetar_holepunch_relay_sessions_total",
            "Sessions kept open only as relays (ut_holepunch without ut_metadata).",
            h.relay_sessions,
        ),
        (
            "magnetar_holepunch_relay_requests_total",
            "Rendezvous requests to us (we relay for nobody: answered NotConnected).",
            h.relay_requests,
        ),
        (
            "magnetar_holepunch_malformed_total",
            "ut_holepunch payloads that did not decode or came from a peer that never offered it.",
            h.malformed,
        ),
        (
            "magnetar_holepunch_dropped_total",
            "ut_holepunch messages over a session's cap.",
            h.dropped,
        ),
        (
            "magnetar_holepunch_crossed_total",
            "Peers' uTP SYNs that crossed our own dialling, adopted as a candidate session each.",
            h.crossed,
        ),
        (
            "magnetar_holepunch_crossed_lost_total",
            "Candidate sessions of a crossed pair that ended without metadata while the other went on.",
            h.crossed_lost,
        ),
        (
            "magnetar_holepunch_redials_total",
            "Holepunch targets dialled again after their stream ended before the BitTorrent handshake.",
            h.redials,
        ),
    ] {
        w.counter(name, help, v);
    }
    for code in [
        "no_such_peer",
        "not_connected",
        "no_support",
        "no_self",
        "other",
    ] {
        w.labelled(
            "magnetar_holepunch_errors_total",
            "Relays' error answers to our rendezvous, by BEP 55 code.",
            ("code", code),
            h.errors.get(code).copied().unwrap_or(0),
        );
    }
    let u = &s.utp;
    for (name, help, v) in [
        (
            "magnetar_utp_datagrams_in_total",
            "uTP datagrams received.",
            u.datagrams_in,
        ),
        (
            "magnetar_utp_datagrams_out_total",
            "uTP datagrams sent.",
            u.datagrams_out,
        ),
        (
            "magnetar_utp_bytes_in_total",
            "Bytes of uTP datagrams received.",
            u.bytes_in,
        ),
        (
            "magnetar_utp_bytes_out_total",
            "Bytes of uTP datagrams sent.",
            u.bytes_out,
        ),
        (
            "magnetar_utp_connects_total",
            "uTP streams we opened.",
            u.connects,
        ),
        (
            "magnetar_utp_accepted_total",
            "uTP streams accepted.",
            u.accepted,
        ),
        (
            "magnetar_utp_resets_sent_total",
            "uTP RESETs sent.",
            u.resets_sent,
        ),
        (
            "magnetar_utp_resets_limited_total",
            "uTP RESETs not sent (rate limit).",
            u.resets_limited,
        ),
        (
            "magnetar_utp_data_packets_out_total",
            "uTP DATA packets sent the first time.",
            u.data_packets_out,
        ),
        (
            "magnetar_utp_retransmits_total",
            "uTP packets sent again.",
            u.retransmits,
        ),
        (
            "magnetar_utp_fast_resends_total",
            "uTP packets declared lost by duplicate or selective acks.",
            u.fast_resends,
        ),
        (
            "magnetar_utp_timeouts_total",
            "uTP retransmission timeouts.",
            u.timeouts,
        ),
        (
            "magnetar_utp_window_probes_total",
            "uTP zero-window probes.",
            u.window_probes,
        ),
        (
            "magnetar_utp_keepalives_total",
            "uTP keep-alives sent.",
            u.keepalives,
        ),
        (
            "magnetar_utp_duplicates_in_total",
            "uTP DATA or FIN packets received again.",
            u.duplicates_in,
        ),
        (
            "magnetar_utp_recv_window_drops_total",
            "uTP DATA dropped: receive buffer full.",
            u.recv_window_drops,
        ),
        (
            "magnetar_utp_bytes_delivered_total",
            "uTP payload bytes delivered in order.",
            u.bytes_delivered,
        ),
        (
            "magnetar_utp_transmit_drops_total",
            "uTP datagrams dropped: transmit queue full.",
            u.transmit_drops,
        ),
        (
            "magnetar_utp_event_drops_total",
            "uTP events dropped: event queue full.",
            u.event_drops,
        ),
    ] {
        w.counter(name, help, v);
    }
    w.gauge(
        "magnetar_utp_connections",
        "uTP streams open.",
        u.connections as f64,
    );
    w.gauge(
        "magnetar_utp_half_open",
        "uTP streams in the handshake.",
        u.half_open as f64,
    );
    for (fault, v) in &u.faults {
        let label = format!("{fault:?}");
        w.labelled(
            "magnetar_utp_faults_total",
            "uTP faults, by kind.",
            ("kind", &label),
            *v,
        );
    }
    for (reason, v) in &u.closed {
        let label = format!("{reason:?}");
        w.labelled(
            "magnetar_utp_closed_total",
            "uTP streams ended, by reason.",
            ("reason", &label),
            *v,
        );
    }
    for (reason, v) in &f.failures {
        let label = format!("{reason:?}");
        w.labelled(
            "magnetar_fetch_session_failures_total",
            "Peer session failures, by reason.",
            ("reason", &label),
            *v,
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
        w.labelled(
            "magnetar_crawl_infohashes_new_total",
            "Infohashes new to the dedup window, by source.",
            ("source", src),
            v,
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
        "magnetar_crawl_shard_offered_total",
        "Infohashes of other shards' slices offered instead of acquired.",
        c.shard_offered,
    );
    w.counter(
        "magnetar_crawl_shard_claimed_total",
        "Infohashes claimed from the shared queue and acquired.",
        c.shard_claimed,
    );
    w.counter(
        "magnetar_crawl_shard_foreign_nodes_total",
        "Nodes outside this shard's slice kept out of the node book.",
        c.shard_foreign_nodes,
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
        "magnetar_crawl_candidates_noseed_total",
        "get_peers candidates made evidence of a torrent by a seeder's noseed=1 lookup.",
        c.candidates_noseed,
    );
    w.counter(
        "magnetar_crawl_candidates_dropped_total",
        "get_peers candidates with no peers, given up.",
        c.candidates_dropped,
    );
    w.counter(
        "magnetar_crawl_refresh_queued_total",
        "Stored torrents queued for a BEP 33 scrape refresh.",
        c.refresh_queued,
    );
    w.counter(
        "magnetar_crawl_refresh_dropped_total",
        "Scrape refreshes dropped (queue full, or refresh off).",
        c.refresh_dropped,
    );
    w.counter(
        "magnetar_crawl_refresh_started_total",
        "Scrape refresh traversals started.",
        c.refresh_started,
    );
    w.counter(
        "magnetar_crawl_refresh_done_total",
        "Scrape refresh traversals finished.",
        c.refresh_done,
    );
    w.gauge(
        "magnetar_crawl_refresh_waiting",
        "Scrape refreshes waiting.",
        c.refresh_waiting as f64,
    );
    w.counter(
        "magnetar_crawl_candidates_retried_total",
        "get_peers candidates whose first peer search found nobody, searched again later.",
        c.candidates_retried,
    );
    w.counter(
        "magnetar_crawl_revived_total",
        "Acquisitions started again at once: a new lead (a sampling node, an announced peer) for an infohash waiting out a retry or dropped as a candidate, or a sampling node for one waiting for a lookup slot or its candidate grace.",
        c.revived,
    );
    w.counter(
        "magnetar_crawl_lookup_waits_total",
        "Peer searches that waited for a free lookup slot.",
        c.lookup_waits,
    );
    w.counter(
        "magnetar_crawl_lookup_wait_drops_total",
        "Peer searches of infohashes with evidence refused because the queue waiting for a lookup slot was full of them.",
        c.lookup_wait_drops,
    );
    w.counter(
        "magnetar_crawl_lookup_wait_candidates_dropped_total",
        "Peer searches of get_peers candidates that found the lookup wait queue full, or gave way in it to a search with evidence.",
        c.lookup_wait_candidates_dropped,
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
    let t = &s.tracker;
    for (name, help, v) in [
        (
            "asked",
            "Asks queued on a tracker (infohashes the DHT found no peers for).",
            t.asked,
        ),
        (
            "queue_dropped",
            "Tracker asks dropped: the tracker's queue was full.",
            t.queue_dropped,
        ),
        (
            "unconfirmed",
            "Infohashes not asked of trackers: no evidence that they are torrents (heard only in get_peers from one address).",
            t.unconfirmed,
        ),
        (
            "skipped",
            "Tracker asks skipped: queued already, or within the torrent's interval.",
            t.skipped,
        ),
        (
            "requests",
            "Tracker requests sent (UDP connects, announces, scrapes; HTTP requests).",
            t.requests,
        ),
        ("retransmits", "UDP tracker retransmissions.", t.retransmits),
        ("announces", "Tracker announces answered.", t.announces),
        ("scrapes", "Tracker scrapes answered.", t.scrapes),
        (
            "peers",
            "Peers from trackers that passed the address filter.",
            t.peers,
        ),
        (
            "peers_filtered",
            "Peers from trackers refused by the address filter.",
            t.peers_filtered,
        ),
        (
            "timeouts",
            "Tracker requests unanswered in time.",
            t.timeouts,
        ),
        (
            "refused",
            "Tracker refusals (UDP error, HTTP failure reason).",
            t.refused,
        ),
        (
            "failed",
            "Tracker requests that failed for any reason.",
            t.failed,
        ),
    ] {
        w.counter(&format!("magnetar_tracker_{name}_total"), help, v);
    }
    let malformed = t.udp_malformed.values().sum::<u64>() + t.http_malformed.values().sum::<u64>();
    w.counter(
        "magnetar_tracker_malformed_total",
        "Tracker replies that were not usable (UDP or HTTP).",
        malformed,
    );
    w.0
}

#[cfg(test)]
mod tests;
