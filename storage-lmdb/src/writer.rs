//! The single writer thread: a bounded channel in, sorted batched commits out.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::StoreError;
use crate::store::{BatchReport, PreparedBatch, Result, Store};
use crate::types::Op;

/// A committed batch, as reported to the `on_commit` callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// 1 for the first batch this writer committed, then 2, 3, …
    pub seq: u64,
    /// Records in the batch.
    pub records: usize,
    pub report: BatchReport,
}

/// Callback run on the writer thread after each durable commit.
pub type CommitCallback = Box<dyn FnMut(&CommitInfo) + Send>;

/// Writer tuning.
pub struct WriterConfig {
    /// Capacity of the bounded channel; `send` blocks when it is full (backpressure).
    pub channel_capacity: usize,
    /// Commit when this many records are pending…
    pub max_batch: usize,
    /// …or when the oldest pending record is this old.
    pub max_delay: Duration,
    pub on_commit: Option<CommitCallback>,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            channel_capacity: 20_000,
            max_batch: 10_000,
            max_delay: Duration::from_millis(100),
            on_commit: None,
        }
    }
}

impl std::fmt::Debug for WriterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterConfig")
            .field("channel_capacity", &self.channel_capacity)
            .field("max_batch", &self.max_batch)
            .field("max_delay", &self.max_delay)
            .finish_non_exhaustive()
    }
}

enum Msg {
    Op(Op),
    Flush(SyncSender<std::result::Result<u64, String>>),
}

#[derive(Default)]
struct Shared {
    committed_seq: u64,
    /// First error of the writer thread; every later call reports it.
    failed: Option<String>,
    totals: WriterTotals,
}

/// What a writer did over its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterTotals {
    pub batches: u64,
    pub records: u64,
    pub torrents_new: u64,
    pub torrents_updated: u64,
    pub seen_unknown: u64,
    pub skipped_corrupt: u64,
    pub map_grown: u64,
}

/// Handle to the writer thread. `send` from any thread (the handle is `Sync`);
/// `flush` waits for durability; `close` flushes and joins. Dropping the handle
/// also flushes and joins, but can only report an error through `close`.
pub struct Writer {
    tx: Option<SyncSender<Msg>>,
    shared: Arc<Mutex<Shared>>,
    thread: Option<JoinHandle<()>>,
    store: Store,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Starts the writer thread. One writer per store at a time.
    pub fn writer(&self, config: WriterConfig) -> Result<Writer> {
        if !self.inner.claim_writer() {
            return Err(StoreError::InvalidInput(
                "this store already has a running writer".into(),
            ));
        }
        let (tx, rx) = mpsc::sync_channel(config.channel_capacity.max(1));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let store = self.clone();
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("magnetar-storage-writer".into())
            .spawn(move || run(store, rx, sh, config))
            .map_err(|e| {
                self.inner.release_writer();
                StoreError::io("spawning the writer thread")(e)
            })?;
        Ok(Writer {
            tx: Some(tx),
            shared,
            thread: Some(thread),
            store: self.clone(),
        })
    }
}

impl Writer {
    fn failure(&self) -> Option<StoreError> {
        let s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        s.failed
            .clone()
            .map(|message| StoreError::Writer { message })
    }

    fn stopped(&self) -> StoreError {
        self.failure().unwrap_or_else(|| StoreError::Writer {
            message: "the writer thread has stopped".into(),
        })
    }

    /// Queues one write. Blocks while the channel is full (backpressure); never drops.
    /// Fails if the writer thread failed earlier (the error says why).
    pub fn send(&self, op: Op) -> Result<()> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let tx = self.tx.as_ref().ok_or_else(|| self.stopped())?;
        tx.send(Msg::Op(op)).map_err(|_| self.stopped())
    }

    /// Like `send` but returns the op back instead of blocking when the channel is full.
    pub fn try_send(&self, op: Op) -> Result<Option<Op>> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let tx = self.tx.as_ref().ok_or_else(|| self.stopped())?;
        match tx.try_send(Msg::Op(op)) {
            Ok(()) => Ok(None),
            Err(TrySendError::Full(Msg::Op(op))) => Ok(Some(op)),
            Err(_) => Err(self.stopped()),
        }
    }

    /// Blocks until everything sent before this call is committed (durably, in the
    /// store's durability mode). Returns the sequence number of the last commit.
    pub fn flush(&self) -> Result<u64> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let tx = self.tx.as_ref().ok_or_else(|| self.stopped())?;
        let (rtx, rrx) = mpsc::sync_channel(1);
        tx.send(Msg::Flush(rtx)).map_err(|_| self.stopped())?;
        match rrx.recv() {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(message)) => Err(StoreError::Writer { message }),
            Err(_) => Err(self.stopped()),
        }
    }

    /// Sequence number of the last committed batch (0 before the first).
    pub fn committed_seq(&self) -> u64 {
        self.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .committed_seq
    }

    /// Totals so far.
    pub fn totals(&self) -> WriterTotals {
        self.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .totals
    }

    /// Flushes, stops the thread and joins it.
    pub fn close(mut self) -> Result<WriterTotals> {
        let flushed = self.flush();
        self.shutdown();
        flushed?;
        if let Some(e) = self.failure() {
            return Err(e);
        }
        Ok(self.totals())
    }

    fn shutdown(&mut self) {
        // Dropping the sender ends the thread after it committed what is pending.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                let mut s = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
                s.failed
                    .get_or_insert_with(|| "the writer thread panicked".into());
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Work for the committing thread, in channel order.
enum Job {
    Batch(PreparedBatch),
    Flush(SyncSender<std::result::Result<u64, String>>),
}

fn fail(shared: &Mutex<Shared>, msg: String) {
    shared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .failed
        .get_or_insert(msg);
}

fn failed(shared: &Mutex<Shared>) -> bool {
    shared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .failed
        .is_some()
}

/// The writer is two threads: this one collects ops into batches and prepares each
/// (sorts, tokenizes) while a second one writes and commits the previous batch, so
/// that CPU work overlaps the commit's page writes and fsync. The channel between
/// them holds one prepared batch; flushes travel in order with the batches.
fn run(store: Store, rx: Receiver<Msg>, shared: Arc<Mutex<Shared>>, mut cfg: WriterConfig) {
    struct Release(Store);
    impl Drop for Release {
        fn drop(&mut self) {
            self.0.inner.release_writer();
        }
    }
    let _release = Release(store.clone());
    let max_batch = cfg.max_batch.max(1);
    let classify = store.options().classify;
    let on_commit = cfg.on_commit.take();
    let (jtx, jrx) = mpsc::sync_channel::<Job>(1);
    std::thread::scope(|s| {
        let committer = std::thread::Builder::new()
            .name("magnetar-storage-commit".into())
            .spawn_scoped(s, || commit_loop(&store, jrx, &shared, on_commit));
        let committer = match committer {
            Ok(h) => h,
            Err(e) => {
                fail(&shared, format!("spawning the commit thread: {e}"));
                // Answer flushes until the handle is dropped.
                for m in rx.iter() {
                    if let Msg::Flush(reply) = m {
                        let _ = reply.send(Err(format!("spawning the commit thread: {e}")));
                    }
                }
                return;
            }
        };
        let mut pending: Vec<Op> = Vec::with_capacity(max_batch);
        let mut oldest: Option<Instant> = None;
        // Hands the pending ops to the committer; false when it is gone.
        let cut = |pending: &mut Vec<Op>| -> bool {
            if pending.is_empty() {
                return true;
            }
            if failed(&shared) {
                pending.clear(); // callers are told by send/flush/close
                return true;
            }
            let ops = std::mem::replace(pending, Vec::with_capacity(max_batch));
            jtx.send(Job::Batch(PreparedBatch::new_classified(ops, classify)))
                .is_ok()
        };
        loop {
            let msg = match oldest {
                None => match rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => break,
                },
                Some(t0) => {
                    let wait = cfg.max_delay.saturating_sub(t0.elapsed());
                    match rx.recv_timeout(wait) {
                        Ok(m) => Some(m),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            let alive = match msg {
                Some(Msg::Op(op)) => {
                    if failed(&shared) {
                        continue; // callers are told by send/flush/close
                    }
                    pending.push(op);
                    oldest.get_or_insert_with(Instant::now);
                    if pending.len() >= max_batch {
                        oldest = None;
                        cut(&mut pending)
                    } else {
                        true
                    }
                }
                Some(Msg::Flush(reply)) => {
                    oldest = None;
                    cut(&mut pending) && jtx.send(Job::Flush(reply)).is_ok()
                }
                None => {
                    oldest = None;
                    cut(&mut pending)
                }
            };
            if !alive {
                break;
            }
        }
        cut(&mut pending);
        drop(jtx);
        if committer.join().is_err() {
            fail(&shared, "the writer's commit thread panicked".into());
        }
    });
}

/// Applies and commits prepared batches in order; answers flushes.
fn commit_loop(
    store: &Store,
    jobs: Receiver<Job>,
    shared: &Mutex<Shared>,
    mut on_commit: Option<CommitCallback>,
) {
    let mut seq = 0u64;
    let mut failed: Option<String> = None;
    for job in jobs.iter() {
        match job {
            Job::Batch(batch) => {
                if failed.is_some() {
                    continue;
                }
                let records = batch.len();
                match store.apply_prepared(batch) {
                    Ok((report, _ops)) => {
                        seq += 1;
                        let info = CommitInfo {
                            seq,
                            records,
                            report,
                        };
                        {
                            let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
                            s.committed_seq = seq;
                            let t = &mut s.totals;
                            t.batches += 1;
                            t.records += records as u64;
                            t.torrents_new += report.torrents_new;
                            t.torrents_updated += report.torrents_updated;
                            t.seen_unknown += report.seen_unknown;
                            t.skipped_corrupt += report.skipped_corrupt;
                            t.map_grown += u64::from(report.map_grown);
                        }
                        if let Some(cb) = on_commit.as_mut() {
                            cb(&info);
                        }
                    }
                    Err(e) => {
                        let msg = format!("{e} ({records} records not written)");
                        fail(shared, msg.clone());
                        failed = Some(msg);
                    }
                }
            }
            Job::Flush(reply) => {
                let _ = reply.send(match &failed {
                    None => Ok(seq),
                    Some(m) => Err(m.clone()),
                });
            }
        }
    }
}
