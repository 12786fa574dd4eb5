//! Espressif ESP-AT firmware over a serial line: [`EspAt`].
//!
//! The chip (ESP32/ESP8266 family running Espressif's AT firmware, 2.x or
//! later) runs Wi-Fi and TCP/IP; the driver speaks its AT command set over
//! any `embedded_io::Read + Write + ReadReady` UART and serves the
//! [`Socketer`](crate::Socketer) contract of `src/socketer.rs`, plus
//! [`Netdever`](crate::Netdever) and [`Netlinker`](crate::Netlinker).
//!
//! # How the protocol maps
//!
//! * **Sockets ↔ links.** The firmware has five links (ids 0..=4) in
//!   multi-connection mode (`AT+CIPMUX=1`); each socket with a connection
//!   owns one, so there are at most [`MAX_SOCKETS`] sockets.
//! * **TCP client**: `AT+CIPSTART=<link>,"TCP","<ip>",<port>[,<keepalive>]`.
//!   `ERROR` is reported as [`Error::ConnectionRefused`] (the firmware does
//!   not say why a connect failed).
//! * **TCP server**: `AT+CIPSERVER=1,<port>`. The firmware serves one server;
//!   incoming connections get free link ids and are announced with
//!   `+LINK_CONN:` (`AT+SYSMSG=2`, giving the peer's address) or
//!   `<link>,CONNECT`; they wait in the listener's backlog until `accept`.
//!   A second `listen` while another socket listens is
//!   [`Error::NoMoreSockets`] (the chip's server table is full).
//! * **UDP**: a socket gets a link on `bind`, `connect` or its first
//!   `send_to`: `AT+CIPSTART=<link>,"UDP","0.0.0.0",0,<local port>,2`
//!   (mode 2: any peer). Every datagram is sent with its destination
//!   (`AT+CIPSEND=<link>,<len>,"<ip>",<port>`); `AT+CIPDINFO=1` makes each
//!   received datagram carry its source, and a connected UDP socket drops
//!   datagrams from anyone but its peer.
//! * **Sending**: `AT+CIPSEND=<link>,<len>`, the `>` prompt, the data,
//!   `SEND OK`. A stream `send` sends at most [`Config::max_send`] bytes per
//!   call (a partial send). `SEND FAIL` (the chip's buffer stayed full) is
//!   retried until the deadline, then [`Error::Timeout`]. Once the command
//!   is on the wire the exchange is finished even past the caller's
//!   deadline (bounded by [`Config::send_timeout`]): abandoning it halfway
//!   would leave the chip waiting for data.
//! * **Receiving**: passive mode (`AT+CIPRECVMODE=1`). The chip announces
//!   `+IPD,<link>,<len>` and keeps the data; `recv` fetches it with
//!   `AT+CIPRECVDATA=<link>,<n>`. The data stays on the chip until then, so
//!   the driver buffers little: a stream read asks for what fits in the
//!   caller's buffer plus the socket's [`RX_BUF`]-byte queue (at most
//!   [`FETCH`]); the reply lands in one [`FETCH`]-byte buffer shared by all
//!   sockets (one command is in flight at a time) and goes from there into
//!   the caller's buffer, the rest (read-ahead for small reads) to the
//!   queue. `MSG_PEEK` fetches into the queue only (a stream peek returns
//!   at most [`RX_BUF`] bytes). A datagram read asks for a whole datagram
//!   and truncates it to the caller's buffer as the contract says; a
//!   datagram a peek keeps goes to the queue, or, longer than that, stays
//!   in the shared buffer until its socket reads it or closes — meanwhile
//!   other sockets' stream reads go through their queues ([`RX_BUF`] bytes
//!   a command) and other datagram reads wait. The chip's window gives TCP
//!   flow control for free. Active-mode `+IPD` data is understood too (it
//!   arrives after a chip reset, before re-initialisation) and goes to the
//!   socket's queue, as much as fits.
//! * **Close**: `AT+CIPCLOSE=<link>`, graceful (queued data is sent, then
//!   FIN); `Linger(Some(0))` first sets `AT+CIPTCPOPT=<link>,0,..` so the
//!   chip resets the connection. `close` frees the fd at once; if the
//!   command channel is busy the `AT+CIPCLOSE` is sent by the next command.
//! * **TLS** ([`TlsSupport::Firmware`](crate::TlsSupport::Firmware)): a
//!   `Protocol::Tls` socket is an SSL link. [`set_tls_trust`](crate::Netdever::set_tls_trust)
//!   writes the app's CA certificates, PEM-encoded, into the chip's
//!   manufacturing partition (`AT+SYSMFG=0,"client_ca"`, then
//!   `AT+SYSMFG=2,"client_ca","client_ca.0",8,<len>`, `>`, the PEM, `OK`;
//!   ESP-AT 3.2 or later), or remembers the explicit insecure mode. Until
//!   then a TLS `connect` is [`Error::InvalidArgument`]. `connect(fd, host,
//!   ..)` sets the link up — `AT+CIPSSLCCONF=<link>,2,0,0` (verify against
//!   `client_ca.0`; `0` when insecure), `AT+CIPSSLCSNI=<link>,"<host>"`,
//!   `AT+CIPSSLCCN=<link>,"<host>"` (the name the certificate must carry) —
//!   then `AT+CIPSTART=<link>,"SSL","<ip>",<port>`; the chip does the
//!   handshake. Verification needs a host name (`None` or longer than
//!   [`MAX_HOST_LEN`] is `InvalidArgument`). The firmware answers a failed
//!   SSL connect with a bare `ERROR`, so the driver asks the network why,
//!   with the same link, each attempt closed at once: if the link opens
//!   without verification, the certificate was refused
//!   ([`Error::CertificateInvalid`]: untrusted chain or wrong name); else if
//!   plain TCP opens, the TLS failed ([`Error::Tls`]); else nobody
//!   listens ([`Error::ConnectionRefused`]). A failed TLS connect so costs
//!   up to two more connections to the server. The chip checks validity
//!   dates against its own clock: it needs SNTP time (`AT+CIPSNTPCFG`),
//!   which the driver does not configure.
//! * **DNS**: `AT+CIPDOMAIN="<name>"`. **Wi-Fi**: `AT+CWJAP="<ssid>","<pwd>"`
//!   (`+CWJAP:2` → [`Error::AuthFailed`], `+CWJAP:3`/`4` →
//!   [`Error::ConnectFailed`], `+CWJAP:1` or no answer in time →
//!   [`Error::Timeout`]); `WIFI GOT IP` / `WIFI DISCONNECT` become
//!   [`Event::NetUp`] / `NetDown`.
//!
//! # Limits of the AT command set (what the contract cannot get)
//!
//! * A peer's reset and its orderly close both arrive as `<link>,CLOSED`:
//!   `recv` reports end of file (`Ok(0)`) for both, never
//!   `ConnectionReset`.
//! * There is no half-close: `shutdown(Write)` is [`Error::NotSupported`];
//!   `shutdown(Both)` closes the connection and keeps the fd.
//! * A TCP client cannot choose its local port: `connect` after binding a
//!   non-zero port is [`Error::NotSupported`].
//! * `Linger(Some(d))` with `d > 0` closes like `Linger(None)`.
//! * `KeepAlive` applies from the next `connect` (`AT+CIPSTART`'s
//!   keep-alive parameter, `KeepInterval` in seconds); `NoDelay` is sent
//!   with `AT+CIPTCPOPT` when set on a connected socket.
//! * A datagram socket cannot send an empty datagram
//!   ([`Error::NotSupported`]); datagrams above 1472 bytes are
//!   [`Error::MessageTooLong`].
//! * `ip_config` reports address, prefix and gateway (`AT+CIPSTA?`), not the
//!   chip's DNS servers.
//! * TLS connects always wait for the handshake (`NonBlocking` does not
//!   apply to them), and a TLS socket cannot listen (no SSL server).
//! * The chip has no way to clear a link's SNI: an insecure TLS connect
//!   without a host name sends whatever SNI that link had last.
//! * IPv4 only.
//!
//! # Losing the network or the chip
//!
//! * `WIFI DISCONNECT` (the AP went away, or `net_disconnect`): `NetDown`,
//!   and every socket with a link — TCP, UDP, the listener — ends with
//!   [`Error::NetworkDown`] (data already received can still be read).
//!   `net_connect` joins again; new sockets work. `net_connect` while
//!   joined re-joins, which also ends open connections.
//! * A spontaneous `ready` (the chip restarted): every socket with a link
//!   ends with [`Error::ConnectionAborted`], `NetDown`, and the next command
//!   first sets the chip up again (`ATE0`, `AT+CIPMUX=1`, ...).
//!
//! # The command channel and locking
//!
//! The UART carries one command at a time. A caller takes the channel (a
//! token in the device state, waited for with the shared
//! [`block_on`] loop, first come first served),
//! writes its command and waits for the answer — without holding the
//! device lock. Whoever waits reads the UART: every waiter pumps whatever
//! bytes are there through one streaming parser, which updates the sockets
//! (`+IPD`, `CLOSED`, incoming connections, Wi-Fi events) and the command
//! in flight, wherever those lines appear — between commands, between a
//! command and its `OK`, split across reads at any byte.
//!
//! If the caller's deadline passes while the chip is still working on a
//! command (a slow connect), the call returns [`Error::Timeout`] and the
//! command completes in the background: the next caller waits for it. A
//! chip that does not answer at all within the command's own bound (or
//! answers garbage) is [`Error::Device`], and the parser resynchronises.
//! `busy p...` followed by no result within [`Config::busy_grace`] means the
//! chip dropped the command: the driver sends it again (within the bounds);
//! a `busy p...` inside a reply that does complete changes nothing.
//!
//! State per socket (receive buffer, options) lives in the fd table, not
//! per link: link ids are reused by the chip as soon as a connection ends,
//! while a socket's buffered data must outlive it.
//!
//! # Waking up
//!
//! A blocked call re-reads the UART every [`Config::poll_interval`]. To wake
//! at once instead, call the platform's `notify` when the UART receives
//! (from the RX interrupt), or call [`EspAt::poll`] from a main loop.

mod core;
mod link;
mod ops;
mod parser;
mod tls;

use ::core::fmt::Write as _;
use ::core::time::Duration;

use embedded_io::{Read, ReadReady, Write};

use crate::error::{Error, Result};
use crate::netlink::Event;
use crate::platform::Platform;
use crate::time::{Deadline, Instant};
use crate::wait::{block_on, Attempt, Blocking};

use self::core::{Cmd, CmdPhase, Core, Kind, LinkState, Outcome, ReplyLine, CMD_MAX};
use self::parser::Parser;

pub use self::core::{FETCH, MAX_LINKS, MAX_SOCKETS, RX_BUF};
pub use self::tls::{MAX_CA_PEM, MAX_HOST_LEN};

/// Driver settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Bound on the chip's answer to an ordinary command; no answer in time
    /// is [`Error::Device`].
    pub cmd_timeout: Duration,
    /// Chip-side bound on `AT+CIPSTART` (the chip's own connect timeout).
    pub connect_timeout: Duration,
    /// Bound on `SEND OK` / `SEND FAIL` after the data of an `AT+CIPSEND`.
    pub send_timeout: Duration,
    /// Bound on `AT+CIPDOMAIN`.
    pub dns_timeout: Duration,
    /// After `busy p...`, how long to wait for the command's result before
    /// concluding the chip dropped it and sending it again.
    pub busy_grace: Duration,
    /// How often a blocked call re-reads the UART when nothing notifies it.
    pub poll_interval: Duration,
    /// Largest `AT+CIPSEND` (2048 works with every firmware version).
    pub max_send: usize,
    /// How long to wait for `ready` after `AT+RST`.
    pub boot_timeout: Duration,
    /// A blocked receive asks `AT+CIPRECVLEN?` this often, in case an
    /// `+IPD` was lost on the line (`None`: never).
    pub recvlen_interval: Option<Duration>,
    /// How long `close` waits for the command channel before leaving its
    /// `AT+CIPCLOSE` to the next command.
    pub close_wait: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cmd_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(20),
            send_timeout: Duration::from_secs(10),
            dns_timeout: Duration::from_secs(10),
            busy_grace: Duration::from_millis(100),
            poll_interval: Duration::from_millis(2),
            max_send: 2048,
            boot_timeout: Duration::from_secs(5),
            recvlen_interval: Some(Duration::from_secs(1)),
            close_wait: Duration::from_millis(250),
        }
    }
}

/// An ESP-AT chip on serial line `S`, on platform `P`. See the [module
/// docs](self).
pub struct EspAt<S, P: Platform> {
    platform: P,
    inner: lock_api::Mutex<P::RawMutex, Inner<S>>,
    cfg: Config,
}

struct Inner<S> {
    serial: S,
    parser: Parser,
    core: Core,
}

/// The right to use the command channel (see [`EspAt::acquire`]).
struct Token(u32);

/// A command's final answer.
struct Reply {
    outcome: Outcome,
    lines: heapless::Vec<ReplyLine, 8>,
}

/// Waiters queued for the command channel (first come, first served).
const QUEUE: usize = 16;

impl<S: Read + Write + ReadReady> Inner<S> {
    /// Read what the UART has (bounded) and parse it.
    fn pump(&mut self) {
        let Inner {
            serial,
            parser,
            core,
        } = self;
        let mut budget = 4096usize;
        let mut buf = [0u8; 128];
        while budget > 0 {
            match serial.read_ready() {
                Ok(true) => {}
                _ => break,
            }
            let want = buf.len().min(budget);
            let n = match serial.read(&mut buf[..want]) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            parser.feed(&buf[..n], core);
            budget -= n;
        }
        let now = core.now;
        if let Some(c) = core.cmd.as_ref() {
            let dropped = c
                .busy_at
                .is_some_and(|b| now >= b + Duration::from_millis(500));
            if c.abandoned && (now >= c.expires || dropped) {
                // Nobody waits for it and the chip will not answer: forget it.
                core.cmd = None;
                core.release_token();
                parser.reset();
            }
        }
    }

    fn write_line(&mut self, text: &str) -> Result<()> {
        self.serial
            .write_all(text.as_bytes())
            .and_then(|_| self.serial.write_all(b"\r\n"))
            .and_then(|_| self.serial.flush())
            .map_err(|_| Error::Device)
    }
}

/// Format a command line.
fn cmd(args: ::core::fmt::Arguments<'_>) -> Result<heapless::String<CMD_MAX>> {
    let mut s = heapless::String::new();
    s.write_fmt(args).map_err(|_| Error::InvalidArgument)?;
    Ok(s)
}

/// Append `s` as a quoted AT string parameter (escaping `\`, `"` and `,`).
fn push_quoted(out: &mut heapless::String<CMD_MAX>, s: &str) -> Result<()> {
    out.push('"').map_err(|_| Error::InvalidArgument)?;
    for c in s.chars() {
        if matches!(c, '\\' | '"' | ',') {
            out.push('\\').map_err(|_| Error::InvalidArgument)?;
        }
        out.push(c).map_err(|_| Error::InvalidArgument)?;
    }
    out.push('"').map_err(|_| Error::InvalidArgument)
}

impl Reply {
    fn lines(&self) -> &[ReplyLine] {
        &self.lines
    }

    /// `OK` → `Ok`, `ERROR` → `err`, a restart → `ConnectionAborted`, a
    /// send result where none belongs → `Device`.
    fn ok_or(self, err: Error) -> Result<Reply> {
        match self.outcome {
            Outcome::Ok => Ok(self),
            Outcome::Error => Err(err),
            Outcome::Reset => Err(Error::ConnectionAborted),
            _ => Err(Error::Device),
        }
    }
}

impl<S, P> EspAt<S, P>
where
    S: Read + Write + ReadReady,
    P: Platform,
{
    /// A driver for the chip on `serial`. Nothing is sent yet: the chip is
    /// set up (echo off, multi-connection, passive receive, ...) by the
    /// first call that needs it, or by [`EspAt::init`].
    pub fn new(serial: S, platform: P, config: Config) -> Self {
        EspAt {
            platform,
            inner: lock_api::Mutex::new(Inner {
                serial,
                parser: Parser::new(),
                core: Core::new(),
            }),
            cfg: config,
        }
    }

    /// The platform (clock, waits). Call its `notify` from the UART's RX
    /// interrupt to wake blocked calls at once.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Give the serial line and the platform back.
    pub fn release(self) -> (S, P) {
        (self.inner.into_inner().serial, self.platform)
    }

    /// Read and handle what the chip sent, and do deferred work (closes)
    /// if the command channel is free. For main loops and RX interrupts
    /// that want events delivered without a blocked call.
    pub fn poll(&self) {
        let free = self.with(|g| g.core.token.is_none() && g.core.orphan().is_some());
        if free {
            if let Ok(t) = self.acquire(Blocking::No(Error::WouldBlock)) {
                self.release_token(t);
            }
        }
    }

    /// Set the chip up now (sync, echo off, `CIPMUX=1`, passive receive,
    /// `CIPDINFO=1`, `SYSMSG=2`) instead of on first use.
    pub fn init(&self) -> Result<()> {
        self.with(|g| g.core.needs_init = true);
        let deadline = Deadline::after(self.platform.now(), self.cfg.cmd_timeout * 4);
        let t = self.acquire(Blocking::Until(deadline))?;
        self.release_token(t);
        Ok(())
    }

    /// Restart the chip (`AT+RST`), wait for `ready`, and set it up again.
    /// Every connection ends ([`Error::ConnectionAborted`]).
    pub fn reset(&self) -> Result<()> {
        let deadline = Deadline::after(self.platform.now(), self.cfg.cmd_timeout * 2);
        let t = self.acquire(Blocking::Until(deadline))?;
        let resets = self.with(|g| g.core.resets);
        let r = self.run(
            &t,
            "AT+RST",
            Kind::Plain,
            self.cfg.cmd_timeout,
            Deadline::Never,
        );
        let r = match r {
            Ok(rep) if rep.outcome == Outcome::Error => Err(Error::Device),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            self.release_token(t);
            return Err(e);
        }
        let until = Deadline::after(self.platform.now(), self.cfg.boot_timeout);
        let poll = self.cfg.poll_interval;
        let booted = block_on(&self.platform, Blocking::Until(until), || {
            self.with(|g| {
                if g.core.resets != resets {
                    Attempt::Done(Ok(()))
                } else {
                    Attempt::Pending {
                        wake_at: Some(g.core.now + poll),
                    }
                }
            })
        });
        let r = booted
            .map_err(|_| Error::Device)
            .and_then(|_| self.init_chip(&t));
        self.release_token(t);
        r
    }

    /// Lock, read the UART, run `f`, unlock, wake waiters if something
    /// changed, deliver link events (no lock held).
    fn with<R>(&self, f: impl FnOnce(&mut Inner<S>) -> R) -> R {
        let (r, events, cb, changed) = {
            let mut g = self.inner.lock();
            g.core.now = self.platform.now();
            g.pump();
            let r = f(&mut g);
            let changed = ::core::mem::take(&mut g.core.changed);
            let mut events: heapless::Vec<Event, 8> = heapless::Vec::new();
            while let Some(e) = g.core.events.pop_front() {
                let _ = events.push(e);
            }
            (r, events, g.core.notify_fn, changed)
        };
        if changed {
            self.platform.notify();
        }
        if let Some(cb) = cb {
            for e in events {
                cb(e);
            }
        }
        r
    }

    fn now(&self) -> Instant {
        self.platform.now()
    }

    /// Take the command channel, waiting as `blocking` allows (first come,
    /// first served), then run pending work: chip setup after a start or a
    /// restart, deferred closes.
    fn acquire(&self, blocking: Blocking) -> Result<Token> {
        let id = self.with(|g| {
            let id = g.core.new_id();
            if matches!(blocking, Blocking::Until(_)) && g.core.waiters.len() < QUEUE {
                let _ = g.core.waiters.push(id);
            }
            id
        });
        let poll = self.cfg.poll_interval;
        let r = block_on(&self.platform, blocking, || {
            self.with(|g| {
                let c = &mut g.core;
                let first = match c.waiters.first() {
                    None => true,
                    Some(&w) => w == id || !c.waiters.contains(&id),
                };
                if c.token.is_none() && c.cmd.is_none() && first {
                    c.token = Some(id);
                    if let Some(i) = c.waiters.iter().position(|&w| w == id) {
                        c.waiters.remove(i);
                    }
                    Attempt::Done(Ok(()))
                } else {
                    Attempt::Pending {
                        wake_at: Some(c.now + poll),
                    }
                }
            })
        });
        if let Err(e) = r {
            self.with(|g| {
                if let Some(i) = g.core.waiters.iter().position(|&w| w == id) {
                    g.core.waiters.remove(i);
                    g.core.changed = true;
                }
            });
            return Err(e);
        }
        let t = Token(id);
        if let Err(e) = self.prepare(&t) {
            self.release_token(t);
            return Err(e);
        }
        Ok(t)
    }

    /// Give the channel back (unless the command in flight was abandoned:
    /// then it is released when that command completes).
    fn release_token(&self, t: Token) {
        self.with(|g| {
            if g.core.token == Some(t.0) && g.core.cmd.is_none() {
                g.core.release_token();
            }
        });
    }

    /// Chip setup and deferred closes, with the channel held.
    fn prepare(&self, t: &Token) -> Result<()> {
        if self.with(|g| g.core.needs_init) {
            self.init_chip(t)?;
        }
        for _ in 0..2 * MAX_LINKS {
            let job = self.with(|g| {
                let c = &mut g.core;
                if c.server_stop {
                    c.server_stop = false;
                    return Some((None, false));
                }
                let l = c.orphan()?;
                let link = &mut c.links[l as usize];
                link.state = LinkState::Closing;
                Some((Some(l), link.reset_on_close))
            });
            match job {
                None => break,
                Some((None, _)) => {
                    self.run(
                        t,
                        "AT+CIPSERVER=0",
                        Kind::Plain,
                        self.cfg.cmd_timeout,
                        Deadline::Never,
                    )?;
                }
                Some((Some(l), reset)) => {
                    if reset {
                        let c = cmd(format_args!("AT+CIPTCPOPT={l},0,0,0"))?;
                        self.run(t, &c, Kind::Plain, self.cfg.cmd_timeout, Deadline::Never)?;
                    }
                    let c = cmd(format_args!("AT+CIPCLOSE={l}"))?;
                    self.run(
                        t,
                        &c,
                        Kind::Close { link: l },
                        self.cfg.cmd_timeout,
                        Deadline::Never,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Bring the chip to the state the driver expects.
    fn init_chip(&self, t: &Token) -> Result<()> {
        let mut last = Error::Device;
        for _ in 0..3 {
            match self.init_once(t) {
                Ok(()) => {
                    self.with(|g| g.core.needs_init = false);
                    return Ok(());
                }
                // The chip restarted while we set it up: start over.
                Err(Error::ConnectionAborted) => last = Error::Device,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn init_once(&self, t: &Token) -> Result<()> {
        let resets = self.with(|g| g.core.resets);
        let quick = self.cfg.cmd_timeout.min(Duration::from_millis(500));
        let mut synced = false;
        for _ in 0..4 {
            match self.run(t, "AT", Kind::Plain, quick, Deadline::Never) {
                Ok(r) if r.outcome == Outcome::Ok => {
                    synced = true;
                    break;
                }
                _ => continue,
            }
        }
        if !synced {
            return Err(Error::Device);
        }
        let to = self.cfg.cmd_timeout;
        self.simple(t, "ATE0")?;
        if self.simple(t, "AT+CIPMUX=1").is_err() {
            // Connections left in single mode from an earlier session.
            let _ = self.run(t, "AT+CIPCLOSE", Kind::Plain, to, Deadline::Never);
            let _ = self.run(t, "AT+CIPSERVER=0,1", Kind::Plain, to, Deadline::Never);
            self.simple(t, "AT+CIPMUX=1")?;
        }
        self.simple(t, "AT+CIPRECVMODE=1")?;
        self.simple(t, "AT+CIPDINFO=1")?;
        self.with(|g| g.core.dinfo = true);
        let detailed = matches!(
            self.run(t, "AT+SYSMSG=2", Kind::Plain, to, Deadline::Never),
            Ok(Reply {
                outcome: Outcome::Ok,
                ..
            })
        );
        self.with(|g| g.core.detailed = detailed);
        // Links left open by an earlier session would collide with ours.
        let _ = self.run(t, "AT+CIPCLOSE=5", Kind::Plain, to, Deadline::Never);
        if self.with(|g| g.core.resets != resets) {
            return Err(Error::ConnectionAborted);
        }
        Ok(())
    }

    /// Run a setup command that must answer `OK`.
    fn simple(&self, t: &Token, text: &str) -> Result<()> {
        self.run(t, text, Kind::Plain, self.cfg.cmd_timeout, Deadline::Never)?
            .ok_or(Error::Device)
            .map(|_| ())
    }

    /// Send a command (the channel is held).
    fn start(
        &self,
        t: &Token,
        text: &str,
        kind: Kind,
        phase: CmdPhase,
        timeout: Duration,
    ) -> Result<()> {
        let mut s = heapless::String::new();
        s.push_str(text).map_err(|_| Error::InvalidArgument)?;
        self.with(|g| {
            if g.core.token != Some(t.0) || g.core.cmd.is_some() {
                return Err(Error::Device);
            }
            let now = g.core.now;
            g.core.cmd = Some(Cmd {
                text: s,
                kind,
                phase,
                outcome: None,
                lines: heapless::Vec::new(),
                busy_at: None,
                expires: now + timeout,
                abandoned: false,
            });
            if let Err(e) = g.write_line(text) {
                g.core.cmd = None;
                return Err(e);
            }
            Ok(())
        })
    }

    /// Wait for the command in flight to end (or reach its prompt: then the
    /// outcome is [`Outcome::Prompt`] and the command stays in flight). If
    /// `caller` passes first the command is abandoned to complete in the
    /// background ([`Error::Timeout`]); if the chip's bound passes first the
    /// chip is considered out of step ([`Error::Device`]).
    fn wait(&self, t: &Token, caller: Deadline) -> Result<Reply> {
        let expires = self
            .with(|g| g.core.cmd.as_ref().map(|c| c.expires))
            .ok_or(Error::Device)?;
        let limit = caller.min(Deadline::At(expires));
        let grace = self.cfg.busy_grace;
        let poll = self.cfg.poll_interval;
        let r = block_on(&self.platform, Blocking::Until(limit), || {
            self.with(|g| {
                let now = g.core.now;
                if g.core.token != Some(t.0) {
                    return Attempt::Done(Err(Error::Device));
                }
                let Some(c) = g.core.cmd.as_mut() else {
                    return Attempt::Done(Err(Error::Device));
                };
                match c.outcome {
                    Some(Outcome::Prompt) => {
                        c.outcome = None;
                        return Attempt::Done(Ok(Reply {
                            outcome: Outcome::Prompt,
                            lines: heapless::Vec::new(),
                        }));
                    }
                    Some(o) => {
                        let lines = ::core::mem::take(&mut c.lines);
                        g.core.cmd = None;
                        return Attempt::Done(Ok(Reply { outcome: o, lines }));
                    }
                    None => {}
                }
                if let Some(b) = c.busy_at {
                    if now >= b + grace {
                        // "busy p..." and no result: the chip dropped it.
                        c.busy_at = None;
                        c.lines.clear();
                        c.expires = c.expires.max(now + grace);
                        let text = c.text.clone();
                        if g.write_line(&text).is_err() {
                            g.core.cmd = None;
                            return Attempt::Done(Err(Error::Device));
                        }
                        return Attempt::Pending {
                            wake_at: Some(now + poll),
                        };
                    }
                    return Attempt::Pending {
                        wake_at: Some((b + grace).min(now + poll)),
                    };
                }
                Attempt::Pending {
                    wake_at: Some(now + poll),
                }
            })
        });
        match r {
            Err(Error::Timeout) => self.with(|g| {
                let now = g.core.now;
                let chip_late = g.core.cmd.as_ref().is_none_or(|c| now >= c.expires);
                if chip_late || caller.instant().is_none_or(|d| d >= expires) {
                    // The chip did not answer: drop the command and resync.
                    g.core.cmd = None;
                    g.parser.reset();
                    g.core.changed = true;
                    Err(Error::Device)
                } else {
                    g.core.abandon();
                    Err(Error::Timeout)
                }
            }),
            r => r,
        }
    }

    /// Send a command and wait for its final answer.
    fn run(
        &self,
        t: &Token,
        text: &str,
        kind: Kind,
        timeout: Duration,
        caller: Deadline,
    ) -> Result<Reply> {
        self.start(t, text, kind, CmdPhase::Result, timeout)?;
        match self.wait(t, caller)? {
            Reply {
                outcome: Outcome::Prompt,
                ..
            } => Err(Error::Device),
            r => Ok(r),
        }
    }

    /// Take the channel, run one command, give the channel back.
    fn command(
        &self,
        text: &str,
        kind: Kind,
        timeout: Duration,
        blocking: Blocking,
    ) -> Result<Reply> {
        let t = self.acquire(blocking)?;
        let caller = match blocking {
            Blocking::Until(d) => d,
            Blocking::No(_) => Deadline::Never,
        };
        let r = self.run(&t, text, kind, timeout, caller);
        self.release_token(t);
        r
    }

    /// A deadline `d` from now.
    fn after(&self, d: Duration) -> Deadline {
        Deadline::after(self.now(), d)
    }
}
