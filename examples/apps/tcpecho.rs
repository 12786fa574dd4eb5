//! `tcpecho`: a TCP echo server with a thread per client (TinyGo's
//! `examples/net/tcpecho`), plus one sending each client's echo so that
//! receiving never waits on sending.
//!
//! On the simulated network the peer then connects `--clients` clients at
//! once, each sends `--bytes` of its own byte pattern while reading the echo
//! back on a second thread, and checks every byte; the example exits when
//! that self-test is done (0 if it passed) unless `--serve` keeps it
//! serving. On a TAP link it just serves (`nc 10.0.0.1 8080`).

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::thread::Scope;
use std::time::{Duration, Instant};

use netdever::{AddressFamily, Error, MsgFlags, Netdever, Protocol, SockOpt, SockType, Sockfd};

use crate::common::cli::Extra;
use crate::common::pattern::Pattern;
use crate::common::tcp::TcpConn;
use crate::common::{announce, fmt_size, mb_per_s, within, Net, Opts, Outcome, Spec};

/// Command line of `tcpecho`.
pub const SPEC: Spec = Spec {
    name: "tcpecho",
    about: "TCP echo server, one thread per client",
    server: true,
    default_port: 8080,
    extra: &[
        Extra {
            name: "--clients",
            value: "N",
            default: "4",
            help: "self-test: clients the simulated peer connects at once",
        },
        Extra {
            name: "--bytes",
            value: "N",
            default: "1M",
            help: "self-test: bytes each client sends and expects back",
        },
    ],
};

/// Bound on the self-test.
const LIMIT: Duration = Duration::from_secs(60);
/// How often blocked server calls look at the stop flag.
const TICK: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Stats {
    clients: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

/// Run `tcpecho` on `net`.
pub fn run(net: &Net, o: &Opts) -> Outcome {
    let dev: &dyn Netdever = &net.dev;
    let clients = o.num("--clients")?.clamp(1, 8) as usize;
    let bytes = o.size("--bytes")?;

    let l = dev
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .map_err(|e| format!("socket: {e}"))?;
    if let Err(e) = dev
        .bind(l, SocketAddr::from((Ipv4Addr::UNSPECIFIED, o.port)))
        .and_then(|_| dev.listen(l, 4))
    {
        let _ = dev.close(l);
        return Err(format!("listening on port {}: {e}", o.port));
    }
    let ip = net.dev_ip()?;
    if !o.quiet {
        announce(format_args!("listening on {ip}:{}", o.port));
    }

    let stop = AtomicBool::new(false);
    let stats = Stats::default();
    let until = o.duration.map(|d| Instant::now() + d);
    std::thread::scope(|s| {
        let server = s.spawn(|| serve(s, dev, l, &stop, until, &stats, o));
        let test = net
            .peer
            .as_ref()
            .map(|peer| self_test(peer, SocketAddr::from((ip, o.port)), clients, bytes, o));
        let keep_serving = o.serve || net.peer.is_none();
        if !keep_serving || matches!(test, Some(Err(_))) {
            stop.store(true, Ordering::Release);
        }
        if let Some(Ok(summary)) = &test {
            if keep_serving {
                o.say(format_args!("self-test passed: {summary}; serving on"));
            }
        }
        server
            .join()
            .map_err(|_| "server thread panicked".to_string())?;
        o.say(format_args!(
            "served {} clients, echoed {}, {} errors",
            stats.clients.load(Ordering::Relaxed),
            fmt_size(stats.bytes.load(Ordering::Relaxed)),
            stats.errors.load(Ordering::Relaxed)
        ));
        match test {
            Some(r) => {
                let summary = r?;
                if stats.errors.load(Ordering::Relaxed) != 0 {
                    return Err("the server saw errors".into());
                }
                Ok(summary)
            }
            None => Ok(format!(
                "served {} clients",
                stats.clients.load(Ordering::Relaxed)
            )),
        }
    })
}

/// Accept clients until told to stop, each on its own thread.
fn serve<'scope, 'env>(
    s: &'scope Scope<'scope, 'env>,
    dev: &'env dyn Netdever,
    l: Sockfd,
    stop: &'env AtomicBool,
    until: Option<Instant>,
    stats: &'env Stats,
    o: &'env Opts,
) {
    // Stopped by the self-test's end, --duration, or whoever holds `o.stop`.
    let stopped = move || {
        stop.load(Ordering::Acquire)
            || o.stop.load(Ordering::Acquire)
            || until.is_some_and(|u| Instant::now() >= u)
    };
    while !stopped() {
        match dev.accept(l, within(dev, TICK)) {
            Ok((c, peer)) => {
                stats.clients.fetch_add(1, Ordering::Relaxed);
                o.say(format_args!("client {peer} connected"));
                s.spawn(move || {
                    match echo(dev, c, &stopped) {
                        Ok(n) => {
                            stats.bytes.fetch_add(n, Ordering::Relaxed);
                            o.say(format_args!("client {peer} done, echoed {n} bytes"));
                        }
                        Err(e) => {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                            eprintln!("client {peer}: {e}");
                        }
                    }
                    let _ = dev.close(c);
                });
            }
            Err(Error::Timeout) => {}
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("accept: {e}");
                break;
            }
        }
    }
    let _ = dev.close(l);
}

/// Most received bytes an [`echo`] holds that it has not sent back yet.
const ECHO_QUEUE: usize = 4 << 20;
/// Chunk size of an [`echo`]'s reads.
const ECHO_CHUNK: usize = 16 * 1024;

/// Echo one client until it closes its side (or the server stops).
///
/// Full duplex: this thread keeps receiving while a second one sends the
/// echo, with up to [`ECHO_QUEUE`] bytes in between, so a `send` waiting
/// for the client's ACKs never stops the receive side. A read-then-write
/// loop closes its receive window whenever a send blocks, and then only an
/// ACK from the client can move anything. Behind Debian 12's passt
/// (0.0~git20230309) that ACK can be lost for good: while the device's
/// window is 0, passt's `EPOLLOUT` handler advances the ACK number it
/// counts as sent (`tcp_update_seqack_wnd()`) without sending a segment;
/// it then drops the device's retransmissions of data it already wrote to
/// the host socket without acknowledging them, and with the window 0 it
/// has no data segment to carry the ACK either, until it resets the
/// connection (~17 s). Captures of such a `tcpecho` cell (~5% of runs
/// failed, `Connection reset by peer`): passt had written, and python had
/// received and acknowledged, 65536 bytes more than passt ever
/// acknowledged to the device; the device retransmitted them at 1, 2, 4,
/// 8 s with window 0 while its echo thread sat in `send`. Receiving on
/// reopens the window, passt's next data segment carries the ACK.
fn echo(dev: &dyn Netdever, c: Sockfd, stopped: &(dyn Fn() -> bool + Sync)) -> Result<u64, Error> {
    // An echo goes back at once: no Nagle delay waiting for the peer's ACK
    // of earlier data (a peer that acks late would stall the tail).
    dev.set_sock_opt(c, SockOpt::NoDelay(true))?;
    let queue = Queue::default();
    let queue = &queue;
    std::thread::scope(|s| {
        let writer = s.spawn(move || -> Result<(), Error> {
            while let Some(chunk) = queue.pop() {
                let mut rest = &chunk[..];
                while !rest.is_empty() {
                    match dev.send(c, rest, MsgFlags::NONE, within(dev, TICK)) {
                        Ok(k) => rest = &rest[k..],
                        Err(Error::Timeout) if !stopped() => {}
                        Err(e) => {
                            queue.fail();
                            return Err(e);
                        }
                    }
                }
                queue.sent(chunk.len());
            }
            Ok(())
        });
        let mut total = 0u64;
        let read = loop {
            let mut buf = vec![0u8; ECHO_CHUNK];
            match dev.recv(c, &mut buf, MsgFlags::NONE, within(dev, TICK)) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    buf.truncate(n);
                    if !queue.push(buf, stopped) {
                        break Ok(()); // the writer failed: its error tells
                    }
                    total += n as u64;
                }
                Err(Error::Timeout) if !stopped() => {}
                Err(e) => break Err(e),
            }
        };
        queue.close();
        let wrote = writer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        read?;
        wrote?;
        Ok(total)
    })
}

/// The bytes between an [`echo`]'s receiving and sending threads.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    cv: Condvar,
}

#[derive(Default)]
struct QueueState {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes received and not yet sent.
    held: usize,
    /// No more chunks come.
    closed: bool,
    /// The sender gave up.
    failed: bool,
}

impl Queue {
    /// Add a chunk, waiting while [`ECHO_QUEUE`] bytes are held; `false`
    /// if the sending side failed (or the server stops).
    fn push(&self, chunk: Vec<u8>, stopped: &dyn Fn() -> bool) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while st.held >= ECHO_QUEUE && !st.failed {
            if stopped() {
                return false;
            }
            st = self
                .cv
                .wait_timeout(st, TICK)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if st.failed {
            return false;
        }
        st.held += chunk.len();
        st.chunks.push_back(chunk);
        self.cv.notify_all();
        true
    }

    /// The next chunk to send; `None` once closed and empty (or failed).
    fn pop(&self) -> Option<Vec<u8>> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if st.failed {
                return None;
            }
            if let Some(c) = st.chunks.pop_front() {
                return Some(c);
            }
            if st.closed {
                return None;
            }
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// `n` bytes of a popped chunk went out.
    fn sent(&self, n: usize) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.held -= n;
        self.cv.notify_all();
    }

    fn close(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.closed = true;
        self.cv.notify_all();
    }

    fn fail(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.failed = true;
        self.cv.notify_all();
    }
}

/// The simulated peer's clients: `clients` at once, each sending `bytes`
/// and checking the echo.
fn self_test(
    peer: &dyn Netdever,
    server: SocketAddr,
    clients: usize,
    bytes: u64,
    o: &Opts,
) -> Result<String, String> {
    o.say(format_args!(
        "self-test: {clients} clients x {} to {server}",
        fmt_size(bytes)
    ));
    let start = Instant::now();
    let results: Vec<Result<u64, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|i| s.spawn(move || echo_client(peer, server, i as u64, bytes)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("client panicked".into())))
            .collect()
    });
    let elapsed = start.elapsed();
    for (i, r) in results.iter().enumerate() {
        if let Err(e) = r {
            return Err(format!("self-test client {i}: {e}"));
        }
    }
    let total = bytes * clients as u64;
    let rate = mb_per_s(total, elapsed);
    o.say(format_args!(
        "self-test: {clients} clients echoed {} intact in {:.3} s ({rate:.1} MB/s each way)",
        fmt_size(total),
        elapsed.as_secs_f64()
    ));
    Ok(format!(
        "{rate:.1} MB/s echoed ({clients} clients x {})",
        fmt_size(bytes)
    ))
}

/// One self-test client: a writer thread sends the pattern and shuts down
/// its side; this thread reads the echo to the end and checks it.
fn echo_client(
    dev: &dyn Netdever,
    server: SocketAddr,
    seed: u64,
    bytes: u64,
) -> Result<u64, String> {
    let mut conn = TcpConn::connect(dev, server, Duration::from_secs(10))
        .map_err(|e| format!("connecting to {server}: {e}"))?;
    conn.set_deadline(within(dev, LIMIT));
    let conn = &conn;
    let pat = Pattern::new(seed, 16 * 1024);
    let pat = &pat;
    std::thread::scope(|s| {
        let writer = s.spawn(move || -> Result<(), String> {
            let mut sent = 0u64;
            while sent < bytes {
                let n = (bytes - sent).min(pat.chunk() as u64) as usize;
                conn.write_all(pat.at(sent, n))
                    .map_err(|e| format!("send after {sent} bytes: {e}"))?;
                sent += n as u64;
            }
            conn.shutdown_write().map_err(|e| format!("shutdown: {e}"))
        });
        let mut buf = vec![0u8; 16 * 1024];
        let mut got = 0u64;
        let read = loop {
            match conn.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    if !pat.check(got, &buf[..n]) {
                        break Err(format!("wrong echo at offset {got}"));
                    }
                    got += n as u64;
                }
                Err(e) => break Err(format!("recv after {got} bytes: {e}")),
            }
        };
        writer.join().map_err(|_| "writer panicked".to_string())??;
        read?;
        if got != bytes {
            return Err(format!("echo ended after {got} of {bytes} bytes"));
        }
        Ok(got)
    })
}
