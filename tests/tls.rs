//! TLS 1.3 in software (`netdever::tls::SoftTls`) against `openssl s_server
//! -tls1_3 -rev` (every line comes back reversed), on two backends:
//!
//! * `tap`: the full stack (`HostStack`) on a TAP interface inside a fresh
//!   network namespace (kernel side 10.89.0.1/24, dut 10.89.0.2/24), the
//!   servers running inside that namespace. Needs root, /dev/net/tun, `ip`.
//! * `w5500`: the W5500 offload driver on the emulated chip, whose hardwired
//!   sockets are host sockets: chip at 127.0.0.2, servers on 127.0.0.1.
//!   Loopback only, no root needed. The chip's 2 KiB socket buffers make
//!   every TLS record cross in pieces.
//!
//! Certificates are made at test time with the openssl CLI (ECDSA P-256): a
//! test CA and a `tls.test` server certificate it signs, an impostor CA with
//! the same name and its server certificate, a chain through an
//! intermediate CA, and a certificate issued by a leaf.
//!
//! Everything needs `openssl`; missing programs or privileges skip a test
//! with a printed reason, unless `CI=true` or `NETDEVER_REQUIRE_PEERS=1`,
//! which turn them into failures.
#![cfg(all(feature = "std", feature = "tls", feature = "tap"))]

mod support;
#[path = "support/tlsca.rs"]
mod tlsca;

use tlsca::*;

use std::any::Any;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use netdever::net::TcpStream;
use netdever::tls::{MaxFragment, SoftTls, TlsConfig, TlsPool};
use netdever::{
    AddressFamily, Deadline, Error, Events, MsgFlags, Netdever, PollFd, Protocol, Shutdown,
    SockOpt, SockOptName, SockType, Socketer, Sockfd, TlsSupport, TlsTrust,
};
use sha2::{Digest, Sha256};

/// Every test's overall budget.
const BUDGET: Duration = Duration::from_secs(150);

// ---------------------------------------------------------------- certificates

// (The PKI and the s_server peers: tests/support/tlsca.rs.)

// -------------------------------------------------------------------- fixtures

/// A dut behind `SoftTls` and where the four servers listen. Fields drop
/// in order: the device first, then what keeps the servers alive.
struct Env<D> {
    dev: D,
    good: SocketAddr,
    evil: SocketAddr,
    chain: SocketAddr,
    forged: SocketAddr,
    /// [`NAMES`]: many DNS names, a wildcard, IP addresses.
    names: SocketAddr,
    /// [`IP_ONLY`]: IP addresses only.
    ip_only: SocketAddr,
    /// A [`StallProxy`] in front of `good`.
    proxy: SocketAddr,
    stall: Arc<StallCtl>,
    _keep: Box<dyn Any + Send>,
}

impl<D> Drop for Env<D> {
    fn drop(&mut self) {
        self.stall.stop.store(true, Ordering::SeqCst);
    }
}

// ----------------------------------------------------------------- stall proxy

/// Controls a [`start_stall_proxy`].
#[derive(Default)]
struct StallCtl {
    /// Hold the next server→client record after its first bytes for this
    /// many milliseconds (0: pass everything straight on).
    hold_next_ms: AtomicU64,
    stop: AtomicBool,
}

impl StallCtl {
    fn arm(&self, hold: Duration) {
        self.hold_next_ms
            .store(hold.as_millis() as u64, Ordering::SeqCst);
    }
}

/// Read exactly `buf.len()` bytes, giving up when `ctl.stop` is set.
fn read_full(s: &mut std::net::TcpStream, buf: &mut [u8], ctl: &StallCtl) -> bool {
    use std::io::Read;
    let mut got = 0;
    while got < buf.len() {
        if ctl.stop.load(Ordering::SeqCst) {
            return false;
        }
        match s.read(&mut buf[got..]) {
            Ok(0) => return false,
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return false,
        }
    }
    true
}

/// A TCP proxy on `listen` to `upstream` that follows TLS record framing
/// from the server and, when armed, sends only the first 10 bytes of the
/// next record's body, holds the rest for a while, then sends it. Threads
/// stop when `ctl.stop` is set (every wait is bounded by a 200 ms read
/// timeout). Call on a thread inside the namespace the sockets belong to.
fn start_stall_proxy(listen: SocketAddr, upstream: SocketAddr, ctl: Arc<StallCtl>) {
    use std::io::Write;
    let l = std::net::TcpListener::bind(listen).expect("proxy listen");
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !ctl.stop.load(Ordering::SeqCst) {
            let Ok((mut client, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let Ok(mut server) = std::net::TcpStream::connect(upstream) else {
                continue;
            };
            client.set_nonblocking(false).unwrap();
            let step = Some(Duration::from_millis(200));
            client.set_read_timeout(step).unwrap();
            server.set_read_timeout(step).unwrap();
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let ctl_up = ctl.clone();
            std::thread::spawn(move || {
                use std::io::Read;
                let mut buf = [0u8; 16384];
                while !ctl_up.stop.load(Ordering::SeqCst) {
                    match c2.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if s2.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => break,
                    }
                }
                let _ = s2.shutdown(std::net::Shutdown::Write);
            });
            let ctl_down = ctl.clone();
            std::thread::spawn(move || {
                let mut header = [0u8; 5];
                let mut body = vec![0u8; 1 << 16];
                while read_full(&mut server, &mut header, &ctl_down) {
                    let len = u16::from_be_bytes([header[3], header[4]]) as usize;
                    if !read_full(&mut server, &mut body[..len], &ctl_down) {
                        break;
                    }
                    let hold = ctl_down.hold_next_ms.swap(0, Ordering::SeqCst);
                    let cut = if hold > 0 { len.min(10) } else { len };
                    if client.write_all(&header).is_err() || client.write_all(&body[..cut]).is_err()
                    {
                        break;
                    }
                    if hold > 0 {
                        let end = std::time::Instant::now() + Duration::from_millis(hold);
                        while std::time::Instant::now() < end
                            && !ctl_down.stop.load(Ordering::SeqCst)
                        {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                    if client.write_all(&body[cut..len]).is_err() {
                        break;
                    }
                }
                let _ = client.shutdown(std::net::Shutdown::Both);
            });
        }
    });
}

/// Run `case` on the fixture `make` builds (None: skipped), bounded by [`BUDGET`].
fn run<D: Send + 'static>(test: &str, make: fn(&str) -> Option<Env<D>>, case: fn(&Env<D>)) {
    let Some(env) = make(test) else {
        return;
    };
    support::with_timeout(test, BUDGET, move || case(&env));
}

/// Instantiate every case for one fixture.
macro_rules! tls_cases {
    ($fixture:path) => {
        tls_cases!(@ $fixture;
            raw_socketer_request_response,
            tcp_stream_connect_proto,
            untrusted_chain_is_rejected,
            wrong_host_name_is_rejected,
            names_follow_rfc6125,
            validity_dates_follow_the_clock,
            insecure_option_accepts_untrusted_server,
            one_mib_each_way,
            misuse,
            intermediate_chain_and_forged_leaf,
            small_fragments,
            record_stalls_and_the_grace,
        );
    };
    (@ $fixture:path; $($case:ident,)*) => {
        $(
            #[test]
            fn $case() {
                let name = concat!(module_path!(), "::", stringify!($case));
                super::run(name, $fixture, super::$case);
            }
        )*
    };
}

#[cfg(feature = "full-stack")]
mod tap_fixture {
    use super::*;
    use netdever::phy::tap::TapLink;
    use netdever::stack::host::HostStack;
    use netdever::stack::StackConfig;
    use netdever::{ConnectParams, IpConfig, IpMode, Netlinker};
    use support::Netns;

    const TAP: &str = "ndvtls0";
    const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 1);
    const DUT_IP: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 2);

    /// The full stack on a TAP in a fresh namespace; servers on 10.89.0.1.
    pub fn fixture(test: &str) -> Option<Env<HostStack>> {
        if let Some(missing) = support::netns_missing() {
            support::require(test, &missing, false).ok()?;
        }
        let have = support::find_program("openssl").is_some();
        support::require(test, "the `openssl` program", have).ok()?;
        pki();
        let ns = Netns::new("tls").expect("create network namespace");
        let tap = ns
            .run(|| TapLink::open(TAP))
            .expect("enter the namespace")
            .expect("open the TAP inside the namespace");
        ns.ip(&["addr", "add", &format!("{SERVER_IP}/24"), "dev", TAP])
            .expect("address the kernel side");
        ns.ip(&["link", "set", TAP, "up"]).expect("set the TAP up");
        let mut at = Vec::new();
        for (i, s) in [GOOD, EVIL, CHAIN, FORGED, NAMES, IP_ONLY]
            .iter()
            .enumerate()
        {
            let addr = SocketAddr::new(SERVER_IP.into(), 4433 + i as u16);
            let args = server_args(s, &addr.to_string());
            let args: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
            let (_pid, out, _) = ns
                .spawn(
                    ns.command(&args)
                        .stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(server_log(&format!("{}-{}", ns.name(), addr.port()))),
                )
                .expect("spawn openssl s_server");
            assert!(
                wait_accept(out.expect("piped")),
                "openssl s_server on {addr} did not start"
            );
            at.push(addr);
        }
        let stall = Arc::new(StallCtl::default());
        let proxy = SocketAddr::new(SERVER_IP.into(), 4443);
        let (ctl, good) = (stall.clone(), at[0]);
        ns.run(move || start_stall_proxy(proxy, good, ctl))
            .expect("proxy in the namespace");
        let ip = IpMode::Static(IpConfig::new(DUT_IP, 24));
        let dev = HostStack::new(
            tap,
            StackConfig {
                ip: ip.clone(),
                ..Default::default()
            },
        )
        .expect("HostStack on the TAP");
        dev.net_connect(&ConnectParams {
            ip,
            ..Default::default()
        })
        .expect("net_connect");
        let up = support::wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
            dev.addr().is_ok()
        });
        assert!(up, "no address");
        Some(Env {
            dev,
            good: at[0],
            evil: at[1],
            chain: at[2],
            forged: at[3],
            names: at[4],
            ip_only: at[5],
            proxy,
            stall,
            _keep: Box::new(ns),
        })
    }
}

#[cfg(feature = "full-stack")]
mod tap {
    tls_cases!(super::tap_fixture::fixture);
}

#[cfg(feature = "w5500")]
mod w5500_fixture {
    use super::*;
    use netdever::offload::w5500::{W5500Config, W5500Offload};
    use netdever::platform::StdPlatform;
    use netdever::IpConfig;
    use netdever_emu::w5500::{W5500Emu, W5500Spi};

    pub type Offload = Arc<W5500Offload<W5500Spi, StdPlatform>>;

    /// The W5500 offload on the emulated chip at 127.0.0.2; servers on 127.0.0.1.
    pub fn fixture(test: &str) -> Option<Env<Offload>> {
        let have = support::find_program("openssl").is_some();
        support::require(test, "the `openssl` program", have).ok()?;
        pki();
        let mut servers = LoopbackServers::default();
        let at: Vec<SocketAddr> = [GOOD, EVIL, CHAIN, FORGED, NAMES, IP_ONLY]
            .iter()
            .map(|s| servers.spawn(s))
            .collect();
        let stall = Arc::new(StallCtl::default());
        let proxy = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        start_stall_proxy(proxy, at[0], stall.clone());
        let emu = W5500Emu::new();
        let dev = W5500Offload::new(emu.spi(), StdPlatform::new(), W5500Config::default())
            .expect("W5500Offload::new");
        dev.set_addr(IpConfig::new(Ipv4Addr::new(127, 0, 0, 2), 8))
            .expect("set_addr");
        Some(Env {
            dev: Arc::new(dev),
            good: at[0],
            evil: at[1],
            chain: at[2],
            forged: at[3],
            names: at[4],
            ip_only: at[5],
            proxy,
            stall,
            _keep: Box::new((emu, servers)),
        })
    }
}

#[cfg(feature = "w5500")]
mod w5500 {
    tls_cases!(super::w5500_fixture::fixture);
}

// ----------------------------------------------------------------------- cases

/// What the cases need of a backend.
trait Dev: Netdever + Clone + Send + 'static {}
impl<T: Netdever + Clone + Send + 'static> Dev for T {}

type Tls<'p, D, const N: usize> = SoftTls<'p, D, rand_core::OsRng, N>;

fn dl(dev: &impl Socketer, d: Duration) -> Deadline {
    Deadline::after(dev.now(), d)
}

/// Read through '\n' (bounded), returning the line with its newline.
fn read_line(dev: &impl Socketer, fd: Sockfd) -> Vec<u8> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\n") {
        assert!(line.len() < 64 * 1024, "line too long");
        let n = dev
            .recv(fd, &mut b, MsgFlags::NONE, dl(dev, Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("recv: {e:?}"));
        assert_eq!(n, 1, "EOF before the end of a line");
        line.push(b[0]);
    }
    line
}

fn connect_stream<'t, 'p, D: Dev, const N: usize>(
    tls: &'t Tls<'p, D, N>,
    host: Option<&str>,
    at: SocketAddr,
) -> netdever::Result<TcpStream<&'t Tls<'p, D, N>>> {
    TcpStream::connect_proto(
        tls,
        Protocol::Tls,
        host,
        at,
        dl(tls, Duration::from_secs(30)),
    )
}

/// (a) Handshake and request/response through raw `Socketer` calls, with
/// peek, poll on buffered data, the TLS socket's own options, and close.
fn raw_socketer_request_response<D: Dev>(env: &Env<D>) {
    let mut pool = Box::new(TlsPool::<2>::new());
    let tls = SoftTls::with_os_rng(env.dev.clone(), &mut pool, TlsConfig::new(trusted()))
        .expect("SoftTls");
    assert_eq!(tls.capabilities().tls, TlsSupport::Software);
    assert_eq!(env.dev.capabilities().tls, TlsSupport::None);

    let fd = tls
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tls)
        .unwrap();
    assert!(tls.is_tls(fd));
    tls.connect(fd, Some(HOST), env.good, dl(&tls, Duration::from_secs(30)))
        .expect("TLS connect");
    assert_eq!(tls.peer_addr(fd), Ok(env.good));

    // Nothing to read yet: non-blocking and timed receives give up.
    let mut buf = [0u8; 64];
    assert_eq!(
        tls.recv(fd, &mut buf, MsgFlags::DONTWAIT, Deadline::Never),
        Err(Error::WouldBlock)
    );
    tls.set_sock_opt(fd, SockOpt::NonBlocking(true)).unwrap();
    assert_eq!(
        tls.recv(fd, &mut buf, MsgFlags::NONE, Deadline::Never),
        Err(Error::WouldBlock)
    );
    tls.set_sock_opt(fd, SockOpt::NonBlocking(false)).unwrap();
    let t = Some(Duration::from_millis(200));
    tls.set_sock_opt(fd, SockOpt::RecvTimeout(t)).unwrap();
    assert_eq!(
        tls.get_sock_opt(fd, SockOptName::RecvTimeout),
        Ok(SockOpt::RecvTimeout(t))
    );
    assert_eq!(
        tls.recv(fd, &mut buf, MsgFlags::NONE, Deadline::Never),
        Err(Error::Timeout)
    );
    tls.set_sock_opt(fd, SockOpt::RecvTimeout(None)).unwrap();
    // Other options pass through to the TCP socket.
    tls.set_sock_opt(fd, SockOpt::KeepAlive(true)).unwrap();
    assert_eq!(
        tls.get_sock_opt(fd, SockOptName::KeepAlive),
        Ok(SockOpt::KeepAlive(true))
    );

    let d = || dl(&tls, Duration::from_secs(10));
    assert_eq!(tls.send(fd, b"hello tls\n", MsgFlags::NONE, d()), Ok(10));
    assert_eq!(read_line(&tls, fd), b"slt olleh\n");

    // One record "abcdef\n" comes back: after a 1-byte read the rest sits
    // decrypted in the TLS buffer, and poll must say so at once.
    tls.send(fd, b"fedcba\n", MsgFlags::NONE, d()).unwrap();
    let mut p = [PollFd::new(fd, Events::READABLE)];
    assert_eq!(tls.poll(&mut p, d()), Ok(1));
    let mut one = [0u8; 1];
    assert_eq!(tls.recv(fd, &mut one, MsgFlags::NONE, d()), Ok(1));
    assert_eq!(&one, b"a");
    let mut p = [PollFd::new(fd, Events::READABLE)];
    assert_eq!(tls.poll(&mut p, Deadline::At(tls.now())), Ok(1));
    assert!(p[0].revents.contains(Events::READABLE));
    let mut three = [0u8; 3];
    assert_eq!(tls.recv(fd, &mut three, MsgFlags::PEEK, d()), Ok(3));
    assert_eq!(&three, b"bcd");
    assert_eq!(read_line(&tls, fd), b"bcdef\n");
    let mut p = [PollFd::new(fd, Events::READABLE)];
    assert_eq!(tls.poll(&mut p, Deadline::At(tls.now())), Ok(0));

    assert_eq!(
        tls.get_sock_opt(fd, SockOptName::SocketError),
        Ok(SockOpt::SocketError(None))
    );
    tls.close(fd).unwrap();
    assert_eq!(
        tls.send(fd, b"x", MsgFlags::NONE, Deadline::Never),
        Err(Error::InvalidSockfd)
    );
    assert_eq!(tls.free_slots(), 2);
}

/// (b) The std-like layer: `TcpStream::connect_proto(.., Protocol::Tls, ..)`.
fn tcp_stream_connect_proto<D: Dev>(env: &Env<D>) {
    let mut pool = Box::new(TlsPool::<1>::new());
    let tls = SoftTls::with_os_rng(env.dev.clone(), &mut pool, TlsConfig::new(trusted()))
        .expect("SoftTls");
    let s = connect_stream(&tls, Some(HOST), env.good).expect("connect_proto(Tls)");
    for i in 0..5 {
        let line = format!("line number {i}\n");
        s.write_all(line.as_bytes()).unwrap();
        let mut back = vec![0u8; line.len()];
        s.read_exact(&mut back).unwrap();
        let want: Vec<u8> = line.trim_end().bytes().rev().chain(*b"\n").collect();
        assert_eq!(back, want);
    }
    drop(s);
    assert_eq!(
        tls.free_slots(),
        1,
        "the stream's drop closed the TLS socket"
    );
}

/// Connect with `config` as `host` to `at`; the error it must fail with.
fn connect_err<D: Dev>(env: &Env<D>, config: TlsConfig<'_>, host: &str, at: SocketAddr) -> Error {
    let mut pool = Box::new(TlsPool::<1>::new());
    let tls = SoftTls::with_os_rng(env.dev.clone(), &mut pool, config).expect("SoftTls");
    let r = connect_stream(&tls, Some(host), at).map(drop);
    assert_eq!(
        tls.free_slots(),
        1,
        "a failed connect leaves no slot behind"
    );
    match r {
        Ok(()) => panic!("connect to {at} as {host} succeeded"),
        Err(e) => e,
    }
}

/// (c) A chain from a CA we do not trust (even one with the trusted CA's
/// name) is `CertificateInvalid`.
fn untrusted_chain_is_rejected<D: Dev>(env: &Env<D>) {
    let e = connect_err(env, TlsConfig::new(trusted()), HOST, env.evil);
    assert_eq!(e, Error::CertificateInvalid);
}

/// (d) The right chain for another name is `CertificateInvalid`, and so
/// is the server's IP address (the certificate names only `tls.test`).
fn wrong_host_name_is_rejected<D: Dev>(env: &Env<D>) {
    let e = connect_err(env, TlsConfig::new(trusted()), "wrong.test", env.good);
    assert_eq!(e, Error::CertificateInvalid);
    let ip = env.good.ip().to_string();
    let e = connect_err(env, TlsConfig::new(trusted()), &ip, env.good);
    assert_eq!(e, Error::CertificateInvalid);
}

/// Host names and addresses are matched by RFC 6125: every DNS SAN (not
/// only embedded-tls's first three), a leftmost wildcard label, iPAddress
/// SANs for IP literals, the CN only without DNS SANs.
fn names_follow_rfc6125<D: Dev>(env: &Env<D>) {
    let mut pool = Box::new(TlsPool::<1>::new());
    let tls = SoftTls::with_os_rng(env.dev.clone(), &mut pool, TlsConfig::new(trusted()))
        .expect("SoftTls");
    let ip = env.names.ip().to_string();
    for host in ["tls-names.test", "B.Test", "x1.wild.test", "c.test.", &ip] {
        let s = connect_stream(&tls, Some(host), env.names)
            .unwrap_or_else(|e| panic!("{host} is named by the certificate: {e:?}"));
        s.write_all(b"names\n").unwrap();
        let mut back = [0u8; 6];
        s.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"seman\n", "{host}");
    }
    drop(tls);
    for host in [
        "tls-names",
        "wild.test",
        "a.b.wild.test",
        "d.test",
        "127.0.0.3",
    ] {
        let e = connect_err(env, TlsConfig::new(trusted()), host, env.names);
        assert_eq!(e, Error::CertificateInvalid, "{host}");
    }
    let mut pool = Box::new(TlsPool::<1>::new());
    let tls = SoftTls::with_os_rng(env.dev.clone(), &mut pool, TlsConfig::new(trusted()))
        .expect("SoftTls");
    let ip = env.ip_only.ip().to_string();
    connect_stream(&tls, Some(&ip), env.ip_only).expect("an address-only certificate");
    drop(tls);
    let e = connect_err(env, TlsConfig::new(trusted()), HOST, env.ip_only);
    assert_eq!(e, Error::CertificateInvalid);
}

/// Certificates outside their validity dates (by the configured clock) are
/// `CertificateInvalid`; without a clock dates are not checked.
fn validity_dates_follow_the_clock<D: Dev>(env: &Env<D>) {
    let future = TlsConfig::new(trusted()).with_clock(|| Some(4_000_000_000));
    assert_eq!(
        connect_err(env, future, HOST, env.good),
        Error::CertificateInvalid
    );
    let past = TlsConfig::new(trusted()).with_clock(|| Some(1_000_000_000));
    assert_eq!(
        connect_err(env, past, HOST, env.good),
        Error::CertificateInvalid
    );
    let mut pool = Box::new(TlsPool::<1>::new());
    let config = future.without_clock();
    let tls = SoftTls::with_os_rng(env.dev.clone(), &mut pool, config).expect("SoftTls");
    connect_stream(&tls, Some(HOST), env.good).expect("no clock, no date check");
}

/// (e) The explicitly insecure option connects to the untrusted server,
/// with or without a host name.
fn insecure_option_accepts_untrusted_server<D: Dev>(env: &Env<D>) {
    let mut pool = Box::new(TlsPool::<1>::new());
    let tls = SoftTls::with_os_rng(env.dev.clone(), &mut pool, TlsConfig::insecure_no_verify())
        .expect("SoftTls");
    for host in [Some(HOST), None] {
        let s = connect_stream(&tls, host, env.evil).expect("insecure connect");
        s.write_all(b"insecure\n").unwrap();
        let mut back = [0u8; 9];
        s.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"erucesni\n");
    }
}

/// Lines of printable bytes, each `len` long with its newline.
fn lines(count: usize, len: usize, seed: u64) -> Vec<u8> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut v = Vec::with_capacity(count * len);
    for _ in 0..count {
        for _ in 0..len - 1 {
            v.push(alphabet[rng.gen_range(0..alphabet.len())]);
        }
        v.push(b'\n');
    }
    v
}

/// What `s_server -rev` sends back for `data`: every line reversed.
fn reversed_lines(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for line in data.split_inclusive(|&b| b == b'\n') {
        out.extend(line[..line.len() - 1].iter().rev());
        out.push(b'\n');
    }
    out
}

/// (f) 1 MiB each way through TLS, intact (SHA-256), one thread writing
/// while another reads on the same TLS stream.
fn one_mib_each_way<D: Dev>(env: &Env<D>) {
    let mut pool = Box::new(TlsPool::<1>::new());
    let tls = SoftTls::with_os_rng(env.dev.clone(), &mut pool, TlsConfig::new(trusted()))
        .expect("SoftTls");
    let mut s = connect_stream(&tls, Some(HOST), env.good).expect("connect");
    s.set_deadline(Some(tls.now() + Duration::from_secs(120)));
    let data = lines(1024, 1024, 1);
    assert_eq!(data.len(), 1 << 20);
    let want = Sha256::digest(reversed_lines(&data));
    let t = std::time::Instant::now();
    let got = std::thread::scope(|scope| {
        scope.spawn(|| s.write_all(&data).expect("write_all"));
        let mut back = vec![0u8; data.len()];
        s.read_exact(&mut back).expect("read_exact");
        Sha256::digest(&back)
    });
    eprintln!("1 MiB each way through TLS in {:?}", t.elapsed());
    assert_eq!(got, want, "data came back changed");
}

/// (g) Misuse: no host name, calls before connect, a full pool, and what a
/// TLS socket does not do.
fn misuse<D: Dev>(env: &Env<D>) {
    let mut pool = Box::new(TlsPool::<2>::new());
    let tls = SoftTls::with_os_rng(env.dev.clone(), &mut pool, TlsConfig::new(trusted()))
        .expect("SoftTls");
    let d = || dl(&tls, Duration::from_secs(30));
    let stream = || tls.socket(AddressFamily::Inet, SockType::Stream, Protocol::Tls);
    // set_tls_trust: the same call as on firmware-TLS backends works when
    // it names the trust SoftTls was built with, and nothing else.
    assert_eq!(tls.set_tls_trust(TlsTrust::Cas(trusted())), Ok(()));
    let other = [&trusted()[0][1..]];
    assert_eq!(
        tls.set_tls_trust(TlsTrust::Cas(&other)),
        Err(Error::NotSupported)
    );
    assert_eq!(
        tls.set_tls_trust(TlsTrust::DangerAcceptAnyCertificate),
        Err(Error::NotSupported)
    );
    assert_eq!(
        env.dev.set_tls_trust(TlsTrust::DangerAcceptAnyCertificate),
        Err(Error::NotSupported),
        "a backend without TLS of its own"
    );
    assert_eq!(
        tls.socket(AddressFamily::Inet, SockType::Dgram, Protocol::Tls),
        Err(Error::TypeNotSupported)
    );
    let a = stream().unwrap();
    let b = stream().unwrap();
    assert_eq!(stream(), Err(Error::NoMoreSockets), "pool of 2 is full");
    // TCP sockets do not need the pool and pass straight through.
    let t = tls
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .unwrap();
    assert!(!tls.is_tls(t));
    tls.connect(t, None, env.good, d())
        .expect("plain TCP connect");
    tls.close(t).unwrap();

    let mut buf = [0u8; 8];
    assert_eq!(
        tls.send(a, b"x", MsgFlags::NONE, d()),
        Err(Error::NotConnected)
    );
    assert_eq!(
        tls.recv(a, &mut buf, MsgFlags::NONE, d()),
        Err(Error::NotConnected)
    );
    assert_eq!(
        tls.connect(a, None, env.good, d()),
        Err(Error::InvalidArgument),
        "verification needs a host name"
    );
    let long = "x".repeat(65);
    assert_eq!(
        tls.connect(a, Some(&long), env.good, d()),
        Err(Error::InvalidArgument)
    );
    assert_eq!(tls.listen(a, 1), Err(Error::NotSupported));
    tls.connect(a, Some(HOST), env.good, d()).unwrap();
    assert_eq!(
        tls.connect(a, Some(HOST), env.good, d()),
        Err(Error::AlreadyConnected)
    );
    assert_eq!(
        tls.send_to(a, b"x", MsgFlags::NONE, env.evil, d()),
        Err(Error::AlreadyConnected)
    );
    assert_eq!(
        tls.recv(a, &mut [], MsgFlags::NONE, d()),
        Err(Error::InvalidArgument)
    );
    assert_eq!(tls.shutdown(a, Shutdown::Write), Err(Error::NotSupported));
    tls.send_to(a, b"ok\n", MsgFlags::NONE, env.good, d())
        .unwrap();
    assert_eq!(read_line(&tls, a), b"ko\n");
    tls.shutdown(a, Shutdown::Both).unwrap();
    assert_eq!(tls.recv(a, &mut buf, MsgFlags::NONE, d()), Ok(0));
    assert_eq!(
        tls.send(a, b"x", MsgFlags::NONE, d()),
        Err(Error::BrokenPipe)
    );

    tls.close(b).unwrap();
    let c = stream().expect("a slot is free again");
    assert_ne!(c, b);
    tls.close(a).unwrap();
    tls.close(c).unwrap();
    assert_eq!(tls.close(c), Err(Error::InvalidSockfd));
    assert_eq!(tls.free_slots(), 2);
}

/// A chain through an intermediate CA verifies against the root alone; a
/// certificate issued by a leaf (not a CA) does not.
fn intermediate_chain_and_forged_leaf<D: Dev>(env: &Env<D>) {
    {
        let mut pool = Box::new(TlsPool::<1>::new());
        let tls = SoftTls::with_os_rng(env.dev.clone(), &mut pool, TlsConfig::new(trusted()))
            .expect("SoftTls");
        let s = connect_stream(&tls, Some(HOST), env.chain).expect("chain via intermediate");
        s.write_all(b"chain\n").unwrap();
        let mut back = [0u8; 6];
        s.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"niahc\n");
    }
    let e = connect_err(env, TlsConfig::new(trusted()), HOST, env.forged);
    assert_eq!(e, Error::CertificateInvalid);
}

/// Small records (RFC 6066 max_fragment_length = 1 KiB): a pool with
/// 1280-byte read buffers carries 64 KiB each way, driven by poll and
/// non-blocking receives.
fn small_fragments<D: Dev>(env: &Env<D>) {
    let config = TlsConfig::new(trusted()).with_max_fragment(MaxFragment::B1024);
    assert_eq!(config.read_buffer_needed(), 1280);
    let mut small = Box::new(TlsPool::<1, 1024, 1157>::new());
    assert!(
        SoftTls::with_os_rng(env.dev.clone(), &mut small, config).is_err(),
        "a read buffer below read_buffer_needed is refused"
    );
    let mut pool = Box::new(TlsPool::<1, 1280, 1157>::new());
    let tls = SoftTls::with_os_rng(env.dev.clone(), &mut pool, config).expect("SoftTls");
    let fd = tls
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tls)
        .unwrap();
    tls.connect(fd, Some(HOST), env.good, dl(&tls, Duration::from_secs(30)))
        .expect("connect with max_fragment_length");
    let data = lines(256, 256, 2);
    let want = reversed_lines(&data);
    let (mut sent, mut got) = (0, Vec::new());
    let mut buf = [0u8; 4096];
    let end = tls.now() + Duration::from_secs(90);
    while got.len() < want.len() {
        assert!(tls.now() < end, "small_fragments: out of time");
        if sent < data.len() {
            let n = tls
                .send(fd, &data[sent..], MsgFlags::NONE, Deadline::At(end))
                .unwrap();
            assert!(n <= 1024, "records carry at most 1 KiB");
            sent += n;
        }
        let mut p = [PollFd::new(fd, Events::READABLE)];
        let wait = if sent < data.len() {
            Deadline::At(tls.now())
        } else {
            Deadline::At(end)
        };
        if tls.poll(&mut p, wait).unwrap() > 0 {
            match tls.recv(fd, &mut buf, MsgFlags::DONTWAIT, Deadline::Never) {
                Ok(n) => {
                    assert!(n > 0, "unexpected EOF");
                    got.extend_from_slice(&buf[..n]);
                }
                Err(Error::WouldBlock) => {}
                Err(e) => panic!("recv: {e:?}"),
            }
        }
    }
    assert_eq!(Sha256::digest(&got), Sha256::digest(&want));
    tls.close(fd).unwrap();
}

/// A record that stops half-way: a stall shorter than the record grace is
/// waited out even past the call's deadline (the stream must not be cut
/// inside a record); a longer one tears the connection: that receive times
/// out, later calls are `ConnectionAborted`, poll and `SO_ERROR` say so.
fn record_stalls_and_the_grace<D: Dev>(env: &Env<D>) {
    let grace = Duration::from_millis(1500);
    let config = TlsConfig::new(trusted()).with_record_grace(grace);
    let mut pool = Box::new(TlsPool::<1>::new());
    let tls = SoftTls::with_os_rng(env.dev.clone(), &mut pool, config).expect("SoftTls");
    let fd = tls
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tls)
        .unwrap();
    let long = || dl(&tls, Duration::from_secs(10));
    tls.connect(fd, Some(HOST), env.proxy, long())
        .expect("connect through the proxy");
    tls.send(fd, b"hello\n", MsgFlags::NONE, long()).unwrap();
    assert_eq!(read_line(&tls, fd), b"olleh\n");

    // Stall 500 ms inside the record; the receive allows 100 ms.
    let readable = |tls: &Tls<'_, D, 1>| {
        let mut p = [PollFd::new(fd, Events::READABLE)];
        assert_eq!(tls.poll(&mut p, long()), Ok(1), "the record starts");
    };
    env.stall.arm(Duration::from_millis(500));
    tls.send(fd, b"abc\n", MsgFlags::NONE, long()).unwrap();
    readable(&tls);
    let t = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tls
        .recv(
            fd,
            &mut buf,
            MsgFlags::NONE,
            dl(&tls, Duration::from_millis(100)),
        )
        .expect("a stall within the grace is waited out");
    assert!(t.elapsed() >= Duration::from_millis(300), "it did wait");
    let mut line = buf[..n].to_vec();
    if !line.ends_with(b"\n") {
        line.extend(read_line(&tls, fd));
    }
    assert_eq!(line, b"cba\n");

    // Stall 5 s: longer than the grace.
    env.stall.arm(Duration::from_secs(5));
    tls.send(fd, b"xyz\n", MsgFlags::NONE, long()).unwrap();
    readable(&tls);
    let t = std::time::Instant::now();
    assert_eq!(
        tls.recv(
            fd,
            &mut buf,
            MsgFlags::NONE,
            dl(&tls, Duration::from_millis(100))
        ),
        Err(Error::Timeout)
    );
    let waited = t.elapsed();
    assert!(
        waited >= grace - Duration::from_millis(100) && waited < Duration::from_secs(4),
        "gave up after the grace, not the deadline or the stall: {waited:?}"
    );
    assert_eq!(
        tls.recv(fd, &mut buf, MsgFlags::NONE, long()),
        Err(Error::ConnectionAborted)
    );
    assert_eq!(
        tls.send(fd, b"x", MsgFlags::NONE, long()),
        Err(Error::ConnectionAborted)
    );
    let mut p = [PollFd::new(fd, Events::READABLE)];
    assert_eq!(tls.poll(&mut p, Deadline::At(tls.now())), Ok(1));
    assert!(p[0].revents.contains(Events::ERROR));
    assert_eq!(
        tls.get_sock_opt(fd, SockOptName::SocketError),
        Ok(SockOpt::SocketError(Some(Error::ConnectionAborted)))
    );
    tls.close(fd).unwrap();
    assert_eq!(tls.free_slots(), 1);
}
