//! The `endpointslice-mirror` command line: help, version, and a bad flag. (Its work is tested
//! end to end in `tests/tests/mirror.rs` and on a real cluster by `make e2e-cluster`; this file
//! also makes `cargo test --workspace` build the binary those tests run.)

use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_endpointslice-mirror"))
        .args(args)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("the binary runs");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn help_names_every_flag_with_its_environment_variable() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    for text in ["-registry=HOST:PORT", "-kube-api=URL", "-resync=DURATION", "MIRROR_NAMESPACE", "-max-per-slice=N"] {
        assert!(out.contains(text), "{text} missing from:\n{out}");
    }
}

#[test]
fn version_prints_the_package_version() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!((code, out.trim()), (Some(0), format!("endpointslice-mirror {}", env!("CARGO_PKG_VERSION")).as_str()));
}

#[test]
fn bad_flags_are_one_line_errors_with_exit_2() {
    for args in [
        &["-max-per-slice=5000", "-namespace=x", "-kube-api=http://127.0.0.1:1"][..],
        &["-bogus"],
        &["-namespace=x"],
        &["-registry=10.0.0.1", "-namespace=x", "-kube-api=http://127.0.0.1:1"],
    ] {
        let (code, _, err) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("endpointslice-mirror: "), "{err}");
    }
}
