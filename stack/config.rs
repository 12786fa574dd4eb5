//! Stack configuration and the memory it runs in.
//!
//! The stack allocates nothing. Socket buffers come from a [`BufferSource`]:
//! [`SliceResources`] carves them out of memory the caller hands over
//! (a `static` on bare metal), [`HeapResources`] (feature `std`) allocates
//! them on the heap. Every smoltcp socket the stack will ever use is created
//! once, at start-up, and recycled; sockets are never allocated later, so a
//! socket call can only fail with `NoMoreSockets`, never run out of memory.

use core::time::Duration;

use smoltcp::iface::SocketStorage;
use smoltcp::socket::{dns, tcp, udp};

use crate::netlink::IpMode;

/// Most TCP sockets one stack can pool.
pub const MAX_TCP_SOCKETS: usize = 64;
/// Most UDP sockets one stack can pool.
pub const MAX_UDP_SOCKETS: usize = 32;
/// Sockets the stack keeps for itself (DNS and DHCP).
pub const INTERNAL_SOCKETS: usize = 2;
/// DNS queries in flight at once.
pub const DNS_QUERIES: usize = 4;

/// How big the stack is and how it gets an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackConfig {
    /// TCP sockets in the pool: one per open TCP fd, plus one per pending
    /// connection a listener holds, plus connections still closing in the
    /// background. Default 24, at most [`MAX_TCP_SOCKETS`].
    pub tcp_sockets: usize,
    /// UDP sockets in the pool. Default 8, at most [`MAX_UDP_SOCKETS`].
    pub udp_sockets: usize,
    /// Receive buffer of each TCP socket, bytes (the advertised window). Default 16 KiB.
    pub tcp_rx_buffer: usize,
    /// Send buffer of each TCP socket, bytes. Default 16 KiB.
    pub tcp_tx_buffer: usize,
    /// Receive buffer of each UDP socket, payload bytes. Default 8 KiB.
    pub udp_rx_buffer: usize,
    /// Send buffer of each UDP socket, payload bytes. Default 8 KiB.
    pub udp_tx_buffer: usize,
    /// Datagrams each UDP buffer can hold (per direction). Default 16.
    pub udp_packets: usize,
    /// How the stack gets its address when it starts (net_connect can change it).
    pub ip: IpMode,
    /// How long `get_host_by_name` waits for an answer.
    pub dns_timeout: Duration,
}

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            tcp_sockets: 24,
            udp_sockets: 8,
            tcp_rx_buffer: 16 * 1024,
            tcp_tx_buffer: 16 * 1024,
            udp_rx_buffer: 8 * 1024,
            udp_tx_buffer: 8 * 1024,
            udp_packets: 16,
            ip: IpMode::Dhcp,
            dns_timeout: Duration::from_secs(10),
        }
    }
}

impl StackConfig {
    /// Entries the smoltcp socket set needs.
    pub const fn socket_storage_len(&self) -> usize {
        self.tcp_sockets + self.udp_sockets + INTERNAL_SOCKETS
    }

    /// Bytes of socket buffer memory [`SliceResources`] needs.
    pub const fn arena_len(&self) -> usize {
        self.tcp_sockets * (self.tcp_rx_buffer + self.tcp_tx_buffer)
            + self.udp_sockets * (self.udp_rx_buffer + self.udp_tx_buffer)
    }

    /// UDP packet metadata entries [`SliceResources`] needs.
    pub const fn udp_meta_len(&self) -> usize {
        self.udp_sockets * self.udp_packets * 2
    }
}

/// Where socket memory comes from. Called only while the stack is built.
pub trait BufferSource<'a> {
    /// Storage for the smoltcp socket set (at least `socket_storage_len`).
    fn socket_storage(
        &mut self,
        len: usize,
    ) -> Option<managed::ManagedSlice<'a, SocketStorage<'a>>>;
    /// One TCP socket's buffers.
    fn tcp(
        &mut self,
        rx: usize,
        tx: usize,
    ) -> Option<(tcp::SocketBuffer<'a>, tcp::SocketBuffer<'a>)>;
    /// One UDP socket's buffers.
    fn udp(
        &mut self,
        rx: usize,
        tx: usize,
        packets: usize,
    ) -> Option<(udp::PacketBuffer<'a>, udp::PacketBuffer<'a>)>;
    /// Query slots for the DNS socket.
    fn dns_queries(&mut self) -> Option<managed::ManagedSlice<'a, Option<dns::DnsQuery>>>;
}

/// Socket memory carved out of caller-provided slices (no allocator).
///
/// ```ignore
/// static mut STORAGE: [SocketStorage<'static>; 12] = [SocketStorage::EMPTY; 12];
/// static mut META: [udp::PacketMetadata; 32] = [udp::PacketMetadata::EMPTY; 32];
/// static mut DNS: [Option<dns::DnsQuery>; 4] = [None, None, None, None];
/// static mut ARENA: [u8; 8 * 4096 + 2 * 2048] = [0; 8 * 4096 + 2 * 2048];
/// ```
/// (use `static_cell` or similar to get the `&'static mut` safely).
pub struct SliceResources<'a> {
    storage: Option<&'a mut [SocketStorage<'a>]>,
    udp_meta: &'a mut [udp::PacketMetadata],
    dns: Option<&'a mut [Option<dns::DnsQuery>]>,
    arena: &'a mut [u8],
}

impl<'a> SliceResources<'a> {
    /// Hand over the memory; sizes per [`StackConfig::socket_storage_len`],
    /// [`StackConfig::udp_meta_len`] and [`StackConfig::arena_len`].
    pub fn new(
        storage: &'a mut [SocketStorage<'a>],
        udp_meta: &'a mut [udp::PacketMetadata],
        dns_queries: &'a mut [Option<dns::DnsQuery>],
        arena: &'a mut [u8],
    ) -> Self {
        SliceResources {
            storage: Some(storage),
            udp_meta,
            dns: Some(dns_queries),
            arena,
        }
    }

    fn take_bytes(&mut self, n: usize) -> Option<&'a mut [u8]> {
        if self.arena.len() < n {
            return None;
        }
        let arena = core::mem::take(&mut self.arena);
        let (a, rest) = arena.split_at_mut(n);
        self.arena = rest;
        Some(a)
    }

    fn take_meta(&mut self, n: usize) -> Option<&'a mut [udp::PacketMetadata]> {
        if self.udp_meta.len() < n {
            return None;
        }
        let meta = core::mem::take(&mut self.udp_meta);
        let (a, rest) = meta.split_at_mut(n);
        self.udp_meta = rest;
        Some(a)
    }
}

impl<'a> BufferSource<'a> for SliceResources<'a> {
    fn socket_storage(
        &mut self,
        len: usize,
    ) -> Option<managed::ManagedSlice<'a, SocketStorage<'a>>> {
        let s = self.storage.take()?;
        (s.len() >= len).then(|| managed::ManagedSlice::Borrowed(s))
    }
    fn tcp(
        &mut self,
        rx: usize,
        tx: usize,
    ) -> Option<(tcp::SocketBuffer<'a>, tcp::SocketBuffer<'a>)> {
        let r = self.take_bytes(rx)?;
        let t = self.take_bytes(tx)?;
        Some((tcp::SocketBuffer::new(r), tcp::SocketBuffer::new(t)))
    }
    fn udp(
        &mut self,
        rx: usize,
        tx: usize,
        packets: usize,
    ) -> Option<(udp::PacketBuffer<'a>, udp::PacketBuffer<'a>)> {
        let rm = self.take_meta(packets)?;
        let r = self.take_bytes(rx)?;
        let tm = self.take_meta(packets)?;
        let t = self.take_bytes(tx)?;
        Some((udp::PacketBuffer::new(rm, r), udp::PacketBuffer::new(tm, t)))
    }
    fn dns_queries(&mut self) -> Option<managed::ManagedSlice<'a, Option<dns::DnsQuery>>> {
        self.dns.take().map(managed::ManagedSlice::Borrowed)
    }
}

/// Socket memory from the heap (feature `std`).
#[cfg(feature = "std")]
#[derive(Debug, Default, Clone, Copy)]
pub struct HeapResources;

#[cfg(feature = "std")]
impl BufferSource<'static> for HeapResources {
    fn socket_storage(
        &mut self,
        len: usize,
    ) -> Option<managed::ManagedSlice<'static, SocketStorage<'static>>> {
        Some(managed::ManagedSlice::Owned(
            (0..len).map(|_| SocketStorage::EMPTY).collect(),
        ))
    }
    fn tcp(
        &mut self,
        rx: usize,
        tx: usize,
    ) -> Option<(tcp::SocketBuffer<'static>, tcp::SocketBuffer<'static>)> {
        Some((
            tcp::SocketBuffer::new(std::vec![0u8; rx]),
            tcp::SocketBuffer::new(std::vec![0u8; tx]),
        ))
    }
    fn udp(
        &mut self,
        rx: usize,
        tx: usize,
        packets: usize,
    ) -> Option<(udp::PacketBuffer<'static>, udp::PacketBuffer<'static>)> {
        Some((
            udp::PacketBuffer::new(
                std::vec![udp::PacketMetadata::EMPTY; packets],
                std::vec![0u8; rx],
            ),
            udp::PacketBuffer::new(
                std::vec![udp::PacketMetadata::EMPTY; packets],
                std::vec![0u8; tx],
            ),
        ))
    }
    fn dns_queries(&mut self) -> Option<managed::ManagedSlice<'static, Option<dns::DnsQuery>>> {
        Some(managed::ManagedSlice::Owned(
            (0..DNS_QUERIES).map(|_| None).collect(),
        ))
    }
}
