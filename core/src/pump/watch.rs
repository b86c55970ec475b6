//! The "no bootstrap node has answered" report both runtimes give.

use std::net::SocketAddr;
use std::time::Duration;

use super::{BOOTSTRAP_WARN, BOOTSTRAP_WARN_MAX};
use crate::Timestamp;

/// "No bootstrap node has answered", shared by both runtimes: it remembers the
/// addresses tried (saved nodes, resolved routers) and the router names that did
/// not resolve, and when nothing has answered `BOOTSTRAP_WARN` after the start it
/// says so plainly, then again with a doubling interval (at most every 10 min),
/// until a node answers. The runtime keeps retrying meanwhile (core's bootstrap
/// backoff, the resolver's retries); this only reports.
#[derive(Debug)]
pub struct BootstrapWatch {
    start: Timestamp,
    next: Timestamp,
    every: Duration,
    answered: bool,
    tried: Vec<SocketAddr>,
    dns_failed: Vec<(String, String)>,
    dns_failures: u64,
}

impl BootstrapWatch {
    /// Starts watching at `start` (the runtime's clock), bootstrapping from `saved`.
    pub fn new(start: Timestamp, saved: &[SocketAddr]) -> Self {
        BootstrapWatch {
            start,
            next: start.add(BOOTSTRAP_WARN),
            every: BOOTSTRAP_WARN,
            answered: false,
            tried: saved.to_vec(),
            dns_failed: Vec::new(),
            dns_failures: 0,
        }
    }

    /// One router name's resolution (both runtimes resolve off the hot path and
    /// retry failures). A failure is counted and warned about once per name (its
    /// retries log at debug). Returns the addresses not tried before.
    pub fn on_dns(
        &mut self,
        name: &str,
        result: &Result<Vec<SocketAddr>, String>,
    ) -> Vec<SocketAddr> {
        let mut fresh = Vec::new();
        match result {
            Ok(addrs) => {
                tracing::debug!(%name, ?addrs, "router resolved");
                self.dns_failed.retain(|(n, _)| n != name);
                for a in addrs {
                    if !self.tried.contains(a) {
                        self.tried.push(*a);
                        fresh.push(*a);
                    }
                }
            }
            Err(e) => {
                self.dns_failures += 1;
                if self.dns_failed.iter().any(|(n, _)| n == name) {
                    tracing::debug!(%name, "still cannot resolve bootstrap router: {e}");
                } else {
                    tracing::warn!(%name, "could not resolve bootstrap router: {e} (retrying with backoff)");
                }
                self.dns_failed.retain(|(n, _)| n != name);
                self.dns_failed.push((name.to_string(), e.clone()));
            }
        }
        fresh
    }

    /// Router name resolutions that failed so far (for `/metrics`).
    pub fn dns_failures(&self) -> u64 {
        self.dns_failures
    }

    /// When [`BootstrapWatch::check`] is due next; `None` once a node answered.
    pub fn next_check(&self) -> Option<Timestamp> {
        (!self.answered).then_some(self.next)
    }

    /// Called at least at [`BootstrapWatch::next_check`], with the responses the
    /// crawler has received so far. Once any arrived, the watch ends; otherwise, when
    /// due, it logs the warning (returned too) and backs off.
    pub fn check(&mut self, now: Timestamp, responses_in: u64) -> Option<String> {
        if self.answered || now < self.next {
            return None;
        }
        // Some node answered: bootstrap is under way even if the tables are small.
        if responses_in > 0 {
            self.answered = true;
            return None;
        }
        let tried: Vec<String> = self.tried.iter().map(|a| a.to_string()).collect();
        let dns: Vec<String> = self
            .dns_failed
            .iter()
            .map(|(n, e)| format!("{n}: {e}"))
            .collect();
        let msg = format!(
            "no bootstrap node has answered after {}s; tried {} address(es) [{}]; DNS failures [{}]; \
             {} response(s) received; still retrying with backoff (check the network, a firewall, \
             or pass --bootstrap HOST:PORT)",
            now.since(self.start).as_secs(),
            tried.len(),
            tried.join(", "),
            dns.join("; "),
            responses_in,
        );
        tracing::warn!("{msg}");
        self.every = (self.every * 2).min(BOOTSTRAP_WARN_MAX);
        self.next = now.add(self.every);
        Some(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> Timestamp {
        Timestamp::from_secs(secs)
    }

    #[test]
    fn bootstrap_watch_warns_with_what_was_tried_then_backs_off() {
        let saved: SocketAddr = "10.0.0.1:6881".parse().unwrap();
        let mut w = BootstrapWatch::new(t(0), &[saved]);
        let router: SocketAddr = "10.0.0.2:6881".parse().unwrap();
        assert_eq!(
            w.on_dns("router.example:6881", &Ok(vec![router, saved])),
            vec![router]
        );
        assert!(w
            .on_dns("nope.invalid:6881", &Err("no such host".into()))
            .is_empty());
        assert!(w
            .on_dns("nope.invalid:6881", &Err("no such host".into()))
            .is_empty());
        assert_eq!(w.dns_failures(), 2);
        assert_eq!(w.next_check(), Some(t(30)));
        assert_eq!(w.check(t(29), 0), None, "not before 30 s");
        let msg = w.check(t(30), 0).expect("a warning at 30 s");
        assert!(msg.contains("after 30s"), "{msg}");
        assert!(
            msg.contains("tried 2 address(es) [10.0.0.1:6881, 10.0.0.2:6881]"),
            "{msg}"
        );
        assert!(
            msg.contains("DNS failures [nope.invalid:6881: no such host]"),
            "{msg}"
        );
        // Then with a doubling interval.
        assert_eq!(w.next_check(), Some(t(90)));
        assert_eq!(w.check(t(60), 0), None);
        assert!(w.check(t(90), 0).is_some());
        assert_eq!(w.next_check(), Some(t(210)));
        // A name that resolves later leaves the DNS failures.
        w.on_dns(
            "nope.invalid:6881",
            &Ok(vec!["10.0.0.3:1".parse().unwrap()]),
        );
        let msg = w.check(t(210), 0).unwrap();
        assert!(
            msg.contains("DNS failures []") && msg.contains("10.0.0.3:1"),
            "{msg}"
        );
        // Once a node answered, the watch ends.
        assert_eq!(w.check(t(1000), 1), None);
        assert_eq!(w.next_check(), None);
        assert_eq!(w.check(t(5000), 1), None);
    }
}
