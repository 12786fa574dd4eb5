//! Websocket echo server, a thread per client; on the simulated network by default.
//! `cargo run --example websocket_handler -- --help`
#[path = "common/mod.rs"]
mod common;
#[path = "peers_ws_mqtt/mod.rs"]
mod peers_ws_mqtt;

#[path = "apps/websocket_handler.rs"]
mod websocket_handler;

fn main() {
    common::main(&websocket_handler::SPEC, websocket_handler::run)
}
