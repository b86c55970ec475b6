//! The byte-stream layer of one fetch connection: between the transport's raw
//! bytes (TCP from the runtime today; uTP later, which hands the fetcher the
//! same connected/data/closed inputs) and the peer-wire [`crate::session::Session`].
//!
//! ```text
//! transport bytes  <->  Stream (plain pass-through | MSE filter)  <->  Session
//! ```
//!
//! A plaintext stream passes bytes through untouched (no copy on the way in);
//! an encrypted one runs the MSE initiator ([`crate::mse::Mse`]) and then
//! encrypts what the session sends and decrypts what it receives. Neither the
//! session nor the transport knows which.

use std::borrow::Cow;

use crate::mse::{Method, Mse, MseConfig, MseError, MseState};
use crate::rng::Rng;

use super::report::{Encryption, WireMode};

/// One connection's stream filter.
pub(super) enum Stream {
    /// The BitTorrent handshake in clear.
    Plain,
    /// MSE: handshaking, then filtering.
    Mse(Box<Mse>),
}

impl Stream {
    /// The stream for an attempt in `mode` to fetch infohash `skey`.
    pub fn new(mode: WireMode, cfg: &MseConfig, skey: [u8; 20], rng: &mut Rng) -> Self {
        match mode {
            WireMode::Plaintext => Stream::Plain,
            WireMode::Encrypted => Stream::Mse(Box::new(Mse::initiator(cfg.clone(), skey, rng))),
        }
    }

    /// The wire bytes for payload `bytes` the session wants to send (possibly
    /// none yet: MSE holds them until the handshake allows).
    pub fn send(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>, MseError> {
        match self {
            Stream::Plain => Ok(bytes),
            Stream::Mse(m) => {
                m.send(&bytes)?;
                Ok(m.take_output())
            }
        }
    }

    /// Wire bytes the stream itself has to send (MSE's handshake messages).
    pub fn take_output(&mut self) -> Vec<u8> {
        match self {
            Stream::Plain => Vec::new(),
            Stream::Mse(m) => m.take_output(),
        }
    }

    /// Raw bytes from the transport: the payload for the session (borrowed
    /// when nothing had to be done to it).
    pub fn receive<'a>(&mut self, raw: &'a [u8]) -> Result<Cow<'a, [u8]>, MseError> {
        match self {
            Stream::Plain => Ok(Cow::Borrowed(raw)),
            Stream::Mse(m) => {
                m.feed(raw)?;
                Ok(Cow::Owned(m.take_payload()))
            }
        }
    }

    /// True while an MSE handshake is under way.
    pub fn handshaking(&self) -> bool {
        matches!(self, Stream::Mse(m) if m.state() == MseState::Handshaking)
    }

    /// What this stream carries (for reports).
    pub fn encryption(&self) -> Encryption {
        match self {
            Stream::Plain => Encryption::Plaintext,
            Stream::Mse(m) => match m.state() {
                MseState::Established(Method::Rc4) => Encryption::Rc4,
                MseState::Established(Method::Plaintext) => Encryption::MsePlaintext,
                _ => Encryption::MseIncomplete,
            },
        }
    }
}
