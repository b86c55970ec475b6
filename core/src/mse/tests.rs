//! Known answers (from `core/tests/fixtures/mse/gen.py`, an independent Python
//! implementation) and the two sides driven against each other.

use super::crypto::{self, Rc4Stream, KEY_LEN, PRIME};
use super::*;

const VECTORS: &str = include_str!("../../tests/fixtures/mse/vectors.txt");

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The vector sets: name → bytes, one map per `# set` block.
fn sets() -> Vec<std::collections::BTreeMap<String, Vec<u8>>> {
    let mut out = Vec::new();
    for line in VECTORS.lines() {
        if line.starts_with("# set") {
            out.push(std::collections::BTreeMap::new());
        } else if let (Some(m), Some((k, v))) = (out.last_mut(), line.split_once(' ')) {
            if !line.starts_with('#') {
                m.insert(k.to_owned(), unhex(v));
            }
        }
    }
    out
}

fn arr<const N: usize>(v: &[u8]) -> [u8; N] {
    v.try_into().unwrap()
}

#[test]
fn known_answers_dh_hashes_keys_and_rc4() {
    let sets = sets();
    assert_eq!(sets.len(), 2);
    for v in sets {
        let xa: [u8; 20] = arr(&v["xa"]);
        let xb: [u8; 20] = arr(&v["xb"]);
        let skey: [u8; 20] = arr(&v["skey"]);
        let ya = crypto::public_key(&xa);
        let yb = crypto::public_key(&xb);
        assert_eq!(ya.to_vec(), v["ya"]);
        assert_eq!(yb.to_vec(), v["yb"]);
        let s = crypto::shared_secret(&yb, &xa).unwrap();
        assert_eq!(s.to_vec(), v["s"]);
        assert_eq!(crypto::shared_secret(&ya, &xb).unwrap(), s);
        assert_eq!(crypto::req1(&s).to_vec(), v["req1"]);
        assert_eq!(crypto::req2_xor_req3(&skey, &s).to_vec(), v["req2xor3"]);
        let ka = crypto::key_a(&s, &skey);
        let kb = crypto::key_b(&s, &skey);
        assert_eq!(ka.to_vec(), v["keya"]);
        assert_eq!(kb.to_vec(), v["keyb"]);
        for (k, name) in [(ka, "rc4a"), (kb, "rc4b")] {
            let mut ks = vec![0u8; 64];
            Rc4Stream::new(&k).apply(&mut ks);
            assert_eq!(ks, v[name], "{name}");
        }
    }
}

#[test]
fn second_vector_secret_has_a_leading_zero_byte() {
    // Guards the fixture: the 96-byte padding is really exercised.
    let s = &sets()[1]["s"];
    assert_eq!(s.len(), KEY_LEN);
    assert_eq!(s[0], 0);
}

#[test]
fn public_key_checks() {
    let mut y = [0u8; KEY_LEN];
    assert_eq!(crypto::check_public(&y), Err(KeyFault::Zero));
    y[KEY_LEN - 1] = 1;
    assert_eq!(crypto::check_public(&y), Err(KeyFault::One));
    let mut pm1 = PRIME;
    pm1[KEY_LEN - 1] -= 1;
    assert_eq!(crypto::check_public(&pm1), Err(KeyFault::PMinusOne));
    assert_eq!(crypto::check_public(&PRIME), Err(KeyFault::OutOfRange));
    assert_eq!(
        crypto::check_public(&[0xFF; KEY_LEN]),
        Err(KeyFault::OutOfRange)
    );
    y[KEY_LEN - 1] = 2;
    assert_eq!(crypto::check_public(&y), Ok(()));
    pm1[KEY_LEN - 1] -= 1;
    assert_eq!(crypto::check_public(&pm1), Ok(()));
}

const IH: [u8; 20] = [7; 20];

fn cfg(allowed: u32, prefer_rc4: bool) -> MseConfig {
    MseConfig {
        allowed,
        prefer_rc4,
        ..MseConfig::default()
    }
}

/// Moves bytes between the two sides, `chunk` bytes at a time, until neither
/// has anything to send (bounded). Returns what each side received as payload.
fn pump(a: &mut Mse, b: &mut Mse, chunk: usize) -> (Vec<u8>, Vec<u8>) {
    let (mut pa, mut pb) = (Vec::new(), Vec::new());
    for _ in 0..10_000 {
        let oa = a.take_output();
        let ob = b.take_output();
        if oa.is_empty() && ob.is_empty() {
            break;
        }
        for c in oa.chunks(chunk) {
            let _ = b.feed(c);
        }
        for c in ob.chunks(chunk) {
            let _ = a.feed(c);
        }
        pa.extend(a.take_payload());
        pb.extend(b.take_payload());
    }
    (pa, pb)
}

fn handshake_bytes() -> Vec<u8> {
    let mut h = vec![19u8];
    h.extend_from_slice(b"BitTorrent protocol");
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&IH);
    h.extend_from_slice(&[9; 20]);
    h
}

fn run_pair(
    a_allowed: u32,
    b_allowed: u32,
    prefer_rc4: bool,
    seed: u64,
    chunk: usize,
) -> (Mse, Mse, Vec<u8>, Vec<u8>) {
    let mut rng = Rng::new(seed);
    let mut a = Mse::initiator(cfg(a_allowed, true), IH, &mut rng.child(1));
    let mut b = Mse::responder(
        cfg(b_allowed, prefer_rc4),
        vec![[1; 20], IH],
        &mut rng.child(2),
    );
    let hs = handshake_bytes();
    a.send(&hs).unwrap();
    a.send(b"after the handshake").unwrap();
    let (pa, pb) = pump(&mut a, &mut b, chunk);
    let mut pa = pa;
    if b.state() != MseState::Handshaking {
        let _ = b.send(b"answer");
        let (x, _) = pump(&mut a, &mut b, chunk);
        pa.extend(x);
    }
    let _ = rng.next_u64();
    (a, b, pa, pb)
}

#[test]
fn pair_agrees_on_rc4_in_any_chunking() {
    for (seed, chunk) in [(1, 1), (2, 7), (3, 100), (4, 4096)] {
        let (a, b, pa, pb) = run_pair(CRYPTO_RC4 | CRYPTO_PLAINTEXT, CRYPTO_RC4, true, seed, chunk);
        assert_eq!(a.state(), MseState::Established(Method::Rc4));
        assert_eq!(b.state(), MseState::Established(Method::Rc4));
        let mut want = handshake_bytes();
        want.extend_from_slice(b"after the handshake");
        assert_eq!(pb, want);
        assert_eq!(pa, b"answer");
        assert_eq!(b.info_hash(), Some(IH));
        assert_eq!(a.modpows(), 2);
        assert_eq!(b.modpows(), 2);
    }
}

#[test]
fn pair_agrees_on_plaintext_and_payload_is_clear_on_the_wire() {
    let (mut a, mut b, pa, pb) = run_pair(
        CRYPTO_RC4 | CRYPTO_PLAINTEXT,
        CRYPTO_PLAINTEXT | CRYPTO_RC4,
        false,
        9,
        13,
    );
    assert_eq!(a.state(), MseState::Established(Method::Plaintext));
    assert_eq!(b.state(), MseState::Established(Method::Plaintext));
    let mut want = handshake_bytes();
    want.extend_from_slice(b"after the handshake");
    assert_eq!(pb, want);
    assert_eq!(pa, b"answer");
    a.send(b"clear").unwrap();
    assert_eq!(a.take_output(), b"clear");
    b.feed(b"clear too").unwrap();
    assert_eq!(b.take_payload(), b"clear too");
}

#[test]
fn rc4_on_the_wire_is_not_the_payload() {
    let (mut a, _, _, _) = run_pair(CRYPTO_RC4, CRYPTO_RC4, true, 5, 64);
    a.send(b"secret secret secret").unwrap();
    let wire = a.take_output();
    assert_eq!(wire.len(), 20);
    assert_ne!(wire, b"secret secret secret");
}

#[test]
fn responder_without_a_common_method_refuses() {
    let (a, b, _, pb) = run_pair(CRYPTO_PLAINTEXT, CRYPTO_RC4, true, 6, 50);
    assert_eq!(b.state(), MseState::Failed(MseError::ProvideUnsupported));
    assert_eq!(a.state(), MseState::Handshaking);
    assert!(pb.is_empty());
}

#[test]
fn unknown_infohash_refused() {
    let mut rng = Rng::new(3);
    let mut a = Mse::initiator(cfg(3, true), IH, &mut rng);
    let mut b = Mse::responder(cfg(3, true), vec![[2; 20]], &mut rng);
    a.send(&handshake_bytes()).unwrap();
    pump(&mut a, &mut b, 33);
    assert_eq!(b.state(), MseState::Failed(MseError::UnknownInfoHash));
}

#[test]
fn bad_public_keys_fail_both_sides() {
    let mut pm1 = PRIME;
    pm1[KEY_LEN - 1] -= 1;
    let mut one = [0u8; KEY_LEN];
    one[KEY_LEN - 1] = 1;
    for (y, fault) in [
        ([0u8; KEY_LEN], KeyFault::Zero),
        (one, KeyFault::One),
        (pm1, KeyFault::PMinusOne),
        ([0xFF; KEY_LEN], KeyFault::OutOfRange),
    ] {
        let mut rng = Rng::new(4);
        let mut a = Mse::initiator(cfg(3, true), IH, &mut rng);
        assert_eq!(a.feed(&y), Err(MseError::BadPublicKey(fault)));
        assert_eq!(a.state(), MseState::Failed(MseError::BadPublicKey(fault)));
        // Its own Ya and PadA were still queued (never taken): a failed machine
        // puts nothing more on the wire, queued or new (found by the `mse`
        // fuzz target: 98 zero bytes into an initiator, one at a time).
        assert!(a.take_output().is_empty());
        let mut b = Mse::responder(cfg(3, true), vec![IH], &mut rng);
        // One byte at a time: the verdict comes at the 96th.
        for (i, byte) in y.iter().enumerate() {
            let r = b.feed(&[*byte]);
            if i + 1 < KEY_LEN {
                assert_eq!(r, Ok(()));
            } else {
                assert_eq!(r, Err(MseError::BadPublicKey(fault)));
            }
        }
        // A failed machine stays failed and sends nothing more.
        assert!(b.take_output().is_empty());
        assert_eq!(b.feed(b"x"), Err(MseError::BadPublicKey(fault)));
    }
}

/// A fake answering side that sends a valid Yb, then `pad` bytes of padding
/// that never contain VC: the initiator gives up after exactly 512 + 8 bytes.
#[test]
fn initiator_sync_search_is_bounded() {
    let mut rng = Rng::new(8);
    let mut a = Mse::initiator(cfg(3, true), IH, &mut rng);
    let yb = crypto::public_key(&[5; 20]);
    a.feed(&yb).unwrap();
    // 519 bytes past the key: still searching.
    for _ in 0..(MAX_PAD + 8 - 1) {
        assert_eq!(a.feed(&[0xAA]), Ok(()));
    }
    assert_eq!(a.state(), MseState::Handshaking);
    assert_eq!(a.feed(&[0xAA]), Err(MseError::SyncNotFound));
}

#[test]
fn responder_sync_search_is_bounded() {
    let mut rng = Rng::new(8);
    let mut b = Mse::responder(cfg(3, true), vec![IH], &mut rng);
    let ya = crypto::public_key(&[5; 20]);
    b.feed(&ya).unwrap();
    assert!(!b.take_output().is_empty(), "Yb answers Ya");
    let junk = vec![0x55u8; MAX_PAD + 20 - 1];
    assert_eq!(b.feed(&junk), Ok(()));
    assert_eq!(b.feed(&[0x55]), Err(MseError::SyncNotFound));
}

/// The initiator side of a hand-built answering side, to send what a correct
/// one never does.
struct FakeB {
    enc: Rc4Stream,
}

fn fake_b(a: &mut Mse, pad_b: usize) -> (FakeB, Vec<u8>) {
    let xb = [6u8; 20];
    let ya: [u8; KEY_LEN] = arr(&a.take_output()[..KEY_LEN]);
    let s = crypto::shared_secret(&ya, &xb).unwrap();
    let mut wire = crypto::public_key(&xb).to_vec();
    wire.extend(std::iter::repeat_n(0x42, pad_b));
    (
        FakeB {
            enc: Rc4Stream::new(&crypto::key_b(&s, &IH)),
        },
        wire,
    )
}

fn step4(b: &mut FakeB, select: u32, pad_len: u16) -> Vec<u8> {
    let mut m = VC.to_vec();
    m.extend_from_slice(&select.to_be_bytes());
    m.extend_from_slice(&pad_len.to_be_bytes());
    b.enc.apply(&mut m);
    m
}

#[test]
fn initiator_refuses_a_select_it_did_not_offer() {
    for (offered, select) in [
        (CRYPTO_RC4, CRYPTO_PLAINTEXT),
        (CRYPTO_PLAINTEXT, CRYPTO_RC4),
        (3, 3),
        (3, 0),
        (3, 4),
    ] {
        let mut rng = Rng::new(10);
        let mut a = Mse::initiator(cfg(offered, true), IH, &mut rng);
        let (mut b, mut wire) = fake_b(&mut a, 512);
        wire.extend(step4(&mut b, select, 0));
        assert_eq!(a.feed(&wire), Err(MseError::SelectUnsupported), "{select}");
    }
}

#[test]
fn initiator_accepts_a_fake_peer_at_the_padding_limit() {
    let mut rng = Rng::new(11);
    let mut a = Mse::initiator(cfg(3, true), IH, &mut rng);
    let (mut b, mut wire) = fake_b(&mut a, MAX_PAD);
    wire.extend(step4(&mut b, CRYPTO_RC4, 3));
    let mut pad = vec![1, 2, 3];
    b.enc.apply(&mut pad);
    wire.extend(pad);
    let mut msg = b"hello".to_vec();
    b.enc.apply(&mut msg);
    wire.extend(msg);
    assert_eq!(a.feed(&wire), Ok(()));
    assert_eq!(a.state(), MseState::Established(Method::Rc4));
    assert_eq!(a.take_payload(), b"hello");
}

#[test]
fn initiator_refuses_pad_d_over_512() {
    let mut rng = Rng::new(12);
    let mut a = Mse::initiator(cfg(3, true), IH, &mut rng);
    let (mut b, mut wire) = fake_b(&mut a, 0);
    wire.extend(step4(&mut b, CRYPTO_RC4, 513));
    assert_eq!(a.feed(&wire), Err(MseError::PadTooLong));
}

#[test]
fn responder_detects_a_corrupt_stream() {
    let rng = Rng::new(13);
    let mut a = Mse::initiator(cfg(3, true), IH, &mut rng.child(1));
    let mut b = Mse::responder(cfg(3, true), vec![IH], &mut rng.child(2));
    b.feed(&a.take_output()).unwrap();
    a.feed(&b.take_output()).unwrap();
    let mut step3 = a.take_output();
    // Flip a bit of the encrypted VC (just past the two 20-byte hashes).
    step3[40] ^= 1;
    assert_eq!(b.feed(&step3), Err(MseError::StreamCorrupt));
}

#[test]
fn pending_payload_is_capped() {
    let mut rng = Rng::new(14);
    let mut a = Mse::initiator(cfg(3, true), IH, &mut rng);
    assert_eq!(a.send(&vec![0; MAX_PENDING]), Ok(()));
    assert_eq!(a.send(&[0]), Err(MseError::PendingFull));
}

#[test]
fn pads_are_bounded_and_seeded() {
    // Same seed, same bytes; Ya plus PadA is 96..=608 bytes.
    let first = |seed| Mse::initiator(cfg(3, true), IH, &mut Rng::new(seed)).take_output();
    assert_eq!(first(1), first(1));
    assert_ne!(first(1), first(2));
    for seed in 0..50 {
        let n = first(seed).len();
        assert!((KEY_LEN..=KEY_LEN + MAX_PAD).contains(&n), "{n}");
    }
}
