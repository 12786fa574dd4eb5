//! A small HTTP/1.1 server over the net layer: a thread per connection,
//! persistent connections, request heads parsed with `httparse`, bodies by
//! `Content-Length` or chunked, a handler function per server. The
//! `webserver` and `webstatic` examples and the simulated peer's test
//! server are built on it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use netdever::net::{TcpListener, TcpStream};
use netdever::{Error, Netdever};

use super::http::{self, BodyKind, Reader};

/// How long a connection may sit idle between requests.
pub const IDLE: Duration = Duration::from_secs(2);
/// Bound on receiving one request, or sending one response.
pub const IO_LIMIT: Duration = Duration::from_secs(20);
/// Largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;
/// Connections served at once; more wait in the listener's backlog.
pub const MAX_CONNS: usize = 8;
/// How often the accept loop looks at the stop flag.
const TICK: Duration = Duration::from_millis(100);

/// A request as the handler sees it.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string (after `?`), may be empty.
    pub query: String,
    /// `1` for HTTP/1.1.
    pub version: u8,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Who sent it.
    pub peer: SocketAddr,
}

impl Request {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        http::header(&self.headers, name)
    }

    /// A cookie's value (from every `Cookie` header).
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
            .flat_map(|(_, v)| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    }

    /// The body's form fields (`application/x-www-form-urlencoded`).
    pub fn form(&self) -> Vec<(String, String)> {
        http::form_decode(&String::from_utf8_lossy(&self.body))
    }

    /// The query's fields.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        http::form_decode(&self.query)
    }
}

/// A response from a handler.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers (`Content-Length` and `Connection` are added when sent).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// Send the body with chunked transfer encoding.
    pub chunked: bool,
}

impl Response {
    /// A response with a body of type `content_type`.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
            chunked: false,
        }
    }

    /// `text/plain`.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Self::new(status, "text/plain; charset=utf-8", body.into())
    }

    /// `text/html`.
    pub fn html(status: u16, body: impl Into<String>) -> Response {
        Self::new(status, "text/html; charset=utf-8", body.into())
    }

    /// `application/json`.
    pub fn json(status: u16, body: impl Into<String>) -> Response {
        Self::new(status, "application/json", body.into())
    }

    /// 404 for `path`.
    pub fn not_found(path: &str) -> Response {
        Self::text(404, format!("404 page not found: {path}\n"))
    }

    /// 405 with the methods allowed.
    pub fn method_not_allowed(allow: &str) -> Response {
        Self::text(405, "405 method not allowed\n").header("Allow", allow)
    }

    /// Add a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// The reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Server counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Requests answered.
    pub requests: AtomicU64,
    /// Connections that ended in an error.
    pub errors: AtomicU64,
    active: AtomicUsize,
}

/// A handler: one response per request.
pub type Handler<'a> = dyn Fn(&Request) -> Response + Sync + 'a;

/// Listen on `port` of every address of `dev`.
pub fn listen(dev: &dyn Netdever, port: u16) -> Result<TcpListener<&dyn Netdever>, String> {
    TcpListener::bind(dev, SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)), 4)
        .map_err(|e| format!("listening on port {port}: {e}"))
}

/// Accept and serve connections, a thread each, until `stopped()`; then
/// wait for the connections in progress (each ends within [`IDLE`] of its
/// last request). `log` prints a line per request.
pub fn serve(
    dev: &dyn Netdever,
    l: &mut TcpListener<&dyn Netdever>,
    handler: &Handler<'_>,
    stopped: &(dyn Fn() -> bool + Sync),
    stats: &Stats,
    log: Option<&(dyn Fn(&str) + Sync)>,
) {
    std::thread::scope(|s| {
        while !stopped() {
            if stats.active.load(Ordering::Acquire) >= MAX_CONNS {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            l.set_deadline(Some(dev.now() + TICK));
            match l.accept() {
                Ok((c, peer)) => {
                    stats.connections.fetch_add(1, Ordering::Relaxed);
                    stats.active.fetch_add(1, Ordering::AcqRel);
                    s.spawn(move || {
                        if let Err(e) = connection(c, peer, handler, stopped, stats, log) {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                            if let Some(log) = log {
                                log(&format!("{peer}: {e}"));
                            }
                        }
                        stats.active.fetch_sub(1, Ordering::AcqRel);
                    });
                }
                Err(Error::Timeout) => {}
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    if let Some(log) = log {
                        log(&format!("accept: {e}"));
                    }
                    std::thread::sleep(TICK);
                }
            }
        }
    });
}

/// Serve one connection until it closes, asks to close, idles, or the
/// server stops.
fn connection(
    c: TcpStream<&dyn Netdever>,
    peer: SocketAddr,
    handler: &Handler<'_>,
    stopped: &(dyn Fn() -> bool + Sync),
    stats: &Stats,
    log: Option<&(dyn Fn(&str) + Sync)>,
) -> Result<(), String> {
    let dev = *c.device();
    let mut r = Reader::new(c);
    loop {
        if stopped() && r.buffered().is_empty() {
            return Ok(());
        }
        // Idle limit for the next request's first byte, then the whole
        // request within IO_LIMIT.
        r.get_mut().set_read_deadline(Some(dev.now() + IDLE));
        let head = r.head(|buf| {
            let mut hs = [httparse::EMPTY_HEADER; http::MAX_HEADERS];
            let mut req = httparse::Request::new(&mut hs);
            match req.parse(buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let target = req.path.unwrap_or("/");
                    let (path, query) = target.split_once('?').unwrap_or((target, ""));
                    let headers: Vec<(String, String)> = req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    Ok(Some((
                        (
                            req.method.unwrap_or("GET").to_string(),
                            http::url_decode(path),
                            query.to_string(),
                            req.version.unwrap_or(1),
                            headers,
                        ),
                        n,
                    )))
                }
                Ok(httparse::Status::Partial) => Ok(None),
                Err(e) => Err(format!("malformed request: {e}")),
            }
        });
        let (method, path, query, version, headers) = match head {
            Ok(Some(h)) => h,
            // Closed between requests: done.
            Ok(None) => return Ok(()),
            // Idle keep-alive connection timing out is normal.
            Err(_) if r.timed_out() && r.buffered().is_empty() => return Ok(()),
            Err(e) => {
                let _ = send(
                    r.get_mut(),
                    &Response::text(400, format!("{e}\n")),
                    false,
                    false,
                );
                return Err(e);
            }
        };
        r.get_mut().set_read_deadline(Some(dev.now() + IO_LIMIT));
        let kind = http::body_kind(&headers, BodyKind::None)?;
        if matches!(kind, BodyKind::Length(n) if n > MAX_BODY) {
            let _ = send(
                r.get_mut(),
                &Response::text(413, "request body too large\n"),
                false,
                false,
            );
            return Err("request body too large".into());
        }
        // curl waits a moment for "100 Continue" before large bodies.
        if http::header(&headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            r.get_mut()
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .map_err(|e| format!("sending 100 Continue: {e}"))?;
        }
        let body = http::read_body(&mut r, kind, MAX_BODY)?;
        let wants_close = http::header(&headers, "connection").map(|v| v.to_ascii_lowercase());
        let keep_alive = match wants_close.as_deref() {
            Some(v) if v.contains("close") => false,
            Some(v) if v.contains("keep-alive") => true,
            _ => version >= 1,
        } && !stopped();
        let req = Request {
            method,
            path,
            query,
            version,
            headers,
            body,
            peer,
        };
        let resp = handler(&req);
        stats.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(log) = log {
            log(&format!(
                "{peer} {} {} -> {} ({} bytes)",
                req.method,
                req.path,
                resp.status,
                resp.body.len()
            ));
        }
        r.get_mut().set_write_deadline(Some(dev.now() + IO_LIMIT));
        send(r.get_mut(), &resp, req.method == "HEAD", keep_alive)?;
        if !keep_alive {
            return Ok(());
        }
    }
}

/// Write a response.
pub fn send(
    w: &mut TcpStream<&dyn Netdever>,
    resp: &Response,
    head_only: bool,
    keep_alive: bool,
) -> Result<(), String> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (n, v) in &resp.headers {
        head += &format!("{n}: {v}\r\n");
    }
    if resp.chunked {
        head += "Transfer-Encoding: chunked\r\n";
    } else {
        head += &format!("Content-Length: {}\r\n", resp.body.len());
    }
    head += if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    };
    let mut msg = head.into_bytes();
    if !head_only {
        if resp.chunked {
            for piece in resp.body.chunks(4096) {
                msg.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                msg.extend_from_slice(piece);
                msg.extend_from_slice(b"\r\n");
            }
            msg.extend_from_slice(b"0\r\n\r\n");
        } else {
            msg.extend_from_slice(&resp.body);
        }
    }
    w.write_all(&msg)
        .map_err(|e| format!("sending the response: {e}"))
}
