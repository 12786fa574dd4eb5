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

crate::forward_netdever!([] HostStack, |self| &*self.driver.stack);
crate::forward_netlinker!([] HostStack, |self| &*self.driver.stack);
