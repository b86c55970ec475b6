//! uTP streams (BEP 29) in the simulator: any byte stream arrives intact and in
//! order or the connection fails with a reason; a 10 MiB transfer completes over
//! a link with 1 % loss; one seed gives one trace.

use std::time::Duration;

use magnetar_core::utp::UtpCloseReason;
use magnetar_core::Rng;
use magnetar_tests::util::seed_from_env;
use magnetar_tests::utp_link::{transfer, LinkConfig};

fn data(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

#[test]
fn any_stream_arrives_intact_or_fails_with_a_reason() {
    let seed = seed_from_env(15);
    let mut rng = Rng::new(seed);
    let mut finished = 0;
    let mut failed = 0;
    for case in 0..24 {
        let len = rng.index(300_000);
        let link = LinkConfig {
            latency: Duration::from_millis(1 + rng.below(150)),
            jitter: Duration::from_millis(rng.below(120)),
            loss: rng.unit() * if case % 4 == 3 { 0.6 } else { 0.15 },
            duplicate: rng.unit() * 0.1,
            queue: 64 + rng.index(4096),
        };
        let bytes = data(&mut rng, len);
        let o = transfer(seed ^ case, link, &bytes, Duration::from_secs(3600));
        let what = format!(
            "seed {seed} case {case} len {len} {link:?}: {:?} {:?}",
            o.a_closed, o.b_closed
        );
        // Whatever happened, B read a prefix of the stream, in order.
        assert!(o.received.len() <= bytes.len(), "{what}");
        assert!(
            bytes.starts_with(&o.received),
            "{what}: corrupt or reordered bytes"
        );
        // And the sender's stream ended, with a reason.
        let reason = o.a_closed.unwrap_or_else(|| panic!("{what}: never ended"));
        if reason == UtpCloseReason::Finished {
            assert_eq!(o.received.len(), bytes.len(), "{what}");
            finished += 1;
        } else {
            assert!(
                matches!(
                    reason,
                    UtpCloseReason::TimedOut
                        | UtpCloseReason::ConnectTimedOut
                        | UtpCloseReason::Idle
                        | UtpCloseReason::Reset
                ),
                "{what}"
            );
            failed += 1;
        }
        assert!(
            o.a_stats.connections == 0 && o.b_stats.connections == 0,
            "{what}"
        );
    }
    // The mix exercised both branches.
    assert!(
        finished >= 12,
        "seed {seed}: {finished} finished, {failed} failed"
    );
}

#[test]
fn ten_mib_over_one_percent_loss_completes() {
    let seed = seed_from_env(29);
    let mut rng = Rng::new(seed);
    let bytes = data(&mut rng, 10 << 20);
    let link = LinkConfig {
        latency: Duration::from_millis(30),
        jitter: Duration::from_millis(10),
        loss: 0.01,
        duplicate: 0.005,
        queue: 4096,
    };
    let o = transfer(seed, link, &bytes, Duration::from_secs(3600));
    assert_eq!(o.a_closed, Some(UtpCloseReason::Finished), "seed {seed}");
    assert_eq!(o.received.len(), bytes.len(), "seed {seed}");
    assert!(o.received == bytes, "seed {seed}");
    assert!(o.link.lost > 0 && o.link.reordered > 0 && o.link.duplicated > 0);
    assert!(o.a_stats.retransmits > 0, "seed {seed}");
    eprintln!(
        "10 MiB over 1 % loss: {:.1} s virtual, {} datagrams ({} lost), {} retransmits, {} fast resends, {} timeouts",
        o.end.as_millis() as f64 / 1000.0,
        o.link.sent,
        o.link.lost,
        o.a_stats.retransmits,
        o.a_stats.fast_resends,
        o.a_stats.timeouts
    );
}

#[test]
fn one_seed_one_trace() {
    let seed = seed_from_env(3);
    let mut rng = Rng::new(seed);
    let bytes = data(&mut rng, 200_000);
    let link = LinkConfig {
        latency: Duration::from_millis(20),
        jitter: Duration::from_millis(40),
        loss: 0.05,
        duplicate: 0.05,
        queue: 512,
    };
    let x = transfer(seed, link, &bytes, Duration::from_secs(3600));
    let y = transfer(seed, link, &bytes, Duration::from_secs(3600));
    assert_eq!(x.trace, y.trace, "seed {seed}");
    assert_eq!(x.link, y.link);
    assert_eq!(x.end, y.end);
    let z = transfer(seed + 1, link, &bytes, Duration::from_secs(3600));
    assert_ne!(x.trace, z.trace, "another seed, another trace");
}
