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

/// After a container restart the port file still holds the last run's port. A run that cannot
/// bind must not leave it there: the exec probe would then vouch for whatever holds that port.
#[test]
fn a_run_that_cannot_bind_leaves_no_stale_port_for_the_probes() {
    let dir = std::env::temp_dir().join(format!("server-cli-port-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("port");
    // Something answers 200 on the last run's port, and the new run's only port is taken.
    let stranger = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let old_port = stranger.local_addr().unwrap().port();
    std::fs::write(&file, format!("{old_port}\n")).unwrap();
    let answering = std::thread::spawn(move || {
        use std::io::{Read, Write};
        if let Ok((mut s, _)) = stranger.accept() {
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let range = format!("-port-range={0}-{0}", taken.local_addr().unwrap().port());
    let port_file = format!("-port-file={}", file.display());
    let (code, _, err) = run(&["-bind-ip=127.0.0.1", &range, &port_file, "-service-registry=127.0.0.1:9"]);
    assert_eq!(code, Some(1), "no free port in the range: {err}");
    let (code, _, err) = run(&["healthcheck", &port_file]);
    assert_eq!(code, Some(1), "the probe must fail, not reach port {old_port}: {err}");
    assert!(err.contains("cannot read"), "{err}");
    // Unblock the stranger if the probe never came, and clean up.
    let _ = std::net::TcpStream::connect(("127.0.0.1", old_port));
    answering.join().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
