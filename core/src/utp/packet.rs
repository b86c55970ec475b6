//! The BEP 29 packet codec: the 20-byte version-1 header, the extension chain
//! (selective ACK is extension 1; unknown extensions are skipped by their length)
//! and the payload. Decoding never panics: a truncated or malformed datagram is a
//! [`PacketError`].

/// Length of the fixed uTP header.
pub const HEADER_LEN: usize = 20;
/// The protocol version this codec speaks (the only one BEP 29 defines).
pub const VERSION: u8 = 1;
/// The extension number of selective ACK.
pub const EXT_SACK: u8 = 1;

/// The packet types of BEP 29 (the high nibble of the first byte).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PacketType {
    /// `ST_DATA` (0): a payload, consumes a sequence number.
    Data,
    /// `ST_FIN` (1): the last sequence number of the sender's stream.
    Fin,
    /// `ST_STATE` (2): an acknowledgement, no payload, no sequence number.
    State,
    /// `ST_RESET` (3): the sender has no state for this connection.
    Reset,
    /// `ST_SYN` (4): opens a connection.
    Syn,
}

impl PacketType {
    /// The type's number in the header.
    pub fn number(self) -> u8 {
        match self {
            PacketType::Data => 0,
            PacketType::Fin => 1,
            PacketType::State => 2,
            PacketType::Reset => 3,
            PacketType::Syn => 4,
        }
    }
    /// The type with this number, if there is one.
    pub fn from_number(n: u8) -> Option<Self> {
        Some(match n {
            0 => PacketType::Data,
            1 => PacketType::Fin,
            2 => PacketType::State,
            3 => PacketType::Reset,
            4 => PacketType::Syn,
            _ => return None,
        })
    }
}

/// Whether a datagram's first byte is `(type << 4) | 1` for a type 0..=4: how the
/// DHT socket tells uTP from KRPC (which starts with `d`).
pub fn is_utp_first_byte(b: u8) -> bool {
    b & 0x0f == VERSION && b >> 4 <= 4
}

/// Why a datagram is not a uTP packet.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PacketError {
    /// Shorter than the 20-byte header.
    Truncated,
    /// A version other than 1.
    BadVersion,
    /// A type number above 4.
    BadType,
    /// An extension header or its body runs past the end of the datagram.
    ExtensionTruncated,
    /// A selective ACK whose length is not a non-zero multiple of 4.
    BadSackLength,
}

/// The fixed header fields (the extension chain is [`Packet::sack`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The packet type.
    pub ty: PacketType,
    /// The connection id (the receiver's receive id; the SYN carries the
    /// initiator's receive id).
    pub connection_id: u16,
    /// The sender's clock when it sent the packet, in microseconds (wrapping).
    pub timestamp_us: u32,
    /// The sender's latest one-way delay sample of the other direction.
    pub timestamp_diff_us: u32,
    /// The sender's free receive buffer, in bytes.
    pub wnd_size: u32,
    /// The packet's sequence number.
    pub seq_nr: u16,
    /// The last sequence number the sender received in order.
    pub ack_nr: u16,
}

/// A decoded packet borrowing the datagram.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The header.
    pub header: Header,
    /// The bitmask of the first selective ACK extension, if any (bit 0 of byte 0
    /// is `ack_nr + 2`). Its length is a non-zero multiple of 4.
    pub sack: Option<&'a [u8]>,
    /// The payload after the extensions.
    pub payload: &'a [u8],
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(s);
    Some(u32::from_be_bytes(a))
}

/// Decodes one datagram.
pub fn decode(buf: &[u8]) -> Result<Packet<'_>, PacketError> {
    if buf.len() < HEADER_LEN {
        return Err(PacketError::Truncated);
    }
    let b0 = *buf.first().ok_or(PacketError::Truncated)?;
    if b0 & 0x0f != VERSION {
        return Err(PacketError::BadVersion);
    }
    let ty = PacketType::from_number(b0 >> 4).ok_or(PacketError::BadType)?;
    let mut ext = *buf.get(1).ok_or(PacketError::Truncated)?;
    let t = PacketError::Truncated;
    let header = Header {
        ty,
        connection_id: be16(buf, 2).ok_or(t)?,
        timestamp_us: be32(buf, 4).ok_or(t)?,
        timestamp_diff_us: be32(buf, 8).ok_or(t)?,
        wnd_size: be32(buf, 12).ok_or(t)?,
        seq_nr: be16(buf, 16).ok_or(t)?,
        ack_nr: be16(buf, 18).ok_or(t)?,
    };
    let mut at = HEADER_LEN;
    let mut sack = None;
    // Each extension takes at least 2 bytes, so the chain ends within the datagram.
    while ext != 0 {
        let next = *buf.get(at).ok_or(PacketError::ExtensionTruncated)?;
        let len = *buf
            .get(at.saturating_add(1))
            .ok_or(PacketError::ExtensionTruncated)? as usize;
        let start = at.saturating_add(2);
        let end = start.saturating_add(len);
        let body = buf.get(start..end).ok_or(PacketError::ExtensionTruncated)?;
        if ext == EXT_SACK {
            if len == 0 || len % 4 != 0 {
                return Err(PacketError::BadSackLength);
            }
            if sack.is_none() {
                sack = Some(body);
            }
        }
        ext = next;
        at = end;
    }
    let payload = buf.get(at..).unwrap_or(&[]);
    Ok(Packet {
        header,
        sack,
        payload,
    })
}

/// Appends one encoded packet to `out`: the header, a selective ACK extension
/// when `sack` is given (its length must be a non-zero multiple of 4 and at most
/// 252 bytes; anything else is left out), then the payload.
pub fn encode(h: &Header, sack: Option<&[u8]>, payload: &[u8], out: &mut Vec<u8>) {
    let sack = sack.filter(|s| !s.is_empty() && s.len() % 4 == 0 && s.len() <= 252);
    out.reserve(HEADER_LEN + sack.map_or(0, |s| s.len() + 2) + payload.len());
    out.push(h.ty.number() << 4 | VERSION);
    out.push(if sack.is_some() { EXT_SACK } else { 0 });
    out.extend_from_slice(&h.connection_id.to_be_bytes());
    out.extend_from_slice(&h.timestamp_us.to_be_bytes());
    out.extend_from_slice(&h.timestamp_diff_us.to_be_bytes());
    out.extend_from_slice(&h.wnd_size.to_be_bytes());
    out.extend_from_slice(&h.seq_nr.to_be_bytes());
    out.extend_from_slice(&h.ack_nr.to_be_bytes());
    if let Some(s) = sack {
        out.push(0);
        out.push(s.len() as u8);
        out.extend_from_slice(s);
    }
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ty: PacketType) -> Header {
        Header {
            ty,
            connection_id: 0xBEEF,
            timestamp_us: 0x0102_0304,
            timestamp_diff_us: 0xFFFF_FFFE,
            wnd_size: 1 << 20,
            seq_nr: 65535,
            ack_nr: 7,
        }
    }

    #[test]
    fn round_trip_every_type_with_and_without_sack() {
        for n in 0..=4u8 {
            let ty = PacketType::from_number(n).unwrap();
            for sack in [None, Some(&[1u8, 2, 3, 4][..]), Some(&[0xff; 12][..])] {
                let mut out = Vec::new();
                encode(&header(ty), sack, b"hello", &mut out);
                assert!(is_utp_first_byte(out[0]));
                let p = decode(&out).unwrap();
                assert_eq!(p.header, header(ty));
                assert_eq!(p.sack, sack);
                assert_eq!(p.payload, b"hello");
            }
        }
    }

    #[test]
    fn header_layout_matches_bep29() {
        let mut out = Vec::new();
        encode(&header(PacketType::Syn), None, &[], &mut out);
        assert_eq!(
            out,
            [
                0x41, 0, 0xBE, 0xEF, 1, 2, 3, 4, 0xff, 0xff, 0xff, 0xfe, 0, 0x10, 0, 0, 0xff, 0xff,
                0, 7
            ]
        );
    }

    #[test]
    fn unknown_extensions_are_skipped() {
        let mut out = Vec::new();
        encode(&header(PacketType::Data), None, &[], &mut out);
        out[1] = 9; // unknown extension 9, then sack, then the end
        out.extend_from_slice(&[EXT_SACK, 3, 0xaa, 0xbb, 0xcc]);
        out.extend_from_slice(&[0, 8, 1, 0, 0, 0, 0, 0, 0, 2]);
        out.extend_from_slice(b"xy");
        let p = decode(&out).unwrap();
        assert_eq!(p.sack, Some(&[1u8, 0, 0, 0, 0, 0, 0, 2][..]));
        assert_eq!(p.payload, b"xy");
    }

    #[test]
    fn bad_datagrams_are_typed_errors() {
        let mut ok = Vec::new();
        encode(&header(PacketType::State), Some(&[0; 4]), &[], &mut ok);
        for n in 0..ok.len() {
            let r = decode(&ok[..n]);
            if n < HEADER_LEN {
                assert_eq!(r, Err(PacketError::Truncated));
            } else {
                assert_eq!(r, Err(PacketError::ExtensionTruncated), "len {n}");
            }
        }
        let mut v = ok.clone();
        v[0] = 0x42;
        assert_eq!(decode(&v), Err(PacketError::BadVersion));
        v[0] = 0x51;
        assert_eq!(decode(&v), Err(PacketError::BadType));
        let mut v = ok.clone();
        v[21] = 5;
        v.push(0);
        assert_eq!(decode(&v), Err(PacketError::BadSackLength));
        v[21] = 0;
        assert_eq!(decode(&v), Err(PacketError::BadSackLength));
    }

    #[test]
    fn first_byte_demux() {
        for b in 0..=255u8 {
            let expect = matches!(b, 0x01 | 0x11 | 0x21 | 0x31 | 0x41);
            assert_eq!(is_utp_first_byte(b), expect, "{b:#x}");
        }
        assert!(!is_utp_first_byte(b'd'));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = crate::Rng::new(29);
        for _ in 0..20_000 {
            let len = rng.index(64);
            let mut v: Vec<u8> = (0..len).map(|_| rng.next_u32() as u8).collect();
            if let Some(b) = v.first_mut() {
                *b = 0x01 | (rng.below(5) as u8) << 4;
            }
            if let Ok(p) = decode(&v) {
                assert!(p.sack.is_none_or(|s| !s.is_empty() && s.len() % 4 == 0));
            }
        }
    }
}
