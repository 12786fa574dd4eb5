//! Per-socket state every backend keeps the same way: the generic options
//! (blocking mode, timeouts, linger, ...), the pending error, shutdown
//! flags, and how they turn a call's flags and deadline into a way to wait.
//!
//! Backends embed a [`SockState`] in their fd-table entries and let it
//! answer the options it owns, handling only protocol options themselves.
//!
//! # Why the durations are kept in microseconds
//!
//! Every fd slot of every backend carries one `SockState`, so its size is
//! paid once per fd whether the socket uses the options or not. A
//! `core::time::Duration` is 16 bytes (an `Option` of one too); the four
//! durations (two timeouts, linger, keep-alive interval) are stored as `u64`
//! microseconds instead — the resolution of the crate's clock
//! ([`Instant`]) — which halves the struct (80 to 48 bytes). They are read
//! through accessors that give `Duration`s back; a value is kept to the
//! microsecond (finer parts are rounded up, so a non-zero time never turns
//! into zero) and saturates at `u64::MAX - 1` µs, about 584,000 years.

use core::time::Duration;

use crate::error::{Error, Result};
use crate::time::{Deadline, Instant};
use crate::types::{MsgFlags, Protocol, SockOpt, SockOptName, SocketAddr, SocketAddrV4};
use crate::wait::Blocking;

/// Which of a socket's timeouts bounds a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// recv, recv_from, accept: bounded by `RecvTimeout`.
    Recv,
    /// send, send_to, connect: bounded by `SendTimeout`.
    Send,
}

/// Options and flags common to every socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockState {
    /// The socket's protocol.
    pub proto: Protocol,
    /// `O_NONBLOCK`.
    pub nonblocking: bool,
    /// `SO_RCVTIMEO` in µs, 0: none (see [`Self::recv_timeout`]).
    recv_timeout: u64,
    /// `SO_SNDTIMEO` in µs, 0: none (see [`Self::send_timeout`]).
    send_timeout: u64,
    /// `SO_LINGER` in µs, `NO_LINGER`: off (see [`Self::linger`]).
    linger: u64,
    /// `SO_REUSEADDR`.
    pub reuse_addr: bool,
    /// `SO_BROADCAST`.
    pub broadcast: bool,
    /// `SO_KEEPALIVE`.
    pub keep_alive: bool,
    /// `TCP_KEEPINTVL` in µs (see [`Self::keep_interval`]).
    keep_interval: u64,
    /// `TCP_NODELAY`.
    pub no_delay: bool,
    /// Error to report through `SO_ERROR` (and `poll`'s `ERROR`).
    pub error: Option<Error>,
    /// `shutdown(Read)` was called.
    pub shut_rd: bool,
    /// `shutdown(Write)` was called.
    pub shut_wr: bool,
}

/// `SockState::linger` when `SO_LINGER` is off.
const NO_LINGER: u64 = u64::MAX;

/// A duration in µs: rounded up to the microsecond, at most `NO_LINGER - 1`.
fn micros(d: Duration) -> u64 {
    let us = d.as_micros() + u128::from(!d.subsec_nanos().is_multiple_of(1000));
    us.min(u128::from(NO_LINGER - 1)) as u64
}

/// An optional timeout in µs, 0 for none (a zero timeout means none too).
fn timeout_micros(t: Option<Duration>) -> u64 {
    t.map_or(0, micros)
}

fn timeout_of(us: u64) -> Option<Duration> {
    (us != 0).then(|| Duration::from_micros(us))
}

impl SockState {
    /// Defaults for a new socket.
    pub fn new(proto: Protocol) -> Self {
        SockState {
            proto,
            nonblocking: false,
            recv_timeout: 0,
            send_timeout: 0,
            linger: NO_LINGER,
            reuse_addr: false,
            broadcast: false,
            keep_alive: false,
            keep_interval: 75_000_000,
            no_delay: false,
            error: None,
            shut_rd: false,
            shut_wr: false,
        }
    }

    /// The options an accepted connection inherits from its listener
    /// (timeouts, linger, keep-alive, no-delay; not the blocking mode).
    pub fn inherit(&self) -> Self {
        SockState {
            recv_timeout: self.recv_timeout,
            send_timeout: self.send_timeout,
            linger: self.linger,
            keep_alive: self.keep_alive,
            keep_interval: self.keep_interval,
            no_delay: self.no_delay,
            ..SockState::new(self.proto)
        }
    }

    /// `SO_RCVTIMEO`: how long a receive may block (`None`: forever).
    pub fn recv_timeout(&self) -> Option<Duration> {
        timeout_of(self.recv_timeout)
    }

    /// `SO_SNDTIMEO`: how long a send or connect may block (`None`: forever).
    pub fn send_timeout(&self) -> Option<Duration> {
        timeout_of(self.send_timeout)
    }

    /// `SO_LINGER`: `None` closes in the background, `Some(ZERO)` resets,
    /// `Some(d)` makes `close` wait up to `d` for the data to be acknowledged.
    pub fn linger(&self) -> Option<Duration> {
        (self.linger != NO_LINGER).then(|| Duration::from_micros(self.linger))
    }

    /// `TCP_KEEPINTVL`: time between keep-alive probes.
    pub fn keep_interval(&self) -> Duration {
        Duration::from_micros(self.keep_interval)
    }

    fn is_stream(&self) -> bool {
        matches!(self.proto, Protocol::Tcp | Protocol::Tls)
    }

    /// How a call may wait: not at all in non-blocking mode or with
    /// `MSG_DONTWAIT` (pending gives `nb_error`), otherwise until the earlier
    /// of `deadline` and the socket's timeout for `side`, counted from `now`.
    pub fn blocking(
        &self,
        flags: MsgFlags,
        deadline: Deadline,
        side: Side,
        now: Instant,
        nb_error: Error,
    ) -> Blocking {
        if self.nonblocking || flags.contains(MsgFlags::DONTWAIT) {
            return Blocking::No(nb_error);
        }
        let timeout = match side {
            Side::Recv => self.recv_timeout(),
            Side::Send => self.send_timeout(),
        };
        Blocking::Until(deadline.with_timeout(now, timeout))
    }

    /// Store an option. Stream-only options on a datagram socket (and
    /// `Broadcast` on a stream) are `NotSupported`; `SocketError` is
    /// read-only. The backend applies stream options to its connection.
    pub fn set(&mut self, opt: SockOpt) -> Result<()> {
        let stream = self.is_stream();
        match opt {
            SockOpt::NonBlocking(b) => self.nonblocking = b,
            SockOpt::RecvTimeout(t) => self.recv_timeout = timeout_micros(t),
            SockOpt::SendTimeout(t) => self.send_timeout = timeout_micros(t),
            SockOpt::ReuseAddr(b) => self.reuse_addr = b,
            SockOpt::Broadcast(b) if !stream => self.broadcast = b,
            SockOpt::Linger(l) if stream => self.linger = l.map_or(NO_LINGER, micros),
            SockOpt::KeepAlive(b) if stream => self.keep_alive = b,
            SockOpt::KeepInterval(d) if stream => {
                if d.is_zero() {
                    return Err(Error::InvalidArgument);
                }
                self.keep_interval = micros(d);
            }
            SockOpt::NoDelay(b) if stream => self.no_delay = b,
            SockOpt::SocketError(_) => return Err(Error::InvalidArgument),
            _ => return Err(Error::NotSupported),
        }
        Ok(())
    }

    /// Read an option (reading `SocketError` clears it).
    pub fn get(&mut self, name: SockOptName) -> Result<SockOpt> {
        let stream = self.is_stream();
        Ok(match name {
            SockOptName::NonBlocking => SockOpt::NonBlocking(self.nonblocking),
            SockOptName::RecvTimeout => SockOpt::RecvTimeout(self.recv_timeout()),
            SockOptName::SendTimeout => SockOpt::SendTimeout(self.send_timeout()),
            SockOptName::ReuseAddr => SockOpt::ReuseAddr(self.reuse_addr),
            SockOptName::SocketError => SockOpt::SocketError(self.error.take()),
            SockOptName::Broadcast if !stream => SockOpt::Broadcast(self.broadcast),
            SockOptName::Linger if stream => SockOpt::Linger(self.linger()),
            SockOptName::KeepAlive if stream => SockOpt::KeepAlive(self.keep_alive),
            SockOptName::KeepInterval if stream => SockOpt::KeepInterval(self.keep_interval()),
            SockOptName::NoDelay if stream => SockOpt::NoDelay(self.no_delay),
            _ => return Err(Error::NotSupported),
        })
    }
}

/// Reject flags other than `PEEK` and `DONTWAIT`.
pub fn check_flags(flags: MsgFlags) -> Result<()> {
    if flags.has_unknown() {
        Err(Error::InvalidArgument)
    } else {
        Ok(())
    }
}

/// Flags for a send: `PEEK` makes no sense there, unknown bits neither.
pub fn check_send_flags(flags: MsgFlags) -> Result<()> {
    check_flags(flags)?;
    if flags.contains(MsgFlags::PEEK) {
        return Err(Error::InvalidArgument);
    }
    Ok(())
}

/// The IPv4 address in `addr`; IPv6 is `FamilyNotSupported` (no backend
/// serves it yet).
pub fn ipv4(addr: SocketAddr) -> Result<SocketAddrV4> {
    match addr {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(_) => Err(Error::FamilyNotSupported),
    }
}

/// A destination one can connect or send to: not the unspecified address
/// (`AddrNotAvailable`) and not port 0 (`InvalidArgument`).
pub fn check_remote(addr: SocketAddrV4) -> Result<()> {
    if addr.ip().is_unspecified() {
        return Err(Error::AddrNotAvailable);
    }
    if addr.port() == 0 {
        return Err(Error::InvalidArgument);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_and_reject() {
        let mut s = SockState::new(Protocol::Tcp);
        s.set(SockOpt::KeepAlive(true)).unwrap();
        assert_eq!(s.get(SockOptName::KeepAlive), Ok(SockOpt::KeepAlive(true)));
        assert_eq!(s.set(SockOpt::Broadcast(true)), Err(Error::NotSupported));
        assert_eq!(
            s.set(SockOpt::SocketError(None)),
            Err(Error::InvalidArgument)
        );
        assert_eq!(
            s.set(SockOpt::KeepInterval(Duration::ZERO)),
            Err(Error::InvalidArgument)
        );
        s.set(SockOpt::RecvTimeout(Some(Duration::ZERO))).unwrap();
        assert_eq!(
            s.get(SockOptName::RecvTimeout),
            Ok(SockOpt::RecvTimeout(None))
        );
        s.error = Some(Error::ConnectionRefused);
        assert_eq!(
            s.get(SockOptName::SocketError),
            Ok(SockOpt::SocketError(Some(Error::ConnectionRefused)))
        );
        assert_eq!(
            s.get(SockOptName::SocketError),
            Ok(SockOpt::SocketError(None))
        );
        let mut u = SockState::new(Protocol::Udp);
        assert_eq!(u.set(SockOpt::NoDelay(true)), Err(Error::NotSupported));
        u.set(SockOpt::Broadcast(true)).unwrap();
    }

    #[test]
    fn durations_keep_their_microseconds() {
        let mut s = SockState::new(Protocol::Tcp);
        assert_eq!(s.get(SockOptName::Linger), Ok(SockOpt::Linger(None)));
        assert_eq!(
            s.get(SockOptName::KeepInterval),
            Ok(SockOpt::KeepInterval(Duration::from_secs(75)))
        );
        s.set(SockOpt::Linger(Some(Duration::ZERO))).unwrap();
        assert_eq!(s.linger(), Some(Duration::ZERO));
        s.set(SockOpt::Linger(Some(Duration::MAX))).unwrap();
        assert!(s.linger().is_some(), "a huge linger is not 'off'");
        s.set(SockOpt::SendTimeout(Some(Duration::from_nanos(1))))
            .unwrap();
        assert_eq!(s.send_timeout(), Some(Duration::from_micros(1)));
        s.set(SockOpt::RecvTimeout(Some(Duration::from_micros(1500))))
            .unwrap();
        assert_eq!(s.recv_timeout(), Some(Duration::from_micros(1500)));
        s.set(SockOpt::KeepInterval(Duration::from_nanos(10)))
            .unwrap();
        assert_eq!(s.keep_interval(), Duration::from_micros(1));
    }

    #[test]
    fn address_and_flag_rules() {
        assert_eq!(
            check_send_flags(MsgFlags::PEEK),
            Err(Error::InvalidArgument)
        );
        assert_eq!(
            check_send_flags(MsgFlags::from_bits(0x100)),
            Err(Error::InvalidArgument)
        );
        assert_eq!(check_send_flags(MsgFlags::DONTWAIT), Ok(()));
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(ipv4(v6), Err(Error::FamilyNotSupported));
        let a = ipv4("10.0.0.1:80".parse().unwrap()).unwrap();
        assert_eq!(check_remote(a), Ok(()));
        assert_eq!(
            check_remote("0.0.0.0:80".parse().unwrap()),
            Err(Error::AddrNotAvailable)
        );
        assert_eq!(
            check_remote("10.0.0.1:0".parse().unwrap()),
            Err(Error::InvalidArgument)
        );
    }

    #[test]
    fn blocking_modes() {
        let mut s = SockState::new(Protocol::Tcp);
        let now = Instant::from_millis(100);
        assert_eq!(
            s.blocking(
                MsgFlags::DONTWAIT,
                Deadline::Never,
                Side::Recv,
                now,
                Error::WouldBlock
            ),
            Blocking::No(Error::WouldBlock)
        );
        s.set(SockOpt::RecvTimeout(Some(Duration::from_millis(50))))
            .unwrap();
        assert_eq!(
            s.blocking(
                MsgFlags::NONE,
                Deadline::Never,
                Side::Recv,
                now,
                Error::WouldBlock
            ),
            Blocking::Until(Deadline::At(Instant::from_millis(150)))
        );
        assert_eq!(
            s.blocking(
                MsgFlags::NONE,
                Deadline::Never,
                Side::Send,
                now,
                Error::WouldBlock
            ),
            Blocking::Until(Deadline::Never)
        );
        s.nonblocking = true;
        assert_eq!(
            s.blocking(
                MsgFlags::NONE,
                Deadline::Never,
                Side::Send,
                now,
                Error::InProgress
            ),
            Blocking::No(Error::InProgress)
        );
    }
}
