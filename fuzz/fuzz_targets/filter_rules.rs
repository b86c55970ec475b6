#![no_main]
//! Arbitrary rules files into the filter parser (issue 20 §2), then the parsed rules
//! against the same bytes as a torrent name: never a panic; an error names a line of
//! the file; a match names a rule of the file.
use libfuzzer_sys::fuzz_target;
use magnetar_core::classify::ContentKind;
use magnetar_core::filter::Rules;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Rules::parse(&text) {
        Err(e) => {
            assert!(e.line >= 1 && e.column >= 1);
            assert!(e.line as usize <= text.lines().count().max(1));
        }
        Ok(rules) => {
            let ih = [data.first().copied().unwrap_or(0); 20];
            for kind in ContentKind::ALL {
                if let Some(v) = rules.check(&ih, *kind, &text, text.lines()) {
                    assert!(rules.rules().contains(v.rule));
                }
            }
        }
    }
});
