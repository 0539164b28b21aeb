//! What the server serves: `GET /`, a small page naming the instance, and `GET /healthz`; one
//! access-log line per request in the seed's format.

use common::html::escape;
use common::wire::INSTANCE_HEADER;
use common::{clock, logging};
use std::collections::BTreeMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tiny_http::{Header, Method, Request, Response};

/// This instance as its page and `/metrics` show it: who it is, since when, and what it answered.
pub struct Instance {
    pub name: String,
    pub advertised: SocketAddr,
    pub started: Instant,
    pub started_wall: SystemTime,
    pub requests: RequestCounts,
}

impl Instance {
    pub fn new(name: String, advertised: SocketAddr, started: Instant) -> Instance {
        Instance { name, advertised, started, started_wall: SystemTime::now(), requests: RequestCounts::default() }
    }
}

/// Requests answered, by route and status code; routes are a fixed set.
#[derive(Default)]
pub struct RequestCounts(Mutex<BTreeMap<(&'static str, u16), u64>>);

impl RequestCounts {
    /// Counts one answer.
    pub fn count(&self, route: &'static str, status: u16) {
        *self.counts().entry((route, status)).or_default() += 1;
    }

    /// The counts so far; a handler that panicked mid-count leaves them usable.
    fn counts(&self) -> std::sync::MutexGuard<'_, BTreeMap<(&'static str, u16), u64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `127.0.0.1:34724 - - [Fri, 03 Feb 2017 20:37:38 UTC] "GET /healthz HTTP/1.1" Go-http-client/1.1`
pub fn access_line(remote: &str, when: SystemTime, method: &str, path: &str, version: &str, agent: &str) -> String {
    format!("{remote} - - [{}] \"{method} {path} HTTP/{version}\" {agent}", clock::rfc1123(when))
}

/// Answers one request and logs it.
pub fn handle(instance: &Instance, request: Request) {
    let url = request.url().to_string();
    let path = url.split('?').next().unwrap_or_default();
    let agent = request.headers().iter().find(|h| h.field.equiv("User-Agent")).map(|h| h.value.as_str()).unwrap_or("");
    log::info!(
        target: logging::ACCESS,
        "{}",
        access_line(
            &request.remote_addr().map_or_else(|| "-".into(), |a| a.to_string()),
            SystemTime::now(),
            request.method().as_str(),
            path,
            &request.http_version().to_string(),
            agent
        )
    );
    let read = matches!(request.method(), Method::Get | Method::Head);
    let (status, content_type, body) = match path {
        "/healthz" if read => (200, "text/plain; charset=utf-8", "ok\n".to_string()),
        "/" if read => (200, "text/html; charset=utf-8", page(instance)),
        "/metrics" if read => (200, "text/plain; version=0.0.4; charset=utf-8", metrics(instance)),
        "/" | "/healthz" | "/metrics" => (405, "text/plain; charset=utf-8", "only GET and HEAD\n".into()),
        _ => (404, "text/plain; charset=utf-8", "not found\n".into()),
    };
    let route = ["/", "/healthz", "/metrics"].into_iter().find(|r| *r == path).unwrap_or("other");
    instance.requests.count(route, status);
    let length = body.len();
    let mut headers: Vec<Header> = Header::from_bytes("Content-Type", content_type).into_iter().collect();
    // Every answer names this instance, so the registry's probe can tell it from a stranger
    // that takes its port after it dies.
    headers.extend(Header::from_bytes(INSTANCE_HEADER, instance.name.as_bytes()));
    if status == 405 {
        headers.extend(Header::from_bytes("Allow", "GET, HEAD"));
    }
    let response = Response::new(status.into(), headers, Cursor::new(body), Some(length), None);
    let _ = request.respond(response);
}

/// `/metrics` in the Prometheus text format: requests by route and code, uptime, start time.
fn metrics(instance: &Instance) -> String {
    let mut out = String::from(
        "# HELP dynamic_port_server_http_requests_total HTTP requests answered, by route and status code.\n\
         # TYPE dynamic_port_server_http_requests_total counter\n",
    );
    for ((route, code), count) in instance.requests.counts().iter() {
        out.push_str(&format!(
            "dynamic_port_server_http_requests_total{{route=\"{route}\",code=\"{code}\"}} {count}\n"
        ));
    }
    let start = instance.started_wall.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    out.push_str(&format!(
        "# HELP dynamic_port_server_uptime_seconds Seconds since the server started.\n\
         # TYPE dynamic_port_server_uptime_seconds gauge\n\
         dynamic_port_server_uptime_seconds {:.3}\n\
         # HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n\
         # TYPE process_start_time_seconds gauge\n\
         process_start_time_seconds {start:.3}\n",
        instance.started.elapsed().as_secs_f64()
    ));
    out
}

fn page(instance: &Instance) -> String {
    let name = escape(&instance.name);
    let uptime = instance.started.elapsed().as_secs();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{name}</title>\n\
         <style>body{{font-family:system-ui,sans-serif;margin:2em}}</style>\n</head>\n<body>\n\
         <h1>{name}</h1>\n<p>Serving on <a href=\"http://{addr}/\">{addr}</a>, a port chosen at run time.</p>\n\
         <p>Up for {uptime}s &middot; dynamic-port-server {version}</p>\n</body>\n</html>\n",
        addr = instance.advertised,
        version = env!("CARGO_PKG_VERSION"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn metrics_count_requests_and_report_uptime() {
        let instance = Instance::new("a".into(), "127.0.0.1:1".parse().unwrap(), Instant::now());
        for _ in 0..3 {
            instance.requests.count("/healthz", 200);
        }
        let text = metrics(&instance);
        assert!(
            text.contains("dynamic_port_server_http_requests_total{route=\"/healthz\",code=\"200\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE dynamic_port_server_uptime_seconds gauge\ndynamic_port_server_uptime_seconds "));
        assert!(text.contains("# TYPE process_start_time_seconds gauge\n"));
    }

    #[test]
    fn access_line_matches_the_seed_byte_for_byte() {
        let when = UNIX_EPOCH + Duration::from_secs(1_486_154_258);
        assert_eq!(
            access_line("127.0.0.1:34724", when, "GET", "/healthz", "1.1", "Go-http-client/1.1"),
            "127.0.0.1:34724 - - [Fri, 03 Feb 2017 20:37:38 UTC] \"GET /healthz HTTP/1.1\" Go-http-client/1.1"
        );
    }
}
