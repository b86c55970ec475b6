//! Hand-written compact binary layouts (see the crate docs for the tables).
//!
//! Every value starts with a one-byte layout version so a later schema can tell
//! old records apart. Decoding never panics: a short or malformed buffer is a
//! `Corrupt` error naming what was wrong.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::types::*;

pub(crate) const LAYOUT_V1: u8 = 1;

/// What was wrong with a record (the caller adds db and key).
pub(crate) type DecodeResult<T> = Result<T, &'static str>;

#[derive(Default)]
pub(crate) struct Enc(pub Vec<u8>);

impl Enc {
    pub fn with_capacity(n: usize) -> Enc {
        Enc(Vec::with_capacity(n))
    }
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn var(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.var(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    pub fn addr(&mut self, a: &SocketAddr) {
        match a.ip() {
            IpAddr::V4(ip) => {
                self.u8(4);
                self.0.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                self.u8(6);
                self.0.extend_from_slice(&ip.octets());
            }
        }
        self.0.extend_from_slice(&a.port().to_be_bytes());
    }
}

pub(crate) struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Dec<'a> {
        Dec { buf, pos: 0 }
    }
    pub fn take(&mut self, n: usize) -> DecodeResult<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or("length overflow")?;
        let s = self.buf.get(self.pos..end).ok_or("truncated record")?;
        self.pos = end;
        Ok(s)
    }
    pub fn u8(&mut self) -> DecodeResult<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u16be(&mut self) -> DecodeResult<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> DecodeResult<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(
            b.try_into().map_err(|_| "truncated u32")?,
        ))
    }
    pub fn u64(&mut self) -> DecodeResult<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(
            b.try_into().map_err(|_| "truncated u64")?,
        ))
    }
    pub fn var(&mut self) -> DecodeResult<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long")
    }
    pub fn len(&mut self) -> DecodeResult<usize> {
        let n = self.var()?;
        if n > (self.buf.len() - self.pos) as u64 {
            return Err("length past end of record");
        }
        Ok(n as usize)
    }
    pub fn bytes(&mut self) -> DecodeResult<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }
    pub fn string(&mut self) -> DecodeResult<String> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| "string is not UTF-8")
    }
    pub fn addr(&mut self) -> DecodeResult<SocketAddr> {
        let ip = match self.u8()? {
            4 => {
                let b: [u8; 4] = self.take(4)?.try_into().map_err(|_| "bad ipv4")?;
                IpAddr::V4(Ipv4Addr::from(b))
            }
            6 => {
                let b: [u8; 16] = self.take(16)?.try_into().map_err(|_| "bad ipv6")?;
                IpAddr::V6(Ipv6Addr::from(b))
            }
            _ => return Err("bad address family"),
        };
        Ok(SocketAddr::new(ip, self.u16be()?))
    }
    pub fn version(&mut self) -> DecodeResult<()> {
        if self.u8()? != LAYOUT_V1 {
            return Err("unknown record layout version");
        }
        Ok(())
    }
    pub fn end(&self) -> DecodeResult<()> {
        if self.pos != self.buf.len() {
            return Err("trailing bytes after record");
        }
        Ok(())
    }
}

/// Address as a key: family byte, address bytes, port big-endian (sorts by address).
pub(crate) fn addr_key(a: &SocketAddr) -> Vec<u8> {
    let mut e = Enc::with_capacity(19);
    e.addr(a);
    e.0
}

pub(crate) fn addr_from_key(k: &[u8]) -> DecodeResult<SocketAddr> {
    let mut d = Dec::new(k);
    let a = d.addr()?;
    d.end()?;
    Ok(a)
}

fn opt_u32(v: Option<u32>) -> u32 {
    v.map_or(u32::MAX, |v| v.min(u32::MAX - 1))
}
fn u32_opt(v: u32) -> Option<u32> {
    (v != u32::MAX).then_some(v)
}

// ---------------------------------------------------------------- torrents

const TF_PRIVATE: u8 = 1;
const TF_HAS_INFO: u8 = 2;
const TF_SOURCE: u8 = 4;

/// A v2 hash follows the scrape time (v2-only or hybrid).
const TF_V2: u8 = 8;
/// With `TF_V2`: no v1 hash (v2-only; the infohash is the truncated v2 hash).
const TF_NO_V1: u8 = 16;

/// Layout byte of a schema-2/3 `torrents` value (keyed by doc id, holding the
/// infohash). Still read: schema 4 keeps such records as they are.
pub(crate) const LAYOUT_TORRENT_V2: u8 = 2;
/// Layout byte written since schema 4: layout 2 plus the scrape time and the
/// BEP 52 hash kind and full v2 hash.
pub(crate) const LAYOUT_TORRENT_V3: u8 = 3;

/// Internal form of a `torrents` value: the public record plus the doc id (its key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredTorrent {
    pub docid: u32,
    pub rec: TorrentRecord,
}

/// Byte offsets of the fixed fields of a layout-2 `torrents` value.
const T_INFOHASH: usize = 3;
const T_TOTAL_SIZE: usize = 23;
const T_DISCOVERED_AT: usize = 43;

pub(crate) fn encode_torrent(r: &TorrentRecord) -> Vec<u8> {
    let mut e = Enc::with_capacity(112 + r.name.len());
    e.u8(LAYOUT_TORRENT_V3);
    let mut flags = 0;
    if r.private {
        flags |= TF_PRIVATE;
    }
    if r.has_info {
        flags |= TF_HAS_INFO;
    }
    if r.source.is_some() {
        flags |= TF_SOURCE;
    }
    // The kind is only what the hashes say: a v2 hash without a v1 one is v2-only.
    let v2 = r.v2.filter(|_| r.kind != HashKind::V1);
    if v2.is_some() {
        flags |= TF_V2;
        if r.kind == HashKind::V2 {
            flags |= TF_NO_V1;
        }
    }
    e.u8(flags);
    e.u8(r.sources.0);
    e.0.extend_from_slice(&r.infohash);
    e.u64(r.total_size);
    e.u32(r.piece_length);
    e.u32(r.piece_count);
    e.u32(r.file_count);
    e.u64(r.discovered_at);
    e.u64(r.last_seen_at);
    e.u32(opt_u32(r.seeders));
    e.u32(opt_u32(r.leechers));
    e.u64(r.scraped_at.map_or(u64::MAX, |v| v.min(u64::MAX - 1)));
    if let Some(h) = &v2 {
        e.0.extend_from_slice(h);
    }
    e.str(&r.name);
    if let Some(s) = &r.source {
        e.str(s);
    }
    e.0
}

/// (infohash, discovered_at, total_size) of a `torrents` value without decoding the
/// rest (search orderings, integrity walks).
pub(crate) fn torrent_keys(v: &[u8]) -> DecodeResult<(InfoHash, u64, u64)> {
    if !matches!(v.first(), Some(&(LAYOUT_TORRENT_V2 | LAYOUT_TORRENT_V3))) {
        return Err("unknown record layout version");
    }
    let ih: InfoHash = v
        .get(T_INFOHASH..T_INFOHASH + 20)
        .and_then(|b| b.try_into().ok())
        .ok_or("truncated record")?;
    let size = v
        .get(T_TOTAL_SIZE..T_TOTAL_SIZE + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or("truncated record")?;
    let at = v
        .get(T_DISCOVERED_AT..T_DISCOVERED_AT + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or("truncated record")?;
    Ok((ih, at, size))
}

/// The fixed fields search filters and sorts on, read in place from a `torrents`
/// value (layouts 2 and 3 agree on them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SortFields {
    pub discovered_at: u64,
    pub total_size: u64,
    pub file_count: u32,
    pub seeders: Option<u32>,
}

/// The name of a `torrents` value, read in place (phrase checks need no more).
pub(crate) fn torrent_name(v: &[u8]) -> DecodeResult<&str> {
    let (layout, flags) = match v {
        [l, f, ..] => (*l, *f),
        _ => return Err("truncated record"),
    };
    let at = match layout {
        LAYOUT_TORRENT_V2 => 67,
        LAYOUT_TORRENT_V3 if flags & TF_V2 != 0 => 75 + 32,
        LAYOUT_TORRENT_V3 => 75,
        _ => return Err("unknown record layout version"),
    };
    let mut d = Dec::new(v.get(at..).ok_or("truncated record")?);
    std::str::from_utf8(d.bytes()?).map_err(|_| "name is not UTF-8")
}

impl SortFields {
    /// The fields of a record (what `torrent_sort_fields` reads back from its value).
    pub(crate) fn of(r: &TorrentRecord) -> SortFields {
        SortFields {
            discovered_at: r.discovered_at,
            total_size: r.total_size,
            file_count: r.file_count,
            seeders: r.seeders.filter(|&s| s != u32::MAX),
        }
    }
}

const T_FILE_COUNT: usize = 39;
const T_SEEDERS: usize = 59;

pub(crate) fn torrent_sort_fields(v: &[u8]) -> DecodeResult<SortFields> {
    if !matches!(v.first(), Some(&(LAYOUT_TORRENT_V2 | LAYOUT_TORRENT_V3))) {
        return Err("unknown record layout version");
    }
    let u64_at = |o: usize| {
        v.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or("truncated record")
    };
    let u32_at = |o: usize| {
        v.get(o..o + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or("truncated record")
    };
    Ok(SortFields {
        discovered_at: u64_at(T_DISCOVERED_AT)?,
        total_size: u64_at(T_TOTAL_SIZE)?,
        file_count: u32_at(T_FILE_COUNT)?,
        seeders: u32_opt(u32_at(T_SEEDERS)?),
    })
}

pub(crate) fn decode_torrent(docid: u32, v: &[u8]) -> DecodeResult<StoredTorrent> {
    let mut d = Dec::new(v);
    let layout = d.u8()?;
    if layout != LAYOUT_TORRENT_V2 && layout != LAYOUT_TORRENT_V3 {
        return Err("unknown record layout version");
    }
    let flags = d.u8()?;
    let sources = Sources(d.u8()?);
    let infohash: InfoHash = d.take(20)?.try_into().map_err(|_| "truncated record")?;
    let total_size = d.u64()?;
    let piece_length = d.u32()?;
    let piece_count = d.u32()?;
    let file_count = d.u32()?;
    let discovered_at = d.u64()?;
    let last_seen_at = d.u64()?;
    let seeders = u32_opt(d.u32()?);
    let leechers = u32_opt(d.u32()?);
    let (mut scraped_at, mut kind, mut v2) = (None, HashKind::V1, None);
    if layout == LAYOUT_TORRENT_V3 {
        scraped_at = Some(d.u64()?).filter(|&t| t != u64::MAX);
        if flags & TF_V2 != 0 {
            let h: InfoHashV2 = d.take(32)?.try_into().map_err(|_| "truncated record")?;
            v2 = Some(h);
            kind = if flags & TF_NO_V1 != 0 {
                HashKind::V2
            } else {
                HashKind::Hybrid
            };
        }
    }
    let name = d.string()?;
    let source = if flags & TF_SOURCE != 0 {
        Some(d.string()?)
    } else {
        None
    };
    d.end()?;
    Ok(StoredTorrent {
        docid,
        rec: TorrentRecord {
            infohash,
            kind,
            v2,
            name,
            total_size,
            piece_length,
            piece_count,
            file_count,
            private: flags & TF_PRIVATE != 0,
            source,
            discovered_at,
            last_seen_at,
            sources,
            seeders,
            leechers,
            scraped_at,
            has_info: flags & TF_HAS_INFO != 0,
        },
    })
}

// ---------------------------------------------------------------- files

/// Front-coded file list: each path stores only what differs from the previous one.
pub(crate) fn encode_files(files: &[FileEntry]) -> Vec<u8> {
    let mut e = Enc::with_capacity(8 + files.len() * 16);
    e.u8(LAYOUT_V1);
    e.var(files.len() as u64);
    let mut prev: &str = "";
    for f in files {
        let mut shared = prev
            .as_bytes()
            .iter()
            .zip(f.path.as_bytes())
            .take_while(|(a, b)| a == b)
            .count();
        while !f.path.is_char_boundary(shared) {
            shared -= 1;
        }
        e.var(f.size);
        e.var(shared as u64);
        e.str(&f.path[shared..]);
        prev = &f.path;
    }
    e.0
}

pub(crate) fn decode_files(v: &[u8]) -> DecodeResult<Vec<FileEntry>> {
    let mut d = Dec::new(v);
    d.version()?;
    let n = d.var()?;
    // Each file takes at least 3 bytes: bound the allocation by the buffer.
    if n > v.len() as u64 {
        return Err("file count larger than record");
    }
    let mut out: Vec<FileEntry> = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let size = d.var()?;
        let shared = d.var()? as usize;
        let suffix = d.bytes()?;
        let prev = out.last().map_or("", |f| f.path.as_str());
        let head = prev
            .as_bytes()
            .get(..shared)
            .ok_or("shared prefix longer than path")?;
        let mut path = Vec::with_capacity(shared + suffix.len());
        path.extend_from_slice(head);
        path.extend_from_slice(suffix);
        let path = String::from_utf8(path).map_err(|_| "path is not UTF-8")?;
        out.push(FileEntry { path, size });
    }
    d.end()?;
    Ok(out)
}

// ---------------------------------------------------------------- keys

pub(crate) fn docid_key(docid: u32) -> [u8; 4] {
    docid.to_be_bytes()
}

/// A coarse, monotone size class: sizes below 16 are their own class, larger ones
/// keep their top 4 significant bits (8 classes per power of two; at most 495).
pub(crate) fn size_bucket(total_size: u64) -> u16 {
    if total_size < 16 {
        return total_size as u16;
    }
    let e = 63 - total_size.leading_zeros(); // >= 4
    let mantissa = (total_size >> (e - 3)) & 7;
    (((e - 3) << 3) as u16 | mantissa as u16) + 8
}

/// `by_size` key: size bucket u16 BE, doc id BE. Within a bucket new doc ids go last,
/// so a batch's inserts touch one page per bucket, not one per torrent.
pub(crate) fn by_size_key(total_size: u64, docid: u32) -> [u8; 6] {
    let mut k = [0u8; 6];
    k[..2].copy_from_slice(&size_bucket(total_size).to_be_bytes());
    k[2..].copy_from_slice(&docid.to_be_bytes());
    k
}

/// `by_time` key: discovered_at BE, doc id BE.
pub(crate) fn by_time_key(discovered_at: u64, docid: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&discovered_at.to_be_bytes());
    k[8..].copy_from_slice(&docid.to_be_bytes());
    k
}

pub(crate) fn docid_from(v: &[u8]) -> DecodeResult<u32> {
    let b: [u8; 4] = v.try_into().map_err(|_| "doc id is not 4 bytes")?;
    Ok(u32::from_be_bytes(b))
}

// ---------------------------------------------------------------- peers

fn peer_status_u8(s: PeerStatus) -> u8 {
    match s {
        PeerStatus::Good => 0,
        PeerStatus::Unknown => 1,
        PeerStatus::Bad => 2,
        PeerStatus::Blacklisted => 3,
    }
}

pub(crate) fn encode_peer(p: &PeerRecord) -> Vec<u8> {
    let mut e = Enc::with_capacity(40 + p.client.len() + p.last_error.len());
    e.u8(LAYOUT_V1);
    e.u8(peer_status_u8(p.status));
    e.u8(match p.ut_metadata {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    });
    e.u32(p.attempts);
    e.u32(p.successes);
    e.u32(p.failures);
    e.u32(opt_u32(p.rtt_ms));
    e.u64(p.last_seen);
    e.str(&p.client);
    e.str(&p.last_error);
    e.0
}

pub(crate) fn decode_peer(addr: SocketAddr, v: &[u8]) -> DecodeResult<PeerRecord> {
    let mut d = Dec::new(v);
    d.version()?;
    let status = match d.u8()? {
        0 => PeerStatus::Good,
        1 => PeerStatus::Unknown,
        2 => PeerStatus::Bad,
        3 => PeerStatus::Blacklisted,
        _ => return Err("bad peer status"),
    };
    let ut_metadata = match d.u8()? {
        0 => None,
        1 => Some(false),
        2 => Some(true),
        _ => return Err("bad ut_metadata flag"),
    };
    let p = PeerRecord {
        addr,
        status,
        ut_metadata,
        attempts: d.u32()?,
        successes: d.u32()?,
        failures: d.u32()?,
        rtt_ms: u32_opt(d.u32()?),
        last_seen: d.u64()?,
        client: d.string()?,
        last_error: d.string()?,
    };
    d.end()?;
    Ok(p)
}

// ---------------------------------------------------------------- nodes

fn enc_counts(e: &mut Enc, c: &QueryCounts) {
    for v in [
        c.ping,
        c.find_node,
        c.get_peers,
        c.announce_peer,
        c.sample_infohashes,
        c.other,
    ] {
        e.u32(v);
    }
}

fn dec_counts(d: &mut Dec<'_>) -> DecodeResult<QueryCounts> {
    Ok(QueryCounts {
        ping: d.u32()?,
        find_node: d.u32()?,
        get_peers: d.u32()?,
        announce_peer: d.u32()?,
        sample_infohashes: d.u32()?,
        other: d.u32()?,
    })
}

pub(crate) fn encode_node(n: &NodeRecord) -> Vec<u8> {
    let mut e = Enc::with_capacity(96);
    e.u8(LAYOUT_V1);
    e.u8(match n.status {
        NodeStatus::Good => 0,
        NodeStatus::Questionable => 1,
        NodeStatus::Bad => 2,
    });
    e.addr(&n.addr);
    e.u32(opt_u32(n.rtt_ms));
    e.u64(n.last_seen);
    enc_counts(&mut e, &n.queries);
    enc_counts(&mut e, &n.responses);
    e.0
}

pub(crate) fn decode_node(id: [u8; 20], v: &[u8]) -> DecodeResult<NodeRecord> {
    let mut d = Dec::new(v);
    d.version()?;
    let status = match d.u8()? {
        0 => NodeStatus::Good,
        1 => NodeStatus::Questionable,
        2 => NodeStatus::Bad,
        _ => return Err("bad node status"),
    };
    let n = NodeRecord {
        id,
        status,
        addr: d.addr()?,
        rtt_ms: u32_opt(d.u32()?),
        last_seen: d.u64()?,
        queries: dec_counts(&mut d)?,
        responses: dec_counts(&mut d)?,
    };
    d.end()?;
    Ok(n)
}

// ---------------------------------------------------------------- sessions

pub(crate) fn encode_session(s: &SessionRecord) -> Vec<u8> {
    let mut e = Enc::with_capacity(96);
    e.u8(LAYOUT_V1);
    e.u64(s.started_at);
    e.u64(s.ended_at.map_or(u64::MAX, |v| v.min(u64::MAX - 1)));
    let c = &s.counters;
    for v in [
        c.infohashes_discovered,
        c.metadata_fetched,
        c.metadata_failed,
        c.torrents_new,
        c.dht_queries_sent,
        c.dht_responses_received,
    ] {
        e.u64(v);
    }
    e.u64(s.peak_rss_bytes);
    e.u64(s.cpu_ms);
    e.0
}

pub(crate) fn decode_session(id: u64, v: &[u8]) -> DecodeResult<SessionRecord> {
    let mut d = Dec::new(v);
    d.version()?;
    let started_at = d.u64()?;
    let ended_at = Some(d.u64()?).filter(|&v| v != u64::MAX);
    let counters = SessionCounters {
        infohashes_discovered: d.u64()?,
        metadata_fetched: d.u64()?,
        metadata_failed: d.u64()?,
        torrents_new: d.u64()?,
        dht_queries_sent: d.u64()?,
        dht_responses_received: d.u64()?,
    };
    let s = SessionRecord {
        id,
        started_at,
        ended_at,
        counters,
        peak_rss_bytes: d.u64()?,
        cpu_ms: d.u64()?,
    };
    d.end()?;
    Ok(s)
}

// ---------------------------------------------------------------- requests

pub(crate) fn encode_request(r: &RequestRecord) -> Vec<u8> {
    let mut e = Enc::with_capacity(64 + r.reason.len() + r.client.len());
    e.u8(LAYOUT_V1);
    e.0.extend_from_slice(&r.infohash);
    e.addr(&r.peer);
    e.u64(r.started_at_ms);
    e.u32(r.duration_ms);
    e.u8(match r.outcome {
        RequestOutcome::Success => 0,
        RequestOutcome::Failure => 1,
    });
    e.u32(r.pieces);
    e.str(&r.reason);
    e.str(&r.client);
    // Added after v1 records existed: optional at the end (absent = empty).
    e.str(&r.encryption);
    e.str(&r.transport);
    e.0
}

pub(crate) fn decode_request(v: &[u8]) -> DecodeResult<RequestRecord> {
    let mut d = Dec::new(v);
    d.version()?;
    let infohash: InfoHash = d.take(20)?.try_into().map_err(|_| "bad infohash")?;
    let peer = d.addr()?;
    let started_at_ms = d.u64()?;
    let duration_ms = d.u32()?;
    let outcome = match d.u8()? {
        0 => RequestOutcome::Success,
        1 => RequestOutcome::Failure,
        _ => return Err("bad request outcome"),
    };
    let r = RequestRecord {
        infohash,
        peer,
        started_at_ms,
        duration_ms,
        outcome,
        pieces: d.u32()?,
        reason: d.string()?,
        client: d.string()?,
        encryption: if d.end().is_ok() {
            String::new()
        } else {
            d.string()?
        },
        transport: if d.end().is_ok() {
            String::new()
        } else {
            d.string()?
        },
    };
    d.end()?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_roundtrip_front_coding_and_unicode() {
        let files = vec![
            FileEntry {
                path: "Ünïcode/déjà vu/01.flac".into(),
                size: 1,
            },
            FileEntry {
                path: "Ünïcode/déjà vu/02.flac".into(),
                size: 1 << 40,
            },
            FileEntry {
                path: "Ünïcode/dé€/x".into(),
                size: 0,
            },
            FileEntry {
                path: "other".into(),
                size: 7,
            },
        ];
        let enc = encode_files(&files);
        assert_eq!(decode_files(&enc).unwrap(), files);
        // Truncations never panic.
        for n in 0..enc.len() {
            assert!(decode_files(&enc[..n]).is_err());
        }
    }

    #[test]
    fn size_buckets_are_monotone_and_fine() {
        let mut sizes: Vec<u64> = (0..200).collect();
        for e in 4..64 {
            for m in [0u64, 1, 3, 7, 8, 15] {
                let b = 1u64 << e;
                sizes.extend([b - 1, b, b + 1, b + (b >> 3) * (m % 8), b | (b - 1)]);
            }
        }
        sizes.push(u64::MAX);
        sizes.sort_unstable();
        for w in sizes.windows(2) {
            assert!(size_bucket(w[0]) <= size_bucket(w[1]), "{} {}", w[0], w[1]);
        }
        assert_eq!(size_bucket(15) + 1, size_bucket(16));
        assert_eq!(size_bucket(u64::MAX), 495);
        // 8 classes per power of two: sizes 12.5 % apart differ.
        assert!(size_bucket(1 << 30) < size_bucket((1 << 30) + (1 << 27)));
    }

    #[test]
    fn torrent_roundtrip_and_truncation() {
        let t = StoredTorrent {
            docid: 7,
            rec: TorrentRecord {
                infohash: [3; 20],
                kind: HashKind::Hybrid,
                v2: Some([5; 32]),
                name: "Name ✓".into(),
                total_size: 123,
                piece_length: 16384,
                piece_count: 9,
                file_count: 2,
                private: true,
                source: Some("SRC".into()),
                discovered_at: 10,
                last_seen_at: 11,
                sources: Sources::ANNOUNCE | Sources::SAMPLE,
                seeders: Some(4),
                leechers: None,
                scraped_at: Some(12),
                has_info: true,
            },
        };
        let enc = encode_torrent(&t.rec);
        assert_eq!(decode_torrent(7, &enc).unwrap(), t);
        assert_eq!(torrent_keys(&enc).unwrap(), ([3; 20], 10, 123));
        assert_eq!(
            torrent_sort_fields(&enc).unwrap(),
            SortFields {
                discovered_at: 10,
                total_size: 123,
                file_count: 2,
                seeders: Some(4)
            }
        );
        for n in 0..enc.len() {
            assert!(decode_torrent(7, &enc[..n]).is_err());
        }
        // v2-only, and v1 with no scrape time.
        let mut v2 = t.clone();
        v2.rec.kind = HashKind::V2;
        assert_eq!(decode_torrent(7, &encode_torrent(&v2.rec)).unwrap(), v2);
        let mut v1 = t.clone();
        v1.rec.kind = HashKind::V1;
        v1.rec.v2 = None;
        v1.rec.scraped_at = None;
        assert_eq!(decode_torrent(7, &encode_torrent(&v1.rec)).unwrap(), v1);
    }

    /// A record written by schema 3 (layout 2: no scrape time, no v2 hash) is read
    /// as a v1 torrent with counts of unknown age. The bytes are spelled out as
    /// schema 3 wrote them, not produced by today's encoder.
    #[test]
    fn layout_2_records_still_decode() {
        let mut v = vec![2u8, TF_SOURCE, 3];
        v.extend_from_slice(&[9; 20]);
        v.extend_from_slice(&1000u64.to_le_bytes()); // total_size
        v.extend_from_slice(&16384u32.to_le_bytes()); // piece_length
        v.extend_from_slice(&1u32.to_le_bytes()); // piece_count
        v.extend_from_slice(&1u32.to_le_bytes()); // file_count
        v.extend_from_slice(&50u64.to_le_bytes()); // discovered_at
        v.extend_from_slice(&60u64.to_le_bytes()); // last_seen_at
        v.extend_from_slice(&7u32.to_le_bytes()); // seeders
        v.extend_from_slice(&u32::MAX.to_le_bytes()); // leechers unknown
        v.extend_from_slice(&[4, b'n', b'a', b'm', b'e', 1, b's']);
        let t = decode_torrent(1, &v).unwrap().rec;
        assert_eq!((t.infohash, t.kind, t.v2), ([9; 20], HashKind::V1, None));
        assert_eq!((t.seeders, t.leechers, t.scraped_at), (Some(7), None, None));
        assert_eq!((t.name.as_str(), t.source.as_deref()), ("name", Some("s")));
        assert_eq!(torrent_keys(&v).unwrap(), ([9; 20], 50, 1000));
    }

    #[test]
    fn small_records_roundtrip() {
        let addr: SocketAddr = "[2001:db8::1]:6881".parse().unwrap();
        let p = PeerRecord {
            addr,
            client: "qB 4.6".into(),
            attempts: 3,
            successes: 1,
            failures: 2,
            rtt_ms: Some(40),
            ut_metadata: Some(true),
            last_error: "timeout".into(),
            status: PeerStatus::Good,
            last_seen: 99,
        };
        assert_eq!(decode_peer(addr, &encode_peer(&p)).unwrap(), p);
        assert_eq!(addr_from_key(&addr_key(&addr)).unwrap(), addr);
        let n = NodeRecord {
            id: [9; 20],
            addr: "1.2.3.4:5".parse().unwrap(),
            rtt_ms: None,
            queries: QueryCounts {
                ping: 1,
                ..Default::default()
            },
            responses: QueryCounts {
                other: 2,
                ..Default::default()
            },
            status: NodeStatus::Good,
            last_seen: 5,
        };
        assert_eq!(decode_node([9; 20], &encode_node(&n)).unwrap(), n);
        let s = SessionRecord {
            id: 4,
            started_at: 1,
            ended_at: Some(2),
            ..Default::default()
        };
        assert_eq!(decode_session(4, &encode_session(&s)).unwrap(), s);
        let r = RequestRecord {
            infohash: [1; 20],
            peer: "1.2.3.4:5".parse().unwrap(),
            started_at_ms: 3,
            duration_ms: 4,
            outcome: RequestOutcome::Failure,
            reason: "timeout".into(),
            pieces: 0,
            client: "x".into(),
            encryption: "rc4".into(),
            transport: "utp".into(),
        };
        let bytes = encode_request(&r);
        assert_eq!(decode_request(&bytes).unwrap(), r);
        // A record from before the transport: it decodes with an empty one.
        let older = &bytes[..bytes.len() - 4];
        let mut want = r.clone();
        want.transport.clear();
        assert_eq!(decode_request(older).unwrap(), want);
        // And from before the encryption too.
        let old = &older[..older.len() - 4];
        want.encryption.clear();
        assert_eq!(decode_request(old).unwrap(), want);
    }
}

// ---------------------------------------------------------------- posting blocks

/// Largest posting block (LMDB limits DUP_SORT values to 511 bytes).
pub(crate) const MAX_BLOCK: usize = 480;

/// A `terms` value: a block of postings of one term, for ascending doc ids.
///
/// Layout: first doc id u32 BE (so blocks sort by doc id), last doc id u32 LE, then
/// one varint per posting: `(doc id − previous doc id) << 2 | flags` (`flags`: 1 the
/// term is in the name, 2 in a file path), where the previous of the first posting
/// is the first doc id itself (delta 0).
pub(crate) fn block_new(docid: u32, flags: u8) -> Vec<u8> {
    let mut e = Enc::with_capacity(64);
    e.0.extend_from_slice(&docid.to_be_bytes());
    e.0.extend_from_slice(&docid.to_le_bytes());
    e.var(u64::from(flags & 3));
    e.0
}

/// Appends a posting whose doc id is larger than the block's last; false (and the
/// block unchanged) when it would not fit or is out of order.
pub(crate) fn block_push(block: &mut Vec<u8>, docid: u32, flags: u8) -> bool {
    let Some(last) = block_last(block) else {
        return false;
    };
    if docid <= last {
        return false;
    }
    let mut e = Enc::default();
    e.var((u64::from(docid - last) << 2) | u64::from(flags & 3));
    if block.len() + e.0.len() > MAX_BLOCK {
        return false;
    }
    block[4..8].copy_from_slice(&docid.to_le_bytes());
    block.extend_from_slice(&e.0);
    true
}

pub(crate) fn block_last(block: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(block.get(4..8)?.try_into().ok()?))
}

/// Largest doc id a posting can hold (raw postings are `docid << 2 | flags` in a u32).
pub(crate) const MAX_DOCID: u32 = (1 << 30) - 1;

/// Decodes a block, pushing raw postings (`docid << 2 | flags`) onto `out`.
pub(crate) fn block_decode(block: &[u8], out: &mut Vec<u32>) -> DecodeResult<()> {
    let first = block.get(..4).ok_or("posting block too short")?;
    let mut doc = u32::from_be_bytes(first.try_into().map_err(|_| "posting block too short")?);
    let last = block_last(block).ok_or("posting block too short")?;
    let mut d = Dec::new(&block[8..]);
    let mut n = 0;
    while d.pos < d.buf.len() {
        let v = d.var()?;
        let delta = u32::try_from(v >> 2).map_err(|_| "posting delta too large")?;
        if n > 0 && delta == 0 {
            return Err("posting block not increasing");
        }
        doc = doc.checked_add(delta).ok_or("posting doc id overflow")?;
        if doc > MAX_DOCID {
            return Err("posting doc id out of range");
        }
        out.push((doc << 2) | (v & 3) as u32);
        n += 1;
    }
    if n == 0 || doc != last {
        return Err("posting block disagrees with its last doc id");
    }
    Ok(())
}

#[cfg(test)]
mod block_tests {
    use super::*;

    #[test]
    fn blocks_roundtrip_and_fill_up() {
        let mut b = block_new(5, 1);
        let mut want = vec![(5 << 2) | 1];
        let mut doc = 5u32;
        loop {
            doc += 1 + doc % 300;
            let flags = (doc % 3 + 1) as u8;
            if !block_push(&mut b, doc, flags) {
                break;
            }
            want.push((doc << 2) | u32::from(flags));
        }
        assert!(b.len() <= MAX_BLOCK);
        assert!(!block_push(&mut b, 3, 1), "out of order");
        let mut got = Vec::new();
        block_decode(&b, &mut got).unwrap();
        assert_eq!(got, want);
        for n in 0..b.len() {
            let _ = block_decode(&b[..n], &mut Vec::new()); // never panics
        }
        assert!(block_decode(&b[..b.len() - 1], &mut Vec::new()).is_err());
    }
}
