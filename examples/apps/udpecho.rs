//! `udpecho`: a UDP echo server (TinyGo's UDP server example): every
//! datagram goes back to where it came from.
//!
//! On the simulated network the peer then runs the `udpclient` round trips
//! against it and checks every reply; the example exits when that self-test
//! is done (0 if it passed) unless `--serve` keeps it serving. On a TAP link
//! it just serves (`nc -u 10.0.0.1 8080`).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use netdever::{AddressFamily, Error, MsgFlags, Netdever, Protocol, SockType, Sockfd};

use crate::common::cli::Extra;
use crate::common::{announce, within, Net, Opts, Outcome, Spec};
use crate::udpclient;

/// Command line of `udpecho`.
pub const SPEC: Spec = Spec {
    name: "udpecho",
    about: "UDP echo server",
    server: true,
    default_port: 8080,
    extra: &[
        Extra {
            name: "--count",
            value: "N",
            default: "1000",
            help: "self-test: datagrams the simulated peer sends",
        },
        Extra {
            name: "--size",
            value: "BYTES",
            default: "64",
            help: "self-test: datagram size (8..=1472)",
        },
    ],
};

/// How often the blocked server looks at the stop flag.
const TICK: Duration = Duration::from_millis(100);

/// Server counters.
#[derive(Default)]
pub struct Stats {
    /// Datagrams echoed.
    pub echoed: AtomicU64,
    /// Failed calls.
    pub errors: AtomicU64,
}

/// A UDP socket bound to `port` on every address of `dev`.
pub fn bind(dev: &dyn Netdever, port: u16) -> Result<Sockfd, String> {
    let fd = dev
        .socket(AddressFamily::Inet, SockType::Dgram, Protocol::Udp)
        .map_err(|e| format!("socket: {e}"))?;
    if let Err(e) = dev.bind(fd, SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))) {
        let _ = dev.close(fd);
        return Err(format!("binding UDP port {port}: {e}"));
    }
    Ok(fd)
}

/// Echo datagrams on `fd` until `stopped()`; closes `fd`.
pub fn serve(dev: &dyn Netdever, fd: Sockfd, stopped: &dyn Fn() -> bool, stats: &Stats) {
    let mut buf = vec![0u8; 2048];
    while !stopped() {
        let (n, from) = match dev.recv_from(fd, &mut buf, MsgFlags::NONE, within(dev, TICK)) {
            Ok(x) => x,
            Err(Error::Timeout) => continue,
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("recv_from: {e}");
                break;
            }
        };
        match dev.send_to(
            fd,
            &buf[..n],
            MsgFlags::NONE,
            from,
            within(dev, Duration::from_secs(1)),
        ) {
            Ok(_) => {
                stats.echoed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("send_to {from}: {e}");
            }
        }
    }
    let _ = dev.close(fd);
}

/// Run `udpecho` on `net`.
pub fn run(net: &Net, o: &Opts) -> Outcome {
    let dev: &dyn Netdever = &net.dev;
    let count = o.num("--count")?;
    let size = o.num("--size")? as usize;
    let fd = bind(dev, o.port)?;
    let ip = net.dev_ip()?;
    if !o.quiet {
        announce(format_args!("listening on {ip}:{}", o.port));
    }
    let stop = AtomicBool::new(false);
    let stats = Stats::default();
    let until = o.duration.map(|d| Instant::now() + d);
    // Stopped by the self-test's end, --duration, or whoever holds `o.stop`.
    let stopped = || {
        stop.load(Ordering::Acquire)
            || o.stop.load(Ordering::Acquire)
            || until.is_some_and(|u| Instant::now() >= u)
    };
    std::thread::scope(|s| {
        let server = s.spawn(|| serve(dev, fd, &stopped, &stats));
        let test = net.peer.as_ref().map(|peer| {
            let target = SocketAddr::from((ip, o.port));
            o.say(format_args!(
                "self-test: {count} datagrams of {size} bytes to {target}"
            ));
            udpclient::ping(peer, target, count, size, Duration::from_millis(500), o)
        });
        let keep_serving = o.serve || net.peer.is_none();
        if !keep_serving || matches!(test, Some(Err(_))) {
            stop.store(true, Ordering::Release);
        }
        if let Some(Ok(p)) = &test {
            if keep_serving {
                o.say(format_args!("self-test: {}; serving on", p.summary()));
            }
        }
        server
            .join()
            .map_err(|_| "server thread panicked".to_string())?;
        let echoed = stats.echoed.load(Ordering::Relaxed);
        let errors = stats.errors.load(Ordering::Relaxed);
        o.say(format_args!("echoed {echoed} datagrams, {errors} errors"));
        match test {
            Some(r) => {
                let p = r?;
                p.check(0)?;
                if errors != 0 {
                    return Err(format!("the server saw {errors} errors"));
                }
                Ok(p.summary())
            }
            None => Ok(format!("echoed {echoed} datagrams")),
        }
    })
}
