//! HTTP basic-auth credentials kept as argon2 password hashes (PHC strings), read
//! from a file of `user:$argon2id$v=19$m=…,t=…,p=…$salt$hash` lines.
//!
//! Argon2 is slow and memory-hard by design (19 MiB, two passes by default), so a
//! check is bounded three ways: a successful (user, password) pair is remembered
//! (as a keyed SHA-256 digest, in a small bounded map) and later requests skip
//! argon2; at most
//! [`MAX_VERIFYING`] checks run at once on the blocking pool; and at most
//! [`MAX_WAITING`] requests wait for one, the rest are answered 503 at once and
//! counted. A flood of wrong passwords thus costs at most `MAX_VERIFYING` cores.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

/// Argon2 checks running at once (each takes a blocking-pool thread and a core).
pub const MAX_VERIFYING: usize = 2;
/// Requests waiting for an argon2 check (including the running ones); more are
/// refused with 503 and counted.
pub const MAX_WAITING: usize = 8;
/// Successful (user, password) pairs remembered; the oldest is forgotten first.
pub const CACHE_ENTRIES: usize = 64;

/// The costliest argon2 parameters a credentials line may ask for, checked at load
/// (the PHC line sets them, and every check runs with them): memory `m` in KiB
/// (256 MiB; each of the [`MAX_VERIFYING`] checks holds that much), passes `t`,
/// lanes `p`, and memory × passes (1 GiB·pass, about a second of one core). RFC 9106's
/// second recommendation (m = 64 MiB, t = 3, p = 4) and the crate's default that
/// `hash-password` writes (m = 19 MiB, t = 2, p = 1) are well inside.
pub const MAX_M_COST_KIB: u32 = 256 * 1024;
/// See [`MAX_M_COST_KIB`].
pub const MAX_T_COST: u32 = 16;
/// See [`MAX_M_COST_KIB`].
pub const MAX_P_COST: u32 = 16;
/// See [`MAX_M_COST_KIB`]: `m · t` in KiB·passes.
pub const MAX_WORK: u64 = 1024 * 1024;

/// The users and their password hashes, with the check's bounds and counters.
pub struct Credentials {
    /// (user, PHC string), in file order; the PHC strings parse (checked at load).
    users: Vec<(String, String)>,
    /// Digests of pairs that passed argon2, keyed by `key` (so the map holds no
    /// unsalted password digest).
    cache: Mutex<VecDeque<[u8; 32]>>,
    key: [u8; 32],
    waiting: Arc<Semaphore>,
    running: Arc<Semaphore>,
    counters: AuthCounters,
}

/// What the checks did.
#[derive(Debug, Default)]
struct AuthCounters {
    accepted: AtomicU64,
    cache_hits: AtomicU64,
    argon2_runs: AtomicU64,
    rejected: AtomicU64,
    busy: AtomicU64,
}

/// A snapshot of the checks' counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthCounts {
    /// Requests let in by their credentials.
    pub accepted: u64,
    /// Of those, let in from the cache (no argon2 run).
    pub cache_hits: u64,
    /// Argon2 verifications run.
    pub argon2_runs: u64,
    /// Requests refused with 401 (no, malformed or wrong credentials).
    pub rejected: u64,
    /// Requests refused with 503: too many checks waiting already.
    pub busy: u64,
}

/// The outcome of [`Credentials::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// No such user (checked against a hash all the same: the answer takes as long).
    UnknownUser,
    /// A user's name with a wrong password.
    WrongPassword,
    /// Too many checks waiting already: refused at once.
    Busy,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

/// Why a user name is unusable, if it is.
fn bad_user(user: &str) -> Option<&'static str> {
    if user.is_empty() {
        Some("the user name is empty")
    } else if user.contains(':') {
        Some("the user name contains ':'")
    } else if user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("the user name contains a space or a control character")
    } else {
        None
    }
}

/// Checks one PHC string: an argon2 hash with valid parameters, salt and output.
fn check_phc(phc: &str) -> Result<(), String> {
    let h = PasswordHash::new(phc).map_err(|e| format!("not a PHC string: {e}"))?;
    argon2::Algorithm::try_from(h.algorithm).map_err(|_| {
        format!(
            "the hash is {}, not argon2id, argon2i or argon2d",
            h.algorithm
        )
    })?;
    let p = argon2::Params::try_from(&h).map_err(|e| format!("bad argon2 parameters: {e}"))?;
    let (m, t, par) = (p.m_cost(), p.t_cost(), p.p_cost());
    if m > MAX_M_COST_KIB
        || t > MAX_T_COST
        || par > MAX_P_COST
        || u64::from(m) * u64::from(t) > MAX_WORK
    {
        return Err(format!(
            "argon2 cost m={m} KiB, t={t}, p={par} is past the bound (m ≤ {MAX_M_COST_KIB} KiB, \
             t ≤ {MAX_T_COST}, p ≤ {MAX_P_COST}, m·t ≤ {MAX_WORK}): every login would cost that \
             much memory and time; hash the password again with `magnetar serve hash-password`"
        ));
    }
    if h.salt.is_none() || h.hash.is_none() {
        return Err("the PHC string has no salt or no hash".into());
    }
    Ok(())
}

impl Credentials {
    /// Parses `user:PHC` lines (blank lines and lines starting with `#` are
    /// skipped). Errors name the 1-based line.
    pub fn parse(text: &str) -> Result<Credentials, String> {
        let mut users: Vec<(String, String)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, phc)) = line.split_once(':') else {
                return Err(format!("line {n}: expected USER:PHC-HASH"));
            };
            if let Some(why) = bad_user(user) {
                return Err(format!("line {n}: {why}"));
            }
            check_phc(phc).map_err(|e| format!("line {n}: {e}"))?;
            if users.iter().any(|(u, _)| u == user) {
                return Err(format!("line {n}: user {user:?} is given twice"));
            }
            users.push((user.to_string(), phc.to_string()));
        }
        if users.is_empty() {
            return Err("no USER:PHC-HASH line".into());
        }
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        Ok(Credentials {
            users,
            cache: Mutex::new(VecDeque::with_capacity(CACHE_ENTRIES)),
            key,
            waiting: Arc::new(Semaphore::new(MAX_WAITING)),
            running: Arc::new(Semaphore::new(MAX_VERIFYING)),
            counters: AuthCounters::default(),
        })
    }

    /// Reads and parses the file at `path` (errors name the file and the line).
    pub fn load(path: &Path) -> Result<Credentials, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Credentials::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// How many users the file gave.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there is no user (never true for a parsed file).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The checks' counters so far.
    pub fn counts(&self) -> AuthCounts {
        let c = &self.counters;
        AuthCounts {
            accepted: c.accepted.load(Ordering::Relaxed),
            cache_hits: c.cache_hits.load(Ordering::Relaxed),
            argon2_runs: c.argon2_runs.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            busy: c.busy.load(Ordering::Relaxed),
        }
    }

    /// Counts a request refused before any password was checked (no credentials).
    pub(crate) fn count_rejected(&self) {
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
    }

    fn pair_digest(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update((user.len() as u64).to_le_bytes());
        h.update(user.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    fn cached(&self, d: &[u8; 32]) -> bool {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        // Every entry is compared in full (no early exit on a byte).
        cache.iter().fold(false, |hit, e| hit | crate::ct_eq(e, d))
    }

    fn remember(&self, d: [u8; 32]) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.iter().any(|e| e == &d) {
            return;
        }
        if cache.len() >= CACHE_ENTRIES {
            cache.pop_front();
        }
        cache.push_back(d);
    }

    /// Whether `user` / `password` are a user's; argon2 runs on the blocking pool,
    /// within the bounds above.
    pub async fn check(self: &Arc<Self>, user: &str, password: &str) -> Verdict {
        let d = self.pair_digest(user, password);
        if self.cached(&d) {
            self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
            self.counters.accepted.fetch_add(1, Ordering::Relaxed);
            return Verdict::Accepted;
        }
        let Ok(_waiting) = self.waiting.clone().try_acquire_owned() else {
            self.counters.busy.fetch_add(1, Ordering::Relaxed);
            return Verdict::Busy;
        };
        let Ok(running) = self.running.clone().acquire_owned().await else {
            self.counters.busy.fetch_add(1, Ordering::Relaxed);
            return Verdict::Busy;
        };
        // Another request may have verified the same pair while this one waited.
        if self.cached(&d) {
            self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
            self.counters.accepted.fetch_add(1, Ordering::Relaxed);
            return Verdict::Accepted;
        }
        // An unknown user is checked against the first user's hash, and refused
        // whatever the result: the answer takes as long as for a known user.
        let known = self.users.iter().find(|(u, _)| u == user);
        let phc = match known {
            Some((_, p)) => p.clone(),
            None => self
                .users
                .first()
                .map(|(_, p)| p.clone())
                .unwrap_or_default(),
        };
        let password = password.to_string();
        self.counters.argon2_runs.fetch_add(1, Ordering::Relaxed);
        let ok = tokio::task::spawn_blocking(move || {
            let _running = running;
            verify(&password, &phc)
        })
        .await
        .unwrap_or(false);
        match (ok, known.is_some()) {
            (true, true) => {
                self.remember(d);
                self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                Verdict::Accepted
            }
            (_, false) => {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                Verdict::UnknownUser
            }
            (false, true) => {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                Verdict::WrongPassword
            }
        }
    }
}

/// Whether `password` matches the PHC string `phc` (argon2, its own parameters).
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A credentials-file line for `user` with `password`: argon2id with the crate's
/// default parameters (m=19456 KiB, t=2, p=1) and a random 16-byte salt.
pub fn credential_line(user: &str, password: &str) -> Result<String, String> {
    if let Some(why) = bad_user(user) {
        return Err(why.into());
    }
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    let salt = SaltString::generate(&mut OsRng);
    let phc = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| format!("cannot hash the password: {e}"))?;
    Ok(format!("{user}:{phc}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_waiting_bound_a_check_is_refused_at_once_and_counted() {
        let line = credential_line("alice", "pw").unwrap();
        let c = Arc::new(Credentials::parse(&line).unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            // Every waiting slot taken (as by a flood of checks in progress).
            let held = c
                .waiting
                .clone()
                .acquire_many_owned(MAX_WAITING as u32)
                .await;
            assert_eq!(c.check("alice", "wrong").await, Verdict::Busy);
            assert_eq!(c.check("alice", "pw").await, Verdict::Busy);
            assert_eq!(c.counts().busy, 2);
            assert_eq!(c.counts().argon2_runs, 0);
            drop(held);
            // Freed: checked, then remembered; a remembered pair passes even
            // while every slot is taken.
            assert_eq!(c.check("alice", "pw").await, Verdict::Accepted);
            let held = c
                .waiting
                .clone()
                .acquire_many_owned(MAX_WAITING as u32)
                .await;
            assert_eq!(c.check("alice", "pw").await, Verdict::Accepted);
            assert_eq!(c.check("alice", "wrong").await, Verdict::Busy);
            drop(held);
            let n = c.counts();
            assert_eq!((n.argon2_runs, n.cache_hits, n.busy), (1, 1, 3));
        });
    }

    #[test]
    fn a_line_past_the_cost_bound_is_refused_at_load_with_its_line_number() {
        let good = credential_line("alice", "pw").unwrap();
        let phc = good.split_once(':').unwrap().1;
        assert!(phc.contains("$m=19456,t=2,p=1$"), "{phc}");
        let with = |params: &str| phc.replace("m=19456,t=2,p=1", params);
        // At the bounds: accepted (the parameters only; no check runs at load).
        for ok in ["m=262144,t=4,p=16", "m=65536,t=16,p=4", "m=8,t=1,p=1"] {
            let text = format!("# users\nalice:{}\n", with(ok));
            assert!(Credentials::parse(&text).is_ok(), "{ok}");
        }
        for (bad, what) in [
            ("m=262145,t=1,p=1", "m=262145 KiB"),
            ("m=4194304,t=1,p=1", "m=4194304 KiB"),
            ("m=19456,t=17,p=1", "t=17"),
            ("m=19456,t=4294967295,p=1", "t=4294967295"),
            ("m=19456,t=2,p=17", "p=17"),
            ("m=131072,t=9,p=1", "m=131072 KiB, t=9"),
        ] {
            let text = format!("{good}\n\nbob:{}\n", with(bad));
            let e = Credentials::parse(&text).unwrap_err();
            assert!(
                e.starts_with("line 3: argon2 cost ")
                    && e.contains(what)
                    && e.contains("past the bound"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_cache_stays_bounded() {
        let line = credential_line("alice", "pw").unwrap();
        let c = Credentials::parse(&line).unwrap();
        for i in 0..(CACHE_ENTRIES as u32 + 10) {
            c.remember(c.pair_digest("alice", &i.to_string()));
        }
        let cache = c.cache.lock().unwrap();
        assert_eq!(cache.len(), CACHE_ENTRIES);
        drop(cache);
        // The oldest were forgotten, the newest kept.
        assert!(!c.cached(&c.pair_digest("alice", "0")));
        assert!(c.cached(&c.pair_digest("alice", &(CACHE_ENTRIES + 9).to_string())));
    }
}
