//! The ESP-AT driver (`netdever::offload::espat::EspAt`) against the
//! emulator: sockets, DNS, Wi-Fi, and what goes wrong on a real serial
//! line (messages anywhere, split reads, busy, garbage, truncation,
//! resets, Wi-Fi loss). Peers are std::net sockets on 127.0.0.1; the
//! device is 127.0.0.3. Every test is bounded: a hang fails it.
#![cfg(all(feature = "std", feature = "esp-at", feature = "tap"))]

#[path = "espat_support.rs"]
mod espat_support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use espat_support::*;
use netdever::offload::espat::Config;
use netdever::*;

const SEC: Duration = Duration::from_secs(1);

fn dl(dev: &Dev, d: Duration) -> Deadline {
    Deadline::after(dev.now(), d)
}

fn tcp(dev: &Dev) -> Sockfd {
    dev.socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .unwrap()
}

fn udp(dev: &Dev) -> Sockfd {
    dev.socket(AddressFamily::Inet, SockType::Dgram, Protocol::Udp)
        .unwrap()
}

fn any(port: u16) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], port))
}

fn peer_listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind((PEER_IP, 0)).unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

fn send_all(dev: &Dev, fd: Sockfd, mut data: &[u8]) {
    let d = dl(dev, 20 * SEC);
    while !data.is_empty() {
        let n = dev.send(fd, data, MsgFlags::NONE, d).expect("send");
        assert!(n > 0);
        data = &data[n..];
    }
}

fn recv_exact(dev: &Dev, fd: Sockfd, n: usize) -> Vec<u8> {
    let d = dl(dev, 20 * SEC);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    while out.len() < n {
        let k = dev
            .recv(fd, &mut buf[..(n - out.len()).min(4096)], MsgFlags::NONE, d)
            .expect("recv");
        assert!(k > 0, "EOF after {} of {n} bytes", out.len());
        out.extend_from_slice(&buf[..k]);
    }
    out
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A TCP echo server on 127.0.0.1 (one thread per connection).
fn echo_server() -> SocketAddr {
    let (l, a) = peer_listener();
    std::thread::spawn(move || {
        for s in l.incoming().take(16) {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                s.set_read_timeout(Some(Duration::from_secs(30))).ok();
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    a
}

#[test]
fn tcp_client_round_trip_and_addresses() {
    bounded("tcp client", 60 * SEC, || {
        let rig = Rig::joined();
        let dev = &rig.dev;
        assert_eq!(dev.addr(), Ok(IpAddr::V4(DEV_IP)));
        let echo = echo_server();
        let fd = tcp(dev);
        dev.connect(fd, None, echo, dl(dev, 5 * SEC)).unwrap();
        assert_eq!(dev.peer_addr(fd), Ok(echo));
        let local = dev.local_addr(fd).unwrap();
        assert_eq!(local.ip(), IpAddr::V4(DEV_IP));
        assert_ne!(local.port(), 0);
        let data = pattern(1, 20_000);
        for chunk in data.chunks(3000) {
            send_all(dev, fd, chunk);
            assert_eq!(recv_exact(dev, fd, chunk.len()), chunk);
        }
        dev.close(fd).unwrap();
        assert_eq!(dev.close(fd), Err(Error::InvalidSockfd));
    });
}

#[test]
fn binary_data_with_protocol_bytes_survives() {
    bounded("binary", 60 * SEC, || {
        let rig = Rig::joined();
        let dev = &rig.dev;
        let echo = echo_server();
        let fd = tcp(dev);
        dev.connect(fd, None, echo, dl(dev, 5 * SEC)).unwrap();
        // Data that looks like protocol lines must pass untouched both ways.
        let mut data =
            b"\r\nOK\r\n+IPD,0,5\r\n>\r\nSEND OK\r\n0,CLOSED\r\nready\r\n+CIPRECVDATA:3,abc"
                .to_vec();
        data.extend(pattern(9, 5000));
        send_all(dev, fd, &data);
        assert_eq!(recv_exact(dev, fd, data.len()), data);
        dev.close(fd).unwrap();
    });
}

#[test]
fn tcp_server_backlog_accept_and_one_server() {
    bounded("server", 60 * SEC, || {
        let rig = Rig::joined();
        let dev = &rig.dev;
        let l = tcp(dev);
        dev.bind(l, any(7311)).unwrap();
        dev.listen(l, 3).unwrap();
        assert_eq!(dev.local_addr(l), Ok(SocketAddr::from((DEV_IP, 7311))));
        // The chip serves one server: a second listener is refused.
        let l2 = tcp(dev);
        dev.bind(l2, any(7312)).unwrap();
        assert_eq!(dev.listen(l2, 1), Err(Error::NoMoreSockets));
        dev.close(l2).unwrap();
        let b = tcp(dev);
        assert_eq!(dev.bind(b, any(7311)), Err(Error::AddrInUse));
        dev.close(b).unwrap();
        let mut clients = Vec::new();
        for i in 0..3u8 {
            let mut c = TcpStream::connect((DEV_IP, 7311)).unwrap();
            c.write_all(&[b'c', i]).unwrap();
            clients.push(c);
        }
        let mut seen = Vec::new();
        for _ in 0..3 {
            let (a, from) = dev.accept(l, dl(dev, 5 * SEC)).expect("accept");
            let msg = recv_exact(dev, a, 2);
            let i = msg[1] as usize;
            assert_eq!(
                Some(from),
                clients[i].local_addr().ok(),
                "accept reports the peer"
            );
            assert_eq!(dev.peer_addr(a), Ok(from));
            assert_eq!(dev.local_addr(a), Ok(SocketAddr::from((DEV_IP, 7311))));
            send_all(dev, a, &[b'r', i as u8]);
            seen.push(a);
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let mut r = [0u8; 2];
            c.read_exact(&mut r).unwrap();
            assert_eq!(r, [b'r', i as u8]);
        }
        assert_eq!(
            dev.accept(l, dl(dev, Duration::from_millis(200))),
            Err(Error::Timeout)
        );
        let fresh = tcp(dev);
        assert_eq!(dev.accept(fresh, dl(dev, SEC)), Err(Error::InvalidArgument));
        dev.close(fresh).unwrap();
        for a in seen {
            dev.close(a).unwrap();
        }
        dev.close(l).unwrap();
        // The server is gone from the chip: a new listener on another port works.
        let l3 = tcp(dev);
        dev.bind(l3, any(7313)).unwrap();
        dev.listen(l3, 1).unwrap();
        let _c = TcpStream::connect((DEV_IP, 7313)).unwrap();
        let (a, _) = dev.accept(l3, dl(dev, 5 * SEC)).unwrap();
        dev.close(a).unwrap();
        dev.close(l3).unwrap();
    });
}

#[test]
fn udp_send_to_recv_from_connect_and_sizes() {
    bounded("udp", 60 * SEC, || {
        let rig = Rig::joined();
        let dev = &rig.dev;
        let fd = udp(dev);
        dev.bind(fd, any(7411)).unwrap();
        let target = SocketAddr::from((DEV_IP, 7411));
        let p = UdpSocket::bind((PEER_IP, 0)).unwrap();
        let q = UdpSocket::bind((PEER_IP, 0)).unwrap();
        p.set_read_timeout(Some(5 * SEC)).unwrap();
        let mut buf = [0u8; 2048];
        for (sock, msg) in [(&p, &b"from-p"[..]), (&q, &b"from-q"[..])] {
            sock.send_to(msg, target).unwrap();
            let (n, from) = dev
                .recv_from(fd, &mut buf, MsgFlags::NONE, dl(dev, 5 * SEC))
                .unwrap();
            assert_eq!(&buf[..n], msg);
            assert_eq!(
                from,
                sock.local_addr().unwrap(),
                "recv_from reports the source"
            );
        }
        assert_eq!(
            dev.send_to(
                fd,
                b"answer",
                MsgFlags::NONE,
                p.local_addr().unwrap(),
                dl(dev, 5 * SEC)
            ),
            Ok(6)
        );
        let (n, from) = p.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"answer");
        assert_eq!(from, target, "the answer comes from the bound port");
        // Truncation drops the rest of the datagram; peek does not consume.
        p.send_to(&pattern(3, 300), target).unwrap();
        p.send_to(b"next", target).unwrap();
        let mut small = [0u8; 10];
        let (n, _) = dev
            .recv_from(fd, &mut small, MsgFlags::PEEK, dl(dev, 5 * SEC))
            .unwrap();
        assert_eq!(n, 10);
        let (n, _) = dev
            .recv_from(fd, &mut small, MsgFlags::NONE, dl(dev, 5 * SEC))
            .unwrap();
        assert_eq!((n, &small[..]), (10, &pattern(3, 300)[..10]));
        let (n, _) = dev
            .recv_from(fd, &mut buf, MsgFlags::NONE, dl(dev, 5 * SEC))
            .unwrap();
        assert_eq!(&buf[..n], b"next");
        // Sizes.
        let big = pattern(4, 1472);
        assert_eq!(
            dev.send_to(
                fd,
                &big,
                MsgFlags::NONE,
                p.local_addr().unwrap(),
                dl(dev, 5 * SEC)
            ),
            Ok(1472)
        );
        let (n, _) = p.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &big[..]);
        assert_eq!(
            dev.send_to(
                fd,
                &[0u8; 1473],
                MsgFlags::NONE,
                p.local_addr().unwrap(),
                dl(dev, SEC)
            ),
            Err(Error::MessageTooLong)
        );
        dev.close(fd).unwrap();

        // Connected UDP: default peer, others filtered.
        let c = udp(dev);
        dev.connect(c, None, p.local_addr().unwrap(), dl(dev, 5 * SEC))
            .unwrap();
        assert_eq!(
            dev.send(c, b"ping", MsgFlags::NONE, dl(dev, 5 * SEC)),
            Ok(4)
        );
        let (n, from) = p.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(from, dev.local_addr(c).unwrap());
        q.send_to(b"intruder", from).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        p.send_to(b"pong", from).unwrap();
        let n = dev
            .recv(c, &mut buf, MsgFlags::NONE, dl(dev, 5 * SEC))
            .unwrap();
        assert_eq!(&buf[..n], b"pong");
        assert_eq!(
            dev.recv(
                c,
                &mut buf,
                MsgFlags::NONE,
                dl(dev, Duration::from_millis(200))
            ),
            Err(Error::Timeout)
        );
        dev.close(c).unwrap();
    });
}

#[test]
fn dns_via_cipdomain() {
    bounded("dns", 30 * SEC, || {
        let rig = Rig::new(emu_config(), test_driver_config());
        let dev = &rig.dev;
        assert_eq!(
            dev.get_host_by_name("peer.espat.test", AddressFamily::Inet),
            Err(Error::NetworkDown),
            "no DNS before joining"
        );
        assert_eq!(dev.addr(), Err(Error::NetworkDown));
        dev.net_connect(&params()).unwrap();
        assert_eq!(
            dev.get_host_by_name("peer.espat.test", AddressFamily::Inet),
            Ok(IpAddr::V4(PEER_IP))
        );
        assert_eq!(
            dev.get_host_by_name("other.espat.test", AddressFamily::Inet),
            Ok(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 77)))
        );
        assert_eq!(
            dev.get_host_by_name("no-such-host.espat.test", AddressFamily::Inet),
            Err(Error::HostUnknown)
        );
        assert_eq!(
            dev.get_host_by_name("10.1.2.3", AddressFamily::Inet),
            Ok(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)))
        );
        assert_eq!(
            dev.get_host_by_name("peer.espat.test", AddressFamily::Inet6),
            Err(Error::FamilyNotSupported)
        );
        assert_eq!(
            dev.get_host_by_name("a\"b,c", AddressFamily::Inet),
            Err(Error::HostUnknown),
            "names are escaped, not injected"
        );
    });
}

static EVENTS: Mutex<Vec<Event>> = Mutex::new(Vec::new());
fn record(e: Event) {
    EVENTS.lock().unwrap().push(e);
}

#[test]
fn wifi_credentials_timeout_and_events() {
    bounded("wifi", 60 * SEC, || {
        let rig = Rig::new(emu_config(), test_driver_config());
        let dev = &rig.dev;
        dev.net_notify(Some(&record));
        let wrong = ConnectParams {
            passphrase: "not the passphrase",
            ..params()
        };
        assert_eq!(dev.net_connect(&wrong), Err(Error::AuthFailed));
        let unknown = ConnectParams {
            ssid: "no-such-ap",
            ..params()
        };
        assert_eq!(dev.net_connect(&unknown), Err(Error::ConnectFailed));
        rig.emu.set_ap_present(false);
        assert_eq!(dev.net_connect(&params()), Err(Error::ConnectFailed));
        rig.emu.set_ap_present(true);
        // Retries: each attempt is a new AT+CWJAP.
        rig.emu.clear_commands();
        let twice = ConnectParams {
            ssid: "no-such-ap",
            retries: 1,
            ..params()
        };
        assert_eq!(dev.net_connect(&twice), Err(Error::ConnectFailed));
        let joins = rig
            .emu
            .commands()
            .iter()
            .filter(|c| c.starts_with("AT+CWJAP="))
            .count();
        assert_eq!(joins, 2);
        // The AP takes longer than we allow: Timeout, then the chip finishes
        // in the background and the next call works.
        rig.emu.set_join_delay(Duration::from_millis(1500));
        let quick = ConnectParams {
            connect_timeout: Duration::from_millis(300),
            ..params()
        };
        let t = Instant::now();
        assert_eq!(dev.net_connect(&quick), Err(Error::Timeout));
        assert!(
            t.elapsed() < Duration::from_millis(1200),
            "{:?}",
            t.elapsed()
        );
        rig.emu.set_join_delay(Duration::from_millis(10));
        EVENTS.lock().unwrap().clear();
        dev.net_connect(&params()).unwrap();
        assert_eq!(dev.addr(), Ok(IpAddr::V4(DEV_IP)));
        let cfg = dev.ip_config().unwrap();
        assert_eq!(cfg.prefix_len, 8);
        assert_eq!(cfg.gateway, Some(PEER_IP));
        assert!(
            EVENTS.lock().unwrap().contains(&Event::NetUp),
            "{:?}",
            EVENTS.lock().unwrap()
        );
        assert_eq!(dev.hardware_addr(), Ok([0x18, 0xfe, 0x34, 0, 0, 3]));
        dev.net_disconnect().unwrap();
        assert_eq!(dev.addr(), Err(Error::NetworkDown));
        assert!(EVENTS.lock().unwrap().contains(&Event::NetDown));
        dev.net_notify(None);
    });
}

/// +IPD notifications placed inside command replies (between a command and
/// its OK, between OK and the `>` prompt), with every read split at every
/// possible byte boundary.
#[test]
fn legacy_fail_result_of_cwjap() {
    bounded("legacy fail", 30 * SEC, || {
        let mut cfg = emu_config();
        cfg.legacy_fail = true;
        let rig = Rig::new(cfg, test_driver_config());
        let wrong = ConnectParams {
            passphrase: "nope",
            ..params()
        };
        assert_eq!(
            rig.dev.net_connect(&wrong),
            Err(Error::AuthFailed),
            "+CWJAP:2 then FAIL"
        );
        rig.dev.net_connect(&params()).unwrap();
    });
}

#[test]
fn ipd_inside_replies_split_at_every_byte() {
    bounded("split", 120 * SEC, || {
        let rig = Rig::joined();
        let dev = &rig.dev;
        let (l, a) = peer_listener();
        let fd = tcp(dev);
        dev.connect(fd, None, a, dl(dev, 5 * SEC)).unwrap();
        let (mut peer, _) = l.accept().unwrap();
        for k in 1..=40usize {
            rig.emu.set_max_read(k);
            rig.emu.hold_unsolicited(true);
            let msg = pattern(k as u64, 10 + k * 7);
            peer.write_all(&msg).unwrap();
            std::thread::sleep(Duration::from_millis(15));
            // The +IPD for `msg` is released inside the CIPSEND exchange.
            send_all(dev, fd, b"ping\r\nOK\r\n");
            let mut got = [0u8; 10];
            peer.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"ping\r\nOK\r\n", "split {k}");
            assert_eq!(recv_exact(dev, fd, msg.len()), msg, "split {k}");
            rig.emu.hold_unsolicited(false);
        }
        rig.emu.set_max_read(1);
        // Garbage and a fake prompt between commands change nothing.
        rig.emu
            .inject(b"\xfe\xff%%garbage%%\r\n>\r\n+IPD,9,9\r\n9,CLOSED\r\n");
        send_all(dev, fd, b"after garbage");
        let mut got = [0u8; 13];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"after garbage");
        dev.close(fd).unwrap();
    });
}

#[test]
fn busy_p_is_retried_and_bounded() {
    bounded("busy", 60 * SEC, || {
        let rig = Rig::joined();
        let dev = &rig.dev;
        rig.emu.busy_next(3);
        rig.emu.clear_commands();
        assert_eq!(
            dev.get_host_by_name("peer.espat.test", AddressFamily::Inet),
            Ok(IpAddr::V4(PEER_IP)),
            "busy p... is retried"
        );
        let sent = rig.emu.commands();
        assert_eq!(
            sent.iter()
                .filter(|c| c.starts_with("AT+CIPDOMAIN"))
                .count(),
            4,
            "{sent:?}"
        );
        // "busy p..." in the middle of a reply that does complete: no resend.
        rig.emu.clear_commands();
        rig.emu.inject_in_next_reply(b"busy p...\r\n");
        assert_eq!(
            dev.get_host_by_name("other.espat.test", AddressFamily::Inet),
            Ok(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 77)))
        );
        let sent = rig.emu.commands();
        assert_eq!(
            sent.iter()
                .filter(|c| c.starts_with("AT+CIPDOMAIN"))
                .count(),
            1,
            "{sent:?}"
        );
        // A chip that stays busy: a typed error within the bounds.
        rig.emu.busy_next(u32::MAX);
        let t = Instant::now();
        let r = dev.get_host_by_name("peer.espat.test", AddressFamily::Inet);
        assert!(
            matches!(r, Err(Error::Device) | Err(Error::Timeout)),
            "{r:?}"
        );
        assert!(t.elapsed() < 15 * SEC);
        rig.emu.busy_next(0);
        assert_eq!(
            dev.get_host_by_name("peer.espat.test", AddressFamily::Inet),
            Ok(IpAddr::V4(PEER_IP))
        );
    });
}

#[test]
fn garbage_and_truncated_replies_are_typed_errors() {
    bounded("garbage", 60 * SEC, || {
        let rig = Rig::joined();
        let dev = &rig.dev;
        rig.emu.garble_next_reply();
        assert_eq!(dev.hardware_addr(), Err(Error::Device), "garbled reply");
        assert_eq!(
            dev.hardware_addr(),
            Ok([0x18, 0xfe, 0x34, 0, 0, 3]),
            "next call is fine"
        );
        rig.emu.truncate_next_reply(7);
        let t = Instant::now();
        assert_eq!(
            dev.get_host_by_name("peer.espat.test", AddressFamily::Inet),
            Err(Error::Device),
            "truncated reply"
        );
        assert!(t.elapsed() < 10 * SEC);
        assert_eq!(
            dev.get_host_by_name("peer.espat.test", AddressFamily::Inet),
            Ok(IpAddr::V4(PEER_IP)),
            "the parser resynchronised"
        );
        // A reply cut inside a line: the fragment must not poison the next one.
        rig.emu.truncate_next_reply(14);
        assert_eq!(
            dev.get_host_by_name("peer.espat.test", AddressFamily::Inet),
            Err(Error::Device)
        );
        assert_eq!(
            dev.get_host_by_name("peer.espat.test", AddressFamily::Inet),
            Ok(IpAddr::V4(PEER_IP))
        );
        // Garbage between commands is ignored.
        rig.emu
            .inject(b"\x00\x01\x02 noise \xff\r\nERROR\r\nOK\r\nSEND OK\r\n");
        let echo = echo_server();
        let fd = tcp(dev);
        dev.connect(fd, None, echo, dl(dev, 5 * SEC)).unwrap();
        send_all(dev, fd, b"still works");
        assert_eq!(recv_exact(dev, fd, 11), b"still works");
        dev.close(fd).unwrap();
    });
}

#[test]
fn firmware_reset_and_recovery() {
    bounded("reset", 60 * SEC, || {
        let rig = Rig::joined();
        let dev = rig.dev.clone();
        EVENTS.lock().unwrap().clear();
        dev.net_notify(Some(&record));
        let (l, a) = peer_listener();
        let fd = tcp(&dev);
        dev.connect(fd, None, a, dl(&dev, 5 * SEC)).unwrap();
        let (_peer, _) = l.accept().unwrap();
        let lfd = tcp(&dev);
        dev.bind(lfd, any(7511)).unwrap();
        dev.listen(lfd, 1).unwrap();
        // A recv blocked on the connection when the chip restarts.
        let d2 = dev.clone();
        let blocked = std::thread::spawn(move || {
            let mut buf = [0u8; 8];
            let t = Instant::now();
            let r = d2.recv(
                fd,
                &mut buf,
                MsgFlags::NONE,
                Deadline::after(d2.now(), 20 * SEC),
            );
            (r, t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(200));
        rig.emu.reset();
        let (r, took) = blocked.join().unwrap();
        assert_eq!(
            r,
            Err(Error::ConnectionAborted),
            "blocked recv after a chip reset"
        );
        assert!(took < 5 * SEC, "woke after {took:?}");
        assert_eq!(
            dev.send(fd, b"x", MsgFlags::NONE, dl(&dev, SEC)),
            Err(Error::ConnectionAborted)
        );
        assert_eq!(
            dev.accept(lfd, dl(&dev, SEC)).map(|_| ()),
            Err(Error::ConnectionAborted)
        );
        assert_eq!(dev.addr(), Err(Error::NetworkDown));
        assert!(EVENTS.lock().unwrap().contains(&Event::NetDown));
        dev.close(fd).unwrap();
        dev.close(lfd).unwrap();
        // Recovery: join again (the driver sets the chip up again first).
        dev.net_connect(&params()).unwrap();
        let echo = echo_server();
        let fd = tcp(&dev);
        dev.connect(fd, None, echo, dl(&dev, 5 * SEC)).unwrap();
        send_all(&dev, fd, b"after reset");
        assert_eq!(recv_exact(&dev, fd, 11), b"after reset");
        dev.close(fd).unwrap();
        // An explicit AT+RST works the same way.
        dev.reset().unwrap();
        assert_eq!(dev.addr(), Err(Error::NetworkDown));
        dev.net_connect(&params()).unwrap();
        assert_eq!(dev.addr(), Ok(IpAddr::V4(DEV_IP)));
        dev.net_notify(None);
    });
}

#[test]
fn wifi_drop_in_the_middle_of_a_transfer() {
    bounded("wifi drop", 60 * SEC, || {
        let rig = Rig::joined();
        let dev = rig.dev.clone();
        let (l, a) = peer_listener();
        let fd = tcp(&dev);
        dev.connect(fd, None, a, dl(&dev, 5 * SEC)).unwrap();
        let (mut peer, _) = l.accept().unwrap();
        // The peer drains what we send.
        let drained = Arc::new(AtomicUsize::new(0));
        let dr = drained.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = peer.read(&mut buf) {
                if n == 0 {
                    break;
                }
                dr.fetch_add(n, Ordering::SeqCst);
            }
        });
        let d2 = dev.clone();
        let sender = std::thread::spawn(move || {
            let data = pattern(5, 4096);
            let deadline = Deadline::after(d2.now(), 30 * SEC);
            loop {
                match d2.send(fd, &data, MsgFlags::NONE, deadline) {
                    Ok(_) => {}
                    Err(e) => return e,
                }
            }
        });
        let d3 = dev.clone();
        let receiver = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            d3.recv(
                fd,
                &mut buf,
                MsgFlags::NONE,
                Deadline::after(d3.now(), 30 * SEC),
            )
        });
        while drained.load(Ordering::SeqCst) < 50_000 {
            std::thread::sleep(Duration::from_millis(5));
        }
        rig.emu.drop_wifi();
        let e = sender.join().unwrap();
        assert!(
            matches!(
                e,
                Error::NetworkDown | Error::BrokenPipe | Error::ConnectionAborted
            ),
            "send after the Wi-Fi dropped: {e:?}"
        );
        assert_eq!(receiver.join().unwrap(), Err(Error::NetworkDown));
        assert_eq!(dev.addr(), Err(Error::NetworkDown));
        let u = udp(&dev);
        assert_eq!(
            dev.send_to(
                u,
                b"x",
                MsgFlags::NONE,
                SocketAddr::from((PEER_IP, 9)),
                dl(&dev, SEC)
            ),
            Err(Error::NetworkDown)
        );
        let c = tcp(&dev);
        assert_eq!(
            dev.connect(c, None, SocketAddr::from((PEER_IP, 9)), dl(&dev, SEC)),
            Err(Error::NetworkDown)
        );
        for f in [fd, u, c] {
            dev.close(f).unwrap();
        }
        dev.net_connect(&params()).unwrap();
        let echo = echo_server();
        let fd = tcp(&dev);
        dev.connect(fd, None, echo, dl(&dev, 5 * SEC)).unwrap();
        send_all(&dev, fd, b"back");
        assert_eq!(recv_exact(&dev, fd, 4), b"back");
        dev.close(fd).unwrap();
    });
}

#[test]
fn refused_blackholed_and_nonblocking_connects() {
    bounded("connects", 60 * SEC, || {
        let rig = Rig::joined();
        let dev = &rig.dev;
        let closed = {
            let (l, a) = peer_listener();
            drop(l);
            a
        };
        let fd = tcp(dev);
        assert_eq!(
            dev.connect(fd, None, closed, dl(dev, 5 * SEC)),
            Err(Error::ConnectionRefused)
        );
        assert_eq!(
            dev.get_sock_opt(fd, SockOptName::SocketError),
            Ok(SockOpt::SocketError(Some(Error::ConnectionRefused)))
        );
        // A host that never answers: Timeout at the deadline; close is quick
        // even though the chip is still busy connecting.
        rig.emu.blackhole(Ipv4Addr::new(127, 0, 0, 99));
        rig.emu.set_connect_timeout(Duration::from_millis(1500));
        let g = tcp(dev);
        let t = Instant::now();
        assert_eq!(
            dev.connect(
                g,
                None,
                SocketAddr::from(([127, 0, 0, 99], 80)),
                dl(dev, Duration::from_millis(300))
            ),
            Err(Error::Timeout)
        );
        assert!(t.elapsed() >= Duration::from_millis(290) && t.elapsed() < 2 * SEC);
        let t = Instant::now();
        dev.close(g).unwrap();
        assert!(t.elapsed() < SEC, "close took {:?}", t.elapsed());
        // Non-blocking connect: InProgress, then WRITABLE.
        let echo = echo_server();
        let nb = tcp(dev);
        dev.set_sock_opt(nb, SockOpt::NonBlocking(true)).unwrap();
        assert_eq!(
            dev.connect(nb, None, echo, Deadline::Never),
            Err(Error::InProgress)
        );
        let mut pf = [PollFd::new(nb, Events::WRITABLE)];
        assert_eq!(dev.poll(&mut pf, dl(dev, 5 * SEC)), Ok(1));
        assert!(pf[0].revents.contains(Events::WRITABLE));
        assert_eq!(
            dev.connect(nb, None, echo, Deadline::Never),
            Err(Error::AlreadyConnected)
        );
        let mut buf = [0u8; 8];
        assert_eq!(
            dev.recv(nb, &mut buf, MsgFlags::NONE, Deadline::Never),
            Err(Error::WouldBlock)
        );
        assert_eq!(dev.send(nb, b"nb", MsgFlags::NONE, Deadline::Never), Ok(2));
        let mut pf = [PollFd::new(nb, Events::READABLE)];
        assert_eq!(dev.poll(&mut pf, dl(dev, 5 * SEC)), Ok(1));
        let mut got = Vec::new();
        let end = Instant::now() + 5 * SEC;
        while got.len() < 2 && Instant::now() < end {
            match dev.recv(nb, &mut buf, MsgFlags::NONE, Deadline::Never) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(Error::WouldBlock) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(got, b"nb");
        for f in [fd, nb] {
            dev.close(f).unwrap();
        }
        // The abandoned connect finished on the chip and its link was freed.
        let t = Instant::now();
        while rig.emu.open_links() > 0 && t.elapsed() < 5 * SEC {
            dev.poll(&mut [], dl(dev, Duration::from_millis(50)))
                .unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(rig.emu.open_links(), 0);
    });
}

#[test]
fn eof_hangup_shutdown_and_linger_reset() {
    bounded("close", 60 * SEC, || {
        let rig = Rig::joined();
        let dev = &rig.dev;
        let (l, a) = peer_listener();
        let fd = tcp(dev);
        dev.connect(fd, None, a, dl(dev, 5 * SEC)).unwrap();
        let (mut peer, _) = l.accept().unwrap();
        peer.write_all(b"last words").unwrap();
        drop(peer);
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            let n = dev
                .recv(fd, &mut buf, MsgFlags::NONE, dl(dev, 5 * SEC))
                .unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"last words");
        assert_eq!(
            dev.recv(fd, &mut buf, MsgFlags::NONE, dl(dev, SEC)),
            Ok(0),
            "EOF is sticky"
        );
        let mut pf = [PollFd::new(fd, Events::READABLE)];
        assert_eq!(dev.poll(&mut pf, dl(dev, SEC)), Ok(1));
        assert!(
            pf[0].revents.contains(Events::READABLE | Events::HANGUP),
            "{:?}",
            pf[0].revents
        );
        dev.close(fd).unwrap();

        // shutdown: no half-close in the AT command set; Both closes.
        let fd = tcp(dev);
        dev.connect(fd, None, a, dl(dev, 5 * SEC)).unwrap();
        let (mut peer, _) = l.accept().unwrap();
        assert_eq!(dev.shutdown(fd, Shutdown::Write), Err(Error::NotSupported));
        dev.shutdown(fd, Shutdown::Both).unwrap();
        peer.set_read_timeout(Some(5 * SEC)).unwrap();
        assert_eq!(peer.read(&mut buf).unwrap(), 0, "the peer sees the close");
        assert_eq!(dev.recv(fd, &mut buf, MsgFlags::NONE, dl(dev, SEC)), Ok(0));
        assert_eq!(
            dev.send(fd, b"x", MsgFlags::NONE, dl(dev, SEC)),
            Err(Error::BrokenPipe)
        );
        dev.close(fd).unwrap();

        // Linger(0): the peer gets a reset.
        let fd = tcp(dev);
        dev.connect(fd, None, a, dl(dev, 5 * SEC)).unwrap();
        let (mut peer, _) = l.accept().unwrap();
        dev.set_sock_opt(fd, SockOpt::Linger(Some(Duration::ZERO)))
            .unwrap();
        let t = Instant::now();
        dev.close(fd).unwrap();
        assert!(t.elapsed() < SEC);
        peer.set_read_timeout(Some(5 * SEC)).unwrap();
        let r = peer.read(&mut buf);
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "peer after Linger(0) close: {r:?}"
        );
    });
}

#[test]
fn fd_table_stale_fds_and_misuse() {
    bounded("fds", 30 * SEC, || {
        let rig = Rig::joined();
        let dev = &rig.dev;
        assert_eq!(dev.capabilities().max_sockets, 5);
        assert_eq!(dev.capabilities().tls, TlsSupport::Firmware);
        let fds: Vec<Sockfd> = (0..5).map(|_| tcp(dev)).collect();
        assert_eq!(
            dev.socket(AddressFamily::Inet, SockType::Dgram, Protocol::Udp),
            Err(Error::NoMoreSockets)
        );
        let old = fds[0];
        dev.close(old).unwrap();
        let new = tcp(dev);
        assert_ne!(new, old);
        assert_eq!(dev.close(old), Err(Error::InvalidSockfd));
        assert_eq!(dev.peer_addr(old), Err(Error::InvalidSockfd));
        let mut buf = [0u8; 4];
        assert_eq!(
            dev.recv(old, &mut buf, MsgFlags::NONE, dl(dev, SEC)),
            Err(Error::InvalidSockfd)
        );
        for f in fds.into_iter().skip(1).chain([new]) {
            dev.close(f).unwrap();
        }
        // TLS sockets are SSL links; with nothing trusted yet a connect is
        // refused before anything goes out (tests/espat_tls.rs has the rest).
        let t = dev
            .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tls)
            .unwrap();
        assert_eq!(
            dev.connect(
                t,
                Some("peer.espat.test"),
                "127.0.0.1:443".parse().unwrap(),
                dl(dev, SEC)
            ),
            Err(Error::InvalidArgument)
        );
        assert_eq!(dev.listen(t, 1), Err(Error::NotSupported));
        dev.close(t).unwrap();
        assert_eq!(
            dev.socket(AddressFamily::Inet6, SockType::Stream, Protocol::Tcp),
            Err(Error::FamilyNotSupported)
        );
        let fd = tcp(dev);
        assert_eq!(
            dev.send(fd, b"x", MsgFlags::NONE, dl(dev, SEC)),
            Err(Error::NotConnected)
        );
        assert_eq!(
            dev.recv(fd, &mut buf, MsgFlags::NONE, dl(dev, SEC)),
            Err(Error::NotConnected)
        );
        assert_eq!(
            dev.recv(fd, &mut [], MsgFlags::NONE, dl(dev, SEC)),
            Err(Error::InvalidArgument)
        );
        assert_eq!(
            dev.connect(fd, None, SocketAddr::from(([0, 0, 0, 0], 80)), dl(dev, SEC)),
            Err(Error::AddrNotAvailable)
        );
        let u = udp(dev);
        assert_eq!(dev.listen(u, 1), Err(Error::NotSupported));
        dev.close(fd).unwrap();
        dev.close(u).unwrap();
    });
}

#[test]
fn blocked_recv_does_not_block_other_sockets() {
    bounded("locking", 60 * SEC, || {
        let rig = Rig::joined();
        let dev = rig.dev.clone();
        let (l, a) = peer_listener();
        let quiet = tcp(&dev);
        dev.connect(quiet, None, a, dl(&dev, 5 * SEC)).unwrap();
        let (_q, _) = l.accept().unwrap();
        let d2 = dev.clone();
        let waiter = std::thread::spawn(move || {
            let mut buf = [0u8; 4];
            d2.recv(
                quiet,
                &mut buf,
                MsgFlags::NONE,
                Deadline::after(d2.now(), 3 * SEC),
            )
        });
        // Meanwhile another socket works at full speed.
        let echo = echo_server();
        let fd = tcp(&dev);
        let t = Instant::now();
        dev.connect(fd, None, echo, dl(&dev, 5 * SEC)).unwrap();
        for i in 0..20u64 {
            let m = pattern(i, 500);
            send_all(&dev, fd, &m);
            assert_eq!(recv_exact(&dev, fd, m.len()), m);
        }
        assert!(
            t.elapsed() < 3 * SEC,
            "other socket stalled: {:?}",
            t.elapsed()
        );
        assert_eq!(waiter.join().unwrap(), Err(Error::Timeout));
        // Two threads on one socket: one sends, one receives the echo.
        let data = pattern(77, 200_000);
        let d3 = dev.clone();
        let data2 = data.clone();
        let w = std::thread::spawn(move || {
            for c in data2.chunks(7000) {
                send_all(&d3, fd, c);
            }
        });
        assert!(recv_exact(&dev, fd, data.len()) == data);
        w.join().unwrap();
        dev.close(fd).unwrap();
        dev.close(quiet).unwrap();
    });
}

/// The chip announces its passive buffer once (`+IPD,<link>,<total>`) and
/// not again until it is read: data that arrives in between is never
/// announced. A read that comes back full is followed by another read, not
/// by a wait for an `+IPD` that never comes (the `AT+CIPRECVLEN?` fallback is
/// off here, so a stranded byte would fail the test). Also what the chip says
/// when a second `+IPD` rides inside the read's reply.
#[test]
fn unannounced_data_after_a_full_read_is_fetched() {
    bounded("unannounced", 60 * SEC, || {
        let rig = Rig::new(
            emu_config(),
            Config {
                recvlen_interval: None,
                ..test_driver_config()
            },
        );
        rig.dev.net_connect(&params()).expect("net_connect");
        let dev = &rig.dev;
        let (l, a) = peer_listener();
        let fd = tcp(dev);
        dev.connect(fd, None, a, dl(dev, 5 * SEC)).unwrap();
        let (mut peer, _) = l.accept().unwrap();
        let link = rig
            .emu
            .commands()
            .iter()
            .rev()
            .find_map(|c| {
                c.strip_prefix("AT+CIPSTART=")?
                    .split(',')
                    .next()?
                    .parse::<u8>()
                    .ok()
            })
            .expect("the connect's link");
        let full = netdever::offload::espat::RX_BUF;
        for round in 0..3u64 {
            let first = pattern(10 + round, full);
            peer.write_all(&first).unwrap();
            // The +IPD for `first` has arrived...
            let mut pf = [PollFd::new(fd, Events::READABLE)];
            assert_eq!(dev.poll(&mut pf, dl(dev, 5 * SEC)), Ok(1));
            // ...and more comes while it is outstanding: not announced.
            let second = pattern(20 + round, 1000);
            peer.write_all(&second).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            if round == 2 {
                // A chip that announces what is left right after a read.
                rig.emu
                    .inject_in_next_reply(format!("\r\n+IPD,{link},1000\r\n").as_bytes());
            }
            let want: Vec<u8> = first.iter().chain(&second).copied().collect();
            let d = dl(dev, 5 * SEC);
            let mut got = Vec::new();
            let mut buf = vec![0u8; 4096];
            while got.len() < want.len() {
                match dev.recv(fd, &mut buf, MsgFlags::NONE, d) {
                    Ok(k) if k > 0 => got.extend_from_slice(&buf[..k]),
                    r => panic!(
                        "round {round}: {r:?} after {} of {} bytes",
                        got.len(),
                        want.len()
                    ),
                }
            }
            assert_eq!(got, want, "round {round}");
        }
        dev.close(fd).unwrap();
    });
}

#[test]
fn send_to_a_peer_that_does_not_read_times_out() {
    bounded("send timeout", 120 * SEC, || {
        let rig = Rig::joined();
        let dev = &rig.dev;
        rig.emu.set_send_wait(Duration::from_millis(400));
        let (l, a) = peer_listener();
        let fd = tcp(dev);
        dev.connect(fd, None, a, dl(dev, 5 * SEC)).unwrap();
        let (_peer, _) = l.accept().unwrap();
        dev.set_sock_opt(fd, SockOpt::SendTimeout(Some(Duration::from_millis(300))))
            .unwrap();
        let chunk = vec![0x5a; 65536];
        let mut sent = 0usize;
        let end = Instant::now() + 60 * SEC;
        loop {
            assert!(Instant::now() < end, "send never blocked ({sent} bytes)");
            let t = Instant::now();
            match dev.send(fd, &chunk, MsgFlags::NONE, Deadline::Never) {
                Ok(n) => sent += n,
                Err(Error::Timeout) => {
                    assert!(
                        t.elapsed() >= Duration::from_millis(290) && t.elapsed() < 5 * SEC,
                        "{:?}",
                        t.elapsed()
                    );
                    break;
                }
                Err(e) => panic!("{e:?} after {sent} bytes"),
            }
        }
        assert!(sent > 0);
        dev.set_sock_opt(fd, SockOpt::Linger(Some(Duration::ZERO)))
            .unwrap();
        dev.close(fd).unwrap();
    });
}

#[test]
fn config_chunk_size_and_bus_counts() {
    bounded("chunks", 60 * SEC, || {
        let rig = Rig::new(
            emu_config(),
            Config {
                max_send: 512,
                ..test_driver_config()
            },
        );
        let dev = &rig.dev;
        dev.net_connect(&params()).unwrap();
        let echo = echo_server();
        let fd = tcp(dev);
        dev.connect(fd, None, echo, dl(dev, 5 * SEC)).unwrap();
        let before = rig.emu.bus().snapshot();
        assert_eq!(
            dev.send(fd, &[7u8; 3000], MsgFlags::NONE, dl(dev, 5 * SEC)),
            Ok(512),
            "partial send"
        );
        assert_eq!(recv_exact(dev, fd, 512), vec![7u8; 512]);
        let d = rig.emu.bus().snapshot().since(&before);
        assert_eq!(d.payload, 1024, "512 bytes each way");
        assert!(d.bytes > d.payload && d.bytes < d.payload + 400, "{d:?}");
        dev.close(fd).unwrap();
    });
}

/// The driver keeps little per socket (the chip holds received data until
/// it is read): a stream read goes through one shared buffer into the
/// caller's, small reads are served from the socket's short queue, a peek
/// returns at most that queue, and a peeked datagram longer than the queue
/// waits in the shared buffer — whole — while another socket's stream keeps
/// flowing, until it is read or its socket closes.
#[test]
fn small_queues_small_reads_peek_and_a_parked_datagram() {
    use netdever::offload::espat::RX_BUF;
    bounded("small queues", 60 * SEC, || {
        let rig = Rig::joined();
        let dev = &rig.dev;
        let u = udp(dev);
        dev.bind(u, any(7301)).unwrap();
        let p = UdpSocket::bind((PEER_IP, 0)).unwrap();
        let big = pattern(5, 1400);
        assert!(big.len() + 8 > RX_BUF);
        p.send_to(&big, (DEV_IP, 7301)).unwrap();
        p.send_to(b"after", (DEV_IP, 7301)).unwrap();
        let mut buf = vec![0u8; 2048];
        let (n, from) = dev
            .recv_from(u, &mut buf, MsgFlags::PEEK, dl(dev, 5 * SEC))
            .unwrap();
        assert_eq!((&buf[..n], from), (&big[..], p.local_addr().unwrap()));
        // A stream meanwhile: byte reads, a peek, then the rest.
        let echo = echo_server();
        let fd = tcp(dev);
        dev.connect(fd, None, echo, dl(dev, 5 * SEC)).unwrap();
        let m = pattern(6, 5000);
        send_all(dev, fd, &m);
        let mut got = Vec::new();
        let mut one = [0u8; 1];
        for _ in 0..10 {
            let k = dev
                .recv(fd, &mut one, MsgFlags::NONE, dl(dev, 5 * SEC))
                .unwrap();
            assert_eq!(k, 1);
            got.push(one[0]);
        }
        let mut pk = vec![0u8; 4096];
        let k = dev
            .recv(fd, &mut pk, MsgFlags::PEEK, dl(dev, 5 * SEC))
            .unwrap();
        assert!((1..=RX_BUF).contains(&k), "peek returned {k}");
        assert_eq!(&pk[..k], &m[10..10 + k]);
        got.extend(recv_exact(dev, fd, m.len() - 10));
        assert_eq!(got, m);
        dev.close(fd).unwrap();
        // The parked datagram is still whole: peek again, then a truncating read.
        let (n, _) = dev
            .recv_from(u, &mut buf, MsgFlags::PEEK, dl(dev, 5 * SEC))
            .unwrap();
        assert_eq!(&buf[..n], &big[..]);
        let mut small = [0u8; 100];
        let (n, _) = dev
            .recv_from(u, &mut small, MsgFlags::NONE, dl(dev, 5 * SEC))
            .unwrap();
        assert_eq!(&small[..n], &big[..100]);
        let (n, _) = dev
            .recv_from(u, &mut buf, MsgFlags::NONE, dl(dev, 5 * SEC))
            .unwrap();
        assert_eq!(&buf[..n], b"after");
        // Parked again: another datagram socket waits (its datagram stays on
        // the chip, whole) until the parked one is gone.
        p.send_to(&big, (DEV_IP, 7301)).unwrap();
        dev.recv_from(u, &mut buf, MsgFlags::PEEK, dl(dev, 5 * SEC))
            .unwrap();
        let u2 = udp(dev);
        dev.bind(u2, any(7302)).unwrap();
        p.send_to(&big, (DEV_IP, 7302)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            dev.recv_from(u2, &mut buf, MsgFlags::DONTWAIT, Deadline::Never),
            Err(Error::WouldBlock)
        );
        dev.close(u).unwrap();
        let (n, _) = dev
            .recv_from(u2, &mut buf, MsgFlags::NONE, dl(dev, 5 * SEC))
            .unwrap();
        assert_eq!(&buf[..n], &big[..]);
        dev.close(u2).unwrap();
    });
}
