//! `webstatic`: serve files compiled into the program (TinyGo's
//! `examples/net/webstatic`, which serves an embedded file system).
//!
//! The files (`examples/common/www/`) are embedded with `include_bytes!`;
//! each is served with its content type, a `Content-Length`, an `ETag`
//! (`If-None-Match` gives `304 Not Modified`) and `HEAD` support. `/` is
//! `index.html`; anything else is 404.
//!
//! On the simulated network the peer fetches every file and checks bytes,
//! content type and the 304/404/HEAD answers; the example exits when that
//! self-test is done unless `--serve`. On TAP and behind `--passt` it serves
//! (`curl http://127.0.0.1:10080/` behind passt).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use netdever::Netdever;

use crate::common::http::{self, Url};
use crate::common::httpd::{self, Request, Response};
use crate::common::{Net, Opts, Outcome, Spec};

/// Command line of `webstatic`.
pub const SPEC: Spec = Spec {
    name: "webstatic",
    about: "serve files embedded in the program, with content types and ETags",
    server: true,
    default_port: 80,
    extra: &[],
};

/// The embedded files: path, content type, bytes.
pub const FILES: &[(&str, &str, &[u8])] = &[
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_bytes!("../common/www/index.html"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_bytes!("../common/www/style.css"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../common/www/app.js"),
    ),
    (
        "/data.json",
        "application/json",
        include_bytes!("../common/www/data.json"),
    ),
    (
        "/logo.svg",
        "image/svg+xml",
        include_bytes!("../common/www/logo.svg"),
    ),
    (
        "/robots.txt",
        "text/plain; charset=utf-8",
        include_bytes!("../common/www/robots.txt"),
    ),
];

/// The file served at `path` (`/` is `/index.html`).
pub fn lookup(path: &str) -> Option<&'static (&'static str, &'static str, &'static [u8])> {
    let path = if path == "/" { "/index.html" } else { path };
    FILES.iter().find(|(p, _, _)| *p == path)
}

/// A strong ETag: FNV-1a of the bytes.
pub fn etag(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("\"{h:016x}\"")
}

fn handle(req: &Request) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        return Response::method_not_allowed("GET, HEAD");
    }
    let Some((_, ctype, bytes)) = lookup(&req.path) else {
        return Response::not_found(&req.path);
    };
    let tag = etag(bytes);
    if req
        .header("if-none-match")
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"))
    {
        let mut r = Response::new(304, ctype, Vec::new()).header("ETag", tag);
        r.headers.retain(|(n, _)| n != "Content-Type");
        return r;
    }
    Response::new(200, ctype, bytes.to_vec())
        .header("ETag", tag)
        .header("Cache-Control", "max-age=60")
}

/// Run `webstatic` on `net`.
pub fn run(net: &Net, o: &Opts) -> Outcome {
    let dev: &dyn Netdever = &net.dev;
    let mut l = httpd::listen(dev, o.port)?;
    let ip = net.dev_ip()?;
    net.announce_listening(o, o.port)?;
    let stats = httpd::Stats::default();
    let started = Instant::now();
    let test_done = AtomicBool::new(false);
    let keep_serving = o.serve || net.peer.is_none();
    let stopped = || (test_done.load(Ordering::Acquire) && !keep_serving) || o.stopped(started);
    let say = |line: &str| o.say(format_args!("{line}"));
    let log: Option<&(dyn Fn(&str) + Sync)> = if o.quiet { None } else { Some(&say) };
    std::thread::scope(|s| {
        let server = s.spawn(|| httpd::serve(dev, &mut l, &handle, &stopped, &stats, log));
        let test = net
            .peer
            .as_ref()
            .map(|peer| self_test(peer, &format!("http://{ip}:{}", o.port)));
        test_done.store(true, Ordering::Release);
        if matches!(test, Some(Err(_))) {
            o.stop.store(true, Ordering::Release);
        }
        if let Some(Ok(summary)) = &test {
            if keep_serving {
                o.say(format_args!("self-test passed: {summary}; serving on"));
            }
        }
        server
            .join()
            .map_err(|_| "server thread panicked".to_string())?;
        let requests = stats.requests.load(Ordering::Relaxed);
        o.say(format_args!("served {requests} requests"));
        match test {
            Some(r) => r,
            None => Ok(format!("served {requests} requests")),
        }
    })
}

/// The peer fetches every file and checks the answers.
fn self_test(peer: &dyn Netdever, base: &str) -> Result<String, String> {
    let t0 = Instant::now();
    let c = http::ClientOpts::default();
    let url = |p: &str| Url::parse(&format!("{base}{p}"));
    let mut bytes = 0;
    for (path, ctype, body) in FILES {
        let r = http::fetch(peer, "GET", &url(path)?, &[], &[], &c)?;
        if r.status != 200 || r.body != *body || r.header("content-type") != Some(ctype) {
            return Err(format!(
                "GET {path}: {} {:?}, {} bytes (expected 200 {ctype}, {} bytes)",
                r.status,
                r.header("content-type"),
                r.body.len(),
                body.len()
            ));
        }
        let tag = r
            .header("etag")
            .ok_or_else(|| format!("GET {path}: no ETag"))?;
        let r304 = http::fetch(peer, "GET", &url(path)?, &[("If-None-Match", tag)], &[], &c)?;
        if r304.status != 304 || !r304.body.is_empty() {
            return Err(format!("GET {path} with its ETag: {}", r304.status));
        }
        bytes += body.len();
    }
    let r = http::fetch(peer, "GET", &url("/")?, &[], &[], &c)?;
    if r.body != FILES[0].2 {
        return Err("GET / is not index.html".into());
    }
    let r = http::fetch(peer, "HEAD", &url("/logo.svg")?, &[], &[], &c)?;
    let len = FILES[4].2.len().to_string();
    if r.status != 200 || !r.body.is_empty() || r.header("content-length") != Some(&len) {
        return Err(format!(
            "HEAD /logo.svg: {} {:?}",
            r.status,
            r.header("content-length")
        ));
    }
    let r = http::fetch(peer, "GET", &url("/missing.png")?, &[], &[], &c)?;
    if r.status != 404 {
        return Err(format!("GET /missing.png: {}", r.status));
    }
    let r = http::fetch(peer, "POST", &url("/index.html")?, &[], b"x", &c)?;
    if r.status != 405 {
        return Err(format!("POST /index.html: {}", r.status));
    }
    let n = FILES.len() * 2 + 4;
    Ok(format!(
        "{} files ({bytes} bytes) and {n} requests checked in {:.1} ms",
        FILES.len(),
        t0.elapsed().as_secs_f64() * 1e3
    ))
}
