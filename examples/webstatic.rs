//! serve files embedded in the program, with content types and ETags.
//! `cargo run --example webstatic -- --help`
#[path = "common/mod.rs"]
mod common;

#[path = "apps/webstatic.rs"]
mod webstatic;

fn main() {
    common::main(&webstatic::SPEC, webstatic::run)
}
