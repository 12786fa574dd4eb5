//! web server: HTML form, form POST, JSON API, cookies; a thread per connection.
//! `cargo run --example webserver -- --help`
#[path = "common/mod.rs"]
mod common;

#[path = "apps/webserver.rs"]
mod webserver;

fn main() {
    common::main(&webserver::SPEC, webserver::run)
}
