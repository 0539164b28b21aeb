//! Routing: one function from a request to a reply. Status codes are chosen here and nowhere
//! else; the HTTP loop only reads, calls and responds.

use crate::service::Registry;
use crate::store::{Change, Filter, StoreError};
use crate::url;
use crate::validate::{self, clip};
use crate::wire::{Deregistration, ErrorBody, Registration, Status};
use std::io::Read;
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

impl Reply {
    fn json(status: u16, value: &impl serde::Serialize) -> Reply {
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        Reply { status, content_type: JSON, headers: Vec::new(), body: Body::Owned(body) }
    }

    /// An error answer: `{"error": "..."}`.
    pub fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::json(status, &ErrorBody { error: message.into() })
    }

    fn shared(content_type: &'static str, body: Arc<[u8]>) -> Reply {
        Reply { status: 200, content_type, headers: Vec::new(), body: Body::Shared(body) }
    }

    fn with_header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }
}

fn method_not_allowed(allow: &'static str, message: &str) -> Reply {
    Reply::error(405, message).with_header("Allow", allow.to_string())
}

/// Answers one request.
pub fn route(registry: &Registry, listener: Listener, request: &mut Request) -> Reply {
    let url = request.url().to_string();
    let (path, query) = url::split(&url);
    let method = request.method().clone();
    let read = matches!(method, Method::Get | Method::Head);
    match path {
        "/healthz" if read => {
            let hold = registry.store.eviction_hold().is_some();
            Reply::json(200, &serde_json::json!({"status": "ok", "evictionHold": hold}))
        }
        "/" if read => {
            let page = registry.views.page(&registry.store);
            Reply::shared(HTML, page.body)
        }
        "/endpoints" if read => list(registry, query),
        "/healthz" | "/" | "/endpoints" => method_not_allowed("GET, HEAD", &format!("{path} answers GET only")),
        "/register" | "/deregister" if method != Method::Post => {
            method_not_allowed("POST", &format!("{path} takes POST with a JSON body"))
        }
        "/register" | "/deregister" if listener == Listener::Ui => read_only(),
        "/register" => write(registry, request, register),
        "/deregister" => write(registry, request, deregister_body),
        _ => match path.strip_prefix("/endpoints/") {
            Some(raw) => one_endpoint(registry, listener, request, raw),
            None => Reply::error(404, format!("no such path {:?}: see /endpoints, /register, /deregister", clip(path))),
        },
    }
}

fn read_only() -> Reply {
    method_not_allowed("GET, HEAD", "this is the read-only UI listener: send writes to the API listener (-api)")
}

/// Runs a write that takes a JSON body: token first, then the body, then `handler`.
fn write(registry: &Registry, request: &mut Request, handler: fn(&Registry, &[u8]) -> Result<Reply, Reply>) -> Reply {
    authorize(registry, request)
        .and_then(|()| read_body(request))
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

fn one_endpoint(registry: &Registry, listener: Listener, request: &Request, raw: &str) -> Reply {
    let method = request.method();
    let Some(name) = url::decode(raw, false) else {
        return Reply::error(400, "the Name in the path is not valid percent-encoded UTF-8");
    };
    if let Err(why) = validate::name(&name) {
        return Reply::error(400, why);
    }
    match method {
        Method::Get | Method::Head => match registry.store.get(&name) {
            Some(record) => Reply::json(200, &record),
            None => not_found(&name),
        },
        Method::Delete if listener == Listener::Ui => read_only(),
        Method::Delete => match authorize(registry, request) {
            Ok(()) => deregister(registry, &name),
            Err(reply) => reply,
        },
        _ => method_not_allowed("GET, HEAD, DELETE", "/endpoints/NAME answers GET and DELETE"),
    }
}

fn not_found(name: &str) -> Reply {
    Reply::error(404, format!("no endpoint named {name:?} is registered"))
}

fn list(registry: &Registry, query: &str) -> Reply {
    let Some(pairs) = url::query_pairs(query) else {
        return Reply::error(400, "the query string is not valid percent-encoded UTF-8");
    };
    let mut filter = Filter::default();
    for (key, value) in pairs {
        match key.as_str() {
            "status" => match Status::parse(&value) {
                Some(s) => filter.status = Some(s),
                None => {
                    return Reply::error(
                        400,
                        format!("status must be passing, pending or critical, not {:?}", clip(&value)),
                    )
                }
            },
            "tag" => filter.tags.push(value),
            // Unknown parameters are ignored, as most HTTP APIs do, so newer clients still work.
            _ => {}
        }
    }
    let rendered = registry.views.endpoints(&registry.store, &filter);
    Reply::shared(JSON, rendered.body).with_header("X-Registry-Index", rendered.index.to_string())
}

/// Reads a request body of at most [`MAX_BODY_BYTES`].
fn read_body(request: &mut Request) -> Result<Vec<u8>, Reply> {
    let too_large = || Reply::error(413, format!("request body is larger than the {MAX_BODY_BYTES}-byte limit"));
    if request.body_length().is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(MAX_BODY_BYTES as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| Reply::error(400, format!("could not read the request body: {e}")))?;
    if body.len() > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(body)
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
            Reply::json(200, &record)
        }
        None => not_found(name),
    }
}
