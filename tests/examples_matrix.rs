//! Every example × every backend against real peer programs: the matrix of
//! `examples/common/matrix.rs` (the same cells `cargo run --example suite`
//! prints), one test per backend column, each asserting that every cell
//! passes and printing its column.
//!
//! Peers: curl, python's http.server (and a POST recorder), chronyd,
//! mosquitto (with mosquitto_pub / mosquitto_sub), python websockets,
//! `openssl s_server -tls1_3` with a test CA made at run time (a good
//! certificate, one from an untrusted CA and one for the wrong host, which
//! must be refused), and python TCP/UDP helpers. The `stack`,
//! `w5500-macraw` and `esp-hosted` columns reach them through passt; the
//! offload columns on loopback; the `tap` column (root) inside a network
//! namespace each cell creates and deletes.
//!
//! A missing peer program or privilege skips the cell (or the column) with
//! a printed reason; under `CI=true` or `NETDEVER_REQUIRE_PEERS=1` it fails
//! the test instead.
#![cfg(all(feature = "std", feature = "full-stack", target_os = "linux"))]
// The example modules are shared with the binaries; not every item is used here.
#![allow(dead_code)]

#[allow(unused_imports)] // the namespace helpers are not used here
mod support;

#[path = "../examples/common/mod.rs"]
mod common;
#[path = "../examples/peers_ws_mqtt/mod.rs"]
mod peers_ws_mqtt;

#[path = "../examples/apps/http_get.rs"]
mod http_get;
#[path = "../examples/apps/http_head.rs"]
mod http_head;
#[path = "../examples/apps/http_post.rs"]
mod http_post;
#[path = "../examples/apps/http_postform.rs"]
mod http_postform;
#[path = "../examples/apps/mqttclient.rs"]
mod mqttclient;
#[path = "../examples/apps/ntpclient.rs"]
mod ntpclient;
#[path = "../examples/apps/snake.rs"]
mod snake;
#[path = "../examples/apps/socket.rs"]
mod socket;
#[path = "../examples/apps/tcpclient.rs"]
mod tcpclient;
#[path = "../examples/apps/tcpecho.rs"]
mod tcpecho;
#[path = "../examples/apps/tlsclient.rs"]
mod tlsclient;
#[path = "../examples/apps/udpclient.rs"]
mod udpclient;
#[path = "../examples/apps/udpecho.rs"]
mod udpecho;
#[path = "../examples/apps/webclient.rs"]
mod webclient;
#[path = "../examples/apps/webserver.rs"]
mod webserver;
#[path = "../examples/apps/websocket_dial.rs"]
mod websocket_dial;
#[path = "../examples/apps/websocket_handler.rs"]
mod websocket_handler;
#[path = "../examples/apps/webstatic.rs"]
mod webstatic;

#[path = "../examples/common/matrix.rs"]
mod matrix;

use matrix::{Backend, Cell};

/// Run every row on `backend`, print the column, and fail on any failed
/// cell (and, when peers are required, on any cell without its peer).
fn column(backend: Backend) {
    let test = format!("matrix_{}", backend.name().replace('-', "_"));
    if backend.needs_root() {
        if let Some(missing) = common::real::netns_missing() {
            if support::require(&test, &missing, false).is_err() {
                return;
            }
        }
    }
    let rows: Vec<&'static matrix::Row> = matrix::ROWS.iter().collect();
    let ran: Vec<matrix::Ran> = rows.iter().map(|r| matrix::run_cell(r, backend)).collect();
    // One print call, so parallel columns do not interleave their lines.
    matrix::print(&rows, &[backend], &ran, true);
    let mut failures = Vec::new();
    for x in &ran {
        match &x.cell {
            Cell::Pass { .. } => {}
            Cell::Fail(e) => failures.push(format!("{}: {e}", x.row)),
            Cell::NoPeer(p) => {
                let _ = support::require(
                    &format!("{test}/{}", x.row),
                    &format!("the peer program {p}"),
                    false,
                );
            }
            Cell::NotApplicable(why) => {
                // Only a backend that truly cannot gets here (no TLS at all,
                // no root for TAP); say so in the output.
                eprintln!("{test}/{}: not applicable: {why}", x.row);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{test}: {} of {} cells failed:\n{}",
        failures.len(),
        ran.len(),
        failures.join("\n")
    );
}

#[test]
fn matrix_stack() {
    column(Backend::Stack);
}

#[test]
fn matrix_w5500_macraw() {
    column(Backend::W5500Macraw);
}

#[test]
fn matrix_esp_hosted() {
    column(Backend::EspHosted);
}

#[test]
fn matrix_w5500_offload() {
    column(Backend::W5500Offload);
}

#[test]
fn matrix_esp_at() {
    column(Backend::EspAt);
}

#[test]
fn matrix_tap() {
    column(Backend::Tap);
}
