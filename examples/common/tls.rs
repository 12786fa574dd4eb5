//! Where an example's trust settings (`--ca FILE`, `--insecure`) meet the
//! device, so that `Protocol::Tls` sockets work on every board.
//!
//! What happens depends on the device's [`Capabilities::tls`]:
//!
//! * `None` (the full stack, the W5500 offload): built with feature `tls`,
//!   the device is wrapped in [`netdever::tls::SoftTls`] (TLS 1.3 in
//!   software over the device's TCP) configured from the trust settings, for
//!   the length of the closure. Without the feature the device is used as
//!   it is and refuses TLS sockets with `ProtocolNotSupported`.
//! * `Software`: the device already is a TLS layer, configured by whoever
//!   built it; used as it is.
//! * `Firmware` (ESP-AT SSL links): the chip does TLS; the trust settings
//!   are handed to it with [`Netdever::set_tls_trust`] first.
//!
//! [`Capabilities::tls`]: netdever::Capabilities

use std::fmt;

use netdever::{Netdever, TlsSupport};

use super::Dev;

/// Which servers a TLS client trusts.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// PEM text of the CA certificate(s) to verify servers against (`--ca`).
    pub ca_pem: Option<String>,
    /// `--insecure`: accept any certificate (testing only).
    pub insecure: bool,
}

impl Trust {
    /// Trust settings from a `--ca` path (read and checked here) and an
    /// `--insecure` flag; the two together are refused.
    pub fn from_options(ca_path: Option<&str>, insecure: bool) -> Result<Trust, String> {
        let ca_pem = ca_path.map(load_ca).transpose()?;
        if insecure && ca_pem.is_some() {
            return Err("--insecure and --ca contradict each other: give one".into());
        }
        Ok(Trust { ca_pem, insecure })
    }
}

/// Read `path` and check that it holds at least one PEM certificate.
pub fn load_ca(path: &str) -> Result<String, String> {
    let pem = std::fs::read_to_string(path).map_err(|e| format!("--ca {path}: {e}"))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!("--ca {path}: no PEM certificate in it"));
    }
    Ok(pem)
}

/// Run `f` on `dev` with TLS sockets configured from `trust` (see the
/// module docs); `say` gets a progress line about what was applied.
pub fn with_tls_device<R>(
    dev: &Dev,
    trust: &Trust,
    say: &dyn Fn(fmt::Arguments<'_>),
    f: impl FnOnce(&dyn Netdever) -> Result<R, String>,
) -> Result<R, String> {
    match dev.capabilities().tls {
        TlsSupport::None => soft(dev, trust, say, f),
        TlsSupport::Software => f(dev),
        TlsSupport::Firmware => {
            firmware(dev, trust, say)?;
            f(dev)
        }
    }
}

/// The CA certificates of `trust`, DER.
#[cfg(feature = "tls")]
fn ders(trust: &Trust) -> Result<Vec<Vec<u8>>, String> {
    match &trust.ca_pem {
        Some(pem) => netdever::tls::pem_certificates(pem).map_err(|e| format!("--ca: {e}")),
        None => Ok(Vec::new()),
    }
}

/// Say what `trust` means for TLS running in `place` (with `cas` CA
/// certificates read).
#[cfg(feature = "tls")]
fn announce(trust: &Trust, cas: usize, place: &str, say: &dyn Fn(fmt::Arguments<'_>)) {
    if trust.insecure {
        say(format_args!(
            "--insecure: the server's certificate is NOT verified"
        ));
    } else if cas == 0 {
        say(format_args!(
            "no --ca: no certificate can be verified (give --ca FILE)"
        ));
    } else {
        say(format_args!(
            "TLS in {place}; trusting {cas} CA certificate(s) from --ca"
        ));
    }
}

/// Built without feature `tls`: say that the trust options are ignored.
#[cfg(not(feature = "tls"))]
fn not_applied(trust: &Trust, say: &dyn Fn(fmt::Arguments<'_>)) {
    if trust.ca_pem.is_some() || trust.insecure {
        say(format_args!(
            "--ca / --insecure: not applied (built without feature `tls`)"
        ));
    }
}

/// Hand `trust` to a device whose firmware does TLS.
#[cfg(feature = "tls")]
fn firmware(dev: &Dev, trust: &Trust, say: &dyn Fn(fmt::Arguments<'_>)) -> Result<(), String> {
    use netdever::TlsTrust;
    let ders = ders(trust)?;
    let cas: Vec<&[u8]> = ders.iter().map(|d| d.as_slice()).collect();
    announce(trust, cas.len(), "the chip's firmware", say);
    let t = if trust.insecure {
        TlsTrust::DangerAcceptAnyCertificate
    } else {
        TlsTrust::Cas(&cas)
    };
    dev.set_tls_trust(t)
        .map_err(|e| format!("handing the trust settings to the chip: {e}"))
}

/// Built without feature `tls` there is no PEM reader: nothing is handed
/// over, and the chip keeps what it trusts.
#[cfg(not(feature = "tls"))]
fn firmware(_: &Dev, trust: &Trust, say: &dyn Fn(fmt::Arguments<'_>)) -> Result<(), String> {
    not_applied(trust, say);
    Ok(())
}

/// Wrap `dev` in software TLS for the length of `f`.
#[cfg(feature = "tls")]
fn soft<R>(
    dev: &Dev,
    trust: &Trust,
    say: &dyn Fn(fmt::Arguments<'_>),
    f: impl FnOnce(&dyn Netdever) -> Result<R, String>,
) -> Result<R, String> {
    use netdever::tls::{SoftTls, TlsConfig, TlsPool};
    let ders = ders(trust)?;
    let cas: Vec<&[u8]> = ders.iter().map(|d| d.as_slice()).collect();
    announce(trust, cas.len(), "software", say);
    let config = if trust.insecure {
        TlsConfig::insecure_no_verify()
    } else {
        TlsConfig::new(&cas)
    };
    // Record buffers for one connection (about 21 KiB).
    let mut pool = Box::new(TlsPool::<1>::new());
    let tls = SoftTls::with_os_rng(dev.clone(), &mut pool, config)
        .map_err(|e| format!("setting up TLS: {e}"))?;
    f(&tls)
}

/// Built without feature `tls`: the device as it is (TLS sockets are
/// refused with `ProtocolNotSupported`).
#[cfg(not(feature = "tls"))]
fn soft<R>(
    dev: &Dev,
    trust: &Trust,
    say: &dyn Fn(fmt::Arguments<'_>),
    f: impl FnOnce(&dyn Netdever) -> Result<R, String>,
) -> Result<R, String> {
    not_applied(trust, say);
    f(dev)
}
