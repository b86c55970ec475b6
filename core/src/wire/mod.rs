//! BitTorrent peer wire: BEP 3 handshake and framing, BEP 10 extension handshake,
//! BEP 9 `ut_metadata` messages, BEP 11 PEX and BEP 55 `ut_holepunch` (`holepunch.rs`).
//!
//! Everything here is pure encoding and decoding over byte slices; the per-connection
//! state machine lives in [`crate::session`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::id::InfoHash;

pub mod bencode;
mod holepunch;

pub use holepunch::{
    encode_holepunch, encode_holepunch_payload, parse_holepunch, HolepunchError,
    HolepunchErrorCode, HolepunchKind, HolepunchMsg,
};

use bencode::{put_bytes, put_int, Value};

/// The BEP 3 protocol string.
pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";
/// Length of the BEP 3 handshake: pstrlen, pstr, reserved, info_hash, peer_id.
pub const HANDSHAKE_LEN: usize = 68;
/// Frames longer than this are a protocol violation (1 MiB).
pub const MAX_FRAME: usize = 1 << 20;
/// BEP 9 metadata piece size.
pub const PIECE_SIZE: usize = 16 * 1024;

/// Reserved bit: BEP 10 extension protocol (`reserved[5] & 0x10`).
pub const EXT_BYTE: usize = 5;
/// Mask of the BEP 10 bit in `reserved[EXT_BYTE]`.
pub const EXT_BIT: u8 = 0x10;
/// Reserved bit: BEP 6 fast extension (`reserved[7] & 0x04`).
pub const FAST_BYTE: usize = 7;
/// Mask of the BEP 6 bit in `reserved[FAST_BYTE]`.
pub const FAST_BIT: u8 = 0x04;
/// Reserved bit: BEP 5 DHT (`reserved[7] & 0x01`).
pub const DHT_BYTE: usize = 7;
/// Mask of the BEP 5 bit in `reserved[DHT_BYTE]`.
pub const DHT_BIT: u8 = 0x01;

/// BEP 3 message id of BEP 10 extended messages.
pub const MSG_EXTENDED: u8 = 20;
/// Extended message id of the BEP 10 handshake.
pub const EXT_HANDSHAKE: u8 = 0;
/// The ids *we* assign in our `m` dict: the peer sends these to us.
pub const OUR_UT_METADATA: u8 = 1;
/// Our id for `ut_pex` (BEP 11).
pub const OUR_UT_PEX: u8 = 2;
/// Our id for `ut_holepunch` (BEP 55).
pub const OUR_UT_HOLEPUNCH: u8 = 4;

/// Most PEX contacts taken from one message (BEP 11 says 50 after the first message).
pub const MAX_PEX_PER_MESSAGE: usize = 200;

/// A parsed BEP 3 handshake.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// The 8 reserved bytes (extension bits).
    pub reserved: [u8; 8],
    /// The torrent the peer speaks about.
    pub info_hash: InfoHash,
    /// The peer's 20-byte peer id (BEP 20 client prefix, if any).
    pub peer_id: [u8; 20],
}

impl Handshake {
    /// The BEP 10 extension-protocol bit is set.
    pub fn supports_extensions(&self) -> bool {
        self.reserved[EXT_BYTE] & EXT_BIT != 0
    }
    /// The BEP 6 fast-extension bit is set.
    pub fn supports_fast(&self) -> bool {
        self.reserved[FAST_BYTE] & FAST_BIT != 0
    }
    /// The BEP 5 DHT bit is set.
    pub fn supports_dht(&self) -> bool {
        self.reserved[DHT_BYTE] & DHT_BIT != 0
    }
}

/// Why a handshake was not accepted.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HandshakeError {
    /// pstrlen is not 19 or the protocol string differs.
    WrongProtocol,
}

/// Our reserved bytes: extension protocol and DHT.
pub fn our_reserved() -> [u8; 8] {
    let mut r = [0u8; 8];
    r[EXT_BYTE] |= EXT_BIT;
    r[DHT_BYTE] |= DHT_BIT;
    r
}

/// Appends a handshake.
pub fn encode_handshake(out: &mut Vec<u8>, reserved: [u8; 8], ih: &InfoHash, peer_id: &[u8; 20]) {
    out.push(PROTOCOL.len() as u8);
    out.extend_from_slice(PROTOCOL);
    out.extend_from_slice(&reserved);
    out.extend_from_slice(ih.as_bytes());
    out.extend_from_slice(peer_id);
}

/// Checks a (possibly partial) handshake prefix for the protocol string. Lets a
/// session fail early; gives the same verdict as [`parse_handshake`] on the full bytes.
pub fn check_handshake_prefix(prefix: &[u8]) -> Result<(), HandshakeError> {
    let mut expect = [0u8; 20];
    expect[0] = PROTOCOL.len() as u8;
    expect[1..].copy_from_slice(PROTOCOL);
    let n = prefix.len().min(20);
    if prefix.get(..n) == expect.get(..n) {
        Ok(())
    } else {
        Err(HandshakeError::WrongProtocol)
    }
}

/// Parses a full 68-byte handshake.
pub fn parse_handshake(b: &[u8; HANDSHAKE_LEN]) -> Result<Handshake, HandshakeError> {
    check_handshake_prefix(b)?;
    let mut reserved = [0u8; 8];
    reserved.copy_from_slice(&b[20..28]);
    let mut ih = [0u8; 20];
    ih.copy_from_slice(&b[28..48]);
    let mut peer_id = [0u8; 20];
    peer_id.copy_from_slice(&b[48..68]);
    Ok(Handshake {
        reserved,
        info_hash: InfoHash(ih),
        peer_id,
    })
}

/// Appends a length-prefixed extended message: `<len><20><ext_id><payload>`.
pub fn encode_extended(out: &mut Vec<u8>, ext_id: u8, payload: &[u8]) {
    let len = (payload.len() + 2) as u32;
    out.extend_from_slice(&len.to_be_bytes());
    out.push(MSG_EXTENDED);
    out.push(ext_id);
    out.extend_from_slice(payload);
}

/// A BEP 10 extension handshake (the fields we use).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtHandshake {
    /// `m.ut_metadata`: `None` if absent, `Some(0)` if explicitly disabled.
    pub ut_metadata: Option<i64>,
    /// `m.ut_pex`.
    pub ut_pex: Option<i64>,
    /// `m.ut_holepunch` (BEP 55).
    pub ut_holepunch: Option<i64>,
    /// `metadata_size`, as sent (validated by the session).
    pub metadata_size: Option<i64>,
    /// `v`: client name and version (lossy UTF-8, at most 64 bytes kept).
    pub client: Option<String>,
    /// `yourip`: our address as the peer sees it.
    pub yourip: Option<IpAddr>,
    /// `p`: the peer's listen port.
    pub listen_port: Option<u16>,
    /// `reqq`: how many outstanding requests the peer accepts.
    pub reqq: Option<u32>,
}

/// Why an extended message did not decode.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExtError {
    /// Not bencode, or not a dict.
    NotADict,
    /// A field has the wrong type or an impossible value.
    BadField,
}

/// Encodes our extension handshake payload (without the frame header).
pub fn encode_ext_handshake(
    out: &mut Vec<u8>,
    client: Option<&str>,
    metadata_size: Option<i64>,
    reqq: Option<u32>,
) {
    out.push(b'd');
    put_bytes(out, b"m");
    out.push(b'd');
    put_bytes(out, b"ut_holepunch");
    put_int(out, i64::from(OUR_UT_HOLEPUNCH));
    put_bytes(out, b"ut_metadata");
    put_int(out, i64::from(OUR_UT_METADATA));
    put_bytes(out, b"ut_pex");
    put_int(out, i64::from(OUR_UT_PEX));
    out.push(b'e');
    if let Some(sz) = metadata_size {
        put_bytes(out, b"metadata_size");
        put_int(out, sz);
    }
    if let Some(q) = reqq {
        put_bytes(out, b"reqq");
        put_int(out, i64::from(q));
    }
    if let Some(v) = client {
        put_bytes(out, b"v");
        put_bytes(out, v.as_bytes());
    }
    out.push(b'e');
}

/// Like [`encode_ext_handshake`] but with arbitrary `m` ids and optional extra
/// fields; used by the test seeder.
pub fn encode_ext_handshake_with(
    out: &mut Vec<u8>,
    ut_metadata: Option<i64>,
    ut_pex: Option<i64>,
    metadata_size: Option<i64>,
    client: Option<&str>,
    yourip: Option<IpAddr>,
) {
    out.push(b'd');
    put_bytes(out, b"m");
    out.push(b'd');
    if let Some(id) = ut_metadata {
        put_bytes(out, b"ut_metadata");
        put_int(out, id);
    }
    if let Some(id) = ut_pex {
        put_bytes(out, b"ut_pex");
        put_int(out, id);
    }
    out.push(b'e');
    if let Some(sz) = metadata_size {
        put_bytes(out, b"metadata_size");
        put_int(out, sz);
    }
    put_bytes(out, b"reqq");
    put_int(out, 250);
    if let Some(v) = client {
        put_bytes(out, b"v");
        put_bytes(out, v.as_bytes());
    }
    if let Some(ip) = yourip {
        put_bytes(out, b"yourip");
        match ip {
            IpAddr::V4(a) => put_bytes(out, &a.octets()),
            IpAddr::V6(a) => put_bytes(out, &a.octets()),
        }
    }
    out.push(b'e');
}

/// Parses a peer's extension handshake payload.
pub fn parse_ext_handshake(payload: &[u8]) -> Result<ExtHandshake, ExtError> {
    let v = bencode::decode(payload).map_err(|_| ExtError::NotADict)?;
    if v.as_dict().is_none() {
        return Err(ExtError::NotADict);
    }
    let mut hs = ExtHandshake::default();
    if let Some(m) = v.get(b"m") {
        if m.as_dict().is_none() {
            return Err(ExtError::BadField);
        }
        hs.ut_metadata = m.get(b"ut_metadata").and_then(Value::as_int);
        hs.ut_pex = m.get(b"ut_pex").and_then(Value::as_int);
        hs.ut_holepunch = m.get(b"ut_holepunch").and_then(Value::as_int);
    }
    hs.metadata_size = match v.get(b"metadata_size") {
        None => None,
        Some(Value::Int(i)) => Some(*i),
        Some(_) => Some(-1),
    };
    if let Some(c) = v.get(b"v").and_then(Value::as_bytes) {
        let c = c.get(..c.len().min(64)).unwrap_or_default();
        hs.client = Some(String::from_utf8_lossy(c).into_owned());
    }
    hs.yourip = v
        .get(b"yourip")
        .and_then(Value::as_bytes)
        .and_then(parse_ip);
    hs.listen_port = v
        .get(b"p")
        .and_then(Value::as_int)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0);
    hs.reqq = v
        .get(b"reqq")
        .and_then(Value::as_int)
        .and_then(|q| u32::try_from(q).ok());
    Ok(hs)
}

fn parse_ip(b: &[u8]) -> Option<IpAddr> {
    if let Ok(a) = <[u8; 4]>::try_from(b) {
        Some(IpAddr::V4(Ipv4Addr::from(a)))
    } else if let Ok(a) = <[u8; 16]>::try_from(b) {
        Some(IpAddr::V6(Ipv6Addr::from(a)))
    } else {
        None
    }
}

/// A BEP 9 message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataMsg<'a> {
    /// `msg_type: 0`: a request for one piece.
    Request {
        /// The piece index (0-based, 16 KiB pieces), not yet range-checked.
        piece: i64,
    },
    /// `msg_type: 1`: one piece, with the bytes after the dict.
    Data {
        /// The piece index, not yet range-checked.
        piece: i64,
        /// `total_size`: the whole metadata size in bytes, if sent.
        total_size: Option<i64>,
        /// The piece bytes that follow the bencoded dict.
        data: &'a [u8],
    },
    /// `msg_type: 2`: the peer will not send this piece.
    Reject {
        /// The piece index, not yet range-checked.
        piece: i64,
    },
    /// An unknown `msg_type` (ignored, as BEP 9 asks).
    Unknown,
}

/// BEP 9 `msg_type` of a request.
pub const MSG_TYPE_REQUEST: i64 = 0;
/// BEP 9 `msg_type` of a data message.
pub const MSG_TYPE_DATA: i64 = 1;
/// BEP 9 `msg_type` of a reject.
pub const MSG_TYPE_REJECT: i64 = 2;

/// Parses a BEP 9 payload: a bencoded dict, followed by the piece bytes for `data`.
pub fn parse_metadata_msg(payload: &[u8]) -> Result<MetadataMsg<'_>, ExtError> {
    let (v, used) = bencode::decode_prefix(payload).map_err(|_| ExtError::NotADict)?;
    if v.as_dict().is_none() {
        return Err(ExtError::NotADict);
    }
    let msg_type = v
        .get(b"msg_type")
        .and_then(Value::as_int)
        .ok_or(ExtError::BadField)?;
    let piece = v.get(b"piece").and_then(Value::as_int);
    let trailing = payload.get(used..).unwrap_or_default();
    match msg_type {
        MSG_TYPE_REQUEST | MSG_TYPE_DATA | MSG_TYPE_REJECT => {
            let piece = piece.ok_or(ExtError::BadField)?;
            Ok(match msg_type {
                MSG_TYPE_REQUEST => MetadataMsg::Request { piece },
                MSG_TYPE_REJECT => MetadataMsg::Reject { piece },
                _ => MetadataMsg::Data {
                    piece,
                    total_size: v.get(b"total_size").and_then(Value::as_int),
                    data: trailing,
                },
            })
        }
        _ => Ok(MetadataMsg::Unknown),
    }
}

/// Appends a BEP 9 message body (no frame header): `{msg_type, piece[, total_size]}`
/// followed by `data`.
pub fn encode_metadata_msg(
    out: &mut Vec<u8>,
    msg_type: i64,
    piece: i64,
    total_size: Option<i64>,
    data: &[u8],
) {
    out.push(b'd');
    put_bytes(out, b"msg_type");
    put_int(out, msg_type);
    put_bytes(out, b"piece");
    put_int(out, piece);
    if let Some(t) = total_size {
        put_bytes(out, b"total_size");
        put_int(out, t);
    }
    out.push(b'e');
    out.extend_from_slice(data);
}

/// Appends a full framed BEP 9 request to `ext_id` (the peer's `ut_metadata`).
pub fn encode_metadata_request(out: &mut Vec<u8>, ext_id: u8, piece: u32) {
    let mut v = Vec::with_capacity(40);
    encode_metadata_msg(&mut v, MSG_TYPE_REQUEST, i64::from(piece), None, &[]);
    encode_extended(out, ext_id, &v);
}

/// Appends a full framed BEP 9 reject.
pub fn encode_metadata_reject(out: &mut Vec<u8>, ext_id: u8, piece: i64) {
    let mut v = Vec::with_capacity(40);
    encode_metadata_msg(&mut v, MSG_TYPE_REJECT, piece, None, &[]);
    encode_extended(out, ext_id, &v);
}

/// BEP 11 `added.f` flag: the peer prefers encryption.
pub const PEX_PREFERS_ENCRYPTION: u8 = 0x01;
/// BEP 11 `added.f` flag: the peer supports uTP.
pub const PEX_UTP: u8 = 0x04;
/// BEP 11 `added.f` flag: the peer supports the holepunch extension (BEP 55).
pub const PEX_HOLEPUNCH: u8 = 0x08;
/// BEP 11 `added.f` flag: the peer is reachable (accepts incoming connections).
pub const PEX_REACHABLE: u8 = 0x10;

/// Parses a BEP 11 PEX payload into added contacts (`added`, `added6`), at most
/// [`MAX_PEX_PER_MESSAGE`]; malformed compact strings are truncated to whole entries.
pub fn parse_pex(payload: &[u8]) -> Result<Vec<SocketAddr>, ExtError> {
    Ok(parse_pex_flags(payload)?
        .into_iter()
        .map(|(a, _)| a)
        .collect())
}

/// [`parse_pex`] with each contact's flags byte (`added.f`, `added6.f`; 0 when
/// the list is missing or short).
pub fn parse_pex_flags(payload: &[u8]) -> Result<Vec<(SocketAddr, u8)>, ExtError> {
    let v = bencode::decode(payload).map_err(|_| ExtError::NotADict)?;
    if v.as_dict().is_none() {
        return Err(ExtError::NotADict);
    }
    let mut out = Vec::new();
    if let Some(b) = v.get(b"added").and_then(Value::as_bytes) {
        let flags = v
            .get(b"added.f")
            .and_then(Value::as_bytes)
            .unwrap_or_default();
        for (i, c) in b.chunks_exact(6).enumerate() {
            if out.len() >= MAX_PEX_PER_MESSAGE {
                break;
            }
            let ip = Ipv4Addr::new(c[0], c[1], c[2], c[3]);
            let port = u16::from_be_bytes([c[4], c[5]]);
            let f = flags.get(i).copied().unwrap_or(0);
            out.push((SocketAddr::new(IpAddr::V4(ip), port), f));
        }
    }
    if let Some(b) = v.get(b"added6").and_then(Value::as_bytes) {
        let flags = v
            .get(b"added6.f")
            .and_then(Value::as_bytes)
            .unwrap_or_default();
        for (i, c) in b.chunks_exact(18).enumerate() {
            if out.len() >= MAX_PEX_PER_MESSAGE {
                break;
            }
            let mut a = [0u8; 16];
            a.copy_from_slice(&c[..16]);
            let port = u16::from_be_bytes([c[16], c[17]]);
            let f = flags.get(i).copied().unwrap_or(0);
            out.push((SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port), f));
        }
    }
    Ok(out)
}

/// Encodes a PEX payload with `added`/`added6` (test helper and for completeness).
pub fn encode_pex(out: &mut Vec<u8>, added: &[SocketAddr]) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for a in added {
        match a {
            SocketAddr::V4(s) => {
                v4.extend_from_slice(&s.ip().octets());
                v4.extend_from_slice(&s.port().to_be_bytes());
            }
            SocketAddr::V6(s) => {
                v6.extend_from_slice(&s.ip().octets());
                v6.extend_from_slice(&s.port().to_be_bytes());
            }
        }
    }
    out.push(b'd');
    put_bytes(out, b"added");
    put_bytes(out, &v4);
    if !v6.is_empty() {
        put_bytes(out, b"added6");
        put_bytes(out, &v6);
    }
    out.push(b'e');
}

/// Client name and version from a peer id, per BEP 20 (Azureus style `-XXnnnn-`,
/// Shadow style, Mainline `M1-2-3--`), plus a few styles of their own that common
/// clients use (aria2's `A2-1-36-0-`, Tixati's `TIX0xyz-`). `None` when the style is
/// not recognised.
pub fn client_from_peer_id(id: &[u8; 20]) -> Option<String> {
    if let Some(v) = aria2_version(id) {
        return Some(format!("aria2 {v}"));
    }
    if id.starts_with(b"TIX") && id[3..7].iter().all(u8::is_ascii_digit) && id[7] == b'-' {
        return Some("Tixati".to_string());
    }
    if id[0] == b'-' && id[7] == b'-' {
        let code = [id[1], id[2]];
        let name = azureus_name(code);
        let ver = &id[3..7];
        if !ver.iter().all(u8::is_ascii_alphanumeric) || !code.iter().all(|c| c.is_ascii_graphic())
        {
            return None;
        }
        let digits: Vec<String> = ver.iter().map(|&c| ver_char(c).to_string()).collect();
        let name = match name {
            Some(n) => n.to_string(),
            None => String::from_utf8_lossy(&code).into_owned(),
        };
        return Some(format!("{name} {}", digits.join(".")));
    }
    if id[0] == b'M' && id[1].is_ascii_digit() {
        // Mainline: M<d>-<d>-<d>--
        let s = id.get(1..8).unwrap_or_default();
        let text: String = s
            .iter()
            .take_while(|c| c.is_ascii_digit() || **c == b'-')
            .map(|&c| c as char)
            .collect();
        let parts: Vec<&str> = text.split('-').filter(|p| !p.is_empty()).collect();
        if parts.len() == 3 {
            return Some(format!("Mainline {}", parts.join(".")));
        }
        return None;
    }
    let shadow = match id[0] {
        b'A' => Some("ABC"),
        b'O' => Some("Osprey Permaseed"),
        b'Q' => Some("BTQueue"),
        b'R' => Some("Tribler"),
        b'S' => Some("Shadow"),
        b'T' => Some("BitTornado"),
        b'U' => Some("UPnP NAT Bit Torrent"),
        _ => None,
    };
    if let Some(name) = shadow {
        // <c><up to 5 version chars, '-' padded>---
        if &id[6..9] == b"---" {
            let ver: Vec<String> = id[1..6]
                .iter()
                .filter(|&&c| c != b'-')
                .map(|&c| ver_char(c).to_string())
                .collect();
            if id[1..6]
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'-')
            {
                return Some(format!("{name} {}", ver.join(".")));
            }
        }
    }
    None
}

/// aria2's default peer id prefix, `A2-<major>-<minor>-<patch>-` (its
/// `--peer-id-prefix`), then random bytes: the version as `1.36.0`.
fn aria2_version(id: &[u8; 20]) -> Option<String> {
    let mut rest = id.strip_prefix(b"A2-")?;
    let mut parts = Vec::with_capacity(3);
    for _ in 0..3 {
        let n = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=3).contains(&n) || rest.get(n) != Some(&b'-') {
            return None;
        }
        parts.push(std::str::from_utf8(rest.get(..n)?).ok()?);
        rest = rest.get(n + 1..)?;
    }
    Some(parts.join("."))
}

fn ver_char(c: u8) -> u32 {
    match c {
        b'0'..=b'9' => u32::from(c - b'0'),
        b'A'..=b'Z' => u32::from(c - b'A') + 10,
        b'a'..=b'z' => u32::from(c - b'a') + 36,
        _ => 0,
    }
}

fn azureus_name(code: [u8; 2]) -> Option<&'static str> {
    Some(match &code {
        b"AZ" => "Azureus",
        b"BC" => "BitComet",
        b"BT" => "BitTorrent",
        b"DE" => "Deluge",
        b"FW" => "FrostWire",
        b"KT" => "KTorrent",
        b"LT" => "libtorrent",
        b"lt" => "libTorrent",
        b"MO" => "MonoTorrent",
        b"qB" => "qBittorrent",
        b"QD" => "QQDownload",
        b"SZ" => "Shareaza",
        b"TR" => "Transmission",
        b"UT" => "µTorrent",
        b"UW" => "µTorrent Web",
        b"WD" => "WebTorrent Desktop",
        b"WW" => "WebTorrent",
        b"XL" => "Xunlei",
        b"BI" => "BiglyBT",
        b"TX" => "Tixati",
        b"AG" | b"A~" => "Ares",
        b"BF" => "Bitflu",
        b"MG" => "magnetar",
        // From libtorrent's identify_client table (BEP 20 / BitTorrentSpecification).
        b"7T" => "aTorrent",
        b"BG" => "BTG",
        b"BW" => "BitWombat",
        b"CD" => "Enhanced CTorrent",
        b"CT" => "CTorrent",
        b"HL" => "Halite",
        b"KG" => "KGet",
        b"LC" => "LeechCraft",
        b"LW" => "LimeWire",
        b"ML" => "MLDonkey",
        b"MR" => "Miro",
        b"OS" => "OneSwarm",
        b"PD" => "Pando",
        b"SD" => "Xunlei",
        b"ST" => "SymTorrent",
        b"TL" => "Tribler",
        b"UM" => "µTorrent Mac",
        b"VG" => "Vagaa",
        b"XF" => "Xfplay",
        b"XX" => "Xtorrent",
        _ => return None,
    })
}

/// Incremental framing over an in-order byte stream of any chunking: first the
/// 68-byte handshake, then `<u32 len><payload>` frames capped at `max_frame`.
#[derive(Debug)]
pub struct Deframer {
    buf: Vec<u8>,
    pos: usize,
    max_frame: usize,
}

/// One unit read from the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// The 68-byte BEP 3 handshake (always the first frame).
    Handshake(Handshake),
    /// A zero-length message.
    KeepAlive,
    /// A message: its id and payload.
    Message {
        /// The BEP 3 message id.
        id: u8,
        /// The bytes after the id (borrowed from the deframer's buffer).
        payload: &'a [u8],
    },
}

/// Why the stream is not valid framing.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FrameError {
    /// The stream does not start with a valid BEP 3 handshake.
    WrongProtocol,
    /// A length prefix above the cap.
    TooLarge,
}

impl Deframer {
    /// An empty deframer that refuses length prefixes above `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Deframer {
            buf: Vec::new(),
            pos: 0,
            max_frame,
        }
    }

    /// The frame size cap, bytes.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Buffered bytes not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Appends stream bytes. Consumed bytes are discarded first, so the buffer holds
    /// at most one partial frame plus `bytes`.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete handshake (call once, first).
    pub fn next_handshake(&mut self) -> Result<Option<Handshake>, FrameError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        check_handshake_prefix(rest).map_err(|_| FrameError::WrongProtocol)?;
        let Some(hs) = rest.get(..HANDSHAKE_LEN) else {
            return Ok(None);
        };
        let mut arr = [0u8; HANDSHAKE_LEN];
        arr.copy_from_slice(hs);
        let hs = parse_handshake(&arr).map_err(|_| FrameError::WrongProtocol)?;
        self.pos += HANDSHAKE_LEN;
        Ok(Some(hs))
    }

    /// The next complete message frame, `None` until one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        match split_frame(rest, self.max_frame)? {
            None => Ok(None),
            Some((f, used)) => {
                self.pos += used;
                Ok(Some(f))
            }
        }
    }
}

/// Parses one frame at the start of `buf`: the frame and the bytes it used, or
/// `None` if `buf` holds only part of one. Lets callers parse straight from a read
/// buffer without copying when nothing is pending.
pub fn split_frame(buf: &[u8], max_frame: usize) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some(hdr) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
    if len > max_frame {
        return Err(FrameError::TooLarge);
    }
    let Some(body) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    let f = match body.split_first() {
        None => Frame::KeepAlive,
        Some((&id, payload)) => Frame::Message { id, payload },
    };
    Ok(Some((f, 4 + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_roundtrip_and_bits() {
        let ih = InfoHash([7; 20]);
        let mut out = Vec::new();
        encode_handshake(&mut out, our_reserved(), &ih, b"-MG0100-abcdefghijkl");
        assert_eq!(out.len(), HANDSHAKE_LEN);
        let arr: [u8; 68] = out.as_slice().try_into().unwrap();
        let hs = parse_handshake(&arr).unwrap();
        assert!(hs.supports_extensions() && hs.supports_dht() && !hs.supports_fast());
        assert_eq!(hs.info_hash, ih);
        assert_eq!(check_handshake_prefix(b"\x13BitTorrent prot"), Ok(()));
        assert!(check_handshake_prefix(b"\x13BitTorrent Prot").is_err());
    }

    #[test]
    fn ext_handshake_and_metadata_messages() {
        let mut p = Vec::new();
        encode_ext_handshake_with(&mut p, Some(3), Some(4), Some(31235), Some("x 1"), None);
        let hs = parse_ext_handshake(&p).unwrap();
        assert_eq!(hs.ut_metadata, Some(3));
        assert_eq!(hs.ut_pex, Some(4));
        assert_eq!(hs.metadata_size, Some(31235));
        assert_eq!(hs.reqq, Some(250));
        assert_eq!(hs.client.as_deref(), Some("x 1"));
        let mut m = Vec::new();
        encode_metadata_msg(&mut m, 1, 0, Some(3425), b"xxxx");
        assert_eq!(
            &m[..],
            &b"d8:msg_typei1e5:piecei0e10:total_sizei3425eexxxx"[..]
        );
        assert_eq!(
            parse_metadata_msg(&m).unwrap(),
            MetadataMsg::Data {
                piece: 0,
                total_size: Some(3425),
                data: b"xxxx"
            }
        );
        let added: Vec<SocketAddr> = vec!["1.2.3.4:5".parse().unwrap(), "[::1]:6".parse().unwrap()];
        let mut px = Vec::new();
        encode_pex(&mut px, &added);
        assert_eq!(parse_pex(&px).unwrap(), added);
    }

    #[test]
    fn bep20_clients() {
        let id = *b"-TR4060-abcdefghijkl";
        assert_eq!(
            client_from_peer_id(&id).as_deref(),
            Some("Transmission 4.0.6.0")
        );
        let id = *b"M4-3-6--abcdefghijkl";
        assert_eq!(client_from_peer_id(&id).as_deref(), Some("Mainline 4.3.6"));
        let id = *b"S58B-----abcdefghijk";
        assert_eq!(client_from_peer_id(&id).as_deref(), Some("Shadow 5.8.11"));
        assert_eq!(client_from_peer_id(&[0xff; 20]), None);
        // aria2 1.36 (captured: core/tests/fixtures/wire/aria2_single.stream.bin).
        let id = *b"A2-1-36-0-\x00>\x8dr\xc1\x94\xbf\r\xd2^";
        assert_eq!(client_from_peer_id(&id).as_deref(), Some("aria2 1.36.0"));
        let id = *b"A2-1-7-12-0123456789";
        assert_eq!(client_from_peer_id(&id).as_deref(), Some("aria2 1.7.12"));
        // Not aria2: a missing field, a field too long, a missing dash.
        for bad in [
            b"A2-1-36-abcdefghijkl",
            b"A2-1-3600-0-abcdefgh",
            b"A2-1-36-0xabcdefghij",
        ] {
            assert_eq!(client_from_peer_id(bad), None, "{:?}", bad);
        }
        let id = *b"TIX0283-abcdefghijkl";
        assert_eq!(client_from_peer_id(&id).as_deref(), Some("Tixati"));
        let id = *b"-SD0100-abcdefghijkl";
        assert_eq!(client_from_peer_id(&id).as_deref(), Some("Xunlei 0.1.0.0"));
        let id = *b"-LW0101-abcdefghijkl";
        assert_eq!(
            client_from_peer_id(&id).as_deref(),
            Some("LimeWire 0.1.0.1")
        );
    }

    #[test]
    fn deframer_caps_and_keepalive() {
        let mut d = Deframer::new(MAX_FRAME);
        d.push(&[0, 0, 0, 0, 0, 0, 0, 2, 5]);
        assert_eq!(d.next_frame().unwrap(), Some(Frame::KeepAlive));
        assert_eq!(d.next_frame().unwrap(), None);
        d.push(&[9]);
        assert_eq!(
            d.next_frame().unwrap(),
            Some(Frame::Message {
                id: 5,
                payload: &[9]
            })
        );
        d.push(&(MAX_FRAME as u32 + 1).to_be_bytes());
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge));
    }
}
