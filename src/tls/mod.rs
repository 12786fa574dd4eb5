//! TLS 1.3 in software over any backend (feature `tls`): [`SoftTls`].
//!
//! [`SoftTls`] wraps a [`Netdever`] and is itself one. A socket opened with
//! [`Protocol::Tls`] is a TCP socket of the wrapped device that, after
//! `connect`, speaks TLS 1.3 ([embedded-tls] over the TCP socket); every
//! other socket, and every call on it, goes straight through. This is how
//! the full stack and the W5500 offload get `IPPROTO_TLS`
//! ([`TlsSupport::Software`]); co-processors that do TLS themselves (ESP-AT)
//! report [`TlsSupport::Firmware`] and need no wrapper.
//!
//! ```no_run
//! # #[cfg(feature = "std")]
//! # fn demo<D>(dev: D, ca_pem: &str) -> netdever::Result<()>
//! # where D: netdever::Netdever + Clone + Send {
//! use netdever::net::TcpStream;
//! use netdever::tls::{pem_certificates, SoftTls, TlsConfig, TlsPool};
//! use netdever::{Deadline, Protocol, SocketAddr};
//!
//! let ders = pem_certificates(ca_pem)?; // trusted CA(s), DER
//! let cas: Vec<&[u8]> = ders.iter().map(|d| d.as_slice()).collect();
//! let mut pool = Box::new(TlsPool::<2>::new()); // buffers for 2 connections
//! let tls = SoftTls::with_os_rng(dev, &mut pool, TlsConfig::new(&cas))?;
//!
//! let addr: SocketAddr = "10.0.0.1:443".parse().unwrap();
//! let s = TcpStream::connect_proto(&tls, Protocol::Tls, Some("tls.test"), addr, Deadline::Never)?;
//! s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
//! let mut buf = [0u8; 512];
//! let n = s.read(&mut buf)?;
//! # let _ = n; Ok(()) }
//! ```
//!
//! # Connecting
//!
//! `connect(fd, host, addr, deadline)` connects TCP, then runs the
//! handshake: cipher suite TLS_AES_128_GCM_SHA256, key exchange on
//! secp256r1, SNI = `host` (unless it is an IP literal). With
//! [`Verify::Cas`] the server's chain must lead to one of the given CA
//! certificates, every certificate above the leaf must be a CA
//! (basicConstraints), the leaf must name `host` by RFC 6125 (an IP
//! literal an iPAddress SAN; a DNS name one of its DNS SANs, `*.` matching
//! one leftmost label, or the CN when there are no DNS SANs), and, when a clock is configured, every certificate must be
//! within its validity dates. Any of these failing is
//! [`Error::CertificateInvalid`]; other handshake failures (alerts, no
//! common parameters, bad records) are [`Error::Tls`]; transport failures
//! keep their own error (`Timeout`, `ConnectionRefused`, ...). Verification
//! needs a host name: `None` (or longer than 64 bytes) is
//! `InvalidArgument` unless the configuration is the explicitly insecure
//! [`TlsConfig::insecure_no_verify`]. A TLS `connect` always blocks until
//! the handshake is done, the deadline, or `SendTimeout` (there is no
//! background handshake, so `NonBlocking` does not apply to it). After a
//! failed handshake the socket can only be closed.
//!
//! Signature algorithms: ECDSA P-256/SHA-256 and P-384/SHA-384 and Ed25519,
//! for certificates and for the handshake signature. RSA is not offered (it
//! needs an allocator in embedded-tls). A server chain may be up to
//! [`MAX_CHAIN_LEN`] bytes.
//!
//! # Data, deadlines and non-blocking mode
//!
//! `send` encrypts at most one record (the write buffer's plaintext
//! capacity, 4 KiB by default) and returns how much it took; `recv` returns
//! decrypted bytes, `Ok(0)` once the server sent close_notify or ended TCP
//! at a record boundary (an end inside a record is `Error::Tls`; like Go's
//! TLS, a TCP end without close_notify is taken as the end of data, so
//! protocols that care about truncation need their own length framing).
//! After the server's end, `send` is `BrokenPipe`. `PEEK`
//! and `DONTWAIT` work as on TCP. `NonBlocking`, `RecvTimeout` and
//! `SendTimeout` belong to the TLS socket; the other options pass through
//! to the TCP socket.
//!
//! embedded-tls cannot stop half-way through a record, so the calls wait
//! the way the caller asked only *between* records. Once a record has
//! started to arrive or to leave, the call finishes it, waiting up to
//! [`TlsConfig::with_record_grace`] (default 10 s) past its deadline — also
//! in non-blocking mode. A peer that stalls longer than that inside a
//! record tears the connection: that call fails (usually `Timeout`) and
//! later ones `ConnectionAborted`. A `send` that would block before its
//! record left sends nothing (`WouldBlock` / `Timeout`), so retrying is safe.
//!
//! `poll` reports `READABLE` for a TLS socket with decrypted data already
//! buffered (or at its end), and otherwise whatever the TCP socket reports.
//! As with any TLS library, TCP readability may be a partial record or a
//! session ticket, so a `DONTWAIT` `recv` after it can still be `WouldBlock`,
//! or wait (bounded by the grace) for the rest of a record.
//!
//! `shutdown(Read)` ends receiving, `shutdown(Both)` sends close_notify and
//! a TCP FIN. `shutdown(Write)` alone (a TLS half-close) is `NotSupported`:
//! embedded-tls cannot send close_notify and keep receiving. `close` sends
//! close_notify if the TCP socket has room (best effort, no waiting), then
//! closes the TCP socket (honouring `Linger`) and frees the buffers.
//! Listening and accepting on TLS sockets is `NotSupported` (client only).
//!
//! # Memory
//!
//! No allocator. Record buffers come from a [`TlsPool`] the caller owns for
//! the wrapper's lifetime: `N` connections × (`RX` + `TX`) bytes, by
//! default 16 640 + 4 229 bytes each. With all `N` in use, `socket(..,
//! Protocol::Tls)` is `NoMoreSockets`. [`TlsConfig::with_max_fragment`]
//! negotiates smaller records (RFC 6066) so `RX` can shrink to
//! [`TlsConfig::read_buffer_needed`] (e.g. 1 280 bytes for 1 KiB records);
//! sent records are then cut to the same size. Besides the pool, the
//! wrapper keeps about 1.5 KiB of TLS state (keys, hashes) per slot, and a
//! handshake needs several KiB of stack on top (the verifier keeps a copy
//! of the server's chain, up to [`MAX_CHAIN_LEN`] bytes).
//!
//! # Locking and concurrency
//!
//! The wrapper never holds the wrapped device's lock (it only calls its
//! public methods). Each TLS socket has its own lock around its TLS state:
//! one socket's sends and receives take turns, but nobody waits for the
//! network with it held *between* records — a blocked `recv` waits for TCP
//! readability unlocked, so another thread can `send` on the same socket
//! meanwhile (a reader thread plus a writer thread work). While a record is
//! in flight the lock is held until it is done (bounded by the grace). The
//! random number generator is shared behind a lock taken per request.
//! Different TLS sockets never wait for each other.
//!
//! Without `std` the lock is a spin lock ([`DefaultRawMutex`]); pass your
//! own `lock_api::RawMutex` as `M` to change it.
//!
//! # Random numbers and time
//!
//! Key shares and client randoms come from the `rand_core` 0.6
//! `CryptoRng + RngCore` given to [`SoftTls::new`] (under `std`,
//! [`SoftTls::with_os_rng`] uses the OS). Certificate validity is checked
//! against the configured [`WallClock`]: the system clock under `std`,
//! none by default without `std` (dates are then not checked — give one
//! with [`TlsConfig::with_clock`], e.g. from an RTC or SNTP).
//!
//! # Limits of embedded-tls 0.19
//!
//! One cipher suite (AES-128-GCM) and one group (secp256r1) are offered,
//! no client certificates, no resumption. A KeyUpdate from the server
//! breaks the connection (`Error::Tls`); a post-handshake ServerHello,
//! Certificate or similar message makes embedded-tls panic. embedded-tls
//! also checks a name itself (its first three DNS SANs, then the CN) and
//! cannot be told not to; after our own check it is given a name from the
//! certificate, so a leaf whose first DNS SANs and CN are all no host
//! names at all (a CN like `My Device` and no DNS SAN) is refused, and a
//! DNS SAN or CN longer than 64 bytes makes the certificate unreadable.
//!
//! [embedded-tls]: https://docs.rs/embedded-tls

mod config;
mod der;
mod io;
mod names;
mod pem;
mod pool;
mod verify;

use core::sync::atomic::{AtomicI32, AtomicU8, AtomicUsize, Ordering};

use embedded_tls::blocking::{CryptoProvider, TlsConnection, TlsContext, TlsError, TlsVerifier};
use lock_api::RawMutex;
use rand_core::{CryptoRng, RngCore};

#[cfg(feature = "std")]
pub use config::system_clock;
pub use config::{MaxFragment, TlsConfig, Verify, WallClock, DEFAULT_RECORD_GRACE};
#[cfg(feature = "std")]
pub use pem::pem_certificates;
pub use pem::pem_to_der;
pub use pool::{TlsBuffers, TlsPool, MIN_WRITE_BUFFER_LEN, READ_BUFFER_LEN, WRITE_BUFFER_LEN};
pub use verify::MAX_CHAIN_LEN;

use crate::error::{Error, Result};
use crate::socketer::{Capabilities, Netdever, Socketer, TlsSupport};
use crate::sockstate::{check_flags, Side, SockState};
use crate::time::{Deadline, Instant};
use crate::types::*;
use crate::wait::Blocking;
use io::{Io, IoCtx};
use pool::RawBuf;
use verify::{ChainVerifier, Suite};

/// The lock used by default for per-socket state: `parking_lot` under
/// `std`, a spin lock without.
#[cfg(feature = "std")]
pub type DefaultRawMutex = parking_lot::RawMutex;
/// The lock used by default for per-socket state: `parking_lot` under
/// `std`, a spin lock without.
#[cfg(not(feature = "std"))]
pub type DefaultRawMutex = spin::mutex::Mutex<()>;

/// Longest host name a certificate can be checked against (embedded-tls).
pub const MAX_HOST_LEN: usize = 64;

/// `Slot::fd` of a slot nobody uses.
const FREE: i32 = -1;
/// `Slot::fd` of a slot being set up.
const RESERVED: i32 = -2;
/// `Slot::flags`: nothing more to read (close_notify, EOF or shutdown).
const READ_DONE: u8 = 1;
/// `Slot::flags`: the connection is broken.
const BROKEN: u8 = 2;

type Conn<'a, D> = TlsConnection<'a, Io<'a, D>, Suite>;

enum State<'a, D: Socketer> {
    /// Not connected yet.
    Idle,
    /// Handshake done; data flows.
    Open(Conn<'a, D>),
    /// The server ended its side (close_notify or TCP EOF); ours is kept
    /// to answer close_notify at `close`.
    PeerClosed(Conn<'a, D>),
    /// We sent close_notify (`shutdown(Both)`).
    Done,
    /// The handshake failed; the socket can only be closed.
    Failed,
    /// The stream broke inside a record or carried garbage.
    Broken,
}

struct SlotConn<'a, D: Socketer> {
    fd: Option<Sockfd>,
    rx: RawBuf<'a>,
    tx: RawBuf<'a>,
    state: State<'a, D>,
}

struct Slot<'a, D: Socketer, M: RawMutex> {
    /// The fd using this slot, or `FREE` / `RESERVED` (lock-free lookup).
    fd: AtomicI32,
    /// Decrypted bytes waiting to be read (for `poll`).
    buffered: AtomicUsize,
    /// `READ_DONE` | `BROKEN` (for `poll`).
    flags: AtomicU8,
    /// Wait rules for the transport of this slot's connection.
    ctx: &'a spin::Mutex<IoCtx>,
    /// Options the TLS socket owns (blocking mode, timeouts, error, shutdown).
    opts: lock_api::Mutex<M, SockState>,
    /// The TLS state, held for whole TLS operations.
    conn: lock_api::Mutex<M, SlotConn<'a, D>>,
}

/// TLS 1.3 in software over the TCP sockets of `D` (see the [module
/// docs](self)): a [`Netdever`] (and [`Netlinker`](crate::Netlinker) when
/// `D` is one) that serves `Protocol::Tls` sockets and passes everything
/// else through.
///
/// * `D`: the wrapped device, by handle (`&Stack`, `HostStack`, `Arc<..>`):
///   each connection keeps a clone of it.
/// * `R`: the random number generator.
/// * `N`: how many TLS sockets can be open at once (the pool size).
/// * `M`: the lock for per-socket TLS state.
pub struct SoftTls<'a, D: Netdever, R, const N: usize, M: RawMutex = DefaultRawMutex> {
    dev: D,
    config: TlsConfig<'a>,
    rng: lock_api::Mutex<M, R>,
    slots: [Slot<'a, D, M>; N],
}

/// Hands embedded-tls the shared random number generator, locking it per
/// request only.
struct SharedRng<'r, M: RawMutex, R>(&'r lock_api::Mutex<M, R>);

impl<M: RawMutex, R: RngCore> RngCore for SharedRng<'_, M, R> {
    fn next_u32(&mut self) -> u32 {
        self.0.lock().next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.lock().next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.lock().fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> core::result::Result<(), rand_core::Error> {
        self.0.lock().try_fill_bytes(dest)
    }
}

impl<M: RawMutex, R: CryptoRng> CryptoRng for SharedRng<'_, M, R> {}

/// What embedded-tls asks for during one handshake.
struct Provider<'p, 'v, M: RawMutex, R> {
    rng: &'p lock_api::Mutex<M, R>,
    verifier: Option<&'p mut ChainVerifier<'v>>,
}

impl<M: RawMutex, R: RngCore + CryptoRng> CryptoProvider for Provider<'_, '_, M, R> {
    type CipherSuite = Suite;
    type Signature = &'static [u8];

    fn rng(&mut self) -> impl rand_core::CryptoRngCore {
        SharedRng(self.rng)
    }

    fn verifier(&mut self) -> core::result::Result<&mut impl TlsVerifier<Suite>, TlsError> {
        match &mut self.verifier {
            Some(v) => Ok(&mut **v),
            // No verifier: embedded-tls skips the certificate checks.
            None => Err(TlsError::Unimplemented),
        }
    }
}

/// The later of two deadlines.
fn later(a: Deadline, b: Deadline) -> Deadline {
    match (a, b) {
        (Deadline::At(x), Deadline::At(y)) => Deadline::At(x.max(y)),
        _ => Deadline::Never,
    }
}

impl<'a, D: Netdever, R, const N: usize, M: RawMutex> SoftTls<'a, D, R, N, M> {
    /// The slot of a TLS fd, `None` for any other fd.
    fn slot(&self, fd: Sockfd) -> Option<&Slot<'a, D, M>> {
        if fd.raw() < 0 {
            return None;
        }
        self.slots
            .iter()
            .find(|s| s.fd.load(Ordering::Acquire) == fd.raw())
    }

    /// Lock a slot's TLS state, checking it still belongs to `fd`.
    fn lock_conn<'s>(
        &self,
        slot: &'s Slot<'a, D, M>,
        fd: Sockfd,
    ) -> Result<lock_api::MutexGuard<'s, M, SlotConn<'a, D>>> {
        let g = slot.conn.lock();
        if g.fd != Some(fd) {
            return Err(Error::InvalidSockfd);
        }
        Ok(g)
    }

    /// Lock a slot's options, checking they still belong to `fd`.
    fn lock_opts<'s>(
        &self,
        slot: &'s Slot<'a, D, M>,
        fd: Sockfd,
    ) -> Result<lock_api::MutexGuard<'s, M, SockState>> {
        let g = slot.opts.lock();
        if slot.fd.load(Ordering::Acquire) != fd.raw() {
            return Err(Error::InvalidSockfd);
        }
        Ok(g)
    }

    /// Run one TLS operation with the given wait rules; returns its result
    /// and what the transport saw.
    fn run<T>(
        slot: &Slot<'a, D, M>,
        boundary: Blocking,
        mid: Deadline,
        op: impl FnOnce() -> core::result::Result<T, TlsError>,
    ) -> (core::result::Result<T, TlsError>, IoCtx) {
        *slot.ctx.lock() = IoCtx::begin(boundary, mid);
        let r = op();
        let seen = core::mem::replace(&mut *slot.ctx.lock(), IoCtx::IDLE);
        (r, seen)
    }

    /// Until when a record under way may take: the call's deadline, but at
    /// least the record grace from now.
    fn mid_deadline(&self, blocking: Blocking) -> Deadline {
        let grace = Deadline::after(self.dev.now(), self.config.record_grace);
        match blocking {
            Blocking::Until(d) => later(d, grace),
            Blocking::No(_) => grace,
        }
    }

    fn blocking(
        &self,
        slot: &Slot<'a, D, M>,
        fd: Sockfd,
        flags: MsgFlags,
        deadline: Deadline,
        side: Side,
    ) -> Result<Blocking> {
        let now = self.dev.now();
        Ok(self
            .lock_opts(slot, fd)?
            .blocking(flags, deadline, side, now, Error::WouldBlock))
    }

    /// Wait, without any lock, until the TCP socket is ready for `events`.
    fn wait_ready(&self, fd: Sockfd, events: Events, deadline: Deadline) -> Result<()> {
        let mut p = [PollFd::new(fd, events)];
        match self.dev.poll(&mut p, deadline)? {
            0 => Err(Error::Timeout),
            _ => Ok(()),
        }
    }

    /// Mark a connection broken after `e`.
    fn break_conn(slot: &Slot<'a, D, M>, g: &mut SlotConn<'a, D>, opts_error: Error) {
        g.state = State::Broken;
        slot.buffered.store(0, Ordering::Release);
        slot.flags.fetch_or(BROKEN, Ordering::AcqRel);
        slot.opts.lock().error.get_or_insert(opts_error);
    }

    /// Send close_notify if the TCP socket takes it without waiting.
    fn close_notify(&self, slot: &Slot<'a, D, M>, conn: Conn<'a, D>) {
        let mid = Deadline::after(self.dev.now(), self.config.record_grace);
        let _ = Self::run(slot, Blocking::No(Error::WouldBlock), mid, || {
            conn.close().map(drop).map_err(|(_, e)| e)
        });
    }

    fn tls_close(&self, slot: &Slot<'a, D, M>, fd: Sockfd) -> Result<()> {
        let mut g = self.lock_conn(slot, fd)?;
        match core::mem::replace(&mut g.state, State::Idle) {
            State::Open(conn) | State::PeerClosed(conn) => self.close_notify(slot, conn),
            _ => {}
        }
        let r = self.dev.close(fd);
        g.fd = None;
        drop(g);
        let mut opts = slot.opts.lock();
        *opts = SockState::new(Protocol::Tls);
        slot.buffered.store(0, Ordering::Release);
        slot.flags.store(0, Ordering::Release);
        slot.fd.store(FREE, Ordering::Release);
        drop(opts);
        r
    }

    fn tls_shutdown(&self, slot: &Slot<'a, D, M>, fd: Sockfd, how: Shutdown) -> Result<()> {
        if how == Shutdown::Write {
            return Err(Error::NotSupported);
        }
        let mut g = self.lock_conn(slot, fd)?;
        if matches!(g.state, State::Idle | State::Failed) {
            return Err(Error::NotConnected);
        }
        if how == Shutdown::Both {
            match core::mem::replace(&mut g.state, State::Done) {
                State::Open(conn) | State::PeerClosed(conn) => self.close_notify(slot, conn),
                State::Broken => g.state = State::Broken,
                _ => {}
            }
        }
        {
            let mut o = slot.opts.lock();
            o.shut_rd = true;
            o.shut_wr |= how == Shutdown::Both;
        }
        slot.flags.fetch_or(READ_DONE, Ordering::AcqRel);
        drop(g);
        match self.dev.shutdown(fd, how) {
            Err(Error::NotConnected) => Ok(()),
            r => r,
        }
    }
}

impl<'a, D, R, const N: usize, M> SoftTls<'a, D, R, N, M>
where
    D: Netdever + Clone + Send,
    R: RngCore + CryptoRng + Send,
    M: RawMutex + Send + Sync,
{
    /// [`SoftTls::new`] with a lock type `M` of your choice for the
    /// per-socket state (name the type: `let t: SoftTls<_, _, 2, MyLock> =
    /// SoftTls::with_lock(..)`).
    pub fn with_lock<const RX: usize, const TX: usize>(
        dev: D,
        pool: &'a mut TlsPool<N, RX, TX>,
        config: TlsConfig<'a>,
        rng: R,
    ) -> Result<Self> {
        if RX < config.read_buffer_needed() || TX < MIN_WRITE_BUFFER_LEN {
            return Err(Error::InvalidArgument);
        }
        let slots = pool.split().map(|m| Slot {
            fd: AtomicI32::new(FREE),
            buffered: AtomicUsize::new(0),
            flags: AtomicU8::new(0),
            ctx: m.ctx,
            opts: lock_api::Mutex::new(SockState::new(Protocol::Tls)),
            conn: lock_api::Mutex::new(SlotConn {
                fd: None,
                rx: m.rx,
                tx: m.tx,
                state: State::Idle,
            }),
        });
        Ok(SoftTls {
            dev,
            config,
            rng: lock_api::Mutex::new(rng),
            slots,
        })
    }

    /// The wrapped device.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// The configuration.
    pub fn config(&self) -> &TlsConfig<'a> {
        &self.config
    }

    /// Whether `fd` is an open TLS socket of this wrapper.
    pub fn is_tls(&self, fd: Sockfd) -> bool {
        self.slot(fd).is_some()
    }

    /// How many more TLS sockets can be opened now.
    pub fn free_slots(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.fd.load(Ordering::Acquire) == FREE)
            .count()
    }

    fn tls_socket(&self) -> Result<Sockfd> {
        let slot = self
            .slots
            .iter()
            .find(|s| {
                s.fd.compare_exchange(FREE, RESERVED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            })
            .ok_or(Error::NoMoreSockets)?;
        let fd = match self
            .dev
            .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        {
            Ok(fd) => fd,
            Err(e) => {
                slot.fd.store(FREE, Ordering::Release);
                return Err(e);
            }
        };
        {
            let mut g = slot.conn.lock();
            g.fd = Some(fd);
            g.state = State::Idle;
        }
        let mut opts = slot.opts.lock();
        *opts = SockState::new(Protocol::Tls);
        slot.buffered.store(0, Ordering::Release);
        slot.flags.store(0, Ordering::Release);
        slot.fd.store(fd.raw(), Ordering::Release);
        drop(opts);
        Ok(fd)
    }

    fn tls_connect(
        &self,
        slot: &Slot<'a, D, M>,
        fd: Sockfd,
        host: Option<&str>,
        addr: SocketAddr,
        deadline: Deadline,
    ) -> Result<()> {
        let mut g = self.lock_conn(slot, fd)?;
        match g.state {
            State::Idle => {}
            State::Failed => return Err(Error::InvalidArgument),
            _ => return Err(Error::AlreadyConnected),
        }
        let host = host.filter(|h| !h.is_empty());
        if host.is_some_and(|h| h.len() > MAX_HOST_LEN) {
            return Err(Error::InvalidArgument);
        }
        let cas = match self.config.verify {
            Verify::Cas(cas) => Some(cas),
            Verify::DangerAcceptAnyCertificate => None,
        };
        if cas.is_some() && host.is_none() {
            return Err(Error::InvalidArgument);
        }
        // SNI carries DNS names only (RFC 6066); an IP literal is still
        // checked against the certificate's names.
        let sni = host.filter(|h| h.parse::<IpAddr>().is_err());
        let send_timeout = self.lock_opts(slot, fd)?.send_timeout();
        let deadline = deadline.with_timeout(self.dev.now(), send_timeout);

        self.dev.connect(fd, host, addr, deadline)?;

        let tx_len = match self.config.max_fragment {
            Some(m) => m.bytes() + 133,
            None => usize::MAX,
        };
        let SlotConn { rx, tx, .. } = &mut *g;
        // SAFETY: the state is Idle, so no connection holds these buffers;
        // the new one is dropped or stored in this slot's state before the
        // slot can hand them out again.
        let (rx, tx) = unsafe { (rx.take(usize::MAX), tx.take(tx_len)) };
        let io = Io::new(self.dev.clone(), fd, slot.ctx);
        let mut conn: Conn<'a, D> = TlsConnection::new(io, rx, tx);

        let mut etls = embedded_tls::blocking::TlsConfig::new();
        if let Some(name) = sni {
            etls = etls.with_server_name(name);
        }
        if let Some(m) = self.config.max_fragment {
            etls = etls.with_max_fragment_length(m.to_etls());
        }
        if let Some(alpn) = self.config.alpn {
            etls = etls.with_alpn(alpn);
        }
        let mut verifier = match (cas, host) {
            (Some(cas), Some(h)) => Some(ChainVerifier::new(cas, h, self.config.clock)),
            _ => None,
        };
        let provider = Provider {
            rng: &self.rng,
            verifier: verifier.as_mut(),
        };
        let (r, seen) = Self::run(slot, Blocking::Until(deadline), deadline, || {
            conn.open(TlsContext::new(&etls, provider))
        });
        let rejected = verifier.as_ref().is_some_and(|v| v.rejected);
        let outcome = match r {
            Ok(()) if verifier.as_ref().is_none_or(ChainVerifier::complete) => Ok(()),
            // The server skipped its certificate or its signature.
            Ok(()) => Err(Error::CertificateInvalid),
            Err(_) if rejected => Err(Error::CertificateInvalid),
            Err(_) => Err(match seen.error {
                Some(e) => e,
                None => Error::Tls,
            }),
        };
        match outcome {
            Ok(()) => {
                g.state = State::Open(conn);
                Ok(())
            }
            Err(e) => {
                drop(conn);
                g.state = State::Failed;
                drop(g);
                let _ = self.dev.shutdown(fd, Shutdown::Both);
                Err(e)
            }
        }
    }

    fn tls_send(
        &self,
        slot: &Slot<'a, D, M>,
        fd: Sockfd,
        buf: &[u8],
        flags: MsgFlags,
        deadline: Deadline,
    ) -> Result<usize> {
        check_flags(flags)?;
        if flags.contains(MsgFlags::PEEK) {
            return Err(Error::InvalidArgument);
        }
        let blocking = self.blocking(slot, fd, flags, deadline, Side::Send)?;
        let mid = self.mid_deadline(blocking);
        loop {
            {
                let mut g = self.lock_conn(slot, fd)?;
                let conn = match &mut g.state {
                    State::Open(c) => c,
                    State::Idle | State::Failed => return Err(Error::NotConnected),
                    State::PeerClosed(_) | State::Done => return Err(Error::BrokenPipe),
                    State::Broken => return Err(Error::ConnectionAborted),
                };
                if buf.is_empty() {
                    return Ok(0);
                }
                let (r, seen) = Self::run(slot, Blocking::No(Error::WouldBlock), mid, || {
                    let n = conn.write(buf)?;
                    conn.flush()?;
                    Ok(n)
                });
                match r {
                    Ok(n) => return Ok(n),
                    Err(_) if seen.torn => {
                        let e = seen.error.unwrap_or(Error::ConnectionAborted);
                        Self::break_conn(slot, &mut g, Error::ConnectionAborted);
                        return Err(e);
                    }
                    // Nothing of the record left: wait for room, unlocked.
                    Err(_) if seen.error == Some(Error::WouldBlock) => {}
                    Err(_) if seen.error.is_some() => {
                        return Err(seen.error.unwrap_or(Error::Tls));
                    }
                    Err(TlsError::MissingHandshake) => return Err(Error::BrokenPipe),
                    Err(_) => {
                        Self::break_conn(slot, &mut g, Error::Tls);
                        return Err(Error::Tls);
                    }
                }
            }
            match blocking {
                Blocking::No(e) => return Err(e),
                Blocking::Until(d) => self.wait_ready(fd, Events::WRITABLE, d)?,
            }
        }
    }

    fn tls_recv(
        &self,
        slot: &Slot<'a, D, M>,
        fd: Sockfd,
        buf: &mut [u8],
        flags: MsgFlags,
        deadline: Deadline,
    ) -> Result<usize> {
        check_flags(flags)?;
        if buf.is_empty() {
            return Err(Error::InvalidArgument);
        }
        let peek = flags.contains(MsgFlags::PEEK);
        let blocking = self.blocking(slot, fd, flags, deadline, Side::Recv)?;
        let mid = self.mid_deadline(blocking);
        loop {
            {
                let mut g = self.lock_conn(slot, fd)?;
                if self.lock_opts(slot, fd)?.shut_rd {
                    return Ok(0);
                }
                let conn = match &mut g.state {
                    State::Open(c) => c,
                    State::Idle | State::Failed => return Err(Error::NotConnected),
                    State::PeerClosed(_) | State::Done => return Ok(0),
                    State::Broken => return Err(Error::ConnectionAborted),
                };
                let (r, seen) = Self::run(slot, Blocking::No(Error::WouldBlock), mid, || {
                    let mut data = conn.read_buffered()?;
                    let n = if peek {
                        let s = data.peek(buf.len());
                        buf[..s.len()].copy_from_slice(s);
                        s.len()
                    } else {
                        data.pop_into(buf)
                    };
                    Ok((n, data.len()))
                });
                match r {
                    Ok((n, left)) => {
                        slot.buffered.store(left, Ordering::Release);
                        return Ok(n);
                    }
                    Err(_) if seen.torn => {
                        // Cut inside a record (EOF, reset or the grace ran out).
                        let e = seen.error.unwrap_or(Error::Tls);
                        Self::break_conn(slot, &mut g, Error::ConnectionAborted);
                        return Err(e);
                    }
                    Err(e) if matches!(e, TlsError::ConnectionClosed) || seen.eof => {
                        // close_notify, or TCP EOF between records.
                        if let State::Open(c) = core::mem::replace(&mut g.state, State::Done) {
                            g.state = State::PeerClosed(c);
                        }
                        slot.buffered.store(0, Ordering::Release);
                        slot.flags.fetch_or(READ_DONE, Ordering::AcqRel);
                        return Ok(0);
                    }
                    Err(_) if seen.error == Some(Error::WouldBlock) => {}
                    Err(_) if seen.error.is_some() => {
                        return Err(seen.error.unwrap_or(Error::Tls));
                    }
                    Err(_) => {
                        // A record that does not decrypt, an alert, ...
                        Self::break_conn(slot, &mut g, Error::Tls);
                        return Err(Error::Tls);
                    }
                }
            }
            match blocking {
                Blocking::No(e) => return Err(e),
                Blocking::Until(d) => self.wait_ready(fd, Events::READABLE, d)?,
            }
        }
    }

    /// Readiness the TLS layer knows of by itself (buffered data, end, breakage).
    fn local_events(&self, p: &PollFd) -> Events {
        let Some(slot) = self.slot(p.fd) else {
            return Events::NONE;
        };
        let flags = slot.flags.load(Ordering::Acquire);
        let mut ev = Events::NONE;
        if slot.buffered.load(Ordering::Acquire) > 0 || flags & READ_DONE != 0 {
            ev |= Events::READABLE;
        }
        if flags & BROKEN != 0 {
            ev |= Events::ERROR;
        }
        ev & (p.events | Events::ERROR | Events::HANGUP)
    }
}

impl<'a, D, R, const N: usize> SoftTls<'a, D, R, N>
where
    D: Netdever + Clone + Send,
    R: RngCore + CryptoRng + Send,
{
    /// Wrap `dev`, with record buffers for `N` connections from `pool`, the
    /// trust settings in `config`, and `rng` for key shares and randoms.
    ///
    /// `InvalidArgument` if the pool's read buffers are smaller than the
    /// configuration needs ([`TlsConfig::read_buffer_needed`]) or its write
    /// buffers smaller than [`MIN_WRITE_BUFFER_LEN`].
    pub fn new<const RX: usize, const TX: usize>(
        dev: D,
        pool: &'a mut TlsPool<N, RX, TX>,
        config: TlsConfig<'a>,
        rng: R,
    ) -> Result<Self> {
        Self::with_lock(dev, pool, config, rng)
    }
}

#[cfg(feature = "std")]
impl<'a, D, const N: usize> SoftTls<'a, D, rand_core::OsRng, N>
where
    D: Netdever + Clone + Send,
{
    /// [`SoftTls::new`] with the operating system's random number generator.
    pub fn with_os_rng<const RX: usize, const TX: usize>(
        dev: D,
        pool: &'a mut TlsPool<N, RX, TX>,
        config: TlsConfig<'a>,
    ) -> Result<Self> {
        Self::new(dev, pool, config, rand_core::OsRng)
    }
}

impl<'a, D: Netdever, R, const N: usize, M: RawMutex> Drop for SoftTls<'a, D, R, N, M> {
    /// Close every TLS socket still open (close_notify best effort).
    fn drop(&mut self) {
        for i in 0..N {
            let raw = self.slots[i].fd.load(Ordering::Acquire);
            if raw >= 0 {
                let _ = self.tls_close(&self.slots[i], Sockfd::from_raw(raw));
            }
        }
    }
}

impl<'a, D, R, const N: usize, M> Socketer for SoftTls<'a, D, R, N, M>
where
    D: Netdever + Clone + Send,
    R: RngCore + CryptoRng + Send,
    M: RawMutex + Send + Sync,
{
    fn socket(&self, family: AddressFamily, ty: SockType, proto: Protocol) -> Result<Sockfd> {
        if proto != Protocol::Tls {
            return self.dev.socket(family, ty, proto);
        }
        if family != AddressFamily::Inet {
            return Err(Error::FamilyNotSupported);
        }
        if ty != SockType::Stream {
            return Err(Error::TypeNotSupported);
        }
        self.tls_socket()
    }

    fn bind(&self, fd: Sockfd, addr: SocketAddr) -> Result<()> {
        self.dev.bind(fd, addr)
    }

    fn connect(
        &self,
        fd: Sockfd,
        host: Option<&str>,
        addr: SocketAddr,
        deadline: Deadline,
    ) -> Result<()> {
        match self.slot(fd) {
            Some(slot) => self.tls_connect(slot, fd, host, addr, deadline),
            None => self.dev.connect(fd, host, addr, deadline),
        }
    }

    fn listen(&self, fd: Sockfd, backlog: usize) -> Result<()> {
        match self.slot(fd) {
            Some(_) => Err(Error::NotSupported),
            None => self.dev.listen(fd, backlog),
        }
    }

    fn accept(&self, fd: Sockfd, deadline: Deadline) -> Result<(Sockfd, SocketAddr)> {
        match self.slot(fd) {
            Some(_) => Err(Error::NotSupported),
            None => self.dev.accept(fd, deadline),
        }
    }

    fn send(&self, fd: Sockfd, buf: &[u8], flags: MsgFlags, deadline: Deadline) -> Result<usize> {
        match self.slot(fd) {
            Some(slot) => self.tls_send(slot, fd, buf, flags, deadline),
            None => self.dev.send(fd, buf, flags, deadline),
        }
    }

    fn send_to(
        &self,
        fd: Sockfd,
        buf: &[u8],
        flags: MsgFlags,
        addr: SocketAddr,
        deadline: Deadline,
    ) -> Result<usize> {
        match self.slot(fd) {
            Some(slot) => {
                if self.dev.peer_addr(fd)? != addr {
                    return Err(Error::AlreadyConnected);
                }
                self.tls_send(slot, fd, buf, flags, deadline)
            }
            None => self.dev.send_to(fd, buf, flags, addr, deadline),
        }
    }

    fn recv(
        &self,
        fd: Sockfd,
        buf: &mut [u8],
        flags: MsgFlags,
        deadline: Deadline,
    ) -> Result<usize> {
        match self.slot(fd) {
            Some(slot) => self.tls_recv(slot, fd, buf, flags, deadline),
            None => self.dev.recv(fd, buf, flags, deadline),
        }
    }

    fn recv_from(
        &self,
        fd: Sockfd,
        buf: &mut [u8],
        flags: MsgFlags,
        deadline: Deadline,
    ) -> Result<(usize, SocketAddr)> {
        match self.slot(fd) {
            Some(slot) => {
                let n = self.tls_recv(slot, fd, buf, flags, deadline)?;
                let peer = self
                    .dev
                    .peer_addr(fd)
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                Ok((n, peer))
            }
            None => self.dev.recv_from(fd, buf, flags, deadline),
        }
    }

    fn shutdown(&self, fd: Sockfd, how: Shutdown) -> Result<()> {
        match self.slot(fd) {
            Some(slot) => self.tls_shutdown(slot, fd, how),
            None => self.dev.shutdown(fd, how),
        }
    }

    fn close(&self, fd: Sockfd) -> Result<()> {
        match self.slot(fd) {
            Some(slot) => self.tls_close(slot, fd),
            None => self.dev.close(fd),
        }
    }

    fn set_sock_opt(&self, fd: Sockfd, opt: SockOpt) -> Result<()> {
        match (self.slot(fd), opt) {
            (
                Some(slot),
                SockOpt::NonBlocking(_) | SockOpt::RecvTimeout(_) | SockOpt::SendTimeout(_),
            ) => self.lock_opts(slot, fd)?.set(opt),
            _ => self.dev.set_sock_opt(fd, opt),
        }
    }

    fn get_sock_opt(&self, fd: Sockfd, name: SockOptName) -> Result<SockOpt> {
        let Some(slot) = self.slot(fd) else {
            return self.dev.get_sock_opt(fd, name);
        };
        match name {
            SockOptName::NonBlocking | SockOptName::RecvTimeout | SockOptName::SendTimeout => {
                self.lock_opts(slot, fd)?.get(name)
            }
            SockOptName::SocketError => match self.lock_opts(slot, fd)?.error.take() {
                Some(e) => Ok(SockOpt::SocketError(Some(e))),
                None => self.dev.get_sock_opt(fd, name),
            },
            _ => self.dev.get_sock_opt(fd, name),
        }
    }

    fn poll(&self, fds: &mut [PollFd], deadline: Deadline) -> Result<usize> {
        if fds.iter().all(|p| self.local_events(p).is_empty()) {
            // Nothing buffered: TLS sockets are as ready as their TCP sockets.
            return self.dev.poll(fds, deadline);
        }
        // Something is ready already: take the rest as it is now, no waiting.
        self.dev.poll(fds, Deadline::At(Instant::ZERO))?;
        let mut ready = 0;
        for p in fds.iter_mut() {
            p.revents |= self.local_events(p);
            if !p.revents.is_empty() {
                ready += 1;
            }
        }
        Ok(ready)
    }

    fn local_addr(&self, fd: Sockfd) -> Result<SocketAddr> {
        self.dev.local_addr(fd)
    }

    fn peer_addr(&self, fd: Sockfd) -> Result<SocketAddr> {
        self.dev.peer_addr(fd)
    }

    fn now(&self) -> Instant {
        self.dev.now()
    }
}

impl<'a, D, R, const N: usize, M> Netdever for SoftTls<'a, D, R, N, M>
where
    D: Netdever + Clone + Send,
    R: RngCore + CryptoRng + Send,
    M: RawMutex + Send + Sync,
{
    fn get_host_by_name(&self, name: &str, family: AddressFamily) -> Result<IpAddr> {
        self.dev.get_host_by_name(name, family)
    }

    fn addr(&self) -> Result<IpAddr> {
        self.dev.addr()
    }

    fn ip_config(&self) -> Result<IpConfig> {
        self.dev.ip_config()
    }

    fn set_addr(&self, config: IpConfig) -> Result<()> {
        self.dev.set_addr(config)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            tls: TlsSupport::Software,
            ..self.dev.capabilities()
        }
    }

    /// The trust was fixed by the [`TlsConfig`] at construction: `Ok` if
    /// `trust` names the same (the same CA certificates, byte for byte, or
    /// both insecure), so app code can be the same on every backend;
    /// anything else is [`Error::NotSupported`].
    fn set_tls_trust(&self, trust: crate::TlsTrust<'_>) -> Result<()> {
        let same = match (self.config.verify, trust) {
            (Verify::Cas(mine), crate::TlsTrust::Cas(theirs)) => mine == theirs,
            (Verify::DangerAcceptAnyCertificate, crate::TlsTrust::DangerAcceptAnyCertificate) => {
                true
            }
            _ => false,
        };
        if same {
            Ok(())
        } else {
            Err(Error::NotSupported)
        }
    }
}

crate::forward_netlinker!(
    [
        'a,
        D: Netdever + crate::Netlinker + Clone + Send,
        R: RngCore + CryptoRng + Send,
        const N: usize,
        M: RawMutex + Send + Sync
    ] SoftTls<'a, D, R, N, M>,
    |self| &self.dev
);
