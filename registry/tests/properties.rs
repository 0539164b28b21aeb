//! Properties, checked on generated input (proptest), with bounded case counts so the file runs
//! in a few seconds:
//!
//! - parsing and validation never panic, whatever bytes or strings they are given (request
//!   bodies, URLs, query strings, durations, CIDR ranges, command lines), and validation accepts
//!   exactly the Names, Addresses and Tags that the rules written out below (`name_allowed`,
//!   `address_allowed`, `tags_allowed`) allow;
//! - the store, driven by random sequences of register / deregister / check results at random
//!   times, always agrees with a small model written from the contract: one record per Name,
//!   listings sorted, statuses moving as specified, removal only after being critical for
//!   `deregister_critical_after`, and a watch index that never goes back and moves with every
//!   change a watcher can see.

use common::flags::{self, Command, Flag};
use common::probe::Outcome;
use common::validate::{self, Valid, MAX_NAME_BYTES};
use common::wire::{Deregistration, Endpoint, Registration, Status};
use common::{clock, duration};
use proptest::prelude::*;
use service_registry::{
    Applied, Change, CheckJob, Cidr, Filter, GuardConfig, ProbePolicy, Store, StoreError, Thresholds,
};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------------
// Parsing and validation never panic, and validate what the contract says.
// ---------------------------------------------------------------------------------------------

/// Bytes that look like JSON often enough to get past the first character: structural tokens,
/// the registration's keys in several casings, strings, numbers, escapes and stray bytes.
fn json_ish() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"{".to_vec()),
        Just(b"}".to_vec()),
        Just(b"[".to_vec()),
        Just(b"]".to_vec()),
        Just(b":".to_vec()),
        Just(b",".to_vec()),
        Just(b"\"Name\"".to_vec()),
        Just(b"\"address\"".to_vec()),
        Just(b"\"TAGS\"".to_vec()),
        Just(b"null".to_vec()),
        Just(b"true".to_vec()),
        Just(b"\"\\u0000\"".to_vec()),
        Just(b"\"\\ud800\"".to_vec()),
        "\"[a-z0-9.:/%\\[\\] -]{0,12}\"".prop_map(String::into_bytes),
        "-?[0-9]{1,25}(\\.[0-9]{1,5})?([eE][+-]?[0-9]{1,4})?".prop_map(String::into_bytes),
        any::<u8>().prop_map(|b| vec![b]),
    ];
    prop::collection::vec(token, 0..32).prop_map(|tokens| tokens.concat())
}

/// What the contract allows as a Name, written independently of `validate`.
fn name_allowed(name: &str) -> bool {
    (1..=MAX_NAME_BYTES).contains(&name.len())
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// What the contract allows as an Address: `IP:PORT`, port 1-65535, an IP a check can reach.
fn address_allowed(address: &str) -> bool {
    address.parse::<SocketAddr>().is_ok_and(|a| {
        let ip = a.ip();
        a.port() != 0 && !ip.is_unspecified() && !ip.is_multicast() && ip != IpAddr::from([255, 255, 255, 255])
    })
}

/// At most 64 tags, each 1 to 255 bytes without control characters.
fn tags_allowed(tags: &[String]) -> bool {
    tags.len() <= 64 && tags.iter().all(|t| (1..=255).contains(&t.len()) && !t.chars().any(char::is_control))
}

fn names() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9._-]{0,12}",
        "[A-Za-z0-9._/%-]{1,12}",
        ".{0,12}",
        Just(".".to_string()),
        Just("..".to_string()),
        Just("a".repeat(253)),
        Just("a".repeat(254)),
    ]
}

fn addresses() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<SocketAddr>().prop_map(|a| a.to_string()),
        "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}:[0-9]{1,6}",
        "\\[[0-9a-f:]{2,12}\\]:[0-9]{1,5}",
        ".{0,30}",
    ]
}

fn tag_lists() -> impl Strategy<Value = Vec<String>> {
    let tag = prop_oneof![8 => "[a-z]{1,6}", 1 => "", 1 => ".{1,4}", 1 => "[a-z]{254,256}"];
    prop_oneof![
        4 => prop::collection::vec(tag, 0..4),
        1 => prop::collection::vec("[a-z]{1,3}", 63..66),
    ]
}

/// Percent-encodes every byte, so that decoding must give back exactly `text`.
/// A spec like the registry's own: values, a repeatable value, a switch.
const SPEC: &[Flag] = &[
    Flag { name: "api", env: "T_API", value: "ADDR", default: "", help: "" },
    Flag { name: "check-interval", env: "T_INTERVAL", value: "DURATION", default: "", help: "" },
    Flag { name: "allow-cidr", env: "T_ALLOW", value: "CIDR", default: "", help: "" },
    Flag { name: "verbose", env: "", value: "", default: "", help: "" },
];

fn args() -> impl Strategy<Value = Vec<String>> {
    let arg = prop_oneof![
        Just("-api".to_string()),
        Just("--api".to_string()),
        Just("-check-interval=1s".to_string()),
        Just("--allow-cidr".to_string()),
        Just("-verbose".to_string()),
        Just("--".to_string()),
        Just("-".to_string()),
        Just("=".to_string()),
        "-{0,3}[a-z-]{0,12}(=.{0,8})?",
        ".{0,12}",
    ];
    prop::collection::vec(arg, 0..8)
}

/// The units of Go durations, in nanoseconds.
const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn bodies_of_arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(registration) = serde_json::from_slice::<Registration>(&body) {
            let _ = validate::registration(registration);
        }
        if let Ok(deregistration) = serde_json::from_slice::<Deregistration>(&body) {
            let _ = validate::name(&deregistration.name);
        }
    }

    #[test]
    fn json_ish_bodies_never_panic(body in json_ish()) {
        if let Ok(registration) = serde_json::from_slice::<Registration>(&body) {
            let _ = validate::registration(registration);
        }
        if let Ok(deregistration) = serde_json::from_slice::<Deregistration>(&body) {
            let _ = validate::name(&deregistration.name);
        }
    }

    #[test]
    fn validation_accepts_exactly_what_the_contract_allows(
        name in names(),
        address in addresses(),
        tags in tag_lists(),
        casing in 0usize..3,
    ) {
        let keys = [["Name", "Address", "Tags"], ["name", "address", "tags"], ["NAME", "aDDRESS", "tAgS"]][casing];
        let body = serde_json::json!({keys[0]: name, keys[1]: address, keys[2]: tags, "Extra": {"x": [1, null]}});
        let decoded: Registration = serde_json::from_slice(body.to_string().as_bytes())
            .map_err(|e| TestCaseError::fail(format!("a well-formed body failed to decode: {e}")))?;
        prop_assert_eq!(&decoded, &Registration { name: name.clone(), address: address.clone(), tags: tags.clone(), ttl: None });
        let allowed = name_allowed(&name) && address_allowed(&address) && tags_allowed(&tags);
        match validate::registration(decoded) {
            Ok(valid) => {
                prop_assert!(allowed, "accepted {valid:?}");
                prop_assert_eq!(valid.address, address.parse::<SocketAddr>().expect("allowed means it parses"));
                prop_assert_eq!((valid.name, valid.tags), (name, tags));
            }
            Err(why) => {
                prop_assert!(!allowed, "refused an allowed registration: {why}");
                prop_assert!(!why.is_empty() && why.len() < 400, "the sentence stays short: {} bytes", why.len());
            }
        }
    }

    #[test]
    fn durations_never_panic(text in ".{0,30}", number in "[0-9]{1,40}(\\.[0-9]{0,25})?", unit in 0usize..8) {
        let _ = duration::parse(&text);
        let _ = duration::parse(&format!("{number}{}", UNITS[unit].0));
        let _ = duration::parse(&format!("{number}{}{number}{}", UNITS[unit].0, UNITS[(unit + 3) % 8].0));
    }

    #[test]
    fn durations_near_the_limit_never_panic(unit in 0usize..8, below in 0u128..3, fraction in "[0-9]{1,25}") {
        // The largest whole numbers of each unit that still fit in u128 nanoseconds, with a
        // fraction on top: the sum is where an unchecked addition would overflow.
        let (name, nanos) = UNITS[unit];
        let whole = u128::MAX / nanos - below;
        let _ = duration::parse(&format!("{whole}.{fraction}{name}"));
    }

    #[test]
    fn durations_round_trip_through_go_notation(secs in 0u64..3_600_000, nanos in 0u32..1_000_000_000) {
        let d = Duration::new(secs, nanos);
        prop_assert_eq!(duration::parse(&duration::format(d)), Ok(d), "{}", duration::format(d));
    }

    #[test]
    fn cidrs_and_the_probe_policy_never_panic(
        text in "[0-9a-f.:]{0,20}(/[0-9]{0,4})?",
        junk in ".{0,20}",
        ip in any::<IpAddr>(),
    ) {
        let _ = junk.parse::<Cidr>();
        if let Ok(cidr) = text.parse::<Cidr>() {
            let _ = cidr.contains(ip);
            let _ = ProbePolicy { allow: vec![cidr] }.check(ip);
        }
        let _ = ProbePolicy::default().check(ip);
    }

    #[test]
    fn command_lines_never_panic(args in args(), env in prop::option::of(".{0,12}")) {
        let env = move |key: &str| (key == "T_ALLOW" || key == "T_INTERVAL").then(|| env.clone()).flatten();
        if let Ok(Command::Run(values)) = flags::parse(SPEC, args, env, 1) {
            let _ = values.get("api");
            let _ = values.get_all("allow-cidr");
            let _ = values.is_set("verbose");
            let _ = values.parse_with("check-interval", Duration::ZERO, duration::parse);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The store against a model.
// ---------------------------------------------------------------------------------------------

const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
/// The store's cap in these runs: smaller than the names, so "full" happens.
const CAP: usize = 4;
const TAG_SETS: [&[&str]; 4] = [&[], &["web"], &["web", "eu"], &["db"]];
const REMOVE_AFTER: Duration = Duration::from_secs(1);

fn address(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1 + i as u8], 8080))
}

#[derive(Debug, Clone)]
enum Op {
    Register {
        name: usize,
        address: usize,
        tags: usize,
    },
    Deregister {
        name: usize,
    },
    /// A result for one of the jobs handed out so far (old ones included, which must be stale),
    /// at `at` milliseconds after the start: times are random, not sorted, as results of
    /// concurrent workers may be.
    Check {
        job: usize,
        pass: bool,
        at: u64,
    },
    List {
        status: Option<usize>,
        tag: Option<usize>,
    },
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        3 => (0..NAMES.len(), 0usize..3, 0..TAG_SETS.len()).prop_map(|(name, address, tags)| Op::Register { name, address, tags }),
        1 => (0..NAMES.len()).prop_map(|name| Op::Deregister { name }),
        6 => (any::<usize>(), any::<bool>(), 0u64..4_000).prop_map(|(job, pass, at)| Op::Check { job, pass, at }),
        1 => (prop::option::of(0usize..3), prop::option::of(0..3usize)).prop_map(|(status, tag)| Op::List { status, tag }),
    ];
    prop::collection::vec(op, 1..80)
}

/// One record as the contract describes it.
#[derive(Debug, Clone)]
struct Modelled {
    record: Endpoint,
    job: CheckJob,
    critical_since: Option<Instant>,
}

/// The health rules, written independently of `health`: one pass makes any endpoint passing; a
/// failure makes a pending or critical endpoint critical, a passing one only at
/// `failures_before_critical` failures in a row; removal counts from the first critical moment.
fn apply(m: &mut Modelled, pass: bool, why: &str, failures_before_critical: u32, now: Instant, wall: SystemTime) {
    let r = &mut m.record;
    if pass {
        (r.status, r.consecutive_failures, r.last_error, m.critical_since) = (Status::Passing, 0, None, None);
    } else {
        r.consecutive_failures += 1;
        r.last_error = Some(why.to_string());
        let critical = match r.status {
            Status::Pending | Status::Critical => true,
            Status::Passing => r.consecutive_failures >= failures_before_critical,
        };
        r.status = if critical { Status::Critical } else { Status::Passing };
        m.critical_since = if critical { m.critical_since.or(Some(now)) } else { None };
    }
    r.last_check = Some(clock::rfc3339(wall));
}

/// What a watcher sees of a listing: everything but `LastCheck`.
fn visible(records: &[Endpoint]) -> Vec<Endpoint> {
    records.iter().map(|e| Endpoint { last_check: None, ..e.clone() }).collect()
}

/// Runs `ops` against a fresh store and the model; `guard` turns the eviction guard on, which
/// may hold a removal the model expects (the record is then kept) but never cause one.
fn run(ops: &[Op], failures_before_critical: u32, guard: bool) -> Result<(), TestCaseError> {
    let thresholds = Thresholds { failures_before_critical, deregister_critical_after: REMOVE_AFTER };
    let guard = GuardConfig {
        share: if guard { 0.5 } else { 0.0 },
        window: Duration::from_millis(100),
        ..GuardConfig::default()
    };
    let store = Store::new(thresholds, CAP, guard);
    let start = Instant::now();
    let epoch = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut model: BTreeMap<String, Modelled> = BTreeMap::new();
    let mut jobs: Vec<CheckJob> = Vec::new();
    let mut index = store.index();
    let mut seen = visible(&store.list(&Filter::default()).records);

    for (step, op) in ops.iter().enumerate() {
        let wall = epoch + Duration::from_millis(step as u64);
        match op {
            Op::Register { name, address: a, tags } => {
                let name = NAMES[*name].to_string();
                let tags: Vec<String> = TAG_SETS[*tags].iter().map(|t| t.to_string()).collect();
                let valid = Valid { name: name.clone(), address: address(*a), tags: tags.clone(), ttl: None };
                let result = store.register(valid, wall);
                match model.get_mut(&name) {
                    Some(m) if m.job.address == address(*a) => {
                        let registered = result.map_err(|e| TestCaseError::fail(format!("renewal refused: {e:?}")))?;
                        m.record.tags = tags;
                        prop_assert_eq!(registered.change, Change::Renewed);
                        prop_assert!(registered.check_now.is_none(), "a renewal is not checked at once");
                        prop_assert_eq!(&registered.record, &m.record, "a renewal keeps the health");
                    }
                    existing => {
                        let moved = existing.is_some();
                        if !moved && model.len() >= CAP {
                            prop_assert_eq!(result.map(|r| r.record), Err(StoreError::Full { limit: CAP }));
                            continue;
                        }
                        let registered = result.map_err(|e| TestCaseError::fail(format!("refused: {e:?}")))?;
                        prop_assert_eq!(&registered.change, if moved { &Change::Moved } else { &Change::Created });
                        let job = registered.check_now.clone().expect("a new or moved endpoint is checked at once");
                        prop_assert_eq!((&job.name, job.address), (&name, address(*a)));
                        prop_assert!(
                            jobs.iter().all(|j| j.generation != job.generation),
                            "generations are never reused"
                        );
                        let record = Endpoint {
                            name: name.clone(),
                            address: address(*a).to_string(),
                            tags,
                            status: Status::Pending,
                            registered_at: clock::rfc3339(wall),
                            last_check: None,
                            last_error: None,
                            consecutive_failures: 0,
                            expires_at: None,
                        };
                        prop_assert_eq!(&registered.record, &record);
                        jobs.push(job.clone());
                        model.insert(name, Modelled { record, job, critical_since: None });
                    }
                }
            }
            Op::Deregister { name } => {
                let removed = store.deregister(NAMES[*name]);
                prop_assert_eq!(removed, model.remove(NAMES[*name]).map(|m| m.record));
            }
            Op::Check { job, pass, at } => {
                if jobs.is_empty() {
                    continue;
                }
                let job = &jobs[job % jobs.len()];
                let now = start + Duration::from_millis(*at);
                let why = format!("refused at step {step}");
                let outcome = if *pass { Outcome::Pass } else { Outcome::Fail(why.clone()) };
                let applied = store.record_check(job, &outcome, now, wall);
                let current = model.get(&job.name).is_some_and(|m| m.job == *job);
                if !current {
                    prop_assert_eq!(applied, Applied::Stale, "a result for {:?} must be dropped", job);
                    continue;
                }
                let m = model.get_mut(&job.name).expect("current");
                let from = m.record.status;
                apply(m, *pass, &why, failures_before_critical.max(1), now, wall);
                let expired =
                    m.critical_since.is_some_and(|since| now.saturating_duration_since(since) >= REMOVE_AFTER);
                match applied {
                    Applied::Removed => {
                        prop_assert!(expired, "removed {} before it was critical for {REMOVE_AFTER:?}", job.name);
                        model.remove(&job.name);
                    }
                    Applied::Recorded { from: f, to } => {
                        prop_assert!(!expired || guard.share > 0.0, "{} was critical long enough to go", job.name);
                        prop_assert_eq!((f, to), (from, m.record.status), "transition of {}", job.name);
                    }
                    Applied::Stale => prop_assert!(false, "a current result was dropped as stale"),
                }
            }
            Op::List { status, tag } => {
                let filter = Filter {
                    status: status.map(|s| Status::ALL[s]),
                    tags: tag.map(|t| vec![["web", "eu", "db"][t].to_string()]).unwrap_or_default(),
                };
                let want: Vec<Endpoint> = model
                    .values()
                    .map(|m| m.record.clone())
                    .filter(|r| {
                        filter.status.is_none_or(|s| r.status == s) && filter.tags.iter().all(|t| r.tags.contains(t))
                    })
                    .collect();
                prop_assert_eq!(store.list(&filter).records, want, "filtered by {:?}", filter);
            }
        }

        // The invariants, after every step.
        let snapshot = store.list(&Filter::default());
        let want: Vec<Endpoint> = model.values().map(|m| m.record.clone()).collect();
        prop_assert_eq!(&snapshot.records, &want, "after step {}: {:?}", step, op);
        prop_assert!(snapshot.records.windows(2).all(|w| w[0].name < w[1].name), "sorted by Name, one record per Name");
        prop_assert_eq!(store.len(), model.len());
        for name in NAMES {
            prop_assert_eq!(store.get(name), model.get(name).map(|m| m.record.clone()));
        }
        for job in &jobs {
            prop_assert_eq!(store.is_current(job), model.get(&job.name).is_some_and(|m| m.job == *job));
        }
        let counts: HashMap<Status, usize> =
            Status::ALL.iter().map(|s| (*s, want.iter().filter(|r| r.status == *s).count())).collect();
        prop_assert_eq!(store.counts().to_vec(), Status::ALL.iter().map(|s| counts[s]).collect::<Vec<_>>());
        prop_assert!(snapshot.index >= index, "the index never goes back");
        let now_visible = visible(&snapshot.records);
        if now_visible != seen {
            prop_assert!(
                snapshot.index > index,
                "a change a watcher can see moved the index, at step {}: {:?}",
                step,
                op
            );
        }
        (index, seen) = (snapshot.index, now_visible);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_store_agrees_with_the_model(ops in ops(), failures_before_critical in 1u32..4) {
        run(&ops, failures_before_critical, false)?;
    }

    #[test]
    fn the_eviction_guard_never_removes_early_nor_changes_a_status(ops in ops(), failures_before_critical in 1u32..4) {
        run(&ops, failures_before_critical, true)?;
    }
}

/// The inputs that once crashed the registry, kept as plain tests.
#[test]
fn a_duration_at_the_edge_of_u128_is_refused_not_a_panic() {
    for (unit, nanos) in UNITS {
        let whole = u128::MAX / nanos;
        let text = format!("{whole}.9999999999999999999{unit}");
        assert!(duration::parse(&text).is_err(), "{text} does not fit in a Duration");
    }
}
