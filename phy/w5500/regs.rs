//! W5500 register map (datasheet §3–4): offsets within the common block
//! and within a socket's register block, bit values, commands and status
//! codes.

/// Mode register: bit 7 RST (software reset, self-clearing).
pub const MR: u16 = 0x0000;
/// MR bit: software reset.
pub const MR_RST: u8 = 0x80;
/// Gateway address (4 bytes).
pub const GAR: u16 = 0x0001;
/// Subnet mask (4 bytes).
pub const SUBR: u16 = 0x0005;
/// Source hardware (MAC) address (6 bytes).
pub const SHAR: u16 = 0x0009;
/// Source IP address (4 bytes).
pub const SIPR: u16 = 0x000F;
/// Interrupt low-level timer (2 bytes).
pub const INTLEVEL: u16 = 0x0013;
/// Interrupt register (CONFLICT, UNREACH, PPPoE, MP), write 1 to clear.
pub const IR: u16 = 0x0015;
/// Interrupt mask for IR.
pub const IMR: u16 = 0x0016;
/// Socket interrupt register: bit n = socket n has an interrupt.
pub const SIR: u16 = 0x0017;
/// Socket interrupt mask.
pub const SIMR: u16 = 0x0018;
/// Retry time, 100 us units (2 bytes, reset 0x07D0 = 200 ms).
pub const RTR: u16 = 0x0019;
/// Retry count (reset 0x08).
pub const RCR: u16 = 0x001B;
/// PHY configuration: bit 7 RST, bit 6 OPMD, bits 5:3 OPMDC, bit 2 DPX,
/// bit 1 SPD, bit 0 LNK.
pub const PHYCFGR: u16 = 0x002E;
/// PHYCFGR bit: link up.
pub const PHYCFGR_LNK: u8 = 0x01;
/// Chip version (always 0x04 on a W5500).
pub const VERSIONR: u16 = 0x0039;
/// The value VERSIONR must read.
pub const VERSION: u8 = 0x04;

/// Socket mode register: bits 3:0 protocol, bit 7 MFEN/MULTI, bit 6
/// BCASTB, bit 5 ND/MC/MMB, bit 4 UCASTB/MIP6B.
pub const SN_MR: u16 = 0x0000;
/// Socket command register (clears itself once the command is accepted).
pub const SN_CR: u16 = 0x0001;
/// Socket interrupt register, write 1 to clear.
pub const SN_IR: u16 = 0x0002;
/// Socket status register.
pub const SN_SR: u16 = 0x0003;
/// Source port (2 bytes).
pub const SN_PORT: u16 = 0x0004;
/// Destination MAC (6 bytes).
pub const SN_DHAR: u16 = 0x0006;
/// Destination IP (4 bytes); the peer's after a TCP connection.
pub const SN_DIPR: u16 = 0x000C;
/// Destination port (2 bytes).
pub const SN_DPORT: u16 = 0x0010;
/// Maximum segment size (2 bytes).
pub const SN_MSSR: u16 = 0x0012;
/// RX buffer size in KB (0, 1, 2, 4, 8, 16).
pub const SN_RXBUF_SIZE: u16 = 0x001E;
/// TX buffer size in KB.
pub const SN_TXBUF_SIZE: u16 = 0x001F;
/// TX free size (2 bytes, read twice until stable).
pub const SN_TX_FSR: u16 = 0x0020;
/// TX read pointer (2 bytes).
pub const SN_TX_RD: u16 = 0x0022;
/// TX write pointer (2 bytes).
pub const SN_TX_WR: u16 = 0x0024;
/// RX received size (2 bytes, read twice until stable).
pub const SN_RX_RSR: u16 = 0x0026;
/// RX read pointer (2 bytes).
pub const SN_RX_RD: u16 = 0x0028;
/// RX write pointer (2 bytes).
pub const SN_RX_WR: u16 = 0x002A;
/// Socket interrupt mask (reset 0xFF).
pub const SN_IMR: u16 = 0x002C;
/// Keep-alive timer, 5 s units.
pub const SN_KPALVTR: u16 = 0x002F;

/// Sn_MR protocol: closed.
pub const MR_CLOSE: u8 = 0x00;
/// Sn_MR protocol: TCP.
pub const MR_TCP: u8 = 0x01;
/// Sn_MR protocol: UDP.
pub const MR_UDP: u8 = 0x02;
/// Sn_MR protocol: MACRAW (socket 0 only).
pub const MR_MACRAW: u8 = 0x04;
/// Sn_MR bit 7 in MACRAW: MAC filter (own MAC, broadcast, multicast only).
pub const MR_MFEN: u8 = 0x80;
/// Sn_MR bit 5 in TCP: no delayed ACK.
pub const MR_ND: u8 = 0x20;

/// Command: open with the protocol in Sn_MR.
pub const CR_OPEN: u8 = 0x01;
/// Command: TCP listen.
pub const CR_LISTEN: u8 = 0x02;
/// Command: TCP connect to Sn_DIPR:Sn_DPORT.
pub const CR_CONNECT: u8 = 0x04;
/// Command: TCP disconnect (FIN).
pub const CR_DISCON: u8 = 0x08;
/// Command: close at once.
pub const CR_CLOSE: u8 = 0x10;
/// Command: send TX_RD..TX_WR.
pub const CR_SEND: u8 = 0x20;
/// Command: UDP send to Sn_DHAR without ARP.
pub const CR_SEND_MAC: u8 = 0x21;
/// Command: TCP keep-alive probe.
pub const CR_SEND_KEEP: u8 = 0x22;
/// Command: RX_RD was updated.
pub const CR_RECV: u8 = 0x40;

/// Sn_IR: a SEND completed.
pub const IR_SEND_OK: u8 = 0x10;
/// Sn_IR: ARP or TCP timeout.
pub const IR_TIMEOUT: u8 = 0x08;
/// Sn_IR: data received.
pub const IR_RECV: u8 = 0x04;
/// Sn_IR: FIN or RST received.
pub const IR_DISCON: u8 = 0x02;
/// Sn_IR: connection established.
pub const IR_CON: u8 = 0x01;

/// Sn_SR: closed.
pub const SOCK_CLOSED: u8 = 0x00;
/// Sn_SR: TCP opened.
pub const SOCK_INIT: u8 = 0x13;
/// Sn_SR: TCP listening.
pub const SOCK_LISTEN: u8 = 0x14;
/// Sn_SR: SYN sent (transient).
pub const SOCK_SYNSENT: u8 = 0x15;
/// Sn_SR: SYN received (transient).
pub const SOCK_SYNRECV: u8 = 0x16;
/// Sn_SR: connected.
pub const SOCK_ESTABLISHED: u8 = 0x17;
/// Sn_SR: closing (transient).
pub const SOCK_FIN_WAIT: u8 = 0x18;
/// Sn_SR: closing (transient).
pub const SOCK_CLOSING: u8 = 0x1A;
/// Sn_SR: closing (transient).
pub const SOCK_TIME_WAIT: u8 = 0x1B;
/// Sn_SR: the peer sent FIN.
pub const SOCK_CLOSE_WAIT: u8 = 0x1C;
/// Sn_SR: closing (transient).
pub const SOCK_LAST_ACK: u8 = 0x1D;
/// Sn_SR: UDP opened.
pub const SOCK_UDP: u8 = 0x22;
/// Sn_SR: MACRAW opened (socket 0).
pub const SOCK_MACRAW: u8 = 0x42;
