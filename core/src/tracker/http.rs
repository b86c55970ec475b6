//! HTTP trackers (BEP 3, compact peers BEP 23, `peers6` BEP 7, scrape by the
//! `/announce` → `/scrape` convention): the GET request bytes and a bounded parser
//! of the HTTP/1.x response and its bencoded body.
//!
//! The response is untrusted: the parser reads at most [`MAX_RESPONSE`] bytes,
//! checks every length, and returns a typed [`HttpError`]; it never panics.

use std::net::{IpAddr, SocketAddr};

use super::udp::{compact_v4, compact_v6, ScrapeCounts, MAX_PEERS};
use super::TrackerUrl;
use crate::id::InfoHash;
use crate::wire::bencode::{self, Value};

/// Most bytes of a response (head and body) read.
pub const MAX_RESPONSE: usize = 64 * 1024;
/// Longest failure reason kept.
const MAX_REASON: usize = 256;

/// Why an HTTP response is not a usable tracker answer.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HttpError {
    /// More than [`MAX_RESPONSE`] bytes.
    TooLarge,
    /// The status line or a header is not HTTP/1.x.
    BadHead,
    /// A status other than 200.
    Status(u16),
    /// The connection ended before the body did.
    Truncated,
    /// A malformed chunk in a chunked body.
    BadChunk,
    /// The body is not bencode.
    BadBencode,
    /// The body is bencode, but not a tracker's dict (a missing or mistyped field).
    BadBody,
}

/// `%XX`-encodes every byte that is not unreserved (RFC 3986).
pub fn url_encode(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

fn get_request(url: &TrackerUrl, path: &str, query: &str) -> Vec<u8> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let host = match url.host.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{}]", url.host),
        _ => url.host.clone(),
    };
    let host = if url.port == 80 {
        host
    } else {
        format!("{host}:{}", url.port)
    };
    format!(
        "GET {path}{sep}{query} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: magnetar\r\n\
         Accept-Encoding: identity\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// The announce GET request: `info_hash` and `peer_id` url-encoded, compact peers
/// asked for, nothing downloaded and one byte left (so that seeders are handed out).
pub fn announce_request(
    url: &TrackerUrl,
    info_hash: &InfoHash,
    peer_id: &[u8; 20],
    port: u16,
    num_want: u32,
) -> Vec<u8> {
    let mut q = String::from("info_hash=");
    url_encode(&info_hash.0, &mut q);
    q.push_str("&peer_id=");
    url_encode(peer_id, &mut q);
    q.push_str(&format!(
        "&port={port}&uploaded=0&downloaded=0&left=1&compact=1&numwant={num_want}"
    ));
    get_request(url, &url.path, &q)
}

/// The scrape path of an announce path, by the convention: the last `/` component
/// must start with `announce`, which becomes `scrape`. `None`: no scrape.
pub fn scrape_path(path: &str) -> Option<String> {
    let slash = path.rfind('/')?;
    let (head, last) = path.split_at(slash.checked_add(1)?);
    let rest = last.strip_prefix("announce")?;
    Some(format!("{head}scrape{rest}"))
}

/// The scrape GET request for `hashes`, when the URL has a scrape path.
pub fn scrape_request(url: &TrackerUrl, hashes: &[InfoHash]) -> Option<Vec<u8>> {
    let path = scrape_path(&url.path)?;
    let mut q = String::new();
    for (i, h) in hashes.iter().enumerate() {
        if i > 0 {
            q.push('&');
        }
        q.push_str("info_hash=");
        url_encode(&h.0, &mut q);
    }
    Some(get_request(url, &path, &q))
}

/// Where a response stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// The whole body (de-chunked).
    Body(Vec<u8>),
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses a response received so far; `eof` says the connection has ended.
pub fn parse_response(buf: &[u8], eof: bool) -> Result<Parsed, HttpError> {
    if buf.len() > MAX_RESPONSE {
        return Err(HttpError::TooLarge);
    }
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if eof {
            Err(HttpError::Truncated)
        } else {
            Ok(Parsed::Partial)
        };
    };
    let head = buf.get(..end).ok_or(HttpError::BadHead)?;
    let body = buf.get(end.saturating_add(4)..).unwrap_or(&[]);
    let head = std::str::from_utf8(head).map_err(|_| HttpError::BadHead)?;
    let mut lines = head.split("\r\n");
    let status = lines.next().ok_or(HttpError::BadHead)?;
    let mut parts = status.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::BadHead);
    }
    let code: u16 = parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or(HttpError::BadHead)?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(HttpError::BadHead)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse().map_err(|_| HttpError::BadHead)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    if code != 200 {
        return Err(HttpError::Status(code));
    }
    if chunked {
        return dechunk(body, eof);
    }
    match length {
        Some(n) if n > MAX_RESPONSE => Err(HttpError::TooLarge),
        Some(n) => match body.get(..n) {
            Some(b) => Ok(Parsed::Body(b.to_vec())),
            None if eof => Err(HttpError::Truncated),
            None => Ok(Parsed::Partial),
        },
        None if eof => Ok(Parsed::Body(body.to_vec())),
        None => Ok(Parsed::Partial),
    }
}

fn dechunk(mut b: &[u8], eof: bool) -> Result<Parsed, HttpError> {
    let more = if eof {
        Err(HttpError::Truncated)
    } else {
        Ok(Parsed::Partial)
    };
    let mut out = Vec::new();
    loop {
        let Some(nl) = find(b, b"\r\n") else {
            return more;
        };
        let line = std::str::from_utf8(b.get(..nl).ok_or(HttpError::BadChunk)?)
            .map_err(|_| HttpError::BadChunk)?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| HttpError::BadChunk)?;
        if size > MAX_RESPONSE {
            return Err(HttpError::TooLarge);
        }
        let start = nl.checked_add(2).ok_or(HttpError::BadChunk)?;
        if size == 0 {
            return Ok(Parsed::Body(out));
        }
        let stop = start.checked_add(size).ok_or(HttpError::BadChunk)?;
        let Some(chunk) = b.get(start..stop) else {
            return more;
        };
        out.extend_from_slice(chunk);
        match b.get(stop..stop.saturating_add(2)) {
            Some(b"\r\n") => {}
            Some(_) => return Err(HttpError::BadChunk),
            None => return more,
        }
        b = b.get(stop.saturating_add(2)..).unwrap_or(&[]);
    }
}

/// A decoded announce body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnnounceBody {
    /// `failure reason`: the tracker refused (the other fields are then empty).
    pub failure: Option<String>,
    /// `interval` in seconds.
    pub interval: Option<u32>,
    /// `min interval` in seconds.
    pub min_interval: Option<u32>,
    /// `complete` (seeders).
    pub complete: Option<u32>,
    /// `incomplete` (leechers).
    pub incomplete: Option<u32>,
    /// `peers` (compact or dictionary form) and `peers6`, at most [`MAX_PEERS`].
    pub peers: Vec<SocketAddr>,
}

fn int_u32(v: Option<&Value<'_>>) -> Result<Option<u32>, HttpError> {
    match v {
        None => Ok(None),
        Some(v) => {
            let i = v.as_int().ok_or(HttpError::BadBody)?;
            Ok(Some(u32::try_from(i.max(0)).unwrap_or(u32::MAX)))
        }
    }
}

fn reason(v: &Value<'_>) -> String {
    let b = v.as_bytes().unwrap_or(b"(not a string)");
    String::from_utf8_lossy(b.get(..b.len().min(MAX_REASON)).unwrap_or(&[])).into_owned()
}

/// Decodes an announce body.
pub fn decode_announce(body: &[u8]) -> Result<AnnounceBody, HttpError> {
    let v = bencode::decode(body).map_err(|_| HttpError::BadBencode)?;
    if v.as_dict().is_none() {
        return Err(HttpError::BadBody);
    }
    if let Some(f) = v.get(b"failure reason") {
        return Ok(AnnounceBody {
            failure: Some(reason(f)),
            ..AnnounceBody::default()
        });
    }
    let mut a = AnnounceBody {
        interval: int_u32(v.get(b"interval"))?,
        min_interval: int_u32(v.get(b"min interval"))?,
        complete: int_u32(v.get(b"complete"))?,
        incomplete: int_u32(v.get(b"incomplete"))?,
        ..AnnounceBody::default()
    };
    match v.get(b"peers") {
        None => {}
        Some(Value::Bytes(b)) => {
            a.peers = compact_v4(b).ok_or(HttpError::BadBody)?;
        }
        Some(Value::List(l)) => {
            for p in l.iter().take(MAX_PEERS) {
                let ip = p.get(b"ip").and_then(|x| x.as_bytes());
                let port = p.get(b"port").and_then(|x| x.as_int());
                let (Some(ip), Some(port)) = (ip, port) else {
                    return Err(HttpError::BadBody);
                };
                let ip: IpAddr = std::str::from_utf8(ip)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(HttpError::BadBody)?;
                let port = u16::try_from(port).map_err(|_| HttpError::BadBody)?;
                a.peers.push(SocketAddr::new(ip, port));
            }
        }
        Some(_) => return Err(HttpError::BadBody),
    }
    match v.get(b"peers6") {
        None => {}
        Some(Value::Bytes(b)) => {
            let six = compact_v6(b).ok_or(HttpError::BadBody)?;
            let room = MAX_PEERS.saturating_sub(a.peers.len());
            a.peers.extend(six.into_iter().take(room));
        }
        Some(_) => return Err(HttpError::BadBody),
    }
    Ok(a)
}

/// Decodes a scrape body: `files` → `info_hash` → counts; `None` when the
/// tracker did not list `ih`. A `failure reason` is `Err(Ok(reason))`.
pub fn decode_scrape(
    body: &[u8],
    ih: &InfoHash,
) -> Result<Result<Option<ScrapeCounts>, String>, HttpError> {
    let v = bencode::decode(body).map_err(|_| HttpError::BadBencode)?;
    if v.as_dict().is_none() {
        return Err(HttpError::BadBody);
    }
    if let Some(f) = v.get(b"failure reason") {
        return Ok(Err(reason(f)));
    }
    let files = v.get(b"files").ok_or(HttpError::BadBody)?;
    if files.as_dict().is_none() {
        return Err(HttpError::BadBody);
    }
    let Some(f) = files.get(&ih.0) else {
        return Ok(Ok(None));
    };
    Ok(Ok(Some(ScrapeCounts {
        complete: int_u32(f.get(b"complete"))?.unwrap_or(0),
        downloaded: int_u32(f.get(b"downloaded"))?.unwrap_or(0),
        incomplete: int_u32(f.get(b"incomplete"))?.unwrap_or(0),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> TrackerUrl {
        s.parse().unwrap()
    }

    #[test]
    fn encodes_the_announce_request() {
        let ih = InfoHash([0x12; 20]);
        let mut pid = [b'a'; 20];
        pid[0] = b' ';
        let r = announce_request(&url("http://tr.example:6969/announce"), &ih, &pid, 6881, 50);
        let s = String::from_utf8(r).unwrap();
        assert!(s.starts_with(
            "GET /announce?info_hash=%12%12%12%12%12%12%12%12%12%12%12%12%12%12%12%12%12%12%12%12\
             &peer_id=%20aaaaaaaaaaaaaaaaaaa&port=6881&uploaded=0&downloaded=0&left=1&compact=1\
             &numwant=50 HTTP/1.1\r\nHost: tr.example:6969\r\n"
        ));
        assert!(s.ends_with("\r\n\r\n"));
        // A passkey query stays, the parameters follow with `&`.
        let r = announce_request(&url("http://[::1]/a/announce?pk=1"), &ih, &pid, 1, 5);
        let s = String::from_utf8(r).unwrap();
        assert!(s.starts_with("GET /a/announce?pk=1&info_hash="), "{s}");
        assert!(s.contains("\r\nHost: [::1]\r\n"), "{s}");
    }

    #[test]
    fn scrape_convention() {
        assert_eq!(scrape_path("/announce").as_deref(), Some("/scrape"));
        assert_eq!(
            scrape_path("/x/announce.php").as_deref(),
            Some("/x/scrape.php")
        );
        assert_eq!(
            scrape_path("/announce?passkey=5").as_deref(),
            Some("/scrape?passkey=5")
        );
        assert_eq!(scrape_path("/a"), None);
        assert_eq!(scrape_path("/announce/x"), None);
        let r = scrape_request(&url("http://1.2.3.4/announce"), &[InfoHash([b'A'; 20])]);
        let s = String::from_utf8(r.unwrap()).unwrap();
        assert!(s.starts_with("GET /scrape?info_hash=AAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\n"));
        assert!(scrape_request(&url("http://1.2.3.4/tracker"), &[]).is_none());
    }

    fn resp(body: &[u8]) -> Vec<u8> {
        let mut r =
            format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        r.extend_from_slice(body);
        r
    }

    #[test]
    fn parses_lengths_chunks_and_eof() {
        let full = resp(b"de");
        for cut in 0..full.len() {
            assert_eq!(parse_response(&full[..cut], false), Ok(Parsed::Partial));
        }
        assert_eq!(
            parse_response(&full, false),
            Ok(Parsed::Body(b"de".to_vec()))
        );
        assert_eq!(
            parse_response(&full[..full.len() - 1], true),
            Err(HttpError::Truncated)
        );
        let nolen = b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nd1:ai1ee";
        assert_eq!(parse_response(nolen, false), Ok(Parsed::Partial));
        assert_eq!(
            parse_response(nolen, true),
            Ok(Parsed::Body(b"d1:ai1ee".to_vec()))
        );
        let ch = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nd1:\r\n5;x=1\r\nai1ee\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(ch, false),
            Ok(Parsed::Body(b"d1:ai1ee".to_vec()))
        );
        for cut in 40..ch.len() - 5 {
            assert_eq!(
                parse_response(&ch[..cut], false),
                Ok(Parsed::Partial),
                "{cut}"
            );
        }
    }

    #[test]
    fn malformed_responses_are_typed_errors() {
        assert_eq!(
            parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n", false),
            Err(HttpError::Status(404))
        );
        assert_eq!(
            parse_response(b"SSH-2.0\r\n\r\n", false),
            Err(HttpError::BadHead)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nnocolon\r\n\r\n", false),
            Err(HttpError::BadHead)
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false),
            Err(HttpError::BadHead)
        );
        assert_eq!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
                false
            ),
            Err(HttpError::TooLarge)
        );
        assert_eq!(
            parse_response(&vec![b'a'; MAX_RESPONSE + 1], false),
            Err(HttpError::TooLarge)
        );
        assert_eq!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                false
            ),
            Err(HttpError::BadChunk)
        );
        assert_eq!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc",
                false
            ),
            Err(HttpError::BadChunk)
        );
        assert_eq!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n",
                false
            ),
            Err(HttpError::BadChunk)
        );
    }

    #[test]
    fn decodes_announce_bodies() {
        let b = b"d8:completei5e10:incompletei3e8:intervali1800e12:min intervali60e\
                  5:peers12:\x0a\x00\x00\x01\x1a\xe1\x0a\x00\x00\x02\x00\x50\
                  6:peers618:\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x01\xbbe";
        let a = decode_announce(b).unwrap();
        assert_eq!(a.interval, Some(1800));
        assert_eq!(a.min_interval, Some(60));
        assert_eq!((a.complete, a.incomplete), (Some(5), Some(3)));
        let want: Vec<SocketAddr> = vec![
            "10.0.0.1:6881".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
            "[2001:db8::1]:443".parse().unwrap(),
        ];
        assert_eq!(a.peers, want);
        let d = b"d8:intervali60e5:peersld2:ip8:10.0.0.37:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti7eed2:ip3:::14:porti8eeee";
        let a = decode_announce(d).unwrap();
        assert_eq!(
            a.peers,
            vec![
                "10.0.0.3:7".parse::<SocketAddr>().unwrap(),
                "[::1]:8".parse().unwrap()
            ]
        );
        let f = decode_announce(b"d14:failure reason9:forbiddene").unwrap();
        assert_eq!(f.failure.as_deref(), Some("forbidden"));
        // Negative or huge numbers are clamped, not trusted.
        let n = decode_announce(b"d8:intervali-5e8:completei99999999999ee").unwrap();
        assert_eq!((n.interval, n.complete), (Some(0), Some(u32::MAX)));
    }

    #[test]
    fn malformed_bodies_are_typed_errors() {
        for (b, e) in [
            (&b"d8:intervali1e"[..], HttpError::BadBencode),
            (b"<html>", HttpError::BadBencode),
            (b"li1ee", HttpError::BadBody),
            (b"d8:interval1:xe", HttpError::BadBody),
            (b"d5:peers5:abcdee", HttpError::BadBody),
            (b"d5:peersi1ee", HttpError::BadBody),
            (b"d5:peersld2:ip3:abc4:porti1eeee", HttpError::BadBody),
            (
                b"d5:peersld2:ip7:1.2.3.44:porti70000eeee",
                HttpError::BadBody,
            ),
            (b"d5:peersld4:porti1eeee", HttpError::BadBody),
            (b"d6:peers63:abce", HttpError::BadBody),
        ] {
            assert_eq!(decode_announce(b), Err(e), "{}", String::from_utf8_lossy(b));
        }
    }

    #[test]
    fn decodes_scrape_bodies() {
        let ih = InfoHash([b'A'; 20]);
        let b =
            b"d5:filesd20:AAAAAAAAAAAAAAAAAAAAd8:completei4e10:downloadedi9e10:incompletei2eeee";
        assert_eq!(
            decode_scrape(b, &ih),
            Ok(Ok(Some(ScrapeCounts {
                complete: 4,
                downloaded: 9,
                incomplete: 2
            })))
        );
        assert_eq!(decode_scrape(b, &InfoHash([b'B'; 20])), Ok(Ok(None)));
        assert_eq!(
            decode_scrape(b"d14:failure reason2:noe", &ih),
            Ok(Err("no".into()))
        );
        assert_eq!(decode_scrape(b"de", &ih), Err(HttpError::BadBody));
        assert_eq!(decode_scrape(b"d5:filesi1ee", &ih), Err(HttpError::BadBody));
        assert_eq!(decode_scrape(b"x", &ih), Err(HttpError::BadBencode));
    }
}
