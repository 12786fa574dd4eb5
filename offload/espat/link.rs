//! [`Netdever`] (DNS, addressing) and [`Netlinker`] (Wi-Fi) for [`EspAt`].

use embedded_io::{Read, ReadReady, Write};

use crate::error::{Error, Result};
use crate::netlink::{ConnectMode, ConnectParams, IpMode, Netlinker, NotifyFn};
use crate::platform::Platform;
use crate::socketer::{Capabilities, Netdever, TlsSupport, TlsTrust};
use crate::time::Deadline;
use crate::types::*;
use crate::wait::Blocking;

use super::core::{
    parse_cipsta, parse_cwjap_code, parse_domain, parse_mac, Kind, MAX_LINKS, MAX_SOCKETS,
};
use super::{cmd, push_quoted, EspAt, Outcome};

impl<S, P> EspAt<S, P>
where
    S: Read + Write + ReadReady,
    P: Platform,
{
    /// The station address if known without asking the chip.
    pub(crate) fn ip_addr_cached(&self) -> Option<Ipv4Addr> {
        self.with(|g| {
            if g.core.net.up {
                g.core.net.ip.as_ref().map(|c| c.addr)
            } else {
                None
            }
        })
    }

    fn blocking_for(&self, d: ::core::time::Duration) -> Blocking {
        Blocking::Until(self.after(d))
    }

    fn query_ip(&self) -> Result<IpConfig> {
        let to = self.cfg.cmd_timeout;
        let r = self
            .command("AT+CIPSTA?", Kind::Plain, to, self.blocking_for(to * 2))?
            .ok_or(Error::Device)?;
        let cfg = parse_cipsta(r.lines()).ok_or(Error::Device)?;
        if cfg.addr.is_unspecified() {
            return Err(Error::NetworkDown);
        }
        self.with(|g| {
            if g.core.net.up {
                g.core.net.ip = Some(cfg.clone());
            }
        });
        Ok(cfg)
    }

    fn static_ip(&self, t: &super::Token, c: &IpConfig) -> Result<()> {
        let mask = if c.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - c.prefix_len as u32)
        };
        let mask = Ipv4Addr::from(mask);
        let gw = c.gateway.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let text = cmd(format_args!("AT+CIPSTA=\"{}\",\"{gw}\",\"{mask}\"", c.addr))?;
        self.run(t, &text, Kind::Plain, self.cfg.cmd_timeout, Deadline::Never)?
            .ok_or(Error::InvalidArgument)
            .map(|_| ())
    }
}

impl<S, P> Netdever for EspAt<S, P>
where
    S: Read + Write + ReadReady + Send,
    P: Platform,
{
    fn get_host_by_name(&self, name: &str, family: AddressFamily) -> Result<IpAddr> {
        if family != AddressFamily::Inet {
            return Err(Error::FamilyNotSupported);
        }
        if let Ok(a) = name.parse::<Ipv4Addr>() {
            return Ok(IpAddr::V4(a));
        }
        if name.is_empty() || name.len() > 253 || name.chars().any(|c| c.is_control()) {
            return Err(Error::HostUnknown);
        }
        if !self.with(|g| g.core.net.up) {
            return Err(Error::NetworkDown);
        }
        let mut text = cmd(format_args!("AT+CIPDOMAIN="))?;
        push_quoted(&mut text, name).map_err(|_| Error::HostUnknown)?;
        let to = self.cfg.dns_timeout;
        let r = self.command(
            &text,
            Kind::Plain,
            to,
            self.blocking_for(to + self.cfg.cmd_timeout),
        )?;
        match r.outcome {
            Outcome::Ok => parse_domain(r.lines()).map(IpAddr::V4).ok_or(Error::Device),
            Outcome::Error => Err(Error::HostUnknown),
            Outcome::Reset => Err(Error::NetworkDown),
            _ => Err(Error::Device),
        }
    }

    fn addr(&self) -> Result<IpAddr> {
        self.ip_config().map(|c| IpAddr::V4(c.addr))
    }

    fn ip_config(&self) -> Result<IpConfig> {
        let cached = self.with(|g| {
            if !g.core.net.up {
                return Err(Error::NetworkDown);
            }
            Ok(g.core.net.ip.clone())
        })?;
        match cached {
            Some(c) => Ok(c),
            None => self.query_ip(),
        }
    }

    fn set_addr(&self, config: IpConfig) -> Result<()> {
        config.validate()?;
        let t = self.acquire(self.blocking_for(self.cfg.cmd_timeout * 2))?;
        let r = self.static_ip(&t, &config);
        self.release_token(t);
        r?;
        self.with(|g| {
            if g.core.net.up {
                g.core.net.ip = Some(config);
            }
        });
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_sockets: MAX_SOCKETS,
            max_tcp: MAX_LINKS,
            max_udp: MAX_LINKS,
            tls: TlsSupport::Firmware,
            server: true,
            dns: true,
            dhcp: true,
        }
    }

    /// CA certificates are written into the chip's manufacturing partition
    /// (`AT+SYSMFG=2,"client_ca","client_ca.0",8,<len>`, PEM), replacing
    /// what the namespace held; the insecure mode is remembered by the
    /// driver. At most [`MAX_CA_PEM`](super::MAX_CA_PEM) bytes of PEM;
    /// firmware without `AT+SYSMFG` (before 3.2) is `NotSupported`.
    fn set_tls_trust(&self, trust: TlsTrust<'_>) -> Result<()> {
        self.set_trust(trust)
    }
}

impl<S, P> Netlinker for EspAt<S, P>
where
    S: Read + Write + ReadReady + Send,
    P: Platform,
{
    fn net_connect(&self, params: &ConnectParams<'_>) -> Result<()> {
        if params.mode == ConnectMode::AccessPoint {
            return Err(Error::NotSupported);
        }
        if params.ssid.is_empty() || params.ssid.len() > 32 || params.passphrase.len() > 64 {
            return Err(Error::InvalidArgument);
        }
        if let IpMode::Static(c) = &params.ip {
            c.validate()?;
        }
        let mut text = cmd(format_args!("AT+CWJAP="))?;
        push_quoted(&mut text, params.ssid)?;
        text.push(',').map_err(|_| Error::InvalidArgument)?;
        push_quoted(&mut text, params.passphrase)?;
        let to = self.cfg.cmd_timeout;
        let mut last = Error::ConnectFailed;
        let mut restarts = 0;
        let mut attempt = 0;
        while attempt <= params.retries {
            attempt += 1;
            let t = self.acquire(self.blocking_for(to * 2))?;
            let setup = (|| {
                self.run(&t, "AT+CWMODE=1", Kind::Plain, to, Deadline::Never)?
                    .ok_or(Error::Device)?;
                match &params.ip {
                    IpMode::Static(c) => self.static_ip(&t, c),
                    IpMode::Dhcp => {
                        // Older firmware may not know this form; DHCP is on by default.
                        let _ = self.run(&t, "AT+CWDHCP=1,1", Kind::Plain, to, Deadline::Never)?;
                        Ok(())
                    }
                    IpMode::Keep => Ok(()),
                }
            })();
            if let Err(e) = setup {
                self.release_token(t);
                if e == Error::ConnectionAborted && restarts < 2 {
                    // The chip restarted during setup: again from the start.
                    restarts += 1;
                    attempt -= 1;
                    continue;
                }
                return Err(e);
            }
            // The chip gets a little longer than the caller, so a slow join
            // ends as Timeout for the caller and completes in the background.
            let caller = self.after(params.connect_timeout);
            let r = self.run(&t, &text, Kind::Plain, params.connect_timeout + to, caller);
            self.release_token(t);
            match r {
                Ok(rep) => match rep.outcome {
                    Outcome::Ok => {
                        self.with(|g| {
                            g.core.net.wifi = true;
                            g.core.net.got_ip = true;
                        });
                        return self.query_ip().map(|_| ());
                    }
                    Outcome::Error => match parse_cwjap_code(rep.lines()) {
                        Some(1) => last = Error::Timeout,
                        Some(2) => return Err(Error::AuthFailed),
                        _ => last = Error::ConnectFailed,
                    },
                    Outcome::Reset => {
                        // The chip restarted under us: set it up and try again.
                        last = Error::ConnectFailed;
                        if restarts < 2 {
                            restarts += 1;
                            attempt -= 1;
                        }
                    }
                    _ => return Err(Error::Device),
                },
                Err(Error::Timeout) => last = Error::Timeout,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn net_disconnect(&self) -> Result<()> {
        let to = self.cfg.cmd_timeout;
        self.command("AT+CWQAP", Kind::Plain, to, self.blocking_for(to * 2))?
            .ok_or(Error::Device)?;
        Ok(())
    }

    fn net_notify(&self, callback: Option<NotifyFn>) {
        self.with(|g| g.core.notify_fn = callback);
    }

    fn hardware_addr(&self) -> Result<[u8; 6]> {
        if let Some(m) = self.with(|g| g.core.net.mac) {
            return Ok(m);
        }
        let to = self.cfg.cmd_timeout;
        let r = self
            .command("AT+CIPSTAMAC?", Kind::Plain, to, self.blocking_for(to * 2))?
            .ok_or(Error::Device)?;
        let mac = parse_mac(r.lines()).ok_or(Error::Device)?;
        self.with(|g| g.core.net.mac = Some(mac));
        Ok(mac)
    }
}
