//! The fleet simulator and the load generator, run as the driver runs them.

use bench::http::{self, Client};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

struct Fleet {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Fleet {
    fn start() -> Fleet {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fleet"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Fleet { child, stdin, stdout }
    }

    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    fn ports(&mut self, command: &str) -> Vec<u16> {
        let answer = self.ask(command);
        answer.strip_prefix("ports ").unwrap().split(' ').map(|p| p.parse().unwrap()).collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// One probe as the registry sends it: `Connection: close`.
fn probe(port: u16) -> std::io::Result<u16> {
    let mut client = Client::new(addr(port), Duration::from_secs(2));
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", addr(port));
    client.send(request.as_bytes(), false).map(|r| r.status)
}

#[test]
fn the_fleet_answers_counts_and_dies_on_command() {
    let mut fleet = Fleet::start();
    let live = fleet.ports("live 3");
    let hung = fleet.ports("hung 1");
    let refusing = fleet.ports("refusing 1");
    assert_eq!((live.len(), hung.len(), refusing.len()), (3, 1, 1));

    assert_eq!(fleet.ask("reset"), "ok");
    for _ in 0..2 {
        assert_eq!(probe(live[0]).unwrap(), 200);
    }
    assert_eq!(probe(live[1]).unwrap(), 200);
    let stats: serde_json::Value = serde_json::from_str(&fleet.ask("stats")).unwrap();
    assert_eq!(stats["probes"], 3);
    assert_eq!(stats["probed"], 2);
    assert_eq!(stats["probed_twice"], 1);

    // Hung: the connection is accepted, the answer never comes.
    let mut client = Client::new(addr(hung[0]), Duration::from_millis(200));
    assert!(client.send(&http::get(addr(hung[0]), "/healthz"), false).is_err());
    // Refusing, and killed: refused.
    assert!(TcpStream::connect(addr(refusing[0])).is_err());
    assert!(fleet.ask(&format!("kill {}", live[0])).starts_with("ok "));
    assert!(TcpStream::connect(addr(live[0])).is_err());
    assert!(fleet.ask(&format!("kill {}", live[0])).starts_with("error "));
    let mut still = fleet.ports("ports");
    still.sort();
    let mut expected = live[1..].to_vec();
    expected.sort();
    assert_eq!(still, expected);

    assert_eq!(fleet.ask("quit"), "ok");
    assert!(fleet.child.wait().unwrap().success());
}

#[test]
fn loadgen_reports_what_it_sent() {
    let mut fleet = Fleet::start();
    let port = fleet.ports("live 1")[0];
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--target", &addr(port).to_string(), "--clients", "2", "--requests", "500", "get", "/"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["requests"], 500);
    assert_eq!(report["errors"], 0);
    assert!(report["rps"].as_f64().unwrap() > 0.0);
}

#[test]
fn loadgen_refuses_anything_but_loopback() {
    let output =
        Command::new(env!("CARGO_BIN_EXE_loadgen")).args(["--target", "10.0.0.1:80", "get", "/"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("loopback"));
}
