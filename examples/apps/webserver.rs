//! `webserver`: a small web application (TinyGo's `examples/net/webserver`):
//! an HTML page with a form, a form handler, a JSON API, a cookie counter; a
//! thread per connection (`examples/common/httpd.rs`).
//!
//! Routes:
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | HTML page with a form posting to `/form`; counts visits in a cookie |
//! | `GET /hello[?name=N]` | `Hello, N!` as text |
//! | `POST /form` | the decoded form fields as an HTML page (`name` required, else 400) |
//! | `GET /api/status` | JSON: device address, uptime, requests served |
//! | `POST /api/echo` | JSON echo of the request (method, type, length, body) |
//! | `GET /cookie` | `visit N`; sets `visits=N` (`Set-Cookie`) |
//!
//! On the simulated network the peer then runs an HTTP client against every
//! route and checks status, content type, body and cookies; the example
//! exits when that self-test is done unless `--serve`. On TAP and behind
//! `--passt` it serves (`curl http://127.0.0.1:10080/` behind passt).

use std::sync::atomic::Ordering;
use std::time::Instant;

use netdever::Netdever;

use crate::common::http::{self, html_escape, json_escape, Url};
use crate::common::httpd::{self, Request, Response};
use crate::common::peers::echo_json;
use crate::common::{Net, Opts, Outcome, Spec};

/// Command line of `webserver`.
pub const SPEC: Spec = Spec {
    name: "webserver",
    about: "web server: HTML form, form POST, JSON API, cookies; a thread per connection",
    server: true,
    default_port: 80,
    extra: &[],
};

/// The site's state.
struct Site {
    ip: String,
    started: Instant,
    stats: httpd::Stats,
}

impl Site {
    fn handle(&self, req: &Request) -> Response {
        match (req.method.as_str(), req.path.as_str()) {
            ("GET" | "HEAD", "/") => {
                let visits = visits(req) + 1;
                Response::html(200, index(&self.ip, visits))
                    .header("Set-Cookie", format!("visits={visits}; Path=/; HttpOnly"))
            }
            ("GET" | "HEAD", "/hello") => {
                let q = req.query_pairs();
                let name = q
                    .iter()
                    .find(|(k, _)| k == "name")
                    .map_or("netdever", |(_, v)| v.as_str());
                Response::text(200, format!("Hello, {name}!\n"))
            }
            ("POST", "/form") => {
                let form = req.form();
                let Some((_, name)) = form.iter().find(|(k, v)| k == "name" && !v.is_empty())
                else {
                    return Response::html(400, "<!doctype html><p>The form needs a name.</p>\n");
                };
                let rows: String = form
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "<tr><th>{}</th><td>{}</td></tr>",
                            html_escape(k),
                            html_escape(v)
                        )
                    })
                    .collect();
                Response::html(
                    200,
                    format!(
                        "<!doctype html><title>Thanks</title><h1>Thanks, {}!</h1><table>{rows}</table><p><a href=\"/\">back</a></p>\n",
                        html_escape(name)
                    ),
                )
            }
            ("GET" | "HEAD", "/api/status") => Response::json(
                200,
                format!(
                    "{{\"device\":\"{}\",\"uptime_ms\":{},\"requests\":{},\"connections\":{}}}\n",
                    json_escape(&self.ip),
                    self.started.elapsed().as_millis(),
                    self.stats.requests.load(Ordering::Relaxed) + 1,
                    self.stats.connections.load(Ordering::Relaxed)
                ),
            ),
            ("POST", "/api/echo") => Response::json(200, echo_json(req)),
            ("GET" | "HEAD", "/cookie") => {
                let n = visits(req) + 1;
                Response::text(200, format!("visit {n}\n"))
                    .header("Set-Cookie", format!("visits={n}; Path=/; HttpOnly"))
            }
            (_, "/" | "/hello" | "/api/status" | "/cookie") => {
                Response::method_not_allowed("GET, HEAD")
            }
            (_, "/form" | "/api/echo") => Response::method_not_allowed("POST"),
            (_, p) => Response::not_found(p),
        }
    }
}

/// The `visits` cookie, 0 if absent or not a number.
fn visits(req: &Request) -> u64 {
    req.cookie("visits")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn index(ip: &str, visits: u64) -> String {
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>netdever webserver</title></head>
<body>
<h1>Hello from {ip}</h1>
<p>This page is served by a netdever device. You have been here {visits} time(s).</p>
<form method="post" action="/form">
  <label>Name <input name="name"></label>
  <label>Message <input name="message"></label>
  <button>Send</button>
</form>
<p><a href="/hello">/hello</a> · <a href="/api/status">/api/status</a> · <a href="/cookie">/cookie</a></p>
</body></html>
"#
    )
}

/// Run `webserver` on `net`.
pub fn run(net: &Net, o: &Opts) -> Outcome {
    let dev: &dyn Netdever = &net.dev;
    let mut l = httpd::listen(dev, o.port)?;
    let ip = net.dev_ip()?;
    net.announce_listening(o, o.port)?;
    let site = Site {
        ip: ip.to_string(),
        started: Instant::now(),
        stats: httpd::Stats::default(),
    };
    let started = Instant::now();
    let test_done = std::sync::atomic::AtomicBool::new(false);
    let keep_serving = o.serve || net.peer.is_none();
    let stopped = || (test_done.load(Ordering::Acquire) && !keep_serving) || o.stopped(started);
    let say = |line: &str| o.say(format_args!("{line}"));
    let log: Option<&(dyn Fn(&str) + Sync)> = if o.quiet { None } else { Some(&say) };
    let handler = |r: &Request| site.handle(r);
    std::thread::scope(|s| {
        let server = s.spawn(|| httpd::serve(dev, &mut l, &handler, &stopped, &site.stats, log));
        let test = net.peer.as_ref().map(|peer| {
            let r = self_test(peer, &format!("http://{ip}:{}", o.port));
            if let Err(e) = &r {
                o.say(format_args!("self-test failed: {e}"));
            }
            r
        });
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
        let requests = site.stats.requests.load(Ordering::Relaxed);
        let errors = site.stats.errors.load(Ordering::Relaxed);
        o.say(format_args!("served {requests} requests, {errors} errors"));
        match test {
            Some(r) => r,
            None => Ok(format!("served {requests} requests")),
        }
    })
}

/// The peer's client: every route, checked.
fn self_test(peer: &dyn Netdever, base: &str) -> Result<String, String> {
    let t0 = Instant::now();
    let c = http::ClientOpts::default();
    let url = |p: &str| Url::parse(&format!("{base}{p}"));
    let get = |p: &str, h: &[(&str, &str)]| http::fetch(peer, "GET", &url(p)?, h, &[], &c);
    let expect = |what: &str, r: &http::Response, status: u16, ctype: &str, body: &str| {
        let ok = r.status == status
            && r.header("content-type")
                .is_some_and(|t| t.starts_with(ctype))
            && r.text().contains(body);
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{what}: got {} {:?} {:?}, expected {status} {ctype} containing {body:?}",
                r.status,
                r.header("content-type"),
                r.text()
            ))
        }
    };
    let mut n = 0;

    let r = get("/", &[])?;
    expect(
        "GET /",
        &r,
        200,
        "text/html",
        "<form method=\"post\" action=\"/form\">",
    )?;
    let cookie = r
        .header("set-cookie")
        .ok_or("GET / set no cookie")?
        .split(';')
        .next()
        .unwrap_or("")
        .to_string();
    if cookie != "visits=1" {
        return Err(format!("first visit cookie {cookie:?}"));
    }
    n += 1;
    let r = get("/", &[("Cookie", &cookie)])?;
    expect("GET / again", &r, 200, "text/html", "here 2 time(s)")?;
    n += 1;
    let r = get("/cookie", &[("Cookie", "theme=dark; visits=41")])?;
    expect("GET /cookie", &r, 200, "text/plain", "visit 42")?;
    if !r
        .header("set-cookie")
        .is_some_and(|c| c.starts_with("visits=42;"))
    {
        return Err(format!("/cookie set {:?}", r.header("set-cookie")));
    }
    n += 1;
    let r = get("/hello?name=Ferris%20the%20crab", &[])?;
    expect(
        "GET /hello",
        &r,
        200,
        "text/plain",
        "Hello, Ferris the crab!",
    )?;
    n += 1;

    let form = http::form_encode(&[("name", "Ada <Lovelace>"), ("message", "1 + 1 = 2 & more")]);
    let r = http::fetch(
        peer,
        "POST",
        &url("/form")?,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form.as_bytes(),
        &c,
    )?;
    expect(
        "POST /form",
        &r,
        200,
        "text/html",
        "Thanks, Ada &lt;Lovelace&gt;!",
    )?;
    expect(
        "POST /form",
        &r,
        200,
        "text/html",
        "<td>1 + 1 = 2 &amp; more</td>",
    )?;
    n += 1;
    let r = http::fetch(
        peer,
        "POST",
        &url("/form")?,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"message=anonymous",
        &c,
    )?;
    expect(
        "POST /form without name",
        &r,
        400,
        "text/html",
        "needs a name",
    )?;
    n += 1;

    let r = get("/api/status", &[])?;
    expect(
        "GET /api/status",
        &r,
        200,
        "application/json",
        "\"requests\":",
    )?;
    n += 1;
    let json = r#"{"sensor":"t1","celsius":21.5}"#;
    let r = http::fetch(
        peer,
        "POST",
        &url("/api/echo")?,
        &[("Content-Type", "application/json")],
        json.as_bytes(),
        &c,
    )?;
    expect(
        "POST /api/echo",
        &r,
        200,
        "application/json",
        &json_escape(json),
    )?;
    n += 1;

    let r = get("/nothing-here", &[])?;
    expect("GET /nothing-here", &r, 404, "text/plain", "404")?;
    n += 1;
    let r = http::fetch(peer, "DELETE", &url("/api/status")?, &[], &[], &c)?;
    if r.status != 405 || r.header("allow").is_none() {
        return Err(format!(
            "DELETE /api/status: {} allow {:?}",
            r.status,
            r.header("allow")
        ));
    }
    n += 1;
    let r = http::fetch(peer, "HEAD", &url("/hello")?, &[], &[], &c)?;
    if r.status != 200 || !r.body.is_empty() || r.header("content-length") != Some("17") {
        return Err(format!(
            "HEAD /hello: {} length {:?}",
            r.status,
            r.header("content-length")
        ));
    }
    n += 1;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    Ok(format!(
        "{n} requests checked in {ms:.1} ms ({:.1} ms each)",
        ms / n as f64
    ))
}
