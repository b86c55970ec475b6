//! uTP against TCP (issue 15), a plain bench binary that prints ratios measured
//! in the same run:
//!
//! 1. one-piece metadata fetches per CPU-second through the sans-IO pair: the
//!    Fetcher against the testkit's fake seeder over TCP (bytes handed over
//!    whole, as in the `mse` bench) and over uTP (`testkit::UtpSwarm`: our
//!    `Utp` manager and `UtpLink`, a seeder-side `Utp` manager, datagrams
//!    through a simulated link), both in this thread;
//! 2. a ~9.5 MiB info dict fetched over uTP through a link with 25 ms one-way
//!    latency, lossless and with 1 % loss each way (simulated time and CPU
//!    time), against the same fetch over the TCP pair (CPU time; the TCP pair
//!    has no network model, so no simulated time).
//!
//! `cargo bench -p magnetar-core --features testkit --bench utp`
//!
//! CPU time is this thread's (Linux `/proc/thread-self/schedstat`); variants are
//! interleaved over several rounds and the medians printed. In the uTP pair
//! both ends' uTP machines run in this thread (the seeder's side costs about
//! as much as ours), so the uTP figure counts two uTP stacks and the TCP figure
//! none (the kernel's TCP is not in the pair).
mod common;

use std::time::Duration;

use common::{addr, fetched, median, one_piece_info, per_cpu_sec, tcp_pair_loop, thread_cpu_ns};
use magnetar_core::fetch::{EncryptionPolicy, FetchConfig, Fetcher};
use magnetar_core::testkit::{build_info, Behavior, InfoSpec, SeederEncryption, Swarm, UtpSwarm};
use magnetar_core::{Rng, SocketId, Timestamp};

fn long_cfg() -> FetchConfig {
    FetchConfig {
        peer_timeout: Duration::from_secs(3600),
        infohash_timeout: Duration::from_secs(3600),
        idle_timeout: Duration::from_secs(60),
        ..FetchConfig::default()
    }
}

/// One-piece fetches over the uTP pair (1 ms one way, no loss).
fn utp_loop() -> impl FnMut() {
    let mut w = UtpSwarm::new(1, Duration::from_millis(1), 0);
    let ih = w.set_seeder(addr(), one_piece_info().into());
    let mut f = Fetcher::new(long_cfg(), Rng::new(1))
        .with_allow_private(true)
        .with_utp(true);
    f.note_udp_contact(Timestamp::ZERO, addr(), SocketId(0));
    let mut ev = Vec::with_capacity(4);
    move || {
        ev.clear();
        let now = w.now();
        f.fetch(now, ih, &[addr()]).unwrap();
        w.run_into(&mut f, 100_000, &mut ev);
        assert_eq!(fetched(&ev), 1);
        assert_eq!(w.tcp_refused, 0);
    }
}

/// The ~9.5 MiB info dict (500,000 pieces of 16 KiB).
fn big_info() -> Vec<u8> {
    build_info(&InfoSpec {
        piece_length: 16 * 1024,
        ..InfoSpec::single("large.bin", 500_000 * 16 * 1024)
    })
}

/// One big fetch over uTP: (simulated seconds, CPU seconds, datagrams lost).
fn utp_big(info: &[u8], loss_ppm: u32, seed: u64) -> (f64, f64, u64) {
    let mut w = UtpSwarm::new(seed, Duration::from_millis(25), loss_ppm);
    let ih = w.set_seeder(addr(), info.to_vec().into());
    let mut f = Fetcher::new(long_cfg(), Rng::new(seed))
        .with_allow_private(true)
        .with_utp(true);
    f.note_udp_contact(Timestamp::ZERO, addr(), SocketId(0));
    let mut ev = Vec::new();
    let c0 = thread_cpu_ns();
    f.fetch(Timestamp::ZERO, ih, &[addr()]).unwrap();
    w.run_into(&mut f, 50_000_000, &mut ev);
    let cpu = thread_cpu_ns().saturating_sub(c0) as f64 / 1e9;
    assert_eq!(fetched(&ev), 1, "{:?}", ev.last());
    (w.now().since(Timestamp::ZERO).as_secs_f64(), cpu, w.lost)
}

/// The same over the TCP pair: CPU seconds.
fn tcp_big(info: &[u8]) -> f64 {
    let mut sw = Swarm::new(3);
    let ih = sw.add_seeder(addr(), info.to_vec().into(), Behavior::Honest);
    let mut f = Fetcher::new(long_cfg(), Rng::new(1)).with_allow_private(true);
    let mut ev = Vec::new();
    let c0 = thread_cpu_ns();
    f.fetch(Timestamp::ZERO, ih, &[addr()]).unwrap();
    sw.run_into(&mut f, 10_000_000, &mut ev);
    let cpu = thread_cpu_ns().saturating_sub(c0) as f64 / 1e9;
    assert_eq!(fetched(&ev), 1);
    cpu
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds = 5;
    let min = Duration::from_millis(300);
    let mut tcp = tcp_pair_loop(
        SeederEncryption::PlaintextOnly,
        EncryptionPolicy::PreferPlaintext,
    );
    let mut utp = utp_loop();
    let (mut t, mut u) = (vec![], vec![]);
    for i in 0..rounds {
        t.push(per_cpu_sec(min, &mut tcp));
        u.push(per_cpu_sec(min, &mut utp));
        eprintln!("round {i}: tcp {:.0}/s, utp {:.0}/s", t[i], u[i]);
    }
    let ratios: Vec<String> = u
        .iter()
        .zip(&t)
        .map(|(a, b)| format!("{:.2}", a / b))
        .collect();
    let (t, u) = (median(&mut t), median(&mut u));
    println!("one-piece fetches per CPU-second (sans-IO pair, ~2 KiB info dict), medians of {rounds} interleaved rounds:");
    println!("  TCP pair   {t:>9.0}");
    println!(
        "  uTP pair   {u:>9.0}   uTP/TCP = {:.2} (per round: {})",
        u / t,
        ratios.join(", ")
    );

    let info = big_info();
    let big_rounds = 3;
    let (mut us0, mut uc0, mut us1, mut uc1, mut tc) = (vec![], vec![], vec![], vec![], vec![]);
    let mut lost = 0;
    for i in 0..big_rounds {
        let (s0, c0, _) = utp_big(&info, 0, 10 + i);
        let (s1, c1, l1) = utp_big(&info, 10_000, 20 + i);
        let ct = tcp_big(&info);
        eprintln!(
            "round {i}: utp lossless {s0:.2} s sim {c0:.3} s cpu; utp 1% loss {s1:.2} s sim {c1:.3} s cpu ({l1} lost); tcp {ct:.3} s cpu"
        );
        lost += l1;
        us0.push(s0);
        uc0.push(c0);
        us1.push(s1);
        uc1.push(c1);
        tc.push(ct);
    }
    let (us0, uc0, us1, uc1, tc) = (
        median(&mut us0),
        median(&mut uc0),
        median(&mut us1),
        median(&mut uc1),
        median(&mut tc),
    );
    println!(
        "a {:.2} MiB info dict (25 ms one way), medians of {big_rounds} rounds:",
        info.len() as f64 / (1 << 20) as f64
    );
    println!("  uTP, no loss   {us0:>7.2} s simulated  {uc0:>7.3} s CPU");
    println!(
        "  uTP, 1 % loss  {us1:>7.2} s simulated  {uc1:>7.3} s CPU   (loss/no-loss: {:.2}x simulated, {:.2}x CPU; {} datagrams lost over the rounds)",
        us1 / us0,
        uc1 / uc0,
        lost
    );
    println!(
        "  TCP pair                          {tc:>7.3} s CPU   (uTP 1 % loss/TCP CPU: {:.2}x)",
        uc1 / tc
    );
}
