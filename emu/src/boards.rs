//! Every board netdever supports, on the host: the chip played by its
//! emulator, on the simulated network or a TAP interface.
//!
//! An example or test picks a [`Board`] by name (`--board NAME`) and calls
//! [`probe`] with a [`HostNet`]; it gets a [`Probed`]: the device (a
//! [`Device`] — sockets and link control, the same as on a real board), the
//! address it will have, and on the simulated network a peer to talk to.
//! The device is built by the product crate's own board glue
//! (`netdever::board::*::probe*`), with the emulator's SPI device, pins or
//! serial port standing in for the hardware.
//!
//! | board           | device                                  | its network                                     | peer on the simulated network |
//! |-----------------|-----------------------------------------|-------------------------------------------------|-------------------------------|
//! | `sim`           | full stack on a switch port             | memory switch, 10.0.0.1/24                      | a second stack, 10.0.0.2      |
//! | `tap`           | full stack on a TAP interface           | the TAP (static or DHCP)                        | —                             |
//! | `w5500-macraw`  | full stack over the W5500 emulator      | its Ethernet port on the switch / the TAP       | a second stack, 10.0.0.2      |
//! | `w5500-offload` | W5500 hardwired sockets                 | host sockets at 127.0.0.2 / in the namespace    | [`KernelNetdev`] at 127.0.0.1 |
//! | `esp-at`        | ESP-AT driver over the emulated UART    | host sockets at 127.0.0.3 / in the namespace    | [`KernelNetdev`] at 127.0.0.1 |
//! | `esp-hosted`    | full stack over the ESP-Hosted emulator | its station bridged to the switch / the TAP     | a second stack, 10.0.0.2      |
//!
//! Names: the raw-frame boards' device uses the simulated peer as its DNS
//! server (as the examples' peer answers DNS); the W5500 offload device
//! uses the kernel peer (127.0.0.1) as DNS server; the ESP-AT firmware
//! resolves [`HostNet::hosts`] itself (and the kernel peer knows them too).
//!
//! On a link someone else opened ([`HostNet::link`], e.g. passt's userspace
//! gateway to this host) a raw-frame board puts its frames on that link and
//! has no built-in peer; the offload boards have no raw frames and refuse it.
//!
//! On a TAP network the raw-frame boards put their frames on the TAP
//! (opened inside [`TapNet::netns`] if given), and the offload boards' host
//! sockets live in [`TapNet::netns`] (required for them), bound to the
//! device's static address, which must be assigned in that namespace (for
//! example `ip -n NS addr add 10.0.0.1/32 dev lo`): a peer in the namespace
//! reaches the device at that address.
//!
//! ```no_run
//! use netdever::Socketer;
//! use netdever_emu::boards::{probe, Board, HostNet};
//! let board: Board = "w5500-offload".parse()?;
//! let p = probe(board, HostNet::sim())?;
//! let ip = p.connect()?; // net_connect with the right credentials and address
//! println!("{board} up at {ip}, peer {:?}", p.peer_ip);
//! # Ok::<(), String>(())
//! ```

use std::any::Any;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use netdever::board;
use netdever::phy::memory::MemorySwitch;
use netdever::phy::tap::TapLink;
use netdever::phy::{Link, RxSignal};
use netdever::platform::{Platform, StdPlatform};
use netdever::stack::host::HostStack;
use netdever::stack::StackConfig;
use netdever::{ConnectParams, Device, IpAddr, IpConfig, IpMode, Ipv4Addr, Netdever, Netlinker};

use crate::bus::BusCounter;
use crate::esp_hosted::EspHostedEmu;
use crate::espat::{EspAtConfig, EspAtEmu};
use crate::kernel::{run_in_netns, KernelNetdev};
use crate::w5500::{W5500Emu, W5500Int};

/// The device's address on the simulated network (raw-frame boards).
pub const SIM_DEV_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The simulated peer's address (raw-frame boards); it is the device's DNS server.
pub const SIM_PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// Prefix length of the simulated network.
pub const SIM_PREFIX: u8 = 24;
/// The device's MAC (switch port, chip, TAP frames).
pub const DEV_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
/// The simulated peer's MAC.
pub const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
/// Where the W5500 emulator's hardwired sockets live on loopback.
pub const W5500_OFFLOAD_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// Where the ESP-AT emulator's sockets live on loopback.
pub const ESP_AT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// The kernel peer of the offload boards on the simulated network.
pub const KERNEL_PEER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

/// A board netdever can run on; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Board {
    /// The full stack on the simulated network (no chip).
    Sim,
    /// The full stack on a Linux TAP interface.
    Tap,
    /// WIZnet W5500 in MACRAW mode, full stack on the host.
    W5500Macraw,
    /// WIZnet W5500's hardwired TCP/IP (offload).
    W5500Offload,
    /// ESP32 with Espressif's AT firmware on a UART (offload).
    EspAt,
    /// ESP32 with ESP-Hosted-FG on SPI (Wi-Fi bridge), full stack on the host.
    EspHosted,
}

impl Board {
    /// Every board, in the order help lists them.
    pub const ALL: [Board; 6] = [
        Board::Sim,
        Board::Tap,
        Board::W5500Macraw,
        Board::W5500Offload,
        Board::EspAt,
        Board::EspHosted,
    ];

    /// The name `--board` takes.
    pub fn name(self) -> &'static str {
        match self {
            Board::Sim => "sim",
            Board::Tap => "tap",
            Board::W5500Macraw => "w5500-macraw",
            Board::W5500Offload => "w5500-offload",
            Board::EspAt => "esp-at",
            Board::EspHosted => "esp-hosted",
        }
    }

    /// One line for `--help`.
    pub fn help(self) -> &'static str {
        match self {
            Board::Sim => "full stack on the built-in simulated network (default)",
            Board::Tap => "full stack on a Linux TAP interface",
            Board::W5500Macraw => "emulated WIZnet W5500 on SPI in MACRAW mode, full stack",
            Board::W5500Offload => "emulated WIZnet W5500 on SPI, its hardwired TCP/IP sockets",
            Board::EspAt => "emulated ESP32 with ESP-AT firmware on a UART (Wi-Fi offload)",
            Board::EspHosted => {
                "emulated ESP32 with ESP-Hosted-FG on SPI (Wi-Fi bridge), full stack"
            }
        }
    }

    /// Whether the board moves raw frames (its device runs the full stack on
    /// the host); the others are offload boards whose chip runs TCP/IP.
    pub fn raw_frames(self) -> bool {
        !matches!(self, Board::W5500Offload | Board::EspAt)
    }

    /// Whether the board joins a Wi-Fi access point (needs credentials).
    pub fn wifi(self) -> bool {
        matches!(self, Board::EspAt | Board::EspHosted)
    }

    /// `"sim, tap, ..."`: every board name, for messages.
    pub fn names() -> String {
        Board::ALL.map(Board::name).join(", ")
    }
}

impl fmt::Display for Board {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Board {
    type Err = String;

    fn from_str(s: &str) -> Result<Board, String> {
        Board::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| format!("unknown board `{s}`; boards: {}", Board::names()))
    }
}

/// Credentials of the emulated Wi-Fi access point (ESP-AT, ESP-Hosted): the
/// emulator's AP accepts exactly these, and [`Probed::connect_params`] joins
/// with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wifi {
    /// Network name.
    pub ssid: String,
    /// WPA2 passphrase.
    pub passphrase: String,
}

impl Default for Wifi {
    fn default() -> Self {
        Wifi {
            ssid: "netdever-ap".into(),
            passphrase: "netdever-passphrase".into(),
        }
    }
}

/// A TAP network: the interface for raw-frame boards, the namespace for
/// offload boards' host sockets, and how the device is addressed.
#[derive(Debug, Clone)]
pub struct TapNet {
    /// The TAP interface (raw-frame boards open it; created if missing).
    pub tap: String,
    /// Static address or DHCP (offload boards need a static one).
    pub ip: IpMode,
    /// Network namespace (`/run/netns/NAME`): the TAP is opened there, and
    /// offload emulators create their host sockets there. Required for the
    /// offload boards.
    pub netns: Option<PathBuf>,
}

/// A raw-frame link opened by the caller (passt, say), for one raw-frame
/// board: the first [`probe`] on it takes the link.
#[derive(Clone)]
pub struct LinkNet {
    link: Arc<Mutex<Option<Box<dyn Link + Send>>>>,
    /// How the device is addressed on the link.
    pub ip: IpMode,
    /// What the link is, for the probe's summary (`"passt link"`).
    pub what: String,
}

impl fmt::Debug for LinkNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkNet")
            .field("ip", &self.ip)
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

/// Which network the device is on.
#[derive(Debug, Clone)]
pub enum Net {
    /// The built-in simulated network: this switch (raw-frame boards and
    /// their peer are ports on it), host loopback for the offload boards.
    Sim(MemorySwitch),
    /// A TAP interface and/or a network namespace.
    Tap(TapNet),
    /// A link the caller opened (raw-frame boards only; no peer).
    Link(LinkNet),
}

/// Where a board's device lives, and what its emulated world looks like.
#[derive(Debug, Clone)]
pub struct HostNet {
    /// Simulated network or TAP.
    pub net: Net,
    /// The emulated access point's credentials.
    pub wifi: Wifi,
    /// Sizes of the full stack on the raw-frame boards (its `ip` is
    /// ignored: the address comes with `net_connect`).
    pub stack: StackConfig,
    /// Names the offload firmwares resolve themselves (ESP-AT's
    /// `AT+CIPDOMAIN` table), e.g. the examples' peer name.
    pub hosts: Vec<(String, Ipv4Addr)>,
}

impl HostNet {
    /// A fresh simulated network with default credentials and stack sizes.
    pub fn sim() -> HostNet {
        HostNet::on(Net::Sim(MemorySwitch::new()))
    }

    /// TAP interface `tap` (raw-frame boards), addressed per `ip`.
    pub fn tap(tap: &str, ip: IpMode) -> HostNet {
        HostNet::on(Net::Tap(TapNet {
            tap: tap.into(),
            ip,
            netns: None,
        }))
    }

    /// A raw-frame link the caller opened (passt's gateway to this host,
    /// say), addressed per `ip`; `what` names it in the probe's summary.
    /// Only raw-frame boards run on it, and only one probe takes the link.
    pub fn link(link: impl Link + Send + 'static, ip: IpMode, what: &str) -> HostNet {
        HostNet::on(Net::Link(LinkNet {
            link: Arc::new(Mutex::new(Some(Box::new(link)))),
            ip,
            what: what.into(),
        }))
    }

    fn on(net: Net) -> HostNet {
        HostNet {
            net,
            wifi: Wifi::default(),
            stack: StackConfig {
                ip: IpMode::Keep,
                ..StackConfig::default()
            },
            hosts: Vec::new(),
        }
    }

    /// On a TAP network: open the TAP and the offload boards' host sockets
    /// inside namespace `path` (ignored on the simulated network).
    pub fn with_netns(mut self, path: impl Into<PathBuf>) -> HostNet {
        if let Net::Tap(t) = &mut self.net {
            t.netns = Some(path.into());
        }
        self
    }

    /// Use these access point credentials.
    pub fn with_wifi(mut self, ssid: &str, passphrase: &str) -> HostNet {
        self.wifi = Wifi {
            ssid: ssid.into(),
            passphrase: passphrase.into(),
        };
        self
    }

    /// Use these stack sizes on the raw-frame boards.
    pub fn with_stack(mut self, stack: StackConfig) -> HostNet {
        self.stack = stack;
        self
    }

    /// Let the offload firmwares resolve `name` to `ip` themselves.
    pub fn with_host(mut self, name: &str, ip: Ipv4Addr) -> HostNet {
        self.hosts.push((name.into(), ip));
        self
    }
}

/// A device as [`probe`] returns it: what the examples talk to.
pub type SharedDevice = Arc<dyn Device + Send + Sync>;

/// A probed board: its device (not yet joined: call [`Probed::connect`] or
/// `net_connect` with [`Probed::connect_params`]), where it will be, and
/// the peer to use on the simulated network. Keep it alive while the device
/// is used: dropping it stops the emulator and its threads.
pub struct Probed {
    /// Which board.
    pub board: Board,
    /// The device.
    pub device: SharedDevice,
    /// The address the device gets from `net_connect` (`None`: DHCP decides).
    pub ip: Option<Ipv4Addr>,
    /// How `net_connect` addresses the device.
    pub ip_mode: IpMode,
    /// The access point to join (Wi-Fi boards).
    pub wifi: Option<Wifi>,
    /// The peer on the simulated network, already up (`None` on TAP): a
    /// second full stack for raw-frame boards, a [`KernelNetdev`] for
    /// offload boards.
    pub peer: Option<SharedDevice>,
    /// The peer's address.
    pub peer_ip: Option<Ipv4Addr>,
    /// The emulated chip's bus counters (`None` for `sim` and `tap`).
    pub bus: Option<Arc<BusCounter>>,
    /// One line saying what was built, for logs.
    pub summary: String,
    /// Emulators, switch and glue threads; dropped last.
    _guard: Vec<Box<dyn Any + Send>>,
}

impl fmt::Debug for Probed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probed")
            .field("board", &self.board)
            .field("ip", &self.ip)
            .field("peer_ip", &self.peer_ip)
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

impl Probed {
    /// The parameters to join the network with: the access point's
    /// credentials (ignored by wired boards), the address mode, and a
    /// timeout (10 s, 20 s with DHCP).
    pub fn connect_params(&self) -> ConnectParams<'_> {
        let (ssid, passphrase) = match &self.wifi {
            Some(w) => (w.ssid.as_str(), w.passphrase.as_str()),
            None => ("", ""),
        };
        let dhcp = matches!(self.ip_mode, IpMode::Dhcp);
        ConnectParams {
            ssid,
            passphrase,
            hostname: "netdever",
            connect_timeout: Duration::from_secs(if dhcp { 20 } else { 10 }),
            ip: self.ip_mode.clone(),
            ..ConnectParams::default()
        }
    }

    /// Join the network ([`Probed::connect_params`]) and return the
    /// device's address.
    pub fn connect(&self) -> Result<Ipv4Addr, String> {
        self.device
            .net_connect(&self.connect_params())
            .map_err(|e| format!("{}: joining the network: {e}", self.board))?;
        match self.device.addr() {
            Ok(IpAddr::V4(a)) => Ok(a),
            Ok(a) => Err(format!("{}: unexpected address {a}", self.board)),
            Err(e) => Err(format!("{}: no address after net_connect: {e}", self.board)),
        }
    }
}

/// Build `board`'s device on `net`; see the [module docs](self).
///
/// Errors (as text for the command line): an unknown combination (`sim` on
/// a TAP, `tap` on the simulated network, an offload board on a TAP without
/// a namespace or a static address), a TAP that cannot be opened, a chip
/// that does not answer.
pub fn probe(board: Board, net: HostNet) -> Result<Probed, String> {
    match (&net.net, board) {
        (Net::Sim(_), Board::Tap) => {
            Err("board tap needs a TAP interface (a TAP network, e.g. --tap IFNAME)".into())
        }
        (Net::Tap(_), Board::Sim) => Err(
            "board sim is the built-in simulated network; on a TAP interface use board tap".into(),
        ),
        _ => match board {
            Board::Sim | Board::Tap => probe_stack(board, &net),
            Board::W5500Macraw => probe_w5500_macraw(&net),
            Board::EspHosted => probe_esp_hosted(&net),
            Board::W5500Offload => probe_w5500_offload(&net),
            Board::EspAt => probe_esp_at(&net),
        },
    }
}

// ---------------------------------------------------------------------------
// Raw-frame boards.
// ---------------------------------------------------------------------------

/// Where a raw-frame board's frames go, its address plan, and its peer.
struct Frames {
    ip_mode: IpMode,
    ip: Option<Ipv4Addr>,
    peer: Option<HostStack>,
    where_: String,
    guard: Vec<Box<dyn Any + Send>>,
}

fn sim_ip() -> IpMode {
    IpMode::Static(IpConfig::new(SIM_DEV_IP, SIM_PREFIX).with_dns(SIM_PEER_IP))
}

fn static_addr(mode: &IpMode) -> Option<Ipv4Addr> {
    match mode {
        IpMode::Static(c) => Some(c.addr),
        _ => None,
    }
}

fn open_tap(t: &TapNet) -> Result<TapLink, String> {
    let name = t.tap.clone();
    let opened = match &t.netns {
        Some(ns) => run_in_netns(ns, move || TapLink::open(&name))
            .map_err(|e| format!("entering {}: {e}", ns.display()))?,
        None => TapLink::open(&name),
    };
    opened.map(|l| l.with_mac(DEV_MAC)).map_err(|e| {
        format!(
            "opening TAP interface {}: {e} (needs root or CAP_NET_ADMIN, and /dev/net/tun)",
            t.tap
        )
    })
}

fn frames(net: &HostNet) -> Result<(Box<dyn Link + Send>, Frames), String> {
    match &net.net {
        Net::Sim(switch) => {
            let peer = HostStack::new(
                switch.port(PEER_MAC),
                StackConfig {
                    ip: IpMode::Keep,
                    ..net.stack.clone()
                },
            )
            .map_err(|e| format!("simulated peer: {e}"))?;
            peer.net_connect(&ConnectParams {
                ip: IpMode::Static(IpConfig::new(SIM_PEER_IP, SIM_PREFIX)),
                ..ConnectParams::default()
            })
            .map_err(|e| format!("simulated peer: {e}"))?;
            let frames = Frames {
                ip_mode: sim_ip(),
                ip: Some(SIM_DEV_IP),
                peer: Some(peer),
                where_: "simulated network".into(),
                guard: vec![Box::new(switch.clone())],
            };
            Ok((Box::new(switch.port(DEV_MAC)), frames))
        }
        Net::Link(l) => {
            let link = l
                .link
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .ok_or_else(|| format!("the {} is already taken by another board", l.what))?;
            Ok((
                link,
                Frames {
                    ip_mode: l.ip.clone(),
                    ip: static_addr(&l.ip),
                    peer: None,
                    where_: l.what.clone(),
                    guard: Vec::new(),
                },
            ))
        }
        Net::Tap(t) => Ok((
            Box::new(open_tap(t)?),
            Frames {
                ip_mode: t.ip.clone(),
                ip: static_addr(&t.ip),
                peer: None,
                where_: format!("TAP {}", t.tap),
                guard: Vec::new(),
            },
        )),
    }
}

fn stack_config(net: &HostNet) -> StackConfig {
    StackConfig {
        ip: IpMode::Keep,
        ..net.stack.clone()
    }
}

fn raw_probed(
    board: Board,
    device: SharedDevice,
    f: Frames,
    bus: Option<Arc<BusCounter>>,
    what: String,
    mut guard: Vec<Box<dyn Any + Send>>,
) -> Probed {
    let peer_ip = f.peer.as_ref().map(|_| SIM_PEER_IP);
    guard.extend(f.guard);
    let at = f.ip.map_or_else(|| "DHCP".to_string(), |a| a.to_string());
    Probed {
        board,
        device,
        ip: f.ip,
        ip_mode: f.ip_mode,
        wifi: None,
        peer: f.peer.map(|p| Arc::new(p) as SharedDevice),
        peer_ip,
        bus,
        summary: format!("{board}: {what} on the {} at {at}", f.where_),
        _guard: guard,
    }
}

fn probe_stack(board: Board, net: &HostNet) -> Result<Probed, String> {
    let (link, f) = frames(net)?;
    let dev = HostStack::new(link, stack_config(net))
        .map_err(|e| format!("{board}: starting the stack: {e}"))?;
    Ok(raw_probed(
        board,
        Arc::new(dev),
        f,
        None,
        "full stack".into(),
        Vec::new(),
    ))
}

/// Sleep until the W5500's INTn falls: the MACRAW link's receive signal.
struct IntSignal(W5500Int);

impl RxSignal for IntSignal {
    fn wait(&self, timeout: Option<Duration>) {
        self.0
            .wait_low(timeout.unwrap_or(Duration::from_millis(10)));
    }
}

fn probe_w5500_macraw(net: &HostNet) -> Result<Probed, String> {
    let (link, f) = frames(net)?;
    let emu = W5500Emu::with_link(link);
    let dev = board::w5500_macraw::probe_host(
        emu.spi(),
        DEV_MAC,
        Some(Arc::new(IntSignal(emu.int_pin()))),
        stack_config(net),
    )
    .map_err(|e| format!("w5500-macraw: probing the chip: {e}"))?;
    let bus = Some(emu.bus());
    Ok(raw_probed(
        Board::W5500Macraw,
        Arc::new(dev),
        f,
        bus,
        "full stack over an emulated W5500 (MACRAW, SPI)".into(),
        vec![Box::new(emu)],
    ))
}

fn probe_esp_hosted(net: &HostNet) -> Result<Probed, String> {
    let (link, f) = frames(net)?;
    let emu = EspHostedEmu::new(link, &net.wifi.ssid, &net.wifi.passphrase);
    let dev = board::esp_hosted::probe_host(
        emu.spi(),
        emu.handshake_pin(),
        emu.data_ready_pin(),
        Some(emu.rx_signal()),
        stack_config(net),
    )
    .map_err(|e| format!("esp-hosted: probing the chip: {e}"))?;
    let bus = Some(emu.bus());
    let mut p = raw_probed(
        Board::EspHosted,
        Arc::new(dev),
        f,
        bus,
        format!(
            "full stack over an emulated ESP32 (ESP-Hosted-FG, SPI), AP \"{}\"",
            net.wifi.ssid
        ),
        vec![Box::new(emu)],
    );
    p.wifi = Some(net.wifi.clone());
    Ok(p)
}

// ---------------------------------------------------------------------------
// Offload boards.
// ---------------------------------------------------------------------------

/// Where an offload board's host sockets live, its address, and its peer.
struct Sockets {
    netns: Option<PathBuf>,
    config: IpConfig,
    /// What the firmware reports as its gateway.
    gateway: Ipv4Addr,
    peer: Option<KernelNetdev>,
    where_: String,
}

fn sockets(board: Board, net: &HostNet, loopback_ip: Ipv4Addr) -> Result<Sockets, String> {
    match &net.net {
        Net::Sim(_) => {
            let peer = KernelNetdev::new(KERNEL_PEER_IP)
                .map_err(|e| format!("kernel peer at {KERNEL_PEER_IP}: {e}"))?;
            for (name, ip) in &net.hosts {
                peer.add_host(name, *ip);
            }
            Ok(Sockets {
                netns: None,
                config: IpConfig::new(loopback_ip, 8).with_dns(KERNEL_PEER_IP),
                gateway: KERNEL_PEER_IP,
                peer: Some(peer),
                where_: "host loopback".into(),
            })
        }
        Net::Link(l) => Err(format!(
            "{board} is an offload board: the chip runs TCP/IP itself and cannot use a \
             raw-frame link ({}); use a raw-frame board there",
            l.what
        )),
        Net::Tap(t) => {
            let ns = t.netns.clone().ok_or_else(|| {
                format!(
                    "{board} on a TAP network needs a network namespace for the emulated \
                     chip's sockets (--netns NAME)"
                )
            })?;
            let IpMode::Static(config) = t.ip.clone() else {
                return Err(format!(
                    "{board} on a TAP network needs a static address (--ip A.B.C.D/N)"
                ));
            };
            check_local_in(&ns, config.addr)?;
            Ok(Sockets {
                where_: format!("namespace {}", ns.display()),
                netns: Some(ns),
                gateway: config.gateway.unwrap_or(Ipv4Addr::UNSPECIFIED),
                config,
                peer: None,
            })
        }
    }
}

/// Fail with a hint unless `ip` is an address of the namespace at `ns`.
fn check_local_in(ns: &Path, ip: Ipv4Addr) -> Result<(), String> {
    let r = run_in_netns(ns, move || std::net::UdpSocket::bind((ip, 0)).map(|_| ()))
        .map_err(|e| format!("entering {}: {e}", ns.display()))?;
    let name = ns
        .file_name()
        .map_or_else(|| "NAME".into(), |n| n.to_string_lossy().into_owned());
    r.map_err(|e| {
        format!(
            "{ip} is not an address in namespace {} ({e}); the emulated chip's sockets bind \
             it: add it there, e.g. `ip -n {name} addr add {ip}/32 dev lo`",
            ns.display()
        )
    })
}

fn offload_probed(
    board: Board,
    device: SharedDevice,
    s: Sockets,
    ip_mode: IpMode,
    bus: Arc<BusCounter>,
    what: String,
    guard: Vec<Box<dyn Any + Send>>,
) -> Probed {
    let peer_ip = s.peer.as_ref().map(|p| p.ip());
    Probed {
        board,
        device,
        ip: Some(s.config.addr),
        ip_mode,
        wifi: None,
        peer: s.peer.map(|p| Arc::new(p) as SharedDevice),
        peer_ip,
        bus: Some(bus),
        summary: format!(
            "{board}: {what}, sockets at {} ({})",
            s.config.addr, s.where_
        ),
        _guard: guard,
    }
}

/// Host glue for the W5500's INTn: calls `on_interrupt` while the line is
/// low, and `poll` (link events, DHCP renewal) twice a second. Stops on drop.
struct IrqGlue {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for IrqGlue {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type W5500Dev = board::w5500_offload::BoardDevice<crate::w5500::W5500Spi, StdPlatform>;

fn irq_glue(pin: W5500Int, dev: Weak<W5500Dev>) -> IrqGlue {
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let thread = std::thread::Builder::new()
        .name("w5500-intn".into())
        .spawn(move || {
            let mut last_poll = std::time::Instant::now();
            while !st.load(Ordering::Acquire) {
                let low = pin.wait_low(Duration::from_millis(20));
                let Some(d) = dev.upgrade() else { break };
                if low {
                    d.on_interrupt();
                }
                if last_poll.elapsed() >= Duration::from_millis(500) {
                    d.poll();
                    last_poll = std::time::Instant::now();
                }
            }
        })
        .expect("spawn W5500 INTn thread");
    IrqGlue {
        stop,
        thread: Some(thread),
    }
}

fn probe_w5500_offload(net: &HostNet) -> Result<Probed, String> {
    let s = sockets(Board::W5500Offload, net, W5500_OFFLOAD_IP)?;
    let emu = W5500Emu::new();
    if let Some(ns) = &s.netns {
        emu.set_netns(Some(ns.clone()));
    }
    let dev = board::w5500_offload::probe(
        emu.spi(),
        StdPlatform::new(),
        board::w5500_offload::config(DEV_MAC),
    )
    .map_err(|e| format!("w5500-offload: probing the chip: {e}"))?;
    let dev = Arc::new(dev);
    let glue = irq_glue(emu.int_pin(), Arc::downgrade(&dev));
    let bus = emu.bus();
    let ip_mode = IpMode::Static(s.config.clone());
    Ok(offload_probed(
        Board::W5500Offload,
        dev,
        s,
        ip_mode,
        bus,
        "emulated W5500 (hardwired sockets, SPI, INTn)".into(),
        // The glue stops before the chip goes away.
        vec![Box::new(glue), Box::new(emu)],
    ))
}

fn mask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(
        u32::MAX
            .checked_shl(32 - prefix.min(32) as u32)
            .unwrap_or(0),
    )
}

fn probe_esp_at(net: &HostNet) -> Result<Probed, String> {
    use netdever::offload::espat::Config;
    let s = sockets(Board::EspAt, net, ESP_AT_IP)?;
    let config = EspAtConfig {
        ssid: net.wifi.ssid.clone(),
        passphrase: net.wifi.passphrase.clone(),
        station_ip: s.config.addr,
        gateway: s.gateway,
        netmask: mask(s.config.prefix_len),
        dns: net.hosts.clone(),
        ..EspAtConfig::default()
    };
    // The firmware's threads (and so its host sockets) live where it starts.
    let (emu, serial) = match &s.netns {
        Some(ns) => run_in_netns(ns, move || EspAtEmu::start(config))
            .map_err(|e| format!("entering {}: {e}", ns.display()))?,
        None => EspAtEmu::start(config),
    };
    let platform = StdPlatform::new();
    let dev = board::esp_at::probe(serial, platform, Config::default())
        .map_err(|e| format!("esp-at: probing the chip: {e}"))?;
    let dev = Arc::new(dev);
    let weak = Arc::downgrade(&dev);
    // The UART "RX interrupt": wake blocked calls when the chip sends.
    emu.set_rx_notify(Some(Arc::new(move || {
        if let Some(d) = weak.upgrade() {
            d.platform().notify();
        }
    })));
    let bus = emu.bus();
    let wifi = net.wifi.clone();
    // The emulated AP hands out the station address: join with DHCP.
    let mut p = offload_probed(
        Board::EspAt,
        dev,
        s,
        IpMode::Dhcp,
        bus,
        format!(
            "emulated ESP32 (ESP-AT firmware, UART), AP \"{}\"",
            wifi.ssid
        ),
        vec![Box::new(emu)],
    );
    p.wifi = Some(wifi);
    Ok(p)
}
