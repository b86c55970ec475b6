//! Test helpers shared by core's tests and the simulator (feature `testkit`):
//! sans-IO fake peers that serve metadata honestly or in hostile ways.
//!
//! - [`FakeSeeder`]: one fake peer connection with a [`Behavior`] (honest, or one of
//!   many hostile ways, each mapping to one [`crate::fetch::FailReason`]).
//! - [`Swarm`]: an in-memory world of fake peers keyed by address that drives a
//!   [`Fetcher`] to completion with no sockets: it answers `Connect`, carries `Send`
//!   bytes to seeders and seeder bytes back (re-split by a [`Chunking`]), and jumps
//!   time to the fetcher's next deadline when nothing else is pending.
//! - [`InfoSpec`] / [`build_info`]: valid info dicts of any size for tests.
//!
//! ```
//! use magnetar_core::fetch::{FetchConfig, Fetcher};
//! use magnetar_core::testkit::{build_info, Behavior, InfoSpec, Swarm};
//! use magnetar_core::{Event, Rng, Timestamp};
//!
//! let info = build_info(&InfoSpec::single("file.bin", 1 << 20));
//! let mut swarm = Swarm::new(1);
//! let peer = "10.0.0.2:6881".parse().unwrap();
//! let ih = swarm.add_seeder(peer, info.clone().into(), Behavior::Honest);
//! let mut f = Fetcher::new(FetchConfig::default(), Rng::new(1)).with_allow_private(true);
//! f.fetch(Timestamp::ZERO, ih, &[peer]).unwrap();
//! let events = swarm.run(&mut f, 10_000);
//! assert!(events.iter().any(|e| matches!(e, Event::MetadataFetched(m) if m.raw[..] == info[..])));
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use crate::fetch::Fetcher;
use crate::id::InfoHash;
use crate::rng::Rng;
use crate::time::Timestamp;
use crate::wire::bencode::Owned;
use crate::{CloseReason, ConnId, Event, Output};

mod seeder;
mod utp;
pub use seeder::{Behavior, FakeSeeder, SeederEncryption, SEEDER_UT_METADATA, SEEDER_UT_PEX};
pub use utp::UtpSwarm;

/// How a [`Swarm`] splits each write before delivering it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Chunking {
    /// Each write arrives whole.
    Whole,
    /// Fixed-size chunks.
    Fixed(usize),
    /// Random chunk sizes in `1..=max`, from the swarm's seeded RNG.
    Random {
        /// Largest chunk, bytes.
        max: usize,
    },
}

/// What answers at an address.
#[derive(Clone, Debug)]
pub enum PeerSpec {
    /// A fake seeder serving `info` (claiming `info_hash`) with a behaviour.
    Seeder {
        /// The raw info dict it serves.
        info: Bytes,
        /// The infohash it claims in its handshake.
        info_hash: InfoHash,
        /// Honest, or one of the hostile behaviours.
        behavior: Behavior,
        /// Peers it advertises in a BEP 11 PEX message.
        pex: Vec<SocketAddr>,
    },
    /// Connection refused.
    Refuse,
    /// Connect never completes (the fetcher's connect timeout fires).
    Blackhole,
}

enum Delivery {
    /// Connect refused (no seeder behind the id).
    Refused(ConnId),
    Connected(ConnId),
    Data(ConnId, Bytes),
    Closed(ConnId, CloseReason),
}

/// An in-memory world of fake peers driving one [`Fetcher`]. See the module docs.
pub struct Swarm {
    peers: BTreeMap<SocketAddr, PeerSpec>,
    conns: BTreeMap<ConnId, FakeSeeder>,
    queue: VecDeque<Delivery>,
    now: Timestamp,
    rng: Rng,
    chunking: Chunking,
    /// Time added per delivery (0 by default).
    step: Duration,
    /// Connections opened, for tests.
    pub connects: Vec<SocketAddr>,
    /// Which handshakes the seeder at an address accepts (default plaintext only).
    encryption: BTreeMap<SocketAddr, SeederEncryption>,
}

impl Swarm {
    /// An empty swarm at time zero; `seed` drives random chunking.
    pub fn new(seed: u64) -> Self {
        Swarm {
            peers: BTreeMap::new(),
            conns: BTreeMap::new(),
            queue: VecDeque::new(),
            now: Timestamp::ZERO,
            rng: Rng::new(seed),
            chunking: Chunking::Whole,
            step: Duration::ZERO,
            connects: Vec::new(),
            encryption: BTreeMap::new(),
        }
    }

    /// Sets which handshakes the seeder at `addr` accepts.
    pub fn set_encryption(&mut self, addr: SocketAddr, e: SeederEncryption) {
        self.encryption.insert(addr, e);
    }

    /// How later writes are split.
    pub fn set_chunking(&mut self, c: Chunking) {
        self.chunking = c;
    }

    /// Advances time by `d` at every delivery (simulates latency); deadlines
    /// due by then fire before the delivery.
    pub fn set_step(&mut self, d: Duration) {
        self.step = d;
    }

    /// The swarm's current time.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Adds a seeder for `info`; returns its (SHA-1) infohash.
    pub fn add_seeder(&mut self, addr: SocketAddr, info: Bytes, behavior: Behavior) -> InfoHash {
        let ih = crate::metadata::sha1_info_hash(&info);
        self.add_spec(
            addr,
            PeerSpec::Seeder {
                info,
                info_hash: ih,
                behavior,
                pex: Vec::new(),
            },
        );
        ih
    }

    /// Puts `spec` behind `addr` (replacing what was there).
    pub fn add_spec(&mut self, addr: SocketAddr, spec: PeerSpec) {
        self.peers.insert(addr, spec);
    }

    /// Drives `f` until it has nothing left to do (no outputs, deliveries or timers)
    /// or `max_steps` deliveries/timer firings; returns the events it emitted.
    pub fn run(&mut self, f: &mut Fetcher, max_steps: usize) -> Vec<Event> {
        let mut events = Vec::new();
        self.run_into(f, max_steps, &mut events);
        events
    }

    /// Like [`Swarm::run`], appending events to `events`.
    pub fn run_into(&mut self, f: &mut Fetcher, max_steps: usize, events: &mut Vec<Event>) {
        let mut steps = 0;
        loop {
            while let Some(o) = f.poll_output() {
                self.on_output(o, events);
            }
            if steps >= max_steps {
                return;
            }
            steps += 1;
            if let Some(d) = self.queue.pop_front() {
                self.now = self.now.add(self.step);
                // Deadlines that passed while deliveries kept coming (a step
                // above zero) fire first, as a real driver's timers would.
                if f.poll_timeout().is_some_and(|t| t <= self.now) {
                    f.handle_timeout(self.now);
                    while let Some(o) = f.poll_output() {
                        self.on_output(o, events);
                    }
                }
                // Deliveries for connections the fetcher closed are dropped.
                let live = match &d {
                    Delivery::Refused(_) => true,
                    Delivery::Connected(c) | Delivery::Data(c, _) | Delivery::Closed(c, _) => {
                        self.conns.contains_key(c)
                    }
                };
                if !live {
                    continue;
                }
                match d {
                    Delivery::Refused(c) => f.handle_closed(self.now, c, CloseReason::Refused),
                    Delivery::Connected(c) => f.handle_connected(self.now, c),
                    Delivery::Data(c, b) => f.handle_data(self.now, c, &b),
                    Delivery::Closed(c, r) => {
                        self.conns.remove(&c);
                        f.handle_closed(self.now, c, r)
                    }
                }
                continue;
            }
            match f.poll_timeout() {
                Some(t) => {
                    self.now = self.now.max(t);
                    f.handle_timeout(self.now);
                }
                None => return,
            }
        }
    }

    fn on_output(&mut self, o: Output, events: &mut Vec<Event>) {
        match o {
            Output::Connect { conn, to } => {
                self.connects.push(to);
                match self.peers.get(&to) {
                    Some(PeerSpec::Seeder {
                        info,
                        info_hash,
                        behavior,
                        pex,
                    }) => {
                        let mut s =
                            FakeSeeder::with_info_hash(info.clone(), *info_hash, behavior.clone())
                                .with_pex(pex.clone())
                                .with_encryption(
                                    self.encryption.get(&to).copied().unwrap_or_default(),
                                );
                        s.on_connected();
                        let close = s.wants_close();
                        self.conns.insert(conn, s);
                        self.queue.push_back(Delivery::Connected(conn));
                        if close {
                            self.queue
                                .push_back(Delivery::Closed(conn, CloseReason::Eof));
                        }
                    }
                    Some(PeerSpec::Blackhole) => {}
                    Some(PeerSpec::Refuse) | None => {
                        self.queue.push_back(Delivery::Refused(conn));
                    }
                }
            }
            Output::Send { conn, bytes } => {
                let Some(s) = self.conns.get_mut(&conn) else {
                    return;
                };
                let was_closing = s.wants_close();
                s.on_data(&bytes);
                let out = s.take_output();
                let close = !was_closing && s.wants_close();
                self.push_data(conn, out);
                if close {
                    self.queue
                        .push_back(Delivery::Closed(conn, CloseReason::Eof));
                }
            }
            Output::Close { conn } => {
                self.conns.remove(&conn);
            }
            Output::Event(e) => events.push(e),
            Output::Transmit { .. } | Output::Timeout(_) | Output::Idle => {}
        }
    }

    fn push_data(&mut self, conn: ConnId, out: Vec<u8>) {
        if out.is_empty() {
            return;
        }
        let b = Bytes::from(out);
        match self.chunking {
            Chunking::Whole => self.queue.push_back(Delivery::Data(conn, b)),
            Chunking::Fixed(n) => {
                let n = n.max(1);
                let mut i = 0;
                while i < b.len() {
                    let j = (i + n).min(b.len());
                    self.queue.push_back(Delivery::Data(conn, b.slice(i..j)));
                    i = j;
                }
            }
            Chunking::Random { max } => {
                let mut i = 0;
                while i < b.len() {
                    let n = 1 + self.rng.index(max.max(1));
                    let j = (i + n).min(b.len());
                    self.queue.push_back(Delivery::Data(conn, b.slice(i..j)));
                    i = j;
                }
            }
        }
    }
}

/// A description of an info dict to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoSpec {
    /// `name`, raw bytes.
    pub name: Vec<u8>,
    /// `piece length`, bytes.
    pub piece_length: u64,
    /// `None`: single file of `length`; `Some`: multi-file (path components, length).
    pub files: Option<Vec<(Vec<Vec<u8>>, u64)>>,
    /// The single file's length (ignored for multi-file).
    pub length: u64,
    /// BEP 27 `private`.
    pub private: bool,
    /// `source`, when wanted.
    pub source: Option<Vec<u8>>,
}

impl InfoSpec {
    /// A single-file torrent with 256 KiB pieces.
    pub fn single(name: &str, length: u64) -> Self {
        InfoSpec {
            name: name.as_bytes().to_vec(),
            piece_length: 256 * 1024,
            files: None,
            length,
            private: false,
            source: None,
        }
    }

    /// A multi-file torrent of `n` files named `dir/file-<i>.dat`, each `len` bytes.
    pub fn many_files(name: &str, n: usize, len: u64) -> Self {
        let files = (0..n)
            .map(|i| {
                (
                    vec![b"dir".to_vec(), format!("file-{i:06}.dat").into_bytes()],
                    len,
                )
            })
            .collect();
        InfoSpec {
            name: name.as_bytes().to_vec(),
            piece_length: 16 * 1024,
            files: Some(files),
            length: 0,
            private: false,
            source: None,
        }
    }

    /// Sum of the file lengths, bytes.
    pub fn total_size(&self) -> u64 {
        match &self.files {
            None => self.length,
            Some(f) => f.iter().map(|(_, l)| *l).sum(),
        }
    }
}

/// Encodes a valid info dict for `spec` (piece hashes are deterministic filler).
pub fn build_info(spec: &InfoSpec) -> Vec<u8> {
    let plen = spec.piece_length.max(1);
    let count = spec.total_size().div_ceil(plen) as usize;
    let mut pieces = vec![0u8; count * 20];
    for (i, b) in pieces.iter_mut().enumerate() {
        *b = (i.wrapping_mul(31) % 251) as u8;
    }
    let mut d = Owned::dict()
        .with("name", Owned::Bytes(spec.name.clone()))
        .with("piece length", Owned::Int(plen as i64))
        .with("pieces", Owned::Bytes(pieces));
    match &spec.files {
        None => d = d.with("length", Owned::Int(spec.length as i64)),
        Some(files) => {
            let list = files
                .iter()
                .map(|(path, len)| {
                    Owned::dict().with("length", Owned::Int(*len as i64)).with(
                        "path",
                        Owned::List(path.iter().map(|c| Owned::Bytes(c.clone())).collect()),
                    )
                })
                .collect();
            d = d.with("files", Owned::List(list));
        }
    }
    if spec.private {
        d = d.with("private", Owned::Int(1));
    }
    if let Some(s) = &spec.source {
        d = d.with("source", Owned::Bytes(s.clone()));
    }
    d.to_bytes()
}
