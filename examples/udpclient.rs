//! send datagrams to a UDP echo server, check the replies, print round-trip stats.
//! `cargo run --example udpclient -- --help`
#[path = "common/mod.rs"]
mod common;

#[allow(dead_code)]
#[path = "apps/udpclient.rs"]
mod udpclient;
#[allow(dead_code)]
#[path = "apps/udpecho.rs"]
mod udpecho;

fn main() {
    common::main(&udpclient::SPEC, udpclient::run)
}
