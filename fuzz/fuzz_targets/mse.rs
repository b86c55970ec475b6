#![no_main]
//! Arbitrary bytes into both sides of Message Stream Encryption.
//!
//! Byte 0 picks the mode. Bit 0: the side under attack (0 the initiator, which
//! magnetar runs; 1 the answering side). Bit 1: tamper mode, where an honest
//! peer runs the handshake and the fuzz bytes are XORed into its stream (so
//! every state is reached: sync, select, pads, IA, the RC4 filter); otherwise
//! the bytes are the peer's whole stream, after a valid public key when bit 2
//! is set. Bits 3..7: the chunk size. Checks: no panic, a failed machine stays
//! failed with the same reason and sends nothing more.
use libfuzzer_sys::fuzz_target;
use magnetar_core::mse::{crypto, Mse, MseConfig, MseState};
use magnetar_core::Rng;

const IH: [u8; 20] = [0x11; 20];

fn side(responder: bool, rng: &mut Rng) -> Mse {
    if responder {
        Mse::responder(MseConfig::default(), vec![IH], rng)
    } else {
        Mse::initiator(MseConfig::default(), IH, rng)
    }
}

fn feed_checked(m: &mut Mse, bytes: &[u8], chunk: usize) {
    for c in bytes.chunks(chunk) {
        let before = m.state();
        let r = m.feed(c);
        match (before, m.state()) {
            (MseState::Failed(e), after) => {
                assert_eq!(r, Err(e));
                assert_eq!(after, MseState::Failed(e));
                assert!(m.take_output().is_empty());
            }
            (_, MseState::Failed(e)) => assert_eq!(r, Err(e)),
            _ => assert!(r.is_ok()),
        }
        let _ = m.take_payload();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let responder = mode & 1 != 0;
    let chunk = usize::from(mode >> 3) + 1;
    let rng = Rng::new(u64::from(mode));
    let mut target = side(responder, &mut rng.child(1));
    let _ = target.send(b"\x13BitTorrent protocol payload");
    if mode & 2 != 0 {
        let mut honest = side(!responder, &mut rng.child(2));
        let _ = honest.send(b"\x13BitTorrent protocol from the honest side");
        let mut pos = 0usize;
        for _ in 0..16 {
            let to_honest = target.take_output();
            if !to_honest.is_empty() {
                let _ = honest.feed(&to_honest);
                let _ = honest.take_payload();
            }
            let mut wire = honest.take_output();
            if wire.is_empty() && to_honest.is_empty() {
                break;
            }
            for b in wire.iter_mut() {
                if let Some(x) = rest.get(pos) {
                    *b ^= x;
                }
                pos += 1;
            }
            feed_checked(&mut target, &wire, chunk);
        }
        // Then the rest of the fuzz bytes as more stream.
        feed_checked(&mut target, rest.get(pos..).unwrap_or_default(), chunk);
    } else {
        if mode & 4 != 0 {
            let y = crypto::public_key(&[0x5a; 20]);
            feed_checked(&mut target, &y, chunk);
        }
        feed_checked(&mut target, rest, chunk);
    }
    let _ = target.send(b"after");
    let _ = target.take_output();
});
