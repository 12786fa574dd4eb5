//! Websocket client against an echo server; on the simulated network by default.
//! `cargo run --example websocket_dial -- --help`
#[path = "common/mod.rs"]
mod common;
#[path = "peers_ws_mqtt/mod.rs"]
mod peers_ws_mqtt;

#[path = "apps/websocket_dial.rs"]
mod websocket_dial;

fn main() {
    peers_ws_mqtt::text::main(
        &websocket_dial::SPEC,
        websocket_dial::run,
        websocket_dial::TEXT,
    )
}
