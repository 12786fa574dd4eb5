//! Deterministic two-stack simulation: two stacks on the memory switch,
//! no threads, no allocator-backed buffers (SliceResources), a manual
//! clock and the bare-metal `SpinPlatform`. Everything happens in one loop
//! that polls both stacks and advances time, the way firmware would run
//! the stack from its main loop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::vec;
use std::vec::Vec;

use rand::SeedableRng;
use smoltcp::iface::SocketStorage;
use smoltcp::socket::{dns, udp};

use super::*;
use crate::netlink::Netlinker;
use crate::phy::memory::MemoryLink;
use crate::platform::SpinPlatform;
use crate::socketer::{Netdever, Socketer};
use crate::time::Deadline;
use crate::types::*;

type Clock = Arc<AtomicU64>;
type SimStack =
    Stack<'static, MemoryLink, SpinPlatform<std::boxed::Box<dyn Fn() -> Instant + Send + Sync>>, 8>;

fn resources(cfg: &StackConfig) -> SliceResources<'static> {
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
    SliceResources::new(storage, meta, dns_q, arena)
}

fn stack(link: MemoryLink, clock: &Clock, ip: [u8; 4], seed: u64) -> SimStack {
    let cfg = StackConfig {
        tcp_sockets: 4,
        udp_sockets: 2,
        tcp_rx_buffer: 4096,
        tcp_tx_buffer: 4096,
        udp_rx_buffer: 1024,
        udp_tx_buffer: 1024,
        udp_packets: 4,
        ip: IpMode::Static(IpConfig::new(Ipv4Addr::from(ip), 24)),
        ..Default::default()
    };
    let c = clock.clone();
    let clock_fn: std::boxed::Box<dyn Fn() -> Instant + Send + Sync> =
        std::boxed::Box::new(move || Instant::from_micros(c.load(Ordering::SeqCst)));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    Stack::new(
        link,
        SpinPlatform::new(clock_fn),
        &cfg,
        resources(&cfg),
        &mut rng,
    )
    .unwrap()
}

/// Poll both stacks and advance the clock by 1 ms, `n` times or until `done`.
fn run(
    a: &SimStack,
    b: &SimStack,
    clock: &Clock,
    n: usize,
    mut done: impl FnMut() -> bool,
) -> bool {
    for _ in 0..n {
        a.poll();
        b.poll();
        if done() {
            return true;
        }
        clock.fetch_add(1000, Ordering::SeqCst);
    }
    false
}

#[test]
fn tcp_and_udp_without_threads_or_heap_buffers() {
    let clock: Clock = Arc::new(AtomicU64::new(0));
    let (la, lb) = MemoryLink::pair();
    let a = stack(la, &clock, [10, 0, 0, 1], 1);
    let b = stack(lb, &clock, [10, 0, 0, 2], 2);
    assert!(run(&a, &b, &clock, 200, || a.addr().is_ok() && b.addr().is_ok()));

    // Server on b, non-blocking.
    let l = b
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .unwrap();
    b.bind(l, "0.0.0.0:80".parse().unwrap()).unwrap();
    b.listen(l, 2).unwrap();
    b.set_sock_opt(l, SockOpt::NonBlocking(true)).unwrap();
    assert_eq!(b.accept(l, Deadline::Never), Err(Error::WouldBlock));

    let c = a
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .unwrap();
    a.set_sock_opt(c, SockOpt::NonBlocking(true)).unwrap();
    assert_eq!(
        a.connect(c, None, "10.0.0.2:80".parse().unwrap(), Deadline::Never),
        Err(Error::InProgress)
    );
    let mut conn = None;
    assert!(run(&a, &b, &clock, 500, || {
        if conn.is_none() {
            conn = b.accept(l, Deadline::Never).ok();
        }
        conn.is_some()
    }));
    let (s, peer) = conn.unwrap();
    assert_eq!(peer.ip(), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));

    // 64 KiB through 4 KiB buffers: many rounds of partial sends and receives.
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut sent = 0;
    let mut got = Vec::new();
    let mut buf = [0u8; 1500];
    assert!(run(&a, &b, &clock, 20_000, || {
        if sent < data.len() {
            match a.send(c, &data[sent..], MsgFlags::NONE, Deadline::Never) {
                Ok(n) => sent += n,
                Err(Error::WouldBlock) => {}
                Err(e) => panic!("send: {e}"),
            }
        }
        match b.recv(s, &mut buf, MsgFlags::DONTWAIT, Deadline::Never) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(Error::WouldBlock) => {}
            Err(e) => panic!("recv: {e}"),
        }
        got.len() == data.len()
    }));
    assert_eq!(got, data);

    // Orderly close: b sees EOF.
    a.close(c).unwrap();
    let mut eof = false;
    assert!(run(&a, &b, &clock, 500, || {
        eof = b.recv(s, &mut buf, MsgFlags::DONTWAIT, Deadline::Never) == Ok(0);
        eof
    }));
    b.close(s).unwrap();
    b.close(l).unwrap();

    // UDP datagram both ways.
    let u = b
        .socket(AddressFamily::Inet, SockType::Dgram, Protocol::Udp)
        .unwrap();
    b.bind(u, "0.0.0.0:53".parse().unwrap()).unwrap();
    let v = a
        .socket(AddressFamily::Inet, SockType::Dgram, Protocol::Udp)
        .unwrap();
    a.send_to(
        v,
        b"ping",
        MsgFlags::NONE,
        "10.0.0.2:53".parse().unwrap(),
        Deadline::Never,
    )
    .unwrap();
    let mut from = None;
    assert!(run(&a, &b, &clock, 200, || {
        if let Ok((n, f)) = b.recv_from(u, &mut buf, MsgFlags::DONTWAIT, Deadline::Never) {
            assert_eq!(&buf[..n], b"ping");
            from = Some(f);
        }
        from.is_some()
    }));
    assert_eq!(from.unwrap(), a.local_addr(v).unwrap());
}

#[test]
fn spin_platform_blocking_call_drives_the_stack_itself() {
    // No driver: a blocking recv with a deadline must poll the stack itself
    // and time out when the (manual) clock passes the deadline.
    let clock: Clock = Arc::new(AtomicU64::new(0));
    let (la, _lb) = MemoryLink::pair();
    let a = stack(la, &clock, [10, 0, 0, 1], 3);
    let u = a
        .socket(AddressFamily::Inet, SockType::Dgram, Protocol::Udp)
        .unwrap();
    a.bind(u, "0.0.0.0:9".parse().unwrap()).unwrap();
    let c2 = clock.clone();
    let ticker = std::thread::spawn(move || {
        for _ in 0..2000 {
            c2.fetch_add(1000, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    });
    let mut buf = [0u8; 16];
    let until = Deadline::at_millis(&a, 50);
    assert_eq!(
        a.recv(u, &mut buf, MsgFlags::NONE, until),
        Err(Error::Timeout)
    );
    assert!(a.now() >= until.instant().unwrap());
    ticker.join().unwrap();
}

trait AtMillis {
    fn at_millis(s: &SimStack, ms: u64) -> Deadline;
}
impl AtMillis for Deadline {
    fn at_millis(s: &SimStack, ms: u64) -> Deadline {
        Deadline::after(s.now(), core::time::Duration::from_millis(ms))
    }
}

#[test]
fn link_down_and_up_report_net_events() {
    let clock: Clock = Arc::new(AtomicU64::new(0));
    let (la, lb) = MemoryLink::pair();
    let handle = la.handle();
    let a = stack(la, &clock, [10, 0, 0, 1], 4);
    let b = stack(lb, &clock, [10, 0, 0, 2], 5);
    static EVENTS: std::sync::Mutex<Vec<Event>> = std::sync::Mutex::new(Vec::new());
    a.net_notify(Some(&|e| EVENTS.lock().unwrap().push(e)));
    assert!(run(&a, &b, &clock, 200, || a.addr().is_ok()));
    run(&a, &b, &clock, 100, || false);
    handle.set_link_up(false);
    assert!(run(&a, &b, &clock, 200, || EVENTS
        .lock()
        .unwrap()
        .contains(&Event::NetDown)));
    handle.set_link_up(true);
    assert!(run(&a, &b, &clock, 200, || EVENTS
        .lock()
        .unwrap()
        .ends_with(&[Event::NetDown, Event::NetUp])));
}

#[test]
fn close_in_close_wait_with_queued_data_does_not_stall_on_a_zero_window() {
    // b is an echo server whose client (a) half-closed first. b queues more
    // than a's window holds and closes while a is not reading, so a's
    // window hits zero with b in CLOSE-WAIT. When a reads again, its window
    // updates must restart b at once — not after the 1 s zero-window probe
    // (smoltcp ignores window updates in LAST-ACK, so the FIN must wait).
    let clock: Clock = Arc::new(AtomicU64::new(0));
    let (la, lb) = MemoryLink::pair();
    let a = stack(la, &clock, [10, 0, 0, 1], 6);
    let b = stack(lb, &clock, [10, 0, 0, 2], 7);
    assert!(run(&a, &b, &clock, 200, || a.addr().is_ok() && b.addr().is_ok()));
    let l = b
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .unwrap();
    b.bind(l, "0.0.0.0:7".parse().unwrap()).unwrap();
    b.listen(l, 1).unwrap();
    b.set_sock_opt(l, SockOpt::NonBlocking(true)).unwrap();
    let c = a
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .unwrap();
    a.set_sock_opt(c, SockOpt::NonBlocking(true)).unwrap();
    let _ = a.connect(c, None, "10.0.0.2:7".parse().unwrap(), Deadline::Never);
    let mut conn = None;
    assert!(run(&a, &b, &clock, 500, || {
        conn = conn.or_else(|| b.accept(l, Deadline::Never).ok());
        conn.is_some()
    }));
    let (s, _) = conn.unwrap();
    a.shutdown(c, Shutdown::Write).unwrap();
    let mut buf = [0u8; 512];
    assert!(run(&a, &b, &clock, 500, || b.recv(
        s,
        &mut buf,
        MsgFlags::DONTWAIT,
        Deadline::Never
    ) == Ok(0)));
    // b sends 8 KiB: the first 4 KiB fill a's window, the rest stays queued.
    let data = [0x5au8; 8192];
    let mut sent = 0;
    assert!(run(&a, &b, &clock, 500, || {
        if let Ok(n) = b.send(s, &data[sent..], MsgFlags::DONTWAIT, Deadline::Never) {
            sent += n;
        }
        sent == data.len()
    }));
    b.close(s).unwrap();
    run(&a, &b, &clock, 50, || false);
    // Now a reads everything; time it in simulated milliseconds.
    let start = clock.load(Ordering::SeqCst);
    let mut got = 0;
    let mut eof = false;
    assert!(run(&a, &b, &clock, 5000, || {
        match a.recv(c, &mut buf, MsgFlags::DONTWAIT, Deadline::Never) {
            Ok(0) => eof = true,
            Ok(n) => got += n,
            Err(_) => {}
        }
        eof
    }));
    assert_eq!(got, data.len());
    let took_ms = (clock.load(Ordering::SeqCst) - start) / 1000;
    assert!(took_ms < 500, "transfer stalled for {took_ms} simulated ms");
}
