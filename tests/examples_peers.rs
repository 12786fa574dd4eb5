//! The HTTP and NTP examples against real programs instead of the simulated
//! peer: `python3 -m http.server` (and a python `http.server` handler that
//! records POSTs) for the clients, `curl` driving the servers, `chronyd`
//! for `ntpclient`. Each runs the example's own `run` function.
//!
//! Two ways to reach the programs:
//!
//! * **passt** (`passt_*`): the device is behind passt, the programs listen
//!   on this host's 127.0.0.1, the device reaches them at the gateway, and
//!   curl reaches the device's servers through passt's port forward. No
//!   root needed (chronyd runs with `-U` on an unprivileged port).
//! * **TAP** (`tap_*`, root): the device is on a TAP interface inside a
//!   test-made network namespace (kernel side 10.89.0.1/24, device
//!   10.89.0.2/24); the programs run inside that namespace.
//!
//! A missing program or privilege skips a test with a message; under
//! `CI=true` (or `NETDEVER_REQUIRE_PEERS=1`) it fails instead.
//! Programs: Debian packages passt, python3, curl, chrony, iproute2.
#![cfg(all(feature = "std", feature = "full-stack", target_os = "linux"))]

mod support;

#[path = "../examples/common/mod.rs"]
mod common;

#[path = "../examples/apps/http_get.rs"]
mod http_get;
#[path = "../examples/apps/http_head.rs"]
mod http_head;
#[path = "../examples/apps/http_post.rs"]
mod http_post;
#[path = "../examples/apps/http_postform.rs"]
mod http_postform;
#[path = "../examples/apps/ntpclient.rs"]
mod ntpclient;
#[path = "../examples/apps/webclient.rs"]
mod webclient;
#[path = "../examples/apps/webserver.rs"]
mod webserver;
#[path = "../examples/apps/webstatic.rs"]
mod webstatic;

use std::io::BufRead;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Net, Opts, Outcome, Spec};

/// Check that every program in `programs` is installed (and root if
/// `root`); `false` = skip (panics under CI).
fn need(test: &str, programs: &[&str], root: bool) -> bool {
    if root && support::require(test, "root privileges", support::is_root()).is_err() {
        return false;
    }
    programs.iter().all(|p| {
        support::require(
            test,
            &format!("the `{p}` program"),
            support::find_program(p).is_some(),
        )
        .is_ok()
    })
}

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("ndv-ex-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn file(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A program started by a test (outside any namespace), killed by its own
/// handle on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command) -> (Proc, ChildStdout) {
    let mut c = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let out = c.stdout.take().unwrap();
    (Proc(c), out)
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

/// Files for the python server.
fn www(dir: &TempDir) -> Vec<u8> {
    std::fs::write(dir.path().join("hello.txt"), "hello from python\n").unwrap();
    let big = pattern(300_000);
    std::fs::write(dir.path().join("big.bin"), &big).unwrap();
    big
}

/// A python `http.server` handler that answers POSTs with a JSON record
/// of what it got and prints the same record on stdout; prints `port N`
/// once it listens.
const POST_SERVER: &str = r#"
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        rec = {"path": self.path, "type": self.headers.get("Content-Type"),
               "body": body.decode("utf-8", "replace")}
        out = json.dumps(rec).encode()
        print(json.dumps(rec), flush=True)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), H)
print("port", s.server_address[1], flush=True)
s.serve_forever()
"#;

/// Run an example's `run` on its own thread, bounded.
fn run_example(name: &str, net: &Net, o: &Opts, run: fn(&Net, &Opts) -> Outcome) -> String {
    std::thread::scope(|s| {
        let h = s.spawn(|| run(net, o));
        let t0 = std::time::Instant::now();
        while !h.is_finished() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{name} did not finish within 60 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        match h.join().unwrap() {
            Ok(s) => {
                eprintln!("{name}: {s}");
                s
            }
            Err(e) => panic!("{name} failed: {e}"),
        }
    })
}

fn opts(spec: &Spec, set: &[(&'static str, &str)]) -> Opts {
    let mut o = Opts::defaults(spec).quiet();
    for (k, v) in set {
        o = o.set(k, v);
    }
    o
}

/// Run the HTTP client examples against a GET server at `get_base` and
/// the POST recorder at `post_base` (whose stdout is `post_out`).
fn clients(
    net: &Net,
    get_base: &str,
    post_base: &str,
    post_out: ChildStdout,
    big: &[u8],
    dir: &TempDir,
) {
    // webclient: the hand-written GET.
    let r = run_example(
        "webclient",
        net,
        &opts(
            &webclient::SPEC,
            &[("--url", &format!("{get_base}/hello.txt"))],
        ),
        webclient::run,
    );
    assert!(r.contains("200 OK, 18 bytes"), "{r}");

    // http_get: a 300 kB body, saved and compared.
    let out = dir.file("got.bin");
    let r = run_example(
        "http_get",
        net,
        &opts(
            &http_get::SPEC,
            &[("--url", &format!("{get_base}/big.bin")), ("--out", &out)],
        ),
        http_get::run,
    );
    assert!(r.contains("200 OK"), "{r}");
    assert!(std::fs::read(&out).unwrap() == big, "http_get body differs");

    // http_head: the length without the body; a 404 fails the example.
    let r = run_example(
        "http_head",
        net,
        &opts(
            &http_head::SPEC,
            &[("--url", &format!("{get_base}/big.bin"))],
        ),
        http_head::run,
    );
    assert!(r.contains(&format!("Content-Length {}", big.len())), "{r}");
    let e = http_head::run(
        net,
        &opts(
            &http_head::SPEC,
            &[("--url", &format!("{get_base}/missing"))],
        ),
    )
    .unwrap_err();
    assert!(e.contains("404"), "{e}");

    // http_post and http_postform: what the python server received.
    let data = r#"{"sensor":"t1","celsius":21.5}"#;
    run_example(
        "http_post",
        net,
        &opts(
            &http_post::SPEC,
            &[("--url", &format!("{post_base}/post")), ("--data", data)],
        ),
        http_post::run,
    );
    let form_arg = "name=Ada Lovelace&note=1+1=2";
    run_example(
        "http_postform",
        net,
        &opts(
            &http_postform::SPEC,
            &[
                ("--url", &format!("{post_base}/form")),
                ("--form", form_arg),
            ],
        ),
        http_postform::run,
    );
    let mut lines = std::io::BufReader::new(post_out).lines();
    let mut next = || {
        lines
            .next()
            .expect("a record from the python POST server")
            .unwrap()
    };
    let post = next();
    assert!(post.contains(r#""path": "/post""#), "{post}");
    assert!(post.contains(r#""type": "application/json""#), "{post}");
    assert!(
        post.contains(r#""body": "{\"sensor\":\"t1\",\"celsius\":21.5}""#),
        "{post}"
    );
    let form = next();
    assert!(form.contains(r#""path": "/form""#), "{form}");
    assert!(
        form.contains(r#""type": "application/x-www-form-urlencoded""#),
        "{form}"
    );
    assert!(
        form.contains(r#""body": "name=Ada+Lovelace&note=1%2B1%3D2""#),
        "{form}"
    );
}

/// `curl` (bounded, no proxy): returns (status, content type, body).
fn curl(prefix: &[&str], args: &[&str]) -> (u16, String, Vec<u8>) {
    let mut cmd = Command::new(prefix.first().copied().unwrap_or("curl"));
    if !prefix.is_empty() {
        cmd.args(&prefix[1..]).arg("curl");
    }
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
    let out = support::run_with_timeout(&mut cmd, Duration::from_secs(30)).expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = out.stdout;
    let nl = s.iter().rposition(|&b| b == b'\n').unwrap();
    let tail = String::from_utf8_lossy(&s[nl + 1..]).into_owned();
    let (code, ctype) = tail.split_once(' ').unwrap_or((&tail, ""));
    (code.parse().unwrap(), ctype.to_string(), s[..nl].to_vec())
}

/// curl against the `webserver` example at `base`.
fn curl_webserver(prefix: &[&str], base: &str, dev_ip: &str, dir: &TempDir) {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (c, t, b) = curl(prefix, &[&format!("{base}/hello?name=curl")]);
    assert_eq!(
        (c, t.as_str(), text(&b).as_str()),
        (200, "text/plain; charset=utf-8", "Hello, curl!\n")
    );

    let (c, t, b) = curl(prefix, &[&format!("{base}/")]);
    assert_eq!((c, t.as_str()), (200, "text/html; charset=utf-8"));
    assert!(
        text(&b).contains(&format!("Hello from {dev_ip}")),
        "{}",
        text(&b)
    );

    // Cookies: curl's jar carries the counter from visit to visit.
    let jar = dir.file("cookies.txt");
    for visit in 1..=3 {
        let (c, _, b) = curl(prefix, &["-b", &jar, "-c", &jar, &format!("{base}/cookie")]);
        assert_eq!((c, text(&b)), (200, format!("visit {visit}\n")));
    }
    let jar_text = std::fs::read_to_string(&jar).unwrap();
    assert!(jar_text.contains("visits\t3"), "cookie jar: {jar_text}");

    // A form POST (curl -d is x-www-form-urlencoded), and one without a name.
    let (c, t, b) = curl(
        prefix,
        &[
            "-d",
            "name=Grace Hopper&message=<COBOL>",
            &format!("{base}/form"),
        ],
    );
    assert_eq!((c, t.as_str()), (200, "text/html; charset=utf-8"));
    let page = text(&b);
    assert!(page.contains("Thanks, Grace Hopper!"), "{page}");
    assert!(page.contains("<td>&lt;COBOL&gt;</td>"), "{page}");
    let (c, _, _) = curl(
        prefix,
        &["-d", "message=anonymous", &format!("{base}/form")],
    );
    assert_eq!(c, 400);

    // JSON.
    let (c, t, b) = curl(
        prefix,
        &[
            "-H",
            "Content-Type: application/json",
            "--data",
            r#"{"led":true}"#,
            &format!("{base}/api/echo"),
        ],
    );
    assert_eq!((c, t.as_str()), (200, "application/json"));
    assert_eq!(
        text(&b),
        "{\"method\":\"POST\",\"content_type\":\"application/json\",\"length\":12,\"body\":\"{\\\"led\\\":true}\"}\n"
    );
    let (c, t, b) = curl(prefix, &[&format!("{base}/api/status")]);
    assert_eq!((c, t.as_str()), (200, "application/json"));
    assert!(
        text(&b).contains(&format!("\"device\":\"{dev_ip}\"")),
        "{}",
        text(&b)
    );

    let (c, _, _) = curl(prefix, &[&format!("{base}/no/such/page")]);
    assert_eq!(c, 404);
    let (c, _, _) = curl(prefix, &["-X", "DELETE", &format!("{base}/api/status")]);
    assert_eq!(c, 405);
}

/// curl against the `webstatic` example at `base`: every file's bytes and
/// type, `/`, ETag revalidation, 404.
fn curl_webstatic(prefix: &[&str], base: &str) {
    for (path, ctype, bytes) in webstatic::FILES {
        let (c, t, b) = curl(prefix, &[&format!("{base}{path}")]);
        assert_eq!((c, t.as_str()), (200, *ctype), "{path}");
        assert!(b == *bytes, "{path}: body differs");
        let tag = webstatic::etag(bytes);
        let (c, _, b) = curl(
            prefix,
            &[
                "-H",
                &format!("If-None-Match: {tag}"),
                &format!("{base}{path}"),
            ],
        );
        assert_eq!((c, b.len()), (304, 0), "{path} with its ETag");
    }
    let (c, t, b) = curl(prefix, &[&format!("{base}/")]);
    assert_eq!((c, t.as_str()), (200, "text/html; charset=utf-8"));
    assert!(b == webstatic::FILES[0].2);
    let (c, _, _) = curl(prefix, &[&format!("{base}/missing.png")]);
    assert_eq!(c, 404);
}

/// Start a server example on its own thread; stop it with the returned
/// guard's `finish`.
struct Serving<'s> {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::ScopedJoinHandle<'s, Outcome>,
}

impl Serving<'_> {
    fn finish(self, name: &str) -> String {
        self.stop.store(true, Ordering::Release);
        match self.handle.join().unwrap() {
            Ok(s) => s,
            Err(e) => panic!("{name}: {e}"),
        }
    }
}

fn serve<'s, 'e>(
    s: &'s std::thread::Scope<'s, 'e>,
    net: &'e Net,
    o: Opts,
    run: fn(&Net, &Opts) -> Outcome,
) -> Serving<'s> {
    let stop = o.stop.clone();
    let handle = s.spawn(move || run(net, &o));
    Serving { stop, handle }
}

/// Wait until something accepts TCP connections on `addr` (bounded).
fn wait_tcp(addr: SocketAddr) {
    assert!(
        support::wait_until(Duration::from_secs(15), Duration::from_millis(20), || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        }),
        "nothing listens on {addr}"
    );
}

/// chronyd's configuration: serve on `addr:port` with the local clock.
fn chrony_conf(dir: &TempDir, addr: &str, port: u16) -> String {
    let conf = format!(
        "port {port}\nbindaddress {addr}\nallow all\nlocal stratum 8\ncmdport 0\nbindcmdaddress /\npidfile {}\n",
        dir.file("chronyd.pid")
    );
    let path = dir.file("chrony.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

/// Ask `addr` for the time with a std socket until it answers (bounded):
/// chronyd is up.
fn wait_ntp(sock_in: impl Fn() -> UdpSocket, addr: SocketAddr) {
    let ok = support::wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        let s = sock_in();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut req = [0u8; 48];
        req[0] = 0x23;
        let _ = s.send_to(&req, addr);
        let mut b = [0u8; 64];
        matches!(s.recv_from(&mut b), Ok((48, _)))
    });
    assert!(ok, "chronyd does not answer on {addr}");
}

// ---------------------------------------------------------------- passt

#[test]
fn passt_clients_against_python_http_server() {
    let test = "passt_clients_against_python_http_server";
    if !need(test, &["passt", "python3"], false) {
        return;
    }
    let dir = TempDir::new("py");
    let big = www(&dir);
    let port = free_tcp_port();
    let (_get, get_out) = spawn(Command::new("python3").args([
        "-u",
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--directory",
        &dir.path().display().to_string(),
    ]));
    let (line, _rest) = support::read_line_timeout(get_out, Duration::from_secs(20))
        .expect("python3 -m http.server did not start");
    assert!(line.starts_with("Serving HTTP"), "{line}");
    let (_post, post_out) =
        spawn(Command::new("python3").args(["-u", "-c", POST_SERVER, "127.0.0.1", "0"]));
    let (line, post_out) = support::read_line_timeout(post_out, Duration::from_secs(20))
        .expect("python POST server did not start");
    let post_port: u16 = line.trim().strip_prefix("port ").unwrap().parse().unwrap();
    let post_out = post_out.into_inner();

    support::with_timeout(test, Duration::from_secs(180), move || {
        let net = Net::passt(None, None, None).expect("device behind passt");
        // Host programs are on 127.0.0.1; the examples rewrite that to
        // passt's gateway.
        clients(
            &net,
            &format!("http://127.0.0.1:{port}"),
            &format!("http://localhost:{post_port}"),
            post_out,
            &big,
            &dir,
        );
    });
}

#[test]
fn passt_curl_drives_webserver_and_webstatic() {
    let test = "passt_curl_drives_webserver_and_webstatic";
    if !need(test, &["passt", "curl"], false) {
        return;
    }
    support::with_timeout(test, Duration::from_secs(180), move || {
        let dir = TempDir::new("curl");
        let host_port = free_tcp_port();
        let net = Net::passt(None, Some((host_port, 80)), None).expect("device behind passt");
        let dev_ip = net.dev_ip().unwrap().to_string();
        let base = format!("http://127.0.0.1:{host_port}");
        std::thread::scope(|s| {
            let mut o = Opts::defaults(&webserver::SPEC).quiet();
            o.host_port = host_port;
            let srv = serve(s, &net, o, webserver::run);
            wait_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, host_port)));
            curl_webserver(&[], &base, &dev_ip, &dir);
            let summary = srv.finish("webserver");
            assert!(summary.starts_with("served"), "{summary}");

            let mut o = Opts::defaults(&webstatic::SPEC).quiet();
            o.host_port = host_port;
            let srv = serve(s, &net, o, webstatic::run);
            curl_webstatic(&[], &base);
            srv.finish("webstatic");
        });
    });
}

#[test]
fn passt_ntpclient_against_chronyd() {
    let test = "passt_ntpclient_against_chronyd";
    // -U: chronyd runs without root too (unprivileged port, -x: it never
    // touches the clock).
    if !need(test, &["passt", "chronyd"], false) {
        return;
    }
    let dir = TempDir::new("chrony");
    let port = free_udp_port();
    let conf = chrony_conf(&dir, "127.0.0.1", port);
    let (_chronyd, _) = spawn(
        Command::new(support::find_program("chronyd").unwrap())
            .args(["-U", "-f", &conf, "-d", "-x"]),
    );
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait_ntp(|| UdpSocket::bind("127.0.0.1:0").unwrap(), server);
    support::with_timeout(test, Duration::from_secs(120), move || {
        let net = Net::passt(None, None, None).expect("device behind passt");
        let r = run_example(
            "ntpclient",
            &net,
            &opts(
                &ntpclient::SPEC,
                &[
                    ("--server", &format!("127.0.0.1:{port}")),
                    ("--count", "2"),
                    ("--max-offset-ms", "1000"),
                ],
            ),
            ntpclient::run,
        );
        assert!(r.contains("stratum 8"), "chronyd's local stratum: {r}");
    });
}

// ------------------------------------------------------------------ TAP

#[cfg(feature = "tap")]
mod tap {
    use super::*;
    use common::Board;
    use netdever::phy::tap::TapLink;
    use netdever::{IpConfig, IpMode};
    use support::Netns;

    const TAP: &str = "ndvtap0";
    const KERNEL_IP: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 1);
    const DEV_IP: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 2);

    fn need_netns(test: &str, programs: &[&str]) -> bool {
        if let Some(missing) = support::netns_missing() {
            if support::require(test, &missing, false).is_err() {
                return false;
            }
        }
        need(test, programs, true)
    }

    /// A namespace with a TAP (kernel side 10.89.0.1/24) and our device
    /// on it (10.89.0.2/24).
    fn tap_net(tag: &str) -> (Netns, Net) {
        let ns = Netns::new(tag).expect("create network namespace");
        let tap = ns
            .run(|| TapLink::open(TAP))
            .expect("enter the namespace")
            .expect("open the TAP");
        ns.ip(&["addr", "add", &format!("{KERNEL_IP}/24"), "dev", TAP])
            .unwrap();
        ns.ip(&["link", "set", TAP, "up"]).unwrap();
        let ip = IpMode::Static(IpConfig::new(DEV_IP, 24).with_dns(KERNEL_IP));
        let net = Net::on_link(tap, ip, Board::Tap).expect("device on the TAP");
        (ns, net)
    }

    #[test]
    fn tap_clients_against_python_http_server() {
        let test = "tap_clients_against_python_http_server";
        if !need_netns(test, &["python3"]) {
            return;
        }
        let dir = TempDir::new("tappy");
        let big = www(&dir);
        let (ns, net) = tap_net("expy");
        let (_pid, out, _) = ns
            .spawn(
                ns.command(&[
                    "python3",
                    "-u",
                    "-m",
                    "http.server",
                    "8000",
                    "--bind",
                    &KERNEL_IP.to_string(),
                    "--directory",
                    &dir.path().display().to_string(),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
            )
            .expect("spawn python3 -m http.server");
        let (line, _rest) = support::read_line_timeout(out.unwrap(), Duration::from_secs(20))
            .expect("python3 -m http.server did not start");
        assert!(line.starts_with("Serving HTTP"), "{line}");
        let (_pid, out, _) = ns
            .spawn(
                ns.command(&[
                    "python3",
                    "-u",
                    "-c",
                    POST_SERVER,
                    &KERNEL_IP.to_string(),
                    "8001",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
            )
            .expect("spawn the python POST server");
        let (line, rest) = support::read_line_timeout(out.unwrap(), Duration::from_secs(20))
            .expect("python POST server did not start");
        assert_eq!(line.trim(), "port 8001");
        let post_out = rest.into_inner();
        support::with_timeout(test, Duration::from_secs(180), move || {
            clients(
                &net,
                &format!("http://{KERNEL_IP}:8000"),
                &format!("http://{KERNEL_IP}:8001"),
                post_out,
                &big,
                &dir,
            );
            drop(net);
        });
        drop(ns);
    }

    #[test]
    fn tap_curl_drives_webserver_and_webstatic() {
        let test = "tap_curl_drives_webserver_and_webstatic";
        if !need_netns(test, &["curl"]) {
            return;
        }
        let (ns, net) = tap_net("excurl");
        let ns_name = ns.name().to_string();
        support::with_timeout(test, Duration::from_secs(180), move || {
            let dir = TempDir::new("tapcurl");
            let prefix = ["ip", "netns", "exec", ns_name.as_str()];
            let base = format!("http://{DEV_IP}:80");
            std::thread::scope(|s| {
                let srv = serve(
                    s,
                    &net,
                    Opts::defaults(&webserver::SPEC).quiet(),
                    webserver::run,
                );
                curl_webserver(&prefix, &base, &DEV_IP.to_string(), &dir);
                srv.finish("webserver");
                let srv = serve(
                    s,
                    &net,
                    Opts::defaults(&webstatic::SPEC).quiet(),
                    webstatic::run,
                );
                curl_webstatic(&prefix, &base);
                srv.finish("webstatic");
            });
            drop(net);
        });
        drop(ns);
    }

    #[test]
    fn tap_ntpclient_against_chronyd() {
        let test = "tap_ntpclient_against_chronyd";
        if !need_netns(test, &["chronyd"]) {
            return;
        }
        let dir = TempDir::new("tapchrony");
        let (ns, net) = tap_net("exntp");
        let conf = chrony_conf(&dir, &KERNEL_IP.to_string(), 123);
        let chronyd = support::find_program("chronyd")
            .unwrap()
            .display()
            .to_string();
        ns.spawn(
            ns.command(&[&chronyd, "-f", &conf, "-d", "-x"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        )
        .expect("spawn chronyd");
        let ns_name = ns.name().to_string();
        wait_ntp(
            || {
                support::in_netns(&ns_name, || UdpSocket::bind("0.0.0.0:0"))
                    .unwrap()
                    .unwrap()
            },
            SocketAddr::from((KERNEL_IP, 123)),
        );
        support::with_timeout(test, Duration::from_secs(120), move || {
            let r = run_example(
                "ntpclient",
                &net,
                &opts(
                    &ntpclient::SPEC,
                    &[
                        ("--server", &format!("{KERNEL_IP}:123")),
                        ("--count", "2"),
                        ("--max-offset-ms", "1000"),
                    ],
                ),
                ntpclient::run,
            );
            assert!(r.contains("stratum 8"), "chronyd's local stratum: {r}");
            drop(net);
        });
        drop(ns);
    }
}
