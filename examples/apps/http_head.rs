//! `http_head`: a HEAD request; prints the status and headers (TinyGo's
//! `examples/net/http-head`). The response has headers — `Content-Length`
//! says how big the body *would* be — and no body.
//!
//! On the simulated network the peer's test server answers; behind
//! `--passt` the default is `/` of a server on this host's port 8000; on a
//! TAP link give `--url`.

use std::time::Instant;

use crate::common::cli::Extra;
use crate::common::http;
use crate::common::peers::HELLO;
use crate::common::{Board, Net, Opts, Outcome, Spec};

/// Command line of `http_head`.
pub const SPEC: Spec = Spec {
    name: "http_head",
    about: "HEAD a URL and print the status and headers",
    server: false,
    default_port: 8000,
    extra: &[
        Extra {
            name: "--url",
            value: "URL",
            default: "",
            help: "URL to ask (default: the simulated peer's /hello.txt, or 127.0.0.1:P/ behind --passt)",
        },
        Extra {
            name: "--ca",
            value: "FILE",
            default: "",
            help: "PEM file of CA certificates to verify https servers with",
        },
    ],
};

/// Run `http_head` on `net`.
pub fn run(net: &Net, o: &Opts) -> Outcome {
    let default_path = if net.board == Board::Sim {
        "/hello.txt"
    } else {
        "/"
    };
    let url = net.url_for(o, default_path)?;
    let copts = http::client_opts(o)?;
    let self_test = net.board == Board::Sim && o.text_opt("--url").is_none();
    net.with_web_peer(o.port, || {
        let t0 = Instant::now();
        o.say(format_args!("HEAD {url}"));
        let resp = http::fetch_on(&net.dev, "HEAD", &url, &[], &[], &copts)?;
        let elapsed = t0.elapsed();
        http::print_response(o, &resp, false);
        if !resp.body.is_empty() {
            return Err("a response to HEAD came with a body".into());
        }
        let length = resp.header("content-length").unwrap_or("?").to_string();
        if self_test && (resp.status != 200 || length != HELLO.len().to_string()) {
            return Err(format!(
                "the peer answered {} with Content-Length {length}, expected 200 and {}",
                resp.status,
                HELLO.len()
            ));
        }
        if !(200..400).contains(&resp.status) {
            return Err(format!("{url}: {}", resp.status_line()));
        }
        Ok(format!(
            "{}, Content-Length {length}, in {:.1} ms",
            resp.status_line(),
            elapsed.as_secs_f64() * 1e3
        ))
    })?
}
