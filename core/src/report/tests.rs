//! Tests of the status line and the metric data.
use super::*;
use crate::fault::Fault;

#[test]
fn status_line_rates() {
    let mut s = Stats::default();
    let a = StatusSample::new(Timestamp::ZERO, &s, 0);
    s.dht.datagrams_in = 1000;
    s.dht.datagrams_out = 500;
    s.fetch.started = 10;
    s.fetch.fetched = 3;
    s.fetch.failed = 2;
    s.nodes = 42;
    s.crawl.new_from_sample = 5;
    s.crawl.new_from_get_peers = 4;
    let b = StatusSample::new(Timestamp::from_secs(10), &s, 7);
    let line = status_line(&a, &b);
    assert!(line.contains("nodes 42"), "{line}");
    assert!(line.contains("in 100 out 50"), "{line}");
    assert!(line.contains("fetched 3 failed 2 in flight 5"), "{line}");
    assert!(line.contains("18.0 fetched/min"), "{line}");
    assert!(line.contains("seen 9 (get_peers 4) new 7"), "{line}");
    assert!(line.contains("sessions ok tcp 0/0 utp 0/0"), "{line}");
    s.fetch.transport.ok.insert(Transport::Utp, 1);
    s.fetch.transport.failed.insert(
        (Transport::Utp, crate::session::FailReason::ConnectTimeout),
        3,
    );
    s.fetch.transport.ok.insert(Transport::Tcp, 2);
    let c = StatusSample::new(Timestamp::from_secs(20), &s, 7);
    let line = status_line(&b, &c);
    assert!(
        line.contains("sessions ok tcp 2/2 (100%) utp 1/4 (25%)"),
        "{line}"
    );
    // A zero interval does not divide by zero.
    assert!(status_line(&b, &b).contains("in 0 out 0"));
}

fn find<'a>(ms: &'a [Metric], name: &str, label: Option<(&str, &str)>) -> Option<&'a Metric> {
    ms.iter().find(|m| {
        m.name == name
            && match label {
                None => m.labels.is_empty(),
                Some((k, v)) => m.labels == [(k.to_string(), v.to_string())],
            }
    })
}

#[test]
fn metrics_carry_values_labels_and_types() {
    let mut s = Stats::default();
    let empty = metrics(&s);
    assert!(find(
        &empty,
        "magnetar_dht_faults_total",
        Some(("fault", "RateLimited"))
    )
    .is_none());
    s.dht.fault(Fault::RateLimited);
    s.dht.queries_in.get_peers = 5;
    s.nodes = 42;
    let ms = metrics(&s);
    assert_eq!(ms.len(), empty.len() + 1);
    let q = find(
        &ms,
        "magnetar_dht_queries_in_total",
        Some(("method", "get_peers")),
    )
    .unwrap();
    assert_eq!((q.kind, q.value), (Kind::Counter, 5.0));
    let f = find(
        &ms,
        "magnetar_dht_faults_total",
        Some(("fault", "RateLimited")),
    )
    .unwrap();
    assert_eq!((f.kind, f.value), (Kind::Counter, 1.0));
    let n = find(&ms, "magnetar_nodes", None).unwrap();
    assert_eq!((n.kind, n.value), (Kind::Gauge, 42.0));
    // Counters follow the `_total` convention; one sample per name and labels.
    let mut seen = std::collections::BTreeSet::new();
    for m in &ms {
        assert!(
            m.kind == Kind::Gauge || m.name.ends_with("_total"),
            "{}",
            m.name
        );
        assert!(seen.insert((m.name.clone(), m.labels.clone())), "{m:?}");
    }
}

#[test]
fn families_group_samples_by_name_in_first_seen_order() {
    let fams = families([
        Metric::counter("a_total", "A.", 1).with_label("k", "x"),
        Metric::gauge("b", "B.", 2.5),
        Metric::counter("a_total", "Other help.", 3).with_label("k", "y"),
    ]);
    assert_eq!(fams.len(), 2);
    assert_eq!(
        (fams[0].name.as_str(), fams[0].help.as_str()),
        ("a_total", "A.")
    );
    assert_eq!(fams[0].kind, Kind::Counter);
    let values: Vec<f64> = fams[0].samples.iter().map(|s| s.value).collect();
    assert_eq!(values, [1.0, 3.0]);
    assert_eq!(
        fams[0].samples[1].labels,
        [("k".to_string(), "y".to_string())]
    );
    assert_eq!((fams[1].name.as_str(), fams[1].kind), ("b", Kind::Gauge));
    // Every core family has its samples, in order.
    let ms = metrics(&Stats::default());
    let fams = families(ms.clone());
    let flat: Vec<&str> = fams
        .iter()
        .flat_map(|f| f.samples.iter().map(move |_| f.name.as_str()))
        .collect();
    let names: Vec<&str> = ms.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(flat, names);
}
