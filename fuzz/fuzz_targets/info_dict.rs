#![no_main]
//! Arbitrary bytes into the bencode decoder and the info-dict validator.
use libfuzzer_sys::fuzz_target;
use magnetar_core::metadata::parse_info;
use magnetar_core::wire::bencode;

fuzz_target!(|data: &[u8]| {
    let _ = bencode::decode_prefix(data);
    if let Ok(info) = parse_info(data) {
        // Accepted dicts uphold the validator's promises.
        assert!(info.piece_length > 0);
        assert!(!info.files.is_empty());
        let total: u64 = info.files.iter().map(|f| f.length).sum();
        assert_eq!(total, info.total_size);
        for f in &info.files {
            assert!(!f.path.is_empty());
            for c in &f.path {
                assert!(!c.is_empty() && c != "." && c != ".." && !c.contains('/'));
            }
        }
    }
});
