//! Bulk TCP over the in-memory link: raw smoltcp vs the Netdever stack.
//!
//! * `raw-smoltcp`: two smoltcp `Interface`s, each with a `SocketSet` and
//!   one TCP socket, over `LinkDevice<MemoryLink>` ports of one
//!   `MemorySwitch`, driven by a single thread that polls both and moves the
//!   bytes in and out of the sockets.
//! * `netdever`: two `HostStack`s on the same kind of switch (each with its
//!   driver thread); a writer thread calls `send`, a reader thread `recv`.
//!
//! Both use 64 KiB TCP buffers each way and move 8 MiB per iteration over
//! a connection opened once. After criterion, the same process times a
//! fixed number of transfers of each itself and prints
//! `ratio netdever/raw-smoltcp throughput: X.XX` (criterion does not hand
//! its estimates back to the program).
//!
//! `cargo bench --bench tcp_memory`
#[path = "common/mod.rs"]
mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use netdever::phy::memory::{MemoryLink, MemorySwitch};
use netdever::stack::host::HostStack;
use netdever::stack::StackConfig;
use netdever::{
    AddressFamily, ConnectParams, Deadline, IpConfig, IpMode, MsgFlags, Netlinker, Protocol,
    SockType, Socketer, Sockfd,
};

use common::{bench_mode, mb_per_s, median, RawEnd, TCP_BUFFER};

/// Bytes per iteration.
const TRANSFER: usize = 8 << 20;
/// Bound on one transfer.
const LIMIT: Duration = Duration::from_secs(30);
const A_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const PORT: u16 = 5001;

/// The raw smoltcp pair, polled by one thread.
struct RawPair {
    a: RawEnd<MemoryLink>,
    b: RawEnd<MemoryLink>,
    data: Vec<u8>,
    sink: Vec<u8>,
}

impl RawPair {
    fn new() -> Self {
        let switch = MemorySwitch::new();
        let mut a = RawEnd::new(switch.port([2, 0, 0, 0, 0, 1]), A_IP, 24);
        let mut b = RawEnd::new(switch.port([2, 0, 0, 0, 0, 2]), B_IP, 24);
        b.tcp().listen(PORT).expect("listen");
        a.connect((B_IP, PORT), 49152);
        let until = Instant::now() + Duration::from_secs(5);
        while !(a.tcp().may_send() && b.tcp().may_recv()) {
            assert!(Instant::now() < until, "raw smoltcp: no connection");
            a.poll();
            b.poll();
        }
        RawPair {
            a,
            b,
            data: (0..TCP_BUFFER).map(|i| i as u8).collect(),
            sink: vec![0; TCP_BUFFER],
        }
    }

    /// Move `n` bytes from a to b.
    fn transfer(&mut self, n: usize) {
        let (mut sent, mut got) = (0, 0);
        let until = Instant::now() + LIMIT;
        let mut spins = 0u32;
        while got < n {
            if sent < n {
                let s = self.a.tcp();
                if s.can_send() {
                    sent += s
                        .send_slice(&self.data[..(n - sent).min(TCP_BUFFER)])
                        .expect("send");
                }
            }
            self.a.poll();
            self.b.poll();
            let s = self.b.tcp();
            while s.can_recv() {
                got += s.recv_slice(&mut self.sink).expect("recv");
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(4096) {
                assert!(
                    Instant::now() < until,
                    "raw smoltcp: transfer stalled at {got}/{n}"
                );
            }
        }
    }
}

/// Two Netdever stacks with a connection between them and a reader thread.
struct NdvPair {
    a: HostStack,
    _b: HostStack,
    fd: Sockfd,
    data: Vec<u8>,
    go: Option<mpsc::Sender<usize>>,
    done: mpsc::Receiver<Result<(), String>>,
    reader: Option<JoinHandle<()>>,
}

fn stack(link: MemoryLink, ip: Ipv4Addr) -> HostStack {
    let config = StackConfig {
        tcp_rx_buffer: TCP_BUFFER,
        tcp_tx_buffer: TCP_BUFFER,
        ip: IpMode::Static(IpConfig::new(ip, 24)),
        ..StackConfig::default()
    };
    let s = HostStack::new(link, config).expect("stack");
    s.net_connect(&ConnectParams {
        ip: IpMode::Keep,
        ..ConnectParams::default()
    })
    .expect("net up");
    s
}

impl NdvPair {
    fn new() -> Self {
        let switch = MemorySwitch::new();
        let a = stack(switch.port([2, 0, 0, 0, 0, 1]), A_IP);
        let b = stack(switch.port([2, 0, 0, 0, 0, 2]), B_IP);
        let within = |s: &HostStack, d| Deadline::after(s.now(), d);
        let l = b
            .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
            .expect("socket");
        b.bind(l, SocketAddr::from((Ipv4Addr::UNSPECIFIED, PORT)))
            .expect("bind");
        b.listen(l, 1).expect("listen");
        let fd = a
            .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
            .expect("socket");
        a.connect(
            fd,
            None,
            SocketAddr::from((B_IP, PORT)),
            within(&a, Duration::from_secs(5)),
        )
        .expect("connect");
        let (c, _) = b
            .accept(l, within(&b, Duration::from_secs(5)))
            .expect("accept");
        b.close(l).expect("close listener");

        let (go, go_rx) = mpsc::channel::<usize>();
        let (done_tx, done) = mpsc::channel();
        let rb = b.clone();
        let reader = std::thread::Builder::new()
            .name("reader".into())
            .spawn(move || {
                let mut buf = vec![0u8; TCP_BUFFER];
                for n in go_rx {
                    let deadline = Deadline::after(rb.now(), LIMIT);
                    let mut got = 0;
                    let r = loop {
                        if got >= n {
                            break Ok(());
                        }
                        match rb.recv(c, &mut buf, MsgFlags::NONE, deadline) {
                            Ok(0) => break Err(format!("EOF after {got}/{n}")),
                            Ok(k) => got += k,
                            Err(e) => break Err(format!("recv after {got}/{n}: {e}")),
                        }
                    };
                    if done_tx.send(r).is_err() {
                        break;
                    }
                }
                let _ = rb.close(c);
            })
            .expect("spawn reader");
        NdvPair {
            a,
            _b: b,
            fd,
            data: (0..TCP_BUFFER).map(|i| i as u8).collect(),
            go: Some(go),
            done,
            reader: Some(reader),
        }
    }

    /// Move `n` bytes from a to b: this thread writes, the reader reads.
    fn transfer(&mut self, n: usize) {
        self.go
            .as_ref()
            .expect("open")
            .send(n)
            .expect("reader alive");
        let deadline = Deadline::after(self.a.now(), LIMIT);
        let mut sent = 0;
        while sent < n {
            sent += self
                .a
                .send(
                    self.fd,
                    &self.data[..(n - sent).min(TCP_BUFFER)],
                    MsgFlags::NONE,
                    deadline,
                )
                .unwrap_or_else(|e| panic!("netdever: send after {sent}/{n}: {e}"));
        }
        match self.done.recv_timeout(LIMIT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("netdever: reader: {e}"),
            Err(e) => panic!("netdever: reader did not finish: {e}"),
        }
    }
}

impl Drop for NdvPair {
    fn drop(&mut self) {
        let _ = self.a.close(self.fd);
        self.go.take();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .nresamples(10_000)
        .configure_from_args();

    let mut raw = RawPair::new();
    let mut ndv = NdvPair::new();
    {
        let mut g = c.benchmark_group("tcp_memory");
        g.throughput(Throughput::Bytes(TRANSFER as u64));
        g.bench_function("raw-smoltcp", |b| b.iter(|| raw.transfer(TRANSFER)));
        g.bench_function("netdever", |b| b.iter(|| ndv.transfer(TRANSFER)));
        g.finish();
    }
    c.final_summary();

    // Our own figures for the ratio, from this process: rounds alternate
    // between the two so drift (CPU clock, other load) hits both alike.
    let (rounds, per_round) = if bench_mode() { (5, 4) } else { (1, 1) };
    let mut raw_mbs = Vec::new();
    let mut ndv_mbs = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..per_round {
            raw.transfer(TRANSFER);
        }
        raw_mbs.push(mb_per_s((TRANSFER * per_round) as u64, t.elapsed()));
        let t = Instant::now();
        for _ in 0..per_round {
            ndv.transfer(TRANSFER);
        }
        ndv_mbs.push(mb_per_s((TRANSFER * per_round) as u64, t.elapsed()));
    }
    let (r, n) = (median(raw_mbs), median(ndv_mbs));
    println!(
        "\nown timing, median of {rounds} rounds x {per_round} x {} MiB, 64 KiB TCP buffers, memory link:",
        TRANSFER >> 20
    );
    println!("  raw-smoltcp (one thread polls both): {r:8.1} MB/s");
    println!("  netdever (HostStacks, send/recv):    {n:8.1} MB/s");
    println!("ratio netdever/raw-smoltcp throughput: {:.2}", n / r);
}
