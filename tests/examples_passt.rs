//! `PasstLink` against the real passt (Debian package `passt`): our
//! `HostStack` is a guest behind passt's userspace gateway.
//!
//! * `dhcp_gateway_and_forward` (no root needed): the stack gets its lease
//!   from passt's DHCP server, connects through the gateway address to a
//!   `std::net` listener on the host's 127.0.0.1 and exchanges data both
//!   ways, sends UDP to a host socket the same way, and a host client reaches
//!   a listener on the device through a forwarded port of 127.0.0.1.
//! * `unprivileged_passt` (root only, to drop to `nobody`): the same lease and
//!   gateway connection with passt started as uid 65534, to show it needs
//!   no privileges.
//! * `passt_in_netns` (root): passt inside a test-made network namespace,
//!   where the gateway leads to that namespace's loopback and nothing else
//!   exists; DNS queries through the gateway reach a responder there.
//!
//! passt talks only to 127.0.0.1 here: the device only ever addresses the
//! gateway. A missing passt skips (fails under `CI=true`).
#![cfg(all(feature = "std", feature = "full-stack", target_os = "linux"))]

mod support;

#[allow(dead_code)]
#[path = "../examples/common/dns.rs"]
mod dns;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use netdever::phy::passt::{PasstConfig, PasstLink};
use netdever::stack::host::HostStack;
use netdever::stack::StackConfig;
use netdever::{
    AddressFamily, ConnectParams, Deadline, IpAddr, IpMode, MsgFlags, Netdever, Netlinker,
    Protocol, SockType, Socketer,
};

fn dl(dev: &impl Socketer, d: Duration) -> Deadline {
    Deadline::after(dev.now(), d)
}

/// passt is installed, or the test is skipped (failed under CI).
fn have_passt(test: &str) -> bool {
    support::require(
        test,
        "the `passt` program (Debian package passt)",
        support::find_program("passt").is_some(),
    )
    .is_ok()
}

/// A port free on 127.0.0.1 right now (for passt's forward).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A stack on `link`, with a DHCP lease from passt.
fn dhcp_stack(link: PasstLink) -> HostStack {
    let log_on_fail = link.log();
    let dev = HostStack::new(
        link,
        StackConfig {
            ip: IpMode::Keep,
            ..Default::default()
        },
    )
    .expect("HostStack on passt");
    let t0 = Instant::now();
    dev.net_connect(&ConnectParams {
        ip: IpMode::Dhcp,
        hostname: "ndv-passt",
        connect_timeout: Duration::from_secs(20),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("DHCP from passt: {e:?}\npasst log:\n{log_on_fail}"));
    eprintln!("passt DHCP lease after {:?}", t0.elapsed());
    dev
}

/// Connect to `gw:port` from the device, send `msg`, read the reply.
fn tcp_round_trip(dev: &HostStack, to: SocketAddr, msg: &[u8], reply_len: usize) -> Vec<u8> {
    let fd = dev
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .unwrap();
    dev.connect(fd, None, to, dl(dev, Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("connect to {to} through passt: {e:?}"));
    let mut sent = 0;
    while sent < msg.len() {
        sent += dev
            .send(
                fd,
                &msg[sent..],
                MsgFlags::NONE,
                dl(dev, Duration::from_secs(10)),
            )
            .expect("send");
    }
    let mut got = vec![0u8; reply_len];
    let mut n = 0;
    while n < reply_len {
        match dev.recv(
            fd,
            &mut got[n..],
            MsgFlags::NONE,
            dl(dev, Duration::from_secs(10)),
        ) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => panic!("recv after {n} bytes: {e:?}"),
        }
    }
    got.truncate(n);
    dev.close(fd).unwrap();
    got
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[test]
fn dhcp_gateway_and_forward() {
    if !have_passt("dhcp_gateway_and_forward") {
        return;
    }
    support::with_timeout("dhcp_gateway_and_forward", Duration::from_secs(120), || {
        let fwd = free_port();
        let link =
            PasstLink::spawn(&PasstConfig::new().tcp_forward(fwd, 8080)).expect("start passt");
        assert!(link.pid().is_some());
        let gw = link.gateway();
        let want = link.ip_config();
        let dev = dhcp_stack(link);

        // The lease is what passt was told to hand out.
        let cfg = dev.ip_config().expect("ip_config");
        assert_eq!(cfg.addr, want.addr, "address from passt's DHCP");
        assert_eq!(cfg.prefix_len, 24);
        assert_eq!(cfg.gateway, Some(gw), "router from passt's DHCP");
        assert!(
            cfg.dns.contains(&gw),
            "DNS server from passt's DHCP: {cfg:?}"
        );

        // Device -> host: a std listener on 127.0.0.1, reached at the gateway.
        let host = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = host.local_addr().unwrap().port();
        let data = pattern(200_000);
        let expect = data.clone();
        let server = std::thread::spawn(move || {
            let (mut s, peer) = host.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut buf = vec![0u8; expect.len()];
            s.read_exact(&mut buf).unwrap();
            assert!(buf == expect, "host received the device's bytes intact");
            s.write_all(b"hello from the host").unwrap();
            peer
        });
        let reply = tcp_round_trip(&dev, SocketAddr::new(gw.into(), port), &data, 19);
        assert_eq!(reply, b"hello from the host");
        let peer = server.join().unwrap();
        assert!(
            peer.ip().is_loopback(),
            "passt connects from loopback: {peer}"
        );

        // UDP device -> host through the gateway, and the answer back.
        let hu = UdpSocket::bind("127.0.0.1:0").unwrap();
        hu.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let uport = hu.local_addr().unwrap().port();
        let fd = dev
            .socket(AddressFamily::Inet, SockType::Dgram, Protocol::Udp)
            .unwrap();
        let to = SocketAddr::new(gw.into(), uport);
        dev.send_to(
            fd,
            b"ping",
            MsgFlags::NONE,
            to,
            dl(&dev, Duration::from_secs(5)),
        )
        .unwrap();
        let mut b = [0u8; 64];
        let (n, from) = hu.recv_from(&mut b).expect("datagram at the host");
        assert_eq!(&b[..n], b"ping");
        hu.send_to(b"pong", from).unwrap();
        let (n, src) = dev
            .recv_from(
                fd,
                &mut b,
                MsgFlags::NONE,
                dl(&dev, Duration::from_secs(10)),
            )
            .expect("reply at the device");
        assert_eq!(&b[..n], b"pong");
        assert_eq!(src, to, "the reply comes from the gateway");
        dev.close(fd).unwrap();

        // Host -> device through the forward 127.0.0.1:fwd -> device:8080.
        let l = dev
            .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
            .unwrap();
        dev.bind(l, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8080)))
            .unwrap();
        dev.listen(l, 2).unwrap();
        let client = std::thread::spawn(move || {
            let mut s = TcpStream::connect(("127.0.0.1", fwd)).expect("connect to the forward");
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s.write_all(b"knock knock").unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            got
        });
        let (c, from) = dev
            .accept(l, dl(&dev, Duration::from_secs(20)))
            .expect("accept the forwarded connection");
        assert_eq!(
            from.ip(),
            IpAddr::V4(gw),
            "forwarded connections come from the gateway"
        );
        let mut b = [0u8; 11];
        let mut n = 0;
        while n < b.len() {
            n += dev
                .recv(
                    c,
                    &mut b[n..],
                    MsgFlags::NONE,
                    dl(&dev, Duration::from_secs(10)),
                )
                .unwrap();
        }
        assert_eq!(&b, b"knock knock");
        dev.send(
            c,
            b"who's there",
            MsgFlags::NONE,
            dl(&dev, Duration::from_secs(5)),
        )
        .unwrap();
        dev.close(c).unwrap();
        assert_eq!(client.join().unwrap(), b"who's there");
        dev.close(l).unwrap();
    });
}

#[test]
fn passt_exit_is_link_down() {
    if !have_passt("passt_exit_is_link_down") {
        return;
    }
    support::with_timeout("passt_exit_is_link_down", Duration::from_secs(60), || {
        let link = PasstLink::spawn(&PasstConfig::new()).expect("start passt");
        let pid = link.pid().unwrap();
        let dev = dhcp_stack(link);
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        drop(dev);
        // Dropping the stack dropped the link, which killed passt.
        assert!(
            support::wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
                !std::path::Path::new(&format!("/proc/{pid}")).exists()
            }),
            "passt (pid {pid}) still running after the link was dropped"
        );
    });
}

/// passt started as uid 65534 (`setpriv`), in a directory that user owns:
/// it needs no privileges at all.
#[test]
fn unprivileged_passt() {
    let test = "unprivileged_passt";
    if !have_passt(test) {
        return;
    }
    // Only root can become another user; as non-root every test here is
    // already unprivileged.
    if !support::is_root() {
        eprintln!("{test}: not root, so the other tests already ran passt unprivileged");
        return;
    }
    if support::require(
        test,
        "the `setpriv` program (util-linux)",
        support::find_program("setpriv").is_some(),
    )
    .is_err()
    {
        return;
    }
    support::with_timeout(test, Duration::from_secs(60), || {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ndv-passt-nobody-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        struct Rm(std::path::PathBuf);
        impl Drop for Rm {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _rm = Rm(dir.clone());
        let cfg = PasstConfig::new().dir(&dir).launcher(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]);
        let link = PasstLink::spawn(&cfg).expect("passt as uid 65534");
        let pid = link.pid().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            uid.split_whitespace().skip(1).all(|u| u == "65534"),
            "passt runs as nobody: {uid}"
        );
        let gw = link.gateway();
        let dev = dhcp_stack(link);
        let host = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = host.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = host.accept().unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            s.write_all(b"hi nobody").unwrap();
        });
        assert_eq!(
            tcp_round_trip(&dev, SocketAddr::new(gw.into(), port), b"x", 9),
            b"hi nobody"
        );
        server.join().unwrap();
    });
}

/// passt inside a test-made network namespace: there the gateway is the
/// namespace's own loopback, and nothing else exists (one veth pair gives
/// passt the routable interface it insists on). DNS queries to the
/// gateway reach a responder on the namespace's 127.0.0.1:53.
#[cfg(feature = "tap")]
#[test]
fn passt_in_netns_with_dns() {
    let test = "passt_in_netns_with_dns";
    if !have_passt(test) {
        return;
    }
    if let Some(missing) = support::netns_missing() {
        if support::require(test, &missing, false).is_err() {
            return;
        }
    }
    let ns = support::Netns::new("pst").expect("network namespace");
    ns.ip(&[
        "link", "add", "ndv0", "type", "veth", "peer", "name", "ndv1",
    ])
    .unwrap();
    ns.ip(&["addr", "add", "10.90.0.1/24", "dev", "ndv0"])
        .unwrap();
    ns.ip(&["link", "set", "ndv0", "up"]).unwrap();
    ns.ip(&["link", "set", "ndv1", "up"]).unwrap();
    ns.ip(&["route", "add", "default", "via", "10.90.0.254"])
        .unwrap();

    let cfg = PasstConfig::new();
    let gw = cfg.gateway;
    // DNS and a TCP server on the namespace's loopback.
    let (udp, tcp) = ns
        .run(|| {
            (
                UdpSocket::bind("127.0.0.1:53").expect("bind 127.0.0.1:53 in the namespace"),
                TcpListener::bind("127.0.0.1:0").unwrap(),
            )
        })
        .unwrap();
    let tport = tcp.local_addr().unwrap().port();
    udp.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let dns_thread = std::thread::spawn(move || {
        let lookup = dns::zone("passt.test", gw);
        let mut buf = [0u8; 512];
        let mut answered = 0;
        while !stop2.load(std::sync::atomic::Ordering::Acquire) {
            if let Ok((n, from)) = udp.recv_from(&mut buf) {
                if let Some(a) = dns::answer(&buf[..n], &lookup) {
                    udp.send_to(&a, from).unwrap();
                    answered += 1;
                }
            }
        }
        answered
    });
    let tcp_thread = std::thread::spawn(move || {
        let (mut s, _) = tcp.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        s.write_all(&b).unwrap();
    });

    let link = ns
        .run(move || PasstLink::spawn(&cfg))
        .unwrap()
        .expect("passt in the namespace");
    support::with_timeout(test, Duration::from_secs(60), move || {
        let dev = dhcp_stack(link);
        assert_eq!(
            dev.get_host_by_name("www.passt.test", AddressFamily::Inet),
            Ok(IpAddr::V4(gw)),
            "DNS through passt's gateway"
        );
        assert_eq!(
            dev.get_host_by_name("nothing.invalid", AddressFamily::Inet),
            Err(netdever::Error::HostUnknown)
        );
        let to = SocketAddr::new(gw.into(), tport);
        assert_eq!(tcp_round_trip(&dev, to, b"ping", 4), b"ping");
    });
    tcp_thread.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Release);
    assert!(dns_thread.join().unwrap() >= 2, "the responder answered");
    drop(ns);
}
