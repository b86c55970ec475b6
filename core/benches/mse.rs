//! Encryption cost (issue 16), a plain bench binary that prints ratios measured
//! in the same run: one-piece metadata fetches per CPU-second through the
//! sans-IO pair (Fetcher against the testkit's fake seeder, both in this
//! thread) in plaintext, over MSE with RC4, and over MSE with plaintext after
//! the handshake; and MSE handshakes per CPU-second.
//!
//! `cargo bench -p magnetar-core --features testkit --bench mse`
//!
//! CPU time is this thread's (Linux `/proc/thread-self/schedstat`), so a loaded,
//! shared host does not inflate it. Variants are interleaved over several
//! rounds; the medians and their ratios are printed at the end. In the pair the
//! fake seeder's answering side costs as much Diffie-Hellman as ours, so an
//! encrypted fetch counts four modular exponentiations, of which two are ours.
mod common;

use std::time::Duration;

use common::{median, per_cpu_sec, tcp_pair_loop};
use magnetar_core::fetch::EncryptionPolicy;
use magnetar_core::mse::{Mse, MseConfig, MseState};
use magnetar_core::testkit::SeederEncryption;
use magnetar_core::Rng;

/// One MSE handshake between both sides (RC4 selected), bytes handed over whole.
fn handshake_loop() -> impl FnMut() {
    let mut rng = Rng::new(9);
    let ih = [7u8; 20];
    move || {
        let mut a = Mse::initiator(MseConfig::default(), ih, &mut rng);
        let mut b = Mse::responder(MseConfig::default(), vec![ih], &mut rng);
        a.send(&[19; 68]).unwrap();
        for _ in 0..4 {
            let x = a.take_output();
            b.feed(&x).unwrap();
            let y = b.take_output();
            a.feed(&y).unwrap();
        }
        assert!(matches!(a.state(), MseState::Established(_)));
        assert!(matches!(b.state(), MseState::Established(_)));
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds = 5;
    let min = Duration::from_millis(300);
    let mut plain = tcp_pair_loop(
        SeederEncryption::PlaintextOnly,
        EncryptionPolicy::PreferPlaintext,
    );
    let mut rc4 = tcp_pair_loop(SeederEncryption::ForcedRc4, EncryptionPolicy::Require);
    let mut msep = tcp_pair_loop(SeederEncryption::ForcedPlaintext, EncryptionPolicy::Require);
    let mut hs = handshake_loop();
    let (mut p, mut r, mut m, mut h) = (vec![], vec![], vec![], vec![]);
    for i in 0..rounds {
        p.push(per_cpu_sec(min, &mut plain));
        r.push(per_cpu_sec(min, &mut rc4));
        m.push(per_cpu_sec(min, &mut msep));
        h.push(per_cpu_sec(min, &mut hs));
        eprintln!(
            "round {i}: plaintext {:.0}/s, rc4 {:.0}/s, mse-plaintext {:.0}/s, handshakes {:.0}/s",
            p[i], r[i], m[i], h[i]
        );
    }
    let ratios: Vec<f64> = p.iter().zip(&r).map(|(a, b)| a / b).collect();
    let (p, r, m, h) = (
        median(&mut p),
        median(&mut r),
        median(&mut m),
        median(&mut h),
    );
    println!("one-piece fetches per CPU-second (sans-IO pair, ~2 KiB info dict), medians of {rounds} interleaved rounds:");
    println!("  plaintext                 {p:>9.0}");
    println!(
        "  MSE + RC4                 {r:>9.0}   plaintext/RC4 = {:.1}x (per round: {})",
        p / r,
        ratios
            .iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  MSE + plaintext after     {m:>9.0}   plaintext/MSE-plaintext = {:.1}x",
        p / m
    );
    println!(
        "MSE handshakes per CPU-second (both sides, 4 modpows): {h:.0}  (our side alone ~{:.0})",
        2.0 * h
    );
    println!("  one encrypted fetch costs {:.1} us more CPU than a plaintext one; a handshake pair {:.1} us",
        (1.0 / r - 1.0 / p) * 1e6, 1e6 / h);
}
