//! Property tests for the routing table: the structural invariant survives any
//! sequence of operations, `closest` equals a brute-force sort, and the event stream
//! mirrors bucket membership exactly.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use magnetar_core::addr::Family;
use magnetar_core::routing::{
    Contact, NodeStatus, RoutingConfig, RoutingEvent, RoutingStats, RoutingTable,
};
use magnetar_core::Rng;
use magnetar_core::{NodeId, Timestamp};
use quickcheck::{Arbitrary, Gen, QuickCheck};

#[derive(Clone, Debug)]
enum Op {
    Add {
        id: u8,
        addr: u8,
        response: bool,
    },
    Fail {
        addr: u8,
    },
    Advance {
        secs: u16,
    },
    Refresh,
    Remove {
        addr: u8,
    },
    /// Ping the node `next_to_ping` offers; it answers or fails.
    Ping {
        answers: bool,
    },
    Closest {
        target: u8,
        n: u8,
    },
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        match u8::arbitrary(g) % 16 {
            0..=6 => Op::Add {
                id: u8::arbitrary(g),
                addr: u8::arbitrary(g),
                response: bool::arbitrary(g),
            },
            7 | 8 => Op::Fail {
                addr: u8::arbitrary(g),
            },
            9 | 10 => Op::Advance {
                secs: u16::arbitrary(g) % 1200,
            },
            11 => Op::Refresh,
            12 => Op::Remove {
                addr: u8::arbitrary(g),
            },
            13 | 14 => Op::Ping {
                answers: bool::arbitrary(g),
            },
            _ => Op::Closest {
                target: u8::arbitrary(g),
                n: u8::arbitrary(g) % 12,
            },
        }
    }
}

fn own_id() -> NodeId {
    NodeId(Rng::new(99).bytes())
}

/// Ids from a small pool (so they repeat), many sharing long prefixes with ours
/// (so the table splits deep). 255 is our own id.
fn pool_id(sel: u8) -> NodeId {
    let own = own_id();
    if sel == 255 {
        return own;
    }
    let mut id: [u8; 20] = Rng::new(sel as u64 + 1000).bytes();
    let depth = (sel % 24) as usize;
    for bit in 0..=depth {
        let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
        let want = if bit == depth {
            !own.0[byte] & mask
        } else {
            own.0[byte] & mask
        };
        id[byte] = (id[byte] & !mask) | want;
    }
    NodeId(id)
}

/// Addresses from a small pool with shared /24s; a few are IPv6 (wrong family) or
/// IPv4-mapped IPv6 (the same as their IPv4 form).
fn pool_addr(sel: u8) -> SocketAddr {
    match sel {
        250..=252 => format!("[2a00:1450::{sel}]:6881").parse().unwrap(),
        253..=255 => format!("[::ffff:50.0.{}.1]:6881", sel % 16)
            .parse()
            .unwrap(),
        _ => SocketAddr::from(([50, 0, sel % 16, sel / 16 + 1], 6881)),
    }
}

fn configs() -> Vec<RoutingConfig> {
    vec![
        RoutingConfig {
            k: 2,
            replacements: 2,
            max_nodes: 24,
            ..RoutingConfig::default()
        },
        RoutingConfig {
            k: 3,
            bucket_sizes: vec![12, 6],
            replacements: 3,
            max_nodes: 40,
            one_per_subnet: false,
            bad_failures: 1,
            max_failures: 3,
            ..RoutingConfig::default()
        },
        RoutingConfig::default(),
    ]
}

fn brute_closest(rt: &RoutingTable, target: &[u8; 20], n: usize) -> Vec<NodeId> {
    let mut all: Vec<NodeId> = rt
        .nodes()
        .filter(|e| rt.status(e, Timestamp::ZERO) != NodeStatus::Bad)
        .map(|e| e.id)
        .collect();
    all.sort_by_key(|id| id.distance(target));
    all.truncate(n);
    all
}

fn check_closest(rt: &RoutingTable, target: &[u8; 20], n: usize) -> Result<(), String> {
    let mut out = Vec::new();
    rt.closest(target, n, &mut out);
    let got: Vec<NodeId> = out.iter().map(|e| e.id).collect();
    let want = brute_closest(rt, target, n);
    if got != want {
        return Err(format!("closest({n}) = {got:?}, brute force {want:?}"));
    }
    for e in &out {
        if rt.get(&e.addr) != Some(e) {
            return Err(format!("closest returned a stale entry {e:?}"));
        }
    }
    Ok(())
}

fn run(cfg_sel: u8, ops: &[Op]) -> Result<RoutingStats, String> {
    let cfgs = configs();
    let cfg = cfgs[cfg_sel as usize % cfgs.len()].clone();
    let mut rt = RoutingTable::new(own_id(), Family::V4, cfg);
    let mut rng = Rng::new(7);
    let mut now = Timestamp::ZERO;
    let mut model: BTreeSet<(NodeId, SocketAddr)> = BTreeSet::new();
    let mut events = Vec::new();
    let mut targets = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Add { id, addr, response } => {
                let how = if response {
                    Contact::Response {
                        rtt: Duration::from_millis(addr as u64),
                    }
                } else {
                    Contact::Query
                };
                rt.heard_from(now, pool_id(id), pool_addr(addr), how);
            }
            Op::Fail { addr } => rt.failed(now, pool_addr(addr)),
            Op::Advance { secs } => now = now.add(Duration::from_secs(secs as u64)),
            Op::Refresh => {
                targets.clear();
                rt.refresh_targets(now, &mut rng, &mut targets);
            }
            Op::Remove { addr } => {
                rt.remove(pool_addr(addr));
            }
            Op::Ping { answers } => {
                if let Some((id, addr)) = rt.next_to_ping(now) {
                    if answers {
                        rt.heard_from(
                            now,
                            id,
                            addr,
                            Contact::Response {
                                rtt: Duration::from_millis(50),
                            },
                        );
                    } else {
                        rt.failed(now, addr);
                    }
                }
            }
            Op::Closest { target, n } => {
                check_closest(&rt, &pool_id(target).0, n as usize)?;
                let random: [u8; 20] = rng.bytes();
                check_closest(&rt, &random, n as usize)?;
            }
        }
        rt.check_invariant()
            .map_err(|e| format!("step {step} {op:?}: {e}"))?;
        // The event stream mirrors bucket membership.
        rt.take_events(&mut events);
        for ev in events.drain(..) {
            let ok = match ev {
                RoutingEvent::Added { id, addr } => model.insert((id, addr)),
                RoutingEvent::Removed { id, addr } => model.remove(&(id, addr)),
            };
            if !ok {
                return Err(format!("step {step}: inconsistent event"));
            }
        }
        let actual: BTreeSet<(NodeId, SocketAddr)> = rt.nodes().map(|e| (e.id, e.addr)).collect();
        if actual != model {
            return Err(format!("step {step}: events do not mirror the table"));
        }
    }
    for sel in [0u8, 17, 100, 255] {
        check_closest(&rt, &pool_id(sel).0, 8)?;
    }
    Ok(rt.stats().clone())
}

#[test]
fn invariant_survives_any_operation_sequence() {
    fn prop(cfg: u8, ops: Vec<Op>) -> Result<(), String> {
        run(cfg, &ops).map(|_| ())
    }
    QuickCheck::new()
        .tests(200)
        .rng(Gen::new(400))
        .quickcheck(prop as fn(u8, Vec<Op>) -> Result<(), String>);
}

#[test]
fn long_random_runs() {
    // A few long sequences drawn from a seeded generator (deterministic).
    let mut rng = Rng::new(2024);
    let mut total = RoutingStats::default();
    for run_no in 0..6u8 {
        let mut ops = Vec::with_capacity(2500);
        for _ in 0..2500 {
            let kind = rng.below(16) as u8;
            let a = rng.below(256) as u8;
            let b = rng.below(256) as u8;
            ops.push(match kind {
                0..=6 => Op::Add {
                    id: a,
                    addr: b,
                    response: b % 3 != 0,
                },
                7 | 8 => Op::Fail { addr: a },
                9 | 10 => Op::Advance {
                    secs: (a as u16) * 4,
                },
                11 => Op::Refresh,
                12 => Op::Remove { addr: a },
                13 | 14 => Op::Ping {
                    answers: b % 2 == 0,
                },
                _ => Op::Closest {
                    target: a,
                    n: b % 12,
                },
            });
        }
        match run(run_no, &ops) {
            Ok(s) => {
                total.splits += s.splits;
                total.cached += s.cached;
                total.promoted += s.promoted;
                total.evicted_failed += s.evicted_failed;
                total.replaced_bad += s.replaced_bad;
                total.rejected_suspect += s.rejected_suspect;
                total.rejected_subnet += s.rejected_subnet;
                total.rejected_table_full += s.rejected_table_full;
                total.rejected_bucket_full += s.rejected_bucket_full;
                total.rejected_id_in_use += s.rejected_id_in_use;
                total.rejected_own_id += s.rejected_own_id;
                total.rejected_family += s.rejected_family;
            }
            Err(e) => panic!("run {run_no}: {e}"),
        }
    }
    // The sequences reach every rule.
    let t = &total;
    for (name, v) in [
        ("splits", t.splits),
        ("cached", t.cached),
        ("promoted", t.promoted),
        ("evicted_failed", t.evicted_failed),
        ("replaced_bad", t.replaced_bad),
        ("rejected_suspect", t.rejected_suspect),
        ("rejected_subnet", t.rejected_subnet),
        ("rejected_table_full", t.rejected_table_full),
        ("rejected_bucket_full", t.rejected_bucket_full),
        ("rejected_id_in_use", t.rejected_id_in_use),
        ("rejected_own_id", t.rejected_own_id),
        ("rejected_family", t.rejected_family),
    ] {
        assert!(v > 0, "no {name} in {total:?}");
    }
}
