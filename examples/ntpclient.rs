//! get the time from an NTP server over SNTP; print it and this host's clock offset.
//! `cargo run --example ntpclient -- --help`
#[path = "common/mod.rs"]
mod common;

#[path = "apps/ntpclient.rs"]
mod ntpclient;

fn main() {
    common::main(&ntpclient::SPEC, ntpclient::run)
}
