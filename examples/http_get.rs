//! GET a URL and print the response (HTTP/1.1 client, chunked bodies, https with TLS).
//! `cargo run --example http_get -- --help`
#[path = "common/mod.rs"]
mod common;

#[path = "apps/http_get.rs"]
mod http_get;

fn main() {
    common::main(&http_get::SPEC, http_get::run)
}
