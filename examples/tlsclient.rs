//! HTTPS GET over a Protocol; on the simulated network by default.
//! `cargo run --example tlsclient -- --help`
#[path = "common/mod.rs"]
mod common;
#[path = "peers_ws_mqtt/mod.rs"]
mod peers_ws_mqtt;

#[path = "apps/tlsclient.rs"]
mod tlsclient;

fn main() {
    peers_ws_mqtt::text::main(&tlsclient::SPEC, tlsclient::run, tlsclient::TEXT)
}
