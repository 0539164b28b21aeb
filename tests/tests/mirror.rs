//! The EndpointSlice mirror with the real registry and a stand-in for the Kubernetes API: an
//! in-memory API on loopback that keeps Services and EndpointSlices, with resourceVersions and
//! 409 on a stale one, as the real API server does (plain HTTP, as `kubectl proxy` serves it).
//! The same story runs against a real cluster in `make e2e-cluster`.

use end_to_end::{eventually, free_port, Registry, Server, Status};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

const NS: &str = "default";

/// What the stand-in API holds.
#[derive(Default)]
struct State {
    services: Vec<Value>,
    slices: BTreeMap<String, Value>,
    version: u64,
    /// How many more PUTs to refuse with 409, as a concurrent writer would cause.
    conflicts_to_make: u32,
    writes: u32,
}

struct FakeApi {
    state: Arc<Mutex<State>>,
    url: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeApi {
    /// `v1`: whether it serves discovery.k8s.io/v1 (Kubernetes 1.21+) or only v1beta1 (1.20).
    fn start(v1: bool) -> FakeApi {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("bind the fake API");
        let url = format!("http://{}", server.server_addr().to_ip().expect("an IP address"));
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (state2, stop2) = (state.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok(Some(mut request)) = server.recv_timeout(Duration::from_millis(50)) else { continue };
                let mut body = String::new();
                let _ = request.as_reader().read_to_string(&mut body);
                let (status, answer) = handle(&state2, v1, request.method().as_str(), request.url(), &body);
                let _ = request.respond(tiny_http::Response::from_string(answer.to_string()).with_status_code(status));
            }
        });
        FakeApi { state, url, stop, thread: Some(thread) }
    }

    fn add_service(&self, name: &str, tag: Option<&str>) {
        let annotations = tag.map_or(json!({}), |t| json!({"dynamic-ports/tag": t}));
        self.state.lock().unwrap().services.push(json!({
            "metadata": {"name": name, "uid": format!("uid-{name}"), "annotations": annotations},
            "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
        }));
    }

    fn unannotate(&self, name: &str) {
        for s in &mut self.state.lock().unwrap().services {
            if s["metadata"]["name"] == name {
                s["metadata"]["annotations"] = json!({});
            }
        }
    }

    /// Every endpoint in the slices of `service`: (ip:port, ready), sorted.
    fn endpoints(&self, service: &str) -> Vec<(String, bool)> {
        let state = self.state.lock().unwrap();
        let mut found: Vec<(String, bool)> = state
            .slices
            .values()
            .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == service)
            .flat_map(|s| {
                let port = s["ports"][0]["port"].as_u64().unwrap_or(0);
                let endpoints = s["endpoints"].as_array().cloned().unwrap_or_default();
                endpoints.into_iter().map(move |e| {
                    (format!("{}:{port}", e["addresses"][0].as_str().unwrap_or("")), e["conditions"]["ready"] == true)
                })
            })
            .collect();
        found.sort();
        found
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(state: &Mutex<State>, v1: bool, method: &str, url: &str, body: &str) -> (u16, Value) {
    let mut s = state.lock().unwrap();
    let version = if v1 { "v1" } else { "v1beta1" };
    let slices = format!("/apis/discovery.k8s.io/{version}/namespaces/{NS}/endpointslices");
    let path = url.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/apis/discovery.k8s.io/v1") if !v1 => (404, json!({"message": "not found"})),
        ("GET", p) if p.starts_with("/apis/discovery.k8s.io/") && !p.contains("namespaces") => (200, json!({})),
        ("GET", p) if p == format!("/api/v1/namespaces/{NS}/services") => (200, json!({"items": s.services})),
        ("GET", p) if p == slices => (200, json!({"items": s.slices.values().collect::<Vec<_>>()})),
        ("POST", p) if p == slices => {
            let mut slice: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            s.version += 1;
            s.writes += 1;
            let name = format!("{}{}", slice["metadata"]["generateName"].as_str().unwrap_or("x-"), s.version);
            slice["metadata"]["name"] = json!(name);
            slice["metadata"]["resourceVersion"] = json!(s.version.to_string());
            s.slices.insert(name, slice.clone());
            (201, slice)
        }
        ("PUT", p) if p.starts_with(&format!("{slices}/")) => {
            let name = &p[slices.len() + 1..];
            let mut slice: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            let current = s.slices.get(name).map(|c| c["metadata"]["resourceVersion"].clone());
            if s.conflicts_to_make > 0 || current.as_ref() != Some(&slice["metadata"]["resourceVersion"]) {
                s.conflicts_to_make = s.conflicts_to_make.saturating_sub(1);
                return (409, json!({"message": "the object has been modified"}));
            }
            s.version += 1;
            s.writes += 1;
            slice["metadata"]["resourceVersion"] = json!(s.version.to_string());
            s.slices.insert(name.to_string(), slice.clone());
            (200, slice)
        }
        ("DELETE", p) if p.starts_with(&format!("{slices}/")) => {
            let name = &p[slices.len() + 1..];
            s.writes += 1;
            match s.slices.remove(name) {
                Some(_) => (200, json!({})),
                None => (404, json!({"message": "not found"})),
            }
        }
        _ => (404, json!({"message": format!("no route {method} {path}")})),
    }
}

fn mirror(api: &FakeApi, registry: &Registry) -> end_to_end::Process {
    let args = [
        format!("-registry={}", registry.api),
        format!("-kube-api={}", api.url),
        format!("-namespace={NS}"),
        "-resync=1s".to_string(),
        "-http=127.0.0.1:0".to_string(),
    ];
    let process = end_to_end::Process::start("endpointslice-mirror", &args, &[]);
    process.wait_for_line("Writing EndpointSlices as", Duration::from_secs(5));
    process
}

/// Where `ips` listen on `port`, all ready.
fn addresses(ips: &[&str], port: u16) -> Vec<(String, bool)> {
    let mut list: Vec<(String, bool)> = ips.iter().map(|ip| (format!("{ip}:{port}"), true)).collect();
    list.sort();
    list
}

#[test]
fn a_services_slices_follow_the_registry_and_survive_conflicts_and_an_unreachable_registry() {
    let registry = Registry::start(&[]);
    let api = FakeApi::start(false);
    api.add_service("web", Some("web"));
    api.add_service("web-too", Some("web"));
    api.add_service("plain", None);
    // Three servers on one port of three loopback addresses: one slice holds them all, so a
    // change is an update of that slice (with its resourceVersion), not a new slice.
    let port = free_port();
    let ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    let servers: Vec<Server> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let args = [format!("-bind-ip={ip}"), format!("-advertised-ip={ip}"), format!("-port-range={port}-{port}")];
            let args: Vec<&str> = args.iter().map(String::as_str).chain(["-tags=web"]).collect();
            Server::start(registry.api, &format!("web-{i}"), "1s", &args)
        })
        .collect();
    let _other = Server::start(registry.api, "other", "1s", &["-bind-ip=127.0.0.1", "-tags=other"]);
    eventually(Duration::from_secs(5), || {
        registry.endpoints().filter(|l| l.len() == 4 && l.iter().all(|e| e.status == Status::Passing))
    })
    .expect("four servers pass");
    let process = mirror(&api, &registry);

    let all = addresses(&ips, port);
    eventually(Duration::from_secs(5), || (api.endpoints("web") == all).then_some(()))
        .unwrap_or_else(|| panic!("web's slices never held the three servers: {:?}", api.endpoints("web")));
    assert!(api.endpoints("plain").is_empty(), "a Service without the annotation is not touched");
    assert_eq!(api.endpoints("web-too"), all, "every Service of the tag");
    assert_eq!(api.state.lock().unwrap().slices.len(), 2, "one slice a Service: one port");
    process.wait_for_line("Service web (tag web): 3 endpoints, 3 ready", Duration::from_secs(2));

    // A stopped server deregisters: gone from the slices at the next change. That update
    // meets a conflict first (another writer): it is read again and written. Armed before the
    // stop, which the mirror may see within milliseconds.
    api.state.lock().unwrap().conflicts_to_make = 1;
    let mut servers = servers;
    let stopped = servers.pop().unwrap();
    let mut stopped_process = stopped.process;
    stopped_process.signal("TERM");
    stopped_process.wait_exit(Duration::from_secs(5));
    let left = addresses(&ips[..2], port);
    eventually(Duration::from_secs(5), || (api.endpoints("web") == left).then_some(()))
        .unwrap_or_else(|| panic!("the stopped server stayed: {:?}", api.endpoints("web")));
    process.wait_for_line("changed meanwhile", Duration::from_secs(1));
    assert_eq!(api.state.lock().unwrap().conflicts_to_make, 0, "the conflict happened");

    // The annotation removed: that Service's slices go, the other's stay.
    api.unannotate("web-too");
    eventually(Duration::from_secs(5), || api.endpoints("web-too").is_empty().then_some(()))
        .unwrap_or_else(|| panic!("slices stayed after the annotation went: {:?}", api.endpoints("web-too")));
    assert_eq!(api.endpoints("web"), left);

    // The registry unreachable for a while: the slices stay as they were.
    let before = api.endpoints("web");
    let writes = api.state.lock().unwrap().writes;
    registry.process.signal("KILL");
    drop(registry);
    thread::sleep(Duration::from_secs(3));
    assert_eq!(api.endpoints("web"), before, "the slices stay while the registry is away");
    assert_eq!(api.state.lock().unwrap().writes, writes, "nothing was written meanwhile");
    process.wait_for_line("cannot reach the registry", Duration::from_secs(2));
}
