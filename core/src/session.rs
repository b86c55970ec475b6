//! One peer connection fetching metadata: BEP 3 handshake, then the BEP 10
//! extension handshake, then BEP 9 piece requests, then done or a [`FailReason`].
//!
//! A [`Session`] knows nothing of connections, time or the scheduler: it is fed the
//! peer's bytes in any chunking and produces bytes to send. Its outcome depends only
//! on the byte sequence, never on how it was split (a property test checks this).
//! We pipeline our handshake and extension handshake in one write.

use std::net::{IpAddr, SocketAddr};

use crate::id::InfoHash;
use crate::metadata::{self, Assembler, HashKind, InfoError, PieceError};
use crate::wire::{self, Deframer, Frame, FrameError, MetadataMsg};

/// Why a peer did not give us metadata. Counted per variant in
/// [`crate::fetch::FetchStats::failures`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FailReason {
    /// TCP connect refused.
    ConnectRefused,
    /// TCP connect did not complete in time (ours or the OS's).
    ConnectTimeout,
    /// The driver could not open a socket.
    LocalError,
    /// Closed or reset before the peer's handshake arrived.
    ClosedBeforeHandshake,
    /// Closed or reset after the handshake, before the metadata was complete.
    ClosedMidTransfer,
    /// Not the BitTorrent protocol string.
    WrongProtocol,
    /// The peer answered with another infohash.
    WrongInfoHash,
    /// No BEP 10 bit in the peer's reserved bytes.
    NoExtensionBit,
    /// A frame length above the cap (1 MiB).
    FrameTooLarge,
    /// An extension handshake or BEP 9 message that is not valid bencode.
    Malformed,
    /// The extension handshake lacks a usable `m.ut_metadata`.
    NoUtMetadata,
    /// The extension handshake lacks `metadata_size`.
    MissingMetadataSize,
    /// `metadata_size` is not a positive integer.
    InvalidMetadataSize,
    /// `metadata_size` above the configured maximum.
    TooLarge,
    /// The peer sent a BEP 9 `reject`.
    Rejected,
    /// A `data` message with a bad index, size, or for a piece we did not request.
    BadPiece(PieceError),
    /// A `data` message whose `total_size` differs from `metadata_size`.
    SizeMismatch,
    /// The assembled metadata does not hash to the infohash.
    HashMismatch,
    /// The metadata hashed right but the info dict is invalid.
    InvalidInfo(InfoError),
    /// No bytes from the peer for `idle_timeout`.
    IdleTimeout,
    /// The per-peer deadline passed.
    PeerTimeout,
    /// The per-infohash deadline passed while this peer was in progress.
    InfohashTimeout,
    /// Held back by the per-IP or global session cap until the infohash deadline.
    PeerLimit,
    /// Skipped: the capability cache says this peer does not serve metadata.
    KnownNoMetadata,
    /// Never tried before the fetch ended.
    NotTried,
    /// The session deadline passed during the MSE handshake (Diffie-Hellman
    /// and synchronisation).
    DhTimeout,
    /// Closed or reset during the MSE handshake (as plaintext-only peers do).
    ClosedDuringMse,
    /// MSE: the peer's public key is 0, 1, P − 1 or out of range.
    MseBadPublicKey,
    /// MSE: no verification constant within 512 bytes of padding.
    MseSyncNotFound,
    /// MSE: the peer's `crypto_select` is not a method we offered.
    MseSelectUnsupported,
    /// MSE: the RC4 stream does not decrypt (corrupt).
    MseStreamCorrupt,
    /// MSE: a padding length above 512.
    MsePadTooLong,
}

impl FailReason {
    /// True for reasons that say the peer will never serve metadata.
    pub fn never_serves(&self) -> bool {
        matches!(self, FailReason::NoExtensionBit | FailReason::NoUtMetadata)
    }
}

/// Session limits.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Largest `metadata_size` accepted, bytes (default 10 MiB); a larger one fails the
    /// session with `TooLarge` before any piece is requested.
    pub max_metadata_size: usize,
    /// Largest peer-wire frame accepted, bytes (default [`wire::MAX_FRAME`], 1 MiB).
    pub max_frame: usize,
    /// Most outstanding piece requests (also bounded by the peer's `reqq`).
    pub request_window: u32,
    /// Our BEP 10 `v`.
    pub client_version: Option<String>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_metadata_size: 10 << 20,
            max_frame: wire::MAX_FRAME,
            request_window: 16,
            client_version: None,
        }
    }
}

/// What we learned about the peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer id from its BEP 3 handshake.
    pub peer_id: Option<[u8; 20]>,
    /// Client from the peer id (BEP 20).
    pub client: Option<String>,
    /// Client from the extension handshake `v`.
    pub version: Option<String>,
    /// The handshake's BEP 6 fast-extension bit.
    pub fast: bool,
    /// The handshake's BEP 5 DHT bit.
    pub dht: bool,
    /// The handshake's BEP 10 extension-protocol bit.
    pub extensions: bool,
    /// The peer's `m.ut_metadata` (valid ids 1..=255).
    pub ut_metadata: Option<u8>,
    /// The peer's `m.ut_pex` message id (BEP 11), if it offers PEX.
    pub ut_pex: Option<u8>,
    /// The peer's `m.ut_holepunch` message id (BEP 55), if it offers it.
    pub ut_holepunch: Option<u8>,
    /// The `metadata_size` it announced, bytes, once accepted.
    pub metadata_size: Option<u32>,
    /// BEP 10 `yourip`: our address as the peer sees it.
    pub yourip: Option<IpAddr>,
    /// BEP 10 `p`: the peer's listening port.
    pub listen_port: Option<u16>,
    /// BEP 10 `reqq`: how many outstanding requests the peer accepts.
    pub reqq: Option<u32>,
}

impl PeerInfo {
    /// `v` if present, else the BEP 20 client.
    pub fn best_client(&self) -> Option<&str> {
        self.version.as_deref().or(self.client.as_deref())
    }
}

/// Where the session is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Waiting for the peer's BEP 3 handshake.
    Handshake,
    /// Waiting for the peer's BEP 10 extension handshake.
    ExtHandshake,
    /// Requesting and receiving BEP 9 pieces.
    Fetching,
    /// The peer has no `ut_metadata` but offers `ut_holepunch` (BEP 55): the
    /// session stays open only as a relay (see [`Session::send_holepunch`]).
    Relay,
    /// Done or failed; further bytes are ignored.
    Finished,
}

/// Verified metadata.
#[derive(Clone, Debug)]
pub struct Verified {
    /// The raw info dict, exactly as hashed.
    pub raw: Vec<u8>,
    /// Which hash matched the infohash (v1 SHA-1 or truncated v2 SHA-256).
    pub hash: HashKind,
}

/// The result of feeding bytes.
#[derive(Debug)]
pub enum Progress {
    /// Nothing decided yet: feed more bytes (and send [`Session::take_output`]).
    Continue,
    /// The metadata is complete and matches the infohash.
    Done(Verified),
    /// The session failed; the peer should be disconnected.
    Failed(FailReason),
}

/// Most PEX contacts a session hands back over its life.
pub const MAX_PEX_PER_SESSION: usize = 200;

/// Most `ut_holepunch` messages a session hands back over its life; later ones
/// are dropped and counted ([`HolepunchCounts::dropped`]).
pub const MAX_HOLEPUNCH_PER_SESSION: u32 = 32;
/// Most `error` answers a session sends to `rendezvous` requests (we do not
/// relay: see [`Session::take_holepunch`]).
pub const MAX_RELAY_REFUSALS_PER_SESSION: u32 = 4;

/// What a session saw of BEP 55 besides the messages it handed back.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct HolepunchCounts {
    /// Payloads that did not decode (or came from a peer that never offered
    /// the extension).
    pub malformed: u32,
    /// Messages over [`MAX_HOLEPUNCH_PER_SESSION`].
    pub dropped: u32,
    /// `rendezvous` requests to us, answered `NotConnected` (up to
    /// [`MAX_RELAY_REFUSALS_PER_SESSION`], the rest ignored).
    pub relay_requests: u32,
}

/// A metadata-fetching peer session.
#[derive(Debug)]
pub struct Session {
    de: Deframer,
    c: Inner,
}

#[derive(Debug)]
struct Inner {
    ih: InfoHash,
    cfg_window: u32,
    max_metadata_size: usize,
    phase: Phase,
    out: Vec<u8>,
    /// Our extension handshake, sent once the peer's handshake arrives.
    ext_hs: Vec<u8>,
    info: PeerInfo,
    asm: Option<Assembler>,
    outstanding: Vec<bool>,
    next_piece: u32,
    in_flight: u32,
    window: u32,
    pieces: u32,
    bytes_in: u64,
    pex: Vec<SocketAddr>,
    /// The PEX contacts flagged "prefers encryption" (a subset of `pex`).
    pex_encrypted: Vec<SocketAddr>,
    pex_utp: Vec<SocketAddr>,
    /// The PEX contacts flagged as supporting `ut_holepunch` (0x08).
    pex_holepunch: Vec<SocketAddr>,
    pex_total: usize,
    /// `connect` and `error` messages received, for the fetcher.
    holepunch: Vec<wire::HolepunchMsg>,
    hp_seen: u32,
    hp: HolepunchCounts,
}

impl Session {
    /// A session for `ih`: our handshake is queued at once; our extension handshake
    /// follows the peer's handshake (BEP 10: only once both sides set the bit; aria2
    /// drops a connection whose extension handshake comes in the same burst).
    pub fn new(ih: InfoHash, peer_id: &[u8; 20], cfg: &SessionConfig) -> Self {
        let mut out = Vec::with_capacity(160);
        wire::encode_handshake(&mut out, wire::our_reserved(), &ih, peer_id);
        let mut p = Vec::with_capacity(80);
        wire::encode_ext_handshake(&mut p, cfg.client_version.as_deref(), None, None);
        let mut ext_hs = Vec::with_capacity(96);
        wire::encode_extended(&mut ext_hs, wire::EXT_HANDSHAKE, &p);
        Session {
            de: Deframer::new(cfg.max_frame),
            c: Inner {
                ih,
                cfg_window: cfg.request_window.max(1),
                max_metadata_size: cfg.max_metadata_size,
                phase: Phase::Handshake,
                out,
                ext_hs,
                info: PeerInfo::default(),
                asm: None,
                outstanding: Vec::new(),
                next_piece: 0,
                in_flight: 0,
                window: 1,
                pieces: 0,
                bytes_in: 0,
                pex: Vec::new(),
                pex_encrypted: Vec::new(),
                pex_utp: Vec::new(),
                pex_holepunch: Vec::new(),
                pex_total: 0,
                holepunch: Vec::new(),
                hp_seen: 0,
                hp: HolepunchCounts::default(),
            },
        }
    }

    /// Where the session is.
    pub fn phase(&self) -> Phase {
        self.c.phase
    }
    /// What the peer told us so far.
    pub fn peer_info(&self) -> &PeerInfo {
        &self.c.info
    }
    /// Pieces received and accepted.
    pub fn pieces(&self) -> u32 {
        self.c.pieces
    }
    /// Bytes fed so far (everything the peer sent), bytes.
    pub fn bytes_in(&self) -> u64 {
        self.c.bytes_in
    }
    /// Bytes to send to the peer, if any.
    #[must_use = "the bytes taken are gone: send them"]
    pub fn take_output(&mut self) -> Option<Vec<u8>> {
        if self.c.out.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.c.out))
        }
    }
    /// PEX contacts received since the last call.
    #[must_use = "the contacts taken are gone"]
    pub fn take_pex(&mut self) -> Vec<SocketAddr> {
        std::mem::take(&mut self.c.pex)
    }

    /// Those PEX contacts received since the last call that BEP 11 flags as
    /// preferring encryption (`added.f` bit 0x01).
    #[must_use = "the contacts taken are gone"]
    pub fn take_pex_prefers_encryption(&mut self) -> Vec<SocketAddr> {
        std::mem::take(&mut self.c.pex_encrypted)
    }

    /// Those PEX contacts received since the last call that BEP 11 flags as
    /// speaking uTP (0x04) and not as reachable (0x10): likely behind a NAT,
    /// where uTP has the better chance.
    #[must_use = "the contacts taken are gone"]
    pub fn take_pex_utp(&mut self) -> Vec<SocketAddr> {
        std::mem::take(&mut self.c.pex_utp)
    }

    /// Those PEX contacts received since the last call that BEP 11 flags as
    /// supporting the holepunch extension (0x08) and not as reachable (0x10):
    /// this peer is connected to them and can relay a `rendezvous`.
    #[must_use = "the contacts taken are gone"]
    pub fn take_pex_holepunch(&mut self) -> Vec<SocketAddr> {
        std::mem::take(&mut self.c.pex_holepunch)
    }

    /// The `connect` and `error` messages (BEP 55) received since the last
    /// call, at most [`MAX_HOLEPUNCH_PER_SESSION`] over the session's life. A
    /// `rendezvous` asking us to relay is answered here, with `NotConnected`
    /// (a metadata session is connected to nobody else), and not handed back.
    #[must_use = "the messages taken are gone"]
    pub fn take_holepunch(&mut self) -> Vec<wire::HolepunchMsg> {
        std::mem::take(&mut self.c.holepunch)
    }

    /// BEP 55 counters of this session.
    pub fn holepunch_counts(&self) -> HolepunchCounts {
        self.c.hp
    }

    /// Whether the peer offered `ut_holepunch` and the session can still send.
    pub fn can_relay(&self) -> bool {
        self.c.info.ut_holepunch.is_some() && matches!(self.c.phase, Phase::Fetching | Phase::Relay)
    }

    /// Queues a `ut_holepunch` message to the peer (take it with
    /// [`Session::take_output`]); false when the peer did not offer the
    /// extension or the session is not past its handshakes.
    pub fn send_holepunch(&mut self, m: &wire::HolepunchMsg) -> bool {
        let Some(id) = self.c.info.ut_holepunch else {
            return false;
        };
        if !matches!(self.c.phase, Phase::Fetching | Phase::Relay) {
            return false;
        }
        wire::encode_holepunch(&mut self.c.out, id, m);
        true
    }

    /// Feeds bytes from the peer. After `Done` or `Failed` further bytes are ignored.
    pub fn feed(&mut self, bytes: &[u8]) -> Progress {
        if self.c.phase == Phase::Finished {
            return Progress::Continue;
        }
        self.c.bytes_in += bytes.len() as u64;
        let r = if self.c.phase != Phase::Handshake && self.de.buffered() == 0 {
            self.drain_direct(bytes)
        } else {
            self.de.push(bytes);
            self.drain()
        };
        if !matches!(r, Progress::Continue) {
            self.c.phase = Phase::Finished;
            self.c.asm = None;
        }
        r
    }

    /// Fast path: nothing buffered, so parse frames straight from `bytes` and
    /// buffer only a trailing partial frame. Same verdicts as [`Session::drain`].
    fn drain_direct(&mut self, bytes: &[u8]) -> Progress {
        let mut rest = bytes;
        loop {
            match wire::split_frame(rest, self.de.max_frame()) {
                Err(_) => return Progress::Failed(FailReason::FrameTooLarge),
                Ok(None) => break,
                Ok(Some((f, used))) => {
                    rest = rest.get(used..).unwrap_or_default();
                    match self.c.on_frame(f) {
                        Progress::Continue => {}
                        done => return done,
                    }
                }
            }
        }
        self.de.push(rest);
        Progress::Continue
    }

    fn drain(&mut self) -> Progress {
        loop {
            if self.c.phase == Phase::Handshake {
                match self.de.next_handshake() {
                    Err(_) => return Progress::Failed(FailReason::WrongProtocol),
                    Ok(None) => return Progress::Continue,
                    Ok(Some(hs)) => {
                        if let Err(r) = self.c.on_handshake(&hs) {
                            return Progress::Failed(r);
                        }
                    }
                }
                continue;
            }
            let frame = match self.de.next_frame() {
                Err(FrameError::TooLarge) => return Progress::Failed(FailReason::FrameTooLarge),
                Err(FrameError::WrongProtocol) => {
                    return Progress::Failed(FailReason::WrongProtocol)
                }
                Ok(None) => return Progress::Continue,
                Ok(Some(f)) => f,
            };
            match self.c.on_frame(frame) {
                Progress::Continue => {}
                done => return done,
            }
        }
    }
}

impl Inner {
    fn on_handshake(&mut self, hs: &wire::Handshake) -> Result<(), FailReason> {
        self.info.peer_id = Some(hs.peer_id);
        self.info.client = wire::client_from_peer_id(&hs.peer_id);
        self.info.fast = hs.supports_fast();
        self.info.dht = hs.supports_dht();
        self.info.extensions = hs.supports_extensions();
        if hs.info_hash != self.ih {
            return Err(FailReason::WrongInfoHash);
        }
        if !hs.supports_extensions() {
            return Err(FailReason::NoExtensionBit);
        }
        let ext_hs = std::mem::take(&mut self.ext_hs);
        self.out.extend_from_slice(&ext_hs);
        self.phase = Phase::ExtHandshake;
        Ok(())
    }

    fn on_frame(&mut self, frame: Frame<'_>) -> Progress {
        let (id, payload) = match frame {
            Frame::KeepAlive | Frame::Handshake(_) => return Progress::Continue,
            Frame::Message { id, payload } => (id, payload),
        };
        if id != wire::MSG_EXTENDED {
            // choke/unchoke/have/bitfield/fast messages: irrelevant to metadata.
            return Progress::Continue;
        }
        let Some((&ext, body)) = payload.split_first() else {
            return Progress::Failed(FailReason::Malformed);
        };
        match ext {
            wire::EXT_HANDSHAKE => {
                if self.phase != Phase::ExtHandshake {
                    return Progress::Continue; // a later update: ignored
                }
                match self.on_ext_handshake(body) {
                    Ok(()) => Progress::Continue,
                    Err(r) => Progress::Failed(r),
                }
            }
            wire::OUR_UT_METADATA => self.on_metadata(body),
            wire::OUR_UT_PEX => {
                if let Ok(added) = wire::parse_pex_flags(body) {
                    for (a, flags) in added {
                        if self.pex_total >= MAX_PEX_PER_SESSION {
                            break;
                        }
                        self.pex_total += 1;
                        self.pex.push(a);
                        if flags & wire::PEX_PREFERS_ENCRYPTION != 0 {
                            self.pex_encrypted.push(a);
                        }
                        if flags & wire::PEX_UTP != 0 && flags & wire::PEX_REACHABLE == 0 {
                            self.pex_utp.push(a);
                        }
                        if flags & wire::PEX_HOLEPUNCH != 0 && flags & wire::PEX_REACHABLE == 0 {
                            self.pex_holepunch.push(a);
                        }
                    }
                }
                Progress::Continue
            }
            wire::OUR_UT_HOLEPUNCH => {
                self.on_holepunch(body);
                Progress::Continue
            }
            _ => Progress::Continue,
        }
    }

    /// A `ut_holepunch` message (BEP 55): counted, answered or handed back;
    /// never a reason to fail the session.
    fn on_holepunch(&mut self, body: &[u8]) {
        // BEP 55: messages from a peer that did not offer the extension are
        // ignored.
        let Some(id) = self.info.ut_holepunch else {
            self.hp.malformed = self.hp.malformed.saturating_add(1);
            return;
        };
        let Ok(m) = wire::parse_holepunch(body) else {
            self.hp.malformed = self.hp.malformed.saturating_add(1);
            return;
        };
        if self.hp_seen >= MAX_HOLEPUNCH_PER_SESSION {
            self.hp.dropped = self.hp.dropped.saturating_add(1);
            return;
        }
        self.hp_seen += 1;
        match m.kind {
            wire::HolepunchKind::Rendezvous => {
                // We relay for nobody: say so, a few times per session.
                self.hp.relay_requests = self.hp.relay_requests.saturating_add(1);
                if self.hp.relay_requests <= MAX_RELAY_REFUSALS_PER_SESSION {
                    let e = wire::HolepunchMsg {
                        kind: wire::HolepunchKind::Error,
                        addr: m.addr,
                        err: wire::HolepunchErrorCode::NotConnected.code(),
                    };
                    wire::encode_holepunch(&mut self.out, id, &e);
                }
            }
            wire::HolepunchKind::Connect | wire::HolepunchKind::Error => self.holepunch.push(m),
        }
    }

    fn on_ext_handshake(&mut self, body: &[u8]) -> Result<(), FailReason> {
        let hs = wire::parse_ext_handshake(body).map_err(|_| FailReason::Malformed)?;
        self.info.version = hs.client;
        self.info.yourip = hs.yourip;
        self.info.listen_port = hs.listen_port;
        self.info.reqq = hs.reqq;
        self.info.ut_pex = hs
            .ut_pex
            .and_then(|i| u8::try_from(i).ok())
            .filter(|i| *i != 0);
        self.info.ut_holepunch = hs
            .ut_holepunch
            .and_then(|i| u8::try_from(i).ok())
            .filter(|i| *i != 0);
        let Some(ut) = hs
            .ut_metadata
            .and_then(|i| u8::try_from(i).ok())
            .filter(|i| *i != 0)
        else {
            // No metadata from this peer; it may still introduce us to others.
            if self.info.ut_holepunch.is_some() {
                self.phase = Phase::Relay;
                return Ok(());
            }
            return Err(FailReason::NoUtMetadata);
        };
        self.info.ut_metadata = Some(ut);
        let size = hs.metadata_size.ok_or(FailReason::MissingMetadataSize)?;
        if size <= 0 {
            return Err(FailReason::InvalidMetadataSize);
        }
        let size = usize::try_from(size).map_err(|_| FailReason::TooLarge)?;
        if size > self.max_metadata_size {
            return Err(FailReason::TooLarge);
        }
        self.info.metadata_size = u32::try_from(size).ok();
        let asm = Assembler::new(size);
        self.outstanding = vec![false; asm.piece_count() as usize];
        self.asm = Some(asm);
        let reqq = hs.reqq.unwrap_or(self.cfg_window).max(1);
        self.window = self.cfg_window.min(reqq);
        self.phase = Phase::Fetching;
        self.request_more(ut);
        Ok(())
    }

    fn request_more(&mut self, ut: u8) {
        let count = self.outstanding.len() as u32;
        while self.in_flight < self.window && self.next_piece < count {
            if let Some(o) = self.outstanding.get_mut(self.next_piece as usize) {
                *o = true;
            }
            wire::encode_metadata_request(&mut self.out, ut, self.next_piece);
            self.next_piece += 1;
            self.in_flight += 1;
        }
    }

    fn on_metadata(&mut self, body: &[u8]) -> Progress {
        let msg = match wire::parse_metadata_msg(body) {
            Ok(m) => m,
            Err(_) => return Progress::Failed(FailReason::Malformed),
        };
        match msg {
            MetadataMsg::Request { piece } => {
                // We have nothing to serve: reject, politely.
                if let Some(ut) = self.info.ut_metadata {
                    wire::encode_metadata_reject(&mut self.out, ut, piece);
                }
                Progress::Continue
            }
            MetadataMsg::Unknown => Progress::Continue,
            MetadataMsg::Reject { .. } => Progress::Failed(FailReason::Rejected),
            MetadataMsg::Data {
                piece,
                total_size,
                data,
            } => self.on_data(piece, total_size, data),
        }
    }

    fn on_data(&mut self, piece: i64, total_size: Option<i64>, data: &[u8]) -> Progress {
        let (Some(asm), Some(ut)) = (self.asm.as_mut(), self.info.ut_metadata) else {
            return Progress::Failed(FailReason::BadPiece(PieceError::Unrequested));
        };
        let idx = match u32::try_from(piece) {
            Ok(i) if i < asm.piece_count() => i,
            _ => return Progress::Failed(FailReason::BadPiece(PieceError::OutOfRange)),
        };
        match self.outstanding.get_mut(idx as usize) {
            Some(o) if *o => *o = false,
            _ => return Progress::Failed(FailReason::BadPiece(PieceError::Unrequested)),
        }
        if total_size != Some(asm.size() as i64) {
            return Progress::Failed(FailReason::SizeMismatch);
        }
        let complete = match asm.insert(piece, data) {
            Ok(c) => c,
            Err(e) => return Progress::Failed(FailReason::BadPiece(e)),
        };
        self.pieces += 1;
        self.in_flight = self.in_flight.saturating_sub(1);
        if !complete {
            self.request_more(ut);
            return Progress::Continue;
        }
        let Some(asm) = self.asm.take() else {
            return Progress::Failed(FailReason::HashMismatch);
        };
        let raw = asm.into_bytes();
        match metadata::verify(&raw, &self.ih) {
            Some(hash) => Progress::Done(Verified { raw, hash }),
            None => Progress::Failed(FailReason::HashMismatch),
        }
    }
}
