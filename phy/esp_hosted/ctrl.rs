//! The control path: a minimal hand-written protobuf codec and the few
//! `CtrlMsg` messages (`esp_hosted_config.proto`) the driver needs.
//!
//! A control message travels on the SERIAL interface inside the TLV
//! envelope of [`frame::tlv_compose`](super::frame::tlv_compose). `CtrlMsg`
//! is
//!
//! ```text
//! 1: msg_type (enum: 1 request, 2 response, 3 event)
//! 2: msg_id   (enum: 101.. requests, 201.. responses, 301.. events)
//! 3: uid      (int32)
//! 4: req_resp_type (uint32)
//! N: payload  (oneof; the field number equals msg_id)
//! ```
//!
//! Fields at their default value are omitted (proto3), except the oneof
//! payload, which is always present so the receiver sees which case is set.
//! No allocator: encoders write into caller buffers, the decoder borrows.

/// `CtrlMsgType::Req`.
pub const MSG_TYPE_REQ: u32 = 1;
/// `CtrlMsgType::Resp`.
pub const MSG_TYPE_RESP: u32 = 2;
/// `CtrlMsgType::Event`.
pub const MSG_TYPE_EVENT: u32 = 3;

/// `CtrlMsgId` values used here.
pub mod msg_id {
    /// `Req_GetMACAddress`.
    pub const REQ_GET_MAC_ADDRESS: u32 = 101;
    /// `Req_ConnectAP`.
    pub const REQ_CONNECT_AP: u32 = 107;
    /// `Req_DisconnectAP`.
    pub const REQ_DISCONNECT_AP: u32 = 108;
    /// Responses are the request id plus this.
    pub const RESP_OFFSET: u32 = 100;
    /// `Resp_GetMACAddress`.
    pub const RESP_GET_MAC_ADDRESS: u32 = 201;
    /// `Resp_ConnectAP`.
    pub const RESP_CONNECT_AP: u32 = 207;
    /// `Resp_DisconnectAP`.
    pub const RESP_DISCONNECT_AP: u32 = 208;
    /// `Event_ESPInit`.
    pub const EVENT_ESP_INIT: u32 = 301;
    /// `Event_Heartbeat`.
    pub const EVENT_HEARTBEAT: u32 = 302;
    /// `Event_StationDisconnectFromAP`.
    pub const EVENT_STATION_DISCONNECT_FROM_AP: u32 = 303;
    /// `Event_StationConnectedToAP`.
    pub const EVENT_STATION_CONNECTED_TO_AP: u32 = 305;
}

/// `Ctrl_WifiMode::STA`, the `mode` of `Req_GetMACAddress`.
pub const WIFI_MODE_STA: i32 = 1;

/// `resp` codes of responses.
pub mod status {
    /// Success.
    pub const SUCCESS: i32 = 0;
    /// Generic failure.
    pub const FAILURE: i32 = -1;
    /// `Ctrl_Status::Not_Connected`.
    pub const NOT_CONNECTED: i32 = 1;
    /// `Ctrl_Status::No_AP_Found` / `CTRL_ERR_NO_AP_FOUND`.
    pub const NO_AP_FOUND: i32 = 2;
    /// `Ctrl_Status::Connection_Fail` / `CTRL_ERR_INVALID_PASSWORD`: the
    /// host libraries read this code as "invalid password".
    pub const INVALID_PASSWORD: i32 = 3;
}

/// Protobuf wire types.
mod wire {
    pub const VARINT: u8 = 0;
    pub const FIXED64: u8 = 1;
    pub const LEN: u8 = 2;
    pub const FIXED32: u8 = 5;
}

/// A malformed or unexpected protobuf message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ProtoError;

/// Protobuf encoder into a caller buffer. Running out of room is sticky:
/// [`Encoder::finish`] then returns `None`.
pub struct Encoder<'a> {
    buf: &'a mut [u8],
    pos: usize,
    overflow: bool,
}

impl<'a> Encoder<'a> {
    /// Encode into `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Encoder {
            buf,
            pos: 0,
            overflow: false,
        }
    }

    fn put(&mut self, b: &[u8]) {
        match self.buf.get_mut(self.pos..self.pos + b.len()) {
            Some(dst) if !self.overflow => {
                dst.copy_from_slice(b);
                self.pos += b.len();
            }
            _ => self.overflow = true,
        }
    }

    /// A raw base-128 varint.
    pub fn varint(&mut self, mut v: u64) {
        let mut tmp = [0u8; 10];
        let mut n = 0;
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                tmp[n] = byte;
                n += 1;
                break;
            }
            tmp[n] = byte | 0x80;
            n += 1;
        }
        self.put(&tmp[..n]);
    }

    fn key(&mut self, field: u32, wire_type: u8) {
        self.varint(((field as u64) << 3) | wire_type as u64);
    }

    /// An unsigned varint field (omitted when 0).
    pub fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, wire::VARINT);
            self.varint(v);
        }
    }

    /// An `int32` / enum field (omitted when 0; negative values take ten
    /// bytes, sign-extended as protobuf requires).
    pub fn int32(&mut self, field: u32, v: i32) {
        self.uint(field, v as i64 as u64);
    }

    /// A `bool` field (omitted when false).
    pub fn bool(&mut self, field: u32, v: bool) {
        self.uint(field, v as u64);
    }

    /// A `bytes` / `string` field (omitted when empty).
    pub fn bytes(&mut self, field: u32, v: &[u8]) {
        if !v.is_empty() {
            self.message(field, v);
        }
    }

    /// An embedded message, already encoded (always written, even empty).
    pub fn message(&mut self, field: u32, encoded: &[u8]) {
        self.key(field, wire::LEN);
        self.varint(encoded.len() as u64);
        self.put(encoded);
    }

    /// Bytes written, or `None` if the buffer was too small.
    pub fn finish(self) -> Option<usize> {
        (!self.overflow).then_some(self.pos)
    }
}

/// A decoded field value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// Varint (integers, enums, bools).
    Varint(u64),
    /// Length-delimited (bytes, strings, messages).
    Bytes(&'a [u8]),
    /// 32-bit fixed.
    Fixed32(u32),
    /// 64-bit fixed.
    Fixed64(u64),
}

impl Value<'_> {
    /// As a varint-encoded `int32`, or 0 for other wire types.
    pub fn int32(&self) -> i32 {
        match self {
            Value::Varint(v) => *v as i32,
            _ => 0,
        }
    }
}

/// Protobuf decoder: yields `(field number, value)` pairs.
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// Decode `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or(ProtoError)?;
            self.pos += 1;
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ProtoError)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let end = self.pos.checked_add(n).ok_or(ProtoError)?;
        let s = self.buf.get(self.pos..end).ok_or(ProtoError)?;
        self.pos = end;
        Ok(s)
    }

    /// The next field, `Ok(None)` at the end, `Err` if malformed.
    pub fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>, ProtoError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| ProtoError)?;
        if field == 0 {
            return Err(ProtoError);
        }
        let v = match (key & 7) as u8 {
            wire::VARINT => Value::Varint(self.varint()?),
            wire::FIXED64 => {
                let b = self.take(8)?;
                Value::Fixed64(u64::from_le_bytes(b.try_into().map_err(|_| ProtoError)?))
            }
            wire::LEN => {
                let n = usize::try_from(self.varint()?).map_err(|_| ProtoError)?;
                Value::Bytes(self.take(n)?)
            }
            wire::FIXED32 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes(b.try_into().map_err(|_| ProtoError)?))
            }
            _ => return Err(ProtoError),
        };
        Ok(Some((field, v)))
    }
}

/// Encode a request `CtrlMsg` whose payload (field `id`) is `payload`.
pub fn encode_request(buf: &mut [u8], id: u32, uid: i32, payload: &[u8]) -> Option<usize> {
    let mut e = Encoder::new(buf);
    e.uint(1, MSG_TYPE_REQ as u64);
    e.uint(2, id as u64);
    e.int32(3, uid);
    e.message(id, payload);
    e.finish()
}

/// `Req_GetMACAddress { mode }`.
pub fn encode_get_mac(buf: &mut [u8], uid: i32, mode: i32) -> Option<usize> {
    let mut p = [0u8; 16];
    let mut e = Encoder::new(&mut p);
    e.int32(1, mode);
    let n = e.finish()?;
    encode_request(buf, msg_id::REQ_GET_MAC_ADDRESS, uid, &p[..n])
}

/// `Req_ConnectAP { ssid, pwd, bssid, is_wpa3_supported, listen_interval }`.
pub fn encode_connect_ap(
    buf: &mut [u8],
    uid: i32,
    ssid: &str,
    pwd: &str,
    bssid: &str,
    is_wpa3_supported: bool,
    listen_interval: i32,
) -> Option<usize> {
    let mut p = [0u8; 200];
    let mut e = Encoder::new(&mut p);
    e.bytes(1, ssid.as_bytes());
    e.bytes(2, pwd.as_bytes());
    e.bytes(3, bssid.as_bytes());
    e.bool(4, is_wpa3_supported);
    e.int32(5, listen_interval);
    let n = e.finish()?;
    encode_request(buf, msg_id::REQ_CONNECT_AP, uid, &p[..n])
}

/// `Req_DisconnectAP {}`.
pub fn encode_disconnect_ap(buf: &mut [u8], uid: i32) -> Option<usize> {
    encode_request(buf, msg_id::REQ_DISCONNECT_AP, uid, &[])
}

/// A decoded response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Response {
    /// `msg_id` (201 ...).
    pub msg_id: u32,
    /// `uid` as echoed by the firmware (0 if it does not echo it).
    pub uid: i32,
    /// The payload's `resp` field (0 = success).
    pub resp: i32,
    /// The payload's `mac` field, if it held a MAC address.
    pub mac: Option<[u8; 6]>,
}

/// A decoded event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Event {
    /// `Event_ESPInit`.
    EspInit,
    /// `Event_Heartbeat { hb_num }`.
    Heartbeat(i32),
    /// `Event_StationConnectedToAP`.
    StationConnected,
    /// `Event_StationDisconnectFromAP { reason }` (an ESP-IDF
    /// `wifi_err_reason_t`: 200 beacon timeout, 201 no AP, 202 auth fail...).
    StationDisconnected {
        /// Disconnect reason.
        reason: u32,
    },
    /// Any other event id.
    Other(u32),
}

/// A decoded `CtrlMsg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Message {
    /// A response to a request.
    Response(Response),
    /// An unsolicited event.
    Event(Event),
}

/// Parse a MAC given as `"aa:bb:cc:dd:ee:ff"` (what the firmware sends) or
/// as six raw bytes.
pub fn parse_mac(b: &[u8]) -> Option<[u8; 6]> {
    if b.len() == 6 {
        return b.try_into().ok();
    }
    if b.len() < 17 {
        return None;
    }
    let hex = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut mac = [0u8; 6];
    for (i, m) in mac.iter_mut().enumerate() {
        let p = i * 3;
        if i < 5 && b[p + 2] != b':' {
            return None;
        }
        *m = hex(b[p])? << 4 | hex(b[p + 1])?;
    }
    Some(mac)
}

/// Decode a `CtrlMsg` (responses and events; requests are `Err`).
pub fn decode(data: &[u8]) -> Result<Message, ProtoError> {
    let (mut ty, mut id, mut uid) = (0u32, 0u32, 0i32);
    let mut payload: &[u8] = &[];
    let mut d = Decoder::new(data);
    while let Some((f, v)) = d.next_field()? {
        match (f, v) {
            (1, Value::Varint(x)) => ty = x as u32,
            (2, Value::Varint(x)) => id = x as u32,
            (3, v) => uid = v.int32(),
            (f, Value::Bytes(b)) if f > 100 => payload = b,
            _ => {}
        }
    }
    let mut fields = Decoder::new(payload);
    match ty {
        MSG_TYPE_RESP => {
            let (mut resp, mut mac) = (0, None);
            let resp_field = match id {
                msg_id::RESP_GET_MAC_ADDRESS => 2,
                _ => 1,
            };
            while let Some((f, v)) = fields.next_field()? {
                match v {
                    Value::Varint(_) if f == resp_field => resp = v.int32(),
                    Value::Bytes(b) if f == 1 || f == 2 => mac = parse_mac(b).or(mac),
                    _ => {}
                }
            }
            Ok(Message::Response(Response {
                msg_id: id,
                uid,
                resp,
                mac,
            }))
        }
        MSG_TYPE_EVENT => {
            let ev = match id {
                msg_id::EVENT_ESP_INIT => Event::EspInit,
                msg_id::EVENT_HEARTBEAT => {
                    let mut n = 0;
                    while let Some((f, v)) = fields.next_field()? {
                        if f == 1 {
                            n = v.int32();
                        }
                    }
                    Event::Heartbeat(n)
                }
                msg_id::EVENT_STATION_CONNECTED_TO_AP => Event::StationConnected,
                msg_id::EVENT_STATION_DISCONNECT_FROM_AP => {
                    let mut reason = 0;
                    while let Some((f, v)) = fields.next_field()? {
                        if let (5, Value::Varint(x)) = (f, v) {
                            reason = x as u32;
                        }
                    }
                    Event::StationDisconnected { reason }
                }
                other => Event::Other(other),
            };
            Ok(Message::Event(ev))
        }
        _ => Err(ProtoError),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_negative_int32() {
        let mut b = [0u8; 32];
        let mut e = Encoder::new(&mut b);
        e.uint(1, 300);
        e.int32(2, -1);
        e.int32(3, 0);
        let n = e.finish().unwrap();
        assert_eq!(
            &b[..n],
            &[0x08, 0xac, 0x02, 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        let mut d = Decoder::new(&b[..n]);
        assert_eq!(d.next_field(), Ok(Some((1, Value::Varint(300)))));
        let (f, v) = d.next_field().unwrap().unwrap();
        assert_eq!((f, v.int32()), (2, -1));
        assert_eq!(d.next_field(), Ok(None));
        assert_eq!(Encoder::new(&mut [0u8; 2]).finish(), Some(0));
        let mut small = [0u8; 2];
        let mut e = Encoder::new(&mut small);
        e.bytes(1, b"abc");
        assert_eq!(e.finish(), None);
    }

    #[test]
    fn requests_encode_as_expected() {
        let mut b = [0u8; 64];
        let n = encode_get_mac(&mut b, 5, WIFI_MODE_STA).unwrap();
        // type=1, id=101, uid=5, field 101 (LEN) { mode=1 }
        assert_eq!(
            &b[..n],
            &[0x08, 1, 0x10, 101, 0x18, 5, 0xaa, 0x06, 2, 0x08, 1]
        );
        let n = encode_disconnect_ap(&mut b, 0).unwrap();
        assert_eq!(&b[..n], &[0x08, 1, 0x10, 108, 0xe2, 0x06, 0]);
        let n = encode_connect_ap(&mut b, 1, "ap", "pw", "", false, 0).unwrap();
        assert_eq!(
            &b[..n],
            &[
                0x08, 1, 0x10, 107, 0x18, 1, 0xda, 0x06, 8, 0x0a, 2, b'a', b'p', 0x12, 2, b'p',
                b'w'
            ]
        );
    }

    #[test]
    fn decode_responses_and_events() {
        let mut inner = [0u8; 64];
        let mut e = Encoder::new(&mut inner);
        e.bytes(1, b"24:0a:C4:00:11:ff");
        let n = e.finish().unwrap();
        let mut b = [0u8; 96];
        let mut e = Encoder::new(&mut b);
        e.uint(1, 2);
        e.uint(2, 201);
        e.int32(3, 7);
        e.message(201, &inner[..n]);
        let m = e.finish().unwrap();
        assert_eq!(
            decode(&b[..m]),
            Ok(Message::Response(Response {
                msg_id: 201,
                uid: 7,
                resp: 0,
                mac: Some([0x24, 0x0a, 0xc4, 0x00, 0x11, 0xff]),
            }))
        );

        let mut inner = [0u8; 16];
        let mut e = Encoder::new(&mut inner);
        e.int32(1, 3);
        let n = e.finish().unwrap();
        let mut e = Encoder::new(&mut b);
        e.uint(1, 2);
        e.uint(2, 207);
        e.message(207, &inner[..n]);
        let m = e.finish().unwrap();
        let Ok(Message::Response(r)) = decode(&b[..m]) else {
            panic!()
        };
        assert_eq!((r.msg_id, r.resp, r.mac), (207, 3, None));

        let mut e = Encoder::new(&mut inner);
        e.uint(5, 200);
        let n = e.finish().unwrap();
        let mut e = Encoder::new(&mut b);
        e.uint(1, 3);
        e.uint(2, 303);
        e.message(303, &inner[..n]);
        let m = e.finish().unwrap();
        assert_eq!(
            decode(&b[..m]),
            Ok(Message::Event(Event::StationDisconnected { reason: 200 }))
        );
        // Truncated, bad wire type, requests.
        assert_eq!(decode(&b[..m - 1]), Err(ProtoError));
        assert_eq!(decode(&[0x0b]), Err(ProtoError));
        assert_eq!(decode(&[0x08, 1]), Err(ProtoError));
        assert_eq!(
            decode(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(ProtoError)
        );
    }

    #[test]
    fn mac_formats() {
        assert_eq!(parse_mac(b"01:02:03:04:05:06"), Some([1, 2, 3, 4, 5, 6]));
        assert_eq!(parse_mac(&[1, 2, 3, 4, 5, 6]), Some([1, 2, 3, 4, 5, 6]));
        assert_eq!(parse_mac(b"01-02-03-04-05-06"), None);
        assert_eq!(parse_mac(b"0g:02:03:04:05:06"), None);
        assert_eq!(parse_mac(b"01:02"), None);
    }
}
