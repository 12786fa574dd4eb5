//! POST a JSON (or any) body to a URL and print the response.
//! `cargo run --example http_post -- --help`
#[path = "common/mod.rs"]
mod common;

#[path = "apps/http_post.rs"]
mod http_post;

fn main() {
    common::main(&http_post::SPEC, http_post::run)
}
