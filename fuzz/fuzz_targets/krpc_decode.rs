#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = magnetar_core::krpc::decode(data) {
        let mut out = Vec::new();
        magnetar_core::krpc::encode(&msg, &mut out);
    }
});
