//! The few system calls std does not offer, each wrapped once. This is the only module of the
//! suite with `unsafe`: plain libc calls on integers, no pointers kept.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

/// Raises the soft limit on open files to the hard limit (the fleet holds one descriptor per
/// port). Returns the new soft limit.
pub fn raise_nofile() -> io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

/// Sends `signal` to a process, or to a process group when `pid` is negative.
pub fn kill(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill takes two integers.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// CPU time (user + system) this process has used so far.
pub fn own_cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value, and getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Like [`discard`], for a non-blocking socket: throws away up to `len` bytes that have
/// arrived, `WouldBlock` when none have.
pub fn discard_arrived(socket: &impl AsRawFd, len: usize) -> io::Result<usize> {
    // SAFETY: as in `discard`: with MSG_TRUNC the kernel writes nothing to the null buffer.
    let n = unsafe { libc::recv(socket.as_raw_fd(), std::ptr::null_mut(), len, libc::MSG_TRUNC | libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Clock ticks per second, the unit of utime and stime in `/proc/PID/stat`.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf takes an integer.
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as u64,
        _ => 100,
    }
}

/// Makes the child get SIGKILL when the thread that spawned it dies, so that no process of the
/// benchmark outlives it, even when the driver itself is killed with SIGKILL.
pub fn die_with_parent(command: &mut Command) -> &mut Command {
    // SAFETY: id() is a plain getter; the closure runs between fork and exec and only makes
    // async-signal-safe system calls (prctl, getppid, _exit).
    let parent = std::process::id() as libc::pid_t;
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl: then nobody would ever kill us.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        })
    }
}

/// Receives and throws away `len` bytes of a TCP stream without copying them to user space
/// (`MSG_TRUNC`, Linux 2.4.4 and later), waiting for all of them in one call (`MSG_WAITALL`):
/// the load generator reads a 200 KB answer at the cost of one system call, not of a copy and
/// a wake-up per segment. Returns the bytes discarded (fewer at a timeout), 0 at end of stream.
pub fn discard(stream: &TcpStream, len: usize) -> io::Result<usize> {
    // SAFETY: with MSG_TRUNC on a TCP socket the kernel writes nothing to the buffer, which may
    // then be null.
    let n = unsafe { libc::recv(stream.as_raw_fd(), std::ptr::null_mut(), len, libc::MSG_TRUNC | libc::MSG_WAITALL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// The kernel's ephemeral port range (`ip_local_port_range`), where `connect` takes its
/// source ports; Linux's default when it cannot be read.
pub fn ephemeral_ports() -> (u16, u16) {
    parse_port_range(&std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default())
}

fn parse_port_range(text: &str) -> (u16, u16) {
    let mut numbers = text.split_whitespace().filter_map(|n| n.parse::<u16>().ok());
    match (numbers.next(), numbers.next()) {
        (Some(low), Some(high)) if low < high => (low, high),
        _ => (32768, 60999),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_range_is_read_or_linux_default() {
        assert_eq!(parse_port_range("32768\t60999\n"), (32768, 60999));
        assert_eq!(parse_port_range("10000 20000"), (10000, 20000));
        assert_eq!(parse_port_range(""), (32768, 60999));
        assert_eq!(parse_port_range("5 4"), (32768, 60999), "not a range");
    }
}
