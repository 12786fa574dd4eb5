//! The examples on every emulated board: the same `run` functions the
//! example binaries call, on `--board w5500-macraw | w5500-offload | esp-at
//! | esp-hosted` over the simulated network (raw-frame boards: a second
//! stack as the peer; offload boards: this host's loopback as the peer).
//! No root needed.

#[path = "../examples/common/mod.rs"]
mod common;

#[path = "../examples/apps/socket.rs"]
mod socket;
#[path = "../examples/apps/tcpclient.rs"]
mod tcpclient;
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
