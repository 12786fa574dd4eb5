//! TLS in ESP-AT firmware: the emulator's SSL links (`AT+CIPSTART=..,"SSL"`,
//! `AT+CIPSSLCCONF`, `AT+CIPSSLCSNI`, `AT+CIPSSLCCN`, CA certificates in
//! the manufacturing partition via `AT+SYSMFG`) byte for byte, and the
//! driver's `Protocol::Tls` sockets over them, against `openssl s_server
//! -tls1_3 -rev` on 127.0.0.1 (every line comes back reversed) with a CA
//! made at test time (`tests/support/tlsca.rs`).
//!
//! Needs `openssl`: without it each test skips with a message, or fails
//! under `CI=true` / `NETDEVER_REQUIRE_PEERS=1`.
#![cfg(all(feature = "std", feature = "esp-at", feature = "tap", feature = "tls"))]

#[path = "espat_support.rs"]
mod espat_support;
use espat_support::support;
#[path = "support/tlsca.rs"]
mod tlsca;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use espat_support::*;
use netdever::{
    AddressFamily, Deadline, Error, MsgFlags, Netdever, Protocol, SockType, Socketer, Sockfd,
    TlsSupport, TlsTrust,
};
use tlsca::*;

const S5: Duration = Duration::from_secs(5);

/// Whether `openssl` is there (skip or fail as `support::require` says).
fn have_openssl(test: &str) -> bool {
    let have = support::find_program("openssl").is_some();
    support::require(test, "the `openssl` program", have).is_ok()
}

/// The trusted CA as PEM text.
fn ca_pem() -> String {
    std::fs::read_to_string(pki().dir.join("ca.pem")).expect("read ca.pem")
}

/// Write `pem` into `client_ca.0` with `AT+SYSMFG` (raw bytes).
fn provision(r: &mut Raw, pem: &str) {
    assert_eq!(
        r.exchange(
            &format!("AT+SYSMFG=2,\"client_ca\",\"client_ca.0\",8,{}", pem.len()),
            b">"
        ),
        b"\r\nOK\r\n\r\n>"
    );
    r.raw(pem.as_bytes());
    assert_eq!(r.until(b"OK\r\n", S5), b"\r\nOK\r\n");
}

#[test]
fn emu_ssl_link_verifies_chain_and_name() {
    if !have_openssl("emu_ssl_link_verifies_chain_and_name") {
        return;
    }
    pki();
    bounded(
        "emu_ssl_link_verifies_chain_and_name",
        Duration::from_secs(120),
        || {
            let mut servers = LoopbackServers::default();
            let good = servers.spawn(&GOOD);
            let evil = servers.spawn(&EVIL);
            let mut r = Raw::start(emu_config());
            r.setup();
            provision(&mut r, &ca_pem());
            for c in [
                "AT+CIPSSLCCONF=5,2,0,0",
                "AT+CIPSSLCSNI=5,\"tls.test\"",
                "AT+CIPSSLCCN=5,\"tls.test\"",
            ] {
                assert_eq!(r.exchange(c, b"OK\r\n"), b"\r\nOK\r\n", "{c}");
            }
            // The right chain for the right name: CONNECT, OK, data both ways.
            let start = format!("AT+CIPSTART=0,\"SSL\",\"127.0.0.1\",{}", good.port());
            assert_eq!(
                r.exchange(&start, b"OK\r\n"),
                b"0,CONNECT\r\n\r\nOK\r\n",
                "{:?}",
                r.emu.ssl_log()
            );
            let state = String::from_utf8(r.exchange("AT+CIPSTATE?", b"OK\r\n")).unwrap();
            assert!(
                state.starts_with(&format!(
                    "+CIPSTATE:0,\"SSL\",\"127.0.0.1\",{},",
                    good.port()
                )),
                "{state:?}"
            );
            assert_eq!(r.exchange("AT+CIPSEND=0,6", b">"), b"\r\nOK\r\n\r\n>");
            r.raw(b"hello\n");
            // The echo may overtake SEND OK: both, whole, in either order.
            let sent: &[u8] = b"\r\nRecv 6 bytes\r\n\r\nSEND OK\r\n";
            let echo: &[u8] = b"\r\n+IPD,0,6:olleh\n";
            let mut got = r.until(b"SEND OK\r\n", S5);
            if find(&got, echo).is_none() {
                got.extend(r.until(b"olleh\n", S5));
            }
            assert!(
                got == [sent, echo].concat() || got == [echo, sent].concat(),
                "{:?}",
                String::from_utf8_lossy(&got)
            );
            // An impostor CA with the trusted CA's name: ERROR, no link.
            let start = format!("AT+CIPSTART=1,\"SSL\",\"127.0.0.1\",{}", evil.port());
            assert_eq!(r.exchange(&start, b"ERROR\r\n"), b"\r\nERROR\r\n");
            assert_eq!(r.emu.ssl_log().len(), 1, "{:?}", r.emu.ssl_log());
            // (s_server serves one client at a time.)
            assert_eq!(
                r.exchange("AT+CIPCLOSE=0", b"OK\r\n"),
                b"0,CLOSED\r\n\r\nOK\r\n"
            );
            // The right chain, another name expected: ERROR (with the
            // generic ERR CODE under AT+SYSLOG=1).
            assert_eq!(r.exchange("AT+SYSLOG=1", b"OK\r\n"), b"\r\nOK\r\n");
            assert_eq!(
                r.exchange("AT+CIPSSLCCN=2,\"wrong.test\"", b"OK\r\n"),
                b"\r\nOK\r\n"
            );
            let start = format!("AT+CIPSTART=2,\"SSL\",\"127.0.0.1\",{}", good.port());
            assert_eq!(
                r.exchange(&start, b"ERROR\r\n"),
                b"ERR CODE:0x010a0000\r\n\r\nERROR\r\n"
            );
            assert_eq!(r.emu.open_links(), 0);
            // No verification (auth mode 0) takes the impostor.
            assert_eq!(r.exchange("AT+CIPSSLCCONF=3,0", b"OK\r\n"), b"\r\nOK\r\n");
            let start = format!("AT+CIPSTART=3,\"SSL\",\"127.0.0.1\",{}", evil.port());
            assert_eq!(r.exchange(&start, b"OK\r\n"), b"3,CONNECT\r\n\r\nOK\r\n");
            // Passive receive: +IPD and AT+CIPRECVDATA count the plaintext,
            // AT+CIPRECVLEN? the encrypted bytes (the manual's note: larger
            // than the real data; a TLS 1.3 record adds at least 22 bytes).
            assert_eq!(r.exchange("AT+CIPRECVMODE=1", b"OK\r\n"), b"\r\nOK\r\n");
            assert_eq!(r.exchange("AT+CIPSEND=3,6", b">"), b"\r\nOK\r\n\r\n>");
            r.raw(b"hello\n");
            let mut got = r.until(b"SEND OK\r\n", S5);
            if find(&got, b"+IPD,3,6\r\n").is_none() {
                got.extend(r.until(b"+IPD,3,6\r\n", S5));
            }
            let len = String::from_utf8(r.exchange("AT+CIPRECVLEN?", b"OK\r\n")).unwrap();
            let enc: usize = len
                .strip_prefix("+CIPRECVLEN:,,,")
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{len:?}"));
            assert!(enc >= 6 + 22, "{len:?}");
            assert_eq!(
                r.exchange("AT+CIPRECVDATA=3,100", b"OK\r\n"),
                b"+CIPRECVDATA:6,olleh\n\r\nOK\r\n"
            );
            assert_eq!(
                r.exchange("AT+CIPRECVLEN?", b"OK\r\n"),
                b"+CIPRECVLEN:,,,0,\r\n\r\nOK\r\n"
            );
            assert_eq!(
                r.exchange("AT+CIPCLOSE=3", b"OK\r\n"),
                b"3,CLOSED\r\n\r\nOK\r\n"
            );
            // Mutual authentication needs client certificates: not emulated.
            assert_eq!(r.exchange("AT+CIPSSLCCONF=4,3", b"OK\r\n"), b"\r\nOK\r\n");
            let start = format!("AT+CIPSTART=4,\"SSL\",\"127.0.0.1\",{}", good.port());
            assert_eq!(
                r.exchange(&start, b"ERROR\r\n"),
                b"ERR CODE:0x010a0000\r\n\r\nERROR\r\n"
            );
        },
    );
}

#[test]
fn emu_ssl_link_to_a_server_that_is_not_tls() {
    bounded(
        "emu_ssl_link_to_a_server_that_is_not_tls",
        Duration::from_secs(60),
        || {
            // A peer that answers the ClientHello with garbage, and one
            // that never answers: ERROR, bounded by the connect timeout.
            let garbage = TcpListener::bind((PEER_IP, 0)).unwrap();
            let gport = garbage.local_addr().unwrap().port();
            std::thread::spawn(move || {
                if let Ok((mut s, _)) = garbage.accept() {
                    let mut b = [0u8; 512];
                    let _ = s.read(&mut b);
                    let _ = s.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n");
                    std::thread::sleep(Duration::from_secs(2));
                }
            });
            let silent = TcpListener::bind((PEER_IP, 0)).unwrap();
            let sport = silent.local_addr().unwrap().port();
            let mut r = Raw::start(EspAtConfigExt::with_connect_timeout(Duration::from_secs(1)));
            r.setup();
            let start = format!("AT+CIPSTART=0,\"SSL\",\"{PEER_IP}\",{gport}");
            assert_eq!(r.exchange(&start, b"ERROR\r\n"), b"\r\nERROR\r\n");
            let t = std::time::Instant::now();
            let start = format!("AT+CIPSTART=0,\"SSL\",\"{PEER_IP}\",{sport}");
            r.cmd(&start);
            assert_eq!(r.until(b"ERROR\r\n", S5), b"\r\nERROR\r\n");
            assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
            assert_eq!(r.emu.open_links(), 0);
            drop(silent);
        },
    );
}

/// The emulator configuration with a shorter connect (and handshake) bound.
struct EspAtConfigExt;

impl EspAtConfigExt {
    fn with_connect_timeout(d: Duration) -> netdever_emu::espat::EspAtConfig {
        netdever_emu::espat::EspAtConfig {
            connect_timeout: d,
            ..emu_config()
        }
    }
}

// ------------------------------------------------------------------ driver

fn dl(dev: &impl Socketer, d: Duration) -> Deadline {
    Deadline::after(dev.now(), d)
}

/// The trusted CA (DER).
fn trusted_cas() -> Vec<Vec<u8>> {
    vec![pki().der("ca.pem")]
}

/// Connect a TLS socket to `at` as `host`.
fn tls_connect(dev: &Dev, host: Option<&str>, at: SocketAddr) -> (Sockfd, netdever::Result<()>) {
    let fd = dev
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tls)
        .expect("socket");
    let r = dev.connect(fd, host, at, dl(dev, Duration::from_secs(20)));
    (fd, r)
}

/// Send a line and read its reversal back.
fn round_trip(dev: &Dev, fd: Sockfd, line: &[u8]) {
    let mut sent = 0;
    while sent < line.len() {
        sent += dev
            .send(fd, &line[sent..], MsgFlags::NONE, dl(dev, S5))
            .expect("send");
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while got.len() < line.len() {
        let n = dev
            .recv(fd, &mut buf, MsgFlags::NONE, dl(dev, S5))
            .expect("recv");
        assert!(n > 0, "EOF after {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    let mut want = line[..line.len() - 1].to_vec();
    want.reverse();
    want.push(b'\n');
    assert_eq!(got, want);
}

#[test]
fn driver_tls_sockets_on_firmware_tls() {
    if !have_openssl("driver_tls_sockets_on_firmware_tls") {
        return;
    }
    pki();
    bounded(
        "driver_tls_sockets_on_firmware_tls",
        Duration::from_secs(180),
        || {
            let mut servers = LoopbackServers::default();
            let good = servers.spawn(&GOOD);
            let evil = servers.spawn(&EVIL);
            let chain = servers.spawn(&CHAIN);
            let rig = Rig::joined();
            let dev = &*rig.dev;
            assert_eq!(dev.capabilities().tls, TlsSupport::Firmware);
            rig.emu.add_dns(HOST, PEER_IP);

            // Nothing trusted yet: a TLS connect is refused before any traffic.
            let (fd, r) = tls_connect(dev, Some(HOST), good);
            assert_eq!(r, Err(Error::InvalidArgument));
            dev.close(fd).unwrap();

            // The app's CA reaches the chip's manufacturing partition.
            let cas = trusted_cas();
            let refs: Vec<&[u8]> = cas.iter().map(|c| c.as_slice()).collect();
            dev.set_tls_trust(TlsTrust::Cas(&refs))
                .expect("set_tls_trust");
            let cmds = rig.emu.commands();
            assert!(
                cmds.iter()
                    .any(|c| c.starts_with("AT+SYSMFG=2,\"client_ca\",\"client_ca.0\",8,")),
                "{cmds:?}"
            );

            // (a) The right chain for the right name: data both ways.
            let (fd, r) = tls_connect(dev, Some(HOST), good);
            r.expect("TLS connect to the good server");
            round_trip(dev, fd, b"hello over firmware TLS\n");
            let long: Vec<u8> = (0..3000)
                .map(|i| b'a' + (i % 26) as u8)
                .chain([b'\n'])
                .collect();
            round_trip(dev, fd, &long);
            // 40 KB each way at once: a reader thread while this one sends
            // (the chip's passive window and the TLS records take turns).
            let lines: Vec<u8> = (0..400u32)
                .flat_map(|i| {
                    let mut l: Vec<u8> = (0..99u32).map(|j| b'a' + ((i + j) % 26) as u8).collect();
                    l.push(b'\n');
                    l
                })
                .collect();
            let want: Vec<u8> = lines
                .split_inclusive(|&b| b == b'\n')
                .flat_map(|l| {
                    let mut r = l[..l.len() - 1].to_vec();
                    r.reverse();
                    r.push(b'\n');
                    r
                })
                .collect();
            let reader = {
                let dev = rig.dev.clone();
                let n = want.len();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 2048];
                    while got.len() < n {
                        match dev.recv(
                            fd,
                            &mut buf,
                            MsgFlags::NONE,
                            dl(&*dev, Duration::from_secs(20)),
                        ) {
                            Ok(0) | Err(_) => break,
                            Ok(k) => got.extend_from_slice(&buf[..k]),
                        }
                    }
                    got
                })
            };
            let mut sent = 0;
            while sent < lines.len() {
                sent += dev
                    .send(
                        fd,
                        &lines[sent..],
                        MsgFlags::NONE,
                        dl(dev, Duration::from_secs(20)),
                    )
                    .expect("bulk send");
            }
            let got = reader.join().unwrap();
            assert_eq!(got.len(), want.len());
            assert!(got == want, "bulk data differs");
            dev.close(fd).unwrap();
            // What reached the chip for that link: verify against
            // client_ca.0, SNI and expected name = the connect host.
            let cmds = rig.emu.commands();
            let start = cmds
                .iter()
                .rposition(|c| c.starts_with("AT+CIPSTART=") && c.contains(",\"SSL\","))
                .expect("an SSL AT+CIPSTART");
            let link = &cmds[start]["AT+CIPSTART=".len()..][..1];
            assert_eq!(
                cmds[start],
                format!("AT+CIPSTART={link},\"SSL\",\"127.0.0.1\",{}", good.port())
            );
            for want in [
                format!("AT+CIPSSLCCONF={link},2,0,0"),
                format!("AT+CIPSSLCSNI={link},\"{HOST}\""),
                format!("AT+CIPSSLCCN={link},\"{HOST}\""),
            ] {
                assert!(cmds[..start].contains(&want), "{want}: {cmds:?}");
            }

            // A chain through an intermediate CA.
            let (fd, r) = tls_connect(dev, Some(HOST), chain);
            r.expect("TLS connect through an intermediate");
            round_trip(dev, fd, b"chain\n");
            dev.close(fd).unwrap();

            // A certificate issued by a leaf (not a CA), with that leaf.
            let forged = servers.spawn(&FORGED);
            let (fd, r) = tls_connect(dev, Some(HOST), forged);
            assert_eq!(r, Err(Error::CertificateInvalid));
            dev.close(fd).unwrap();

            // (b) An untrusted chain (an impostor CA with the same name).
            let (fd, r) = tls_connect(dev, Some(HOST), evil);
            assert_eq!(r, Err(Error::CertificateInvalid));
            dev.close(fd).unwrap();

            // (c) The right chain, the wrong host name.
            let (fd, r) = tls_connect(dev, Some("wrong.test"), good);
            assert_eq!(r, Err(Error::CertificateInvalid));
            dev.close(fd).unwrap();

            // The server's address is not a name its certificate carries.
            let (fd, r) = tls_connect(dev, Some("127.0.0.1"), good);
            assert_eq!(r, Err(Error::CertificateInvalid));
            dev.close(fd).unwrap();

            // Verification needs a host name.
            let (fd, r) = tls_connect(dev, None, good);
            assert_eq!(r, Err(Error::InvalidArgument));
            dev.close(fd).unwrap();

            // (d) The explicit insecure option takes the impostor.
            dev.set_tls_trust(TlsTrust::DangerAcceptAnyCertificate)
                .expect("insecure trust");
            let (fd, r) = tls_connect(dev, Some(HOST), evil);
            r.expect("insecure connect");
            round_trip(dev, fd, b"anyone\n");
            dev.close(fd).unwrap();

            // The server ends the connection (s_server -www answers
            // GET / and closes): the whole answer, then end of file.
            let www = servers.spawn_mode(&GOOD, "-www");
            dev.set_tls_trust(TlsTrust::Cas(&refs))
                .expect("set_tls_trust");
            let (fd, r) = tls_connect(dev, Some(HOST), www);
            r.expect("TLS connect to s_server -www");
            let req = b"GET / HTTP/1.0\r\n\r\n";
            assert_eq!(
                dev.send(fd, req, MsgFlags::NONE, dl(dev, S5)),
                Ok(req.len())
            );
            let mut page = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                match dev.recv(
                    fd,
                    &mut buf,
                    MsgFlags::NONE,
                    dl(dev, Duration::from_secs(10)),
                ) {
                    Ok(0) => break,
                    Ok(n) => page.extend_from_slice(&buf[..n]),
                    Err(e) => panic!("recv after {} bytes: {e:?}", page.len()),
                }
            }
            let text = String::from_utf8_lossy(&page);
            assert!(text.starts_with("HTTP/1.0 200 ok\r\n"), "{text:?}");
            assert!(text.contains("</BODY></HTML>"), "{text:?}");
            dev.close(fd).unwrap();

            // Back to verifying: the impostor is refused again.
            dev.set_tls_trust(TlsTrust::Cas(&refs))
                .expect("set_tls_trust");
            let (fd, r) = tls_connect(dev, Some(HOST), evil);
            assert_eq!(r, Err(Error::CertificateInvalid));
            dev.close(fd).unwrap();
            drop(servers);
        },
    );
}

#[test]
fn driver_tls_failing_servers_are_typed_errors() {
    bounded(
        "driver_tls_failing_servers_are_typed_errors",
        Duration::from_secs(120),
        || {
            let rig = Rig::joined();
            let dev = &*rig.dev;
            dev.set_tls_trust(TlsTrust::DangerAcceptAnyCertificate)
                .expect("trust");
            // A server that answers the ClientHello with garbage: Error::Tls.
            let garbage = TcpListener::bind((PEER_IP, 0)).unwrap();
            let at = garbage.local_addr().unwrap();
            std::thread::spawn(move || {
                for s in garbage.incoming().take(4) {
                    let Ok(mut s) = s else { break };
                    std::thread::spawn(move || {
                        let mut b = [0u8; 512];
                        let _ = s.read(&mut b);
                        let _ = s.write_all(b"garbage garbage garbage\r\n");
                        std::thread::sleep(Duration::from_secs(1));
                    });
                }
            });
            let (fd, r) = tls_connect(dev, Some("garbage.test"), at);
            assert_eq!(r, Err(Error::Tls));
            dev.close(fd).unwrap();
            // Nobody listening: ConnectionRefused, as for TCP.
            let closed = TcpListener::bind((PEER_IP, 0)).unwrap();
            let at = closed.local_addr().unwrap();
            drop(closed);
            let (fd, r) = tls_connect(dev, Some("nobody.test"), at);
            assert_eq!(r, Err(Error::ConnectionRefused));
            dev.close(fd).unwrap();
            // A server that never answers the handshake: the caller's
            // deadline ends the connect (Timeout), no later than asked.
            let silent = TcpListener::bind((PEER_IP, 0)).unwrap();
            let at = silent.local_addr().unwrap();
            let fd = dev
                .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tls)
                .unwrap();
            let t0 = std::time::Instant::now();
            let r = dev.connect(fd, Some("silent.test"), at, dl(dev, Duration::from_secs(1)));
            assert_eq!(r, Err(Error::Timeout));
            assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
            dev.close(fd).unwrap();
            // The device still works afterwards.
            let fd = dev
                .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
                .unwrap();
            let l = TcpListener::bind((PEER_IP, 0)).unwrap();
            dev.connect(fd, None, l.local_addr().unwrap(), dl(dev, S5))
                .expect("plain TCP after failed TLS");
            dev.close(fd).unwrap();
        },
    );
}
