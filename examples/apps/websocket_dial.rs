//! `websocket_dial`: open a websocket to an echo server and check what comes
//! back (TinyGo's `examples/net/websocket/dial`).
//!
//! The protocol is `embedded-websocket`'s no_std codec over a
//! [`netdever::net::TcpStream`] (see `peers_ws_mqtt::ws`): the opening
//! handshake, text and binary messages (masked, as a client must), one text
//! message in three fragments, a ping that must come back as a pong, and
//! the close handshake. On the simulated network the peer runs a websocket
//! echo server on the same code; on a TAP link any RFC 6455 echo server
//! will do (`tests/examples_matrix.rs` runs one with python's
//! `websockets`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::cli::Extra;
use crate::common::{Net, Opts, Outcome, Spec};
use crate::peers_ws_mqtt::ws::{self, MAX_FRAME};
use crate::peers_ws_mqtt::{text, StopWhen};

/// Command line of `websocket_dial`.
pub const SPEC: Spec = Spec {
    name: "websocket_dial",
    about: "websocket client: text and binary messages, fragments, ping/pong and close against an echo server",
    server: false,
    default_port: 8080,
    extra: &[
        Extra {
            name: "--count",
            value: "N",
            default: "10",
            help: "messages to send, text and binary alternately",
        },
        Extra {
            name: "--size",
            value: "BYTES",
            default: "1K",
            help: "size of each binary message (at most 64K)",
        },
        Extra {
            name: "--path",
            value: "PATH",
            default: "/echo",
            help: "request path of the opening handshake",
        },
    ],
};

/// The text-valued options of [`SPEC`].
#[allow(dead_code)] // read by the binary's option parser; the suite runs with defaults
pub const TEXT: &[&str] = &["--path"];

/// Bound on the whole exchange.
const LIMIT: Duration = Duration::from_secs(30);

/// Run `websocket_dial` on `net`.
pub fn run(net: &Net, o: &Opts) -> Outcome {
    let count = o.num("--count")?;
    let size = o.size("--size")?.clamp(1, MAX_FRAME as u64) as usize;
    let path = text::get(&SPEC, "--path");
    if !path.starts_with('/') {
        return Err(format!("--path must start with '/': {path}"));
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (target, server) = match &net.peer {
            Some(peer) => {
                let when = StopWhen {
                    flag: &stop,
                    until: None,
                    max_clients: 1,
                };
                let h = ws::echo_server(s, peer, o.port, when).map_err(|e| format!("peer: {e}"))?;
                (SocketAddr::from((net.peer_ip, o.port)), Some(h))
            }
            None => (o.peer.ok_or("--peer A.B.C.D:P is required")?, None),
        };
        o.say(format_args!("connecting to ws://{target}{path}"));
        let r = ws::dial_and_exercise(&net.dev, target, &path, count, size, LIMIT, o);
        stop.store(true, Ordering::Release);
        if let Some(h) = server {
            let served = h.join().map_err(|_| "peer thread panicked".to_string())?;
            if r.is_ok() {
                served.check("peer")?;
            }
        }
        let rep = r?;
        o.say(format_args!(
            "{} frames out, {} frames in",
            rep.frames.frames_out, rep.frames.frames_in
        ));
        Ok(rep.summary())
    })
}
