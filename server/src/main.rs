//! dynamic-port-server: binds a port chosen at run time, registers `ADVERTISED_IP:PORT` with
//! the service registry, keeps it registered, serves a small page and `/healthz`, and
//! deregisters when told to stop (SIGTERM or SIGINT).
#![forbid(unsafe_code)]

mod advertise;
mod bind;
mod config;
mod port_file;
mod registration;
mod web;

use common::probe::Outcome;
use common::wire::Registration;
use common::{duration, flags, logging, probe, VERSION};
use config::{Config, Mode};
use signal_hook::consts::{SIGINT, SIGTERM};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// Threads answering requests. The page and `/healthz` are tiny; two keep one slow client
/// from holding up the registry's probe.
const HANDLER_THREADS: usize = 2;

/// The whole stop, from signal to exit, stays within this: Kubernetes' grace period is
/// sized from it.
const STOP_BUDGET: Duration = Duration::from_secs(2);
/// How long a stop waits for a renewal already in flight.
const RENEWAL_GRACE: Duration = Duration::from_millis(300);

/// What one client may cost: the server only answers GETs, so a small body limit is plenty; a
/// connection that dawdles is closed; the registry's probe opens one connection at a time.
fn limits() -> tiny_http::Limits {
    tiny_http::Limits { max_connections: 256, max_body_bytes: 16 * 1024, ..tiny_http::Limits::default() }
}

fn main() -> ExitCode {
    let mode = match config::parse(std::env::args().skip(1), |k| std::env::var(k).ok()) {
        Ok(mode) => mode,
        Err(e) => {
            eprintln!("dynamic-port-server: {e} (see dynamic-port-server --help)");
            return ExitCode::from(2);
        }
    };
    match mode {
        Mode::Help => {
            let about = "a web server on a port chosen at run time, kept registered with the service registry";
            print!("{}", flags::usage("dynamic-port-server", about, config::USAGE_SYNOPSIS, config::SPEC));
            ExitCode::SUCCESS
        }
        Mode::Version => {
            println!("dynamic-port-server {VERSION}");
            ExitCode::SUCCESS
        }
        Mode::Healthcheck(port_file) => healthcheck(&port_file),
        Mode::Serve(config) => {
            logging::init();
            match serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    log::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The `healthcheck` subcommand, for exec probes: exit 0 if the server whose port is in
/// `port_file` answers `/healthz` with 2xx within a second.
fn healthcheck(port_file: &Path) -> ExitCode {
    let port = match std::fs::read_to_string(port_file).map(|s| s.trim().parse::<u16>()) {
        Ok(Ok(port)) => port,
        Ok(Err(_)) => {
            eprintln!("dynamic-port-server: {} does not hold a port number", port_file.display());
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("dynamic-port-server: cannot read {}: {e}", port_file.display());
            return ExitCode::FAILURE;
        }
    };
    match probe::probe(SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(1), None) {
        Outcome::Pass => ExitCode::SUCCESS,
        failed => {
            let why = failed.error().unwrap_or_default();
            eprintln!("dynamic-port-server: /healthz on port {port}: {why}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> Result<(), String> {
    let started = Instant::now();
    log::info!("Starting dynamic port server...");
    // Install signal handling before anything can be registered, so no stop is ever missed.
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).map_err(|e| format!("cannot handle signals: {e}"))?;
    if let Some(path) = &config.port_file {
        port_file::clear(path)
            .map_err(|e| format!("cannot remove the last run's port file {} (-port-file): {e}", path.display()))?;
    }
    let listener = bind::bind(config.bind_ip, config.port_range.as_ref()).map_err(|e| e.to_string())?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    log::info!("Listening on {bound}");
    if let Some(path) = &config.port_file {
        port_file::write(path, bound.port())
            .map_err(|e| format!("cannot write the port to {} (-port-file): {e}", path.display()))?;
    }
    let ip = match config.advertised_ip {
        Some(ip) => ip,
        None => advertise::route_to(&config.registry).map_err(|e| {
            format!("cannot work out which address to advertise ({e}): pass -advertised-ip=IP or set HOST_IP")
        })?,
    };
    let advertised = SocketAddr::new(ip, bound.port());
    let name = config.name.clone().unwrap_or_else(|| advertise::default_name(advertise::hostname(), bound.port()));

    let server = tiny_http::Server::from_listener_with_limits(listener, None, limits())
        .map_err(|e| format!("cannot serve: {e}"))?;
    let server = Arc::new(server);
    let instance = Arc::new(web::Instance::new(name.clone(), advertised, started));
    for i in 0..HANDLER_THREADS {
        let (server, instance) = (server.clone(), instance.clone());
        thread::Builder::new()
            .name(format!("http-{i}"))
            .spawn(move || {
                while let Ok(request) = server.recv() {
                    web::handle(&instance, request);
                }
            })
            .map_err(|e| format!("cannot start: {e}"))?;
    }

    log::info!("Registering advertised endpoint [{advertised}]");
    let registration = Registration {
        name: name.clone(),
        address: advertised.to_string(),
        tags: config.tags.clone(),
        ttl: config.register_ttl.map(duration::format),
    };
    let client = Arc::new(registration::Client::new(&config.registry, config.token.as_deref()));
    let (stop_tx, stop_rx) = mpsc::channel();
    let (stopped_tx, stopped_rx) = mpsc::channel::<()>();
    {
        let client = client.clone();
        let interval = config.register_interval;
        thread::Builder::new()
            .name("register".into())
            .spawn(move || {
                registration::keep_registered(&client, &registration, interval, &stop_rx);
                drop(stopped_tx);
            })
            .map_err(|e| format!("cannot start: {e}"))?;
    }

    let signal = signals.forever().next();
    let stopping = Instant::now();
    log::info!("Received signal {}, deregistering {name}", signal.unwrap_or_default());
    // Stop re-registering first, so a renewal in flight cannot land after the deregistration;
    // but wait for it only briefly, since a hung registry must not hold up the stop.
    drop(stop_tx);
    let _ = stopped_rx.recv_timeout(RENEWAL_GRACE);
    let budget = STOP_BUDGET.saturating_sub(stopping.elapsed()).max(Duration::from_millis(100));
    match client.deregister(&name, budget) {
        Ok(()) => log::info!("Deregistered {name}"),
        Err(why) => log::warn!("Could not deregister {name}: {why}"),
    }
    for _ in 0..HANDLER_THREADS {
        server.unblock();
    }
    Ok(())
}
