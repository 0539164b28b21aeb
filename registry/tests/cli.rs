//! The `service-registry` command line: help, version, bad flags and fatal errors, as a user
//! sees them.

mod support;

use support::shared;

/// Runs the registry binary with `args`: exit code, stdout, stderr.
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    shared::run(env!("CARGO_BIN_EXE_service-registry"), args)
}

#[test]
fn help_lists_every_flag_with_its_environment_variable() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    for (flag, env) in [
        ("-api=ADDR", "REGISTRY_API"),
        ("-http=ADDR", "REGISTRY_HTTP"),
        ("-check-interval=DURATION", "REGISTRY_CHECK_INTERVAL"),
        ("-check-timeout=DURATION", "REGISTRY_CHECK_TIMEOUT"),
        ("-failures-before-critical=N", "REGISTRY_FAILURES_BEFORE_CRITICAL"),
        ("-deregister-critical-after=DURATION", "REGISTRY_DEREGISTER_CRITICAL_AFTER"),
        ("-max-endpoints=N", "REGISTRY_MAX_ENDPOINTS"),
    ] {
        assert!(out.contains(flag) && out.contains(env), "{flag} / {env} missing from:\n{out}");
    }
    assert_eq!(run(&["-h"]).0, Some(0));
}

#[test]
fn version_prints_the_package_version() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, Some(0));
    assert_eq!(out.trim(), format!("service-registry {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn bad_flags_exit_2_with_one_line_and_a_hint() {
    for args in [
        &["-nope"][..],
        &["-check-interval=5"],
        &["-check-interval=0s"],
        &["--failures-before-critical", "zero"],
        &["-max-endpoints=-1"],
        &["-api"],
        &["stray"],
    ] {
        let (code, out, err) = run(args);
        assert_eq!(code, Some(2), "{args:?}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("service-registry: ") && err.contains("--help"), "{err}");
    }
}

#[test]
fn an_address_in_use_is_fatal_with_exit_1() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let (code, _, err) = run(&[&format!("-api={addr}"), "-http=127.0.0.1:0"]);
    assert_eq!(code, Some(1));
    assert!(err.contains(&format!("cannot listen on {addr} (-api)")), "{err}");
}
