//! One metadata-serving connection of a [`crate::client::Client`].
//!
//! It reads the BEP 3 handshake to learn which torrent the leecher wants, then
//! hands the connection to a sans-IO fake seeder. `Slow` holds each answer back.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use magnetar_core::testkit::{Behavior, FakeSeeder};
use magnetar_core::{InfoHash, Timestamp};

use crate::client::SeedBehaviour;
use crate::util::FxMap;
use crate::world::{Ctx, TcpId};

/// Handshake length (BEP 3).
const HANDSHAKE: usize = 68;

pub struct Serving {
    behaviour: SeedBehaviour,
    rng_seed: u64,
    head: Vec<u8>,
    inner: Option<Inner>,
    /// Output held back (Slow), with its release time.
    held: VecDeque<(Timestamp, Bytes)>,
    close_after_held: bool,
    closed: bool,
}

/// The serving machine once the infohash is known: core's testkit fake seeder.
struct Inner {
    seeder: FakeSeeder,
}

/// The testkit behaviour for a client behaviour (`Slow` is honest, held back).
fn behavior(b: SeedBehaviour, info_len: usize) -> Behavior {
    match b {
        SeedBehaviour::Honest | SeedBehaviour::Slow | SeedBehaviour::NoListener => Behavior::Honest,
        SeedBehaviour::LyingSize => Behavior::LieMetadataSize(info_len as i64 + 1000),
        SeedBehaviour::CorruptPiece => Behavior::CorruptPiece(0),
        SeedBehaviour::Reject => Behavior::Reject,
        SeedBehaviour::DisconnectMidTransfer => Behavior::CloseAfterPieces(0),
        SeedBehaviour::NoUtMetadata => Behavior::NoUtMetadata,
    }
}

impl Serving {
    pub fn new(behaviour: SeedBehaviour, rng_seed: u64) -> Self {
        Serving {
            behaviour,
            rng_seed,
            head: Vec::new(),
            inner: None,
            held: VecDeque::new(),
            close_after_held: false,
            closed: false,
        }
    }

    /// The earliest held-back output.
    pub fn next_release(&self) -> Option<Timestamp> {
        self.held.front().map(|h| h.0)
    }

    fn emit(&mut self, ctx: &mut Ctx<'_>, tcp: TcpId, out: Vec<u8>, close: bool) {
        if self.behaviour == SeedBehaviour::Slow {
            let delay = Duration::from_millis(1000 + ctx.rng.below(2000));
            let at = self
                .held
                .back()
                .map_or(ctx.now, |h| h.0)
                .max(ctx.now)
                .add(delay);
            if !out.is_empty() {
                self.held.push_back((at, out.into()));
            }
            self.close_after_held |= close;
            ctx.wake_at(at);
            return;
        }
        if !out.is_empty() {
            ctx.tcp_send(tcp, out);
        }
        if close && !self.closed {
            self.closed = true;
            ctx.tcp_close(tcp);
        }
    }

    /// Releases held output that is due.
    pub fn release(&mut self, ctx: &mut Ctx<'_>, tcp: TcpId) {
        while self.held.front().is_some_and(|h| h.0 <= ctx.now) {
            if let Some((_, b)) = self.held.pop_front() {
                ctx.tcp_send(tcp, b);
            }
        }
        if self.held.is_empty() && self.close_after_held && !self.closed {
            self.closed = true;
            ctx.tcp_close(tcp);
        }
    }

    /// Bytes from the leecher; true when the metadata was fully served.
    pub fn on_data(
        &mut self,
        ctx: &mut Ctx<'_>,
        tcp: TcpId,
        bytes: &[u8],
        find: impl Fn(&InfoHash) -> Option<Vec<u8>>,
    ) -> bool {
        let _ = self.rng_seed;
        if self.inner.is_none() {
            self.head.extend_from_slice(bytes);
            if self.head.len() < HANDSHAKE {
                return false;
            }
            let ih = InfoHash::from_slice(&self.head[28..48]).unwrap_or_default();
            let Some(info) = find(&ih) else {
                // Not ours: hang up.
                self.emit(ctx, tcp, Vec::new(), true);
                return false;
            };
            let b = behavior(self.behaviour, info.len());
            let mut seeder = FakeSeeder::new(Bytes::from(info), b);
            seeder.on_connected();
            let head = std::mem::take(&mut self.head);
            seeder.on_data(&head);
            self.inner = Some(Inner { seeder });
        } else if let Some(i) = self.inner.as_mut() {
            i.seeder.on_data(bytes);
        }
        let Some(i) = self.inner.as_mut() else {
            return false;
        };
        let out = i.seeder.take_output();
        let close = i.seeder.wants_close();
        self.emit(ctx, tcp, out, close);
        false
    }
}

/// Releases held output of every session; returns the next release time.
pub fn wake_sessions(sessions: &mut FxMap<TcpId, Serving>, ctx: &mut Ctx<'_>) -> Option<Timestamp> {
    if sessions.is_empty() {
        // Most clients serve nobody most of the time.
        return None;
    }
    let mut next: Option<Timestamp> = None;
    let mut ids: Vec<TcpId> = sessions.keys().copied().collect();
    ids.sort_unstable();
    for tcp in ids {
        if let Some(s) = sessions.get_mut(&tcp) {
            s.release(ctx, tcp);
            if let Some(t) = s.next_release() {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
    }
    next
}
