//! A minimal MQTT 3.1.1 broker for the simulated network only (the peer of
//! `mqttclient`): CONNECT, SUBSCRIBE / UNSUBSCRIBE with `+` and `#`
//! filters, PUBLISH at QoS 0 and 1 (PUBACK), PINGREQ, DISCONNECT. Each
//! message goes to every connected client with a matching subscription,
//! the publisher included, at the lower of the publish QoS and the granted
//! QoS. No retained messages, no persistent sessions, no QoS 2 (a QoS 2
//! publish closes the connection; QoS 2 subscriptions are granted QoS 1).
//! On a real network use a real broker (mosquitto).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use mqttrs::{Connack, ConnectReturnCode, Packet, Pid, Publish, QoS, QosPid, SubscribeReturnCodes};
use netdever::Error;

use super::mqtt::{self, qos_level, topic_matches, valid_filter, MqttError, PacketReader};
use super::{listen, serve, Dev, Served, StopWhen, Stream, TICK};

/// How long a client has to send CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write to a slow client may block routing.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Broker counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Accepted CONNECTs.
    pub connects: AtomicU64,
    /// PUBLISH packets received.
    pub publishes: AtomicU64,
    /// PUBLISH packets delivered to subscribers.
    pub deliveries: AtomicU64,
    /// PUBACKs sent for QoS 1 publishes.
    pub pubacks: AtomicU64,
    /// PINGREQs answered.
    pub pings: AtomicU64,
    /// Clients that sent DISCONNECT.
    pub disconnects: AtomicU64,
}

struct Session<'d> {
    client_id: String,
    stream: Stream<'d>,
    /// Encode buffer; held while a packet is written so packets from the
    /// session's own thread and from routing threads do not interleave.
    out: Mutex<Vec<u8>>,
    filters: Mutex<Vec<(String, QoS)>>,
    next_pid: Mutex<Pid>,
}

impl Session<'_> {
    fn send(&self, pkt: &Packet<'_>) -> Result<(), MqttError> {
        let mut buf = self.out.lock().unwrap_or_else(|e| e.into_inner());
        mqtt::send(&self.stream, pkt, &mut buf)
    }

    fn pid(&self) -> Pid {
        let mut p = self.next_pid.lock().unwrap_or_else(|e| e.into_inner());
        *p = *p + 1;
        *p
    }

    /// The highest QoS granted by a filter matching `topic`, if any.
    fn granted(&self, topic: &str) -> Option<QoS> {
        let filters = self.filters.lock().unwrap_or_else(|e| e.into_inner());
        filters
            .iter()
            .filter(|(f, _)| topic_matches(f, topic))
            .map(|(_, q)| *q)
            .max_by_key(|q| qos_level(*q))
    }
}

/// The broker's state: connected sessions and counters, for clients on a
/// device borrowed for `'d`. Create it before the thread scope that runs
/// [`start`].
#[derive(Default)]
pub struct Broker<'d> {
    sessions: Mutex<Vec<Arc<Session<'d>>>>,
    /// Counters.
    pub stats: Stats,
}

impl<'d> Broker<'d> {
    /// A broker with no clients.
    pub fn new() -> Self {
        Self::default()
    }

    /// Deliver a message to every matching subscription.
    fn route(&self, topic: &str, payload: &[u8], qos: QoS) {
        let sessions: Vec<Arc<Session<'d>>> = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for s in sessions {
            let Some(granted) = s.granted(topic) else {
                continue;
            };
            let qospid = if qos_level(qos).min(qos_level(granted)) >= 1 {
                QosPid::AtLeastOnce(s.pid())
            } else {
                QosPid::AtMostOnce
            };
            let p = Packet::Publish(Publish {
                dup: false,
                qospid,
                retain: false,
                topic_name: topic,
                payload,
            });
            // A failed write shows up on that session's own thread.
            if s.send(&p).is_ok() {
                self.stats.deliveries.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Serve one client connection.
    fn session(&self, stream: Stream<'d>, stopped: &dyn Fn() -> bool) -> Result<(), String> {
        let dev = *stream.device();
        let mut stream = stream;
        stream.set_read_deadline(Some(dev.now() + CONNECT_TIMEOUT));
        stream
            .set_write_timeout(Some(WRITE_TIMEOUT))
            .map_err(|e| format!("set_write_timeout: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("set_nodelay: {e}"))?;
        let mut rd = PacketReader::default();
        let mut buf = Vec::new();
        let (client_id, keep_alive) = match rd.next(&stream) {
            Ok(Some(Packet::Connect(c))) => (c.client_id.to_string(), c.keep_alive),
            Ok(Some(p)) => return Err(format!("first packet is {:?}, not CONNECT", p.get_type())),
            Ok(None) => return Err("closed before CONNECT".into()),
            Err(MqttError::Codec(mqttrs::Error::InvalidProtocol(name, level))) => {
                let nak = Packet::Connack(Connack {
                    session_present: false,
                    code: ConnectReturnCode::RefusedProtocolVersion,
                });
                let _ = mqtt::send(&stream, &nak, &mut buf);
                return Err(format!(
                    "protocol {name} level {level} refused (MQTT 3.1.1 only)"
                ));
            }
            Err(e) => return Err(format!("reading CONNECT: {e}")),
        };
        let ack = Packet::Connack(Connack {
            session_present: false,
            code: ConnectReturnCode::Accepted,
        });
        mqtt::send(&stream, &ack, &mut buf).map_err(|e| format!("CONNACK: {e}"))?;
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        stream.set_read_deadline(None);
        stream
            .set_read_timeout(Some(TICK))
            .map_err(|e| format!("set_read_timeout: {e}"))?;

        let s = Arc::new(Session {
            client_id,
            stream,
            out: Mutex::new(buf),
            filters: Mutex::new(Vec::new()),
            next_pid: Mutex::new(Pid::new()),
        });
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(s.clone());
        let r = self.packets(&s, &mut rd, keep_alive, stopped);
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|x| !Arc::ptr_eq(x, &s));
        r.map_err(|e| format!("client {:?}: {e}", s.client_id))
    }

    /// The packet loop of one session after CONNECT.
    fn packets(
        &self,
        s: &Session<'d>,
        rd: &mut PacketReader,
        keep_alive: u16,
        stopped: &dyn Fn() -> bool,
    ) -> Result<(), String> {
        // MQTT 3.1.1 3.1.2.10: one and a half keep-alive periods of silence.
        let idle_limit = (keep_alive > 0).then(|| Duration::from_millis(keep_alive as u64 * 1500));
        let mut last = Instant::now();
        loop {
            let pkt = match rd.next(&s.stream) {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(()), // gone without DISCONNECT: allowed
                Err(MqttError::Io(Error::Timeout)) => {
                    if stopped() {
                        return Ok(());
                    }
                    if idle_limit.is_some_and(|l| last.elapsed() > l) {
                        return Err("keep-alive expired".into());
                    }
                    continue;
                }
                Err(e) => return Err(e.to_string()),
            };
            last = Instant::now();
            let sent = match pkt {
                Packet::Publish(p) => {
                    self.stats.publishes.fetch_add(1, Ordering::Relaxed);
                    if p.topic_name.is_empty() || p.topic_name.contains(['+', '#']) {
                        return Err(format!("PUBLISH to invalid topic {:?}", p.topic_name));
                    }
                    let qos = p.qospid.qos();
                    if qos == QoS::ExactlyOnce {
                        return Err("QoS 2 is not supported by this broker".into());
                    }
                    self.route(p.topic_name, p.payload, qos);
                    match p.qospid {
                        QosPid::AtLeastOnce(pid) => {
                            self.stats.pubacks.fetch_add(1, Ordering::Relaxed);
                            s.send(&Packet::Puback(pid))
                        }
                        _ => Ok(()),
                    }
                }
                Packet::Subscribe(sub) => {
                    let mut codes = Vec::new();
                    for t in sub.topics.iter() {
                        let f = t.topic_path.as_str();
                        if valid_filter(f) {
                            let granted = if t.qos == QoS::AtMostOnce {
                                QoS::AtMostOnce
                            } else {
                                QoS::AtLeastOnce
                            };
                            let mut filters = s.filters.lock().unwrap_or_else(|e| e.into_inner());
                            filters.retain(|(g, _)| g != f);
                            filters.push((f.to_string(), granted));
                            codes.push(SubscribeReturnCodes::Success(granted));
                        } else {
                            codes.push(SubscribeReturnCodes::Failure);
                        }
                    }
                    s.send(&Packet::Suback(mqtt::suback(sub.pid, &codes)))
                }
                Packet::Unsubscribe(u) => {
                    s.filters
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .retain(|(f, _)| !u.topics.iter().any(|t| t.as_str() == f));
                    s.send(&Packet::Unsuback(u.pid))
                }
                Packet::Puback(_) => Ok(()),
                Packet::Pingreq => {
                    self.stats.pings.fetch_add(1, Ordering::Relaxed);
                    s.send(&Packet::Pingresp)
                }
                Packet::Disconnect => {
                    self.stats.disconnects.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                other => return Err(format!("unexpected {:?} from a client", other.get_type())),
            };
            sent.map_err(|e| format!("answering: {e}"))?;
        }
    }
}

/// Run `broker` on `port` of `dev` (a thread of `scope` accepting, one per
/// client) until `stop` says so.
pub fn start<'scope, 'env, 'd: 'env>(
    scope: &'scope Scope<'scope, 'env>,
    dev: Dev<'d>,
    port: u16,
    stop: StopWhen<'env>,
    broker: &'env Broker<'d>,
) -> Result<ScopedJoinHandle<'scope, Served>, String> {
    let l = listen(dev, port, 4)?;
    Ok(serve(scope, dev, l, stop, move |stream, _peer, stopped| {
        broker.session(stream, stopped)
    }))
}
