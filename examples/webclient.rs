//! HTTP/1.1 GET written by hand over a TCP stream; prints the response.
//! `cargo run --example webclient -- --help`
#[path = "common/mod.rs"]
mod common;

#[path = "apps/webclient.rs"]
mod webclient;

fn main() {
    common::main(&webclient::SPEC, webclient::run)
}
