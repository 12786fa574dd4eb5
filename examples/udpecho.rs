//! UDP echo server.
//! `cargo run --example udpecho -- --help`
#[path = "common/mod.rs"]
mod common;

#[allow(dead_code)]
#[path = "apps/udpclient.rs"]
mod udpclient;
#[allow(dead_code)]
#[path = "apps/udpecho.rs"]
mod udpecho;

fn main() {
    common::main(&udpecho::SPEC, udpecho::run)
}
