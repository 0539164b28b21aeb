//! What the server serves: `GET /`, a small page naming the instance, and `GET /healthz`; one
//! access-log line per request in the seed's format.

use service_registry::page::escape;
use service_registry::{clock, logging};
use std::collections::BTreeMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tiny_http::{Header, Method, Request, Response};

/// What the page shows, and the request counts `/metrics` reports.
pub struct Identity {
    pub name: String,
    pub advertised: SocketAddr,
    pub started: Instant,
    pub started_wall: SystemTime,
    /// (route, code) → requests answered; routes are a fixed set.
    pub requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
}

impl Identity {
    pub fn new(name: String, advertised: SocketAddr, started: Instant) -> Identity {
        Identity { name, advertised, started, started_wall: SystemTime::now(), requests: Mutex::default() }
    }
}

/// `127.0.0.1:34724 - - [Fri, 03 Feb 2017 20:37:38 UTC] "GET /healthz HTTP/1.1" Go-http-client/1.1`
pub fn access_line(remote: &str, when: SystemTime, method: &str, path: &str, version: &str, agent: &str) -> String {
    format!("{remote} - - [{}] \"{method} {path} HTTP/{version}\" {agent}", clock::rfc1123(when))
}

/// Answers one request and logs it.
pub fn handle(identity: &Identity, request: Request) {
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
        "/" if read => (200, "text/html; charset=utf-8", page(identity)),
        "/metrics" if read => (200, "text/plain; version=0.0.4; charset=utf-8", metrics(identity)),
        "/" | "/healthz" | "/metrics" => (405, "text/plain; charset=utf-8", "only GET and HEAD\n".into()),
        _ => (404, "text/plain; charset=utf-8", "not found\n".into()),
    };
    let route = ["/", "/healthz", "/metrics"].into_iter().find(|r| *r == path).unwrap_or("other");
    *identity.requests.lock().unwrap_or_else(|p| p.into_inner()).entry((route, status)).or_default() += 1;
    let length = body.len();
    let mut headers: Vec<Header> = Header::from_bytes("Content-Type", content_type).into_iter().collect();
    if status == 405 {
        headers.extend(Header::from_bytes("Allow", "GET, HEAD"));
    }
    let response = Response::new(status.into(), headers, Cursor::new(body), Some(length), None);
    let _ = request.respond(response);
}

/// `/metrics` in the Prometheus text format: requests by route and code, uptime, start time.
fn metrics(identity: &Identity) -> String {
    let mut out = String::from(
        "# HELP dynamic_port_server_http_requests_total HTTP requests answered, by route and status code.\n\
         # TYPE dynamic_port_server_http_requests_total counter\n",
    );
    for ((route, code), count) in identity.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        out.push_str(&format!(
            "dynamic_port_server_http_requests_total{{route=\"{route}\",code=\"{code}\"}} {count}\n"
        ));
    }
    let start = identity.started_wall.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    out.push_str(&format!(
        "# HELP dynamic_port_server_uptime_seconds Seconds since the server started.\n\
         # TYPE dynamic_port_server_uptime_seconds gauge\n\
         dynamic_port_server_uptime_seconds {:.3}\n\
         # HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n\
         # TYPE process_start_time_seconds gauge\n\
         process_start_time_seconds {start:.3}\n",
        identity.started.elapsed().as_secs_f64()
    ));
    out
}

fn page(identity: &Identity) -> String {
    let name = escape(&identity.name);
    let uptime = identity.started.elapsed().as_secs();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{name}</title>\n\
         <style>body{{font-family:system-ui,sans-serif;margin:2em}}</style>\n</head>\n<body>\n\
         <h1>{name}</h1>\n<p>Serving on <a href=\"http://{addr}/\">{addr}</a>, a port chosen at run time.</p>\n\
         <p>Up for {uptime}s &middot; dynamic-port-server {version}</p>\n</body>\n</html>\n",
        addr = identity.advertised,
        version = env!("CARGO_PKG_VERSION"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn metrics_count_requests_and_report_uptime() {
        let identity = Identity::new("a".into(), "127.0.0.1:1".parse().unwrap(), Instant::now());
        identity.requests.lock().unwrap().insert(("/healthz", 200), 3);
        let text = metrics(&identity);
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
