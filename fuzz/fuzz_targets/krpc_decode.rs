//! Decodes arbitrary bytes (strictly, on the token-stream reference, on bendy, and
//! leniently). The strict decoder must give exactly the reference's result (the same
//! message or the same error) and accept what bendy accepts; whatever is accepted must
//! encode to bytes that decode to the same message, and that encoding must be a fixed
//! point.
#![no_main]
use libfuzzer_sys::fuzz_target;
use magnetar_core::krpc::{
    decode, decode_bendy, decode_lenient, decode_reference, encode, Message,
};

fn check(msg: &Message<'_>) {
    let mut out = Vec::new();
    encode(msg, &mut out);
    let again = decode(&out).expect("our own encoding must decode");
    assert_eq!(&again, msg);
    let mut out2 = Vec::new();
    encode(&again, &mut out2);
    assert_eq!(out, out2);
}

fuzz_target!(|data: &[u8]| {
    let strict = decode(data);
    if let Ok(msg) = &strict {
        check(msg);
    }
    // The direct decoder against the token-stream one it replaced: identical results,
    // errors included.
    let tokens = decode_reference(data);
    assert_eq!(strict, tokens, "direct vs token-stream reference");
    // Our tokenizer must agree with bendy's on what it accepts and what it yields.
    let reference = decode_bendy(data);
    assert_eq!(
        strict.is_ok(),
        reference.is_ok(),
        "ours {strict:?} vs bendy {reference:?}"
    );
    if let (Ok(a), Ok(b)) = (&strict, &reference) {
        assert_eq!(a, b);
    }
    match decode_lenient(data) {
        Ok(l) => {
            check(&l.message);
            if let Ok(msg) = &strict {
                assert_eq!(msg, &l.message);
                assert!(!l.unsorted_keys);
            }
        }
        Err(e) => assert!(strict.is_err(), "lenient refused what strict took: {e:?}"),
    }
});
