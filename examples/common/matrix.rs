//! The every-example × every-backend matrix: each example's own `run`
//! function (the one its binary calls) on each backend, against real peer
//! programs ([`super::real`]): curl, python's http.server, chronyd,
//! mosquitto, python websockets, `openssl s_server`, python TCP/UDP
//! helpers.
//!
//! Backends (columns):
//!
//! | backend | device | peers | root |
//! |---|---|---|---|
//! | `stack` | full stack on a passt link | this host's loopback, through passt's gateway | no |
//! | `w5500-macraw` | full stack over the emulated W5500 in MACRAW, frames on a passt link | same | no |
//! | `esp-hosted` | full stack over the emulated ESP-Hosted-FG, frames on a passt link | same | no |
//! | `w5500-offload` | the emulated W5500's hardwired sockets = host sockets at 127.0.0.2 | 127.0.0.1 | no |
//! | `esp-at` | the emulated ESP-AT firmware's sockets = host sockets at 127.0.0.3 | 127.0.0.1 | no |
//! | `tap` | full stack on a TAP in a namespace made for the cell | inside that namespace | yes |
//!
//! Every cell gets a fresh network and fresh peers, runs on its own thread
//! and has [`CELL_LIMIT`] to finish. A cell is [`Cell::Pass`] (with a
//! throughput or latency figure), [`Cell::Fail`], [`Cell::NoPeer`] (a peer
//! program is not installed: said plainly, never a pass) or
//! [`Cell::NotApplicable`] (the backend cannot run it, with the reason).
//!
//! Include it (with `common`, `peers_ws_mqtt` and every `apps/*.rs` module
//! at the crate root, as `examples/suite.rs` and `tests/examples_matrix.rs`
//! do) as `#[path = "common/matrix.rs"] mod matrix;`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netdever::{IpConfig, IpMode, TlsSupport};

use crate::common::real::{self, PeerError, Place};
use crate::common::{stack_config, Board, Net, Opts, Outcome, PasstInfo, Spec};
use crate::peers_ws_mqtt::text;
use crate::{
    http_get, http_head, http_post, http_postform, mqttclient, ntpclient, snake, socket, tcpclient,
    tcpecho, tlsclient, udpclient, udpecho, webclient, webserver, websocket_dial,
    websocket_handler, webstatic,
};

/// Longest one cell may take before it counts as failed.
pub const CELL_LIMIT: Duration = Duration::from_secs(120);

/// A column of the matrix: where the device runs and where its peers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// The full stack on a passt link.
    Stack,
    /// The emulated W5500 in MACRAW, frames on a passt link.
    W5500Macraw,
    /// The emulated ESP32 with ESP-Hosted-FG, frames on a passt link.
    EspHosted,
    /// The emulated W5500's hardwired sockets (host sockets on loopback).
    W5500Offload,
    /// The emulated ESP-AT firmware (host sockets on loopback).
    EspAt,
    /// The full stack on a TAP in a test-made namespace (root).
    Tap,
}

impl Backend {
    /// Every backend, in column order.
    pub const ALL: [Backend; 6] = [
        Backend::Stack,
        Backend::W5500Macraw,
        Backend::EspHosted,
        Backend::W5500Offload,
        Backend::EspAt,
        Backend::Tap,
    ];

    /// The column's name.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Stack => "stack",
            Backend::W5500Macraw => "w5500-macraw",
            Backend::EspHosted => "esp-hosted",
            Backend::W5500Offload => "w5500-offload",
            Backend::EspAt => "esp-at",
            Backend::Tap => "tap",
        }
    }

    /// One line about it.
    pub fn about(self) -> &'static str {
        match self {
            Backend::Stack => "full stack on a passt link; peers on this host's loopback",
            Backend::W5500Macraw => {
                "emulated W5500 in MACRAW + full stack, frames on a passt link; peers on loopback"
            }
            Backend::EspHosted => {
                "emulated ESP-Hosted-FG + full stack, frames on a passt link; peers on loopback"
            }
            Backend::W5500Offload => {
                "emulated W5500 hardwired sockets (host sockets at 127.0.0.2); peers on 127.0.0.1"
            }
            Backend::EspAt => {
                "emulated ESP-AT firmware (host sockets at 127.0.0.3); peers on 127.0.0.1"
            }
            Backend::Tap => {
                "full stack on a TAP in a fresh network namespace; peers in it (needs root)"
            }
        }
    }

    /// Whether it needs root (network namespaces, TAP).
    pub fn needs_root(self) -> bool {
        self == Backend::Tap
    }

    /// The backend called `name`.
    pub fn parse(name: &str) -> Result<Backend, String> {
        Backend::ALL
            .into_iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Backend::ALL.iter().map(|b| b.name()).collect();
                format!(
                    "no backend named {name:?}; the backends are: {}",
                    names.join(", ")
                )
            })
    }
}

/// What one cell came to.
#[derive(Debug, Clone)]
pub enum Cell {
    /// Passed: a short figure for the table, and the example's own report.
    Pass {
        /// `12.3 MB/s`, `rtt 41 us`, `35 ms`.
        figure: String,
        /// The example's outcome line (and what the peer saw).
        detail: String,
    },
    /// Failed, with the reason.
    Fail(String),
    /// A peer program is not installed (its name).
    NoPeer(String),
    /// The backend cannot run this example, and why.
    NotApplicable(String),
}

impl Cell {
    /// The table entry: `pass 12.3 MB/s`, `FAIL`, `no curl`, `n/a`.
    pub fn short(&self) -> String {
        match self {
            Cell::Pass { figure, .. } if figure.is_empty() => "pass".into(),
            Cell::Pass { figure, .. } => format!("pass {figure}"),
            Cell::Fail(_) => "FAIL".into(),
            Cell::NoPeer(p) => format!("no {}", p.split_whitespace().next().unwrap_or(p)),
            Cell::NotApplicable(_) => "n/a".into(),
        }
    }

    /// Whether it counts as a failure; a missing peer does when `strict`.
    pub fn failed(&self, strict: bool) -> bool {
        match self {
            Cell::Fail(_) => true,
            Cell::NoPeer(_) => strict,
            _ => false,
        }
    }
}

/// Whether missing peers must count as failures: `CI=true` or
/// `NETDEVER_REQUIRE_PEERS=1` in the environment.
pub fn peers_required() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    let req = std::env::var("NETDEVER_REQUIRE_PEERS").is_ok_and(|v| v == "1");
    ci || req
}

/// Why a cell did not pass (inside a cell function).
#[derive(Debug)]
enum Stop {
    Fail(String),
    NoPeer(String),
    NotApplicable(String),
}

impl From<String> for Stop {
    fn from(e: String) -> Self {
        Stop::Fail(e)
    }
}

impl From<&str> for Stop {
    fn from(e: &str) -> Self {
        Stop::Fail(e.into())
    }
}

impl From<PeerError> for Stop {
    fn from(e: PeerError) -> Self {
        match e {
            PeerError::NotInstalled(p) => Stop::NoPeer(p),
            PeerError::Failed(e) => Stop::Fail(e),
        }
    }
}

type CellResult = Result<(String, String), Stop>;

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), Stop> {
    if ok {
        Ok(())
    } else {
        Err(Stop::Fail(what()))
    }
}

// ---------------------------------------------------------------------------
// The network of one cell.
// ---------------------------------------------------------------------------

/// The kernel side of the TAP in the `tap` backend's namespace.
const TAP_KERNEL_IP: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 1);
/// The device on that TAP.
const TAP_DEV_IP: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 2);
/// The TAP's name inside the namespace.
const TAP_NAME: &str = "ndvmx0";
/// The port server examples listen on where the backend does not force one.
const SERVER_PORT: u16 = 8080;

/// One cell's network: the device, where its peers run and how each side
/// reaches the other.
pub struct Env {
    /// The device (no simulated peer: `net.peer` is `None`).
    pub net: Net,
    /// Where peer programs run.
    pub place: Place,
    /// The address peer programs listen on.
    pub peer_bind: Ipv4Addr,
    /// The address the device reaches peer programs at.
    pub peer_host: Ipv4Addr,
    /// For a server example: its port on the device and where a peer
    /// program reaches it.
    pub server: Option<(u16, SocketAddr)>,
    /// Which backend.
    pub backend: Backend,
    // Dropped after `net`: the device's link lives in it.
    netns: Option<real::Netns>,
}

impl Net {
    /// A raw-frame chip `board` whose frames go onto a passt link (static
    /// 10.0.2.15/24, gateway 10.0.2.2 = this host's loopback), with
    /// `forward` = `(host port, device port)` for a server.
    pub fn chip_on_passt(
        board: netdever_emu::boards::Board,
        forward: Option<(u16, u16)>,
    ) -> Result<Net, String> {
        use netdever::phy::passt::{PasstConfig, PasstLink};
        use netdever_emu::boards::{probe, HostNet};
        let mut cfg = PasstConfig::new()
            .mac(crate::common::DEV_MAC)
            .network(
                crate::common::PASST_DEV_IP,
                24,
                crate::common::PASST_GATEWAY,
            )
            .dhcp(false);
        if let Some((host, guest)) = forward {
            cfg = cfg.tcp_forward(host, guest).udp_forward(host, guest);
        }
        let link = PasstLink::spawn(&cfg).map_err(|e| format!("passt: {e}"))?;
        let info = PasstInfo {
            gateway: link.gateway(),
            forward,
            pid: link.pid(),
        };
        let ip = IpMode::Static(link.ip_config());
        let p = probe(
            board,
            HostNet::link(link, ip, "passt link").with_stack(stack_config()),
        )?;
        p.connect()?;
        Ok(Net {
            dev: p.device.clone(),
            peer: None,
            peer_ip: info.gateway,
            board: Board::Chip(board),
            passt: Some(info),
            summary: Some(p.summary.clone()),
            probed: Some(std::sync::Mutex::new(p)),
        })
    }

    /// An offload chip `board` whose sockets are host sockets on loopback,
    /// with no simulated peer: peers are real programs on 127.0.0.1.
    pub fn offload_on_loopback(board: netdever_emu::boards::Board) -> Result<Net, String> {
        use netdever_emu::boards::{probe, HostNet};
        let p = probe(board, HostNet::sim().with_stack(stack_config()))?;
        p.connect()?;
        Ok(Net {
            dev: p.device.clone(),
            peer: None,
            peer_ip: Ipv4Addr::LOCALHOST,
            board: Board::Chip(board),
            passt: None,
            summary: Some(p.summary.clone()),
            probed: Some(std::sync::Mutex::new(p)),
        })
    }
}

impl Env {
    /// A fresh network for `backend`; `server`: the example listens.
    fn new(backend: Backend, server: bool) -> Result<Env, Stop> {
        use netdever_emu::boards::Board as Chip;
        let host = Place::Host;
        let lo = Ipv4Addr::LOCALHOST;
        let passt_env = |net: Net, forward: Option<(u16, u16)>| Env {
            peer_host: net.host_gateway().unwrap_or(lo),
            server: forward.map(|(h, g)| (g, SocketAddr::from((lo, h)))),
            net,
            place: Place::Host,
            peer_bind: lo,
            backend,
            netns: None,
        };
        let forward = |server: bool| -> Result<Option<(u16, u16)>, Stop> {
            Ok(if server {
                Some((host.free_port(lo)?, SERVER_PORT))
            } else {
                None
            })
        };
        match backend {
            Backend::Stack => {
                real::program("passt")?;
                let fw = forward(server)?;
                Ok(passt_env(Net::passt(None, fw, None)?, fw))
            }
            Backend::W5500Macraw | Backend::EspHosted => {
                real::program("passt")?;
                let fw = forward(server)?;
                let chip = if backend == Backend::W5500Macraw {
                    Chip::W5500Macraw
                } else {
                    Chip::EspHosted
                };
                Ok(passt_env(Net::chip_on_passt(chip, fw)?, fw))
            }
            Backend::W5500Offload | Backend::EspAt => {
                let chip = if backend == Backend::W5500Offload {
                    Chip::W5500Offload
                } else {
                    Chip::EspAt
                };
                let net = Net::offload_on_loopback(chip)?;
                let server = if server {
                    let ip = net.dev_ip()?;
                    let port = host.free_port(ip)?;
                    Some((port, SocketAddr::from((ip, port))))
                } else {
                    None
                };
                Ok(Env {
                    net,
                    place: Place::Host,
                    peer_bind: lo,
                    peer_host: lo,
                    server,
                    backend,
                    netns: None,
                })
            }
            Backend::Tap => Env::tap(server),
        }
    }

    #[cfg(feature = "tap")]
    fn tap(server: bool) -> Result<Env, Stop> {
        use netdever::phy::tap::TapLink;
        if let Some(missing) = real::netns_missing() {
            return Err(Stop::NotApplicable(format!("needs {missing}")));
        }
        let ns = real::Netns::new("mx")?;
        let place = ns.place();
        let tap = place
            .run(|| TapLink::open(TAP_NAME))?
            .map_err(|e| format!("opening TAP {TAP_NAME} in {}: {e}", ns.name()))?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{TAP_KERNEL_IP}/24"),
            "dev",
            TAP_NAME,
        ])?;
        ns.ip(&["link", "set", TAP_NAME, "up"])?;
        let ip = IpMode::Static(IpConfig::new(TAP_DEV_IP, 24));
        let net = Net::on_link(tap, ip, Board::Tap)?;
        Ok(Env {
            net,
            place,
            peer_bind: TAP_KERNEL_IP,
            peer_host: TAP_KERNEL_IP,
            server: server.then_some((SERVER_PORT, SocketAddr::from((TAP_DEV_IP, SERVER_PORT)))),
            backend: Backend::Tap,
            netns: Some(ns),
        })
    }

    #[cfg(not(feature = "tap"))]
    fn tap(_server: bool) -> Result<Env, Stop> {
        Err(Stop::NotApplicable(
            "built without TAP support (feature `tap`)".into(),
        ))
    }

    /// A port for a peer program that cannot pick its own: free on the
    /// host's loopback, or a fixed one in the cell's own namespace.
    fn peer_port(&self, fixed: u16) -> Result<u16, Stop> {
        if self.netns.is_some() {
            Ok(fixed)
        } else {
            Ok(self.place.free_port(self.peer_bind)?)
        }
    }

    /// How the device addresses a peer program listening at `at`.
    fn to_peer(&self, at: SocketAddr) -> SocketAddr {
        SocketAddr::from((self.peer_host, at.port()))
    }

    /// Options for a client example talking to the peer program at `at`.
    fn client(&self, spec: &Spec, at: SocketAddr, set: &[(&'static str, &str)]) -> Opts {
        let to = self.to_peer(at);
        let mut o = Opts::defaults(spec).quiet();
        o.peer = Some(to);
        o.port = to.port();
        for (k, v) in set {
            o = o.set(k, v);
        }
        o
    }

    /// Options for a server example, and where peer programs reach it.
    fn server(
        &self,
        spec: &Spec,
        set: &[(&'static str, &str)],
    ) -> Result<(Opts, SocketAddr), Stop> {
        let (port, at) = self.server.ok_or("no server port in this network")?;
        let mut o = Opts::defaults(spec).quiet();
        o.port = port;
        o.host_port = at.port();
        for (k, v) in set {
            o = o.set(k, v);
        }
        Ok((o, at))
    }

    /// Run a server example while `drive` plays its clients; the server is
    /// told to stop when `drive` returns. Returns the driver's result and
    /// the example's outcome.
    fn serve<T>(
        &self,
        run: fn(&Net, &Opts) -> Outcome,
        o: &Opts,
        drive: impl FnOnce() -> Result<T, Stop>,
    ) -> Result<(T, String), Stop> {
        std::thread::scope(|s| {
            let h = s.spawn(|| run(&self.net, o));
            let r = drive();
            o.stop.store(true, Ordering::Release);
            let outcome = h
                .join()
                .map_err(|_| Stop::Fail("the server example panicked".into()))?;
            let t = r?;
            let outcome = outcome.map_err(|e| format!("the server example: {e}"))?;
            Ok((t, outcome))
        })
    }
}

// ---------------------------------------------------------------------------
// Sizes.
// ---------------------------------------------------------------------------

/// Transfer sizes for one backend: small, so the matrix is quick.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// tcpclient / socket bytes.
    bulk: u64,
    /// tcpecho bytes per client.
    echo: u64,
    /// `/big.bin` for the HTTP clients.
    http_big: usize,
    /// udpclient / udpecho datagrams.
    datagrams: u32,
    /// websocket binary message bytes (the large one).
    ws_big: usize,
    /// snake messages.
    snake_msgs: u64,
}

fn sizes(b: Backend) -> Sizes {
    let big = Sizes {
        bulk: 4 << 20,
        echo: 1 << 20,
        http_big: 300_000,
        datagrams: 200,
        ws_big: 60 * 1024,
        snake_msgs: 100,
    };
    match b {
        Backend::Stack | Backend::Tap => big,
        Backend::W5500Macraw | Backend::EspHosted | Backend::W5500Offload => Sizes {
            bulk: 1 << 20,
            echo: 256 << 10,
            http_big: 200_000,
            datagrams: 100,
            ..big
        },
        Backend::EspAt => Sizes {
            bulk: 512 << 10,
            echo: 128 << 10,
            http_big: 100_000,
            datagrams: 100,
            ws_big: 30 * 1024,
            snake_msgs: 50,
        },
    }
}

// ---------------------------------------------------------------------------
// Rows.
// ---------------------------------------------------------------------------

/// A row of the matrix: one example (or one case of it).
pub struct Row {
    /// The row's name (the example's, with a case suffix for extra cases).
    pub name: &'static str,
    /// What the cell checks, for `--list`.
    pub about: &'static str,
    /// The example listens (its network forwards a port to it).
    server: bool,
    cell: fn(&Env, &Sizes) -> CellResult,
}

/// Every row, in order.
pub const ROWS: &[Row] = &[
    Row {
        name: "tcpclient",
        about: "N bytes to a python sink that checks every byte",
        server: false,
        cell: tcpclient_cell,
    },
    Row {
        name: "socket",
        about: "the same with raw Socketer calls",
        server: false,
        cell: socket_cell,
    },
    Row {
        name: "tcpecho",
        about: "2 python clients at once send N bytes each and check the echo",
        server: true,
        cell: tcpecho_cell,
    },
    Row {
        name: "udpclient",
        about: "datagrams to a python UDP echo server, every reply checked",
        server: false,
        cell: udpclient_cell,
    },
    Row {
        name: "udpecho",
        about: "a python UDP client sends datagrams and checks every echo",
        server: true,
        cell: udpecho_cell,
    },
    Row {
        name: "webclient",
        about: "GET /hello.txt from python3 -m http.server",
        server: false,
        cell: webclient_cell,
    },
    Row {
        name: "http_get",
        about: "GET /big.bin from python3 -m http.server, body compared",
        server: false,
        cell: http_get_cell,
    },
    Row {
        name: "http_head",
        about: "HEAD /big.bin (Content-Length) and /missing (404 fails the example)",
        server: false,
        cell: http_head_cell,
    },
    Row {
        name: "http_post",
        about: "JSON POST to a python http.server handler that records it",
        server: false,
        cell: http_post_cell,
    },
    Row {
        name: "http_postform",
        about: "form POST (spaces, + and =) to the python recorder",
        server: false,
        cell: http_postform_cell,
    },
    Row {
        name: "webserver",
        about: "curl: every route, cookies over 3 visits, form, JSON, 404, 405",
        server: true,
        cell: webserver_cell,
    },
    Row {
        name: "webstatic",
        about: "curl: every file's bytes and type, ETag revalidation (304), 404",
        server: true,
        cell: webstatic_cell,
    },
    Row {
        name: "ntpclient",
        about: "SNTP against chronyd (local clock, stratum 8)",
        server: false,
        cell: ntpclient_cell,
    },
    Row {
        name: "websocket_dial",
        about:
            "python websockets echo server: text, binary (small and large), fragments, ping, close",
        server: false,
        cell: websocket_dial_cell,
    },
    Row {
        name: "websocket_handler",
        about: "2 python websockets clients: text, binary, fragments, ping, close 1000",
        server: true,
        cell: websocket_handler_cell,
    },
    Row {
        name: "mqttclient",
        about: "mosquitto: QoS 0 and 1 round trip, a retained message, mosquitto_sub sees ours",
        server: false,
        cell: mqttclient_cell,
    },
    Row {
        name: "snake",
        about: "max_sockets - 1 connections at once through a python echo server",
        server: false,
        cell: snake_cell,
    },
    Row {
        name: "tlsclient",
        about: "openssl s_server -tls1_3 -www: --ca and --insecure pass, no CA is refused",
        server: false,
        cell: tlsclient_cell,
    },
    Row {
        name: "http_get:https",
        about: "GET /big.bin over TLS from openssl s_server -WWW (--ca the test CA), body compared",
        server: false,
        cell: http_get_https_cell,
    },
    Row {
        name: "tlsclient:untrusted",
        about: "a certificate from a CA not trusted must be refused",
        server: false,
        cell: tls_untrusted_cell,
    },
    Row {
        name: "tlsclient:wrong-host",
        about: "a certificate for another host name must be refused",
        server: false,
        cell: tls_wrong_host_cell,
    },
];

/// The row called `name`.
pub fn row(name: &str) -> Option<&'static Row> {
    ROWS.iter().find(|r| r.name == name)
}

// ---------------------------------------------------------------------------
// Running cells.
// ---------------------------------------------------------------------------

/// One cell's result and how long it took.
#[derive(Debug, Clone)]
pub struct Ran {
    /// Row name.
    pub row: &'static str,
    /// Column.
    pub backend: Backend,
    /// Result.
    pub cell: Cell,
    /// Wall time.
    pub time: Duration,
}

/// Run one cell on its own thread: fresh network, fresh peers, at most
/// [`CELL_LIMIT`]. A cell that overruns is reported failed and left
/// behind (its thread still holds its network and peers).
pub fn run_cell(row: &'static Row, backend: Backend) -> Ran {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    let spawned = std::thread::Builder::new()
        .name(format!("{}@{}", row.name, backend.name()))
        .spawn(move || {
            text::clear();
            let r = Env::new(backend, row.server).and_then(|env| {
                let r = (row.cell)(&env, &sizes(backend));
                drop(env);
                r
            });
            text::clear();
            let _ = tx.send(r);
        });
    let cell = match spawned {
        Err(e) => Cell::Fail(format!("spawning the cell's thread: {e}")),
        Ok(_) => match rx.recv_timeout(CELL_LIMIT) {
            Ok(Ok((figure, detail))) => Cell::Pass { figure, detail },
            Ok(Err(Stop::Fail(e))) => Cell::Fail(e),
            Ok(Err(Stop::NoPeer(p))) => Cell::NoPeer(p),
            Ok(Err(Stop::NotApplicable(w))) => Cell::NotApplicable(w),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Cell::Fail(format!("did not finish within {} s", CELL_LIMIT.as_secs()))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Cell::Fail("panicked".into()),
        },
    };
    Ran {
        row: row.name,
        backend,
        cell,
        time: start.elapsed(),
    }
}

/// Print the matrix: rows × `backends`, a legend, and every failure's
/// reason (and every n/a's) under it; `verbose`: every pass's detail too.
pub fn print(rows: &[&'static Row], backends: &[Backend], ran: &[Ran], verbose: bool) {
    print!("{}", render(rows, backends, ran, verbose));
}

/// The text [`print`] prints.
pub fn render(rows: &[&'static Row], backends: &[Backend], ran: &[Ran], verbose: bool) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let find = |r: &str, b: Backend| ran.iter().find(|x| x.row == r && x.backend == b);
    let mut head = vec!["example".to_string()];
    head.extend(backends.iter().map(|b| b.name().to_string()));
    let mut lines: Vec<Vec<String>> = Vec::new();
    for r in rows {
        let mut line = vec![r.name.to_string()];
        for &b in backends {
            line.push(find(r.name, b).map_or("-".into(), |x| x.cell.short()));
        }
        lines.push(line);
    }
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for l in &lines {
        for (i, c) in l.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let fmt = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        format!("| {} |", parts.join(" | "))
    };
    let _ = writeln!(t);
    let _ = writeln!(t, "{}", fmt(&head));
    let rule: Vec<String> = w.iter().map(|n| "-".repeat(*n)).collect();
    let _ = writeln!(t, "|-{}-|", rule.join("-|-"));
    for l in &lines {
        let _ = writeln!(t, "{}", fmt(l));
    }
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "pass FIG = passed (FIG: the example's throughput or latency); FAIL = failed (reasons below);"
    );
    let _ = writeln!(t, "no PROG = peer program PROG not installed (a failure under CI=true); n/a = the backend cannot; - = not run");
    let mut notes: Vec<String> = Vec::new();
    for x in ran {
        match &x.cell {
            Cell::Fail(e) => notes.push(format!("FAIL {} on {}: {e}", x.row, x.backend.name())),
            Cell::NoPeer(p) => notes.push(format!(
                "{} on {}: peer not installed: {p}",
                x.row,
                x.backend.name()
            )),
            Cell::NotApplicable(w) => {
                notes.push(format!("n/a {} on {}: {w}", x.row, x.backend.name()))
            }
            Cell::Pass { detail, .. } => {
                if verbose {
                    notes.push(format!("pass {} on {}: {detail}", x.row, x.backend.name()))
                }
            }
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(t);
        for n in notes {
            let _ = writeln!(t, "{n}");
        }
    }
    t
}

// ---------------------------------------------------------------------------
// Cells.
// ---------------------------------------------------------------------------

/// `12.3 MB/s` out of an outcome such as `12.3 MB/s (4 MiB)`.
fn rate_of(outcome: &str) -> String {
    outcome
        .find(" MB/s")
        .map(|i| {
            let start = outcome[..i].rfind(' ').map_or(0, |j| j + 1);
            format!("{} MB/s", &outcome[start..i])
        })
        .unwrap_or_default()
}

/// `rtt 41 us` out of an outcome with `rtt avg 41 us` in it.
fn rtt_avg_of(outcome: &str) -> String {
    outcome
        .find("rtt avg ")
        .and_then(|i| outcome[i + 8..].split_whitespace().next())
        .map(|n| format!("rtt {n} us"))
        .unwrap_or_default()
}

/// `35.2 ms` out of an outcome ending in `in 35.2 ms`.
fn ms_of(outcome: &str) -> String {
    outcome
        .rfind(" in ")
        .map(|i| outcome[i + 4..].trim().to_string())
        .filter(|s| s.ends_with("ms"))
        .unwrap_or_default()
}

fn bulk_cell(
    env: &Env,
    sz: &Sizes,
    spec: &Spec,
    run: fn(&Net, &Opts) -> Outcome,
    seed: u64,
) -> CellResult {
    let sink = real::tcp_sink(&env.place, env.peer_bind, 0, seed)?;
    let bytes = sz.bulk.to_string();
    let o = env.client(spec, sink.addr, &[("--bytes", &bytes)]);
    let r = run(&env.net, &o)?;
    let got = real::sink_result(&sink, Duration::from_secs(15))?;
    ensure(got == sz.bulk, || {
        format!("the sink got {got} bytes of {}", sz.bulk)
    })?;
    Ok((
        rate_of(&r),
        format!("{r}; the python sink got all {got} bytes intact"),
    ))
}

fn tcpclient_cell(env: &Env, sz: &Sizes) -> CellResult {
    // tcpclient sends pattern seed 0 (apps/tcpclient.rs).
    bulk_cell(env, sz, &tcpclient::SPEC, tcpclient::run, 0)
}

fn socket_cell(env: &Env, sz: &Sizes) -> CellResult {
    // socket sends pattern seed 7 (apps/socket.rs).
    bulk_cell(env, sz, &socket::SPEC, socket::run, 7)
}

fn tcpecho_cell(env: &Env, sz: &Sizes) -> CellResult {
    let (o, at) = env.server(&tcpecho::SPEC, &[])?;
    let clients = 2;
    let (fields, outcome) = env.serve(tcpecho::run, &o, || {
        let mut c = real::tcp_echo_clients(&env.place, at, clients, sz.echo)?;
        Ok(c.result(Duration::from_secs(90))?)
    })?;
    let total: f64 = fields.first().and_then(|f| f.parse().ok()).unwrap_or(0.0);
    let secs: f64 = fields.get(1).and_then(|f| f.parse().ok()).unwrap_or(0.0);
    ensure(total as u64 == clients as u64 * sz.echo, || {
        format!("python clients report {fields:?}")
    })?;
    let rate = total / secs.max(1e-9) / 1e6;
    Ok((
        format!("{rate:.1} MB/s"),
        format!(
            "{clients} python clients x {} echoed intact, {rate:.2} MB/s each way; example: {outcome}",
            crate::common::fmt_size(sz.echo)
        ),
    ))
}

fn udpclient_cell(env: &Env, sz: &Sizes) -> CellResult {
    let echo = real::udp_echo_server(&env.place, env.peer_bind, 0)?;
    let count = sz.datagrams.to_string();
    let o = env.client(&udpclient::SPEC, echo.addr, &[("--count", &count)]);
    let r = udpclient::run(&env.net, &o)?;
    let want = format!("{0}/{0} answered", sz.datagrams);
    ensure(r.contains(&want), || format!("expected {want}: {r}"))?;
    // rtt min/avg/p99/max A/B/C/D us
    let avg = r
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.split('/').nth(1))
        .map(|a| format!("rtt {a} us"))
        .unwrap_or_default();
    Ok((avg, r))
}

fn udpecho_cell(env: &Env, sz: &Sizes) -> CellResult {
    let (o, at) = env.server(&udpecho::SPEC, &[])?;
    let (fields, outcome) = env.serve(udpecho::run, &o, || {
        let mut c = real::udp_echo_client(&env.place, at, sz.datagrams, 64)?;
        Ok(c.result(Duration::from_secs(90))?)
    })?;
    ensure(
        fields.first().map(String::as_str) == Some(&sz.datagrams.to_string()),
        || format!("python client reports {fields:?}"),
    )?;
    let avg = fields.get(1).cloned().unwrap_or_default();
    let resent = fields.get(3).cloned().unwrap_or_default();
    Ok((
        format!("rtt {avg} us"),
        format!(
            "python client: {} datagrams echoed intact, rtt avg {avg} us, p99 {} us, {resent} sent again; example: {outcome}",
            sz.datagrams,
            fields.get(2).cloned().unwrap_or_default()
        ),
    ))
}

fn url(env: &Env, at: SocketAddr, path: &str) -> String {
    format!("http://{}{path}", env.to_peer(at))
}

fn webclient_cell(env: &Env, sz: &Sizes) -> CellResult {
    let www = real::http_server(&env.place, env.peer_bind, sz.http_big)?;
    let u = url(env, www.server.addr, "/hello.txt");
    let o = env.client(&webclient::SPEC, www.server.addr, &[("--url", &u)]);
    let r = webclient::run(&env.net, &o)?;
    let want = format!("200 OK, {} bytes", real::HELLO_TXT.len());
    ensure(r.contains(&want), || format!("expected {want}: {r}"))?;
    Ok((ms_of(&r), r))
}

fn http_get_cell(env: &Env, sz: &Sizes) -> CellResult {
    let www = real::http_server(&env.place, env.peer_bind, sz.http_big)?;
    let dir = real::TempDir::new("get")?;
    let out = dir.file("big.bin");
    let u = url(env, www.server.addr, "/big.bin");
    let o = env.client(
        &http_get::SPEC,
        www.server.addr,
        &[("--url", &u), ("--out", &out)],
    );
    let t0 = Instant::now();
    let r = http_get::run(&env.net, &o)?;
    let secs = t0.elapsed().as_secs_f64();
    ensure(r.contains("200 OK"), || format!("expected 200 OK: {r}"))?;
    let got = std::fs::read(&out).map_err(|e| format!("reading {out}: {e}"))?;
    ensure(got == www.big, || {
        format!(
            "the body differs ({} bytes, {} served)",
            got.len(),
            www.big.len()
        )
    })?;
    let rate = got.len() as f64 / secs.max(1e-9) / 1e6;
    Ok((format!("{rate:.1} MB/s"), format!("{r}; body identical")))
}

fn http_head_cell(env: &Env, sz: &Sizes) -> CellResult {
    let www = real::http_server(&env.place, env.peer_bind, sz.http_big)?;
    let u = url(env, www.server.addr, "/big.bin");
    let o = env.client(&http_head::SPEC, www.server.addr, &[("--url", &u)]);
    let r = http_head::run(&env.net, &o)?;
    let want = format!("Content-Length {}", www.big.len());
    ensure(r.contains(&want), || format!("expected {want}: {r}"))?;
    let missing = url(env, www.server.addr, "/missing");
    let o = env.client(&http_head::SPEC, www.server.addr, &[("--url", &missing)]);
    match http_head::run(&env.net, &o) {
        Err(e) if e.contains("404") => {}
        other => {
            return Err(Stop::Fail(format!(
                "HEAD /missing must fail with 404: {other:?}"
            )))
        }
    }
    Ok((ms_of(&r), format!("{r}; /missing: 404")))
}

fn http_post_cell(env: &Env, _sz: &Sizes) -> CellResult {
    let rec = real::post_recorder(&env.place, env.peer_bind)?;
    let data = r#"{"sensor":"t1","celsius":21.5}"#;
    let u = url(env, rec.addr, "/post");
    let o = env.client(
        &http_post::SPEC,
        rec.addr,
        &[("--url", &u), ("--data", data)],
    );
    let r = http_post::run(&env.net, &o)?;
    let got = real::next_record(&rec, 0)?;
    for want in [
        r#""path": "/post""#,
        r#""type": "application/json""#,
        r#""body": "{\"sensor\":\"t1\",\"celsius\":21.5}""#,
    ] {
        ensure(got.contains(want), || {
            format!("the recorder got {got}, not {want}")
        })?;
    }
    Ok((ms_of(&r), format!("{r}; recorded {got}")))
}

fn http_postform_cell(env: &Env, _sz: &Sizes) -> CellResult {
    let rec = real::post_recorder(&env.place, env.peer_bind)?;
    let u = url(env, rec.addr, "/form");
    let o = env.client(
        &http_postform::SPEC,
        rec.addr,
        &[("--url", &u), ("--form", "name=Ada Lovelace&note=1+1=2")],
    );
    let r = http_postform::run(&env.net, &o)?;
    let got = real::next_record(&rec, 0)?;
    for want in [
        r#""path": "/form""#,
        r#""type": "application/x-www-form-urlencoded""#,
        r#""body": "name=Ada+Lovelace&note=1%2B1%3D2""#,
    ] {
        ensure(got.contains(want), || {
            format!("the recorder got {got}, not {want}")
        })?;
    }
    Ok((ms_of(&r), format!("{r}; recorded {got}")))
}

/// curl against the `webserver` example at `base`: every route.
fn curl_webserver(place: &Place, base: &str, dev_ip: &str) -> Result<usize, Stop> {
    let curl = |args: &[&str]| real::curl(place, args);
    let mut n = 0;
    let mut count = || n += 1;
    let r = curl(&[&format!("{base}/hello?name=curl")])?;
    count();
    ensure(
        (r.status, r.content_type.as_str(), r.text().as_str())
            == (200, "text/plain; charset=utf-8", "Hello, curl!\n"),
        || format!("/hello?name=curl: {r:?}"),
    )?;
    let r = curl(&[&format!("{base}/")])?;
    count();
    ensure(
        r.status == 200
            && r.content_type == "text/html; charset=utf-8"
            && r.text().contains(&format!("Hello from {dev_ip}")),
        || format!("/: {} {} {}", r.status, r.content_type, r.text()),
    )?;
    // Cookies: curl's jar carries the counter from visit to visit.
    let dir = real::TempDir::new("jar")?;
    let jar = dir.file("cookies.txt");
    for visit in 1..=3 {
        let r = curl(&["-b", &jar, "-c", &jar, &format!("{base}/cookie")])?;
        count();
        ensure(
            r.status == 200 && r.text() == format!("visit {visit}\n"),
            || format!("/cookie visit {visit}: {} {:?}", r.status, r.text()),
        )?;
    }
    let jar_text = std::fs::read_to_string(&jar).map_err(|e| format!("{jar}: {e}"))?;
    ensure(jar_text.contains("visits\t3"), || {
        format!("cookie jar: {jar_text}")
    })?;
    // A form POST (curl -d is x-www-form-urlencoded), and one without a name.
    let r = curl(&[
        "-d",
        "name=Grace Hopper&message=<COBOL>",
        &format!("{base}/form"),
    ])?;
    count();
    let page = r.text();
    ensure(
        r.status == 200
            && r.content_type == "text/html; charset=utf-8"
            && page.contains("Thanks, Grace Hopper!")
            && page.contains("<td>&lt;COBOL&gt;</td>"),
        || format!("/form: {} {page}", r.status),
    )?;
    let r = curl(&["-d", "message=anonymous", &format!("{base}/form")])?;
    count();
    ensure(r.status == 400, || {
        format!("/form without a name: {}", r.status)
    })?;
    // JSON.
    let r = curl(&[
        "-H",
        "Content-Type: application/json",
        "--data",
        r#"{"led":true}"#,
        &format!("{base}/api/echo"),
    ])?;
    count();
    ensure(
        r.status == 200
            && r.content_type == "application/json"
            && r.text()
                == "{\"method\":\"POST\",\"content_type\":\"application/json\",\"length\":12,\"body\":\"{\\\"led\\\":true}\"}\n",
        || format!("/api/echo: {} {}", r.status, r.text()),
    )?;
    let r = curl(&[&format!("{base}/api/status")])?;
    count();
    ensure(
        r.status == 200
            && r.content_type == "application/json"
            && r.text().contains(&format!("\"device\":\"{dev_ip}\"")),
        || format!("/api/status: {} {}", r.status, r.text()),
    )?;
    let r = curl(&[&format!("{base}/no/such/page")])?;
    count();
    ensure(r.status == 404, || format!("/no/such/page: {}", r.status))?;
    let r = curl(&["-X", "DELETE", &format!("{base}/api/status")])?;
    count();
    ensure(r.status == 405, || {
        format!("DELETE /api/status: {}", r.status)
    })?;
    Ok(n)
}

fn webserver_cell(env: &Env, _sz: &Sizes) -> CellResult {
    let (o, at) = env.server(&webserver::SPEC, &[])?;
    let base = format!("http://{at}");
    let dev_ip = env.net.dev_ip()?.to_string();
    let t0 = Instant::now();
    let (n, outcome) = env.serve(webserver::run, &o, || {
        real::curl_until_up(
            &env.place,
            &format!("{base}/hello"),
            Duration::from_secs(20),
        )?;
        let t0 = Instant::now();
        let n = curl_webserver(&env.place, &base, &dev_ip)?;
        Ok((n, t0.elapsed()))
    })?;
    let _ = t0;
    let per = n.1.as_secs_f64() * 1e3 / n.0 as f64;
    Ok((
        format!("{per:.0} ms/req"),
        format!(
            "{} curl requests checked, {per:.1} ms each; example: {outcome}",
            n.0
        ),
    ))
}

/// curl against the `webstatic` example at `base`: every file's bytes and
/// type, `/`, ETag revalidation, 404.
fn curl_webstatic(place: &Place, base: &str) -> Result<usize, Stop> {
    let mut n = 0;
    for (path, ctype, bytes) in webstatic::FILES {
        let r = real::curl(place, &[&format!("{base}{path}")])?;
        ensure(
            r.status == 200 && r.content_type == *ctype && r.body == *bytes,
            || {
                format!(
                    "{path}: {} {} ({} bytes)",
                    r.status,
                    r.content_type,
                    r.body.len()
                )
            },
        )?;
        let tag = webstatic::etag(bytes);
        let r = real::curl(
            place,
            &[
                "-H",
                &format!("If-None-Match: {tag}"),
                &format!("{base}{path}"),
            ],
        )?;
        ensure(r.status == 304 && r.body.is_empty(), || {
            format!(
                "{path} with its ETag: {} ({} bytes)",
                r.status,
                r.body.len()
            )
        })?;
        n += 2;
    }
    let r = real::curl(place, &[&format!("{base}/")])?;
    ensure(
        r.status == 200
            && r.content_type == "text/html; charset=utf-8"
            && r.body == webstatic::FILES[0].2,
        || format!("/: {} {}", r.status, r.content_type),
    )?;
    let r = real::curl(place, &[&format!("{base}/missing.png")])?;
    ensure(r.status == 404, || format!("/missing.png: {}", r.status))?;
    Ok(n + 2)
}

fn webstatic_cell(env: &Env, _sz: &Sizes) -> CellResult {
    let (o, at) = env.server(&webstatic::SPEC, &[])?;
    let base = format!("http://{at}");
    let (n, outcome) = env.serve(webstatic::run, &o, || {
        real::curl_until_up(&env.place, &format!("{base}/"), Duration::from_secs(20))?;
        let t0 = Instant::now();
        let n = curl_webstatic(&env.place, &base)?;
        Ok((n, t0.elapsed()))
    })?;
    let per = n.1.as_secs_f64() * 1e3 / n.0 as f64;
    Ok((
        format!("{per:.0} ms/req"),
        format!(
            "{} curl requests checked, {per:.1} ms each; example: {outcome}",
            n.0
        ),
    ))
}

fn ntpclient_cell(env: &Env, _sz: &Sizes) -> CellResult {
    let port = env.peer_port(123)?;
    let (_chronyd, _dir) = real::chronyd(&env.place, env.peer_bind, port)?;
    let server = format!("{}:{port}", env.peer_host);
    let o = env.client(
        &ntpclient::SPEC,
        SocketAddr::from((env.peer_bind, port)),
        &[
            ("--server", &server),
            ("--count", "2"),
            ("--max-offset-ms", "1000"),
        ],
    );
    let r = ntpclient::run(&env.net, &o)?;
    ensure(r.contains("stratum 8"), || {
        format!("chronyd's local stratum 8: {r}")
    })?;
    let rtt = r
        .find("rtt ")
        .map(|i| r[i..].split(',').next().unwrap_or("").to_string())
        .unwrap_or_default();
    Ok((rtt, r))
}

fn websocket_dial_cell(env: &Env, sz: &Sizes) -> CellResult {
    let server = real::ws_echo_server(&env.place, env.peer_bind)?;
    let big = sz.ws_big.to_string();
    let mut details = Vec::new();
    for (args, path) in [
        (vec![("--count", "20"), ("--size", "1000")], "/echo"),
        (vec![("--count", "4"), ("--size", big.as_str())], "/"),
    ] {
        text::set("--path", path);
        let o = env.client(&websocket_dial::SPEC, server.addr, &args);
        let r = websocket_dial::run(&env.net, &o).map_err(|e| format!("{args:?}: {e}"))?;
        ensure(
            r.contains("messages echoed") && r.contains("NormalClosure"),
            || format!("{args:?}: {r}"),
        )?;
        details.push(r);
    }
    Ok((rtt_avg_of(&details[0]), details.join("; ")))
}

fn websocket_handler_cell(env: &Env, sz: &Sizes) -> CellResult {
    let (o, at) = env.server(&websocket_handler::SPEC, &[])?;
    let uri = format!("ws://{at}/chat");
    let (fields, outcome) = env.serve(websocket_handler::run, &o, || {
        let mut c = real::ws_clients(&env.place, &uri, 2, sz.ws_big.min(50_000))?;
        Ok(c.result(Duration::from_secs(90))?)
    })?;
    ensure(outcome == "served 2 websocket clients", || {
        format!("the example: {outcome}")
    })?;
    let secs: f64 = fields.get(1).and_then(|f| f.parse().ok()).unwrap_or(0.0);
    Ok((
        format!("{:.0} ms", secs * 1e3),
        format!("2 python websockets clients passed in {secs:.2} s; example: {outcome}"),
    ))
}

fn mqttclient_cell(env: &Env, _sz: &Sizes) -> CellResult {
    let port = env.peer_port(1883)?;
    let (broker, _dir) = real::mosquitto(&env.place, env.peer_bind, port)?;
    let retained = "retained hello from mosquitto_pub";
    real::mosquitto_pub(
        &env.place,
        broker.addr,
        "netdever/mqttclient/retained",
        retained,
        true,
    )?;
    // Another subscriber: the retained message + our 10.
    let mut sub = real::mosquitto_sub(&env.place, broker.addr, "netdever/mqttclient/#", 11)?;
    let id = format!("netdever-matrix-{}", env.backend.name());
    text::set("--client-id", &id);
    let o = env.client(
        &mqttclient::SPEC,
        broker.addr,
        &[("--count", "5"), ("--expect-others", "1")],
    );
    let r = mqttclient::run(&env.net, &o)
        .map_err(|e| format!("{e} (mosquitto log: {})", broker.out.tail()))?;
    for want in [
        "5+5 published",
        "5 PUBACKs",
        "10 of 10 back",
        "1 from others",
    ] {
        ensure(r.contains(want), || format!("expected {want}: {r}"))?;
    }
    let st = sub.wait_exit(Duration::from_secs(30));
    let lines = sub.out().all();
    ensure(st.is_some_and(|s| s.success()), || {
        format!("mosquitto_sub did not get all 11 messages: {st:?} {lines:?}")
    })?;
    for topic in ["qos0", "qos1"] {
        for i in 0..5 {
            let want = format!("netdever/mqttclient/{topic} {topic} #{i} run ");
            ensure(lines.iter().any(|l| l.starts_with(&want)), || {
                format!("mosquitto_sub did not see {want:?}: {lines:?}")
            })?;
        }
    }
    ensure(
        lines
            .iter()
            .any(|l| l == &format!("netdever/mqttclient/retained {retained}")),
        || format!("mosquitto_sub did not see the retained message: {lines:?}"),
    )?;
    ensure(
        broker
            .out
            .wait_for(Duration::from_secs(5), |l| l.contains(&id))
            .is_some(),
        || format!("mosquitto's log does not name {id}: {}", broker.out.tail()),
    )?;
    Ok((
        rtt_avg_of(&r),
        format!("{r}; mosquitto_sub saw all 10 and the retained one"),
    ))
}

fn snake_cell(env: &Env, sz: &Sizes) -> CellResult {
    let echo = real::tcp_echo_server(&env.place, env.peer_bind, 0)?;
    let msgs = sz.snake_msgs.to_string();
    let o = env.client(
        &snake::SPEC,
        echo.addr,
        &[("--messages", &msgs), ("--size", "1K")],
    );
    let r = snake::run(&env.net, &o)?;
    let links = env.net.dev.capabilities().max_sockets.saturating_sub(1);
    let want = format!("{links} links x {msgs} msgs");
    ensure(r.starts_with(&want), || format!("expected {want}: {r}"))?;
    let rate = r
        .find(" echoes/s")
        .and_then(|i| r[..i].rsplit(' ').next())
        .map(|n| format!("{n} echo/s"))
        .unwrap_or_default();
    Ok((rate, r))
}

/// Whether the device can do TLS at all: built with software TLS, or its
/// firmware has it.
fn tls_available(env: &Env) -> Result<(), Stop> {
    if cfg!(feature = "tls") || env.net.dev.capabilities().tls != TlsSupport::None {
        Ok(())
    } else {
        Err(Stop::NotApplicable(
            "built without feature `tls` and the device's firmware has no TLS".into(),
        ))
    }
}

/// Run tlsclient against `at` with `host` and `ca` (`None`: no --ca) or
/// `--insecure`.
fn tls_run(env: &Env, at: SocketAddr, host: &str, ca: Option<&str>, insecure: bool) -> Outcome {
    text::clear();
    text::set("--host", host);
    if let Some(ca) = ca {
        text::set("--ca", ca);
    }
    let insecure = if insecure { "true" } else { "false" };
    let o = env.client(&tlsclient::SPEC, at, &[("--insecure", insecure)]);
    tlsclient::run(&env.net, &o)
}

fn handshake_of(outcome: &str) -> String {
    outcome
        .find("handshake ")
        .map(|i| format!("hs {}", &outcome[i + 10..]))
        .unwrap_or_default()
}

fn tlsclient_cell(env: &Env, _sz: &Sizes) -> CellResult {
    tls_available(env)?;
    let pki = real::TestPki::generate()?;
    let port = env.peer_port(4433)?;
    let server = real::s_server(&env.place, env.peer_bind, port, &pki.good())?;
    let ca = pki.ca();
    let r = tls_run(env, server.addr, real::TLS_HOST, Some(&ca), false)
        .map_err(|e| format!("--ca: {e}"))?;
    ensure(r.starts_with("HTTP/1.0 200 ok"), || format!("--ca: {r}"))?;
    let r2 = tls_run(env, server.addr, real::TLS_HOST, None, true)
        .map_err(|e| format!("--insecure: {e}"))?;
    ensure(r2.starts_with("HTTP/1.0 200 ok"), || {
        format!("--insecure: {r2}")
    })?;
    match tls_run(env, server.addr, real::TLS_HOST, None, false) {
        Err(e) if e.contains("certificate") || e.contains("TLS") || e.contains("trust") => {}
        other => {
            return Err(Stop::Fail(format!(
                "without --ca the certificate must be refused: {other:?}"
            )))
        }
    }
    Ok((
        handshake_of(&r),
        format!("{r}; --insecure: ok; no CA: refused"),
    ))
}

fn http_get_https_cell(env: &Env, sz: &Sizes) -> CellResult {
    tls_available(env)?;
    let pki = real::TestPki::generate()?;
    let dir = real::TempDir::new("tlswww")?;
    let big: Vec<u8> = (0..sz.http_big).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.path().join("big.bin"), &big).map_err(|e| format!("web root: {e}"))?;
    let port = env.peer_port(4433)?;
    let server = real::s_server_files(&env.place, env.peer_bind, port, &pki.good(), dir.path())?;
    let out = dir.file("got.bin");
    // By name (for SNI and the certificate check), connecting to the
    // server's address without a resolver.
    let u = format!("https://{}:{port}/big.bin", real::TLS_HOST);
    let to = format!("{}:{}", real::TLS_HOST, env.peer_host);
    let ca = pki.ca();
    let o = env.client(
        &http_get::SPEC,
        server.addr,
        &[
            ("--url", &u),
            ("--resolve", &to),
            ("--ca", &ca),
            ("--out", &out),
        ],
    );
    let t0 = Instant::now();
    let r = http_get::run(&env.net, &o)?;
    let secs = t0.elapsed().as_secs_f64();
    ensure(r.contains("200 ok") || r.contains("200 OK"), || {
        format!("expected 200: {r}")
    })?;
    let got = std::fs::read(&out).map_err(|e| format!("reading {out}: {e}"))?;
    ensure(got == big, || {
        format!(
            "the body differs ({} bytes, {} served)",
            got.len(),
            big.len()
        )
    })?;
    let rate = got.len() as f64 / secs.max(1e-9) / 1e6;
    Ok((format!("{rate:.1} MB/s"), format!("{r}; body identical")))
}

/// tlsclient (`--ca` the test CA, `--host tls.test`) against a server
/// with `cert`: it must fail on the certificate.
fn tls_refused(env: &Env, cert: fn(&real::TestPki) -> real::CertKey) -> CellResult {
    tls_available(env)?;
    let pki = real::TestPki::generate()?;
    let port = env.peer_port(4433)?;
    let server = real::s_server(&env.place, env.peer_bind, port, &cert(&pki))?;
    let ca = pki.ca();
    match tls_run(env, server.addr, real::TLS_HOST, Some(&ca), false) {
        Err(e) if e.contains("certificate") => Ok(("refused".into(), e)),
        Err(e) => Err(Stop::Fail(format!(
            "refused, but not for the certificate: {e}"
        ))),
        Ok(r) => Err(Stop::Fail(format!("the certificate was accepted: {r}"))),
    }
}

fn tls_untrusted_cell(env: &Env, _sz: &Sizes) -> CellResult {
    tls_refused(env, real::TestPki::untrusted)
}

fn tls_wrong_host_cell(env: &Env, _sz: &Sizes) -> CellResult {
    tls_refused(env, real::TestPki::wrong_host)
}
