//! Real peer programs for the examples: the servers and clients the
//! example × backend matrix (`examples/common/matrix.rs`) and the tests run
//! the examples against, instead of the simulated peers of [`super::peers`].
//!
//! | program | launcher | for |
//! |---|---|---|
//! | `python3 -m http.server` | [`http_server`] | webclient, http_get, http_head |
//! | python `http.server` handler that records POSTs | [`post_recorder`] | http_post, http_postform |
//! | `curl` | [`curl`] | webserver, webstatic |
//! | `chronyd` | [`chronyd`] | ntpclient |
//! | `mosquitto`, `mosquitto_pub`, `mosquitto_sub` | [`mosquitto`], [`mosquitto_pub`], [`mosquitto_sub`] | mqttclient |
//! | python `websockets` | [`ws_echo_server`], [`ws_clients`] | websocket_dial, websocket_handler |
//! | `openssl s_server -tls1_3 -www` with a test CA | [`TestPki`], [`s_server`] | tlsclient |
//! | python TCP / UDP helpers | [`tcp_sink`], [`tcp_echo_server`], [`tcp_echo_clients`], [`udp_echo_server`], [`udp_echo_client`] | tcpclient, socket, snake, tcpecho, udpclient, udpecho |
//!
//! Every launcher runs its program on this host ([`Place::Host`]) or inside
//! a network namespace ([`Place::Netns`], through `ip netns exec`), waits a
//! bounded time until it is ready, and returns
//! [`PeerError::NotInstalled`] when the program is missing. Programs are
//! held by a [`Proc`], which kills them by their PID when dropped; the
//! python helpers also end by themselves after [`PEER_LIFETIME`].
//!
//! Peers listen only where they are told: this host's loopback or an address
//! inside a namespace the caller created ([`Netns`] creates and deletes one).

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the python helpers live at most (they exit by themselves then,
/// should nobody kill them).
pub const PEER_LIFETIME: Duration = Duration::from_secs(180);

/// Why a peer could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerError {
    /// The program (or python module) is not installed: its name.
    NotInstalled(String),
    /// It is installed but did not start or misbehaved.
    Failed(String),
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerError::NotInstalled(p) => write!(f, "program not installed: {p}"),
            PeerError::Failed(e) => f.write_str(e),
        }
    }
}

impl From<String> for PeerError {
    fn from(e: String) -> Self {
        PeerError::Failed(e)
    }
}

/// A peer operation's result.
pub type PeerResult<T> = Result<T, PeerError>;

fn failed<T>(what: impl fmt::Display) -> PeerResult<T> {
    Err(PeerError::Failed(what.to_string()))
}

/// Find an executable on `PATH` (or in the sbin directories, where `ip`
/// and `chronyd` live).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
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

/// `name`'s path, or [`PeerError::NotInstalled`].
pub fn program(name: &str) -> PeerResult<PathBuf> {
    find_program(name).ok_or_else(|| PeerError::NotInstalled(name.into()))
}

/// A python3 that can `import websockets` (Debian's python3-websockets
/// installs for /usr/bin/python3, which may not be the first on `PATH`).
pub fn python_with_websockets() -> PeerResult<PathBuf> {
    let mut candidates = vec![PathBuf::from("/usr/bin/python3")];
    candidates.extend(find_program("python3"));
    for py in candidates.into_iter().filter(|p| p.exists()) {
        let mut c = Command::new(&py);
        c.args(["-c", "import websockets"]);
        if run_bounded(&mut c, Duration::from_secs(20)).is_ok_and(|o| o.status.success()) {
            return Ok(py);
        }
    }
    if find_program("python3").is_none() {
        return Err(PeerError::NotInstalled("python3".into()));
    }
    Err(PeerError::NotInstalled("python3-websockets".into()))
}

/// Whether this process runs as root (effective uid 0), read from /proc.
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

// ---------------------------------------------------------------------------
// Places, processes, output.
// ---------------------------------------------------------------------------

/// Where a peer program runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// On this host (it listens on loopback).
    Host,
    /// Inside the named network namespace (`ip netns exec NAME ...`).
    Netns(String),
}

impl Place {
    /// A command running `program` here.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match self {
            Place::Host => Command::new(program),
            Place::Netns(ns) => {
                let mut c = Command::new(find_program("ip").unwrap_or_else(|| "ip".into()));
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
        }
    }

    /// Run `f` on a thread that is here (for the namespace: a thread that
    /// entered it), so sockets it opens belong here.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> PeerResult<R> {
        match self {
            Place::Host => Ok(f()),
            Place::Netns(ns) => {
                let path = PathBuf::from(format!("/run/netns/{ns}"));
                netdever_emu::kernel::run_in_netns(&path, f)
                    .map_err(|e| PeerError::Failed(format!("entering namespace {ns}: {e}")))
            }
        }
    }

    /// Whether a TCP connection to `addr` from here succeeds within 300 ms.
    pub fn can_connect(&self, addr: SocketAddr) -> bool {
        self.run(move || TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok())
            .unwrap_or(false)
    }

    /// A port that is free on `ip` here right now (TCP and UDP).
    pub fn free_port(&self, ip: Ipv4Addr) -> PeerResult<u16> {
        let r = self.run(move || -> std::io::Result<u16> {
            for _ in 0..50 {
                let t = TcpListener::bind((ip, 0))?;
                let port = t.local_addr()?.port();
                if UdpSocket::bind((ip, port)).is_ok() {
                    return Ok(port);
                }
            }
            Err(std::io::Error::other("no port free for both TCP and UDP"))
        })?;
        r.map_err(|e| PeerError::Failed(format!("finding a free port on {ip}: {e}")))
    }
}

/// A program started here, killed by its own PID when dropped.
pub struct Proc {
    child: Child,
    name: String,
}

impl Proc {
    /// Spawn `cmd` (stdin closed, stdout piped, stderr piped); `name` is
    /// the program, for messages.
    pub fn spawn(name: &str, cmd: &mut Command) -> PeerResult<(Proc, Lines, Lines)> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => PeerError::NotInstalled(name.into()),
                _ => PeerError::Failed(format!("starting {name}: {e}")),
            })?;
        let out = Lines::collect(child.stdout.take().expect("piped"));
        let err = Lines::collect(child.stderr.take().expect("piped"));
        Ok((
            Proc {
                child,
                name: name.into(),
            },
            out,
            err,
        ))
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The program's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Wait at most `limit` for it to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => return Some(st),
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(10)),
                _ => return None,
            }
        }
    }

    /// Whether it has exited already.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Child::kill signals this child's own PID.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The lines a program printed so far (collected by a helper thread).
///
/// The helper thread may lag behind the program: after the program exits,
/// call [`Lines::wait_end`] before reading [`Lines::all`] as the whole
/// output.
#[derive(Clone, Default)]
pub struct Lines(Arc<LinesInner>);

#[derive(Default)]
struct LinesInner {
    lines: Mutex<Vec<String>>,
    /// The stream has ended (EOF or a read error): no more lines come.
    ended: std::sync::atomic::AtomicBool,
}

impl Lines {
    /// Collect `r`'s lines from now on.
    pub fn collect<R: Read + Send + 'static>(r: R) -> Lines {
        let lines = Lines::default();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                l.0.lines
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(line);
            }
            l.0.ended.store(true, std::sync::atomic::Ordering::Release);
        });
        lines
    }

    /// A copy of every line so far.
    pub fn all(&self) -> Vec<String> {
        self.0
            .lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Wait at most `limit` until the stream has ended and every line is
    /// in; `false` if it has not ended by then.
    pub fn wait_end(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while !self.0.ended.load(std::sync::atomic::Ordering::Acquire) {
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// The first line that satisfies `f`, waiting at most `limit` for it.
    pub fn wait_for(&self, limit: Duration, f: impl Fn(&str) -> bool) -> Option<String> {
        let end = Instant::now() + limit;
        loop {
            if let Some(l) = self.all().into_iter().find(|l| f(l)) {
                return Some(l);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether some line contains `pat`.
    pub fn has(&self, pat: &str) -> bool {
        self.all().iter().any(|l| l.contains(pat))
    }

    /// The last few lines, for error messages.
    pub fn tail(&self) -> String {
        let all = self.all();
        let from = all.len().saturating_sub(6);
        all[from..].join(" | ")
    }
}

/// Run a command to completion within `limit` (killed after), capturing
/// its output.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> std::io::Result<std::process::Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let grab = |r: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            let _ = tx.send(v);
        });
        rx
    };
    let out = grab(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = grab(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let end = Instant::now() + limit;
    let status = loop {
        match child.try_wait()? {
            Some(st) => break st,
            None if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("{cmd:?} still running after {limit:?}; killed"),
                ));
            }
        }
    };
    let take = |rx: std::sync::mpsc::Receiver<Vec<u8>>| {
        rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default()
    };
    Ok(std::process::Output {
        status,
        stdout: take(out),
        stderr: take(err),
    })
}

/// A scratch directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory `ndv-<tag>-<pid>-<n>` under the temp dir.
    pub fn new(tag: &str) -> PeerResult<TempDir> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("ndv-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d)
            .map_err(|e| PeerError::Failed(format!("creating {}: {e}", d.display())))?;
        Ok(TempDir(d))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A file in it, as text.
    pub fn file(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// Network namespaces.
// ---------------------------------------------------------------------------

/// Serializes `ip netns add` / `del` (the first one mounts /run/netns).
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// What a namespace needs from the machine: root, /dev/net/tun and `ip`.
/// Returns the first thing missing.
pub fn netns_missing() -> Option<String> {
    if !is_root() {
        return Some("root (network namespaces and TAP need CAP_NET_ADMIN)".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun".into());
    }
    if find_program("ip").is_none() {
        return Some("the `ip` program (iproute2)".into());
    }
    None
}

fn ip_cmd(args: &[&str]) -> PeerResult<String> {
    let ip = program("ip")?;
    let out = run_bounded(Command::new(ip).args(args), Duration::from_secs(30))
        .map_err(|e| PeerError::Failed(format!("ip {}: {e}", args.join(" "))))?;
    if !out.status.success() {
        return failed(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A fresh network namespace `ndv-<tag>-<pid>-<n>` with its loopback up
/// and IPv6 off, deleted on drop. Programs run in it through
/// [`Place::Netns`] must be dropped (killed) before it.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Create it.
    pub fn new(tag: &str) -> PeerResult<Netns> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let name = format!("ndv-{tag}-{}-{n}", std::process::id());
        {
            let _g = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            ip_cmd(&["netns", "add", &name])?;
        }
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        // Keep IPv6 chatter off the links; best effort, inside the namespace.
        let _ = run_bounded(
            ns.place().command("sh").args([
                "-c",
                "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6",
            ]),
            Duration::from_secs(10),
        );
        Ok(ns)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where programs run inside it.
    pub fn place(&self) -> Place {
        Place::Netns(self.name.clone())
    }

    /// `ip -n NAME args...`.
    pub fn ip(&self, args: &[&str]) -> PeerResult<String> {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        ip_cmd(&a)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _g = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = ip_cmd(&["netns", "del", &self.name]) {
            eprintln!(
                "warning: could not delete network namespace {}: {e}",
                self.name
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Python helpers.
// ---------------------------------------------------------------------------

/// Prepended to every python helper: end the process after `LIFETIME`
/// seconds (argv[1]) whatever it is doing; the helper's own arguments
/// follow in argv[2:].
const PY_PRELUDE: &str = "
import os, sys, threading
_t = threading.Timer(float(sys.argv[1]), lambda: os._exit(3))
_t.daemon = True
_t.start()
ARGS = sys.argv[2:]
";

/// Start a python helper script with `args`; `module` is what it needs
/// besides the standard library (for the not-installed message).
fn python(
    place: &Place,
    py: &Path,
    script: &str,
    args: &[String],
) -> PeerResult<(Proc, Lines, Lines)> {
    let code = format!("{PY_PRELUDE}{script}");
    let mut c = place.command(py);
    c.arg("-u")
        .arg("-c")
        .arg(code)
        .arg(PEER_LIFETIME.as_secs().to_string())
        .args(args);
    Proc::spawn("python3", &mut c)
}

/// Start a python server `script` (run with `ip`, `port` and `extra` as
/// its arguments) and wait for its `ready PORT` line; `what` names it in
/// messages.
fn python_server(
    place: &Place,
    py: &Path,
    script: &str,
    ip: Ipv4Addr,
    port: u16,
    extra: &[String],
    what: &str,
) -> PeerResult<Server> {
    let mut args = vec![ip.to_string(), port.to_string()];
    args.extend_from_slice(extra);
    let (mut proc, out, err) = python(place, py, script, &args)?;
    let port = ready_port(&mut proc, &out, &err, what)?;
    Ok(Server {
        proc,
        addr: SocketAddr::from((ip, port)),
        out,
        err,
    })
}

/// Wait for a `ready PORT` line from a helper; returns the port.
fn ready_port(p: &mut Proc, out: &Lines, err: &Lines, what: &str) -> PeerResult<u16> {
    match out.wait_for(Duration::from_secs(20), |l| l.starts_with("ready ")) {
        Some(l) => l[6..]
            .trim()
            .parse()
            .map_err(|_| PeerError::Failed(format!("{what}: bad ready line {l:?}"))),
        None => {
            let why = if p.exited() { "exited" } else { "is not ready" };
            failed(format!("{what} {why}: {}", err.tail()))
        }
    }
}

/// A running peer program and the port it listens on.
pub struct Server {
    /// The process.
    pub proc: Proc,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its stdout lines.
    pub out: Lines,
    /// Its stderr lines.
    pub err: Lines,
}

fn python3() -> PeerResult<PathBuf> {
    program("python3")
}

const PATTERN_PY: &str = "
PERIOD = 251
def pattern(seed, off, n):
    base = bytes(range(PERIOD)) * ((n // PERIOD) + 2)
    s = (off + seed) % PERIOD
    return base[s:s + n]
";

const TCP_SINK: &str = "
import socket
ip, port, seed = ARGS[0], int(ARGS[1]), int(ARGS[2])
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((ip, port))
l.listen(1)
print('ready', l.getsockname()[1], flush=True)
c, _ = l.accept()
total = 0
while True:
    d = c.recv(262144)
    if not d:
        break
    if d != pattern(seed, total, len(d)):
        print('bad at', total, flush=True)
        os._exit(1)
    total += len(d)
print('ok', total, flush=True)
";

/// A python TCP sink on `ip:port` (0: any port): accepts one connection,
/// checks every byte against the examples' pattern `seed`
/// (`common::pattern`) and prints `ok BYTES` at end of stream.
pub fn tcp_sink(place: &Place, ip: Ipv4Addr, port: u16, seed: u64) -> PeerResult<Server> {
    let script = format!("{PATTERN_PY}{TCP_SINK}");
    let extra = [seed.to_string()];
    python_server(
        place,
        &python3()?,
        &script,
        ip,
        port,
        &extra,
        "python TCP sink",
    )
}

/// What a [`tcp_sink`] received: the byte count once the stream ended
/// intact (waits at most `limit`).
pub fn sink_result(s: &Server, limit: Duration) -> Result<u64, String> {
    match s
        .out
        .wait_for(limit, |l| l.starts_with("ok ") || l.starts_with("bad "))
    {
        Some(l) if l.starts_with("ok ") => l[3..]
            .trim()
            .parse()
            .map_err(|_| format!("sink said {l:?}")),
        Some(l) => Err(format!("the sink got wrong data: {l}")),
        None => Err(format!(
            "the sink saw no end of stream within {limit:?} ({})",
            s.err.tail()
        )),
    }
}

const TCP_ECHO_SERVER: &str = "
import socketserver
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            d = self.request.recv(65536)
            if not d:
                return
            self.request.sendall(d)
class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 32
s = Server((ARGS[0], int(ARGS[1])), Echo)
print('ready', s.server_address[1], flush=True)
s.serve_forever()
";

/// A python thread-per-connection TCP echo server on `ip:port` (0: any).
pub fn tcp_echo_server(place: &Place, ip: Ipv4Addr, port: u16) -> PeerResult<Server> {
    let what = "python TCP echo server";
    python_server(place, &python3()?, TCP_ECHO_SERVER, ip, port, &[], what)
}

const TCP_ECHO_CLIENTS: &str = "
import socket, time
host, port, clients, nbytes = ARGS[0], int(ARGS[1]), int(ARGS[2]), int(ARGS[3])
def connect():
    end = time.time() + 15
    while True:
        try:
            return socket.create_connection((host, port), timeout=30)
        except OSError:
            if time.time() > end:
                raise
            time.sleep(0.1)
results = {}
def one(k):
    try:
        s = connect()
        def writer():
            off = 0
            while off < nbytes:
                n = min(16384, nbytes - off)
                s.sendall(pattern(k, off, n))
                off += n
        w = threading.Thread(target=writer)
        w.start()
        got = 0
        while got < nbytes:
            d = s.recv(65536)
            if not d:
                raise Exception('echo ended after %d of %d bytes' % (got, nbytes))
            if d != pattern(k, got, len(d)):
                raise Exception('wrong echo at offset %d' % got)
            got += len(d)
        w.join()
        s.close()
        results[k] = 'ok'
    except Exception as e:
        results[k] = 'client %d: %s' % (k, e)
t0 = time.time()
ts = [threading.Thread(target=one, args=(k,)) for k in range(clients)]
for t in ts: t.start()
for t in ts: t.join()
dt = time.time() - t0
bad = [r for r in results.values() if r != 'ok']
if bad or len(results) != clients:
    print('fail', '; '.join(bad), flush=True)
    sys.exit(1)
print('ok', clients * nbytes, dt, flush=True)
";

/// What a client helper reported: `ok ...` fields, or its complaint.
fn client_report(
    p: &mut Proc,
    out: &Lines,
    err: &Lines,
    limit: Duration,
) -> Result<Vec<String>, String> {
    let line = out.wait_for(limit, |l| l.starts_with("ok") || l.starts_with("fail"));
    let _ = p.wait_exit(Duration::from_secs(5));
    match line {
        Some(l) if l.starts_with("ok") => {
            Ok(l.split_whitespace().skip(1).map(str::to_string).collect())
        }
        Some(l) => Err(l.trim_start_matches("fail").trim().to_string()),
        None => Err(format!("no result within {limit:?}: {}", err.tail())),
    }
}

/// A running client helper.
pub struct Client {
    proc: Proc,
    out: Lines,
    err: Lines,
}

impl Client {
    /// Wait at most `limit` for its `ok` line; returns the fields after it.
    pub fn result(&mut self, limit: Duration) -> Result<Vec<String>, String> {
        client_report(&mut self.proc, &self.out, &self.err, limit)
    }

    /// Its stdout lines.
    pub fn out(&self) -> &Lines {
        &self.out
    }

    /// Wait at most `limit` for it to exit by itself; once it has, its
    /// output is complete in [`Client::out`] (bounded by another 5 s, in
    /// case a child of it holds the pipes open).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let st = self.proc.wait_exit(limit)?;
        self.out.wait_end(Duration::from_secs(5));
        self.err.wait_end(Duration::from_secs(5));
        Some(st)
    }
}

/// `clients` python TCP clients at once against an echo server at `to`:
/// each sends `bytes` of pattern `k` (its number) while reading the echo
/// back, checks every byte, then closes. Reports `ok TOTAL SECONDS`.
/// Connections refused in the first 15 s are retried.
pub fn tcp_echo_clients(
    place: &Place,
    to: SocketAddr,
    clients: u32,
    bytes: u64,
) -> PeerResult<Client> {
    let py = python3()?;
    let script = format!("{PATTERN_PY}{TCP_ECHO_CLIENTS}");
    let args = [
        to.ip().to_string(),
        to.port().to_string(),
        clients.to_string(),
        bytes.to_string(),
    ];
    let (proc, out, err) = python(place, &py, &script, &args)?;
    Ok(Client { proc, out, err })
}

const UDP_ECHO_SERVER: &str = "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((ARGS[0], int(ARGS[1])))
print('ready', s.getsockname()[1], flush=True)
while True:
    d, a = s.recvfrom(65536)
    s.sendto(d, a)
";

/// A python UDP echo server on `ip:port` (0: any).
pub fn udp_echo_server(place: &Place, ip: Ipv4Addr, port: u16) -> PeerResult<Server> {
    let what = "python UDP echo server";
    python_server(place, &python3()?, UDP_ECHO_SERVER, ip, port, &[], what)
}

const UDP_ECHO_CLIENT: &str = "
import socket, struct, time
host, port, count, size = ARGS[0], int(ARGS[1]), int(ARGS[2]), int(ARGS[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
rtts, resent = [], 0
for seq in range(count):
    m = struct.pack('>I', seq) + bytes((seq * 7 + j) % 251 for j in range(size - 4))
    for attempt in range(4):
        t0 = time.time()
        s.sendto(m, (host, port))
        got = None
        try:
            while True:
                d, a = s.recvfrom(65536)
                if d == m:
                    got = time.time() - t0
                    break
                if len(d) < 4 or struct.unpack('>I', d[:4])[0] >= seq:
                    print('fail wrong reply to datagram', seq, flush=True)
                    sys.exit(1)
        except socket.timeout:
            pass
        if got is not None:
            rtts.append(got)
            break
        resent += 1
    else:
        print('fail datagram', seq, 'unanswered after 4 tries', flush=True)
        sys.exit(1)
rtts.sort()
p99 = rtts[min(len(rtts) - 1, len(rtts) * 99 // 100)]
print('ok', count, int(sum(rtts) / len(rtts) * 1e6), int(p99 * 1e6), resent, flush=True)
";

/// A python UDP client: `count` datagrams of `size` bytes to an echo
/// server at `to`, one at a time, each checked; a datagram unanswered in
/// 0.5 s is sent again (at most 4 times: the first ones may race the
/// server's start). Reports `ok COUNT AVG_US P99_US RESENT`.
pub fn udp_echo_client(
    place: &Place,
    to: SocketAddr,
    count: u32,
    size: usize,
) -> PeerResult<Client> {
    let py = python3()?;
    let args = [
        to.ip().to_string(),
        to.port().to_string(),
        count.to_string(),
        size.max(8).to_string(),
    ];
    let (proc, out, err) = python(place, &py, UDP_ECHO_CLIENT, &args)?;
    Ok(Client { proc, out, err })
}

// ---------------------------------------------------------------------------
// HTTP: python's http.server, a POST recorder, curl.
// ---------------------------------------------------------------------------

/// The files [`http_server`] serves: `/hello.txt` and `/big.bin`.
pub const HELLO_TXT: &str = "hello from python\n";

/// `python3 -m http.server` serving a scratch directory with
/// [`HELLO_TXT`] as `/hello.txt` and `big` bytes of pattern as `/big.bin`.
pub struct HttpServer {
    /// The server.
    pub server: Server,
    /// The directory it serves.
    pub dir: TempDir,
    /// The bytes of `/big.bin`.
    pub big: Vec<u8>,
}

/// Start `python3 -m http.server` on `ip` (any free port) with a `big`-byte
/// `/big.bin`.
pub fn http_server(place: &Place, ip: Ipv4Addr, big: usize) -> PeerResult<HttpServer> {
    let py = python3()?;
    let dir = TempDir::new("www")?;
    let bytes: Vec<u8> = (0..big).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.path().join("hello.txt"), HELLO_TXT)
        .and_then(|_| std::fs::write(dir.path().join("big.bin"), &bytes))
        .map_err(|e| PeerError::Failed(format!("writing the web root: {e}")))?;
    // A free port first: http.server prints the port it got, but its
    // banner format is not an interface.
    let port = place.free_port(ip)?;
    let mut c = place.command(&py);
    c.args(["-u", "-m", "http.server", &port.to_string(), "--bind"])
        .arg(ip.to_string())
        .arg("--directory")
        .arg(dir.path());
    let (mut proc, out, err) = Proc::spawn("python3", &mut c)?;
    let addr = SocketAddr::from((ip, port));
    let end = Instant::now() + Duration::from_secs(20);
    while !place.can_connect(addr) {
        if proc.exited() || Instant::now() >= end {
            return failed(format!(
                "python3 -m http.server did not listen on {addr}: {}",
                err.tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(HttpServer {
        server: Server {
            proc,
            addr,
            out,
            err,
        },
        dir,
        big: bytes,
    })
}

const POST_RECORDER: &str = "
import http.server, json
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_POST(self):
        n = int(self.headers.get('Content-Length', '0'))
        body = self.rfile.read(n)
        rec = {'path': self.path, 'type': self.headers.get('Content-Type'),
               'body': body.decode('utf-8', 'replace')}
        out = json.dumps(rec).encode()
        print('record', json.dumps(rec), flush=True)
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer((ARGS[0], int(ARGS[1])), H)
print('ready', s.server_address[1], flush=True)
s.serve_forever()
";

/// A python `http.server` handler that answers every POST with a JSON
/// record of it (`{"path", "type", "body"}`) and prints the same record
/// as a `record {...}` line (see [`next_record`]).
pub fn post_recorder(place: &Place, ip: Ipv4Addr) -> PeerResult<Server> {
    let what = "python POST recorder";
    python_server(place, &python3()?, POST_RECORDER, ip, 0, &[], what)
}

/// The `n`-th (from 0) record a [`post_recorder`] printed, waiting at most 10 s.
pub fn next_record(s: &Server, n: usize) -> Result<String, String> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let recs: Vec<String> = s
            .out
            .all()
            .into_iter()
            .filter_map(|l| l.strip_prefix("record ").map(str::to_string))
            .collect();
        if let Some(r) = recs.get(n) {
            return Ok(r.clone());
        }
        if Instant::now() >= end {
            return Err(format!(
                "the POST recorder has {} records, not {}",
                recs.len(),
                n + 1
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What curl got: status, content type, body.
#[derive(Debug, Clone)]
pub struct CurlReply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type` (empty if none).
    pub content_type: String,
    /// The body.
    pub body: Vec<u8>,
}

impl CurlReply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Run `curl` here with `args` (no proxy, 15 s per transfer, bounded).
pub fn curl(place: &Place, args: &[&str]) -> PeerResult<CurlReply> {
    let curl = program("curl")?;
    let mut cmd = place.command(curl);
    cmd.args([
        "-sS",
        "--noproxy",
        "*",
        "--max-time",
        "15",
        "-w",
        "\n%{http_code} %{content_type}",
    ])
    .args(args);
    let out = run_bounded(&mut cmd, Duration::from_secs(30))
        .map_err(|e| PeerError::Failed(format!("curl {args:?}: {e}")))?;
    if !out.status.success() {
        return failed(format!(
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let s = out.stdout;
    let nl = s
        .iter()
        .rposition(|&b| b == b'\n')
        .ok_or_else(|| PeerError::Failed("curl printed no status".into()))?;
    let tail = String::from_utf8_lossy(&s[nl + 1..]).into_owned();
    let (code, ctype) = tail.split_once(' ').unwrap_or((&tail, ""));
    Ok(CurlReply {
        status: code
            .parse()
            .map_err(|_| PeerError::Failed(format!("curl status {code:?}")))?,
        content_type: ctype.to_string(),
        body: s[..nl].to_vec(),
    })
}

/// Ask `url` with curl until an HTTP answer comes (any status), at most
/// `limit`: the server is up.
pub fn curl_until_up(place: &Place, url: &str, limit: Duration) -> PeerResult<()> {
    let end = Instant::now() + limit;
    loop {
        match curl(place, &["--max-time", "3", url]) {
            Ok(_) => return Ok(()),
            Err(PeerError::NotInstalled(p)) => return Err(PeerError::NotInstalled(p)),
            Err(e) if Instant::now() >= end => return failed(format!("{url} did not answer: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

// ---------------------------------------------------------------------------
// NTP: chronyd.
// ---------------------------------------------------------------------------

/// chronyd serving NTP from the local clock (stratum 8) on `ip:port`,
/// never touching this host's clock (`-x`). Waits (bounded) until it
/// answers.
pub fn chronyd(place: &Place, ip: Ipv4Addr, port: u16) -> PeerResult<(Proc, TempDir)> {
    let chronyd = program("chronyd")?;
    let dir = TempDir::new("chrony")?;
    let conf = format!(
        "port {port}\nbindaddress {ip}\nallow all\nlocal stratum 8\ncmdport 0\nbindcmdaddress /\npidfile {}\n",
        dir.file("chronyd.pid")
    );
    let path = dir.file("chrony.conf");
    std::fs::write(&path, conf).map_err(|e| PeerError::Failed(format!("{path}: {e}")))?;
    let mut c = place.command(chronyd);
    // -U: no check for root (unprivileged port), -d: foreground, -x: never
    // touch the clock.
    c.args(["-U", "-f", &path, "-d", "-x"]);
    let (mut proc, _out, err) = Proc::spawn("chronyd", &mut c)?;
    let server = SocketAddr::from((ip, port));
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let answered = place.run(move || {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            s.set_read_timeout(Some(Duration::from_millis(300)))?;
            let mut req = [0u8; 48];
            req[0] = 0x23; // LI 0, version 4, mode 3 (client)
            s.send_to(&req, server)?;
            let mut b = [0u8; 64];
            s.recv_from(&mut b).map(|(n, _)| n == 48)
        })?;
        if answered.unwrap_or(false) {
            return Ok((proc, dir));
        }
        if proc.exited() || Instant::now() >= end {
            return failed(format!(
                "chronyd does not answer on {server}: {}",
                err.tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------
// MQTT: mosquitto.
// ---------------------------------------------------------------------------

/// mosquitto listening on `ip:port`, anonymous, no persistence, logging
/// everything to its stdout ([`Server::out`]). Waits until it accepts.
pub fn mosquitto(place: &Place, ip: Ipv4Addr, port: u16) -> PeerResult<(Server, TempDir)> {
    let m = program("mosquitto")?;
    let dir = TempDir::new("mosq")?;
    let conf = dir.file("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} {ip}\nallow_anonymous true\npersistence false\nlog_dest stdout\nlog_type all\n"
        ),
    )
    .map_err(|e| PeerError::Failed(format!("{conf}: {e}")))?;
    let mut c = place.command(m);
    c.args(["-c", &conf, "-v"]);
    let (mut proc, out, err) = Proc::spawn("mosquitto", &mut c)?;
    let addr = SocketAddr::from((ip, port));
    let end = Instant::now() + Duration::from_secs(15);
    while !place.can_connect(addr) {
        if proc.exited() || Instant::now() >= end {
            return failed(format!(
                "mosquitto did not listen on {addr}: {} {}",
                out.tail(),
                err.tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((
        Server {
            proc,
            addr,
            out,
            err,
        },
        dir,
    ))
}

/// `mosquitto_pub` a message at QoS 1 (retained if `retain`) to `broker`.
pub fn mosquitto_pub(
    place: &Place,
    broker: SocketAddr,
    topic: &str,
    msg: &str,
    retain: bool,
) -> PeerResult<()> {
    let p = program("mosquitto_pub")?;
    let mut c = place.command(p);
    c.args([
        "-h",
        &broker.ip().to_string(),
        "-p",
        &broker.port().to_string(),
    ])
    .args(["-q", "1", "-t", topic, "-m", msg]);
    if retain {
        c.arg("-r");
    }
    let out = run_bounded(&mut c, Duration::from_secs(20))
        .map_err(|e| PeerError::Failed(format!("mosquitto_pub: {e}")))?;
    if !out.status.success() {
        return failed(format!(
            "mosquitto_pub: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// `mosquitto_sub` on `filter` at QoS 1, printing `topic payload` lines,
/// exiting after `count` messages or 60 s. Returns once it is subscribed.
pub fn mosquitto_sub(
    place: &Place,
    broker: SocketAddr,
    filter: &str,
    count: u32,
) -> PeerResult<Client> {
    let p = program("mosquitto_sub")?;
    let mut c = place.command(p);
    c.args([
        "-h",
        &broker.ip().to_string(),
        "-p",
        &broker.port().to_string(),
    ])
    .args([
        "-q",
        "1",
        "-v",
        "-d",
        "-t",
        filter,
        "-C",
        &count.to_string(),
        "-W",
        "60",
    ]);
    let (mut proc, out, err) = Proc::spawn("mosquitto_sub", &mut c)?;
    if out
        .wait_for(Duration::from_secs(15), |l| l.contains("SUBACK"))
        .is_none()
    {
        let _ = proc.exited();
        return failed(format!(
            "mosquitto_sub did not subscribe: {} {}",
            out.tail(),
            err.tail()
        ));
    }
    Ok(Client { proc, out, err })
}

// ---------------------------------------------------------------------------
// WebSocket: python websockets.
// ---------------------------------------------------------------------------

const WS_ECHO_SERVER: &str = "
import asyncio, websockets
async def echo(ws):
    async for m in ws:
        await ws.send(m)
async def main():
    async with websockets.serve(echo, ARGS[0], int(ARGS[1]), ping_interval=None, max_size=2**20) as s:
        port = list(s.sockets)[0].getsockname()[1]
        print('ready', port, flush=True)
        await asyncio.sleep(float(sys.argv[1]))
asyncio.run(main())
";

/// python websockets' echo server on `ip` (any free port): echoes every
/// message; fails the connection on any unmasked client frame.
pub fn ws_echo_server(place: &Place, ip: Ipv4Addr) -> PeerResult<Server> {
    let py = python_with_websockets()?;
    let what = "python websockets echo server";
    python_server(place, &py, WS_ECHO_SERVER, ip, 0, &[], what)
}

const WS_CLIENTS: &str = "
import asyncio, time, websockets
URI, N, SIZE = ARGS[0], int(ARGS[1]), int(ARGS[2])
async def connect():
    end = time.time() + 20
    while True:
        try:
            return await websockets.connect(URI, ping_interval=None, max_size=2**20)
        except Exception:
            if time.time() > end:
                raise
            await asyncio.sleep(0.1)
async def one(k):
    ws = await connect()
    try:
        for i in range(10):
            m = 'hello %d.%d' % (k, i)
            await ws.send(m)
            assert await ws.recv() == m, 'text echo'
        data = os.urandom(SIZE)
        await ws.send(data)
        assert await ws.recv() == data, 'binary echo'
        await ws.send(['frag', 'mented'])
        assert await ws.recv() == 'fragmented', 'fragmented echo'
        pong = await ws.ping(b'py-ping')
        await asyncio.wait_for(pong, 5)
    finally:
        await ws.close()
    assert ws.close_code == 1000, ws.close_code
async def main():
    t0 = time.time()
    try:
        await asyncio.wait_for(asyncio.gather(*[one(k) for k in range(N)]), 60)
    except Exception as e:
        print('fail', repr(e), flush=True)
        sys.exit(1)
    print('ok', N, time.time() - t0, flush=True)
asyncio.run(main())
";

/// `clients` python websockets clients at once against `uri`: each sends
/// 10 text messages, a `size`-byte binary one, a fragmented one and a
/// ping, checks every echo and the pong, and closes with code 1000 (both
/// ways). Reports `ok CLIENTS SECONDS`. Connects are retried for 20 s.
pub fn ws_clients(place: &Place, uri: &str, clients: u32, size: usize) -> PeerResult<Client> {
    let py = python_with_websockets()?;
    let args = [uri.to_string(), clients.to_string(), size.to_string()];
    let (proc, out, err) = python(place, &py, WS_CLIENTS, &args)?;
    Ok(Client { proc, out, err })
}

// ---------------------------------------------------------------------------
// TLS: a test PKI and openssl s_server.
// ---------------------------------------------------------------------------

/// The server name the good and untrusted certificates are for.
pub const TLS_HOST: &str = "tls.test";

/// Certificates made at run time with the `openssl` CLI, all ECDSA P-256
/// (what embedded-tls verifies): a test CA; a server certificate for
/// [`TLS_HOST`] it signed (`good`); one for the same name signed by
/// another CA nobody trusts (`untrusted`); one the test CA signed for
/// `wrong.test` (`wrong_host`).
pub struct TestPki {
    dir: TempDir,
}

/// One server certificate and its key (PEM files).
#[derive(Debug, Clone)]
pub struct CertKey {
    /// Certificate file.
    pub cert: String,
    /// Key file.
    pub key: String,
}

fn openssl(args: &[&str]) -> PeerResult<()> {
    let o = program("openssl")?;
    let out = run_bounded(Command::new(o).args(args), Duration::from_secs(30))
        .map_err(|e| PeerError::Failed(format!("openssl {}: {e}", args.join(" "))))?;
    if !out.status.success() {
        return failed(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

impl TestPki {
    /// Generate everything in a scratch directory.
    pub fn generate() -> PeerResult<TestPki> {
        program("openssl")?;
        let dir = TempDir::new("pki")?;
        let pki = TestPki { dir };
        let d = |f: &str| pki.dir.file(f);
        for (ca, cn) in [("ca", "netdever test CA"), ("rogue", "untrusted CA")] {
            openssl(&[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &d(&format!("{ca}.key")),
            ])?;
            openssl(&[
                "req",
                "-x509",
                "-new",
                "-key",
                &d(&format!("{ca}.key")),
                "-sha256",
                "-days",
                "30",
                "-subj",
                &format!("/CN={cn}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-out",
                &d(&format!("{ca}.pem")),
            ])?;
        }
        for (name, ca, host) in [
            ("good", "ca", TLS_HOST),
            ("untrusted", "rogue", TLS_HOST),
            ("wrong", "ca", "wrong.test"),
        ] {
            let ext = d(&format!("{name}.ext"));
            let san = format!("DNS:{host}");
            std::fs::write(
                &ext,
                format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\n"),
            )
            .map_err(|e| PeerError::Failed(format!("{ext}: {e}")))?;
            openssl(&[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &d(&format!("{name}.key")),
            ])?;
            openssl(&[
                "req",
                "-new",
                "-key",
                &d(&format!("{name}.key")),
                "-subj",
                &format!("/CN={host}"),
                "-out",
                &d(&format!("{name}.csr")),
            ])?;
            openssl(&[
                "x509",
                "-req",
                "-in",
                &d(&format!("{name}.csr")),
                "-CA",
                &d(&format!("{ca}.pem")),
                "-CAkey",
                &d(&format!("{ca}.key")),
                "-CAcreateserial",
                "-days",
                "30",
                "-sha256",
                "-extfile",
                &ext,
                "-out",
                &d(&format!("{name}.pem")),
            ])?;
        }
        Ok(pki)
    }

    /// The test CA's certificate (what clients trust).
    pub fn ca(&self) -> String {
        self.dir.file("ca.pem")
    }

    fn pair(&self, name: &str) -> CertKey {
        CertKey {
            cert: self.dir.file(&format!("{name}.pem")),
            key: self.dir.file(&format!("{name}.key")),
        }
    }

    /// For [`TLS_HOST`], signed by the test CA.
    pub fn good(&self) -> CertKey {
        self.pair("good")
    }

    /// For [`TLS_HOST`], signed by a CA nobody trusts.
    pub fn untrusted(&self) -> CertKey {
        self.pair("untrusted")
    }

    /// For `wrong.test`, signed by the test CA.
    pub fn wrong_host(&self) -> CertKey {
        self.pair("wrong")
    }
}

/// `openssl s_server -tls1_3 -www` on `ip:port` with `cert`: answers a GET
/// with `HTTP/1.0 200 ok` and a status page. Waits for its `ACCEPT`.
pub fn s_server(place: &Place, ip: Ipv4Addr, port: u16, cert: &CertKey) -> PeerResult<Server> {
    start_s_server(place, ip, port, cert, None)
}

/// `openssl s_server -tls1_3 -WWW` on `ip:port` with `cert`, serving the
/// files of `dir` (`GET /name` answers `HTTP/1.0 200 ok` and the file, then
/// closes). Waits for its `ACCEPT`.
pub fn s_server_files(
    place: &Place,
    ip: Ipv4Addr,
    port: u16,
    cert: &CertKey,
    dir: &Path,
) -> PeerResult<Server> {
    start_s_server(place, ip, port, cert, Some(dir))
}

fn start_s_server(
    place: &Place,
    ip: Ipv4Addr,
    port: u16,
    cert: &CertKey,
    files: Option<&Path>,
) -> PeerResult<Server> {
    let o = program("openssl")?;
    let accept = format!("{ip}:{port}");
    let mut c = place.command(o);
    c.args([
        "s_server", "-accept", &accept, "-cert", &cert.cert, "-key", &cert.key,
    ])
    .arg("-tls1_3");
    match files {
        Some(dir) => c.arg("-WWW").current_dir(dir),
        None => c.arg("-www"),
    };
    let (mut proc, out, err) = Proc::spawn("openssl", &mut c)?;
    if out
        .wait_for(Duration::from_secs(15), |l| l.contains("ACCEPT"))
        .is_none()
    {
        let _ = proc.exited();
        return failed(format!("openssl s_server did not start: {}", err.tail()));
    }
    Ok(Server {
        proc,
        addr: SocketAddr::from((ip, port)),
        out,
        err,
    })
}
