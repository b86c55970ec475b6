#![no_main]
//! Arbitrary names and file lists into the classifier (issue 20 §1): it must never
//! panic, must keep its bounds (title length), and must be deterministic.
//!
//! Input: the name, then (after a 0 byte) file entries separated by `\n`, each a path
//! whose first byte also picks a size.
use libfuzzer_sys::fuzz_target;
use magnetar_core::classify::{classify, ContentKind, MAX_TITLE_BYTES};

fuzz_target!(|data: &[u8]| {
    let (name, rest) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let name = String::from_utf8_lossy(name);
    let files: Vec<(String, u64)> = rest
        .split(|&b| b == b'\n')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let size = u64::from(p[0]).wrapping_mul(0x0101_0101_0101);
            (String::from_utf8_lossy(p).into_owned(), size)
        })
        .collect();
    let files = || files.iter().map(|(p, s)| (p.as_str(), *s));
    let a = classify(&name, files());
    let b = classify(&name, files());
    assert_eq!(a, b, "classification is deterministic");
    assert!(a.title.as_ref().is_none_or(|t| t.len() <= MAX_TITLE_BYTES));
    assert_eq!(ContentKind::from_code(a.kind.code()), Some(a.kind));
    assert!((2000..9000).contains(&a.torznab()));
    if let Some((x, y)) = a.episodes {
        assert!(x <= y);
    }
    if let Some((x, y)) = a.seasons {
        assert!(x <= y);
    }
});
