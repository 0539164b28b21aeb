//! Support for end-to-end tests: run the real `service-registry` and `dynamic-port-server`
//! binaries on loopback, read their logs, talk to them over HTTP, and clean up every process.
//!
//! Every wait here is bounded: [`eventually`] polls with a deadline and a fixed step.
//!
//! Helpers that need only `std` live in [`shared`], which the registry's and the server's
//! tests include too.

pub mod shared;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

pub use common::wire::{Endpoint, Status};

/// A built binary of this workspace. `cargo test --workspace` builds every package's binaries;
/// they sit next to the `deps/` folder that holds this test.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace` (or `cargo test --workspace`)",
        path.display()
    );
    path
}

/// Polls `check` every 20 ms until it returns `Some` or `timeout` passes.
pub fn eventually<T>(timeout: Duration, check: impl FnMut() -> Option<T>) -> Option<T> {
    shared::poll(Duration::from_millis(20), timeout, check)
}

/// A port on 127.0.0.1 that was free a moment ago, below the kernel's ephemeral range
/// (32768-60999 by default). A port from that range could meanwhile become the source port of
/// some outgoing connection, or even of a client connecting to it while nothing listens there
/// (a TCP self-connect), and then the process meant to listen on it cannot.
pub fn free_port() -> u16 {
    use std::hash::BuildHasher;
    let seed = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    (0..200u64)
        .map(|i| 20_000 + ((seed.wrapping_add(i.wrapping_mul(7_919))) % 12_000) as u16)
        .find(|port| TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port in 20000-31999")
}

/// A running binary. Dropping it kills it (SIGKILL) and reaps it.
pub struct Process {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    pub name: String,
    /// Started as the leader of its own process group, killed as a group.
    own_group: bool,
}

impl Process {
    /// Starts `binary` with `args` and `envs` (on top of a cleaned environment), collecting its
    /// stderr lines.
    pub fn start(binary_name: &str, args: &[String], envs: &[(&str, String)]) -> Process {
        let mut command = Command::new(binary(binary_name));
        command.args(args);
        // Keep the Kubernetes defaults of the machine running the tests out of the way.
        for var in ["SERVICE_REGISTRY_SERVICE_HOST", "SERVICE_REGISTRY_SERVICE_PORT", "POD_NAME", "HOST_IP"] {
            command.env_remove(var);
        }
        command.env("RUST_LOG", "info");
        for (k, v) in envs {
            command.env(k, v);
        }
        Process::spawn(binary_name, command, false)
    }

    /// Starts a program from outside this workspace (Prometheus, chromedriver) with `envs` on
    /// top of the test's environment, in a process group of its own: dropping it kills the
    /// whole group, so whatever it started (a browser under chromedriver) goes too.
    pub fn start_program(program: &Path, args: &[String], envs: &[(&str, String)]) -> Process {
        let mut command = Command::new(program);
        command.args(args).envs(envs.iter().map(|(k, v)| (k, v)));
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let name = program.file_name().map_or_else(|| program.display().to_string(), |n| n.to_string_lossy().into());
        Process::spawn(&name, command, cfg!(unix))
    }

    fn spawn(name: &str, mut command: Command, own_group: bool) -> Process {
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            });
        }
        Process { child, log, name: name.to_string(), own_group }
    }

    /// The log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits for a log line containing `needle` and returns it.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> String {
        eventually(timeout, || self.log().into_iter().find(|l| l.contains(needle)))
            .unwrap_or_else(|| panic!("{} never logged {needle:?}; log:\n{}", self.name, self.log().join("\n")))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `KILL`, `INT`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status().expect("kill");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        eventually(timeout, || self.child.try_wait().ok().flatten())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.own_group {
            // The group keeps the leader's pid as its id while any member lives, even after
            // the leader exited, so this reaches orphans too.
            let group = format!("-{}", self.pid());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running registry and its two addresses.
pub struct Registry {
    pub process: Process,
    pub api: SocketAddr,
    pub ui: SocketAddr,
}

/// The address in a log line `... listening on ADDR`.
fn address_in(line: &str) -> SocketAddr {
    line.rsplit(' ').next().and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("no address in {line:?}"))
}

impl Registry {
    /// Starts a registry with fast checks on loopback. `api` picks its API address (port 0:
    /// any); `extra` adds flags.
    pub fn start_at(api: &str, extra: &[&str]) -> Registry {
        let mut args = vec![
            format!("-api={api}"),
            "-http=127.0.0.1:0".to_string(),
            "-check-interval=100ms".to_string(),
            "-check-timeout=500ms".to_string(),
            "-deregister-critical-after=1s".to_string(),
            // Removals from the first second; tests of the warm-up give their own.
            "-warm-up=0s".to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Registry::from_process(Process::start("service-registry", &args, &[]))
    }

    /// Wraps a started registry process, reading its two addresses from its log.
    pub fn from_process(process: Process) -> Registry {
        let api = address_in(&process.wait_for_line("API listening on", Duration::from_secs(10)));
        let ui = address_in(&process.wait_for_line("UI listening on", Duration::from_secs(10)));
        Registry { process, api, ui }
    }

    /// Starts a registry on any free API port.
    pub fn start(extra: &[&str]) -> Registry {
        Registry::start_at("127.0.0.1:0", extra)
    }

    /// All endpoints, or `None` if the registry does not answer.
    pub fn endpoints(&self) -> Option<Vec<Endpoint>> {
        get_json(&format!("http://{}/endpoints", self.api))
    }

    /// One endpoint by name, if listed.
    pub fn endpoint(&self, name: &str) -> Option<Endpoint> {
        self.endpoints()?.into_iter().find(|e| e.name == name)
    }

    /// Waits until `name` is listed with `status`, returning the record.
    pub fn wait_for(&self, name: &str, status: Status, timeout: Duration) -> Endpoint {
        eventually(timeout, || self.endpoint(name).filter(|e| e.status == status))
            .unwrap_or_else(|| panic!("{name} never became {status}; listed: {:?}", self.endpoints()))
    }

    /// Registers `name`, healthy: it points at the registry's own UI listener, whose
    /// `/healthz` answers 200. Panics unless the registry answers 200.
    pub fn register_healthy(&self, name: &str, tags: &[&str]) {
        let body = serde_json::json!({"Name": name, "Address": self.ui.to_string(), "Tags": tags});
        let answer = post_json(&format!("http://{}/register", self.api), &body).expect("registry answers");
        assert_eq!(answer.status, 200, "register {name}: {}", answer.body);
    }

    /// Blocking queries parked in the registry now, from `/metrics`.
    pub fn watchers(&self) -> Option<u64> {
        self.metric("service_registry_watchers")
    }

    /// The value of the series `series` (a name, with its labels if it has any) on `/metrics`,
    /// or `None` if the registry does not answer or has no such series.
    pub fn metric(&self, series: &str) -> Option<u64> {
        let answer = get_answer(&format!("http://{}/metrics", self.api), Duration::from_secs(2))?;
        answer.body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
    }
}

/// A running dynamic-port-server and the port it bound.
pub struct Server {
    pub process: Process,
    pub port: u16,
}

impl Server {
    /// Starts a server registering with `registry` as `name` at 127.0.0.1, renewing every
    /// `interval`; `extra` adds flags.
    pub fn start(registry: SocketAddr, name: &str, interval: &str, extra: &[&str]) -> Server {
        let mut args = vec![
            format!("-service-registry={registry}"),
            format!("-service-instance-name={name}"),
            "-advertised-ip=127.0.0.1".to_string(),
            format!("-register-interval={interval}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Server::from_process(Process::start("dynamic-port-server", &args, &[]))
    }

    /// Wraps a started server process, reading its port from `Listening on 0.0.0.0:PORT`.
    pub fn from_process(process: Process) -> Server {
        let line = process.wait_for_line("Listening on", Duration::from_secs(10));
        let port = address_in(&line).port();
        Server { process, port }
    }

    /// `127.0.0.1:PORT`, where the server answers.
    pub fn local(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// GETs `url` and decodes a 200 answer's JSON; `None` on any failure.
pub fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> Option<T> {
    let (status, body) = get(url)?;
    if status != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

/// GETs `url`: status and body, or `None` if nothing answered.
pub fn get(url: &str) -> Option<(u16, String)> {
    let mut response = agent().get(url).header("User-Agent", "Go-http-client/1.1").call().ok()?;
    let status = response.status().as_u16();
    Some((status, response.body_mut().read_to_string().ok()?))
}

/// A program from a Debian package that some tests drive (Prometheus, Chromium). A missing
/// program fails the test, naming the package to install: a test never passes by skipping.
/// `make test` installs them first (scripts/install-test-deps.sh).
pub fn outside_program(path: &str, package: &str) -> PathBuf {
    let path = PathBuf::from(path);
    assert!(
        is_executable(&path),
        "{} is missing: install the Debian package `{package}` (apt-get install {package}, or \
         scripts/install-test-deps.sh as root)",
        path.display()
    );
    path
}

/// A file that may be run: on Unix, one with an execute bit set.
fn is_executable(path: &Path) -> bool {
    let Ok(metadata) = std::fs::metadata(path) else { return false };
    #[cfg(unix)]
    let runnable = std::os::unix::fs::PermissionsExt::mode(&metadata.permissions()) & 0o111 != 0;
    #[cfg(not(unix))]
    let runnable = true;
    metadata.is_file() && runnable
}

/// A fresh directory under the system's temporary directory, removed with its contents on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    /// Creates `dynamic-ports-LABEL-PID-N`.
    pub fn new(label: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("dynamic-ports-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// An HTTP answer with its headers.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as JSON, panicking with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

fn answer_of(mut response: ureq::http::Response<ureq::Body>) -> Option<Answer> {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = response.body_mut().read_to_string().ok()?;
    Some(Answer { status, headers, body })
}

fn agent_with(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build().into()
}

/// GETs `url`, allowing `timeout` for the whole exchange (a blocking query needs more than
/// [`get`]'s 2 s): status, headers and body, or `None` if nothing answered in time.
pub fn get_answer(url: &str, timeout: Duration) -> Option<Answer> {
    answer_of(agent_with(timeout).get(url).call().ok()?)
}

/// POSTs `body` as JSON to `url`, as `curl -d` would: the answer, or `None` if nothing answered.
pub fn post_json(url: &str, body: &serde_json::Value) -> Option<Answer> {
    let request = agent_with(Duration::from_secs(5)).post(url).header("Content-Type", "application/json");
    answer_of(request.send(body.to_string()).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "/nonexistent/prometheus is missing: install the Debian package `prometheus`")]
    fn a_missing_outside_program_fails_the_test_naming_its_package() {
        outside_program("/nonexistent/prometheus", "prometheus");
    }
}
