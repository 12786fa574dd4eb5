//! The conformance suite (`tests/conformance`) on the ESP-AT backend: the
//! driver on the emulated chip (station 127.0.0.3), and the Linux kernel on
//! loopback (127.0.0.1) as the peer, through std::net sockets.
//!
//! The peer is a small `Peer` implementation in this file (`LoopbackPeer`,
//! std::net sockets on 127.0.0.1). When the machine allows it (root, `ip`),
//! each case gets a fresh network namespace holding the emulator's host
//! sockets and the peer's, so the suite's fixed ports never meet other
//! programs; otherwise it runs on the host's loopback.
//!
//! Cases left out, because the AT command set cannot express what they check
//! (see the driver docs, "Limits of the AT command set"):
//! * `tcp_reset`: the firmware reports a peer's RST like its FIN
//!   (`<link>,CLOSED`), so `recv` gives EOF instead of `ConnectionReset`.
//!   The other half (Linger(0) resets the peer) is checked in
//!   `tests/espat_driver.rs`.
//! * `shutdown_write`: no half-close command; `shutdown(Write)` is
//!   `NotSupported`.
//! * `concurrency_8_threads`: eight sockets at once; the chip has five links.
//!
//! Emulated network details the cases rely on: the host 127.0.0.99 (and .98)
//! never answers a SYN (`connect_deadline_timeout`), and names are resolved
//! from the emulated AP's DNS table, which holds the peer's records.
#![cfg(all(feature = "std", feature = "esp-at", feature = "tap"))]

mod support;
#[macro_use]
mod conformance;
#[path = "espat_support.rs"]
mod espat_support;

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conformance::{DnsInfo, Fixture, Peer, PeerListener, PeerStream, PeerUdp};
use espat_support::{emu_config, in_netns, params, test_driver_config, Dev, Netns, Rig, PEER_IP};
use netdever::Netlinker;

/// Names the emulated AP's DNS knows.
const RECORDS: &[(&str, Ipv4Addr)] = &[
    ("peer.conformance.test", PEER_IP),
    ("other.conformance.test", Ipv4Addr::new(10, 0, 0, 77)),
];

fn timed_out(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "timed out")
    } else {
        e
    }
}

/// The kernel on 127.0.0.1 as the peer (inside namespace `ns` if set).
struct LoopbackPeer {
    ns: Option<String>,
}

impl LoopbackPeer {
    /// Make a socket where the peer lives.
    fn make<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> io::Result<R> + Send + 'static,
    ) -> io::Result<R> {
        match &self.ns {
            None => f(),
            Some(ns) => {
                in_netns(ns, f).unwrap_or_else(|_| Err(io::Error::other("peer thread panicked")))
            }
        }
    }
}

struct LoopStream(TcpStream);

impl PeerStream for LoopStream {
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        self.0
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        self.0.read(buf).map_err(timed_out)
    }
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.set_write_timeout(Some(Duration::from_secs(60)))?;
        self.0.write_all(data).map_err(timed_out)
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.0.shutdown(std::net::Shutdown::Write)
    }
    fn abort(self: Box<Self>) -> io::Result<()> {
        let l = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: a valid socket fd and a correctly sized option value.
        let rc = unsafe {
            libc::setsockopt(
                self.0.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &l as *const libc::linger as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }
}

struct LoopListener {
    l: TcpListener,
    local: SocketAddr,
}

impl PeerListener for LoopListener {
    fn local_addr(&self) -> SocketAddr {
        self.local
    }
    fn accept(&mut self, timeout: Duration) -> io::Result<(Box<dyn PeerStream>, SocketAddr)> {
        let end = Instant::now() + timeout;
        loop {
            match self.l.accept() {
                Ok((s, from)) => {
                    s.set_nonblocking(false)?;
                    return Ok((Box::new(LoopStream(s)), from));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= end {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "accept timed out"));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

struct LoopUdp {
    u: UdpSocket,
    local: SocketAddr,
}

impl PeerUdp for LoopUdp {
    fn local_addr(&self) -> SocketAddr {
        self.local
    }
    fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.u.send_to(data, to)
    }
    fn recv_from(&self, buf: &mut [u8], timeout: Duration) -> io::Result<(usize, SocketAddr)> {
        self.u
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        self.u.recv_from(buf).map_err(timed_out)
    }
}

impl Peer for LoopbackPeer {
    fn name(&self) -> String {
        format!("loopback kernel peer {PEER_IP}")
    }
    fn ip(&self) -> Ipv4Addr {
        PEER_IP
    }
    fn tcp_listen(&self, port: u16) -> io::Result<Box<dyn PeerListener>> {
        let l = self.make(move || TcpListener::bind((PEER_IP, port)))?;
        l.set_nonblocking(true)?;
        let local = l.local_addr()?;
        Ok(Box::new(LoopListener { l, local }))
    }
    fn tcp_connect(&self, addr: SocketAddr, timeout: Duration) -> io::Result<Box<dyn PeerStream>> {
        let s = self.make(move || TcpStream::connect_timeout(&addr, timeout))?;
        Ok(Box::new(LoopStream(s)))
    }
    fn udp_bind(&self, port: u16) -> io::Result<Box<dyn PeerUdp>> {
        let u = self.make(move || UdpSocket::bind((PEER_IP, port)))?;
        let local = u.local_addr()?;
        Ok(Box::new(LoopUdp { u, local }))
    }
    fn closed_tcp_port(&self) -> u16 {
        self.make(|| TcpListener::bind((PEER_IP, 0)).and_then(|l| l.local_addr()))
            .map(|a| a.port())
            .unwrap_or(9)
    }
    fn dns_server(&self) -> Option<DnsInfo> {
        Some(DnsInfo {
            server: PEER_IP,
            records: RECORDS.iter().map(|(n, a)| (n.to_string(), *a)).collect(),
        })
    }
}

/// The driver on a fresh emulator, joined; the peer on loopback; both in a
/// fresh namespace when possible.
fn fixture() -> Option<Fixture<Arc<Dev>, LoopbackPeer>> {
    let ns = Netns::new();
    let name = ns.as_ref().map(|n| n.name.clone());
    let make = || {
        let mut cfg = emu_config();
        cfg.dns = RECORDS.iter().map(|(n, a)| (n.to_string(), *a)).collect();
        cfg.connect_timeout = Duration::from_secs(2);
        let rig = Rig::new(cfg, test_driver_config());
        for ghost in [98, 99] {
            rig.emu.blackhole(Ipv4Addr::new(127, 0, 0, ghost));
        }
        rig
    };
    // The emulator's threads (and so its host sockets) live where it starts.
    let rig = match &name {
        Some(n) => in_netns(n, make).expect("start the emulator in the namespace"),
        None => make(),
    };
    rig.dev.net_connect(&params()).expect("net_connect");
    assert_eq!(
        netdever::Netdever::addr(&*rig.dev),
        Ok(IpAddr::V4(espat_support::DEV_IP))
    );
    let Rig { dev, emu } = rig;
    Some(Fixture {
        dut: dev,
        peer: LoopbackPeer { ns: name },
        // Dropped in order: the emulator (its sockets), then the namespace.
        guard: Box::new((emu, ns)),
    })
}

mod suite {
    conformance_tests!(@cases super::fixture;
        tcp_client_echo,
        tcp_client_eof,
        tcp_connect_refused,
        tcp_server_backlog,
        tcp_peek,
        udp_connected,
        udp_server_send_to_recv_from,
        udp_bind_ephemeral,
        udp_peek,
        udp_truncation,
        udp_message_size,
        recv_deadline_timeout,
        connect_deadline_timeout,
        nonblocking_mode,
        dontwait_flag,
        recv_timeout_option,
        send_timeout_option,
        blocked_calls_wake_promptly,
        poll_readable_and_timeout,
        poll_writable,
        poll_listener,
        poll_hangup,
        poll_invalid_fd,
        close_delivers_queued_data,
        sockopt_round_trip,
        sockopt_unsupported,
        misuse_bad_fd,
        misuse_double_close,
        misuse_stale_fd,
        misuse_not_connected,
        misuse_accept_not_listening,
        misuse_listen_udp,
        misuse_connect_twice,
        misuse_fd_table_full,
        misuse_zero_length,
        misuse_unknown_flags,
        misuse_socket_args,
        misuse_addr_in_use,
        misuse_connect_bad_addr,
        integrity_16mib,
        concurrency_same_socket,
        dns,
    );
}

/// The cases left out (see the module docs) fail for the documented
/// reasons, and only for those.
mod limits {
    use super::*;
    use netdever::{Deadline, Error, MsgFlags, Shutdown, Socketer};

    #[test]
    fn peer_reset_reads_as_eof_and_no_half_close() {
        conformance::run_case("espat_limits", fixture, |dut, peer| {
            let (fd, s, _) = conformance::connected_pair(dut, peer);
            assert_eq!(dut.shutdown(fd, Shutdown::Write), Err(Error::NotSupported));
            s.abort().unwrap();
            let mut buf = [0u8; 8];
            let d = Deadline::after(dut.now(), Duration::from_secs(5));
            assert_eq!(
                dut.recv(fd, &mut buf, MsgFlags::NONE, d),
                Ok(0),
                "RST reads as EOF"
            );
            dut.close(fd).unwrap();
            assert_eq!(netdever::Netdever::capabilities(dut).max_sockets, 5);
        });
    }
}
