//! `socket`: the `tcpclient` transfer written with the raw [`Socketer`]
//! calls only (TinyGo's `examples/net/socket`), no helper layer.
//!
//! It also shows the readiness side of the contract: the socket is put in
//! non-blocking mode, `connect` returns `InProgress` and `poll` reports
//! `WRITABLE` once the connection is up (`SO_ERROR` tells whether it
//! failed); each `send` that would block (`WouldBlock`) waits in `poll`
//! for buffer space. At the end the socket goes back to blocking mode and a
//! lingering `close` waits until the peer has acknowledged everything.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use netdever::{
    AddressFamily, Deadline, Error, Events, MsgFlags, PollFd, Protocol, SockOpt, SockOptName,
    SockType, Socketer, Sockfd,
};

use crate::common::cli::Extra;
use crate::common::pattern::Pattern;
use crate::common::peers::tcp_sink;
use crate::common::{fmt_size, mb_per_s, Net, Opts, Outcome, Spec};

/// Command line of `socket`.
pub const SPEC: Spec = Spec {
    name: "socket",
    about: "send N bytes over TCP using only raw Socketer calls (non-blocking connect, poll)",
    server: false,
    default_port: 8080,
    extra: &[Extra {
        name: "--bytes",
        value: "N",
        default: "16M",
        help: "bytes to send (suffixes K, M, G)",
    }],
};

/// Seed of the byte pattern sent (the sink checks it).
const SEED: u64 = 7;
/// Bytes per send call.
const CHUNK: usize = 16 * 1024;
/// Bound on the whole run.
const LIMIT: Duration = Duration::from_secs(60);

/// Run `socket` on `net`.
pub fn run(net: &Net, o: &Opts) -> Outcome {
    let bytes = o.size("--bytes")?;
    std::thread::scope(|s| {
        let (target, sink) = match &net.peer {
            Some(peer) => (
                SocketAddr::from((net.peer_ip, o.port)),
                Some(tcp_sink(s, peer, o.port, SEED, LIMIT)?),
            ),
            None => (o.peer.ok_or("--peer A.B.C.D:P is required")?, None),
        };
        let dev: &dyn Socketer = &net.dev;
        let fd = dev
            .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
            .map_err(|e| format!("socket: {e}"))?;
        let r = transfer(dev, fd, target, bytes, o);
        if r.is_err() {
            let _ = dev.close(fd);
        }
        let elapsed = r?;
        if let Some(sink) = sink {
            let got = sink
                .join()
                .map_err(|_| "peer thread panicked".to_string())??;
            if got != bytes {
                return Err(format!("peer received {got} bytes, expected {bytes}"));
            }
            o.say(format_args!("peer received all {bytes} bytes intact"));
        }
        let rate = mb_per_s(bytes, elapsed);
        o.say(format_args!(
            "sent {} in {:.3} s: {rate:.1} MB/s",
            fmt_size(bytes),
            elapsed.as_secs_f64()
        ));
        Ok(format!("{rate:.1} MB/s ({})", fmt_size(bytes)))
    })
}

/// Wait until `fd` is ready for `events`, or fail at `deadline`.
fn wait(
    dev: &dyn Socketer,
    fd: Sockfd,
    events: Events,
    deadline: Deadline,
) -> Result<Events, String> {
    let mut set = [PollFd::new(fd, events)];
    match dev.poll(&mut set, deadline) {
        Ok(0) => Err("timed out waiting for the socket".into()),
        Ok(_) => Ok(set[0].revents),
        Err(e) => Err(format!("poll: {e}")),
    }
}

/// Connect, send `bytes`, close; returns the time from the first send until
/// the close returned.
fn transfer(
    dev: &dyn Socketer,
    fd: Sockfd,
    target: SocketAddr,
    bytes: u64,
    o: &Opts,
) -> Result<Duration, String> {
    let deadline = Deadline::after(dev.now(), LIMIT);
    dev.set_sock_opt(fd, SockOpt::NonBlocking(true))
        .map_err(|e| format!("set NonBlocking: {e}"))?;
    dev.set_sock_opt(fd, SockOpt::NoDelay(false))
        .map_err(|e| format!("set NoDelay: {e}"))?;

    o.say(format_args!("connecting to {target} (non-blocking)"));
    let t0 = Instant::now();
    match dev.connect(fd, None, target, Deadline::Never) {
        Ok(()) => {}
        Err(Error::InProgress) => {
            let connect_by = Deadline::after(dev.now(), Duration::from_secs(10)).min(deadline);
            let ev = wait(dev, fd, Events::WRITABLE, connect_by)?;
            if let Ok(SockOpt::SocketError(Some(e))) =
                dev.get_sock_opt(fd, SockOptName::SocketError)
            {
                return Err(format!("connecting to {target}: {e}"));
            }
            if !ev.contains(Events::WRITABLE) {
                return Err(format!("connecting to {target}: poll says {ev:?}"));
            }
        }
        Err(e) => return Err(format!("connecting to {target}: {e}")),
    }
    let local = dev.local_addr(fd).map_err(|e| format!("local_addr: {e}"))?;
    let peer = dev.peer_addr(fd).map_err(|e| format!("peer_addr: {e}"))?;
    o.say(format_args!(
        "connected {local} -> {peer} in {:.1} ms; sending {}",
        t0.elapsed().as_secs_f64() * 1e3,
        fmt_size(bytes)
    ));
    if local.ip() == std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED) {
        return Err("local address is unspecified after connect".into());
    }

    let pat = Pattern::new(SEED, CHUNK);
    let start = Instant::now();
    let mut sent = 0u64;
    let mut would_block = 0u64;
    while sent < bytes {
        let n = (bytes - sent).min(CHUNK as u64) as usize;
        match dev.send(fd, pat.at(sent, n), MsgFlags::NONE, deadline) {
            Ok(k) => sent += k as u64,
            Err(Error::WouldBlock) => {
                would_block += 1;
                let ev = wait(dev, fd, Events::WRITABLE, deadline)?;
                if ev.intersects(Events::ERROR | Events::HANGUP) {
                    return Err(format!("connection failed after {sent} bytes ({ev:?})"));
                }
            }
            Err(e) => return Err(format!("send after {sent} bytes: {e}")),
        }
    }
    o.say(format_args!(
        "all queued; send would have blocked {would_block} times"
    ));

    // Back to blocking mode so the lingering close waits for the acks.
    dev.set_sock_opt(fd, SockOpt::NonBlocking(false))
        .map_err(|e| format!("set NonBlocking: {e}"))?;
    dev.set_sock_opt(fd, SockOpt::Linger(Some(LIMIT)))
        .map_err(|e| format!("set Linger: {e}"))?;
    dev.close(fd).map_err(|e| format!("close: {e}"))?;
    Ok(start.elapsed())
}
