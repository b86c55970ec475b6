//! Our external address, voted on by the nodes that answer us (BEP 42: a reply's
//! `ip` is our address as its sender sees it).
//!
//! A [`Voter`] takes the votes of one bind address. Each voter network (a /24 for
//! IPv4, a /64 for IPv6) counts once per round, so one node, or one host with many
//! addresses, cannot sway it. Only public addresses are candidates. The vote
//! settles when at least `min_votes` distinct voters took part and the leading
//! address has a clear majority (more than 1.5 times the votes of the runner-up,
//! the rule of libtorrent's `ip_voter`). Before the first settlement it settles as
//! soon as that holds; afterwards a change needs a full round (`round_votes`
//! voters, or `round_time` with at least `min_votes`), so the address does not
//! flap. Every evaluation at the end of a round starts a new one: old votes decay.
//! Bounded: a round holds at most `round_votes` voters.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::addr::{canonical, is_sendable};
use crate::time::Timestamp;

/// Voter settings.
#[derive(Clone, Debug)]
pub struct VoteConfig {
    /// Distinct voter networks needed before the vote may settle.
    pub min_votes: usize,
    /// Voters in one round at most; a full round is evaluated and a new one begins.
    pub round_votes: usize,
    /// A round older than this is evaluated at the next vote if it has `min_votes`.
    pub round_time: Duration,
}

impl Default for VoteConfig {
    fn default() -> Self {
        VoteConfig {
            min_votes: 10,
            round_votes: 50,
            round_time: Duration::from_secs(5 * 60),
        }
    }
}

/// A voter's network: the first 3 bytes of an IPv4 address, 8 of an IPv6 one.
type Net = (bool, [u8; 8]);

fn net(ip: IpAddr) -> Net {
    let mut s = [0u8; 8];
    match ip {
        IpAddr::V4(v4) => {
            s[..3].copy_from_slice(&v4.octets()[..3]);
            (false, s)
        }
        IpAddr::V6(v6) => {
            s.copy_from_slice(&v6.octets()[..8]);
            (true, s)
        }
    }
}

/// What one vote did.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum VoteOutcome {
    /// Counted; nothing settled.
    Counted,
    /// Ignored: a private or bogus address, the wrong family, or a network that
    /// already voted this round.
    Ignored,
    /// The vote settled on this address, which differs from the one before.
    Changed(IpAddr),
}

/// The external-address vote of one bind address (see the module docs).
#[derive(Clone, Debug)]
pub struct Voter {
    cfg: VoteConfig,
    current: Option<IpAddr>,
    /// This round: each voter network's vote.
    votes: BTreeMap<Net, IpAddr>,
    round_start: Timestamp,
    /// Votes ignored (not public, wrong family, network already voted).
    pub ignored: u64,
    /// Times the vote settled on a new address.
    pub changes: u64,
}

impl Voter {
    /// A voter with no votes yet, its first round starting at `now`.
    pub fn new(cfg: VoteConfig, now: Timestamp) -> Self {
        Voter {
            cfg,
            current: None,
            votes: BTreeMap::new(),
            round_start: now,
            ignored: 0,
            changes: 0,
        }
    }

    /// The address the vote settled on last, if any.
    pub fn current(&self) -> Option<IpAddr> {
        self.current
    }

    /// Voters in the current round.
    pub fn len(&self) -> usize {
        self.votes.len()
    }

    /// `voter` says it sees us at `seen`.
    pub fn vote(&mut self, now: Timestamp, voter: IpAddr, seen: IpAddr) -> VoteOutcome {
        let voter = canonical(SocketAddr::new(voter, 1)).ip();
        let seen = canonical(SocketAddr::new(seen, 1)).ip();
        let public = is_sendable(&SocketAddr::new(seen, 1), false);
        let key = net(voter);
        if !public || voter.is_ipv6() != seen.is_ipv6() || self.votes.contains_key(&key) {
            self.ignored += 1;
            return VoteOutcome::Ignored;
        }
        self.votes.insert(key, seen);
        let round_over = self.votes.len() >= self.cfg.round_votes.max(1)
            || (now.since(self.round_start) >= self.cfg.round_time
                && self.votes.len() >= self.cfg.min_votes);
        if !round_over && self.current.is_some() {
            return VoteOutcome::Counted;
        }
        let winner = self.winner();
        if round_over {
            self.votes.clear();
            self.round_start = now;
        } else if winner.is_some() {
            // The first settlement ends the first round.
            self.votes.clear();
            self.round_start = now;
        }
        match winner {
            Some(ip) if self.current != Some(ip) => {
                self.current = Some(ip);
                self.changes += 1;
                VoteOutcome::Changed(ip)
            }
            _ => VoteOutcome::Counted,
        }
    }

    /// The address with a clear majority of at least `min_votes`, if any.
    fn winner(&self) -> Option<IpAddr> {
        let mut tally: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for ip in self.votes.values() {
            *tally.entry(*ip).or_insert(0) += 1;
        }
        let (mut top, mut second) = (None, 0usize);
        for (ip, n) in tally {
            match top {
                Some((_, t)) if n <= t => second = second.max(n),
                Some((_, t)) => {
                    second = t;
                    top = Some((ip, n));
                }
                None => top = Some((ip, n)),
            }
        }
        let (ip, n) = top?;
        (n >= self.cfg.min_votes.max(1) && n * 2 > second * 3).then_some(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Voter `i`, each in its own /24.
    fn voter(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x5100_0000 + (i << 8) + 7))
    }

    #[test]
    fn settles_after_enough_distinct_networks() {
        let mut v = Voter::new(VoteConfig::default(), Timestamp::ZERO);
        let us = ip("93.184.216.34");
        for i in 0..9 {
            assert_eq!(v.vote(Timestamp::ZERO, voter(i), us), VoteOutcome::Counted);
        }
        assert_eq!(v.current(), None);
        assert_eq!(
            v.vote(Timestamp::ZERO, voter(9), us),
            VoteOutcome::Changed(us)
        );
        assert_eq!(v.current(), Some(us));
        // The same address again changes nothing.
        for i in 10..200 {
            assert_ne!(
                v.vote(Timestamp::from_secs(i as u64), voter(i), us),
                VoteOutcome::Changed(us)
            );
        }
        assert!(v.len() < 50, "bounded: {}", v.len());
    }

    #[test]
    fn one_network_cannot_sway_it() {
        let mut v = Voter::new(VoteConfig::default(), Timestamp::ZERO);
        let liar = ip("1.2.3.4");
        // 500 votes from one /24 say "1.2.3.4": one counts.
        for h in 0..500u32 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x5200_0000 + (h % 250)));
            v.vote(Timestamp::ZERO, a, liar);
        }
        assert_eq!(v.current(), None);
        assert_eq!(v.ignored, 499);
    }

    #[test]
    fn private_addresses_and_wrong_families_are_ignored() {
        let mut v = Voter::new(VoteConfig::default(), Timestamp::ZERO);
        for i in 0..100 {
            for seen in ["192.168.1.2", "127.0.0.1", "10.0.0.1", "2a00:1450::1"] {
                v.vote(Timestamp::ZERO, voter(i), ip(seen));
            }
        }
        assert_eq!(v.current(), None);
        assert_eq!(v.len(), 0);
    }

    #[test]
    fn no_clear_majority_no_settlement_and_a_change_needs_a_round() {
        let mut v = Voter::new(VoteConfig::default(), Timestamp::ZERO);
        let (a, b) = (ip("93.184.216.34"), ip("151.101.1.69"));
        // Split 50/50 over a full round: nothing settles, the round resets.
        for i in 0..50 {
            let seen = if i % 2 == 0 { a } else { b };
            assert_eq!(
                v.vote(Timestamp::ZERO, voter(i), seen),
                VoteOutcome::Counted
            );
        }
        assert_eq!(v.current(), None);
        assert_eq!(v.len(), 0, "a new round");
        // Settle on a.
        let mut i = 100;
        while v.current().is_none() {
            v.vote(Timestamp::ZERO, voter(i), a);
            i += 1;
            assert!(i < 200);
        }
        assert_eq!(v.current(), Some(a));
        // The address moves to b: a few votes do not switch it at once ...
        for _ in 0..20 {
            assert_eq!(v.vote(Timestamp::ZERO, voter(i), b), VoteOutcome::Counted);
            i += 1;
        }
        // ... the end of the round does.
        let mut changed = None;
        for _ in 0..30 {
            if let VoteOutcome::Changed(x) = v.vote(Timestamp::ZERO, voter(i), b) {
                changed = Some(x);
            }
            i += 1;
        }
        assert_eq!(changed, Some(b));
        assert_eq!(v.changes, 2);
    }

    #[test]
    fn an_old_round_is_evaluated_by_time() {
        let mut v = Voter::new(VoteConfig::default(), Timestamp::ZERO);
        let (a, b) = (ip("93.184.216.34"), ip("151.101.1.69"));
        for i in 0..10 {
            v.vote(Timestamp::ZERO, voter(i), a);
        }
        assert_eq!(v.current(), Some(a));
        for i in 10..22 {
            v.vote(Timestamp::from_secs(10), voter(i), b);
        }
        assert_eq!(v.current(), Some(a), "the round is young");
        let out = v.vote(Timestamp::from_secs(301), voter(22), b);
        assert_eq!(out, VoteOutcome::Changed(b));
    }
}
