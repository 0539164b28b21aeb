//! Routing: one function from a request to a reply. Status codes are chosen here and nowhere
//! else; the HTTP loop only reads, calls and responds.

use crate::blocking_query::{self, Wait};
use crate::reads::{self, not_found, Read};
use crate::reply::{Body, Reply, METRICS};
use crate::route::{Listener, Route};
use crate::state::Registry;
use crate::store::{Change, Filter, StoreError};
use crate::url;
use common::validate::{self, clip};
use common::wire::{Deregistration, Registration, Status};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;
use tiny_http::{Method, Request};

/// Largest request body accepted: a registration is a few hundred bytes; 64 KiB leaves room
/// for every tag the limits allow, and no more.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The outcome of routing: an answer now, or a blocking query to park.
pub enum Routed {
    Now(Reply),
    Wait(Wait, Read),
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
    let reply = match Route::of(path) {
        Route::Healthz if read => {
            let hold = registry.store.eviction_hold().is_some();
            let warming = registry.store.warming().is_some();
            Reply::json(200, &serde_json::json!({"status": "ok", "evictionHold": hold, "warming": warming}))
        }
        Route::Metrics if read => {
            let text = registry.metrics.render(registry.store.counts());
            Reply { status: 200, content_type: METRICS, headers: Vec::new(), body: Body::Owned(text.into_bytes()) }
        }
        Route::ServiceDiscovery if read => match filter(&pairs) {
            Ok(filter) => reads::with_warming(Reply::json(200, &sd_targets(registry, filter)), registry),
            Err(reply) => reply,
        },
        Route::Page if read => return blocking_read(registry, &pairs, Read::Page),
        Route::Endpoints if read => match filter(&pairs) {
            Ok(filter) => return blocking_read(registry, &pairs, Read::List(filter)),
            Err(reply) => reply,
        },
        Route::Healthz | Route::Page | Route::Endpoints | Route::Metrics | Route::ServiceDiscovery => {
            method_not_allowed("GET, HEAD", &format!("{path} answers GET only"))
        }
        Route::Register | Route::Deregister if method != Method::Post => {
            method_not_allowed("POST", &format!("{path} takes POST with a JSON body"))
        }
        Route::Register | Route::Deregister if listener == Listener::Ui => read_only(),
        Route::Register => write(registry, request, register),
        Route::Deregister => write(registry, request, deregister_body),
        Route::OneEndpoint => {
            let raw = path.strip_prefix("/endpoints/").unwrap_or_default();
            match one_endpoint(registry, listener, request, raw) {
                Ok(name) => return blocking_read(registry, &pairs, Read::One(name)),
                Err(reply) => reply,
            }
        }
        Route::Other => {
            Reply::error(404, format!("no such path {:?}: see /endpoints, /register, /deregister", clip(path)))
        }
    };
    Routed::Now(reply)
}

/// A read that waits when asked to (`?index=`) and the index has not yet passed.
fn blocking_read(registry: &Registry, pairs: &[(String, String)], read: Read) -> Routed {
    match blocking_query::requested(pairs) {
        Err(why) => Routed::Now(Reply::error(400, why)),
        // An index from the future can only come from before a restart (indexes start again
        // at 1): answer at once, so the client starts over rather than waiting out its wait.
        Ok(Some(wait)) if registry.store.index() == wait.seen => Routed::Wait(wait, read),
        Ok(_) => Routed::Now(reads::answer(registry, &read)),
    }
}

fn read_only() -> Reply {
    method_not_allowed("GET, HEAD", "this is the read-only UI listener: send writes to the API listener (-api)")
}

/// Runs a write that takes a JSON body: token first, then the body, then `handler`.
/// A write's handler: the body, and where the request came from (for the log).
type WriteHandler = fn(&Registry, &[u8], Option<SocketAddr>) -> Result<Reply, Reply>;

fn write(registry: &Registry, request: &mut Request, handler: WriteHandler) -> Reply {
    let from = request.remote_addr().copied();
    authorize(registry, request)
        .map(|()| read_body(request))
        .and_then(|body| handler(registry, &body, from))
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
/// (`startup::limits`: a larger one was answered 413 before it got here), so reading it
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

fn register(registry: &Registry, body: &[u8], from: Option<SocketAddr>) -> Result<Reply, Reply> {
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
        // The source is what a NetworkPolicy or firewall in front of the API must admit; it is
        // often not the Address (kube-proxy rewrites a hostNetwork pod's source to the node's
        // pod-network address on many clusters).
        Change::Created => log::info!("Registered {} at {} (from {})", record.name, record.address, source(from)),
        Change::Moved => log::info!("Registered {} at {} (moved; from {})", record.name, record.address, source(from)),
        Change::Renewed => log::debug!("Renewed {} at {}", record.name, record.address),
    }
    registry.metrics.registrations.fetch_add(1, Relaxed);
    if let Some(job) = registered.check_now {
        registry.checker.check_now(job);
    }
    Ok(Reply::json(200, record))
}

/// The IP a request came from, for the log.
fn source(from: Option<SocketAddr>) -> String {
    from.map_or_else(|| "-".to_string(), |a| a.ip().to_string())
}

fn deregister_body(registry: &Registry, body: &[u8], _from: Option<SocketAddr>) -> Result<Reply, Reply> {
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
