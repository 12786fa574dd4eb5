//! Websockets (RFC 6455) over a blocking [`Stream`], with the no_std codec
//! of the `embedded-websocket` crate doing the protocol: the opening
//! handshake (request, `Sec-WebSocket-Accept`), frame encoding and decoding,
//! masking of client frames, ping/pong and the close handshake.
//!
//! The crate's own blocking `Framer` is not used: it gives up when a frame
//! header is split across two TCP reads. [`WsConn`] buffers instead: it
//! looks at a frame's length field only to know when the whole frame has
//! arrived, then hands exactly that frame to the codec. It also enforces the
//! masking rule the codec leaves to its user: frames from a client must be
//! masked, frames from a server must not.
//!
//! Shared by both examples and the simulated peer: [`echo_session`] is the
//! server side (`websocket_handler`, and the peer of `websocket_dial`),
//! [`exercise`] the client side (`websocket_dial`, and the peer of
//! `websocket_handler`).

use std::fmt;
use std::net::SocketAddr;
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use embedded_websocket as ews;
use ews::{
    EmptyRng, WebSocket, WebSocketCloseStatusCode as CloseCode, WebSocketOptions,
    WebSocketReceiveMessageType as In, WebSocketSendMessageType as Out, WebSocketType,
};
use netdever::net::TcpStream;
use netdever::{Error, SockOpt};
use rand::rngs::OsRng;
use rand::RngCore;

use super::{listen, serve, Dev, Served, StopWhen, Stream, TICK};
use crate::common::Opts;

/// Largest message (all fragments together) and frame we take.
pub const MAX_FRAME: usize = 64 * 1024;
/// Largest frame header: 2 bytes, 8 of extended length, 4 of mask key.
const MAX_HEADER: usize = 14;
/// Room for the opening handshake's HTTP header.
const HANDSHAKE_ROOM: usize = 8 * 1024;
/// Largest control frame payload (RFC 6455 5.5).
const MAX_CONTROL: usize = 125;
/// How long the opening handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a websocket call failed.
#[derive(Debug)]
pub enum WsError {
    /// The socket call failed (`Timeout` after a read deadline or timeout).
    Io(Error),
    /// The peer closed the TCP connection.
    Eof,
    /// The codec refused the data.
    Codec(ews::Error),
    /// The opening handshake failed.
    Handshake(String),
    /// A frame or message larger than the buffers.
    TooLarge(usize),
    /// The peer broke the protocol (we sent a close frame: 1002, or 1009
    /// for a message too large).
    Protocol(&'static str),
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::Io(e) => write!(f, "socket: {e}"),
            WsError::Eof => write!(f, "the peer closed the TCP connection"),
            WsError::Codec(e) => write!(f, "websocket codec: {e}"),
            WsError::Handshake(e) => write!(f, "opening handshake: {e}"),
            WsError::TooLarge(n) => write!(f, "frame or message of {n} bytes is too large"),
            WsError::Protocol(e) => write!(f, "protocol error: {e}"),
        }
    }
}

/// What [`WsConn::recv`] got. The payload is in [`WsConn::payload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A whole text message (fragments joined), valid UTF-8 (see [`WsConn::text`]).
    Text,
    /// A whole binary message.
    Binary,
    /// A pong (the answer to our ping, or unsolicited).
    Pong,
    /// A close frame with its status code: the peer's answer to our close,
    /// or the peer's close, which has already been answered.
    Close(Option<CloseCode>),
}

/// Frame counters of one connection.
#[derive(Debug, Default, Clone, Copy)]
pub struct WsStats {
    /// Frames received.
    pub frames_in: u64,
    /// Of those, masked.
    pub masked_in: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// Pings answered with a pong.
    pub pings_answered: u64,
    /// Whole messages received.
    pub messages_in: u64,
}

/// One websocket connection, client (`T` = `ews::Client`) or server
/// (`ews::Server`).
pub struct WsConn<'d, R: RngCore, T: WebSocketType> {
    io: Stream<'d>,
    ws: WebSocket<R, T>,
    /// We are the server: what we receive must be masked.
    from_client: bool,
    rx: Vec<u8>,
    rx_len: usize,
    tx: Vec<u8>,
    msg: Vec<u8>,
    msg_len: usize,
    msg_done: bool,
    ctrl: [u8; MAX_CONTROL],
    ctrl_len: usize,
    last_control: bool,
    /// Frame counters.
    pub stats: WsStats,
}

/// A client connection (masks with the OS random generator).
pub type WsClient<'d> = WsConn<'d, OsRng, ews::Client>;
/// A server connection.
pub type WsServer<'d> = WsConn<'d, EmptyRng, ews::Server>;

/// The size of the frame at the start of `b` and whether it is masked, or
/// `None` if not even its header is there yet. (Only the length field is
/// read here; the codec decodes the frame.)
fn frame_size(b: &[u8]) -> Option<(usize, bool)> {
    if b.len() < 2 {
        return None;
    }
    let masked = b[1] & 0x80 != 0;
    let (len, header) = match b[1] & 0x7f {
        126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
        127 => {
            let ext: [u8; 8] = b.get(2..10)?.try_into().ok()?;
            (
                usize::try_from(u64::from_be_bytes(ext)).unwrap_or(usize::MAX),
                10,
            )
        }
        n => (n as usize, 2),
    };
    let key = if masked { 4 } else { 0 };
    Some((len.saturating_add(header + key), masked))
}

/// Encode one frame with the codec and send it.
fn write_frame<R: RngCore, T: WebSocketType>(
    ws: &mut WebSocket<R, T>,
    io: &Stream<'_>,
    tx: &mut Vec<u8>,
    stats: &mut WsStats,
    kind: Out,
    fin: bool,
    payload: &[u8],
) -> Result<(), WsError> {
    if tx.len() < payload.len() + MAX_HEADER {
        tx.resize(payload.len() + MAX_HEADER, 0);
    }
    let n = ws.write(kind, fin, payload, tx).map_err(WsError::Codec)?;
    io.write_all(&tx[..n]).map_err(WsError::Io)?;
    stats.frames_out += 1;
    Ok(())
}

impl<'d, R: RngCore, T: WebSocketType> WsConn<'d, R, T> {
    fn new(io: Stream<'d>, ws: WebSocket<R, T>, from_client: bool, max_frame: usize) -> Self {
        WsConn {
            io,
            ws,
            from_client,
            rx: vec![0; (max_frame + MAX_HEADER).max(HANDSHAKE_ROOM)],
            rx_len: 0,
            tx: vec![0; 4096],
            msg: Vec::new(),
            msg_len: 0,
            msg_done: false,
            ctrl: [0; MAX_CONTROL],
            ctrl_len: 0,
            last_control: false,
            stats: WsStats::default(),
        }
    }

    /// The TCP stream (for deadlines and timeouts).
    pub fn stream(&self) -> &Stream<'d> {
        &self.io
    }

    /// The TCP stream, mutably (for deadlines).
    pub fn stream_mut(&mut self) -> &mut Stream<'d> {
        &mut self.io
    }

    /// Give the TCP stream back (after the close handshake).
    pub fn into_stream(self) -> Stream<'d> {
        self.io
    }

    /// Read more bytes into the receive buffer.
    fn fill(&mut self) -> Result<(), WsError> {
        if self.rx_len == self.rx.len() {
            return Err(WsError::TooLarge(self.rx_len));
        }
        match self.io.read(&mut self.rx[self.rx_len..]) {
            Ok(0) => Err(WsError::Eof),
            Ok(n) => {
                self.rx_len += n;
                Ok(())
            }
            Err(e) => Err(WsError::Io(e)),
        }
    }

    /// Drop the first `n` buffered bytes.
    fn consume(&mut self, n: usize) {
        self.rx.copy_within(n..self.rx_len, 0);
        self.rx_len -= n;
    }

    /// Tell the peer it broke the protocol (close 1002, best effort).
    fn fail(&mut self, why: &'static str) -> WsError {
        self.fail_with(CloseCode::ProtocolError, why)
    }

    /// Close with `code` (best effort) and return the error for `why`.
    fn fail_with(&mut self, code: CloseCode, why: &'static str) -> WsError {
        let mut buf = [0u8; 16];
        if let Ok(n) = self.ws.close(code, None, &mut buf) {
            let _ = self.io.write_all(&buf[..n]);
        }
        WsError::Protocol(why)
    }

    /// The payload of what [`recv`](Self::recv) returned last.
    pub fn payload(&self) -> &[u8] {
        if self.last_control {
            &self.ctrl[..self.ctrl_len]
        } else {
            &self.msg[..self.msg_len]
        }
    }

    /// The text message [`recv`](Self::recv) returned last.
    pub fn text(&self) -> Result<&str, WsError> {
        std::str::from_utf8(self.payload()).map_err(|_| WsError::Protocol("text is not UTF-8"))
    }

    /// Wait for the next message, pong or close. Pings are answered on the
    /// way; the peer's close is answered before it is returned. A read
    /// that times out returns `Io(Timeout)` and may simply be repeated:
    /// partial frames stay buffered.
    pub fn recv(&mut self) -> Result<Event, WsError> {
        if self.msg_done {
            self.msg_len = 0;
            self.msg_done = false;
        }
        loop {
            let (total, masked) = loop {
                if let Some((total, masked)) = frame_size(&self.rx[..self.rx_len]) {
                    if total > self.rx.len() {
                        return Err(self.fail_with(CloseCode::MessageTooBig, "frame too large"));
                    }
                    if total <= self.rx_len {
                        break (total, masked);
                    }
                }
                self.fill()?;
            };
            if masked != self.from_client {
                return Err(self.fail(if self.from_client {
                    "unmasked frame from a client"
                } else {
                    "masked frame from a server"
                }));
            }
            self.stats.frames_in += 1;
            if masked {
                self.stats.masked_in += 1;
            }
            let control = self.rx[0] & 0x08 != 0;
            let r = if control {
                let key = if masked { 4 } else { 0 };
                if total - 2 - key > MAX_CONTROL {
                    return Err(self.fail("control frame longer than 125 bytes"));
                }
                self.ws.read(&self.rx[..total], &mut self.ctrl)
            } else {
                let need = self.msg_len + total;
                if need > MAX_FRAME + MAX_HEADER {
                    return Err(self.fail_with(CloseCode::MessageTooBig, "message too large"));
                }
                if self.msg.len() < need {
                    self.msg.resize(need, 0);
                }
                self.ws
                    .read(&self.rx[..total], &mut self.msg[self.msg_len..])
            }
            .map_err(WsError::Codec)?;
            if r.len_from != total {
                return Err(self.fail("frame not decoded whole"));
            }
            self.consume(total);
            match r.message_type {
                In::Text | In::Binary => {
                    self.msg_len += r.len_to;
                    if r.end_of_message {
                        self.msg_done = true;
                        self.last_control = false;
                        self.stats.messages_in += 1;
                        return Ok(if r.message_type == In::Text {
                            Event::Text
                        } else {
                            Event::Binary
                        });
                    }
                }
                In::Ping => {
                    self.ctrl_len = r.len_to;
                    write_frame(
                        &mut self.ws,
                        &self.io,
                        &mut self.tx,
                        &mut self.stats,
                        Out::Pong,
                        true,
                        &self.ctrl[..self.ctrl_len],
                    )?;
                    self.stats.pings_answered += 1;
                }
                In::Pong => {
                    self.ctrl_len = r.len_to;
                    self.last_control = true;
                    return Ok(Event::Pong);
                }
                In::CloseMustReply => {
                    // Answer with the peer's status code.
                    self.ctrl_len = r.len_to;
                    self.last_control = true;
                    let echo = self.ctrl_len.min(2);
                    write_frame(
                        &mut self.ws,
                        &self.io,
                        &mut self.tx,
                        &mut self.stats,
                        Out::CloseReply,
                        true,
                        &self.ctrl[..echo],
                    )?;
                    return Ok(Event::Close(r.close_status));
                }
                In::CloseCompleted => {
                    self.ctrl_len = r.len_to;
                    self.last_control = true;
                    return Ok(Event::Close(r.close_status));
                }
            }
        }
    }

    /// Send a whole message (`Out::Text` or `Out::Binary`).
    pub fn send(&mut self, kind: Out, payload: &[u8]) -> Result<(), WsError> {
        self.send_fragment(kind, payload, true)
    }

    /// Send one fragment of a message; `fin` on the last. (The codec turns
    /// every frame after a non-final one into a continuation frame, so send
    /// no ping in between.)
    pub fn send_fragment(&mut self, kind: Out, payload: &[u8], fin: bool) -> Result<(), WsError> {
        write_frame(
            &mut self.ws,
            &self.io,
            &mut self.tx,
            &mut self.stats,
            kind,
            fin,
            payload,
        )
    }

    /// Send the message [`recv`](Self::recv) returned last back as `kind`.
    pub fn echo(&mut self, kind: Out) -> Result<(), WsError> {
        write_frame(
            &mut self.ws,
            &self.io,
            &mut self.tx,
            &mut self.stats,
            kind,
            true,
            &self.msg[..self.msg_len],
        )
    }

    /// Send a ping (at most 125 bytes of payload).
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), WsError> {
        if payload.len() > MAX_CONTROL {
            return Err(WsError::TooLarge(payload.len()));
        }
        self.send_fragment(Out::Ping, payload, true)
    }

    /// Run the close handshake from our side: send a close frame with
    /// `code`, then wait for the peer's (messages still in flight are
    /// dropped). Returns the peer's status code.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<Option<CloseCode>, WsError> {
        let mut buf = [0u8; 2 + MAX_CONTROL + MAX_HEADER];
        let n = self
            .ws
            .close(code, Some(reason), &mut buf)
            .map_err(WsError::Codec)?;
        self.io.write_all(&buf[..n]).map_err(WsError::Io)?;
        self.stats.frames_out += 1;
        loop {
            match self.recv() {
                Ok(Event::Close(c)) => return Ok(c),
                Ok(_) => {}
                Err(WsError::Eof) => {
                    return Err(WsError::Protocol(
                        "TCP closed before the peer answered our close frame",
                    ))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// After the close handshake: wait until the peer closes TCP (the server
    /// closes first, RFC 6455 7.1.1), bounded by the read deadline.
    pub fn wait_eof(&mut self) -> Result<(), WsError> {
        let mut buf = [0u8; 256];
        loop {
            match self.io.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(WsError::Io(e)),
            }
        }
    }
}

impl<'d> WsClient<'d> {
    /// Run the opening handshake as a client on a connected `io`: `GET
    /// path` with `Host: host`. Bounded by `io`'s deadlines.
    pub fn connect(io: Stream<'d>, host: &str, path: &str) -> Result<Self, WsError> {
        let mut c = WsConn::new(
            io,
            ews::WebSocketClient::new_client(OsRng),
            false,
            MAX_FRAME,
        );
        let origin = format!("http://{host}");
        let opts = WebSocketOptions {
            path,
            host,
            origin: &origin,
            sub_protocols: None,
            additional_headers: None,
        };
        let (n, key) =
            c.ws.client_connect(&opts, &mut c.tx)
                .map_err(WsError::Codec)?;
        c.io.write_all(&c.tx[..n]).map_err(WsError::Io)?;
        loop {
            match c.fill() {
                Ok(()) => {}
                Err(WsError::Eof) => {
                    return Err(WsError::Handshake(
                        "the server closed the connection instead of answering".into(),
                    ))
                }
                Err(e) => return Err(e),
            }
            match c.ws.client_accept(&key, &c.rx[..c.rx_len]) {
                Ok((len, _)) => {
                    c.consume(len);
                    return Ok(c);
                }
                Err(ews::Error::HttpHeaderIncomplete) => {}
                Err(ews::Error::HttpResponseCodeInvalid(code)) => {
                    return Err(WsError::Handshake(format!(
                        "the server answered HTTP {}, not 101 Switching Protocols",
                        code.map_or("?".into(), |c| c.to_string())
                    )))
                }
                Err(e) => return Err(WsError::Handshake(format!("{e}"))),
            }
        }
    }
}

impl<'d> WsServer<'d> {
    /// Run the opening handshake as a server on an accepted `io`: read the
    /// upgrade request, answer `101 Switching Protocols` (or `400` if it is
    /// not one). Returns the connection and the request path. Bounded by
    /// `io`'s deadlines.
    pub fn accept(io: Stream<'d>) -> Result<(Self, String), WsError> {
        let mut c = WsConn::new(io, ews::WebSocketServer::new_server(), true, MAX_FRAME);
        loop {
            match c.fill() {
                Ok(()) => {}
                Err(WsError::Eof) => {
                    return Err(WsError::Handshake(
                        "the client closed the connection before its request".into(),
                    ))
                }
                Err(e) => return Err(e),
            }
            let parsed = {
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&c.rx[..c.rx_len]) {
                    Ok(httparse::Status::Partial) => None,
                    Ok(httparse::Status::Complete(len)) => {
                        let path = req.path.unwrap_or("/").to_string();
                        let get = req.method == Some("GET");
                        let ctx =
                            ews::read_http_header(req.headers.iter().map(|h| (h.name, h.value)));
                        Some(Ok((len, path, get, ctx)))
                    }
                    Err(e) => Some(Err(format!("bad HTTP request: {e}"))),
                }
            };
            let (len, path, get, ctx) = match parsed {
                None => continue,
                Some(Ok(p)) => p,
                Some(Err(e)) => return Err(c.refuse(e)),
            };
            let ctx = match ctx {
                Ok(Some(ctx)) if get && !ctx.sec_websocket_key.is_empty() => ctx,
                Ok(_) => return Err(c.refuse("not a websocket upgrade request".into())),
                Err(e) => return Err(c.refuse(format!("bad upgrade request: {e}"))),
            };
            let n =
                c.ws.server_accept(&ctx.sec_websocket_key, None, &mut c.tx)
                    .map_err(WsError::Codec)?;
            c.io.write_all(&c.tx[..n]).map_err(WsError::Io)?;
            c.consume(len);
            return Ok((c, path));
        }
    }

    /// Answer a request that is no websocket upgrade with `400`.
    fn refuse(&mut self, why: String) -> WsError {
        let _ = self.io.write_all(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        WsError::Handshake(why)
    }
}

/// What one server session did.
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoStats {
    /// Messages echoed.
    pub messages: u64,
    /// Payload bytes echoed.
    pub bytes: u64,
    /// Frame counters.
    pub frames: WsStats,
}

/// Serve one client: echo every text and binary message as it came, answer
/// pings, answer the close handshake. Reads should time out every
/// [`TICK`] so `stopped()` is looked at.
pub fn echo_session(c: &mut WsServer<'_>, stopped: &dyn Fn() -> bool) -> Result<EchoStats, String> {
    let mut st = EchoStats::default();
    loop {
        let kind = match c.recv() {
            Ok(Event::Text) => {
                c.text().map_err(|e| e.to_string())?;
                Out::Text
            }
            Ok(Event::Binary) => Out::Binary,
            Ok(Event::Pong) => continue,
            Ok(Event::Close(_)) => {
                st.frames = c.stats;
                return Ok(st);
            }
            Err(WsError::Io(Error::Timeout)) if !stopped() => continue,
            Err(WsError::Eof) => {
                return Err("the client closed TCP without the close handshake".into())
            }
            Err(e) => return Err(e.to_string()),
        };
        st.messages += 1;
        st.bytes += c.payload().len() as u64;
        c.echo(kind).map_err(|e| format!("echo: {e}"))?;
    }
}

/// A websocket echo server on `port` of `dev` (the simulated peer of
/// `websocket_dial`): every connection runs [`echo_session`].
pub fn echo_server<'scope, 'env, 'd: 'env>(
    scope: &'scope Scope<'scope, 'env>,
    dev: Dev<'d>,
    port: u16,
    stop: StopWhen<'env>,
) -> Result<ScopedJoinHandle<'scope, Served>, String> {
    let l = listen(dev, port, 4)?;
    Ok(serve(scope, dev, l, stop, move |stream, _peer, stopped| {
        let mut c = handshake(stream)?;
        echo_session(&mut c, stopped).map(|_| ())
    }))
}

/// The server side of the opening handshake on an accepted stream, bounded
/// by [`HANDSHAKE_TIMEOUT`]; afterwards reads time out every [`TICK`].
pub fn handshake(mut stream: Stream<'_>) -> Result<WsServer<'_>, String> {
    let dev = *stream.device();
    stream.set_read_deadline(Some(dev.now() + HANDSHAKE_TIMEOUT));
    stream
        .set_write_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(|e| format!("set_write_timeout: {e}"))?;
    let (mut c, _path) = WsServer::accept(stream).map_err(|e| e.to_string())?;
    c.stream_mut().set_read_deadline(None);
    c.stream()
        .set_read_timeout(Some(TICK))
        .map_err(|e| format!("set_read_timeout: {e}"))?;
    Ok(c)
}

/// What [`exercise`] measured.
#[derive(Debug, Default)]
pub struct Report {
    /// Messages echoed and checked.
    pub messages: u64,
    /// Payload bytes sent (and received back).
    pub bytes: u64,
    /// Round-trip time of each message.
    pub rtts: Vec<Duration>,
    /// The server's close status.
    pub close: Option<CloseCode>,
    /// Frame counters.
    pub frames: WsStats,
}

impl Report {
    /// One line: messages, round trips, close code.
    pub fn summary(&self) -> String {
        let avg = self.rtts.iter().sum::<Duration>() / (self.rtts.len().max(1) as u32);
        let max = self.rtts.iter().max().copied().unwrap_or_default();
        format!(
            "{} messages echoed ({} B), rtt avg {} us max {} us, fragmented + ping/pong ok, close {:?}",
            self.messages,
            self.bytes,
            avg.as_micros(),
            max.as_micros(),
            self.close
        )
    }
}

/// The binary payload of message `i`: `size` bytes of a pattern.
pub fn pattern(i: u64, size: usize) -> Vec<u8> {
    (0..size)
        .map(|j| ((j as u64 + i * 7) % 251) as u8)
        .collect()
}

/// Wait for a message of kind `want` with payload `body`.
fn expect(c: &mut WsClient<'_>, want: Event, body: &[u8], what: &str) -> Result<(), String> {
    loop {
        match c.recv() {
            Ok(Event::Pong) if want != Event::Pong => continue, // unsolicited: allowed
            Ok(got) if got == want => {
                if c.payload() != body {
                    return Err(format!(
                        "{what}: got {} bytes back that differ from the {} sent",
                        c.payload().len(),
                        body.len()
                    ));
                }
                if got == Event::Text {
                    c.text().map_err(|e| format!("{what}: {e}"))?;
                }
                return Ok(());
            }
            Ok(Event::Close(code)) => {
                return Err(format!(
                    "{what}: the server closed the websocket ({code:?})"
                ))
            }
            Ok(got) => return Err(format!("{what}: expected {want:?}, got {got:?}")),
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
}

/// The client script against an echo server: `count` messages, text and
/// binary (`size` bytes) alternately, each checked when it comes back; a
/// text message sent in two fragments; a ping that must come back as a
/// pong with the same payload; the close handshake; and the server's TCP
/// close.
pub fn exercise(c: &mut WsClient<'_>, count: u64, size: usize, o: &Opts) -> Result<Report, String> {
    let mut rep = Report::default();
    for i in 0..count {
        let t0 = Instant::now();
        if i % 2 == 0 {
            let text = format!("hello #{i} from netdever over a websocket");
            c.send(Out::Text, text.as_bytes())
                .map_err(|e| format!("send text #{i}: {e}"))?;
            expect(c, Event::Text, text.as_bytes(), &format!("text #{i}"))?;
            rep.bytes += text.len() as u64;
        } else {
            let data = pattern(i, size);
            c.send(Out::Binary, &data)
                .map_err(|e| format!("send binary #{i}: {e}"))?;
            expect(c, Event::Binary, &data, &format!("binary #{i}"))?;
            rep.bytes += data.len() as u64;
        }
        rep.rtts.push(t0.elapsed());
        rep.messages += 1;
    }
    o.say(format_args!(
        "{} text and binary messages echoed intact",
        rep.messages
    ));

    let parts: [&[u8]; 3] = [b"one message ", b"in three ", b"fragments"];
    for (k, p) in parts.iter().enumerate() {
        c.send_fragment(Out::Text, p, k == parts.len() - 1)
            .map_err(|e| format!("send fragment {k}: {e}"))?;
    }
    expect(c, Event::Text, &parts.concat(), "fragmented text")?;
    o.say(format_args!("fragmented text message echoed whole"));

    let ping = b"netdever ping 0123456789";
    c.ping(ping).map_err(|e| format!("ping: {e}"))?;
    expect(c, Event::Pong, ping, "ping")?;
    o.say(format_args!("ping answered with a matching pong"));

    rep.close = c
        .close(CloseCode::NormalClosure, "bye")
        .map_err(|e| format!("close handshake: {e}"))?;
    c.wait_eof()
        .map_err(|e| format!("waiting for the server to close TCP: {e}"))?;
    rep.frames = c.stats;
    o.say(format_args!(
        "close handshake done (server said {:?}), TCP closed by the server",
        rep.close
    ));
    Ok(rep)
}

/// Connect to `target`, open a websocket on `path` and run [`exercise`];
/// the TCP close lingers until the peer has everything.
pub fn dial_and_exercise(
    dev: Dev<'_>,
    target: SocketAddr,
    path: &str,
    count: u64,
    size: usize,
    limit: Duration,
    o: &Opts,
) -> Result<Report, String> {
    let mut stream = TcpStream::connect_timeout(dev, target, Duration::from_secs(10))
        .map_err(|e| format!("connecting to {target}: {e}"))?;
    stream.set_deadline(Some(dev.now() + limit));
    let host = target.to_string();
    let mut c = WsClient::connect(stream, &host, path).map_err(|e| e.to_string())?;
    o.say(format_args!("ws://{host}{path}: websocket open"));
    let r = exercise(&mut c, count, size, o);
    let stream = c.into_stream();
    let _ = stream
        .device()
        .set_sock_opt(stream.fd(), SockOpt::Linger(Some(Duration::from_secs(2))));
    drop(stream);
    r
}
