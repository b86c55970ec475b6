//! Malformed input mapped to its error, the nesting limit, and lenient decoding.

use super::*;

// ---- Malformed input ------------------------------------------------------------------

#[test]
fn malformed_cases_map_to_their_errors() {
    use DecodeError::*;
    const PING_A: &[u8] = b"d1:ad2:id20:abcdefghij0123456789e";
    let cases: &[(&[u8], DecodeError)] = &[
        (b"", Bencode),
        (b"d", Bencode),
        (b"d1:t2:aa", Bencode),
        (b"d1:t2:aa1:y1:qee", TrailingBytes),
        (b"d1:t2:aa1:y1:qei0e", TrailingBytes),
        (b"d1:t2:aa1:y1:qexyz", TrailingBytes),
        (b"d1:t3:aa1:y1:qe", Bencode),
        (b"di1e1:ae", Bencode),
        (b"d1:te", Bencode),
        (b"d1:ti01ee", Bencode),
        (b"d1:ti-0ee", Bencode),
        (b"d01:t1:xe", Bencode),
        (b"x", Bencode),
        (b"le", NotADict),
        (b"i1e", NotADict),
        (b"4:spam", NotADict),
        (b"d1:y1:q1:t2:aae", UnsortedKeys),
        (b"d1:t2:aa1:t2:aae", UnsortedKeys),
        (b"d1:rd2:id20:abcdefghij01234567891:ai1eee", UnsortedKeys),
        (b"d1:t2:aae", BadMessageType),
        (b"d1:t2:aa1:y1:xe", BadMessageType),
        (b"d1:t2:aa1:yi1ee", WrongType("y")),
        (b"d1:y1:qe", Missing("t")),
        (b"d1:ti5e1:y1:qe", WrongType("t")),
        (b"d1:t2:aa1:vi1e1:y1:ee", WrongType("v")),
        (b"d1:t2:aa1:y1:qe", Missing("q")),
        (b"d1:q4:ping1:t2:aa1:y1:qe", Missing("a")),
        (b"d1:ale1:q4:ping1:t2:aa1:y1:qe", WrongType("a")),
        (b"d1:ade1:q4:ping1:t2:aa1:y1:qe", Missing("id")),
        (b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe", BadLength("id")),
        (b"d1:ad2:idi1ee1:q4:ping1:t2:aa1:y1:qe", WrongType("id")),
        (b"d1:ad2:id20:abcdefghij0123456789e1:qi1e1:t2:aa1:y1:qe", WrongType("q")),
        (b"d1:ad2:id20:abcdefghij0123456789e1:q9:find_node1:t2:aa1:y1:qe", Missing("target")),
        (b"d1:ad2:id20:abcdefghij01234567896:target19:mnopqrstuvwxyz12345e1:q9:find_node1:t2:aa1:y1:qe", BadLength("target")),
        (b"d1:ad2:id20:abcdefghij01234567896:targetli1eee1:q9:find_node1:t2:aa1:y1:qe", WrongType("target")),
        (b"d1:ad2:id20:abcdefghij0123456789e1:q9:get_peers1:t2:aa1:y1:qe", Missing("info_hash")),
        (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234566:scrapei2ee1:q9:get_peers1:t2:aa1:y1:qe", OutOfRange("scrape")),
        (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234566:noseed1:1e1:q9:get_peers1:t2:aa1:y1:qe", WrongType("noseed")),
        (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti65536e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe", OutOfRange("port")),
        (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti-1e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe", OutOfRange("port")),
        (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti99999999999999999999e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe", OutOfRange("port")),
        (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:port4:6881e1:q13:announce_peer1:t2:aa1:y1:qe", WrongType("port")),
        (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti1ee1:q13:announce_peer1:t2:aa1:y1:qe", Missing("token")),
        (b"d1:ad2:id20:abcdefghij012345678912:implied_porti7e9:info_hash20:mnopqrstuvwxyz1234564:porti1e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe", OutOfRange("implied_port")),
        (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti1e4:seedi2e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe", OutOfRange("seed")),
        (b"d1:ad2:id20:abcdefghij01234567894:wanti4ee1:q4:ping1:t2:aa1:y1:qe", WrongType("want")),
        (b"d1:ad2:id20:abcdefghij01234567894:wantli4eee1:q4:ping1:t2:aa1:y1:qe", WrongType("want")),
        (b"d2:ip5:abcde1:rd2:id20:abcdefghij0123456789e1:t2:aa1:y1:re", BadLength("ip")),
        (b"d2:ipi1e1:rd2:id20:abcdefghij0123456789e1:t2:aa1:y1:re", WrongType("ip")),
        (b"d1:rd2:id20:abcdefghij0123456789e2:roi2e1:t2:aa1:y1:re", OutOfRange("ro")),
        (b"d1:rd2:id20:abcdefghij0123456789e2:ro1:11:t2:aa1:y1:re", WrongType("ro")),
        (b"d1:t2:aa1:y1:re", Missing("r")),
        (b"d1:r4:abcd1:t2:aa1:y1:re", WrongType("r")),
        (b"d1:rde1:t2:aa1:y1:re", Missing("id")),
        (b"d1:rd2:id20:abcdefghij01234567895:nodes25:abcdefghij0123456789abcdee1:t2:aa1:y1:re", BadLength("nodes")),
        (b"d1:rd2:id20:abcdefghij01234567896:nodes626:abcdefghij0123456789abcdefe1:t2:aa1:y1:re", BadLength("nodes6")),
        (b"d1:rd2:id20:abcdefghij01234567897:samples19:abcdefghij012345678e1:t2:aa1:y1:re", BadLength("samples")),
        (b"d1:rd2:id20:abcdefghij01234567897:samplesi0ee1:t2:aa1:y1:re", WrongType("samples")),
        (b"d1:rd2:id20:abcdefghij01234567896:valuesl5:abcdeee1:t2:aa1:y1:re", BadLength("values")),
        (b"d1:rd2:id20:abcdefghij01234567896:valuesli1eee1:t2:aa1:y1:re", WrongType("values")),
        (b"d1:rd2:id20:abcdefghij01234567896:values6:abcdefe1:t2:aa1:y1:re", WrongType("values")),
        (b"d1:rd2:id20:abcdefghij01234567893:num1:1e1:t2:aa1:y1:re", WrongType("num")),
        (b"d1:rd2:id20:abcdefghij01234567898:intervali9223372036854775808ee1:t2:aa1:y1:re", OutOfRange("interval")),
        (b"d1:rd2:id20:abcdefghij01234567895:tokeni1ee1:t2:aa1:y1:re", WrongType("token")),
        (b"d1:t2:aa1:y1:ee", Missing("e")),
        (b"d1:e3:bad1:t2:aa1:y1:ee", WrongType("e")),
        (b"d1:eli201ee1:t2:aa1:y1:ee", BadLength("e")),
        (b"d1:ele1:t2:aa1:y1:ee", BadLength("e")),
        (b"d1:el3:abci201ee1:t2:aa1:y1:ee", WrongType("e")),
        (b"d1:eli99999999999999999999e1:xe1:t2:aa1:y1:ee", OutOfRange("e")),
    ];
    for (buf, want) in cases {
        assert_eq!(
            decode(buf),
            Err(*want),
            "input {:?}",
            String::from_utf8_lossy(buf)
        );
        // The lenient decoder agrees on everything except key order.
        if *want != UnsortedKeys {
            assert_eq!(
                decode_lenient(buf).map(|l| l.message),
                Err(*want),
                "lenient, input {:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }
    // Keep the PING_A prefix honest.
    let mut ok = PING_A.to_vec();
    ok.extend_from_slice(b"1:q4:ping1:t2:aa1:y1:qe");
    assert!(decode(&ok).is_ok());
}

#[test]
fn nesting_is_limited() {
    let mut deep = b"d1:t2:aa1:y1:r1:z".to_vec();
    deep.extend(std::iter::repeat_n(b'l', 10_000));
    deep.extend(std::iter::repeat_n(b'e', 10_000));
    deep.push(b'e');
    assert_eq!(decode(&deep), Err(DecodeError::TooDeep));
    // Nesting within the limit is skipped fine (top dict + 14 lists = depth 15).
    let mut ok = b"d1:rd2:id20:abcdefghij0123456789e1:t2:aa1:y1:r1:z".to_vec();
    ok.extend(std::iter::repeat_n(b'l', MAX_DEPTH - 2));
    ok.extend(std::iter::repeat_n(b'e', MAX_DEPTH - 2));
    ok.push(b'e');
    assert!(decode(&ok).is_ok(), "{:?}", decode(&ok));
    let mut lenient_deep = b"d1:z1:x1:a".to_vec(); // unsorted: goes the lenient way
    lenient_deep.extend(std::iter::repeat_n(b'l', 10_000));
    lenient_deep.extend(std::iter::repeat_n(b'e', 10_000));
    lenient_deep.push(b'e');
    assert!(matches!(
        decode_lenient(&lenient_deep),
        Err(DecodeError::TooDeep | DecodeError::UnsortedKeys)
    ));
    let mut t = LenientTokens::new(&lenient_deep);
    let mut last = Ok(None);
    for _ in 0..100 {
        last = t.next_tok();
        if last.is_err() {
            break;
        }
    }
    assert_eq!(last, Err(DecodeError::TooDeep));
}

/// bendy 0.6 exposes no error kinds, so `classify` matches its texts: pin them.
#[test]
fn bendy_error_texts_are_recognised() {
    assert_eq!(decode(b"d1:b0:1:a0:e"), Err(DecodeError::UnsortedKeys));
    assert_eq!(decode(b"d1:a0:1:a0:e"), Err(DecodeError::UnsortedKeys));
    let mut deep = b"d1:a".to_vec();
    deep.extend(std::iter::repeat_n(b'l', MAX_DEPTH));
    assert_eq!(decode(&deep), Err(DecodeError::TooDeep));
}

// ---- Lenient decoding -----------------------------------------------------------------

#[test]
fn lenient_accepts_unsorted_keys_and_flags_them() {
    // `ip` and `v` after `y`, `id` after `token` inside `r`.
    let buf = b"d1:rd5:token2:tk2:id20:abcdefghij0123456789e1:t2:aa1:y1:r1:v4:LT\x01\x002:ip6:\x01\x02\x03\x04\x1a\xe1e";
    assert_eq!(decode(buf), Err(DecodeError::UnsortedKeys));
    let l = decode_lenient(buf).unwrap();
    assert!(l.unsorted_keys);
    assert_eq!(l.message.ip, Some(v4([1, 2, 3, 4], 6881)));
    assert_eq!(l.message.version, Some(&b"LT\x01\x00"[..]));
    let Body::Response(r) = &l.message.body else {
        panic!()
    };
    assert_eq!(r.id, id(b"abcdefghij0123456789"));
    assert_eq!(r.token, Some(&b"tk"[..]));
    // Re-encoding sorts the keys; the strict decoder then takes it.
    let out = roundtrip(&l.message);
    assert_eq!(decode(&out), Ok(l.message.clone()));

    // Sorted input is not flagged.
    let l = decode_lenient(b"d1:rd2:id20:abcdefghij0123456789e1:t2:aa1:y1:re").unwrap();
    assert!(!l.unsorted_keys);

    // A known key twice is refused, an unknown one is tolerated.
    assert_eq!(
        decode_lenient(b"d1:t2:aa1:rd2:id20:abcdefghij0123456789e1:y1:r1:t2:bbe"),
        Err(DecodeError::DuplicateKey("t"))
    );
    assert_eq!(
        decode_lenient(
            b"d1:rd2:id20:abcdefghij01234567892:id20:abcdefghij0123456789e1:t2:aa1:y1:re"
        ),
        Err(DecodeError::DuplicateKey("id"))
    );
    let l = decode_lenient(b"d1:t2:aa1:x0:1:rd2:id20:abcdefghij0123456789e1:x0:1:y1:re").unwrap();
    assert!(l.unsorted_keys);
    // Still a message error where the strict path would find one after the key order.
    assert_eq!(
        decode_lenient(b"d1:y1:q1:t2:aae"),
        Err(DecodeError::Missing("q"))
    );
}
