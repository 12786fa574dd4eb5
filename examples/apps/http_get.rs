//! `http_get`: GET a URL with the small HTTP/1.1 client
//! (`examples/common/http.rs`) and print the response (TinyGo's
//! `examples/net/http-get`). Bodies may be sized by `Content-Length`,
//! chunked, or end with the connection; `https://` URLs go over a TLS socket
//! where the device has TLS (`--ca FILE` to trust a private CA).
//!
//! On the simulated network the peer's test server answers (by name,
//! through its DNS server), and the example also fetches a chunked body and
//! checks it; behind `--passt` the default is `/` of a server on this host's
//! port 8000; on a TAP link give `--url`.

use std::time::Instant;

use crate::common::cli::Extra;
use crate::common::http::{self, Url};
use crate::common::pattern::Pattern;
use crate::common::peers::{CHUNKED_LEN, HELLO};
use crate::common::{Board, Net, Opts, Outcome, Spec};

/// Command line of `http_get`.
pub const SPEC: Spec = Spec {
    name: "http_get",
    about: "GET a URL and print the response (HTTP/1.1 client, chunked bodies, https with TLS)",
    server: false,
    default_port: 8000,
    extra: &[
        Extra {
            name: "--url",
            value: "URL",
            default: "",
            help: "URL to get (default: the simulated peer's /hello.txt, or 127.0.0.1:P/ behind --passt)",
        },
        Extra {
            name: "--ca",
            value: "FILE",
            default: "",
            help: "PEM file of CA certificates to verify https servers with",
        },
        Extra {
            name: "--resolve",
            value: "NAME:ADDR",
            default: "",
            help: "connect to ADDR for host NAME instead of resolving it (NAME stays the TLS name and Host)",
        },
        Extra {
            name: "--out",
            value: "FILE",
            default: "",
            help: "write the body to FILE instead of printing it",
        },
    ],
};

/// Run `http_get` on `net`.
pub fn run(net: &Net, o: &Opts) -> Outcome {
    let default_path = if net.board == Board::Sim {
        "/hello.txt"
    } else {
        "/"
    };
    let url = net.url_for(o, default_path)?;
    let mut copts = http::client_opts(o)?;
    if let Some(r) = o.text_opt("--resolve") {
        let (name, ip) = http::parse_resolve(r)?;
        // On passt, this host's 127.0.0.1 is the gateway.
        let ip = net.device_host(&ip.to_string());
        let ip = ip.parse().map_err(|_| format!("--resolve: {ip}"))?;
        copts.resolve.push((name, ip));
    }
    if o.text_opt("--out").is_some() {
        // Saving to a file: allow bigger bodies than for printing.
        copts.limit = 256 << 20;
    }
    let self_test = net.board == Board::Sim && o.text_opt("--url").is_none();
    net.with_web_peer(o.port, || {
        let t0 = Instant::now();
        o.say(format_args!("GET {url}"));
        let resp = http::fetch_on(&net.dev, "GET", &url, &[], &[], &copts)?;
        let elapsed = t0.elapsed();
        let out = o.text_opt("--out");
        http::print_response(o, &resp, out.is_none());
        if let Some(path) = out {
            std::fs::write(path, &resp.body).map_err(|e| format!("--out {path}: {e}"))?;
            o.say(format_args!("wrote {} bytes to {path}", resp.body.len()));
        }
        if self_test {
            check_peer(net, &url, &resp, &copts)?;
        }
        if !(200..400).contains(&resp.status) {
            return Err(format!("{url}: {}", resp.status_line()));
        }
        Ok(format!(
            "{}, {} bytes in {:.1} ms",
            resp.status_line(),
            resp.body.len(),
            elapsed.as_secs_f64() * 1e3
        ))
    })?
}

/// On the simulated network: the hello is right, and a chunked body
/// decodes to what the peer sent.
fn check_peer(
    net: &Net,
    url: &Url,
    resp: &http::Response,
    copts: &http::ClientOpts,
) -> Result<(), String> {
    if resp.status != 200 || resp.text() != HELLO {
        return Err(format!(
            "unexpected answer from the peer: {} {:?}",
            resp.status,
            resp.text()
        ));
    }
    if !resp
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain"))
    {
        return Err(format!("content type {:?}", resp.header("content-type")));
    }
    let chunked = Url {
        path: "/chunked".into(),
        ..url.clone()
    };
    let r = http::fetch_on(&net.dev, "GET", &chunked, &[], &[], copts)?;
    if r.header("transfer-encoding") != Some("chunked") {
        return Err("/chunked was not sent chunked".into());
    }
    if r.body.len() != CHUNKED_LEN || !Pattern::new(7, CHUNKED_LEN).check(0, &r.body) {
        return Err(format!(
            "/chunked: {} bytes, not the {CHUNKED_LEN} sent",
            r.body.len()
        ));
    }
    Ok(())
}
