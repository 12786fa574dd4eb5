//! Host emulators of the co-processors netdever drives.
//!
//! Each model follows its chip's datasheet or manual byte for byte on the
//! bus side (SPI frames, registers, AT strings), so the product drivers run
//! against them exactly as on a board — and so would another team's driver.
//! Behind the bus, raw-frame modes put frames on a [`netdever::phy::Link`]
//! (the simulated network or a TAP) and firmware-offload modes use host
//! sockets, as the chip's own firmware would use its TCP/IP stack.
//!
//! These models are test and demo infrastructure; they are not part of the
//! product crate and never built for a microcontroller.
#![deny(missing_docs)]

pub mod boards;
pub mod bus;
pub mod esp_hosted;
pub mod espat;
pub mod kernel;
pub mod w5500;
