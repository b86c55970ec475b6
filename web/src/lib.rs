//! magnetar's HTTP server: server-rendered pages, the JSON API (`/api/v1`),
//! Torznab (`/torznab/api`), an RSS feed (`/feed`) and `/metrics`, over the LMDB
//! store, read-only.
//!
//! The stack: hyper parses HTTP/1.1 (headers capped by its buffer size, a header
//! read timeout that cuts slow or idle clients off), axum routes, tower and
//! tower-http bound every request (a whole-request timeout, a body limit, a
//! concurrency limit, gzip) and set the security headers (a Content-Security-Policy
//! that forbids every script). Connections are counted: past
//! [`Limits::max_connections`] a new one is closed at once. Store reads run on
//! tokio's blocking pool, in read transactions, which never block the crawler's
//! writes (LMDB readers and its one writer do not wait for each other).
//!
//! Access ([`Access`]): open on loopback; any other address needs a token (sent as
//! `Authorization: Bearer`, as HTTP basic auth's password, or as Torznab's
//! `apikey`) or basic-auth credentials kept as argon2 hashes ([`Credentials`],
//! `--basic-auth-file`) unless `--no-auth` is given.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use magnetar_storage::backend::ReadIndex;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

mod api;
pub mod basic;
mod feeds;
pub mod index;
mod pages;
mod util;

pub use basic::{AuthCounts, Credentials};
pub use index::Index;

/// The Content-Security-Policy of every answer: nothing but our own stylesheet and
/// images; no script at all, inline or not.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                       form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Longest request target (path and query) accepted, in bytes.
pub const MAX_URI_BYTES: usize = 2048;

/// Who may use the server.
#[derive(Clone)]
pub enum Access {
    /// Anyone who can reach the address.
    Open,
    /// Only requests carrying the token; kept as its SHA-256 digest.
    Token([u8; 32]),
    /// Only requests with a user's basic-auth credentials (checked with argon2),
    /// or carrying the token if one is given too.
    Users {
        token: Option<[u8; 32]>,
        users: Arc<Credentials>,
    },
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Open => f.write_str("Open"),
            Access::Token(_) => f.write_str("Token(…)"),
            Access::Users { token, users } => write!(
                f,
                "Users({} users{})",
                users.len(),
                if token.is_some() { ", token" } else { "" }
            ),
        }
    }
}

/// Why [`Access::decide`] refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessError {
    /// The token is shorter than 16 characters.
    ShortToken,
    /// A non-loopback address with neither a token, nor credentials, nor an
    /// explicit no-auth.
    NeedsToken(SocketAddr),
}

impl AccessError {
    /// The message, naming the command's own flags.
    pub fn message(&self, token_flag: &str, no_auth_flag: &str) -> String {
        self.message_with(token_flag, None, no_auth_flag)
    }

    /// The message, naming the command's own flags, the credentials file's too.
    pub fn message_with(
        &self,
        token_flag: &str,
        basic_flag: Option<&str>,
        no_auth_flag: &str,
    ) -> String {
        match self {
            AccessError::ShortToken => format!("{token_flag} must be at least 16 characters"),
            AccessError::NeedsToken(a) => {
                let basic = basic_flag
                    .map(|b| format!(", or {b} (USER:ARGON2-HASH lines)"))
                    .unwrap_or_default();
                format!(
                    "{a} is not a loopback address: give {token_flag} (at least 16 \
                     characters){basic}, or {no_auth_flag} to serve the index to anyone who \
                     can reach it"
                )
            }
        }
    }
}

impl Access {
    /// The access rule for a server at `listen`: loopback is open unless a token is
    /// given; any other address needs a token or an explicit `no_auth`.
    pub fn decide(
        listen: SocketAddr,
        token: Option<&str>,
        no_auth: bool,
    ) -> Result<Access, AccessError> {
        Access::decide_with(listen, token, None, no_auth)
    }

    /// [`Access::decide`] with basic-auth credentials too: credentials satisfy the
    /// non-loopback rule as a token does (and guard loopback too when given).
    pub fn decide_with(
        listen: SocketAddr,
        token: Option<&str>,
        users: Option<Credentials>,
        no_auth: bool,
    ) -> Result<Access, AccessError> {
        let token = match token {
            Some(t) if t.chars().count() < 16 => return Err(AccessError::ShortToken),
            Some(t) => Some(digest(t)),
            None => None,
        };
        match (token, users) {
            (token, Some(users)) => Ok(Access::Users {
                token,
                users: Arc::new(users),
            }),
            (Some(t), None) => Ok(Access::Token(t)),
            (None, None) if no_auth || listen.ip().is_loopback() => Ok(Access::Open),
            (None, None) => Err(AccessError::NeedsToken(listen)),
        }
    }

    /// The credentials' counters, if there are credentials.
    pub fn auth_counts(&self) -> Option<AuthCounts> {
        match self {
            Access::Users { users, .. } => Some(users.counts()),
            _ => None,
        }
    }
}

/// Whether `presented` is the token (constant-time on the digests).
fn token_matches(want: &[u8; 32], presented: Option<&str>) -> bool {
    presented.is_some_and(|p| ct_eq(&digest(p), want))
}

/// Equality of two digests without an early exit.
pub(crate) fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// The server's bounds.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections open at once; more are closed at once.
    pub max_connections: usize,
    /// Requests being handled at once (others wait).
    pub max_in_flight: usize,
    /// A client must send a request's whole header within this (slow and idle
    /// clients are cut off).
    pub header_timeout: Duration,
    /// A request must be answered within this (else 408).
    pub request_timeout: Duration,
    /// A connection is closed after this, whatever it does.
    pub connection_lifetime: Duration,
    /// hyper's read buffer: the request line and headers must fit.
    pub max_header_bytes: usize,
    /// Store reads (searches, pages) running at once; others wait their turn, first
    /// come first served; 0: as many as tokio's blocking pool runs. The default,
    /// twice the cores, keeps a heavy search from being stretched by every other
    /// read sharing the cores while leaving room to overlap reads: on a quiet
    /// 2-core machine (BENCHMARKS.md, "Web API under load") 4 reads at once met
    /// p99 ≤ 25 ms in 3 runs of 3, unlimited in 2 of 5, 2 at once in 1 of 2.
    /// Under foreign load (other builds on the cores) 2 at once lowered the rate.
    pub max_store_reads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            max_in_flight: 64,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            connection_lifetime: Duration::from_secs(300),
            max_header_bytes: 16 * 1024,
            max_store_reads: std::thread::available_parallelism().map_or(4, |n| 2 * n.get()),
        }
    }
}

/// Everything a server needs besides its store.
#[derive(Clone, Debug)]
pub struct Config {
    pub access: Access,
    pub limits: Limits,
    /// The Prometheus text served at `/metrics` (the crawler's, or `magnetar
    /// serve`'s own counters; `None`: `/metrics` is 404).
    pub metrics: Option<Arc<Mutex<String>>>,
}

/// Why a request was refused by the access check: a fixed set, the label values
/// of `magnetar_http_auth_refused_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No token and no credentials (or a malformed `Authorization` header): 401.
    Missing,
    /// A token (Bearer, basic auth's password, Torznab's `apikey`) that is not it: 401.
    WrongToken,
    /// Basic-auth credentials of a user the credentials file does not name: 401.
    UnknownUser,
    /// A known user with a wrong password: 401.
    BadPassword,
    /// The password-check queue was full: 503 at once.
    Busy,
}

impl Refusal {
    /// Every reason, in the order of their counters.
    pub const ALL: [Refusal; 5] = [
        Refusal::Missing,
        Refusal::WrongToken,
        Refusal::UnknownUser,
        Refusal::BadPassword,
        Refusal::Busy,
    ];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::WrongToken => "wrong_token",
            Refusal::UnknownUser => "unknown_user",
            Refusal::BadPassword => "bad_password",
            Refusal::Busy => "busy",
        }
    }
}

/// Counters of the server itself.
#[derive(Debug, Default)]
pub struct ServerCounters {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections closed at once: [`Limits::max_connections`] were open.
    pub refused_connections: AtomicU64,
    /// Requests refused by the access check, by [`Refusal`] (in `Refusal::ALL` order).
    auth_refused: [AtomicU64; 5],
}

impl ServerCounters {
    /// Requests refused for `why` so far.
    pub fn refused(&self, why: Refusal) -> u64 {
        self.auth_refused[why as usize].load(Ordering::Relaxed)
    }

    fn count_refused(&self, why: Refusal) {
        self.auth_refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub index: Index,
    pub access: Access,
    pub metrics: Option<Arc<Mutex<String>>>,
    pub counters: Arc<ServerCounters>,
}

/// The router with every route and layer (without the connection handling).
/// The store is any [`ReadIndex`] (`Store` converts into one).
pub fn router(store: impl Into<Arc<dyn ReadIndex>>, cfg: &Config) -> Router {
    router_counting(store, cfg, Arc::default())
}

/// [`router`], counting refusals in `counters`.
pub fn router_counting(
    store: impl Into<Arc<dyn ReadIndex>>,
    cfg: &Config,
    counters: Arc<ServerCounters>,
) -> Router {
    let state = AppState {
        index: Index::with_reads(store.into(), cfg.limits.max_store_reads),
        access: cfg.access.clone(),
        metrics: cfg.metrics.clone(),
        counters,
    };
    let routes = Router::new()
        .route("/", get(pages::home))
        .route("/search", get(pages::search))
        .route("/recent", get(pages::recent))
        .route("/stats", get(pages::stats))
        .route("/torrent/{infohash}", get(pages::torrent))
        .route("/static/style.css", get(pages::style))
        .route("/api/v1/search", get(api::search))
        .route("/api/v1/torrents/{infohash}", get(api::torrent))
        .route("/api/v1/recent", get(api::recent))
        .route("/api/v1/stats", get(api::stats))
        .route("/torznab/api", get(feeds::torznab))
        .route("/feed", get(feeds::rss))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state);
    let timeout = cfg.limits.request_timeout;
    routes.layer(
        ServiceBuilder::new()
            .layer(SetResponseHeaderLayer::overriding(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ))
            .layer(SetResponseHeaderLayer::overriding(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ))
            .layer(SetResponseHeaderLayer::overriding(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ))
            .layer(SetResponseHeaderLayer::overriding(
                header::X_FRAME_OPTIONS,
                HeaderValue::from_static("DENY"),
            ))
            .layer(CompressionLayer::new())
            .layer(RequestBodyLimitLayer::new(1024))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                timeout,
            ))
            .layer(tower::limit::ConcurrencyLimitLayer::new(
                cfg.limits.max_in_flight,
            )),
    )
}

/// Checks the request target's size, the method (read-only: GET and HEAD) and
/// the access token.
async fn guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return util::error(
            StatusCode::URI_TOO_LONG,
            &format!("the request target is longer than {MAX_URI_BYTES} bytes"),
        );
    }
    if req.method() != axum::http::Method::GET && req.method() != axum::http::Method::HEAD {
        let mut r = util::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "read-only: only GET and HEAD",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if req.uri().path() == "/static/style.css" {
        return next.run(req).await;
    }
    let refuse = |why: Refusal| {
        st.counters.count_refused(why);
        match why {
            Refusal::Busy => {
                let mut r = util::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many password checks at once; try again",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            Refusal::Missing | Refusal::WrongToken if matches!(st.access, Access::Token(_)) => {
                unauthorized("a valid access token is needed")
            }
            _ => unauthorized("valid credentials are needed"),
        }
    };
    // No token at all, or one that is not it.
    let token_refusal = |req: &Request| match presented_token(req) {
        Some(_) => Refusal::WrongToken,
        None => Refusal::Missing,
    };
    match &st.access {
        Access::Open => {}
        Access::Token(want) => {
            if !token_matches(want, presented_token(&req).as_deref()) {
                return refuse(token_refusal(&req));
            }
        }
        Access::Users { token, users } => {
            let by_token = token
                .as_ref()
                .is_some_and(|t| token_matches(t, presented_token(&req).as_deref()));
            if !by_token {
                let Some((user, password)) = presented_basic(&req) else {
                    users.count_rejected();
                    return refuse(token_refusal(&req));
                };
                match users.check(&user, &password).await {
                    basic::Verdict::Accepted => {}
                    basic::Verdict::UnknownUser => return refuse(Refusal::UnknownUser),
                    basic::Verdict::WrongPassword => return refuse(Refusal::BadPassword),
                    basic::Verdict::Busy => return refuse(Refusal::Busy),
                }
            }
        }
    }
    next.run(req).await
}

/// 401 with the basic-auth challenge.
fn unauthorized(msg: &str) -> Response {
    let mut r = util::error(StatusCode::UNAUTHORIZED, msg);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"magnetar\", charset=\"UTF-8\""),
    );
    r
}

/// The basic-auth user and password a request carries.
fn presented_basic(req: &Request) -> Option<(String, String)> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let b = v.strip_prefix("Basic ")?;
    let raw = util::base64_decode(b.trim())?;
    let s = String::from_utf8(raw).ok()?;
    s.split_once(':')
        .map(|(u, p)| (u.to_string(), p.to_string()))
}

/// The token a request carries: `Authorization: Bearer T`, basic auth with
/// password T (any user), or `apikey=T` in the query (Torznab clients).
fn presented_token(req: &Request) -> Option<String> {
    if let Some(v) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(t) = v.strip_prefix("Bearer ") {
            return Some(t.trim().to_string());
        }
        if let Some(b) = v.strip_prefix("Basic ") {
            let raw = util::base64_decode(b.trim())?;
            let s = String::from_utf8(raw).ok()?;
            return s.split_once(':').map(|(_, p)| p.to_string());
        }
    }
    let q = req.uri().query()?;
    util::query_pairs(q)
        .into_iter()
        .find(|(k, _)| k == "apikey")
        .map(|(_, v)| v)
}

async fn not_found(req: Request) -> Response {
    if req.uri().path().starts_with("/api/") {
        util::error(StatusCode::NOT_FOUND, "no such endpoint")
    } else {
        pages::not_found_page("no such page")
    }
}

async fn metrics(State(st): State<AppState>) -> Response {
    match &st.metrics {
        Some(m) => {
            let text = m.lock().map(|t| t.clone()).unwrap_or_default();
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                text,
            )
                .into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            "no metrics: this server runs beside no crawler (use `magnetar crawl --http`)\n",
        )
            .into_response(),
    }
}

/// Serves `listener` until `shutdown` resolves: one task per connection, at most
/// `max_connections` at once (more are closed at once and counted).
pub async fn serve(
    listener: TcpListener,
    store: impl Into<Arc<dyn ReadIndex>>,
    cfg: Config,
    counters: Arc<ServerCounters>,
    shutdown: impl Future<Output = ()>,
) {
    let app = router_counting(store, &cfg, counters.clone());
    let limits = cfg.limits.clone();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("http accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            counters.refused_connections.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        counters.connections.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let svc = TowerToHyperService::new(app.clone());
        let limits = limits.clone();
        tokio::spawn(async move {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .keep_alive(true);
            let conn = b.serve_connection(TokioIo::new(stream), svc);
            // Past its lifetime the connection is dropped, which closes it.
            let _ = tokio::time::timeout(limits.connection_lifetime, conn).await;
            drop(permit);
        });
    }
}

/// A server running on its own thread and tokio runtime (for `magnetar crawl
/// --http`, beside a crawler that is not a tokio program). Stops when dropped.
pub struct Background {
    pub local_addr: SocketAddr,
    /// The server's counters (connections, refusals), for the crawler's `/metrics`.
    pub counters: Arc<ServerCounters>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds `addr` and serves the store on a new thread with a two-worker runtime.
pub fn spawn(
    addr: SocketAddr,
    store: impl Into<Arc<dyn ReadIndex>>,
    cfg: Config,
) -> std::io::Result<Background> {
    let store: Arc<dyn ReadIndex> = store.into();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .thread_name("magnetar-http")
        .enable_all()
        .build()?;
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let local_addr = std_listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let counters = Arc::new(ServerCounters::default());
    let served = counters.clone();
    let thread = std::thread::Builder::new()
        .name("magnetar-http".into())
        .spawn(move || {
            rt.block_on(async move {
                match TcpListener::from_std(std_listener) {
                    Ok(l) => {
                        serve(l, store, cfg, served, async {
                            let _ = stopped.await;
                        })
                        .await
                    }
                    Err(e) => tracing::error!("http listener: {e}"),
                }
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        })?;
    Ok(Background {
        local_addr,
        counters,
        stop: Some(stop),
        thread: Some(thread),
    })
}
