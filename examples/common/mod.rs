//! Shared by every example: the command line, the network the example runs
//! on (the built-in simulated network or a TAP interface), the simulated
//! peer, and a few small helpers.
//!
//! An example binary is three lines: include this module and its app module
//! (`examples/apps/<name>.rs`), then hand the app's [`Spec`] and `run`
//! function to [`main`]. The suite (`examples/suite.rs`) calls the same `run`
//! functions on fresh simulated networks.
#![allow(dead_code)]

pub mod cli;
pub mod pattern;
pub mod peers;
pub mod tcp;

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use netdever::phy::memory::MemorySwitch;
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

/// The network an example runs on.
pub struct Net {
    /// Our device: every example talks only to this.
    pub dev: HostStack,
    /// The simulated peer (a second stack on the same switch), `None` on TAP.
    pub peer: Option<HostStack>,
    /// Which board (link) the device runs on.
    pub board: Board,
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
        let dev = match pcap {
            Some(p) => start(with_pcap(dev_link, p)?, static_ip(DEV_IP), "sim", "")?,
            None => start(dev_link, static_ip(DEV_IP), "sim", "")?,
        };
        let peer = start(peer_link, static_ip(PEER_IP), "sim peer", "")?;
        Ok(Net {
            dev,
            peer: Some(peer),
            board: Board::Sim,
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
            dev,
            peer: None,
            board: Board::Tap,
        })
    }

    /// The network the command line asks for.
    pub fn from_opts(o: &Opts) -> Result<Net, String> {
        match o.board {
            Board::Sim => Net::sim(o.pcap.as_deref()),
            #[cfg(feature = "tap")]
            Board::Tap => {
                let name = o.tap.as_deref().ok_or("--board tap needs --tap IFNAME")?;
                let ip = match (&o.ip, o.dhcp) {
                    (Some(c), false) => IpMode::Static(c.clone()),
                    (None, true) => IpMode::Dhcp,
                    _ => return Err("on a TAP link give either --ip A.B.C.D/N or --dhcp".into()),
                };
                let net = Net::tap(name, ip, o.pcap.as_deref())?;
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
        }
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
    let o = match cli::parse(spec, std::env::args().skip(1)) {
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
    // Clients and self-tests are bounded; a server told to serve runs until
    // killed or until --duration.
    if !(o.serve || (spec.server && o.board == Board::Tap)) {
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
