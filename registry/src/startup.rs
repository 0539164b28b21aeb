//! The running registry: the store, its checker and the two HTTP listeners, started together
//! and stopped together. `main` and the tests both start it through [`start`].

use crate::access::{ProbePolicy, WriteToken};
use crate::api::{self, Routed};
use crate::blocking_query;
use crate::checker::{CheckConfig, Checker};
use crate::file_limit;
use crate::guard::GuardConfig;
use crate::health::Thresholds;
use crate::metrics::Metrics;
use crate::reply;
use crate::route::{Listener, Route};
use crate::state::Registry;
use crate::store::Store;
use crate::views::Views;
use common::wire::{ErrorBody, DEFAULT_API};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

/// Everything the registry is told at start.
#[derive(Debug, Clone)]
pub struct Config {
    /// `-api`: writes and reads.
    pub api: String,
    /// `-http`: the page and read-only JSON.
    pub http: String,
    pub check: CheckConfig,
    pub thresholds: Thresholds,
    /// `-max-endpoints`.
    pub max_endpoints: usize,
    /// `-max-connections`: connections served at once on each listener.
    pub max_connections: usize,
    /// `-token-file`: the token every write must carry, if any.
    pub token: WriteToken,
    /// `-allow-cidr`: what registrations may point the checker at.
    pub probe_policy: ProbePolicy,
    /// `-eviction-guard-share` and `-eviction-guard-max-hold`; the window is the check interval.
    pub guard: GuardConfig,
    /// `-max-watchers`: blocking queries waiting at once; each holds its connection's thread.
    pub max_waiters: usize,
    /// `-warm-up`: how long after start the list may be incomplete (see `Store::warming_for`).
    pub warm_up: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            api: DEFAULT_API.into(),
            http: "127.0.0.1:8080".into(),
            check: CheckConfig::default(),
            thresholds: Thresholds::default(),
            max_endpoints: DEFAULT_MAX_ENDPOINTS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            token: WriteToken::default(),
            probe_policy: ProbePolicy::default(),
            guard: GuardConfig::default(),
            max_waiters: DEFAULT_MAX_WAITERS,
            warm_up: DEFAULT_WARM_UP,
        }
    }
}

/// Default warm-up: the servers' default register interval (10s), and room for a renewal that
/// was retried or slow.
pub const DEFAULT_WARM_UP: Duration = Duration::from_secs(15);

/// Default cap on endpoints: ten times the largest fleet the benchmark runs, so a runaway
/// client fills memory slowly enough to be noticed, not at once.
pub const DEFAULT_MAX_ENDPOINTS: usize = 100_000;

/// Default cap on connections per listener. Each connection holds a thread while it lives;
/// 512 is far above what a fleet's renewals need (they take milliseconds every few seconds)
/// and far below what would exhaust memory or file descriptors.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// Default cap on blocking queries waiting at once: each holds its connection's thread, and
/// they must leave room under `-max-connections` for everything else.
pub const DEFAULT_MAX_WAITERS: usize = 256;

/// Why the registry could not start.
#[derive(Debug)]
pub struct StartError {
    pub what: String,
    pub source: io::Error,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl std::error::Error for StartError {}

/// A started registry.
pub struct Running {
    pub api_addr: SocketAddr,
    pub ui_addr: SocketAddr,
    registry: Arc<Registry>,
    /// Dropping a server closes its listener and every connection it has open.
    listeners: Vec<tiny_http::Server>,
}

/// Binds both listeners, starts the checker and begins serving.
pub fn start(config: &Config) -> Result<Running, StartError> {
    let bind = |addr: &str, flag: &str| {
        TcpListener::bind(addr)
            .map_err(|source| StartError { what: format!("cannot listen on {addr} ({flag})"), source })
    };
    let api_listener = bind(&config.api, "-api")?;
    let ui_listener = bind(&config.http, "-http")?;
    let guard = GuardConfig { window: config.check.interval, ..config.guard };
    let store = Arc::new(Store::new(config.thresholds, config.max_endpoints, guard).warming_for(config.warm_up));
    end_warm_up_after(&store, config.warm_up)
        .map_err(|source| StartError { what: "cannot start the warm-up timer".into(), source })?;
    let metrics = Arc::new(Metrics::default());
    let check = within_file_limit(config);
    let checker = Checker::start(store.clone(), check, metrics.clone())
        .map_err(|source| StartError { what: "cannot start the health checker".into(), source })?;
    let registry = Arc::new(Registry {
        store,
        checker,
        views: Views::default(),
        token: config.token.clone(),
        probe_policy: config.probe_policy.clone(),
        metrics,
        max_waiters: config.max_waiters,
    });
    let api = serve(api_listener, Listener::Api, &registry, limits(config, Listener::Api))?;
    let ui = serve(ui_listener, Listener::Ui, &registry, limits(config, Listener::Ui))?;
    Ok(Running { api_addr: api.0, ui_addr: ui.0, registry, listeners: vec![api.1, ui.1] })
}

/// The checker's settings, with no more kept connections than the open-file limit leaves.
fn within_file_limit(config: &Config) -> CheckConfig {
    let limit = file_limit::open_file_limit();
    let check = config.check;
    let keep_alive = file_limit::keep_alive_within(limit, check.keep_alive, check.concurrency, config.max_connections);
    if keep_alive < check.keep_alive {
        log::warn!(
            "keeping at most {keep_alive} connections between checks, not {}: the open-file limit is {}",
            check.keep_alive,
            limit.unwrap_or_default()
        );
    }
    CheckConfig { keep_alive, ..check }
}

/// Says when the warm-up is over, to the log and to watchers.
fn end_warm_up_after(store: &Arc<Store>, period: Duration) -> io::Result<()> {
    if period.is_zero() {
        return Ok(());
    }
    let store = store.clone();
    std::thread::Builder::new().name("warm-up".into()).spawn(move || {
        std::thread::sleep(period);
        store.warm_up_over();
        log::info!("Warm-up over: {} endpoints registered; the list is complete", store.len());
    })?;
    Ok(())
}

/// What one client connection may cost: bounded time for a request to arrive, bounded sizes,
/// and a bounded number of connections, so a slow or hostile client holds one thread for a
/// few seconds at most and cannot make the registry read or buffer more than it needs.
fn limits(config: &Config, kind: Listener) -> tiny_http::Limits {
    tiny_http::Limits {
        max_connections: config.max_connections,
        // Clients that keep connections open between requests (browsers, watchers' keep-alive)
        // get a minute; the servers open a fresh one per renewal.
        idle_timeout: Duration::from_secs(60),
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(10),
        write_timeout: Duration::from_secs(10),
        max_header_bytes: 16 * 1024,
        // The UI listener takes no writes: a body there is only ever refused, so it need not
        // be buffered beyond what a mistaken client sends.
        max_body_bytes: if kind == Listener::Api { api::MAX_BODY_BYTES } else { UI_MAX_BODY_BYTES },
        // Requests refused before they reach a handler (408, 413, 431, the connection cap's
        // 503, ...) get the same `{"error": "..."}` body as every other answer.
        error_body: json_error_body,
    }
}

fn json_error_body(_: tiny_http::StatusCode, message: &str) -> (Vec<u8>, &'static str) {
    let body = serde_json::to_vec(&ErrorBody { error: message.into() }).unwrap_or_else(|_| b"{}".to_vec());
    (body, reply::JSON)
}

/// Largest body the UI listener reads before answering its 405.
const UI_MAX_BODY_BYTES: usize = 4 * 1024;

fn serve(
    listener: TcpListener,
    kind: Listener,
    registry: &Arc<Registry>,
    limits: tiny_http::Limits,
) -> Result<(SocketAddr, tiny_http::Server), StartError> {
    let failed = |source| StartError { what: format!("cannot serve the {kind:?} listener"), source };
    let addr = listener.local_addr().map_err(failed)?;
    // Each request is answered on its connection's own thread: no hand-off per request, and a
    // slow client holds only its own thread (bounded by -max-connections).
    let registry = registry.clone();
    let handler: tiny_http::Handler = Arc::new(move |mut request| match api::route(&registry, kind, &mut request) {
        Routed::Now(reply) => {
            let route = Route::of(crate::url::split(request.url()).0);
            reply::respond(&registry.metrics, request, kind, route, reply);
        }
        Routed::Wait(wait, read) => blocking_query::wait_then_answer(&registry, request, kind, wait, read),
    });
    let server = tiny_http::Server::from_listener_with_handler(listener, limits, handler)
        .map_err(|e| failed(io::Error::other(e.to_string())))?;
    Ok((addr, server))
}

impl Running {
    /// Stops serving and checking; when it returns, both ports are free again.
    pub fn stop(self) {
        // Wake blocking queries, which answer with what they have.
        self.registry.store.close();
        drop(self.listeners);
    }
}
