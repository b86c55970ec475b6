//! BEP 5 announce_peer tokens ([`Tokens`]): two rotating secrets; token = truncated SHA-1(ip ‖ secret).
//! A token is valid under the current secret or the previous one, so it lives
//! between one and two rotation periods (10 minutes with the 5-minute default).
//! Tokens are [`TOKEN_LEN`] (8) bytes.

use std::net::IpAddr;
use std::time::Duration;

use sha1::{Digest, Sha1};

use crate::rng::Rng;
use crate::time::Timestamp;

/// Length of the tokens we hand out.
pub const TOKEN_LEN: usize = 8;

/// The announce_peer token issuer and checker: holds the current and previous secret
/// (20 random bytes each, from the seeded [`Rng`]) and rotates them every `period`.
pub struct Tokens {
    current: [u8; 20],
    previous: [u8; 20],
    rotated_at: Timestamp,
    period: Duration,
    rng: Rng,
}

impl Tokens {
    /// Draws two fresh secrets from `rng`; the first rotation is due at `now + period`.
    pub fn new(mut rng: Rng, now: Timestamp, period: Duration) -> Self {
        let current = rng.bytes();
        let previous = rng.bytes();
        Tokens {
            current,
            previous,
            rotated_at: now,
            period,
            rng,
        }
    }

    fn compute(secret: &[u8; 20], ip: IpAddr) -> [u8; TOKEN_LEN] {
        let mut h = Sha1::new();
        match crate::addr::canonical(std::net::SocketAddr::new(ip, 0)).ip() {
            IpAddr::V4(v4) => h.update(v4.octets()),
            IpAddr::V6(v6) => h.update(v6.octets()),
        }
        h.update(secret);
        let d = h.finalize();
        let mut t = [0u8; TOKEN_LEN];
        t.copy_from_slice(&d[..TOKEN_LEN]);
        t
    }

    /// Rotates the secrets if a period has passed.
    pub fn tick(&mut self, now: Timestamp) {
        let elapsed = now.since(self.rotated_at);
        if elapsed >= self.period {
            // After a pause of two periods or more, both secrets are stale.
            self.previous = if elapsed >= self.period * 2 {
                self.rng.bytes()
            } else {
                self.current
            };
            self.current = self.rng.bytes();
            self.rotated_at = now;
        }
    }

    /// The token for `ip` under the current secret.
    pub fn issue(&mut self, now: Timestamp, ip: IpAddr) -> [u8; TOKEN_LEN] {
        self.tick(now);
        Self::compute(&self.current, ip)
    }

    /// Whether `token` was issued to `ip` under the current or previous secret.
    pub fn verify(&mut self, now: Timestamp, ip: IpAddr, token: &[u8]) -> bool {
        self.tick(now);
        if token.len() != TOKEN_LEN {
            return false;
        }
        token == Self::compute(&self.current, ip) || token == Self::compute(&self.previous, ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_for_two_periods_then_expires() {
        let p = Duration::from_secs(300);
        let mut t = Tokens::new(Rng::new(1), Timestamp::ZERO, p);
        let ip: IpAddr = "1.2.3.4".parse().unwrap();
        let other: IpAddr = "1.2.3.5".parse().unwrap();
        let tok = t.issue(Timestamp::from_secs(10), ip);
        assert!(t.verify(Timestamp::from_secs(20), ip, &tok));
        assert!(!t.verify(Timestamp::from_secs(20), other, &tok));
        assert!(!t.verify(Timestamp::from_secs(20), ip, &tok[..4]));
        // After one rotation it is still valid (previous secret).
        assert!(t.verify(Timestamp::from_secs(301), ip, &tok));
        // After a second rotation it is not.
        assert!(!t.verify(Timestamp::from_secs(602), ip, &tok));
        // Mapped v6 and v4 get the same token.
        let mapped: IpAddr = "::ffff:1.2.3.4".parse().unwrap();
        let now = Timestamp::from_secs(603);
        assert_eq!(t.issue(now, ip), t.issue(now, mapped));
    }
}
