//! Memory footprint: what netdever costs in RAM and heap next to raw
//! smoltcp with the same sockets and buffers, measured in the same run.
//!
//! `cargo bench --bench footprint` (a few seconds; no criterion: sizes and
//! allocation counts do not need statistics). Three sections:
//!
//! 1. **RAM of the full stack, no_std path** (`Stack` over a do-nothing link,
//!    `SpinPlatform`, memory from `SliceResources`), for a small MCU shape
//!    (4 TCP + 2 UDP sockets, 4 KiB TCP / 2 KiB UDP buffers) and for
//!    `StackConfig::default()` (24 TCP + 8 UDP, 16 KiB / 8 KiB). Counted:
//!    `size_of` the `Stack` value, plus the memory the caller hands over
//!    (socket storage, UDP packet metadata, DNS query slots, buffer arena).
//!
//!    **The anchor** is raw smoltcp 0.14 built from a `SliceResources`
//!    of the same shape, carved by the same code (so the caller memory is
//!    the same by construction):
//!    one `Interface`, one `SocketSet` over the same storage, the same TCP
//!    and UDP sockets with the same buffers, a DHCPv4 socket and a DNS
//!    socket with the same query slots (netdever creates both), the
//!    sockets' handles, and a minimal smoltcp `Device` over the same link
//!    (one receive and one transmit frame buffer of 1514 bytes: what any
//!    copy-in/copy-out driver needs). Not included in the anchor: anything
//!    netdever adds (fd table, the socket pool's bit sets, the lock, link
//!    events, the raw-frame queue of `LinkDevice` for `recv_eth`). Rows show
//!    where the difference is; `overhead` is netdever − raw and `ratio` is
//!    netdever / raw over the whole (value + caller memory).
//!    The per-fd cost is `size_of` a stack with 16 fds minus one with 8,
//!    divided by 8 (the fd table is the only thing `FDS` sizes). The table
//!    is for the default `Stack<'_, L, P>` (16 fds, a `recv_eth` queue of
//!    one full frame); a line after it gives the value with `RAW = 0` (no
//!    raw-frame receive), for apps that never call `recv_eth`.
//!
//! 2. **Offload drivers and TLS**: `size_of` the W5500 and ESP-AT drivers
//!    (with the emulators' bus handles and `StdPlatform`, as the tests and
//!    benches use them, and with a zero-sized bus and `SpinPlatform` as on
//!    an MCU), `TlsPool` buffers and the per-connection TLS state of
//!    `SoftTls`. No anchor exists for these: plain figures.
//!
//! 3. **Heap under std** (a counting global allocator in this binary):
//!    allocations and bytes (a) while building a `HostStack` (next to raw
//!    smoltcp built from `HeapResources` with the same config, boxed),
//!    (b) per TCP connection open + close between two `HostStack`s, and
//!    (c) per MiB of steady-state bulk TCP (64 KiB buffers), next to raw
//!    smoltcp (two interfaces polled by one thread, as in `tcp_memory`)
//!    over the same memory switch. The memory switch itself copies every
//!    frame it delivers into a fresh `Vec` (one allocation per delivered
//!    frame, freed by the receiver), so each figure is also printed minus
//!    the switch's deliveries: that remainder is what the stack allocates
//!    and is expected to be 0 for both. (The switch's port queues are grown
//!    to full length before the stacks get their ports, so the switch
//!    allocates nothing else inside a window.)
//!
//! Reading the output: sections 1 and 2 are exact `size_of` figures for
//! this target (64-bit host; on a 32-bit MCU pointers, `usize` and smoltcp
//! handles halve, buffers do not) and identical on every run. In section 3
//! `allocs`/`B` are per stack build, per connection or per MiB;
//! `switch copies` is the switch's per-frame `Vec`s over the same window,
//! whose number varies a little with thread timing (ACK pacing); `rest` is
//! the window's allocations minus those copies, as a total: what the
//! stacks themselves allocated, deterministic (0 when nothing allocates).
#[path = "common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::mem::size_of;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant as StdInstant};

use netdever::offload::espat::EspAt;
use netdever::offload::w5500::W5500Offload;
use netdever::phy::memory::{MemoryLink, MemorySwitch};
use netdever::phy::{Link, LinkDevice, LinkError, MAX_FRAME_LEN};
use netdever::platform::{SpinPlatform, StdPlatform};
use netdever::sockstate::SockState;
use netdever::stack::host::HostStack;
use netdever::stack::{
    BufferSource, HeapResources, SliceResources, Stack, StackConfig, DEFAULT_RAW_QUEUE_BYTES,
    DNS_QUERIES, MAX_TCP_SOCKETS, MAX_UDP_SOCKETS,
};
use netdever::tls::{MaxFragment, SoftTls, TlsConfig, TlsPool, READ_BUFFER_LEN, WRITE_BUFFER_LEN};
use netdever::{
    AddressFamily, ConnectParams, Deadline, Instant, IpConfig, IpMode, MsgFlags, Netlinker,
    Protocol, SockType, Socketer,
};
use netdever_emu::espat::EspAtSerial;
use netdever_emu::w5500::W5500Spi;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet, SocketStorage};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::{dhcpv4, dns, tcp, udp};
use smoltcp::wire::{EthernetAddress, HardwareAddress};

use common::{bench_mode, RawEnd, TCP_BUFFER};

// ---------------------------------------------------------------------------
// Counting allocator

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting allocations (a `realloc` counts as one,
/// with its new size).
struct Counting;

// SAFETY: every call is forwarded unchanged to `System`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocation counters at one moment (whole process, all threads).
#[derive(Debug, Clone, Copy)]
struct Heap {
    allocs: u64,
    bytes: u64,
}

impl Heap {
    fn now() -> Heap {
        Heap {
            allocs: ALLOCS.load(Ordering::SeqCst),
            bytes: ALLOC_BYTES.load(Ordering::SeqCst),
        }
    }

    fn since(self, before: Heap) -> Heap {
        Heap {
            allocs: self.allocs - before.allocs,
            bytes: self.bytes - before.bytes,
        }
    }
}

// ---------------------------------------------------------------------------
// Section 1: the no_std stack vs raw smoltcp

/// A link that drops what it is given and never receives: the link's own
/// state is the chip driver's business and the same on both sides.
struct NullLink;

impl Link for NullLink {
    fn hardware_addr(&self) -> [u8; 6] {
        [0x02, 0, 0, 0, 0, 1]
    }
    fn transmit(&mut self, _frame: &[u8]) -> Result<(), LinkError> {
        Ok(())
    }
    fn receive(&mut self, _buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
        Ok(None)
    }
}

/// A bare-metal platform: spin lock, a clock function, waits that return.
type McuPlatform = SpinPlatform<fn() -> Instant>;

fn zero_clock() -> Instant {
    Instant::from_micros(0)
}

fn mcu_platform() -> McuPlatform {
    SpinPlatform::new(zero_clock as fn() -> Instant)
}

/// The smallest smoltcp device a raw smoltcp user would write over a
/// copy-in/copy-out link: one frame buffer each way.
struct MinDevice<L: Link> {
    link: L,
    rx: [u8; MAX_FRAME_LEN],
    tx: [u8; MAX_FRAME_LEN],
}

impl<L: Link> MinDevice<L> {
    fn new(link: L) -> Self {
        MinDevice {
            link,
            rx: [0; MAX_FRAME_LEN],
            tx: [0; MAX_FRAME_LEN],
        }
    }
}

struct MinRx<'a>(&'a [u8]);

impl RxToken for MinRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

struct MinTx<'a, L: Link> {
    link: &'a mut L,
    buf: &'a mut [u8; MAX_FRAME_LEN],
}

impl<L: Link> TxToken for MinTx<'_, L> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(MAX_FRAME_LEN);
        let r = f(&mut self.buf[..len]);
        let _ = self.link.transmit(&self.buf[..len]);
        r
    }
}

impl<L: Link> Device for MinDevice<L> {
    type RxToken<'a>
        = MinRx<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = MinTx<'a, L>
    where
        Self: 'a;

    fn receive(
        &mut self,
        _timestamp: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let n = self.link.receive(&mut self.rx).ok()??;
        Some((
            MinRx(&self.rx[..n.min(MAX_FRAME_LEN)]),
            MinTx {
                link: &mut self.link,
                buf: &mut self.tx,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(MinTx {
            link: &mut self.link,
            buf: &mut self.tx,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME_LEN;
        caps
    }
}

/// Raw smoltcp with `T` TCP and `U` UDP sockets, DHCP and DNS: what an
/// application using smoltcp directly keeps.
struct RawStack<'a, D, const T: usize, const U: usize> {
    iface: Interface,
    dev: D,
    sockets: SocketSet<'a>,
    tcp: [SocketHandle; T],
    udp: [SocketHandle; U],
    dhcp: SocketHandle,
    dns: SocketHandle,
}

impl<'a, D: Device, const T: usize, const U: usize> RawStack<'a, D, T, U> {
    /// Built from the same kind of memory source and with the same carving
    /// as the netdever stack.
    fn new(mut dev: D, cfg: &StackConfig, mut mem: impl BufferSource<'a>) -> Self {
        assert_eq!((cfg.tcp_sockets, cfg.udp_sockets), (T, U), "shape");
        let mac = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
        let mut ic = Config::new(HardwareAddress::Ethernet(mac));
        ic.random_seed = 1;
        let iface = Interface::new(ic, &mut dev, smoltcp::time::Instant::from_micros(0));
        let storage = mem
            .socket_storage(cfg.socket_storage_len())
            .expect("socket storage");
        let mut sockets = SocketSet::new(storage);
        let tcp = core::array::from_fn(|_| {
            let (rx, tx) = mem
                .tcp(cfg.tcp_rx_buffer, cfg.tcp_tx_buffer)
                .expect("tcp buffers");
            sockets.add(tcp::Socket::new(rx, tx))
        });
        let udp = core::array::from_fn(|_| {
            let (rx, tx) = mem
                .udp(cfg.udp_rx_buffer, cfg.udp_tx_buffer, cfg.udp_packets)
                .expect("udp buffers");
            sockets.add(udp::Socket::new(rx, tx))
        });
        let dns = sockets.add(dns::Socket::new(&[], mem.dns_queries().expect("dns slots")));
        let dhcp = sockets.add(dhcpv4::Socket::new());
        RawStack {
            iface,
            dev,
            sockets,
            tcp,
            udp,
            dhcp,
            dns,
        }
    }

    /// Touch every field (they exist to be counted).
    fn sockets(&self) -> usize {
        let _ = (
            &self.iface,
            &self.dev,
            self.tcp,
            self.udp,
            self.dhcp,
            self.dns,
        );
        self.sockets.iter().count()
    }
}

/// The memory a caller hands to `SliceResources`, owned here.
struct CallerMemory<'a> {
    storage: Vec<SocketStorage<'a>>,
    meta: Vec<udp::PacketMetadata>,
    dns: Vec<Option<dns::DnsQuery>>,
    arena: Vec<u8>,
}

impl<'a> CallerMemory<'a> {
    fn new(cfg: &StackConfig) -> Self {
        CallerMemory {
            storage: (0..cfg.socket_storage_len())
                .map(|_| SocketStorage::EMPTY)
                .collect(),
            meta: vec![udp::PacketMetadata::EMPTY; cfg.udp_meta_len()],
            dns: (0..DNS_QUERIES).map(|_| None).collect(),
            arena: vec![0; cfg.arena_len()],
        }
    }

    fn resources(&'a mut self) -> SliceResources<'a> {
        SliceResources::new(
            &mut self.storage,
            &mut self.meta,
            &mut self.dns,
            &mut self.arena,
        )
    }
}

/// Bytes of each part of the caller's memory.
struct CallerBytes {
    storage: usize,
    meta: usize,
    dns: usize,
    arena: usize,
}

impl CallerBytes {
    fn of(cfg: &StackConfig) -> Self {
        CallerBytes {
            storage: cfg.socket_storage_len() * size_of::<SocketStorage<'static>>(),
            meta: cfg.udp_meta_len() * size_of::<udp::PacketMetadata>(),
            dns: DNS_QUERIES * size_of::<Option<dns::DnsQuery>>(),
            arena: cfg.arena_len(),
        }
    }

    fn total(&self) -> usize {
        self.storage + self.meta + self.dns + self.arena
    }
}

// The pool's bit sets: u64 for TCP, u32 for UDP (see `pool_sets` below).
const _: () = assert!(MAX_TCP_SOCKETS <= 64 && MAX_UDP_SOCKETS <= 32);

type McuStack<const FDS: usize> = Stack<'static, NullLink, McuPlatform, FDS>;

/// Build a no_std-shaped netdever stack (proves the memory suffices) and
/// return `size_of_val` of it.
fn netdever_value<const FDS: usize, const RAW: usize>(cfg: &StackConfig) -> usize {
    let mut mem = CallerMemory::new(cfg);
    let mut rng = rand::rngs::mock::StepRng::new(1, 1);
    let stack: Stack<'_, NullLink, McuPlatform, FDS, RAW> =
        Stack::new(NullLink, mcu_platform(), cfg, mem.resources(), &mut rng)
            .unwrap_or_else(|e| panic!("netdever Stack::new: {e}"));
    let n = size_of_val(&stack);
    drop(stack);
    n
}

/// Build the raw smoltcp anchor from memory of the same shape and return
/// its size.
fn raw_value<const T: usize, const U: usize>(cfg: &StackConfig) -> usize {
    let mut mem = CallerMemory::new(cfg);
    let raw: RawStack<'_, MinDevice<NullLink>, T, U> =
        RawStack::new(MinDevice::new(NullLink), cfg, mem.resources());
    assert_eq!(raw.sockets(), T + U + 2, "all sockets added");
    size_of_val(&raw)
}

fn row(label: &str, raw: Option<usize>, ndv: Option<usize>) {
    let cell = |v: Option<usize>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let diff = match (raw, ndv) {
        (Some(r), Some(n)) => format!("{:+}", n as i64 - r as i64),
        (None, Some(n)) => format!("{n:+}"),
        _ => String::new(),
    };
    println!(
        "  {label:<66} {:>9} {:>9} {:>9}",
        cell(raw),
        cell(ndv),
        diff
    );
}

fn ram_section<const T: usize, const U: usize>(name: &str, cfg: &StackConfig) {
    let ndv = netdever_value::<16, DEFAULT_RAW_QUEUE_BYTES>(cfg);
    let ndv8 = netdever_value::<8, DEFAULT_RAW_QUEUE_BYTES>(cfg);
    let ndv_no_raw = netdever_value::<16, 0>(cfg);
    let raw = raw_value::<T, U>(cfg);
    let mem = CallerBytes::of(cfg);
    let per_fd = (ndv - ndv8) / 8;
    let iface = size_of::<Interface>();
    let set = size_of::<SocketSet<'static>>();
    let min_dev = size_of::<MinDevice<NullLink>>();
    let link_dev = size_of::<LinkDevice<NullLink>>();
    let handles = size_of::<SocketHandle>() * (T + U + 2);
    // TCP free, closing and FIN-held sets (u64 each: MAX_TCP_SOCKETS bits),
    // the UDP free set (u32: MAX_UDP_SOCKETS bits).
    let pool_sets = 3 * size_of::<u64>() + size_of::<u32>();
    let fd_table = 16 * per_fd;

    println!(
        "\n{name}: {T} TCP ({} B rx + {} B tx), {U} UDP ({} B rx + {} B tx, {} datagrams), DHCP + DNS ({DNS_QUERIES} query slots)",
        cfg.tcp_rx_buffer, cfg.tcp_tx_buffer, cfg.udp_rx_buffer, cfg.udp_tx_buffer, cfg.udp_packets
    );
    println!(
        "  {:<66} {:>9} {:>9} {:>9}",
        "bytes", "raw", "netdever", "overhead"
    );
    row(
        "value: size_of (raw: RawStack, netdever: Stack<16 fds>)",
        Some(raw),
        Some(ndv),
    );
    row("  smoltcp Interface", Some(iface), Some(iface));
    row(
        "  device (raw: 2 frame bufs; netdever: LinkDevice, + recv_eth queue)",
        Some(min_dev),
        Some(link_dev),
    );
    row("  SocketSet", Some(set), Some(set));
    row(
        "  raw: socket handles; netdever: pool bit sets (3 x u64 + u32)",
        Some(handles),
        Some(pool_sets),
    );
    row(
        &format!("  netdever: fd table (16 x {per_fd} B)"),
        None,
        Some(fd_table),
    );
    row(
        "  rest (raw: padding; netdever: lock, platform, events, IP state)",
        Some(raw - iface - min_dev - set - handles),
        Some(ndv - iface - link_dev - set - pool_sets - fd_table),
    );
    row(
        &format!(
            "caller: socket storage ({} x {} B)",
            cfg.socket_storage_len(),
            size_of::<SocketStorage<'static>>()
        ),
        Some(mem.storage),
        Some(mem.storage),
    );
    row(
        &format!(
            "caller: UDP packet metadata ({} x {} B)",
            cfg.udp_meta_len(),
            size_of::<udp::PacketMetadata>()
        ),
        Some(mem.meta),
        Some(mem.meta),
    );
    row(
        &format!(
            "caller: DNS query slots ({DNS_QUERIES} x {} B)",
            size_of::<Option<dns::DnsQuery>>()
        ),
        Some(mem.dns),
        Some(mem.dns),
    );
    row(
        "caller: socket buffer arena",
        Some(mem.arena),
        Some(mem.arena),
    );
    let (rt, nt) = (raw + mem.total(), ndv + mem.total());
    row("total RAM", Some(rt), Some(nt));
    println!(
        "  ratio netdever/raw total RAM: {:.3}   (without the buffer arena: {:.2}; value alone: {:.2})",
        nt as f64 / rt as f64,
        (nt - mem.arena) as f64 / (rt - mem.arena) as f64,
        ndv as f64 / raw as f64
    );
    println!(
        "  with RAW = 0 (Stack<'_, L, P, 16, 0>: no recv_eth queue): value {ndv_no_raw} B, \
         overhead {:+} B, ratio without the buffer arena {:.2}",
        ndv_no_raw as i64 - raw as i64,
        (ndv_no_raw + mem.total() - mem.arena) as f64 / (rt - mem.arena) as f64
    );
    println!(
        "  per fd: {per_fd} B in the fd table (Stack<16> - Stack<8>, / 8; of which SockState {} B), \
         plus per pooled TCP socket on both sides: {} B storage + {} B buffers",
        size_of::<SockState>(),
        size_of::<SocketStorage<'static>>(),
        cfg.tcp_rx_buffer + cfg.tcp_tx_buffer
    );
}

// ---------------------------------------------------------------------------
// Section 2: offload drivers and TLS

/// A bus handle with no state (an MCU's SPI/UART peripheral singleton).
struct NoBus;

fn offload_section() {
    println!("\n== 2. Offload drivers and TLS (size_of; no anchor exists: plain figures) ==");
    let line = |label: &str, v: usize| println!("  {label:<74} {v:>8} B");
    line(
        "W5500Offload<W5500Spi (emu), StdPlatform>  (as tests/benches)",
        size_of::<W5500Offload<W5500Spi, StdPlatform>>(),
    );
    line(
        "W5500Offload<zero-sized SPI, SpinPlatform>  (MCU shape)",
        size_of::<W5500Offload<NoBus, McuPlatform>>(),
    );
    println!(
        "    (socket buffers are in the chip's 32 KiB; {} hardware sockets)",
        netdever::offload::w5500::HW_SOCKETS
    );
    line(
        "EspAt<EspAtSerial (emu), StdPlatform>  (as tests/benches)",
        size_of::<EspAt<EspAtSerial, StdPlatform>>(),
    );
    line(
        "EspAt<zero-sized UART, SpinPlatform>  (MCU shape)",
        size_of::<EspAt<NoBus, McuPlatform>>(),
    );
    println!(
        "    (of which {} sockets' receive queues of {} B = {} B, and the {} B buffer one AT+CIPRECVDATA reply lands in, shared)",
        netdever::offload::espat::MAX_SOCKETS,
        netdever::offload::espat::RX_BUF,
        netdever::offload::espat::MAX_SOCKETS * netdever::offload::espat::RX_BUF,
        netdever::offload::espat::FETCH
    );
    line(
        "W5500Link<W5500Spi> (MACRAW link; sits inside the Stack's LinkDevice)",
        size_of::<netdever::phy::w5500::W5500Link<W5500Spi>>(),
    );
    let pool1 = TlsPool::<1>::new();
    line(
        &format!(
            "TlsPool<1> (default buffers: rx {READ_BUFFER_LEN} + tx {WRITE_BUFFER_LEN}; buffer_bytes {})",
            pool1.buffer_bytes()
        ),
        size_of::<TlsPool<1>>(),
    );
    let per_pool_slot = size_of::<TlsPool<2>>() - size_of::<TlsPool<1>>();
    line(
        "  per connection in a TlsPool (TlsPool<2> - TlsPool<1>)",
        per_pool_slot,
    );
    const RX_4K: usize = 4096 + 256;
    let small_cfg = TlsConfig::insecure_no_verify().with_max_fragment(MaxFragment::B4096);
    assert_eq!(small_cfg.read_buffer_needed(), RX_4K, "max fragment 4096");
    line(
        "  per connection, max_fragment 4096 (TlsPool<2, 4352, 4229> - <1, ..>)",
        size_of::<TlsPool<2, RX_4K, WRITE_BUFFER_LEN>>()
            - size_of::<TlsPool<1, RX_4K, WRITE_BUFFER_LEN>>(),
    );
    type HostTls<const N: usize> = SoftTls<'static, HostStack, rand_core::OsRng, N>;
    type McuTls<'s, const N: usize> =
        SoftTls<'s, &'s McuStack<8>, rand::rngs::mock::StepRng, N, spin::mutex::Mutex<()>>;
    line(
        "SoftTls<HostStack, OsRng, 1> (wrapper + 1 connection's TLS state)",
        size_of::<HostTls<1>>(),
    );
    line(
        "  per connection TLS state outside the pool (SoftTls<..,2> - <..,1>)",
        size_of::<HostTls<2>>() - size_of::<HostTls<1>>(),
    );
    line(
        "SoftTls<&Stack, rng, 1, spin lock> (MCU shape)",
        size_of::<McuTls<'static, 1>>(),
    );
    line(
        "  per connection TLS state outside the pool (MCU shape)",
        size_of::<McuTls<'static, 2>>() - size_of::<McuTls<'static, 1>>(),
    );
}

// ---------------------------------------------------------------------------
// Section 3: heap under std

const A_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const PORT: u16 = 5001;
const LIMIT: Duration = Duration::from_secs(30);

/// A switch port whose receive queue has already grown to the switch's
/// queue length (frames from a throw-away port, then drained), so that
/// during a measurement the switch allocates only its per-frame copies and
/// never grows a queue (which depends on thread timing: a queue that peaks
/// higher than in the warm-up would show up as "stack" allocations).
fn port(switch: &MemorySwitch, mac: [u8; 6]) -> MemoryLink {
    const FEEDER: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
    let mut link = switch.port(mac);
    let mut feeder = switch.port(FEEDER);
    let mut frame = [0u8; 60];
    frame[..6].copy_from_slice(&mac);
    frame[6..12].copy_from_slice(&FEEDER);
    frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // local experimental
    for _ in 0..switch.queue_len() {
        feeder.transmit(&frame).expect("feed the queue");
    }
    assert_eq!(link.queued(), switch.queue_len(), "queue filled");
    let mut buf = [0u8; MAX_FRAME_LEN];
    while let Ok(Some(_)) = link.receive(&mut buf) {}
    link
}

fn host_config(ip: Ipv4Addr, buffers: usize) -> StackConfig {
    StackConfig {
        tcp_rx_buffer: buffers,
        tcp_tx_buffer: buffers,
        ip: IpMode::Static(IpConfig::new(ip, 24)),
        ..StackConfig::default()
    }
}

fn up(s: &HostStack) {
    s.net_connect(&ConnectParams {
        ip: IpMode::Keep,
        ..ConnectParams::default()
    })
    .expect("net up");
}

fn deadline(s: &HostStack) -> Deadline {
    Deadline::after(s.now(), LIMIT)
}

/// One heap figure, divided by `per`; with the switch's frame copies over
/// the same window, also the remainder (stack allocations) as a total.
fn heap_line(label: &str, h: Heap, per: f64, switch_copies: Option<u64>) {
    let a = h.allocs as f64 / per;
    let b = h.bytes as f64 / per;
    match switch_copies {
        Some(c) => println!(
            "  {label:<46} {a:>8.1} allocs {b:>10.0} B | switch copies {:>6.1} | rest: {} allocs in total",
            c as f64 / per,
            h.allocs as i64 - c as i64
        ),
        None => println!("  {label:<46} {a:>8.1} allocs {b:>10.0} B"),
    }
}

/// (a): building a HostStack, and raw smoltcp from HeapResources.
fn build_heap(name: &str, cfg: &StackConfig) {
    let switch = MemorySwitch::new();
    let link = switch.port([0x02, 0, 0, 0, 0, 1]);
    let before = Heap::now();
    let s = HostStack::new(link, cfg.clone()).expect("HostStack::new");
    let ndv = Heap::now().since(before);
    drop(s);

    let link = switch.port([0x02, 0, 0, 0, 0, 2]);
    let before = Heap::now();
    let raw = Box::new(RawStack::<_, 24, 8>::new(
        MinDevice::new(link),
        cfg,
        HeapResources,
    ));
    let rh = Heap::now().since(before);
    drop(raw);
    let mem = CallerBytes::of(cfg);
    println!(
        "\n(a) building, {name} (socket memory by the formula above: {} B)",
        mem.total()
    );
    heap_line("raw smoltcp from HeapResources, value boxed", rh, 1.0, None);
    heap_line(
        "HostStack::new (stack, buffers, driver thread)",
        ndv,
        1.0,
        None,
    );
    println!(
        "  {:<46} {:>+8} allocs {:>+10} B   (Arc, boxed link, rx signal, thread handle; the thread's stack is mmap'd, not counted)",
        "HostStack - raw",
        ndv.allocs as i64 - rh.allocs as i64,
        ndv.bytes as i64 - rh.bytes as i64
    );
}

/// (b): TCP connections opened and closed between two HostStacks.
fn connections(n: usize) {
    let switch = MemorySwitch::new();
    let a = HostStack::new(
        port(&switch, [0x02, 0, 0, 0, 0, 1]),
        host_config(A_IP, 4096),
    )
    .expect("stack a");
    let b = HostStack::new(
        port(&switch, [0x02, 0, 0, 0, 0, 2]),
        host_config(B_IP, 4096),
    )
    .expect("stack b");
    up(&a);
    up(&b);
    let l = b
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .expect("socket");
    b.bind(l, SocketAddr::from((Ipv4Addr::UNSPECIFIED, PORT)))
        .expect("bind");
    b.listen(l, 1).expect("listen");
    let dst = SocketAddr::from((B_IP, PORT));
    let one = || {
        let fd = a
            .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
            .expect("socket");
        a.connect(fd, None, dst, deadline(&a)).expect("connect");
        let (c, _) = b.accept(l, deadline(&b)).expect("accept");
        a.close(fd).expect("close client");
        b.close(c).expect("close server");
    };
    // Warm-up: ARP, the switch queues, lazily built thread-local state, and
    // more than the 24 pooled sockets so TIME-WAIT reuse is in the loop.
    for _ in 0..32 {
        one();
    }
    std::thread::sleep(Duration::from_millis(50));
    let sw0 = switch.stats().delivered;
    let before = Heap::now();
    for _ in 0..n {
        one();
    }
    std::thread::sleep(Duration::from_millis(50));
    let h = Heap::now().since(before);
    let copies = switch.stats().delivered - sw0;
    println!(
        "\n(b) per TCP connection (connect + accept + close both ends), mean of {n}, two HostStacks:"
    );
    heap_line("netdever", h, n as f64, Some(copies));
}

/// One bulk measurement: allocations per MiB and switch copies per MiB.
struct Bulk {
    heap: Heap,
    copies: u64,
    bytes: usize,
}

impl Bulk {
    fn print(&self, label: &str) {
        let mib = self.bytes as f64 / f64::from(1 << 20);
        heap_line(label, self.heap, mib, Some(self.copies));
    }
}

/// (c) anchor: raw smoltcp pair, one thread polls both, same switch kind.
fn bulk_raw(total: usize) -> Bulk {
    let switch = MemorySwitch::new();
    let mut a = RawEnd::new(port(&switch, [0x02, 0, 0, 0, 0, 1]), A_IP, 24);
    let mut b = RawEnd::new(port(&switch, [0x02, 0, 0, 0, 0, 2]), B_IP, 24);
    b.tcp().listen(PORT).expect("listen");
    a.connect((B_IP, PORT), 49152);
    let until = StdInstant::now() + LIMIT;
    while !(a.tcp().may_send() && b.tcp().may_recv()) {
        assert!(StdInstant::now() < until, "raw smoltcp: no connection");
        a.poll();
        b.poll();
    }
    let data: Vec<u8> = (0..TCP_BUFFER).map(|i| i as u8).collect();
    let mut sink = vec![0u8; TCP_BUFFER];
    let mut move_bytes = |n: usize| {
        let (mut sent, mut got) = (0, 0);
        let until = StdInstant::now() + LIMIT;
        while got < n {
            if sent < n {
                let s = a.tcp();
                if s.can_send() {
                    sent += s
                        .send_slice(&data[..(n - sent).min(TCP_BUFFER)])
                        .expect("send");
                }
            }
            a.poll();
            b.poll();
            let s = b.tcp();
            while s.can_recv() {
                got += s.recv_slice(&mut sink).expect("recv");
            }
            assert!(StdInstant::now() < until, "raw smoltcp stalled");
        }
    };
    move_bytes(total / 4);
    let sw0 = switch.stats().delivered;
    let before = Heap::now();
    move_bytes(total);
    Bulk {
        heap: Heap::now().since(before),
        copies: switch.stats().delivered - sw0,
        bytes: total,
    }
}

/// (c): two HostStacks, this thread sends, a reader thread receives.
/// Hand-offs use a `Barrier` and atomics so the harness allocates nothing
/// inside the measured window.
fn bulk_netdever(total: usize) -> Bulk {
    let switch = MemorySwitch::new();
    let a = HostStack::new(
        port(&switch, [0x02, 0, 0, 0, 0, 1]),
        host_config(A_IP, TCP_BUFFER),
    )
    .expect("stack a");
    let b = HostStack::new(
        port(&switch, [0x02, 0, 0, 0, 0, 2]),
        host_config(B_IP, TCP_BUFFER),
    )
    .expect("stack b");
    up(&a);
    up(&b);
    let l = b
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .expect("socket");
    b.bind(l, SocketAddr::from((Ipv4Addr::UNSPECIFIED, PORT)))
        .expect("bind");
    b.listen(l, 1).expect("listen");
    let fd = a
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .expect("socket");
    a.connect(fd, None, SocketAddr::from((B_IP, PORT)), deadline(&a))
        .expect("connect");
    let (c, _) = b.accept(l, deadline(&b)).expect("accept");
    b.close(l).expect("close listener");

    let data: Vec<u8> = (0..TCP_BUFFER).map(|i| i as u8).collect();
    let want = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicBool::new(true));
    let gate = Arc::new(Barrier::new(2));
    let reader = {
        let (b, want, ok, gate) = (b.clone(), want.clone(), ok.clone(), gate.clone());
        std::thread::Builder::new()
            .name("reader".into())
            .spawn(move || {
                let mut buf = vec![0u8; TCP_BUFFER];
                loop {
                    gate.wait();
                    let n = want.load(Ordering::SeqCst);
                    if n == 0 {
                        break;
                    }
                    let d = deadline(&b);
                    let mut got = 0;
                    while got < n {
                        match b.recv(c, &mut buf, MsgFlags::NONE, d) {
                            Ok(k) if k > 0 => got += k,
                            _ => {
                                ok.store(false, Ordering::SeqCst);
                                break;
                            }
                        }
                    }
                    gate.wait();
                }
                let _ = b.close(c);
            })
            .expect("spawn reader")
    };
    let run = |n: usize| {
        want.store(n, Ordering::SeqCst);
        gate.wait();
        let d = deadline(&a);
        let mut sent = 0;
        while sent < n {
            sent += a
                .send(fd, &data[..(n - sent).min(TCP_BUFFER)], MsgFlags::NONE, d)
                .expect("netdever send");
        }
        gate.wait();
        assert!(ok.load(Ordering::SeqCst), "netdever reader failed");
    };
    run(total / 4);
    // Let the last ACKs land so no frame is between its copy and its count
    // when the counters are read (the window includes this idle time).
    let settle = || std::thread::sleep(Duration::from_millis(30));
    settle();
    let sw0 = switch.stats().delivered;
    let before = Heap::now();
    run(total);
    settle();
    let bulk = Bulk {
        heap: Heap::now().since(before),
        copies: switch.stats().delivered - sw0,
        bytes: total,
    };
    want.store(0, Ordering::SeqCst);
    gate.wait();
    reader.join().expect("reader");
    let _ = a.close(fd);
    bulk
}

fn main() {
    let full = bench_mode();
    let t0 = StdInstant::now();
    println!(
        "netdever memory footprint (sizes for this target: {} pointer bytes)",
        size_of::<usize>()
    );

    println!("\n== 1. RAM: full stack (no_std path: Stack over a null link, SpinPlatform, SliceResources) vs raw smoltcp ==");
    println!("anchor: raw smoltcp Interface + minimal Device (1514 B rx + tx frame buffers) + SocketSet + handles,");
    println!("        the same TCP/UDP sockets, DHCPv4 and DNS sockets, from a SliceResources of the same shape");
    let small = StackConfig {
        tcp_sockets: 4,
        udp_sockets: 2,
        tcp_rx_buffer: 4096,
        tcp_tx_buffer: 4096,
        udp_rx_buffer: 2048,
        udp_tx_buffer: 2048,
        udp_packets: 4,
        ..StackConfig::default()
    };
    ram_section::<4, 2>("small MCU shape", &small);
    ram_section::<24, 8>("StackConfig::default()", &StackConfig::default());

    offload_section();

    println!("\n== 3. Heap under std (counting global allocator, all threads) ==");
    build_heap("StackConfig::default()", &StackConfig::default());
    connections(if full { 64 } else { 8 });
    let total = if full { 32 << 20 } else { 4 << 20 };
    let raw = bulk_raw(total);
    let ndv = bulk_netdever(total);
    println!(
        "\n(c) steady-state bulk TCP over the memory switch, 64 KiB buffers, per MiB ({} MiB measured after {} MiB warm-up):",
        total >> 20,
        total >> 22
    );
    raw.print("raw smoltcp (one thread polls both ends)");
    ndv.print("netdever (HostStacks, send/recv threads)");
    let per =
        |b: &Bulk| (b.heap.allocs as f64 - b.copies as f64) / (b.bytes as f64 / f64::from(1 << 20));
    println!(
        "  stack allocations per MiB (all minus the switch's copies): raw {:.2}, netdever {:.2}",
        per(&raw),
        per(&ndv)
    );
    println!("\n(done in {:.1} s)", t0.elapsed().as_secs_f64());
}
