//! The link model: latency with jitter, random and bursty (Gilbert-Elliott) loss,
//! duplication, reordering, an MTU, partitions, NAT and per-endpoint packet budgets.
//!
//! [`Network::route`] decides the fate of one datagram; the world turns the
//! answer into deliveries on its (time, sequence) queue.

use std::net::SocketAddr;
use std::time::Duration;

use magnetar_core::Rng;
use magnetar_core::Timestamp;

/// Two-state bursty loss: in the good state packets are lost with `loss_good`, in
/// the bad state with `loss_bad`; each packet moves good→bad with `p_enter_bad`
/// and bad→good with `p_leave_bad`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GilbertElliott {
    pub p_enter_bad: f64,
    pub p_leave_bad: f64,
    pub loss_good: f64,
    pub loss_bad: f64,
}

impl GilbertElliott {
    /// Bursts of mean length `1 / p_leave_bad` packets, losing most of them.
    pub fn bursty(p_enter_bad: f64, mean_burst: f64) -> Self {
        GilbertElliott {
            p_enter_bad,
            p_leave_bad: 1.0 / mean_burst.max(1.0),
            loss_good: 0.0,
            loss_bad: 0.9,
        }
    }
}

/// Link settings for the whole network. One-way latency between two endpoints is
/// the sum of their access delays (each drawn uniformly from `access_min..=access_max`
/// when the endpoint is created) plus a uniform jitter.
#[derive(Clone, Debug)]
pub struct NetConfig {
    pub access_min: Duration,
    pub access_max: Duration,
    pub jitter: Duration,
    /// Random loss per datagram, end to end.
    pub loss: f64,
    /// Bursty loss per sending endpoint.
    pub burst: Option<GilbertElliott>,
    pub duplicate: f64,
    /// Chance that a datagram is held back by up to `reorder_delay`.
    pub reorder: f64,
    pub reorder_delay: Duration,
    /// Largest UDP payload delivered; bigger datagrams are dropped.
    pub mtu: usize,
    /// How long a NAT keeps a mapping (a pinhole for the one remote address
    /// and port) open after an outgoing datagram: its UDP mapping timeout.
    pub nat_pinhole: Duration,
    /// Live mappings a NAT keeps per endpoint at most (the oldest goes first).
    /// A client's announce traversals reach a few dozen nodes a minute: a home
    /// router's table holds thousands.
    pub nat_mappings: usize,
    /// Chance that a TCP segment is "lost" and retransmitted (costs `tcp_rto`).
    pub tcp_loss: f64,
    pub tcp_rto: Duration,
    /// A black-holed connect (no host, NAT, partition) fails after this long.
    pub tcp_connect_timeout: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            access_min: Duration::from_millis(5),
            access_max: Duration::from_millis(60),
            jitter: Duration::from_millis(10),
            loss: 0.0,
            burst: None,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(50),
            mtu: 1472,
            nat_pinhole: Duration::from_secs(60),
            nat_mappings: 1024,
            tcp_loss: 0.0,
            tcp_rto: Duration::from_millis(300),
            tcp_connect_timeout: Duration::from_secs(21),
        }
    }
}

impl NetConfig {
    /// A perfect network: fixed latency, no jitter, no loss.
    pub fn ideal() -> Self {
        NetConfig {
            access_min: Duration::from_millis(10),
            access_max: Duration::from_millis(10),
            jitter: Duration::ZERO,
            ..NetConfig::default()
        }
    }
    /// The default network with `loss` random loss.
    pub fn lossy(loss: f64) -> Self {
        NetConfig {
            loss,
            ..NetConfig::default()
        }
    }
}

/// A token bucket of datagrams per second (the outgoing packet budget).
#[derive(Clone, Debug)]
pub struct TokenBucket {
    per_sec: u32,
    tokens: f64,
    last: Timestamp,
}

impl TokenBucket {
    pub fn new(per_sec: u32) -> Self {
        TokenBucket {
            per_sec,
            tokens: per_sec as f64,
            last: Timestamp::ZERO,
        }
    }
    pub fn take(&mut self, now: Timestamp) -> bool {
        let dt = now.since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.per_sec as f64).min(self.per_sec as f64);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
    pub fn per_sec(&self) -> u32 {
        self.per_sec
    }
}

/// Per-endpoint network state.
#[derive(Clone, Debug)]
pub struct EndpointNet {
    pub addr: SocketAddr,
    /// Half of the base round trip this endpoint adds to every path.
    pub access: Duration,
    /// Extra loss on this endpoint's datagrams, both directions.
    pub extra_loss: f64,
    /// Behind a NAT with address-and-port-restricted filtering and no port
    /// forwarding: an inbound datagram passes only from an endpoint (address
    /// and port) this one sent to within [`NetConfig::nat_pinhole`]; an
    /// inbound TCP connect never does.
    pub nat: bool,
    /// Partition label: datagrams between different islands are dropped.
    pub island: u16,
    /// Outgoing datagrams per second, if limited.
    pub budget: Option<TokenBucket>,
    /// Gilbert-Elliott state: in a burst.
    pub bad: bool,
    pinholes: Vec<(SocketAddr, Timestamp)>,
    pub alive: bool,
    /// Datagrams this endpoint tried to send (before the budget).
    pub sent: u64,
}

impl EndpointNet {
    pub fn new(addr: SocketAddr, access: Duration) -> Self {
        EndpointNet {
            addr,
            access,
            extra_loss: 0.0,
            nat: false,
            island: 0,
            budget: None,
            bad: false,
            pinholes: Vec::new(),
            alive: true,
            sent: 0,
        }
    }

    /// Opens (or refreshes) the mapping to `to` until `until`; `now` prunes
    /// expired mappings when the table grows, and the oldest goes when more
    /// than `cap` are live.
    fn open_pinhole(&mut self, to: SocketAddr, now: Timestamp, until: Timestamp, cap: usize) {
        if let Some(p) = self.pinholes.iter_mut().find(|p| p.0 == to) {
            p.1 = until;
            return;
        }
        if self.pinholes.len() >= 64 && self.pinholes.len().is_power_of_two() {
            self.pinholes.retain(|p| p.1 >= now);
        }
        if self.pinholes.len() >= cap.max(1) {
            // Forget the oldest mapping.
            if let Some(i) = (0..self.pinholes.len()).min_by_key(|&i| self.pinholes[i].1) {
                self.pinholes.swap_remove(i);
            }
        }
        self.pinholes.push((to, until));
    }

    fn admits(&self, from: SocketAddr, now: Timestamp) -> bool {
        !self.nat || self.pinholes.iter().any(|p| p.0 == from && p.1 >= now)
    }
}

/// Why a datagram was not delivered.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Drop {
    Budget,
    Mtu,
    NoRoute,
    Dead,
    Partition,
    Nat,
    Loss,
}

/// Counters of the network.
#[derive(Clone, Debug, Default)]
pub struct NetStats {
    pub datagrams_sent: u64,
    pub datagrams_delivered: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub dropped_budget: u64,
    pub dropped_mtu: u64,
    pub dropped_no_route: u64,
    pub dropped_dead: u64,
    pub dropped_partition: u64,
    pub dropped_nat: u64,
    pub dropped_loss: u64,
    pub tcp_connects: u64,
    pub tcp_refused: u64,
    pub tcp_blackholed: u64,
    pub tcp_segments: u64,
    pub tcp_resets: u64,
}

impl NetStats {
    pub fn count_drop(&mut self, d: Drop) {
        match d {
            Drop::Budget => self.dropped_budget += 1,
            Drop::Mtu => self.dropped_mtu += 1,
            Drop::NoRoute => self.dropped_no_route += 1,
            Drop::Dead => self.dropped_dead += 1,
            Drop::Partition => self.dropped_partition += 1,
            Drop::Nat => self.dropped_nat += 1,
            Drop::Loss => self.dropped_loss += 1,
        }
    }
}

/// The network: config plus per-endpoint state, indexed like the world's nodes.
pub struct Network {
    pub cfg: NetConfig,
    pub eps: Vec<EndpointNet>,
    pub stats: NetStats,
}

impl Network {
    pub fn new(cfg: NetConfig) -> Self {
        Network {
            cfg,
            eps: Vec::new(),
            stats: NetStats::default(),
        }
    }

    /// A fresh access delay for a new endpoint.
    pub fn draw_access(&self, rng: &mut Rng) -> Duration {
        let (lo, hi) = (
            self.cfg.access_min.as_nanos() as u64,
            self.cfg.access_max.as_nanos() as u64,
        );
        Duration::from_nanos(lo + rng.below(hi.saturating_sub(lo) + 1))
    }

    fn jitter(&self, rng: &mut Rng) -> Duration {
        let j = self.cfg.jitter.as_nanos() as u64;
        Duration::from_nanos(if j == 0 { 0 } else { rng.below(j + 1) })
    }

    /// One-way delay from `a` to `b` for a fresh packet.
    pub fn delay(&self, a: usize, b: usize, rng: &mut Rng) -> Duration {
        self.eps[a].access + self.eps[b].access + self.jitter(rng)
    }

    /// Whether a TCP connect from `a` reaches `b` (liveness, partition, NAT).
    /// An endpoint behind a NAT is never reached by TCP: the NAT forwards no
    /// port, and its mappings (opened by the endpoint's own datagrams) are for
    /// UDP only.
    pub fn reachable(&self, a: usize, b: usize, _now: Timestamp) -> Result<(), Drop> {
        let (ea, eb) = (&self.eps[a], &self.eps[b]);
        if !eb.alive || !ea.alive {
            return Err(Drop::Dead);
        }
        if ea.island != eb.island {
            return Err(Drop::Partition);
        }
        if eb.nat {
            return Err(Drop::Nat);
        }
        Ok(())
    }

    /// Decides the fate of a datagram from endpoint `a` (claiming source `src`)
    /// to endpoint `b`: the delays of each copy to deliver, or why it was dropped.
    /// `out` receives up to two delays (a duplicate).
    #[allow(clippy::too_many_arguments)]
    pub fn route(
        &mut self,
        now: Timestamp,
        a: usize,
        src: SocketAddr,
        b: Option<usize>,
        len: usize,
        rng: &mut Rng,
        out: &mut Vec<Duration>,
    ) -> Result<(), Drop> {
        out.clear();
        self.stats.datagrams_sent += 1;
        let r = self.route_inner(now, a, src, b, len, rng, out);
        if let Err(d) = r {
            self.stats.count_drop(d);
        }
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn route_inner(
        &mut self,
        now: Timestamp,
        a: usize,
        src: SocketAddr,
        b: Option<usize>,
        len: usize,
        rng: &mut Rng,
        out: &mut Vec<Duration>,
    ) -> Result<(), Drop> {
        self.eps[a].sent += 1;
        if let Some(bucket) = self.eps[a].budget.as_mut() {
            if !bucket.take(now) {
                return Err(Drop::Budget);
            }
        }
        if len > self.cfg.mtu {
            return Err(Drop::Mtu);
        }
        let Some(b) = b else {
            return Err(Drop::NoRoute);
        };
        let pinhole = now.add(self.cfg.nat_pinhole);
        let to_addr = self.eps[b].addr;
        if self.eps[a].nat && src == self.eps[a].addr {
            let cap = self.cfg.nat_mappings;
            self.eps[a].open_pinhole(to_addr, now, pinhole, cap);
        }
        {
            let (ea, eb) = (&self.eps[a], &self.eps[b]);
            if !eb.alive || !ea.alive {
                return Err(Drop::Dead);
            }
            if ea.island != eb.island {
                return Err(Drop::Partition);
            }
            if !eb.admits(src, now) {
                return Err(Drop::Nat);
            }
        }
        // Loss: random, per-endpoint extra, and the sender's burst state.
        let mut lost = rng.chance(self.cfg.loss);
        let extra = self.eps[a].extra_loss.max(self.eps[b].extra_loss);
        if extra > 0.0 && rng.chance(extra) {
            lost = true;
        }
        if let Some(ge) = self.cfg.burst {
            let ep = &mut self.eps[a];
            ep.bad = if ep.bad {
                !rng.chance(ge.p_leave_bad)
            } else {
                rng.chance(ge.p_enter_bad)
            };
            let p = if ep.bad { ge.loss_bad } else { ge.loss_good };
            if rng.chance(p) {
                lost = true;
            }
        }
        if lost {
            return Err(Drop::Loss);
        }
        let mut d = self.delay(a, b, rng);
        if rng.chance(self.cfg.reorder) {
            self.stats.reordered += 1;
            let r = self.cfg.reorder_delay.as_nanos() as u64;
            d += Duration::from_nanos(rng.below(r + 1));
        }
        out.push(d);
        if rng.chance(self.cfg.duplicate) {
            self.stats.duplicated += 1;
            out.push(self.delay(a, b, rng));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(cfg: NetConfig) -> Network {
        let mut n = Network::new(cfg);
        for i in 0..2u8 {
            n.eps.push(EndpointNet::new(
                SocketAddr::from(([1, 0, i, 1], 6881)),
                Duration::from_millis(10),
            ));
        }
        n
    }

    fn send(n: &mut Network, rng: &mut Rng, len: usize) -> Result<usize, Drop> {
        let mut out = Vec::new();
        let src = n.eps[0].addr;
        n.route(Timestamp::from_secs(1), 0, src, Some(1), len, rng, &mut out)
            .map(|_| out.len())
    }

    #[test]
    fn loss_rate_is_close_to_configured() {
        let mut n = net(NetConfig {
            loss: 0.3,
            ..NetConfig::ideal()
        });
        let mut rng = Rng::new(1);
        let ok = (0..10_000)
            .filter(|_| send(&mut n, &mut rng, 100).is_ok())
            .count();
        assert!((6_700..7_300).contains(&ok), "{ok}");
        assert_eq!(n.stats.dropped_loss as usize, 10_000 - ok);
    }

    #[test]
    fn bursty_loss_comes_in_runs() {
        let mut n = net(NetConfig {
            burst: Some(GilbertElliott::bursty(0.01, 20.0)),
            ..NetConfig::ideal()
        });
        let mut rng = Rng::new(2);
        let outcomes: Vec<bool> = (0..20_000)
            .map(|_| send(&mut n, &mut rng, 100).is_ok())
            .collect();
        let lost = outcomes.iter().filter(|o| !**o).count();
        // Count runs of losses: bursty loss has far fewer runs than losses.
        let runs = outcomes.windows(2).filter(|w| w[0] && !w[1]).count();
        assert!(lost > 1_000, "{lost}");
        assert!(runs * 4 < lost, "runs {runs} lost {lost}");
    }

    #[test]
    fn mtu_partition_nat_budget_duplicates() {
        let mut rng = Rng::new(3);
        let mut n = net(NetConfig::ideal());
        assert_eq!(send(&mut n, &mut rng, 1473), Err(Drop::Mtu));
        assert_eq!(send(&mut n, &mut rng, 1472), Ok(1));
        n.eps[1].island = 1;
        assert_eq!(send(&mut n, &mut rng, 10), Err(Drop::Partition));
        n.eps[1].island = 0;
        n.eps[1].nat = true;
        assert_eq!(send(&mut n, &mut rng, 10), Err(Drop::Nat));
        // Once the NAT-ed side sends out, the reply path is open.
        let mut out = Vec::new();
        let src1 = n.eps[1].addr;
        n.route(
            Timestamp::from_secs(1),
            1,
            src1,
            Some(0),
            10,
            &mut rng,
            &mut out,
        )
        .unwrap();
        assert_eq!(send(&mut n, &mut rng, 10), Ok(1));
        n.eps[1].nat = false;
        n.eps[0].budget = Some(TokenBucket::new(3));
        let sent: Vec<_> = (0..5).map(|_| send(&mut n, &mut rng, 10)).collect();
        assert_eq!(sent.iter().filter(|r| r.is_ok()).count(), 3);
        n.eps[0].budget = None;
        n.cfg.duplicate = 1.0;
        assert_eq!(send(&mut n, &mut rng, 10), Ok(2));
    }

    #[test]
    fn a_nat_admits_only_the_endpoints_it_sent_to_and_never_tcp() {
        let mut rng = Rng::new(5);
        let mut n = net(NetConfig::ideal());
        // A third endpoint at the same address as endpoint 0, another port.
        let other_port = SocketAddr::from(([1, 0, 0, 1], 6882));
        n.eps
            .push(EndpointNet::new(other_port, Duration::from_millis(10)));
        n.eps[1].nat = true;
        let t = |s| Timestamp::from_secs(s);
        let mut out = Vec::new();
        let mut route = |n: &mut Network, at, a: usize, b: usize| {
            let src = n.eps[a].addr;
            n.route(t(at), a, src, Some(b), 10, &mut rng, &mut out)
        };
        assert_eq!(route(&mut n, 1, 0, 1), Err(Drop::Nat));
        assert_eq!(n.reachable(0, 1, t(1)), Err(Drop::Nat));
        // The NAT-ed endpoint sends to endpoint 0: 0 may answer, from that
        // port only, until the mapping times out; TCP still never gets in.
        assert_eq!(route(&mut n, 2, 1, 0), Ok(()));
        assert_eq!(route(&mut n, 3, 0, 1), Ok(()));
        assert_eq!(route(&mut n, 3, 2, 1), Err(Drop::Nat));
        assert_eq!(n.reachable(0, 1, t(3)), Err(Drop::Nat));
        assert_eq!(route(&mut n, 2 + 60, 0, 1), Ok(()));
        assert_eq!(route(&mut n, 2 + 61, 0, 1), Err(Drop::Nat));
        // Outbound TCP from behind the NAT is fine.
        assert_eq!(n.reachable(1, 0, t(63)), Ok(()));
    }

    #[test]
    fn a_full_nat_table_forgets_its_oldest_mapping() {
        let mut rng = Rng::new(6);
        let mut n = net(NetConfig {
            nat_mappings: 3,
            ..NetConfig::ideal()
        });
        for i in 0..4u8 {
            n.eps.push(EndpointNet::new(
                SocketAddr::from(([2, 0, i, 1], 6881)),
                Duration::from_millis(10),
            ));
        }
        n.eps[1].nat = true;
        let mut out = Vec::new();
        let src = n.eps[1].addr;
        // Endpoint 1 sends to 0, 2, 3, 4 in turn: the mapping to 0 goes.
        for (s, b) in [(1, 0), (2, 2), (3, 3), (4, 4)] {
            n.route(
                Timestamp::from_secs(s),
                1,
                src,
                Some(b),
                10,
                &mut rng,
                &mut out,
            )
            .unwrap();
        }
        let t = Timestamp::from_secs(5);
        for (a, want) in [(0, Err(Drop::Nat)), (2, Ok(())), (4, Ok(()))] {
            let from = n.eps[a].addr;
            assert_eq!(
                n.route(t, a, from, Some(1), 10, &mut rng, &mut out),
                want,
                "{a}"
            );
        }
    }

    #[test]
    fn token_bucket_refills() {
        let mut b = TokenBucket::new(10);
        let t0 = Timestamp::from_secs(5);
        assert_eq!((0..20).filter(|_| b.take(t0)).count(), 10);
        assert!(!b.take(t0));
        assert!(b.take(t0.add(Duration::from_millis(100))));
    }
}
