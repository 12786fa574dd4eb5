//! Chip access shared by the MACRAW link and the offload driver: SPI frame
//! encoding, register reads and writes, socket commands, and the TX/RX
//! rings.
//!
//! Every access is one variable-length (VDM) SPI frame in one chip-select
//! cycle: 16-bit offset address, control byte `BSB << 3 | RWB << 2 | 00`,
//! then the data. Ring accesses take 16-bit pointers; the chip maps a
//! pointer to `ptr & (size - 1)` inside the socket's buffer, and a burst
//! that would run past `0xFFFF` is split there so the address counter never
//! has to wrap inside one frame.

use embedded_hal::spi::{Operation, SpiDevice};

use super::regs::*;

/// How many times a command register is read back before the chip counts
/// as wedged.
const CR_POLLS: usize = 1000;
/// How many times a 16-bit counter is re-read to get two equal values.
const STABLE_READS: usize = 8;

/// Why a chip access failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum BusError {
    /// The SPI transfer itself failed.
    Spi,
    /// VERSIONR is not 0x04: no W5500 (or no chip) on the bus.
    Version(u8),
    /// A command was not accepted (Sn_CR never cleared), a reset never
    /// finished, or a counter never read the same twice.
    Stuck,
    /// The chip returned something that cannot be right (a packet header
    /// that does not fit, a status outside the datasheet's list).
    Malformed,
}

impl From<BusError> for crate::Error {
    fn from(_: BusError) -> Self {
        crate::Error::Device
    }
}

impl From<BusError> for crate::phy::LinkError {
    fn from(_: BusError) -> Self {
        crate::phy::LinkError::Device
    }
}

/// A register or buffer block (the control byte's BSB field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// The common registers.
    Common,
    /// Socket n's registers.
    Socket(u8),
    /// Socket n's TX buffer.
    Tx(u8),
    /// Socket n's RX buffer.
    Rx(u8),
}

impl Block {
    /// The 5-bit block select value.
    pub const fn bsb(self) -> u8 {
        match self {
            Block::Common => 0,
            Block::Socket(n) => ((n & 7) << 2) | 1,
            Block::Tx(n) => ((n & 7) << 2) | 2,
            Block::Rx(n) => ((n & 7) << 2) | 3,
        }
    }
}

/// The three header bytes of a variable-length SPI frame.
pub const fn frame_header(block: Block, addr: u16, write: bool) -> [u8; 3] {
    [
        (addr >> 8) as u8,
        addr as u8,
        (block.bsb() << 3) | ((write as u8) << 2),
    ]
}

/// Register and ring access to a W5500 over an [`SpiDevice`].
#[derive(Debug)]
pub struct Bus<SPI> {
    spi: SPI,
}

impl<SPI: SpiDevice> Bus<SPI> {
    /// Wrap an SPI device (with its chip select).
    pub fn new(spi: SPI) -> Self {
        Bus { spi }
    }

    /// Give the SPI device back.
    pub fn release(self) -> SPI {
        self.spi
    }

    /// Read `buf.len()` bytes from `block` starting at `addr`.
    pub fn read(&mut self, block: Block, addr: u16, buf: &mut [u8]) -> Result<(), BusError> {
        if buf.is_empty() {
            return Ok(());
        }
        let h = frame_header(block, addr, false);
        self.spi
            .transaction(&mut [Operation::Write(&h), Operation::Read(buf)])
            .map_err(|_| BusError::Spi)
    }

    /// Write `data` to `block` starting at `addr`.
    pub fn write(&mut self, block: Block, addr: u16, data: &[u8]) -> Result<(), BusError> {
        if data.is_empty() {
            return Ok(());
        }
        let h = frame_header(block, addr, true);
        self.spi
            .transaction(&mut [Operation::Write(&h), Operation::Write(data)])
            .map_err(|_| BusError::Spi)
    }

    /// Read one byte.
    pub fn read_u8(&mut self, block: Block, addr: u16) -> Result<u8, BusError> {
        let mut b = [0];
        self.read(block, addr, &mut b)?;
        Ok(b[0])
    }

    /// Write one byte.
    pub fn write_u8(&mut self, block: Block, addr: u16, v: u8) -> Result<(), BusError> {
        self.write(block, addr, &[v])
    }

    /// Read a big-endian 16-bit register.
    pub fn read_u16(&mut self, block: Block, addr: u16) -> Result<u16, BusError> {
        let mut b = [0; 2];
        self.read(block, addr, &mut b)?;
        Ok(u16::from_be_bytes(b))
    }

    /// Write a big-endian 16-bit register.
    pub fn write_u16(&mut self, block: Block, addr: u16, v: u16) -> Result<(), BusError> {
        self.write(block, addr, &v.to_be_bytes())
    }

    /// Read a 16-bit counter the chip may change between its two bytes
    /// (Sn_TX_FSR, Sn_RX_RSR): re-read until two reads agree, as the
    /// datasheet recommends.
    pub fn read_u16_stable(&mut self, block: Block, addr: u16) -> Result<u16, BusError> {
        let mut last = self.read_u16(block, addr)?;
        for _ in 0..STABLE_READS {
            let v = self.read_u16(block, addr)?;
            if v == last {
                return Ok(v);
            }
            last = v;
        }
        Err(BusError::Stuck)
    }

    /// VERSIONR.
    pub fn version(&mut self) -> Result<u8, BusError> {
        self.read_u8(Block::Common, VERSIONR)
    }

    /// Check VERSIONR is 0x04.
    pub fn check_version(&mut self) -> Result<(), BusError> {
        match self.version()? {
            VERSION => Ok(()),
            v => Err(BusError::Version(v)),
        }
    }

    /// Software reset (MR.RST) and wait until the chip clears the bit.
    pub fn soft_reset(&mut self) -> Result<(), BusError> {
        self.write_u8(Block::Common, MR, MR_RST)?;
        for _ in 0..CR_POLLS {
            if self.read_u8(Block::Common, MR)? & MR_RST == 0 {
                return Ok(());
            }
        }
        Err(BusError::Stuck)
    }

    /// Set the MAC address (SHAR).
    pub fn set_mac(&mut self, mac: &[u8; 6]) -> Result<(), BusError> {
        self.write(Block::Common, SHAR, mac)
    }

    /// Read the MAC address (SHAR).
    pub fn mac(&mut self) -> Result<[u8; 6], BusError> {
        let mut m = [0; 6];
        self.read(Block::Common, SHAR, &mut m)?;
        Ok(m)
    }

    /// Whether the PHY reports the link up (PHYCFGR.LNK).
    pub fn link_up(&mut self) -> Result<bool, BusError> {
        Ok(self.read_u8(Block::Common, PHYCFGR)? & PHYCFGR_LNK != 0)
    }

    /// Issue a socket command and wait (bounded) until Sn_CR reads 0.
    pub fn command(&mut self, sn: u8, cmd: u8) -> Result<(), BusError> {
        self.write_u8(Block::Socket(sn), SN_CR, cmd)?;
        for _ in 0..CR_POLLS {
            if self.read_u8(Block::Socket(sn), SN_CR)? == 0 {
                return Ok(());
            }
        }
        Err(BusError::Stuck)
    }

    /// Sn_SR.
    pub fn status(&mut self, sn: u8) -> Result<u8, BusError> {
        self.read_u8(Block::Socket(sn), SN_SR)
    }

    /// Sn_IR.
    pub fn interrupts(&mut self, sn: u8) -> Result<u8, BusError> {
        self.read_u8(Block::Socket(sn), SN_IR)
    }

    /// Clear Sn_IR bits (write 1 to clear).
    pub fn clear_interrupts(&mut self, sn: u8, bits: u8) -> Result<(), BusError> {
        if bits == 0 {
            return Ok(());
        }
        self.write_u8(Block::Socket(sn), SN_IR, bits)
    }

    /// Sn_TX_FSR, read until stable.
    pub fn tx_free(&mut self, sn: u8) -> Result<u16, BusError> {
        self.read_u16_stable(Block::Socket(sn), SN_TX_FSR)
    }

    /// Sn_RX_RSR, read until stable.
    pub fn rx_size(&mut self, sn: u8) -> Result<u16, BusError> {
        self.read_u16_stable(Block::Socket(sn), SN_RX_RSR)
    }

    /// Write `data` into socket `sn`'s TX ring at pointer `ptr`.
    pub fn write_ring(&mut self, sn: u8, ptr: u16, data: &[u8]) -> Result<(), BusError> {
        let (a, b) = split_at_wrap(ptr, data.len());
        self.write(Block::Tx(sn), ptr, &data[..a])?;
        if b > 0 {
            self.write(Block::Tx(sn), 0, &data[a..])?;
        }
        Ok(())
    }

    /// Read `buf.len()` bytes of socket `sn`'s RX ring at pointer `ptr`.
    pub fn read_ring(&mut self, sn: u8, ptr: u16, buf: &mut [u8]) -> Result<(), BusError> {
        let (a, b) = split_at_wrap(ptr, buf.len());
        let (first, second) = buf.split_at_mut(a);
        self.read(Block::Rx(sn), ptr, first)?;
        if b > 0 {
            self.read(Block::Rx(sn), 0, second)?;
        }
        Ok(())
    }
}

/// How a burst of `len` bytes at `ptr` splits at the 16-bit wrap.
fn split_at_wrap(ptr: u16, len: usize) -> (usize, usize) {
    let to_end = 0x1_0000 - ptr as usize;
    if len <= to_end {
        (len, 0)
    } else {
        (to_end, len - to_end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_headers() {
        assert_eq!(
            frame_header(Block::Common, 0x0039, false),
            [0x00, 0x39, 0x00]
        );
        assert_eq!(
            frame_header(Block::Socket(0), 0x0001, true),
            [0x00, 0x01, 0x0C]
        );
        assert_eq!(frame_header(Block::Tx(0), 0x1234, true), [0x12, 0x34, 0x14]);
        assert_eq!(frame_header(Block::Rx(0), 0, false), [0, 0, 0x18]);
        assert_eq!(frame_header(Block::Socket(7), 0x0003, false), [0, 3, 0xE8]);
        assert_eq!(frame_header(Block::Rx(7), 0, false), [0, 0, 0xF8]);
    }

    #[test]
    fn wrap_split() {
        assert_eq!(split_at_wrap(0xFFF0, 0x10), (0x10, 0));
        assert_eq!(split_at_wrap(0xFFF0, 0x20), (0x10, 0x10));
        assert_eq!(split_at_wrap(0, 100), (100, 0));
    }
}
