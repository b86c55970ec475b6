//! A sans-IO fake BitTorrent peer that serves metadata, honestly or not.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::id::InfoHash;
use crate::metadata::sha1_info_hash;
use crate::mse::{Mse, MseConfig, MseState, CRYPTO_PLAINTEXT, CRYPTO_RC4};
use crate::rng::Rng;
use crate::wire::{self, Deframer, Frame, MetadataMsg, PIECE_SIZE};

/// The `m.ut_metadata` id the fake seeder assigns (messages to it use this id).
pub const SEEDER_UT_METADATA: u8 = 3;
/// The `m.ut_pex` id the fake seeder assigns.
pub const SEEDER_UT_PEX: u8 = 4;

/// Which handshakes a [`FakeSeeder`] accepts (as libtorrent's `in_enc_policy`
/// and `allowed_enc_level`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum SeederEncryption {
    /// Plaintext only: MSE's first bytes are not a BitTorrent handshake, so it
    /// closes (libtorrent's `pe_disabled`).
    #[default]
    PlaintextOnly,
    /// Either: plaintext when the first bytes are the BitTorrent header, else
    /// MSE (`pe_enabled`); it selects RC4 when offered.
    Either,
    /// MSE only (closes on a plaintext handshake, `pe_forced`), selecting RC4.
    ForcedRc4,
    /// MSE only, selecting plaintext after the handshake.
    ForcedPlaintext,
}

/// How a [`FakeSeeder`] behaves. Each hostile variant maps to one
/// [`crate::fetch::FailReason`] at the leecher (see the variant docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// Serves the metadata correctly.
    Honest,
    /// Closes the connection without answering (→ `ClosedBeforeHandshake`).
    CloseBeforeHandshake,
    /// Accepts the connection and never sends a byte (→ `IdleTimeout`).
    Silent,
    /// Garbage instead of the protocol string (→ `WrongProtocol`).
    WrongProtocol,
    /// Answers with another infohash (→ `WrongInfoHash`).
    WrongInfoHash,
    /// No BEP 10 reserved bit (→ `NoExtensionBit`).
    NoExtensionBit,
    /// Extension handshake without `ut_metadata` (→ `NoUtMetadata`).
    NoUtMetadata,
    /// Extension handshake without `metadata_size` (→ `MissingMetadataSize`).
    MissingMetadataSize,
    /// Advertises this `metadata_size` but sends the real `total_size` in pieces
    /// (→ `SizeMismatch`, or `TooLarge`/`InvalidMetadataSize` for absurd values).
    LieMetadataSize(i64),
    /// Flips a byte in this piece (→ `HashMismatch`).
    CorruptPiece(u32),
    /// Answers the first request with a piece index past the end (→ `BadPiece(OutOfRange)`).
    OutOfRangePiece,
    /// Sends the first piece one byte short (→ `BadPiece(WrongSize)`).
    ShortPiece,
    /// Sends a piece that was not requested (→ `BadPiece(Unrequested)`).
    UnrequestedPiece,
    /// Rejects every request (→ `Rejected`).
    Reject,
    /// Closes after sending this many pieces (→ `ClosedMidTransfer`).
    CloseAfterPieces(u32),
    /// Handshakes, then never answers requests (→ `IdleTimeout`).
    Stall,
    /// Sends a frame header above 1 MiB (→ `FrameTooLarge`).
    HugeFrame,
}

/// A fake peer for one connection. Feed it what the leecher sends with
/// [`FakeSeeder::on_data`]; take its answer with [`FakeSeeder::take_output`]; close
/// the connection when [`FakeSeeder::wants_close`] says so.
#[derive(Debug)]
pub struct FakeSeeder {
    info: Bytes,
    ih: InfoHash,
    behavior: Behavior,
    pex: Vec<SocketAddr>,
    client: Option<String>,
    peer_id: [u8; 20],
    de: Deframer,
    out: Vec<u8>,
    handshaken: bool,
    close: bool,
    pieces_sent: u32,
    leecher_ut_metadata: Option<u8>,
    leecher_ut_pex: Option<u8>,
    encryption: SeederEncryption,
    /// The answering side of MSE, once the leecher started it.
    mse: Option<Box<Mse>>,
    /// The first bytes, until they tell plaintext from MSE.
    sniff: Vec<u8>,
    plain: bool,
    /// Requests received, for tests.
    pub requests: Vec<i64>,
}

impl FakeSeeder {
    /// A seeder for the raw info dict `info` (its infohash is the SHA-1 of `info`).
    pub fn new(info: Bytes, behavior: Behavior) -> Self {
        let ih = sha1_info_hash(&info);
        Self::with_info_hash(info, ih, behavior)
    }

    /// A seeder that claims `ih` for `info` (for v2 hashes or deliberate mismatches).
    pub fn with_info_hash(info: Bytes, ih: InfoHash, behavior: Behavior) -> Self {
        FakeSeeder {
            info,
            ih,
            behavior,
            pex: Vec::new(),
            client: Some("FakeSeeder 1.0".into()),
            peer_id: *b"-TR4060-fakeseeder00",
            de: Deframer::new(wire::MAX_FRAME + 64),
            out: Vec::new(),
            handshaken: false,
            close: false,
            pieces_sent: 0,
            leecher_ut_metadata: None,
            leecher_ut_pex: None,
            encryption: SeederEncryption::PlaintextOnly,
            mse: None,
            sniff: Vec::new(),
            plain: false,
            requests: Vec::new(),
        }
    }

    /// PEX contacts to send after the extension handshakes.
    pub fn with_pex(mut self, pex: Vec<SocketAddr>) -> Self {
        self.pex = pex;
        self
    }

    /// Which handshakes it accepts (default: plaintext only).
    pub fn with_encryption(mut self, e: SeederEncryption) -> Self {
        self.encryption = e;
        self
    }

    /// The MSE method agreed with the leecher, if MSE completed.
    pub fn mse_state(&self) -> Option<MseState> {
        self.mse.as_ref().map(|m| m.state())
    }

    /// The BEP 10 `v` to send (`None` for none).
    pub fn with_client(mut self, v: Option<String>) -> Self {
        self.client = v;
        self
    }

    /// The infohash this seeder claims.
    pub fn info_hash(&self) -> InfoHash {
        self.ih
    }

    /// How it behaves.
    pub fn behavior(&self) -> &Behavior {
        &self.behavior
    }

    /// The connection was accepted.
    pub fn on_connected(&mut self) {
        if self.behavior == Behavior::CloseBeforeHandshake {
            self.close = true;
        }
    }

    /// Bytes to send to the leecher (empty when none).
    pub fn take_output(&mut self) -> Vec<u8> {
        let out = std::mem::take(&mut self.out);
        match self.mse.as_mut() {
            None => out,
            Some(m) => {
                if m.send(&out).is_err() {
                    self.close = true;
                }
                m.take_output()
            }
        }
    }

    /// True once the seeder wants the connection closed (after its output).
    pub fn wants_close(&self) -> bool {
        self.close
    }

    fn piece_count(&self) -> u32 {
        self.info.len().div_ceil(PIECE_SIZE).max(1) as u32
    }

    /// Bytes from the leecher (raw: through MSE when it is on).
    pub fn on_data(&mut self, bytes: &[u8]) {
        if self.close || self.encryption == SeederEncryption::PlaintextOnly || self.plain {
            return self.on_plain(bytes);
        }
        if let Some(m) = self.mse.as_mut() {
            if m.feed(bytes).is_err() {
                self.close = true;
                return;
            }
            let p = m.take_payload();
            if !p.is_empty() {
                self.on_plain(&p);
            }
            return;
        }
        // Tell a plaintext handshake from MSE by the 20-byte header.
        self.sniff.extend_from_slice(bytes);
        let header = b"\x13BitTorrent protocol";
        let n = self.sniff.len().min(header.len());
        if self.sniff.get(..n) == header.get(..n) {
            if n < header.len() {
                return;
            }
            if matches!(
                self.encryption,
                SeederEncryption::ForcedRc4 | SeederEncryption::ForcedPlaintext
            ) {
                self.close = true;
                return;
            }
            self.plain = true;
            let b = std::mem::take(&mut self.sniff);
            return self.on_plain(&b);
        }
        let cfg = MseConfig {
            allowed: match self.encryption {
                SeederEncryption::ForcedPlaintext => CRYPTO_PLAINTEXT,
                _ => CRYPTO_RC4 | CRYPTO_PLAINTEXT,
            },
            prefer_rc4: true,
            ..MseConfig::default()
        };
        let seed = u64::from_le_bytes(self.ih.0[..8].try_into().unwrap_or([0; 8]));
        self.mse = Some(Box::new(Mse::responder(
            cfg,
            vec![self.ih.0],
            &mut Rng::new(seed),
        )));
        let b = std::mem::take(&mut self.sniff);
        self.on_data(&b)
    }

    fn on_plain(&mut self, bytes: &[u8]) {
        if self.close
            || matches!(
                self.behavior,
                Behavior::Silent | Behavior::CloseBeforeHandshake
            )
        {
            return;
        }
        self.de.push(bytes);
        if !self.handshaken {
            match self.de.next_handshake() {
                Ok(Some(hs)) => {
                    if hs.info_hash != self.ih {
                        self.close = true;
                        return;
                    }
                    self.handshaken = true;
                    self.send_handshakes();
                }
                Ok(None) => return,
                Err(_) => {
                    self.close = true;
                    return;
                }
            }
        }
        loop {
            let (id, payload) = match self.de.next_frame() {
                Ok(Some(Frame::Message { id, payload })) => (id, payload.to_vec()),
                Ok(Some(_)) => continue,
                Ok(None) => return,
                Err(_) => {
                    self.close = true;
                    return;
                }
            };
            self.on_message(id, &payload);
            if self.close {
                return;
            }
        }
    }

    fn send_handshakes(&mut self) {
        if self.behavior == Behavior::WrongProtocol {
            self.out.extend_from_slice(&[19u8; 68]);
            return;
        }
        let mut reserved = [0u8; 8];
        if self.behavior != Behavior::NoExtensionBit {
            reserved[wire::EXT_BYTE] |= wire::EXT_BIT;
        }
        reserved[wire::FAST_BYTE] |= wire::FAST_BIT;
        reserved[wire::DHT_BYTE] |= wire::DHT_BIT;
        let ih = if self.behavior == Behavior::WrongInfoHash {
            let mut b = self.ih.0;
            b[0] ^= 0xff;
            InfoHash(b)
        } else {
            self.ih
        };
        wire::encode_handshake(&mut self.out, reserved, &ih, &self.peer_id);
        // A bitfield-like message and a keep-alive, which the leecher must ignore.
        self.out.extend_from_slice(&[0, 0, 0, 2, 5, 0xff]);
        self.out.extend_from_slice(&[0, 0, 0, 0]);
        if self.behavior == Behavior::HugeFrame {
            self.out
                .extend_from_slice(&((wire::MAX_FRAME as u32) + 1).to_be_bytes());
            self.out.push(wire::MSG_EXTENDED);
            return;
        }
        let size = match self.behavior {
            Behavior::MissingMetadataSize => None,
            Behavior::LieMetadataSize(s) => Some(s),
            _ => Some(self.info.len() as i64),
        };
        let ut = (self.behavior != Behavior::NoUtMetadata).then_some(i64::from(SEEDER_UT_METADATA));
        let mut p = Vec::new();
        wire::encode_ext_handshake_with(
            &mut p,
            ut,
            Some(i64::from(SEEDER_UT_PEX)),
            size,
            self.client.as_deref(),
            Some(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1))),
        );
        wire::encode_extended(&mut self.out, wire::EXT_HANDSHAKE, &p);
    }

    fn on_message(&mut self, id: u8, payload: &[u8]) {
        if id != wire::MSG_EXTENDED {
            return;
        }
        let Some((&ext, body)) = payload.split_first() else {
            return;
        };
        if ext == wire::EXT_HANDSHAKE {
            if let Ok(hs) = wire::parse_ext_handshake(body) {
                self.leecher_ut_metadata = hs.ut_metadata.and_then(|i| u8::try_from(i).ok());
                self.leecher_ut_pex = hs.ut_pex.and_then(|i| u8::try_from(i).ok());
            }
            if let (Some(pex_id), false) = (self.leecher_ut_pex, self.pex.is_empty()) {
                let mut p = Vec::new();
                wire::encode_pex(&mut p, &self.pex);
                wire::encode_extended(&mut self.out, pex_id, &p);
            }
            return;
        }
        if ext != SEEDER_UT_METADATA {
            return;
        }
        let Ok(MetadataMsg::Request { piece }) = wire::parse_metadata_msg(body) else {
            return;
        };
        self.requests.push(piece);
        let Some(to) = self.leecher_ut_metadata else {
            return;
        };
        let count = i64::from(self.piece_count());
        let total = self.info.len() as i64;
        match self.behavior {
            Behavior::Stall => {}
            Behavior::Reject => {
                wire::encode_metadata_reject(&mut self.out, to, piece);
            }
            Behavior::OutOfRangePiece => {
                self.send_piece(to, count, total, &[0u8; 10]);
            }
            Behavior::UnrequestedPiece => {
                let other = if piece + 1 < count { piece + 1 } else { piece };
                let data = self.piece_bytes(other).to_vec();
                // Send it twice: the second is unrequested in any case.
                self.send_piece(to, other, total, &data);
                self.send_piece(to, other, total, &data);
            }
            Behavior::ShortPiece => {
                let mut data = self.piece_bytes(piece).to_vec();
                data.pop();
                self.send_piece(to, piece, total, &data);
            }
            Behavior::CorruptPiece(i) if i64::from(i) == piece => {
                let mut data = self.piece_bytes(piece).to_vec();
                if let Some(b) = data.first_mut() {
                    *b ^= 0x55;
                }
                self.send_piece(to, piece, total, &data);
            }
            Behavior::CloseAfterPieces(n) if self.pieces_sent >= n => {
                self.close = true;
            }
            _ => {
                if piece < 0 || piece >= count {
                    wire::encode_metadata_reject(&mut self.out, to, piece);
                    return;
                }
                let (start, end) = self.piece_range(piece);
                let info = self.info.clone();
                let data = info.get(start..end).unwrap_or_default();
                self.send_piece(to, piece, total, data);
            }
        }
    }

    fn piece_range(&self, piece: i64) -> (usize, usize) {
        let start = (piece.max(0) as usize).saturating_mul(PIECE_SIZE);
        let end = start.saturating_add(PIECE_SIZE).min(self.info.len());
        (start, end)
    }

    fn piece_bytes(&self, piece: i64) -> &[u8] {
        let (start, end) = self.piece_range(piece);
        self.info.get(start..end).unwrap_or_default()
    }

    fn send_piece(&mut self, to: u8, piece: i64, total: i64, data: &[u8]) {
        // Header dict first, then the frame length, then the data: one copy of data.
        let mut hdr = Vec::with_capacity(64);
        wire::encode_metadata_msg(&mut hdr, wire::MSG_TYPE_DATA, piece, Some(total), &[]);
        let len = (2 + hdr.len() + data.len()) as u32;
        self.out.reserve(4 + len as usize);
        self.out.extend_from_slice(&len.to_be_bytes());
        self.out.push(wire::MSG_EXTENDED);
        self.out.push(to);
        self.out.extend_from_slice(&hdr);
        self.out.extend_from_slice(data);
        self.pieces_sent += 1;
    }
}
