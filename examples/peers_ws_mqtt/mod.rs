//! Shared by the websocket, MQTT, TLS and snake examples: the protocol glue
//! they run on the `net` layer, and the servers the simulated peer runs for
//! them.
//!
//! * [`ws`]: a blocking websocket connection over a [`TcpStream`] on top of
//!   `embedded-websocket`'s no_std codec, plus the echo loop and the client
//!   script both the examples and the simulated peers use.
//! * [`mqtt`]: MQTT 3.1.1 packets over a [`TcpStream`] with `mqttrs`'s no_std
//!   codec, and topic-filter matching.
//! * [`broker`]: a minimal MQTT 3.1.1 broker for the simulated network only.
//! * [`echo`]: a TCP echo server (the snake's peer).
//! * [`text`]: text-valued options (`--ca FILE`, `--topic T`) on top of the
//!   number-only `common::cli`, and the `main` that goes with them.
//! * [`serve`]: the accept loop every server here shares.
//!
//! Include it next to `common` in an example binary:
//! `#[path = "peers_ws_mqtt/mod.rs"] mod peers_ws_mqtt;`
#![allow(dead_code)]

pub mod broker;
pub mod echo;
pub mod mqtt;
pub mod text;
pub mod ws;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use netdever::net::{TcpListener, TcpStream};
use netdever::{Error, Netdever};

/// The device type the examples and peers share: any device, borrowed.
pub type Dev<'a> = &'a dyn Netdever;

/// A TCP stream on a borrowed device.
pub type Stream<'a> = TcpStream<Dev<'a>>;

/// How often blocked server calls look at their stop condition.
pub const TICK: Duration = Duration::from_millis(100);

/// What a server did.
#[derive(Debug, Default)]
pub struct Served {
    /// Connections accepted.
    pub clients: u64,
    /// Connections whose handler returned `Ok`.
    pub ok: u64,
    /// Each failed connection: `"peer: error"`.
    pub errors: Vec<String>,
    /// An accept error that stopped the server, if any.
    pub fatal: Option<String>,
}

impl Served {
    /// `Err` with the first problem, if there was one.
    pub fn check(&self, what: &str) -> Result<(), String> {
        if let Some(e) = &self.fatal {
            return Err(format!("{what}: {e}"));
        }
        match self.errors.first() {
            Some(e) => Err(format!(
                "{what}: {} of {} connections failed; first: {e}",
                self.errors.len(),
                self.clients
            )),
            None => Ok(()),
        }
    }
}

/// Listen on `port` of every address of `dev`.
pub fn listen(dev: Dev<'_>, port: u16, backlog: usize) -> Result<TcpListener<Dev<'_>>, String> {
    TcpListener::bind(
        dev,
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        backlog,
    )
    .map_err(|e| format!("listening on port {port}: {e}"))
}

/// When a server stops.
#[derive(Clone, Copy)]
pub struct StopWhen<'a> {
    /// Stop as soon as this is set.
    pub flag: &'a AtomicBool,
    /// Stop at this time.
    pub until: Option<Instant>,
    /// Stop accepting after this many connections (0: no limit) and return
    /// once they are done.
    pub max_clients: u64,
}

impl StopWhen<'_> {
    /// Whether the flag is set or the time is up.
    pub fn stopped(&self) -> bool {
        self.flag.load(Ordering::Acquire) || self.until.is_some_and(|u| Instant::now() >= u)
    }
}

/// Accept connections on `listener` (made on `dev`) on a thread of `scope`, each handled by
/// `handler` on its own thread, until `stop` says so. The handler gets the
/// stream, the peer's address and a `stopped()` check to poll while it
/// waits. The returned thread ends when the accept loop has stopped and
/// every handler has returned.
pub fn serve<'scope, 'env, 'd: 'env, H>(
    scope: &'scope Scope<'scope, 'env>,
    dev: Dev<'d>,
    listener: TcpListener<Dev<'d>>,
    stop: StopWhen<'env>,
    handler: H,
) -> ScopedJoinHandle<'scope, Served>
where
    H: Fn(Stream<'d>, SocketAddr, &dyn Fn() -> bool) -> Result<(), String> + Send + Sync + 'env,
{
    scope.spawn(move || {
        let mut listener = listener;
        let served = Mutex::new(Served::default());
        let stopped = || stop.stopped();
        std::thread::scope(|inner| {
            let mut accepted = 0u64;
            while !stopped() && (stop.max_clients == 0 || accepted < stop.max_clients) {
                listener.set_deadline(Some(dev.now() + TICK));
                match listener.accept() {
                    Ok((stream, peer)) => {
                        accepted += 1;
                        let (handler, served, stopped) = (&handler, &served, &stopped);
                        inner.spawn(move || {
                            let r = handler(stream, peer, stopped);
                            let mut s = served.lock().unwrap_or_else(|e| e.into_inner());
                            match r {
                                Ok(()) => s.ok += 1,
                                Err(e) => s.errors.push(format!("{peer}: {e}")),
                            }
                        });
                    }
                    Err(Error::Timeout) => {}
                    Err(e) => {
                        served.lock().unwrap_or_else(|e| e.into_inner()).fatal =
                            Some(format!("accept: {e}"));
                        break;
                    }
                }
            }
            served.lock().unwrap_or_else(|e| e.into_inner()).clients = accepted;
        });
        drop(listener);
        served.into_inner().unwrap_or_else(|e| e.into_inner())
    })
}
