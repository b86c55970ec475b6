//! # magnetar-tokio
//!
//! The magnetar crawler ([`magnetar_core::Crawler`], a sans-IO state machine)
//! driven by tokio: one `UdpSocket` per identity, one small task per TCP peer
//! connection, `tokio::time` for the core's timers and timestamps from a monotonic
//! start `Instant`. The driver holds no protocol logic: it follows ARCHITECTURE.md §4
//! (feed input, drain `poll_output` until `Timeout`/`Idle`, carry out the outputs).
//!
//! Two ways in:
//! * **Library**: [`Crawler::spawn`] (or [`Crawler::builder`]) inside a tokio
//!   runtime returns a [`Handle`] (start fetches, read stats, shut down gracefully)
//!   and an [`EventStream`] (a `Stream<Item = Event>`) of everything the crawler
//!   learns. Storage is optional: anything implementing [`Storage`].
//! * **Driver** for the `magnetar` binary: [`run`] builds its own current-thread
//!   runtime and crawls until a duration passes or SIGINT/SIGTERM.
//!
//! Limits, as in the mio runtime: TCP connections never exceed
//! `Config.fetch.max_sessions` and running out of file descriptors answers the
//! connect with `TcpClosed { reason: LocalError }` (counted, then connects fail fast
//! for 250 ms), never an error; storage receives events through a bounded channel
//! and the driver waits for room (backpressure); shutdown stops new work, closes
//! every connection and flushes storage within a deadline (5 s by default). A
//! storage failure stops the crawler at once (new work stops, what storage took
//! is flushed, and [`Handle::shutdown`] returns [`Error::Storage`]). The
//! event stream is bounded too: when its reader falls behind, events are dropped
//! for the stream (and counted), never for storage.
//!
//! ## Example: crawl a loopback network
//! Eight plain DHT nodes (core crawlers with harvesting off, each on a real UDP
//! socket, driven by this crate), a BitTorrent peer serving a torrent's metadata
//! over real TCP (core's testkit `FakeSeeder`) that announces it to the nodes, and a
//! crawler that finds it and prints what it fetched.
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::Duration;
//!
//! use magnetar_core::krpc::{self, Body, Message, Query, QueryKind};
//! use magnetar_core::testkit::{build_info, Behavior, FakeSeeder, InfoSpec};
//! use magnetar_core::{Config, Event, InfoHash, NodeId};
//! use magnetar_tokio::{Crawler, MemoryStorage};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() {
//!     // The DHT: plain nodes bootstrapping from the first one.
//!     let mut nodes = Vec::new();
//!     for i in 0..8 {
//!         let mut c = Config::loopback_test(100 + i);
//!         c.crawl.enabled = false;
//!         c.dht.per_ip_answers_per_sec = 100_000; // every peer here is 127.0.0.1
//!         let (h, _events) = Crawler::spawn(c, None).unwrap();
//!         nodes.push(h);
//!     }
//!     let first = nodes[0].local_addrs()[0];
//!     for n in &nodes[1..] {
//!         n.bootstrap(&[first]).await.unwrap();
//!     }
//!
//!     // A peer seeding "ubuntu.iso" over real TCP.
//!     let info = build_info(&InfoSpec::single("ubuntu.iso", 3 << 20));
//!     let ih = FakeSeeder::new(info.clone().into(), Behavior::Honest).info_hash();
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//!     let seeder_port = listener.local_addr().unwrap().port();
//!     tokio::spawn(async move {
//!         while let Ok((mut tcp, _)) = listener.accept().await {
//!             let mut s = FakeSeeder::new(info.clone().into(), Behavior::Honest);
//!             tokio::spawn(async move {
//!                 s.on_connected();
//!                 let mut buf = vec![0u8; 65536];
//!                 while let Ok(n) = tcp.read(&mut buf).await {
//!                     if n == 0 { break; }
//!                     s.on_data(&buf[..n]);
//!                     if tcp.write_all(&s.take_output()).await.is_err() || s.wants_close() {
//!                         break;
//!                     }
//!                 }
//!             });
//!         }
//!     });
//!
//!     // The peer announces (get_peers for a token, then announce_peer) to every node.
//!     let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
//!     fn query(tid: &[u8], kind: QueryKind<'_>) -> Vec<u8> {
//!         let body = Body::Query(Query { id: NodeId([7; 20]), want: None, kind });
//!         let mut buf = Vec::new();
//!         krpc::encode(&Message { tid, version: None, ip: None, read_only: true, body }, &mut buf);
//!         buf
//!     }
//!     let get_peers = query(b"gp", QueryKind::GetPeers { info_hash: ih, scrape: false, noseed: false });
//!     for n in &nodes {
//!         udp.send_to(&get_peers, n.local_addrs()[0]).await.unwrap();
//!     }
//!     let mut buf = vec![0u8; 2048];
//!     for _ in 0..nodes.len() {
//!         let (len, from) = udp.recv_from(&mut buf).await.unwrap();
//!         let msg = krpc::decode(&buf[..len]).unwrap();
//!         let Body::Response(r) = &msg.body else { panic!("{msg:?}") };
//!         let token = r.token.unwrap();
//!         let announce = query(b"an", QueryKind::AnnouncePeer {
//!             info_hash: ih, port: seeder_port, implied_port: false, token, seed: Some(true),
//!         });
//!         udp.send_to(&announce, from).await.unwrap();
//!     }
//!
//!     // The crawler: it samples the nodes (BEP 51), finds the infohash, asks for
//!     // peers and fetches the metadata over TCP.
//!     let mut c = Config::loopback_test(1);
//!     c.dht.bootstrap_nodes = 4;
//!     c.dht.per_ip_answers_per_sec = 100_000;
//!     let store = MemoryStorage::new(); // clones share the map
//!     let (crawler, mut events) = Crawler::spawn(c, Some(Box::new(store.clone()))).unwrap();
//!     crawler.bootstrap(&[first]).await.unwrap();
//!     let fetched = tokio::time::timeout(Duration::from_secs(30), async {
//!         while let Some(e) = events.recv().await {
//!             if let Event::MetadataFetched(m) = e {
//!                 println!("{} {} ({} bytes)", m.info_hash, m.info.name, m.info.total_size);
//!                 return m;
//!             }
//!         }
//!         panic!("the crawler stopped");
//!     })
//!     .await
//!     .expect("no torrent within 30 s");
//!     assert_eq!(fetched.info_hash, ih);
//!     assert_eq!(fetched.info.name, "ubuntu.iso");
//!
//!     // A graceful shutdown flushes storage: the torrent is there.
//!     let report = crawler.shutdown().await.unwrap();
//!     assert_eq!(report.stats.fetch.fetched, 1);
//!     assert!(store.torrents().iter().any(|(h, name, _)| *h == ih && name == "ubuntu.iso"));
//!     for n in nodes {
//!         n.shutdown().await.unwrap();
//!     }
//! }
//! ```
#![forbid(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use magnetar_core::{ApiMisuse, Config, Event, InfoHash};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

mod driver;
mod run;
mod storage;

pub use driver::{DriverReport, RuntimeCounters};
pub use magnetar_core::pump::Snapshot;
pub use run::{run, DnsCallback, RunOptions, RunReport, StatusCallback};
pub use storage::{Decision, MemoryStorage, Storage};

use driver::{Clock, Command, Driver};

/// Default capacity of the event stream (events beyond it are dropped and counted).
pub const DEFAULT_EVENT_CAPACITY: usize = 4096;
/// Default capacity of the storage channel (the driver waits when it is full).
pub const DEFAULT_STORAGE_CAPACITY: usize = 4096;
/// Default period of the [`Storage::status`] snapshots.
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(10);
/// Default bound on the storage flush at shutdown; with [`SHUTDOWN_GRACE`], a
/// shutdown takes at most 5 s.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(4500);
/// Past the shutdown timeout, [`Handle::shutdown`] waits this much longer for the
/// driver, then aborts it (a storage blocked for good cannot hold the program).
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// What can go wrong. Remote misbehaviour never surfaces here: it is counted in
/// [`Stats`](magnetar_core::Stats).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Binding a socket or starting a thread failed.
    Io(io::Error),
    /// The core refused a request (queue full, no usable peers, …).
    Api(ApiMisuse),
    /// The crawler has stopped.
    Stopped,
    /// Storage failed to record or flush (the crawler stopped).
    Storage(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) => write!(f, "io: {e}"),
            Error::Api(e) => write!(f, "crawler: {e}"),
            Error::Stopped => f.write_str("the crawler has stopped"),
            Error::Storage(e) => write!(f, "storage failed: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Api(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

/// Entry point of the library API; see [`Crawler::spawn`] and [`Crawler::builder`].
pub struct Crawler {
    config: Config,
    storage: Option<Box<dyn Storage>>,
    event_capacity: usize,
    storage_capacity: usize,
    status_interval: Duration,
    shutdown_timeout: Duration,
    sockets: Vec<std::net::UdpSocket>,
}

impl Crawler {
    /// Binds one UDP socket per identity of `config` and spawns the driver on the
    /// current tokio runtime (must be called from within one). With `storage`,
    /// every event is recorded and a new discovery is acquired only when the
    /// storage says so; without, every discovery is acquired.
    pub fn spawn(
        config: Config,
        storage: Option<Box<dyn Storage>>,
    ) -> Result<(Handle, EventStream), Error> {
        let mut b = Crawler::builder(config);
        b.storage = storage;
        b.start()
    }

    /// A crawler with non-default capacities; [`Crawler::start`] spawns it.
    pub fn builder(config: Config) -> Self {
        Crawler {
            config,
            storage: None,
            event_capacity: DEFAULT_EVENT_CAPACITY,
            storage_capacity: DEFAULT_STORAGE_CAPACITY,
            status_interval: DEFAULT_STATUS_INTERVAL,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            sockets: Vec::new(),
        }
    }

    pub fn storage(mut self, s: Box<dyn Storage>) -> Self {
        self.storage = Some(s);
        self
    }

    /// How often [`Storage::status`] gets a [`Snapshot`].
    pub fn status_interval(mut self, d: Duration) -> Self {
        self.status_interval = d.max(Duration::from_millis(10));
        self
    }

    /// Events buffered for the [`EventStream`] (0: no stream, events only go to storage).
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.event_capacity = n;
        self
    }

    /// Events buffered between the driver and the storage thread.
    pub fn storage_capacity(mut self, n: usize) -> Self {
        self.storage_capacity = n;
        self
    }

    /// UDP sockets bound already, one per `Config::identities` entry in order
    /// (the binary binds with its own fallbacks); otherwise each identity's
    /// `bind` address is bound here. A mio socket converts with
    /// `std::net::UdpSocket::from(mio_socket)`.
    pub fn sockets(mut self, sockets: Vec<std::net::UdpSocket>) -> Self {
        self.sockets = sockets;
        self
    }

    /// How long [`Handle::shutdown`] may take to flush storage.
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.shutdown_timeout = d;
        self
    }

    /// Binds the sockets and spawns the driver task on the current runtime.
    pub fn start(self) -> Result<(Handle, EventStream), Error> {
        let mut config = self.config;
        let mut udp = Vec::new();
        if !self.sockets.is_empty() && self.sockets.len() != config.identities.len() {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "one socket per identity is needed",
            )));
        }
        let mut given = self.sockets.into_iter();
        for ident in &mut config.identities {
            let s = match given.next() {
                Some(s) => {
                    s.set_nonblocking(true)?;
                    s
                }
                None => bind_udp(ident.bind)?,
            };
            // Port 0 becomes the port the OS gave us.
            ident.bind = s.local_addr()?;
            let tx = s.try_clone()?;
            udp.push((UdpSocket::from_std(s)?, tx));
        }
        let local_addrs: Vec<SocketAddr> = config.identities.iter().map(|i| i.bind).collect();
        let clock = Clock(Instant::now());
        let crawler = magnetar_core::Crawler::new(config, clock.now());
        let (events_tx, events_rx) = if self.event_capacity > 0 {
            let (tx, rx) = mpsc::channel(self.event_capacity);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let driver = Driver::new(
            clock,
            crawler,
            udp,
            self.storage,
            self.storage_capacity,
            self.status_interval,
            events_tx,
        )?;
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let join = tokio::spawn(driver.run(cmd_rx, self.shutdown_timeout));
        let handle = Handle {
            tx: cmd_tx,
            local_addrs: local_addrs.into(),
            join: Arc::new(Mutex::new(Some(join))),
            shutdown_timeout: self.shutdown_timeout,
        };
        let events = EventStream {
            inner: events_rx.map(ReceiverStream::new),
        };
        Ok((handle, events))
    }
}

/// Binds one non-blocking UDP socket (IPv6 sockets are v6-only, so `[::]:p` and
/// `0.0.0.0:p` can coexist) with large kernel buffers.
pub fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Controls a spawned crawler. Cheap to clone; the crawler stops when
/// [`Handle::shutdown`] is called or every handle is dropped, or by itself when
/// storage fails ([`Handle::stopped`] resolves then, and [`Handle::shutdown`]
/// returns [`Error::Storage`]).
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
    local_addrs: Arc<[SocketAddr]>,
    join: Arc<Mutex<Option<JoinHandle<DriverReport>>>>,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("local_addrs", &self.local_addrs)
            .finish_non_exhaustive()
    }
}

impl Handle {
    /// The bound address of each identity (in `Config::identities` order).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Fetches the metadata of `ih` from `peers` (or adds peers to a running fetch).
    /// The outcome arrives as `MetadataFetched` or `MetadataFailed`.
    pub async fn fetch(&self, ih: InfoHash, peers: &[SocketAddr]) -> Result<(), Error> {
        let peers = peers.to_vec();
        self.call(|reply| Command::Fetch { ih, peers, reply })
            .await?
    }

    /// Finds peers for `ih` on the DHT, then fetches its metadata.
    pub async fn acquire(&self, ih: InfoHash) -> Result<(), Error> {
        self.call(|reply| Command::Acquire { ih, reply }).await?
    }

    /// Bootstraps (again) from these routers or known nodes.
    pub async fn bootstrap(&self, routers: &[SocketAddr]) -> Result<(), Error> {
        let routers = routers.to_vec();
        self.tx
            .send(Command::Bootstrap { routers })
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Resolves once the crawler has stopped taking commands: after a shutdown, or
    /// by itself after a storage failure (it stops new work at once, as the mio
    /// runtime does; [`Handle::shutdown`] then says why).
    pub async fn stopped(&self) {
        self.tx.closed().await
    }

    /// Every counter of the crawler and of the driver.
    pub async fn stats(&self) -> Result<Snapshot, Error> {
        self.call(|reply| Command::Stats { reply }).await
    }

    /// Stops new work, closes every connection, flushes storage, and returns the
    /// final counters. Takes at most the shutdown timeout plus [`SHUTDOWN_GRACE`]
    /// (5 s by default): a driver still waiting for a blocked storage then is
    /// aborted and the error says so. Only the first call gets the report; later
    /// ones (and clones) get `Error::Stopped` once the crawler has stopped.
    pub async fn shutdown(&self) -> Result<DriverReport, Error> {
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout + SHUTDOWN_GRACE;
        let join = self.join.lock().unwrap_or_else(|e| e.into_inner()).take();
        let _ = tokio::time::timeout_at(deadline, self.tx.send(Command::Shutdown)).await;
        let Some(mut join) = join else {
            let _ = tokio::time::timeout_at(deadline, self.tx.closed()).await;
            return Err(Error::Stopped);
        };
        let report = match tokio::time::timeout_at(deadline, &mut join).await {
            Ok(r) => r.map_err(|_| Error::Stopped)?,
            Err(_) => {
                join.abort();
                return Err(Error::Storage(format!(
                    "the driver did not stop within {:?} (storage blocked); aborted",
                    self.shutdown_timeout + SHUTDOWN_GRACE
                )));
            }
        };
        match &report.storage_error {
            Some(e) => Err(Error::Storage(e.clone())),
            None => Ok(report),
        }
    }
}

/// Everything the crawler learns, as a `Stream<Item = Event>` (also
/// [`EventStream::recv`]). Bounded: a reader that falls behind loses events (they
/// are counted in [`RuntimeCounters::stream_dropped`]); storage never does. Ends
/// when the crawler stops.
pub struct EventStream {
    inner: Option<ReceiverStream<Event>>,
}

impl EventStream {
    /// The next event; `None` once the crawler has stopped.
    pub async fn recv(&mut self) -> Option<Event> {
        match &mut self.inner {
            Some(s) => s.as_mut().recv().await,
            None => None,
        }
    }
}

impl futures_core::Stream for EventStream {
    type Item = Event;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        match &mut self.inner {
            Some(s) => Pin::new(s).poll_next(cx),
            None => Poll::Ready(None),
        }
    }
}
