//! The dynamic-port-server with the real registry: start, stay registered, survive the
//! registry going away, leave cleanly. Loopback only; every process is killed on drop.

use end_to_end::{eventually, free_port, get, Process, Registry, Server, Status, TempDir};
use std::time::{Duration, Instant};

const GENEROUS: Duration = Duration::from_secs(10);

#[test]
fn a_started_server_is_listed_as_passing_at_its_advertised_address_and_bound_port() {
    let registry = Registry::start(&[]);
    let t0 = Instant::now();
    let server = Server::start(registry.api, "web-1", "10s", &[]);
    let record = registry.wait_for("web-1", Status::Passing, GENEROUS);
    eprintln!("start to passing: {:?}", t0.elapsed());
    assert_eq!(record.address, format!("127.0.0.1:{}", server.port));
    server.process.wait_for_line(&format!("Registering advertised endpoint [127.0.0.1:{}]", server.port), GENEROUS);
    server.process.wait_for_line("Starting dynamic port server...", GENEROUS);
    assert!(
        server.process.log().iter().any(|l| l.ends_with(&format!("Listening on 0.0.0.0:{}", server.port))),
        "{:?}",
        server.process.log()
    );
    // The page names the instance and its address.
    let (status, page) = get(&format!("http://{}/", server.local())).expect("page");
    assert_eq!(status, 200);
    assert!(page.contains("web-1") && page.contains(&format!("127.0.0.1:{}", server.port)), "{page}");
}

#[test]
fn two_servers_on_one_host_get_two_ports_and_two_records() {
    let registry = Registry::start(&[]);
    let a = Server::start(registry.api, "twin-a", "10s", &[]);
    let b = Server::start(registry.api, "twin-b", "10s", &[]);
    assert_ne!(a.port, b.port);
    let ra = registry.wait_for("twin-a", Status::Passing, GENEROUS);
    let rb = registry.wait_for("twin-b", Status::Passing, GENEROUS);
    assert_eq!(ra.address, format!("127.0.0.1:{}", a.port));
    assert_eq!(rb.address, format!("127.0.0.1:{}", b.port));
    assert_eq!(registry.endpoints().unwrap().len(), 2);
}

#[test]
fn a_restarted_registry_has_the_server_back_within_one_register_interval() {
    let registry = Registry::start(&[]);
    let api = registry.api;
    let _server = Server::start(api, "survivor", "1s", &[]);
    registry.wait_for("survivor", Status::Passing, GENEROUS);
    registry.process.signal("KILL");
    drop(registry);
    let restarted = Registry::start_at(&api.to_string(), &[]);
    let t0 = Instant::now();
    let back = eventually(GENEROUS, || restarted.endpoint("survivor"));
    let took = t0.elapsed();
    assert!(back.is_some(), "never came back");
    eprintln!("back after registry restart in {took:?}");
    assert!(took <= Duration::from_millis(1000 + 500), "took {took:?}, more than one 1s interval");
    restarted.wait_for("survivor", Status::Passing, GENEROUS);
}

#[test]
fn a_server_started_before_its_registry_serves_meanwhile_and_registers_later_logging_once() {
    let port = free_port();
    let api = format!("127.0.0.1:{port}");
    let server = Server::start(api.parse().unwrap(), "early", "1s", &[]);
    // No registry yet: the server still answers its health check.
    let health = eventually(GENEROUS, || get(&format!("http://{}/healthz", server.local())));
    assert_eq!(health.map(|(s, _)| s), Some(200));
    // Let it retry with backoff for a while: 100ms, 200ms, 400ms, 800ms, 1s...
    std::thread::sleep(Duration::from_millis(2500));
    let complaints = |p: &Process| p.log().iter().filter(|l| l.contains("Cannot register")).count();
    assert_eq!(complaints(&server.process), 1, "one line per change of state: {:#?}", server.process.log());
    let registry = Registry::start_at(&api, &[]);
    registry.wait_for("early", Status::Passing, GENEROUS);
    server.process.wait_for_line("Registered early with the registry at", GENEROUS);
    assert_eq!(complaints(&server.process), 1);
}

#[test]
fn sigterm_deregisters_at_once_and_exits_zero() {
    let registry = Registry::start(&[]);
    let mut server = Server::start(registry.api, "leaver", "10s", &[]);
    registry.wait_for("leaver", Status::Passing, GENEROUS);
    let t0 = Instant::now();
    server.process.signal("TERM");
    let status = server.process.wait_exit(GENEROUS).expect("exits");
    // Checked right after exit: with a 100ms check interval and 1s removal, a health check
    // could not have removed it yet; only the deregistration can.
    let gone = registry.endpoint("leaver").is_none();
    eprintln!("SIGTERM to exit: {:?}", t0.elapsed());
    assert!(status.success(), "exit status {status:?}");
    assert!(gone, "still listed: {:?}", registry.endpoints());
    let log = registry.process.log();
    assert!(log.iter().any(|l| l.contains("Deregistered leaver")), "{log:#?}");
    assert!(!log.iter().any(|l| l.contains("leaver") && l.contains("critical")), "{log:#?}");
}

#[test]
fn kubernetes_environment_alone_registers_pod_name_at_host_ip() {
    let registry = Registry::start(&[]);
    let envs = [
        ("SERVICE_REGISTRY_SERVICE_HOST", registry.api.ip().to_string()),
        ("SERVICE_REGISTRY_SERVICE_PORT", registry.api.port().to_string()),
        ("POD_NAME", "dynamic-port-server-507527175-5bphp".to_string()),
        ("HOST_IP", "127.0.0.1".to_string()),
    ];
    let server = Server::from_process(Process::start("dynamic-port-server", &[], &envs));
    let record = registry.wait_for("dynamic-port-server-507527175-5bphp", Status::Passing, GENEROUS);
    assert_eq!(record.address, format!("127.0.0.1:{}", server.port));
}

#[test]
fn the_port_range_is_honoured_and_a_full_range_is_fatal() {
    let registry = Registry::start(&[]);
    // A range of ten ports starting at a free one, below the ephemeral range: very likely free.
    let low = free_port().min(65525);
    let range = format!("-port-range={low}-{}", low + 9);
    let server = Server::start(registry.api, "ranged", "10s", &[&range]);
    assert!((low..=low + 9).contains(&server.port), "{} outside {range}", server.port);
    registry.wait_for("ranged", Status::Passing, GENEROUS);

    // A range of one port, held by the first server: fatal, exit 1, one clear line.
    let full = format!("-port-range={0}-{0}", server.port);
    let mut second = Process::start(
        "dynamic-port-server",
        &[format!("-service-registry={}", registry.api), "-advertised-ip=127.0.0.1".into(), full],
        &[],
    );
    let status = second.wait_exit(GENEROUS).expect("exits");
    assert_eq!(status.code(), Some(1));
    second.wait_for_line("no free port in -port-range", GENEROUS);
}

#[test]
fn bad_flags_and_ranges_exit_2_with_one_line() {
    for args in [
        &["-port-range=9-1"][..],
        &["-port-range=0-10"],
        &["-port-range=banana"],
        &["-bogus"],
        &["-register-instance-external-ip"],
        &["-advertised-ip=not-an-ip"],
        &["-register-interval=5"],
    ] {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut p = Process::start("dynamic-port-server", &args, &[]);
        let status = p.wait_exit(GENEROUS).expect("exits");
        assert_eq!(status.code(), Some(2), "{args:?}");
        let log = eventually(Duration::from_secs(2), || Some(p.log()).filter(|l| !l.is_empty())).unwrap_or_default();
        assert_eq!(log.len(), 1, "{args:?}: {log:?}");
        assert!(log[0].starts_with("dynamic-port-server: ") && log[0].contains("--help"), "{log:?}");
    }
}

#[test]
fn every_request_is_logged_in_the_seeds_access_format() {
    let registry = Registry::start(&[]);
    let server = Server::start(registry.api, "logger", "10s", &[]);
    assert_eq!(get(&format!("http://{}/healthz?probe=1", server.local())).map(|(s, _)| s), Some(200));
    let line = server.process.wait_for_line("Go-http-client/1.1", GENEROUS);
    // 127.0.0.1:34724 - - [Fri, 03 Feb 2017 20:37:38 UTC] "GET /healthz HTTP/1.1" Go-http-client/1.1
    let (remote, rest) = line.split_once(" - - [").expect(&line);
    assert!(remote.starts_with("127.0.0.1:") && remote[10..].parse::<u16>().is_ok(), "{line}");
    let (when, request) = rest.split_once("] ").expect(&line);
    assert_eq!(when.len(), "Fri, 03 Feb 2017 20:37:38 UTC".len(), "{line}");
    assert!(when.ends_with(" UTC") && when.as_bytes()[3] == b',', "{line}");
    assert_eq!(request, "\"GET /healthz HTTP/1.1\" Go-http-client/1.1");
}

#[test]
fn the_healthcheck_subcommand_probes_the_port_in_the_port_file() {
    let registry = Registry::start(&[]);
    let dir = TempDir::new("healthcheck");
    let port_file = dir.path.join("port");
    let server = Server::start(registry.api, "probed", "10s", &[&format!("-port-file={}", port_file.display())]);
    let written = std::fs::read_to_string(&port_file).unwrap();
    assert_eq!(written.trim(), server.port.to_string());
    let check = || {
        let mut p = Process::start(
            "dynamic-port-server",
            &["healthcheck".into(), format!("-port-file={}", port_file.display())],
            &[],
        );
        p.wait_exit(GENEROUS).expect("exits").code()
    };
    assert_eq!(check(), Some(0));
    drop(server);
    assert_eq!(check(), Some(1));
}
