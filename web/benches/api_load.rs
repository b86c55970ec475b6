//! API search under load: a store of N synthetic torrents, the real server on
//! loopback, C client threads on keep-alive connections asking
//! `/api/v1/search?q=…&limit=20` (one or two words of the synthetic vocabulary,
//! relevance order) for D seconds while a writer commits a batch of 1,000 new
//! torrents every 200 ms. Prints requests per second, p50/p99/max latency, the
//! batches committed meanwhile, and the transfer size of the search page. Then,
//! with the writer still running, where the time goes: the same queries on
//! `Store::search` from C threads without HTTP, and C clients asking an endpoint
//! that does no store work (a 404 from `/api/v1/`), each for D/2 seconds.
//!
//! `cargo bench -p magnetar-web --bench api_load -- [--torrents N] [--clients C] [--secs D]
//! [--order-mode M] [--compare 1]` (defaults 1,000,000, 32, 20, 0, 0; `--order-mode 3`
//! serves with the search before the relevance walk, every posting decoded;
//! `--compare 1` first runs the same load in mode 3, then in M, in the same process;
//! `--max-reads R` serves with `Limits::max_store_reads` R (default: the default
//! limit, twice the cores; 0: not limited);
//! `--compare-reads 1` first runs the same load, in M, against a second server
//! whose store reads are not limited (`max_store_reads` 0), in the same process).
//! The database is built in a temporary directory.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use magnetar_storage::synth::Synth;
use magnetar_storage::{Op, Store, StoreOptions};
use magnetar_web::{Access, Config, Limits, ServerCounters};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Reads one response (Content-Length framed); returns (status, body length).
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(u16, usize)> {
    buf.clear();
    let mut chunk = [0u8; 8192];
    let head_end;
    loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            head_end = p + 4;
            break;
        }
    }
    let head = std::str::from_utf8(&buf[..head_end])
        .ok()?
        .to_ascii_lowercase();
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))?
        .trim()
        .parse()
        .ok()?;
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((status, len))
}

fn main() {
    let n = arg("--torrents", 1_000_000);
    let clients = arg("--clients", 32) as usize;
    let secs = arg("--secs", 20);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreOptions::new(dir.path())).unwrap();
    let mut synth = Synth::new(1);
    let t0 = Instant::now();
    let mut done = 0u64;
    while done < n {
        let k = (n - done).min(10_000);
        let ops: Vec<Op> = (0..k)
            .map(|i| Op::Torrent(Box::new(synth.torrent(1_600_000_000 + done + i, false))))
            .collect();
        store.apply_batch(&ops).unwrap();
        done += k;
    }
    eprintln!("filled {n} torrents in {:.1} s", t0.elapsed().as_secs_f64());

    // Queries: one or two vocabulary words.
    let mut qs = Synth::new(2);
    let queries: Vec<String> = (0..1000)
        .map(|i| {
            if i % 2 == 0 {
                qs.word().to_string()
            } else {
                let a = qs.word().to_string();
                format!("{a} {}", qs.word())
            }
        })
        .collect();

    // The same queries straight on the store, one thread, no writer: what the
    // HTTP layer and concurrency add is the difference. First the search before the
    // relevance walk (order mode 3: every posting decoded), then the mode the
    // server runs with (`--order-mode`, default 0), in the same run.
    let mode = arg("--order-mode", 0) as usize;
    for m in [3, mode] {
        store.set_order_mode(m);
        let mut direct: Vec<Duration> = queries
            .iter()
            .map(|q| {
                let t = Instant::now();
                let r = store
                    .search(q, 20, 0, magnetar_storage::Order::Relevance)
                    .unwrap();
                std::hint::black_box(r);
                t.elapsed()
            })
            .collect();
        direct.sort();
        println!(
            "store.search directly (order mode {m}, 1 thread, no writer, the same {} queries): p50 {:.2} ms, p99 {:.2} ms, mean {:.3} ms",
            direct.len(),
            direct[direct.len() / 2].as_secs_f64() * 1e3,
            direct[direct.len() * 99 / 100].as_secs_f64() * 1e3,
            direct.iter().sum::<Duration>().as_secs_f64() * 1e3 / direct.len() as f64
        );
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut limits = Limits::default();
    limits.max_store_reads = arg("--max-reads", limits.max_store_reads as u64) as usize;
    let max_reads = limits.max_store_reads;
    let cfg = Config {
        access: Access::Open,
        limits,
        metrics: None,
    };
    // The same server with store reads not limited, for `--compare-reads`.
    let unlimited_listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let unlimited_addr: SocketAddr = unlimited_listener.local_addr().unwrap();
    let (stop_unlimited_tx, stop_unlimited_rx) = tokio::sync::oneshot::channel::<()>();
    let mut unlimited_cfg = cfg.clone();
    unlimited_cfg.limits.max_store_reads = 0;
    rt.spawn(magnetar_web::serve(
        unlimited_listener,
        store.clone(),
        unlimited_cfg,
        Arc::new(ServerCounters::default()),
        async {
            let _ = stop_unlimited_rx.await;
        },
    ));
    rt.spawn(magnetar_web::serve(
        listener,
        store.clone(),
        cfg,
        Arc::new(ServerCounters::default()),
        async {
            let _ = stop_rx.await;
        },
    ));

    // Transfer size of the search page for a common word.
    let page_bytes = |gzip: bool| {
        let mut s = TcpStream::connect(addr).unwrap();
        let enc = if gzip {
            "Accept-Encoding: gzip\r\n"
        } else {
            ""
        };
        write!(
            s,
            "GET /search?q={} HTTP/1.1\r\nHost: b\r\n{enc}\r\n",
            queries[0]
        )
        .unwrap();
        let mut buf = Vec::new();
        let mut raw = Vec::new();
        // Compressed answers are chunked: read what arrives within a short while.
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut chunk = [0u8; 65536];
        while let Ok(k) = s.read(&mut chunk) {
            if k == 0 {
                break;
            }
            raw.extend_from_slice(&chunk[..k]);
        }
        buf.extend_from_slice(&raw);
        buf.len()
    };
    let plain = page_bytes(false);
    let gz = page_bytes(true);

    let running = Arc::new(AtomicBool::new(true));
    let commits = Arc::new(AtomicU64::new(0));
    let writer = {
        let (running, commits, store) = (running.clone(), commits.clone(), store.clone());
        std::thread::spawn(move || {
            let mut synth = Synth::new(3);
            let mut at = 1_700_000_000u64;
            while running.load(Ordering::Relaxed) {
                let ops: Vec<Op> = (0..1000)
                    .map(|_| {
                        at += 1;
                        Op::Torrent(Box::new(synth.torrent(at, false)))
                    })
                    .collect();
                store.apply_batch(&ops).unwrap();
                commits.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    if arg("--compare", 0) == 1 {
        // The same load first with the search before the relevance walk (order
        // mode 3), writer running, then the measured run in `--order-mode`.
        store.set_order_mode(3);
        let c0 = commits.load(Ordering::Relaxed);
        let (mut lat, errors) = http_load(addr, &queries, clients, secs, "/api/v1/search", 200);
        lat.sort();
        let p =
            |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
        println!(
            "api_load before (order mode 3): {n} torrents, {clients} clients, {secs} s: {:.0} searches/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, errors {errors}, writer batches {}",
            lat.len() as f64 / secs as f64,
            p(0.5),
            p(0.99),
            p(1.0),
            commits.load(Ordering::Relaxed) - c0
        );
        store.set_order_mode(mode);
    }
    if arg("--compare-reads", 0) == 1 {
        // The same load against the server whose store reads are not limited.
        let c0 = commits.load(Ordering::Relaxed);
        let (mut lat, errors) = http_load(
            unlimited_addr,
            &queries,
            clients,
            secs,
            "/api/v1/search",
            200,
        );
        lat.sort();
        let p =
            |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
        println!(
            "api_load before (store reads not limited, order mode {mode}): {n} torrents, {clients} clients, {secs} s: {:.0} searches/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, errors {errors}, writer batches {}",
            lat.len() as f64 / secs as f64,
            p(0.5),
            p(0.99),
            p(1.0),
            commits.load(Ordering::Relaxed) - c0
        );
    }
    let c0 = commits.load(Ordering::Relaxed);
    let (mut lat, errors) = http_load(addr, &queries, clients, secs, "/api/v1/search", 200);
    let batches = commits.load(Ordering::Relaxed) - c0;
    // Where the time goes, the writer still running: the store alone from as many
    // threads, then HTTP alone (an endpoint that reads nothing).
    let (mut alone, _) = {
        let deadline = Instant::now() + Duration::from_secs(secs.div_ceil(2));
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let (queries, store) = (queries.clone(), store.clone());
                std::thread::spawn(move || {
                    let mut lat = Vec::new();
                    let mut i = c * 31;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        let r = store
                            .search(
                                &queries[i % queries.len()],
                                20,
                                0,
                                magnetar_storage::Order::Relevance,
                            )
                            .unwrap();
                        std::hint::black_box(r);
                        lat.push(t.elapsed());
                        i += 1;
                    }
                    lat
                })
            })
            .collect();
        let mut lat = Vec::new();
        for h in handles {
            lat.extend(h.join().unwrap());
        }
        (lat, 0)
    };
    let (mut bare, bare_errors) = http_load(
        addr,
        &queries,
        clients,
        secs.div_ceil(2),
        "/api/v1/none",
        404,
    );
    running.store(false, Ordering::Relaxed);
    writer.join().unwrap();
    let _ = stop_tx.send(());
    let _ = stop_unlimited_tx.send(());
    let pct = |lat: &mut Vec<Duration>, p: f64| {
        lat.sort();
        lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3
    };
    let half = secs.div_ceil(2) as f64;
    println!(
        "store.search directly, {clients} threads, no HTTP, writer running, {half} s: {:.0} searches/s, p50 {:.2} ms, p99 {:.2} ms",
        alone.len() as f64 / half,
        pct(&mut alone, 0.5),
        pct(&mut alone, 0.99),
    );
    println!(
        "HTTP alone (/api/v1/none, a 404 that reads nothing), {clients} clients, writer running, {half} s: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms, errors {bare_errors}",
        bare.len() as f64 / half,
        pct(&mut bare, 0.5),
        pct(&mut bare, 0.99),
    );
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "api_load (store reads at once: {max_reads}): {n} torrents, {clients} clients, {secs} s: {} searches, {:.0} searches/s, \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, errors {errors}, writer batches of 1000 committed meanwhile: {}",
        lat.len(),
        lat.len() as f64 / secs as f64,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        lat.last().unwrap().as_secs_f64() * 1e3,
        batches
    );
    println!(
        "search page (q={}, 50 rows): {plain} bytes on the wire, {gz} with gzip",
        queries[0]
    );
}

/// `clients` threads on keep-alive connections asking `path?q=<query>&limit=20` for
/// `secs` seconds; returns the latencies of the answers with status `want`, and the
/// number of other outcomes.
fn http_load(
    addr: SocketAddr,
    queries: &[String],
    clients: usize,
    secs: u64,
    path: &'static str,
    want: u16,
) -> (Vec<Duration>, u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let queries = queries.to_vec();
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let mut s = TcpStream::connect(addr).unwrap();
                let mut buf = Vec::new();
                let mut i = c * 31;
                while Instant::now() < deadline {
                    let q = queries[i % queries.len()].replace(' ', "+");
                    i += 1;
                    let t = Instant::now();
                    let req = format!("GET {path}?q={q}&limit=20 HTTP/1.1\r\nHost: b\r\n\r\n");
                    if s.write_all(req.as_bytes()).is_err() {
                        errors += 1;
                        s = TcpStream::connect(addr).unwrap();
                        continue;
                    }
                    match read_response(&mut s, &mut buf) {
                        Some((st, _)) if st == want => lat.push(t.elapsed()),
                        Some(_) => errors += 1,
                        None => {
                            errors += 1;
                            s = TcpStream::connect(addr).unwrap();
                        }
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h.join().unwrap();
        lat.extend(l);
        errors += e;
    }
    (lat, errors)
}
