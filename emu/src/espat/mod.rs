//! Espressif ESP-AT firmware (2.x/3.x command set) on an in-memory UART,
//! backed by host sockets.
//!
//! [`EspAtEmu::start`] returns the emulator handle and the driver's end of
//! the serial line, an [`EspAtSerial`] implementing `embedded_io::Read +
//! Write + ReadReady`. The firmware runs on its own threads: one assembles
//! command lines (and `AT+CIPSEND` data) from what the driver writes, one
//! executes commands one at a time, and each network link has a reader and
//! a writer thread on a host socket.
//!
//! # What is emulated
//!
//! * Basic: `AT`, `ATE0`/`ATE1` (echo is on after a reset, as on the chip),
//!   `AT+RST` (`OK`, then `ready` after the boot time), `AT+RESTORE`,
//!   `AT+GMR`, `AT+SYSLOG` (`ERR CODE:0x%08x` before `ERROR`), `AT+SYSMSG`
//!   (bit 1: `+LINK_CONN:` instead of `<link>,CONNECT`), `AT+SYSSTORE`.
//! * Wi-Fi: `AT+CWMODE`, `AT+CWJAP` against one simulated access point
//!   (SSID and passphrase checked; `WIFI CONNECTED`, `WIFI GOT IP`, `OK`, or
//!   `+CWJAP:<code>` and `ERROR` with code 1 timeout, 2 wrong password,
//!   3 AP not found), `AT+CWQAP` (`WIFI DISCONNECT`), `AT+CWDHCP`,
//!   `AT+CIPSTA?`/`=`, `AT+CIPSTAMAC?`, `AT+CIFSR`.
//! * TCP/IP: `AT+CIPMUX`, `AT+CIPSTART` (TCP and UDP with local port and
//!   mode 0/1/2), `AT+CIPSEND` (`OK`, `>`, data, `Recv <n> bytes`,
//!   `SEND OK` / `SEND FAIL`; UDP with an explicit remote), `AT+CIPCLOSE`
//!   (5 = all), `AT+CIPRECVMODE` (0 active `+IPD,<link>,<len>:<data>`,
//!   1 passive `+IPD,<link>,<len>` then `AT+CIPRECVDATA`), `AT+CIPRECVLEN?`,
//!   `AT+CIPDINFO` (remote address in `+IPD` and `+CIPRECVDATA`),
//!   `AT+CIPSERVER` (one server; incoming connections take the lowest free
//!   link id), `AT+CIPSERVERMAXCONN`, `AT+CIPDOMAIN`, `AT+CIPSTATE?`,
//!   `AT+CIPSTATUS`, `AT+CIPTCPOPT` (linger 0 closes with RST, no-delay).
//! * SSL client links: `AT+CIPSTART=[<link>,]"SSL","<host>",<port>[,<keep_alive>]`
//!   (TLS 1.3 in the emulator, on the host socket; `<link>,CONNECT` and
//!   `OK` once the handshake is done), `AT+CIPSSLCCONF` (auth mode 0: no
//!   verification; 2: the chain must lead to a CA in `client_ca.<ca_number>`
//!   and the leaf must carry the expected name; 1 and 3 need client
//!   certificates and fail), `AT+CIPSSLCSNI`, `AT+CIPSSLCCN` (at most 64
//!   bytes each), and the manufacturing NVS partition: `AT+SYSMFG?`,
//!   `AT+SYSMFG=0,..` (erase), `=1,..` (read), `=2,"<ns>","<key>",<type>,<value>`
//!   (types 7 and 8: `OK`, `>`, exactly `<value>` bytes, `OK`).
//! * Framing follows the firmware's result codes: `\r\nOK\r\n`,
//!   `\r\nERROR\r\n`, `\r\nOK\r\n\r\n>` for the send prompt,
//!   `\r\nSEND OK\r\n`, `busy p...\r\n` for a command that arrives while
//!   another one runs, `\r\nready\r\n` after boot.
//!
//! # Choices and limits (documented, not hidden)
//!
//! * **SSL** (sections "Establish SSL Connection" of `AT+CIPSTART`,
//!   `AT+CIPSSLCCONF`, `AT+CIPSSLCSNI`, `AT+CIPSSLCCN` of the TCP/IP AT
//!   commands, and "SSL Client Certificates" of the `AT+SYSMFG` examples):
//!   the SNI sent is `AT+CIPSSLCSNI`'s, else the remote host when it is a
//!   name. The name checked is `AT+CIPSSLCCN`'s, else the SNI name, else
//!   the remote host as given (mbedTLS checks the one host name it is
//!   given). `client_ca.<n>` holds PEM (one or more certificates, a
//!   trailing NUL allowed) or one DER certificate. Certificates above the
//!   leaf must be CAs (basicConstraints, as mbedTLS requires). Validity
//!   dates are not checked (the chip checks them against its SNTP clock). A failed handshake is
//!   `ERROR` (`ERR CODE:0x010a0000`, command execution failed, under
//!   `AT+SYSLOG=1`: the manual documents no SSL-specific code); why it
//!   failed goes to [`EspAtEmu::ssl_log`], the chip's log port.
//!   `AT+CIPRECVLEN?` on an SSL link counts encrypted bytes, as the
//!   manual's note to that command says ("ESP-AT will return the length of
//!   the encrypted data, so the returned length will be larger than the
//!   real data length"): every TLS record whose plaintext is not yet read to
//!   its end counts whole, as it came off the wire (5-byte header, content
//!   type and tag included). The manual does not say how a record read
//!   halfway counts; the emulator counts it whole until its last byte is
//!   read. The passive `+IPD,<link>,<len>` ("the total length of socket
//!   data in the buffer") and the receive window count the decrypted bytes
//!   `AT+CIPRECVDATA` hands out: the manual ties the encrypted count to
//!   `AT+CIPRECVLEN?` only. `AT+CIPSERVER=1,<port>,"SSL"` answers `ERROR`
//!   (no SSL server).
//!   TLS 1.2 servers are not reached (embedded-tls speaks TLS 1.3 only).
//! * The station address decides what host address sockets bind to; tests
//!   use `127.0.0.3`. Nothing binds or connects outside 127.0.0.0/8 unless a
//!   test configures such an address.
//! * **DNS** (`AT+CIPDOMAIN`, host names in `AT+CIPSTART`): literal
//!   addresses, the configured table, `localhost`/`*.localhost`, and names
//!   in `/etc/hosts` that map into 127.0.0.0/8. No DNS query ever leaves
//!   the machine; anything else is `ERROR`.
//! * **Send buffer**: each TCP link has a send buffer (like lwIP's); a
//!   `AT+CIPSEND` whose data does not fit within the configured wait is
//!   `SEND FAIL` and nothing of it is sent.
//! * **Passive buffer**: each link buffers up to the receive window; when
//!   full, the emulator stops reading its host socket (TCP flow control) or
//!   drops datagrams (UDP). One `AT+CIPRECVDATA` on a UDP link returns one
//!   datagram (truncated to the requested length, the rest dropped).
//! * **Wi-Fi drop** ([`EspAtEmu::drop_wifi`]): `WIFI DISCONNECT`, every link
//!   is closed at once (`<link>,CLOSED`, buffered data discarded, host
//!   sockets reset) and the server is deleted. A real chip would keep TCP
//!   state until its timers expire; the emulator ends it deterministically.
//! * **Reset** ([`EspAtEmu::reset`], `AT+RST`): links reset, server deleted,
//!   Wi-Fi disconnected, every setting back to its default (echo on,
//!   `CIPMUX=0`, active receive, no `CIPDINFO`, no `SYSMSG`), some boot noise
//!   and then `ready`.
//! * Connections to [`EspAtEmu::blackhole`] addresses get no answer: the
//!   `AT+CIPSTART` fails with `ERROR` after the configured connect timeout.
//! * Single-connection mode (`CIPMUX=0`) is served for `AT+CIPSTART`,
//!   `AT+CIPSEND`, `AT+CIPCLOSE` and the messages; passthrough mode,
//!   SoftAP, BLE, MQTT, HTTP are not.
//!
//! # Test knobs
//!
//! Read chunking ([`EspAtEmu::set_max_read`]), raw injection
//! ([`EspAtEmu::inject`]), lines placed inside the next reply before its
//! result ([`EspAtEmu::inject_in_next_reply`]), holding network messages
//! until the next reply ([`EspAtEmu::hold_unsolicited`]), `busy p...` for the
//! next commands ([`EspAtEmu::busy_next`]), truncated and garbled replies,
//! resets, Wi-Fi drops, AP changes and join delays.
//!
//! # Bus counting
//!
//! Every UART byte in either direction is counted on the
//! [`BusCounter`]; socket data (`AT+CIPSEND` data, `+CIPRECVDATA` and
//! active `+IPD` data) is counted as payload. Transactions are command
//! lines and data blocks from the driver, and replies and messages from the
//! chip.

mod args;
mod firmware;
mod net;
mod ssl;
mod uart;

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::bus::BusCounter;

pub use uart::EspAtSerial;

/// Lock a mutex, ignoring poisoning (a panicking test thread must not take
/// the emulator down with it).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How the emulated chip and its network are set up.
#[derive(Clone)]
pub struct EspAtConfig {
    /// SSID of the simulated access point.
    pub ssid: String,
    /// Its WPA2 passphrase.
    pub passphrase: String,
    /// Station address handed out by the AP's "DHCP" (and what host sockets bind to).
    pub station_ip: Ipv4Addr,
    /// Gateway reported by `AT+CIPSTA?`.
    pub gateway: Ipv4Addr,
    /// Netmask reported by `AT+CIPSTA?`.
    pub netmask: Ipv4Addr,
    /// Station MAC address.
    pub mac: [u8; 6],
    /// Host names `AT+CIPDOMAIN` resolves (besides literals, `localhost` and
    /// 127.0.0.0/8 entries of `/etc/hosts`).
    pub dns: Vec<(String, Ipv4Addr)>,
    /// Counters for every UART byte.
    pub bus: Arc<BusCounter>,
    /// Largest read the driver side returns (1 splits every byte).
    pub max_read: usize,
    /// Print boot noise and `ready` when started (as after power-on).
    pub boot_banner: bool,
    /// Time from reset to `ready`.
    pub boot_time: Duration,
    /// Time `AT+CWJAP` takes to answer.
    pub join_delay: Duration,
    /// How long `AT+CIPSTART` waits for a TCP handshake (and an SSL link's
    /// TLS handshake, again as long).
    pub connect_timeout: Duration,
    /// How long `AT+CIPSEND` waits for send-buffer room before `SEND FAIL`.
    pub send_wait: Duration,
    /// Send buffer per TCP link, bytes.
    pub send_buffer: usize,
    /// Passive receive buffer per link (the TCP window), bytes.
    pub recv_window: usize,
    /// End a failed `AT+CWJAP` with `FAIL` (AT firmware 1.x) instead of
    /// `ERROR` (2.x and later, the current manual).
    pub legacy_fail: bool,
}

impl Default for EspAtConfig {
    fn default() -> Self {
        EspAtConfig {
            ssid: "netdever-ap".into(),
            passphrase: "correct horse battery".into(),
            station_ip: Ipv4Addr::new(127, 0, 0, 3),
            gateway: Ipv4Addr::new(127, 0, 0, 1),
            netmask: Ipv4Addr::new(255, 0, 0, 0),
            mac: [0x18, 0xfe, 0x34, 0x00, 0x00, 0x03],
            dns: Vec::new(),
            bus: BusCounter::new(),
            max_read: 4096,
            boot_banner: true,
            boot_time: Duration::from_millis(20),
            join_delay: Duration::from_millis(20),
            connect_timeout: Duration::from_secs(5),
            send_wait: Duration::from_secs(1),
            send_buffer: 8192,
            recv_window: 5760,
            legacy_fail: false,
        }
    }
}

/// Test knobs that act on the output stream.
#[derive(Default)]
pub(crate) struct Knobs {
    /// Commands still to answer with `busy p...`.
    pub busy_next: u32,
    /// Bytes to place before the result of the next reply.
    pub inject_next: Vec<u8>,
    /// Keep network messages back and release them inside the next reply.
    pub hold: bool,
    /// Network messages held back.
    pub held: Vec<u8>,
    /// Cut the next reply after this many bytes.
    pub truncate_next: Option<usize>,
    /// Replace the next reply's information lines with garbage.
    pub garble_next: bool,
}

/// The simulated network around the chip (changeable while running).
pub(crate) struct World {
    pub ssid: String,
    pub passphrase: String,
    pub ap_present: bool,
    pub join_delay: Duration,
    pub dns: Vec<(String, Ipv4Addr)>,
    pub blackholes: Vec<Ipv4Addr>,
    pub station_ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub mac: [u8; 6],
    pub boot_time: Duration,
    pub connect_timeout: Duration,
    pub send_wait: Duration,
    pub send_buffer: usize,
    pub recv_window: usize,
    pub legacy_fail: bool,
}

/// A unit of work for the command executor.
pub(crate) enum Job {
    /// A complete command line (without CR LF).
    Command(Vec<u8>),
    /// The data of an `AT+CIPSEND`.
    Data(Vec<u8>),
}

/// State shared by every emulator thread.
pub(crate) struct Shared {
    pub bus: Arc<BusCounter>,
    /// Chip → driver bytes.
    pub out: Mutex<VecDeque<u8>>,
    pub out_cv: Condvar,
    /// Driver → chip bytes and the line assembler.
    pub inp: Mutex<uart::InState>,
    pub inp_cv: Condvar,
    pub chip: Mutex<firmware::Chip>,
    pub world: Mutex<World>,
    pub knobs: Mutex<Knobs>,
    /// Boot generation: bumped by every reset; output of older generations is dropped.
    pub gen: AtomicU64,
    /// A command is being executed (new ones get `busy p...`).
    pub executing: AtomicBool,
    /// Data of an `AT+CIPSEND` is being sent.
    pub sending: AtomicBool,
    pub shutdown: AtomicBool,
    /// `AT+CIPRECVMODE=1`.
    pub passive: AtomicBool,
    /// `AT+CIPDINFO=1`.
    pub dinfo: AtomicBool,
    /// `AT+CIPMUX=1`.
    pub mux: AtomicBool,
    pub max_read: AtomicUsize,
    pub rx_notify: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
    /// SSL client settings, the manufacturing NVS partition, handshake log.
    pub ssl: Mutex<ssl::SslState>,
    pub log: Mutex<Vec<String>>,
    pub jobs: Mutex<Option<mpsc::Sender<Job>>>,
}

impl Shared {
    /// Current boot generation.
    pub fn gen(&self) -> u64 {
        self.gen.load(Ordering::SeqCst)
    }

    fn wake_driver(&self) {
        let cb = lock(&self.rx_notify).clone();
        if let Some(cb) = cb {
            cb();
        }
    }

    /// Put bytes on the wire now if they belong to generation `gen`.
    pub fn emit(&self, gen: u64, bytes: &[u8], payload: usize) -> bool {
        if bytes.is_empty() {
            return true;
        }
        {
            let mut out = lock(&self.out);
            if gen != self.gen() {
                return false;
            }
            // Counted before the driver can see the bytes.
            self.bus.transaction(bytes.len());
            self.bus.payload(payload);
            out.extend(bytes.iter().copied());
            self.out_cv.notify_all();
        }
        self.wake_driver();
        true
    }

    /// A message the chip sends on its own (network events); held back when
    /// the hold knob is on.
    pub fn unsolicited(&self, gen: u64, bytes: &[u8], payload: usize) {
        {
            let mut k = lock(&self.knobs);
            if k.hold {
                if gen == self.gen() {
                    k.held.extend_from_slice(bytes);
                }
                return;
            }
        }
        self.emit(gen, bytes, payload);
    }

    /// Send a command's final reply: `segments`, the last of which is the
    /// result code. The firmware takes new commands from here on. The reply
    /// knobs apply.
    pub fn reply(&self, gen: u64, segments: Vec<Seg>) {
        self.sending.store(false, Ordering::SeqCst);
        self.executing.store(false, Ordering::SeqCst);
        self.reply_partial(gen, segments);
    }

    /// Send part of a reply after which the command goes on (the `>` of
    /// `AT+CIPSEND`). The reply knobs apply.
    pub fn reply_partial(&self, gen: u64, mut segments: Vec<Seg>) {
        let (inject, held, truncate, garble) = {
            let mut k = lock(&self.knobs);
            let held = std::mem::take(&mut k.held);
            (
                std::mem::take(&mut k.inject_next),
                held,
                k.truncate_next.take(),
                std::mem::replace(&mut k.garble_next, false),
            )
        };
        if garble {
            let last = segments.len().saturating_sub(1);
            if last == 0 {
                segments.insert(0, Seg::text(b"#?garbled\x7f\x01\r\n".to_vec()));
            } else {
                for s in &mut segments[..last] {
                    let n = s.bytes.len().max(3);
                    let mut g: Vec<u8> = (0..n - 2).map(|i| b"~#%&*=;|"[i % 8]).collect();
                    g.extend_from_slice(b"\r\n");
                    *s = Seg::text(g);
                }
            }
        }
        let at = segments.len().saturating_sub(1);
        let mut extra = inject;
        extra.extend_from_slice(&held);
        if !extra.is_empty() {
            segments.insert(at, Seg::text(extra));
        }
        let mut bytes = Vec::new();
        let mut payload = 0;
        for s in &segments {
            bytes.extend_from_slice(&s.bytes);
            payload += s.payload;
        }
        if let Some(k) = truncate {
            bytes.truncate(k);
            payload = payload.min(k);
        }
        self.emit(gen, &bytes, payload);
    }

    /// Log a command line (for tests).
    pub fn log_command(&self, line: &[u8]) {
        let mut log = lock(&self.log);
        if log.len() < 100_000 {
            log.push(String::from_utf8_lossy(line).into_owned());
        }
    }
}

/// A piece of a reply.
pub(crate) struct Seg {
    pub bytes: Vec<u8>,
    pub payload: usize,
}

impl Seg {
    pub fn text(bytes: Vec<u8>) -> Seg {
        Seg { bytes, payload: 0 }
    }
}

/// The emulated ESP-AT chip. Dropping it stops the firmware and closes every
/// host socket it opened.
pub struct EspAtEmu {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl EspAtEmu {
    /// Power the chip on. Returns the handle (knobs, counters) and the
    /// driver's end of the UART.
    pub fn start(config: EspAtConfig) -> (EspAtEmu, EspAtSerial) {
        let world = World {
            ssid: config.ssid.clone(),
            passphrase: config.passphrase.clone(),
            ap_present: true,
            join_delay: config.join_delay,
            dns: config.dns.clone(),
            blackholes: Vec::new(),
            station_ip: config.station_ip,
            gateway: config.gateway,
            netmask: config.netmask,
            mac: config.mac,
            boot_time: config.boot_time,
            connect_timeout: config.connect_timeout,
            send_wait: config.send_wait,
            send_buffer: config.send_buffer.max(1),
            recv_window: config.recv_window.max(1),
            legacy_fail: config.legacy_fail,
        };
        let chip = firmware::Chip::new(&world);
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            bus: config.bus.clone(),
            out: Mutex::new(VecDeque::new()),
            out_cv: Condvar::new(),
            inp: Mutex::new(uart::InState::default()),
            inp_cv: Condvar::new(),
            chip: Mutex::new(chip),
            world: Mutex::new(world),
            knobs: Mutex::new(Knobs::default()),
            gen: AtomicU64::new(1),
            executing: AtomicBool::new(false),
            sending: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            passive: AtomicBool::new(false),
            dinfo: AtomicBool::new(false),
            mux: AtomicBool::new(false),
            max_read: AtomicUsize::new(config.max_read.max(1)),
            rx_notify: Mutex::new(None),
            ssl: Mutex::new(ssl::SslState::default()),
            log: Mutex::new(Vec::new()),
            jobs: Mutex::new(Some(tx)),
        });
        let mut threads = Vec::new();
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("espat-uart".into())
                .spawn(move || uart::input_thread(s))
                .expect("spawn espat uart thread"),
        );
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("espat-fw".into())
                .spawn(move || firmware::executor_thread(s, rx))
                .expect("spawn espat firmware thread"),
        );
        if config.boot_banner {
            firmware::boot_output(&shared, shared.gen(), Duration::ZERO);
        }
        let serial = EspAtSerial::new(shared.clone());
        (EspAtEmu { shared, threads }, serial)
    }

    /// The bus counters.
    pub fn bus(&self) -> Arc<BusCounter> {
        self.shared.bus.clone()
    }

    /// Largest number of bytes one driver-side read returns (at least 1).
    pub fn set_max_read(&self, n: usize) {
        self.shared.max_read.store(n.max(1), Ordering::SeqCst);
    }

    /// Call `f` whenever the chip puts bytes on the wire (a UART RX
    /// interrupt; wire it to the driver platform's `notify`).
    pub fn set_rx_notify(&self, f: Option<Arc<dyn Fn() + Send + Sync>>) {
        *lock(&self.shared.rx_notify) = f;
    }

    /// Put raw bytes on the wire now, between messages (garbage lines, fake
    /// messages, anything).
    pub fn inject(&self, bytes: &[u8]) {
        let gen = self.shared.gen();
        self.shared.emit(gen, bytes, 0);
    }

    /// Place `bytes` inside the next command reply, right before its result
    /// code (between a command and its `OK`, or between `OK` and `>`).
    pub fn inject_in_next_reply(&self, bytes: &[u8]) {
        lock(&self.shared.knobs)
            .inject_next
            .extend_from_slice(bytes);
    }

    /// While on, network messages (`+IPD`, `<link>,CONNECT`, `<link>,CLOSED`,
    /// `+LINK_CONN`) are held back and released inside the next command
    /// reply, before its result code. Turning it off releases what is held.
    pub fn hold_unsolicited(&self, on: bool) {
        let held = {
            let mut k = lock(&self.shared.knobs);
            k.hold = on;
            if on {
                Vec::new()
            } else {
                std::mem::take(&mut k.held)
            }
        };
        if !held.is_empty() {
            let gen = self.shared.gen();
            self.shared.emit(gen, &held, 0);
        }
    }

    /// Answer the next `n` commands with `busy p...` (and drop them), as the
    /// firmware does for a command that arrives while it is busy.
    pub fn busy_next(&self, n: u32) {
        lock(&self.shared.knobs).busy_next = n;
    }

    /// Cut the next reply after `keep` bytes (the rest is never sent).
    pub fn truncate_next_reply(&self, keep: usize) {
        lock(&self.shared.knobs).truncate_next = Some(keep);
    }

    /// Replace the information lines of the next reply with garbage (the
    /// result code stays).
    pub fn garble_next_reply(&self) {
        lock(&self.shared.knobs).garble_next = true;
    }

    /// A spontaneous reset (brown-out, watchdog): everything is lost, then
    /// boot noise and `ready`.
    pub fn reset(&self) {
        firmware::reset(&self.shared);
    }

    /// The access point goes away: `WIFI DISCONNECT`, every link closed.
    pub fn drop_wifi(&self) {
        firmware::wifi_lost(&self.shared);
    }

    /// Change the access point's SSID and passphrase.
    pub fn set_ap(&self, ssid: &str, passphrase: &str) {
        let mut w = lock(&self.shared.world);
        w.ssid = ssid.into();
        w.passphrase = passphrase.into();
    }

    /// Whether the access point can be found at all (`+CWJAP:3` if not).
    pub fn set_ap_present(&self, present: bool) {
        lock(&self.shared.world).ap_present = present;
    }

    /// How long `AT+CWJAP` takes (a long delay makes the driver time out).
    pub fn set_join_delay(&self, d: Duration) {
        lock(&self.shared.world).join_delay = d;
    }

    /// TCP connections to `ip` get no answer (`AT+CIPSTART` fails after the
    /// connect timeout).
    pub fn blackhole(&self, ip: Ipv4Addr) {
        lock(&self.shared.world).blackholes.push(ip);
    }

    /// How long `AT+CIPSTART` waits for a handshake.
    pub fn set_connect_timeout(&self, d: Duration) {
        lock(&self.shared.world).connect_timeout = d;
    }

    /// How long `AT+CIPSEND` waits for send-buffer room before `SEND FAIL`.
    pub fn set_send_wait(&self, d: Duration) {
        lock(&self.shared.world).send_wait = d;
    }

    /// Add a name `AT+CIPDOMAIN` resolves.
    pub fn add_dns(&self, name: &str, ip: Ipv4Addr) {
        lock(&self.shared.world).dns.push((name.into(), ip));
    }

    /// Every command line received so far (without CR LF).
    pub fn commands(&self) -> Vec<String> {
        lock(&self.shared.log).clone()
    }

    /// Why SSL handshakes failed, one entry per failed `AT+CIPSTART`
    /// (what the chip prints on its log port, not on the AT port).
    pub fn ssl_log(&self) -> Vec<String> {
        lock(&self.shared.ssl).log.clone()
    }

    /// Forget the command log.
    pub fn clear_commands(&self) {
        lock(&self.shared.log).clear();
    }

    /// How many links are open on the chip.
    pub fn open_links(&self) -> usize {
        lock(&self.shared.chip)
            .links
            .iter()
            .filter(|l| l.is_some())
            .count()
    }

    /// Whether the station is connected with an address.
    pub fn wifi_up(&self) -> bool {
        let c = lock(&self.shared.chip);
        c.wifi && c.got_ip
    }

    /// Bytes the chip sent that the driver has not read yet.
    pub fn unread_output(&self) -> usize {
        lock(&self.shared.out).len()
    }
}

impl Drop for EspAtEmu {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        *lock(&self.shared.jobs) = None;
        self.shared.gen.fetch_add(1, Ordering::SeqCst);
        self.shared.inp_cv.notify_all();
        self.shared.out_cv.notify_all();
        firmware::close_everything(&self.shared, true);
        *lock(&self.shared.rx_notify) = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
