//! POST form fields (x-www-form-urlencoded) to a URL and print the response.
//! `cargo run --example http_postform -- --help`
#[path = "common/mod.rs"]
mod common;

#[path = "apps/http_postform.rs"]
mod http_postform;

fn main() {
    common::main(&http_postform::SPEC, http_postform::run)
}
