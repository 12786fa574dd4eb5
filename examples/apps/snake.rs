//! `snake`: many TCP connections open at once, chained through an echo
//! server (TinyGo's `examples/net/snake`).
//!
//! Each snake segment is a TCP connection to the echo server, driven by its
//! own thread: it takes a message from the segment before it, sends it,
//! reads the echo, checks it and hands it to the segment after it. The head
//! is fed `--messages` numbered messages; the tail checks that every one
//! came out, in order and intact. So every message crosses every
//! connection twice, and all connections are busy at once.
//!
//! The snake is as long as the device's fd table allows:
//! `capabilities().max_sockets - 1` segments (or `--links`, capped to that),
//! leaving one fd spare. With every segment connected it proves the limit is
//! real: it opens sockets until the table is full (exactly the spare ones),
//! checks that one more is `NoMoreSockets`, and frees them again.
//!
//! On the simulated network the peer runs a thread-per-connection echo
//! server; on a TAP link any echo server will do.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::{Duration, Instant};

use netdever::net::TcpStream;
use netdever::{AddressFamily, Error, Netdever, Protocol, SockType};

use crate::common::cli::Extra;
use crate::common::{fmt_size, Net, Opts, Outcome, Spec};
use crate::peers_ws_mqtt::{echo, Dev, StopWhen, Stream};

/// Command line of `snake`.
pub const SPEC: Spec = Spec {
    name: "snake",
    about: "messages travel through a chain of concurrent TCP connections to an echo server",
    server: false,
    default_port: 8080,
    extra: &[
        Extra {
            name: "--links",
            value: "N",
            default: "0",
            help: "snake segments (connections); 0 or too many: max_sockets - 1",
        },
        Extra {
            name: "--messages",
            value: "N",
            default: "200",
            help: "messages fed to the head",
        },
        Extra {
            name: "--size",
            value: "BYTES",
            default: "256",
            help: "bytes per message (16..=16K)",
        },
    ],
};

/// Bound on every read and on the whole run.
const LIMIT: Duration = Duration::from_secs(30);
/// How long refused connects are tried again.
const CONNECT_RETRY: Duration = Duration::from_secs(5);

/// Message `seq`: its number, then a pattern.
fn message(seq: u64, size: usize) -> Vec<u8> {
    let mut m = seq.to_be_bytes().to_vec();
    m.extend((8..size).map(|j| ((j as u64 * 13 + seq) % 251) as u8));
    m
}

/// Run `snake` on `net`.
pub fn run(net: &Net, o: &Opts) -> Outcome {
    let dev: Dev = &net.dev;
    let caps = dev.capabilities();
    let room = caps.max_sockets.saturating_sub(1);
    if room == 0 {
        return Err(format!(
            "the device has {} fds: no room for a snake",
            caps.max_sockets
        ));
    }
    let asked = o.num("--links")? as usize;
    let links = if asked == 0 || asked > room {
        if asked > room {
            o.say(format_args!(
                "--links {asked} is more than the fd table allows: {room} (max_sockets {} - 1)",
                caps.max_sockets
            ));
        }
        room
    } else {
        asked
    };
    let messages = o.num("--messages")?;
    let size = o.size("--size")?.clamp(16, 16 * 1024) as usize;

    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (target, server) = match &net.peer {
            Some(peer) => {
                let when = StopWhen {
                    flag: &stop,
                    until: None,
                    max_clients: links as u64,
                };
                let h = echo::start(s, peer, o.port, links.min(8), when)
                    .map_err(|e| format!("peer: {e}"))?;
                (SocketAddr::from((net.peer_ip, o.port)), Some(h))
            }
            None => (o.peer.ok_or("--peer A.B.C.D:P is required")?, None),
        };
        let r = snake(dev, target, links, messages, size, o);
        stop.store(true, Ordering::Release);
        if let Some(h) = server {
            let served = h.join().map_err(|_| "peer thread panicked".to_string())?;
            if r.is_ok() {
                served.check("peer echo server")?;
                if served.clients != links as u64 {
                    return Err(format!(
                        "peer saw {} connections, expected {links}",
                        served.clients
                    ));
                }
            }
        }
        r
    })
}

/// Connect `links` segments at once, probe the fd table, run the messages.
fn snake(
    dev: Dev<'_>,
    target: SocketAddr,
    links: usize,
    messages: u64,
    size: usize,
    o: &Opts,
) -> Outcome {
    let max = dev.capabilities().max_sockets;
    o.say(format_args!(
        "connecting {links} segments to {target} at once (fd table: {max})"
    ));
    let t0 = Instant::now();
    // One thread per segment connects, as TinyGo's goroutines do.
    let conns: Vec<Result<Stream<'_>, String>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..links)
            .map(|i| {
                s.spawn(move || connect_retry(dev, target).map_err(|e| format!("segment {i}: {e}")))
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("connect thread panicked".into()))
            })
            .collect()
    });
    let conns: Vec<Stream<'_>> = conns.into_iter().collect::<Result<_, _>>()?;
    o.say(format_args!(
        "{links} connections up in {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    ));
    probe_fd_limit(dev, links, o)?;

    // head -> seg 0 -> seg 1 -> ... -> seg n-1 -> tail
    let mut senders: Vec<SyncSender<Vec<u8>>> = Vec::new();
    let mut receivers: Vec<Receiver<Vec<u8>>> = Vec::new();
    for _ in 0..=links {
        let (tx, rx) = mpsc::sync_channel(4);
        senders.push(tx);
        receivers.push(rx);
    }
    let tail = receivers.pop().expect("links + 1 channels");
    let head = senders.remove(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        let segs: Vec<_> = conns
            .into_iter()
            .zip(receivers)
            .zip(senders)
            .enumerate()
            .map(|(i, ((conn, rx), tx))| s.spawn(move || segment(i, conn, rx, tx, size)))
            .collect();
        let feeder = s.spawn(move || {
            for seq in 0..messages {
                if head.send(message(seq, size)).is_err() {
                    break; // a segment failed: its error tells why
                }
            }
        });
        let mut first = None;
        let mut tail_err = None;
        for seq in 0..messages {
            match tail.recv_timeout(LIMIT) {
                Ok(m) => {
                    if m != message(seq, size) {
                        let got = m
                            .get(..8)
                            .map(|b| u64::from_be_bytes(b.try_into().unwrap()));
                        tail_err = Some(format!(
                            "message {seq} came out of the tail wrong (number {got:?}, {} bytes)",
                            m.len()
                        ));
                        break;
                    }
                    first.get_or_insert_with(|| start.elapsed());
                }
                Err(_) => {
                    tail_err = Some(format!("message {seq} did not come out of the tail"));
                    break;
                }
            }
        }
        drop(tail);
        let _ = feeder.join();
        let mut seg_err = None;
        for (i, h) in segs.into_iter().enumerate() {
            match h.join() {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    seg_err.get_or_insert(e);
                }
                Err(_) => {
                    seg_err.get_or_insert(format!("segment {i} panicked"));
                }
            }
        }
        if let Some(e) = seg_err.or(tail_err) {
            return Err(e);
        }
        let elapsed = start.elapsed();
        let hops = messages * links as u64;
        let rate = hops as f64 / elapsed.as_secs_f64().max(1e-9);
        let first_ms = first.unwrap_or_default().as_secs_f64() * 1e3;
        o.say(format_args!(
            "{messages} messages x {} through {links} segments in {:.3} s: {rate:.0} echoes/s, first message through in {first_ms:.1} ms",
            fmt_size(size as u64),
            elapsed.as_secs_f64()
        ));
        Ok(format!(
            "{links} links x {messages} msgs: {rate:.0} echoes/s, first through in {first_ms:.1} ms"
        ))
    })
}

/// Connect to `target`; a refused connection (the server's listen backlog
/// is full while many segments connect at once) is tried again, as
/// TinyGo's snake does, for up to [`CONNECT_RETRY`].
fn connect_retry(dev: Dev<'_>, target: SocketAddr) -> Result<Stream<'_>, String> {
    let end = Instant::now() + CONNECT_RETRY;
    let mut tries = 0u32;
    loop {
        tries += 1;
        match TcpStream::connect_timeout(dev, target, Duration::from_secs(10)) {
            Ok(c) => return Ok(c),
            Err(Error::ConnectionRefused) if Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(20 * u64::from(tries.min(10))));
            }
            Err(e) => return Err(format!("connecting to {target} (try {tries}): {e}")),
        }
    }
}

/// One segment: forward what comes in through its connection's echo.
fn segment(
    i: usize,
    conn: Stream<'_>,
    rx: Receiver<Vec<u8>>,
    tx: SyncSender<Vec<u8>>,
    size: usize,
) -> Result<u64, String> {
    conn.set_read_timeout(Some(LIMIT))
        .map_err(|e| format!("segment {i}: set_read_timeout: {e}"))?;
    conn.set_write_timeout(Some(LIMIT))
        .map_err(|e| format!("segment {i}: set_write_timeout: {e}"))?;
    let mut buf = vec![0u8; size];
    let mut n = 0u64;
    // Ends when the segment before it is done (its sender dropped).
    for msg in rx {
        conn.write_all(&msg)
            .map_err(|e| format!("segment {i}: send of message {n}: {e}"))?;
        conn.read_exact(&mut buf[..msg.len()])
            .map_err(|e| format!("segment {i}: echo of message {n}: {e}"))?;
        if buf[..msg.len()] != msg[..] {
            return Err(format!("segment {i}: echo of message {n} differs"));
        }
        if tx.send(msg).is_err() {
            break; // the rest of the snake is gone
        }
        n += 1;
    }
    Ok(n)
}

/// With `links` fds in use, open sockets until the table is full: exactly
/// `max_sockets - links` must fit, the next must be `NoMoreSockets`.
fn probe_fd_limit(dev: &dyn Netdever, links: usize, o: &Opts) -> Result<(), String> {
    let max = dev.capabilities().max_sockets;
    let mut extra = Vec::new();
    let result = loop {
        if extra.len() > max {
            break Err(format!("opened {} sockets past {max} fds", extra.len()));
        }
        match dev.socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp) {
            Ok(fd) => extra.push(fd),
            Err(Error::NoMoreSockets) => break Ok(()),
            Err(e) => break Err(format!("probing the fd table: socket: {e}")),
        }
    };
    let spare = extra.len();
    for fd in extra {
        let _ = dev.close(fd);
    }
    result?;
    if links + spare != max {
        return Err(format!(
            "fd table: {links} segments + {spare} more sockets, but max_sockets is {max}"
        ));
    }
    o.say(format_args!(
        "fd table full at {links} segments + {spare} spare = {max}; socket #{} is NoMoreSockets",
        max + 1
    ));
    Ok(())
}
