//! Differential tests: our tokenizer against bendy's, and the direct decoder against
//! the token-stream reference on random and mutated messages.

use super::*;

// ---- Our tokenizer against bendy's --------------------------------------------------

/// Tokens from a source until it ends or fails (at most 200).
fn tokens_of<'a, S: Source<'a>>(mut src: S) -> (Vec<Token<'a>>, Option<DecodeError>, S) {
    let mut out = Vec::new();
    for _ in 0..200 {
        match src.next_tok() {
            Ok(Some(t)) => out.push(t),
            Ok(None) => return (out, None, src),
            Err(e) => return (out, Some(e), src),
        }
    }
    (out, None, src)
}

/// Differential test: on bencode-ish input, `LenientTokens` yields exactly bendy's tokens
/// and fails at the same place for the same reason, except that it goes on past
/// unsorted keys (and flags them).
#[test]
fn lenient_tokenizer_matches_bendy() {
    const ATOMS: &[&[u8]] = &[
        b"d", b"l", b"e", b"i", b"-", b"0", b"1", b"9", b":", b"x", b"1:a", b"1:b", b"2:id",
        b"i5e", b"i-3e", b"i0e", b"01:", b"3:", b"ll", b"dd", b"ee", b"d1:a", b"1:ai1e",
    ];
    fn prop(picks: Vec<u8>) -> bool {
        let buf: Vec<u8> = picks
            .iter()
            .flat_map(|&p| ATOMS[usize::from(p) % ATOMS.len()].iter().copied())
            .collect();
        let (bt, be, _) = tokens_of(Strict(
            Decoder::new(&buf).with_max_depth(MAX_DEPTH).tokens(),
        ));
        let (lt, le, l) = tokens_of(LenientTokens::new(&buf));
        match be {
            Some(DecodeError::UnsortedKeys) => {
                // Same tokens up to bendy's refusal, and we flagged it.
                lt.len() >= bt.len() && lt[..bt.len()] == bt[..] && l.unsorted
            }
            other => bt == lt && other == le && !l.unsorted,
        }
    }
    quickcheck::QuickCheck::new()
        .tests(20_000)
        .quickcheck(prop as fn(Vec<u8>) -> bool);
}

// ---- The direct decoder against the token-stream reference ---------------------------

/// splitmix64: a small deterministic generator for the inputs below.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 0
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
    fn id(&mut self) -> [u8; 20] {
        std::array::from_fn(|_| self.next() as u8)
    }
    fn addr(&mut self) -> SocketAddr {
        let port = self.next() as u16;
        if self.below(4) == 0 {
            let oct: [u8; 16] = std::array::from_fn(|_| self.next() as u8);
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(oct), port, 0, 0))
        } else {
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(self.next() as u32), port))
        }
    }
}

/// Bencode fragments and KRPC keys that mutations splice in.
const ATOMS: &[&[u8]] = &[
    b"d",
    b"l",
    b"e",
    b"i",
    b"-",
    b"0",
    b"1",
    b"9",
    b":",
    b"x",
    b"1:a",
    b"1:b",
    b"2:id",
    b"i5e",
    b"i-3e",
    b"i0e",
    b"01:",
    b"3:",
    b"ll",
    b"dd",
    b"ee",
    b"d1:a",
    b"1:ai1e",
    b"1:t",
    b"1:y",
    b"1:q",
    b"1:r",
    b"1:e",
    b"1:v",
    b"2:ip",
    b"2:ro",
    b"1:z",
    b"0:",
    b"4:want",
    b"2:n4",
    b"2:n6",
    b"5:nodes",
    b"6:nodes6",
    b"6:values",
    b"5:token",
    b"7:samples",
    b"3:num",
    b"8:interval",
    b"4:BFsd",
    b"4:BFpe",
    b"6:target",
    b"4:port",
    b"9:info_hash",
    b"12:implied_port",
    b"4:seed",
    b"6:scrape",
    b"6:noseed",
    b"4:ping",
    b"9:get_peers",
    b"13:announce_peer",
    b"9:find_node",
    b"17:sample_infohashes",
    b"20:abcdefghij0123456789",
    b"6:\x01\x02\x03\x04\x1a\xe1",
    b"i1e",
    b"i2e",
    b"i65536e",
    b"i99999999999999999999e",
    b"i-0e",
    b"i01e",
    b"le",
    b"de",
    b"lle",
    b"lli1eee",
];

/// A random valid message, encoded.
fn random_message(rng: &mut Mix) -> Vec<u8> {
    let tid = rng.bytes(4);
    let version = rng.bytes(5);
    let token = rng.bytes(10);
    let method = rng.bytes(6);
    let message = rng.bytes(12);
    let nodes: Vec<u8> = (0..rng.below(4) * 26).map(|_| rng.next() as u8).collect();
    let nodes6: Vec<u8> = (0..rng.below(3) * 38).map(|_| rng.next() as u8).collect();
    let samples: Vec<u8> = (0..rng.below(4) * 20).map(|_| rng.next() as u8).collect();
    let bf = [0x5au8; 256];
    let opt = |rng: &mut Mix| rng.below(3) != 0;
    let body = match rng.below(3) {
        0 => {
            let ih = InfoHash(rng.id());
            let target = NodeId(rng.id());
            let kind = match rng.below(6) {
                0 => QueryKind::Ping,
                1 => QueryKind::FindNode { target },
                2 => QueryKind::GetPeers {
                    info_hash: ih,
                    scrape: rng.coin(),
                    noseed: rng.coin(),
                },
                3 => QueryKind::AnnouncePeer {
                    info_hash: ih,
                    port: rng.next() as u16,
                    implied_port: rng.coin(),
                    token: &token,
                    seed: rng.coin().then(|| rng.coin()),
                },
                4 => QueryKind::SampleInfohashes { target },
                _ => QueryKind::Unknown {
                    method: &method,
                    target: rng.coin().then_some(target),
                    info_hash: rng.coin().then_some(ih),
                },
            };
            let want = rng.coin().then(|| Want {
                n4: rng.coin(),
                n6: rng.coin(),
            });
            Body::Query(Query {
                id: NodeId(rng.id()),
                want,
                kind,
            })
        }
        1 => Body::Response(Response {
            id: NodeId(rng.id()),
            nodes: opt(rng).then(|| CompactNodesV4::new(&nodes)).flatten(),
            nodes6: opt(rng).then(|| CompactNodesV6::new(&nodes6)).flatten(),
            values: opt(rng).then(|| (0..rng.below(5)).map(|_| rng.addr()).collect()),
            token: opt(rng).then_some(&token[..]),
            samples: opt(rng).then(|| Samples::new(&samples)).flatten(),
            num: opt(rng).then(|| rng.next() as i64),
            interval: opt(rng).then(|| rng.next() as i64 >> rng.below(64)),
            bf_seeds: (rng.below(6) == 0).then_some(&bf),
            bf_peers: (rng.below(6) == 0).then_some(&bf),
        }),
        _ => Body::Error(KrpcError {
            code: rng.next() as i64 >> rng.below(64),
            message: &message,
        }),
    };
    let m = Message {
        tid: &tid,
        version: rng.coin().then_some(&version[..]),
        ip: rng.coin().then(|| rng.addr()),
        read_only: rng.coin(),
        body,
    };
    let mut out = Vec::new();
    encode(&m, &mut out);
    out
}

/// Mutates `buf` in place: byte changes, deletions, duplications, splices of atoms.
fn mutate(rng: &mut Mix, buf: &mut Vec<u8>) {
    for _ in 0..rng.below(4) {
        let at = rng.below(buf.len() + 1);
        match rng.below(6) {
            0 if at < buf.len() => buf[at] = rng.next() as u8,
            1 if at < buf.len() => buf[at] = b"dlei019:-x"[rng.below(10)],
            2 => {
                let end = (at + rng.below(8)).min(buf.len());
                buf.drain(at..end);
            }
            3 => {
                let end = (at + rng.below(24)).min(buf.len());
                let copy = buf[at..end].to_vec();
                let to = rng.below(buf.len() + 1);
                buf.splice(to..to, copy);
            }
            4 => buf.truncate(at),
            _ => {
                let atom = ATOMS[rng.below(ATOMS.len())];
                buf.splice(at..at, atom.iter().copied());
            }
        }
    }
}

/// Values that replace a value of a valid message: strings of the lengths KRPC checks,
/// integers at the edges of its ranges, containers of the wrong shape.
const VALUES: &[&[u8]] = &[
    b"0:",
    b"1:x",
    b"1:q",
    b"1:r",
    b"1:e",
    b"2:n4",
    b"5:abcde",
    b"6:\x01\x02\x03\x04\x1a\xe1",
    b"18:abcdefghijabcdefgh",
    b"19:abcdefghij012345678",
    b"20:abcdefghij0123456789",
    b"26:abcdefghij0123456789abcdef",
    b"i0e",
    b"i1e",
    b"i2e",
    b"i-1e",
    b"i65535e",
    b"i65536e",
    b"i9223372036854775807e",
    b"i99999999999999999999e",
    b"le",
    b"de",
    b"l2:n4e",
    b"l2:n42:n6e",
    b"li1ee",
    b"l6:\x01\x02\x03\x04\x1a\xe1e",
    b"l5:abcdee",
    b"li201e3:msge",
    b"l3:msgi201ee",
    b"li99999999999999999999e0:e",
    b"d1:ai1ee",
];

/// The spans of every value and key of a valid bencoded `buf`, in order.
fn spans(buf: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    // Open containers: their start offsets.
    let mut open = Vec::new();
    let mut p = 0;
    while p < buf.len() {
        match buf[p] {
            b'd' | b'l' => {
                open.push(p);
                p += 1;
            }
            b'e' => {
                p += 1;
                if let Some(start) = open.pop() {
                    out.push((start, p));
                }
            }
            b'i' => {
                let end = p + buf[p..].iter().position(|&c| c == b'e').unwrap() + 1;
                out.push((p, end));
                p = end;
            }
            _ => {
                let colon = p + buf[p..].iter().position(|&c| c == b':').unwrap();
                let len: usize = std::str::from_utf8(&buf[p..colon])
                    .unwrap()
                    .parse()
                    .unwrap();
                out.push((p, colon + 1 + len));
                p = colon + 1 + len;
            }
        }
    }
    out
}

/// Replaces one value or key of the valid `buf` by one of [`VALUES`] or [`ATOMS`].
fn replace_value(rng: &mut Mix, buf: &mut Vec<u8>) {
    let spans = spans(buf);
    if spans.is_empty() {
        return;
    }
    let (start, end) = spans[rng.below(spans.len())];
    let with = if rng.below(4) == 0 {
        ATOMS[rng.below(ATOMS.len())]
    } else {
        VALUES[rng.below(VALUES.len())]
    };
    buf.splice(start..end, with.iter().copied());
}

/// A random input: a valid message, often mutated, or a soup of atoms.
fn random_input(rng: &mut Mix) -> Vec<u8> {
    if rng.below(8) == 0 {
        return (0..rng.below(40))
            .flat_map(|_| ATOMS[rng.below(ATOMS.len())].iter().copied())
            .collect();
    }
    let mut buf = random_message(rng);
    match rng.below(4) {
        0 => {}
        1 => mutate(rng, &mut buf),
        _ => {
            for _ in 0..1 + rng.below(2) {
                replace_value(rng, &mut buf);
                if decode_bendy(&buf).is_err() {
                    break;
                }
            }
        }
    }
    buf
}

/// The direct decoder against the reference: the same message or the same error, and
/// bendy accepts exactly what it accepts.
fn agrees(buf: &[u8]) -> Result<(), String> {
    let fast = decode(buf);
    let reference = decode_reference(buf);
    if fast != reference {
        return Err(format!("fast {fast:?} vs reference {reference:?}"));
    }
    let bendy = decode_bendy(buf);
    if fast.is_ok() != bendy.is_ok() || (fast.is_ok() && fast != bendy) {
        return Err(format!("fast {fast:?} vs bendy {bendy:?}"));
    }
    Ok(())
}

#[test]
fn decode_matches_reference() {
    fn prop(seed: u64) -> quickcheck::TestResult {
        let buf = random_input(&mut Mix(seed));
        match agrees(&buf) {
            Ok(()) => quickcheck::TestResult::passed(),
            Err(e) => {
                quickcheck::TestResult::error(format!("{e} on {:?}", String::from_utf8_lossy(&buf)))
            }
        }
    }
    quickcheck::QuickCheck::new()
        .tests(20_000)
        .quickcheck(prop as fn(u64) -> quickcheck::TestResult);
}

/// The same comparison over a fixed stream of inputs, checking that the inputs reach
/// every outcome: accepted messages of each kind and each error of the decoder.
#[test]
fn decode_matches_reference_on_every_outcome() {
    use std::collections::BTreeMap;
    let mut rng = Mix(6);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..40_000 {
        let buf = random_input(&mut rng);
        if let Err(e) = agrees(&buf) {
            panic!("input {i}: {e} on {:?}", String::from_utf8_lossy(&buf));
        }
        let outcome = match decode(&buf) {
            Ok(m) => match m.body {
                Body::Query(_) => "query".to_string(),
                Body::Response(_) => "response".to_string(),
                Body::Error(_) => "error".to_string(),
            },
            Err(e) => format!("{e:?}")
                .split('(')
                .next()
                .unwrap_or_default()
                .to_string(),
        };
        *seen.entry(outcome).or_default() += 1;
    }
    for want in [
        "query",
        "response",
        "error",
        "Bencode",
        "UnsortedKeys",
        "TrailingBytes",
        "NotADict",
        "BadMessageType",
        "Missing",
        "WrongType",
        "BadLength",
        "OutOfRange",
    ] {
        assert!(seen.get(want).is_some_and(|&n| n >= 10), "{want}: {seen:?}");
    }
}

/// Nesting: the direct decoder refuses and accepts depths exactly as the reference.
#[test]
fn decode_matches_reference_on_nesting() {
    for depth in 0..=MAX_DEPTH + 2 {
        for open in [&b"l"[..], b"d1:k", b"ld1:k"] {
            let mut buf = b"d1:rd2:id20:abcdefghij0123456789e1:t2:aa1:y1:r1:z".to_vec();
            for _ in 0..depth {
                buf.extend_from_slice(open);
            }
            buf.extend_from_slice(b"i1e");
            buf.extend(std::iter::repeat_n(b'e', depth * open.len().min(2)));
            buf.push(b'e');
            agrees(&buf).unwrap();
        }
    }
}
