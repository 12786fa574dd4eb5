//! A chain of concurrent TCP connections through an echo server; on the simulated network by default.
//! `cargo run --example snake -- --help`
#[path = "common/mod.rs"]
mod common;
#[path = "peers_ws_mqtt/mod.rs"]
mod peers_ws_mqtt;

#[path = "apps/snake.rs"]
mod snake;

fn main() {
    common::main(&snake::SPEC, snake::run)
}
