//! Hand-rolled command line parsing (no clap, to keep build times low).
//!
//! Every example takes the network options (`--board`, `--tap`, `--ip`,
//! `--gateway`, `--dhcp`, `--pcap`); clients take `--peer`, servers `--port`,
//! `--serve` and `--duration`; each example adds its own (`--bytes`, ...)
//! through [`Spec::extra`].

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use netdever::{IpConfig, Ipv4Addr};

use super::{DEV_IP, PEER_IP, SIM_PREFIX};

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
];

/// Which board the device runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Board {
    /// The built-in simulated network.
    Sim,
    /// A Linux TAP interface.
    Tap,
}

/// An example-specific option.
pub struct Extra {
    /// `--name`.
    pub name: &'static str,
    /// Placeholder for the value in the help (`N`, `BYTES`); empty for a flag.
    pub value: &'static str,
    /// Default value as it would be typed.
    pub default: &'static str,
    /// One line of help.
    pub help: &'static str,
}

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
    /// Print nothing but errors (the suite sets this).
    pub quiet: bool,
    extra: Vec<(&'static str, String)>,
}

impl Opts {
    /// Every option at its default, on the simulated network.
    pub fn defaults(spec: &Spec) -> Opts {
        Opts {
            board: Board::Sim,
            tap: None,
            ip: None,
            dhcp: false,
            pcap: None,
            peer: None,
            port: spec.default_port,
            serve: false,
            duration: None,
            quiet: false,
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

    /// Milliseconds.
    pub fn millis(&self, name: &str) -> Result<Duration, String> {
        self.num(name).map(Duration::from_millis)
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
        "[--port P] [--serve] [--duration SECS]"
    } else {
        "[--peer A.B.C.D:P]"
    };
    u += &format!(
        "{name} — {about}\n\nUSAGE:\n    {name} [--board sim|tap] [--tap IFNAME (--ip A.B.C.D/N [--gateway G] | --dhcp)]\n        [--pcap FILE] {role} [OPTIONS]\n\n",
        name = spec.name,
        about = spec.about,
    );
    u += "NETWORK:\n";
    u += &format!(
        "    (default)               the built-in simulated network: this device is {DEV_IP}/{SIM_PREFIX},\n                            a second stack in the process is the peer at {PEER_IP}/{SIM_PREFIX}.\n                            No root needed.\n"
    );
    u += "    --board NAME            sim or tap (co-processor boards come later)\n";
    u += "    --tap IFNAME            run on an existing TAP interface (implies --board tap)\n";
    u += "    --ip A.B.C.D/N          static address on the TAP link\n";
    u += "    --gateway A.B.C.D       default gateway (with --ip)\n";
    u += "    --dhcp                  get the address over DHCP instead\n";
    u += "    --pcap FILE             record every frame of this device to FILE (pcap)\n";
    if spec.server {
        u += &format!(
            "\nSERVER:\n    --port P                port to listen on (default {})\n    --serve                 on the simulated network, keep serving after the self-test\n                            (on TAP the server always serves)\n    --duration SECS         stop serving after SECS seconds (default: until killed)\n",
            spec.default_port
        );
    } else {
        u += &format!(
            "\nCLIENT:\n    --peer A.B.C.D:P        the server to talk to (required on TAP; on the simulated\n                            network the peer is {PEER_IP} and P picks its port, default {})\n",
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
            let default = if e.value.is_empty() {
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
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let takes_value = match name.as_str() {
            "-h" | "--help" => return Ok(None),
            "--dhcp" => false,
            "--serve" if spec.server => false,
            "--board" | "--tap" | "--ip" | "--gateway" | "--pcap" => true,
            "--port" | "--duration" if spec.server => true,
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
            "--pcap" => o.pcap = Some(PathBuf::from(value)),
            "--serve" => o.serve = true,
            "--port" => {
                o.port = value
                    .parse()
                    .map_err(|_| format!("--port: expected a port number, got {value}"))?;
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
                if takes_value && parse_size(&value).is_none() {
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

    o.board = match board.as_deref() {
        None if o.tap.is_some() => Board::Tap,
        None | Some("sim") => Board::Sim,
        Some("tap") => Board::Tap,
        Some(other) => {
            let list: Vec<String> = BOARDS
                .iter()
                .map(|(n, h)| format!("    {n:<6}{h}"))
                .collect();
            return Err(format!(
                "unknown board {other:?}; the boards are:\n{}",
                list.join("\n")
            ));
        }
    };
    match o.board {
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
    }
    Ok(Some(o))
}
