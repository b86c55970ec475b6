//! `crawl --sink bitmagnet URL`: every torrent the crawler stores is also sent to
//! a running bitmagnet's `/import` endpoint, so bitmagnet users can put magnetar
//! in front of their index (issue 21 §5).
//!
//! # The format
//! bitmagnet's import endpoint (`POST /import`, its "Import" guide and its
//! importer's `Item`) reads a body of JSON objects, one per line, each decoded by
//! Go's `encoding/json` into its item (field names matched case-insensitively;
//! unknown fields ignored). Per line this sink sends:
//!
//! | field | JSON type | value |
//! |---|---|---|
//! | `infoHash` | string | 40 lowercase hex digits (required: bitmagnet parses it as a 20-byte id) |
//! | `name` | string | the torrent's name |
//! | `size` | number | total size in bytes (a Go `uint`: non-negative integer) |
//! | `private` | boolean | the info dict's `private` flag |
//! | `source` | string | `magnetar` (bitmagnet keys the torrent's source by it) |
//! | `publishedAt` | string | discovery time, RFC 3339 UTC (`2023-11-14T22:13:20Z`); left out past year 9999 |
//!
//! No file list: bitmagnet's import cannot take one (its guide says so); its own
//! crawler adds files when it meets the torrent. A batch of lines is one POST
//! (`Content-Type: application/json`); bitmagnet answers 200 and
//! `import complete` when every line was taken.
//!
//! # Never blocking the crawl
//! [`BitmagnetSink::offer`] only appends a line to a bounded queue (a mutex held
//! for a push): beyond the bound the line is dropped and counted. A thread of its
//! own POSTs batches of up to `max_batch` lines (after `max_delay` at most), and
//! when the receiver is down or answers 5xx/408/429 retries the same batch with
//! exponential backoff (nothing is lost while the queue has room: lines keep
//! queueing behind it). A 4xx other than 408/429 means bitmagnet refused the
//! lines: retrying cannot help, so the batch is dropped and counted.
//!
//! # Client
//! `ureq` (3, no default features: plain HTTP only, no TLS stack): a small,
//! widely used blocking HTTP client, which fits a thread of its own better than
//! the async hyper client (whose client side would add crates too). bitmagnet's
//! endpoint is normally on the same host or LAN; `https://` is refused with a
//! clear error.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use magnetar_storage::{to_hex, TorrentInput};
use serde_json::json;

use magnetar_core::report::Metric;

/// Tuning of a [`BitmagnetSink`].
#[derive(Clone, Debug)]
pub struct SinkConfig {
    /// Lines held at most (queued and in flight); beyond it lines are dropped.
    pub capacity: usize,
    /// Lines per POST at most.
    pub max_batch: usize,
    /// A line waits at most this long for its batch to fill.
    pub max_delay: Duration,
    /// First retry delay; doubled up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Timeout of one POST (connect, send, answer).
    pub timeout: Duration,
}

impl Default for SinkConfig {
    fn default() -> SinkConfig {
        SinkConfig {
            capacity: 100_000,
            max_batch: 1_000,
            max_delay: Duration::from_secs(1),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            timeout: Duration::from_secs(60),
        }
    }
}

/// What a sink did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkCounts {
    /// Lines bitmagnet accepted.
    pub sent: u64,
    /// POSTs that failed (each retried, or its batch dropped when refused).
    pub failed: u64,
    /// Lines dropped: the queue was full, bitmagnet refused them, or the sink
    /// closed before they could be sent.
    pub dropped: u64,
    /// Lines queued or in flight now.
    pub buffered: u64,
}

struct State {
    lines: VecDeque<String>,
    in_flight: usize,
    closing: Option<Instant>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running bitmagnet sink (see the module doc).
pub struct BitmagnetSink {
    shared: Arc<Shared>,
    capacity: usize,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for BitmagnetSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BitmagnetSink")
            .field("counts", &self.counts())
            .finish()
    }
}

/// The import URL: `http://HOST[:PORT]` gets `/import`; a path is kept as given.
pub fn import_url(url: &str) -> Result<String, String> {
    let rest = if let Some(r) = url.strip_prefix("http://") {
        r
    } else if url.starts_with("https://") {
        return Err(format!(
            "--sink bitmagnet {url}: https is not supported (plain HTTP to a bitmagnet \
             on this host or a trusted network; put a TLS proxy in front otherwise)"
        ));
    } else {
        return Err(format!(
            "--sink bitmagnet {url}: expected http://HOST[:PORT][/import]"
        ));
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("--sink bitmagnet {url}: no host"));
    }
    let path = if path.is_empty() || path == "/" {
        "/import"
    } else {
        path
    };
    Ok(format!("http://{host}{path}"))
}

/// RFC 3339 UTC of Unix seconds; `None` past year 9999 (RFC 3339 has 4 digits).
pub fn rfc3339(secs: u64) -> Option<String> {
    let c = magnetar_storage::fmt::civil(secs);
    (c.year <= 9999).then(|| {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            c.year, c.month, c.day, c.hour, c.minute, c.second
        )
    })
}

/// The import line of a torrent (see the module doc for its fields).
pub fn line_of(t: &TorrentInput) -> String {
    let mut v = json!({
        "infoHash": to_hex(&t.infohash),
        "name": t.name,
        "size": t.total_size,
        "private": t.private,
        "source": "magnetar",
    });
    if let (Some(at), Some(o)) = (rfc3339(t.discovered_at), v.as_object_mut()) {
        o.insert("publishedAt".into(), at.into());
    }
    v.to_string()
}

enum Outcome {
    Sent,
    Retry,
    Refused,
}

fn post(agent: &ureq::Agent, url: &str, body: &str) -> Outcome {
    match agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body.as_bytes())
    {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let text = r.body_mut().read_to_string().unwrap_or_default();
            match status {
                200..=299 => Outcome::Sent,
                408 | 429 => Outcome::Retry,
                400..=499 => {
                    tracing::warn!(status, answer = %text.trim(), "bitmagnet refused a batch");
                    Outcome::Refused
                }
                _ => {
                    tracing::warn!(status, answer = %text.trim(), "bitmagnet failed a batch; retrying");
                    Outcome::Retry
                }
            }
        }
        Err(e) => {
            tracing::warn!("bitmagnet unreachable: {e}; retrying");
            Outcome::Retry
        }
    }
}

impl BitmagnetSink {
    /// Starts the sending thread for bitmagnet at `url` (see [`import_url`]).
    pub fn start(url: &str, cfg: SinkConfig) -> Result<BitmagnetSink, String> {
        let url = import_url(url)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                lines: VecDeque::new(),
                in_flight: 0,
                closing: None,
            }),
            wake: Condvar::new(),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(cfg.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let capacity = cfg.capacity.max(1);
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("bitmagnet-sink".into())
            .spawn(move || run(&s, &agent, &url, &cfg))
            .map_err(|e| format!("starting the bitmagnet sink: {e}"))?;
        Ok(BitmagnetSink {
            shared,
            capacity,
            thread: Some(thread),
        })
    }

    /// Queues a torrent's line; never blocks (dropped and counted when full).
    pub fn offer(&self, t: &TorrentInput) {
        let line = line_of(t);
        let mut st = self.shared.lock();
        if st.closing.is_some() || st.lines.len() + st.in_flight >= self.capacity {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        st.lines.push_back(line);
        drop(st);
        self.shared.wake.notify_one();
    }

    pub fn counts(&self) -> SinkCounts {
        let st = self.shared.lock();
        SinkCounts {
            sent: self.shared.sent.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            buffered: (st.lines.len() + st.in_flight) as u64,
        }
    }

    /// The sink's side of `/metrics`.
    pub fn metrics(&self) -> Vec<Metric> {
        let c = self.counts();
        vec![
            Metric::counter(
                "magnetar_sink_bitmagnet_sent_total",
                "Torrents bitmagnet's /import accepted.",
                c.sent,
            ),
            Metric::counter(
                "magnetar_sink_bitmagnet_failed_total",
                "POSTs to bitmagnet's /import that failed (retried, or dropped when refused).",
                c.failed,
            ),
            Metric::counter(
                "magnetar_sink_bitmagnet_dropped_total",
                "Torrents not sent to bitmagnet: queue full, refused, or not sent by exit.",
                c.dropped,
            ),
            Metric::gauge(
                "magnetar_sink_bitmagnet_buffered",
                "Torrents queued or in flight to bitmagnet.",
                c.buffered as f64,
            ),
        ]
    }

    /// Sends what is buffered, trying until `grace` has passed; what is left
    /// then is dropped (and counted). Returns the final counts.
    pub fn close(mut self, grace: Duration) -> SinkCounts {
        self.shutdown(grace);
        self.counts()
    }

    fn shutdown(&mut self, grace: Duration) {
        {
            let mut st = self.shared.lock();
            st.closing.get_or_insert(Instant::now() + grace);
        }
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for BitmagnetSink {
    fn drop(&mut self) {
        self.shutdown(Duration::ZERO);
    }
}

/// The sending thread: batches, POSTs, retries with backoff until closed.
fn run(s: &Shared, agent: &ureq::Agent, url: &str, cfg: &SinkConfig) {
    let max_batch = cfg.max_batch.max(1);
    loop {
        // Wait for lines (or the end), then for the batch to fill or max_delay.
        let batch: Vec<String> = {
            let mut st = s.lock();
            let mut filled_by: Option<Instant> = None;
            loop {
                if st.closing.is_some() && st.lines.is_empty() {
                    return;
                }
                if !st.lines.is_empty() {
                    let due = *filled_by.get_or_insert(Instant::now() + cfg.max_delay);
                    let now = Instant::now();
                    if st.lines.len() >= max_batch || st.closing.is_some() || now >= due {
                        break;
                    }
                    st = s
                        .wake
                        .wait_timeout(st, due - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                } else {
                    st = s
                        .wake
                        .wait_timeout(st, Duration::from_secs(1))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
            let n = st.lines.len().min(max_batch);
            st.in_flight = n;
            st.lines.drain(..n).collect()
        };
        let mut body = String::with_capacity(batch.iter().map(|l| l.len() + 1).sum());
        for l in &batch {
            body.push_str(l);
            body.push('\n');
        }
        let n = batch.len() as u64;
        let mut backoff = cfg.backoff_min;
        loop {
            match post(agent, url, &body) {
                Outcome::Sent => {
                    s.sent.fetch_add(n, Ordering::Relaxed);
                    break;
                }
                Outcome::Refused => {
                    s.failed.fetch_add(1, Ordering::Relaxed);
                    s.dropped.fetch_add(n, Ordering::Relaxed);
                    break;
                }
                Outcome::Retry => {
                    s.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Back off; a close whose grace has passed ends the retries.
            let until = Instant::now() + backoff;
            let mut st = s.lock();
            loop {
                let now = Instant::now();
                let end = st.closing.map_or(until, |c| c.min(until));
                if now >= end {
                    break;
                }
                st = s
                    .wake
                    .wait_timeout(st, end - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            if st.closing.is_some_and(|end| Instant::now() >= end) {
                s.dropped.fetch_add(n, Ordering::Relaxed);
                break;
            }
            drop(st);
            backoff = (backoff * 2).min(cfg.backoff_max);
        }
        s.lock().in_flight = 0;
        // At the end, lines left past the grace are dropped and counted.
        let mut st = s.lock();
        if st.closing.is_some_and(|end| Instant::now() >= end) && !st.lines.is_empty() {
            s.dropped
                .fetch_add(st.lines.len() as u64, Ordering::Relaxed);
            st.lines.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    //! A loopback HTTP receiver in the test process stands in for bitmagnet's
    //! `/import`: it validates every line field by field against bitmagnet's
    //! import format (see the module doc) and can be "down" (hanging up, or
    //! answering 503) until the test brings it up.

    use super::*;
    use magnetar_storage::synth::Synth;
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::atomic::AtomicBool;

    #[derive(Default)]
    struct Seen {
        lines: Vec<serde_json::Value>,
        errors: Vec<String>,
        requests: u64,
        refused: u64,
    }

    struct Receiver {
        addr: SocketAddr,
        seen: Arc<Mutex<Seen>>,
        down: Arc<AtomicBool>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl Receiver {
        fn start(down: bool) -> Receiver {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let seen = Arc::new(Mutex::new(Seen::default()));
            let down = Arc::new(AtomicBool::new(down));
            let stop = Arc::new(AtomicBool::new(false));
            let (s, d, st) = (seen.clone(), down.clone(), stop.clone());
            let thread = std::thread::spawn(move || {
                for c in l.incoming() {
                    if st.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(c) = c else { continue };
                    let (s, d) = (s.clone(), d.clone());
                    std::thread::spawn(move || serve(c, &s, &d));
                }
            });
            Receiver {
                addr,
                seen,
                down,
                stop,
                thread: Some(thread),
            }
        }
    }

    impl Drop for Receiver {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(self.addr);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// One connection: HTTP/1.1 requests until the client closes it.
    fn serve(c: TcpStream, seen: &Mutex<Seen>, down: &AtomicBool) {
        let mut r = BufReader::new(c.try_clone().unwrap());
        let mut w = c;
        loop {
            let mut start = String::new();
            if r.read_line(&mut start).unwrap_or(0) == 0 {
                return;
            }
            let mut headers = BTreeMap::new();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 {
                    return;
                }
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            if r.read_exact(&mut body).is_err() {
                return;
            }
            let n = {
                let mut s = seen.lock().unwrap();
                s.requests += 1;
                s.requests
            };
            if down.load(Ordering::SeqCst) {
                if n % 2 == 1 {
                    // A crash: no answer at all.
                    let _ = w.shutdown(std::net::Shutdown::Both);
                    return;
                }
                let _ = w.write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\ndown",
                );
                continue;
            }
            let mut errs = Vec::new();
            if start.split_whitespace().take(2).collect::<Vec<_>>() != ["POST", "/import"] {
                errs.push(format!("request line {start:?}"));
            }
            if headers.get("content-type").map(String::as_str) != Some("application/json") {
                errs.push(format!("content type {:?}", headers.get("content-type")));
            }
            if headers.contains_key("transfer-encoding") || len == 0 {
                errs.push("no content-length body".into());
            }
            let text = String::from_utf8(body).unwrap_or_default();
            let mut lines = Vec::new();
            for l in text.split('\n').filter(|l| !l.is_empty()) {
                match validate(l) {
                    Ok(v) => lines.push(v),
                    Err(e) => errs.push(format!("{e}: {l}")),
                }
            }
            if !text.ends_with('\n') {
                errs.push("the body does not end with a newline".into());
            }
            let bad = !errs.is_empty();
            {
                let mut s = seen.lock().unwrap();
                s.errors.extend(errs);
                if bad {
                    s.refused += 1;
                } else {
                    s.lines.extend(lines);
                }
            }
            let answer: &[u8] = if bad {
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 8\r\n\r\nbad item"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-length: 16\r\n\r\nimport complete\n"
            };
            if w.write_all(answer).is_err() {
                return;
            }
        }
    }

    /// A line against bitmagnet's import item: the fields this sink sends, each
    /// of the type bitmagnet decodes it into.
    fn validate(line: &str) -> Result<serde_json::Value, String> {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let o = v.as_object().ok_or("not an object")?;
        const KNOWN: [&str; 6] = [
            "infoHash",
            "name",
            "size",
            "private",
            "source",
            "publishedAt",
        ];
        for k in o.keys() {
            if !KNOWN.contains(&k.as_str()) {
                return Err(format!("unexpected field {k}"));
            }
        }
        let ih = o
            .get("infoHash")
            .and_then(|x| x.as_str())
            .ok_or("infoHash")?;
        if ih.len() != 40
            || !ih
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err("infoHash is not 40 lowercase hex digits".into());
        }
        o.get("name").and_then(|x| x.as_str()).ok_or("name")?;
        o.get("size")
            .and_then(|x| x.as_u64())
            .ok_or("size is not a uint")?;
        o.get("private")
            .and_then(|x| x.as_bool())
            .ok_or("private")?;
        let src = o.get("source").and_then(|x| x.as_str()).ok_or("source")?;
        if src.is_empty() {
            return Err("empty source".into());
        }
        if let Some(p) = o.get("publishedAt") {
            parse_rfc3339(p.as_str().ok_or("publishedAt is not a string")?)
                .ok_or("publishedAt is not RFC 3339")?;
        }
        Ok(v)
    }

    /// `YYYY-MM-DDTHH:MM:SSZ` (what this sink writes; a valid RFC 3339 date-time)
    /// to Unix seconds.
    fn parse_rfc3339(s: &str) -> Option<u64> {
        let b = s.as_bytes();
        if b.len() != 20
            || b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b'T'
            || b[13] != b':'
            || b[16] != b':'
            || b[19] != b'Z'
        {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<u64> {
            let t = s.get(r)?;
            t.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| t.parse().ok())?
        };
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 59 {
            return None;
        }
        let days = magnetar_storage::fmt::days_from_civil(y as i64, mo as u32, d as u32);
        u64::try_from(days * 86_400)
            .ok()
            .map(|x| x + h * 3600 + mi * 60 + se)
    }

    fn torrents(n: usize) -> Vec<TorrentInput> {
        let mut s = Synth::new(5);
        (0..n)
            .map(|i| {
                let mut t = s.torrent(1_700_000_000 + i as u64 * 3_601, false);
                if i % 3 == 0 {
                    t.private = true;
                    t.name = format!("ünïcode \"quoted\" \0 nul {i}");
                }
                t
            })
            .collect()
    }

    fn config(capacity: usize) -> SinkConfig {
        SinkConfig {
            capacity,
            max_batch: 7,
            max_delay: Duration::from_millis(20),
            backoff_min: Duration::from_millis(5),
            backoff_max: Duration::from_millis(50),
            timeout: Duration::from_secs(10),
        }
    }

    /// Every line received matches its torrent field by field.
    fn check_received(seen: &Seen, want: &[TorrentInput]) {
        assert!(seen.errors.is_empty(), "{:#?}", seen.errors);
        assert_eq!(seen.refused, 0);
        assert_eq!(seen.lines.len(), want.len());
        for (v, t) in seen.lines.iter().zip(want) {
            assert_eq!(v["infoHash"], to_hex(&t.infohash));
            assert_eq!(v["name"], t.name.as_str());
            assert_eq!(v["size"], t.total_size);
            assert_eq!(v["private"], t.private);
            assert_eq!(v["source"], "magnetar");
            assert_eq!(
                parse_rfc3339(v["publishedAt"].as_str().unwrap()),
                Some(t.discovered_at)
            );
        }
    }

    #[test]
    fn lines_validate_against_the_import_format_in_batches() {
        let rx = Receiver::start(false);
        let sink = BitmagnetSink::start(&format!("http://{}", rx.addr), config(1000)).unwrap();
        let ts = torrents(50);
        for t in &ts {
            sink.offer(t);
        }
        let c = sink.close(Duration::from_secs(60));
        assert_eq!((c.sent, c.dropped, c.buffered), (50, 0, 0));
        let seen = rx.seen.lock().unwrap();
        check_received(&seen, &ts);
        // Batched: several lines per POST.
        assert!(seen.requests < 50, "{} requests", seen.requests);
    }

    #[test]
    fn an_outage_is_ridden_out_and_nothing_within_the_bound_is_lost() {
        let rx = Receiver::start(true);
        let sink = BitmagnetSink::start(&format!("http://{}/import", rx.addr), config(40)).unwrap();
        let ts = torrents(45);
        for t in &ts {
            sink.offer(t);
        }
        // Nothing can leave while the receiver is down: the 5 past the bound are
        // dropped and counted, the 40 are held.
        let c = sink.counts();
        assert_eq!((c.dropped, c.buffered, c.sent), (5, 40, 0));
        // Wait (bounded) until the sink has failed a few times against the outage.
        let t0 = Instant::now();
        while sink.counts().failed < 4 && t0.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(sink.counts().failed >= 4);
        rx.down.store(false, Ordering::SeqCst);
        let c = sink.close(Duration::from_secs(60));
        assert_eq!((c.sent, c.dropped, c.buffered), (40, 5, 0));
        let seen = rx.seen.lock().unwrap();
        check_received(&seen, &ts[..40]);
    }

    #[test]
    fn urls_and_times() {
        assert_eq!(import_url("http://h:3333").unwrap(), "http://h:3333/import");
        assert_eq!(
            import_url("http://h:3333/").unwrap(),
            "http://h:3333/import"
        );
        assert_eq!(
            import_url("http://h/x/import").unwrap(),
            "http://h/x/import"
        );
        assert!(import_url("https://h").is_err());
        assert!(import_url("ftp://h").is_err());
        assert!(import_url("http:///import").is_err());
        assert_eq!(rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000).unwrap(), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(253_402_300_799).unwrap(), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(253_402_300_800), None);
        let mut t = torrents(1).remove(0);
        t.discovered_at = u64::MAX;
        let v: serde_json::Value = serde_json::from_str(&line_of(&t)).unwrap();
        assert!(v.get("publishedAt").is_none());
        validate(&line_of(&t)).unwrap();
    }
}
