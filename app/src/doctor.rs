//! `magnetar doctor`: why a crawler "finds nothing". Reachability (sockets, whether
//! unsolicited queries reach us, NAT from BEP 42 votes), the open-file limit, the
//! kernel's connection-tracking table, and the metadata funnel (discovered → peers
//! found → connected → handshake → metadata → stored).
//!
//! How `doctor` gets live data: it runs a short crawl itself (the crawl's options,
//! `--duration` 60 s by default, a temporary database unless `--db` is given) and
//! prints the report when it ends. It does not read another crawler's `/metrics`:
//! most of the report needs what only the process that owns the sockets knows
//! (the addresses bound, the BEP 42 votes, who queried us). A running crawler logs
//! the same report once, [`LOG_AFTER`] into its run, and serves the funnel in
//! `/metrics` (`magnetar_funnel_*`).
//!
//! The verdicts and the funnel arithmetic are pure functions of [`Inputs`] (unit
//! tests below); [`Observed`] collects what the events tell (votes, connections),
//! and `gather_*` read the system.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use magnetar_core::report::Metric;
use magnetar_core::{Event, InfoHash, Stats};

/// A running crawler logs the report once, this long after its start (the
/// hidden `--doctor-after` changes it, for tests).
pub const LOG_AFTER: Duration = Duration::from_secs(120);

/// Infohashes whose fetch is followed for the funnel's connected/handshake steps
/// (those in flight; past the cap the table starts over, which may count an
/// infohash twice).
const TRACKED_MAX: usize = 1 << 16;
/// Distinct addresses the BEP 42 voters reported (more are ignored).
const VOTES_MAX: usize = 64;

/// A line's verdict.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }
}

/// One line of the report: a verdict, what was found, one sentence of advice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub verdict: Verdict,
    pub what: String,
    pub advice: String,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<4}  {}", self.verdict.word(), self.what)?;
        if !self.advice.is_empty() {
            write!(f, " — {}", self.advice)?;
        }
        Ok(())
    }
}

fn line(verdict: Verdict, what: impl Into<String>, advice: impl Into<String>) -> Line {
    Line {
        verdict,
        what: what.into(),
        advice: advice.into(),
    }
}

/// What the events tell, collected by the storage adapter: BEP 42 votes, and which
/// fetched-for infohashes got a TCP connection and a BitTorrent handshake.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// `seen_as` address → votes.
    pub votes: BTreeMap<SocketAddr, u64>,
    /// Infohashes with at least one connected peer session.
    pub connected: u64,
    /// Infohashes with at least one peer that completed the handshake.
    pub handshake: u64,
    /// Torrents written to the database (new ones).
    pub stored: u64,
    /// Fetches in flight with a connected session: bit 0 connected, bit 1
    /// handshake counted. A retried infohash is a new fetch and counts again (as
    /// in `peers_found`).
    open: BTreeMap<InfoHash, u8>,
}

impl Observed {
    /// Takes note of one event.
    pub fn on_event(&mut self, e: &Event) {
        match e {
            Event::ExternalAddressVote { seen_as, .. } => {
                if let Some(n) = self.votes.get_mut(seen_as) {
                    *n += 1;
                } else if self.votes.len() < VOTES_MAX {
                    self.votes.insert(*seen_as, 1);
                }
            }
            Event::PeerSession(r) => {
                let connected = r.connect_time.is_some();
                let handshake = r.rtt.is_some();
                if !connected && !handshake {
                    return;
                }
                // Every session's report comes before its fetch's MetadataFetched
                // or MetadataFailed (cancelled ones too), which ends the entry.
                if self.open.len() >= TRACKED_MAX && !self.open.contains_key(&r.info_hash) {
                    self.open.clear();
                }
                let flags = self.open.entry(r.info_hash).or_insert(0);
                if *flags & 1 == 0 {
                    *flags |= 1;
                    self.connected += 1;
                }
                if handshake && *flags & 2 == 0 {
                    *flags |= 2;
                    self.handshake += 1;
                }
            }
            Event::MetadataFetched(m) => {
                self.open.remove(&m.info_hash);
            }
            Event::MetadataFailed(m) => {
                self.open.remove(&m.info_hash);
            }
            _ => {}
        }
    }
}

/// The metadata funnel, in infohashes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Funnel {
    /// New infohashes heard (announces, get_peers, samples).
    pub discovered: u64,
    /// Fetches started: infohashes with at least one peer address (a retry counts again).
    pub peers_found: u64,
    /// Infohashes with at least one TCP connection to a peer.
    pub connected: u64,
    /// Infohashes with at least one peer that completed the BitTorrent handshake.
    pub handshake: u64,
    /// Infohashes whose metadata was fetched and verified.
    pub metadata: u64,
    /// Torrents written to the database.
    pub stored: u64,
}

/// One step of the funnel with its rate and the share lost since the step before.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub name: &'static str,
    pub count: u64,
    pub per_min: f64,
    /// `None` for the first step, and when the step before counted nothing.
    pub lost: Option<f64>,
}

impl Funnel {
    /// The funnel from the crawler's counters and what the events told.
    pub fn new(stats: &Stats, o: &Observed) -> Funnel {
        Funnel {
            discovered: stats.crawl.new_from_announce
                + stats.crawl.new_from_get_peers
                + stats.crawl.new_from_sample,
            peers_found: stats.fetch.started,
            connected: o.connected,
            handshake: o.handshake,
            metadata: stats.fetch.fetched,
            stored: o.stored,
        }
    }

    /// The steps in order, with rates over `elapsed` and the share lost at each.
    pub fn steps(&self, elapsed: Duration) -> Vec<Step> {
        let names = [
            ("discovered", self.discovered),
            ("peers found", self.peers_found),
            ("connected", self.connected),
            ("handshake", self.handshake),
            ("metadata", self.metadata),
            ("stored", self.stored),
        ];
        let mins = elapsed.as_secs_f64() / 60.0;
        let counts: Vec<u64> = names.iter().map(|(_, c)| *c).collect();
        names
            .iter()
            .zip(losses(&counts))
            .map(|(&(name, count), lost)| Step {
                name,
                count,
                per_min: if mins > 0.0 { count as f64 / mins } else { 0.0 },
                lost,
            })
            .collect()
    }

    /// `magnetar_funnel_*` for `/metrics`.
    pub fn metrics(&self) -> Vec<Metric> {
        let mut out = Vec::new();
        for s in self.steps(Duration::ZERO) {
            let label = s.name.replace(' ', "_");
            out.push(
                Metric::counter(
                    "magnetar_funnel_infohashes_total",
                    "The metadata funnel: infohashes that reached each step (discovered, peers_found, connected, handshake, metadata, stored).",
                    s.count,
                )
                .with_label("step", &label),
            );
        }
        for s in self.steps(Duration::ZERO) {
            if let Some(lost) = s.lost {
                let label = s.name.replace(' ', "_");
                out.push(
                    Metric::gauge(
                        "magnetar_funnel_lost_ratio",
                        "Share of the step before lost at each funnel step (0 to 1; absent while the step before is zero).",
                        lost,
                    )
                    .with_label("step", &label),
                );
            }
        }
        out
    }
}

/// The share lost at each step of a chain of counts: `None` for the first and
/// after a zero; a step above the one before (retries count again) loses nothing.
pub fn losses(counts: &[u64]) -> Vec<Option<f64>> {
    let mut prev: Option<u64> = None;
    counts
        .iter()
        .map(|&c| {
            let lost = match prev {
                Some(p) if p > 0 => Some(1.0 - (c.min(p) as f64 / p as f64)),
                _ => None,
            };
            prev = Some(c);
            lost
        })
        .collect()
}

/// A chain of steps as text: `a 10 → b 5 (−50 %) → c 5 (−0 %)`.
pub fn chain_text(steps: &[(&str, u64)]) -> String {
    let counts: Vec<u64> = steps.iter().map(|(_, c)| *c).collect();
    steps
        .iter()
        .zip(losses(&counts))
        .map(|(&(name, count), lost)| match lost {
            Some(l) => format!("{name} {count} (lost {:.0} %)", l * 100.0),
            None => format!("{name} {count}"),
        })
        .collect::<Vec<_>>()
        .join(" → ")
}

/// Failure reasons (as stored in request records) of sessions that never got a
/// TCP connection.
const NOT_CONNECTED: [&str; 3] = ["connect_refused", "connect_timeout", "local_error"];
/// …and of connected sessions that got no valid BitTorrent handshake.
const NO_HANDSHAKE: [&str; 3] = [
    "closed_before_handshake",
    "wrong_protocol",
    "wrong_info_hash",
];

/// The peer-connection funnel from stored request records (one per peer session
/// that was not cancelled): `requests` in all, failures by reason name.
/// Returns attempts → connected → handshake → metadata.
pub fn connection_steps(requests: u64, reasons: &[(String, u64)]) -> [(&'static str, u64); 4] {
    let sum = |names: &[&str]| -> u64 {
        reasons
            .iter()
            .filter(|(r, _)| names.contains(&r.as_str()))
            .map(|(_, n)| n)
            .sum()
    };
    let failed: u64 = reasons.iter().map(|(_, n)| n).sum();
    let connected = requests.saturating_sub(sum(&NOT_CONNECTED));
    let handshake = connected.saturating_sub(sum(&NO_HANDSHAKE));
    [
        ("attempts", requests),
        ("connected", connected),
        ("handshake", handshake),
        ("metadata", requests.saturating_sub(failed)),
    ]
}

/// Everything the report is computed from.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// The UDP sockets bound.
    pub sockets: Vec<SocketAddr>,
    /// The local address that faces the voters (for sockets bound to 0.0.0.0/::).
    pub local_ip: Option<IpAddr>,
    /// Queries received (unsolicited) and responses received.
    pub queries_in: u64,
    pub responses_in: u64,
    /// BEP 42 votes: `seen_as` → count.
    pub votes: Vec<(SocketAddr, u64)>,
    /// The soft open-file limit in force, and the leeches wanted.
    pub nofile: u64,
    pub max_leeches: u64,
    /// The outgoing packet budget (conntrack entries grow with it).
    pub max_pps: u64,
    /// `nf_conntrack_count`, `nf_conntrack_max` when readable.
    pub conntrack: Option<(u64, u64)>,
    pub funnel: Funnel,
    pub elapsed: Duration,
}

/// The report: one line per check, then the funnel.
pub fn report(i: &Inputs) -> Vec<Line> {
    let mut out = sockets_lines(&i.sockets);
    out.push(replies_line(i.responses_in));
    out.push(unsolicited_line(i.queries_in, i.responses_in, &i.sockets));
    out.push(nat_line(&i.votes, &i.sockets, i.local_ip, i.queries_in));
    out.push(nofile_line(i.nofile, i.max_leeches));
    out.push(conntrack_line(i.conntrack, i.max_pps, i.max_leeches));
    out.extend(funnel_lines(&i.funnel, i.elapsed));
    out
}

fn ports(sockets: &[SocketAddr]) -> String {
    let mut p: Vec<String> = sockets.iter().map(|s| s.port().to_string()).collect();
    p.dedup();
    p.join(", ")
}

/// The sockets bound.
pub fn sockets_lines(sockets: &[SocketAddr]) -> Vec<Line> {
    if sockets.is_empty() {
        return vec![line(
            Verdict::Fail,
            "sockets: none bound",
            "pass --bind ADDR:PORT with an address of this host",
        )];
    }
    sockets
        .iter()
        .map(|s| {
            if s.ip().is_loopback() {
                line(
                    Verdict::Warn,
                    format!("socket: UDP {s} (loopback)"),
                    "only this machine can reach a loopback address; bind 0.0.0.0 or a public address to crawl the Internet",
                )
            } else {
                line(Verdict::Ok, format!("socket: UDP {s}"), "")
            }
        })
        .collect()
}

/// Whether any node answered us.
pub fn replies_line(responses_in: u64) -> Line {
    if responses_in > 0 {
        line(Verdict::Ok, format!("replies: {responses_in}"), "")
    } else {
        line(
            Verdict::Fail,
            "replies: none",
            "no DHT node answered: check that outgoing UDP is allowed and the bootstrap routers resolve, or pass --bootstrap HOST:PORT",
        )
    }
}

/// Whether unsolicited queries reach us (others have us in their tables).
pub fn unsolicited_line(queries_in: u64, responses_in: u64, sockets: &[SocketAddr]) -> Line {
    if queries_in > 0 {
        line(
            Verdict::Ok,
            format!("unsolicited queries: seen ({queries_in})"),
            "other nodes reach our UDP port",
        )
    } else if responses_in > 0 {
        line(
            Verdict::Warn,
            "unsolicited queries: none (only replies)",
            format!(
                "we are probably behind a NAT or firewall: forward or open UDP port {} to this host (a short run may also be too early)",
                ports(sockets)
            ),
        )
    } else {
        line(
            Verdict::Fail,
            "unsolicited queries: none (and no replies)",
            "nothing reaches us: fix the replies first",
        )
    }
}

/// The external address by BEP 42 votes against the local one.
pub fn nat_line(
    votes: &[(SocketAddr, u64)],
    sockets: &[SocketAddr],
    local_ip: Option<IpAddr>,
    queries_in: u64,
) -> Line {
    let Some((ext, n)) = votes
        .iter()
        .max_by_key(|(a, n)| (*n, std::cmp::Reverse(*a)))
    else {
        return line(
            Verdict::Warn,
            "external address: no BEP 42 votes",
            "no node told us how it sees us yet; run longer (--duration)",
        );
    };
    let total: u64 = votes.iter().map(|(_, n)| n).sum();
    let local: Vec<IpAddr> = sockets
        .iter()
        .map(|s| s.ip())
        .filter(|ip| !ip.is_unspecified())
        .chain(local_ip)
        .collect();
    let what = format!("external address: {ext} ({n} of {total} votes)");
    let local_s: Vec<String> = local.iter().map(|ip| ip.to_string()).collect();
    if local.contains(&ext.ip()) {
        if sockets.iter().any(|s| s.port() == ext.port()) {
            line(Verdict::Ok, what, "the same as the local address: no NAT")
        } else {
            line(
                Verdict::Warn,
                what,
                format!(
                    "the port differs from the local one ({}): a firewall or NAT rewrites ports",
                    ports(sockets)
                ),
            )
        }
    } else if queries_in > 0 {
        line(
            Verdict::Ok,
            what,
            format!(
                "NAT detected (local {}), but unsolicited queries arrive: the port is forwarded",
                local_s.join(", ")
            ),
        )
    } else {
        line(
            Verdict::Warn,
            what,
            format!(
                "NAT detected (local {}): forward UDP port {} to this host, or run on a host with a public address",
                local_s.join(", "),
                ports(sockets)
            ),
        )
    }
}

/// The open-file limit against `--max-leeches` (one descriptor per leech).
pub fn nofile_line(nofile: u64, max_leeches: u64) -> Line {
    let need = max_leeches + crate::sys::FD_RESERVE;
    let what = format!("open files: limit {nofile}, --max-leeches {max_leeches} needs {need}");
    if nofile >= need {
        line(Verdict::Ok, what, "")
    } else {
        line(
            Verdict::Warn,
            what,
            format!(
                "leeches are capped at {}: raise the limit (ulimit -n {need}, or LimitNOFILE={need} in a systemd unit)",
                crate::sys::leech_budget(nofile, max_leeches as usize)
            ),
        )
    }
}

/// The kernel's connection-tracking table: its fill, and whether its size fits the
/// crawler's rate (every address we send to holds an entry for ~30 s, UDP's
/// default conntrack timeout, plus one per leech).
pub fn conntrack_line(conntrack: Option<(u64, u64)>, max_pps: u64, max_leeches: u64) -> Line {
    let Some((count, max)) = conntrack else {
        return line(
            Verdict::Ok,
            "conntrack: not in use (or not readable)",
            "no connection-tracking table to fill",
        );
    };
    let fill = if max > 0 {
        count as f64 / max as f64
    } else {
        1.0
    };
    let what = format!(
        "conntrack: {count} of {max} entries ({:.0} % full)",
        fill * 100.0
    );
    let want = max_pps * 30 + max_leeches;
    if fill >= 0.95 {
        line(
            Verdict::Fail,
            what,
            format!("a full table drops packets silently: raise net.netfilter.nf_conntrack_max (to {} or more), or exempt the crawler's UDP port with a NOTRACK rule", want.max(max * 2)),
        )
    } else if fill >= 0.8 {
        line(
            Verdict::Warn,
            what,
            "nearly full: raise net.netfilter.nf_conntrack_max before it drops packets",
        )
    } else if max < want {
        line(
            Verdict::Warn,
            what,
            format!("at --max-pps {max_pps} the crawler may need ~{want} entries: raise net.netfilter.nf_conntrack_max or lower --max-pps"),
        )
    } else {
        line(Verdict::Ok, what, "")
    }
}

/// Advice when a step keeps nothing of the step before.
fn funnel_advice(step: &str) -> &'static str {
    match step {
        "peers found" => "no peers found for any infohash: get_peers replies are missing (see reachability above) or the run is too short",
        "connected" => "no TCP connection to a peer succeeded: is outgoing TCP blocked, or the open-file limit too low?",
        "handshake" => "connections close before the BitTorrent handshake: a proxy or firewall may interfere with TCP",
        "metadata" => "handshakes but no metadata yet: usual in a short run; run longer",
        "stored" => "metadata fetched but nothing stored: check the database (disk full?) and the log",
        _ => "",
    }
}

/// The funnel as report lines: count, rate, share lost; a verdict per step.
pub fn funnel_lines(f: &Funnel, elapsed: Duration) -> Vec<Line> {
    f.steps(elapsed)
        .into_iter()
        .map(|s| {
            let lost = match s.lost {
                Some(l) => format!(", lost {:.0} %", l * 100.0),
                None => String::new(),
            };
            let what = format!(
                "funnel {}: {} ({:.1}/min{lost})",
                s.name, s.count, s.per_min
            );
            if s.name == "discovered" && s.count == 0 {
                line(
                    Verdict::Fail,
                    what,
                    "no infohash discovered: the crawler is not reached or not bootstrapped (see above)",
                )
            } else if s.lost == Some(1.0) {
                line(Verdict::Warn, what, funnel_advice(s.name))
            } else {
                line(Verdict::Ok, what, "")
            }
        })
        .collect()
}

/// `nf_conntrack_count` and `nf_conntrack_max`, when readable.
pub fn gather_conntrack() -> Option<(u64, u64)> {
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/proc/sys/net/netfilter/{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some((read("nf_conntrack_count")?, read("nf_conntrack_max")?))
}

/// The soft open-file limit now.
pub fn gather_nofile() -> u64 {
    rlimit::Resource::NOFILE
        .get()
        .map(|(soft, _)| soft)
        .unwrap_or(1024)
}

/// The local address the kernel routes to `to` from (a UDP "connect" sends nothing).
pub fn local_ip_towards(to: IpAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if to.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(SocketAddr::new(to, 9)).ok()?;
    Some(s.local_addr().ok()?.ip())
}

/// The inputs of a report from a crawl's counters and what it observed.
pub fn gather(
    sockets: &[SocketAddr],
    stats: &Stats,
    o: &Observed,
    max_leeches: u64,
    max_pps: u64,
    elapsed: Duration,
) -> Inputs {
    let votes: Vec<(SocketAddr, u64)> = o.votes.iter().map(|(a, n)| (*a, *n)).collect();
    // For sockets on 0.0.0.0/::, the address facing the voters (the most voted
    // voter's family; route lookup only).
    let local_ip = votes.iter().max_by_key(|(_, n)| *n).and_then(|(a, _)| {
        sockets
            .iter()
            .any(|s| s.ip().is_unspecified() && s.is_ipv4() == a.is_ipv4())
            .then(|| local_ip_towards(a.ip()))
            .flatten()
    });
    Inputs {
        sockets: sockets.to_vec(),
        local_ip,
        queries_in: stats.dht.queries_in.total(),
        responses_in: stats.dht.responses_in,
        votes,
        nofile: gather_nofile(),
        max_leeches,
        max_pps,
        conntrack: gather_conntrack(),
        funnel: Funnel::new(stats, o),
        elapsed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use magnetar_core::fetch::SessionOutcome;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn funnel() -> Funnel {
        Funnel {
            discovered: 200,
            peers_found: 100,
            connected: 50,
            handshake: 40,
            metadata: 10,
            stored: 10,
        }
    }

    #[test]
    fn funnel_rates_and_losses() {
        let steps = funnel().steps(Duration::from_secs(120));
        let names: Vec<&str> = steps.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "discovered",
                "peers found",
                "connected",
                "handshake",
                "metadata",
                "stored"
            ]
        );
        assert_eq!(steps[0].count, 200);
        assert_eq!(steps[0].per_min, 100.0);
        assert_eq!(steps[0].lost, None);
        assert_eq!(steps[1].lost, Some(0.5));
        assert_eq!(steps[2].lost, Some(0.5));
        assert!((steps[3].lost.unwrap() - 0.2).abs() < 1e-12);
        assert!((steps[4].lost.unwrap() - 0.75).abs() < 1e-12);
        assert_eq!(steps[5].lost, Some(0.0));
        assert_eq!(steps[5].per_min, 5.0);
        // Nothing before: no share lost; a later step above the one before
        // (retries count again) loses nothing rather than a negative share.
        let f = Funnel {
            discovered: 0,
            peers_found: 3,
            connected: 5,
            ..Funnel::default()
        };
        let s = f.steps(Duration::ZERO);
        assert_eq!(s[1].lost, None);
        assert_eq!(s[2].lost, Some(0.0));
        assert_eq!(s[3].lost, Some(1.0));
        assert_eq!(s[0].per_min, 0.0);
    }

    #[test]
    fn funnel_from_stats_and_events() {
        use magnetar_core::fetch::PeerSessionReport;
        let mut st = Stats::default();
        st.crawl.new_from_announce = 1;
        st.crawl.new_from_get_peers = 2;
        st.crawl.new_from_sample = 4;
        st.fetch.started = 5;
        st.fetch.fetched = 2;
        let mut o = Observed::default();
        let session = |ih: u8, connect: bool, rtt: bool, outcome| {
            Event::PeerSession(Box::new(PeerSessionReport {
                info_hash: InfoHash([ih; 20]),
                peer: a("10.0.0.1:1"),
                conn: magnetar_core::ConnId::from_usize(0),
                started_at: magnetar_core::Timestamp::ZERO,
                duration: Duration::ZERO,
                outcome,
                connect_time: connect.then_some(Duration::from_millis(1)),
                rtt: rtt.then_some(Duration::from_millis(1)),
                pieces: 0,
                bytes_in: 0,
                bytes_out: 0,
                client: None,
                version: None,
                peer_id: None,
                ut_metadata: None,
                ut_pex: None,
                metadata_size: None,
                fast: false,
                dht: false,
                yourip: None,
                listen_port: None,
                reqq: None,
                pex_added: 0,
                encryption: Default::default(),
                transport: Default::default(),
            }))
        };
        use magnetar_core::session::FailReason;
        let failed = SessionOutcome::Failed(FailReason::ClosedBeforeHandshake);
        // Infohash 1: refused, then connected, then a handshake from a second peer.
        o.on_event(&session(
            1,
            false,
            false,
            SessionOutcome::Failed(FailReason::ConnectRefused),
        ));
        o.on_event(&session(1, true, false, failed));
        o.on_event(&session(1, true, true, SessionOutcome::Ok));
        // Infohash 2: connected only, twice.
        o.on_event(&session(2, true, false, failed));
        o.on_event(&session(2, true, false, failed));
        // Infohash 3: a session cancelled (another peer delivered, or the fetch
        // ended) that had connected and shaken hands counts.
        o.on_event(&session(3, true, true, SessionOutcome::Cancelled));
        // The fetch of infohash 1 ends; a retry connects again and counts again.
        o.on_event(&Event::MetadataFailed(Box::new(
            magnetar_core::fetch::MetadataFailed {
                info_hash: InfoHash([1; 20]),
                reasons: Vec::new(),
                elapsed: Duration::ZERO,
                peers_tried: 2,
                info_error: None,
                timed_out: true,
                next: magnetar_core::fetch::AfterFailure::GivenUp,
            },
        )));
        o.on_event(&session(1, true, false, failed));
        o.on_event(&session(1, true, false, failed));
        o.on_event(&Event::ExternalAddressVote {
            socket: magnetar_core::SocketId(0),
            voter: a("10.0.0.9:1"),
            seen_as: a("1.2.3.4:6881"),
        });
        o.stored = 1;
        let f = Funnel::new(&st, &o);
        assert_eq!(
            f,
            Funnel {
                discovered: 7,
                peers_found: 5,
                connected: 4,
                handshake: 2,
                metadata: 2,
                stored: 1,
            }
        );
        assert_eq!(o.votes.get(&a("1.2.3.4:6881")), Some(&1));
        // The metrics carry every step by label.
        let m = f.metrics();
        assert_eq!(
            m.iter()
                .filter(|m| m.name == "magnetar_funnel_infohashes_total")
                .count(),
            6
        );
        assert_eq!(
            m.iter()
                .filter(|m| m.name == "magnetar_funnel_lost_ratio")
                .count(),
            5
        );
    }

    #[test]
    fn chains_and_stored_connection_funnel() {
        assert_eq!(losses(&[]), Vec::<Option<f64>>::new());
        assert_eq!(losses(&[4, 1, 0, 0]), [None, Some(0.75), Some(1.0), None]);
        assert_eq!(
            chain_text(&[("discovered", 10), ("metadata", 4), ("stored", 4)]),
            "discovered 10 → metadata 4 (lost 60 %) → stored 4 (lost 0 %)"
        );
        let reasons = [
            ("connect_timeout".to_string(), 50),
            ("connect_refused".to_string(), 10),
            ("closed_before_handshake".to_string(), 15),
            ("no_ut_metadata".to_string(), 5),
            ("wrong_info_hash".to_string(), 5),
        ];
        assert_eq!(
            connection_steps(100, &reasons),
            [
                ("attempts", 100),
                ("connected", 40),
                ("handshake", 20),
                ("metadata", 15)
            ]
        );
        // Counts that do not add up (records pruned meanwhile) do not underflow.
        assert_eq!(connection_steps(3, &reasons)[3], ("metadata", 0));
    }

    #[test]
    fn each_verdict_is_reachable() {
        let v = |l: Line| l.verdict;
        let any = [a("0.0.0.0:6881")];
        // Sockets.
        assert_eq!(sockets_lines(&[]).remove(0).verdict, Verdict::Fail);
        assert_eq!(sockets_lines(&any)[0].verdict, Verdict::Ok);
        assert_eq!(sockets_lines(&[a("127.0.0.1:1")])[0].verdict, Verdict::Warn);
        // Replies, unsolicited queries.
        assert_eq!(v(replies_line(0)), Verdict::Fail);
        assert_eq!(v(replies_line(3)), Verdict::Ok);
        let l = unsolicited_line(2, 5, &any);
        assert_eq!(
            (l.verdict, l.what.as_str()),
            (Verdict::Ok, "unsolicited queries: seen (2)")
        );
        let l = unsolicited_line(0, 5, &any);
        assert_eq!(l.verdict, Verdict::Warn);
        assert!(l.what.starts_with("unsolicited queries: none"), "{l}");
        assert!(l.advice.contains("UDP port 6881"), "{l}");
        assert_eq!(v(unsolicited_line(0, 0, &any)), Verdict::Fail);
        // NAT.
        let local = Some("192.168.1.5".parse().unwrap());
        assert_eq!(v(nat_line(&[], &any, local, 0)), Verdict::Warn);
        let l = nat_line(&[(a("192.168.1.5:6881"), 3)], &any, local, 0);
        assert_eq!(l.verdict, Verdict::Ok, "{l}");
        let l = nat_line(&[(a("192.168.1.5:7000"), 3)], &any, local, 0);
        assert_eq!(l.verdict, Verdict::Warn, "{l}");
        assert!(l.advice.contains("rewrites ports"), "{l}");
        // The majority wins: one stray vote for the local address does not hide the NAT.
        let votes = [(a("192.168.1.5:6881"), 1), (a("8.8.4.4:6881"), 4)];
        let l = nat_line(&votes, &any, local, 0);
        assert_eq!(l.verdict, Verdict::Warn, "{l}");
        assert!(l.what.contains("8.8.4.4:6881 (4 of 5 votes)"), "{l}");
        assert!(l.advice.contains("NAT detected (local 192.168.1.5)"), "{l}");
        assert_eq!(v(nat_line(&votes, &any, local, 9)), Verdict::Ok);
        // An explicit bind address is the local one.
        let l = nat_line(&[(a("10.1.1.1:5"), 1)], &[a("10.1.1.1:5")], None, 0);
        assert_eq!(l.verdict, Verdict::Ok, "{l}");
        // Open files.
        assert_eq!(v(nofile_line(1024, 1000)), Verdict::Warn);
        assert!(nofile_line(1024, 1000).advice.contains("capped at 960"));
        assert_eq!(v(nofile_line(1064, 1000)), Verdict::Ok);
        // Conntrack.
        assert_eq!(v(conntrack_line(None, 2000, 1000)), Verdict::Ok);
        assert_eq!(
            v(conntrack_line(Some((10, 1_000_000)), 2000, 1000)),
            Verdict::Ok
        );
        assert_eq!(
            v(conntrack_line(Some((10, 1000)), 2000, 1000)),
            Verdict::Warn
        );
        assert_eq!(
            v(conntrack_line(Some((850_000, 1_000_000)), 2000, 1000)),
            Verdict::Warn
        );
        assert_eq!(
            v(conntrack_line(Some((999_000, 1_000_000)), 2000, 1000)),
            Verdict::Fail
        );
        assert_eq!(v(conntrack_line(Some((0, 0)), 2000, 1000)), Verdict::Fail);
        // Funnel.
        let lines = funnel_lines(&funnel(), Duration::from_secs(60));
        assert!(lines.iter().all(|l| l.verdict == Verdict::Ok), "{lines:?}");
        assert_eq!(
            lines[1].what,
            "funnel peers found: 100 (100.0/min, lost 50 %)"
        );
        let lines = funnel_lines(&Funnel::default(), Duration::from_secs(60));
        assert_eq!(lines[0].verdict, Verdict::Fail);
        assert!(lines[1..].iter().all(|l| l.verdict == Verdict::Ok));
        let f = Funnel {
            connected: 0,
            handshake: 0,
            metadata: 0,
            stored: 0,
            ..funnel()
        };
        let lines = funnel_lines(&f, Duration::from_secs(60));
        assert_eq!(lines[2].verdict, Verdict::Warn);
        assert!(lines[2].advice.contains("outgoing TCP"), "{}", lines[2]);
        // Later zeros after a zero lose nothing of nothing.
        assert_eq!(lines[3].verdict, Verdict::Ok);
    }

    #[test]
    fn report_has_a_line_per_check_in_order() {
        let i = Inputs {
            sockets: vec![a("0.0.0.0:6881")],
            responses_in: 4,
            nofile: 100_000,
            max_leeches: 1000,
            max_pps: 2000,
            funnel: funnel(),
            elapsed: Duration::from_secs(60),
            ..Inputs::default()
        };
        let r = report(&i);
        let heads: Vec<String> = r
            .iter()
            .map(|l| l.what.split(':').next().unwrap().to_string())
            .collect();
        assert_eq!(
            heads,
            [
                "socket",
                "replies",
                "unsolicited queries",
                "external address",
                "open files",
                "conntrack",
                "funnel discovered",
                "funnel peers found",
                "funnel connected",
                "funnel handshake",
                "funnel metadata",
                "funnel stored"
            ]
        );
        let text = r[2].to_string();
        assert!(
            text.starts_with("warn  unsolicited queries: none"),
            "{text}"
        );
        assert_eq!(r[1].to_string(), "ok    replies: 4");
    }
}
