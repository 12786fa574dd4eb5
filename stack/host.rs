//! The stack on a host (feature `std`): heap buffers, the std platform,
//! and a background thread that drives it.

use std::boxed::Box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{HeapResources, Stack, StackConfig};
use crate::error::Result;
use crate::phy::Link;
use crate::platform::{Platform, StdPlatform};

/// The stack type a [`HostStack`] wraps: any boxed link, std platform, 16 fds.
pub type HostStackInner = Stack<'static, Box<dyn Link + Send>, StdPlatform, 16>;

/// Longest the driver sleeps without a frame or a timer: it bounds how late
/// a timer armed by another thread's socket call is served, and how long
/// dropping the stack waits for the thread to notice.
const DRIVER_MAX_SLEEP: Duration = Duration::from_millis(10);

struct Driver {
    stack: Arc<HostStackInner>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.stack.set_driver_active(false);
    }
}

/// A [`Stack`] with heap buffers and its own driver thread. Cheap to clone;
/// the thread stops when the last clone is dropped.
#[derive(Clone)]
pub struct HostStack {
    driver: Arc<Driver>,
}

impl HostStack {
    /// Build a stack on `link` and start its driver thread.
    pub fn new(link: impl Link + Send + 'static, config: StackConfig) -> Result<Self> {
        let mut rng = rand_core::OsRng;
        let stack = Stack::new(
            Box::new(link) as Box<dyn Link + Send>,
            StdPlatform::new(),
            &config,
            HeapResources,
            &mut rng,
        )?;
        Ok(Self::spawn(Arc::new(stack)))
    }

    /// Start a driver thread for an existing stack.
    pub fn spawn(stack: Arc<HostStackInner>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        stack.set_driver_active(true);
        let (s, st) = (stack.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("netdever-driver".into())
            .spawn(move || drive(&s, &st))
            .expect("spawn driver thread");
        HostStack {
            driver: Arc::new(Driver {
                stack,
                stop,
                thread: Some(thread),
            }),
        }
    }

    /// The wrapped stack.
    pub fn stack(&self) -> &Arc<HostStackInner> {
        &self.driver.stack
    }
}

fn drive(stack: &HostStackInner, stop: &AtomicBool) {
    let signal = stack.rx_signal();
    while !stop.load(Ordering::Acquire) {
        let next = stack.poll();
        let now = stack.platform().now();
        let sleep = next
            .map(|t| t.saturating_since(now))
            .unwrap_or(DRIVER_MAX_SLEEP)
            .min(DRIVER_MAX_SLEEP);
        if sleep.is_zero() {
            continue;
        }
        match &signal {
            Some(sig) => sig.wait(Some(sleep)),
            None => std::thread::sleep(sleep.min(Duration::from_millis(1))),
        }
    }
}

impl core::ops::Deref for HostStack {
    type Target = HostStackInner;
    fn deref(&self) -> &HostStackInner {
        &self.driver.stack
    }
}

macro_rules! forward {
    ($($tr:path { $(fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty;)* })*) => {$(
        impl $tr for HostStack {
            $(fn $name(&self $(, $arg: $ty)*) -> $ret { <HostStackInner as $tr>::$name(&self.driver.stack $(, $arg)*) })*
        }
    )*};
}

use crate::netlink::{ConnectParams, NotifyFn};
use crate::socketer::Capabilities;
use crate::time::{Deadline, Instant};
use crate::types::*;

forward! {
    crate::Socketer {
        fn socket(&self, family: AddressFamily, ty: SockType, proto: Protocol) -> Result<Sockfd>;
        fn bind(&self, fd: Sockfd, addr: SocketAddr) -> Result<()>;
        fn connect(&self, fd: Sockfd, host: Option<&str>, addr: SocketAddr, deadline: Deadline) -> Result<()>;
        fn listen(&self, fd: Sockfd, backlog: usize) -> Result<()>;
        fn accept(&self, fd: Sockfd, deadline: Deadline) -> Result<(Sockfd, SocketAddr)>;
        fn send(&self, fd: Sockfd, buf: &[u8], flags: MsgFlags, deadline: Deadline) -> Result<usize>;
        fn send_to(&self, fd: Sockfd, buf: &[u8], flags: MsgFlags, addr: SocketAddr, deadline: Deadline) -> Result<usize>;
        fn recv(&self, fd: Sockfd, buf: &mut [u8], flags: MsgFlags, deadline: Deadline) -> Result<usize>;
        fn recv_from(&self, fd: Sockfd, buf: &mut [u8], flags: MsgFlags, deadline: Deadline) -> Result<(usize, SocketAddr)>;
        fn shutdown(&self, fd: Sockfd, how: Shutdown) -> Result<()>;
        fn close(&self, fd: Sockfd) -> Result<()>;
        fn set_sock_opt(&self, fd: Sockfd, opt: SockOpt) -> Result<()>;
        fn get_sock_opt(&self, fd: Sockfd, name: SockOptName) -> Result<SockOpt>;
        fn poll(&self, fds: &mut [PollFd], deadline: Deadline) -> Result<usize>;
        fn local_addr(&self, fd: Sockfd) -> Result<SocketAddr>;
        fn peer_addr(&self, fd: Sockfd) -> Result<SocketAddr>;
        fn now(&self) -> Instant;
    }
    crate::Netdever {
        fn get_host_by_name(&self, name: &str, family: AddressFamily) -> Result<IpAddr>;
        fn addr(&self) -> Result<IpAddr>;
        fn ip_config(&self) -> Result<IpConfig>;
        fn set_addr(&self, config: IpConfig) -> Result<()>;
        fn capabilities(&self) -> Capabilities;
    }
    crate::Netlinker {
        fn net_connect(&self, params: &ConnectParams<'_>) -> Result<()>;
        fn net_disconnect(&self) -> Result<()>;
        fn net_notify(&self, callback: Option<NotifyFn>) -> ();
        fn hardware_addr(&self) -> Result<[u8; 6]>;
        fn send_eth(&self, frame: &[u8]) -> Result<()>;
        fn recv_eth(&self, buf: &mut [u8]) -> Result<Option<usize>>;
    }
}
