//! Finding a torrent by what a user types: a full infohash, a unique prefix of its
//! hex form, or a magnet URI (hex or base32 `btih`, or a v2 `btmh`). A v2 infohash
//! (64 hex digits, or a `urn:btmh:1220…` magnet) is looked up by its first 20
//! bytes, the hash the DHT uses: the key of a v2-only torrent, and the `ids_v2` key
//! of a hybrid.
//!
//! A prefix is a range scan over the infohash-keyed tables (`ids` and `ids_delta`;
//! an infohash is in exactly one of the two), so it costs a B-tree descent plus one
//! step per match, whatever the size of the database.

use crate::error::StoreError;
use crate::store::Store;
use crate::types::InfoHash;

/// Fewest hex digits accepted as a prefix.
pub const MIN_PREFIX_HEX: usize = 8;

/// What the user asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TorrentRef {
    /// A whole infohash (40 hex digits, or a magnet URI).
    Full(InfoHash),
    /// The first `nibbles` hex digits of an infohash, packed in `bytes` (an odd
    /// count leaves the low half of the last byte zero).
    Prefix { bytes: Vec<u8>, nibbles: usize },
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// RFC 4648 base32 (upper or lower case, no padding) of exactly 20 bytes.
fn base32_20(s: &str) -> Option<InfoHash> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 20];
    let (mut acc, mut bits, mut n) = (0u64, 0u32, 0usize);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = (acc << 5) | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(n)? = (acc >> bits) as u8;
            n += 1;
            acc &= (1 << bits) - 1;
        }
    }
    (n == 20).then_some(out)
}

/// Parses a torrent reference: 40 hex digits, a hex prefix of at least
/// [`MIN_PREFIX_HEX`] digits, or a magnet URI whose `xt` is `urn:btih:` followed by
/// 40 hex digits or 32 base32 characters.
pub fn parse_torrent_ref(s: &str) -> Result<TorrentRef, StoreError> {
    let s = s.trim();
    if let Some(query) = s.strip_prefix("magnet:?") {
        let mut btmh = None;
        for param in query.split('&') {
            let Some((k, v)) = param.split_once('=') else {
                continue;
            };
            if k != "xt" {
                continue;
            }
            let lower = v.to_ascii_lowercase();
            if let Some(h) = lower.strip_prefix("urn:btmh:") {
                // A multihash: 0x12 (SHA-256), 0x20 (32 bytes), the digest.
                btmh = Some(match h.strip_prefix("1220") {
                    Some(d) => crate::export::parse_v2_hex(d)
                        .map(|v2| TorrentRef::Full(crate::types::truncate_v2(&v2))),
                    None => Err(StoreError::InvalidInput(format!(
                        "magnet URI: `{h}` is not a SHA-256 multihash (1220 + 64 hex digits)"
                    ))),
                });
                continue;
            }
            let Some(h) = lower.strip_prefix("urn:btih:") else {
                continue;
            };
            let h = &v[v.len() - h.len()..];
            if h.len() == 40 {
                return crate::parse_infohash_hex(h).map(TorrentRef::Full);
            }
            if let Some(ih) = base32_20(h) {
                return Ok(TorrentRef::Full(ih));
            }
            return Err(StoreError::InvalidInput(format!(
                "magnet URI: `{h}` is neither 40 hex digits nor 32 base32 characters"
            )));
        }
        return btmh.unwrap_or_else(|| {
            Err(StoreError::InvalidInput(
                "magnet URI has no xt=urn:btih: or xt=urn:btmh: infohash".into(),
            ))
        });
    }
    if s.len() == 40 {
        return crate::parse_infohash_hex(s).map(TorrentRef::Full);
    }
    if s.len() == 64 {
        return crate::export::parse_v2_hex(s)
            .map(|v2| TorrentRef::Full(crate::types::truncate_v2(&v2)));
    }
    if s.len() > 40 {
        return Err(StoreError::InvalidInput(format!(
            "infohash `{s}` is longer than 40 hex digits (v1) but not 64 (v2)"
        )));
    }
    let mut bytes = vec![0u8; s.len().div_ceil(2)];
    for (i, c) in s.bytes().enumerate() {
        let Some(v) = hex_val(c) else {
            return Err(StoreError::InvalidInput(format!(
                "`{s}` is not an infohash, a hex prefix of one or a magnet URI"
            )));
        };
        bytes[i / 2] |= if i % 2 == 0 { v << 4 } else { v };
    }
    if s.len() < MIN_PREFIX_HEX {
        return Err(StoreError::InvalidInput(format!(
            "infohash prefix `{s}` is too short: give at least {MIN_PREFIX_HEX} hex digits"
        )));
    }
    Ok(TorrentRef::Prefix {
        bytes,
        nibbles: s.len(),
    })
}

impl Store {
    /// The stored infohashes starting with the hex prefix given as `bytes`/`nibbles`
    /// (see [`TorrentRef::Prefix`]), in order, at most `limit`.
    pub fn infohashes_with_prefix(
        &self,
        bytes: &[u8],
        nibbles: usize,
        limit: usize,
    ) -> Result<Vec<InfoHash>, StoreError> {
        let whole = &bytes[..(nibbles / 2).min(bytes.len())];
        let half = (nibbles % 2 == 1).then(|| bytes.get(nibbles / 2).copied().unwrap_or(0) >> 4);
        self.read(|txn, dbs| {
            let mut out: Vec<InfoHash> = Vec::new();
            for db in [&dbs.ids, &dbs.ids_delta, &dbs.ids_v2] {
                let iter = db
                    .prefix_iter(txn, whole)
                    .map_err(StoreError::lmdb("scanning ids"))?;
                let mut taken = 0;
                for r in iter {
                    let (k, _) = r.map_err(StoreError::lmdb("scanning ids"))?;
                    let Ok(ih) = InfoHash::try_from(k) else {
                        continue;
                    };
                    if let Some(h) = half {
                        match ih.get(whole.len()) {
                            Some(b) if b >> 4 == h => {}
                            _ => continue,
                        }
                    }
                    out.push(ih);
                    taken += 1;
                    if taken >= limit {
                        break;
                    }
                }
            }
            out.sort_unstable();
            out.truncate(limit);
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hex_prefixes_and_magnets() {
        let hex = "c9e15763f722f23e98a29decdfae341b98d53056";
        let ih = crate::parse_infohash_hex(hex).unwrap();
        assert_eq!(parse_torrent_ref(hex).unwrap(), TorrentRef::Full(ih));
        assert_eq!(
            parse_torrent_ref("C9E15763F").unwrap(),
            TorrentRef::Prefix {
                bytes: vec![0xc9, 0xe1, 0x57, 0x63, 0xf0],
                nibbles: 9
            }
        );
        assert!(parse_torrent_ref("c9e1576").is_err());
        assert!(parse_torrent_ref("c9e1576g").is_err());
        let m = format!("magnet:?xt=urn:btih:{hex}&dn=x");
        assert_eq!(parse_torrent_ref(&m).unwrap(), TorrentRef::Full(ih));
        // The same infohash in base32 (checked with `xxd -r -p | base32`).
        let b32 = "ZHQVOY7XELZD5GFCTXWN7LRUDOMNKMCW";
        assert_eq!(
            parse_torrent_ref(&format!("magnet:?dn=x&xt=urn:btih:{b32}")).unwrap(),
            TorrentRef::Full(ih)
        );
        assert_eq!(
            parse_torrent_ref(&format!("magnet:?xt=urn:btih:{}", b32.to_lowercase())).unwrap(),
            TorrentRef::Full(ih)
        );
        assert!(parse_torrent_ref("magnet:?dn=x").is_err());
        // v2: 64 hex digits, or a btmh magnet (alone or beside a btih), stand for
        // their first 20 bytes.
        let v2 = "cb4d6a3f1e2b9c8d7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b";
        let trunc = crate::parse_infohash_hex(&v2[..40]).unwrap();
        assert_eq!(parse_torrent_ref(v2).unwrap(), TorrentRef::Full(trunc));
        let m2 = format!("magnet:?xt=urn:btmh:1220{v2}&dn=x");
        assert_eq!(parse_torrent_ref(&m2).unwrap(), TorrentRef::Full(trunc));
        let hybrid = format!("magnet:?xt=urn:btmh:1220{v2}&xt=urn:btih:{hex}");
        assert_eq!(parse_torrent_ref(&hybrid).unwrap(), TorrentRef::Full(ih));
        assert!(parse_torrent_ref(&format!("magnet:?xt=urn:btmh:1114{v2}")).is_err());
        assert!(parse_torrent_ref(&v2[..50]).is_err());
        assert!(parse_torrent_ref("magnet:?xt=urn:btih:abc").is_err());
    }
}
