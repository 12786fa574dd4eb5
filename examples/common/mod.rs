//! Shared by every example: the command line, the network the example runs
//! on (the built-in simulated network, a TAP interface, or passt's userspace
//! gateway to this host), the simulated peers (servers and clients for the
//! examples to talk to), a small HTTP/1.1 client and server, SNTP and DNS,
//! and a few helpers.
//!
//! An example binary is three lines: include this module and its app module
//! (`examples/apps/<name>.rs`), then hand the app's [`Spec`] and `run`
//! function to [`main`]. The suite (`examples/suite.rs`) calls the same `run`
//! functions on fresh simulated networks.
#![allow(dead_code)]

pub mod cli;
pub mod dns;
pub mod http;
pub mod httpd;
pub mod pattern;
pub mod peers;
pub mod real;
pub mod sntp;
pub mod tcp;
pub mod tls;

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use netdever::phy::memory::MemorySwitch;
use netdever::phy::passt::{PasstConfig, PasstLink};
use netdever::phy::pcap::PcapLink;
use netdever::phy::Link;
use netdever::stack::host::HostStack;
use netdever::stack::StackConfig;
use netdever::{
    ConnectParams, Deadline, Error, IpConfig, IpMode, Ipv4Addr, Netdever, Netlinker, Socketer,
};

pub use cli::{Board, Opts, Spec};

/// Our device's address on the simulated network.
pub const DEV_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The simulated peer's address.
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// Prefix length of the simulated network.
pub const SIM_PREFIX: u8 = 24;
/// Our device's MAC on the simulated network.
pub const DEV_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
/// The simulated peer's MAC.
pub const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
/// The gateway passt plays by default: host programs on 127.0.0.1 are here.
pub const PASST_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The address passt hands our device by default.
pub const PASST_DEV_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// A name the simulated peer's DNS server resolves to the peer (every
/// `*.sim.test` name does).
pub const PEER_NAME: &str = "peer.sim.test";

/// What one example run reports on success: a one-line figure such as
/// `"612.4 MB/s (16 MiB)"` or `"rtt avg 41 us, p99 80 us"`.
pub type Outcome = Result<String, String>;

/// An example's entry point: run on `net` with options `o`.
pub type RunFn = fn(&Net, &Opts) -> Outcome;

/// The stack configuration every example uses: 64 KiB TCP buffers (a
/// host has the memory; the defaults are sized for microcontrollers), no
/// address until `net_connect`.
pub fn stack_config() -> StackConfig {
    StackConfig {
        tcp_rx_buffer: 64 * 1024,
        tcp_tx_buffer: 64 * 1024,
        ip: IpMode::Keep,
        ..StackConfig::default()
    }
}

/// The device (or peer) an example talks to: any board's Netdever + Netlinker.
pub type Dev = std::sync::Arc<dyn netdever::Device + Send + Sync>;

/// The network an example runs on.
pub struct Net {
    /// Our device: every example talks only to this.
    pub dev: Dev,
    /// The simulated peer (a second stack on the same switch), `None` on TAP
    /// and passt.
    pub peer: Option<Dev>,
    /// The peer's address (where the simulated peer's servers listen).
    pub peer_ip: Ipv4Addr,
    /// An emulated board's chip, glue threads and peer; kept alive here.
    pub probed: Option<std::sync::Mutex<netdever_emu::boards::Probed>>,
    /// What the emulated board is, for logs.
    pub summary: Option<String>,
    /// Which board (link) the device runs on.
    pub board: Board,
    /// On passt: the gateway (this host's 127.0.0.1) and the port forward.
    pub passt: Option<PasstInfo>,
}

/// What an example on passt needs to know about the gateway.
#[derive(Debug, Clone)]
pub struct PasstInfo {
    /// The gateway address: host programs on 127.0.0.1 are reached here.
    pub gateway: Ipv4Addr,
    /// `(host port on 127.0.0.1, device port)` forwarded by passt (servers).
    pub forward: Option<(u16, u16)>,
    /// passt's PID.
    pub pid: Option<u32>,
}

impl Net {
    /// The built-in simulated network: our device (10.0.0.1/24) and a peer
    /// (10.0.0.2/24) on one in-memory switch. `pcap` records our device's
    /// frames.
    pub fn sim(pcap: Option<&Path>) -> Result<Net, String> {
        let switch = MemorySwitch::new();
        let dev_link = switch.port(DEV_MAC);
        let peer_link = switch.port(PEER_MAC);
        let static_ip = |a| IpMode::Static(IpConfig::new(a, SIM_PREFIX));
        // The peer is the device's DNS server too (see `peers::dns_server`).
        let dev_ip = IpMode::Static(IpConfig::new(DEV_IP, SIM_PREFIX).with_dns(PEER_IP));
        let dev = match pcap {
            Some(p) => start(with_pcap(dev_link, p)?, dev_ip, "sim", "")?,
            None => start(dev_link, dev_ip, "sim", "")?,
        };
        let peer = start(peer_link, static_ip(PEER_IP), "sim peer", "")?;
        Ok(Net {
            dev: std::sync::Arc::new(dev),
            peer: Some(std::sync::Arc::new(peer)),
            peer_ip: PEER_IP,
            probed: None,
            summary: None,
            board: Board::Sim,
            passt: None,
        })
    }

    /// Our device behind passt: a passt process started for it, its
    /// address from passt's DHCP (or `ip`, which passt is then told to
    /// assign), `forward` = `(host port, device port)` for a server.
    pub fn passt(
        ip: Option<&IpConfig>,
        forward: Option<(u16, u16)>,
        pcap: Option<&Path>,
    ) -> Result<Net, String> {
        let mut cfg = PasstConfig::new().mac(DEV_MAC);
        if let Some(c) = ip {
            let gw = c.gateway.unwrap_or(PASST_GATEWAY);
            cfg = cfg.network(c.addr, c.prefix_len, gw).dhcp(false);
        }
        if let Some((host, guest)) = forward {
            cfg = cfg.tcp_forward(host, guest).udp_forward(host, guest);
        }
        let link = PasstLink::spawn(&cfg).map_err(|e| format!("passt: {e}"))?;
        let info = PasstInfo {
            gateway: link.gateway(),
            forward,
            pid: link.pid(),
        };
        let mode = match ip {
            Some(_) => IpMode::Static(link.ip_config()),
            None => IpMode::Dhcp,
        };
        let hint = "passt is running but the link stays down";
        let dev = match pcap {
            Some(p) => start(with_pcap(link, p)?, mode, "passt", hint)?,
            None => start(link, mode, "passt", hint)?,
        };
        Ok(Net {
            dev: std::sync::Arc::new(dev),
            peer: None,
            peer_ip: PEER_IP,
            probed: None,
            summary: None,
            board: Board::Passt,
            passt: Some(info),
        })
    }

    /// Our device on a link someone else opened (tests open a TAP inside a
    /// network namespace this way), addressed per `ip`, with no peer.
    pub fn on_link<L: Link + Send + 'static>(
        link: L,
        ip: IpMode,
        board: Board,
    ) -> Result<Net, String> {
        let dev = start(link, ip, "link", "is the link up?")?;
        Ok(Net {
            dev: std::sync::Arc::new(dev),
            peer: None,
            peer_ip: PEER_IP,
            probed: None,
            summary: None,
            board,
            passt: None,
        })
    }

    /// Our device on the existing TAP interface `name`, addressed per `ip`.
    #[cfg(feature = "tap")]
    pub fn tap(name: &str, ip: IpMode, pcap: Option<&Path>) -> Result<Net, String> {
        use netdever::phy::tap::TapLink;
        let link = TapLink::open(name).map_err(|e| {
            format!(
                "opening TAP interface {name}: {e} (needs root or CAP_NET_ADMIN, and /dev/net/tun)"
            )
        })?;
        let what = format!("TAP {name}");
        let hint = format!("is {name} up? (ip link set {name} up)");
        let dev = match pcap {
            Some(p) => start(with_pcap(link, p)?, ip, &what, &hint)?,
            None => start(link, ip, &what, &hint)?,
        };
        Ok(Net {
            dev: std::sync::Arc::new(dev),
            peer: None,
            peer_ip: PEER_IP,
            probed: None,
            summary: None,
            board: Board::Tap,
            passt: None,
        })
    }

    /// An emulated co-processor board on the simulated network (its peer
    /// is a second stack, or for offload boards this host's loopback), or
    /// on TAP `tap` with `ip` in namespace `netns` (see [`cli::Netns`]):
    /// raw-frame boards put their frames on the TAP (opened inside `netns`
    /// when one is given), offload boards open their chip's host sockets in
    /// the TAP's namespace, bound to `ip` — the TAP must exist there, and
    /// `ip` must be one of its addresses.
    pub fn chip(
        board: netdever_emu::boards::Board,
        tap: Option<&str>,
        ip: Option<&IpConfig>,
        netns: &cli::Netns,
    ) -> Result<Net, String> {
        use netdever_emu::boards::{probe, HostNet};
        let net = match (tap, ip) {
            (Some(t), Some(c)) => {
                let net = HostNet::tap(t, IpMode::Static(c.clone()));
                match netns {
                    cli::Netns::Current if board.raw_frames() => net,
                    _ => {
                        let path = netns.path()?;
                        if !board.raw_frames() {
                            cli::check_interface_in(&path, t)?;
                        }
                        net.with_netns(path)
                    }
                }
            }
            (Some(_), None) => return Err("an emulated board on --tap needs --ip".into()),
            (None, _) => HostNet::sim(),
        };
        let p = probe(board, net.with_stack(stack_config()))?;
        p.connect()?;
        Ok(Net {
            dev: p.device.clone(),
            peer: p.peer.clone(),
            peer_ip: p.peer_ip.unwrap_or(PEER_IP),
            board: Board::Chip(board),
            passt: None,
            summary: Some(p.summary.clone()),
            probed: Some(std::sync::Mutex::new(p)),
        })
    }

    /// The network the command line asks for.
    pub fn from_opts(o: &Opts) -> Result<Net, String> {
        match o.board {
            Board::Chip(b) => {
                if o.pcap.is_some() {
                    return Err(format!(
                        "--pcap is not available on --board {}: the emulated chip's frames \
                         are not recorded (use --board sim, tap or passt)",
                        b.name()
                    ));
                }
                let net = Net::chip(b, o.tap.as_deref(), o.ip.as_ref(), &o.netns)?;
                if let Some(summary) = &net.summary {
                    o.say(format_args!("{summary}"));
                }
                Ok(net)
            }
            Board::Sim => Net::sim(o.pcap.as_deref()),
            #[cfg(feature = "tap")]
            Board::Tap => {
                let name = o.tap.as_deref().ok_or("--board tap needs --tap IFNAME")?;
                let ip = match (&o.ip, o.dhcp) {
                    (Some(c), false) => IpMode::Static(c.clone()),
                    (None, true) => IpMode::Dhcp,
                    _ => return Err("on a TAP link give either --ip A.B.C.D/N or --dhcp".into()),
                };
                let net = match &o.netns {
                    cli::Netns::Current => Net::tap(name, ip, o.pcap.as_deref())?,
                    given => {
                        use netdever::phy::tap::TapLink;
                        let path = given.path()?;
                        let owned = name.to_string();
                        let link = netdever_emu::kernel::run_in_netns(&path, move || {
                            TapLink::open(&owned)
                        })
                        .map_err(|e| format!("entering {}: {e}", path.display()))?
                        .map_err(|e| {
                            format!(
                                "opening TAP interface {name} in {}: {e} (needs root or \
                                 CAP_NET_ADMIN, and /dev/net/tun)",
                                path.display()
                            )
                        })?;
                        match o.pcap.as_deref() {
                            Some(p) => Net::on_link(with_pcap(link, p)?, ip, Board::Tap)?,
                            None => Net::on_link(link, ip, Board::Tap)?,
                        }
                    }
                };
                if let Ok(c) = net.dev.ip_config() {
                    let gw = c
                        .gateway
                        .map(|g| format!(", gateway {g}"))
                        .unwrap_or_default();
                    o.say(format_args!(
                        "net up on {name}: {}/{}{gw}",
                        c.addr, c.prefix_len
                    ));
                }
                Ok(net)
            }
            #[cfg(not(feature = "tap"))]
            Board::Tap => Err("this build has no TAP support (feature `tap`)".into()),
            Board::Passt => {
                let forward = o.server.then_some((o.host_port, o.port));
                let net = Net::passt(o.ip.as_ref(), forward, o.pcap.as_deref())?;
                let info = net.passt.as_ref().expect("passt info");
                if let Ok(c) = net.dev.ip_config() {
                    o.say(format_args!(
                        "net up behind passt (pid {}): {}/{}, gateway {} = this host's 127.0.0.1",
                        info.pid.map_or("?".into(), |p| p.to_string()),
                        c.addr,
                        c.prefix_len,
                        info.gateway
                    ));
                }
                if let Some((h, g)) = forward {
                    o.say(format_args!(
                        "passt forwards 127.0.0.1:{h} on this host to device port {g} (TCP and UDP)"
                    ));
                }
                Ok(net)
            }
        }
    }

    /// Where host programs are for the device: on passt the gateway
    /// (`127.0.0.1` of this host), `None` elsewhere.
    pub fn host_gateway(&self) -> Option<Ipv4Addr> {
        self.passt.as_ref().map(|p| p.gateway)
    }

    /// A host name as the device must use it: on passt `localhost` and
    /// `127.x.y.z` (this host) become the gateway; otherwise unchanged.
    pub fn device_host(&self, host: &str) -> String {
        match self.host_gateway() {
            Some(gw)
                if host == "localhost"
                    || host.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback()) =>
            {
                gw.to_string()
            }
            _ => host.to_string(),
        }
    }

    /// The URL an HTTP client example fetches: `--url` if given (on passt,
    /// `localhost` / `127.0.0.1` mean this host and become the gateway),
    /// else `path` on the network's default server: the simulated peer by
    /// name ([`PEER_NAME`], through its DNS server), or this host behind
    /// passt. On TAP `--url` is required.
    pub fn url_for(&self, o: &Opts, path: &str) -> Result<http::Url, String> {
        match o.text_opt("--url") {
            Some(u) => {
                let mut url = http::Url::parse(u)?;
                url.host = self.device_host(&url.host);
                Ok(url)
            }
            None => {
                let host = match (self.board, self.host_gateway()) {
                    (Board::Sim, _) => PEER_NAME.to_string(),
                    (_, Some(gw)) => gw.to_string(),
                    _ => return Err("give the server with --url http://HOST[:PORT]/PATH".into()),
                };
                http::Url::parse(&format!("http://{host}:{}{path}", o.port))
            }
        }
    }

    /// Run `f` with the simulated peer serving the HTTP test site
    /// ([`peers::test_site`]) on `port` and DNS for `*.sim.test`; on other
    /// boards just run `f`.
    pub fn with_web_peer<R>(&self, port: u16, f: impl FnOnce() -> R) -> Result<R, String> {
        let Some(peer) = &self.peer else {
            return Ok(f());
        };
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let dns = peers::dns_server(s, peer, &stop)?;
            let web = match peers::http_server(s, peer, port, &stop) {
                Ok(w) => w,
                Err(e) => {
                    stop.store(true, std::sync::atomic::Ordering::Release);
                    let _ = dns.join();
                    return Err(e);
                }
            };
            let r = f();
            stop.store(true, std::sync::atomic::Ordering::Release);
            let _ = dns.join();
            let _ = web.join();
            Ok(r)
        })
    }

    /// Print `listening on A.B.C.D:P` (the examples' convention) and, on
    /// passt, where host programs reach it.
    pub fn announce_listening(&self, o: &Opts, port: u16) -> Result<(), String> {
        let ip = self.dev_ip()?;
        if !o.quiet {
            announce(format_args!("listening on {ip}:{port}"));
            if let Some((h, g)) = self.passt.as_ref().and_then(|p| p.forward) {
                if g == port {
                    announce(format_args!(
                        "from this host: 127.0.0.1:{h} (forwarded by passt)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Where a host client reaches the server on device port `port`: the
    /// passt forward on 127.0.0.1, else the device address itself.
    pub fn reachable_at(&self, port: u16) -> Result<std::net::SocketAddr, String> {
        if let Some((h, g)) = self.passt.as_ref().and_then(|p| p.forward) {
            if g == port {
                return Ok(std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, h)));
            }
        }
        Ok(std::net::SocketAddr::from((self.dev_ip()?, port)))
    }

    /// Our device's IPv4 address.
    pub fn dev_ip(&self) -> Result<Ipv4Addr, String> {
        match self.dev.addr() {
            Ok(netdever::IpAddr::V4(a)) => Ok(a),
            Ok(a) => Err(format!("unexpected device address {a}")),
            Err(e) => Err(format!("device has no address: {e}")),
        }
    }
}

fn with_pcap<L: Link>(
    link: L,
    path: &Path,
) -> Result<PcapLink<L, std::io::BufWriter<std::fs::File>>, String> {
    PcapLink::create(link, path).map_err(|e| format!("creating pcap file {}: {e}", path.display()))
}

/// Start a stack on `link` and bring it up with `ip`; `down_hint` is
/// added to the error if the link stays down.
fn start<L: Link + Send + 'static>(
    link: L,
    ip: IpMode,
    what: &str,
    down_hint: &str,
) -> Result<HostStack, String> {
    let dev = HostStack::new(link, stack_config())
        .map_err(|e| format!("{what}: starting the stack: {e}"))?;
    let dhcp = matches!(ip, IpMode::Dhcp);
    let params = ConnectParams {
        ip,
        hostname: "netdever",
        connect_timeout: if dhcp {
            Duration::from_secs(15)
        } else {
            Duration::from_secs(5)
        },
        ..ConnectParams::default()
    };
    dev.net_connect(&params).map_err(|e| match e {
        Error::ConnectFailed => {
            format!("{what}: the link is down ({e}); {down_hint}")
        }
        Error::Timeout if dhcp => format!("{what}: no DHCP lease within 15 s"),
        e => format!("{what}: joining the network: {e}"),
    })?;
    Ok(dev)
}

/// A deadline `d` from now on `dev`'s clock.
pub fn within(dev: &(impl Socketer + ?Sized), d: Duration) -> Deadline {
    Deadline::after(dev.now(), d)
}

/// Exit the process with a message if it is still running after `limit`
/// (every example run that is not `--serve` is bounded).
pub fn watchdog(what: &'static str, limit: Duration) {
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            std::thread::sleep(limit);
            eprintln!(
                "{what}: still running after {} s, giving up",
                limit.as_secs()
            );
            std::process::exit(3);
        })
        .expect("spawn watchdog");
}

/// Megabytes (10^6 bytes) per second.
pub fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64().max(1e-9) / 1e6
}

/// `16 MiB`, `512 KiB`, `100 B`.
pub fn fmt_size(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

/// Print a line and flush stdout at once (so a parent process reading a
/// pipe sees it now).
pub fn announce(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The `main` of every example binary: parse the command line, build the
/// network, run, report, exit (0 on success, 1 on failure, 2 on bad usage).
pub fn main(spec: &Spec, run: RunFn) -> ! {
    run_parsed(spec, cli::parse(spec, std::env::args().skip(1)), run)
}

/// The rest of [`main`] once the command line is parsed (`Ok(None)`: help
/// was asked for); examples with text options parse their own way first.
pub fn run_parsed(spec: &Spec, parsed: Result<Option<Opts>, String>, run: RunFn) -> ! {
    let o = match parsed {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{}", cli::usage(spec));
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("{}: {e}\n(try --help)", spec.name);
            std::process::exit(2);
        }
    };
    // Clients and self-tests are bounded; a server told to serve, or one on
    // a real network (a TAP, with any board, or passt), runs until killed or
    // until --duration.
    if !(o.serve || (spec.server && (o.tap.is_some() || o.board == Board::Passt))) {
        watchdog(spec.name, Duration::from_secs(120));
    }
    let net = match Net::from_opts(&o) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{}: {e}", spec.name);
            std::process::exit(1);
        }
    };
    let r = run(&net, &o);
    drop(net);
    match r {
        Ok(summary) => {
            announce(format_args!("{}: ok: {summary}", spec.name));
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("{}: FAILED: {e}", spec.name);
            std::process::exit(1);
        }
    }
}
