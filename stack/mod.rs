//! The full-stack backend: a [`Netdever`](crate::Netdever) over one smoltcp interface.
//!
//! [`Stack`] owns a smoltcp `Interface`, the [`Link`] under it (through
//! [`LinkDevice`]), a `SocketSet`, and the shared
//! [`FdTable`] that maps socket fds onto smoltcp socket handles.
//!
//! # Why a socket pool
//!
//! smoltcp sockets borrow their buffers for the life of the socket set, and
//! a TCP socket holds exactly one connection. So every smoltcp socket the
//! stack will use is created when the stack is built (from a
//! [`BufferSource`]) and recycled afterwards: `socket()` takes one from the
//! pool, `close()` gives it back once its connection has finished closing in
//! the background. A listener with `backlog` N holds N pooled sockets in
//! LISTEN on its port — smoltcp hands each new SYN to the next socket that is
//! still listening — so N connections can be pending before the first
//! `accept`, and `accept` refills the pool behind it.
//!
//! The pool's bookkeeping is bit sets (`TcpMask`, `UdpMask`): bit `i`
//! stands for the `i`-th TCP (resp. UDP) socket of the socket set, in the
//! order they were added. Lists of handles sized for the most sockets a
//! stack can have would cost more RAM than a small stack's sockets; a bit set
//! costs 8 bytes whatever the count, and the socket set already holds the
//! handles (finding one is a walk over the set, as smoltcp's own poll does).
//!
//! # Driving the stack
//!
//! Somebody has to call smoltcp's `poll` when frames arrive and timers fire:
//!
//! * **std**: [`host::HostStack`] runs a background thread that sleeps on the
//!   link's receive signal (no lock held) and polls when a frame arrives or
//!   the next smoltcp timer is due.
//! * **bare metal**: call [`Stack::poll`] from your main loop or from the
//!   link's interrupt, and use a [`Platform`] whose `wait` fits (with
//!   [`SpinPlatform`](crate::platform::SpinPlatform), a blocked socket call
//!   polls the stack itself until it can proceed).
//!
//! Socket calls also poll once right after they change something (queue
//! data, free window space, open or close a connection), so frames leave at
//! once instead of at the driver's next wake-up.
//!
//! # Locking
//!
//! One lock guards all of it, held only while a call touches smoltcp state
//! (bounded work). Blocked calls wait on the platform's epoch with the lock
//! released ([`crate::wait`]); every poll that changed socket state advances
//! the epoch.

mod config;
mod fd;
#[cfg(feature = "std")]
pub mod host;
mod netdev;

use core::sync::atomic::{AtomicBool, Ordering};

use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::socket::{dhcpv4, dns, tcp, udp, Socket};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Cidr};

#[cfg(feature = "std")]
pub use config::HeapResources;
pub use config::{
    BufferSource, SliceResources, StackConfig, DNS_QUERIES, INTERNAL_SOCKETS, MAX_TCP_SOCKETS,
    MAX_UDP_SOCKETS,
};
pub use fd::MAX_BACKLOG;

use crate::error::{Error, Result};
use crate::fdtable::FdTable;
use crate::netlink::{Event, IpMode, NotifyFn};
pub use crate::phy::DEFAULT_RAW_QUEUE_BYTES;
use crate::phy::{Link, LinkDevice};
use crate::platform::Platform;
use crate::time::Instant;
use crate::types::{IpConfig, Ipv4Addr};
use fd::{Fd, TcpState};

/// How often the link's carrier state is read while polling.
const LINK_CHECK_MICROS: u64 = 50_000;
/// How long a closed fd's connection may go silent while it finishes closing.
const CLOSING_TIMEOUT_SECS: u64 = 60;
/// First port of the ephemeral range (IANA).
const EPHEMERAL_START: u16 = 49152;

pub(crate) fn smol_now(now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(now.as_micros() as i64)
}

fn from_smol(i: smoltcp::time::Instant) -> Instant {
    Instant::from_micros(i.total_micros().max(0) as u64)
}

/// A [`Netdever`](crate::Netdever) + [`Netlinker`](crate::Netlinker) over smoltcp and a raw-frame [`Link`].
///
/// `FDS` is the fd table size (default 16, at most 256).
///
/// `RAW` is the size in bytes of the queue that keeps frames smoltcp does not
/// handle (not IPv4, not ARP) for [`Netlinker::recv_eth`](crate::Netlinker::recv_eth):
/// by default [`DEFAULT_RAW_QUEUE_BYTES`] (one full-size frame, or several
/// small ones; the oldest make room). An app that never reads raw frames can
/// save that RAM with `RAW = 0` (`Stack<'_, L, P, 16, 0>`); `recv_eth` then
/// answers `NotSupported`, while `send_eth` still works.
pub struct Stack<
    'a,
    L: Link,
    P: Platform,
    const FDS: usize = 16,
    const RAW: usize = DEFAULT_RAW_QUEUE_BYTES,
> {
    platform: P,
    inner: lock_api::Mutex<P::RawMutex, Inner<'a, L, FDS, RAW>>,
    driver_active: AtomicBool,
    limits: Limits,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    tcp: usize,
    udp: usize,
    udp_tx_buffer: usize,
    dns_timeout: core::time::Duration,
}

/// A set of pooled TCP sockets: bit `i` is the `i`-th TCP socket of the
/// socket set (see [`tcp_sockets`]).
pub(crate) type TcpMask = u64;
/// A set of pooled UDP sockets: bit `i` is the `i`-th UDP socket.
pub(crate) type UdpMask = u32;

const _: () = assert!(MAX_TCP_SOCKETS <= TcpMask::BITS as usize);
const _: () = assert!(MAX_UDP_SOCKETS <= UdpMask::BITS as usize);
const _: () = assert!(MAX_BACKLOG <= MAX_TCP_SOCKETS && MAX_BACKLOG <= u8::MAX as usize);

pub(crate) struct Inner<'a, L: Link, const FDS: usize, const RAW: usize> {
    now: Instant,
    iface: Interface,
    dev: LinkDevice<L, RAW>,
    sockets: SocketSet<'a>,
    fds: FdTable<Fd, FDS>,
    /// TCP sockets owned by nobody and closed: ready to hand out.
    tcp_free: TcpMask,
    /// TCP sockets of closed fds still closing in the background.
    tcp_closing: TcpMask,
    /// Sockets in CLOSE-WAIT whose FIN waits until their send queue drains
    /// (see [`Inner::close_tx`]).
    fin_pending: TcpMask,
    /// UDP sockets owned by no fd.
    udp_free: UdpMask,
    dns: SocketHandle,
    dhcp: Option<SocketHandle>,
    ip: Option<IpConfig>,
    joined: bool,
    link_up: bool,
    up: bool,
    last_link_check: Option<Instant>,
    events: heapless::Deque<Event, 8>,
    notify_fn: Option<NotifyFn>,
    rng: u64,
}

impl<'a, L: Link, P: Platform, const FDS: usize, const RAW: usize> Stack<'a, L, P, FDS, RAW> {
    /// Build a stack on `link`. Socket memory comes from `resources`; the
    /// RNG seeds TCP initial sequence numbers, DNS ids and ephemeral ports.
    /// The address mode in `config.ip` is applied at once (DHCP starts
    /// immediately, a static address is configured).
    pub fn new(
        link: L,
        platform: P,
        config: &StackConfig,
        mut resources: impl BufferSource<'a>,
        rng: &mut impl rand_core::RngCore,
    ) -> Result<Self> {
        if config.tcp_sockets == 0
            || config.tcp_sockets > MAX_TCP_SOCKETS
            || config.udp_sockets > MAX_UDP_SOCKETS
            || config.udp_packets == 0
        {
            return Err(Error::InvalidArgument);
        }
        let mut dev = LinkDevice::new(link);
        let mac = EthernetAddress(dev.link().hardware_addr());
        let mut iface_config = Config::new(HardwareAddress::Ethernet(mac));
        iface_config.random_seed = rng.next_u64();
        let now = platform.now();
        let iface = Interface::new(iface_config, &mut dev, smol_now(now));

        let storage = resources
            .socket_storage(config.socket_storage_len())
            .ok_or(Error::InvalidArgument)?;
        let mut sockets = SocketSet::new(storage);
        for _ in 0..config.tcp_sockets {
            let (rx, tx) = resources
                .tcp(config.tcp_rx_buffer, config.tcp_tx_buffer)
                .ok_or(Error::InvalidArgument)?;
            sockets.add(tcp::Socket::new(rx, tx));
        }
        for _ in 0..config.udp_sockets {
            let (rx, tx) = resources
                .udp(
                    config.udp_rx_buffer,
                    config.udp_tx_buffer,
                    config.udp_packets,
                )
                .ok_or(Error::InvalidArgument)?;
            sockets.add(udp::Socket::new(rx, tx));
        }
        let queries = resources.dns_queries().ok_or(Error::InvalidArgument)?;
        let dns = sockets.add(dns::Socket::new(&[], queries));
        // Pool indices count the set's sockets: it must hold ours only.
        if sockets.iter().count() != config.tcp_sockets + config.udp_sockets + 1 {
            return Err(Error::InvalidArgument);
        }

        let mut inner = Inner {
            now,
            iface,
            dev,
            sockets,
            fds: FdTable::new(),
            tcp_free: low_bits(config.tcp_sockets),
            tcp_closing: 0,
            fin_pending: 0,
            udp_free: low_bits(config.udp_sockets) as UdpMask,
            dns,
            dhcp: None,
            ip: None,
            joined: true,
            link_up: false,
            up: false,
            last_link_check: None,
            events: heapless::Deque::new(),
            notify_fn: None,
            rng: rng.next_u64() | 1,
        };
        inner.apply_ip_mode(&config.ip);
        Ok(Stack {
            platform,
            inner: lock_api::Mutex::new(inner),
            driver_active: AtomicBool::new(false),
            limits: Limits {
                tcp: config.tcp_sockets,
                udp: config.udp_sockets,
                udp_tx_buffer: config.udp_tx_buffer,
                dns_timeout: config.dns_timeout,
            },
        })
    }

    /// The platform (clock and waits) this stack runs on.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// Process frames and timers once, deliver link events, and return when
    /// the stack wants to be polled again (`None`: only when a frame arrives).
    pub fn poll(&self) -> Option<Instant> {
        self.with(|g| g.poll_at())
    }

    /// Tell the stack whether a driver (thread or interrupt) polls it. When
    /// none does, blocked socket calls poll the stack themselves.
    pub fn set_driver_active(&self, active: bool) {
        self.driver_active.store(active, Ordering::Release);
    }

    /// Counters of the link adapter.
    pub fn link_stats(&self) -> crate::phy::LinkStats {
        self.inner.lock().dev.stats()
    }

    /// Run `f` on the link under the stack lock (to flip test knobs, read counters).
    pub fn with_link<R>(&self, f: impl FnOnce(&mut L) -> R) -> R {
        f(self.inner.lock().dev.link_mut())
    }

    /// The link's receive signal, for a driver thread.
    #[cfg(feature = "std")]
    pub fn rx_signal(&self) -> Option<std::sync::Arc<dyn crate::phy::RxSignal>> {
        self.inner.lock().dev.link().rx_signal()
    }

    /// Lock, poll, run `f`, poll again to push out what `f` queued, notify
    /// waiters, unlock, then deliver link events.
    fn with<R>(&self, f: impl FnOnce(&mut Inner<'a, L, FDS, RAW>) -> R) -> R {
        let (r, events, cb) = {
            let mut g = self.inner.lock();
            let now = self.platform.now();
            g.now = now;
            let mut changed = false;
            if !self.driver_active.load(Ordering::Acquire) {
                changed |= g.poll(now);
            }
            let r = f(&mut g);
            changed |= g.poll(now);
            if changed {
                self.platform.notify();
            }
            let mut events: heapless::Vec<Event, 8> = heapless::Vec::new();
            while let Some(e) = g.events.pop_front() {
                let _ = events.push(e);
            }
            (r, events, g.notify_fn)
        };
        if let Some(cb) = cb {
            for e in events {
                cb(e);
            }
        }
        r
    }

    /// Like [`Self::with`] for one attempt of a blocking call: when no driver
    /// polls the stack, a pending attempt asks to be retried when smoltcp's
    /// next timer is due.
    fn attempt<T>(
        &self,
        f: impl FnOnce(&mut Inner<'a, L, FDS, RAW>) -> crate::wait::Attempt<T>,
    ) -> crate::wait::Attempt<T> {
        use crate::wait::Attempt;
        let driven = self.driver_active.load(Ordering::Acquire);
        let (a, poll_at) = self.with(|g| {
            let a = f(g);
            let at = if driven { None } else { g.poll_at() };
            (a, at)
        });
        match a {
            Attempt::Pending { wake_at } if !driven => {
                // Nothing else will poll: come back for smoltcp's timers, and
                // soon regardless, since frames arriving do not notify us.
                let soon = self.platform.now() + core::time::Duration::from_millis(1);
                let at = [wake_at, poll_at, Some(soon)].into_iter().flatten().min();
                Attempt::Pending { wake_at: at }
            }
            a => a,
        }
    }
}

impl<'a, L: Link, const FDS: usize, const RAW: usize> Inner<'a, L, FDS, RAW> {
    /// One smoltcp poll plus the stack's own housekeeping. Returns whether
    /// socket state may have changed.
    fn poll(&mut self, now: Instant) -> bool {
        let mut changed = false;
        let check_link = match self.last_link_check {
            None => true,
            Some(t) => now.saturating_since(t).as_micros() as u64 >= LINK_CHECK_MICROS,
        };
        if check_link {
            self.last_link_check = Some(now);
            let up = self.dev.link_mut().link_up();
            if up != self.link_up {
                self.link_up = up;
                changed = true;
                if !up {
                    if let Some(h) = self.dhcp {
                        // A new link may mean a new network: ask again.
                        self.sockets.get_mut::<dhcpv4::Socket>(h).reset();
                        self.set_ip(None);
                    }
                }
            }
        }
        if self
            .iface
            .poll(smol_now(now), &mut self.dev, &mut self.sockets)
            == PollResult::SocketStateChanged
        {
            changed = true;
        }
        if let Some(h) = self.dhcp {
            let ev = match self.sockets.get_mut::<dhcpv4::Socket>(h).poll() {
                None => None,
                Some(dhcpv4::Event::Deconfigured) => Some(None),
                Some(dhcpv4::Event::Configured(c)) => {
                    let mut cfg = IpConfig::new(c.address.address(), c.address.prefix_len());
                    cfg.gateway = c.router;
                    for s in c.dns_servers.iter().take(3) {
                        let _ = cfg.dns.push(*s);
                    }
                    Some(Some(cfg))
                }
            };
            if let Some(cfg) = ev {
                self.set_ip(cfg);
                changed = true;
            }
        }
        changed |= self.housekeeping();
        let up = self.joined && self.link_up && self.ip.is_some();
        if up != self.up {
            self.up = up;
            if self.events.is_full() {
                self.events.pop_front();
            }
            let _ = self
                .events
                .push_back(if up { Event::NetUp } else { Event::NetDown });
            changed = true;
        }
        changed
    }

    fn poll_at(&mut self) -> Option<Instant> {
        let now = smol_now(self.now);
        let at = self.iface.poll_at(now, &self.sockets).map(from_smol);
        // Keep reading the carrier while the link is up or coming up.
        let link = self
            .last_link_check
            .map(|t| t + core::time::Duration::from_micros(LINK_CHECK_MICROS));
        [at, link].into_iter().flatten().min()
    }

    /// Recycle closed sockets, refill listener backlogs, note FINs.
    fn housekeeping(&mut self) -> bool {
        let mut changed = false;
        // Split borrows: fds vs sockets/pool.
        let Inner {
            fds,
            sockets,
            tcp_free,
            tcp_closing,
            fin_pending,
            ..
        } = self;
        if *fin_pending | *tcp_closing != 0 {
            for (i, _, s) in tcp_sockets_mut(sockets) {
                let bit = 1 << i;
                if *fin_pending & bit != 0 {
                    if s.state() != tcp::State::CloseWait {
                        *fin_pending &= !bit;
                    } else if s.send_queue() == 0 {
                        s.close();
                        *fin_pending &= !bit;
                        changed = true;
                    }
                }
                if *tcp_closing & bit != 0 && s.state() == tcp::State::Closed {
                    *tcp_closing &= !bit;
                    *tcp_free |= bit;
                }
            }
        }
        for (_, fd) in fds.iter_mut() {
            let Fd::Tcp(t) = fd else { continue };
            match &mut t.state {
                TcpState::Connected { eof, .. } => {
                    if let Some(h) = t.handle {
                        if matches!(
                            sockets.get::<tcp::Socket>(h).state(),
                            tcp::State::CloseWait
                                | tcp::State::LastAck
                                | tcp::State::Closing
                                | tcp::State::TimeWait
                        ) && !*eof
                        {
                            *eof = true;
                            changed = true;
                        }
                    }
                }
                TcpState::Listening {
                    port,
                    backlog,
                    wanted,
                } => {
                    for (i, _, s) in tcp_sockets_mut(sockets) {
                        if *backlog & (1 << i) != 0 && s.state() == tcp::State::Closed {
                            // A half-open connection was reset; listen again.
                            let _ = s.listen(*port);
                        }
                    }
                    while backlog.count_ones() < u32::from(*wanted) {
                        let Some((i, h)) = take_tcp(tcp_free, tcp_closing, sockets) else {
                            break;
                        };
                        if sockets.get_mut::<tcp::Socket>(h).listen(*port).is_err() {
                            *tcp_free |= 1 << i;
                            break;
                        }
                        *backlog |= 1 << i;
                    }
                }
                _ => {}
            }
        }
        changed
    }

    fn apply_ip_mode(&mut self, mode: &IpMode) {
        match mode {
            IpMode::Dhcp => {
                match self.dhcp {
                    Some(h) => self.sockets.get_mut::<dhcpv4::Socket>(h).reset(),
                    None => self.dhcp = Some(self.sockets.add(dhcpv4::Socket::new())),
                }
                self.set_ip(None);
            }
            IpMode::Static(cfg) => {
                self.stop_dhcp();
                self.set_ip(Some(cfg.clone()));
            }
            IpMode::Keep => {}
        }
    }

    fn stop_dhcp(&mut self) {
        if let Some(h) = self.dhcp.take() {
            self.sockets.remove(h);
        }
    }

    fn set_ip(&mut self, cfg: Option<IpConfig>) {
        self.iface.update_ip_addrs(|addrs| {
            addrs.clear();
            if let Some(c) = &cfg {
                let _ = addrs.push(IpCidr::Ipv4(Ipv4Cidr::new(c.addr, c.prefix_len)));
            }
        });
        match cfg.as_ref().and_then(|c| c.gateway) {
            Some(gw) => {
                let _ = self.iface.routes_mut().add_default_ipv4_route(gw);
            }
            None => {
                self.iface.routes_mut().remove_default_ipv4_route();
            }
        }
        let servers: heapless::Vec<IpAddress, 3> = cfg
            .as_ref()
            .map(|c| c.dns.iter().map(|a| IpAddress::Ipv4(*a)).collect())
            .unwrap_or_default();
        self.sockets
            .get_mut::<dns::Socket>(self.dns)
            .update_servers(&servers);
        self.ip = cfg;
    }

    /// A pseudo-random number from the seeded generator (splitmix64).
    fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Whether a TCP or UDP local port is taken by an fd or a live socket.
    fn port_in_use(&self, udp_side: bool, port: u16) -> bool {
        for (_, fd) in self.fds.iter() {
            match fd {
                Fd::Udp(u) if udp_side && u.bound == Some(port) => return true,
                Fd::Tcp(t) if !udp_side => match &t.state {
                    TcpState::Idle { bound } if *bound == Some(port) => return true,
                    TcpState::Listening { port: p, .. } if *p == port => return true,
                    _ => {}
                },
                _ => {}
            }
        }
        if !udp_side {
            for (h, s) in self.sockets.iter() {
                let _ = h;
                if let smoltcp::socket::Socket::Tcp(t) = s {
                    if t.state() != tcp::State::Closed && t.listen_endpoint().port == port {
                        return true;
                    }
                    if let Some(ep) = t.local_endpoint() {
                        if t.state() != tcp::State::Closed && ep.port == port {
                            return true;
                        }
                    }
                }
            }
        }
        false
    }

    /// A free ephemeral port.
    fn ephemeral_port(&mut self, udp_side: bool) -> Result<u16> {
        let span = u16::MAX - EPHEMERAL_START + 1;
        for _ in 0..64 {
            let p = EPHEMERAL_START + (self.random() % span as u64) as u16;
            if !self.port_in_use(udp_side, p) {
                return Ok(p);
            }
        }
        // Fall back to a scan so a crowded range still finds a hole.
        (EPHEMERAL_START..=u16::MAX)
            .find(|&p| !self.port_in_use(udp_side, p))
            .ok_or(Error::AddrInUse)
    }

    /// Whether `dst` can be reached: on-link, or there is a gateway.
    fn route_check(&self, dst: Ipv4Addr) -> Result<()> {
        let cfg = self.ip.as_ref().ok_or(Error::NetworkDown)?;
        if !self.link_up {
            return Err(Error::NetworkDown);
        }
        let on_link = Ipv4Cidr::new(cfg.addr, cfg.prefix_len).contains_addr(&dst);
        if on_link || dst.is_broadcast() || cfg.gateway.is_some() {
            Ok(())
        } else {
            Err(Error::NetworkUnreachable)
        }
    }

    fn take_tcp(&mut self) -> Option<SocketHandle> {
        take_tcp(&mut self.tcp_free, &mut self.tcp_closing, &mut self.sockets).map(|(_, h)| h)
    }

    /// Give a TCP socket that never left the pool's hands straight back.
    fn untake_tcp(&mut self, h: SocketHandle) {
        if let Some(i) = tcp_index(&self.sockets, h) {
            self.tcp_free |= 1 << i;
        }
    }

    /// Whether `h` is still closing in the background (not yet recycled).
    fn tcp_is_closing(&self, h: SocketHandle) -> bool {
        tcp_index(&self.sockets, h).is_some_and(|i| self.tcp_closing & (1 << i) != 0)
    }

    /// Take a UDP socket from the pool.
    fn take_udp(&mut self) -> Option<SocketHandle> {
        let i = self.udp_free.trailing_zeros() as usize;
        let h = udp_sockets(&self.sockets).find(|&(j, _, _)| j == i)?.1;
        self.udp_free &= !(1 << i);
        Some(h)
    }

    /// Give a UDP socket back to the pool.
    fn release_udp(&mut self, h: SocketHandle) {
        if let Some((i, _, _)) = udp_sockets(&self.sockets).find(|&(_, x, _)| x == h) {
            self.udp_free |= 1 << i;
        }
    }

    /// Give a socket back: closed ones go straight to the pool, others close
    /// gracefully in the background first.
    fn release_tcp(&mut self, h: SocketHandle, graceful: bool) {
        let Some(i) = tcp_index(&self.sockets, h) else {
            return;
        };
        let bit: TcpMask = 1 << i;
        if graceful {
            // Like Linux's tcp_fin_timeout: a peer that stops answering
            // (never ACKs or never sends its FIN) must not hold a pooled
            // socket forever.
            self.sockets.get_mut::<tcp::Socket>(h).set_timeout(Some(
                smoltcp::time::Duration::from_secs(CLOSING_TIMEOUT_SECS),
            ));
            self.close_tx(h);
        } else {
            self.fin_pending &= !bit;
            self.sockets.get_mut::<tcp::Socket>(h).abort();
        }
        if self.sockets.get::<tcp::Socket>(h).state() == tcp::State::Closed {
            self.tcp_free |= bit;
        } else {
            self.tcp_closing |= bit;
        }
    }
}

impl<'a, L: Link, const FDS: usize, const RAW: usize> Inner<'a, L, FDS, RAW> {
    /// Close the sending half: FIN after the queued data.
    ///
    /// In CLOSE-WAIT with data still queued, the FIN is held back until the
    /// queue drains. smoltcp 0.14 ignores window updates in LAST-ACK (it
    /// answers them as duplicate ACKs before looking at the window), so a
    /// FIN sent while the peer's window is closed stalls the rest of the
    /// data until the 1 s zero-window probe. An echo server whose client
    /// half-closes first hits this every time the client's window fills.
    fn close_tx(&mut self, h: SocketHandle) {
        let i = tcp_index(&self.sockets, h);
        let s = self.sockets.get_mut::<tcp::Socket>(h);
        match i {
            Some(i) if s.state() == tcp::State::CloseWait && s.send_queue() > 0 => {
                self.fin_pending |= 1 << i;
            }
            _ => s.close(),
        }
    }
}

/// The lowest `n` bits set.
const fn low_bits(n: usize) -> TcpMask {
    if n >= TcpMask::BITS as usize {
        TcpMask::MAX
    } else {
        (1 << n) - 1
    }
}

/// The pooled TCP sockets with their pool index (the order they were added).
fn tcp_sockets<'s, 'a>(
    sockets: &'s SocketSet<'a>,
) -> impl Iterator<Item = (usize, SocketHandle, &'s tcp::Socket<'a>)> {
    sockets
        .iter()
        .filter_map(|(h, s)| match s {
            Socket::Tcp(t) => Some((h, t)),
            _ => None,
        })
        .enumerate()
        .map(|(i, (h, t))| (i, h, t))
}

/// [`tcp_sockets`], mutably.
fn tcp_sockets_mut<'s, 'a>(
    sockets: &'s mut SocketSet<'a>,
) -> impl Iterator<Item = (usize, SocketHandle, &'s mut tcp::Socket<'a>)> {
    sockets
        .iter_mut()
        .filter_map(|(h, s)| match s {
            Socket::Tcp(t) => Some((h, t)),
            _ => None,
        })
        .enumerate()
        .map(|(i, (h, t))| (i, h, t))
}

/// The pooled UDP sockets with their pool index (the order they were added).
fn udp_sockets<'s, 'a>(
    sockets: &'s SocketSet<'a>,
) -> impl Iterator<Item = (usize, SocketHandle, &'s udp::Socket<'a>)> {
    sockets
        .iter()
        .filter_map(|(h, s)| match s {
            Socket::Udp(u) => Some((h, u)),
            _ => None,
        })
        .enumerate()
        .map(|(i, (h, u))| (i, h, u))
}

/// The pool index of TCP socket `h`.
fn tcp_index(sockets: &SocketSet<'_>, h: SocketHandle) -> Option<usize> {
    tcp_sockets(sockets)
        .find(|&(_, x, _)| x == h)
        .map(|(i, _, _)| i)
}

/// Take a TCP socket from the pool, reset to defaults, with its pool index.
/// If the pool is empty, reuse a socket that is only waiting out TIME-WAIT.
fn take_tcp(
    free: &mut TcpMask,
    closing: &mut TcpMask,
    sockets: &mut SocketSet<'_>,
) -> Option<(usize, SocketHandle)> {
    let (i, h) = if *free != 0 {
        let i = free.trailing_zeros() as usize;
        let h = tcp_sockets(sockets).find(|&(j, _, _)| j == i)?.1;
        *free &= !(1 << i);
        (i, h)
    } else {
        let (i, h, _) = tcp_sockets(sockets)
            .find(|&(i, _, s)| *closing & (1 << i) != 0 && s.state() == tcp::State::TimeWait)?;
        *closing &= !(1 << i);
        sockets.get_mut::<tcp::Socket>(h).abort();
        (i, h)
    };
    let s = sockets.get_mut::<tcp::Socket>(h);
    s.set_nagle_enabled(true);
    s.set_keep_alive(None);
    s.set_timeout(None);
    s.set_ack_delay(Some(smoltcp::time::Duration::from_millis(10)));
    Some((i, h))
}

#[cfg(all(test, feature = "std"))]
mod sim_tests;

#[cfg(all(test, feature = "std"))]
mod pool_tests {
    //! The raw-frame queue and the pool's bit sets through the public API.

    use std::vec;
    use std::vec::Vec;

    use smoltcp::iface::SocketStorage;

    use super::*;
    use crate::netlink::Netlinker;
    use crate::phy::memory::MemoryLink;
    use crate::platform::SpinPlatform;
    use crate::socketer::Socketer;
    use crate::types::{AddressFamily, Protocol, SockType, SocketAddr};

    fn zero() -> Instant {
        Instant::from_micros(0)
    }

    type TestStack<const RAW: usize> =
        Stack<'static, MemoryLink, SpinPlatform<fn() -> Instant>, 4, RAW>;

    fn build<const RAW: usize>(link: MemoryLink) -> TestStack<RAW> {
        let cfg = StackConfig {
            tcp_sockets: 2,
            udp_sockets: 1,
            tcp_rx_buffer: 1024,
            tcp_tx_buffer: 1024,
            udp_rx_buffer: 512,
            udp_tx_buffer: 512,
            udp_packets: 2,
            ip: IpMode::Static(IpConfig::new(Ipv4Addr::new(10, 0, 0, 1), 24)),
            ..Default::default()
        };
        let storage = (0..cfg.socket_storage_len())
            .map(|_| SocketStorage::EMPTY)
            .collect::<Vec<_>>()
            .leak();
        let meta = vec![udp::PacketMetadata::EMPTY; cfg.udp_meta_len()].leak();
        let dns_q = (0..DNS_QUERIES)
            .map(|_| None::<dns::DnsQuery>)
            .collect::<Vec<_>>()
            .leak();
        let arena = vec![0u8; cfg.arena_len()].leak();
        let res = SliceResources::new(storage, meta, dns_q, arena);
        let mut rng = rand::rngs::mock::StepRng::new(7, 3);
        Stack::new(
            link,
            SpinPlatform::new(zero as fn() -> Instant),
            &cfg,
            res,
            &mut rng,
        )
        .unwrap()
    }

    /// A broadcast frame of a local experimental EtherType.
    fn raw_frame(tag: u8) -> [u8; 60] {
        let mut f = [0u8; 60];
        f[..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 9]);
        f[12..14].copy_from_slice(&[0x88, 0xb5]);
        f[14] = tag;
        f
    }

    #[test]
    fn raw_frames_reach_recv_eth_unless_the_queue_is_off() {
        let mut buf = [0u8; crate::phy::MAX_FRAME_LEN];
        let (link, mut peer) = MemoryLink::pair();
        let s = build::<DEFAULT_RAW_QUEUE_BYTES>(link);
        for tag in 1..=3 {
            peer.transmit(&raw_frame(tag)).unwrap();
        }
        s.poll();
        for tag in 1..=3 {
            assert_eq!(s.recv_eth(&mut buf), Ok(Some(60)));
            assert_eq!(buf[14], tag, "oldest first");
        }
        assert_eq!(s.recv_eth(&mut buf), Ok(None));

        let (link, mut peer) = MemoryLink::pair();
        let s = build::<0>(link);
        peer.transmit(&raw_frame(1)).unwrap();
        s.poll();
        assert_eq!(s.recv_eth(&mut buf), Err(Error::NotSupported));
        assert_eq!(s.link_stats().raw_dropped, 1);
        assert_eq!(s.send_eth(&raw_frame(2)), Ok(()), "sending still works");
        let mut got = [0u8; 64];
        assert_eq!(peer.receive(&mut got), Ok(Some(60)));
    }

    #[test]
    fn pool_exhaustion_is_typed_and_sockets_come_back() {
        let (link, _peer) = MemoryLink::pair();
        let s = build::<0>(link);
        let tcp = || s.socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp);
        let udp = || s.socket(AddressFamily::Inet, SockType::Dgram, Protocol::Udp);
        let l = tcp().unwrap();
        s.bind(l, SocketAddr::from(([0, 0, 0, 0], 80))).unwrap();
        s.listen(l, 8).unwrap();
        // The listener took its own socket and the pool's last one.
        assert_eq!(tcp(), Err(Error::NoMoreSockets));
        let u = udp().unwrap();
        assert_eq!(udp(), Err(Error::NoMoreSockets));
        s.close(l).unwrap();
        s.close(u).unwrap();
        let (a, b) = (tcp().unwrap(), tcp().unwrap());
        assert_eq!(tcp(), Err(Error::NoMoreSockets));
        udp().unwrap();
        s.close(a).unwrap();
        s.close(b).unwrap();
        tcp().unwrap();
    }
}
