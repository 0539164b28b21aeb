//! `make deploy`, with a stand-in kubectl that writes down what it is asked: the registry and
//! its Services go first, then the servers (their pods read the registry's address from the
//! Services' environment), and the image names are set by kustomize, with the prefix and tag.

use end_to_end::{shared, TempDir};
use std::path::Path;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the repo holds tests/")
}

#[test]
fn make_deploy_creates_the_registry_before_the_servers_with_the_prefix_set_by_kustomize() {
    let dir = TempDir::new("deploy");
    let calls = dir.path.join("calls");
    let kubectl = dir.path.join("kubectl");
    // `get secret` fails: no Secret yet. Every call is written down, with what stdin carried.
    std::fs::write(
        &kubectl,
        format!(
            "#!/bin/sh\necho \"$*\" >> {calls}\n[ \"$1\" = get ] && exit 1\n[ \"$1\" = create ] && cat > /dev/null\nexit 0\n",
            calls = calls.display()
        ),
    )
    .unwrap();
    shared::run("chmod", &["+x", kubectl.to_str().unwrap()]);
    let make = |target: &str| {
        shared::run(
            "make",
            &[
                "-C",
                repo().to_str().unwrap(),
                target,
                &format!("KUBECTL={}", kubectl.display()),
                "IMAGE_PREFIX=registry.example/me/",
            ],
        )
    };
    let (code, out, err) = make("deploy");
    assert_eq!(code, Some(0), "make deploy: {out}{err}");
    let log = std::fs::read_to_string(&calls).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], "get secret service-registry-token");
    assert!(lines[1].starts_with("create secret generic service-registry-token"), "{log}");
    assert_eq!(
        &lines[2..],
        ["apply -k target/deploy/1-registry", "apply -k target/deploy/2-servers", "apply -k target/deploy/3-mirror"],
        "{log}"
    );

    let version = shared::run(repo().join("scripts/version.sh"), &[]).1;
    let version = version.trim();
    let registry = std::fs::read_to_string(repo().join("target/deploy/1-registry/kustomization.yaml")).unwrap();
    for line in [
        "  - services-service-registry.yaml",
        "  - services-service-registry-http.yaml",
        "  - services-dynamic-port-server.yaml",
        "  - deployments-service-registry.yaml",
        "    newName: registry.example/me/service-registry",
        &format!("    newTag: \"{version}\""),
    ] {
        assert!(registry.lines().any(|l| l == line), "{line:?} missing from\n{registry}");
    }
    let servers = std::fs::read_to_string(repo().join("target/deploy/2-servers/kustomization.yaml")).unwrap();
    assert!(servers.contains("  - deployments-dynamic-port-server.yaml\n"), "{servers}");
    assert!(servers.contains("    newName: registry.example/me/dynamic-port-server\n"), "{servers}");
    assert!(!servers.contains("service-registry"), "the servers' step holds the servers only: {servers}");

    std::fs::remove_file(&calls).unwrap();
    let (code, out, err) = make("undeploy");
    assert_eq!(code, Some(0), "make undeploy: {out}{err}");
    let log = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        [
            "delete --ignore-not-found -k target/deploy/3-mirror",
            "delete --ignore-not-found -k target/deploy/2-servers",
            "delete --ignore-not-found -k target/deploy/1-registry"
        ]
    );
}

#[test]
fn the_top_level_kustomization_names_every_manifest_and_the_workspace_version() {
    let text = std::fs::read_to_string(repo().join("kustomization.yaml")).unwrap();
    let version = shared::run(repo().join("scripts/version.sh"), &[]).1;
    for dir in ["services", "deployments"] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".yaml") {
                assert!(text.contains(&format!("  - {dir}/{name}\n")), "{dir}/{name} missing from kustomization.yaml");
            }
        }
    }
    assert_eq!(text.matches(&format!("    newTag: {}\n", version.trim())).count(), 3, "every image at the version");
}
