//! `http_post`: POST a body (JSON by default) and print the response
//! (TinyGo's `examples/net/http-post`).
//!
//! On the simulated network the peer's `/post` echoes the request as JSON
//! and the example checks the echo; behind `--passt` the default is `/post`
//! on this host's port 8000; on a TAP link give `--url`.

use std::time::Instant;

use crate::common::cli::Extra;
use crate::common::http::{self, json_escape};
use crate::common::{Board, Net, Opts, Outcome, Spec};

/// Command line of `http_post`.
pub const SPEC: Spec = Spec {
    name: "http_post",
    about: "POST a JSON (or any) body to a URL and print the response",
    server: false,
    default_port: 8000,
    extra: &[
        Extra {
            name: "--url",
            value: "URL",
            default: "",
            help: "URL to post to (default: /post on the simulated peer, or on 127.0.0.1:P behind --passt)",
        },
        Extra {
            name: "--data",
            value: "TEXT",
            default: "{\"hello\":\"netdever\",\"answer\":42}",
            help: "the body",
        },
        Extra {
            name: "--type",
            value: "TEXT",
            default: "application/json",
            help: "its Content-Type",
        },
        Extra {
            name: "--ca",
            value: "FILE",
            default: "",
            help: "PEM file of CA certificates to verify https servers with",
        },
    ],
};

/// Run `http_post` on `net`.
pub fn run(net: &Net, o: &Opts) -> Outcome {
    let url = net.url_for(o, "/post")?;
    let copts = http::client_opts(o)?;
    let data = o.text("--data").to_string();
    let ctype = o.text("--type").to_string();
    let self_test = net.board == Board::Sim && o.text_opt("--url").is_none();
    net.with_web_peer(o.port, || {
        let t0 = Instant::now();
        o.say(format_args!("POST {url} ({} bytes of {ctype})", data.len()));
        let resp = http::fetch_on(
            &net.dev,
            "POST",
            &url,
            &[("Content-Type", ctype.as_str())],
            data.as_bytes(),
            &copts,
        )?;
        let elapsed = t0.elapsed();
        http::print_response(o, &resp, true);
        if self_test {
            let want = format!(
                "\"content_type\":\"{}\",\"length\":{},\"body\":\"{}\"",
                json_escape(&ctype),
                data.len(),
                json_escape(&data)
            );
            if resp.status != 200 || !resp.text().contains(&want) {
                return Err(format!(
                    "the peer's echo is wrong: {} {}",
                    resp.status,
                    resp.text()
                ));
            }
        }
        if !(200..400).contains(&resp.status) {
            return Err(format!("{url}: {}", resp.status_line()));
        }
        Ok(format!(
            "{}, posted {} bytes, {} back in {:.1} ms",
            resp.status_line(),
            data.len(),
            resp.body.len(),
            elapsed.as_secs_f64() * 1e3
        ))
    })?
}
