//! `webclient`: an HTTP/1.1 GET written by hand over a TCP stream
//! (TinyGo's `examples/net/webclient`): resolve the host, connect, write the
//! request line and headers, read until the server closes, split the head
//! from the body, print both.
//!
//! On the simulated network the peer serves `/hello.txt` (and resolves
//! `peer.sim.test` with its DNS server); behind `--passt` the default is a
//! server on this host's port 8000 (`python3 -m http.server`); on a TAP link
//! give `--url`.

use std::time::{Duration, Instant};

use netdever::net::TcpStream;
use netdever::{AddressFamily, Netdever, SocketAddr};

use crate::common::cli::Extra;
use crate::common::http::Url;
use crate::common::peers::HELLO;
use crate::common::{Board, Net, Opts, Outcome, Spec};

/// Command line of `webclient`.
pub const SPEC: Spec = Spec {
    name: "webclient",
    about: "HTTP/1.1 GET written by hand over a TCP stream; prints the response",
    server: false,
    default_port: 8000,
    extra: &[Extra {
        name: "--url",
        value: "URL",
        default: "",
        help: "http:// URL to get (default: /hello.txt on the simulated peer, or 127.0.0.1:P/ behind --passt)",
    }],
};

/// Bound on the exchange.
const LIMIT: Duration = Duration::from_secs(20);

/// Run `webclient` on `net`.
pub fn run(net: &Net, o: &Opts) -> Outcome {
    let default_path = if net.board == Board::Sim {
        "/hello.txt"
    } else {
        "/"
    };
    let url = net.url_for(o, default_path)?;
    if url.https {
        return Err("webclient speaks plain HTTP; http_get handles https:// URLs".into());
    }
    let check = net.board == Board::Sim && o.text_opt("--url").is_none();
    net.with_web_peer(o.port, || get(&net.dev, &url, check, o))?
}

/// GET `url` and print the answer; `check`: it must be the peer's hello.
fn get(dev: &dyn Netdever, url: &Url, check: bool, o: &Opts) -> Outcome {
    let t0 = Instant::now();
    let ip = dev
        .get_host_by_name(&url.host, AddressFamily::Inet)
        .map_err(|e| format!("resolving {}: {e}", url.host))?;
    let addr = SocketAddr::new(ip, url.port);
    o.say(format_args!("connecting to {addr} ({})", url.host));
    let mut conn = TcpStream::connect_timeout(dev, addr, Duration::from_secs(10))
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    conn.set_deadline(Some(dev.now() + LIMIT));

    // The request, by hand: request line, headers, empty line.
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: netdever-webclient\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.path,
        url.authority()
    );
    conn.write_all(request.as_bytes())
        .map_err(|e| format!("sending the request: {e}"))?;

    // The response: everything until the server closes.
    let mut resp = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => resp.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("reading the response: {e}")),
        }
        if resp.len() > 16 << 20 {
            return Err("response longer than 16 MiB".into());
        }
    }
    let elapsed = t0.elapsed();
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the response has no end of headers")?;
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    let body = &resp[split + 4..];
    let status_line = head.lines().next().unwrap_or("").to_string();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP status line: {status_line:?}"))?;
    o.say(format_args!("{head}\n"));
    match std::str::from_utf8(body) {
        Ok(text) if text.len() <= 4096 => o.say(format_args!("{}", text.trim_end())),
        _ => o.say(format_args!("({} bytes of body)", body.len())),
    }
    if check {
        if status != 200 {
            return Err(format!("the peer answered {status_line}"));
        }
        // The peer answers with Content-Length, so the raw body is the text.
        if body != HELLO.as_bytes() {
            return Err(format!(
                "unexpected body {:?}",
                String::from_utf8_lossy(body)
            ));
        }
    }
    if !(200..400).contains(&status) {
        return Err(format!("server answered {status_line}"));
    }
    Ok(format!(
        "{status_line}, {} bytes in {:.1} ms",
        body.len(),
        elapsed.as_secs_f64() * 1e3
    ))
}
