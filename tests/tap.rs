//! The conformance suite against the Linux kernel: our `HostStack` on a TAP
//! interface inside a fresh network namespace (kernel side 10.88.0.1/24,
//! dut 10.88.0.2/24), with the kernel as the peer — plus real programs as
//! peers: a python3 UDP echo server, `nc -l` receiving a file, and dnsmasq
//! as DHCP and DNS server.
//!
//! Needs root, /dev/net/tun and `ip` (python3, nc, dnsmasq for their
//! tests). Missing pieces skip the test with a printed reason, unless
//! `CI=true` or `NETDEVER_REQUIRE_PEERS=1`, which turn them into failures.
//! Everything happens inside namespaces named `ndv-<tag>-<pid>-<n>` that are
//! deleted afterwards (also on failure), with the programs started there.
#![cfg(all(feature = "std", feature = "full-stack", feature = "tap"))]

mod support;
#[macro_use]
mod conformance;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conformance::{Fixture, KernelPeer};
use netdever::phy::tap::TapLink;
use netdever::stack::host::HostStack;
use netdever::stack::StackConfig;
use netdever::{
    AddressFamily, ConnectParams, Deadline, Error, Event, IpConfig, IpMode, MsgFlags, Netdever,
    Netlinker, Protocol, SockType, Socketer,
};
use support::Netns;

const TAP: &str = "ndvtap0";
const KERNEL_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
const DUT_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
const DNS_RECORDS: &[(&str, Ipv4Addr)] = &[
    ("kernel.conformance.test", KERNEL_IP),
    ("other.conformance.test", Ipv4Addr::new(10, 88, 0, 77)),
];

/// Check root, /dev/net/tun, `ip` and the given programs; `None` = skip.
fn requirements(test: &str, programs: &[&str]) -> Option<()> {
    if let Some(missing) = support::netns_missing() {
        support::require(test, &missing, false).ok()?;
    }
    for p in programs {
        support::require(
            test,
            &format!("the `{p}` program"),
            support::find_program(p).is_some(),
        )
        .ok()?;
    }
    Some(())
}

/// A namespace with a TAP interface whose kernel side is 10.88.0.1/24 and up.
/// Returns the namespace (delete-on-drop) and our end of the TAP.
fn netns_with_tap(tag: &str) -> (Netns, TapLink) {
    let ns = Netns::new(tag).expect("create network namespace");
    let tap = ns
        .run(|| TapLink::open(TAP))
        .expect("enter the namespace")
        .expect("open the TAP inside the namespace");
    ns.ip(&["addr", "add", &format!("{KERNEL_IP}/24"), "dev", TAP])
        .expect("address the kernel side");
    ns.ip(&["link", "set", TAP, "up"]).expect("set the TAP up");
    (ns, tap)
}

/// A `HostStack` with a static address on `tap`, up.
fn static_stack(tap: TapLink) -> HostStack {
    let ip = IpMode::Static(IpConfig::new(DUT_IP, 24).with_dns(KERNEL_IP));
    let dev = HostStack::new(
        tap,
        StackConfig {
            ip: ip.clone(),
            ..Default::default()
        },
    )
    .expect("HostStack::new on the TAP");
    dev.net_connect(&ConnectParams {
        ip,
        ..Default::default()
    })
    .expect("net_connect (static)");
    assert!(
        conformance::wait_for_addr(&dev, Duration::from_secs(5)),
        "no address after net_connect"
    );
    dev
}

/// dut on a TAP, the kernel as peer (with a DNS responder on 10.88.0.1:53).
fn fixture() -> Option<Fixture<HostStack, KernelPeer>> {
    // The harness names the test thread after the test.
    let test = std::thread::current()
        .name()
        .unwrap_or("tap conformance")
        .to_string();
    requirements(&test, &[])?;
    let (ns, tap) = netns_with_tap("tap");
    let dut = static_stack(tap);
    let peer = KernelPeer::new(ns.name(), KERNEL_IP)
        .with_dns(DNS_RECORDS)
        .expect("DNS responder on 10.88.0.1:53 in the namespace");
    Some(Fixture {
        dut,
        peer,
        guard: Box::new(ns),
    })
}

mod suite {
    conformance_tests!(super::fixture);
}

fn dl(dev: &impl Socketer, d: Duration) -> Deadline {
    Deadline::after(dev.now(), d)
}

/// A python3 UDP echo server in the namespace answers the dut's datagrams.
#[test]
fn python_udp_echo() {
    if requirements("python_udp_echo", &["python3"]).is_none() {
        return;
    }
    let (ns, tap) = netns_with_tap("py");
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('{KERNEL_IP}', 9999))\n\
         s.settimeout(30)\n\
         print('ready', flush=True)\n\
         for _ in range(1000):\n\
         \x20   try:\n\
         \x20       d, a = s.recvfrom(65535)\n\
         \x20   except socket.timeout:\n\
         \x20       break\n\
         \x20   if d == b'quit':\n\
         \x20       break\n\
         \x20   s.sendto(d, a)\n"
    );
    let (_pid, out, _) = ns
        .spawn(
            ns.command(&["python3", "-c", &script])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        )
        .expect("spawn python3");
    let (line, _rest) = support::read_line_timeout(out.unwrap(), Duration::from_secs(20))
        .expect("python3 UDP server did not print `ready` within 20 s");
    assert_eq!(line.trim(), "ready");
    support::with_timeout("python_udp_echo", Duration::from_secs(60), move || {
        let dut = static_stack(tap);
        let fd = dut
            .socket(AddressFamily::Inet, SockType::Dgram, Protocol::Udp)
            .unwrap();
        let server = SocketAddr::new(KERNEL_IP.into(), 9999);
        for i in 0..20u32 {
            let msg = conformance::pattern(i as u64, 10 + 60 * i as usize);
            assert_eq!(
                dut.send_to(
                    fd,
                    &msg,
                    MsgFlags::NONE,
                    server,
                    dl(&dut, Duration::from_secs(5))
                ),
                Ok(msg.len())
            );
            let mut buf = [0u8; 2048];
            let (n, from) = dut
                .recv_from(
                    fd,
                    &mut buf,
                    MsgFlags::NONE,
                    dl(&dut, Duration::from_secs(5)),
                )
                .unwrap_or_else(|e| panic!("echo {i} from python3: {e:?}"));
            assert_eq!(from, server, "echo comes from the python server");
            assert!(buf[..n] == msg[..], "echo {i} differs");
        }
        let _ = dut.send_to(
            fd,
            b"quit",
            MsgFlags::NONE,
            server,
            dl(&dut, Duration::from_secs(5)),
        );
        dut.close(fd).unwrap();
    });
    drop(ns);
}

/// `nc -l` in the namespace receives a 1 MiB file from the dut intact.
#[test]
fn nc_receives_file() {
    if requirements("nc_receives_file", &["nc"]).is_none() {
        return;
    }
    let (ns, tap) = netns_with_tap("nc");
    let (pid, out, _) = ns
        .spawn(
            ns.command(&["nc", "-l", &KERNEL_IP.to_string(), "7070"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        )
        .expect("spawn nc -l");
    let received = support::read_all_async(out.unwrap());
    let data = conformance::pattern(0xF11E, 1 << 20);
    let sent = data.clone();
    support::with_timeout("nc_receives_file", Duration::from_secs(90), move || {
        let dut = static_stack(tap);
        let server = SocketAddr::new(KERNEL_IP.into(), 7070);
        // nc announces nothing when it listens: retry refused connects.
        let end = Instant::now() + Duration::from_secs(10);
        let fd = loop {
            let fd = dut
                .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
                .unwrap();
            match dut.connect(fd, None, server, dl(&dut, Duration::from_secs(5))) {
                Ok(()) => break fd,
                Err(Error::ConnectionRefused) if Instant::now() < end => {
                    dut.close(fd).unwrap();
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("connect to nc: {e:?}"),
            }
        };
        conformance::send_all(&dut, fd, &sent, Duration::from_secs(60));
        dut.close(fd).unwrap();
        // Keep the stack alive until the FIN went out and was acknowledged.
        std::thread::sleep(Duration::from_millis(500));
    });
    let got = received
        .recv_timeout(Duration::from_secs(30))
        .expect("nc did not finish writing within 30 s")
        .expect("read nc's output");
    assert_eq!(got.len(), data.len(), "bytes nc received");
    assert!(got == data, "file received by nc differs");
    let st = ns.wait_child(pid, Duration::from_secs(10));
    assert!(
        st.is_some_and(|s| s.success()),
        "nc exits successfully after EOF: {st:?}"
    );
    drop(ns);
}

/// dnsmasq in the namespace: `net_connect` with DHCP gets a lease in range,
/// NetUp fires, DNS goes through dnsmasq, and TCP works on the leased address.
#[test]
fn dhcp_dnsmasq() {
    if requirements("dhcp_dnsmasq", &["dnsmasq"]).is_none() {
        return;
    }
    let (ns, tap) = netns_with_tap("dhcp");
    let dir = std::env::temp_dir().join(ns.name());
    std::fs::create_dir_all(&dir).unwrap();
    struct RmDir(std::path::PathBuf);
    impl Drop for RmDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = RmDir(dir.clone());
    let pid_file = dir.join("dnsmasq.pid");
    let lease_file = dir.join("dnsmasq.leases");
    let args = [
        "dnsmasq".to_string(),
        "--no-daemon".into(),
        "--conf-file=/dev/null".into(),
        format!("--interface={TAP}"),
        "--bind-interfaces".into(),
        "--except-interface=lo".into(),
        "--dhcp-range=10.88.0.50,10.88.0.60,255.255.255.0,1h".into(),
        "--address=/conformance.test/10.88.0.1".into(),
        "--port=53".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--user=root".into(),
        "--group=root".into(),
        "--log-facility=-".into(),
        "--log-dhcp".into(),
        format!("--pid-file={}", pid_file.display()),
        format!("--dhcp-leasefile={}", lease_file.display()),
    ];
    let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let (_pid, _, err) = ns
        .spawn(
            ns.command(&argv)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        )
        .expect("spawn dnsmasq");
    // Collect dnsmasq's log; wait until it has bound its DHCP socket.
    let log = Arc::new(Mutex::new(String::new()));
    {
        let log = log.clone();
        let err = err.unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                log.lock().unwrap().push_str(&(line + "\n"));
            }
        });
    }
    let ready = support::wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        log.lock().unwrap().contains("DHCP, IP range")
    });
    assert!(ready, "dnsmasq did not start: {}", log.lock().unwrap());

    let log2 = log.clone();
    let ns_name = ns.name().to_string();
    let lease_file2 = lease_file.clone();
    support::with_timeout("dhcp_dnsmasq", Duration::from_secs(120), move || {
        let dev = HostStack::new(
            tap,
            StackConfig {
                ip: IpMode::Dhcp,
                ..Default::default()
            },
        )
        .expect("HostStack::new");
        let events: Arc<Mutex<Vec<Event>>> = Arc::default();
        let ev = events.clone();
        dev.net_notify(Some(Box::leak(Box::new(move |e: Event| {
            ev.lock().unwrap().push(e)
        }))));
        let t0 = Instant::now();
        dev.net_connect(&ConnectParams {
            ip: IpMode::Dhcp,
            hostname: "ndv-dut",
            connect_timeout: Duration::from_secs(40),
            ..Default::default()
        })
        .unwrap_or_else(|e| {
            panic!(
                "net_connect with DHCP: {e:?}\ndnsmasq log:\n{}",
                log2.lock().unwrap()
            )
        });
        eprintln!("DHCP lease after {:?}", t0.elapsed());
        let IpAddr::V4(addr) = dev.addr().expect("address after DHCP") else {
            panic!("IPv4 lease expected")
        };
        let o = addr.octets();
        assert!(
            o[..3] == [10, 88, 0] && (50..=60).contains(&o[3]),
            "lease {addr} outside 10.88.0.50-60"
        );
        let cfg = dev.ip_config().expect("ip_config after DHCP");
        assert_eq!(cfg.addr, addr);
        assert_eq!(cfg.prefix_len, 24, "netmask from dnsmasq");
        assert_eq!(cfg.gateway, Some(KERNEL_IP), "router from dnsmasq");
        assert!(
            cfg.dns.contains(&KERNEL_IP),
            "DNS server from dnsmasq: {cfg:?}"
        );
        assert!(
            support::wait_until(Duration::from_secs(2), Duration::from_millis(10), || {
                events.lock().unwrap().contains(&Event::NetUp)
            }),
            "NetUp did not fire (events: {:?})",
            events.lock().unwrap()
        );
        assert!(
            std::fs::read_to_string(&lease_file2).is_ok_and(|l| l.contains(&addr.to_string())),
            "dnsmasq's lease file lists {addr}"
        );

        // DNS through dnsmasq.
        assert_eq!(
            dev.get_host_by_name("conformance.test", AddressFamily::Inet),
            Ok(IpAddr::V4(KERNEL_IP)),
            "conformance.test through dnsmasq"
        );
        assert_eq!(
            dev.get_host_by_name("www.conformance.test", AddressFamily::Inet),
            Ok(IpAddr::V4(KERNEL_IP)),
            "subdomain through dnsmasq"
        );
        let r = dev.get_host_by_name("nothing.invalid", AddressFamily::Inet);
        assert_eq!(r, Err(Error::HostUnknown), "a name dnsmasq cannot answer");

        // TCP on the leased address, with the kernel as peer.
        let peer = KernelPeer::new(&ns_name, KERNEL_IP);
        let echo = conformance::EchoServer::start(&peer);
        let fd = conformance::connect_tcp(&dev, echo.addr);
        assert_eq!(dev.local_addr(fd).map(|a| a.ip()), Ok(IpAddr::V4(addr)));
        conformance::send_all(&dev, fd, b"over dhcp", Duration::from_secs(5));
        assert_eq!(
            conformance::recv_exact(&dev, fd, 9, Duration::from_secs(5)),
            b"over dhcp"
        );
        dev.close(fd).unwrap();
        drop(echo);
        dev.net_notify(None);
    });
    drop(ns);
}
