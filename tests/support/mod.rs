//! Helpers shared by the integration tests (`mod support;` in each of
//! `tests/*.rs`).
//!
//! * Bounded waiting: [`with_timeout`], [`wait_until`], [`read_line_timeout`],
//!   [`run_with_timeout`]. Nothing here waits without a bound.
//! * Requirements: [`require`] skips a test with a printed reason, or fails it
//!   when peers are mandatory ([`peers_required`]: `CI=true` or
//!   `NETDEVER_REQUIRE_PEERS=1`).
//! * Network namespaces (feature `tap`): [`Netns`] creates a fresh namespace
//!   and deletes it on drop (also on panic), together with every program it
//!   spawned; [`in_netns`] runs a closure on a thread that entered it.
//!
//! Rules the helpers keep: namespaces are named `ndv-<tag>-<pid>-<n>`, all
//! addresses are assigned only inside them, and only processes spawned here
//! are ever killed (by their own handle).
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Whether missing peers/programs must fail the run instead of skipping:
/// `CI=true` or `NETDEVER_REQUIRE_PEERS=1` in the environment.
pub fn peers_required() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    let req = std::env::var("NETDEVER_REQUIRE_PEERS").is_ok_and(|v| v == "1");
    ci || req
}

/// Check a requirement of a test. `Ok(())` if met; otherwise print a SKIP
/// line and return `Err(())` — or panic naming what is missing when
/// [`peers_required`].
#[allow(clippy::result_unit_err)]
pub fn require(test: &str, what: &str, met: bool) -> Result<(), ()> {
    if met {
        return Ok(());
    }
    if peers_required() {
        panic!("{test}: required peer/tool missing: {what} (CI=true or NETDEVER_REQUIRE_PEERS=1 forbids skipping)");
    }
    // Written to stderr directly (not eprintln!) so the test harness does
    // not capture it: a skip must be visible in a normal `cargo test` run.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIP {test}: {what} is missing (set CI=true or NETDEVER_REQUIRE_PEERS=1 to make this a failure)"
    );
    Err(())
}

/// Find an executable on `PATH` (or the sbin directories, where `ip` lives).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    // `ip` lives in sbin, which a non-login root PATH may lack.
    let extra = ["/usr/sbin", "/sbin", "/usr/local/sbin"];
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Whether the test runs as root (effective uid 0), read from /proc.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Run `f` on its own thread and wait at most `limit` for it. Panics with
/// `what` if it has not finished (the thread is left behind, detached), and
/// re-raises its panic if it panicked.
pub fn with_timeout<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name(format!("watchdog:{what}"))
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(r);
        })
        .expect("spawn watchdog thread");
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("{what}: did not finish within {limit:?} (hang)"),
    }
}

/// Poll `cond` every `step` until it is true (returns true) or `limit`
/// passes (returns false).
pub fn wait_until(limit: Duration, step: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(step);
    }
}

/// Read one line from `r` (a child's stdout, say) within `limit`. The reader
/// is moved to a helper thread; the rest of the stream is returned through
/// the second value once the line arrived so it can be read further.
pub fn read_line_timeout<R: Read + Send + 'static>(
    r: R,
    limit: Duration,
) -> Option<(String, BufReader<R>)> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut br = BufReader::new(r);
        let mut line = String::new();
        let res = br.read_line(&mut line).map(|_| (line, br));
        let _ = tx.send(res);
    });
    match rx.recv_timeout(limit) {
        Ok(Ok((line, br))) if !line.is_empty() => Some((line, br)),
        _ => None,
    }
}

/// Read everything from `r` on a helper thread; the result arrives on the
/// returned channel (use `recv_timeout`).
pub fn read_all_async<R: Read + Send + 'static>(mut r: R) -> mpsc::Receiver<io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut v = Vec::new();
        let res = r.read_to_end(&mut v).map(|_| v);
        let _ = tx.send(res);
    });
    rx
}

/// Wait for `child` at most `limit`; kill it (by its own handle) if it is
/// still running. Returns its exit status if it exited in time.
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() < end => thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Run a command to completion with a time limit, capturing its output.
/// A command still running at the limit is killed and reported as `TimedOut`.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> io::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let out = read_all_async(child.stdout.take().expect("piped"));
    let err = read_all_async(child.stderr.take().expect("piped"));
    let status = wait_child(&mut child, limit).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{cmd:?} still running after {limit:?}; killed"),
        )
    })?;
    let grab = |rx: mpsc::Receiver<io::Result<Vec<u8>>>| {
        rx.recv_timeout(Duration::from_secs(5))
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default()
    };
    Ok(Output {
        status,
        stdout: grab(out),
        stderr: grab(err),
    })
}

/// Run a command (bounded to 30 s) and fail with its stderr unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> io::Result<String> {
    let desc = format!("{cmd:?}");
    let out = run_with_timeout(cmd, Duration::from_secs(30))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{desc} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(feature = "tap")]
pub use self::netns::*;

#[cfg(feature = "tap")]
mod netns {
    use super::*;
    use std::fs::File;
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// Serializes `ip netns add` / `del` (creating the first namespace
    /// mounts /run/netns, which is racy when done twice at once).
    static NETNS_LOCK: Mutex<()> = Mutex::new(());
    static COUNTER: AtomicUsize = AtomicUsize::new(0);

    /// What the namespace tests need from the machine: root, /dev/net/tun,
    /// and the `ip` tool. Returns the first thing missing.
    pub fn netns_missing() -> Option<String> {
        if !is_root() {
            return Some(
                "root privileges (network namespaces and TAP need CAP_NET_ADMIN/CAP_SYS_ADMIN)"
                    .into(),
            );
        }
        if !std::path::Path::new("/dev/net/tun").exists() {
            return Some("/dev/net/tun".into());
        }
        if find_program("ip").is_none() {
            return Some("the `ip` program (package iproute2)".into());
        }
        None
    }

    /// A fresh network namespace, deleted on drop together with every
    /// program spawned through it.
    pub struct Netns {
        name: String,
        children: Mutex<Vec<Child>>,
    }

    impl Netns {
        /// Create `ndv-<tag>-<pid>-<n>` with its loopback up.
        pub fn new(tag: &str) -> io::Result<Netns> {
            let n = COUNTER.fetch_add(1, Ordering::SeqCst);
            let name = format!("ndv-{tag}-{}-{n}", std::process::id());
            {
                let _g = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
                run_ok(Command::new("ip").args(["netns", "add", &name]))?;
            }
            let ns = Netns {
                name,
                children: Mutex::new(Vec::new()),
            };
            ns.ip(&["link", "set", "lo", "up"])?;
            // Keep IPv6 chatter (router solicitations, MLD) off the TAP;
            // best effort, only inside the namespace.
            let _ = run_with_timeout(
                ns.command(&[
                    "sh",
                    "-c",
                    "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6",
                ])
                .stdin(Stdio::null()),
                Duration::from_secs(10),
            );
            Ok(ns)
        }

        /// The namespace's name.
        pub fn name(&self) -> &str {
            &self.name
        }

        /// Run `ip -n <ns> args...` (bounded) and return its stdout.
        pub fn ip(&self, args: &[&str]) -> io::Result<String> {
            run_ok(Command::new("ip").args(["-n", &self.name]).args(args))
        }

        /// A command that runs `args` inside the namespace (`ip netns exec`).
        /// Spawn it with [`Netns::spawn`] so it is killed on drop.
        pub fn command(&self, args: &[&str]) -> Command {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &self.name]).args(args);
            c
        }

        /// Spawn a command (normally from [`Netns::command`]) and keep it to
        /// kill when the namespace goes away (it also gets `SIGKILL` if the
        /// spawning thread dies first, so no program outlives a killed test). Its stdout/stderr pipes, if
        /// requested, are handed back; the child stays owned here.
        pub fn spawn(
            &self,
            cmd: &mut Command,
        ) -> io::Result<(
            u32,
            Option<std::process::ChildStdout>,
            Option<std::process::ChildStderr>,
        )> {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; nothing else runs between
            // fork and exec. If the spawning thread (the test) dies without
            // dropping the namespace, the kernel kills the child.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let mut child = cmd.spawn()?;
            let pid = child.id();
            let out = child.stdout.take();
            let err = child.stderr.take();
            self.children
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(child);
            Ok((pid, out, err))
        }

        /// Wait (bounded) for the spawned child `pid` to exit by itself.
        pub fn wait_child(&self, pid: u32, limit: Duration) -> Option<std::process::ExitStatus> {
            let end = Instant::now() + limit;
            loop {
                {
                    let mut kids = self.children.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(c) = kids.iter_mut().find(|c| c.id() == pid) {
                        if let Ok(Some(st)) = c.try_wait() {
                            return Some(st);
                        }
                    } else {
                        return None;
                    }
                }
                if Instant::now() >= end {
                    return None;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }

        /// Run `f` on a thread that entered this namespace (see [`in_netns`]).
        pub fn run<R: Send + 'static>(
            &self,
            f: impl FnOnce() -> R + Send + 'static,
        ) -> io::Result<R> {
            in_netns(&self.name, f)
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let mut kids = self.children.lock().unwrap_or_else(|e| e.into_inner());
            for c in kids.iter_mut() {
                if let Ok(None) = c.try_wait() {
                    let _ = c.kill();
                }
                let _ = super::wait_child(c, Duration::from_secs(5));
            }
            kids.clear();
            let _g = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = run_ok(Command::new("ip").args(["netns", "del", &self.name])) {
                eprintln!(
                    "warning: could not delete network namespace {}: {e}",
                    self.name
                );
            }
        }
    }

    /// Run `f` on a new thread that first enters network namespace `ns`
    /// (`setns(CLONE_NEWNET)` — namespaces are per thread, so the caller's
    /// thread is untouched). Sockets created there belong to `ns` for life
    /// and may then be used from any thread.
    pub fn in_netns<R: Send + 'static>(
        ns: &str,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> io::Result<R> {
        let path = format!("/run/netns/{ns}");
        let file =
            File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
        match thread::Builder::new()
            .name(format!("netns:{ns}"))
            .spawn(move || {
                // SAFETY: plain syscall on a valid, open fd; affects only this thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
                drop(file);
                Ok(f())
            })?
            .join()
        {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}
