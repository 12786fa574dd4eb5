//! # netdever
//!
//! One BSD-socket-like network API for embedded Rust, whatever the hardware
//! underneath. It is a Rust port of TinyGo's network driver model: apps talk
//! to a [`Netdever`] (sockets, DNS, addressing) and a [`Netlinker`] (joining
//! the network, link events, raw frames), and the board decides what serves
//! them:
//!
//! * **Full stack** (`full-stack` feature, [`stack`]): the chip only moves raw
//!   Ethernet frames ([`phy::Link`]: a TAP device, a W5500 in MACRAW, an
//!   ESP32 bridge, the in-memory switch). Frames feed a smoltcp interface, and
//!   [`stack::Stack`] maps socket fds onto smoltcp sockets.
//! * **Firmware offload** (`offload/`): the chip runs TCP/IP itself and the
//!   driver turns socket calls into chip commands.
//!
//! Both serve the same [`Socketer`] contract, written down in [`socketer`]:
//! which calls block, how deadlines combine with socket timeouts, what each
//! error means, and the locking rule (many threads may call one device; no
//! lock is held while waiting for the chip or the network).
//!
//! The crate is `#![no_std]` and needs no allocator. The `std` feature adds
//! the host platform ([`platform::StdPlatform`]), the background driver
//! thread, the memory switch, pcap capture and (with `tap`) Linux TAP links.
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "std")]
extern crate std;

pub mod board;
pub mod error;
pub mod fdtable;
pub mod net;
pub mod netlink;
pub mod platform;
pub mod socketer;
pub mod sockstate;
pub mod time;
#[cfg(feature = "tls")]
pub mod tls;
pub mod types;
pub mod wait;

#[path = "../phy/mod.rs"]
pub mod phy;

#[cfg(feature = "full-stack")]
#[path = "../stack/mod.rs"]
pub mod stack;

#[cfg(any(feature = "w5500", feature = "esp-at"))]
#[path = "../offload/mod.rs"]
pub mod offload;

pub use error::{Error, Result};
pub use netlink::{AuthType, ConnectMode, ConnectParams, Event, IpMode, Netlinker, NotifyFn};
pub use socketer::{Capabilities, Device, Netdever, Socketer, TlsSupport, TlsTrust};
pub use time::{Deadline, Instant};
#[cfg(feature = "tls")]
pub use tls::SoftTls;
pub use types::*;
