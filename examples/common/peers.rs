//! Servers the simulated peer runs for the client examples: a TCP sink, an
//! HTTP test server, a DNS server for `*.sim.test`, an SNTP server. (The
//! peer's clients for the server examples are in the examples themselves,
//! on [`super::http`].)

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, SystemTime};

use netdever::net::UdpSocket;
use netdever::{AddressFamily, Error, MsgFlags, Netdever, Protocol, SockType};

use super::http::json_escape;
use super::httpd::{self, Request, Response};
use super::pattern::Pattern;
use super::{dns, sntp, within, PEER_IP};

/// How often blocked peer servers look at their stop flag.
const TICK: Duration = Duration::from_millis(100);

/// A TCP sink: listen on `port` now, then (on a thread of `scope`) accept
/// one connection, read it to the end while checking every byte against
/// pattern `seed`, and return how many bytes came. Everything is bounded by
/// `limit`.
pub fn tcp_sink<'scope, 'env>(
    scope: &'scope Scope<'scope, 'env>,
    dev: &'env dyn Netdever,
    port: u16,
    seed: u64,
    limit: Duration,
) -> Result<ScopedJoinHandle<'scope, Result<u64, String>>, String> {
    fn e(what: &'static str) -> impl Fn(netdever::Error) -> String {
        move |err| format!("peer: {what}: {err}")
    }
    let l = dev
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .map_err(e("socket"))?;
    let bind = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    if let Err(err) = dev.bind(l, bind).and_then(|_| dev.listen(l, 1)) {
        let _ = dev.close(l);
        return Err(format!("peer: listening on port {port}: {err}"));
    }
    Ok(scope.spawn(move || {
        let deadline = within(dev, limit);
        let accepted = dev.accept(l, deadline);
        let _ = dev.close(l);
        let (c, _) = accepted.map_err(e("accept"))?;
        let pat = Pattern::new(seed, 64 * 1024);
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        let r = loop {
            match dev.recv(c, &mut buf, MsgFlags::NONE, deadline) {
                Ok(0) => break Ok(total),
                Ok(n) => {
                    if !pat.check(total, &buf[..n]) {
                        break Err(format!("peer: wrong data at offset {total}"));
                    }
                    total += n as u64;
                }
                Err(err) => break Err(format!("peer: recv after {total} bytes: {err}")),
            }
        };
        let _ = dev.close(c);
        r
    }))
}

/// What the HTTP test server's `/hello.txt` says.
pub const HELLO: &str = "Hello from the simulated peer!\n";
/// Size of the HTTP test server's `/chunked` body (sent chunked).
pub const CHUNKED_LEN: usize = 100_000;

/// The HTTP test server's routes (an httpbin in miniature):
///
/// * `GET|HEAD /hello.txt` — [`HELLO`], `text/plain`
/// * `GET /chunked` — [`CHUNKED_LEN`] bytes of pattern 7, chunked
/// * `POST /post` — JSON echo: `{"method","content_type","length","body"}`
/// * `POST /form` — the form fields as JSON: `{"form":{"name":"value",..}}`
/// * `GET /` — a small HTML page
pub fn test_site(req: &Request) -> Response {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET" | "HEAD", "/hello.txt") => Response::text(200, HELLO),
        ("GET", "/chunked") => {
            let mut r = Response::new(
                200,
                "application/octet-stream",
                Pattern::new(7, CHUNKED_LEN).at(0, CHUNKED_LEN).to_vec(),
            );
            r.chunked = true;
            r
        }
        ("GET" | "HEAD", "/") => Response::html(
            200,
            "<!doctype html><title>peer</title><p>The simulated peer's test server.</p>\n",
        ),
        ("POST", "/post") => Response::json(200, echo_json(req)),
        ("POST", "/form") => {
            let fields: Vec<String> = req
                .form()
                .iter()
                .map(|(k, v)| format!("\"{}\":\"{}\"", json_escape(k), json_escape(v)))
                .collect();
            Response::json(200, format!("{{\"form\":{{{}}}}}\n", fields.join(",")))
        }
        (_, "/hello.txt" | "/post" | "/form" | "/chunked") => {
            Response::method_not_allowed("GET, HEAD, POST")
        }
        (_, p) => Response::not_found(p),
    }
}

/// The JSON echo of a request.
pub fn echo_json(req: &Request) -> String {
    format!(
        "{{\"method\":\"{}\",\"content_type\":\"{}\",\"length\":{},\"body\":\"{}\"}}\n",
        json_escape(&req.method),
        json_escape(req.header("content-type").unwrap_or("")),
        req.body.len(),
        json_escape(&String::from_utf8_lossy(&req.body))
    )
}

/// Run the HTTP test server ([`test_site`]) on `port` of `dev` until
/// `stop` is set. Listens before returning.
pub fn http_server<'scope, 'env>(
    scope: &'scope Scope<'scope, 'env>,
    dev: &'env dyn Netdever,
    port: u16,
    stop: &'env AtomicBool,
) -> Result<ScopedJoinHandle<'scope, ()>, String> {
    let mut l = httpd::listen(dev, port).map_err(|e| format!("peer: {e}"))?;
    Ok(scope.spawn(move || {
        let stats = httpd::Stats::default();
        let stopped = || stop.load(Ordering::Acquire);
        httpd::serve(dev, &mut l, &test_site, &stopped, &stats, None);
    }))
}

/// Run a DNS server on port 53 of `dev` until `stop` is set: every name
/// under `sim.test` is [`PEER_IP`], anything else does not exist.
pub fn dns_server<'scope, 'env>(
    scope: &'scope Scope<'scope, 'env>,
    dev: &'env dyn Netdever,
    stop: &'env AtomicBool,
) -> Result<ScopedJoinHandle<'scope, ()>, String> {
    let mut sock = UdpSocket::bind(dev, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 53)))
        .map_err(|e| format!("peer: DNS server on port 53: {e}"))?;
    Ok(scope.spawn(move || {
        let lookup = dns::zone("sim.test", PEER_IP);
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Acquire) {
            sock.set_read_deadline(Some(dev.now() + TICK));
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if let Some(a) = dns::answer(&buf[..n], &lookup) {
                        let _ = sock.send_to(&a, from);
                    }
                }
                Err(Error::Timeout) => {}
                Err(_) => std::thread::sleep(TICK),
            }
        }
    }))
}

/// Run an SNTP server on UDP `port` of `dev` until `stop` is set; it
/// serves this host's clock.
pub fn sntp_server<'scope, 'env>(
    scope: &'scope Scope<'scope, 'env>,
    dev: &'env dyn Netdever,
    port: u16,
    stop: &'env AtomicBool,
) -> Result<ScopedJoinHandle<'scope, u64>, String> {
    let mut sock = UdpSocket::bind(dev, SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
        .map_err(|e| format!("peer: SNTP server on port {port}: {e}"))?;
    Ok(scope.spawn(move || {
        let mut served = 0;
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Acquire) {
            sock.set_read_deadline(Some(dev.now() + TICK));
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if let Some(a) = sntp::answer(&buf[..n], SystemTime::now()) {
                        if sock.send_to(&a, from).is_ok() {
                            served += 1;
                        }
                    }
                }
                Err(Error::Timeout) => {}
                Err(_) => std::thread::sleep(TICK),
            }
        }
        served
    }))
}
