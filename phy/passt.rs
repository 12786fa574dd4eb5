//! [`PasstLink`]: a userspace gateway to the host, through
//! [passt](https://passt.top) (feature `std`, Linux).
//!
//! passt ("Plug A Simple Socket Transport") is the unprivileged user-mode
//! network back end of qemu and podman: on one side it speaks raw Ethernet
//! frames over a UNIX stream socket, on the other it turns every TCP
//! connection, UDP flow and ping of the guest into ordinary host sockets. A
//! stack on a `PasstLink` is therefore a guest with a real gateway:
//!
//! * passt answers ARP, and hands out an address, netmask, router and DNS
//!   server with its built-in DHCP server (or the stack is configured
//!   statically with the same values, [`PasstConfig::dhcp`] `false`);
//! * connections and datagrams to the **gateway address** reach the host's
//!   loopback (`127.0.0.1`): a program listening there (curl's peer, `python3
//!   -m http.server`, chronyd, mosquitto, ...) is reachable from the device at
//!   `gateway:port`;
//! * host programs reach the device through port forwards
//!   ([`PasstConfig::tcp_forward`], [`PasstConfig::udp_forward`]): passt
//!   listens on `127.0.0.1:host_port` and forwards to `device:guest_port`;
//! * traffic to any *other* address is opened by passt as a host socket to
//!   that address: what the guest can reach is what the host can reach.
//!
//! No privileges are needed. Started by root, passt switches to `nobody`
//! (uid/gid 65534, which [`PasstLink::spawn`] names with `--runas` and
//! lets into the socket directory through its group).
//!
//! # Wire format
//!
//! The socket carries qemu's `-netdev stream` framing: every Ethernet frame
//! (without FCS) is preceded by its length as a 32-bit big-endian integer.
//! Both sides may split a frame over several reads or put several frames in
//! one; [`Link::receive`] keeps a partial frame buffered until the rest comes.
//! A frame longer than the receive buffer is skipped whole and reported as
//! [`LinkError::TooLong`] (passt sends jumbo frames if the guest allows it;
//! the default [`PasstConfig::mtu`] of 1500 tells it not to).
//!
//! # Process
//!
//! [`PasstLink::spawn`] runs `passt -f -1 -s <dir>/passt.socket ...` in the
//! foreground, waits (bounded) until the socket accepts a connection, and
//! connects. passt's log goes to `<dir>/passt.log` ([`PasstLink::log`]). On
//! drop the link kills passt by its PID and removes the directory; because
//! of `-1` (one-off) passt also exits by itself when our end of the socket
//! closes, so it does not outlive a crashed process. [`PasstLink::connect`]
//! attaches to a passt someone else started; [`PasstLink::from_stream`] wraps
//! any stream that speaks the framing.
//!
//! # Example
//!
//! ```no_run
//! use netdever::phy::passt::{PasstConfig, PasstLink};
//! use netdever::stack::{host::HostStack, StackConfig};
//! use netdever::{ConnectParams, IpMode, Netlinker};
//!
//! // 127.0.0.1:18080 on the host reaches port 80 of the device.
//! let link = PasstLink::spawn(&PasstConfig::new().tcp_forward(18080, 80))?;
//! let gateway = link.gateway(); // host programs on 127.0.0.1 are here
//! let dev = HostStack::new(link, StackConfig::default())?;
//! dev.net_connect(&ConnectParams { ip: IpMode::Dhcp, ..Default::default() })?;
//! # let _ = gateway;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg(target_os = "linux")]

use core::ffi::{c_int, c_short, c_ulong};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use core::time::Duration;
use std::borrow::ToOwned;
use std::boxed::Box;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::format;
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::string::{String, ToString};
use std::sync::Arc;
use std::time::Instant;
use std::vec::Vec;

use super::{Link, LinkError, RxSignal, MAX_FRAME_LEN};

/// Longest frame length the framing may announce before the stream is taken
/// as corrupt (passt's largest frame is a 65535-byte IP packet plus header).
const MAX_WIRE_FRAME: usize = 256 * 1024;
/// Receive buffer: room for many frames per read.
const RX_BUF: usize = 128 * 1024;
/// The uid and gid passt runs as when started by root (`nobody`).
const NOBODY: u32 = 65534;

/// A port forward from the host to the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Host address passt listens on (default `127.0.0.1`).
    pub bind: Ipv4Addr,
    /// Host port passt listens on.
    pub host_port: u16,
    /// Port on the device the connections go to.
    pub guest_port: u16,
}

impl Forward {
    /// passt's `-t`/`-u` spec: `ADDR/HOST:GUEST`.
    fn spec(&self) -> String {
        format!("{}/{}:{}", self.bind, self.host_port, self.guest_port)
    }
}

/// How to start passt and what it tells the device. Build with
/// [`PasstConfig::new`] and the chained setters.
#[derive(Debug, Clone)]
pub struct PasstConfig {
    /// The passt executable (default `passt`, looked up on `PATH`).
    pub program: PathBuf,
    /// A command to run passt under, e.g. `["setpriv", "--reuid=65534",
    /// "--"]` (it must `exec` passt so passt keeps its PID). Empty: none.
    pub launcher: Vec<OsString>,
    /// Address passt assigns to the device (DHCP `yiaddr`). Default 10.0.2.15.
    pub address: Ipv4Addr,
    /// Prefix length of the device's network. Default 24.
    pub prefix_len: u8,
    /// The gateway passt plays; connections to it reach the host's
    /// loopback. Default 10.0.2.2.
    pub gateway: Ipv4Addr,
    /// DNS server handed out by DHCP. Default: the gateway, so queries go to
    /// `127.0.0.1:53` on the host (where nothing may listen); `None` hands
    /// out none. passt would otherwise hand out the host's resolvers.
    pub dns: Option<Ipv4Addr>,
    /// MTU announced by DHCP. Default 1500, what [`MAX_FRAME_LEN`] carries.
    pub mtu: u16,
    /// Run passt's DHCP server (default `true`); with `false` configure the
    /// stack statically with [`PasstLink::ip_config`].
    pub dhcp: bool,
    /// TCP port forwards host → device.
    pub tcp_forwards: Vec<Forward>,
    /// UDP port forwards host → device.
    pub udp_forwards: Vec<Forward>,
    /// Our MAC address. Default `02:00:00:00:00:0f`.
    pub mac: [u8; 6],
    /// Directory for the socket and log. Default: a fresh directory under
    /// the system temp dir, removed on drop.
    pub dir: Option<PathBuf>,
    /// Let passt record its side of the traffic to this pcap file (`-p`).
    pub pcap: Option<PathBuf>,
    /// How long to wait for passt's socket. Default 10 s.
    pub startup_timeout: Duration,
    /// More arguments for passt, appended as given.
    pub extra_args: Vec<OsString>,
}

impl Default for PasstConfig {
    fn default() -> Self {
        PasstConfig {
            program: PathBuf::from("passt"),
            launcher: Vec::new(),
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 0, 2, 2),
            dns: Some(Ipv4Addr::new(10, 0, 2, 2)),
            mtu: 1500,
            dhcp: true,
            tcp_forwards: Vec::new(),
            udp_forwards: Vec::new(),
            mac: [0x02, 0, 0, 0, 0, 0x0f],
            dir: None,
            pcap: None,
            startup_timeout: Duration::from_secs(10),
            extra_args: Vec::new(),
        }
    }
}

impl PasstConfig {
    /// The defaults: device 10.0.2.15/24 by DHCP, gateway (= host loopback)
    /// and DNS 10.0.2.2, MTU 1500, no forwards.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forward TCP connections to `127.0.0.1:host_port` to `guest_port` on
    /// the device.
    pub fn tcp_forward(mut self, host_port: u16, guest_port: u16) -> Self {
        self.tcp_forwards.push(Forward {
            bind: Ipv4Addr::LOCALHOST,
            host_port,
            guest_port,
        });
        self
    }

    /// Forward UDP datagrams to `127.0.0.1:host_port` to `guest_port` on the
    /// device.
    pub fn udp_forward(mut self, host_port: u16, guest_port: u16) -> Self {
        self.udp_forwards.push(Forward {
            bind: Ipv4Addr::LOCALHOST,
            host_port,
            guest_port,
        });
        self
    }

    /// Set the device address, prefix and gateway (DNS follows the gateway).
    pub fn network(mut self, address: Ipv4Addr, prefix_len: u8, gateway: Ipv4Addr) -> Self {
        self.address = address;
        self.prefix_len = prefix_len;
        self.gateway = gateway;
        self.dns = Some(gateway);
        self
    }

    /// Use `mac` as our MAC address.
    pub fn mac(mut self, mac: [u8; 6]) -> Self {
        self.mac = mac;
        self
    }

    /// DHCP on (default) or off.
    pub fn dhcp(mut self, on: bool) -> Self {
        self.dhcp = on;
        self
    }

    /// Run passt under `launcher` (see the field).
    pub fn launcher<S: AsRef<OsStr>>(mut self, launcher: &[S]) -> Self {
        self.launcher = launcher.iter().map(|s| s.as_ref().to_owned()).collect();
        self
    }

    /// Put the socket and log in `dir` (it must exist; it is not removed).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// The passt command line for a socket at `socket` and a log at `log`
    /// (without program and launcher).
    pub fn args(&self, socket: &Path, log: &Path) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: &str| a.push(OsString::from(s));
        // Foreground, one client, IPv4 only, quiet on stdout.
        for s in ["--foreground", "--one-off", "--ipv4-only", "--quiet"] {
            push(s);
        }
        push("--mtu");
        push(&self.mtu.to_string());
        push("--address");
        push(&self.address.to_string());
        push("--netmask");
        push(&self.prefix_len.to_string());
        push("--gateway");
        push(&self.gateway.to_string());
        push("--dns");
        match self.dns {
            Some(d) => push(&d.to_string()),
            None => push("none"),
        }
        // Keep the host's search domains to the host.
        push("--search");
        push("none");
        if !self.dhcp {
            push("--no-dhcp");
        }
        for f in &self.tcp_forwards {
            push("--tcp-ports");
            push(&f.spec());
        }
        for f in &self.udp_forwards {
            push("--udp-ports");
            push(&f.spec());
        }
        a.push("--socket".into());
        a.push(socket.as_os_str().to_owned());
        a.push("--log-file".into());
        a.push(log.as_os_str().to_owned());
        if let Some(p) = &self.pcap {
            a.push("--pcap".into());
            a.push(p.as_os_str().to_owned());
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

/// The passt process a [`PasstLink::spawn`] started, and its directory.
struct Process {
    child: Child,
    dir: PathBuf,
    remove_dir: bool,
    log: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        // Child::kill signals this child's own PID (SIGKILL); reap it.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Removes a directory on drop (if any).
struct RemoveDir(Option<PathBuf>);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        if let Some(d) = &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// State shared with the [`RxSignal`]: whether a whole frame is already
/// buffered (then waiting would be wrong) and whether bytes wait to be sent.
#[derive(Default)]
struct Shared {
    frame_buffered: AtomicBool,
    tx_pending: AtomicBool,
}

/// passt (or any peer speaking qemu's stream framing) as a [`Link`]; see
/// the [module docs](self).
pub struct PasstLink {
    sock: UnixStream,
    process: Option<Process>,
    config: PasstConfig,
    mac: [u8; 6],
    /// Received bytes, `rx[rx_start..rx_end]` not yet consumed.
    rx: Box<[u8]>,
    rx_start: usize,
    rx_end: usize,
    /// Bytes of an oversized frame still to discard.
    skip: usize,
    /// Framed bytes accepted by `transmit` but not yet written.
    tx: Vec<u8>,
    tx_off: usize,
    /// The peer closed the socket, or the stream is corrupt.
    dead: bool,
    shared: Arc<Shared>,
    /// Frames dropped because they did not fit (counter).
    oversized: Arc<AtomicUsize>,
    /// Gets lost ACKs out of passt; see [`AckProbe`].
    probe: AckProbe,
}

impl core::fmt::Debug for PasstLink {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PasstLink")
            .field("pid", &self.pid())
            .field("mac", &self.mac)
            .field("address", &self.config.address)
            .field("gateway", &self.config.gateway)
            .field("dead", &self.dead)
            .finish()
    }
}

static DIR_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl PasstLink {
    /// Start passt with `config` and connect to it. Fails if the program is
    /// missing, exits early (the error quotes its log) or does not open its
    /// socket within [`PasstConfig::startup_timeout`].
    pub fn spawn(config: &PasstConfig) -> io::Result<PasstLink> {
        let (dir, remove_dir) = match &config.dir {
            Some(d) => (d.clone(), false),
            None => {
                let n = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
                let d =
                    std::env::temp_dir().join(format!("netdever-passt-{}-{n}", std::process::id()));
                let _ = std::fs::remove_dir_all(&d);
                std::fs::DirBuilder::new().mode(0o700).create(&d)?;
                (d, true)
            }
        };
        // Until `Process` owns it, remove the directory on every early return.
        let mut cleanup = RemoveDir(remove_dir.then(|| dir.clone()));
        // Started as root, passt gives up its file-access capabilities, opens
        // its log as root, then switches to an unprivileged user and binds
        // its socket as that user: the directory must be writable by both.
        // Name the user (nobody's usual ids) rather than let passt look it
        // up, and share the directory with it through its group.
        let mut runas: Vec<OsString> = Vec::new();
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let explicit = config.extra_args.iter().any(|a| a == "--runas");
        if root && config.launcher.is_empty() && !explicit {
            runas.push("--runas".into());
            runas.push(format!("{NOBODY}:{NOBODY}").into());
            if remove_dir {
                use std::os::unix::fs::PermissionsExt;
                std::os::unix::fs::chown(&dir, None, Some(NOBODY))?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o770))?;
            }
        }
        let socket = dir.join("passt.socket");
        let log = dir.join("passt.log");
        let _ = std::fs::remove_file(&socket);
        let stderr = std::fs::File::create(dir.join("passt.stderr"))?;

        let mut cmd = match config.launcher.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&config.program);
                c
            }
            None => Command::new(&config.program),
        };
        cmd.args(config.args(&socket, &log))
            .args(&runas)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "starting {}: {e} (install passt: apt-get install passt)",
                        config.program.display()
                    ),
                ));
            }
        };
        cleanup.0 = None;
        let mut process = Process {
            child,
            dir,
            remove_dir,
            log,
        };

        let start = std::time::Instant::now();
        let sock = loop {
            if let Ok(Some(status)) = process.child.try_wait() {
                return Err(io::Error::other(format!(
                    "passt exited at start-up ({status}); can the user it runs as \
                     create {}? passt says: {}",
                    socket.display(),
                    process_output(&process)
                )));
            }
            match UnixStream::connect(&socket) {
                Ok(s) => break s,
                Err(e) if start.elapsed() >= config.startup_timeout => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "passt did not open {} within {:?} ({e}): {}",
                            socket.display(),
                            config.startup_timeout,
                            process_output(&process)
                        ),
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        let mut link = Self::from_stream(sock, config.mac)?;
        link.config = config.clone();
        link.process = Some(process);
        Ok(link)
    }

    /// Attach to a passt started elsewhere (`passt -f -s PATH`), whose
    /// network settings are `config`'s (only used by the accessors).
    pub fn connect(path: impl AsRef<Path>, config: &PasstConfig) -> io::Result<PasstLink> {
        let mut link = Self::from_stream(UnixStream::connect(path)?, config.mac)?;
        link.config = config.clone();
        Ok(link)
    }

    /// Wrap a connected stream that speaks the length-prefixed framing.
    pub fn from_stream(sock: UnixStream, mac: [u8; 6]) -> io::Result<PasstLink> {
        sock.set_nonblocking(true)?;
        Ok(PasstLink {
            sock,
            process: None,
            config: PasstConfig::default().mac(mac),
            mac,
            rx: std::vec![0u8; RX_BUF].into_boxed_slice(),
            rx_start: 0,
            rx_end: 0,
            skip: 0,
            tx: Vec::with_capacity(4 * (MAX_FRAME_LEN + 4)),
            tx_off: 0,
            dead: false,
            shared: Arc::new(Shared::default()),
            oversized: Arc::new(AtomicUsize::new(0)),
            probe: AckProbe::default(),
        })
    }

    /// The gateway address: host programs listening on `127.0.0.1` are
    /// reachable there.
    pub fn gateway(&self) -> Ipv4Addr {
        self.config.gateway
    }

    /// The address passt assigns to the device.
    pub fn address(&self) -> Ipv4Addr {
        self.config.address
    }

    /// The configuration passt was started with.
    pub fn config(&self) -> &PasstConfig {
        &self.config
    }

    /// The static IP configuration equal to what passt's DHCP hands out.
    pub fn ip_config(&self) -> crate::IpConfig {
        let c = &self.config;
        let mut ip = crate::IpConfig::new(c.address, c.prefix_len);
        ip.gateway = Some(c.gateway);
        if let Some(d) = c.dns {
            ip = ip.with_dns(d);
        }
        ip
    }

    /// passt's PID, if this link started it.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.child.id())
    }

    /// passt's log so far (empty if this link did not start it).
    pub fn log(&self) -> String {
        self.process
            .as_ref()
            .map(process_output)
            .unwrap_or_default()
    }

    /// Frames dropped because they were longer than the receive buffer.
    pub fn oversized_frames(&self) -> usize {
        self.oversized.load(Ordering::Relaxed)
    }

    /// Write out pending transmit bytes, as many as the socket takes.
    fn flush_tx(&mut self) -> Result<(), LinkError> {
        while self.tx_off < self.tx.len() {
            match self.sock.write(&self.tx[self.tx_off..]) {
                Ok(0) => return self.fail(),
                Ok(n) => self.tx_off += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return self.fail(),
            }
        }
        if self.tx_off == self.tx.len() {
            self.tx.clear();
            self.tx_off = 0;
            self.shared.tx_pending.store(false, Ordering::Release);
        } else {
            self.shared.tx_pending.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// The peer went away or broke the framing: the link is down for good.
    fn fail<T>(&mut self) -> Result<T, LinkError> {
        self.dead = true;
        self.tx.clear();
        self.tx_off = 0;
        self.shared.tx_pending.store(false, Ordering::Release);
        self.shared.frame_buffered.store(false, Ordering::Release);
        Err(LinkError::Down)
    }

    /// Take the next whole frame out of the buffer, if there is one.
    /// `Ok(None)`: more bytes are needed.
    fn take_frame(&mut self, buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
        loop {
            let avail = self.rx_end - self.rx_start;
            if self.skip > 0 {
                let n = self.skip.min(avail);
                self.skip -= n;
                self.rx_start += n;
                if self.skip > 0 {
                    return Ok(None);
                }
                continue;
            }
            if avail < 4 {
                return Ok(None);
            }
            let h = &self.rx[self.rx_start..self.rx_start + 4];
            let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
            if len > MAX_WIRE_FRAME {
                return self.fail();
            }
            if len > buf.len() || len > MAX_FRAME_LEN {
                // Drop it whole, now or as the rest arrives.
                self.rx_start += 4;
                self.skip = len;
                self.oversized.fetch_add(1, Ordering::Relaxed);
                let n = self.skip.min(self.rx_end - self.rx_start);
                self.skip -= n;
                self.rx_start += n;
                return Err(LinkError::TooLong);
            }
            if avail < 4 + len {
                return Ok(None);
            }
            let from = self.rx_start + 4;
            buf[..len].copy_from_slice(&self.rx[from..from + len]);
            self.rx_start = from + len;
            if len == 0 {
                continue;
            }
            return Ok(Some(len));
        }
    }

    /// Whether a whole frame is buffered (for the signal).
    fn has_frame(&self) -> bool {
        let avail = self.rx_end - self.rx_start;
        if self.skip > 0 || avail < 4 {
            return self.skip > 0 && avail > 0;
        }
        let h = &self.rx[self.rx_start..self.rx_start + 4];
        let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        len > MAX_FRAME_LEN || avail >= 4 + len
    }
}

/// The log passt wrote, or its stderr if the log is empty.
fn process_output(p: &Process) -> String {
    let log = std::fs::read_to_string(&p.log).unwrap_or_default();
    let err = std::fs::read_to_string(p.dir.join("passt.stderr")).unwrap_or_default();
    // passt complains on stderr when there is no syslog; that is noise.
    let err: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("Failed to send") && !l.trim().is_empty())
        .collect();
    let text = if log.trim().is_empty() {
        err.join("\n")
    } else {
        log
    };
    if text.trim().is_empty() {
        "(passt logged nothing)".into()
    } else {
        text.trim().into()
    }
}

impl Link for PasstLink {
    fn hardware_addr(&self) -> [u8; 6] {
        self.mac
    }

    fn max_frame_len(&self) -> usize {
        MAX_FRAME_LEN
    }

    /// Up while the socket is open and (if we started it) passt runs.
    fn link_up(&mut self) -> bool {
        if self.dead {
            return false;
        }
        if let Some(p) = &mut self.process {
            if !matches!(p.child.try_wait(), Ok(None)) {
                self.dead = true;
                return false;
            }
        }
        true
    }

    /// Queue one frame behind its length and write as much as the socket
    /// takes; the rest goes out on later calls. [`LinkError::Busy`] when an
    /// earlier frame is still not written.
    fn transmit(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        if frame.len() > MAX_FRAME_LEN {
            return Err(LinkError::TooLong);
        }
        if self.dead {
            return Err(LinkError::Down);
        }
        self.flush_tx()?;
        if !self.tx.is_empty() {
            return Err(LinkError::Busy);
        }
        let probe = match self.probe.look(frame) {
            Probe::Drop => return Ok(()),
            Probe::None => None,
            Probe::After(p) => Some(p),
        };
        self.tx
            .extend_from_slice(&(frame.len() as u32).to_be_bytes());
        self.tx.extend_from_slice(frame);
        if let Some(p) = probe {
            self.tx.extend_from_slice(&(p.len() as u32).to_be_bytes());
            self.tx.extend_from_slice(&p);
        }
        self.flush_tx()
    }

    /// Hand out the next whole frame, reading what the socket has when the
    /// buffer holds none. Never blocks.
    fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
        if self.dead {
            return Err(LinkError::Down);
        }
        self.flush_tx()?;
        let r = loop {
            match self.take_frame(buf) {
                Ok(None) => {}
                other => break other,
            }
            // Make room: move the partial frame to the front.
            if self.rx_start > 0 {
                self.rx.copy_within(self.rx_start..self.rx_end, 0);
                self.rx_end -= self.rx_start;
                self.rx_start = 0;
            }
            match self.sock.read(&mut self.rx[self.rx_end..]) {
                Ok(0) => break self.fail(),
                Ok(n) => self.rx_end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(None),
                Err(_) => break self.fail(),
            }
        };
        let more = !self.dead && self.has_frame();
        self.shared.frame_buffered.store(more, Ordering::Release);
        r
    }

    /// `poll(2)` on a duplicate of the socket: readable, or writable while
    /// transmit bytes are pending; returns at once if a whole frame is
    /// already buffered.
    fn rx_signal(&self) -> Option<Arc<dyn RxSignal>> {
        let fd = OwnedFd::from(self.sock.try_clone().ok()?);
        Some(Arc::new(PasstRxSignal {
            fd,
            shared: self.shared.clone(),
        }))
    }
}

/// [`RxSignal`] of a [`PasstLink`].
struct PasstRxSignal {
    fd: OwnedFd,
    shared: Arc<Shared>,
}

#[repr(C)]
struct PollFd {
    fd: c_int,
    events: c_short,
    revents: c_short,
}

const POLLIN: c_short = 0x001;
const POLLOUT: c_short = 0x004;

extern "C" {
    /// poll(2) from the C library std already links (`nfds_t` is
    /// `unsigned long` on Linux).
    fn poll(fds: *mut PollFd, nfds: c_ulong, timeout: c_int) -> c_int;
}

impl RxSignal for PasstRxSignal {
    fn wait(&self, timeout: Option<Duration>) {
        if self.shared.frame_buffered.load(Ordering::Acquire) {
            return;
        }
        let ms: c_int = match timeout {
            None => -1,
            // Round up so a sub-millisecond timeout sleeps instead of spinning.
            Some(d) => d.as_nanos().div_ceil(1_000_000).min(c_int::MAX as u128) as c_int,
        };
        let mut events = POLLIN;
        if self.shared.tx_pending.load(Ordering::Acquire) {
            events |= POLLOUT;
        }
        let mut pfd = PollFd {
            fd: self.fd.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd that outlives the call. An error
        // (EINTR) is a spurious wake-up, which `wait` allows.
        unsafe { poll(&mut pfd, 1, ms) };
    }
}

// ---------------------------------------------------------------------------
// Getting lost ACKs out of passt.
// ---------------------------------------------------------------------------

/// At most one probe per flow and highest sequence number within this.
const PROBE_EVERY: Duration = Duration::from_millis(200);
/// How long after a probe a 1-byte segment that would fill the gap before
/// it is dropped (see [`AckProbe`]).
const PROBE_GUARD: Duration = Duration::from_secs(1);
/// TCP flows tracked at most (the table is emptied when it is full).
const PROBE_FLOWS: usize = 256;

/// Gets an ACK out of passt that passt counts as sent but never sent.
///
/// passt 0.0~git20230309 (Debian 12's) acknowledges the device's data once
/// the host peer's kernel has acknowledged it; when it watches its host
/// socket for `EPOLLOUT` (its "stalled" state: the device's window is 0, or
/// it has sent all the host's data), that handler advances the ACK number
/// passt counts as sent (`tcp_update_seqack_wnd()`) without sending a
/// segment (later passt sends one there). From then on passt never
/// acknowledges that data: its deferred-ACK timer and its answer to the
/// device's retransmissions (data it already wrote to the host socket,
/// dropped) both find nothing new to acknowledge, and only its next data
/// segment, if any, carries the ACK. Captured (passt's pcap, `ss -tinm`) in
/// the matrix's `tcpecho` cell: the device retransmitting 64 KiB at 1, 2,
/// 4, 8 s that python had long received, passt's socket to python fully
/// acknowledged, until passt reset the connection (window 0) or python
/// timed out (window open, nothing left for passt to send).
///
/// What does make that passt send an ACK is a segment beyond what it has
/// received: it keeps it as out of order and answers with duplicate ACKs
/// carrying its current ACK number. So when the device retransmits data (on
/// a loopback gateway: an ACK went missing), this follows the
/// retransmission with a bare ACK carrying 1 byte at the flow's highest
/// sequence number + 1, leaving a 1-byte gap. passt never writes that byte
/// unless a 1-byte segment fills the gap in the same batch, so such a
/// segment is dropped for [`PROBE_GUARD`] after a probe (TCP sends it
/// again). Any other TCP answers the out-of-order segment with an ACK too
/// (RFC 9293, 3.10.7.4). Farther ahead does not work: a probe 2^30 ahead
/// makes this passt reset the connection.
#[derive(Default)]
struct AckProbe {
    flows: HashMap<FlowKey, FlowState>,
}

/// Source port, destination address and port (the device has one address).
type FlowKey = (u16, [u8; 4], u16);

struct FlowState {
    /// Highest sequence number sent, plus one.
    end: u32,
    /// When a probe last went out, and for which `end`.
    probed: Option<(Instant, u32)>,
}

/// What [`AckProbe::look`] says about a frame.
#[derive(Debug)]
enum Probe {
    /// Send it as it is.
    None,
    /// Send it, then this probe frame.
    After(Vec<u8>),
    /// Do not send it.
    Drop,
}

/// `a` after `b` in sequence space.
fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl AckProbe {
    /// Look at a frame the device sends.
    fn look(&mut self, f: &[u8]) -> Probe {
        let Some(seg) = TcpSeg::parse(f) else {
            return Probe::None;
        };
        if seg.flags & (TCP_RST | TCP_SYN) != 0 {
            self.flows.remove(&seg.key);
            return Probe::None;
        }
        let end = seg
            .seq
            .wrapping_add(seg.payload as u32)
            .wrapping_add(u32::from(seg.flags & TCP_FIN != 0));
        if !self.flows.contains_key(&seg.key) && self.flows.len() >= PROBE_FLOWS {
            self.flows.clear();
        }
        let st = match self.flows.entry(seg.key) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                v.insert(FlowState { end, probed: None });
                return Probe::None;
            }
        };
        let now = Instant::now();
        if seq_after(end, st.end) {
            if let Some((at, e)) = st.probed {
                if seg.seq == e && seg.payload == 1 && now.duration_since(at) < PROBE_GUARD {
                    return Probe::Drop;
                }
            }
            st.end = end;
            return Probe::None;
        }
        if seg.payload == 0 {
            return Probe::None;
        }
        // Data at or below the highest sequence number sent: a retransmission.
        if let Some((at, e)) = st.probed {
            if e == st.end && now.duration_since(at) < PROBE_EVERY {
                return Probe::None;
            }
        }
        st.probed = Some((now, st.end));
        Probe::After(seg.probe(f, st.end.wrapping_add(1)))
    }
}

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// The parts of an Ethernet + IPv4 + TCP frame a probe needs.
struct TcpSeg {
    key: FlowKey,
    /// IPv4 header length.
    ihl: usize,
    /// TCP header length.
    thl: usize,
    seq: u32,
    flags: u8,
    payload: usize,
}

/// Where the IPv4 header starts.
const IP: usize = 14;

impl TcpSeg {
    fn parse(f: &[u8]) -> Option<TcpSeg> {
        if f.len() < IP + 40 || f[12..14] != [0x08, 0x00] || f[IP] >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(f[IP] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([f[IP + 2], f[IP + 3]]));
        let frag = u16::from_be_bytes([f[IP + 6], f[IP + 7]]) & 0x3fff;
        if ihl < 20 || f[IP + 9] != 6 || frag != 0 || total < ihl + 20 || IP + total > f.len() {
            return None;
        }
        let t = IP + ihl;
        let thl = usize::from(f[t + 12] >> 4) * 4;
        if thl < 20 || ihl + thl > total {
            return None;
        }
        let mut dst = [0u8; 4];
        dst.copy_from_slice(&f[IP + 16..IP + 20]);
        Some(TcpSeg {
            key: (
                u16::from_be_bytes([f[t], f[t + 1]]),
                dst,
                u16::from_be_bytes([f[t + 2], f[t + 3]]),
            ),
            ihl,
            thl,
            seq: u32::from_be_bytes([f[t + 4], f[t + 5], f[t + 6], f[t + 7]]),
            flags: f[t + 13],
            payload: total - ihl - thl,
        })
    }

    /// `f`'s headers as a bare ACK at `seq` with one zero byte of data,
    /// checksums recomputed.
    fn probe(&self, f: &[u8], seq: u32) -> Vec<u8> {
        let t = IP + self.ihl;
        let mut p = f[..t + self.thl].to_vec();
        p.push(0);
        let total = (self.ihl + self.thl + 1) as u16;
        p[IP + 2..IP + 4].copy_from_slice(&total.to_be_bytes());
        p[IP + 10..IP + 12].copy_from_slice(&[0, 0]);
        let c = checksum(0, &p[IP..t]);
        p[IP + 10..IP + 12].copy_from_slice(&c.to_be_bytes());
        p[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
        p[t + 13] = TCP_ACK;
        p[t + 16..t + 18].copy_from_slice(&[0, 0]);
        // Pseudo-header: addresses, protocol, TCP length.
        let mut sum = 6 + (self.thl + 1) as u32;
        for w in p[IP + 12..IP + 20].chunks_exact(2) {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        let c = checksum(sum, &p[t..]);
        p[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
        p
    }
}

/// The Internet checksum of `data`, from the partial sum `sum`.
fn checksum(mut sum: u32, data: &[u8]) -> u16 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [b] = words.remainder() {
        sum += u32::from(*b) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn pair() -> (PasstLink, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (PasstLink::from_stream(a, [2, 0, 0, 0, 0, 1]).unwrap(), b)
    }

    fn framed(frame: &[u8]) -> Vec<u8> {
        let mut v = (frame.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(frame);
        v
    }

    /// An Ethernet + IPv4 + TCP frame from the device's port 8080.
    fn tcp(seq: u32, flags: u8, payload: usize) -> Vec<u8> {
        let mut f = std::vec![0u8; 14 + 20 + 20 + payload];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        f[14 + 8] = 64;
        f[14 + 9] = 6;
        f[26..30].copy_from_slice(&[10, 0, 2, 15]);
        f[30..34].copy_from_slice(&[10, 0, 2, 2]);
        f[34..36].copy_from_slice(&8080u16.to_be_bytes());
        f[36..38].copy_from_slice(&40000u16.to_be_bytes());
        f[38..42].copy_from_slice(&seq.to_be_bytes());
        f[42..46].copy_from_slice(&77u32.to_be_bytes());
        f[46] = 0x50;
        f[47] = flags;
        f[48..50].copy_from_slice(&1000u16.to_be_bytes());
        f
    }

    #[test]
    fn retransmission_is_followed_by_an_ack_probe() {
        let (mut link, mut peer) = pair();
        link.transmit(&tcp(1000, TCP_ACK, 100)).unwrap();
        link.transmit(&tcp(1100, TCP_ACK, 100)).unwrap();
        link.transmit(&tcp(1000, TCP_ACK, 100)).unwrap(); // again
        link.transmit(&tcp(1100, TCP_ACK, 100)).unwrap(); // no second probe
        let mut got = std::vec![0u8; 4 * (4 + 154) + 4 + 55];
        peer.read_exact(&mut got).unwrap();
        let mut want = Vec::new();
        for seq in [1000, 1100, 1000] {
            want.extend(framed(&tcp(seq, TCP_ACK, 100)));
        }
        let probe = &got[want.len() + 4..want.len() + 4 + 55];
        assert_eq!(&got[..want.len()], &want[..]);
        assert_eq!(&got[want.len()..want.len() + 4], &55u32.to_be_bytes());
        assert_eq!(&probe[38..42], &1201u32.to_be_bytes(), "1 past the end");
        assert_eq!(&probe[42..46], &77u32.to_be_bytes(), "same ACK number");
        assert_eq!(probe[47], TCP_ACK);
        assert_eq!(&probe[16..18], &41u16.to_be_bytes());
        assert_eq!(checksum(0, &probe[14..34]), 0, "IP checksum");
        let mut sum = 6 + 21;
        for w in probe[26..34].chunks_exact(2) {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        assert_eq!(checksum(sum, &probe[34..]), 0, "TCP checksum");
        assert_eq!(
            &got[want.len() + 59..],
            &framed(&tcp(1100, TCP_ACK, 100))[..]
        );
    }

    #[test]
    fn one_byte_segment_filling_the_probe_gap_is_dropped() {
        let mut p = AckProbe::default();
        assert!(matches!(p.look(&tcp(1000, TCP_ACK, 100)), Probe::None));
        assert!(matches!(p.look(&tcp(1000, TCP_ACK, 100)), Probe::After(_)));
        assert!(matches!(p.look(&tcp(1100, TCP_ACK, 1)), Probe::Drop));
        assert!(matches!(p.look(&tcp(1100, TCP_ACK, 2)), Probe::None));
        assert!(matches!(p.look(&tcp(1102, TCP_ACK, 0)), Probe::None));
        assert!(matches!(p.look(&tcp(5, TCP_SYN, 0)), Probe::None));
    }

    fn frame(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn frames_split_byte_by_byte() {
        let (mut link, mut peer) = pair();
        let f = frame(100, 1);
        let wire = framed(&f);
        let mut buf = [0u8; MAX_FRAME_LEN];
        for (i, b) in wire.iter().enumerate() {
            assert_eq!(link.receive(&mut buf), Ok(None), "after {i} bytes");
            peer.write_all(&[*b]).unwrap();
        }
        assert_eq!(link.receive(&mut buf), Ok(Some(100)));
        assert_eq!(&buf[..100], &f[..]);
        assert_eq!(link.receive(&mut buf), Ok(None));
    }

    #[test]
    fn several_frames_in_one_write() {
        let (mut link, mut peer) = pair();
        let frames: Vec<Vec<u8>> = (0..20).map(|i| frame(60 + i * 70, i as u8)).collect();
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(framed(f));
        }
        // Plus half of one more.
        let last = frame(1514, 9);
        let lw = framed(&last);
        wire.extend_from_slice(&lw[..700]);
        peer.write_all(&wire).unwrap();
        let mut buf = [0u8; MAX_FRAME_LEN];
        for f in &frames {
            let n = link.receive(&mut buf).unwrap().expect("frame");
            assert_eq!(&buf[..n], &f[..]);
        }
        assert_eq!(link.receive(&mut buf), Ok(None));
        assert!(!link.shared.frame_buffered.load(Ordering::Relaxed));
        peer.write_all(&lw[700..]).unwrap();
        assert_eq!(link.receive(&mut buf), Ok(Some(1514)));
        assert_eq!(&buf[..1514], &last[..]);
    }

    #[test]
    fn oversized_frame_is_skipped_whole() {
        let (mut link, mut peer) = pair();
        let big = frame(9000, 3);
        let small = frame(64, 4);
        let wire = framed(&big);
        // The big frame arrives in two parts, the second with the next frame.
        peer.write_all(&wire[..3000]).unwrap();
        let mut buf = [0u8; MAX_FRAME_LEN];
        assert_eq!(link.receive(&mut buf), Err(LinkError::TooLong));
        assert_eq!(link.receive(&mut buf), Ok(None));
        let mut rest = wire[3000..].to_vec();
        rest.extend(framed(&small));
        peer.write_all(&rest).unwrap();
        assert_eq!(link.receive(&mut buf), Ok(Some(64)));
        assert_eq!(&buf[..64], &small[..]);
        assert_eq!(link.oversized_frames(), 1);
        // A frame longer than the caller's buffer is dropped too.
        peer.write_all(&framed(&frame(200, 5))).unwrap();
        peer.write_all(&framed(&small)).unwrap();
        let mut short = [0u8; 100];
        assert_eq!(link.receive(&mut short), Err(LinkError::TooLong));
        assert_eq!(link.receive(&mut short), Ok(Some(64)));
    }

    #[test]
    fn transmit_frames_with_length() {
        let (mut link, mut peer) = pair();
        let a = frame(60, 1);
        let b = frame(1514, 2);
        link.transmit(&a).unwrap();
        link.transmit(&b).unwrap();
        assert_eq!(
            link.transmit(&frame(1515, 0)),
            Err(LinkError::TooLong),
            "longer than a frame"
        );
        let mut got = std::vec![0u8; 8 + 60 + 1514];
        peer.read_exact(&mut got).unwrap();
        let mut want = framed(&a);
        want.extend(framed(&b));
        assert_eq!(got, want);
    }

    #[test]
    fn transmit_busy_then_drains() {
        let (mut link, mut peer) = pair();
        let f = frame(1500, 7);
        // Fill the socket buffer: frames are accepted until one stays pending.
        let mut sent = 0usize;
        let busy = loop {
            match link.transmit(&f) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 100_000, "socket never filled");
        };
        assert_eq!(busy, LinkError::Busy);
        // Read everything on the other side; the pending tail gets flushed
        // by later calls, and all accepted frames arrive whole, in order.
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = std::vec![0u8; 4 + 1500];
        let mut buf2 = [0u8; 16];
        for i in 0..sent {
            // Let the link push its pending bytes.
            let _ = link.receive(&mut buf2[..]);
            peer.read_exact(&mut buf)
                .unwrap_or_else(|e| panic!("frame {i}: {e}"));
            assert_eq!(&buf[..4], &1500u32.to_be_bytes());
            assert_eq!(&buf[4..], &f[..]);
        }
        link.transmit(&f).unwrap();
    }

    #[test]
    fn peer_close_is_link_down() {
        let (mut link, peer) = pair();
        assert!(link.link_up());
        drop(peer);
        let mut buf = [0u8; MAX_FRAME_LEN];
        assert_eq!(link.receive(&mut buf), Err(LinkError::Down));
        assert!(!link.link_up());
        assert_eq!(link.transmit(&[0; 60]), Err(LinkError::Down));
    }

    #[test]
    fn corrupt_length_is_link_down() {
        let (mut link, mut peer) = pair();
        peer.write_all(&u32::MAX.to_be_bytes()).unwrap();
        let mut buf = [0u8; MAX_FRAME_LEN];
        assert_eq!(link.receive(&mut buf), Err(LinkError::Down));
    }

    #[test]
    fn signal_wakes_on_data_and_on_buffered_frames() {
        let (mut link, mut peer) = pair();
        let sig = link.rx_signal().expect("signal");
        // Nothing there: the wait runs to its timeout.
        let t = Instant::now();
        sig.wait(Some(Duration::from_millis(50)));
        assert!(t.elapsed() >= Duration::from_millis(45));
        // Data arriving wakes it early.
        let w = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let mut wire = framed(&frame(60, 1));
            wire.extend(framed(&frame(60, 2)));
            peer.write_all(&wire).unwrap();
            peer
        });
        let t = Instant::now();
        sig.wait(Some(Duration::from_secs(5)));
        assert!(t.elapsed() < Duration::from_secs(4), "woken by data");
        let _peer = w.join().unwrap();
        // One frame taken, one left in the buffer: the signal does not wait.
        let mut buf = [0u8; MAX_FRAME_LEN];
        assert_eq!(link.receive(&mut buf), Ok(Some(60)));
        let t = Instant::now();
        sig.wait(Some(Duration::from_secs(5)));
        assert!(t.elapsed() < Duration::from_secs(1), "a frame is buffered");
        assert_eq!(link.receive(&mut buf), Ok(Some(60)));
        assert_eq!(link.receive(&mut buf), Ok(None));
    }

    #[test]
    fn command_line() {
        let c = PasstConfig::new()
            .tcp_forward(18080, 80)
            .udp_forward(11123, 123)
            .dhcp(false);
        let args: Vec<String> = c
            .args(Path::new("/d/s"), Path::new("/d/l"))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let s = args.join(" ");
        for want in [
            "--foreground --one-off --ipv4-only",
            "--mtu 1500",
            "--address 10.0.2.15",
            "--netmask 24",
            "--gateway 10.0.2.2",
            "--dns 10.0.2.2",
            "--no-dhcp",
            "--tcp-ports 127.0.0.1/18080:80",
            "--udp-ports 127.0.0.1/11123:123",
            "--socket /d/s",
            "--log-file /d/l",
        ] {
            assert!(s.contains(want), "{want:?} missing from {s}");
        }
    }

    #[test]
    fn missing_program_is_a_clear_error() {
        let c = PasstConfig {
            program: PathBuf::from("/nonexistent/passt"),
            ..PasstConfig::new()
        };
        let e = PasstLink::spawn(&c).unwrap_err();
        assert!(e.to_string().contains("apt-get install passt"), "{e}");
    }
}
