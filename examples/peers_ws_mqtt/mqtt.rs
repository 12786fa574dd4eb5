//! MQTT 3.1.1 packets over a blocking [`Stream`], with the no_std codec of
//! the `mqttrs` crate (built without its `std` feature, as on a
//! microcontroller: packets borrow from the receive buffer, topic lists are
//! fixed-capacity).
//!
//! [`PacketReader`] reads only the fixed header's remaining-length field to
//! know when a whole packet has arrived, then lets the codec decode exactly
//! that packet. Also here: topic-filter matching for the simulated broker
//! and builders for the packets that carry topic lists.

use std::fmt;

use mqttrs::{
    decode_slice, encode_slice, Packet, Pid, QoS, Suback, Subscribe, SubscribeReturnCodes,
    SubscribeTopic, Unsubscribe,
};
use netdever::Error;

use super::Stream;

/// Largest packet taken or sent.
pub const MAX_PACKET: usize = 16 * 1024;

/// Why an MQTT call failed.
#[derive(Debug)]
pub enum MqttError {
    /// The socket call failed (`Timeout` after a deadline or timeout).
    Io(Error),
    /// The peer closed TCP in the middle of a packet.
    Eof,
    /// The codec refused the packet.
    Codec(mqttrs::Error),
    /// A packet larger than [`MAX_PACKET`].
    TooLarge(usize),
}

impl fmt::Display for MqttError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MqttError::Io(e) => write!(f, "socket: {e}"),
            MqttError::Eof => write!(f, "the peer closed TCP in the middle of a packet"),
            MqttError::Codec(e) => write!(f, "MQTT codec: {e:?}"),
            MqttError::TooLarge(n) => write!(f, "packet of {n} bytes is too large"),
        }
    }
}

/// The size of the packet at the start of `b` (fixed header included), or
/// `None` if its fixed header is not complete yet.
fn packet_size(b: &[u8]) -> Result<Option<usize>, MqttError> {
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&byte) = b.get(1 + i) else {
            return Ok(None);
        };
        len |= ((byte & 0x7f) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some(1 + (i + 1) + len));
        }
    }
    Err(MqttError::Codec(mqttrs::Error::InvalidLength))
}

/// Reads whole packets from a stream.
pub struct PacketReader {
    rx: Vec<u8>,
    len: usize,
    taken: usize,
}

impl Default for PacketReader {
    fn default() -> Self {
        PacketReader {
            rx: vec![0; MAX_PACKET],
            len: 0,
            taken: 0,
        }
    }
}

impl PacketReader {
    /// The next packet, `Ok(None)` when the peer closed TCP between
    /// packets. A read that times out returns `Io(Timeout)` and may be
    /// repeated: a partial packet stays buffered.
    pub fn next<'a>(&'a mut self, io: &Stream<'_>) -> Result<Option<Packet<'a>>, MqttError> {
        if self.taken > 0 {
            self.rx.copy_within(self.taken..self.len, 0);
            self.len -= self.taken;
            self.taken = 0;
        }
        loop {
            if let Some(total) = packet_size(&self.rx[..self.len])? {
                if total > self.rx.len() {
                    return Err(MqttError::TooLarge(total));
                }
                if total <= self.len {
                    self.taken = total;
                    return match decode_slice(&self.rx[..total]) {
                        Ok(Some(p)) => Ok(Some(p)),
                        Ok(None) => Err(MqttError::Codec(mqttrs::Error::InvalidLength)),
                        Err(e) => Err(MqttError::Codec(e)),
                    };
                }
            }
            match io.read(&mut self.rx[self.len..]) {
                Ok(0) if self.len == 0 => return Ok(None),
                Ok(0) => return Err(MqttError::Eof),
                Ok(n) => self.len += n,
                Err(e) => return Err(MqttError::Io(e)),
            }
        }
    }
}

/// Encode `pkt` into `buf` and send it.
pub fn send(io: &Stream<'_>, pkt: &Packet<'_>, buf: &mut Vec<u8>) -> Result<(), MqttError> {
    if buf.len() < MAX_PACKET {
        buf.resize(MAX_PACKET, 0);
    }
    let n = encode_slice(pkt, buf).map_err(MqttError::Codec)?;
    io.write_all(&buf[..n]).map_err(MqttError::Io)
}

/// A SUBSCRIBE for `filters` (at most 5, each at most 256 bytes: the
/// codec's no_std limits).
pub fn subscribe(pid: Pid, filters: &[(&str, QoS)]) -> Result<Subscribe, String> {
    let mut s = Subscribe {
        pid,
        topics: Default::default(),
    };
    for &(f, qos) in filters {
        let mut t = SubscribeTopic {
            topic_path: Default::default(),
            qos,
        };
        t.topic_path
            .push_str(f)
            .map_err(|_| format!("topic filter longer than 256 bytes: {f}"))?;
        s.topics
            .push(t)
            .map_err(|_| "more than 5 topic filters in one SUBSCRIBE".to_string())?;
    }
    Ok(s)
}

/// An UNSUBSCRIBE for `filters`.
pub fn unsubscribe(pid: Pid, filters: &[&str]) -> Result<Unsubscribe, String> {
    let mut u = Unsubscribe {
        pid,
        topics: Default::default(),
    };
    for &f in filters {
        // The element type is the codec's fixed-capacity string; build it in place.
        u.topics
            .push(Default::default())
            .map_err(|_| "more than 5 topic filters in one UNSUBSCRIBE".to_string())?;
        if let Some(t) = u.topics.last_mut() {
            t.push_str(f)
                .map_err(|_| format!("topic filter longer than 256 bytes: {f}"))?;
        }
    }
    Ok(u)
}

/// A SUBACK with `codes`.
pub fn suback(pid: Pid, codes: &[SubscribeReturnCodes]) -> Suback {
    let mut s = Suback {
        pid,
        return_codes: Default::default(),
    };
    for &c in codes {
        // At most 5 filters come in (the codec's limit), so this fits.
        let _ = s.return_codes.push(c);
    }
    s
}

/// QoS as a number (0, 1, 2).
pub fn qos_level(q: QoS) -> u8 {
    match q {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

/// Whether `filter` is a valid topic filter: `#` only as the whole last
/// level, `+` only as a whole level.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, l)| {
        (!l.contains('#') || (*l == "#" && i == levels.len() - 1))
            && (!l.contains('+') || *l == "+")
    })
}

/// Whether topic name `topic` matches topic filter `filter` (MQTT 3.1.1
/// 4.7: `+` one level, `#` the rest including the parent; topics starting
/// with `$` are not matched by a leading wildcard).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}
