//! The SPI wire format of ESP-Hosted-FG: the 12-byte payload header, its
//! checksum, sequence numbers, the private init event and the TLV envelope
//! of the serial (control) interface.
//!
//! Every SPI transaction moves [`SPI_BUFFER_SIZE`] bytes in each direction.
//! A buffer starts with a [`Header`]; `len == 0` marks an idle (dummy)
//! buffer that carries nothing.
//!
//! ```text
//! byte  0     if_type (bits 0..4) | if_num (bits 4..8)
//! byte  1     flags (bit 0: more fragments follow)
//! bytes 2-3   len       payload length, little-endian
//! bytes 4-5   offset    where the payload starts (12), little-endian
//! bytes 6-7   checksum  16-bit sum of header + payload bytes, computed
//!                       with this field zero, little-endian
//! bytes 8-9   seq_num   per-sender frame counter, little-endian
//! byte 10     reserved2 (throttle bits in newer firmware; sent as 0)
//! byte 11     packet type: hci_pkt_type on HCI, priv_pkt_type on PRIV
//! ```

/// Size of every SPI transfer, both directions (`SPI_BUFFER_SIZE` in the firmware).
pub const SPI_BUFFER_SIZE: usize = 1600;
/// Length of [`Header`] on the wire.
pub const HEADER_LEN: usize = 12;
/// Largest payload one transfer carries.
pub const MAX_PAYLOAD: usize = SPI_BUFFER_SIZE - HEADER_LEN;

/// Interface types (`if_type`), in the numbering of current ESP-Hosted
/// releases (interface 0 is invalid/dummy; legacy Linux-FG builds numbered
/// STA from 0).
pub mod if_type {
    /// Invalid / dummy buffer.
    pub const INVALID: u8 = 0;
    /// Wi-Fi station: 802.3 frames.
    pub const STA: u8 = 1;
    /// Wi-Fi soft access point: 802.3 frames.
    pub const AP: u8 = 2;
    /// Serial interface: control messages (protobuf in a TLV envelope).
    pub const SERIAL: u8 = 3;
    /// Bluetooth HCI.
    pub const HCI: u8 = 4;
    /// Private host/firmware messages (the init event).
    pub const PRIV: u8 = 5;
    /// Throughput test interface.
    pub const TEST: u8 = 6;
    /// Ethernet interface (newer firmware).
    pub const ETH: u8 = 7;
    /// One past the last valid type; the firmware's idle buffers use it.
    pub const MAX: u8 = 8;
}

/// `flags` bit: more fragments of the same message follow.
pub const FLAG_MORE_FRAGMENT: u8 = 1 << 0;

/// `priv_pkt_type` of an event on the PRIV interface.
pub const PRIV_PACKET_TYPE_EVENT: u8 = 0x33;
/// Event type of the init event the firmware sends after it boots.
pub const PRIV_EVENT_INIT: u8 = 0x22;
/// Init-event TLV tag: capability bits ([`CAP_WLAN_SPI`], [`CAP_CHECKSUM`], ...).
pub const PRIV_TAG_CAPABILITY: u8 = 0x11;
/// Init-event TLV tag: chip id.
pub const PRIV_TAG_FIRMWARE_CHIP_ID: u8 = 0x12;
/// Init-event TLV tag: raw throughput test configuration.
pub const PRIV_TAG_TEST_RAW_TP: u8 = 0x13;

/// Capability bit: Wi-Fi over SPI.
pub const CAP_WLAN_SPI: u8 = 1 << 5;
/// Capability bit: Bluetooth over SPI.
pub const CAP_BT_SPI: u8 = 1 << 6;
/// Capability bit: the firmware fills in and checks header checksums.
pub const CAP_CHECKSUM: u8 = 1 << 7;

/// Serial TLV type: endpoint name.
pub const TLV_EPNAME: u8 = 0x01;
/// Serial TLV type: data (a protobuf message).
pub const TLV_DATA: u8 = 0x02;
/// Endpoint of control requests and responses.
pub const EP_RESPONSE: &[u8] = b"RPCRsp";
/// Endpoint of control events.
pub const EP_EVENT: &[u8] = b"RPCEvt";
/// Legacy endpoint name of responses (older firmware).
pub const EP_RESPONSE_LEGACY: &[u8] = b"ctrlResp";
/// Legacy endpoint name of events (older firmware).
pub const EP_EVENT_LEGACY: &[u8] = b"ctrlEvnt";

/// The payload header at the start of every SPI buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Header {
    /// Interface type (see [`if_type`]), 4 bits.
    pub if_type: u8,
    /// Interface number, 4 bits.
    pub if_num: u8,
    /// Flags ([`FLAG_MORE_FRAGMENT`]).
    pub flags: u8,
    /// Payload length; 0 for an idle buffer.
    pub len: u16,
    /// Offset of the payload from the start of the buffer.
    pub offset: u16,
    /// Checksum over header and payload (see [`checksum`]).
    pub checksum: u16,
    /// Sequence number.
    pub seq_num: u16,
    /// Reserved byte (throttle control in newer firmware).
    pub reserved2: u8,
    /// HCI or PRIV packet type.
    pub pkt_type: u8,
}

impl Header {
    /// Decode the first [`HEADER_LEN`] bytes of `b` (`None` if shorter).
    pub fn parse(b: &[u8]) -> Option<Header> {
        let b = b.get(..HEADER_LEN)?;
        let le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(Header {
            if_type: b[0] & 0x0f,
            if_num: b[0] >> 4,
            flags: b[1],
            len: le(2),
            offset: le(4),
            checksum: le(6),
            seq_num: le(8),
            reserved2: b[10],
            pkt_type: b[11],
        })
    }

    /// Encode into the first [`HEADER_LEN`] bytes of `b`.
    ///
    /// # Panics
    /// If `b` is shorter than [`HEADER_LEN`].
    pub fn write(&self, b: &mut [u8]) {
        b[0] = (self.if_type & 0x0f) | (self.if_num << 4);
        b[1] = self.flags;
        b[2..4].copy_from_slice(&self.len.to_le_bytes());
        b[4..6].copy_from_slice(&self.offset.to_le_bytes());
        b[6..8].copy_from_slice(&self.checksum.to_le_bytes());
        b[8..10].copy_from_slice(&self.seq_num.to_le_bytes());
        b[10] = self.reserved2;
        b[11] = self.pkt_type;
    }
}

/// The firmware's checksum: the 16-bit wrapping sum of every byte of
/// `frame` (header and payload), with the checksum field (bytes 6 and 7)
/// counted as zero.
pub fn checksum(frame: &[u8]) -> u16 {
    frame
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 6 && *i != 7)
        .fold(0u16, |s, (_, &b)| s.wrapping_add(b as u16))
}

/// Write a frame into `buf`: `payload` at offset [`HEADER_LEN`], then the
/// header with `len`, `offset` and `checksum` filled in. Returns the frame
/// length (header + payload), or `None` if it does not fit.
pub fn build(buf: &mut [u8], mut header: Header, payload: &[u8]) -> Option<usize> {
    let total = HEADER_LEN + payload.len();
    if total > buf.len() || total > SPI_BUFFER_SIZE {
        return None;
    }
    buf[HEADER_LEN..total].copy_from_slice(payload);
    header.len = payload.len() as u16;
    header.offset = HEADER_LEN as u16;
    header.checksum = 0;
    header.write(buf);
    let sum = checksum(&buf[..total]);
    buf[6..8].copy_from_slice(&sum.to_le_bytes());
    Some(total)
}

/// Why a received buffer was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FrameError {
    /// `offset` is before the end of the header, or `offset + len` runs
    /// past the buffer.
    BadLength,
    /// The checksum does not match.
    BadChecksum,
}

/// Validate a received buffer. `Ok(None)` for an idle buffer (`len == 0`),
/// otherwise the header and the payload. The checksum is verified when
/// `verify_checksum` is set.
pub fn open(buf: &[u8], verify_checksum: bool) -> Result<Option<(Header, &[u8])>, FrameError> {
    let h = Header::parse(buf).ok_or(FrameError::BadLength)?;
    if h.len == 0 {
        return Ok(None);
    }
    let (off, len) = (h.offset as usize, h.len as usize);
    if off < HEADER_LEN || off + len > buf.len().min(SPI_BUFFER_SIZE) {
        return Err(FrameError::BadLength);
    }
    if verify_checksum && checksum(&buf[..off + len]) != h.checksum {
        return Err(FrameError::BadChecksum);
    }
    Ok(Some((h, &buf[off..off + len])))
}

/// How a received sequence number relates to the expected one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SeqCheck {
    /// The expected number (or nothing was expected yet).
    InOrder,
    /// Neither expected nor a replay; the number is this far ahead
    /// (wrapping): frames were lost, or the sender restarted its count.
    Gap(u16),
    /// Behind the expected number by at most [`REPLAY_WINDOW`]: a repeated
    /// or stale frame.
    Replay,
}

/// How far behind the expected sequence number a frame counts as a
/// replay; anything further off is taken as a jump (a restarted count)
/// and reported as a gap.
pub const REPLAY_WINDOW: u16 = 64;

/// Compare a received sequence number with the expected one.
pub fn check_seq(expected: Option<u16>, got: u16) -> SeqCheck {
    let Some(exp) = expected else {
        return SeqCheck::InOrder;
    };
    match got.wrapping_sub(exp) {
        0 => SeqCheck::InOrder,
        _ if exp.wrapping_sub(got) <= REPLAY_WINDOW => SeqCheck::Replay,
        d => SeqCheck::Gap(d),
    }
}

/// Wrap `data` in the serial TLV envelope: endpoint name, then data, each
/// as type (1 byte), length (LE16), value. Returns the length written.
pub fn tlv_compose(buf: &mut [u8], endpoint: &[u8], data: &[u8]) -> Option<usize> {
    let total = 3 + endpoint.len() + 3 + data.len();
    if total > buf.len() || endpoint.len() > u16::MAX as usize || data.len() > u16::MAX as usize {
        return None;
    }
    let mut p = 0;
    for (t, v) in [(TLV_EPNAME, endpoint), (TLV_DATA, data)] {
        buf[p] = t;
        buf[p + 1..p + 3].copy_from_slice(&(v.len() as u16).to_le_bytes());
        buf[p + 3..p + 3 + v.len()].copy_from_slice(v);
        p += 3 + v.len();
    }
    Some(p)
}

/// Split a serial message into (endpoint name, data). `None` if a TLV runs
/// past the message, a type is unknown, or either part is missing.
pub fn tlv_parse(msg: &[u8]) -> Option<(&[u8], &[u8])> {
    let (mut ep, mut data) = (None, None);
    let mut p = 0;
    while p < msg.len() {
        let t = msg[p];
        let len = u16::from_le_bytes([*msg.get(p + 1)?, *msg.get(p + 2)?]) as usize;
        let v = msg.get(p + 3..p + 3 + len)?;
        match t {
            TLV_EPNAME => ep = Some(v),
            TLV_DATA => data = Some(v),
            _ => return None,
        }
        p += 3 + len;
    }
    Some((ep?, data?))
}

/// What the init event on the PRIV interface says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct InitInfo {
    /// Capability bits ([`CAP_WLAN_SPI`], [`CAP_CHECKSUM`], ...).
    pub capabilities: u8,
    /// Chip id (0 = ESP32, 2 = ESP32-S2, 5 = ESP32-C3, 9 = ESP32-S3, ...).
    pub chip_id: u8,
}

/// Parse the payload of a PRIV frame whose packet type is
/// [`PRIV_PACKET_TYPE_EVENT`]: `Some` if it is an init event.
pub fn parse_init_event(payload: &[u8]) -> Option<InitInfo> {
    if payload.len() < 2 || payload[0] != PRIV_EVENT_INIT {
        return None;
    }
    let n = (payload[1] as usize).min(payload.len() - 2);
    let mut tlvs = &payload[2..2 + n];
    let mut info = InitInfo::default();
    while tlvs.len() >= 2 {
        let (tag, len) = (tlvs[0], tlvs[1] as usize);
        let Some(v) = tlvs.get(2..2 + len) else { break };
        match (tag, v.first()) {
            (PRIV_TAG_CAPABILITY, Some(&c)) => info.capabilities = c,
            (PRIV_TAG_FIRMWARE_CHIP_ID, Some(&c)) => info.chip_id = c,
            _ => {}
        }
        tlvs = &tlvs[2 + len..];
    }
    Some(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_layout() {
        let h = Header {
            if_type: if_type::SERIAL,
            if_num: 2,
            flags: FLAG_MORE_FRAGMENT,
            len: 0x0102,
            offset: 12,
            checksum: 0xbeef,
            seq_num: 0x0a0b,
            reserved2: 0,
            pkt_type: 0x33,
        };
        let mut b = [0u8; 12];
        h.write(&mut b);
        assert_eq!(
            b,
            [0x23, 1, 0x02, 0x01, 12, 0, 0xef, 0xbe, 0x0b, 0x0a, 0, 0x33]
        );
        assert_eq!(Header::parse(&b), Some(h));
    }

    #[test]
    fn build_open_checksum() {
        let mut buf = [0u8; SPI_BUFFER_SIZE];
        let h = Header {
            if_type: if_type::STA,
            seq_num: 7,
            ..Default::default()
        };
        let n = build(&mut buf, h, &[1, 2, 3]).unwrap();
        assert_eq!(n, 15);
        // 0x01 + 3 (len) + 12 (offset) + 7 (seq) + 1 + 2 + 3
        assert_eq!(u16::from_le_bytes([buf[6], buf[7]]), 29);
        let (h2, p) = open(&buf, true).unwrap().unwrap();
        assert_eq!(
            (h2.if_type, h2.seq_num, p),
            (if_type::STA, 7, &[1u8, 2, 3][..])
        );
        buf[13] ^= 0x40;
        assert_eq!(open(&buf, true), Err(FrameError::BadChecksum));
        assert!(open(&buf, false).is_ok());
        buf[2..4].copy_from_slice(&1600u16.to_le_bytes());
        assert_eq!(open(&buf, false), Err(FrameError::BadLength));
        buf[2..4].fill(0);
        assert_eq!(open(&buf, true), Ok(None));
    }

    #[test]
    fn seq_and_tlv() {
        assert_eq!(check_seq(None, 9), SeqCheck::InOrder);
        assert_eq!(check_seq(Some(9), 9), SeqCheck::InOrder);
        assert_eq!(check_seq(Some(0xffff), 1), SeqCheck::Gap(2));
        assert_eq!(check_seq(Some(9), 8), SeqCheck::Replay);
        assert_eq!(check_seq(Some(2), 0xfffa), SeqCheck::Replay);
        assert_eq!(
            check_seq(Some(1000), 1),
            SeqCheck::Gap(1u16.wrapping_sub(1000))
        );
        let mut b = [0u8; 32];
        let n = tlv_compose(&mut b, EP_RESPONSE, &[0xaa, 0xbb]).unwrap();
        assert_eq!(&b[..n], b"\x01\x06\x00RPCRsp\x02\x02\x00\xaa\xbb");
        assert_eq!(tlv_parse(&b[..n]), Some((EP_RESPONSE, &[0xaa, 0xbb][..])));
        assert_eq!(tlv_parse(&b[..n - 1]), None);
        assert_eq!(tlv_parse(b"\x03\x00\x00"), None);
    }

    #[test]
    fn init_event() {
        let p = [0x22, 9, 0x11, 1, 0xa0, 0x12, 1, 9, 0x13, 1, 0];
        assert_eq!(
            parse_init_event(&p),
            Some(InitInfo {
                capabilities: 0xa0,
                chip_id: 9
            })
        );
        assert_eq!(parse_init_event(&[0x21, 0]), None);
        assert_eq!(
            parse_init_event(&[0x22, 200, 0x11]),
            Some(InitInfo::default())
        );
    }
}
