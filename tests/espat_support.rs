//! Helpers shared by the ESP-AT tests (`#[path] mod espat_support;`): a raw
//! AT client on the emulator's serial line, and the standard rig of driver +
//! emulator + loopback peers. Everything waits with a bound. Network
//! namespaces come from the helpers all tests share (`tests/support`).
#![allow(dead_code)]
#![cfg(all(feature = "std", feature = "esp-at", feature = "tap"))]

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use embedded_io::{Read, ReadReady, Write};
use netdever::offload::espat::{Config, EspAt};
use netdever::platform::{Platform, StdPlatform};
use netdever::{ConnectParams, Netlinker};
use netdever_emu::espat::{EspAtConfig, EspAtEmu, EspAtSerial};

/// The helpers every test shares (the ESP-AT tests reach them from here,
/// so the file is compiled once per test).
#[allow(unused_imports)]
#[path = "support/mod.rs"]
pub mod support;

/// Where the device lives on loopback.
pub const DEV_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// Where the test peers live.
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// The simulated access point.
pub const SSID: &str = "netdever-ap";
/// Its passphrase.
pub const PASS: &str = "correct horse battery";

/// The emulator configuration the tests use (device at 127.0.0.3).
pub fn emu_config() -> EspAtConfig {
    EspAtConfig {
        ssid: SSID.into(),
        passphrase: PASS.into(),
        station_ip: DEV_IP,
        dns: vec![
            ("peer.espat.test".into(), PEER_IP),
            ("other.espat.test".into(), Ipv4Addr::new(127, 0, 0, 77)),
        ],
        ..Default::default()
    }
}

/// A raw AT conversation with the emulator (for checking its exact bytes).
pub struct Raw {
    pub emu: EspAtEmu,
    pub serial: EspAtSerial,
    pub pending: Vec<u8>,
}

impl Raw {
    /// Start an emulator and wait for its `ready`.
    pub fn start(cfg: EspAtConfig) -> Raw {
        let (emu, serial) = EspAtEmu::start(cfg);
        let mut r = Raw {
            emu,
            serial,
            pending: Vec::new(),
        };
        r.until(b"ready\r\n", Duration::from_secs(5));
        r
    }

    /// Write a command line (CR LF appended).
    pub fn cmd(&mut self, s: &str) {
        self.serial.write_all(s.as_bytes()).unwrap();
        self.serial.write_all(b"\r\n").unwrap();
    }

    /// Write raw bytes.
    pub fn raw(&mut self, b: &[u8]) {
        self.serial.write_all(b).unwrap();
    }

    fn fill(&mut self, until: Instant) -> bool {
        while Instant::now() < until {
            if self.serial.read_ready().unwrap() {
                let mut buf = [0u8; 4096];
                let n = self.serial.read(&mut buf).unwrap();
                self.pending.extend_from_slice(&buf[..n]);
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    /// Everything up to and including `pat`; panics after `limit`.
    pub fn until(&mut self, pat: &[u8], limit: Duration) -> Vec<u8> {
        let end = Instant::now() + limit;
        loop {
            if let Some(i) = find(&self.pending, pat) {
                let rest = self.pending.split_off(i + pat.len());
                return std::mem::replace(&mut self.pending, rest);
            }
            if !self.fill(end) {
                panic!(
                    "no {:?} within {limit:?}; got {:?}",
                    String::from_utf8_lossy(pat),
                    String::from_utf8_lossy(&self.pending)
                );
            }
        }
    }

    /// Everything that arrives within `d`.
    pub fn drain_for(&mut self, d: Duration) -> Vec<u8> {
        let end = Instant::now() + d;
        while self.fill(end) {}
        std::mem::take(&mut self.pending)
    }

    /// Send `c` and return the reply up to and including `end`.
    pub fn exchange(&mut self, c: &str, end: &[u8]) -> Vec<u8> {
        self.cmd(c);
        self.until(end, Duration::from_secs(5))
    }

    /// Echo off, multi-connection mode, joined to the AP.
    pub fn setup(&mut self) {
        self.cmd("ATE0");
        self.until(b"OK\r\n", Duration::from_secs(2));
        assert_eq!(self.exchange("AT+CIPMUX=1", b"OK\r\n"), b"\r\nOK\r\n");
        let r = self.exchange(&format!("AT+CWJAP=\"{SSID}\",\"{PASS}\""), b"OK\r\n");
        assert_eq!(r, b"WIFI CONNECTED\r\nWIFI GOT IP\r\n\r\nOK\r\n");
    }
}

/// Position of `pat` in `hay`.
pub fn find(hay: &[u8], pat: &[u8]) -> Option<usize> {
    if pat.is_empty() || hay.len() < pat.len() {
        return None;
    }
    hay.windows(pat.len()).position(|w| w == pat)
}

/// The device type the tests use.
pub type Dev = EspAt<EspAtSerial, StdPlatform>;

/// Driver + emulator, wired so the chip's output wakes blocked calls.
pub struct Rig {
    pub dev: Arc<Dev>,
    pub emu: EspAtEmu,
}

/// Driver settings for tests: short chip timeouts so failures show fast.
pub fn test_driver_config() -> Config {
    Config {
        cmd_timeout: Duration::from_secs(2),
        dns_timeout: Duration::from_secs(3),
        ..Config::default()
    }
}

impl Rig {
    /// A device on a fresh emulator, not yet joined.
    pub fn new(cfg: EspAtConfig, dcfg: Config) -> Rig {
        let (emu, serial) = EspAtEmu::start(cfg);
        let dev = Arc::new(EspAt::new(serial, StdPlatform::new(), dcfg));
        let weak = Arc::downgrade(&dev);
        emu.set_rx_notify(Some(Arc::new(move || {
            if let Some(d) = weak.upgrade() {
                d.platform().notify();
            }
        })));
        Rig { dev, emu }
    }

    /// A device joined to the AP (the usual start of a test).
    pub fn joined() -> Rig {
        let r = Rig::new(emu_config(), test_driver_config());
        r.dev.net_connect(&params()).expect("net_connect");
        r
    }
}

/// Connect parameters for the simulated AP.
pub fn params() -> ConnectParams<'static> {
    ConnectParams {
        ssid: SSID,
        passphrase: PASS,
        connect_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

/// Run `f` on a thread and fail the test if it takes longer than `limit`
/// (a hang is a failure, not a stuck test run). When the machine allows it
/// (root and the `ip` tool), `f` runs inside a fresh network namespace with
/// only its loopback up, deleted afterwards: the emulator's host sockets and
/// the peers then never meet ports of other programs. Otherwise it runs on
/// the host's loopback.
pub fn bounded<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let ns = netns();
    let name = ns.as_ref().map(|n| n.name().to_string());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || match name {
            Some(n) => {
                support::in_netns(&n, f).unwrap_or_else(|e| panic!("entering namespace {n}: {e}"))
            }
            None => f(),
        }));
        let _ = tx.send(r);
    });
    let r = rx.recv_timeout(limit);
    drop(ns);
    match r {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("{what}: did not finish within {limit:?} (hang)"),
    }
}

/// A fresh network namespace `ndv-espat-<pid>-<n>` with its loopback up
/// (`support::Netns`: deleted on drop; threads still inside keep it alive
/// until they end), or `None` when this machine cannot make one (not root,
/// or no `ip` tool) and the tests run on the host's loopback.
pub fn netns() -> Option<support::Netns> {
    if !support::is_root() || support::find_program("ip").is_none() {
        return None;
    }
    support::Netns::new("espat")
        .map_err(|e| eprintln!("warning: no network namespace, using the host's loopback: {e}"))
        .ok()
}
