//! The streaming parser of what the chip sends.
//!
//! Bytes arrive in arbitrary pieces (a UART driver returns whatever it
//! has). The parser keeps the unfinished line between calls and tells its
//! [`Sink`] about complete lines, the `>` send prompt, and binary data
//! blocks — the data after an active-mode `+IPD,<link>,<len>[,..]:` header
//! and after a `+CIPRECVDATA:<len>,[..,]` header, which may contain any
//! byte including CR and LF. Nothing here allocates or panics on input.

use crate::types::{Ipv4Addr, SocketAddrV4};

/// Longest line kept; longer lines are reported as overflowed (garbage).
pub(crate) const LINE_MAX: usize = 256;

/// Where the parser's findings go.
pub(crate) trait Sink {
    /// A complete line, without its line end. `overflow`: it was longer
    /// than [`LINE_MAX`] and only its start is given.
    fn line(&mut self, line: &[u8], overflow: bool);
    /// Whether a `>` at the start of a line is the send prompt now.
    fn expect_prompt(&self) -> bool;
    /// The `>` prompt.
    fn prompt(&mut self);
    /// Whether `+CIPRECVDATA` carries the remote address (`AT+CIPDINFO=1`).
    fn dinfo(&self) -> bool;
    /// Active-mode `+IPD`: `len` data bytes for `link` follow.
    fn ipd_data(&mut self, link: u8, len: usize, from: Option<SocketAddrV4>);
    /// `+CIPRECVDATA`: `len` data bytes follow.
    fn recv_data(&mut self, len: usize, from: Option<SocketAddrV4>);
    /// Data bytes of the current block.
    fn data(&mut self, bytes: &[u8]);
    /// The current block is complete.
    fn data_end(&mut self);
}

/// Parser state: the unfinished line and, inside a data block, how many
/// data bytes are still to come.
pub(crate) struct Parser {
    line: heapless::Vec<u8, LINE_MAX>,
    overflow: bool,
    data_left: usize,
    in_data: bool,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    /// A parser at the start of a line.
    pub const fn new() -> Self {
        Parser {
            line: heapless::Vec::new(),
            overflow: false,
            data_left: 0,
            in_data: false,
        }
    }

    /// Forget any unfinished line or data block (after a resync).
    pub fn reset(&mut self) {
        self.line.clear();
        self.overflow = false;
        self.data_left = 0;
        self.in_data = false;
    }

    /// Feed received bytes.
    pub fn feed(&mut self, mut bytes: &[u8], sink: &mut impl Sink) {
        while !bytes.is_empty() {
            if self.in_data {
                let n = self.data_left.min(bytes.len());
                if n > 0 {
                    sink.data(&bytes[..n]);
                    self.data_left -= n;
                    bytes = &bytes[n..];
                }
                if self.data_left == 0 {
                    self.in_data = false;
                    sink.data_end();
                }
                continue;
            }
            let b = bytes[0];
            bytes = &bytes[1..];
            match b {
                b'\n' => self.end_line(sink),
                b'\r' => {}
                b'>' if self.line.is_empty() && !self.overflow && sink.expect_prompt() => {
                    sink.prompt()
                }
                _ => {
                    if self.line.push(b).is_err() {
                        self.overflow = true;
                    } else if !self.overflow {
                        self.check_header(b, sink);
                    }
                }
            }
        }
    }

    fn end_line(&mut self, sink: &mut impl Sink) {
        if !self.line.is_empty() || self.overflow {
            sink.line(&self.line, self.overflow);
        }
        self.line.clear();
        self.overflow = false;
    }

    fn start_data(&mut self, len: usize, sink: &mut impl Sink) {
        self.line.clear();
        self.data_left = len;
        self.in_data = true;
        if len == 0 {
            self.in_data = false;
            sink.data_end();
        }
    }

    /// After each byte of a line: has a data header just completed?
    fn check_header(&mut self, b: u8, sink: &mut impl Sink) {
        if b == b':' && self.line.starts_with(b"+IPD,") {
            // Active mode: +IPD,<link>,<len>[,"<ip>",<port>]:
            let head = &self.line[5..self.line.len() - 1];
            if let Some((link, len, from)) = parse_ipd_head(head) {
                sink.ipd_data(link, len, from);
                self.start_data(len, sink);
            }
            return;
        }
        if b == b',' && self.line.starts_with(b"+CIPRECVDATA:") {
            let body = &self.line[13..];
            let commas = body.iter().filter(|&&c| c == b',').count();
            let need = if sink.dinfo() { 3 } else { 1 };
            if commas < need {
                return;
            }
            let head = &body[..body.len() - 1];
            let mut parts = head.split(|&c| c == b',');
            let len = parts.next().and_then(parse_usize);
            let from = if need == 3 {
                let ip = parts.next().and_then(parse_ip);
                let port = parts.next().and_then(parse_usize);
                match (ip, port) {
                    (Some(ip), Some(p)) if p <= 65535 => Some(SocketAddrV4::new(ip, p as u16)),
                    _ => None,
                }
            } else {
                None
            };
            match len {
                Some(len) if need == 1 || from.is_some() => {
                    sink.recv_data(len, from);
                    self.start_data(len, sink);
                }
                // A malformed header: the rest of the line is garbage.
                _ => self.overflow = true,
            }
        }
    }
}

/// `<link>,<len>[,"<ip>",<port>]` of an `+IPD` (without the prefix and the
/// final `:`), also used for passive `+IPD` lines.
pub(crate) fn parse_ipd_head(head: &[u8]) -> Option<(u8, usize, Option<SocketAddrV4>)> {
    let mut parts = head.split(|&c| c == b',');
    let link = parse_usize(parts.next()?)?;
    let len = parse_usize(parts.next()?)?;
    if link > 4 {
        return None;
    }
    let from = match (parts.next(), parts.next()) {
        (None, _) => None,
        (Some(ip), Some(port)) => {
            let port = parse_usize(port)?;
            if port > 65535 {
                return None;
            }
            Some(SocketAddrV4::new(parse_ip(ip)?, port as u16))
        }
        _ => return None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((link as u8, len, from))
}

/// A decimal number (no sign, at most 10 digits).
pub(crate) fn parse_usize(s: &[u8]) -> Option<usize> {
    let s = trim(s);
    if s.is_empty() || s.len() > 10 {
        return None;
    }
    let mut v: usize = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as usize)?;
    }
    Some(v)
}

/// An IPv4 address, quoted or not.
pub(crate) fn parse_ip(s: &[u8]) -> Option<Ipv4Addr> {
    let s = unquote(trim(s));
    core::str::from_utf8(s).ok()?.parse().ok()
}

/// Strip surrounding double quotes, if both are there.
pub(crate) fn unquote(s: &[u8]) -> &[u8] {
    if s.len() >= 2 && s[0] == b'"' && s[s.len() - 1] == b'"' {
        &s[1..s.len() - 1]
    } else {
        s
    }
}

/// Strip ASCII whitespace at both ends.
pub(crate) fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::String;
    use std::vec::Vec;

    #[derive(Default)]
    struct Rec {
        ev: Vec<String>,
        prompt: bool,
        dinfo: bool,
    }

    impl Sink for Rec {
        fn line(&mut self, line: &[u8], overflow: bool) {
            let t = String::from_utf8_lossy(line);
            self.ev.push(if overflow {
                std::format!("overflow:{t}")
            } else {
                std::format!("line:{t}")
            });
        }
        fn expect_prompt(&self) -> bool {
            self.prompt
        }
        fn prompt(&mut self) {
            self.ev.push(">".into());
        }
        fn dinfo(&self) -> bool {
            self.dinfo
        }
        fn ipd_data(&mut self, link: u8, len: usize, from: Option<SocketAddrV4>) {
            self.ev.push(std::format!("ipd:{link}:{len}:{from:?}"));
        }
        fn recv_data(&mut self, len: usize, from: Option<SocketAddrV4>) {
            self.ev.push(std::format!("recv:{len}:{from:?}"));
        }
        fn data(&mut self, bytes: &[u8]) {
            match self.ev.last_mut() {
                Some(e) if e.starts_with("data:") => e.push_str(&String::from_utf8_lossy(bytes)),
                _ => self
                    .ev
                    .push(std::format!("data:{}", String::from_utf8_lossy(bytes))),
            }
        }
        fn data_end(&mut self) {
            self.ev.push("end".into());
        }
    }

    fn run(input: &[u8], split: usize, prompt: bool, dinfo: bool) -> Vec<String> {
        let mut p = Parser::new();
        let mut r = Rec {
            prompt,
            dinfo,
            ..Default::default()
        };
        for chunk in input.chunks(split.max(1)) {
            p.feed(chunk, &mut r);
        }
        // Merge split data events so every split gives the same result.
        let mut out: Vec<String> = Vec::new();
        for e in r.ev {
            match (out.last_mut(), e.strip_prefix("data:")) {
                (Some(last), Some(d)) if last.starts_with("data:") => last.push_str(d),
                _ => out.push(e),
            }
        }
        out
    }

    #[test]
    fn lines_data_and_prompt_at_any_split() {
        let stream = b"\r\n+IPD,0,5:a\r\nb\n\r\r\nOK\r\n+IPD,1,300\r\n\r\nOK\r\n\r\n>+CIPRECVDATA:4,\"127.0.0.1\",80,x,y\n\r\nOK\r\n";
        let want = run(stream, stream.len(), true, true);
        assert_eq!(
            want,
            [
                "ipd:0:5:None",
                "data:a\r\nb\n",
                "end",
                "line:OK",
                "line:+IPD,1,300",
                "line:OK",
                ">",
                "recv:4:Some(127.0.0.1:80)",
                "data:x,y\n",
                "end",
                "line:OK"
            ]
        );
        for split in 1..stream.len() {
            assert_eq!(run(stream, split, true, true), want, "split {split}");
        }
    }

    #[test]
    fn headers_without_dinfo_and_garbage() {
        let s = b"+CIPRECVDATA:3,abc\r\nOK\r\n\xff\x00junk\r\n+IPD,9,3:zzz\r\n>\r\n";
        assert_eq!(
            run(s, 1, false, false),
            [
                "recv:3:None",
                "data:abc",
                "end",
                "line:OK",
                "line:\u{fffd}\u{0}junk",
                "line:+IPD,9,3:zzz",
                "line:>"
            ]
        );
        let long = [b'x'; 600];
        let mut s = long.to_vec();
        s.extend_from_slice(b"\r\nOK\r\n");
        let ev = run(&s, 7, false, false);
        assert!(ev[0].starts_with("overflow:"));
        assert_eq!(ev[1], "line:OK");
        assert_eq!(
            run(b"+CIPRECVDATA:0,\r\nOK\r\n", 1, false, false),
            ["recv:0:None", "end", "line:OK"]
        );
    }

    #[test]
    fn ipd_heads() {
        assert_eq!(parse_ipd_head(b"0,5"), Some((0, 5, None)));
        assert_eq!(
            parse_ipd_head(b"4,10,\"10.0.0.2\",5000"),
            Some((
                4,
                10,
                Some(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 5000))
            ))
        );
        assert_eq!(parse_ipd_head(b"5,1"), None);
        assert_eq!(parse_ipd_head(b"0,x"), None);
        assert_eq!(parse_ipd_head(b"0,1,\"1.2.3.4\""), None);
        assert_eq!(parse_usize(b"99999999999"), None);
    }
}
