//! Content filters in the store (issue 20 §2): tombstones, hidden torrents, removal.

use magnetar_storage::synth::Synth;
use magnetar_storage::*;

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(StoreOptions::new(dir.path().join("db"))).unwrap()
}

fn ih(n: u32) -> InfoHash {
    let mut h = [0u8; 20];
    h[..4].copy_from_slice(&n.to_be_bytes());
    h[19] = 0xcd;
    h
}

fn torrent(n: u32, name: &str, at: u64) -> TorrentInput {
    TorrentInput {
        infohash: ih(n),
        kind: HashKind::V1,
        v2: None,
        name: name.into(),
        total_size: 100 + u64::from(n),
        piece_length: 1 << 18,
        piece_count: 4,
        private: false,
        source: None,
        files: vec![FileEntry {
            path: format!("{name}/file {n}.bin"),
            size: 100 + u64::from(n),
        }],
        discovered_at: at,
        sources: Sources::SAMPLE,
        seeders: None,
        leechers: None,
        scraped_at: None,
        info: Some(format!("d4:name{}:{}e", name.len(), name).into_bytes()),
    }
}

fn op(t: TorrentInput) -> Op {
    Op::Torrent(Box::new(t))
}

fn found(store: &Store, q: &str) -> Vec<InfoHash> {
    let mut v: Vec<InfoHash> = store
        .search(q, 100, 0, Order::Relevance)
        .unwrap()
        .hits
        .iter()
        .map(|h| h.infohash)
        .collect();
    v.sort();
    v
}

fn exported(store: &Store) -> Vec<String> {
    let mut out = Vec::new();
    store.export_jsonl(&mut out, None).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| l[l.find("\"infohash\":\"").unwrap() + 12..][..40].to_string())
        .collect()
}

fn assert_sound(store: &Store) {
    let rep = store.integrity_check().unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
}

#[test]
fn a_tombstoned_infohash_is_never_stored_and_removal_takes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    // Shared words so that removal rewrites blocks holding other torrents too.
    let ops: Vec<Op> = (1..=50)
        .map(|n| {
            op(torrent(
                n,
                &format!("common words item{n}"),
                1000 + u64::from(n),
            ))
        })
        .collect();
    store.apply_batch(&ops).unwrap();
    assert_eq!(found(&store, "common").len(), 50);
    let mark = FilterMark {
        at: 5000,
        label: "delete".into(),
    };
    let rep = store
        .remove_torrents(&[ih(7), ih(9999)], Some(&mark))
        .unwrap();
    assert_eq!((rep.removed, rep.not_stored, rep.tombstoned), (1, 1, 2));
    assert_eq!(store.count().unwrap(), 49);
    assert!(store.get(&ih(7)).unwrap().is_none());
    assert!(store.info_dict(&ih(7)).unwrap().is_none());
    assert!(!found(&store, "common").contains(&ih(7)));
    assert!(found(&store, "item7").is_empty());
    assert_eq!(found(&store, "item8"), vec![ih(8)]);
    assert_eq!(store.tombstone(&ih(7)).unwrap(), Some(mark.clone()));
    assert_sound(&store);
    // Announced again (a later batch, or an import): not stored.
    let r = store
        .apply_batch(&[op(torrent(7, "common words item7", 6000))])
        .unwrap();
    assert_eq!((r.torrents_new, r.tombstoned), (0, 1));
    assert!(store.get(&ih(7)).unwrap().is_none());
    // Removed without a tombstone (prune): it may come back.
    let rep = store.remove_torrents(&[ih(8)], None).unwrap();
    assert_eq!((rep.removed, rep.tombstoned), (1, 0));
    assert_sound(&store);
    let r = store
        .apply_batch(&[op(torrent(8, "common words item8", 7000))])
        .unwrap();
    assert_eq!(r.torrents_new, 1);
    assert_eq!(found(&store, "item8"), vec![ih(8)]);
    assert_eq!(
        store.filter_totals().unwrap(),
        FilterTotals {
            tombstones: 2,
            hidden: 0
        }
    );
    assert_sound(&store);
}

#[test]
fn a_tombstone_op_removes_a_stored_torrent_and_wins_in_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store
        .apply_batch(&[
            op(torrent(1, "alpha one", 10)),
            op(torrent(2, "alpha two", 11)),
        ])
        .unwrap();
    let t = |n| Op::Tombstone {
        infohash: ih(n),
        at: 20,
        label: "spam".into(),
    };
    // One stored, one arriving in the same batch after its tombstone.
    let r = store
        .apply_batch(&[t(1), t(3), op(torrent(3, "alpha three", 21))])
        .unwrap();
    assert_eq!((r.torrents_new, r.tombstoned), (0, 1));
    assert_eq!(found(&store, "alpha"), vec![ih(2)]);
    assert_eq!(store.count().unwrap(), 1);
    assert_sound(&store);
}

#[test]
fn hidden_torrents_are_stored_but_never_searched_listed_or_exported() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let hide = |n| Op::Hide {
        infohash: ih(n),
        at: 20,
        label: "no-adult".into(),
    };
    // A mark before its torrent (as the crawler sends them), in one batch and
    // across two.
    store
        .apply_batch(&[hide(1), op(torrent(1, "beta hidden", 10))])
        .unwrap();
    store.apply_batch(&[hide(2)]).unwrap();
    store
        .apply_batch(&[
            op(torrent(2, "beta hidden too", 11)),
            op(torrent(3, "beta shown", 12)),
        ])
        .unwrap();
    assert_eq!(store.count().unwrap(), 3);
    assert!(store.get(&ih(1)).unwrap().is_some());
    assert_eq!(found(&store, "beta"), vec![ih(3)]);
    assert!(found(&store, "hidden").is_empty());
    let recent: Vec<InfoHash> = store
        .recent(10)
        .unwrap()
        .iter()
        .map(|r| r.infohash)
        .collect();
    assert_eq!(recent, vec![ih(3)]);
    assert_eq!(exported(&store), vec![to_hex(&ih(3))]);
    assert_eq!(
        store.hidden_mark(&ih(1)).unwrap().unwrap().label,
        "no-adult"
    );
    assert_sound(&store);
    // Hiding a stored torrent (filter apply) takes its postings away.
    let n = store
        .hide_torrents(&[(
            ih(3),
            FilterMark {
                at: 30,
                label: "later".into(),
            },
        )])
        .unwrap();
    assert_eq!(n, 1);
    assert!(found(&store, "beta").is_empty());
    assert!(store.recent(10).unwrap().is_empty());
    assert_sound(&store);
    // Removing a hidden torrent takes its mark too.
    store.remove_torrents(&[ih(1)], None).unwrap();
    assert!(store.hidden_mark(&ih(1)).unwrap().is_none());
    assert_sound(&store);
}

/// Removal on a larger synthetic store keeps every table consistent and leaves
/// the other torrents found by their words.
#[test]
fn removing_many_keeps_the_index_sound() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut s = Synth::new(7);
    let ts: Vec<TorrentInput> = (0..2000).map(|i| s.torrent(1000 + i, i % 2 == 0)).collect();
    let first_word = ts[1].name.split_whitespace().next().unwrap().to_lowercase();
    store
        .apply_batch(&ts.iter().cloned().map(op).collect::<Vec<_>>())
        .unwrap();
    let gone: Vec<InfoHash> = ts.iter().step_by(3).map(|t| t.infohash).collect();
    let rep = store.remove_torrents(&gone, None).unwrap();
    assert_eq!(rep.removed, gone.len() as u64);
    assert_eq!(store.count().unwrap(), 2000 - gone.len() as u64);
    assert_sound(&store);
    let hits = store
        .search(&first_word, 1000, 0, Order::Relevance)
        .unwrap();
    assert!(hits.hits.iter().all(|h| !gone.contains(&h.infohash)));
    assert!(hits.hits.iter().any(|h| h.infohash == ts[1].infohash));
    let mut n = 0;
    store
        .for_each_torrent(|_, _, _| {
            n += 1;
            true
        })
        .unwrap();
    assert_eq!(n, 2000 - gone.len());
}

/// Hidden, then unhidden: the postings come back where they belong (blocks in the
/// middle of terms are rewritten and split), search finds the same as before.
#[test]
fn unhiding_restores_the_postings() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut s = Synth::new(11);
    let ts: Vec<TorrentInput> = (0..3000).map(|i| s.torrent(1000 + i, false)).collect();
    store
        .apply_batch(&ts.iter().cloned().map(op).collect::<Vec<_>>())
        .unwrap();
    let words: Vec<String> = ts
        .iter()
        .step_by(97)
        .filter_map(|t| t.name.split_whitespace().next())
        .map(|w| w.to_lowercase())
        .collect();
    let before: Vec<Vec<InfoHash>> = words.iter().map(|w| found(&store, w)).collect();
    let marks: Vec<(InfoHash, FilterMark)> = ts
        .iter()
        .step_by(2)
        .map(|t| {
            (
                t.infohash,
                FilterMark {
                    at: 1,
                    label: "x".into(),
                },
            )
        })
        .collect();
    assert_eq!(store.hide_torrents(&marks).unwrap(), 1500);
    assert_sound(&store);
    let hidden: Vec<Vec<InfoHash>> = words.iter().map(|w| found(&store, w)).collect();
    assert_ne!(hidden, before);
    let ihs: Vec<InfoHash> = marks.iter().map(|m| m.0).collect();
    assert_eq!(store.unhide_torrents(&ihs).unwrap(), 1500);
    assert_sound(&store);
    let after: Vec<Vec<InfoHash>> = words.iter().map(|w| found(&store, w)).collect();
    assert_eq!(after, before);
    assert_eq!(store.filter_totals().unwrap().hidden, 0);
}

/// Facets and filters together: a filter without words (every torrent with an
/// attribute) leaves hidden torrents out, and a removed torrent takes its facets and
/// facet postings with it.
#[test]
fn category_listings_leave_hidden_and_removed_torrents_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let ops: Vec<Op> = (1..=6)
        .map(|n| {
            op(torrent(
                n,
                &format!("Film Number {n} 2019 1080p BluRay x264"),
                10 + u64::from(n),
            ))
        })
        .collect();
    store.apply_batch(&ops).unwrap();
    let movies = |store: &Store| -> Vec<InfoHash> {
        let q = SearchQuery::new("").page(0, 100).facets(FacetFilter {
            category: None,
            attributes: vec![("resolution".into(), "1080p".into())],
        });
        let mut v: Vec<InfoHash> = store
            .query(&q)
            .unwrap()
            .hits
            .iter()
            .map(|h| h.infohash)
            .collect();
        v.sort();
        v
    };
    assert_eq!(movies(&store), (1..=6).map(ih).collect::<Vec<_>>());
    store
        .hide_torrents(&[(
            ih(2),
            FilterMark {
                at: 30,
                label: "h".into(),
            },
        )])
        .unwrap();
    store.remove_torrents(&[ih(4)], None).unwrap();
    assert!(store.facets(&ih(4)).unwrap().is_none());
    assert!(store.facets(&ih(2)).unwrap().is_some());
    assert_eq!(movies(&store), vec![ih(1), ih(3), ih(5), ih(6)]);
    // With words, too.
    let q = SearchQuery::new("film").page(0, 100).facets(FacetFilter {
        category: None,
        attributes: vec![("resolution".into(), "1080p".into())],
    });
    assert_eq!(store.query(&q).unwrap().hits.len(), 4);
    assert_sound(&store);
}
