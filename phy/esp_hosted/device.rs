//! [`EspHostedDevice`]: the full stack over an [`EspHostedLink`] on a host,
//! with the control channel kept reachable for `Netlinker`.
//!
//! The smoltcp stack owns its link, but joining a network needs the
//! chip's control channel, which shares the SPI bus with the frames. So
//! the link sits behind a mutex shared by two holders: the stack (through a
//! thin [`Link`] adapter, locked for one frame at a time) and the device's
//! control calls (locked for one SPI transfer at a time, never while
//! waiting). Answers to control requests are picked up by whichever side
//! clocks the transfer that carries them.
//!
//! A supervisor thread rejoins the access point after the chip reboots or
//! drops the station, with the credentials of the last successful
//! `net_connect`, until `net_disconnect` (or drop).

use std::string::String;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use embedded_hal::digital::InputPin;
use embedded_hal::spi::SpiDevice;
use parking_lot::Mutex;

use super::{CtrlReply, CtrlRequest, EspHostedLink, EspHostedStats};
use crate::error::{Error, Result};
use crate::netlink::{AuthType, ConnectMode, ConnectParams, Netlinker, NotifyFn};
use crate::phy::{Link, LinkError, RxSignal};
use crate::stack::host::HostStack;
use crate::stack::StackConfig;

/// How long construction waits for the chip's init event and MAC.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `net_disconnect` waits for `DisconnectAP`.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Supervisor tick.
const SUPERVISOR_TICK: Duration = Duration::from_millis(20);
/// Pause between rejoin attempts.
const REJOIN_BACKOFF: Duration = Duration::from_millis(500);
/// Timeout of one rejoin attempt.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(10);

type Shared<SPI, HS, DR> = Arc<Mutex<EspHostedLink<SPI, HS, DR>>>;

/// The [`Link`] the stack owns: the shared link, locked per call.
struct StackLink<SPI, HS, DR>(Shared<SPI, HS, DR>);

impl<SPI: SpiDevice, HS: InputPin, DR: InputPin> Link for StackLink<SPI, HS, DR> {
    fn hardware_addr(&self) -> [u8; 6] {
        self.0.lock().hardware_addr()
    }
    fn max_frame_len(&self) -> usize {
        self.0.lock().max_frame_len()
    }
    fn link_up(&mut self) -> bool {
        self.0.lock().link_up()
    }
    fn transmit(&mut self, frame: &[u8]) -> core::result::Result<(), LinkError> {
        self.0.lock().transmit(frame)
    }
    fn receive(&mut self, buf: &mut [u8]) -> core::result::Result<Option<usize>, LinkError> {
        self.0.lock().receive(buf)
    }
    fn rx_signal(&self) -> Option<Arc<dyn RxSignal>> {
        self.0.lock().rx_signal()
    }
}

/// What the device and its supervisor share.
struct Control<SPI, HS, DR> {
    link: Shared<SPI, HS, DR>,
    signal: Option<Arc<dyn RxSignal>>,
    /// Serializes control calls (net_connect, net_disconnect, rejoins).
    calls: Mutex<()>,
    /// Credentials to rejoin with; `None` after net_disconnect.
    rejoin: Mutex<Option<(String, String, bool)>>,
    mac: [u8; 6],
}

impl<SPI: SpiDevice, HS: InputPin, DR: InputPin> Control<SPI, HS, DR> {
    fn sleep(&self, d: Duration) {
        match &self.signal {
            Some(s) => s.wait(Some(d)),
            None => std::thread::sleep(d),
        }
    }

    /// One control request, waiting with the link unlocked.
    fn call(&self, req: CtrlRequest<'_>, timeout: Duration) -> Result<CtrlReply> {
        let _g = self.calls.lock();
        let start = std::time::Instant::now();
        let left = || timeout.saturating_sub(start.elapsed());
        loop {
            match self.link.lock().ctrl_begin(req) {
                Ok(()) => break,
                Err(Error::Busy) | Err(Error::NetworkDown) if !left().is_zero() => {
                    // Not clocked, or the chip has not booted yet: let it
                    // raise its lines.
                    let _ = self.link.lock().service();
                    self.sleep(left().min(Duration::from_millis(1)));
                }
                Err(Error::Busy) | Err(Error::NetworkDown) => return Err(Error::Timeout),
                Err(e) => return Err(e),
            }
        }
        loop {
            if let Some(r) = self.link.lock().ctrl_poll()? {
                return Ok(r);
            }
            if left().is_zero() {
                self.link.lock().ctrl_cancel();
                return Err(Error::Timeout);
            }
            self.sleep(left().min(Duration::from_millis(1)));
        }
    }
}

/// A full-stack network device over an ESP32 running ESP-Hosted-FG (feature
/// `std`): a [`HostStack`] on the [`EspHostedLink`], plus `Netlinker` over
/// the chip's control channel. Sockets, DNS and addressing are the stack's.
///
/// * `net_connect` sends `ConnectAP` with `ssid` / `passphrase` (and
///   `is_wpa3_supported` for [`AuthType::Wpa3Sae`]; `AuthFailed`
///   for a wrong passphrase, `ConnectFailed` for an unknown network,
///   `Timeout` if the chip does not answer), retrying `retries` times, then
///   waits for the stack's address (static or DHCP) within the rest of
///   `connect_timeout`. Access-point mode is `NotSupported`.
/// * Once joined, the device rejoins by itself after the chip reboots or
///   drops the station; `net_disconnect` sends `DisconnectAP` and stops that.
/// * `net_notify` reports the stack's NetUp / NetDown (the link is up while
///   the station is associated).
pub struct EspHostedDevice<SPI, HS, DR>
where
    SPI: SpiDevice + Send + 'static,
    HS: InputPin + Send + 'static,
    DR: InputPin + Send + 'static,
{
    stack: HostStack,
    ctrl: Arc<Control<SPI, HS, DR>>,
    stop: Arc<AtomicBool>,
    supervisor: Option<JoinHandle<()>>,
}

impl<SPI, HS, DR> EspHostedDevice<SPI, HS, DR>
where
    SPI: SpiDevice + Send + 'static,
    HS: InputPin + Send + 'static,
    DR: InputPin + Send + 'static,
{
    /// Wait for the chip's init event, read its MAC, and start a stack on it.
    /// The stack applies `config.ip` once the station is joined.
    pub fn new(mut link: EspHostedLink<SPI, HS, DR>, config: StackConfig) -> Result<Self> {
        let saved = link.ctrl_timeout;
        link.set_ctrl_timeout(STARTUP_TIMEOUT);
        let mac = link.wait_ready().and_then(|_| link.get_mac());
        link.set_ctrl_timeout(saved);
        let mac = mac?;
        let signal = link.chip_signal.clone();
        let link = Arc::new(Mutex::new(link));
        let stack = HostStack::new(StackLink(link.clone()), config)?;
        let ctrl = Arc::new(Control {
            link,
            signal,
            calls: Mutex::new(()),
            rejoin: Mutex::new(None),
            mac,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (ctrl.clone(), stop.clone());
        let supervisor = std::thread::Builder::new()
            .name("esp-hosted-supervisor".into())
            .spawn(move || supervise(&c, &s))
            .map_err(|_| Error::Device)?;
        Ok(EspHostedDevice {
            stack,
            ctrl,
            stop,
            supervisor: Some(supervisor),
        })
    }

    /// The stack serving the sockets.
    pub fn stack(&self) -> &HostStack {
        &self.stack
    }

    /// Run `f` on the driver (under its lock: keep it short).
    pub fn with_link<R>(&self, f: impl FnOnce(&mut EspHostedLink<SPI, HS, DR>) -> R) -> R {
        f(&mut self.ctrl.link.lock())
    }

    /// The driver's counters.
    pub fn link_stats(&self) -> EspHostedStats {
        self.ctrl.link.lock().stats()
    }

    /// Whether the station is associated to an access point.
    pub fn associated(&self) -> bool {
        self.ctrl.link.lock().associated()
    }
}

fn supervise<SPI: SpiDevice, HS: InputPin, DR: InputPin>(
    ctrl: &Control<SPI, HS, DR>,
    stop: &AtomicBool,
) {
    let mut next_try = std::time::Instant::now();
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(SUPERVISOR_TICK);
        let creds = ctrl.rejoin.lock().clone();
        let Some((ssid, pass, wpa3)) = creds else {
            continue;
        };
        let (ready, associated) = {
            let l = ctrl.link.lock();
            (l.init_info().is_some(), l.associated())
        };
        if !ready || associated || std::time::Instant::now() < next_try {
            continue;
        }
        let req = CtrlRequest::ConnectAp {
            ssid: &ssid,
            passphrase: &pass,
            wpa3,
        };
        // The credentials may have been withdrawn while we were deciding.
        if ctrl.rejoin.lock().is_none() {
            continue;
        }
        if ctrl.call(req, REJOIN_TIMEOUT).is_err() {
            next_try = std::time::Instant::now() + REJOIN_BACKOFF;
        }
    }
}

impl<SPI, HS, DR> Drop for EspHostedDevice<SPI, HS, DR>
where
    SPI: SpiDevice + Send + 'static,
    HS: InputPin + Send + 'static,
    DR: InputPin + Send + 'static,
{
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.supervisor.take() {
            let _ = t.join();
        }
    }
}

impl<SPI, HS, DR> Netlinker for EspHostedDevice<SPI, HS, DR>
where
    SPI: SpiDevice + Send + 'static,
    HS: InputPin + Send + 'static,
    DR: InputPin + Send + 'static,
{
    fn net_connect(&self, params: &ConnectParams<'_>) -> Result<()> {
        if params.mode == ConnectMode::AccessPoint {
            return Err(Error::NotSupported);
        }
        if params.ssid.is_empty() || params.ssid.len() > 32 || params.passphrase.len() > 64 {
            return Err(Error::InvalidArgument);
        }
        // A new join supersedes the old credentials.
        *self.ctrl.rejoin.lock() = None;
        let mut last = Error::ConnectFailed;
        for _ in 0..=params.retries {
            let start = std::time::Instant::now();
            let req = CtrlRequest::ConnectAp {
                ssid: params.ssid,
                passphrase: params.passphrase,
                wpa3: params.auth == AuthType::Wpa3Sae,
            };
            match self.ctrl.call(req, params.connect_timeout) {
                Ok(_) => {}
                Err(e @ (Error::AuthFailed | Error::InvalidArgument)) => return Err(e),
                Err(e) => {
                    last = e;
                    continue;
                }
            }
            *self.ctrl.rejoin.lock() = Some((
                params.ssid.into(),
                params.passphrase.into(),
                params.auth == AuthType::Wpa3Sae,
            ));
            let rest = ConnectParams {
                retries: 0,
                connect_timeout: params.connect_timeout.saturating_sub(start.elapsed()),
                ..params.clone()
            };
            match self.stack.net_connect(&rest) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn net_disconnect(&self) -> Result<()> {
        *self.ctrl.rejoin.lock() = None;
        let r = match self
            .ctrl
            .call(CtrlRequest::DisconnectAp, DISCONNECT_TIMEOUT)
        {
            Ok(_) | Err(Error::NotConnected) => Ok(()),
            Err(e) => Err(e),
        };
        self.stack.net_disconnect()?;
        r
    }

    fn net_notify(&self, callback: Option<NotifyFn>) {
        self.stack.net_notify(callback)
    }

    fn hardware_addr(&self) -> Result<[u8; 6]> {
        Ok(self.ctrl.mac)
    }

    fn send_eth(&self, frame: &[u8]) -> Result<()> {
        self.stack.send_eth(frame)
    }

    fn recv_eth(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        self.stack.recv_eth(buf)
    }
}

crate::forward_netdever!(
    [SPI: SpiDevice + Send + 'static, HS: InputPin + Send + 'static, DR: InputPin + Send + 'static]
    EspHostedDevice<SPI, HS, DR>,
    |self| &self.stack
);
