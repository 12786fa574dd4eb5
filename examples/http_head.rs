//! HEAD a URL and print the status and headers.
//! `cargo run --example http_head -- --help`
#[path = "common/mod.rs"]
mod common;

#[path = "apps/http_head.rs"]
mod http_head;

fn main() {
    common::main(&http_head::SPEC, http_head::run)
}
