//! The LMDB store through the shared ingest glue: what the tokio driver fetches
//! is stored, and a second run skips what is stored.

// The tokio library's test helpers (one copy, shared through the path).
#[path = "../../runtime-tokio/tests/common/mod.rs"]
mod common;
#[path = "../src/ingest.rs"]
#[allow(dead_code)]
mod ingest;
// The bitmagnet sink the ingest glue may feed.
#[path = "../src/sink.rs"]
#[allow(dead_code)]
mod sink;
// The content filter the ingest glue applies.
#[path = "../src/filter.rs"]
#[allow(dead_code)]
mod filter;

use std::time::Duration;

use common::{announce, crawler_config, serve, wait_for, Dht};
use ingest::Ingest;
use magnetar_core::testkit::{build_info, Behavior, FakeSeeder, InfoSpec};
use magnetar_storage::{Store, StoreOptions, WriterConfig};
use magnetar_tokio::Crawler;

#[tokio::test]
async fn fetched_torrents_land_in_lmdb_and_are_skipped_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreOptions::new(dir.path())).unwrap();
    let dht = Dht::start(6, 500).await;
    let info = build_info(&InfoSpec::many_files("album", 3, 200_000));
    let ih = FakeSeeder::new(info.clone().into(), Behavior::Honest).info_hash();
    let seeder = serve(info, Behavior::Honest).await;
    announce(&dht.addrs(), ih, seeder.port()).await;

    for run in 0..2 {
        let writer = store.writer(WriterConfig::default()).unwrap();
        let ingest = Ingest::new(store.clone(), writer);
        let (crawler, _events) =
            Crawler::spawn(crawler_config(20 + run), Some(Box::new(ingest))).unwrap();
        crawler.bootstrap(&[dht.router()]).await.unwrap();
        let snap = wait_for(
            Duration::from_secs(30),
            "the infohash to be handled",
            || {
                let c = crawler.clone();
                async move {
                    let s = c.stats().await.unwrap();
                    let done = if run == 0 {
                        s.stats.fetch.fetched >= 1
                    } else {
                        s.runtime.infohashes_known >= 1
                    };
                    done.then_some(s)
                }
            },
        )
        .await;
        crawler.shutdown().await.unwrap();
        if run == 1 {
            assert_eq!(
                snap.stats.fetch.started, 0,
                "a stored torrent is not fetched again"
            );
        }
        // Shutdown closed the writer: the torrent is durable and readable.
        let t = store.get(&ih.0).unwrap().expect("stored");
        assert_eq!(t.record.name, "album");
        assert_eq!(t.files.len(), 3);
        assert!(t.record.has_info);
    }
    assert!(
        !store.saved_nodes(10).unwrap().is_empty(),
        "nodes saved at shutdown"
    );
    dht.stop().await;
}
