//! Watching the registry: `service-registry watch` and the blocking queries under it
//! (`GET /endpoints?index=N&wait=D`). Loopback only; every process is killed on drop, every
//! wait has a deadline, every thread is joined or left to end with its bounded request.
//!
//! The endpoints registered here point at the registry's own UI listener, whose `/healthz`
//! answers 200, and the registry checks only once per hour after the check every new endpoint
//! gets at once: so once the new endpoints are `passing` nothing changes unless a test changes
//! it, and the watch index holds still.

use end_to_end::{eventually, get_answer, post_json, Answer, Process, Registry, Status};
use serde_json::json;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const GENEROUS: Duration = Duration::from_secs(10);

/// A registry whose watch index moves only when a test changes something.
fn quiet_registry(extra: &[&str]) -> Registry {
    let mut flags = vec!["-check-interval=1h"];
    flags.extend_from_slice(extra);
    Registry::start(&flags)
}

/// Registers `name` (healthy: it points at the registry's own UI listener) and returns the
/// answer's time: when the change is done.
fn register(registry: &Registry, name: &str, tags: &[&str]) -> Instant {
    registry.register_healthy(name, tags);
    Instant::now()
}

fn deregister(registry: &Registry, name: &str) -> Instant {
    let answer =
        post_json(&format!("http://{}/deregister", registry.api), &json!({"Name": name})).expect("registry answers");
    assert_eq!(answer.status, 200, "deregister {name}: {}", answer.body);
    Instant::now()
}

/// Waits until every one of `names` is passing: after that the index holds still.
fn settle(registry: &Registry, names: &[&str]) {
    for name in names {
        registry.wait_for(name, Status::Passing, GENEROUS);
    }
}

fn index_of(answer: &Answer) -> u64 {
    answer
        .header("X-Registry-Index")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no X-Registry-Index in {:?}", answer.headers))
}

/// `GET /endpoints` at once: the answer and its index.
fn listing(registry: &Registry) -> (Answer, u64) {
    let answer = get_answer(&format!("http://{}/endpoints", registry.api), Duration::from_secs(2)).expect("listing");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let index = index_of(&answer);
    (answer, index)
}

/// Waits until exactly `n` blocking queries are parked in the registry.
fn wait_for_watchers(registry: &Registry, n: u64) {
    eventually(GENEROUS, || (registry.watchers() == Some(n)).then_some(()))
        .unwrap_or_else(|| panic!("never {n} watchers; now {:?}", registry.watchers()));
}

/// A blocking query on another thread: the answer and the moment it came back.
fn blocking_get(url: String) -> mpsc::Receiver<(Instant, Option<Answer>)> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let answer = get_answer(&url, Duration::from_secs(15));
        let _ = tx.send((Instant::now(), answer));
    });
    rx
}

/// One table printed by `service-registry watch`.
#[derive(Debug)]
struct Table {
    index: u64,
    summary: String,
    /// NAME, ADDRESS, STATUS, TAGS, LAST CHECK / ERROR of each row.
    rows: Vec<[String; 5]>,
}

impl Table {
    fn names(&self) -> Vec<&str> {
        self.rows.iter().map(|r| r[0].as_str()).collect()
    }

    fn row(&self, name: &str) -> Option<&[String; 5]> {
        self.rows.iter().find(|r| r[0] == name)
    }
}

/// `2017/02/03 20:37:38 index 7: 2 endpoints (...)`: the index, or `None` for another line.
fn summary_index(line: &str) -> Option<u64> {
    let (stamp, rest) = (line.get(..19)?, line.get(19..)?);
    let shape_ok = stamp.char_indices().all(|(i, c)| match i {
        4 | 7 => c == '/',
        10 => c == ' ',
        13 | 16 => c == ':',
        _ => c.is_ascii_digit(),
    });
    let (index, after) = rest.strip_prefix(" index ")?.split_once(": ")?;
    (shape_ok && after.contains(" endpoints (")).then(|| index.parse().ok()).flatten()
}

/// Every complete table (ended by its blank line) in `lines`, in order. The log holds stderr
/// too, read on another thread: watch's own notes (`service-registry watch: ...`) can land
/// anywhere between a table's lines, so they are set aside first, as is the warm-up line.
fn tables(lines: &[String]) -> Vec<Table> {
    let note = |l: &String| l.starts_with("service-registry watch:") || l.starts_with("warming up (");
    let lines: Vec<String> = lines.iter().filter(|l| !note(l)).cloned().collect();
    let lines = &lines[..];
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(index) = summary_index(&lines[i]) else {
            i += 1;
            continue;
        };
        let Some(header) = lines.get(i + 1).filter(|h| h.starts_with("NAME ")) else {
            i += 1;
            continue;
        };
        // Columns are aligned under the header's words.
        let starts: Vec<usize> = ["NAME", "ADDRESS", "STATUS", "TAGS", "LAST CHECK"]
            .iter()
            .map(|w| header.find(w).unwrap_or_else(|| panic!("no {w} in {header:?}")))
            .collect();
        let mut rows = Vec::new();
        let mut end = None;
        for (j, line) in lines.iter().enumerate().skip(i + 2) {
            if line.is_empty() {
                end = Some(j);
                break;
            }
            let cell = |k: usize| {
                let from = starts[k].min(line.len());
                let to = starts.get(k + 1).copied().unwrap_or(line.len()).clamp(from, line.len());
                line[from..to].trim().to_string()
            };
            rows.push([cell(0), cell(1), cell(2), cell(3), cell(4)]);
        }
        let Some(end) = end else { break };
        found.push(Table { index, summary: lines[i].clone(), rows });
        i = end + 1;
    }
    found
}

/// The log of `watch` as tables.
fn printed(watch: &Process) -> Vec<Table> {
    tables(&watch.log())
}

/// Waits for a table after the first `after` ones that satisfies `want`.
fn wait_for_table(watch: &Process, after: usize, timeout: Duration, want: impl Fn(&Table) -> bool) -> (Instant, Table) {
    eventually(timeout, || {
        let seen = Instant::now();
        printed(watch).into_iter().skip(after).find(&want).map(|t| (seen, t))
    })
    .unwrap_or_else(|| panic!("watch printed no such table; its output:\n{}", watch.log().join("\n")))
}

fn watch_once(registry_addr: &str, extra: &[&str]) -> Vec<Table> {
    let mut args = vec!["watch".to_string(), format!("-registry={registry_addr}"), "-once".to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut watch = Process::start("service-registry", &args, &[]);
    let status = watch.wait_exit(GENEROUS).expect("watch -once exits");
    assert!(status.success(), "watch -once: {status:?}\n{}", watch.log().join("\n"));
    // The output is read on another thread: give it a moment to arrive in full.
    eventually(Duration::from_secs(2), || Some(printed(&watch)).filter(|t| !t.is_empty()))
        .unwrap_or_else(|| panic!("watch -once printed no table:\n{}", watch.log().join("\n")))
}

#[test]
fn watch_once_prints_the_table_of_a_registry_with_two_endpoints() {
    let registry = quiet_registry(&[]);
    register(&registry, "alpha", &["web", "eu"]);
    register(&registry, "beta", &["db"]);
    settle(&registry, &["alpha", "beta"]);
    let (_, index) = listing(&registry);

    let printed = watch_once(&registry.api.to_string(), &[]);
    assert_eq!(printed.len(), 1, "{printed:#?}");
    let table = &printed[0];
    assert_eq!(table.index, index, "{table:?}");
    assert!(table.summary.ends_with(": 2 endpoints (2 passing, 0 pending, 0 critical)"), "{}", table.summary);
    assert_eq!(table.names(), ["alpha", "beta"]);
    let ui = registry.ui.to_string();
    let alpha = table.row("alpha").unwrap();
    assert_eq!([&alpha[1], &alpha[2], &alpha[3]], [&ui, "passing", "web,eu"]);
    assert!(alpha[4].ends_with('Z') && alpha[4].contains('T'), "last check is a UTC time: {alpha:?}");
    let beta = table.row("beta").unwrap();
    assert_eq!([&beta[1], &beta[2], &beta[3]], [&ui, "passing", "db"]);

    // Filters, on the read-only UI listener this time.
    let web = watch_once(&registry.ui.to_string(), &["-tag=web"]);
    assert_eq!(web[0].names(), ["alpha"], "{web:#?}");
    assert!(web[0].summary.ends_with(": 1 endpoints (1 passing, 0 pending, 0 critical)"), "{}", web[0].summary);
    let critical = watch_once(&registry.api.to_string(), &["-status=critical"]);
    assert!(critical[0].rows.is_empty(), "{critical:#?}");
}

#[test]
fn a_running_watch_prints_a_new_table_within_a_second_of_each_change() {
    let registry = quiet_registry(&[]);
    register(&registry, "first", &["web"]);
    settle(&registry, &["first"]);
    let watch = Process::start("service-registry", &["watch".into(), format!("-registry={}", registry.api)], &[]);
    wait_for_table(&watch, 0, GENEROUS, |t| t.names() == ["first"]);

    // A registration: a table with the new row.
    let before = printed(&watch).len();
    let t0 = Instant::now();
    register(&registry, "second", &["web"]);
    let (seen, table) = wait_for_table(&watch, before, Duration::from_secs(3), |t| t.row("second").is_some());
    let took = seen - t0;
    eprintln!("watch printed the registration after {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(table.names(), ["first", "second"]);

    // Its first check makes it passing: another table. Wait for it, so that what follows is
    // about the deregistration alone.
    settle(&registry, &["second"]);
    wait_for_table(&watch, before, GENEROUS, |t| t.row("second").is_some_and(|r| r[2] == "passing"));
    let before = printed(&watch).len();
    let t0 = Instant::now();
    deregister(&registry, "second");
    let (seen, table) = wait_for_table(&watch, before, Duration::from_secs(3), |_| true);
    let took = seen - t0;
    eprintln!("watch printed the deregistration after {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(table.names(), ["first"], "{table:?}");
    assert_eq!(table.index, listing(&registry).1, "the table shows the registry's current index");
}

#[test]
fn a_blocking_query_below_the_current_index_answers_at_once() {
    let registry = quiet_registry(&[]);
    register(&registry, "a", &[]);
    settle(&registry, &["a"]);
    let (_, index) = listing(&registry);
    assert!(index > 1, "the index moved from 1 with the registration: {index}");
    for seen in [0, index - 1] {
        let t0 = Instant::now();
        let url = format!("http://{}/endpoints?index={seen}&wait=5s", registry.api);
        let answer = get_answer(&url, GENEROUS).expect("answer");
        let took = t0.elapsed();
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(index_of(&answer), index);
        assert!(took < Duration::from_millis(500), "index={seen} took {took:?}");
    }
    // Every blocking read carries the index, on both listeners.
    for url in [
        format!("http://{}/endpoints/a?index=0", registry.api),
        format!("http://{}/endpoints?index=0", registry.ui),
        format!("http://{}/?index=0", registry.ui),
        format!("http://{}/endpoints/a", registry.ui),
    ] {
        let answer = get_answer(&url, GENEROUS).expect("answer");
        assert_eq!((answer.status, index_of(&answer)), (200, index), "{url}");
    }
}

#[test]
fn a_blocking_query_at_the_current_index_waits_and_answers_promptly_after_a_change() {
    let registry = quiet_registry(&[]);
    register(&registry, "a", &[]);
    settle(&registry, &["a"]);
    let (_, index) = listing(&registry);
    let waiter = blocking_get(format!("http://{}/endpoints?index={index}&wait=5s", registry.api));
    assert!(waiter.recv_timeout(Duration::from_millis(500)).is_err(), "answered though nothing changed");
    wait_for_watchers(&registry, 1);

    let changed = register(&registry, "b", &[]);
    let (returned, answer) = waiter.recv_timeout(GENEROUS).expect("the waiter answers");
    let answer = answer.expect("an answer");
    let after = returned.saturating_duration_since(changed);
    eprintln!("blocking query answered {after:?} after the change was done");
    assert!(after < Duration::from_millis(100), "took {after:?}");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(index_of(&answer) > index, "{:?}", answer.headers);
    let names: Vec<String> = answer.json().as_array().unwrap().iter().map(|e| e["Name"].to_string()).collect();
    assert_eq!(names, ["\"a\"", "\"b\""]);
    wait_for_watchers(&registry, 0);
}

#[test]
fn a_blocking_query_with_no_change_answers_after_its_wait_with_the_same_index() {
    let registry = quiet_registry(&[]);
    register(&registry, "a", &[]);
    settle(&registry, &["a"]);
    let (listed, index) = listing(&registry);
    let t0 = Instant::now();
    let answer = get_answer(&format!("http://{}/endpoints?index={index}&wait=200ms", registry.api), GENEROUS)
        .expect("an answer");
    let took = t0.elapsed();
    eprintln!("wait=200ms answered after {took:?}");
    assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(answer.status, 200);
    assert_eq!(index_of(&answer), index);
    assert_eq!(answer.body, listed.body);
}

#[test]
fn past_the_watcher_cap_a_blocking_query_gets_429_with_a_json_error() {
    let registry = quiet_registry(&["-max-watchers=2"]);
    let (_, index) = listing(&registry);
    let url = format!("http://{}/endpoints?index={index}&wait=5s", registry.api);
    let first = blocking_get(url.clone());
    let second = blocking_get(url.clone());
    wait_for_watchers(&registry, 2);

    let t0 = Instant::now();
    let third = get_answer(&url, GENEROUS).expect("an answer");
    assert!(t0.elapsed() < Duration::from_secs(1), "the refusal is immediate: {:?}", t0.elapsed());
    assert_eq!(third.status, 429, "{}", third.body);
    let error = third.json()["error"].as_str().map(str::to_string).unwrap_or_default();
    assert!(error.contains("blocking queries"), "{error:?}");
    assert!(third.header("Content-Type").is_some_and(|t| t.starts_with("application/json")), "{:?}", third.headers);
    // A read without index= is still served.
    assert_eq!(listing(&registry).0.status, 200);

    // A change releases both waiters.
    register(&registry, "a", &[]);
    for waiter in [first, second] {
        let (_, answer) = waiter.recv_timeout(GENEROUS).expect("released");
        assert_eq!(answer.expect("an answer").status, 200);
    }
    wait_for_watchers(&registry, 0);
    // Below the cap again.
    let (_, index) = listing(&registry);
    let below = format!("http://{}/endpoints?index={}&wait=5s", registry.api, index - 1);
    let answer = get_answer(&below, GENEROUS).expect("an answer");
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[test]
fn a_malformed_index_or_wait_is_a_400_with_a_json_error() {
    let registry = quiet_registry(&[]);
    for query in ["index=abc", "index=-1", "index=1&wait=5", "index=1&wait=soon"] {
        for url in [
            format!("http://{}/endpoints?{query}", registry.api),
            format!("http://{}/endpoints?{query}", registry.ui),
            format!("http://{}/?{query}", registry.ui),
        ] {
            let t0 = Instant::now();
            let answer = get_answer(&url, GENEROUS).expect("an answer");
            assert_eq!(answer.status, 400, "{url}: {}", answer.body);
            assert!(answer.json()["error"].as_str().is_some_and(|e| !e.is_empty()), "{url}: {}", answer.body);
            assert!(t0.elapsed() < Duration::from_secs(1), "{url} waited");
        }
    }
}

/// The figure for the note: how long after a change a waiting client sees it.
#[test]
fn change_to_watcher_latency_over_100_changes() {
    const CHANGES: usize = 100;
    let registry = quiet_registry(&[]);
    let mut took = Vec::with_capacity(CHANGES);
    // From the POST's answer instead: the wake-up alone, without the write's own round trip.
    let mut after_write = Vec::with_capacity(CHANGES);
    let started = Instant::now();
    for i in 0..CHANGES {
        let (_, index) = listing(&registry);
        let waiter = blocking_get(format!("http://{}/endpoints?index={index}&wait=5s", registry.api));
        // Measure a parked query, not one that raced the change.
        wait_for_watchers(&registry, 1);
        let name = format!("change-{i:03}");
        let t0 = Instant::now();
        let done = register(&registry, &name, &["latency"]);
        let (returned, answer) = waiter.recv_timeout(GENEROUS).expect("the waiter answers");
        took.push(returned - t0);
        after_write.push(returned.saturating_duration_since(done));
        let answer = answer.expect("an answer");
        assert_eq!(answer.status, 200);
        assert!(index_of(&answer) > index);
        assert!(answer.body.contains(&format!("\"{name}\"")), "{name} not in the answer");
        // Its first check changes the index again: let that pass before the next round.
        settle(&registry, &[&name]);
        wait_for_watchers(&registry, 0);
        assert!(started.elapsed() < Duration::from_secs(120), "100 changes took too long");
    }
    took.sort();
    after_write.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (median, p90, max) = (took[CHANGES / 2], took[CHANGES * 9 / 10], took[CHANGES - 1]);
    eprintln!(
        "change-to-watcher median: {:.1} ms, p90 {:.1} ms (min {:.1} ms, max {:.1} ms, {CHANGES} changes)",
        ms(median),
        ms(p90),
        ms(took[0]),
        ms(max)
    );
    eprintln!(
        "from the POST's answer: median {:.2} ms, p90 {:.2} ms",
        ms(after_write[CHANGES / 2]),
        ms(after_write[CHANGES * 9 / 10])
    );
    assert!(median < Duration::from_millis(50), "median {median:?}");
}

/// "Prints the table whenever the listing changes": the registry's index is global, so the
/// watch must not take a moved index alone for a changed listing.
#[test]
fn a_filtered_watch_prints_only_when_its_own_listing_changes() {
    let registry = quiet_registry(&[]);
    register(&registry, "web-1", &["web"]);
    settle(&registry, &["web-1"]);
    let args = ["watch".to_string(), format!("-registry={}", registry.api), "-tag=web".to_string()];
    let watch = Process::start("service-registry", &args, &[]);
    wait_for_table(&watch, 0, GENEROUS, |t| t.names() == ["web-1"]);

    // A change to an endpoint the filter leaves out moves the registry's index, but not what
    // this watch lists: no new table.
    let before = printed(&watch).len();
    register(&registry, "db-1", &["db"]);
    settle(&registry, &["db-1"]);
    std::thread::sleep(Duration::from_millis(500));
    let extra: Vec<Table> = printed(&watch).into_iter().skip(before).collect();
    assert!(extra.is_empty(), "watch -tag=web printed again for a db endpoint: {extra:#?}");

    // A change to one it lists does.
    register(&registry, "web-2", &["web"]);
    wait_for_table(&watch, before, Duration::from_secs(3), |t| t.names() == ["web-1", "web-2"]);
}

/// A restarted registry counts its index from 1 again: a watch holding the old run's index
/// must not wait out a whole blocking query before it shows the new listing.
#[test]
fn a_running_watch_follows_a_restarted_registry_at_once() {
    let registry = quiet_registry(&[]);
    let api = registry.api;
    // Move the index well past where a fresh registry starts.
    for i in 0..5 {
        register(&registry, &format!("old-{i}"), &[]);
    }
    settle(&registry, &["old-0", "old-1", "old-2", "old-3", "old-4"]);
    let old_index = listing(&registry).1;
    let watch = Process::start("service-registry", &["watch".into(), format!("-registry={api}")], &[]);
    // At or past: a first check landing after `listing` may move the index once more.
    wait_for_table(&watch, 0, GENEROUS, |t| t.index >= old_index && t.names().len() == 5);

    registry.process.signal("KILL");
    drop(registry);
    let restarted = Registry::start_at(&api.to_string(), &["-check-interval=1h"]);
    let before = printed(&watch).len();
    let t0 = Instant::now();
    register(&restarted, "new-0", &[]);
    let new_index = listing(&restarted).1;
    assert!(new_index < old_index, "a fresh registry counts from 1 again: {new_index} vs {old_index}");
    // The watch reconnects with backoff (250 ms, then more); it must not then wait out a whole
    // blocking query (5 minutes) for an index the new registry will not reach for a long time.
    let (seen, table) = wait_for_table(&watch, before, GENEROUS, |t| t.row("new-0").is_some());
    eprintln!("watch showed the restarted registry after {:?}", seen - t0);
    assert!(seen - t0 < Duration::from_secs(5), "took {:?}", seen - t0);
    assert!(table.row("old-0").is_none(), "{table:?}");
}
