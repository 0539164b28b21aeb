//! A registry that dies hard comes back whole: 50 real dynamic-port-server processes, the real
//! registry killed with SIGKILL and restarted on the same API port. Its state is soft and in
//! memory, so everything it knows afterwards comes from the servers' periodic re-registration.
//! Loopback only; every process is killed and reaped on drop, on every path.

use end_to_end::{eventually, Registry, Server, Status};
use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

const SERVERS: usize = 50;

/// The servers' `-register-interval`.
const INTERVAL: Duration = Duration::from_secs(1);

/// Room on top of one register interval, counted from the kill. Each server renews at most one
/// interval after its last renewal, so within one interval of the kill (sooner if a renewal
/// that failed while the registry was down is retried with its 100 ms first backoff); the
/// restarted registry listens within tens of milliseconds and probes a new endpoint at once,
/// which takes about a millisecond on loopback. What is left is scheduling: 51 processes, 50
/// renewals, 50 probes and the test's own polling (every 20 ms) on two cores. Measured here:
/// all 50 listed and passing about 1.0 s after the kill.
const MARGIN: Duration = Duration::from_millis(500);

/// Starts the servers from a few threads at once: each start waits for the server's
/// `Listening on` line, and 50 of those one after the other would take seconds.
fn start_servers(registry: &Registry) -> Vec<Server> {
    let api = registry.api;
    let starters: Vec<_> = (0..5)
        .map(|t| {
            thread::spawn(move || {
                (t * SERVERS / 5..(t + 1) * SERVERS / 5)
                    .map(|i| Server::start(api, &format!("restart-{i:02}"), "1s", &[]))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    starters.into_iter().flat_map(|s| s.join().expect("servers start")).collect()
}

#[test]
fn fifty_servers_are_back_and_passing_within_one_register_interval_after_a_sigkill() {
    let registry = Registry::start(&[]);
    let api = registry.api;
    let servers = start_servers(&registry);
    let all_passing = |r: &Registry| {
        r.endpoints().filter(|list| list.len() == SERVERS && list.iter().all(|e| e.status == Status::Passing))
    };
    eventually(Duration::from_secs(15), || all_passing(&registry))
        .unwrap_or_else(|| panic!("the 50 never all passed: {:?}", registry.endpoints()));

    // Both windows are measured from the kill and share one deadline: the restarted registry
    // has one register interval (plus the margin) from the kill to list all 50 and see them
    // pass, however long its own start took.
    let killed = Instant::now();
    registry.process.signal("KILL");
    drop(registry);
    let restarted = Registry::start_at(&api.to_string(), &[]);
    let deadline = killed + INTERVAL + MARGIN;
    let left = || deadline.saturating_duration_since(Instant::now());
    let listed = eventually(left(), || restarted.endpoints().filter(|l| l.len() >= SERVERS).map(|_| killed.elapsed()));
    let passing = eventually(left(), || all_passing(&restarted).map(|_| killed.elapsed()));
    eprintln!("after the kill: all listed in {listed:?}, all passing in {passing:?}");
    let records = restarted.endpoints().unwrap_or_default();
    let count = |status| records.iter().filter(|e| e.status == status).count();
    let within = INTERVAL + MARGIN;
    assert!(
        listed.is_some(),
        "not all 50 back within {within:?} of the kill: {} listed, {} passing",
        records.len(),
        count(Status::Passing)
    );
    assert!(
        passing.is_some(),
        "not all 50 passing within {within:?} of the kill: {} listed, {} passing",
        records.len(),
        count(Status::Passing)
    );

    // None duplicated, each at its own server's address; still so after more renewals.
    thread::sleep(INTERVAL + Duration::from_millis(200));
    let records = restarted.endpoints().expect("the registry answers");
    let names: BTreeSet<&str> = records.iter().map(|e| e.name.as_str()).collect();
    let addresses: BTreeSet<&str> = records.iter().map(|e| e.address.as_str()).collect();
    assert_eq!((records.len(), names.len(), addresses.len()), (SERVERS, SERVERS, SERVERS), "{records:#?}");
    for (i, server) in servers.iter().enumerate() {
        let record = records.iter().find(|e| e.name == format!("restart-{i:02}")).expect("listed");
        assert_eq!(record.address, format!("127.0.0.1:{}", server.port));
        assert_eq!(record.status, Status::Passing, "{record:?}");
    }
}
