//! Hand-rolled command line parsing (no clap, to keep build times low).
//!
//! Every example takes the network options (`--board`, `--tap`, `--netns`,
//! `--passt`, `--ip`, `--gateway`, `--dhcp`, `--pcap`); clients take
//! `--peer`, servers `--port`, `--host-port`, `--serve` and `--duration`;
//! each example adds its own (`--bytes`, `--url`, ...) through
//! [`Spec::extra`].
//!
//! `--tap IFNAME` names the network the device is on, for every board:
//! raw-frame boards (`tap`, `w5500-macraw`, `esp-hosted`) put their frames
//! on that TAP, and the offload boards (`w5500-offload`, `esp-at`), whose
//! emulated chip runs TCP/IP with host sockets, open those sockets in the
//! TAP's network namespace, bound to `--ip`: a peer on the TAP side (in that
//! namespace) reaches the device at the address the example prints. Which
//! namespace: `--netns NAME` if given (`/run/netns/NAME`, as `ip netns add`
//! makes it, or a path such as `/proc/PID/ns/net`); otherwise the one this
//! program runs in — so `ip netns exec NS example --tap tap0 ...` needs no
//! `--netns`, while a program started outside the namespace names it.
//! With `--netns` the raw-frame boards open (or create) the TAP inside that
//! namespace too. See [`Netns`].

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use netdever::{IpConfig, Ipv4Addr};

use super::{DEV_IP, PASST_GATEWAY, PEER_IP, SIM_PREFIX};

/// The boards (links) an example can run on, with a line of help each.
pub const BOARDS: &[(&str, &str)] = &[
    (
        "sim",
        "built-in simulated network: in-memory switch, a second stack plays the peer (default)",
    ),
    (
        "tap",
        "an existing Linux TAP interface (--tap IFNAME; default when --tap is given)",
    ),
    (
        "passt",
        "behind passt, a userspace gateway to this host (same as --passt; no root needed)",
    ),
    (
        "w5500-macraw",
        "emulated W5500 in MACRAW, smoltcp on the host side (simulated network or --tap)",
    ),
    (
        "w5500-offload",
        "emulated W5500 hardwired sockets (chip at 127.0.0.2, peer on this host's loopback;\n                  with --tap: sockets at --ip in the TAP's namespace)",
    ),
    (
        "esp-at",
        "emulated ESP-AT firmware on a serial line (chip at 127.0.0.3, peer on loopback;\n                  with --tap: sockets at --ip in the TAP's namespace)",
    ),
    (
        "esp-hosted",
        "emulated ESP32 with ESP-Hosted-FG, Wi-Fi bridge to the simulated network or --tap",
    ),
];

/// Which board the device runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Board {
    /// The built-in simulated network.
    Sim,
    /// A Linux TAP interface.
    Tap,
    /// Behind passt: host programs on 127.0.0.1 are at the gateway address.
    Passt,
    /// An emulated co-processor board (`netdever_emu::boards`).
    Chip(netdever_emu::boards::Board),
}

/// Which network namespace a TAP network is in (`--netns`).
///
/// The namespace matters for the offload boards: their emulated chip's
/// host sockets are opened there, bound to the device's `--ip`, which must
/// be an address of that namespace. The raw-frame boards open the TAP
/// there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Netns {
    /// `--netns NAME` or `--netns PATH`: this namespace
    /// (`/run/netns/NAME` for a bare name).
    Given(PathBuf),
    /// No `--netns`: the namespace of the program (the thread that builds
    /// the network), where it would open the TAP itself.
    Current,
}

impl Netns {
    /// `NAME` (no `/`) is `/run/netns/NAME`, as `ip netns add NAME` makes
    /// it; anything else is a path to a namespace file.
    pub fn parse(value: &str) -> Result<Netns, String> {
        if value.is_empty() || value == "." || value == ".." {
            return Err(format!(
                "--netns: expected a namespace name or path, got {value:?}"
            ));
        }
        Ok(Netns::Given(if value.contains('/') {
            PathBuf::from(value)
        } else {
            PathBuf::from("/run/netns").join(value)
        }))
    }

    /// The namespace file to enter: the given one, or for
    /// [`Netns::Current`] the calling thread's namespace by a name that
    /// outlives the thread — `/run/netns/NAME` when `ip netns` knows it
    /// (as under `ip netns exec NAME`), else `/proc/self/ns/net` when the
    /// thread is in the process's namespace. A thread in an unnamed
    /// namespace other than the process's is an error (give `--netns`).
    pub fn path(&self) -> Result<PathBuf, String> {
        match self {
            Netns::Given(p) => Ok(p.clone()),
            Netns::Current => current_netns(),
        }
    }
}

/// See [`Netns::path`].
fn current_netns() -> Result<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &std::path::Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
    let me = id("/proc/thread-self/ns/net".as_ref())
        .map_err(|e| format!("finding this program's network namespace: {e}"))?;
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        let mut named: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        named.sort();
        if let Some(p) = named.into_iter().find(|p| id(p).is_ok_and(|i| i == me)) {
            return Ok(p);
        }
    }
    let process = std::path::PathBuf::from("/proc/self/ns/net");
    if id(&process).is_ok_and(|i| i == me) {
        return Ok(process);
    }
    Err(
        "this thread is in an unnamed network namespace that is not the program's; \
         name it with --netns PATH"
            .into(),
    )
}

/// Fail with a hint unless network interface `name` exists in the
/// namespace at `ns` (an offload board on `--tap` uses the TAP's namespace,
/// so the TAP must be there).
pub fn check_interface_in(ns: &std::path::Path, name: &str) -> Result<(), String> {
    let devs = netdever_emu::kernel::run_in_netns(ns, || {
        std::fs::read_to_string("/proc/thread-self/net/dev")
    })
    .map_err(|e| format!("entering {}: {e}", ns.display()))?
    .map_err(|e| format!("listing the interfaces of {}: {e}", ns.display()))?;
    let found = devs
        .lines()
        .filter_map(|l| l.split_once(':'))
        .any(|(n, _)| n.trim() == name);
    if found {
        return Ok(());
    }
    Err(format!(
        "no interface {name} in network namespace {}: an offload board's sockets live in the \
         TAP's namespace; run inside it (ip netns exec NAME ...) or name it with --netns NAME",
        ns.display()
    ))
}

/// An example-specific option.
pub struct Extra {
    /// `--name`.
    pub name: &'static str,
    /// Placeholder for the value in the help; empty for a flag. The
    /// placeholders in [`NUMERIC`] take numbers (checked when parsing), any
    /// other (`URL`, `FILE`, `TEXT`) takes free text.
    pub value: &'static str,
    /// Default value as it would be typed.
    pub default: &'static str,
    /// One line of help.
    pub help: &'static str,
}

/// Placeholders of [`Extra`] options whose values are numbers.
pub const NUMERIC: &[&str] = &["N", "BYTES", "MS", "SECS"];

/// What an example is and which options it takes.
pub struct Spec {
    /// Binary name.
    pub name: &'static str,
    /// A paragraph for `--help`.
    pub about: &'static str,
    /// A server (takes `--port`, `--serve`, `--duration`) or a client (`--peer`).
    pub server: bool,
    /// Default port: the server's, or the peer's.
    pub default_port: u16,
    /// Example-specific options.
    pub extra: &'static [Extra],
}

/// Parsed options.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Which board.
    pub board: Board,
    /// `--tap IFNAME`.
    pub tap: Option<String>,
    /// `--netns NAME`: the TAP network's namespace ([`Netns::Current`]
    /// unless given; only meaningful with `--tap`).
    pub netns: Netns,
    /// `--ip A.B.C.D/N` with `--gateway G` folded in.
    pub ip: Option<IpConfig>,
    /// `--dhcp`.
    pub dhcp: bool,
    /// `--pcap FILE`.
    pub pcap: Option<PathBuf>,
    /// `--peer A.B.C.D:P` (clients).
    pub peer: Option<SocketAddr>,
    /// `--port P` (servers), or the port the simulated peer serves on (clients).
    pub port: u16,
    /// `--serve`: keep serving after the self-test.
    pub serve: bool,
    /// `--duration SECS`: stop serving after this long.
    pub duration: Option<Duration>,
    /// `--host-port H` (servers on passt): the host port on 127.0.0.1 that
    /// passt forwards to `--port`.
    pub host_port: u16,
    /// Whether the example is a server (from its [`Spec`]).
    pub server: bool,
    /// Print nothing but errors (the suite sets this).
    pub quiet: bool,
    /// Set to stop a serving server early (tests use it; see [`Opts::stopped`]).
    pub stop: Arc<AtomicBool>,
    extra: Vec<(&'static str, String)>,
}

impl Opts {
    /// Every option at its default, on the simulated network.
    pub fn defaults(spec: &Spec) -> Opts {
        Opts {
            board: Board::Sim,
            tap: None,
            netns: Netns::Current,
            ip: None,
            dhcp: false,
            pcap: None,
            peer: None,
            port: spec.default_port,
            serve: false,
            duration: None,
            host_port: default_host_port(spec.default_port),
            server: spec.server,
            quiet: false,
            stop: Arc::new(AtomicBool::new(false)),
            extra: spec
                .extra
                .iter()
                .map(|e| (e.name, e.default.to_string()))
                .collect(),
        }
    }

    /// The same, printing nothing but errors.
    pub fn quiet(mut self) -> Opts {
        self.quiet = true;
        self
    }

    /// Set an example-specific option (the suite uses this to pick sizes).
    pub fn set(mut self, name: &'static str, value: &str) -> Opts {
        match self.extra.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value.to_string(),
            None => panic!("example has no option {name}"),
        }
        self
    }

    /// Whether a server should stop now: [`stop`](Self::stop) was set, or
    /// `--duration` has passed since `started`.
    pub fn stopped(&self, started: std::time::Instant) -> bool {
        self.stop.load(Ordering::Acquire) || self.duration.is_some_and(|d| started.elapsed() >= d)
    }

    /// Print a progress line unless quiet.
    pub fn say(&self, args: fmt::Arguments<'_>) {
        if !self.quiet {
            super::announce(args);
        }
    }

    fn raw(&self, name: &str) -> &str {
        self.extra
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("example has no option {name}"))
    }

    /// A byte count: `4096`, `64K`, `16M`, `1G` (binary multiples; `KiB`,
    /// `MiB`, `GiB` also accepted).
    pub fn size(&self, name: &str) -> Result<u64, String> {
        parse_size(self.raw(name)).ok_or_else(|| format!("{name}: not a size: {}", self.raw(name)))
    }

    /// A number (the size suffixes work here too: `--count 1K`).
    pub fn num(&self, name: &str) -> Result<u64, String> {
        parse_size(self.raw(name))
            .ok_or_else(|| format!("{name}: not a number: {}", self.raw(name)))
    }

    /// A boolean flag.
    pub fn flag(&self, name: &str) -> bool {
        self.raw(name) == "true"
    }

    /// A text option as given (empty if not given and without default).
    pub fn text(&self, name: &str) -> &str {
        self.raw(name)
    }

    /// A text option, `None` when empty.
    pub fn text_opt(&self, name: &str) -> Option<&str> {
        Some(self.raw(name)).filter(|v| !v.is_empty())
    }

    /// Milliseconds.
    pub fn millis(&self, name: &str) -> Result<Duration, String> {
        self.num(name).map(Duration::from_millis)
    }
}

/// The host port passt forwards to a server's `port` by default: the same
/// port when unprivileged, else `port + 10000` (80 -> 10080).
pub fn default_host_port(port: u16) -> u16 {
    if port >= 1024 {
        port
    } else {
        port + 10000
    }
}

/// `4096`, `64K`, `16M`, `16MiB`, `1G`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// The `--help` text.
pub fn usage(spec: &Spec) -> String {
    let mut u = String::new();
    let role = if spec.server {
        "[--port P] [--host-port H] [--serve] [--duration SECS]"
    } else {
        "[--peer A.B.C.D:P]"
    };
    u += &format!(
        "{name} — {about}\n\nUSAGE:\n    {name} [--board NAME] [--tap IFNAME [--netns NAME] (--ip A.B.C.D/N [--gateway G] | --dhcp)]\n        [--passt] [--pcap FILE] {role} [OPTIONS]\n\n",
        name = spec.name,
        about = spec.about,
    );
    u += "NETWORK:\n";
    u += &format!(
        "    (default)               the built-in simulated network: this device is {DEV_IP}/{SIM_PREFIX},\n                            a second stack in the process is the peer at {PEER_IP}/{SIM_PREFIX}.\n                            No root needed.\n"
    );
    u += "    --board NAME            sim, tap, passt, or an emulated chip: w5500-macraw,\n                            w5500-offload, esp-at, esp-hosted\n";
    u += "    --tap IFNAME            run on an existing TAP interface (implies --board tap). With\n                            w5500-offload or esp-at the chip's sockets live in the TAP's\n                            network namespace, bound to --ip (which must be an address\n                            there, e.g. ip addr add A.B.C.D/32 dev lo): a peer on the\n                            TAP side reaches the device at the address printed\n";
    u += "    --netns NAME            the network namespace the TAP is in (/run/netns/NAME, or a\n                            path): offload boards open their sockets there, the other\n                            boards open the TAP there. Default: the namespace this\n                            program runs in (as under `ip netns exec NAME`)\n";
    u += &format!(
        "    --passt                 run behind passt, a userspace gateway to this host (implies\n                            --board passt; package passt, no root). The device gets\n                            its address by DHCP from passt; programs listening on this\n                            host's 127.0.0.1 are reached at the gateway {PASST_GATEWAY}\n                            (--peer 127.0.0.1:P is rewritten to it; clients default to\n                            {PASST_GATEWAY}:P); a server's --port is forwarded from\n                            127.0.0.1:--host-port.\n"
    );
    u += "    --ip A.B.C.D/N          static address (TAP; on passt: the address passt assigns)\n";
    u += "    --gateway A.B.C.D       default gateway (with --ip)\n";
    u += "    --dhcp                  get the address over DHCP (TAP; the default on passt)\n";
    u += "    --pcap FILE             record every frame of this device to FILE (pcap)\n";
    if spec.server {
        u += &format!(
            "\nSERVER:\n    --port P                port to listen on (default {})\n    --host-port H           on passt: the port on 127.0.0.1 forwarded to --port\n                            (default {})\n    --serve                 on the simulated network, keep serving after the self-test\n                            (on TAP and passt the server always serves)\n    --duration SECS         stop serving after SECS seconds (default: until killed)\n",
            spec.default_port,
            default_host_port(spec.default_port)
        );
    } else {
        u += &format!(
            "\nCLIENT:\n    --peer A.B.C.D:P        the server to talk to (required on TAP; on the simulated\n                            network the peer is {PEER_IP} and P picks its port, default {};\n                            on passt the default is the host, {PASST_GATEWAY}:P)\n",
            spec.default_port
        );
    }
    if !spec.extra.is_empty() {
        u += "\nOPTIONS:\n";
        for e in spec.extra {
            let left = if e.value.is_empty() {
                e.name.to_string()
            } else {
                format!("{} {}", e.name, e.value)
            };
            let default = if e.value.is_empty() || e.default.is_empty() {
                String::new()
            } else {
                format!(" (default {})", e.default)
            };
            u += &format!("    {left:<24}{}{default}\n", e.help);
        }
    }
    u += "\n    -h, --help              this text\n";
    u
}

/// Parse the command line. `Ok(None)` means `--help` was asked for.
pub fn parse(spec: &Spec, args: impl IntoIterator<Item = String>) -> Result<Option<Opts>, String> {
    let mut o = Opts::defaults(spec);
    let mut board: Option<String> = None;
    let mut gateway: Option<Ipv4Addr> = None;
    let mut passt = false;
    let mut host_port: Option<u16> = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let takes_value = match name.as_str() {
            "-h" | "--help" => return Ok(None),
            "--dhcp" | "--passt" => false,
            "--serve" if spec.server => false,
            "--board" | "--tap" | "--netns" | "--ip" | "--gateway" | "--pcap" => true,
            "--port" | "--host-port" | "--duration" if spec.server => true,
            "--peer" if !spec.server => true,
            n => match spec.extra.iter().find(|e| e.name == n) {
                Some(e) => !e.value.is_empty(),
                None => return Err(format!("unknown option {n}")),
            },
        };
        let value = if takes_value {
            match inline {
                Some(v) => v,
                None => args.next().ok_or_else(|| format!("{name} needs a value"))?,
            }
        } else if inline.is_some() {
            return Err(format!("{name} takes no value"));
        } else {
            "true".to_string()
        };
        match name.as_str() {
            "--board" => board = Some(value),
            "--tap" => o.tap = Some(value),
            "--netns" => o.netns = Netns::parse(&value)?,
            "--ip" => {
                o.ip = Some(
                    IpConfig::parse_cidr(&value)
                        .ok_or_else(|| format!("--ip: expected A.B.C.D/N, got {value}"))?,
                )
            }
            "--gateway" => {
                gateway = Some(
                    value
                        .parse()
                        .map_err(|_| format!("--gateway: expected A.B.C.D, got {value}"))?,
                )
            }
            "--dhcp" => o.dhcp = true,
            "--passt" => passt = true,
            "--pcap" => o.pcap = Some(PathBuf::from(value)),
            "--serve" => o.serve = true,
            "--port" => {
                o.port = value
                    .parse()
                    .map_err(|_| format!("--port: expected a port number, got {value}"))?;
            }
            "--host-port" => {
                host_port =
                    Some(value.parse().map_err(|_| {
                        format!("--host-port: expected a port number, got {value}")
                    })?);
            }
            "--duration" => {
                let secs: f64 = value
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| format!("--duration: expected seconds, got {value}"))?;
                o.duration = Some(Duration::from_secs_f64(secs));
            }
            "--peer" => {
                o.peer = Some(
                    value
                        .parse()
                        .map_err(|_| format!("--peer: expected A.B.C.D:P, got {value}"))?,
                )
            }
            n => {
                let numeric = spec
                    .extra
                    .iter()
                    .any(|e| e.name == n && NUMERIC.contains(&e.value));
                if numeric && parse_size(&value).is_none() {
                    return Err(format!(
                        "{n}: expected a number (suffixes K, M, G), got {value}"
                    ));
                }
                let slot = o
                    .extra
                    .iter_mut()
                    .find(|(e, _)| *e == n)
                    .expect("checked above");
                slot.1 = value;
            }
        }
    }

    o.host_port = host_port.unwrap_or(default_host_port(o.port));
    if o.netns != Netns::Current && o.tap.is_none() {
        return Err("--netns is the namespace of a TAP network; it goes with --tap IFNAME".into());
    }
    o.board = match board.as_deref() {
        _ if passt && (o.tap.is_some() || board.as_deref().is_some_and(|b| b != "passt")) => {
            return Err("--passt cannot be combined with --tap or another --board".into())
        }
        None if o.tap.is_some() => Board::Tap,
        None if passt => Board::Passt,
        Some("passt") => Board::Passt,
        None | Some("sim") => Board::Sim,
        Some("tap") => Board::Tap,
        Some(other) if other.parse::<netdever_emu::boards::Board>().is_ok() => {
            Board::Chip(other.parse().expect("checked"))
        }
        Some(other) => {
            let list: Vec<String> = BOARDS
                .iter()
                .map(|(n, h)| format!("    {n:<14}{h}"))
                .collect();
            return Err(format!(
                "unknown board {other:?}; the boards are:\n{}",
                list.join("\n")
            ));
        }
    };
    match o.board {
        Board::Chip(_) => {
            if o.dhcp || (o.tap.is_some() && o.ip.is_none()) {
                return Err("an emulated board on --tap needs --ip A.B.C.D/N (no --dhcp)".into());
            }
            if o.tap.is_none() && (o.ip.is_some() || gateway.is_some()) {
                return Err(
                    "on the simulated network the boards have fixed addresses; --ip is for --tap"
                        .into(),
                );
            }
            if let (Some(c), Some(g)) = (&mut o.ip, gateway) {
                c.gateway = Some(g);
            }
            if o.tap.is_some() && !spec.server && o.peer.is_none() {
                return Err(
                    "on a TAP link there is no built-in peer: give --peer A.B.C.D:P".into(),
                );
            }
        }
        Board::Sim => {
            if o.tap.is_some() {
                return Err(
                    "--tap runs on a TAP link; it cannot be combined with --board sim".into(),
                );
            }
            if o.ip.is_some() || o.dhcp || gateway.is_some() {
                return Err(format!(
                    "the simulated network has fixed addresses (this device {DEV_IP}/{SIM_PREFIX}, peer {PEER_IP}/{SIM_PREFIX}); --ip, --gateway and --dhcp are for --tap"
                ));
            }
            if let Some(p) = o.peer {
                if p.ip() != std::net::IpAddr::V4(PEER_IP) {
                    return Err(format!(
                        "on the simulated network the peer is {PEER_IP}; --peer {p} cannot be reached"
                    ));
                }
                o.port = p.port();
            }
        }
        Board::Tap => {
            if o.tap.is_none() {
                return Err("--board tap needs --tap IFNAME".into());
            }
            match (&mut o.ip, o.dhcp) {
                (Some(_), true) => return Err("give either --ip or --dhcp, not both".into()),
                (None, false) => return Err("on a TAP link give --ip A.B.C.D/N or --dhcp".into()),
                (Some(c), false) => {
                    if let Some(g) = gateway {
                        c.gateway = Some(g);
                    }
                }
                (None, true) => {
                    if gateway.is_some() {
                        return Err("--gateway goes with --ip (DHCP supplies its own)".into());
                    }
                }
            }
            if !spec.server && o.peer.is_none() {
                return Err(
                    "on a TAP link there is no built-in peer: give --peer A.B.C.D:P".into(),
                );
            }
        }
        Board::Passt => {
            if o.tap.is_some() {
                return Err("--tap and --passt are two different links; pick one".into());
            }
            if o.dhcp && o.ip.is_some() {
                return Err("give either --ip or --dhcp, not both".into());
            }
            if let Some(c) = &mut o.ip {
                if c.prefix_len == 0 || c.prefix_len > 30 {
                    return Err("--ip: passt needs a prefix of /1 to /30".into());
                }
                // passt plays the gateway: by default .2 of the network.
                let g = gateway.unwrap_or_else(|| {
                    let net = u32::from(c.addr) & (u32::MAX << (32 - c.prefix_len));
                    Ipv4Addr::from(net + 2)
                });
                if g == c.addr {
                    return Err(format!("--ip {} is the gateway's address", c.addr));
                }
                c.gateway = Some(g);
            } else if gateway.is_some() {
                return Err("--gateway goes with --ip".into());
            }
            if !spec.server {
                // Clients talk to host programs: 127.0.0.1 on this host is the
                // gateway on passt's side.
                let gw =
                    o.ip.as_ref()
                        .and_then(|c| c.gateway)
                        .unwrap_or(PASST_GATEWAY);
                o.peer = Some(match o.peer {
                    None => SocketAddr::from((gw, o.port)),
                    Some(p) if p.ip().is_loopback() => SocketAddr::from((gw, p.port())),
                    Some(p) => p,
                });
                o.port = o.peer.map_or(o.port, |p| p.port());
            }
        }
    }
    Ok(Some(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: Spec = Spec {
        name: "c",
        about: "",
        server: false,
        default_port: 8000,
        extra: &[Extra {
            name: "--url",
            value: "URL",
            default: "",
            help: "",
        }],
    };
    const SERVER: Spec = Spec {
        name: "s",
        about: "",
        server: true,
        default_port: 80,
        extra: &[],
    };

    fn p(spec: &Spec, args: &[&str]) -> Result<Opts, String> {
        parse(spec, args.iter().map(|a| a.to_string())).map(|o| o.expect("not --help"))
    }

    #[test]
    fn passt_options() {
        let o = p(&CLIENT, &["--passt"]).unwrap();
        assert_eq!(o.board, Board::Passt);
        assert_eq!(o.peer, Some(SocketAddr::from((PASST_GATEWAY, 8000))));
        // 127.0.0.1 is this host: on passt's side, the gateway.
        let o = p(&CLIENT, &["--board", "passt", "--peer", "127.0.0.1:9"]).unwrap();
        assert_eq!(o.peer, Some(SocketAddr::from((PASST_GATEWAY, 9))));
        assert_eq!(o.port, 9);
        // Free-text options take text.
        let o = p(&CLIENT, &["--url", "http://x/"]).unwrap();
        assert_eq!(o.text("--url"), "http://x/");
        let o = p(&SERVER, &["--passt"]).unwrap();
        assert_eq!((o.port, o.host_port), (80, 10080));
        let o = p(
            &SERVER,
            &["--passt", "--port", "8080", "--host-port", "18080"],
        )
        .unwrap();
        assert_eq!((o.port, o.host_port), (8080, 18080));
        let o = p(&SERVER, &["--passt", "--ip", "192.168.9.5/24"]).unwrap();
        let ip = o.ip.unwrap();
        assert_eq!(ip.gateway, Some(Ipv4Addr::new(192, 168, 9, 2)));
        assert!(p(&SERVER, &["--passt", "--tap", "tap0"]).is_err());
        assert!(p(&SERVER, &["--passt", "--board", "sim"]).is_err());
        assert!(p(&SERVER, &["--passt", "--ip", "10.0.2.2/24"]).is_err());
    }
}
