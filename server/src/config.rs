//! The server's configuration: the seed's flags, the Kubernetes environment it runs in, and
//! what to fall back to when neither says.

use common::flags::{self, Command, Flag, FlagError, Values};
use common::validate;
use common::{address, duration, token};
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

pub const SPEC: &[Flag] = &[
    Flag {
        name: "service-registry",
        env: "DPS_SERVICE_REGISTRY",
        value: "HOST:PORT",
        default: "$SERVICE_REGISTRY_SERVICE_HOST:$SERVICE_REGISTRY_SERVICE_PORT, else 127.0.0.1:10080",
        help: "the registry's API address",
    },
    Flag {
        name: "service-instance-name",
        env: "DPS_SERVICE_INSTANCE_NAME",
        value: "NAME",
        default: "$POD_NAME, else HOSTNAME-PORT",
        help: "this instance's unique name in the registry",
    },
    Flag {
        name: "advertised-ip",
        env: "DPS_ADVERTISED_IP",
        value: "IP",
        default: "$HOST_IP, else the local address that routes to the registry",
        help: "the IP to register, with the bound port",
    },
    Flag {
        name: "port-range",
        env: "DPS_PORT_RANGE",
        value: "LOW-HIGH",
        default: "any free port",
        help: "bind the first free port of this range (one firewall rule covers every instance)",
    },
    Flag { name: "bind-ip", env: "DPS_BIND_IP", value: "IP", default: "0.0.0.0", help: "the local IP to listen on" },
    Flag { name: "tags", env: "DPS_TAGS", value: "A,B", default: "", help: "comma-separated tags to register" },
    Flag {
        name: "register-interval",
        env: "DPS_REGISTER_INTERVAL",
        value: "DURATION",
        default: "10s",
        help: "re-register this often, so a restarted registry learns of this instance",
    },
    Flag {
        name: "register-ttl",
        env: "DPS_REGISTER_TTL",
        value: "DURATION",
        default: "3 x -register-interval",
        help: "the lease sent with each registration: the registry drops this instance if not renewed within it",
    },
    Flag {
        name: "port-file",
        env: "DPS_PORT_FILE",
        value: "PATH",
        default: "",
        help: "write the bound port here (for the healthcheck subcommand and exec probes)",
    },
    Flag {
        name: "token-file",
        env: "DPS_TOKEN_FILE",
        value: "PATH",
        default: "",
        help: "send the registry's write token from this file (Authorization: Bearer)",
    },
    Flag {
        name: "register-instance-external-ip",
        env: "",
        value: "",
        default: "",
        help: "retired: use -advertised-ip or HOST_IP",
    },
];

pub const USAGE_SYNOPSIS: &str = "[flags]\n       dynamic-port-server healthcheck -port-file=PATH";

/// Everything the server is told at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `HOST:PORT` of the registry's API.
    pub registry: String,
    /// `None`: work it out from the hostname and port once bound.
    pub name: Option<String>,
    /// `None`: work it out from the route to the registry.
    pub advertised_ip: Option<IpAddr>,
    pub port_range: Option<RangeInclusive<u16>>,
    pub bind_ip: IpAddr,
    pub tags: Vec<String>,
    pub register_interval: Duration,
    /// The `TTL` sent with every registration: the lease asked for with each registration; `None` when the interval is too long for
    /// one (three intervals past the longest lease) and none was given.
    pub register_ttl: Option<Duration>,
    pub port_file: Option<PathBuf>,
    /// The registry's write token, read from `-token-file`.
    pub token: Option<String>,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Mode {
    Serve(Config),
    /// `healthcheck`: probe the server whose port is in this file.
    Healthcheck(PathBuf),
    Help,
    Version,
}

/// Reads the command line and the environment.
pub fn parse(
    args: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String> + Copy,
) -> Result<Mode, FlagError> {
    let values = match flags::parse(SPEC, args, env, 1)? {
        Command::Run(values) => values,
        Command::Help => return Ok(Mode::Help),
        Command::Version => return Ok(Mode::Version),
    };
    match values.rest.first().map(String::as_str) {
        None => {}
        Some("healthcheck") => {
            let path = values.get("port-file").ok_or_else(|| FlagError::MissingValue("port-file".into()))?;
            return Ok(Mode::Healthcheck(PathBuf::from(path)));
        }
        Some(other) => return Err(FlagError::UnexpectedArgument(other.to_string())),
    }
    if values.is_set("register-instance-external-ip") {
        return Err(FlagError::Retired {
            flag: "register-instance-external-ip".into(),
            instead: "it asked GCE's metadata server; pass -advertised-ip=IP, or set HOST_IP from the Downward API \
                      (status.hostIP)"
                .into(),
        });
    }
    Ok(Mode::Serve(config(&values, env)?))
}

fn config(values: &Values, env: impl Fn(&str) -> Option<String>) -> Result<Config, FlagError> {
    let registry = address::registry(values.get("service-registry"), &env)
        .map_err(|(given, why)| invalid("service-registry", &given, why))?;
    let name =
        values.get("service-instance-name").map(str::to_string).or_else(|| env("POD_NAME").filter(|n| !n.is_empty()));
    if let Some(name) = &name {
        validate::name(name).map_err(|why| invalid("service-instance-name", name, &why))?;
    }
    let advertised_ip =
        match values.get("advertised-ip").map(str::to_string).or_else(|| env("HOST_IP").filter(|v| !v.is_empty())) {
            Some(ip) => {
                Some(ip.parse().map_err(|_| invalid("advertised-ip", &ip, "expected an IP address, like 10.240.0.2"))?)
            }
            None => None,
        };
    let port_range = values.parse_with("port-range", None, |s| parse_port_range(s).map(Some))?;
    let bind_ip = values.parse_with("bind-ip", IpAddr::from([0, 0, 0, 0]), |s| {
        s.parse::<IpAddr>().map_err(|_| "expected an IP address, like 0.0.0.0".to_string())
    })?;
    let tags: Vec<String> = values
        .get("tags")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    validate::tags(&tags).map_err(|why| invalid("tags", values.get("tags").unwrap_or(""), &why))?;
    let register_interval =
        values.parse_with("register-interval", Duration::from_secs(10), duration::parse_positive)?;
    // Three renewals fit in a lease, so one lost renewal (or two) does not end it. An interval
    // so long that three exceed the longest lease registers without one, as the seed did.
    let default_ttl = Some((register_interval * 3).max(validate::MIN_TTL)).filter(|ttl| *ttl <= validate::MAX_TTL);
    let register_ttl = values.parse_with("register-ttl", default_ttl, |s| validate::ttl(s).map(Some))?;
    if let Some(ttl) = register_ttl.filter(|ttl| *ttl <= register_interval) {
        return Err(invalid(
            "register-ttl",
            &duration::format(ttl),
            &format!(
                "must be longer than -register-interval ({}), or the lease ends between two renewals",
                duration::format(register_interval)
            ),
        ));
    }
    Ok(Config {
        registry,
        name,
        advertised_ip,
        port_range,
        bind_ip,
        tags,
        register_interval,
        register_ttl,
        port_file: values.get("port-file").map(PathBuf::from),
        token: values.parse_with("token-file", None, |p| token::read_file(p).map(Some))?,
    })
}

fn invalid(flag: &str, value: &str, reason: &str) -> FlagError {
    FlagError::Invalid { flag: flag.into(), value: value.into(), reason: reason.into() }
}

/// Parses `LOW-HIGH`, both from 1 to 65535, LOW no more than HIGH.
pub fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let bad = || "expected LOW-HIGH with 1 <= LOW <= HIGH <= 65535, like 40000-40100".to_string();
    let (low, high) = text.split_once('-').ok_or_else(bad)?;
    let (low, high): (u16, u16) = (low.trim().parse().map_err(|_| bad())?, high.trim().parse().map_err(|_| bad())?);
    if low == 0 || low > high {
        return Err(bad());
    }
    Ok(low..=high)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Result<Mode, FlagError> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse(args.iter().map(|s| s.to_string()), |k| env.get(k).cloned())
    }

    fn serve(args: &[&str], env: &[(&str, &str)]) -> Config {
        match parse_with(args, env) {
            Ok(Mode::Serve(c)) => c,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    /// `--help` shows each default as text and `config` applies a typed one: giving the text
    /// as the flag's value must change nothing. Defaults written as a description ("any free
    /// port") have spaces and are not values.
    #[test]
    fn the_defaults_help_shows_are_the_defaults_in_force() {
        let in_force = format!("{:?}", serve(&[], &[]));
        for flag in SPEC.iter().filter(|f| !f.default.is_empty() && !f.default.contains(' ')) {
            let arg = format!("-{}={}", flag.name, flag.default);
            assert_eq!(format!("{:?}", serve(&[&arg], &[])), in_force, "--help says {arg}");
        }
    }

    #[test]
    fn kubernetes_environment_fills_the_defaults() {
        let env = [
            ("SERVICE_REGISTRY_SERVICE_HOST", "10.0.0.10"),
            ("SERVICE_REGISTRY_SERVICE_PORT", "10080"),
            ("POD_NAME", "dynamic-port-server-507527175-5bphp"),
            ("HOST_IP", "10.240.0.2"),
        ];
        let c = serve(&[], &env);
        assert_eq!(c.registry, "10.0.0.10:10080");
        assert_eq!(c.name.as_deref(), Some("dynamic-port-server-507527175-5bphp"));
        assert_eq!(c.advertised_ip, Some("10.240.0.2".parse().unwrap()));
        // Flags win over the environment.
        let c =
            serve(&["-service-registry=1.2.3.4:1", "-advertised-ip", "10.0.0.1", "--service-instance-name=x"], &env);
        assert_eq!((c.registry.as_str(), c.name.as_deref()), ("1.2.3.4:1", Some("x")));
        assert_eq!(c.advertised_ip, Some("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn an_ipv6_service_address_gets_brackets() {
        let env = [("SERVICE_REGISTRY_SERVICE_HOST", "fd00::a"), ("SERVICE_REGISTRY_SERVICE_PORT", "10080")];
        assert_eq!(serve(&[], &env).registry, "[fd00::a]:10080");
        assert_eq!(serve(&["-service-registry=[::1]:1"], &[]).registry, "[::1]:1");
        assert!(parse_with(&["-service-registry=fd00::a:10080"], &[]).is_err());
    }

    #[test]
    fn bare_defaults() {
        let c = serve(&[], &[]);
        assert_eq!(c.registry, "127.0.0.1:10080");
        assert_eq!((c.name, c.advertised_ip, c.port_range), (None, None, None));
        assert_eq!(c.register_interval, Duration::from_secs(10));
        assert_eq!(c.register_ttl, Some(Duration::from_secs(30)), "three register intervals");
    }

    #[test]
    fn the_ttl_follows_the_interval_unless_given() {
        let secs = |n| Some(Duration::from_secs(n));
        assert_eq!(serve(&["-register-interval=2s"], &[]).register_ttl, secs(6));
        assert_eq!(serve(&["-register-interval=100ms"], &[]).register_ttl, secs(1), "at least 1s");
        assert_eq!(serve(&["-register-ttl=45s"], &[]).register_ttl, secs(45));
        let env = [("DPS_REGISTER_TTL", "1m")];
        assert_eq!(serve(&[], &env).register_ttl, secs(60));
        // Three intervals past the longest lease: registered without one, as the seed did,
        // rather than refused for a flag that was never given.
        assert_eq!(serve(&["-register-interval=8h"], &[]).register_ttl, secs(24 * 3600));
        assert_eq!(serve(&["-register-interval=9h"], &[]).register_ttl, None);
        assert_eq!(serve(&["-register-interval=48h"], &[]).register_ttl, None);
    }

    #[test]
    fn tags_and_ranges() {
        let c = serve(&["-tags", "web, eu,,", "-port-range=40000-40010"], &[]);
        assert_eq!(c.tags, ["web", "eu"]);
        assert_eq!(c.port_range, Some(40000..=40010));
    }

    #[test]
    fn bad_values_are_one_line_errors() {
        let cases: &[(&[&str], &str)] = &[
            (&["-port-range=10-5"], "invalid value \"10-5\" for -port-range"),
            (&["-port-range=0-5"], "for -port-range"),
            (&["-port-range=abc"], "for -port-range"),
            (&["-port-range=1-70000"], "for -port-range"),
            (&["-advertised-ip=nope"], "for -advertised-ip"),
            (&["-service-registry=nohost"], "for -service-registry"),
            (&["-service-instance-name=a/b"], "for -service-instance-name"),
            (&["-register-interval=0s"], "must be more than 0"),
            (&["-register-ttl=10s"], "must be longer than -register-interval (10s)"),
            (&["-register-interval=5s", "-register-ttl=4s"], "must be longer than -register-interval"),
            (&["-register-ttl=500ms"], "TTL must be from 1s"),
            (&["-register-ttl=2d"], "for -register-ttl"),
            (&["-register-instance-external-ip"], "-register-instance-external-ip is not supported"),
            (&["-bogus"], "unknown flag -bogus"),
            (&["serve"], "unexpected argument"),
            (&["healthcheck"], "-port-file needs a value"),
        ];
        for (args, want) in cases {
            let err = parse_with(args, &[]).expect_err(&format!("{args:?}"));
            let text = err.to_string();
            assert!(text.contains(want), "{args:?}: {text}");
            assert!(!text.contains('\n'), "one line: {text}");
        }
    }

    #[test]
    fn healthcheck_subcommand() {
        assert!(matches!(
            parse_with(&["healthcheck", "-port-file=/run/p"], &[]),
            Ok(Mode::Healthcheck(p)) if p == std::path::Path::new("/run/p")
        ));
    }
}
