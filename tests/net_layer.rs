//! The std-like net layer and the embedded-nal adapter, end to end on two
//! stacks joined by the memory switch.

use std::io::Read;
use std::time::Duration;

use embedded_nal::{Dns, TcpClientStack, TcpFullStack, UdpClientStack, UdpFullStack};
use netdever::net::{Nal, TcpListener, TcpStream, UdpSocket};
use netdever::phy::memory::MemoryLink;
use netdever::stack::{host::HostStack, StackConfig};
use netdever::*;

fn pair() -> (HostStack, HostStack) {
    let (a, b) = MemoryLink::pair();
    let mk = |link, last| {
        let cfg = StackConfig {
            ip: IpMode::Static(IpConfig::new(Ipv4Addr::new(10, 0, 0, last), 24)),
            ..Default::default()
        };
        let s = HostStack::new(link, cfg).unwrap();
        s.net_connect(&ConnectParams {
            ip: IpMode::Keep,
            connect_timeout: Duration::from_secs(5),
            ..Default::default()
        })
        .unwrap();
        s
    };
    (mk(a, 1), mk(b, 2))
}

#[test]
fn tcp_stream_and_listener_with_std_io() {
    let (a, b) = pair();
    let listener = TcpListener::bind(b.clone(), "0.0.0.0:8000".parse().unwrap(), 2).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
        buf.len()
    });
    let mut c = TcpStream::dial(&a, "10.0.0.2:8000").unwrap();
    let msg: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    c.write_all(&msg).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    assert_eq!(back, msg);
    assert_eq!(server.join().unwrap(), msg.len());

    // A read deadline on an idle stream gives Timeout, as an io::Error too.
    let listener = TcpListener::bind(b.clone(), "0.0.0.0:8001".parse().unwrap(), 1).unwrap();
    let mut c = TcpStream::connect(&a, "10.0.0.2:8001".parse().unwrap()).unwrap();
    let _held = listener.accept().unwrap();
    c.set_read_deadline(Some(a.now() + Duration::from_millis(100)));
    let e = Read::read(&mut c, &mut [0u8; 4]).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    // Dial by an unknown name: typed error (no DNS server configured).
    assert_eq!(
        TcpStream::dial(&a, "nowhere.test:80").err(),
        Some(Error::HostUnknown)
    );
    assert_eq!(
        TcpStream::dial(&a, "no-port").err(),
        Some(Error::InvalidArgument)
    );
}

#[test]
fn udp_socket_round_trip() {
    let (a, b) = pair();
    let server = UdpSocket::bind(&b, "0.0.0.0:9000".parse().unwrap()).unwrap();
    let client = UdpSocket::bind(&a, "0.0.0.0:0".parse().unwrap()).unwrap();
    client.connect("10.0.0.2:9000".parse().unwrap()).unwrap();
    client.send(b"hi").unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hi");
    assert_eq!(from, client.local_addr().unwrap());
    server.send_to(b"yo", from).unwrap();
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"yo");
}

#[test]
fn embedded_nal_traits() {
    let (a, b) = pair();
    let mut sa = Nal(&a);
    let mut sb = Nal(&b);

    let mut l = TcpClientStack::socket(&mut sb).unwrap();
    TcpFullStack::bind(&mut sb, &mut l, 7000).unwrap();
    sb.listen(&mut l).unwrap();
    let mut c = TcpClientStack::socket(&mut sa).unwrap();
    nb::block!(TcpClientStack::connect(
        &mut sa,
        &mut c,
        "10.0.0.2:7000".parse().unwrap()
    ))
    .unwrap();
    let (mut s, _) = nb::block!(sb.accept(&mut l)).unwrap();
    assert_eq!(
        nb::block!(TcpClientStack::send(&mut sa, &mut c, b"nal")),
        Ok(3)
    );
    let mut buf = [0u8; 8];
    let n = nb::block!(TcpClientStack::receive(&mut sb, &mut s, &mut buf)).unwrap();
    assert_eq!(&buf[..n], b"nal");
    // Nothing more: WouldBlock, not a hang.
    assert!(matches!(
        TcpClientStack::receive(&mut sb, &mut s, &mut buf),
        Err(nb::Error::WouldBlock)
    ));
    TcpClientStack::close(&mut sa, c).unwrap();
    TcpClientStack::close(&mut sb, s).unwrap();
    TcpClientStack::close(&mut sb, l).unwrap();

    let mut u = UdpClientStack::socket(&mut sb).unwrap();
    UdpFullStack::bind(&mut sb, &mut u, 7001).unwrap();
    let mut v = UdpClientStack::socket(&mut sa).unwrap();
    nb::block!(sa.send_to(&mut v, "10.0.0.2:7001".parse().unwrap(), b"dgram")).unwrap();
    let (n, _) = nb::block!(UdpClientStack::receive(&mut sb, &mut u, &mut buf)).unwrap();
    assert_eq!(&buf[..n], b"dgram");

    assert_eq!(
        sa.get_host_by_name("10.0.0.9", embedded_nal::AddrType::IPv4),
        Ok(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)))
    );
    assert!(matches!(
        sa.get_host_by_name("x", embedded_nal::AddrType::IPv6),
        Err(nb::Error::Other(Error::FamilyNotSupported))
    ));
}

/// `TlsStream` on a device without TLS is `ProtocolNotSupported`; over the
/// software TLS layer, a server that answers the ClientHello with garbage is
/// a typed TLS error, and the failed stream gives its socket back (the
/// layer has room for one TLS connection, and the second attempt gets it).
#[test]
fn tls_stream_typed_errors() {
    use netdever::net::TlsStream;
    let (a, b) = pair();
    let at: SocketAddr = "10.0.0.2:8443".parse().unwrap();
    let listener = TcpListener::bind(b.clone(), at, 4).unwrap();
    let e = TlsStream::connect_timeout(&a, "peer.test", at, Duration::from_secs(5));
    assert!(
        matches!(e, Err(Error::ProtocolNotSupported)),
        "{:?}",
        e.err()
    );

    #[cfg(feature = "tls")]
    {
        use netdever::tls::{SoftTls, TlsConfig, TlsPool};
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (s, _) = listener.accept().unwrap();
                let mut hello = [0u8; 5];
                s.read_exact(&mut hello).unwrap();
                assert_eq!(hello[0], 22, "a TLS handshake record comes first");
                s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").unwrap();
            }
        });
        let mut pool = Box::new(TlsPool::<1>::new());
        let tls = SoftTls::with_os_rng(&a, &mut pool, TlsConfig::insecure_no_verify()).unwrap();
        for _ in 0..2 {
            let e = TlsStream::connect_timeout(&tls, "peer.test", at, Duration::from_secs(5));
            assert!(matches!(e, Err(Error::Tls)), "{:?}", e.err());
        }
        server.join().unwrap();
    }
}
