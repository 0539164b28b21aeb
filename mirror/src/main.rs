//! endpointslice-mirror: gives Kubernetes Services endpoints on dynamic ports. It follows the
//! service registry through blocking queries and mirrors the endpoints of each opted-in Service
//! (annotation `dynamic-ports/tag: TAG`, no selector) into EndpointSlices that it owns, so that
//! kube-proxy routes the Service's ClusterIP to them and DNS answers for them.
#![forbid(unsafe_code)]

mod kube;
mod metrics;
mod reconcile;
mod registry;
mod slices;
mod sync;

use common::flags::{self, Command, Flag, FlagError, Values};
use common::{address, duration, logging, VERSION};
use metrics::Metrics;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

const SPEC: &[Flag] = &[
    Flag {
        name: "registry",
        env: "MIRROR_REGISTRY",
        value: "HOST:PORT",
        default: "$SERVICE_REGISTRY_SERVICE_HOST:$SERVICE_REGISTRY_SERVICE_PORT, else 127.0.0.1:10080",
        help: "the registry's API (reads only)",
    },
    Flag {
        name: "namespace",
        env: "MIRROR_NAMESPACE",
        value: "NAME",
        default: "the pod's own namespace",
        help: "the namespace whose Services are mirrored",
    },
    Flag {
        name: "kube-api",
        env: "MIRROR_KUBE_API",
        value: "URL",
        default: "https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT",
        help: "the Kubernetes API (http:// only for kubectl proxy)",
    },
    Flag {
        name: "kube-token-file",
        env: "MIRROR_KUBE_TOKEN_FILE",
        value: "PATH",
        default: "the pod's ServiceAccount token",
        help: "the bearer token for the API",
    },
    Flag {
        name: "kube-ca-file",
        env: "MIRROR_KUBE_CA_FILE",
        value: "PATH",
        default: "the pod's ServiceAccount ca.crt",
        help: "the CA the API server's certificate must chain to",
    },
    Flag {
        name: "resync",
        env: "MIRROR_RESYNC",
        value: "DURATION",
        default: "10s",
        help: "read everything again at least this often (as well as at every change of the registry's list)",
    },
    Flag {
        name: "max-per-slice",
        env: "MIRROR_MAX_PER_SLICE",
        value: "N",
        default: "100",
        help: "endpoints per EndpointSlice, as Kubernetes' own controllers keep them",
    },
    Flag {
        name: "http",
        env: "MIRROR_HTTP",
        value: "ADDR",
        default: "0.0.0.0:9090",
        help: "listen address for /healthz and /metrics",
    },
];

struct Config {
    registry: String,
    namespace: String,
    kube: kube::Config,
    resync: Duration,
    max_per_slice: usize,
    http: String,
}

fn config(values: &Values, env: impl Fn(&str) -> Option<String>) -> Result<Config, FlagError> {
    let missing = |flag: &str| FlagError::MissingValue(flag.into());
    let registry = address::registry(values.get("registry"), &env).map_err(|(given, why)| FlagError::Invalid {
        flag: "registry".into(),
        value: given,
        reason: why.into(),
    })?;
    let in_pod = |file: &str| PathBuf::from(SERVICE_ACCOUNT).join(file);
    let namespace = match values.get("namespace") {
        Some(n) => n.to_string(),
        None => std::fs::read_to_string(in_pod("namespace"))
            .map(|n| n.trim().to_string())
            .map_err(|_| missing("namespace"))?,
    };
    let api = match values.get("kube-api") {
        Some(url) => url.to_string(),
        None => match (env("KUBERNETES_SERVICE_HOST"), env("KUBERNETES_SERVICE_PORT")) {
            (Some(host), Some(port)) => format!("https://{}", address::authority(&host, &port)),
            _ => return Err(missing("kube-api")),
        },
    };
    let file = |flag: &str, default: &str| {
        values.get(flag).map(PathBuf::from).or_else(|| Some(in_pod(default)).filter(|p| p.exists()))
    };
    let count = |s: &str| match s.parse::<usize>() {
        Ok(n) if (1..=1000).contains(&n) => Ok(n),
        _ => Err("must be a whole number from 1 to 1000 (the API's limit)".to_string()),
    };
    Ok(Config {
        registry,
        namespace,
        kube: kube::Config {
            api,
            token_file: file("kube-token-file", "token"),
            ca_file: file("kube-ca-file", "ca.crt"),
        },
        resync: values.parse_with("resync", Duration::from_secs(10), duration::parse_positive)?,
        max_per_slice: values.parse_with("max-per-slice", 100, count)?,
        http: values.get("http").unwrap_or("0.0.0.0:9090").to_string(),
    })
}

fn main() -> ExitCode {
    let parsed = flags::parse(SPEC, std::env::args().skip(1), |k| std::env::var(k).ok(), 0);
    let config = match parsed.and_then(|c| match c {
        Command::Run(values) => config(&values, |k| std::env::var(k).ok()).map(Some),
        Command::Help => {
            let about = "mirrors the registry's endpoints into EndpointSlices of opted-in Services";
            print!("{}", flags::usage("endpointslice-mirror", about, "[flags]", SPEC));
            Ok(None)
        }
        Command::Version => {
            println!("endpointslice-mirror {VERSION}");
            Ok(None)
        }
    }) {
        Ok(Some(config)) => config,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("endpointslice-mirror: {e} (see endpointslice-mirror --help)");
            return ExitCode::from(2);
        }
    };
    logging::init();
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> Result<(), String> {
    log::info!("Starting endpointslice mirror {VERSION}: registry {}, API {}", config.registry, config.kube.api);
    // rustls without a compiled-in default: ring, installed once for the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .map_err(|e| format!("cannot handle signals: {e}"))?;
    let metrics = Arc::new(Metrics::default());
    let started = Instant::now();
    serve_metrics(&config.http, metrics.clone(), config.resync, started)?;
    let kube = kube::Client::new(config.kube.clone())?;
    // Without the API there is nothing to do: exit, and the kubelet starts the pod again.
    let mirror = sync::Mirror::new(kube, config.namespace.clone(), config.max_per_slice, metrics.clone())
        .map_err(|e| format!("cannot reach the Kubernetes API: {e}"))?;
    let registry = registry::Registry::new(&config.registry);
    let (resync, metrics_for_loop) = (config.resync, metrics.clone());
    thread::Builder::new()
        .name("mirror".into())
        .spawn(move || follow(&registry, mirror, resync, &metrics_for_loop, started))
        .map_err(|e| format!("cannot start: {e}"))?;
    if let Some(signal) = signals.forever().next() {
        // The slices stay: they describe live servers, and a new mirror takes them over.
        log::info!("Received signal {signal}, stopping; the EndpointSlices stay as they are");
    }
    Ok(())
}

/// Follows the registry for ever: a pass at every change of its list and at least every
/// `resync`; after an error, a fresh pass a second later. While the registry cannot be
/// reached, nothing is written: the slices keep the last endpoints it listed.
fn follow(
    registry: &registry::Registry,
    mut mirror: sync::Mirror,
    resync: Duration,
    metrics: &Metrics,
    started: Instant,
) {
    let mut seen = 0;
    let mut trouble: Option<String> = None;
    loop {
        let outcome = registry.next(seen, resync).and_then(|listing| {
            let answered = Instant::now();
            mirror.sync(&listing)?;
            metrics.last_lag_micros.store(answered.elapsed().as_micros() as u64, Relaxed);
            Ok(listing.index)
        });
        match outcome {
            Ok(index) => {
                seen = index;
                metrics.last_sync_ms.store(started.elapsed().as_millis() as u64, Relaxed);
                if let Some(what) = trouble.take() {
                    log::info!("In sync again after: {what}");
                }
            }
            Err(why) => {
                metrics.errors.fetch_add(1, Relaxed);
                if trouble.as_deref() != Some(why.as_str()) {
                    log::warn!("{why}; the EndpointSlices stay as they are, retrying");
                }
                trouble = Some(why);
                seen = 0;
                thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// `/healthz` (200 while a pass completed within three resync periods and 5 s, counted from the
/// start before the first pass) and `/metrics`.
fn serve_metrics(addr: &str, metrics: Arc<Metrics>, resync: Duration, started: Instant) -> Result<(), String> {
    let server = tiny_http::Server::http(addr).map_err(|e| format!("cannot listen on {addr} (-http): {e}"))?;
    let grace = 3 * resync + Duration::from_secs(5);
    thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let (status, body) = match request.url() {
                    "/metrics" => (200, metrics.render()),
                    "/healthz" => {
                        let last = Duration::from_millis(metrics.last_sync_ms.load(Relaxed));
                        if started.elapsed().saturating_sub(last) <= grace {
                            (200, "ok\n".to_string())
                        } else {
                            (503, "no pass completed recently\n".to_string())
                        }
                    }
                    _ => (404, "not found\n".to_string()),
                };
                let _ = request.respond(tiny_http::Response::from_string(body).with_status_code(status));
            }
        })
        .map_err(|e| format!("cannot start: {e}"))?;
    Ok(())
}
