//! The `service-registry` binary: flags in, registry up, exit 0 on SIGTERM or SIGINT.
#![forbid(unsafe_code)]

use common::flags::{self, Command, Flag, FlagError, Values};
use common::wire::DEFAULT_API;
use common::{duration, logging, token};
use service_registry::{
    watch, CheckConfig, Cidr, Config, GuardConfig, ProbePolicy, Thresholds, WriteToken, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_ENDPOINTS, DEFAULT_MAX_WAITERS, VERSION,
};
use std::process::ExitCode;

/// On musl (the release images), freed small blocks are kept for reuse in front of musl's
/// allocator, which takes one global lock for every call: a third of a registration's CPU with
/// one client, and a queue with 32. glibc's allocator caches per thread already, so every other
/// build keeps it as it is.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: small_block_cache::SmallBlockCache = small_block_cache::SmallBlockCache;

const SPEC: &[Flag] = &[
    Flag {
        name: "api",
        env: "REGISTRY_API",
        value: "ADDR",
        default: DEFAULT_API,
        help: "listen address for the API: writes and reads",
    },
    Flag {
        name: "http",
        env: "REGISTRY_HTTP",
        value: "ADDR",
        default: "127.0.0.1:8080",
        help: "listen address for the page and read-only JSON",
    },
    Flag {
        name: "check-interval",
        env: "REGISTRY_CHECK_INTERVAL",
        value: "DURATION",
        default: "5s",
        help: "time between two health checks of an endpoint",
    },
    Flag {
        name: "check-timeout",
        env: "REGISTRY_CHECK_TIMEOUT",
        value: "DURATION",
        default: "2s",
        help: "how long one check may take",
    },
    Flag {
        name: "failures-before-critical",
        env: "REGISTRY_FAILURES_BEFORE_CRITICAL",
        value: "N",
        default: "2",
        help: "failed checks in a row that make a passing endpoint critical",
    },
    Flag {
        name: "deregister-critical-after",
        env: "REGISTRY_DEREGISTER_CRITICAL_AFTER",
        value: "DURATION",
        default: "30s",
        help: "remove an endpoint critical for this long",
    },
    Flag {
        name: "check-concurrency",
        env: "REGISTRY_CHECK_CONCURRENCY",
        value: "N",
        default: "1024",
        help: "health checks in flight at once (each holds a socket until it ends)",
    },
    Flag {
        name: "check-keep-alive",
        env: "REGISTRY_CHECK_KEEP_ALIVE",
        value: "N",
        default: "1024",
        help: "connections kept open between checks (each a socket; 0: a new one every check)",
    },
    Flag {
        name: "max-endpoints",
        env: "REGISTRY_MAX_ENDPOINTS",
        value: "N",
        default: "100000",
        help: "refuse new registrations beyond this many endpoints (503)",
    },
    Flag {
        name: "max-connections",
        env: "REGISTRY_MAX_CONNECTIONS",
        value: "N",
        default: "512",
        help: "connections served at once on each listener; the next is answered 503",
    },
    Flag {
        name: "max-watchers",
        env: "REGISTRY_MAX_WATCHERS",
        value: "N",
        default: "256",
        help: "blocking queries (?index=) waiting at once; the next is answered 429",
    },
    Flag {
        name: "warm-up",
        env: "REGISTRY_WARM_UP",
        value: "DURATION",
        default: "15s",
        help: "after start, say the list may be incomplete and remove nothing (servers' register interval + margin; 0s: none)",
    },
    Flag {
        name: "token-file",
        env: "REGISTRY_TOKEN_FILE",
        value: "PATH",
        default: "",
        help: "require the token in this file on every write (Authorization: Bearer TOKEN)",
    },
    Flag {
        name: "allow-cidr",
        env: "REGISTRY_ALLOW_CIDR",
        value: "CIDR",
        default: "any address but link-local",
        help: "only accept Addresses in these ranges (repeat, or separate with commas); 403 otherwise",
    },
    Flag {
        name: "eviction-guard-share",
        env: "REGISTRY_EVICTION_GUARD_SHARE",
        value: "FRACTION",
        default: "0.5",
        help: "hold removals when more than this share of passing endpoints fail in one interval (0: off)",
    },
    Flag {
        name: "eviction-guard-max-hold",
        env: "REGISTRY_EVICTION_GUARD_MAX_HOLD",
        value: "DURATION",
        default: "2m",
        help: "the longest such a hold lasts",
    },
];

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("watch") {
        args.next();
        return watch(args);
    }
    let config = match flags::parse(SPEC, args, |k| std::env::var(k).ok(), 0).and_then(|c| match c {
        Command::Run(values) => config(&values).map(Some),
        Command::Help => {
            print!(
                "{}",
                flags::usage(
                    "service-registry",
                    "a registry of services on dynamic ports, with health checks",
                    "[flags]\n       service-registry watch [-registry=HOST:PORT] [-status=S] [-tag=T] [-once]",
                    SPEC
                )
            );
            Ok(None)
        }
        Command::Version => {
            println!("service-registry {VERSION}");
            Ok(None)
        }
    }) {
        Ok(Some(config)) => config,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("service-registry: {e} (see service-registry --help)");
            return ExitCode::from(2);
        }
    };
    logging::init();
    run(&config)
}

/// `service-registry watch`: print the table whenever it changes.
fn watch(args: impl Iterator<Item = String>) -> ExitCode {
    let options = match watch::parse(args, |k| std::env::var(k).ok()) {
        Ok(Some(options)) => options,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("service-registry watch: {e} (see service-registry watch --help)");
            return ExitCode::from(2);
        }
    };
    match watch::run(&options, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("service-registry watch: {why}");
            ExitCode::FAILURE
        }
    }
}

fn config(values: &Values) -> Result<Config, FlagError> {
    let duration = |name, default| values.parse_with(name, default, duration::parse_positive);
    let count = |name, default: usize, max: usize| {
        values.parse_with(name, default, |s| match s.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(format!("must be a whole number from 1 to {max}")),
        })
    };
    let defaults = Config::default();
    Ok(Config {
        api: values.get("api").unwrap_or(&defaults.api).to_string(),
        http: values.get("http").unwrap_or(&defaults.http).to_string(),
        check: CheckConfig {
            interval: duration("check-interval", defaults.check.interval)?,
            timeout: duration("check-timeout", defaults.check.timeout)?,
            concurrency: count("check-concurrency", defaults.check.concurrency, 65536)?,
            keep_alive: values.parse_with("check-keep-alive", defaults.check.keep_alive, |s| match s.parse() {
                Ok(n) if n <= 1_000_000 => Ok(n),
                _ => Err("must be a whole number from 0 to 1000000".to_string()),
            })?,
        },
        thresholds: Thresholds {
            failures_before_critical: count(
                "failures-before-critical",
                defaults.thresholds.failures_before_critical as usize,
                1000,
            )? as u32,
            deregister_critical_after: duration(
                "deregister-critical-after",
                defaults.thresholds.deregister_critical_after,
            )?,
        },
        max_endpoints: count("max-endpoints", DEFAULT_MAX_ENDPOINTS, 10_000_000)?,
        max_connections: count("max-connections", DEFAULT_MAX_CONNECTIONS, 100_000)?,
        token: WriteToken::new(values.parse_with("token-file", None, |p| token::read_file(p).map(Some))?.as_deref()),
        probe_policy: ProbePolicy {
            allow: values
                .get_all("allow-cidr")
                .into_iter()
                .map(|c| {
                    c.parse::<Cidr>().map_err(|e| FlagError::Invalid {
                        flag: "allow-cidr".into(),
                        value: c.into(),
                        reason: e,
                    })
                })
                .collect::<Result<_, _>>()?,
        },
        guard: GuardConfig {
            share: values.parse_with("eviction-guard-share", defaults.guard.share, |s| match s.parse::<f64>() {
                Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
                _ => Err("must be a fraction from 0 to 1, like 0.5".to_string()),
            })?,
            max_hold: duration("eviction-guard-max-hold", defaults.guard.max_hold)?,
            // The window is the check interval: service_registry::start sets it.
            window: defaults.guard.window,
        },
        max_waiters: count("max-watchers", DEFAULT_MAX_WAITERS, 100_000)?,
        warm_up: values.parse_with("warm-up", defaults.warm_up, duration::parse)?,
    })
}

fn run(config: &Config) -> ExitCode {
    log::info!("Starting service registry...");
    let signals = match signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
    {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot handle signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let running = match service_registry::start(config) {
        Ok(r) => r,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    log::info!("API listening on {}", running.api_addr);
    log::info!("UI listening on {}", running.ui_addr);
    if config.token.is_set() {
        log::info!("Writes need the token from -token-file");
    }
    if !config.probe_policy.allow.is_empty() {
        let ranges: Vec<String> = config.probe_policy.allow.iter().map(|c| c.to_string()).collect();
        log::info!("Accepting only Addresses in {}", ranges.join(", "));
    }
    log::info!(
        "Checking /healthz every {} (timeout {}, critical after {} failures, removed after {} critical)",
        duration::format(config.check.interval),
        duration::format(config.check.timeout),
        config.thresholds.failures_before_critical,
        duration::format(config.thresholds.deregister_critical_after)
    );
    if !config.warm_up.is_zero() {
        log::info!(
            "Warming up for {}: servers come back as they renew, so the list may be incomplete; nothing is removed until then",
            duration::format(config.warm_up)
        );
    }
    let mut signals = signals;
    if let Some(signal) = signals.forever().next() {
        log::info!("Received signal {signal}, stopping");
    }
    running.stop();
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[String]) -> Config {
        match flags::parse(SPEC, args.iter().cloned(), |_| None, 0) {
            Ok(Command::Run(values)) => config(&values).unwrap_or_else(|e| panic!("{args:?}: {e}")),
            other => panic!("{args:?}: {other:?}"),
        }
    }

    /// `--help` shows each default as text and `config` applies a typed one: giving the text
    /// as the flag's value must change nothing, so the two cannot drift apart. Defaults written
    /// as a description ("any address but link-local") have spaces and are not values.
    #[test]
    fn the_defaults_help_shows_are_the_defaults_in_force() {
        let in_force = format!("{:?}", parsed(&[]));
        assert_eq!(in_force, format!("{:?}", Config::default()));
        for flag in SPEC.iter().filter(|f| !f.default.is_empty() && !f.default.contains(' ')) {
            let given = format!("{:?}", parsed(&[format!("-{}={}", flag.name, flag.default)]));
            assert_eq!(given, in_force, "--help says -{} defaults to {:?}", flag.name, flag.default);
        }
    }
}
