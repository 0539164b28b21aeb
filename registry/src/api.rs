//! Routing: one function from a request to a reply. Status codes are chosen here and nowhere
//! else; the HTTP loop only reads, calls and responds.

use crate::blocking::{self, Wait};
use crate::service::Registry;
use crate::store::{Change, Filter, StoreError};
use crate::validate::{self, clip};
use crate::wire::{Deregistration, ErrorBody, Registration, Status};
use crate::{text, url};
use std::io::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::SystemTime;
use tiny_http::{Method, Request};

/// Largest request body accepted: a registration is a few hundred bytes; 64 KiB leaves room
/// for every tag the limits allow, and no more.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Which listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `-api`: reads and writes.
    Api,
    /// `-http`: the page and read-only JSON. Never a write.
    Ui,
}

impl Listener {
    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Api => "api",
            Listener::Ui => "ui",
        }
    }
}

/// A reply body: fresh bytes, or a cached rendering shared between replies.
#[derive(Debug, Clone)]
pub enum Body {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        match self {
            Body::Owned(v) => v,
            Body::Shared(a) => a,
        }
    }
}

/// What to answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

const JSON: &str = "application/json";
const HTML: &str = "text/html; charset=utf-8";
/// The Prometheus text exposition format.
const METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Reply {
    fn json(status: u16, value: &impl serde::Serialize) -> Reply {
        // A record is about 200 bytes: one allocation instead of a growing vector.
        let mut body = Vec::with_capacity(256);
        if serde_json::to_writer(&mut body, value).is_err() {
            body = b"{}".to_vec();
        }
        Reply { status, content_type: JSON, headers: Vec::new(), body: Body::Owned(body) }
    }

    /// An error answer: `{"error": "..."}`.
    pub fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::json(status, &ErrorBody { error: message.into() })
    }

    fn shared(content_type: &'static str, body: Arc<[u8]>) -> Reply {
        Reply { status: 200, content_type, headers: Vec::new(), body: Body::Shared(body) }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }
}

/// A read that may wait for a change: what to render once it is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Later {
    List(Filter),
    One(String),
    Page,
}

impl Later {
    /// The route label, for metrics.
    pub fn route(&self) -> &'static str {
        match self {
            Later::List(_) => "/endpoints",
            Later::One(_) => "/endpoints/NAME",
            Later::Page => "/",
        }
    }
}

/// The outcome of routing: an answer now, or a blocking query to park.
pub enum Routed {
    Now(Reply),
    Wait(Wait, Later),
}

/// The path of a URL, without its query.
pub fn path_of(url: &str) -> &str {
    url::split(url).0
}

/// The route label of a path, for metrics: a fixed set, whatever clients send.
pub fn route_label(path: &str) -> &'static str {
    match path {
        "/" => "/",
        "/healthz" => "/healthz",
        "/endpoints" => "/endpoints",
        "/register" => "/register",
        "/deregister" => "/deregister",
        "/metrics" => "/metrics",
        "/v1/sd" => "/v1/sd",
        p if p.starts_with("/endpoints/") => "/endpoints/NAME",
        _ => "other",
    }
}

fn method_not_allowed(allow: &'static str, message: &str) -> Reply {
    Reply::error(405, message).with_header("Allow", allow.to_string())
}

/// Answers one request, or says how to wait for its answer.
pub fn route(registry: &Registry, listener: Listener, request: &mut Request) -> Routed {
    let url = request.url().to_string();
    let (path, query) = url::split(&url);
    let method = request.method().clone();
    let read = matches!(method, Method::Get | Method::Head);
    let Some(pairs) = url::query_pairs(query) else {
        return Routed::Now(Reply::error(400, "the query string is not valid percent-encoded UTF-8"));
    };
    let reply = match path {
        "/healthz" if read => {
            let hold = registry.store.eviction_hold().is_some();
            Reply::json(200, &serde_json::json!({"status": "ok", "evictionHold": hold}))
        }
        "/metrics" if read => {
            let text = registry.metrics.render(registry.store.counts());
            Reply { status: 200, content_type: METRICS, headers: Vec::new(), body: Body::Owned(text.into_bytes()) }
        }
        "/v1/sd" if read => match filter(&pairs) {
            Ok(filter) => Reply::json(200, &sd_targets(registry, filter)),
            Err(reply) => reply,
        },
        "/" if read => return blocking_read(registry, &pairs, Later::Page),
        "/endpoints" if read => match filter(&pairs) {
            Ok(filter) => return blocking_read(registry, &pairs, Later::List(filter)),
            Err(reply) => reply,
        },
        "/healthz" | "/" | "/endpoints" | "/metrics" | "/v1/sd" => {
            method_not_allowed("GET, HEAD", &format!("{path} answers GET only"))
        }
        "/register" | "/deregister" if method != Method::Post => {
            method_not_allowed("POST", &format!("{path} takes POST with a JSON body"))
        }
        "/register" | "/deregister" if listener == Listener::Ui => read_only(),
        "/register" => write(registry, request, register),
        "/deregister" => write(registry, request, deregister_body),
        _ => match path.strip_prefix("/endpoints/") {
            Some(raw) => match one_endpoint(registry, listener, request, raw) {
                Ok(name) => return blocking_read(registry, &pairs, Later::One(name)),
                Err(reply) => reply,
            },
            None => Reply::error(404, format!("no such path {:?}: see /endpoints, /register, /deregister", clip(path))),
        },
    };
    Routed::Now(reply)
}

/// A read that waits when asked to (`?index=`) and the index has not yet passed.
fn blocking_read(registry: &Registry, pairs: &[(String, String)], later: Later) -> Routed {
    match blocking::requested(pairs) {
        Err(why) => Routed::Now(Reply::error(400, why)),
        // An index from the future can only come from before a restart (indexes start again
        // at 1): answer at once, so the client starts over rather than waiting out its wait.
        Ok(Some(wait)) if registry.store.index() == wait.seen => Routed::Wait(wait, later),
        Ok(_) => Routed::Now(answer(registry, &later)),
    }
}

/// Renders a read's answer, with the watch index it reflects.
pub fn answer(registry: &Registry, later: &Later) -> Reply {
    match later {
        Later::List(filter) => {
            let rendered = registry.views.endpoints(&registry.store, filter);
            Reply::shared(JSON, rendered.body).with_header("X-Registry-Index", rendered.index.to_string())
        }
        Later::Page => {
            let rendered = registry.views.page(&registry.store);
            Reply::shared(HTML, rendered.body).with_header("X-Registry-Index", rendered.index.to_string())
        }
        Later::One(name) => {
            let index = registry.store.index();
            match registry.store.get(name) {
                Some(record) => Reply::json(200, &record),
                None => not_found(name),
            }
            .with_header("X-Registry-Index", index.to_string())
        }
    }
}

/// Sends a reply, logs it at debug and counts it.
pub fn respond(registry: &Registry, request: Request, listener: Listener, route: &'static str, reply: Reply) {
    log::debug!(
        "{} {} {} {}",
        request.remote_addr().map_or_else(|| "-".to_string(), |a| a.to_string()),
        request.method(),
        request.url(),
        reply.status
    );
    registry.metrics.request(listener.as_str(), route, reply.status);
    let head_only = *request.method() == Method::Head;
    let close = wants_close(&request);
    // A client that hung up before its answer is not the registry's problem.
    let _ = write_reply(&mut request.into_writer(), &reply, head_only, close);
}

/// Whether the client will not send another request on this connection.
fn wants_close(request: &Request) -> bool {
    let connection = request.headers().iter().find(|h| h.field.equiv("Connection")).map(|h| h.value.as_str());
    match connection {
        Some(value) if value.to_ascii_lowercase().contains("close") => true,
        Some(value) if value.to_ascii_lowercase().contains("keep-alive") => false,
        _ => *request.http_version() == (1, 0),
    }
}

/// Bodies up to this size go out in the same write as the head: one system call.
const COALESCE: usize = 16 * 1024;

/// Writes a reply: the head built in one buffer, then the body, so that a small answer is one
/// system call and a large cached one is written straight from the shared buffer, neither
/// copied nor chunked.
pub fn write_reply(out: &mut impl Write, reply: &Reply, head_only: bool, close: bool) -> std::io::Result<()> {
    let body = reply.body.as_ref();
    // Built by hand rather than with `write!`: this is every answer's path, and the
    // formatting machinery cost more than the rest of the head.
    let mut head = Vec::with_capacity(256 + if body.len() <= COALESCE { body.len() } else { 0 });
    head.extend_from_slice(b"HTTP/1.1 ");
    text::push_decimal(&mut head, u64::from(reply.status));
    head.push(b' ');
    head.extend_from_slice(tiny_http::StatusCode(reply.status).default_reason_phrase().as_bytes());
    head.extend_from_slice(b"\r\nServer: service-registry\r\nDate: ");
    push_http_date(&mut head);
    head.extend_from_slice(b"\r\nContent-Type: ");
    head.extend_from_slice(reply.content_type.as_bytes());
    head.extend_from_slice(b"\r\nContent-Length: ");
    text::push_decimal(&mut head, body.len() as u64);
    head.extend_from_slice(b"\r\n");
    for (name, value) in &reply.headers {
        for part in [name.as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
            head.extend_from_slice(part);
        }
    }
    if close {
        head.extend_from_slice(b"Connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
    if !head_only && body.len() <= COALESCE {
        head.extend_from_slice(body);
        out.write_all(&head)?;
    } else {
        out.write_all(&head)?;
        if !head_only {
            out.write_all(body)?;
        }
    }
    out.flush()
}

/// Appends the `Date` header's value, formatted once a second per thread rather than once per
/// answer.
fn push_http_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second {
            *cached = (second, crate::clock::http_date(now));
        }
        out.extend_from_slice(cached.1.as_bytes());
    })
}

fn read_only() -> Reply {
    method_not_allowed("GET, HEAD", "this is the read-only UI listener: send writes to the API listener (-api)")
}

/// Runs a write that takes a JSON body: token first, then the body, then `handler`.
fn write(registry: &Registry, request: &mut Request, handler: fn(&Registry, &[u8]) -> Result<Reply, Reply>) -> Reply {
    authorize(registry, request)
        .map(|()| read_body(request))
        .and_then(|body| handler(registry, &body))
        .unwrap_or_else(|e| e)
}

/// Checks the write token, if one is configured.
fn authorize(registry: &Registry, request: &Request) -> Result<(), Reply> {
    let headers = request.headers().iter().map(|h| (h.field.as_str().as_str(), h.value.as_str()));
    registry.token.check(headers).map_err(|why| {
        Reply::error(401, why).with_header("WWW-Authenticate", "Bearer realm=\"service-registry\"".into())
    })
}

/// `/endpoints/NAME`: the Name to read, or the answer to a DELETE or a bad request.
fn one_endpoint(registry: &Registry, listener: Listener, request: &Request, raw: &str) -> Result<String, Reply> {
    let name = url::decode(raw, false)
        .ok_or_else(|| Reply::error(400, "the Name in the path is not valid percent-encoded UTF-8"))?;
    validate::name(&name).map_err(|why| Reply::error(400, why))?;
    match request.method() {
        Method::Get | Method::Head => Ok(name),
        Method::Delete if listener == Listener::Ui => Err(read_only()),
        Method::Delete => Err(authorize(registry, request).map(|()| deregister(registry, &name)).unwrap_or_else(|e| e)),
        _ => Err(method_not_allowed("GET, HEAD, DELETE", "/endpoints/NAME answers GET and DELETE")),
    }
}

fn not_found(name: &str) -> Reply {
    Reply::error(404, format!("no endpoint named {name:?} is registered"))
}

/// The `status` and `tag` filters of a listing.
fn filter(pairs: &[(String, String)]) -> Result<Filter, Reply> {
    let mut filter = Filter::default();
    for (key, value) in pairs {
        match key.as_str() {
            "status" => {
                filter.status = Some(Status::parse(value).ok_or_else(|| {
                    Reply::error(400, format!("status must be passing, pending or critical, not {:?}", clip(value)))
                })?)
            }
            "tag" => filter.tags.push(value.clone()),
            // Unknown parameters are ignored, as most HTTP APIs do, so newer clients still work.
            _ => {}
        }
    }
    Ok(filter)
}

/// One target group of Prometheus HTTP service discovery.
#[derive(serde::Serialize)]
struct TargetGroup {
    targets: [String; 1],
    labels: std::collections::BTreeMap<&'static str, String>,
}

/// `GET /v1/sd`: the passing endpoints (and any `tag` filter) as Prometheus `http_sd_configs`
/// target groups, one per endpoint, with its name and tags as `__meta_dynamic_ports_*` labels.
fn sd_targets(registry: &Registry, mut filter: Filter) -> Vec<TargetGroup> {
    filter.status = Some(Status::Passing);
    let snapshot = registry.store.list(&filter);
    snapshot
        .records
        .into_iter()
        .map(|e| {
            let mut labels = std::collections::BTreeMap::new();
            labels.insert("__meta_dynamic_ports_name", e.name);
            // Separators at both ends, as Prometheus's Consul discovery does, so a relabel
            // regex `.*,web,.*` matches whole tags.
            labels.insert("__meta_dynamic_ports_tags", format!(",{},", e.tags.join(",")));
            labels.insert("__meta_dynamic_ports_registered_at", e.registered_at);
            TargetGroup { targets: [e.address], labels }
        })
        .collect()
}

/// The body, which tiny_http has already read into memory within the listener's limit
/// (`service::limits`: a larger one was answered 413 before it got here), so reading it
/// cannot fail.
fn read_body(request: &mut Request) -> Vec<u8> {
    let mut body = Vec::with_capacity(request.body_length().unwrap_or(0));
    let _ = request.as_reader().read_to_end(&mut body);
    body
}

/// Turns a JSON decoding error into a sentence for the caller.
fn body_error(e: &serde_json::Error, example: &str) -> Reply {
    let message = if e.is_eof() && e.line() == 1 && e.column() == 0 {
        format!("request body is empty: send JSON like {example}")
    } else if e.is_data() {
        format!("request body is not a valid request: {e}; send JSON like {example}")
    } else {
        format!("request body is not valid JSON: {e}")
    };
    Reply::error(400, message)
}

const REGISTER_EXAMPLE: &str = r#"{"Name": "pod-abc", "Address": "10.240.0.2:52238", "Tags": ["web"]}"#;

fn register(registry: &Registry, body: &[u8]) -> Result<Reply, Reply> {
    let registration: Registration = serde_json::from_slice(body).map_err(|e| body_error(&e, REGISTER_EXAMPLE))?;
    let valid = validate::registration(registration).map_err(|why| Reply::error(400, why))?;
    registry.probe_policy.check(valid.address.ip()).map_err(|why| Reply::error(403, why))?;
    let registered = registry.store.register(valid, SystemTime::now()).map_err(|e| match e {
        StoreError::Full { limit } => Reply::error(
            503,
            format!("the registry holds its limit of {limit} endpoints (-max-endpoints): deregister some or raise the limit"),
        ),
    })?;
    let record = &registered.record;
    match registered.change {
        Change::Created => log::info!("Registered {} at {}", record.name, record.address),
        Change::Moved => log::info!("Registered {} at {} (moved)", record.name, record.address),
        Change::Renewed => log::debug!("Renewed {} at {}", record.name, record.address),
    }
    registry.metrics.registrations.fetch_add(1, Relaxed);
    if let Some(job) = registered.check_now {
        registry.checker.check_now(job);
    }
    Ok(Reply::json(200, record))
}

fn deregister_body(registry: &Registry, body: &[u8]) -> Result<Reply, Reply> {
    let request: Deregistration = serde_json::from_slice(body).map_err(|e| body_error(&e, r#"{"Name": "pod-abc"}"#))?;
    validate::name(&request.name).map_err(|why| Reply::error(400, why))?;
    Ok(deregister(registry, &request.name))
}

fn deregister(registry: &Registry, name: &str) -> Reply {
    match registry.store.deregister(name) {
        Some(record) => {
            log::info!("Deregistered {} at {}", record.name, record.address);
            registry.metrics.deregistrations.fetch_add(1, Relaxed);
            Reply::json(200, &record)
        }
        None => not_found(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(body: &[u8]) -> Reply {
        Reply {
            status: 404,
            content_type: JSON,
            headers: vec![("X-Registry-Index", "7".into())],
            body: Body::Owned(body.to_vec()),
        }
    }

    #[test]
    fn writes_a_complete_http_answer() {
        let mut out = Vec::new();
        write_reply(&mut out, &reply(b"{\"error\":\"x\"}"), false, true).unwrap();
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let lines: Vec<&str> = head.lines().collect();
        assert_eq!(lines[0], "HTTP/1.1 404 Not Found");
        assert!(lines.contains(&"Content-Type: application/json"));
        assert!(lines.contains(&"Content-Length: 13"));
        assert!(lines.contains(&"X-Registry-Index: 7"));
        assert!(lines.contains(&"Connection: close"));
        assert!(lines.iter().any(|l| l.starts_with("Date: ") && l.ends_with(" GMT")));
        assert_eq!(body, "{\"error\":\"x\"}");
    }

    #[test]
    fn head_answers_carry_the_length_but_no_body_large_or_small() {
        for size in [10, COALESCE + 1] {
            let mut out = Vec::new();
            write_reply(&mut out, &reply(&vec![b'x'; size]), true, false).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(text.ends_with("\r\n\r\n"), "no body after the head");
            assert!(text.contains(&format!("Content-Length: {size}\r\n")));
            assert!(!text.contains("Connection: close"));
        }
        let mut out = Vec::new();
        write_reply(&mut out, &reply(&vec![b'x'; COALESCE + 1]), false, false).unwrap();
        assert!(out.ends_with(&[b'x'; 64]) && out.len() > COALESCE);
    }
}
