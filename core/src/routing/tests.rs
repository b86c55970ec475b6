//! Unit tests: one per routing rule.

use super::*;
use crate::id::bep42_node_id;

const RESP: Contact = Contact::Response {
    rtt: Duration::from_millis(100),
};

fn t(secs: u64) -> Timestamp {
    Timestamp::from_secs(secs)
}

/// A public IPv4 address, each `i` in its own /24.
fn v4(i: u32) -> SocketAddr {
    SocketAddr::from(([20 + (i >> 16) as u8, (i >> 8) as u8, i as u8, 1], 6881))
}

/// An id sharing exactly `depth` (< 128) leading bits with `own`, told apart by `n`.
fn id_at(own: NodeId, depth: u32, n: u32) -> NodeId {
    let mut x = flip(own.0, depth);
    for (b, m) in x[16..].iter_mut().zip(n.to_be_bytes()) {
        *b ^= m;
    }
    NodeId(x)
}

fn table(cfg: RoutingConfig) -> RoutingTable {
    RoutingTable::new(NodeId::ZERO, Family::V4, cfg)
}

fn ok(rt: &RoutingTable) {
    if let Err(e) = rt.check_invariant() {
        panic!("invariant: {e}");
    }
}

/// Fills bucket 0 (the far half) of an own-id-zero table with `k` good nodes; the
/// table splits once on the way.
fn fill_far_bucket(rt: &mut RoutingTable, now: Timestamp) -> Vec<(NodeId, SocketAddr)> {
    let k = rt.config().k as u32;
    let mut v = Vec::new();
    for i in 0..k {
        let (id, a) = (id_at(NodeId::ZERO, 0, i), v4(i));
        assert_eq!(rt.heard_from(now, id, a, RESP), InsertOutcome::Added);
        v.push((id, a));
    }
    // A near node forces the first split so bucket 0 is no longer the last one.
    let near = id_at(NodeId::ZERO, 10, 0);
    assert_eq!(
        rt.heard_from(now.add(Duration::from_secs(1)), near, v4(1000), RESP),
        InsertOutcome::Added
    );
    assert!(rt.bucket_count() >= 2);
    ok(rt);
    v
}

#[test]
fn wrong_family_own_id_and_mapped_addresses() {
    let mut rt = table(RoutingConfig::default());
    let v6: SocketAddr = "[2a00:1450::1]:6881".parse().unwrap();
    let id = id_at(NodeId::ZERO, 0, 1);
    assert_eq!(
        rt.heard_from(t(0), id, v6, RESP),
        InsertOutcome::Rejected(RejectReason::WrongFamily)
    );
    assert_eq!(
        rt.heard_from(t(0), NodeId::ZERO, v4(1), RESP),
        InsertOutcome::Rejected(RejectReason::OwnId)
    );
    let mapped: SocketAddr = "[::ffff:20.0.1.1]:6881".parse().unwrap();
    assert_eq!(rt.heard_from(t(0), id, mapped, RESP), InsertOutcome::Added);
    assert_eq!(rt.get(&v4(1)).map(|e| e.addr), Some(v4(1)));
    assert_eq!(rt.get(&mapped).map(|e| e.id), Some(id));
    assert_eq!(rt.stats().rejected_family, 1);
    assert_eq!(rt.stats().rejected_own_id, 1);

    let mut rt6 = RoutingTable::new(NodeId::ZERO, Family::V6, RoutingConfig::default());
    assert_eq!(
        rt6.heard_from(t(0), id, v4(1), RESP),
        InsertOutcome::Rejected(RejectReason::WrongFamily)
    );
    assert_eq!(
        rt6.heard_from(t(0), id, mapped, RESP),
        InsertOutcome::Rejected(RejectReason::WrongFamily)
    );
    assert_eq!(rt6.heard_from(t(0), id, v6, RESP), InsertOutcome::Added);
    ok(&rt);
    ok(&rt6);
}

#[test]
fn splits_only_the_bucket_holding_our_id() {
    let mut rt = table(RoutingConfig::default());
    fill_far_bucket(&mut rt, t(0));
    let buckets = rt.bucket_count();
    // More far nodes: bucket 0 is full of good nodes and is not ours, so no split.
    for i in 100..200 {
        assert_eq!(
            rt.heard_from(t(1), id_at(NodeId::ZERO, 0, i), v4(i), RESP),
            InsertOutcome::Rejected(RejectReason::BucketFull)
        );
    }
    assert_eq!(rt.bucket_count(), buckets);
    assert_eq!(rt.stats().rejected_bucket_full, 100);
    // Near nodes keep splitting the last bucket.
    for d in 1..40 {
        for i in 0..3 {
            let n = 10_000 + d * 10 + i;
            rt.heard_from(t(2), id_at(NodeId::ZERO, d, n), v4(n), RESP);
        }
    }
    assert!(rt.bucket_count() > 30, "{}", rt.bucket_count());
    assert_eq!(rt.stats().splits as usize, rt.bucket_count() - 1);
    ok(&rt);
}

#[test]
fn full_bucket_replaces_a_bad_node() {
    let mut rt = table(RoutingConfig::default());
    let far = fill_far_bucket(&mut rt, t(0));
    let mut ev = Vec::new();
    rt.take_events(&mut ev);
    assert_eq!(ev.len(), 9);
    let (bad_id, bad_addr) = far[3];
    rt.failed(t(10), bad_addr);
    assert_eq!(
        rt.status(rt.get(&bad_addr).unwrap(), t(10)),
        NodeStatus::Good
    );
    rt.failed(t(20), bad_addr);
    assert_eq!(
        rt.status(rt.get(&bad_addr).unwrap(), t(20)),
        NodeStatus::Bad
    );
    let newcomer = id_at(NodeId::ZERO, 0, 500);
    assert_eq!(
        rt.heard_from(t(30), newcomer, v4(500), Contact::Query),
        InsertOutcome::Added
    );
    assert!(rt.get(&bad_addr).is_none());
    rt.take_events(&mut ev);
    assert_eq!(
        ev[9..],
        [
            RoutingEvent::Removed {
                id: bad_id,
                addr: bad_addr
            },
            RoutingEvent::Added {
                id: newcomer,
                addr: v4(500)
            }
        ]
    );
    assert_eq!(rt.stats().replaced_bad, 1);
    ok(&rt);
}

#[test]
fn questionable_bucket_caches_newcomer_and_offers_pings() {
    let mut rt = table(RoutingConfig::default());
    let far = fill_far_bucket(&mut rt, t(0));
    // far[0] is seen least recently, then far[1]; the rest and the near node later.
    rt.heard_from(t(20), far[1].0, far[1].1, RESP);
    for (i, (id, a)) in far.iter().enumerate().skip(2) {
        rt.heard_from(t(100 + i as u64), *id, *a, RESP);
    }
    rt.heard_from(t(200), id_at(NodeId::ZERO, 10, 0), v4(1000), RESP);
    // 15 minutes on, far[0] alone is questionable.
    let now = t(15 * 60);
    assert_eq!(
        rt.status(rt.get(&far[0].1).unwrap(), now),
        NodeStatus::Questionable
    );
    assert_eq!(rt.status(rt.get(&far[1].1).unwrap(), now), NodeStatus::Good);
    let newcomer = id_at(NodeId::ZERO, 0, 600);
    assert_eq!(
        rt.heard_from(now, newcomer, v4(600), RESP),
        InsertOutcome::Cached
    );
    assert_eq!(rt.cached_len(), 1);
    assert!(rt.get(&v4(600)).is_none());
    // Pings: the least recently seen questionable node first, once.
    assert_eq!(rt.next_to_ping(now), Some(far[0]));
    assert_eq!(rt.next_to_ping(now), None);
    // It answers: good again, nothing more to ping now.
    assert_eq!(
        rt.heard_from(now, far[0].0, far[0].1, RESP),
        InsertOutcome::Updated
    );
    assert_eq!(rt.status(rt.get(&far[0].1).unwrap(), now), NodeStatus::Good);
    // Later far[1] goes questionable, then the rest.
    let later = t(20 + 15 * 60);
    assert_eq!(rt.next_to_ping(later), Some(far[1]));
    assert_eq!(rt.next_to_ping(later), None);
    // A full bucket of good nodes rejects.
    rt.heard_from(later, far[1].0, far[1].1, RESP);
    for (id, a) in &far[2..] {
        rt.heard_from(later, *id, *a, RESP);
    }
    assert_eq!(
        rt.heard_from(later, id_at(NodeId::ZERO, 0, 601), v4(601), RESP),
        InsertOutcome::Rejected(RejectReason::BucketFull)
    );
    ok(&rt);
}

#[test]
fn failing_node_is_replaced_from_the_cache() {
    let mut rt = table(RoutingConfig::default());
    let far = fill_far_bucket(&mut rt, t(0));
    let now = t(16 * 60);
    let newcomer = id_at(NodeId::ZERO, 0, 700);
    assert_eq!(
        rt.heard_from(now, newcomer, v4(700), RESP),
        InsertOutcome::Cached
    );
    let (id, a) = rt.next_to_ping(now).unwrap();
    assert_eq!((id, a), far[0]);
    rt.failed(now, a);
    assert!(rt.get(&a).is_some(), "one failure is forgiven");
    rt.failed(now, a);
    assert!(
        rt.get(&a).is_none(),
        "bad with a replacement waiting: evicted"
    );
    assert_eq!(rt.get(&v4(700)).map(|e| e.id), Some(newcomer));
    assert_eq!(rt.cached_len(), 0);
    assert_eq!(rt.stats().promoted, 1);
    assert_eq!(rt.stats().evicted_failed, 1);
    let mut ev = Vec::new();
    rt.take_events(&mut ev);
    assert!(ev.ends_with(&[
        RoutingEvent::Removed { id, addr: a },
        RoutingEvent::Added {
            id: newcomer,
            addr: v4(700)
        }
    ]));
    ok(&rt);
}

#[test]
fn cached_node_that_answers_moves_in_when_room_appears() {
    let mut rt = table(RoutingConfig::default());
    let far = fill_far_bucket(&mut rt, t(0));
    let now = t(16 * 60);
    let newcomer = id_at(NodeId::ZERO, 0, 800);
    assert_eq!(
        rt.heard_from(now, newcomer, v4(800), Contact::Query),
        InsertOutcome::Cached
    );
    // Still no room: stays cached.
    assert_eq!(
        rt.heard_from(now, newcomer, v4(800), RESP),
        InsertOutcome::Cached
    );
    assert!(rt.remove(far[5].1));
    // remove() promoted it already.
    assert_eq!(rt.get(&v4(800)).map(|e| e.id), Some(newcomer));
    assert!(!rt.remove(far[5].1));
    ok(&rt);
}

#[test]
fn failures_end_in_eviction_at_max_failures() {
    let cfg = RoutingConfig {
        replacements: 0,
        ..RoutingConfig::default()
    };
    let mut rt = table(cfg);
    let id = id_at(NodeId::ZERO, 0, 1);
    rt.heard_from(t(0), id, v4(1), RESP);
    for i in 1..5 {
        rt.failed(t(i), v4(1));
        let e = rt.get(&v4(1)).unwrap();
        assert_eq!(e.failures, i as u32);
        let want = if i >= 2 {
            NodeStatus::Bad
        } else {
            NodeStatus::Good
        };
        assert_eq!(rt.status(e, t(i)), want);
        ok(&rt);
    }
    rt.failed(t(5), v4(1));
    assert!(rt.get(&v4(1)).is_none());
    assert!(rt.is_empty());
    // A failure for an unknown address is ignored.
    rt.failed(t(6), v4(99));
    ok(&rt);
}

#[test]
fn status_transitions_over_time() {
    let mut rt = table(RoutingConfig::default());
    let (a, b) = (id_at(NodeId::ZERO, 0, 1), id_at(NodeId::ZERO, 1, 2));
    rt.heard_from(t(0), a, v4(1), RESP);
    rt.heard_from(t(0), b, v4(2), Contact::Query);
    let st = |rt: &RoutingTable, addr, now| rt.status(rt.get(&addr).unwrap(), now);
    assert_eq!(st(&rt, v4(1), t(0)), NodeStatus::Good);
    assert_eq!(
        st(&rt, v4(2), t(0)),
        NodeStatus::Questionable,
        "never answered"
    );
    assert_eq!(st(&rt, v4(1), t(899)), NodeStatus::Good);
    assert_eq!(st(&rt, v4(1), t(900)), NodeStatus::Questionable);
    // It answered once and now queries us: good again (BEP 5).
    rt.heard_from(t(1000), a, v4(1), Contact::Query);
    assert_eq!(st(&rt, v4(1), t(1000)), NodeStatus::Good);
    assert_eq!(
        rt.get(&v4(1)).unwrap().last_response,
        Some(t(0)),
        "a query is not a response"
    );
    // Queries alone never make a node good.
    rt.heard_from(t(1000), b, v4(2), Contact::Query);
    assert_eq!(st(&rt, v4(2), t(1000)), NodeStatus::Questionable);
    rt.heard_from(t(1001), b, v4(2), RESP);
    assert_eq!(st(&rt, v4(2), t(1001)), NodeStatus::Good);
    // Failures make it bad; an answer resets them.
    rt.failed(t(1002), v4(2));
    rt.failed(t(1003), v4(2));
    assert_eq!(st(&rt, v4(2), t(1003)), NodeStatus::Bad);
    rt.heard_from(t(1004), b, v4(2), RESP);
    assert_eq!(st(&rt, v4(2), t(1004)), NodeStatus::Good);
    assert_eq!(rt.get(&v4(2)).unwrap().failures, 0);
    ok(&rt);
}

#[test]
fn rtt_is_a_moving_average() {
    let mut rt = table(RoutingConfig::default());
    let id = id_at(NodeId::ZERO, 0, 1);
    let r = |ms| Contact::Response {
        rtt: Duration::from_millis(ms),
    };
    rt.heard_from(t(0), id, v4(1), Contact::Query);
    assert_eq!(rt.get(&v4(1)).unwrap().rtt, None);
    rt.heard_from(t(1), id, v4(1), r(800));
    assert_eq!(
        rt.get(&v4(1)).unwrap().rtt,
        Some(Duration::from_millis(800))
    );
    rt.heard_from(t(2), id, v4(1), r(0));
    assert_eq!(
        rt.get(&v4(1)).unwrap().rtt,
        Some(Duration::from_millis(700))
    );
}

#[test]
fn one_node_per_subnet_per_bucket() {
    let mut rt = table(RoutingConfig::default());
    let same_24 = |h: u8| SocketAddr::from(([20, 0, 1, h], 6881));
    let (a, b, c) = (
        id_at(NodeId::ZERO, 0, 1),
        id_at(NodeId::ZERO, 0, 2),
        id_at(NodeId::ZERO, 1, 3),
    );
    assert_eq!(
        rt.heard_from(t(0), a, same_24(1), RESP),
        InsertOutcome::Added
    );
    assert_eq!(
        rt.heard_from(t(0), b, same_24(2), RESP),
        InsertOutcome::Rejected(RejectReason::SubnetTaken)
    );
    // Same address, other port: also the same subnet.
    assert_eq!(
        rt.heard_from(t(0), b, SocketAddr::from(([20, 0, 1, 1], 7000)), RESP),
        InsertOutcome::Rejected(RejectReason::SubnetTaken)
    );
    assert_eq!(rt.stats().rejected_subnet, 2);
    // Fill until the table splits so `c` lands in another bucket than `a`.
    for i in 10..20 {
        rt.heard_from(t(0), id_at(NodeId::ZERO, 0, i), v4(i), RESP);
    }
    assert!(rt.bucket_count() >= 2);
    assert_eq!(
        rt.heard_from(t(0), c, same_24(3), RESP),
        InsertOutcome::Added
    );
    // A bad holder gives its subnet slot up.
    rt.failed(t(1), same_24(1));
    rt.failed(t(1), same_24(1));
    let d = id_at(NodeId::ZERO, 0, 4);
    assert_eq!(
        rt.heard_from(t(2), d, same_24(4), RESP),
        InsertOutcome::Added
    );
    assert!(rt.get(&same_24(1)).is_none());
    ok(&rt);

    // IPv6: /64.
    let mut rt6 = RoutingTable::new(NodeId::ZERO, Family::V6, RoutingConfig::default());
    let p = |s: &str| s.parse::<SocketAddr>().unwrap();
    assert_eq!(
        rt6.heard_from(t(0), a, p("[2a00:1:2:3::1]:1"), RESP),
        InsertOutcome::Added
    );
    assert_eq!(
        rt6.heard_from(t(0), b, p("[2a00:1:2:3:ffff::9]:1"), RESP),
        InsertOutcome::Rejected(RejectReason::SubnetTaken)
    );
    assert_eq!(
        rt6.heard_from(t(0), b, p("[2a00:1:2:4::1]:1"), RESP),
        InsertOutcome::Added
    );
    ok(&rt6);

    // Off (loopback tests): any number per subnet.
    let mut rt = table(RoutingConfig {
        one_per_subnet: false,
        ..RoutingConfig::default()
    });
    for h in 1..=8u32 {
        let lo = SocketAddr::from(([127, 0, 0, 1], 6000 + h as u16));
        assert_eq!(
            rt.heard_from(t(0), id_at(NodeId::ZERO, 0, h), lo, RESP),
            InsertOutcome::Added
        );
    }
    assert_eq!(rt.len(), 8);
    ok(&rt);
}

#[test]
fn changing_ids_are_suspect() {
    let mut rt = table(RoutingConfig::default());
    let (x, y, z) = (
        id_at(NodeId::ZERO, 0, 1),
        id_at(NodeId::ZERO, 0, 2),
        id_at(NodeId::ZERO, 0, 3),
    );
    assert_eq!(rt.heard_from(t(0), x, v4(1), RESP), InsertOutcome::Added);
    // A query (spoofable) claiming another id: rejected, and x stays.
    assert_eq!(
        rt.heard_from(t(1), y, v4(1), Contact::Query),
        InsertOutcome::Rejected(RejectReason::SuspectId)
    );
    assert_eq!(rt.get(&v4(1)).map(|e| e.id), Some(x));
    assert_eq!(rt.heard_from(t(2), x, v4(1), RESP), InsertOutcome::Updated);
    // A response with another id proves the change: x goes, y is not trusted yet.
    assert_eq!(
        rt.heard_from(t(3), y, v4(1), RESP),
        InsertOutcome::Rejected(RejectReason::SuspectId)
    );
    assert!(rt.get(&v4(1)).is_none());
    assert_eq!(
        rt.heard_from(t(4), y, v4(1), RESP),
        InsertOutcome::Rejected(RejectReason::SuspectId)
    );
    // It keeps changing: the window restarts.
    assert_eq!(
        rt.heard_from(t(100), z, v4(1), RESP),
        InsertOutcome::Rejected(RejectReason::SuspectId)
    );
    assert_eq!(
        rt.heard_from(t(100 + 899), z, v4(1), RESP),
        InsertOutcome::Rejected(RejectReason::SuspectId)
    );
    // Stable for the whole window: accepted.
    assert_eq!(
        rt.heard_from(t(100 + 900), z, v4(1), RESP),
        InsertOutcome::Added
    );
    assert_eq!(rt.stats().rejected_suspect, 5);
    assert_eq!(rt.stats().id_changes, 3);
    ok(&rt);
}

#[test]
fn suspect_list_is_bounded() {
    let mut rt = table(RoutingConfig {
        max_suspects: 4,
        ..RoutingConfig::default()
    });
    for i in 0..20 {
        let a = v4(i);
        rt.heard_from(t(i as u64), id_at(NodeId::ZERO, 1, i), a, RESP);
        rt.heard_from(t(i as u64), id_at(NodeId::ZERO, 2, i), a, RESP);
        ok(&rt);
    }
    assert_eq!(rt.stats().id_changes, 20);
}

#[test]
fn an_id_lives_at_one_address() {
    let mut rt = table(RoutingConfig::default());
    let x = id_at(NodeId::ZERO, 0, 1);
    rt.heard_from(t(0), x, v4(1), RESP);
    assert_eq!(
        rt.heard_from(t(1), x, v4(2), Contact::Query),
        InsertOutcome::Rejected(RejectReason::IdInUse)
    );
    assert_eq!(
        rt.heard_from(t(1), x, v4(2), RESP),
        InsertOutcome::Rejected(RejectReason::IdInUse)
    );
    // Once the old address has gone quiet, a response from the new one moves it.
    assert_eq!(rt.heard_from(t(1000), x, v4(2), RESP), InsertOutcome::Added);
    assert!(rt.get(&v4(1)).is_none());
    assert_eq!(rt.len(), 1);
    assert_eq!(rt.stats().rejected_id_in_use, 2);
    ok(&rt);
}

#[test]
fn bep42_verified_node_displaces_unverified_questionable() {
    let mut rng = Rng::new(9);
    let ip: IpAddr = "81.2.3.4".parse().unwrap();
    let vid = bep42_node_id(ip, &mut rng);
    // Our own id differs from vid in the top bit, so vid lands in bucket 0.
    let own = NodeId(flip(vid.0, 0));
    let mut rt = RoutingTable::new(own, Family::V4, RoutingConfig::default());
    let mut far = Vec::new();
    for i in 0..8 {
        let id = id_at(own, 0, i + 1);
        assert_eq!(
            rt.heard_from(t(i as u64), id, v4(i), RESP),
            InsertOutcome::Added
        );
        assert!(!rt.get(&v4(i)).unwrap().verified);
        far.push(id);
    }
    rt.heard_from(t(0), id_at(own, 5, 0), v4(100), RESP);
    assert!(rt.bucket_count() >= 2);
    let now = t(20 * 60);
    let va = SocketAddr::new(ip, 6881);
    // A query proves nothing: cached.
    assert_eq!(
        rt.heard_from(now, vid, va, Contact::Query),
        InsertOutcome::Cached
    );
    // An answer from a verified node displaces the least recently seen unverified one.
    assert_eq!(rt.heard_from(now, vid, va, RESP), InsertOutcome::Added);
    assert!(rt.get(&va).unwrap().verified);
    assert!(rt.get(&v4(0)).is_none());
    assert_eq!(rt.stats().displaced_unverified, 1);
    // The displaced node waits in the cache.
    assert!(rt.cached_nodes().any(|e| e.addr == v4(0)));
    ok(&rt);
}

#[test]
fn max_nodes_caps_the_table() {
    let mut rt = table(RoutingConfig {
        max_nodes: 12,
        ..RoutingConfig::default()
    });
    let mut rng = Rng::new(3);
    for i in 0..200 {
        rt.heard_from(t(0), NodeId::random(&mut rng), v4(i), Contact::Query);
        ok(&rt);
    }
    assert!(rt.len() + rt.cached_len() <= 12);
    assert!(rt.stats().rejected_table_full > 0);
}

#[test]
fn refresh_targets_fall_in_stale_buckets() {
    let mut rt = table(RoutingConfig::default());
    let mut rng = Rng::new(1);
    for i in 0..400 {
        rt.heard_from(t(0), NodeId::random(&mut rng), v4(i), RESP);
    }
    for d in 1..12 {
        for i in 0..4 {
            let n = 1000 + d * 10 + i;
            rt.heard_from(t(0), id_at(NodeId::ZERO, d, n), v4(n), RESP);
        }
    }
    let nb = rt.bucket_count();
    assert!(nb > 10);
    let mut out = Vec::new();
    rt.refresh_targets(t(60), &mut rng, &mut out);
    assert!(out.is_empty(), "nothing is stale yet");
    assert_eq!(rt.next_maintenance(), Some(t(15 * 60)));
    let now = t(15 * 60);
    rt.refresh_targets(now, &mut rng, &mut out);
    assert_eq!(out.len(), nb);
    for (i, target) in out.iter().enumerate() {
        assert_eq!(rt.bucket_of(target), i, "target {i} out of its bucket");
        let (lo, hi) = rt.bucket_range(i);
        assert!(lo <= target.0 && target.0 <= hi);
    }
    out.clear();
    rt.refresh_targets(now, &mut rng, &mut out);
    assert!(out.is_empty());
    // A bucket a node answers in is fresh again; the others are due a refresh.
    let (id3, a3) = rt
        .nodes()
        .find(|e| rt.bucket_of(&e.id) == 3)
        .map(|e| (e.id, e.addr))
        .unwrap();
    assert_eq!(
        rt.heard_from(t(20 * 60), id3, a3, RESP),
        InsertOutcome::Updated
    );
    rt.refresh_targets(t(30 * 60), &mut rng, &mut out);
    assert_eq!(out.len(), nb - 1);
    assert!(out.iter().all(|x| rt.bucket_of(x) != 3));
    ok(&rt);
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

#[test]
fn closest_matches_brute_force() {
    for cfg in [RoutingConfig::default(), RoutingConfig::wide(256)] {
        let mut rt = table(RoutingConfig {
            one_per_subnet: false,
            ..cfg
        });
        let mut rng = Rng::new(11);
        for i in 0..3000 {
            rt.heard_from(t(0), NodeId::random(&mut rng), v4(i), RESP);
        }
        // Some bad nodes, which closest skips.
        let addrs: Vec<SocketAddr> = rt.nodes().map(|e| e.addr).step_by(7).collect();
        for a in addrs {
            rt.failed(t(1), a);
            rt.failed(t(1), a);
        }
        ok(&rt);
        let mut out = Vec::new();
        for _ in 0..300 {
            let target: [u8; 20] = rng.bytes();
            for n in [1, 8, 20, 5000] {
                rt.closest(&target, n, &mut out);
                let got: Vec<NodeId> = out.iter().map(|e| e.id).collect();
                assert_eq!(got, brute_closest(&rt, &target, n));
            }
        }
        // Targets that are in the table, and our own id.
        let ids: Vec<NodeId> = rt.nodes().map(|e| e.id).take(20).collect();
        for id in ids.iter().chain([NodeId::ZERO].iter()) {
            rt.closest(&id.0, 8, &mut out);
            let got: Vec<NodeId> = out.iter().map(|e| e.id).collect();
            assert_eq!(got, brute_closest(&rt, &id.0, 8));
        }
        rt.closest(&[0; 20], 0, &mut out);
        assert!(out.is_empty());
    }
}

#[test]
fn wide_buckets_hold_thousands() {
    let mut rt = table(RoutingConfig::wide(4096));
    let mut rng = Rng::new(5);
    for i in 0..40_000u32 {
        let a = SocketAddr::from(([30 + (i >> 16) as u8, (i >> 8) as u8, i as u8, 1], 6881));
        rt.heard_from(t(0), NodeId::random(&mut rng), a, RESP);
    }
    assert!(rt.len() >= 8000, "only {} nodes", rt.len());
    assert!(rt.len() + rt.cached_len() <= rt.config().max_nodes);
    ok(&rt);
}

#[test]
fn events_are_bounded() {
    let mut rt = table(RoutingConfig {
        max_events: 3,
        ..RoutingConfig::default()
    });
    for i in 0..5 {
        rt.heard_from(t(0), id_at(NodeId::ZERO, 0, i), v4(i), RESP);
    }
    assert_eq!(rt.stats().events_dropped, 2);
    ok(&rt);
    let mut ev = Vec::new();
    rt.take_events(&mut ev);
    assert_eq!(ev.len(), 3);
    rt.take_events(&mut ev);
    assert_eq!(ev.len(), 3);
}

#[test]
fn next_maintenance_reports_due_pings() {
    let mut rt = table(RoutingConfig::default());
    assert_eq!(rt.next_maintenance(), Some(t(15 * 60)));
    rt.heard_from(t(5), id_at(NodeId::ZERO, 0, 1), v4(1), Contact::Query);
    // A node that never answered is due a ping right away.
    assert_eq!(rt.next_maintenance(), Some(t(5)));
    assert_eq!(rt.next_to_ping(t(5)).map(|x| x.1), Some(v4(1)));
    assert_eq!(rt.next_maintenance(), Some(t(5 + 15 * 60)));
    rt.heard_from(t(6), id_at(NodeId::ZERO, 0, 1), v4(1), RESP);
    assert_eq!(rt.next_maintenance(), Some(t(6 + 15 * 60)));
    assert_eq!(rt.next_to_ping(t(6)), None);
    assert_eq!(rt.next_to_ping(t(6 + 15 * 60)).map(|x| x.1), Some(v4(1)));
}

#[test]
fn same_inputs_same_table() {
    let run = || {
        let mut rt = table(RoutingConfig::wide(64));
        let mut rng = Rng::new(77);
        let mut ev = Vec::new();
        for i in 0..3000u32 {
            let id = NodeId::random(&mut rng);
            let how = if i % 3 == 0 { Contact::Query } else { RESP };
            rt.heard_from(t(i as u64), id, v4(i % 1500), how);
            if i % 7 == 0 {
                if let Some((_, a)) = rt.next_to_ping(t(i as u64)) {
                    rt.failed(t(i as u64), a);
                }
            }
        }
        let mut targets = Vec::new();
        rt.refresh_targets(t(10_000), &mut rng, &mut targets);
        rt.take_events(&mut ev);
        let nodes: Vec<NodeEntry> = rt.nodes().cloned().collect();
        (nodes, ev, targets, rt.stats().clone())
    };
    assert_eq!(run(), run());
}

#[test]
fn split_trims_the_new_bucket_to_its_capacity() {
    // Depth 0 holds 16, deeper buckets 4: the first split leaves more than 4 near nodes.
    let mut rt = table(RoutingConfig {
        k: 4,
        bucket_sizes: vec![16],
        ..RoutingConfig::default()
    });
    for i in 0..8 {
        rt.heard_from(t(i), id_at(NodeId::ZERO, 0, i as u32), v4(i as u32), RESP);
        rt.heard_from(
            t(i),
            id_at(NodeId::ZERO, 3, 100 + i as u32),
            v4(100 + i as u32),
            RESP,
        );
    }
    assert_eq!((rt.len(), rt.bucket_count()), (16, 1));
    rt.heard_from(t(20), id_at(NodeId::ZERO, 0, 50), v4(50), RESP);
    // Split until the near nodes' bucket (depth 3) is no longer the last one.
    assert_eq!(rt.bucket_count(), 5);
    ok(&rt);
    // The far bucket kept its 8 and took the newcomer; the near ones were trimmed,
    // least recently seen first, into the cache.
    assert_eq!(rt.len(), 9 + 4);
    assert_eq!(rt.cached_len(), 4);
    for i in 0..4 {
        assert!(rt.get(&v4(100 + i)).is_none());
        assert!(rt.get(&v4(104 + i)).is_some());
    }
}

#[test]
fn finished_queries_are_counted_per_node_and_method() {
    use crate::rpc::Method;
    let mut rt = table(RoutingConfig::default());
    let id = id_at(NodeId::ZERO, 0, 1);
    let a = v4(1);
    // Not in the table: nothing to count.
    rt.count_query(a, Method::Ping, true);
    assert_eq!(rt.heard_from(t(0), id, a, RESP), InsertOutcome::Added);
    rt.count_query(a, Method::SampleInfohashes, true);
    rt.count_query(a, Method::SampleInfohashes, false);
    rt.count_query(a, Method::GetPeers, true);
    let c = rt.get(&a).map(|e| e.counts).unwrap_or_default();
    assert_eq!(c.queries, [0, 0, 1, 0, 2]);
    assert_eq!(c.responses, [0, 0, 1, 0, 1]);
    // An update keeps the counts.
    rt.heard_from(t(5), id, a, RESP);
    assert_eq!(rt.get(&a).map(|e| e.counts), Some(c));
    ok(&rt);
}
