//! The byte stream embedded-tls reads and writes: the TCP socket of the
//! wrapped device, with per-call wait rules and TLS record framing.
//!
//! embedded-tls loses its place in the stream if a read or write fails
//! half-way through a record (it keeps no partial record header, and a
//! half-written record cannot be taken back). So the transport follows the
//! record framing of both directions and only ever gives up *between*
//! records: at a record boundary it waits as the caller's call allows
//! (possibly not at all); once a record has started to move it waits for
//! the rest up to the `mid` deadline (the call's deadline plus the record
//! grace). Failing there tears the connection ([`IoCtx::torn`]).

use crate::error::{Error, Result};
use crate::socketer::Socketer;
use crate::time::{Deadline, Instant};
use crate::types::{MsgFlags, Sockfd};
use crate::wait::Blocking;

/// TLS record header length: type, legacy version, length.
const HEADER: usize = 5;

/// Wait rules for the current call and what the transport ran into. Set by
/// the wrapper before each TLS operation and read after it; lives in the
/// pool so the transport (owned by the connection) can reach it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IoCtx {
    /// How to wait before the first byte of a record.
    pub boundary: Blocking,
    /// Until when to wait for the rest of a record once it has started.
    pub mid: Deadline,
    /// The first error the device returned during this operation.
    pub error: Option<Error>,
    /// The stream was cut inside a record: the connection is unusable.
    pub torn: bool,
    /// The peer ended the TCP stream at a record boundary.
    pub eof: bool,
}

impl IoCtx {
    /// Nothing set: give up at once everywhere.
    pub const IDLE: IoCtx = IoCtx {
        boundary: Blocking::No(Error::WouldBlock),
        mid: Deadline::At(Instant::ZERO),
        error: None,
        torn: false,
        eof: false,
    };

    /// Fresh state for one operation with these wait rules.
    pub fn begin(boundary: Blocking, mid: Deadline) -> Self {
        IoCtx {
            boundary,
            mid,
            ..Self::IDLE
        }
    }

    fn policy(&self, at_boundary: bool) -> (MsgFlags, Deadline) {
        if !at_boundary {
            return (MsgFlags::NONE, self.mid);
        }
        match self.boundary {
            Blocking::No(_) => (MsgFlags::DONTWAIT, Deadline::Never),
            Blocking::Until(d) => (MsgFlags::NONE, d),
        }
    }

    fn fail(&mut self, e: Error, torn: bool) {
        self.error.get_or_insert(e);
        self.torn |= torn;
    }
}

/// Follows record framing in one direction.
#[derive(Debug, Clone, Copy, Default)]
struct Framing {
    header: [u8; HEADER],
    /// Header bytes seen of the current record (0 at a boundary).
    seen: usize,
    /// Body bytes still to come once the header is complete.
    left: usize,
}

impl Framing {
    fn at_boundary(&self) -> bool {
        self.seen == 0 && self.left == 0
    }

    /// Most bytes that still belong to the current record part.
    fn next_len(&self) -> usize {
        if self.seen < HEADER {
            HEADER - self.seen
        } else {
            self.left
        }
    }

    fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.seen < HEADER {
                self.header[self.seen] = bytes[0];
                self.seen += 1;
                bytes = &bytes[1..];
                if self.seen == HEADER {
                    self.left = u16::from_be_bytes([self.header[3], self.header[4]]) as usize;
                    if self.left == 0 {
                        self.seen = 0;
                    }
                }
            } else {
                let n = self.left.min(bytes.len());
                self.left -= n;
                bytes = &bytes[n..];
                if self.left == 0 {
                    self.seen = 0;
                }
            }
        }
    }
}

/// The transport of one TLS connection.
pub(crate) struct Io<'a, D> {
    dev: D,
    fd: Sockfd,
    ctx: &'a spin::Mutex<IoCtx>,
    rx: Framing,
    /// Bytes of the record being written that are not sent yet.
    tx_left: usize,
}

impl<'a, D: Socketer> Io<'a, D> {
    pub fn new(dev: D, fd: Sockfd, ctx: &'a spin::Mutex<IoCtx>) -> Self {
        Io {
            dev,
            fd,
            ctx,
            rx: Framing::default(),
            tx_left: 0,
        }
    }
}

impl<D> embedded_io::ErrorType for Io<'_, D> {
    type Error = Error;
}

impl<D: Socketer> embedded_io::Read for Io<'_, D> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let boundary = self.rx.at_boundary();
        let (flags, deadline) = self.ctx.lock().policy(boundary);
        let want = buf.len().min(self.rx.next_len());
        match self.dev.recv(self.fd, &mut buf[..want], flags, deadline) {
            Ok(0) => {
                let mut c = self.ctx.lock();
                if boundary {
                    c.eof = true;
                } else {
                    c.torn = true;
                }
                Ok(0)
            }
            Ok(n) => {
                self.rx.advance(&buf[..n]);
                Ok(n)
            }
            Err(e) => {
                self.ctx.lock().fail(e, !boundary);
                Err(e)
            }
        }
    }
}

impl<D: Socketer> embedded_io::Write for Io<'_, D> {
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let boundary = self.tx_left == 0;
        if boundary {
            // embedded-tls hands over whole records: the header is at the start.
            self.tx_left = if buf.len() >= HEADER {
                HEADER + u16::from_be_bytes([buf[3], buf[4]]) as usize
            } else {
                buf.len()
            };
        }
        let (flags, deadline) = self.ctx.lock().policy(boundary);
        let want = buf.len().min(self.tx_left);
        let r = match self.dev.send(self.fd, &buf[..want], flags, deadline) {
            Ok(0) => Err(Error::Device), // the contract never returns 0 here
            r => r,
        };
        match r {
            Ok(n) => {
                self.tx_left -= n.min(self.tx_left);
                Ok(n)
            }
            Err(e) => {
                if boundary {
                    // Nothing of this record left: embedded-tls drops it and
                    // will not count it, so the stream stays consistent.
                    self.tx_left = 0;
                }
                self.ctx.lock().fail(e, !boundary);
                Err(e)
            }
        }
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_tracks_records() {
        let mut f = Framing::default();
        assert!(f.at_boundary());
        assert_eq!(f.next_len(), 5);
        f.advance(&[23, 3, 3]);
        assert!(!f.at_boundary());
        assert_eq!(f.next_len(), 2);
        f.advance(&[0, 4]);
        assert_eq!(f.next_len(), 4);
        f.advance(&[1, 2, 3]);
        assert_eq!(f.next_len(), 1);
        f.advance(&[4]);
        assert!(f.at_boundary());
        // Two records in one slice, the second empty.
        f.advance(&[23, 3, 3, 0, 1, 9, 21, 3, 3, 0, 0]);
        assert!(f.at_boundary());
    }
}
