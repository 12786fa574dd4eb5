//! Firmware-offload backends: the chip runs TCP/IP and the driver turns
//! socket calls into chip commands.
//!
//! Each driver serves the same [`Socketer`](crate::Socketer) contract as the
//! full stack, reusing the shared fd table ([`crate::fdtable`]), per-socket
//! options ([`crate::sockstate`]) and wait loop ([`crate::wait`]); what is
//! left in a driver is the chip's own protocol.

#[cfg(feature = "esp-at")]
pub mod espat;
#[cfg(feature = "w5500")]
pub mod w5500;
