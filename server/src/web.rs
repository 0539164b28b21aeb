//! What the server serves: `GET /`, a small page naming the instance, and `GET /healthz`; one
//! access-log line per request in the seed's format.

use service_registry::page::escape;
use service_registry::{clock, logging};
use std::io::Cursor;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};
use tiny_http::{Header, Method, Request, Response};

/// What the page shows.
pub struct Identity {
    pub name: String,
    pub advertised: SocketAddr,
    pub started: Instant,
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
        "/" | "/healthz" => (405, "text/plain; charset=utf-8", "method not allowed\n".into()),
        _ => (404, "text/plain; charset=utf-8", "not found\n".into()),
    };
    let length = body.len();
    let headers: Vec<Header> = Header::from_bytes("Content-Type", content_type).into_iter().collect();
    let response = Response::new(status.into(), headers, Cursor::new(body), Some(length), None);
    let _ = request.respond(response);
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
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn access_line_matches_the_seed_byte_for_byte() {
        let when = UNIX_EPOCH + Duration::from_secs(1_486_154_258);
        assert_eq!(
            access_line("127.0.0.1:34724", when, "GET", "/healthz", "1.1", "Go-http-client/1.1"),
            "127.0.0.1:34724 - - [Fri, 03 Feb 2017 20:37:38 UTC] \"GET /healthz HTTP/1.1\" Go-http-client/1.1"
        );
    }
}
