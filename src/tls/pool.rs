//! Record buffers for TLS connections, allocated up front.

use core::marker::PhantomData;
use core::ptr::NonNull;

use super::io::IoCtx;

/// Default read buffer per connection: the largest TLS 1.3 record
/// (16 KiB of plaintext plus 256 bytes of overhead).
pub const READ_BUFFER_LEN: usize = 16_384 + 256;

/// Default write buffer per connection: 4 KiB of plaintext per record plus
/// embedded-tls's 133 bytes of record overhead (it reserves 128 and puts the
/// 5-byte header in front). Larger buffers send fewer, larger records.
pub const WRITE_BUFFER_LEN: usize = 4096 + 133;

/// Smallest write buffer accepted: it must also hold the ClientHello.
pub const MIN_WRITE_BUFFER_LEN: usize = 512;

/// The buffers of one TLS connection: `RX` bytes to receive a record in,
/// `TX` bytes to build one in.
pub struct TlsBuffers<const RX: usize, const TX: usize> {
    rx: [u8; RX],
    tx: [u8; TX],
    ctx: spin::Mutex<IoCtx>,
}

impl<const RX: usize, const TX: usize> TlsBuffers<RX, TX> {
    // Only used as the repeat operand that builds `TlsPool::new`'s array.
    #[allow(clippy::declare_interior_mutable_const)]
    const NEW: Self = TlsBuffers {
        rx: [0; RX],
        tx: [0; TX],
        ctx: spin::Mutex::new(IoCtx::IDLE),
    };
}

/// Memory for `N` TLS connections at once, handed to
/// [`SoftTls::new`](super::SoftTls::new) for the wrapper's lifetime. A TLS
/// socket holds one set of buffers from `socket()` to `close()`; with all
/// `N` in use, `socket(.., Protocol::Tls)` fails with `NoMoreSockets`.
///
/// Each connection takes `RX + TX` bytes plus a few words. The defaults
/// ([`READ_BUFFER_LEN`], [`WRITE_BUFFER_LEN`]) work with any server; with
/// [`TlsConfig::with_max_fragment`](super::TlsConfig::with_max_fragment)
/// `RX` can shrink to [`TlsConfig::read_buffer_needed`](super::TlsConfig::read_buffer_needed).
///
/// `new` is `const`, so on bare metal the pool can be a `static` (for
/// example in a `static_cell::StaticCell`); under `std` a `Box` works.
pub struct TlsPool<
    const N: usize,
    const RX: usize = READ_BUFFER_LEN,
    const TX: usize = WRITE_BUFFER_LEN,
> {
    pub(crate) slots: [TlsBuffers<RX, TX>; N],
}

impl<const N: usize, const RX: usize, const TX: usize> TlsPool<N, RX, TX> {
    /// Zeroed buffers for `N` connections.
    pub const fn new() -> Self {
        TlsPool {
            slots: [TlsBuffers::NEW; N],
        }
    }

    /// Bytes of buffer memory the pool holds.
    pub const fn buffer_bytes(&self) -> usize {
        N * (RX + TX)
    }
}

impl<const N: usize, const RX: usize, const TX: usize> Default for TlsPool<N, RX, TX> {
    fn default() -> Self {
        Self::new()
    }
}

/// The parts of one pool slot a connection slot keeps.
pub(crate) struct SlotMemory<'a> {
    pub rx: RawBuf<'a>,
    pub tx: RawBuf<'a>,
    pub ctx: &'a spin::Mutex<IoCtx>,
}

impl<const N: usize, const RX: usize, const TX: usize> TlsPool<N, RX, TX> {
    /// Split the pool into per-connection memory for the borrow's lifetime.
    pub(crate) fn split(&mut self) -> [SlotMemory<'_>; N] {
        let mut it = self.slots.iter_mut();
        core::array::from_fn(|_| {
            let TlsBuffers { rx, tx, ctx } = it.next().expect("N slots");
            SlotMemory {
                rx: RawBuf::new(rx),
                tx: RawBuf::new(tx),
                ctx,
            }
        })
    }
}

/// A buffer borrowed mutably for `'a`, kept as a raw pointer so that the one
/// connection using it at a time can get a fresh `&'a mut` to it, and the
/// next connection another one after the first is gone (embedded-tls keeps
/// the slices it is given and never hands them back).
pub(crate) struct RawBuf<'a> {
    ptr: NonNull<u8>,
    len: usize,
    _borrow: PhantomData<&'a mut [u8]>,
}

// SAFETY: a RawBuf stands for the unique `&'a mut [u8]` it was made from,
// which is `Send`; it is only turned back into a slice by its owner.
unsafe impl Send for RawBuf<'_> {}

impl<'a> RawBuf<'a> {
    fn new(buf: &'a mut [u8]) -> Self {
        RawBuf {
            len: buf.len(),
            ptr: NonNull::from(buf).cast(),
            _borrow: PhantomData,
        }
    }

    /// The first `len` bytes (at most the whole buffer) as a slice.
    ///
    /// # Safety
    ///
    /// No slice obtained earlier from this buffer may still be in use: the
    /// caller keeps at most one connection per buffer and drops it before
    /// asking again.
    pub unsafe fn take(&mut self, len: usize) -> &'a mut [u8] {
        // SAFETY: `ptr`/`len` come from a `&'a mut [u8]` that nobody else
        // can reach for `'a` (the pool is mutably borrowed), and the caller
        // guarantees no other slice made from it is alive.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), len.min(self.len)) }
    }
}
