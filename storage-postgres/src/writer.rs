//! A writer thread for the crawl (issue 21 §3): [`Op`]s go through a bounded
//! channel to a thread that writes them in batches ([`PgStore::apply_batch`]).
//! When the database is unreachable (the connection broke, the server restarts or
//! refuses connections) the thread keeps the batch, reconnects with exponential
//! backoff (from [`PgWriterConfig::min_backoff`] to
//! [`PgWriterConfig::max_backoff`]), logs it (`tracing`, once per outage and per
//! backoff step) and counts it ([`PgWriterTotals`]); meanwhile the channel fills
//! up to its bound and [`PgWriter::send`] blocks: the crawler stops fetching
//! rather than losing what it fetched ([`PgWriter::try_send`] hands the op back
//! instead, for best-effort records). Once the database is back, the kept batch
//! and everything buffered are written. A batch whose commit was lost with the
//! connection is written again; the upsert makes that harmless (stored once).
//!
//! This is the writing half of the crawl sink: [`crate::PgSink`] wraps it as the
//! common interface's `IndexSink`, which the event → op glue (`app/src/ingest.rs`)
//! drives as it drives the LMDB store's `Writer`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use magnetar_storage::Op;

use crate::error::{PgError, Result};
use crate::{PgOptions, PgStore};

/// How a [`PgWriter`] batches and retries.
#[derive(Clone, Debug)]
pub struct PgWriterConfig {
    /// Ops buffered in the channel (the bound: past it `send` blocks).
    pub capacity: usize,
    /// Most ops per batch (one transaction).
    pub batch: usize,
    /// A partial batch is written after this long without a new op.
    pub linger: Duration,
    /// First wait before reconnecting.
    pub min_backoff: Duration,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// The store's options.
    pub store: PgOptions,
}

impl Default for PgWriterConfig {
    fn default() -> PgWriterConfig {
        PgWriterConfig {
            capacity: 50_000,
            batch: 2_000,
            linger: Duration::from_millis(500),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            store: PgOptions::default(),
        }
    }
}

/// Counters of a [`PgWriter`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PgWriterTotals {
    /// Batches committed.
    pub batches: u64,
    /// Ops written.
    pub ops: u64,
    /// Torrents stored for the first time.
    pub torrents_new: u64,
    /// Ops refused by the store (counted rejections, see [`crate::BatchReport`]).
    pub rejected: u64,
    /// Outages: times the database became unreachable.
    pub outages: u64,
    /// Failed attempts to reach the database (connects and writes).
    pub retries: u64,
    /// The database is unreachable now (the thread is backing off).
    pub down: bool,
    /// The last error seen, for the log and the operator.
    pub last_error: Option<String>,
}

enum Msg {
    Op(Box<Op>),
    Flush(SyncSender<()>),
}

/// The sending side; see the module doc.
pub struct PgWriter {
    tx: Option<SyncSender<Msg>>,
    /// Set by `drop` (not `close`): stop retrying, give up what is buffered.
    abandon: Arc<AtomicBool>,
    totals: Arc<Mutex<PgWriterTotals>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl std::fmt::Debug for PgWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgWriter")
            .field("totals", &self.totals())
            .finish()
    }
}

/// Whether an error means "the database is unreachable" (retry after a backoff)
/// rather than a fault of the data or the schema (stop).
fn unreachable(e: &PgError) -> bool {
    match e {
        PgError::Db { source, .. } => match source.code() {
            // No SQLSTATE: a closed connection or an I/O error (no server at the
            // address) is unreachable; a client-side error (a bug) is not.
            None => {
                source.is_closed()
                    || std::error::Error::source(source).is_some_and(|s| s.is::<std::io::Error>())
            }
            Some(c) => {
                let c = c.code();
                c.starts_with("08") || c.starts_with("57P") || c == "53300"
            }
        },
        _ => false,
    }
}

impl PgWriter {
    /// Starts the thread; it connects (and migrates) on its own, retrying until
    /// the database answers, so a crawler can start while PostgreSQL is down.
    pub fn start(url: &str, cfg: PgWriterConfig) -> PgWriter {
        let (tx, rx) = sync_channel(cfg.capacity.max(1));
        let totals = Arc::new(Mutex::new(PgWriterTotals::default()));
        let t = totals.clone();
        let abandon = Arc::new(AtomicBool::new(false));
        let a = abandon.clone();
        let url = url.to_owned();
        let thread = std::thread::Builder::new()
            .name("pg-writer".into())
            .spawn(move || run(&url, &cfg, &rx, &t, &a));
        match thread {
            Ok(h) => PgWriter {
                tx: Some(tx),
                abandon,
                totals,
                thread: Some(h),
            },
            Err(e) => {
                if let Ok(mut t) = totals.lock() {
                    t.last_error = Some(format!("cannot start the writer thread: {e}"));
                }
                PgWriter {
                    tx: None,
                    abandon,
                    totals,
                    thread: None,
                }
            }
        }
    }

    fn dead(&mut self) -> PgError {
        let why = match self.thread.take().map(|h| h.join()) {
            Some(Ok(Err(e))) => e.to_string(),
            Some(Err(_)) => "the writer thread panicked".into(),
            _ => self
                .totals()
                .last_error
                .unwrap_or_else(|| "the writer stopped".into()),
        };
        self.tx = None;
        PgError::Server(format!("the PostgreSQL writer stopped: {why}"))
    }

    /// Queues an op; blocks while the buffer is full (backpressure).
    pub fn send(&mut self, op: Op) -> Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(Msg::Op(Box::new(op))).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.dead())
        }
    }

    /// Queues an op unless the buffer is full; then hands it back.
    pub fn try_send(&mut self, op: Op) -> Result<Option<Op>> {
        let r = match &self.tx {
            Some(tx) => tx.try_send(Msg::Op(Box::new(op))),
            None => return Err(self.dead()),
        };
        match r {
            Ok(()) => Ok(None),
            Err(TrySendError::Full(Msg::Op(op))) => Ok(Some(*op)),
            Err(TrySendError::Full(Msg::Flush(_))) => Ok(None),
            Err(TrySendError::Disconnected(_)) => Err(self.dead()),
        }
    }

    /// Returns once every op sent before is committed (waits for the database
    /// to come back if it is down).
    pub fn flush(&mut self) -> Result<()> {
        let (done_tx, done_rx) = sync_channel(1);
        let sent = match &self.tx {
            Some(tx) => tx.send(Msg::Flush(done_tx)).is_ok(),
            None => false,
        };
        if sent && done_rx.recv().is_ok() {
            Ok(())
        } else {
            Err(self.dead())
        }
    }

    /// The counters now.
    pub fn totals(&self) -> PgWriterTotals {
        self.totals.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Writes everything sent, stops the thread, returns the counters.
    pub fn close(mut self) -> Result<PgWriterTotals> {
        self.tx = None;
        match self.thread.take().map(|h| h.join()) {
            Some(Ok(Ok(()))) | None => Ok(self.totals()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(PgError::Server("the writer thread panicked".into())),
        }
    }
}

/// Dropping a writer without [`PgWriter::close`] writes what it can now and
/// gives up the rest if the database is unreachable (it never waits for it).
impl Drop for PgWriter {
    fn drop(&mut self) {
        self.tx = None;
        self.abandon.store(true, Ordering::Relaxed);
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

fn set(totals: &Mutex<PgWriterTotals>, f: impl FnOnce(&mut PgWriterTotals)) {
    if let Ok(mut t) = totals.lock() {
        f(&mut t);
    }
}

/// Writes `batch` (connecting first if need be), retrying while the database is
/// unreachable; returns only once it is committed, or on an error that is not.
fn write_batch(
    url: &str,
    cfg: &PgWriterConfig,
    store: &mut Option<PgStore>,
    batch: &[Op],
    totals: &Mutex<PgWriterTotals>,
    abandon: &AtomicBool,
) -> Result<()> {
    let mut backoff = cfg.min_backoff;
    loop {
        if abandon.load(Ordering::Relaxed) {
            return Err(PgError::Server(format!(
                "dropped while the database was unreachable: {} ops not written",
                batch.len()
            )));
        }
        let r = match store {
            Some(s) => s.apply_batch(batch),
            None => match PgStore::connect(url, cfg.store.clone()) {
                Ok(s) => {
                    tracing::info!("PostgreSQL store: connected");
                    store.insert(s).apply_batch(batch)
                }
                Err(e) => Err(e),
            },
        };
        match r {
            Ok(rep) => {
                set(totals, |t| {
                    if t.down {
                        tracing::info!("PostgreSQL store: reachable again, writing the buffer");
                    }
                    t.down = false;
                    t.batches += 1;
                    t.ops += batch.len() as u64;
                    t.torrents_new += rep.torrents_new;
                    t.rejected += rep.rejected;
                });
                return Ok(());
            }
            Err(e) if unreachable(&e) => {
                *store = None;
                set(totals, |t| {
                    if !t.down {
                        t.outages += 1;
                    }
                    t.down = true;
                    t.retries += 1;
                    t.last_error = Some(e.to_string());
                });
                tracing::warn!(
                    "PostgreSQL store unreachable ({e}); {} ops kept, retrying in {:?}",
                    batch.len(),
                    backoff
                );
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(cfg.max_backoff);
            }
            Err(e) => {
                set(totals, |t| t.last_error = Some(e.to_string()));
                tracing::error!("PostgreSQL store: {e}");
                return Err(e);
            }
        }
    }
}

fn run(
    url: &str,
    cfg: &PgWriterConfig,
    rx: &Receiver<Msg>,
    totals: &Mutex<PgWriterTotals>,
    abandon: &AtomicBool,
) -> Result<()> {
    let mut store: Option<PgStore> = None;
    let mut batch: Vec<Op> = Vec::with_capacity(cfg.batch);
    let mut flushes: Vec<SyncSender<()>> = Vec::new();
    let mut open = true;
    while open || !batch.is_empty() {
        // Fill the batch: wait for the first op, then take what is there (up to
        // `linger` for more) until it is full or a flush asks for it.
        let msg = if batch.is_empty() && flushes.is_empty() {
            match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => {
                    open = false;
                    None
                }
            }
        } else if flushes.is_empty() && batch.len() < cfg.batch && open {
            match rx.recv_timeout(cfg.linger) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    None
                }
            }
        } else {
            None
        };
        let mut write_now = msg.is_none();
        match msg {
            Some(Msg::Op(op)) => batch.push(*op),
            Some(Msg::Flush(done)) => {
                flushes.push(done);
                write_now = true;
            }
            None => {}
        }
        if batch.len() >= cfg.batch {
            write_now = true;
        }
        if !write_now {
            continue;
        }
        if !batch.is_empty() {
            write_batch(url, cfg, &mut store, &batch, totals, abandon)?;
            batch.clear();
        }
        for f in flushes.drain(..) {
            let _ = f.send(());
        }
    }
    Ok(())
}
