//! TLS in the chip's firmware: `Protocol::Tls` sockets as SSL links, and
//! the app's CA certificates written into the chip's manufacturing NVS
//! partition (see the module docs of [`super`]).

use embedded_io::{Read, ReadReady, Write};

use crate::error::{Error, Result};
use crate::platform::Platform;
use crate::socketer::TlsTrust;
use crate::time::Deadline;
use crate::types::{SocketAddrV4, Sockfd};
use crate::wait::Blocking;

use super::core::{CmdPhase, Kind, Link, LinkState, Owner, Trust};
use super::{cmd, push_quoted, EspAt, Outcome, Reply, Token};

/// Longest host name for SNI and the name check (`AT+CIPSSLCSNI`,
/// `AT+CIPSSLCCN`: 64 bytes).
pub const MAX_HOST_LEN: usize = 64;

/// Most PEM bytes [`set_tls_trust`](crate::Netdever::set_tls_trust) writes
/// into `client_ca.0` (the CA certificates, PEM-encoded).
pub const MAX_CA_PEM: usize = 8192;

const PEM_BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----\n";
const PEM_END: &[u8] = b"-----END CERTIFICATE-----\n";
const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Bytes of the PEM encoding of the DER certificate `der` (64-character lines).
fn pem_len(der: &[u8]) -> usize {
    let chars = der.len().div_ceil(3) * 4;
    PEM_BEGIN.len() + chars + chars.div_ceil(64) + PEM_END.len()
}

/// Hand the PEM encoding of `der` to `out` line by line (no buffer for
/// the whole certificate).
fn pem_lines(der: &[u8], mut out: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    out(PEM_BEGIN)?;
    let mut line = [0u8; 65];
    for block in der.chunks(48) {
        let mut n = 0;
        for tri in block.chunks(3) {
            let b = [
                tri[0],
                tri.get(1).copied().unwrap_or(0),
                tri.get(2).copied().unwrap_or(0),
            ];
            let v = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for (i, slot) in line[n..n + 4].iter_mut().enumerate() {
                *slot = if i <= tri.len() {
                    B64[(v >> (18 - 6 * i)) as usize & 63]
                } else {
                    b'='
                };
            }
            n += 4;
        }
        line[n] = b'\n';
        out(&line[..n + 1])?;
    }
    out(PEM_END)
}

impl<S, P> EspAt<S, P>
where
    S: Read + Write + ReadReady,
    P: Platform,
{
    /// `Netdever::set_tls_trust`: CA certificates go to the chip's
    /// `client_ca.0` (`AT+SYSMFG`); the insecure mode is remembered.
    pub(super) fn set_trust(&self, trust: TlsTrust<'_>) -> Result<()> {
        let cas = match trust {
            TlsTrust::DangerAcceptAnyCertificate => {
                self.with(|g| g.core.trust = Trust::Insecure);
                return Ok(());
            }
            TlsTrust::Cas(cas) => cas,
        };
        // Each must at least look like a DER SEQUENCE.
        if cas.is_empty() || cas.iter().any(|c| c.len() < 16 || c[0] != 0x30) {
            return Err(Error::InvalidArgument);
        }
        let total: usize = cas.iter().map(|c| pem_len(c)).sum();
        if total > MAX_CA_PEM {
            return Err(Error::InvalidArgument);
        }
        let t = self.acquire(Blocking::Until(self.after(self.cfg.cmd_timeout * 4)))?;
        // Until the chip confirms, what it trusts is unknown.
        self.with(|g| g.core.trust = Trust::Unset);
        let r = self.write_cas(&t, cas, total);
        self.release_token(t);
        r?;
        self.with(|g| g.core.trust = Trust::Cas);
        Ok(())
    }

    fn write_cas(&self, t: &Token, cas: &[&[u8]], total: usize) -> Result<()> {
        let to = self.cfg.cmd_timeout;
        // CAs an earlier call left in other keys of the namespace go too.
        let _ = self.run(
            t,
            "AT+SYSMFG=0,\"client_ca\"",
            Kind::Plain,
            to,
            Deadline::Never,
        )?;
        let text = cmd(format_args!(
            "AT+SYSMFG=2,\"client_ca\",\"client_ca.0\",8,{total}"
        ))?;
        self.start(t, &text, Kind::Plain, CmdPhase::Prompt, to)?;
        match self.wait(t, Deadline::Never)?.outcome {
            Outcome::Prompt => {}
            // Firmware before 3.2 has no AT+SYSMFG.
            Outcome::Error => return Err(Error::NotSupported),
            Outcome::Reset => return Err(Error::ConnectionAborted),
            _ => return Err(Error::Device),
        }
        // The chip takes exactly `total` bytes now, then answers OK.
        let send_timeout = self.cfg.send_timeout;
        self.with(|g| {
            let now = g.core.now;
            if let Some(c) = g.core.cmd.as_mut() {
                c.phase = CmdPhase::Result;
                c.expires = now + send_timeout;
            }
        });
        for ca in cas {
            pem_lines(ca, |bytes| {
                self.with(|g| {
                    match g.core.cmd.as_ref().map(|c| c.outcome) {
                        Some(Some(Outcome::Reset)) => return Err(Error::ConnectionAborted),
                        None => return Err(Error::Device),
                        _ => {}
                    }
                    g.serial.write_all(bytes).map_err(|_| Error::Device)
                })
            })?;
        }
        self.with(|g| g.serial.flush().map_err(|_| Error::Device))?;
        match self.wait(t, Deadline::Never)?.outcome {
            Outcome::Ok => Ok(()),
            Outcome::Reset => Err(Error::ConnectionAborted),
            _ => Err(Error::Device),
        }
    }

    /// Run a setting command; `ERROR` means the firmware lacks it.
    fn setting(&self, t: &Token, text: &str) -> Result<()> {
        let r = self.run(t, text, Kind::Plain, self.cfg.cmd_timeout, Deadline::Never)?;
        match r.outcome {
            Outcome::Ok => Ok(()),
            Outcome::Error => Err(Error::NotSupported),
            Outcome::Reset => Err(Error::ConnectionAborted),
            _ => Err(Error::Device),
        }
    }

    /// Configure SSL link `link` before its `AT+CIPSTART`: verification
    /// against `client_ca.0` (or none), SNI and the expected name = `host`.
    pub(super) fn ssl_setup(
        &self,
        t: &Token,
        link: u8,
        host: Option<&str>,
        verify: bool,
    ) -> Result<()> {
        let mode = if verify { "2,0,0" } else { "0" };
        self.setting(t, &cmd(format_args!("AT+CIPSSLCCONF={link},{mode}"))?)?;
        if let Some(h) = host {
            let mut c = cmd(format_args!("AT+CIPSSLCSNI={link},"))?;
            push_quoted(&mut c, h)?;
            self.setting(t, &c)?;
            if verify {
                let mut c = cmd(format_args!("AT+CIPSSLCCN={link},"))?;
                push_quoted(&mut c, h)?;
                self.setting(t, &c)?;
            }
        }
        Ok(())
    }

    /// An SSL `AT+CIPSTART` on `link` to `addr` answered `ERROR`, which
    /// says nothing about why. Find out by trying again without
    /// verification (it works: the certificate was the problem) and with
    /// plain TCP (it works: the TLS failed; it does not: nobody listens).
    /// Each try is closed at once; the tries end at `caller` too.
    pub(super) fn classify_ssl_failure(
        &self,
        t: &Token,
        fd: Sockfd,
        link: u8,
        addr: SocketAddrV4,
        verify: bool,
        caller: Deadline,
    ) -> Error {
        let r = (|| {
            if verify {
                self.setting(t, &cmd(format_args!("AT+CIPSSLCCONF={link},0"))?)?;
                if self.probe(t, fd, link, "SSL", addr, caller)? {
                    return Ok(Error::CertificateInvalid);
                }
            }
            Ok(if self.probe(t, fd, link, "TCP", addr, caller)? {
                Error::Tls
            } else {
                Error::ConnectionRefused
            })
        })();
        r.unwrap_or_else(|e| e)
    }

    /// Open `link` to `addr` as `ty` and close it again: whether it opened.
    /// (If `caller` passes first the try completes in the background and a
    /// late link is closed as an orphan.)
    fn probe(
        &self,
        t: &Token,
        fd: Sockfd,
        link: u8,
        ty: &str,
        addr: SocketAddrV4,
        caller: Deadline,
    ) -> Result<bool> {
        let free = self.with(|g| {
            let l = &mut g.core.links[link as usize];
            if l.state != LinkState::Free {
                return false; // an incoming connection took it meanwhile
            }
            *l = Link {
                state: LinkState::Opening,
                owner: Owner::None,
                remote: Some(addr),
                ..Link::FREE
            };
            true
        });
        if !free {
            return Err(Error::ConnectionRefused);
        }
        let text = cmd(format_args!(
            "AT+CIPSTART={link},\"{ty}\",\"{}\",{}",
            addr.ip(),
            addr.port()
        ))?;
        // As a connect of `fd` (failed already, so it never takes the link):
        // a late answer after `caller` frees the link or leaves it to be
        // closed as an orphan.
        let kind = Kind::Start {
            link,
            fd,
            remote: addr,
            local_port: 0,
        };
        let r = self.run(t, &text, kind, self.cfg.connect_timeout, caller);
        let opened = matches!(
            r,
            Ok(Reply {
                outcome: Outcome::Ok,
                ..
            })
        );
        if opened {
            self.with(|g| g.core.links[link as usize].state = LinkState::Closing);
            let c = cmd(format_args!("AT+CIPCLOSE={link}"))?;
            let _ = self.run(
                t,
                &c,
                Kind::Close { link },
                self.cfg.cmd_timeout,
                Deadline::Never,
            );
        }
        match r {
            Ok(Reply {
                outcome: Outcome::Reset,
                ..
            }) => Err(Error::ConnectionAborted),
            Ok(_) => Ok(opened),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_encoding_and_length() {
        for len in [16usize, 47, 48, 49, 100, 301] {
            let der: heapless::Vec<u8, 512> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let mut out: heapless::Vec<u8, 1024> = heapless::Vec::new();
            pem_lines(&der, |b| {
                out.extend_from_slice(b).map_err(|_| Error::InvalidArgument)
            })
            .unwrap();
            assert_eq!(out.len(), pem_len(&der), "len {len}");
            assert!(out.starts_with(PEM_BEGIN) && out.ends_with(PEM_END));
            // Decode it back.
            let body = &out[PEM_BEGIN.len()..out.len() - PEM_END.len()];
            let mut bits = 0u32;
            let mut nbits = 0;
            let mut back: heapless::Vec<u8, 512> = heapless::Vec::new();
            for &c in body.iter().filter(|&&c| c != b'\n' && c != b'=') {
                let v = B64.iter().position(|&x| x == c).unwrap() as u32;
                bits = bits << 6 | v;
                nbits += 6;
                if nbits >= 8 {
                    nbits -= 8;
                    back.push((bits >> nbits) as u8).unwrap();
                }
            }
            assert_eq!(&back[..], &der[..], "len {len}");
            assert!(body.split(|&c| c == b'\n').all(|l| l.len() <= 64));
        }
    }
}
