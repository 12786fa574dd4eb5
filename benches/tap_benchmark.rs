//! TCP throughput over a Linux TAP interface, in the shape of smoltcp's
//! `examples/benchmark.rs`: the device listens, Linux connects, and
//!
//! * **reader** mode: Linux writes, the device reads (port 1234);
//! * **writer** mode: the device writes, Linux reads (port 1235);
//!
//! each with (a) raw smoltcp (one thread polling one `Interface` over
//! `LinkDevice<TapLink>`, 64 KiB socket buffers) and (b) the Netdever stack
//! (`HostStack` over the same `TapLink`, 64 KiB socket buffers, blocking
//! `send`/`recv`). The kernel-to-kernel figure over 127.0.0.1 in the same
//! namespace is printed as a reference.
//!
//! Everything happens inside a network namespace this program creates
//! (`ndv-bench-<pid>`) and deletes at the end, also on panic: the TAP
//! interface, its addresses (kernel 10.99.0.1/24, device 10.99.0.2/24) and
//! every socket. Needs root and /dev/net/tun; without them it says why and
//! exits 0 (1 when `CI=true`).
//!
//! `cargo bench --bench tap_benchmark [-- --mib N]` (default 256 MiB per run)
#[path = "common/mod.rs"]
mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netdever::phy::tap::TapLink;
use netdever::phy::Link;
use netdever::stack::host::HostStack;
use netdever::stack::StackConfig;
use netdever::{
    AddressFamily, ConnectParams, Deadline, IpConfig, IpMode, MsgFlags, Netlinker, Protocol,
    SockType, Socketer,
};

use common::{mb_per_s, RawEnd, TCP_BUFFER};

const KERNEL_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const DEVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const TAP_NAME: &str = "ndvbench0";
const READER_PORT: u16 = 1234;
const WRITER_PORT: u16 = 1235;
/// Bound on one run.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// Bound on the whole program.
const TOTAL_LIMIT: Duration = Duration::from_secs(600);
const CHUNK: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Linux writes, the device reads.
    Reader,
    /// The device writes, Linux reads.
    Writer,
}

impl Mode {
    fn port(self) -> u16 {
        match self {
            Mode::Reader => READER_PORT,
            Mode::Writer => WRITER_PORT,
        }
    }
    fn label(self) -> &'static str {
        match self {
            Mode::Reader => "reader (Linux -> device)",
            Mode::Writer => "writer (device -> Linux)",
        }
    }
}

/// Exit early without failing, unless CI insists on running.
fn skip(why: &str) -> ! {
    println!("tap_benchmark: skipped: {why}");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        eprintln!("tap_benchmark: CI=true, so a skipped benchmark is a failure");
        std::process::exit(1);
    }
    std::process::exit(0);
}

fn ip_cmd(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace that exists while this value does.
struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    fn create() -> Result<Netns, String> {
        let name = format!("ndv-bench-{}", std::process::id());
        ip_cmd(&["netns", "add", &name])?;
        let ns = Netns {
            path: Path::new("/var/run/netns").join(&name),
            name,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME ARGS...`
    fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip_cmd(&all)
    }

    /// Run `f` on a new thread that has entered the namespace (network
    /// namespaces are per thread).
    fn spawn<R: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce() -> Result<R, String> + Send + 'static,
    ) -> JoinHandle<Result<R, String>> {
        let path = self.path.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                enter(&path)?;
                f()
            })
            .expect("spawn thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip_cmd(&["netns", "del", &self.name]) {
            eprintln!("tap_benchmark: deleting namespace {}: {e}", self.name);
        }
    }
}

/// Move the calling thread into the namespace at `path`.
fn enter(path: &Path) -> Result<(), String> {
    let f = File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    // SAFETY: `f` is an open namespace file; setns only changes the calling
    // thread's network namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn join<R>(h: JoinHandle<Result<R, String>>) -> Result<R, String> {
    h.join().unwrap_or_else(|_| Err("thread panicked".into()))
}

/// Linux side of reader mode: connect and write `amount` bytes.
fn linux_write(port: u16, amount: u64) -> Result<(u64, Duration), String> {
    let mut s = connect(port)?;
    let buf = vec![0x5au8; CHUNK];
    let t = Instant::now();
    let mut sent = 0u64;
    while sent < amount {
        let n = (amount - sent).min(CHUNK as u64) as usize;
        s.write_all(&buf[..n])
            .map_err(|e| format!("linux write after {sent}: {e}"))?;
        sent += n as u64;
    }
    let _ = s.shutdown(Shutdown::Write);
    // Wait for the device to close so the data has surely gone out.
    let mut b = [0u8; 64];
    let _ = s.read(&mut b);
    Ok((sent, t.elapsed()))
}

/// Linux side of writer mode: connect and read `amount` bytes.
fn linux_read(port: u16, amount: u64) -> Result<(u64, Duration), String> {
    let mut s = connect(port)?;
    let mut buf = vec![0u8; CHUNK];
    let t = Instant::now();
    let mut got = 0u64;
    while got < amount {
        match s.read(&mut buf) {
            Ok(0) => return Err(format!("linux read: EOF after {got} of {amount}")),
            Ok(n) => got += n as u64,
            Err(e) => return Err(format!("linux read after {got}: {e}")),
        }
    }
    Ok((got, t.elapsed()))
}

fn connect(port: u16) -> Result<TcpStream, String> {
    let addr = SocketAddr::from((DEVICE_IP, port));
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => {
                s.set_read_timeout(Some(RUN_LIMIT))
                    .map_err(|e| e.to_string())?;
                s.set_write_timeout(Some(RUN_LIMIT))
                    .map_err(|e| e.to_string())?;
                return Ok(s);
            }
            Err(e) if Instant::now() >= until => return Err(format!("connecting to {addr}: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Raw smoltcp on `link`, one mode. Returns the link and MB/s.
fn raw_run(ns: &Netns, link: TapLink, mode: Mode, amount: u64) -> (TapLink, Result<f64, String>) {
    let signal = link.rx_signal().expect("TAP rx signal");
    let mut end = RawEnd::new(link, DEVICE_IP, 24);
    end.tcp().listen(mode.port()).expect("listen");
    let linux_done = Arc::new(AtomicBool::new(false));
    let flag = linux_done.clone();
    let linux = ns.spawn("linux", move || {
        let r = match mode {
            Mode::Reader => linux_write(mode.port(), amount),
            Mode::Writer => linux_read(mode.port(), amount),
        };
        flag.store(true, Ordering::Release);
        r
    });

    let data = vec![0xa5u8; TCP_BUFFER];
    let mut sink = vec![0u8; TCP_BUFFER];
    let until = Instant::now() + RUN_LIMIT;
    let mut start: Option<Instant> = None;
    let mut moved = 0u64;
    let mut device_time = None;
    let r = loop {
        end.poll();
        let s = end.tcp();
        let mut progress = false;
        if start.is_none() && s.may_recv() {
            start = Some(Instant::now());
        }
        match mode {
            Mode::Reader => {
                while s.can_recv() {
                    let n = s.recv_slice(&mut sink).expect("recv");
                    moved += n as u64;
                    progress |= n > 0;
                }
                if moved >= amount && device_time.is_none() {
                    device_time = start.map(|t| t.elapsed());
                    s.close();
                }
            }
            Mode::Writer => {
                if moved < amount && s.can_send() {
                    let n = s
                        .send_slice(&data[..(amount - moved).min(TCP_BUFFER as u64) as usize])
                        .expect("send");
                    moved += n as u64;
                    progress |= n > 0;
                    if moved >= amount {
                        s.close();
                    }
                }
            }
        }
        if linux_done.load(Ordering::Acquire) && (mode == Mode::Writer || device_time.is_some()) {
            break Ok(());
        }
        if Instant::now() >= until {
            break Err(format!(
                "raw smoltcp {}: not done within {} s ({moved} of {amount} bytes)",
                mode.label(),
                RUN_LIMIT.as_secs()
            ));
        }
        if !progress {
            let d = end.poll_delay().unwrap_or(Duration::from_millis(10));
            if !d.is_zero() {
                signal.wait(Some(d.min(Duration::from_millis(10))));
            }
        }
    };
    // Let the connection finish closing so the next run starts clean.
    let close_until = Instant::now() + Duration::from_millis(500);
    while end.tcp().is_active() && Instant::now() < close_until {
        end.poll();
        let d = end.poll_delay().unwrap_or(Duration::from_millis(10));
        signal.wait(Some(d.min(Duration::from_millis(10))));
    }
    end.tcp().abort();
    end.poll();
    let linux = join(linux);
    let link = end.into_link();
    let r = r.and_then(|()| {
        let (bytes, linux_time) = linux?;
        match mode {
            Mode::Reader => Ok(mb_per_s(moved, device_time.expect("done"))),
            Mode::Writer => Ok(mb_per_s(bytes, linux_time)),
        }
    });
    (link, r)
}

/// The Netdever stack on `link`, both modes. Returns MB/s per mode.
fn netdever_runs(
    ns: &Netns,
    link: TapLink,
    amount: u64,
) -> Result<[Result<f64, String>; 2], String> {
    let config = StackConfig {
        tcp_rx_buffer: TCP_BUFFER,
        tcp_tx_buffer: TCP_BUFFER,
        ip: IpMode::Static(IpConfig::new(DEVICE_IP, 24)),
        ..StackConfig::default()
    };
    let dev = HostStack::new(link, config).map_err(|e| format!("netdever stack: {e}"))?;
    dev.net_connect(&ConnectParams {
        ip: IpMode::Keep,
        connect_timeout: Duration::from_secs(5),
        ..ConnectParams::default()
    })
    .map_err(|e| format!("netdever net_connect: {e}"))?;
    Ok([Mode::Reader, Mode::Writer].map(|m| netdever_run(ns, &dev, m, amount)))
}

fn netdever_run(ns: &Netns, dev: &HostStack, mode: Mode, amount: u64) -> Result<f64, String> {
    let e = |what: &'static str| move |err: netdever::Error| format!("netdever {what}: {err}");
    let l = dev
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .map_err(e("socket"))?;
    dev.bind(l, SocketAddr::from((Ipv4Addr::UNSPECIFIED, mode.port())))
        .map_err(e("bind"))?;
    dev.listen(l, 1).map_err(e("listen"))?;
    let linux = ns.spawn("linux", move || match mode {
        Mode::Reader => linux_write(mode.port(), amount),
        Mode::Writer => linux_read(mode.port(), amount),
    });
    let deadline = Deadline::after(dev.now(), RUN_LIMIT);
    let accepted = dev.accept(l, deadline);
    let _ = dev.close(l);
    let (c, _) = accepted.map_err(e("accept"))?;
    let start = Instant::now();
    let mut moved = 0u64;
    let r: Result<(), String> = match mode {
        Mode::Reader => {
            let mut buf = vec![0u8; TCP_BUFFER];
            loop {
                if moved >= amount {
                    break Ok(());
                }
                match dev.recv(c, &mut buf, MsgFlags::NONE, deadline) {
                    Ok(0) => break Err(format!("netdever reader: EOF after {moved}")),
                    Ok(n) => moved += n as u64,
                    Err(err) => break Err(format!("netdever reader: recv after {moved}: {err}")),
                }
            }
        }
        Mode::Writer => {
            let data = vec![0xa5u8; TCP_BUFFER];
            loop {
                if moved >= amount {
                    break Ok(());
                }
                let n = (amount - moved).min(TCP_BUFFER as u64) as usize;
                match dev.send(c, &data[..n], MsgFlags::NONE, deadline) {
                    Ok(k) => moved += k as u64,
                    Err(err) => break Err(format!("netdever writer: send after {moved}: {err}")),
                }
            }
        }
    };
    let device_time = start.elapsed();
    let _ = dev.close(c);
    let linux = join(linux);
    r?;
    let (bytes, linux_time) = linux?;
    Ok(match mode {
        Mode::Reader => mb_per_s(moved, device_time),
        Mode::Writer => mb_per_s(bytes, linux_time),
    })
}

/// Kernel to kernel over 127.0.0.1 inside the namespace.
fn loopback_run(ns: &Netns, amount: u64) -> Result<f64, String> {
    let listener = ns.spawn("lo-listen", || {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("loopback bind: {e}"))
    });
    let listener = join(listener)?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("loopback addr: {e}"))?
        .port();
    let writer = ns.spawn("lo-writer", move || {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .map_err(|e| format!("loopback connect: {e}"))?;
        s.set_write_timeout(Some(RUN_LIMIT))
            .map_err(|e| e.to_string())?;
        let buf = vec![0x5au8; CHUNK];
        let mut sent = 0u64;
        while sent < amount {
            let n = (amount - sent).min(CHUNK as u64) as usize;
            s.write_all(&buf[..n])
                .map_err(|e| format!("loopback write: {e}"))?;
            sent += n as u64;
        }
        Ok(())
    });
    let (mut s, _) = listener
        .accept()
        .map_err(|e| format!("loopback accept: {e}"))?;
    s.set_read_timeout(Some(RUN_LIMIT))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; CHUNK];
    let t = Instant::now();
    let mut got = 0u64;
    while got < amount {
        match s.read(&mut buf) {
            Ok(0) => return Err(format!("loopback: EOF after {got}")),
            Ok(n) => got += n as u64,
            Err(e) => return Err(format!("loopback read: {e}")),
        }
    }
    let el = t.elapsed();
    join(writer)?;
    Ok(mb_per_s(got, el))
}

fn fmt(r: &Result<f64, String>) -> String {
    match r {
        Ok(v) => format!("{v:.1} MB/s"),
        Err(_) => "FAIL".into(),
    }
}

fn main() {
    // cargo test --benches runs bench binaries without --bench: stay small.
    let bench = common::bench_mode();
    let mut mib: u64 = if bench { 256 } else { 16 };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mib" => {
                mib = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&v| v > 0)
                    .unwrap_or_else(|| {
                        eprintln!("--mib needs a positive number");
                        std::process::exit(2)
                    })
            }
            "-h" | "--help" => {
                println!("tap_benchmark [--mib N]: TCP over a TAP device in a private network namespace, raw smoltcp vs netdever (default 256 MiB per run)");
                return;
            }
            _ => {} // cargo's --bench and friends
        }
    }
    let amount = mib << 20;

    // SAFETY: plain syscall without arguments.
    if unsafe { libc::geteuid() } != 0 {
        skip("needs root (to create a network namespace and a TAP device)");
    }
    if !Path::new("/dev/net/tun").exists() {
        skip("/dev/net/tun is missing");
    }
    if Command::new("ip").arg("-V").output().is_err() {
        skip("the `ip` tool (iproute2) is missing");
    }
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(e) => skip(&format!("cannot create a network namespace: {e}")),
    };
    // A bounded run: if something hangs, delete the namespace and leave.
    let ns_name = ns.name.clone();
    std::thread::spawn(move || {
        std::thread::sleep(TOTAL_LIMIT);
        eprintln!(
            "tap_benchmark: still running after {} s, giving up",
            TOTAL_LIMIT.as_secs()
        );
        let _ = ip_cmd(&["netns", "del", &ns_name]);
        std::process::exit(1);
    });

    let code = match run(&ns, amount) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("tap_benchmark: {e}");
            1
        }
    };
    drop(ns);
    std::process::exit(code);
}

/// Every measurement; `Ok(false)` if one of them failed.
fn run(ns: &Netns, amount: u64) -> Result<bool, String> {
    let tap = ns.spawn("tap-open", || {
        TapLink::open(TAP_NAME).map_err(|e| format!("opening TAP {TAP_NAME}: {e}"))
    });
    let tap = join(tap)?;
    let kernel = format!("{KERNEL_IP}/24");
    ns.ip(&["addr", "add", &kernel, "dev", TAP_NAME])?;
    ns.ip(&["link", "set", TAP_NAME, "up"])?;

    println!(
        "TAP benchmark: {} MiB per run, 64 KiB device socket buffers; namespace {}, {TAP_NAME}: kernel {KERNEL_IP}/24, device {DEVICE_IP}/24",
        amount >> 20,
        ns.name
    );
    let (tap, raw_reader) = raw_run(ns, tap, Mode::Reader, amount);
    let (tap, raw_writer) = raw_run(ns, tap, Mode::Writer, amount);
    let [ndv_reader, ndv_writer] = netdever_runs(ns, tap, amount)?;
    let lo = loopback_run(ns, amount);

    let rows = [
        (Mode::Reader, &raw_reader, &ndv_reader),
        (Mode::Writer, &raw_writer, &ndv_writer),
    ];
    println!();
    println!(
        "| {:<24} | {:>14} | {:>14} | {:>12} |",
        "direction", "raw smoltcp", "netdever", "netdever/raw"
    );
    println!("|{:-<26}|{:->15}:|{:->15}:|{:->13}:|", "", "", "", "");
    for (mode, raw, ndv) in rows {
        let ratio = match (raw, ndv) {
            (Ok(r), Ok(n)) => format!("{:.2}", n / r),
            _ => "-".into(),
        };
        println!(
            "| {:<24} | {:>14} | {:>14} | {:>12} |",
            mode.label(),
            fmt(raw),
            fmt(ndv),
            ratio
        );
    }
    println!(
        "\nreference, kernel to kernel over 127.0.0.1 in the namespace: {}",
        fmt(&lo)
    );
    let mut ok = true;
    for (what, r) in [
        ("raw smoltcp reader", &raw_reader),
        ("raw smoltcp writer", &raw_writer),
        ("netdever reader", &ndv_reader),
        ("netdever writer", &ndv_writer),
        ("kernel loopback", &lo),
    ] {
        if let Err(e) = r {
            println!("{what}: FAILED: {e}");
            ok = false;
        }
    }
    Ok(ok)
}
