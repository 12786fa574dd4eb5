//! `tcpclient`: open a TCP connection, send N bytes, print the throughput
//! (TinyGo's `examples/net/tcpclient`).
//!
//! On the simulated network the peer runs a sink that checks every byte; on
//! a TAP link any server that reads and discards will do (`nc -lk 8080`).
//! The time runs until the peer has acknowledged the last byte (the close
//! lingers for it), so the figure is end-to-end, not "queued locally".

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::cli::Extra;
use crate::common::pattern::Pattern;
use crate::common::peers::tcp_sink;
use crate::common::tcp::TcpConn;
use crate::common::{fmt_size, mb_per_s, within, Net, Opts, Outcome, Spec};

/// Command line of `tcpclient`.
pub const SPEC: Spec = Spec {
    name: "tcpclient",
    about: "connect to a TCP server, send N bytes, print the throughput",
    server: false,
    default_port: 8080,
    extra: &[
        Extra {
            name: "--bytes",
            value: "N",
            default: "16M",
            help: "bytes to send (suffixes K, M, G)",
        },
        Extra {
            name: "--chunk",
            value: "N",
            default: "64K",
            help: "bytes per send call (at most 1M)",
        },
    ],
};

/// Seed of the byte pattern sent (the sink checks it).
const SEED: u64 = 0;
/// Bound on the whole transfer.
const LIMIT: Duration = Duration::from_secs(60);

/// Run `tcpclient` on `net`.
pub fn run(net: &Net, o: &Opts) -> Outcome {
    let bytes = o.size("--bytes")?;
    let chunk = o.size("--chunk")?.clamp(1, 1 << 20) as usize;
    std::thread::scope(|s| {
        let (target, sink) = match &net.peer {
            Some(peer) => (
                SocketAddr::from((net.peer_ip, o.port)),
                Some(tcp_sink(s, peer, o.port, SEED, LIMIT)?),
            ),
            None => (o.peer.ok_or("--peer A.B.C.D:P is required")?, None),
        };

        o.say(format_args!("connecting to {target}"));
        let t0 = Instant::now();
        let mut conn = TcpConn::connect(&net.dev, target, Duration::from_secs(10))
            .map_err(|e| format!("connecting to {target}: {e}"))?;
        let local = conn.local_addr().map_err(|e| format!("local_addr: {e}"))?;
        o.say(format_args!(
            "connected {local} -> {target} in {:.1} ms; sending {}",
            t0.elapsed().as_secs_f64() * 1e3,
            fmt_size(bytes)
        ));

        conn.set_deadline(within(&net.dev, LIMIT));
        let pat = Pattern::new(SEED, chunk);
        let start = Instant::now();
        let mut sent = 0u64;
        while sent < bytes {
            let n = (bytes - sent).min(chunk as u64) as usize;
            conn.write_all(pat.at(sent, n))
                .map_err(|e| format!("send after {sent} bytes: {e}"))?;
            sent += n as u64;
        }
        conn.close_flushed(LIMIT)
            .map_err(|e| format!("close: {e}"))?;
        let elapsed = start.elapsed();

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
