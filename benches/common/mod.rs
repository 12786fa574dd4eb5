//! Shared by the benches: a plain smoltcp endpoint (one `Interface`, one
//! `SocketSet`, one TCP socket) over any netdever [`Link`], for the
//! "raw smoltcp" baseline, and small formatting helpers.
//!
//! The raw endpoint uses the same smoltcp, the same link adapter
//! ([`LinkDevice`]) and the same socket buffer sizes as the Netdever stack,
//! so the ratio between the two measures what the Netdever layer (fd table,
//! locking, blocking calls, driver thread) costs.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::time::Duration;

use netdever::phy::{Link, LinkDevice};
use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint};

/// TCP socket buffers (each direction) on both sides of every comparison.
pub const TCP_BUFFER: usize = 64 * 1024;

/// smoltcp's clock: wall time, as smoltcp's own examples use.
pub fn now() -> smoltcp::time::Instant {
    smoltcp::time::Instant::now()
}

/// One smoltcp interface with one TCP socket, over a netdever link.
pub struct RawEnd<L: Link> {
    iface: Interface,
    dev: LinkDevice<L>,
    sockets: SocketSet<'static>,
    tcp: SocketHandle,
}

impl<L: Link> RawEnd<L> {
    /// An interface at `ip/prefix` on `link` with one TCP socket of
    /// [`TCP_BUFFER`] bytes each way.
    pub fn new(link: L, ip: Ipv4Addr, prefix: u8) -> Self {
        let mut dev = LinkDevice::new(link);
        let mac = EthernetAddress(dev.link().hardware_addr());
        let mut config = Config::new(HardwareAddress::Ethernet(mac));
        config.random_seed = 0x6e64_7672 ^ u64::from(u32::from(ip));
        let mut iface = Interface::new(config, &mut dev, now());
        iface.update_ip_addrs(|addrs| {
            addrs
                .push(IpCidr::new(IpAddress::Ipv4(ip), prefix))
                .expect("one address");
        });
        let mut sockets = SocketSet::new(vec![]);
        let tcp = sockets.add(tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
            tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
        ));
        RawEnd {
            iface,
            dev,
            sockets,
            tcp,
        }
    }

    /// Run smoltcp once; whether any socket changed.
    pub fn poll(&mut self) -> bool {
        self.iface.poll(now(), &mut self.dev, &mut self.sockets) == PollResult::SocketStateChanged
    }

    /// How long smoltcp can wait before it must be polled again.
    pub fn poll_delay(&mut self) -> Option<Duration> {
        self.iface
            .poll_delay(now(), &self.sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
    }

    /// The TCP socket.
    pub fn tcp(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.tcp)
    }

    /// Open a connection to `remote` from `local_port`.
    pub fn connect(&mut self, remote: (Ipv4Addr, u16), local_port: u16) {
        let remote = IpEndpoint::new(IpAddress::Ipv4(remote.0), remote.1);
        let s = self.sockets.get_mut::<tcp::Socket>(self.tcp);
        s.connect(self.iface.context(), remote, local_port)
            .expect("connect");
    }

    /// The link (to take its receive signal).
    pub fn link(&self) -> &L {
        self.dev.link()
    }

    /// Unwrap the link (to hand it to the next contender).
    pub fn into_link(self) -> L {
        self.dev.into_inner()
    }
}

/// Megabytes (10^6 bytes) per second.
pub fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64().max(1e-9) / 1e6
}

/// Whether cargo runs us as a benchmark (`cargo bench`) rather than as a
/// test (`cargo test --benches`, which passes no `--bench`).
pub fn bench_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list")
}

/// The median of some figures.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
