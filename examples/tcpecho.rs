//! TCP echo server, a thread per client; self-tests on the simulated network.
//! `cargo run --example tcpecho -- --help`
#[path = "common/mod.rs"]
mod common;

#[path = "apps/tcpecho.rs"]
mod tcpecho;

fn main() {
    common::main(&tcpecho::SPEC, tcpecho::run)
}
