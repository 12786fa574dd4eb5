//! The driver's picture of the chip: sockets, links, the command in flight,
//! the network state — and how every line the chip sends changes it.
//!
//! [`Core`] is the parser's [`Sink`]. It runs under the device lock while
//! someone pumps the UART; it never waits and never writes to the chip.

use crate::error::Error;
use crate::fdtable::FdTable;
use crate::netlink::{Event, NotifyFn};
use crate::sockstate::SockState;
use crate::time::Instant;
use crate::types::{IpConfig, Ipv4Addr, Protocol, SocketAddrV4, Sockfd};

use super::parser::{parse_ip, parse_ipd_head, parse_usize, trim, unquote, Sink};

/// Links (connections) the firmware has: ids 0..=4.
pub const MAX_LINKS: usize = 5;
/// Sockets the driver hands out (one per link).
pub const MAX_SOCKETS: usize = 5;
/// Receive queue per socket, bytes: what a read fetched beyond the caller's
/// buffer (read-ahead for small reads), what `MSG_PEEK` fetched, and
/// datagrams a peek keeps (one that does not fit stays in the shared
/// [`FETCH`] buffer instead).
pub const RX_BUF: usize = 256;
/// Largest `AT+CIPRECVDATA`, bytes: the one buffer (shared by all sockets)
/// the reply of the read in flight lands in, before it goes to the
/// caller's buffer. Holds a whole datagram (at most 1472 bytes).
pub const FETCH: usize = 2048;
/// Longest command line the driver sends.
pub(crate) const CMD_MAX: usize = 256;
/// Information lines kept per reply, and their length.
const REPLY_LINES: usize = 8;
const REPLY_LINE: usize = 96;
/// Bytes in front of each datagram in a UDP socket's buffer: length, address, port.
pub(crate) const UDP_HDR: usize = 8;
/// Link events kept until delivered.
const EVENTS: usize = 8;

/// An information line of a reply.
pub(crate) type ReplyLine = heapless::Vec<u8, REPLY_LINE>;

/// What a stream socket is doing.
pub(crate) enum Phase {
    /// Fresh (maybe bound).
    Idle,
    /// `AT+CIPSTART` in flight.
    Connecting,
    /// Connected (or the peer has closed: see `eof`).
    Connected,
    /// Serving the chip's one TCP server.
    Listening {
        port: u16,
        backlog: heapless::Deque<u8, MAX_LINKS>,
        wanted: usize,
    },
    /// The connect failed (the error is in `SockState::error`).
    Failed,
}

/// One socket.
pub(crate) struct Sock {
    pub st: SockState,
    pub udp: bool,
    pub link: Option<u8>,
    pub phase: Phase,
    /// Port given to `bind` (or picked for a UDP socket).
    pub bound: Option<u16>,
    /// Local port of the connection.
    pub local_port: u16,
    /// TCP: the remote end. UDP: the default peer set by `connect`.
    pub peer: Option<SocketAddrV4>,
    /// Received data not yet handed to the app. UDP: records of
    /// [`UDP_HDR`] bytes (length, address, port) and the datagram.
    pub rx: heapless::Deque<u8, RX_BUF>,
    /// The peer closed: `recv` returns 0 once `rx` is empty.
    pub eof: bool,
    /// The connection is gone for this reason (reported after `rx` drains).
    pub dead: Option<Error>,
    /// A `Protocol::Tls` socket: its connection is an SSL link.
    pub tls: bool,
}

impl Sock {
    pub fn new(proto: Protocol) -> Self {
        Sock {
            st: SockState::new(proto),
            udp: proto == Protocol::Udp,
            link: None,
            phase: Phase::Idle,
            bound: None,
            local_port: 0,
            peer: None,
            rx: heapless::Deque::new(),
            eof: false,
            dead: None,
            tls: proto == Protocol::Tls,
        }
    }

    /// Mark the connection lost (keeps buffered data readable).
    fn kill(&mut self, e: Error) {
        self.link = None;
        if matches!(self.phase, Phase::Connecting) {
            self.phase = Phase::Failed;
            self.st.error = Some(e);
            return;
        }
        if self.dead.is_none() && !self.eof {
            self.dead = Some(e);
            self.st.error = Some(e);
        }
        if let Phase::Listening { backlog, .. } = &mut self.phase {
            backlog.clear();
            self.dead = Some(e);
            self.st.error = Some(e);
        }
    }
}

/// Who a link belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Nobody (an orphan to close).
    None,
    /// A socket.
    Fd(Sockfd),
    /// The backlog of a listening socket.
    Backlog(Sockfd),
}

/// State of a chip link as the driver sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkState {
    Free,
    /// `AT+CIPSTART` sent.
    Opening,
    Open,
    /// `AT+CIPCLOSE` sent.
    Closing,
}

/// One chip link.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Link {
    pub state: LinkState,
    pub owner: Owner,
    pub remote: Option<SocketAddrV4>,
    pub local_port: u16,
    /// Bytes the chip holds for this link, as far as the driver knows: the
    /// last passive `+IPD`'s total, less what was fetched since. `+IPD`
    /// reports the whole buffer, but only once until the next
    /// `AT+CIPRECVDATA` (data arriving in between is not announced), so
    /// this is a lower bound: a fetch that comes back full leaves it at
    /// least 1 (see `Core::finish`).
    pub pending: usize,
    pub server: bool,
    /// Close with a reset (`SO_LINGER` 0) when the driver closes it.
    pub reset_on_close: bool,
}

impl Link {
    pub(crate) const FREE: Link = Link {
        state: LinkState::Free,
        owner: Owner::None,
        remote: None,
        local_port: 0,
        pending: 0,
        server: false,
        reset_on_close: false,
    };
}

/// What a command is for (what its outcome changes).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Plain,
    Start {
        link: u8,
        fd: Sockfd,
        remote: SocketAddrV4,
        local_port: u16,
    },
    Send,
    RecvData {
        link: u8,
        fd: Sockfd,
        requested: usize,
        got: usize,
        /// An `+IPD` for `link` arrived while this read was in flight.
        raced: bool,
        /// The reply goes to [`Core::stage`] (else to the socket's queue).
        stage: bool,
    },
    Close {
        link: u8,
    },
}

/// Where the command is in its exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmdPhase {
    /// Waiting for `OK` / `ERROR`.
    Result,
    /// `AT+CIPSEND`: waiting for `>`.
    Prompt,
    /// `AT+CIPSEND`: data written, waiting for `SEND OK` / `SEND FAIL`.
    SendResult,
}

/// How a command ended (or reached its prompt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Error,
    Prompt,
    SendOk,
    SendFail,
    /// The chip restarted (`ready`) before answering.
    Reset,
}

/// The command in flight.
pub(crate) struct Cmd {
    pub text: heapless::String<CMD_MAX>,
    pub kind: Kind,
    pub phase: CmdPhase,
    pub outcome: Option<Outcome>,
    pub lines: heapless::Vec<ReplyLine, REPLY_LINES>,
    pub busy_at: Option<Instant>,
    pub expires: Instant,
    pub abandoned: bool,
}

/// Link state of the station.
#[derive(Default)]
pub(crate) struct Net {
    pub wifi: bool,
    pub got_ip: bool,
    pub up: bool,
    pub ip: Option<IpConfig>,
    pub mac: Option<[u8; 6]>,
}

/// Where bytes of a data block go.
#[derive(Clone, Copy)]
enum Target {
    Drop,
    Fd { fd: Sockfd, left: usize },
    Stage { left: usize },
}

/// The shared buffer a `+CIPRECVDATA` reply lands in (one command is in
/// flight at a time). The reader that sent the command empties it before
/// giving the command channel back, unless it keeps a peeked datagram
/// there (`parked`).
pub(crate) struct Stage {
    pub data: heapless::Vec<u8, FETCH>,
    /// Whose data it is (set when the reply starts).
    pub fd: Option<Sockfd>,
    /// How many bytes the reply announced (at most [`FETCH`]).
    pub want: usize,
    /// Where a datagram came from.
    pub from: SocketAddrV4,
    /// Holds a datagram `MSG_PEEK` kept for this socket (too long for its queue).
    pub parked: Option<Sockfd>,
}

impl Stage {
    const fn new() -> Self {
        Stage {
            data: heapless::Vec::new(),
            fd: None,
            want: 0,
            from: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
            parked: None,
        }
    }

    /// Forget the contents.
    pub fn clear(&mut self) {
        self.data.clear();
        self.fd = None;
        self.want = 0;
        self.parked = None;
    }
}

/// What SSL links verify (set by `Netdever::set_tls_trust`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trust {
    /// Nothing set yet: TLS connects are refused.
    Unset,
    /// The chip holds the app's CA certificates in `client_ca.0`.
    Cas,
    /// The app asked for no verification.
    Insecure,
}

/// The driver state behind the device lock.
pub(crate) struct Core {
    pub now: Instant,
    pub fds: FdTable<Sock, MAX_SOCKETS>,
    pub links: [Link; MAX_LINKS],
    /// Who holds the command channel (an id), if anyone.
    pub token: Option<u32>,
    pub next_id: u32,
    pub cmd: Option<Cmd>,
    pub net: Net,
    pub dinfo: bool,
    pub detailed: bool,
    pub needs_init: bool,
    pub events: heapless::Deque<Event, EVENTS>,
    pub notify_fn: Option<NotifyFn>,
    /// Something a waiter may care about changed.
    pub changed: bool,
    /// The chip restarted; the parser must forget its partial line.
    pub resync: bool,
    target: Target,
    pub ephemeral: u16,
    /// How many times the chip restarted (`ready`).
    pub resets: u32,
    /// Ids waiting for the command channel, oldest first.
    pub waiters: heapless::Vec<u32, 16>,
    /// `AT+CIPSERVER=0` is due (the listener was closed).
    pub server_stop: bool,
    /// Next time a blocked receive may ask `AT+CIPRECVLEN?`.
    pub recvlen_at: Option<Instant>,
    /// What SSL links verify.
    pub trust: Trust,
    /// Where the reply of the read in flight lands.
    pub stage: Stage,
}

impl Core {
    pub fn new() -> Self {
        Core {
            now: Instant::ZERO,
            fds: FdTable::new(),
            links: [Link::FREE; MAX_LINKS],
            token: None,
            next_id: 1,
            cmd: None,
            net: Net::default(),
            dinfo: false,
            detailed: false,
            needs_init: true,
            events: heapless::Deque::new(),
            notify_fn: None,
            changed: false,
            resync: false,
            target: Target::Drop,
            ephemeral: 0,
            resets: 0,
            waiters: heapless::Vec::new(),
            server_stop: false,
            recvlen_at: None,
            trust: Trust::Unset,
            stage: Stage::new(),
        }
    }

    /// A new id for a token holder.
    pub fn new_id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }

    fn event(&mut self, e: Event) {
        if self.events.is_full() {
            self.events.pop_front();
        }
        let _ = self.events.push_back(e);
    }

    fn update_up(&mut self) {
        let up = self.net.wifi && self.net.got_ip;
        if up != self.net.up {
            self.net.up = up;
            self.event(if up { Event::NetUp } else { Event::NetDown });
            self.changed = true;
        }
    }

    /// Nobody waits for the command in flight any more: it completes in the
    /// background (its effects apply when it ends), or now if it already has.
    pub fn abandon(&mut self) {
        if let Some(c) = self.cmd.as_mut() {
            c.abandoned = true;
            if c.outcome.is_some_and(|o| o != Outcome::Prompt) {
                self.cmd = None;
                self.token = None;
                self.changed = true;
            }
        }
    }

    /// Give the command channel back (no command may be in flight).
    pub fn release_token(&mut self) {
        self.token = None;
        self.changed = true;
    }

    /// End the command in flight with `o`: apply what it means to sockets and
    /// links, and either leave it for its waiting owner or (abandoned)
    /// complete it here.
    fn finish(&mut self, o: Outcome) {
        let Some(cmd) = self.cmd.as_mut() else { return };
        if cmd.outcome.is_some() && o != Outcome::Reset {
            return;
        }
        cmd.outcome = Some(o);
        let kind = cmd.kind;
        let already = cmd
            .lines
            .iter()
            .any(|l| trim(l).starts_with(b"ALREADY CONNECTED"));
        let abandoned = cmd.abandoned;
        self.changed = true;
        match (kind, o) {
            (
                Kind::Start {
                    link,
                    fd,
                    remote,
                    local_port,
                },
                Outcome::Ok,
            ) => {
                let l = &mut self.links[link as usize];
                if l.state == LinkState::Opening || l.state == LinkState::Open && !l.server {
                    l.state = LinkState::Open;
                    l.server = false;
                    l.remote = Some(remote);
                    if l.local_port == 0 {
                        l.local_port = local_port;
                    }
                    let lp = l.local_port;
                    let mut owner = Owner::None;
                    if let Ok(s) = self.fds.get_mut(fd) {
                        if !s.udp && matches!(s.phase, Phase::Connecting) && s.link == Some(link) {
                            s.phase = Phase::Connected;
                            s.local_port = lp;
                            s.st.error = None;
                            owner = Owner::Fd(fd);
                        } else if s.udp && s.link == Some(link) {
                            s.local_port = lp;
                            owner = Owner::Fd(fd);
                        }
                    }
                    self.links[link as usize].owner = owner;
                }
            }
            (Kind::Start { link, fd, .. }, Outcome::Error) => {
                let l = &mut self.links[link as usize];
                if !already && l.state == LinkState::Opening {
                    *l = Link::FREE;
                }
                if let Ok(s) = self.fds.get_mut(fd) {
                    if s.link == Some(link) {
                        s.link = None;
                        // (A waiting owner retries on ALREADY CONNECTED.)
                        if !s.udp && matches!(s.phase, Phase::Connecting) {
                            s.phase = Phase::Failed;
                            s.st.error = Some(if already {
                                Error::ConnectionAborted
                            } else {
                                Error::ConnectionRefused
                            });
                        }
                    }
                }
            }
            // What the chip still holds after a read. An `+IPD` that came
            // while the read was in flight already counts what is left (the
            // chip reports its whole buffer, and a read lets it report
            // again): keep it. (Had the chip sent it before doing the read,
            // it over-counts by `got`: one more read, which comes back short
            // or `ERROR`, settles it. Subtracting instead would under-count
            // and strand data the chip never announces again.)
            (Kind::RecvData { raced: true, .. }, Outcome::Ok | Outcome::Error) => {}
            (
                Kind::RecvData {
                    link,
                    fd,
                    requested,
                    got,
                    ..
                },
                Outcome::Ok,
            ) => {
                let udp = self.fds.get(fd).is_ok_and(|s| s.udp);
                let l = &mut self.links[link as usize];
                l.pending = if udp {
                    // One datagram per read; the total may count more.
                    l.pending.saturating_sub(got)
                } else if got < requested {
                    // The buffer is empty; what comes next is announced.
                    0
                } else {
                    // The buffer held at least `requested`, and data that
                    // arrived after the last `+IPD` is not announced until
                    // it is read: ask again rather than wait for an `+IPD`
                    // that may never come.
                    l.pending.saturating_sub(got).max(1)
                };
            }
            (Kind::RecvData { link, .. }, Outcome::Error) => {
                self.links[link as usize].pending = 0;
            }
            (Kind::Close { link }, Outcome::Ok | Outcome::Error)
                if self.links[link as usize].state == LinkState::Closing =>
            {
                self.links[link as usize] = Link::FREE;
            }
            _ => {}
        }
        if abandoned && o != Outcome::Prompt {
            self.cmd = None;
            self.token = None;
        }
    }

    fn on_reset(&mut self) {
        self.resets = self.resets.wrapping_add(1);
        self.needs_init = true;
        self.dinfo = false;
        self.detailed = false;
        self.resync = true;
        self.target = Target::Drop;
        for (_, s) in self.fds.iter_mut() {
            if s.link.is_some() || matches!(s.phase, Phase::Listening { .. } | Phase::Connecting) {
                s.kill(Error::ConnectionAborted);
            }
        }
        self.links = [Link::FREE; MAX_LINKS];
        self.net.wifi = false;
        self.net.got_ip = false;
        self.net.ip = None;
        self.update_up();
        if self.cmd.is_some() {
            self.finish(Outcome::Reset);
        }
        self.changed = true;
    }

    fn on_wifi_down(&mut self) {
        self.net.wifi = false;
        self.net.got_ip = false;
        self.net.ip = None;
        self.update_up();
        for (_, s) in self.fds.iter_mut() {
            if s.link.is_some() || matches!(s.phase, Phase::Listening { .. }) {
                s.kill(Error::NetworkDown);
            }
        }
        for l in self.links.iter_mut() {
            if l.state == LinkState::Open {
                l.owner = Owner::None;
            }
        }
        self.changed = true;
    }

    /// A link came up without our `AT+CIPSTART`: the server accepted a
    /// connection. It goes to the listener's backlog or is closed later.
    fn on_incoming(&mut self, id: u8, remote: Option<SocketAddrV4>, local_port: u16) {
        let mut owner = Owner::None;
        for (fd, s) in self.fds.iter_mut() {
            if let Phase::Listening {
                backlog,
                wanted,
                port,
            } = &mut s.phase
            {
                if backlog.len() < *wanted && backlog.push_back(id).is_ok() {
                    owner = Owner::Backlog(fd);
                }
                let _ = port;
                break;
            }
        }
        self.links[id as usize] = Link {
            state: LinkState::Open,
            owner,
            remote,
            local_port,
            pending: 0,
            server: true,
            reset_on_close: false,
        };
        self.changed = true;
    }

    fn on_connect(&mut self, id: u8) {
        let l = &mut self.links[id as usize];
        if l.state == LinkState::Opening {
            l.state = LinkState::Open;
            self.changed = true;
        } else if l.state == LinkState::Free {
            self.on_incoming(id, None, 0);
        }
    }

    fn on_link_conn(&mut self, line: &[u8]) {
        // +LINK_CONN:<status>,<link>,"<type>",<c/s>,"<ip>",<rport>,<lport>
        let body = &line[11..];
        let mut f = body.split(|&c| c == b',');
        let status = f.next().and_then(parse_usize);
        let id = f.next().and_then(parse_usize);
        let _ty = f.next();
        let cs = f.next().and_then(parse_usize);
        let ip = f.next().and_then(parse_ip);
        let rport = f.next().and_then(parse_usize);
        let lport = f.next().and_then(parse_usize);
        let (Some(0), Some(id), Some(cs)) = (status, id, cs) else {
            return;
        };
        if id >= MAX_LINKS {
            return;
        }
        let remote = match (ip, rport) {
            (Some(ip), Some(p)) if p <= 65535 => Some(SocketAddrV4::new(ip, p as u16)),
            _ => None,
        };
        let lport = lport.filter(|&p| p <= 65535).unwrap_or(0) as u16;
        if cs == 1 {
            self.on_incoming(id as u8, remote, lport);
        } else {
            let l = &mut self.links[id];
            if l.state == LinkState::Opening {
                l.state = LinkState::Open;
                l.local_port = lport;
                self.changed = true;
            }
        }
    }

    fn on_closed(&mut self, id: u8) {
        let l = self.links[id as usize];
        match l.owner {
            Owner::Fd(fd) => {
                if let Ok(s) = self.fds.get_mut(fd) {
                    if s.link == Some(id) {
                        s.link = None;
                        if s.udp {
                            s.kill(Error::ConnectionAborted);
                        } else if s.dead.is_none() {
                            s.eof = true;
                        }
                    }
                }
            }
            Owner::Backlog(lfd) => {
                if let Ok(s) = self.fds.get_mut(lfd) {
                    if let Phase::Listening { backlog, .. } = &mut s.phase {
                        let mut keep: heapless::Deque<u8, MAX_LINKS> = heapless::Deque::new();
                        for &x in backlog.iter() {
                            if x != id {
                                let _ = keep.push_back(x);
                            }
                        }
                        *backlog = keep;
                    }
                }
            }
            Owner::None => {}
        }
        if l.state == LinkState::Opening {
            // Our CIPSTART failed; its ERROR ends it.
            self.links[id as usize].owner = Owner::None;
        } else {
            self.links[id as usize] = Link::FREE;
        }
        self.changed = true;
    }

    /// Handle `<n>,CONNECT` / `<n>,CLOSED` style lines. Returns whether it was one.
    fn link_message(&mut self, l: &[u8]) -> bool {
        if l.len() < 3 || !l[0].is_ascii_digit() || l[1] != b',' {
            return false;
        }
        let id = l[0] - b'0';
        if id as usize >= MAX_LINKS {
            return false;
        }
        match &l[2..] {
            b"CONNECT" => self.on_connect(id),
            b"CLOSED" | b"CONNECT FAIL" => self.on_closed(id),
            _ => return false,
        }
        true
    }

    /// A link with nobody to own it that should be closed on the chip.
    pub fn orphan(&self) -> Option<u8> {
        self.links
            .iter()
            .position(|l| l.state == LinkState::Open && l.owner == Owner::None)
            .map(|i| i as u8)
    }

    fn begin_block(
        &mut self,
        fd: Option<Sockfd>,
        len: usize,
        from: Option<SocketAddrV4>,
        stage: bool,
    ) {
        self.target = Target::Drop;
        let Some(fd) = fd else { return };
        if stage {
            if self.stage.parked.is_some() {
                return; // (the reader asked for its queue then)
            }
            let want = len.min(FETCH);
            self.stage.data.clear();
            self.stage.fd = Some(fd);
            self.stage.want = want;
            self.stage.from = from.unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
            self.target = Target::Stage { left: want };
            self.changed = true;
            return;
        }
        let Ok(s) = self.fds.get_mut(fd) else { return };
        let free = RX_BUF - s.rx.len();
        let keep = if s.udp {
            if free < len.saturating_add(UDP_HDR) {
                // Never a truncated datagram: drop it whole, as the chip
                // does when its buffer is full. (Datagram reads go through
                // the stage; this is active-mode `+IPD` only.)
                return;
            }
            let keep = len;
            let from = from.unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
            let mut h = [0u8; UDP_HDR];
            h[..2].copy_from_slice(&(keep as u16).to_be_bytes());
            h[2..6].copy_from_slice(&from.ip().octets());
            h[6..].copy_from_slice(&from.port().to_be_bytes());
            for b in h {
                let _ = s.rx.push_back(b);
            }
            keep
        } else {
            len.min(free)
        };
        self.target = Target::Fd { fd, left: keep };
        self.changed = true;
    }
}

impl Default for Core {
    fn default() -> Self {
        Self::new()
    }
}

impl Sink for Core {
    fn line(&mut self, line: &[u8], overflow: bool) {
        let l = trim(line);
        if l.is_empty() {
            return;
        }
        if overflow {
            return; // garbage
        }
        if let Some(c) = &self.cmd {
            if l == c.text.as_bytes() {
                return; // echo
            }
        }
        match l {
            b"ready" => return self.on_reset(),
            b"WIFI CONNECTED" => {
                self.net.wifi = true;
                self.changed = true;
                return;
            }
            b"WIFI GOT IP" => {
                self.net.wifi = true;
                self.net.got_ip = true;
                self.net.ip = None;
                self.update_up();
                return;
            }
            b"WIFI DISCONNECT" => return self.on_wifi_down(),
            b"busy p..." | b"busy s..." => {
                let now = self.now;
                if let Some(c) = self.cmd.as_mut() {
                    if matches!(c.phase, CmdPhase::Result | CmdPhase::Prompt) && c.outcome.is_none()
                    {
                        c.busy_at.get_or_insert(now);
                    }
                }
                return;
            }
            _ => {}
        }
        if let Some(head) = l.strip_prefix(b"+IPD,") {
            // Passive mode: +IPD,<link>,<len>[,"<ip>",<port>]
            if let Some((id, len, _)) = parse_ipd_head(head) {
                let link = &mut self.links[id as usize];
                if link.state == LinkState::Open {
                    link.pending = len;
                    self.changed = true;
                }
                if let Some(Cmd {
                    kind: Kind::RecvData { link, raced, .. },
                    outcome: None,
                    ..
                }) = self.cmd.as_mut()
                {
                    if *link == id {
                        *raced = true;
                    }
                }
                return;
            }
        }
        if l.starts_with(b"+LINK_CONN:") {
            return self.on_link_conn(l);
        }
        if self.link_message(l) {
            return;
        }
        let Some(c) = self.cmd.as_mut() else { return };
        if c.outcome.is_some() && c.outcome != Some(Outcome::Prompt) {
            return;
        }
        let phase = c.phase;
        match (l, phase) {
            (b"OK", CmdPhase::Result) => self.finish(Outcome::Ok),
            (b"OK", _) => {}
            (b"ERROR" | b"FAIL", CmdPhase::SendResult) => self.finish(Outcome::SendFail),
            (b"ERROR" | b"FAIL", _) => self.finish(Outcome::Error),
            (b"SEND OK", CmdPhase::SendResult) => self.finish(Outcome::SendOk),
            (b"SEND FAIL", CmdPhase::SendResult) => self.finish(Outcome::SendFail),
            _ => {
                let mut r = ReplyLine::new();
                let _ = r.extend_from_slice(&l[..l.len().min(REPLY_LINE)]);
                let _ = c.lines.push(r);
            }
        }
    }

    fn expect_prompt(&self) -> bool {
        self.cmd
            .as_ref()
            .is_some_and(|c| c.phase == CmdPhase::Prompt && c.outcome.is_none())
    }

    fn prompt(&mut self) {
        if let Some(c) = self.cmd.as_mut() {
            c.outcome = Some(Outcome::Prompt);
            self.changed = true;
        }
    }

    fn dinfo(&self) -> bool {
        self.dinfo
    }

    fn ipd_data(&mut self, link: u8, len: usize, from: Option<SocketAddrV4>) {
        let l = self.links[link as usize];
        let fd = match l.owner {
            Owner::Fd(fd) => Some(fd),
            _ => None,
        };
        self.begin_block(fd, len, from.or(l.remote), false);
    }

    fn recv_data(&mut self, len: usize, from: Option<SocketAddrV4>) {
        let (fd, stage) = match self.cmd.as_mut() {
            Some(Cmd {
                kind: Kind::RecvData { got, fd, stage, .. },
                ..
            }) => {
                *got = len;
                (Some(*fd), *stage)
            }
            _ => (None, false),
        };
        self.begin_block(fd, len, from, stage);
    }

    fn data(&mut self, bytes: &[u8]) {
        if let Target::Fd { fd, left } = &mut self.target {
            let n = (*left).min(bytes.len());
            if let Ok(s) = self.fds.get_mut(*fd) {
                for &b in &bytes[..n] {
                    let _ = s.rx.push_back(b);
                }
            }
            *left -= n;
        } else if let Target::Stage { left } = &mut self.target {
            let n = (*left).min(bytes.len());
            let _ = self.stage.data.extend_from_slice(&bytes[..n]);
            *left -= n;
        }
    }

    fn data_end(&mut self) {
        self.target = Target::Drop;
        self.changed = true;
    }
}

/// Parse the `+CIPSTA:` lines of a reply.
pub(crate) fn parse_cipsta(lines: &[ReplyLine]) -> Option<IpConfig> {
    let mut ip = None;
    let mut gw = None;
    let mut mask = None;
    for l in lines {
        let l = trim(l);
        if let Some(v) = l.strip_prefix(b"+CIPSTA:ip:") {
            ip = parse_ip(v);
        } else if let Some(v) = l.strip_prefix(b"+CIPSTA:gateway:") {
            gw = parse_ip(v);
        } else if let Some(v) = l.strip_prefix(b"+CIPSTA:netmask:") {
            mask = parse_ip(v);
        } else if let Some(v) = l.strip_prefix(b"+CIPSTA:") {
            // Old firmware: +CIPSTA:"<ip>"
            if ip.is_none() {
                ip = parse_ip(v);
            }
        }
    }
    let ip = ip?;
    let prefix = match mask {
        Some(m) => {
            let bits = u32::from_be_bytes(m.octets());
            if bits.leading_ones() + bits.trailing_zeros() != 32 && bits != 0 {
                return None;
            }
            bits.leading_ones() as u8
        }
        None => 24,
    };
    let mut cfg = IpConfig::new(ip, prefix);
    if let Some(g) = gw.filter(|g| !g.is_unspecified()) {
        cfg.gateway = Some(g);
    }
    Some(cfg)
}

/// Parse `+CIPSTAMAC:"aa:bb:cc:dd:ee:ff"`.
pub(crate) fn parse_mac(lines: &[ReplyLine]) -> Option<[u8; 6]> {
    for l in lines {
        let Some(v) = trim(l).strip_prefix(b"+CIPSTAMAC:") else {
            continue;
        };
        let v = unquote(trim(v));
        let mut mac = [0u8; 6];
        let mut n = 0;
        for part in v.split(|&c| c == b':') {
            if n == 6 || part.len() != 2 {
                return None;
            }
            let s = core::str::from_utf8(part).ok()?;
            mac[n] = u8::from_str_radix(s, 16).ok()?;
            n += 1;
        }
        return (n == 6).then_some(mac);
    }
    None
}

/// Parse `+CIPDOMAIN:<ip>` (quoted or not).
pub(crate) fn parse_domain(lines: &[ReplyLine]) -> Option<Ipv4Addr> {
    lines
        .iter()
        .find_map(|l| trim(l).strip_prefix(b"+CIPDOMAIN:").and_then(parse_ip))
}

/// Parse `+CWJAP:<code>` of a failed join.
pub(crate) fn parse_cwjap_code(lines: &[ReplyLine]) -> Option<usize> {
    lines
        .iter()
        .find_map(|l| trim(l).strip_prefix(b"+CWJAP:").and_then(parse_usize))
}

/// Parse `+CIPRECVLEN:<l0>,<l1>,...` into per-link lengths.
pub(crate) fn parse_recvlen(lines: &[ReplyLine]) -> Option<[Option<usize>; MAX_LINKS]> {
    let l = lines
        .iter()
        .find_map(|l| trim(l).strip_prefix(b"+CIPRECVLEN:"))?;
    let mut out = [None; MAX_LINKS];
    for (i, f) in l.split(|&c| c == b',').take(MAX_LINKS).enumerate() {
        out[i] = parse_usize(f);
    }
    Some(out)
}

/// One `+CIPSTATE:<link>,"<type>","<ip>",<rport>,<lport>,<tetype>` line.
pub(crate) fn parse_cipstate(line: &[u8]) -> Option<(u8, SocketAddrV4, u16)> {
    let v = trim(line).strip_prefix(b"+CIPSTATE:")?;
    let mut f = v.split(|&c| c == b',');
    let id = parse_usize(f.next()?)?;
    let _ty = f.next()?;
    let ip = parse_ip(f.next()?)?;
    let rport = parse_usize(f.next()?)?;
    let lport = parse_usize(f.next()?)?;
    if id >= MAX_LINKS || rport > 65535 || lport > 65535 {
        return None;
    }
    Some((id as u8, SocketAddrV4::new(ip, rport as u16), lport as u16))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::super::parser::Parser;
    use super::*;
    use std::vec::Vec;

    /// A core with a connected TCP socket on link 4 and `AT+CIPRECVDATA=4,2048`
    /// in flight, the chip having announced `pending` bytes.
    fn reading(pending: usize) -> Core {
        let mut c = Core::new();
        let mut s = Sock::new(Protocol::Tcp);
        s.phase = Phase::Connected;
        s.link = Some(4);
        let fd = c.fds.insert(s).unwrap();
        c.links[4] = Link {
            state: LinkState::Open,
            owner: Owner::Fd(fd),
            pending,
            ..Link::FREE
        };
        let mut text = heapless::String::new();
        text.push_str("AT+CIPRECVDATA=4,2048").unwrap();
        c.cmd = Some(Cmd {
            text,
            kind: Kind::RecvData {
                link: 4,
                fd,
                requested: 2048,
                got: 0,
                raced: false,
                stage: false,
            },
            phase: CmdPhase::Result,
            outcome: None,
            lines: heapless::Vec::new(),
            busy_at: None,
            expires: Instant::ZERO,
            abandoned: false,
        });
        c
    }

    fn reply(n: usize, inside: &[u8]) -> Vec<u8> {
        let mut v = std::format!("+CIPRECVDATA:{n},").into_bytes();
        v.extend(core::iter::repeat_n(b'x', n));
        v.extend_from_slice(inside);
        v.extend_from_slice(b"\r\nOK\r\n");
        v
    }

    /// What the driver believes the chip still holds after `bytes`, fed
    /// one byte at a time and all at once (the same either way).
    fn pending_after(pending: usize, bytes: &[u8]) -> usize {
        let mut seen = Vec::new();
        for split in [1, bytes.len()] {
            let mut c = reading(pending);
            let mut p = Parser::new();
            for chunk in bytes.chunks(split) {
                p.feed(chunk, &mut c);
            }
            assert!(c.cmd.as_ref().is_some_and(|c| c.outcome.is_some()));
            seen.push(c.links[4].pending);
        }
        assert_eq!(seen[0], seen[1]);
        seen[0]
    }

    #[test]
    fn a_read_that_comes_back_short_empties_the_count() {
        assert_eq!(pending_after(1500, &reply(1500, b"")), 0);
    }

    #[test]
    fn a_full_read_leaves_the_count_at_least_one() {
        // Data that arrived after the `+IPD` is not announced before it is
        // read: the count may be short, so ask again.
        assert_eq!(pending_after(2048, &reply(2048, b"")), 1);
        assert_eq!(pending_after(5000, &reply(2048, b"")), 2952);
    }

    #[test]
    fn an_ipd_during_the_read_is_what_is_left() {
        // Before the reply (the chip did the read, then announced what came in).
        let mut v = b"+IPD,4,1000\r\n".to_vec();
        v.extend(reply(2048, b""));
        assert_eq!(pending_after(2048, &v), 1000);
        // Inside the reply, after a short read.
        assert_eq!(
            pending_after(1500, &reply(1500, b"\r\n+IPD,4,700\r\n")),
            700
        );
        // Another link's +IPD changes nothing for this one.
        assert_eq!(pending_after(1500, &reply(1500, b"\r\n+IPD,3,700\r\n")), 0);
        // An ERROR read with an +IPD in flight keeps the announced count.
        assert_eq!(pending_after(1, b"+IPD,4,64\r\n\r\nERROR\r\n"), 64);
        assert_eq!(pending_after(1, b"\r\nERROR\r\n"), 0);
    }

    #[test]
    fn a_staged_reply_lands_in_the_shared_buffer_whole() {
        let bytes = reply(2048, b"\r\n+IPD,4,700\r\n");
        for split in [1, bytes.len()] {
            let mut c = reading(2048);
            if let Some(Cmd {
                kind: Kind::RecvData { stage, .. },
                ..
            }) = c.cmd.as_mut()
            {
                *stage = true;
            }
            let mut p = Parser::new();
            for chunk in bytes.chunks(split) {
                p.feed(chunk, &mut c);
            }
            let fd = match c.links[4].owner {
                Owner::Fd(fd) => fd,
                _ => unreachable!(),
            };
            assert_eq!(c.stage.fd, Some(fd));
            assert_eq!((c.stage.data.len(), c.stage.want), (2048, 2048));
            assert!(c.stage.data.iter().all(|&b| b == b'x'));
            assert!(c.fds.get(fd).unwrap().rx.is_empty());
            assert_eq!(c.links[4].pending, 700);
        }
    }

    #[test]
    fn an_ipd_after_the_reply_sets_the_count() {
        let mut v = reply(2048, b"");
        v.extend_from_slice(b"+IPD,4,300\r\n");
        let mut c = reading(2048);
        Parser::new().feed(&v, &mut c);
        assert_eq!(c.links[4].pending, 300);
    }
}
