//! The examples on every emulated board: the same `run` functions the
//! example binaries call, on `--board w5500-macraw | w5500-offload | esp-at
//! | esp-hosted` over the simulated network (raw-frame boards: a second
//! stack as the peer; offload boards: this host's loopback as the peer).
//! No root needed.
//!
//! And, in their own section at the end, `--tap IFNAME --ip ...` with the
//! offload boards (root; a test-made network namespace).

mod support;

#[path = "../examples/common/mod.rs"]
mod common;

#[path = "../examples/apps/socket.rs"]
mod socket;
#[path = "../examples/apps/tcpclient.rs"]
mod tcpclient;
#[path = "../examples/apps/tcpecho.rs"]
mod tcpecho;
#[path = "../examples/apps/udpclient.rs"]
mod udpclient;
#[path = "../examples/apps/udpecho.rs"]
#[allow(dead_code)] // udpclient's peer uses its echo loop
mod udpecho;

use std::time::Duration;

use common::{cli, Net, RunFn, Spec};

/// The offload boards' peer is this host's loopback, so their servers use
/// real host ports: one example at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Run one example on one board with a small transfer, within a time limit.
fn run_on(board: &str, spec: &'static Spec, run: RunFn, extra: &[&str]) -> String {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut args: Vec<String> = vec!["--board".into(), board.into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let o = match cli::parse(spec, args) {
        Ok(Some(o)) => o.quiet(),
        other => panic!("{board}: parsing options: {:?}", other.err()),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let b = board.to_string();
    std::thread::spawn(move || {
        let r = Net::from_opts(&o).and_then(|net| run(&net, &o));
        let _ = tx.send(r);
        drop(b);
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(Ok(figure)) => figure,
        Ok(Err(e)) => panic!("{board}: {}: {e}", spec.name),
        Err(_) => panic!("{board}: {} did not finish in 120 s", spec.name),
    }
}

macro_rules! on_every_board {
    ($($name:ident: $board:expr;)*) => {$(
        mod $name {
            use super::*;

            #[test]
            fn tcpclient_sends_and_peer_counts_bytes() {
                let f = run_on($board, &tcpclient::SPEC, tcpclient::run, &["--bytes", "256K"]);
                assert!(f.contains("MB/s"), "{f}");
            }

            #[test]
            fn socket_raw_calls() {
                let f = run_on($board, &socket::SPEC, socket::run, &["--bytes", "128K"]);
                assert!(f.contains("MB/s"), "{f}");
            }

            #[test]
            fn udpclient_round_trips() {
                let f = run_on($board, &udpclient::SPEC, udpclient::run, &["--count", "50"]);
                assert!(f.contains("50/50 answered"), "{f}");
            }
        }
    )*};
}

on_every_board! {
    w5500_macraw: "w5500-macraw";
    w5500_offload: "w5500-offload";
    esp_at: "esp-at";
    esp_hosted: "esp-hosted";
}

// ---------------------------------------------------------------------------
// `--tap IFNAME --ip ...` on the offload boards (root).
//
// A fresh namespace holds a TAP (kernel side 10.64.0.1/24, up) and the
// device's address 10.64.0.2 on its loopback (the offload chips' host
// sockets bind it there; an address of the TAP's namespace is what an
// offload board has on a TAP network). The peer is the namespace's kernel,
// on the TAP side: a sink the client example sends to, and a client that
// reaches the echo server at the address the example announces
// (`listening on` prints `Net::dev_ip`). Without root these skip with a
// message (under CI=true they fail).
// ---------------------------------------------------------------------------

#[cfg(feature = "tap")]
mod tap_offload {
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    use super::common::cli::{self, Netns as NetnsOpt};
    use super::common::pattern::Pattern;
    use super::common::{Net, Opts};
    use super::support::{self, Netns};
    use super::{tcpclient, tcpecho};

    const TAP: &str = "ndvexb0";
    const KERNEL_IP: Ipv4Addr = Ipv4Addr::new(10, 64, 0, 1);
    const DEV_IP: Ipv4Addr = Ipv4Addr::new(10, 64, 0, 2);
    const DEV_CIDR: &str = "10.64.0.2/24";
    const PORT: u16 = 8080;
    const SEC: Duration = Duration::from_secs(1);

    /// Root, /dev/net/tun and `ip`, or skip (fail under CI=true).
    fn need_netns(test: &str) -> bool {
        match support::netns_missing() {
            None => true,
            Some(missing) => support::require(test, &missing, false).is_ok(),
        }
    }

    /// A namespace with TAP [`TAP`] (kernel side [`KERNEL_IP`]/24, up); for
    /// an offload board also the device's address on its loopback.
    fn netns_with_tap(tag: &str, offload: bool) -> Netns {
        let ns = Netns::new(tag).expect("create network namespace");
        ns.ip(&["tuntap", "add", "dev", TAP, "mode", "tap"])
            .expect("create the TAP in the namespace");
        ns.ip(&["addr", "add", &format!("{KERNEL_IP}/24"), "dev", TAP])
            .expect("address the kernel side");
        ns.ip(&["link", "set", TAP, "up"]).expect("set the TAP up");
        if offload {
            ns.ip(&["addr", "add", &format!("{DEV_IP}/32"), "dev", "lo"])
                .expect("the device's address in the namespace");
        }
        ns
    }

    fn parse(spec: &'static super::Spec, args: &[String]) -> Opts {
        match cli::parse(spec, args.iter().cloned()) {
            Ok(Some(o)) => o.quiet(),
            other => panic!("parsing {args:?}: {:?}", other.err()),
        }
    }

    fn tap_args(board: &str, extra: &[&str]) -> Vec<String> {
        ["--board", board, "--tap", TAP, "--ip", DEV_CIDR]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    }

    /// `tcpclient --board BOARD --tap ... --peer 10.64.0.1:P`, the network
    /// built on a thread inside the namespace with no `--netns` (as under
    /// `ip netns exec NS tcpclient ...`): the sink in the namespace gets
    /// every byte of the pattern, from the device's address.
    fn tcpclient_to_kernel_sink(board: &'static str, test: &str) {
        if !need_netns(test) {
            return;
        }
        let ns = netns_with_tap("exbc", true);
        let name = ns.name().to_string();
        let bytes: usize = 256 * 1024;
        let listener = ns
            .run(|| TcpListener::bind((KERNEL_IP, 0)))
            .expect("enter the namespace")
            .expect("sink listens in the namespace");
        let port = listener.local_addr().unwrap().port();
        let sink = std::thread::spawn(move || -> Result<(SocketAddr, Vec<u8>), String> {
            listener.set_nonblocking(true).map_err(|e| e.to_string())?;
            let end = Instant::now() + 60 * SEC;
            let (mut s, from) = loop {
                match listener.accept() {
                    Ok(c) => break c,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() > end {
                            return Err("no connection within 60 s".into());
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(format!("accept: {e}")),
                }
            };
            s.set_nonblocking(false).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(60 * SEC))
                .map_err(|e| e.to_string())?;
            let mut got = Vec::new();
            s.read_to_end(&mut got).map_err(|e| format!("read: {e}"))?;
            Ok((from, got))
        });
        let peer = format!("{KERNEL_IP}:{port}");
        let o = parse(
            &tcpclient::SPEC,
            &tap_args(board, &["--peer", &peer, "--bytes", "256K"]),
        );
        assert_eq!(o.netns, NetnsOpt::Current, "no --netns given");
        let (figure, sink) = support::with_timeout(test, 120 * SEC, move || {
            let o2 = o.clone();
            let net = support::in_netns(&name, move || Net::from_opts(&o2))
                .expect("enter the namespace")
                .unwrap_or_else(|e| panic!("{board} on --tap: {e}"));
            assert_eq!(net.dev_ip(), Ok(DEV_IP), "{board}: the device is at --ip");
            let r = tcpclient::run(&net, &o);
            // The chip stays powered until the sink has everything: an
            // offload chip may still be sending after `close` returns
            // (ESP-AT: `Linger(Some(d))` closes like `Linger(None)`), and
            // dropping the emulator resets its connections.
            let sink = sink.join().unwrap();
            drop(net);
            (r, sink)
        });
        let figure = figure.unwrap_or_else(|e| panic!("{board}: tcpclient: {e}"));
        assert!(figure.contains("MB/s"), "{figure}");
        let (from, got) = sink.unwrap_or_else(|e| panic!("sink: {e}"));
        assert_eq!(
            from.ip(),
            std::net::IpAddr::V4(DEV_IP),
            "{board}: the connection comes from the device's address"
        );
        assert_eq!(got.len(), bytes, "{board}: bytes the sink got");
        assert!(
            Pattern::new(0, 64 * 1024).check(0, &got),
            "{board}: the bytes are the example's pattern"
        );
        drop(ns);
    }

    /// `tcpecho --board BOARD --tap ... --netns NS` from outside the
    /// namespace: a client in the namespace (the TAP side) connects to the
    /// address the example announces and gets its bytes back.
    fn tcpecho_reached_from_kernel(board: &'static str, offload: bool, test: &str) {
        if !need_netns(test) {
            return;
        }
        let ns = netns_with_tap("exbe", offload);
        let name = ns.name().to_string();
        let o = parse(
            &tcpecho::SPEC,
            &tap_args(
                board,
                &[
                    "--netns",
                    &name,
                    "--port",
                    &PORT.to_string(),
                    "--duration",
                    "15",
                ],
            ),
        );
        assert_eq!(
            o.netns,
            NetnsOpt::Given(format!("/run/netns/{name}").into()),
            "--netns NAME is /run/netns/NAME"
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let server = std::thread::spawn(move || {
            Net::from_opts(&o).and_then(|net| {
                let _ = tx.send(net.dev_ip());
                tcpecho::run(&net, &o)
            })
        });
        let announced = match rx.recv_timeout(60 * SEC) {
            Ok(ip) => ip.unwrap_or_else(|e| panic!("{board}: no device address: {e}")),
            Err(_) => panic!(
                "{board}: tcpecho did not come up: {:?}",
                server.join().map(|r| r.err())
            ),
        };
        assert_eq!(announced, DEV_IP, "{board}: listening on the --ip address");
        let at = SocketAddr::from((announced, PORT));
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 253) as u8).collect();
        let sent = data.clone();
        let len = data.len() as u64;
        let echoed = ns
            .run(move || -> Result<(SocketAddr, Vec<u8>), String> {
                // The server may not be listening yet: retry (bounded).
                let end = Instant::now() + 30 * SEC;
                let mut s = loop {
                    match TcpStream::connect_timeout(&at, SEC) {
                        Ok(s) => break s,
                        Err(e) if Instant::now() > end => {
                            return Err(format!("connecting to {at}: {e}"))
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                };
                let local = s.local_addr().map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(30 * SEC))
                    .map_err(|e| e.to_string())?;
                let reader = s.try_clone().map_err(|e| e.to_string())?;
                // No half-close: ESP-AT reports a peer's FIN as the link
                // closing. Write everything, read it all back, then close.
                let w = std::thread::spawn(move || s.write_all(&sent));
                let mut got = Vec::new();
                let r = (&reader).take(len).read_to_end(&mut got);
                w.join()
                    .map_err(|_| "writer panicked".to_string())?
                    .map_err(|e| format!("write: {e}"))?;
                r.map_err(|e| format!("read after {} bytes: {e}", got.len()))?;
                Ok((local, got))
            })
            .expect("enter the namespace");
        let (local, got) = echoed.unwrap_or_else(|e| panic!("{board}: {e}"));
        if !offload {
            // The frames crossed the TAP: the client is its kernel side. (To
            // an offload board's address, local in the namespace, the kernel
            // picks that address as the source too.)
            assert_eq!(
                local.ip(),
                std::net::IpAddr::V4(KERNEL_IP),
                "{board}: the client is on the TAP side"
            );
        }
        assert!(
            got == data,
            "{board}: echoed {} of {} bytes, or not the same",
            got.len(),
            data.len()
        );
        let r =
            support::with_timeout(test, 60 * SEC, move || server.join()).expect("server thread");
        let summary = r.unwrap_or_else(|e| panic!("{board}: tcpecho: {e}"));
        assert!(summary.contains("served 1 clients"), "{board}: {summary}");
        drop(ns);
    }

    /// Without the TAP in the namespace an offload board says where it
    /// looked and how to name the namespace; without the device address
    /// there, how to add it.
    fn tap_and_address_must_be_in_the_namespace(board: &'static str, test: &str) {
        if !need_netns(test) {
            return;
        }
        let ns = Netns::new("exbn").expect("create network namespace");
        let name = ns.name().to_string();
        let o = parse(
            &tcpecho::SPEC,
            &tap_args(board, &["--netns", &name, "--duration", "1"]),
        );
        let e = Net::from_opts(&o).err().expect("no TAP in the namespace");
        assert!(e.contains(TAP) && e.contains("--netns"), "{board}: {e}");
        ns.ip(&["tuntap", "add", "dev", TAP, "mode", "tap"])
            .expect("create the TAP in the namespace");
        let e = Net::from_opts(&o)
            .err()
            .expect("no device address in the namespace");
        assert!(e.contains("addr add"), "{board}: the error says how: {e}");
        drop(ns);
    }

    #[test]
    fn w5500_offload_tcpclient_on_tap() {
        tcpclient_to_kernel_sink("w5500-offload", "w5500_offload_tcpclient_on_tap");
    }

    #[test]
    fn esp_at_tcpclient_on_tap() {
        tcpclient_to_kernel_sink("esp-at", "esp_at_tcpclient_on_tap");
    }

    #[test]
    fn w5500_offload_tcpecho_on_tap() {
        tcpecho_reached_from_kernel("w5500-offload", true, "w5500_offload_tcpecho_on_tap");
    }

    #[test]
    fn esp_at_tcpecho_on_tap() {
        tcpecho_reached_from_kernel("esp-at", true, "esp_at_tcpecho_on_tap");
    }

    /// The same option on a raw-frame board: `--netns` opens the TAP there.
    #[test]
    fn w5500_macraw_tcpecho_on_tap_in_netns() {
        tcpecho_reached_from_kernel(
            "w5500-macraw",
            false,
            "w5500_macraw_tcpecho_on_tap_in_netns",
        );
    }

    #[test]
    fn w5500_offload_needs_tap_and_address_in_netns() {
        tap_and_address_must_be_in_the_namespace(
            "w5500-offload",
            "w5500_offload_needs_tap_and_address_in_netns",
        );
    }

    #[test]
    fn esp_at_needs_tap_and_address_in_netns() {
        tap_and_address_must_be_in_the_namespace("esp-at", "esp_at_needs_tap_and_address_in_netns");
    }

    /// `--netns` is parsed (name or path) and only goes with `--tap`.
    #[test]
    fn netns_option() {
        let o = parse(
            &tcpecho::SPEC,
            &tap_args("esp-at", &["--netns", "/proc/1/ns/net"]),
        );
        assert_eq!(o.netns, NetnsOpt::Given("/proc/1/ns/net".into()));
        let e = cli::parse(
            &tcpecho::SPEC,
            ["--board", "esp-at", "--netns", "x"].map(String::from),
        )
        .expect_err("--netns without --tap");
        assert!(e.contains("--tap"), "{e}");
        assert!(cli::parse(
            &tcpecho::SPEC,
            ["--passt", "--netns", "x"].map(String::from)
        )
        .is_err());
        let help = cli::usage(&tcpecho::SPEC);
        assert!(help.contains("--netns NAME"), "{help}");
    }
}
