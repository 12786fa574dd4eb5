//! The link side: [`Netlinker`].
//!
//! TinyGo's `netlink.Netlinker`: join an IP network (Wi-Fi credentials for a
//! radio, link-up plus DHCP or static addressing for a wire), leave it, be
//! told when it comes and goes, and — on raw-frame devices — move Ethernet
//! frames directly.

use core::time::Duration;

use crate::error::{Error, Result};
use crate::types::IpConfig;

/// Station or access point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ConnectMode {
    /// Join an existing network (the usual case).
    #[default]
    Station,
    /// Become an access point (radios that support it).
    AccessPoint,
}

/// Wi-Fi authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AuthType {
    /// Open network.
    Open,
    /// WPA-PSK.
    WpaPsk,
    /// WPA2-PSK (default).
    #[default]
    Wpa2Psk,
    /// WPA3-SAE.
    Wpa3Sae,
}

/// How the device gets its IP address once the link is up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum IpMode {
    /// Run a DHCPv4 client (default).
    #[default]
    Dhcp,
    /// Use this static configuration.
    Static(IpConfig),
    /// Keep whatever address is configured (set with `set_addr`).
    Keep,
}

/// Parameters for [`Netlinker::net_connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ConnectParams<'a> {
    /// Station or access point.
    pub mode: ConnectMode,
    /// Network name (ignored on wired and simulated links).
    pub ssid: &'a str,
    /// Passphrase (ignored on wired and simulated links).
    pub passphrase: &'a str,
    /// Authentication type.
    pub auth: AuthType,
    /// How many times to retry joining before giving up (0 = try once).
    pub retries: u32,
    /// How long one attempt may take, including getting an address.
    pub connect_timeout: Duration,
    /// Host name announced over DHCP, if any.
    pub hostname: &'a str,
    /// How to get an IP address.
    pub ip: IpMode,
}

impl Default for ConnectParams<'_> {
    fn default() -> Self {
        ConnectParams {
            mode: ConnectMode::Station,
            ssid: "",
            passphrase: "",
            auth: AuthType::Wpa2Psk,
            retries: 0,
            connect_timeout: Duration::from_secs(10),
            hostname: "",
            ip: IpMode::Dhcp,
        }
    }
}

/// Link events reported to the [`Netlinker::net_notify`] callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Event {
    /// The device is on the network with an IP address.
    NetUp,
    /// The device lost the link or its address.
    NetDown,
}

/// Callback for link events. It runs on whatever context drives the device
/// (the background thread under std, the caller's poll on bare metal), with
/// no device lock held, so it may call back into the device.
pub type NotifyFn = &'static (dyn Fn(Event) + Send + Sync);

/// L2 link control (TinyGo's `Netlinker`).
pub trait Netlinker: Sync {
    /// Join the network and wait until it is usable (link up and an address),
    /// or fail with `ConnectFailed` / `AuthFailed` / `Timeout`.
    fn net_connect(&self, params: &ConnectParams<'_>) -> Result<()>;

    /// Leave the network; sockets stay open but cannot reach anyone.
    fn net_disconnect(&self) -> Result<()>;

    /// Install (or with `None` remove) the event callback.
    fn net_notify(&self, callback: Option<NotifyFn>);

    /// The device's MAC address.
    fn hardware_addr(&self) -> Result<[u8; 6]>;

    /// Send one raw Ethernet frame, bypassing IP (raw-frame devices only).
    fn send_eth(&self, _frame: &[u8]) -> Result<()> {
        Err(Error::NotSupported)
    }

    /// Receive one raw Ethernet frame that the IP stack did not claim, if one
    /// is waiting (raw-frame devices only).
    fn recv_eth(&self, _buf: &mut [u8]) -> Result<Option<usize>> {
        Err(Error::NotSupported)
    }
}

/// Implement `Netlinker` for a wrapper by forwarding to `$inner`.
#[macro_export]
#[doc(hidden)]
macro_rules! forward_netlinker {
    ([$($gen:tt)*] $ty:ty, |$s:ident| $inner:expr) => {
        impl<$($gen)*> $crate::Netlinker for $ty {
            fn net_connect(&$s, params: &$crate::ConnectParams<'_>) -> $crate::Result<()> {
                $crate::Netlinker::net_connect($inner, params)
            }
            fn net_disconnect(&$s) -> $crate::Result<()> {
                $crate::Netlinker::net_disconnect($inner)
            }
            fn net_notify(&$s, callback: Option<$crate::NotifyFn>) {
                $crate::Netlinker::net_notify($inner, callback)
            }
            fn hardware_addr(&$s) -> $crate::Result<[u8; 6]> {
                $crate::Netlinker::hardware_addr($inner)
            }
            fn send_eth(&$s, frame: &[u8]) -> $crate::Result<()> {
                $crate::Netlinker::send_eth($inner, frame)
            }
            fn recv_eth(&$s, buf: &mut [u8]) -> $crate::Result<Option<usize>> {
                $crate::Netlinker::recv_eth($inner, buf)
            }
        }
    };
}

forward_netlinker!([T: Netlinker + ?Sized] &T, |self| &**self);
#[cfg(feature = "std")]
forward_netlinker!([T: Netlinker + Send + ?Sized] std::boxed::Box<T>, |self| &**self);
#[cfg(feature = "std")]
forward_netlinker!([T: Netlinker + Send + ?Sized] std::sync::Arc<T>, |self| &**self);
