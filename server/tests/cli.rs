//! The `dynamic-port-server` command line: help, version and the retired GCE flag. The rest
//! of its behaviour is tested end to end with the real registry in `tests/`.

// The std-only helpers every crate's tests share; see that file for why it is included by path.
// This binary runs commands and polls nothing.
#[allow(dead_code)]
#[path = "../../tests/src/shared.rs"]
mod shared;

/// Runs the server binary with `args`: exit code, stdout, stderr.
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    shared::run(env!("CARGO_BIN_EXE_dynamic-port-server"), args)
}

#[test]
fn help_lists_the_seeds_flags_and_the_kubernetes_defaults() {
    let (code, out, _) = run(&["-help"]);
    assert_eq!(code, Some(0));
    for text in [
        "-service-registry=HOST:PORT",
        "-service-instance-name=NAME",
        "-advertised-ip=IP",
        "-port-range=LOW-HIGH",
        "-register-interval=DURATION",
        "$SERVICE_REGISTRY_SERVICE_HOST",
        "$POD_NAME",
        "$HOST_IP",
        "DPS_SERVICE_REGISTRY",
        "healthcheck",
    ] {
        assert!(out.contains(text), "{text} missing from:\n{out}");
    }
}

#[test]
fn version_prints_the_package_version() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, Some(0));
    assert_eq!(out.trim(), format!("dynamic-port-server {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn the_gce_metadata_flag_says_what_to_use_instead() {
    let (code, _, err) = run(&["-register-instance-external-ip"]);
    assert_eq!(code, Some(2));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("-advertised-ip") && err.contains("HOST_IP"), "{err}");
}
