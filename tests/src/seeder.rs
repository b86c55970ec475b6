//! One metadata-serving connection of a [`crate::client::Client`], over the
//! world's TCP model or a uTP stream on the client's DHT socket ([`Link`]).
//!
//! It reads the BEP 3 handshake to learn which torrent the leecher wants, then
//! hands the connection to a sans-IO fake seeder. `Slow` holds each answer back.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use magnetar_core::testkit::{Behavior, FakeSeeder};
use magnetar_core::utp::StreamId;
use magnetar_core::{InfoHash, Timestamp};

use crate::client::SeedBehaviour;
use crate::util::FxMap;
use crate::world::{Ctx, TcpId};

/// Handshake length (BEP 3).
const HANDSHAKE: usize = 68;

/// The connection a session serves on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// A connection of the world's TCP model: bytes go out at once.
    Tcp(TcpId),
    /// A stream of the client's own uTP manager: bytes wait in
    /// [`Serving::take_utp_output`] for the client to write them.
    Utp(StreamId),
}

pub struct Serving {
    link: Link,
    behaviour: SeedBehaviour,
    rng_seed: u64,
    head: Vec<u8>,
    inner: Option<Inner>,
    /// Output held back (Slow), with its release time.
    held: VecDeque<(Timestamp, Bytes)>,
    close_after_held: bool,
    closed: bool,
    /// uTP only: bytes not yet handed to the stream.
    utp_out: Vec<u8>,
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
    pub fn new(link: Link, behaviour: SeedBehaviour, rng_seed: u64) -> Self {
        Serving {
            link,
            behaviour,
            rng_seed,
            head: Vec::new(),
            inner: None,
            held: VecDeque::new(),
            close_after_held: false,
            closed: false,
            utp_out: Vec::new(),
        }
    }

    /// uTP only: the bytes to write to the stream (the client writes what its
    /// send buffer takes and gives the rest back with
    /// [`Serving::untake_utp_output`]), and whether the stream is to be closed
    /// once they are written.
    pub fn take_utp_output(&mut self) -> (Vec<u8>, bool) {
        (std::mem::take(&mut self.utp_out), self.closed)
    }

    /// Puts back the bytes a uTP stream did not take.
    pub fn untake_utp_output(&mut self, mut rest: Vec<u8>) {
        rest.extend_from_slice(&self.utp_out);
        self.utp_out = rest;
    }

    fn put(&mut self, ctx: &mut Ctx<'_>, bytes: Bytes) {
        match self.link {
            Link::Tcp(tcp) => ctx.tcp_send(tcp, bytes),
            Link::Utp(_) => self.utp_out.extend_from_slice(&bytes),
        }
    }

    /// Closes our side (for uTP: after the output, by the client).
    fn shut(&mut self, ctx: &mut Ctx<'_>) {
        if self.closed {
            return;
        }
        self.closed = true;
        if let Link::Tcp(tcp) = self.link {
            ctx.tcp_close(tcp);
        }
    }

    /// The earliest held-back output.
    pub fn next_release(&self) -> Option<Timestamp> {
        self.held.front().map(|h| h.0)
    }

    fn emit(&mut self, ctx: &mut Ctx<'_>, out: Vec<u8>, close: bool) {
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
            self.put(ctx, out.into());
        }
        if close {
            self.shut(ctx);
        }
    }

    /// Releases held output that is due.
    pub fn release(&mut self, ctx: &mut Ctx<'_>) {
        while self.held.front().is_some_and(|h| h.0 <= ctx.now) {
            if let Some((_, b)) = self.held.pop_front() {
                self.put(ctx, b);
            }
        }
        if self.held.is_empty() && self.close_after_held {
            self.shut(ctx);
        }
    }

    /// Bytes from the leecher; true when the metadata was fully served.
    pub fn on_data(
        &mut self,
        ctx: &mut Ctx<'_>,
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
                self.emit(ctx, Vec::new(), true);
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
        self.emit(ctx, out, close);
        false
    }
}

/// Releases held output of every session; returns the next release time.
pub fn wake_sessions<K: Copy + Ord + std::hash::Hash>(
    sessions: &mut FxMap<K, Serving>,
    ctx: &mut Ctx<'_>,
) -> Option<Timestamp> {
    if sessions.is_empty() {
        // Most clients serve nobody most of the time.
        return None;
    }
    let mut next: Option<Timestamp> = None;
    let mut ids: Vec<K> = sessions.keys().copied().collect();
    ids.sort_unstable();
    for id in ids {
        if let Some(s) = sessions.get_mut(&id) {
            s.release(ctx);
            if let Some(t) = s.next_release() {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
    }
    next
}
