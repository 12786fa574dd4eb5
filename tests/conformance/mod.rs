//! The conformance suite: one set of checks of the [`Socketer`] /
//! [`Netdever`] contract (see `src/socketer.rs`), run against every backend.
//!
//! * The device under test (*dut*) is any `impl Netdever`.
//! * The other end is a [`Peer`]: [`NetdevPeer`] (a second `Netdever`, used
//!   on the memory switch) or [`KernelPeer`] (the Linux kernel inside the
//!   test's network namespace, feature `tap`).
//! * Each case is `pub fn <case>(dut: &impl Netdever, peer: &impl Peer)`.
//!   [`conformance_tests!`] turns every case into its own `#[test]` for a
//!   fixture `fn() -> Option<Fixture<D, P>>` (`None` = skipped, the fixture
//!   printed why) — all of them, or all but those a backend cannot do
//!   (`conformance_tests!(fixture; except tcp_reset, ...)`, with why next
//!   to each) — and [`run_case`] runs each case under a watchdog so a
//!   hanging backend fails the test instead of hanging the run.
//!
//! Use from a test crate:
//!
//! ```ignore
//! mod support;
//! #[macro_use]
//! mod conformance;
//! fn fixture() -> Option<conformance::Fixture<MyDev, MyPeer>> { ... }
//! mod suite { conformance_tests!(super::fixture); }
//! ```
//!
//! Choices the suite makes where the contract leaves room (documented here
//! so backends know what is checked):
//! * `listen` on a UDP socket is [`Error::NotSupported`] (EOPNOTSUPP, as in
//!   POSIX: the operation does not exist for datagram sockets).
//! * `connect` to port 0 is `AddrNotAvailable` or `InvalidArgument`; to the
//!   unspecified address it is `AddrNotAvailable` (the error's documentation
//!   names that case).
//! * After the peer closed, `poll` reports `READABLE` (EOF is readable) and
//!   `HANGUP` (the peer hung up).
//! * Socket options KeepAlive / NoDelay / Linger may be `NotSupported` by a
//!   backend; if `set` succeeds, `get` must return the value set.
//!   RecvTimeout / SendTimeout / NonBlocking must be supported.
#![allow(dead_code)]

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use netdever::Netdever;

mod cases;
mod peers;

pub use cases::*;
pub use peers::*;

/// A TCP connection on the peer side. Dropping it closes it gracefully.
pub trait PeerStream: Send {
    /// Read what is there (at least one byte), waiting at most `timeout`.
    /// `Ok(0)` is EOF; an expired wait is `ErrorKind::TimedOut`.
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize>;
    /// Write all of `data` (bounded internally to 60 s).
    fn write_all(&mut self, data: &[u8]) -> io::Result<()>;
    /// Send FIN after the queued data; reading stays possible.
    fn shutdown_write(&mut self) -> io::Result<()>;
    /// Close with a reset (RST) instead of a FIN.
    fn abort(self: Box<Self>) -> io::Result<()>;
    /// This end's address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// The other end's address.
    fn peer_addr(&self) -> io::Result<SocketAddr>;
}

/// A TCP listener on the peer side.
pub trait PeerListener: Send {
    /// Where it listens (the peer's address and the port).
    fn local_addr(&self) -> SocketAddr;
    /// Take one connection, waiting at most `timeout` (`ErrorKind::TimedOut`).
    fn accept(&mut self, timeout: Duration) -> io::Result<(Box<dyn PeerStream>, SocketAddr)>;
}

/// A bound UDP socket on the peer side.
pub trait PeerUdp: Send + Sync {
    /// Its address (the peer's address and the port).
    fn local_addr(&self) -> SocketAddr;
    /// Send one datagram.
    fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<usize>;
    /// Receive one datagram, waiting at most `timeout` (`ErrorKind::TimedOut`).
    fn recv_from(&self, buf: &mut [u8], timeout: Duration) -> io::Result<(usize, SocketAddr)>;
}

/// What the peer's DNS server answers, if it runs one.
#[derive(Debug, Clone)]
pub struct DnsInfo {
    /// The server's address (the dut must have it configured).
    pub server: Ipv4Addr,
    /// Names it knows, with their A record.
    pub records: Vec<(String, Ipv4Addr)>,
}

/// The other end of every conversation the suite has with the dut.
pub trait Peer: Sync {
    /// For messages.
    fn name(&self) -> String;
    /// The peer's IPv4 address, on the dut's network.
    fn ip(&self) -> Ipv4Addr;
    /// Listen for TCP on `port` (0 = any free port).
    fn tcp_listen(&self, port: u16) -> io::Result<Box<dyn PeerListener>>;
    /// Open a TCP connection to `addr` within `timeout`.
    fn tcp_connect(&self, addr: SocketAddr, timeout: Duration) -> io::Result<Box<dyn PeerStream>>;
    /// Bind a UDP socket on `port` (0 = any free port).
    fn udp_bind(&self, port: u16) -> io::Result<Box<dyn PeerUdp>>;
    /// A TCP port nothing listens on; a SYN to it is answered with RST.
    fn closed_tcp_port(&self) -> u16 {
        9
    }
    /// The DNS server the peer runs, or `None`.
    fn dns_server(&self) -> Option<DnsInfo>;

    /// `addr:port` on the peer.
    fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip()), port)
    }
}

/// A dut, its peer, and whatever must live as long as they do (switches,
/// namespaces, child processes); the guard is dropped last, also on panic.
pub struct Fixture<D, P> {
    /// The device under test.
    pub dut: D,
    /// The other end.
    pub peer: P,
    /// Dropped after dut and peer (cleanup: namespaces, processes).
    pub guard: Box<dyn Send>,
}

/// How long one case may take before it counts as hung.
pub fn case_budget(name: &str) -> Duration {
    if name.contains("integrity") {
        Duration::from_secs(300)
    } else if name.contains("concurrency") || name.contains("close_delivers") {
        Duration::from_secs(120)
    } else {
        Duration::from_secs(60)
    }
}

/// Run `case` on a fresh fixture under a watchdog of [`case_budget`].
pub fn run_case<D, P>(name: &str, fixture: fn() -> Option<Fixture<D, P>>, case: fn(&D, &P))
where
    D: Netdever + Send + 'static,
    P: Peer + Send + 'static,
{
    run_case_for(name, case_budget(name), fixture, case)
}

/// Run `case` on a fresh fixture; fail if it takes longer than `budget`.
///
/// The case runs on its own thread with the dut and the peer; the fixture's
/// guard stays here and is dropped whatever happens (pass, fail, hang).
pub fn run_case_for<D, P>(
    name: &str,
    budget: Duration,
    fixture: fn() -> Option<Fixture<D, P>>,
    case: fn(&D, &P),
) where
    D: Netdever + Send + 'static,
    P: Peer + Send + 'static,
{
    let Some(Fixture { dut, peer, guard }) = fixture() else {
        return; // skipped; the fixture said why
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("case:{name}"))
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&dut, &peer)));
            drop(peer);
            drop(dut);
            let _ = tx.send(r);
        })
        .expect("spawn case thread");
    let result = rx.recv_timeout(budget);
    drop(guard);
    match result {
        Ok(Ok(())) => {}
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("conformance case `{name}` did not finish within {budget:?} (hang)"),
    }
}

/// Instantiate every conformance case as its own `#[test]` calling
/// `$fixture` (a `fn() -> Option<Fixture<D, P>>`):
///
/// * `conformance_tests!(fixture)`: every case;
/// * `conformance_tests!(fixture; except case, ...)`: every case but these
///   (each must name a case: a misspelt one does not compile);
/// * `conformance_tests!(@cases fixture; case, ...)`: just these.
///
/// The list of every case is written once, here.
macro_rules! conformance_tests {
    ($fixture:expr) => {
        conformance_tests!(@filter ($) $fixture; []);
    };
    ($fixture:expr; except $($skip:ident),+ $(,)?) => {
        conformance_tests!(@filter ($) $fixture; [$($skip),+]);
    };
    // `$d` is a `$` for the helper macro defined here: it expands one case
    // to a `#[test]`, or to nothing when the case is in the except list.
    (@filter ($d:tt) $fixture:expr; [$($skip:ident),*]) => {
        const _: () = {
            #[allow(unused_imports)]
            use $crate::conformance::{$($skip),*};
        };
        macro_rules! conformance_case {
            $( ($skip) => {}; )*
            ($d case:ident) => {
                conformance_tests!(@cases $fixture; $d case);
            };
        }
        conformance_tests!(@each conformance_case;
            tcp_client_echo,
            tcp_client_eof,
            tcp_connect_refused,
            tcp_server_backlog,
            tcp_peek,
            tcp_reset,
            udp_connected,
            udp_server_send_to_recv_from,
            udp_bind_ephemeral,
            udp_peek,
            udp_truncation,
            udp_message_size,
            recv_deadline_timeout,
            connect_deadline_timeout,
            nonblocking_mode,
            dontwait_flag,
            recv_timeout_option,
            send_timeout_option,
            blocked_calls_wake_promptly,
            poll_readable_and_timeout,
            poll_writable,
            poll_listener,
            poll_hangup,
            poll_invalid_fd,
            shutdown_write,
            close_delivers_queued_data,
            sockopt_round_trip,
            sockopt_unsupported,
            misuse_bad_fd,
            misuse_double_close,
            misuse_stale_fd,
            misuse_not_connected,
            misuse_accept_not_listening,
            misuse_listen_udp,
            misuse_connect_twice,
            misuse_fd_table_full,
            misuse_zero_length,
            misuse_unknown_flags,
            misuse_socket_args,
            misuse_addr_in_use,
            misuse_connect_bad_addr,
            integrity_16mib,
            concurrency_8_threads,
            concurrency_same_socket,
            dns,
        );
    };
    (@each $m:ident; $($case:ident),* $(,)?) => {
        $( $m!($case); )*
    };
    (@cases $fixture:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::run_case(
                    stringify!($case),
                    $fixture,
                    $crate::conformance::$case,
                );
            }
        )*
    };
}

/// Helper for fixtures: wait (bounded) until `dev` has an address.
pub fn wait_for_addr(dev: &impl Netdever, limit: Duration) -> bool {
    crate::support::wait_until(limit, Duration::from_millis(10), || dev.addr().is_ok())
}
