//! `http_postform`: POST an HTML form (`application/x-www-form-urlencoded`)
//! and print the response (TinyGo's `examples/net/http-postform`).
//!
//! `--form` lists the fields as `name=value&name=value` (values may hold
//! spaces; they are encoded properly). On the simulated network the peer's
//! `/form` answers with the fields it decoded and the example checks them;
//! behind `--passt` the default is `/form` on this host's port 8000; on a TAP
//! link give `--url`.

use std::time::Instant;

use crate::common::cli::Extra;
use crate::common::http::{self, json_escape};
use crate::common::{Board, Net, Opts, Outcome, Spec};

/// Command line of `http_postform`.
pub const SPEC: Spec = Spec {
    name: "http_postform",
    about: "POST form fields (x-www-form-urlencoded) to a URL and print the response",
    server: false,
    default_port: 8000,
    extra: &[
        Extra {
            name: "--url",
            value: "URL",
            default: "",
            help: "URL to post to (default: /form on the simulated peer, or on 127.0.0.1:P behind --passt)",
        },
        Extra {
            name: "--form",
            value: "TEXT",
            default: "name=netdever&language=Rust&message=hello, wörld: 1+1=2",
            help: "fields as name=value&name=value",
        },
        Extra {
            name: "--ca",
            value: "FILE",
            default: "",
            help: "PEM file of CA certificates to verify https servers with",
        },
    ],
};

/// `a=b&c=d e` into pairs (values taken literally).
pub fn parse_fields(s: &str) -> Result<Vec<(String, String)>, String> {
    s.split('&')
        .filter(|f| !f.is_empty())
        .map(|f| {
            f.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("--form: {f:?} is not name=value"))
        })
        .collect()
}

/// Run `http_postform` on `net`.
pub fn run(net: &Net, o: &Opts) -> Outcome {
    let url = net.url_for(o, "/form")?;
    let copts = http::client_opts(o)?;
    let fields = parse_fields(o.text("--form"))?;
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let body = http::form_encode(&pairs);
    let self_test = net.board == Board::Sim && o.text_opt("--url").is_none();
    net.with_web_peer(o.port, || {
        let t0 = Instant::now();
        o.say(format_args!("POST {url}: {body}"));
        let resp = http::fetch_on(
            &net.dev,
            "POST",
            &url,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
            &copts,
        )?;
        let elapsed = t0.elapsed();
        http::print_response(o, &resp, true);
        if self_test {
            let text = resp.text();
            for (k, v) in &fields {
                let want = format!("\"{}\":\"{}\"", json_escape(k), json_escape(v));
                if !text.contains(&want) {
                    return Err(format!("the peer did not get field {k}={v:?}: {text}"));
                }
            }
        }
        if !(200..400).contains(&resp.status) {
            return Err(format!("{url}: {}", resp.status_line()));
        }
        Ok(format!(
            "{}, {} fields posted in {:.1} ms",
            resp.status_line(),
            fields.len(),
            elapsed.as_secs_f64() * 1e3
        ))
    })?
}
