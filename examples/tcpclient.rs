//! Connect to a TCP server, send N bytes, print the throughput.
//! `cargo run --example tcpclient -- --help`
#[path = "common/mod.rs"]
mod common;

#[path = "apps/tcpclient.rs"]
mod tcpclient;

fn main() {
    common::main(&tcpclient::SPEC, tcpclient::run)
}
