//! `websocket_handler`: a websocket echo server, a thread per client
//! (TinyGo's `examples/net/websocket/handler`).
//!
//! Each connection runs the opening handshake (`embedded-websocket`'s no_std
//! codec over a [`netdever::net::TcpStream`], see `peers_ws_mqtt::ws`),
//! then echoes every text and binary message, answers pings, refuses
//! unmasked client frames (close 1002) and answers the close handshake.
//!
//! On the simulated network the peer then connects `--clients` websocket
//! clients at once, each sending text and binary messages, a fragmented
//! message, a ping and a close, and checks everything that comes back; the
//! example exits when that self-test is done unless `--serve` keeps it
//! serving. On a TAP link it serves until killed, `--duration` or
//! `--max-clients`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::common::cli::Extra;
use crate::common::{announce, Net, Opts, Outcome, Spec};
use crate::peers_ws_mqtt::ws::{self, MAX_FRAME};
use crate::peers_ws_mqtt::{listen, serve, Dev, StopWhen, Stream};

/// Command line of `websocket_handler`.
pub const SPEC: Spec = Spec {
    name: "websocket_handler",
    about: "websocket echo server, one thread per client",
    server: true,
    default_port: 8080,
    extra: &[
        Extra {
            name: "--max-clients",
            value: "N",
            default: "0",
            help: "stop after serving N clients (0: no limit)",
        },
        Extra {
            name: "--clients",
            value: "N",
            default: "2",
            help: "self-test: websocket clients the simulated peer connects at once",
        },
        Extra {
            name: "--count",
            value: "N",
            default: "10",
            help: "self-test: messages each client sends",
        },
        Extra {
            name: "--size",
            value: "BYTES",
            default: "1K",
            help: "self-test: size of each binary message (at most 64K)",
        },
    ],
};

/// Bound on the self-test.
const LIMIT: Duration = Duration::from_secs(30);

/// Run `websocket_handler` on `net`.
pub fn run(net: &Net, o: &Opts) -> Outcome {
    let dev: Dev = &net.dev;
    let max_clients = o.num("--max-clients")?;
    let clients = o.num("--clients")?.clamp(1, 8) as usize;
    let count = o.num("--count")?;
    let size = o.size("--size")?.clamp(1, MAX_FRAME as u64) as usize;

    let l = listen(dev, o.port, 4)?;
    let ip = net.dev_ip()?;
    if !o.quiet {
        announce(format_args!("listening on {ip}:{}", o.port));
    }
    // Stopped by the self-test's end, --duration, --max-clients, or
    // whoever holds `o.stop`.
    let when = StopWhen {
        flag: &o.stop,
        until: o.duration.map(|d| Instant::now() + d),
        max_clients,
    };
    std::thread::scope(|s| {
        let server = serve(s, dev, l, when, |stream, peer, stopped| {
            session(stream, peer, stopped, o)
        });
        let test = net.peer.as_ref().map(|peer| {
            self_test(
                peer,
                SocketAddr::from((ip, o.port)),
                clients,
                count,
                size,
                o,
            )
        });
        let keep_serving = o.serve || net.peer.is_none();
        if !keep_serving || matches!(test, Some(Err(_))) {
            o.stop.store(true, Ordering::Release);
        }
        if let Some(Ok(summary)) = &test {
            if keep_serving {
                o.say(format_args!("self-test passed: {summary}; serving on"));
            }
        }
        let served = server
            .join()
            .map_err(|_| "server thread panicked".to_string())?;
        o.say(format_args!(
            "served {} websocket clients, {} failed",
            served.clients,
            served.errors.len()
        ));
        let summary = match test {
            Some(r) => r?,
            None => format!("served {} websocket clients", served.ok),
        };
        served.check("server")?;
        Ok(summary)
    })
}

/// One client: opening handshake, echo until the close handshake.
fn session(
    stream: Stream<'_>,
    peer: SocketAddr,
    stopped: &dyn Fn() -> bool,
    o: &Opts,
) -> Result<(), String> {
    let mut c = ws::handshake(stream)?;
    o.say(format_args!("client {peer}: websocket open"));
    let st = ws::echo_session(&mut c, stopped)?;
    o.say(format_args!(
        "client {peer}: closed; echoed {} messages ({} B), answered {} pings, {} of {} frames masked",
        st.messages, st.bytes, st.frames.pings_answered, st.frames.masked_in, st.frames.frames_in
    ));
    Ok(())
}

/// The simulated peer's clients: `clients` at once, each running the
/// `websocket_dial` script against us.
fn self_test(
    peer: Dev<'_>,
    server: SocketAddr,
    clients: usize,
    count: u64,
    size: usize,
    o: &Opts,
) -> Result<String, String> {
    o.say(format_args!(
        "self-test: {clients} websocket clients x {count} messages to ws://{server}/"
    ));
    let start = Instant::now();
    let results: Vec<Result<ws::Report, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| s.spawn(|| ws::dial_and_exercise(peer, server, "/", count, size, LIMIT, o)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("client panicked".into())))
            .collect()
    });
    let mut reports = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        reports.push(r.map_err(|e| format!("self-test client {i}: {e}"))?);
    }
    let first = reports.first().map(|r| r.summary()).unwrap_or_default();
    Ok(format!(
        "{clients} clients in {:.2} s; client 0: {first}",
        start.elapsed().as_secs_f64()
    ))
}
