//! Message Stream Encryption (MSE, also called PE): the obfuscation handshake
//! that every mainstream BitTorrent client speaks, as a sans-IO machine for
//! both sides of a connection.
//!
//! The protocol (the "Message Stream Encryption" specification; not a BEP):
//!
//! ```text
//! 1 A->B: Ya, PadA
//! 2 B->A: Yb, PadB
//! 3 A->B: HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
//!         ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
//! 4 B->A: ENCRYPT(VC, crypto_select, len(PadD), PadD), ENCRYPT2(payload)
//! 5 A->B: ENCRYPT2(payload)
//! ```
//!
//! Y = G^X mod P over the 768-bit MSE prime with G = 2 and 160-bit private keys
//! X, sent as 96 big-endian bytes; S is the shared secret as 96 big-endian
//! bytes; SKEY is the infohash. ENCRYPT is RC4 keyed with `keyA` =
//! HASH('keyA', S, SKEY) for what A sends and `keyB` for what B sends, the
//! first 1,024 keystream bytes discarded. VC is eight zero bytes; the pads are
//! 0 to 512 random bytes; `crypto_provide`/`crypto_select` are bit sets
//! (0x01 plaintext, 0x02 RC4); ENCRYPT2 is RC4 (continuing the same streams)
//! or nothing, as selected. IA (initial payload) carries the start of the
//! payload stream: we put the BitTorrent handshake there, saving a round trip.
//!
//! [`Mse`] is fed the bytes received in any chunking ([`Mse::feed`]) and given
//! the payload bytes to send ([`Mse::send`]); it hands out the bytes to put on
//! the wire ([`Mse::take_output`]) and the payload received
//! ([`Mse::take_payload`]). Once [`MseState::Established`] it only filters:
//! encrypts and decrypts, or passes through.
//!
//! Bounds: the synchronisation search never looks more than 512 bytes past the
//! peer's key (plus the marker's length: 20 bytes for `req1`, 8 for VC); every
//! length field is capped (pads at 512, IA at 65,535 by its width) and the
//! handshake buffer with them, so at most [`MAX_HANDSHAKE_BUFFER`] bytes are held
//! before the handshake ends. Payload queued before it ends is capped at
//! [`MAX_PENDING`]. Every failure is a typed [`MseError`]; nothing panics on
//! peer input (the `mse` fuzz target checks).

pub mod crypto;
#[cfg(test)]
mod tests;

use crate::rng::Rng;
use crypto::{Rc4Stream, KEY_LEN, PRIVATE_LEN};

pub use crypto::KeyFault;

/// Longest padding allowed by the specification (PadA, PadB, PadC, PadD).
pub const MAX_PAD: usize = 512;

/// The verification constant: eight zero bytes.
pub const VC: [u8; 8] = [0; 8];

/// `crypto_provide`/`crypto_select` bit: plaintext after the handshake.
pub const CRYPTO_PLAINTEXT: u32 = 0x01;
/// `crypto_provide`/`crypto_select` bit: RC4 for the whole stream.
pub const CRYPTO_RC4: u32 = 0x02;

/// Payload queued before the handshake ends, at most (more is refused with
/// [`MseError::PendingFull`]). Our own session queues ~200 bytes.
pub const MAX_PENDING: usize = 64 << 10;

/// The most raw bytes the machine holds before the handshake ends: a key,
/// padding, the fixed fields, PadC and the largest IA.
pub const MAX_HANDSHAKE_BUFFER: usize =
    KEY_LEN + MAX_PAD + 20 + 20 + 8 + 4 + 2 + MAX_PAD + 2 + u16::MAX as usize;

/// What the connection carries once the handshake is done.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    /// The payload in clear after the handshake (`crypto_select` 0x01).
    Plaintext,
    /// The payload under RC4 (`crypto_select` 0x02).
    Rc4,
}

impl Method {
    /// The method's `crypto_provide` bit.
    pub fn bit(self) -> u32 {
        match self {
            Method::Plaintext => CRYPTO_PLAINTEXT,
            Method::Rc4 => CRYPTO_RC4,
        }
    }
}

/// Why an MSE handshake failed. Every variant is the peer's doing.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum MseError {
    /// The peer's public key is 0, 1, P − 1 or not below P.
    BadPublicKey(KeyFault),
    /// The marker (VC for the initiator, `req1` for the answering side) was not
    /// within 512 bytes past the peer's key.
    SyncNotFound,
    /// The peer's `crypto_select` is not exactly one of the methods we offered.
    SelectUnsupported,
    /// (Answering side.) The peer offers no method we allow.
    ProvideUnsupported,
    /// (Answering side.) `req2 ^ req3` names no infohash we know.
    UnknownInfoHash,
    /// (Answering side.) The decrypted VC is not zero: the streams disagree.
    StreamCorrupt,
    /// A padding length above 512.
    PadTooLong,
    /// Our own payload queued before the handshake ended exceeded
    /// [`MAX_PENDING`] (a local limit, reached only by a misbehaving caller).
    PendingFull,
}

/// Where the machine is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MseState {
    /// The handshake is under way.
    Handshaking,
    /// The handshake is done; the payload flows with this method.
    Established(Method),
    /// The handshake failed; close the connection.
    Failed(MseError),
}

/// Settings of one handshake.
#[derive(Clone, Debug)]
pub struct MseConfig {
    /// The methods we offer (initiator) or accept (answering side): a set of
    /// `CRYPTO_*` bits.
    pub allowed: u32,
    /// (Answering side.) Picks RC4 when the peer offers both.
    pub prefer_rc4: bool,
    /// Largest padding we send (capped at 512); the length is uniform in
    /// `0..=max_pad`.
    pub max_pad: usize,
    /// (Initiator.) At most this many of the first payload bytes go as IA (the
    /// BitTorrent handshake is 68 bytes).
    pub max_ia: usize,
}

impl Default for MseConfig {
    fn default() -> Self {
        MseConfig {
            allowed: CRYPTO_PLAINTEXT | CRYPTO_RC4,
            prefer_rc4: true,
            max_pad: MAX_PAD,
            max_ia: 68,
        }
    }
}

enum Step {
    /// Initiator: waiting for Yb (96 bytes).
    PeerKey,
    /// Initiator: searching for ENCRYPT(VC) in PadB.
    FindVc {
        pattern: [u8; 8],
        scanned: usize,
    },
    /// Initiator: crypto_select and len(PadD).
    Select,
    /// Initiator: PadD.
    PadD {
        len: usize,
        method: Method,
    },
    /// Answering side: waiting for Ya.
    RPeerKey,
    /// Answering side: searching for HASH('req1', S) in PadA.
    FindReq1 {
        pattern: [u8; 20],
        scanned: usize,
    },
    /// Answering side: HASH('req2', SKEY) xor HASH('req3', S).
    Req2,
    /// Answering side: VC, crypto_provide, len(PadC).
    Provide,
    /// Answering side: PadC and len(IA).
    PadC {
        len: usize,
        provide: u32,
    },
    /// Answering side: IA.
    Ia {
        len: usize,
        provide: u32,
    },
    Done,
}

/// One side of an MSE handshake, then the stream filter. See the module docs.
pub struct Mse {
    cfg: MseConfig,
    initiator: bool,
    step: Step,
    state: MseState,
    private: [u8; PRIVATE_LEN],
    secret: Option<[u8; KEY_LEN]>,
    /// Initiator: the one infohash. Answering side: the infohashes it serves.
    skeys: Vec<[u8; 20]>,
    /// The infohash agreed on.
    skey: Option<[u8; 20]>,
    /// Our two pads (PadA/PadC or PadB/PadD), drawn at the start.
    pads: [Vec<u8>; 2],
    enc: Option<Rc4Stream>,
    dec: Option<Rc4Stream>,
    raw: Vec<u8>,
    out: Vec<u8>,
    payload: Vec<u8>,
    pending: Vec<u8>,
    modpows: u32,
}

impl std::fmt::Debug for Mse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys and secrets stay out of logs.
        f.debug_struct("Mse")
            .field("initiator", &self.initiator)
            .field("state", &self.state)
            .field("buffered", &self.raw.len())
            .finish_non_exhaustive()
    }
}

fn draw_pad(rng: &mut Rng, max: usize) -> Vec<u8> {
    let n = rng.below(max.min(MAX_PAD) as u64 + 1) as usize;
    let mut pad = vec![0u8; n];
    rng.fill(&mut pad);
    pad
}

impl Mse {
    /// The initiating side for infohash `skey`: queues Ya and PadA at once.
    /// Private key and pads come from `rng`.
    pub fn initiator(cfg: MseConfig, skey: [u8; 20], rng: &mut Rng) -> Self {
        let mut m = Mse::new(cfg, true, vec![skey], rng);
        m.send_public_key();
        m
    }

    /// The answering side, serving the infohashes `skeys`; it answers once Ya
    /// has arrived.
    pub fn responder(cfg: MseConfig, skeys: Vec<[u8; 20]>, rng: &mut Rng) -> Self {
        Mse::new(cfg, false, skeys, rng)
    }

    fn new(cfg: MseConfig, initiator: bool, skeys: Vec<[u8; 20]>, rng: &mut Rng) -> Self {
        let private: [u8; PRIVATE_LEN] = rng.bytes();
        let pads = [draw_pad(rng, cfg.max_pad), draw_pad(rng, cfg.max_pad)];
        Mse {
            cfg,
            initiator,
            step: if initiator {
                Step::PeerKey
            } else {
                Step::RPeerKey
            },
            state: MseState::Handshaking,
            private,
            secret: None,
            skeys,
            skey: None,
            pads,
            enc: None,
            dec: None,
            raw: Vec::new(),
            out: Vec::new(),
            payload: Vec::new(),
            pending: Vec::new(),
            modpows: 0,
        }
    }

    /// Where the machine is.
    pub fn state(&self) -> MseState {
        self.state
    }

    /// True for the initiating side.
    pub fn is_initiator(&self) -> bool {
        self.initiator
    }

    /// Modular exponentiations done so far (one for our key, one for the secret).
    pub fn modpows(&self) -> u32 {
        self.modpows
    }

    /// The infohash the handshake agreed on (the answering side learns it from
    /// `req2`).
    pub fn info_hash(&self) -> Option<[u8; 20]> {
        self.skey
    }

    /// Bytes to put on the wire, if any.
    #[must_use = "the bytes taken are gone: send them"]
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Payload received (decrypted), if any.
    #[must_use = "the bytes taken are gone"]
    pub fn take_payload(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.payload)
    }

    /// Payload to send: filtered at once when established, else queued (the
    /// initiator's first `max_ia` bytes go as IA).
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), MseError> {
        match self.state {
            MseState::Established(m) => {
                self.emit_payload(m, bytes);
                Ok(())
            }
            MseState::Failed(e) => Err(e),
            MseState::Handshaking => {
                if self.pending.len().saturating_add(bytes.len()) > MAX_PENDING {
                    return self.fail(MseError::PendingFull);
                }
                self.pending.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    /// Bytes from the peer, in any chunking.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), MseError> {
        match self.state {
            MseState::Failed(e) => Err(e),
            MseState::Established(m) => {
                self.take_in(m, bytes);
                Ok(())
            }
            MseState::Handshaking => {
                self.raw.extend_from_slice(bytes);
                let r = self.advance();
                if let Err(e) = r {
                    return self.fail(e);
                }
                Ok(())
            }
        }
    }

    fn fail(&mut self, e: MseError) -> Result<(), MseError> {
        self.state = MseState::Failed(e);
        self.step = Step::Done;
        self.raw = Vec::new();
        self.pending = Vec::new();
        // Nothing more goes on the wire, not even what was queued: the
        // connection is closed on failure.
        self.out = Vec::new();
        Err(e)
    }

    fn emit_payload(&mut self, m: Method, bytes: &[u8]) {
        let start = self.out.len();
        self.out.extend_from_slice(bytes);
        if let (Method::Rc4, Some(enc)) = (m, self.enc.as_mut()) {
            if let Some(tail) = self.out.get_mut(start..) {
                enc.apply(tail);
            }
        }
    }

    fn take_in(&mut self, m: Method, bytes: &[u8]) {
        let start = self.payload.len();
        self.payload.extend_from_slice(bytes);
        if let (Method::Rc4, Some(dec)) = (m, self.dec.as_mut()) {
            if let Some(tail) = self.payload.get_mut(start..) {
                dec.apply(tail);
            }
        }
    }

    fn send_public_key(&mut self) {
        let y = crypto::public_key(&self.private);
        self.modpows += 1;
        self.out.extend_from_slice(&y);
        let pad = std::mem::take(&mut self.pads[0]);
        self.out.extend_from_slice(&pad);
    }

    /// Removes the first `n` raw bytes, if there are that many.
    fn take_raw(&mut self, n: usize) -> Option<Vec<u8>> {
        if self.raw.len() < n {
            return None;
        }
        let rest = self.raw.split_off(n);
        Some(std::mem::replace(&mut self.raw, rest))
    }

    /// Removes and decrypts the first `n` raw bytes.
    fn take_dec(&mut self, n: usize) -> Option<Vec<u8>> {
        let mut b = self.take_raw(n)?;
        if let Some(d) = self.dec.as_mut() {
            d.apply(&mut b);
        }
        Some(b)
    }

    /// Reads the peer's key and computes S.
    fn peer_key(&mut self) -> Result<Option<[u8; KEY_LEN]>, MseError> {
        let Some(y) = self.take_raw(KEY_LEN) else {
            return Ok(None);
        };
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(&y);
        let s = crypto::shared_secret(&key, &self.private).map_err(MseError::BadPublicKey)?;
        self.modpows += 1;
        self.secret = Some(s);
        Ok(Some(s))
    }

    /// Searches `raw[scanned..]` for `pattern` within the first `MAX_PAD +
    /// pattern.len()` bytes. `Ok(Some(end))` is the offset just past it;
    /// `Ok(None)` asks for more bytes, with `scanned` advanced.
    fn find(&self, pattern: &[u8], scanned: &mut usize) -> Result<Option<usize>, MseError> {
        let limit = MAX_PAD + pattern.len();
        let window = self
            .raw
            .get(..self.raw.len().min(limit))
            .unwrap_or_default();
        let from = *scanned;
        if let Some(w) = window.get(from..) {
            if let Some(i) = w.windows(pattern.len()).position(|x| x == pattern) {
                return Ok(Some(from + i + pattern.len()));
            }
        }
        if window.len() >= limit {
            return Err(MseError::SyncNotFound);
        }
        // The next search starts where a match could still begin.
        *scanned = window.len().saturating_sub(pattern.len() - 1);
        Ok(None)
    }

    fn advance(&mut self) -> Result<(), MseError> {
        loop {
            let step = std::mem::replace(&mut self.step, Step::Done);
            let next = self.step(step)?;
            match next {
                Some(s) => self.step = s,
                // The step waits for more bytes or the handshake ended; `step`
                // put itself back.
                None => return Ok(()),
            }
        }
    }

    /// Runs one step: `Ok(Some(next))` to go on, `Ok(None)` when it needs more
    /// bytes (it has stored itself back in `self.step`) or is done.
    fn step(&mut self, step: Step) -> Result<Option<Step>, MseError> {
        match step {
            Step::Done => Ok(None),
            Step::PeerKey => {
                let Some(s) = self.peer_key()? else {
                    self.step = Step::PeerKey;
                    return Ok(None);
                };
                let skey = self.skeys.first().copied().unwrap_or_default();
                self.skey = Some(skey);
                self.enc = Some(Rc4Stream::new(&crypto::key_a(&s, &skey)));
                let mut dec = Rc4Stream::new(&crypto::key_b(&s, &skey));
                let mut pattern = VC;
                dec.apply(&mut pattern);
                self.dec = Some(dec);
                self.send_step3(&s, &skey);
                Ok(Some(Step::FindVc {
                    pattern,
                    scanned: 0,
                }))
            }
            Step::FindVc {
                pattern,
                mut scanned,
            } => match self.find(&pattern, &mut scanned)? {
                None => {
                    self.step = Step::FindVc { pattern, scanned };
                    Ok(None)
                }
                Some(end) => {
                    // VC is already consumed from the B stream (making `pattern`).
                    let _ = self.take_raw(end);
                    Ok(Some(Step::Select))
                }
            },
            Step::Select => {
                let Some(b) = self.take_dec(6) else {
                    self.step = Step::Select;
                    return Ok(None);
                };
                let select = be32(&b, 0);
                let len = be16(&b, 4);
                if len > MAX_PAD {
                    return Err(MseError::PadTooLong);
                }
                let method = match select {
                    CRYPTO_RC4 if self.cfg.allowed & CRYPTO_RC4 != 0 => Method::Rc4,
                    CRYPTO_PLAINTEXT if self.cfg.allowed & CRYPTO_PLAINTEXT != 0 => {
                        Method::Plaintext
                    }
                    _ => return Err(MseError::SelectUnsupported),
                };
                Ok(Some(Step::PadD { len, method }))
            }
            Step::PadD { len, method } => {
                if self.take_dec(len).is_none() {
                    self.step = Step::PadD { len, method };
                    return Ok(None);
                }
                self.establish(method, Vec::new());
                Ok(None)
            }
            Step::RPeerKey => {
                let Some(s) = self.peer_key()? else {
                    self.step = Step::RPeerKey;
                    return Ok(None);
                };
                self.send_public_key();
                Ok(Some(Step::FindReq1 {
                    pattern: crypto::req1(&s),
                    scanned: 0,
                }))
            }
            Step::FindReq1 {
                pattern,
                mut scanned,
            } => match self.find(&pattern, &mut scanned)? {
                None => {
                    self.step = Step::FindReq1 { pattern, scanned };
                    Ok(None)
                }
                Some(end) => {
                    let _ = self.take_raw(end);
                    Ok(Some(Step::Req2))
                }
            },
            Step::Req2 => {
                let Some(b) = self.take_raw(20) else {
                    self.step = Step::Req2;
                    return Ok(None);
                };
                let s = self.secret.unwrap_or([0; KEY_LEN]);
                let mut got = [0u8; 20];
                got.copy_from_slice(&b);
                let want = crypto::xor20(&got, &crypto::req3(&s));
                let skey = self
                    .skeys
                    .iter()
                    .find(|k| crypto::req2(k) == want)
                    .copied()
                    .ok_or(MseError::UnknownInfoHash)?;
                self.skey = Some(skey);
                self.dec = Some(Rc4Stream::new(&crypto::key_a(&s, &skey)));
                self.enc = Some(Rc4Stream::new(&crypto::key_b(&s, &skey)));
                Ok(Some(Step::Provide))
            }
            Step::Provide => {
                let Some(b) = self.take_dec(14) else {
                    self.step = Step::Provide;
                    return Ok(None);
                };
                if b.get(..8) != Some(&VC[..]) {
                    return Err(MseError::StreamCorrupt);
                }
                let provide = be32(&b, 8);
                let len = be16(&b, 12);
                if len > MAX_PAD {
                    return Err(MseError::PadTooLong);
                }
                Ok(Some(Step::PadC { len, provide }))
            }
            Step::PadC { len, provide } => {
                let Some(b) = self.take_dec(len + 2) else {
                    self.step = Step::PadC { len, provide };
                    return Ok(None);
                };
                let ia = be16(&b, len);
                Ok(Some(Step::Ia { len: ia, provide }))
            }
            Step::Ia { len, provide } => {
                let Some(ia) = self.take_dec(len) else {
                    self.step = Step::Ia { len, provide };
                    return Ok(None);
                };
                let common = provide & self.cfg.allowed;
                let method = if common & CRYPTO_RC4 != 0
                    && (self.cfg.prefer_rc4 || common & CRYPTO_PLAINTEXT == 0)
                {
                    Method::Rc4
                } else if common & CRYPTO_PLAINTEXT != 0 {
                    Method::Plaintext
                } else {
                    return Err(MseError::ProvideUnsupported);
                };
                let pad = std::mem::take(&mut self.pads[1]);
                let mut msg = Vec::with_capacity(14 + pad.len());
                msg.extend_from_slice(&VC);
                msg.extend_from_slice(&method.bit().to_be_bytes());
                msg.extend_from_slice(&(pad.len() as u16).to_be_bytes());
                msg.extend_from_slice(&pad);
                if let Some(e) = self.enc.as_mut() {
                    e.apply(&mut msg);
                }
                self.out.extend_from_slice(&msg);
                self.establish(method, ia);
                Ok(None)
            }
        }
    }

    /// Step 3 (initiator): the hashes, then ENCRYPT(VC, crypto_provide,
    /// len(PadC), PadC, len(IA), IA).
    fn send_step3(&mut self, s: &[u8; KEY_LEN], skey: &[u8; 20]) {
        self.out.extend_from_slice(&crypto::req1(s));
        self.out.extend_from_slice(&crypto::req2_xor_req3(skey, s));
        let pad = std::mem::take(&mut self.pads[1]);
        let ia_len = self
            .pending
            .len()
            .min(self.cfg.max_ia)
            .min(u16::MAX as usize);
        let rest = self.pending.split_off(ia_len);
        let ia = std::mem::replace(&mut self.pending, rest);
        let mut msg = Vec::with_capacity(16 + pad.len() + ia.len());
        msg.extend_from_slice(&VC);
        msg.extend_from_slice(&self.cfg.allowed.to_be_bytes());
        msg.extend_from_slice(&(pad.len() as u16).to_be_bytes());
        msg.extend_from_slice(&pad);
        msg.extend_from_slice(&(ia.len() as u16).to_be_bytes());
        msg.extend_from_slice(&ia);
        if let Some(e) = self.enc.as_mut() {
            e.apply(&mut msg);
        }
        self.out.extend_from_slice(&msg);
    }

    /// The handshake is done: `first` is payload already received (IA), the
    /// raw bytes left over are payload too, and our queued payload goes out.
    fn establish(&mut self, method: Method, first: Vec<u8>) {
        self.state = MseState::Established(method);
        self.step = Step::Done;
        self.payload.extend_from_slice(&first);
        let raw = std::mem::take(&mut self.raw);
        self.take_in(method, &raw);
        let pending = std::mem::take(&mut self.pending);
        self.emit_payload(method, &pending);
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        x.copy_from_slice(s);
    }
    u32::from_be_bytes(x)
}

fn be16(b: &[u8], at: usize) -> usize {
    let mut x = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        x.copy_from_slice(s);
    }
    u16::from_be_bytes(x) as usize
}
