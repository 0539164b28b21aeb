//! `service-registry watch`: prints the endpoint table whenever it changes, holding a blocking
//! query on the registry between changes. For people at a terminal and for scripts.

use crate::url;
use common::flags::{self, Command, Flag, FlagError};
use common::wire::DEFAULT_API;
use common::wire::{Endpoint, Status, INDEX_HEADER, WARMING_HEADER};
use common::{clock, duration};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, SystemTime};

pub const SPEC: &[Flag] = &[
    Flag {
        name: "registry",
        env: "REGISTRY_ADDR",
        value: "HOST:PORT",
        default: DEFAULT_API,
        help: "the registry to watch (its API or UI listener)",
    },
    Flag {
        name: "status",
        env: "REGISTRY_WATCH_STATUS",
        value: "STATUS",
        default: "",
        help: "only endpoints with this status",
    },
    Flag {
        name: "tag",
        env: "REGISTRY_WATCH_TAG",
        value: "TAG",
        default: "",
        help: "only endpoints with this tag (repeat for all of several)",
    },
    Flag {
        name: "wait",
        env: "REGISTRY_WATCH_WAIT",
        value: "DURATION",
        default: "5m",
        help: "longest wait of one blocking query",
    },
    Flag { name: "once", env: "REGISTRY_WATCH_ONCE", value: "", default: "", help: "print the table once and exit" },
];

/// Largest answer read: 10,000 endpoints are about 2 MB of JSON.
const MAX_ANSWER: u64 = 64 * 1024 * 1024;

/// What to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub registry: String,
    pub query: String,
    pub wait: Duration,
    pub once: bool,
}

/// Parses the subcommand's flags.
pub fn parse(
    args: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Options>, FlagError> {
    let values = match flags::parse(SPEC, args, env, 0)? {
        Command::Run(values) => values,
        Command::Help => {
            print!(
                "{}",
                flags::usage("service-registry watch", "print the endpoints whenever they change", "[flags]", SPEC)
            );
            return Ok(None);
        }
        Command::Version => {
            println!("service-registry {}", crate::VERSION);
            return Ok(None);
        }
    };
    let mut query = Vec::new();
    if let Some(status) = values.get("status") {
        Status::parse(status).ok_or_else(|| FlagError::Invalid {
            flag: "status".into(),
            value: status.into(),
            reason: "must be passing, pending or critical".into(),
        })?;
        query.push(format!("status={status}"));
    }
    for tag in values.get_all("tag") {
        query.push(format!("tag={}", url::encode(tag)));
    }
    Ok(Some(Options {
        registry: values.get("registry").unwrap_or(DEFAULT_API).to_string(),
        query: query.join("&"),
        wait: values.parse_with("wait", Duration::from_secs(300), duration::parse)?,
        once: values.is_set("once"),
    }))
}

/// Runs the watch until the process is stopped (or once, with `-once`).
pub fn run(options: &Options, out: &mut impl Write) -> Result<(), String> {
    let mut seen: Option<u64> = None;
    // What was printed last, less LastCheck (which moves without the index): the index is the
    // whole registry's, so a filtered watch wakes for changes it does not show.
    let mut shown: Option<(Vec<Endpoint>, bool)> = None;
    let mut failing = false;
    let mut backoff = Duration::from_millis(250);
    loop {
        let path = match seen {
            None => format!("/endpoints?{}", options.query),
            Some(index) => {
                format!("/endpoints?{}&index={index}&wait={}", options.query, duration::format(options.wait))
            }
        };
        // The registry may answer up to a sixteenth late (jitter); allow that and some.
        let patience = options.wait + options.wait / 16 + Duration::from_secs(10);
        match get(&options.registry, &path, patience) {
            Ok(Listing { index, endpoints, warming }) => {
                if failing {
                    eprintln!("service-registry watch: reached the registry at {} again", options.registry);
                }
                (failing, backoff) = (false, Duration::from_millis(250));
                // LastCheck and ExpiresAt move with every check and renewal, not with the index.
                let visible: Vec<Endpoint> =
                    endpoints.iter().cloned().map(|e| Endpoint { last_check: None, expires_at: None, ..e }).collect();
                let now_shown = (visible, warming.is_some());
                if shown.as_ref() != Some(&now_shown) {
                    print_table(out, index, &endpoints, warming.as_deref()).map_err(|e| e.to_string())?;
                    shown = Some(now_shown);
                }
                seen = Some(index);
                if options.once {
                    return Ok(());
                }
            }
            Err(why) if options.once => return Err(why),
            Err(why) => {
                if !failing {
                    eprintln!("service-registry watch: {why}; retrying");
                }
                failing = true;
                // The registry may come back restarted, counting from 1 again: start over.
                seen = None;
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// A listing as the registry answered it.
struct Listing {
    index: u64,
    endpoints: Vec<Endpoint>,
    /// The warm-up left, when the registry says the list may be incomplete.
    warming: Option<String>,
}

/// GETs a listing: its watch index, records and warm-up.
fn get(registry: &str, path: &str, patience: Duration) -> Result<Listing, String> {
    let fail = |e: io::Error| format!("cannot reach the registry at {registry}: {e}");
    let addr = registry.to_socket_addrs().map_err(fail)?.next().ok_or_else(|| format!("{registry} has no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(fail)?;
    stream.set_read_timeout(Some(patience)).map_err(fail)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {registry}\r\nUser-Agent: service-registry-watch/{}\r\nConnection: close\r\n\r\n",
        crate::VERSION
    );
    stream.write_all(request.as_bytes()).map_err(fail)?;
    let mut answer = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut answer).map_err(fail)?;
    if answer.is_empty() {
        return Err(format!("the registry at {registry} closed the connection before answering"));
    }
    let split =
        answer.windows(4).position(|w| w == b"\r\n\r\n").ok_or("the registry's answer has no end of headers")?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let body = &answer[split + 4..];
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        return Err(format!("the registry answered {status}: {}", String::from_utf8_lossy(body).trim()));
    }
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    };
    let index = header(INDEX_HEADER).and_then(|v| v.parse().ok()).unwrap_or(0);
    let warming = header(WARMING_HEADER).map(str::to_string);
    let endpoints = serde_json::from_slice(body).map_err(|e| format!("the registry's answer is not a listing: {e}"))?;
    Ok(Listing { index, endpoints, warming })
}

/// Writes one table: a summary line, then a row per endpoint in aligned columns. `warming`:
/// the warm-up left, said under the summary (the list may be incomplete).
pub fn print_table(out: &mut impl Write, index: u64, endpoints: &[Endpoint], warming: Option<&str>) -> io::Result<()> {
    let count = |s: Status| endpoints.iter().filter(|e| e.status == s).count();
    writeln!(
        out,
        "{} index {index}: {} endpoints ({} passing, {} pending, {} critical)",
        clock::go_log_prefix(SystemTime::now()),
        endpoints.len(),
        count(Status::Passing),
        count(Status::Pending),
        count(Status::Critical)
    )?;
    if let Some(left) = warming {
        writeln!(out, "warming up ({left} left): the registry restarted; servers come back as they renew, so the list may be incomplete")?;
    }
    let rows: Vec<[String; 5]> = endpoints
        .iter()
        .map(|e| {
            [
                e.name.clone(),
                e.address.clone(),
                e.status.to_string(),
                e.tags.join(","),
                e.last_error.clone().unwrap_or_else(|| e.last_check.clone().unwrap_or_else(|| "never checked".into())),
            ]
        })
        .collect();
    let header = ["NAME", "ADDRESS", "STATUS", "TAGS", "LAST CHECK / ERROR"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    writeln!(out)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_aligns_columns_and_counts_statuses() {
        let e = |name: &str, status, error: Option<&str>| Endpoint {
            name: name.into(),
            address: "10.0.0.1:8080".into(),
            tags: vec!["web".into(), "eu".into()],
            status,
            registered_at: "x".into(),
            last_check: Some("2017-02-03T20:37:38.000Z".into()),
            last_error: error.map(str::to_string),
            consecutive_failures: 0,
            expires_at: None,
        };
        let mut out = Vec::new();
        let records = [e("a", Status::Passing, None), e("longer-name", Status::Critical, Some("refused"))];
        print_table(&mut out, 7, &records, None).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with("index 7: 2 endpoints (1 passing, 0 pending, 1 critical)"), "{text}");
        assert_eq!(lines[1], "NAME         ADDRESS        STATUS    TAGS    LAST CHECK / ERROR");
        assert_eq!(lines[2], "a            10.0.0.1:8080  passing   web,eu  2017-02-03T20:37:38.000Z");
        assert_eq!(lines[3], "longer-name  10.0.0.1:8080  critical  web,eu  refused");

        let mut out = Vec::new();
        print_table(&mut out, 7, &records, Some("9s")).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.lines().nth(1).unwrap().starts_with("warming up (9s left): "), "{text}");
    }

    #[test]
    fn flags_build_the_query() {
        let options = parse(["-status=passing", "-tag=a b", "-tag=c"].map(String::from), |_| None).unwrap().unwrap();
        assert_eq!(options.query, "status=passing&tag=a%20b&tag=c");
        assert!(parse(["-status=up".to_string()], |_| None).is_err());
    }
}
