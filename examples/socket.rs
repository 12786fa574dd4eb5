//! Send N bytes over TCP with the raw Socketer calls only.
//! `cargo run --example socket -- --help`
#[path = "common/mod.rs"]
mod common;

#[path = "apps/socket.rs"]
mod socket;

fn main() {
    common::main(&socket::SPEC, socket::run)
}
