//! The processes the benchmark starts, and the guarantee that none outlives it: every child
//! gets SIGKILL when the driver dies (even by SIGKILL), is killed when its guard is dropped,
//! and is killed by the signal thread when the driver is interrupted.

use bench::sys;
use serde_json::Value;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// Children alive now: (pid, whether it leads its own process group).
static LIVE: Mutex<Vec<(i32, bool)>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<(i32, bool)>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Kills every child still alive: for the signal handler's path, where no guard gets dropped.
pub fn kill_all() {
    for (pid, group) in live().drain(..) {
        let _ = sys::kill(if group { -pid } else { pid }, libc::SIGKILL);
    }
}

/// A started child, killed (with its process group, if it has one) when dropped.
pub struct Proc {
    pub child: Child,
    group: bool,
    reaped: bool,
}

impl Proc {
    /// Starts `command`; with `group`, in a process group of its own (for programs such as
    /// nginx that start children of their own).
    pub fn spawn(name: &str, command: &mut Command, group: bool) -> Result<Proc, String> {
        sys::die_with_parent(command);
        if group {
            std::os::unix::process::CommandExt::process_group(command, 0);
        }
        let mut registered = live();
        let child = command.spawn().map_err(|e| format!("cannot start {name}: {e}"))?;
        registered.push((child.id() as i32, group));
        Ok(Proc { child, group, reaped: false })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal to the process (or its group).
    pub fn signal(&self, signal: i32) {
        if !self.reaped {
            let _ = sys::kill(if self.group { -self.pid() } else { self.pid() }, signal);
        }
    }

    /// Waits at most `limit` for the child to exit by itself.
    pub fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.reaped();
                    return Some(status);
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(1)),
                _ => return None,
            }
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; returns how it ended, if it ended by SIGTERM.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.reaped {
            return None;
        }
        self.signal(libc::SIGTERM);
        let status = self.wait_for(grace);
        if status.is_none() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
            self.reaped();
        }
        status
    }

    fn reaped(&mut self) {
        if self.group {
            // Whatever the leader left behind in its group goes with it.
            let _ = sys::kill(-self.pid(), libc::SIGKILL);
        }
        self.reaped = true;
        let pid = self.pid();
        live().retain(|(p, _)| *p != pid);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_millis(500));
    }
}

/// CPU time (user + system) a process has used, from `/proc/PID/stat`; for a negative `pid`,
/// the sum over the members of process group `-pid` (nginx and its workers).
pub fn cpu_time(pid: i32) -> Duration {
    let ticks: u64 = if pid >= 0 {
        stat_fields(pid).map_or(0, |f| f.ticks)
    } else {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(stat_fields)
            .filter(|f| f.group == -pid)
            .map(|f| f.ticks)
            .sum()
    };
    Duration::from_secs_f64(ticks as f64 / sys::clock_ticks() as f64)
}

/// CPU time all processes of the machine have used (and the hypervisor has stolen), from the
/// first line of `/proc/stat`: to see how busy the machine was with others during a run.
pub fn machine_busy() -> Duration {
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    machine_ticks(|i| i != 3 && i != 4)
}

/// CPU time the hypervisor gave to other guests while this one wanted it (`steal` in
/// `/proc/stat`): on a shared virtual machine, the main source of noise between runs.
pub fn machine_steal() -> Duration {
    machine_ticks(|i| i == 7)
}

fn machine_ticks(columns: impl Fn(usize) -> bool) -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu = stat.lines().next().unwrap_or_default();
    let ticks: u64 = cpu
        .split_whitespace()
        .skip(1)
        .take(8)
        .enumerate()
        .filter(|(i, _)| columns(*i))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum();
    Duration::from_secs_f64(ticks as f64 / sys::clock_ticks() as f64)
}

struct Stat {
    group: i32,
    ticks: u64,
}

fn stat_fields(pid: i32) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces: the
    // process group is field 5 of the line, utime and stime fields 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let group = fields.get(2)?.parse().ok()?;
    let ticks = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    Some(Stat { group, ticks })
}

/// A process's resident memory, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// VmRSS: now.
    pub rss: u64,
    /// VmHWM: the most it has held.
    pub peak: u64,
}

/// VmRSS and VmHWM of a process, from `/proc/PID/status`. An error when they cannot be read:
/// the process is gone, or has exited and not been reaped (a zombie has no VmRSS line), as a
/// crashed registry is until its guard is dropped. Never zero in their place, which would meet
/// every memory target.
pub fn memory(pid: i32) -> Result<Memory, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .ok_or_else(|| format!("no {name} in {path}: process {pid} has exited"))
    };
    Ok(Memory { rss: field("VmRSS:")?, peak: field("VmHWM:")? })
}

/// Copies a child's output to a log file on a thread, handing each line to `watch` first.
fn drain(from: impl Read + Send + 'static, log: &Path, mut watch: impl FnMut(&str) + Send + 'static) {
    let mut file = File::create(log).ok();
    thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { return };
            watch(&line);
            if let Some(f) = file.as_mut() {
                let _ = writeln!(f, "{line}");
            }
        }
    });
}

/// A running `service-registry`.
pub struct Registry {
    pub proc: Proc,
    pub api: SocketAddr,
    pub ui: SocketAddr,
}

impl Registry {
    /// Starts the registry on two kernel-chosen loopback ports with `flags`, its log going to
    /// `log`; returns once it has said where it listens.
    pub fn start(binary: &Path, flags: &[String], log: &Path) -> Result<Registry, String> {
        let mut command = Command::new(binary);
        command
            .args(["-api=127.0.0.1:0", "-http=127.0.0.1:0"])
            .args(flags)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut proc = Proc::spawn("service-registry", &mut command, false)?;
        let (tx, rx) = channel();
        let stderr = proc.child.stderr.take().expect("stderr is piped");
        drain(stderr, log, move |line| {
            for (key, marker) in [("api", "API listening on "), ("ui", "UI listening on ")] {
                if let Some(addr) = line.split_once(marker).and_then(|(_, a)| a.trim().parse::<SocketAddr>().ok()) {
                    let _ = tx.send((key, addr));
                }
            }
        });
        let (mut api, mut ui) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(10);
        while api.is_none() || ui.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(("api", addr)) => api = Some(addr),
                Ok((_, addr)) => ui = Some(addr),
                Err(_) => {
                    return Err(format!(
                        "service-registry did not say where it listens within 10 s (see {})",
                        log.display()
                    ))
                }
            }
        }
        let (api, ui) = (api.expect("set above"), ui.expect("set above"));
        for addr in [api, ui] {
            bench::loopback(&addr.to_string())?;
        }
        Ok(Registry { proc, api, ui })
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }
}

/// The running fleet simulator, driven over its stdin and stdout.
pub struct Fleet {
    proc: Proc,
    stdin: ChildStdin,
    answers: Receiver<String>,
}

/// A fleet command answers in milliseconds; this bounds a stuck one.
const FLEET_ANSWER: Duration = Duration::from_secs(30);

/// Ports tried for fleets' listeners: the [`PORT_SPAN`] ports just below the kernel's
/// ephemeral range (from 1024 at the lowest). A port a listener holds, on any address, is one
/// `connect` cannot take as its source port: with the fleet's 10,000 in the ephemeral range, the
/// kernel's search for a free one took 24% of the registry's CPU (perf, 10,000 endpoints),
/// which a registry whose servers listen on other hosts, as in a cluster, never pays.
pub fn below_ephemeral_ports() -> (u16, u16) {
    fleet_ports(bench::sys::ephemeral_ports())
}

fn fleet_ports((ephemeral_low, _): (u16, u16)) -> (u16, u16) {
    let high = ephemeral_low.saturating_sub(1).max(1024 + PORT_SPAN);
    (high - PORT_SPAN, high)
}

/// How many ports a fleet may try: its endpoints and some taken by other programs.
pub const PORT_SPAN: u16 = 20_000;

impl Fleet {
    /// A fleet on 127.0.0.1, listening below the ephemeral range.
    pub fn start(binary: &Path, log: &Path) -> Result<Fleet, String> {
        Fleet::start_at(binary, log, None, below_ephemeral_ports())
    }

    /// A fleet listening on `ip` (`--ip`; 127.0.0.1 when `None`), on the ports `low`-`high`
    /// (`--ports`).
    pub fn start_at(
        binary: &Path,
        log: &Path,
        ip: Option<std::net::Ipv4Addr>,
        (low, high): (u16, u16),
    ) -> Result<Fleet, String> {
        let mut command = Command::new(binary);
        if let Some(ip) = ip {
            command.arg("--ip").arg(ip.to_string());
        }
        command.arg("--ports").arg(format!("{low}-{high}"));
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(File::create(log).map_err(|e| e.to_string())?);
        let mut proc = Proc::spawn("fleet", &mut command, false)?;
        let stdin = proc.child.stdin.take().expect("stdin is piped");
        let stdout = proc.child.stdout.take().expect("stdout is piped");
        let (tx, answers) = channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Fleet { proc, stdin, answers })
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// Sends one command and returns its answer.
    pub fn command(&mut self, line: &str) -> Result<String, String> {
        writeln!(self.stdin, "{line}").and_then(|()| self.stdin.flush()).map_err(|e| format!("fleet: {e}"))?;
        let answer = self.answers.recv_timeout(FLEET_ANSWER).map_err(|_| format!("fleet did not answer {line:?}"))?;
        match answer.strip_prefix("error ") {
            Some(e) => Err(format!("fleet: {line}: {e}")),
            None => Ok(answer),
        }
    }

    /// `count` new endpoints of `kind` (`live`, `hung`, `refusing`): their ports.
    pub fn endpoints(&mut self, kind: &str, count: usize) -> Result<Vec<u16>, String> {
        let answer = self.command(&format!("{kind} {count}"))?;
        let ports: Vec<u16> = answer
            .strip_prefix("ports")
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if ports.len() != count {
            return Err(format!("fleet gave {} of {count} {kind} ports", ports.len()));
        }
        Ok(ports)
    }

    /// Closes the listener on `port`; returns how long ago it was last probed.
    pub fn kill(&mut self, port: u16) -> Result<Option<Duration>, String> {
        let answer = self.command(&format!("kill {port}"))?;
        let ago = answer.strip_prefix("ok ").and_then(|ms| ms.trim().parse::<f64>().ok());
        Ok(ago.filter(|ms| *ms >= 0.0).map(|ms| Duration::from_secs_f64(ms / 1000.0)))
    }

    pub fn reset(&mut self) -> Result<(), String> {
        self.command("reset").map(drop)
    }

    pub fn stats(&mut self) -> Result<Value, String> {
        let answer = self.command("stats")?;
        serde_json::from_str(&answer).map_err(|e| format!("fleet stats {answer:?}: {e}"))
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        if self.proc.wait_for(Duration::from_millis(500)).is_none() {
            self.proc.stop(Duration::from_millis(100));
        }
    }
}

/// Runs a command to its end, at most `limit`; its stdout, or `None` if it failed or took too
/// long (then it is killed).
pub fn output(name: &str, command: &mut Command, limit: Duration) -> Option<String> {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
    let mut proc = Proc::spawn(name, command, false).ok()?;
    let mut stdout = proc.child.stdout.take()?;
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let status = proc.wait_for(limit);
    drop(proc);
    let text = reader.join().ok()?;
    status.filter(ExitStatus::success).map(|_| text)
}

/// A running Go original (`service-registry` from `/work/shared/anchors/go-seed/build.sh`),
/// for side-by-side figures. It says nothing about where it listens, so it is given two
/// loopback ports that were free a moment before.
pub struct GoRegistry {
    pub proc: Proc,
    /// Where `POST /register` goes (`-api`).
    pub api: SocketAddr,
    /// The page (`-http`).
    pub ui: SocketAddr,
}

impl GoRegistry {
    /// Starts it with its log going to `log`; returns once both listeners accept.
    pub fn start(binary: &Path, log: &Path) -> Result<GoRegistry, String> {
        let free = || -> Result<SocketAddr, String> {
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())
        };
        let (api, ui) = (free()?, free()?);
        let mut command = Command::new(binary);
        command
            .args(["-api", &api.to_string(), "-http", &ui.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(log).map_err(|e| format!("{}: {e}", log.display()))?);
        let mut proc = Proc::spawn("the Go service-registry", &mut command, false)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        for addr in [api, ui] {
            while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
                if Instant::now() > deadline || proc.wait_for(Duration::ZERO).is_some() {
                    return Err(format!("the Go service-registry did not listen on {addr} (see {})", log.display()));
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(GoRegistry { proc, api, ui })
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_of_a_live_process_is_read() {
        let own = memory(std::process::id() as i32).unwrap();
        assert!(own.rss > 0 && own.peak >= own.rss, "{own:?}");
    }

    #[test]
    fn fleets_listen_just_below_the_ephemeral_range() {
        assert_eq!(fleet_ports((32768, 60999)), (12767, 32767));
        assert_eq!(fleet_ports((10000, 60999)), (1024, 21024));
    }

    #[test]
    fn memory_of_a_process_that_is_gone_is_an_error_not_zero() {
        // Above any pid_max (at most 2^22): no such process.
        assert!(memory(i32::MAX).unwrap_err().contains("cannot read /proc/"));
        // Exited and not reaped, as a crashed registry is until its guard is dropped.
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let zombie = || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !zombie() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        let gone = (zombie(), memory(pid));
        child.wait().unwrap();
        assert!(gone.0, "`true` did not exit within 10 s");
        let gone = gone.1;
        assert!(gone.unwrap_err().contains("has exited"));
    }
}
