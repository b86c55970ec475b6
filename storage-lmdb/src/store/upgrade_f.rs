//! Schema 5 → 6, helper F's step: every stored torrent classified and its facets
//! written (`facets` and `facet_terms`, created empty by `Store::open`), in the
//! upgrade's write transaction (see `migrate`).

use heed::RwTxn;

use super::{facets, Dbs, Result};

/// Classifies every stored torrent; returns how many were classified.
pub(super) fn upgrade(txn: &mut RwTxn, dbs: &Dbs) -> Result<u64> {
    Ok(facets::classify_all(txn, dbs)?.torrents)
}

#[cfg(test)]
mod tests {
    use heed::types::Bytes;
    use heed::{CommitOrAbort, DatabaseFlags};

    use super::super::*;
    use crate::types::*;

    fn torrent(n: u8, name: &str, files: &[(&str, u64)]) -> Op {
        Op::Torrent(Box::new(TorrentInput {
            infohash: [n; 20],
            kind: HashKind::V1,
            v2: None,
            name: name.into(),
            total_size: files.iter().map(|f| f.1).sum(),
            piece_length: 1 << 20,
            piece_count: 1,
            private: false,
            source: None,
            files: files
                .iter()
                .map(|(p, s)| FileEntry {
                    path: (*p).into(),
                    size: *s,
                })
                .collect(),
            discovered_at: 1_700_000_000 + u64::from(n),
            sources: Sources::SAMPLE,
            seeders: None,
            leechers: None,
            scraped_at: None,
            info: None,
        }))
    }

    /// The tables of schema 5 (no `facets`, no `facet_terms`).
    const SCHEMA_5_TABLES: [&str; 14] = [
        "torrents",
        "files",
        "info",
        "terms",
        "by_time",
        "ids",
        "peers",
        "nodes",
        "sessions",
        "requests",
        "meta",
        "by_size",
        "ids_delta",
        "ids_v2",
    ];

    /// Copies the schema 5 tables of the store at `from` into a new environment at
    /// `to` made the way schema 5 made it (its 14 tables only, `terms` DUP_SORT),
    /// with version 5 in `meta`.
    fn make_schema_5(from: &StoreOptions, to: &StoreOptions) {
        let store = Store::open(from.clone()).unwrap();
        let dst = open_env(to).unwrap();
        store
            .read(|rtxn, dbs| {
                let src = [
                    dbs.torrents,
                    dbs.files,
                    dbs.info,
                    dbs.terms,
                    dbs.by_time,
                    dbs.ids,
                    dbs.peers,
                    dbs.nodes,
                    dbs.sessions,
                    dbs.requests,
                    dbs.meta,
                    dbs.by_size,
                    dbs.ids_delta,
                    dbs.ids_v2,
                ];
                let wtxn = dst.write_txn().unwrap();
                dst.create_databases_and_commit(wtxn, |o, w| {
                    let mut last = None;
                    for (i, name) in SCHEMA_5_TABLES.iter().enumerate() {
                        let mut opts = o.database_options().types::<Bytes, Bytes>();
                        opts.name(name);
                        if *name == "terms" {
                            opts.flags(DatabaseFlags::DUP_SORT);
                        }
                        let d = opts.create(w)?;
                        for r in src[i].iter(rtxn)? {
                            let (k, v) = r?;
                            if *name == "meta" && k == K_SCHEMA {
                                d.put(w, k, &5u32.to_le_bytes())?;
                            } else {
                                d.put(w, k, v)?;
                            }
                        }
                        last = Some(d);
                    }
                    Ok::<_, heed::Error>(CommitOrAbort::<_, ()>::Commit(last.unwrap()))
                })
                .unwrap();
                Ok(())
            })
            .unwrap();
        drop(store);
        wait_closed(&from.path);
        dst.prepare_for_closing().wait();
    }

    /// (schema version, whether a `facets` table exists and how many entries it has)
    /// of the environment at `opts`, read raw.
    fn raw_state(opts: &StoreOptions) -> (u32, Option<u64>) {
        let env = open_env(opts).unwrap();
        let rtxn = env.read_txn().unwrap();
        let (meta, facets): (Db, Option<Db>) = env
            .open_databases_and_commit(rtxn, |o, r| {
                let m = o.open_database::<Bytes, Bytes>(r, Some("meta"))?;
                let f = o.open_database::<Bytes, Bytes>(r, Some("facets"))?;
                Ok::<_, heed::Error>(CommitOrAbort::<_, ()>::Commit((m.unwrap(), f)))
            })
            .unwrap()
            .unwrap_commit();
        let rtxn = env.read_txn().unwrap();
        let v = meta.get(&rtxn, K_SCHEMA).unwrap().unwrap();
        let v = u32::from_le_bytes(v.try_into().unwrap());
        let n = facets.map(|f| f.len(&rtxn).unwrap());
        drop(rtxn);
        env.prepare_for_closing().wait();
        (v, n)
    }

    /// A schema 5 database (no facet tables) is upgraded on open: every torrent
    /// already stored is classified, and category filters find them. An upgrade cut
    /// short before its commit leaves the version at 5 and no facets; the next open
    /// finishes it.
    #[test]
    fn schema_5_torrents_are_classified_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let a = StoreOptions::new(dir.path().join("current"));
        let b = StoreOptions::new(dir.path().join("schema5"));
        let store = Store::open(a.clone()).unwrap();
        store
            .apply_batch(&[
                torrent(
                    1,
                    "The.Matrix.1999.1080p.BluRay.x264-GRP",
                    &[("The.Matrix.1999.1080p.BluRay.x264-GRP.mkv", 8_000_000_000)],
                ),
                torrent(
                    2,
                    "Some.Show.S02E05.720p.HDTV.x264-GRP",
                    &[("Some.Show.S02E05.720p.HDTV.x264-GRP.mkv", 900_000_000)],
                ),
                torrent(
                    3,
                    "Band - Album (2004) [FLAC]",
                    &[("01 - One.flac", 30_000_000), ("02 - Two.flac", 30_000_000)],
                ),
                torrent(4, "Some Book Title", &[("Some Book Title.epub", 2_000_000)]),
            ])
            .unwrap();
        assert!(store.facets(&[1; 20]).unwrap().is_some());
        drop(store);
        wait_closed(&a.path);
        make_schema_5(&a, &b);
        assert_eq!(raw_state(&b), (5, None), "the fixture has no facet tables");

        // Interrupted: the version stays 5 and nothing is classified.
        migrate::FAIL_BEFORE_COMMIT.with(|f| f.set(true));
        let e = Store::open(b.clone()).unwrap_err();
        migrate::FAIL_BEFORE_COMMIT.with(|f| f.set(false));
        assert!(e.to_string().contains("upgrade interrupted"), "{e}");
        wait_closed(&b.path);
        assert_eq!(raw_state(&b), (5, Some(0)));

        // Upgraded.
        let store = Store::open(b.clone()).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let kind = |n: u8| store.facets(&[n; 20]).unwrap().map(|f| f.class.kind);
        use crate::classify::ContentKind as K;
        assert_eq!(kind(1), Some(K::Movie));
        assert_eq!(kind(2), Some(K::TvEpisode));
        assert_eq!(kind(3), Some(K::Music));
        assert_eq!(kind(4), Some(K::Ebook));
        let m = store.facets(&[1; 20]).unwrap().unwrap();
        assert_eq!(m.class.year, Some(1999));
        assert_eq!(m.category / 1000, 2);
        let names = |f: FacetFilter| -> Vec<String> {
            let mut v: Vec<String> = store
                .query(&SearchQuery::new("").facets(f))
                .unwrap()
                .hits
                .into_iter()
                .map(|h| h.name)
                .collect();
            v.sort();
            v
        };
        let cat = |c: &str| FacetFilter {
            category: Some(c.into()),
            attributes: vec![],
        };
        assert_eq!(
            names(cat("movie")),
            ["The.Matrix.1999.1080p.BluRay.x264-GRP"]
        );
        assert_eq!(names(cat("5000")), ["Some.Show.S02E05.720p.HDTV.x264-GRP"]);
        assert_eq!(names(cat("audio")), ["Band - Album (2004) [FLAC]"]);
        assert_eq!(names(cat("books")), ["Some Book Title"]);
        let tv = FacetFilter {
            category: Some("tv".into()),
            attributes: vec![
                ("season".into(), "2".into()),
                ("episode".into(), "5".into()),
            ],
        };
        assert_eq!(names(tv), ["Some.Show.S02E05.720p.HDTV.x264-GRP"]);
        // Written since the upgrade: classified too.
        store
            .apply_batch(&[torrent(
                5,
                "Other.Film.2010.2160p.WEB-DL.x265",
                &[("Other.Film.2010.2160p.WEB-DL.x265.mkv", 20_000_000_000)],
            )])
            .unwrap();
        assert_eq!(names(cat("movies")).len(), 2);
        assert!(store.integrity_check().unwrap().is_ok());
        // Opening again upgrades nothing.
        drop(store);
        wait_closed(&b.path);
        assert_eq!(raw_state(&b), (SCHEMA_VERSION, Some(5)));
    }
}
