//! A real Prometheus (Debian's `prometheus` package) finds dynamic-port servers through the
//! registry's HTTP service discovery (`/v1/sd`) and scrapes them; `promtool check metrics`
//! accepts what both binaries serve on `/metrics`. Loopback only; Prometheus runs in a temporary
//! directory and is killed on drop.
//!
//! Without `/usr/bin/prometheus` or `/usr/bin/promtool` these tests fail, naming the package to
//! install (`make test` installs it).

use end_to_end::{eventually, free_port, get, outside_program, Process, Registry, Server, Status, TempDir};
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GENEROUS: Duration = Duration::from_secs(10);
/// Prometheus needs a few seconds to start, then one discovery refresh and one scrape (1 s
/// each here) to report a target up.
const PROMETHEUS_PATIENCE: Duration = Duration::from_secs(60);

/// The scrape configuration under test; the README gives the same one. `SD_URL` and
/// `REGISTRY` are filled in. Only endpoints tagged `web` are discovered (`?tag=web`); the
/// discovered name and tags become the visible labels `instance_name` and `tags`.
const CONFIG: &str = r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s

scrape_configs:
  - job_name: dynamic-ports
    http_sd_configs:
      - url: SD_URL
        refresh_interval: 1s
    relabel_configs:
      - source_labels: [__meta_dynamic_ports_name]
        target_label: instance_name
      - source_labels: [__meta_dynamic_ports_tags]
        regex: ",(.*),"
        target_label: tags

  # The registry's own metrics.
  - job_name: service-registry
    static_configs:
      - targets: ["REGISTRY"]
"#;

/// A running Prometheus with its configuration and storage in a temporary directory.
struct Prometheus {
    // Field order is drop order: the process goes before its directory.
    process: Process,
    base: String,
    _dir: TempDir,
}

impl Prometheus {
    fn start(program: &std::path::Path, config: &str) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let config_path = dir.path.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let listen = format!("127.0.0.1:{}", free_port());
        let args = [
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.path.join("data").display()),
            format!("--web.listen-address={listen}"),
            "--log.level=info".to_string(),
        ];
        let process = Process::start_program(program, &args, &[]);
        let base = format!("http://{listen}");
        let prometheus = Prometheus { process, base, _dir: dir };
        let t0 = Instant::now();
        eventually(PROMETHEUS_PATIENCE, || get(&format!("{}/-/ready", prometheus.base)).filter(|(s, _)| *s == 200))
            .unwrap_or_else(|| panic!("Prometheus never got ready; its log:\n{}", prometheus.log()));
        eprintln!("Prometheus ready after {:?}", t0.elapsed());
        prometheus
    }

    fn log(&self) -> String {
        self.process.log().join("\n")
    }

    /// `GET /api/v1/PATH`'s `data`, when the call succeeds.
    fn api(&self, path: &str) -> Option<Value> {
        let (status, body) = get(&format!("{}/api/v1/{path}", self.base))?;
        let value: Value = serde_json::from_str(&body).ok()?;
        (status == 200 && value["status"] == "success").then(|| value["data"].clone())
    }

    /// The active targets of `job`.
    fn targets(&self, job: &str) -> Vec<Value> {
        let data = self.api("targets?state=active").unwrap_or_default();
        let all = data["activeTargets"].as_array().cloned().unwrap_or_default();
        all.into_iter().filter(|t| t["labels"]["job"] == job).collect()
    }
}

#[test]
fn prometheus_discovers_three_servers_through_the_registry_and_scrapes_them() {
    let prometheus_bin = outside_program("/usr/bin/prometheus", "prometheus");
    let registry = Registry::start(&[]);
    let servers: Vec<Server> = [("prom-a", "web,eu"), ("prom-b", "web"), ("prom-c", "web,us")]
        .into_iter()
        .map(|(name, tags)| Server::start(registry.api, name, "1s", &[&format!("-tags={tags}")]))
        .collect();
    // Passing but not tagged web: the tag filter must leave it out.
    let other = Server::start(registry.api, "prom-db", "1s", &["-tags=db"]);
    for name in ["prom-a", "prom-b", "prom-c", "prom-db"] {
        registry.wait_for(name, Status::Passing, GENEROUS);
    }

    // Prometheus reads the read-only UI listener, as it would through the cluster's Service.
    let config = CONFIG
        .replace("SD_URL", &format!("http://{}/v1/sd?tag=web", registry.ui))
        .replace("REGISTRY", &registry.ui.to_string());
    let prometheus = Prometheus::start(&prometheus_bin, &config);

    let t0 = Instant::now();
    let up = eventually(PROMETHEUS_PATIENCE, || {
        let targets = prometheus.targets("dynamic-ports");
        (targets.len() == 3 && targets.iter().all(|t| t["health"] == "up")).then_some(targets)
    })
    .unwrap_or_else(|| {
        panic!(
            "Prometheus never reported three targets up; targets: {:#}\nPrometheus log:\n{}",
            prometheus.api("targets").unwrap_or_default(),
            prometheus.log()
        )
    });
    eprintln!("three targets up {:?} after Prometheus was ready", t0.elapsed());

    let mut seen: Vec<(String, String, String)> = up
        .iter()
        .map(|t| {
            let labels = &t["labels"];
            let text = |k: &str| labels[k].as_str().unwrap_or_else(|| panic!("no {k} label in {t:#}")).to_string();
            assert_eq!(t["discoveredLabels"]["__meta_dynamic_ports_name"], labels["instance_name"], "{t:#}");
            assert_eq!(t["scrapeUrl"], format!("http://{}/metrics", text("instance")), "{t:#}");
            (text("instance_name"), text("instance"), text("tags"))
        })
        .collect();
    seen.sort();
    let expected: Vec<(String, String, String)> = servers
        .iter()
        .zip(["prom-a", "prom-b", "prom-c"].into_iter().zip(["web,eu", "web", "web,us"]))
        .map(|(s, (name, tags))| (name.to_string(), s.local().to_string(), tags.to_string()))
        .collect();
    assert_eq!(seen, expected);
    assert!(
        !prometheus.targets("dynamic-ports").iter().any(|t| t["labels"]["instance"] == other.local().to_string()),
        "the server tagged db was discovered despite ?tag=web"
    );

    // The samples made it into Prometheus's storage with the relabelled names.
    let query = "count(dynamic_port_server_uptime_seconds{job=\"dynamic-ports\",instance_name=~\"prom-.\"})";
    let count = eventually(PROMETHEUS_PATIENCE, || {
        let data = prometheus.api(&format!(
            "query?query={}",
            percent_encoding::utf8_percent_encode(query, percent_encoding::NON_ALPHANUMERIC)
        ))?;
        data["result"][0]["value"][1].as_str().filter(|v| *v == "3").map(str::to_string)
    });
    assert_eq!(count.as_deref(), Some("3"), "query {query}; Prometheus log:\n{}", prometheus.log());

    // And Prometheus parses the registry's own metrics.
    let registry_target = eventually(PROMETHEUS_PATIENCE, || {
        prometheus.targets("service-registry").into_iter().find(|t| t["health"] == "up")
    });
    assert!(registry_target.is_some(), "{:#}", prometheus.api("targets").unwrap_or_default());
}

/// Runs `promtool check metrics` on `text`: its exit status and everything it printed.
fn promtool_check(promtool: &std::path::Path, text: &str) -> (Option<i32>, String) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    // On a thread, so that a promtool that stops reading cannot block this one.
    let mut stdin = child.stdin.take().expect("stdin");
    let text = text.to_string();
    std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let deadline = Instant::now() + GENEROUS;
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if child.try_wait().ok().flatten().is_none() {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("promtool output");
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code(), printed)
}

/// promtool exits 1 on text it cannot parse and 3 on lint problems (a counter without
/// `_total`, a metric without HELP, a unit in the wrong place...). Both fail this test: the
/// output is lint-clean today, and lint problems are exactly what a Prometheus user would
/// trip over, so a new metric must be clean too.
#[test]
fn promtool_accepts_the_metrics_of_the_registry_and_the_server() {
    let promtool = outside_program("/usr/bin/promtool", "prometheus");
    let registry = Registry::start(&[]);
    let server = Server::start(registry.api, "metered", "1s", &[]);
    registry.wait_for("metered", Status::Passing, GENEROUS);
    // Some traffic first, so that every family has samples: requests, probes, a 404.
    let _ = get(&format!("http://{}/nope", registry.api));
    let _ = get(&format!("http://{}/?index=0", registry.ui));
    let _ = get(&format!("http://{}/", server.local()));
    let _ = get(&format!("http://{}/nope", server.local()));

    for (what, url) in [
        ("registry", format!("http://{}/metrics", registry.api)),
        ("server", format!("http://{}/metrics", server.local())),
    ] {
        let (status, text) = get(&url).unwrap_or_else(|| panic!("{what} /metrics does not answer"));
        assert_eq!(status, 200, "{what}: {text}");
        let (code, printed) = promtool_check(&promtool, &text);
        assert_eq!(code, Some(0), "promtool check metrics rejects the {what}'s /metrics:\n{printed}\n---\n{text}");
        assert!(printed.trim().is_empty(), "promtool complains about the {what}'s /metrics:\n{printed}\n---\n{text}");
    }

    // The check itself bites: a lint problem and a parse error both fail.
    assert_eq!(promtool_check(&promtool, "# HELP x a\n# TYPE x counter\nx 1\n").0, Some(3));
    assert_eq!(promtool_check(&promtool, "x{ 1\n").0, Some(1));
}
