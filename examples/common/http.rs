//! A small HTTP/1.1 client over the net layer: URL parsing, request
//! writing, response parsing (`httparse`) with `Content-Length`, chunked and
//! read-to-close bodies. Also the shared pieces the server ([`super::httpd`])
//! uses: the buffered reader, body decoding, URL-encoding.
//!
//! `https` URLs open a [`Protocol::Tls`] socket
//! (`TcpStream::connect_proto`). [`fetch_on`] first makes sure the device
//! has TLS (software TLS over its TCP where it has none of its own, trusting
//! `--ca FILE`; see [`super::tls`]); on a device that still refuses TLS
//! sockets the `ProtocolNotSupported` is reported as a clear message.

use std::io::{Read, Write};
use std::time::Duration;

use netdever::net::TcpStream;
use netdever::{AddressFamily, Deadline, Error, IpAddr, Netdever, Protocol, SocketAddr};

/// Longest request or response head (start line + headers) accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers parsed.
pub const MAX_HEADERS: usize = 32;

/// A parsed `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `https`?
    pub https: bool,
    /// Host name or dotted address.
    pub host: String,
    /// Port (default 80 / 443).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parse `scheme://host[:port][/path[?query]]`.
    pub fn parse(s: &str) -> Result<Url, String> {
        let (https, rest) = if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(format!("{s}: only http:// and https:// URLs are supported"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(format!("{s}: user info in URLs is not supported"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("{s}: bad port {p:?}"))?,
            ),
            None => (authority, if https { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(format!("{s}: no host"));
        }
        Ok(Url {
            https,
            host: host.to_ascii_lowercase(),
            port,
            path,
        })
    }

    /// The `Host` header value: the host, with the port unless default.
    pub fn authority(&self) -> String {
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.path)
    }
}

/// A buffered reader that hands out lines, exact byte counts, or the rest,
/// keeping what it read ahead.
pub struct Reader<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    timed_out: bool,
}

impl<R: Read> Reader<R> {
    /// Wrap `inner`.
    pub fn new(inner: R) -> Self {
        Reader {
            inner,
            buf: Vec::with_capacity(4096),
            pos: 0,
            timed_out: false,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The wrapped stream, mutably (for writing replies).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Bytes read ahead and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Whether the last read failed because its deadline passed.
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// Read more from the stream; `Ok(0)` at EOF.
    fn fill(&mut self) -> std::io::Result<usize> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + 8192, 0);
        let r = self.inner.read(&mut self.buf[old..]);
        self.timed_out = matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::TimedOut);
        let n = *r.as_ref().unwrap_or(&0);
        self.buf.truncate(old + n);
        r
    }

    /// Parse a message head with `parse`, reading until it is complete.
    /// `parse` returns `Ok(Some((value, head_len)))` when done. `Ok(None)`:
    /// the stream ended cleanly before any byte of a new head.
    pub fn head<T>(
        &mut self,
        mut parse: impl FnMut(&[u8]) -> Result<Option<(T, usize)>, String>,
    ) -> Result<Option<T>, String> {
        loop {
            if self.pos < self.buf.len() {
                if let Some((v, n)) = parse(&self.buf[self.pos..])? {
                    self.pos += n;
                    return Ok(Some(v));
                }
            }
            if self.buf.len() - self.pos > MAX_HEAD {
                return Err(format!("message head longer than {MAX_HEAD} bytes"));
            }
            match self.fill() {
                Ok(0) if self.pos == self.buf.len() => return Ok(None),
                Ok(0) => return Err("connection closed in the middle of a message head".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("reading: {e}")),
            }
        }
    }

    /// One line without its CRLF.
    pub fn line(&mut self) -> Result<String, String> {
        loop {
            if let Some(i) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                let line = &self.buf[self.pos..self.pos + i];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let s = String::from_utf8_lossy(line).into_owned();
                self.pos += i + 1;
                return Ok(s);
            }
            if self.buf.len() - self.pos > MAX_HEAD {
                return Err("line too long".into());
            }
            match self.fill() {
                Ok(0) => return Err("connection closed in the middle of a line".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("reading: {e}")),
            }
        }
    }

    /// Exactly `n` bytes appended to `out`.
    pub fn exact(&mut self, n: usize, out: &mut Vec<u8>) -> Result<(), String> {
        let mut left = n;
        while left > 0 {
            if self.pos == self.buf.len() {
                match self.fill() {
                    Ok(0) => {
                        return Err(format!(
                            "connection closed after {} of {n} body bytes",
                            n - left
                        ))
                    }
                    Ok(_) => {}
                    Err(e) => return Err(format!("reading body: {e}")),
                }
            }
            let k = left.min(self.buf.len() - self.pos);
            out.extend_from_slice(&self.buf[self.pos..self.pos + k]);
            self.pos += k;
            left -= k;
        }
        Ok(())
    }

    /// Everything until EOF, at most `limit` bytes.
    pub fn read_to_close(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), String> {
        loop {
            out.extend_from_slice(&self.buf[self.pos..]);
            self.pos = self.buf.len();
            if out.len() > limit {
                return Err(format!("body longer than {limit} bytes"));
            }
            match self.fill() {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(format!("reading body: {e}")),
            }
        }
    }

    /// A chunked body (RFC 9112 §7.1), trailers skipped.
    pub fn chunked(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), String> {
        loop {
            let line = self.line()?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| format!("bad chunk size line {line:?}"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.line()?.is_empty() {}
                return Ok(());
            }
            if out.len() + size > limit {
                return Err(format!("body longer than {limit} bytes"));
            }
            self.exact(size, out)?;
            if !self.line()?.is_empty() {
                return Err("chunk not followed by CRLF".into());
            }
        }
    }
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body.
    None,
    /// `Content-Length: n`.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (responses only).
    ToClose,
}

/// Find a header (case-insensitive name).
pub fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The body framing a header list declares (`Transfer-Encoding` wins).
pub fn body_kind(headers: &[(String, String)], or_else: BodyKind) -> Result<BodyKind, String> {
    if let Some(te) = header(headers, "transfer-encoding") {
        if te
            .rsplit(',')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"))
        {
            return Ok(BodyKind::Chunked);
        }
        return Err(format!("unsupported Transfer-Encoding {te:?}"));
    }
    match header(headers, "content-length") {
        Some(v) => v
            .trim()
            .parse()
            .map(BodyKind::Length)
            .map_err(|_| format!("bad Content-Length {v:?}")),
        None => Ok(or_else),
    }
}

/// Read a body of kind `kind`, at most `limit` bytes.
pub fn read_body<R: Read>(
    r: &mut Reader<R>,
    kind: BodyKind,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    match kind {
        BodyKind::None => {}
        BodyKind::Length(n) if n > limit => {
            return Err(format!("body of {n} bytes is over the {limit}-byte limit"))
        }
        BodyKind::Length(n) => r.exact(n, &mut body)?,
        BodyKind::Chunked => r.chunked(&mut body, limit)?,
        BodyKind::ToClose => r.read_to_close(&mut body, limit)?,
    }
    Ok(body)
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub version: u8,
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// The body (decoded from chunks; empty for HEAD).
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Every value of a header (`Set-Cookie` comes several times).
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `HTTP/1.1 200 OK`.
    pub fn status_line(&self) -> String {
        format!("HTTP/1.{} {} {}", self.version, self.status, self.reason)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Read one response; `head_only` for a response to HEAD (no body
/// whatever the headers say).
pub fn read_response<R: Read>(
    r: &mut Reader<R>,
    head_only: bool,
    limit: usize,
) -> Result<Response, String> {
    loop {
        let head = r.head(|buf| {
            let mut hs = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut hs);
            match resp.parse(buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let headers: Vec<(String, String)> = resp
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
                            resp.version.unwrap_or(1),
                            resp.code.unwrap_or(0),
                            resp.reason.unwrap_or("").to_string(),
                            headers,
                        ),
                        n,
                    )))
                }
                Ok(httparse::Status::Partial) => Ok(None),
                Err(e) => Err(format!("malformed response head: {e}")),
            }
        })?;
        let (version, status, reason, headers) =
            head.ok_or("the server closed the connection without answering")?;
        // 1xx interim responses (100 Continue) are skipped.
        if (100..200).contains(&status) {
            continue;
        }
        let kind = if head_only || status == 204 || status == 304 {
            BodyKind::None
        } else {
            body_kind(&headers, BodyKind::ToClose)?
        };
        let body = read_body(r, kind, limit)?;
        return Ok(Response {
            version,
            status,
            reason,
            headers,
            body,
        });
    }
}

/// Write a request: start line, `Host`, `Content-Length` when there is a
/// body (or the method needs one), the given headers, the body.
pub fn write_request(
    w: &mut impl Write,
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\n",
        url.path,
        url.authority()
    );
    for (n, v) in headers {
        head += &format!("{n}: {v}\r\n");
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        head += &format!("Content-Length: {}\r\n", body.len());
    }
    head += "\r\n";
    // One write for head and a small body: fewer, fuller segments.
    let mut msg = head.into_bytes();
    msg.extend_from_slice(body);
    w.write_all(&msg)?;
    w.flush()
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientOpts {
    /// Bound on the whole exchange.
    pub timeout: Duration,
    /// Largest body accepted.
    pub limit: usize,
    /// Which https servers are trusted (`--ca FILE`).
    pub trust: super::tls::Trust,
    /// `User-Agent`.
    pub user_agent: String,
    /// Addresses to use for these host names instead of resolving them
    /// (`--resolve NAME:ADDR`, like curl's): the name still goes into the
    /// TLS server name, the certificate check and `Host`.
    pub resolve: Vec<(String, IpAddr)>,
}

impl Default for ClientOpts {
    fn default() -> Self {
        ClientOpts {
            timeout: Duration::from_secs(20),
            limit: 16 << 20,
            trust: super::tls::Trust::default(),
            user_agent: "netdever-examples/0.1".into(),
            resolve: Vec::new(),
        }
    }
}

/// Parse `--resolve NAME:ADDR` (ADDR a dotted IPv4 address).
pub fn parse_resolve(s: &str) -> Result<(String, IpAddr), String> {
    let bad = || format!("--resolve: expected NAME:A.B.C.D, got {s:?}");
    let (name, addr) = s.rsplit_once(':').ok_or_else(bad)?;
    let ip: std::net::Ipv4Addr = addr.parse().map_err(|_| bad())?;
    if name.is_empty() {
        return Err(bad());
    }
    Ok((name.to_string(), IpAddr::V4(ip)))
}

/// Resolve `host` on `dev` (a dotted address is used as is).
pub fn resolve(dev: &dyn Netdever, host: &str) -> Result<IpAddr, String> {
    dev.get_host_by_name(host, AddressFamily::Inet)
        .map_err(|e| match e {
            Error::HostUnknown => format!("cannot resolve {host}: no such host"),
            e => format!("cannot resolve {host}: {e}"),
        })
}

/// Open a connection for `url`: TCP, or TLS for https (SNI and the
/// certificate check use the URL's host).
pub fn connect<'d>(
    dev: &'d dyn Netdever,
    url: &Url,
    opts: &ClientOpts,
) -> Result<TcpStream<&'d dyn Netdever>, String> {
    let given = opts
        .resolve
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(&url.host));
    let ip = match given {
        Some((_, ip)) => *ip,
        None => resolve(dev, &url.host)?,
    };
    let addr = SocketAddr::new(ip, url.port);
    let proto = if url.https {
        Protocol::Tls
    } else {
        Protocol::Tcp
    };
    let deadline = Deadline::after(dev.now(), opts.timeout);
    TcpStream::connect_proto(dev, proto, Some(&url.host), addr, deadline).map_err(|e| match e {
        Error::ProtocolNotSupported => format!(
            "{url}: this device has no TLS (https needs a TLS-capable backend: the software TLS layer, or a chip with TLS in firmware); use an http:// URL"
        ),
        Error::CertificateInvalid => format!(
            "{url}: the server's certificate did not verify{}",
            if opts.trust.ca_pem.is_some() { "" } else { " (give its CA with --ca FILE)" }
        ),
        e => format!("connecting to {addr} ({url}): {e}"),
    })
}

/// One request on a fresh connection (`Connection: close`): resolve,
/// connect, send, read the response.
pub fn fetch(
    dev: &dyn Netdever,
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    body: &[u8],
    opts: &ClientOpts,
) -> Result<Response, String> {
    let mut s = connect(dev, url, opts)?;
    s.set_deadline(Some(dev.now() + opts.timeout));
    let mut all: Vec<(&str, &str)> = vec![
        ("User-Agent", opts.user_agent.as_str()),
        ("Accept", "*/*"),
        ("Connection", "close"),
    ];
    all.extend_from_slice(headers);
    write_request(&mut s, method, url, &all, body)
        .map_err(|e| format!("sending the request to {url}: {e}"))?;
    let mut r = Reader::new(s);
    read_response(&mut r, method == "HEAD", opts.limit).map_err(|e| format!("{url}: {e}"))
}

/// [`fetch`] on an example's device, with TLS set up for an `https` URL
/// from `opts.trust` (see [`super::tls::with_tls_device`]).
pub fn fetch_on(
    dev: &super::Dev,
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    body: &[u8],
    opts: &ClientOpts,
) -> Result<Response, String> {
    if !url.https {
        return fetch(dev, method, url, headers, body, opts);
    }
    let quiet = |_: std::fmt::Arguments<'_>| {};
    super::tls::with_tls_device(dev, &opts.trust, &quiet, |d| {
        fetch(d, method, url, headers, body, opts)
    })
}

/// The client settings the command line asks for (`--ca FILE`).
pub fn client_opts(o: &super::Opts) -> Result<ClientOpts, String> {
    Ok(ClientOpts {
        trust: super::tls::Trust::from_options(o.text_opt("--ca"), false)?,
        ..ClientOpts::default()
    })
}

/// Print a response like `curl -i` would (status line, headers, then the
/// body if it is text and `show_body`), unless quiet.
pub fn print_response(o: &super::Opts, resp: &Response, show_body: bool) {
    if o.quiet {
        return;
    }
    let mut out = resp.status_line();
    for (n, v) in &resp.headers {
        out += &format!("\n{n}: {v}");
    }
    super::announce(out);
    if show_body && !resp.body.is_empty() {
        let text = std::str::from_utf8(&resp.body).ok().filter(|t| {
            !t.chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        });
        match text {
            Some(t) => super::announce(format_args!("\n{}", t.trim_end())),
            None => super::announce(format_args!("\n({} bytes of binary data)", resp.body.len())),
        }
    }
}

/// `application/x-www-form-urlencoded` encoding of `pairs`.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encoding for form values (space as `+`).
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out += &format!("%{b:02X}"),
        }
    }
    out
}

/// Decode a form body or query string into pairs.
pub fn form_decode(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (url_decode(k), url_decode(v))
        })
        .collect()
}

/// Undo [`url_encode`] (invalid escapes are kept as they are).
pub fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Escape text for HTML.
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Escape text for a JSON string (without the quotes).
pub fn json_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            '\n' => out += "\\n",
            '\r' => out += "\\r",
            '\t' => out += "\\t",
            c if (c as u32) < 0x20 => out += &format!("\\u{:04x}", c as u32),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_option() {
        let (n, ip) = parse_resolve("tls.test:127.0.0.1").unwrap();
        assert_eq!((n.as_str(), ip), ("tls.test", IpAddr::from([127, 0, 0, 1])));
        for bad in [
            "tls.test",
            ":127.0.0.1",
            "tls.test:localhost",
            "tls.test:1.2.3",
        ] {
            assert!(
                parse_resolve(bad).is_err_and(|e| e.contains("NAME:A.B.C.D")),
                "{bad}"
            );
        }
    }

    #[test]
    fn urls() {
        let u = Url::parse("http://Example.com:8080/a/b?c=d").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path.as_str()),
            (false, "example.com", 8080, "/a/b?c=d")
        );
        assert_eq!(u.authority(), "example.com:8080");
        let u = Url::parse("https://h?x").unwrap();
        assert_eq!((u.port, u.path.as_str()), (443, "/?x"));
        assert!(Url::parse("ftp://h/").is_err());
        assert!(Url::parse("http://:80/").is_err());
    }

    #[test]
    fn chunked_and_length() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\nT: 1\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabc";
        let mut r = Reader::new(&wire[..]);
        let a = read_response(&mut r, false, 1000).unwrap();
        assert_eq!(a.body, b"hello, world");
        let b = read_response(&mut r, false, 1000).unwrap();
        assert_eq!((b.status, b.body.as_slice()), (404, &b"abc"[..]));
    }

    #[test]
    fn forms() {
        let e = form_encode(&[("name", "a b&c"), ("x", "é")]);
        assert_eq!(e, "name=a+b%26c&x=%C3%A9");
        assert_eq!(
            form_decode(&e),
            vec![("name".into(), "a b&c".into()), ("x".into(), "é".into())]
        );
        assert_eq!(url_decode("100%"), "100%");
    }
}
