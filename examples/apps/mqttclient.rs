//! `mqttclient`: an MQTT 3.1.1 client that subscribes to its own topics,
//! publishes at QoS 0 and QoS 1 and checks that every message comes back
//! (TinyGo's `examples/net/mqttclient`).
//!
//! Packets are encoded and decoded by `mqttrs`'s no_std codec and carried
//! over a blocking [`netdever::net::TcpStream`] (see `peers_ws_mqtt::mqtt`):
//! CONNECT / CONNACK, SUBSCRIBE `<topic>/#` at QoS 1 / SUBACK, `--count`
//! PUBLISHes at QoS 0 to `<topic>/qos0` and `--count` at QoS 1 to
//! `<topic>/qos1`, each QoS 1 one waiting for its PUBACK, every incoming
//! PUBLISH acknowledged as its QoS asks, PINGREQ / PINGRESP, UNSUBSCRIBE /
//! UNSUBACK and DISCONNECT. Messages carry a run id, so the client tells its
//! own from other clients' (`--expect-others N` waits for N of those, e.g.
//! a retained message).
//!
//! On the simulated network the peer runs a minimal broker
//! (`peers_ws_mqtt::broker`); on a TAP link use a real one
//! (`mosquitto -c conf`, with `listener 1883 A.B.C.D` and
//! `allow_anonymous true`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mqttrs::{
    Connect, ConnectReturnCode, Packet, Pid, Protocol, Publish, QoS, QosPid, SubscribeReturnCodes,
};
use netdever::net::TcpStream;
use netdever::SockOpt;
use rand::RngCore;

use crate::common::cli::Extra;
use crate::common::{Net, Opts, Outcome, Spec};
use crate::peers_ws_mqtt::broker::{self, Broker};
use crate::peers_ws_mqtt::mqtt::{self, qos_level, MqttError, PacketReader};
use crate::peers_ws_mqtt::{text, Dev, StopWhen, Stream};

/// Command line of `mqttclient`.
pub const SPEC: Spec = Spec {
    name: "mqttclient",
    about: "MQTT 3.1.1 client: subscribe, publish at QoS 0 and 1, get every message back",
    server: false,
    default_port: 1883,
    extra: &[
        Extra {
            name: "--count",
            value: "N",
            default: "5",
            help: "messages to publish at each QoS (at most 1000)",
        },
        Extra {
            name: "--topic",
            value: "TOPIC",
            default: "netdever/mqttclient",
            help: "topic prefix: publishes to TOPIC/qos0 and TOPIC/qos1, subscribes to TOPIC/#",
        },
        Extra {
            name: "--client-id",
            value: "ID",
            default: "none",
            help: "client identifier (default netdever-<random>)",
        },
        Extra {
            name: "--keep-alive",
            value: "SECS",
            default: "30",
            help: "keep-alive interval sent in CONNECT",
        },
        Extra {
            name: "--expect-others",
            value: "N",
            default: "0",
            help: "also wait for N messages from other clients (e.g. a retained one)",
        },
    ],
};

/// The text-valued options of [`SPEC`].
#[allow(dead_code)] // read by the binary's option parser; the suite runs with defaults
pub const TEXT: &[&str] = &["--topic", "--client-id"];

/// Bound on the whole session.
const LIMIT: Duration = Duration::from_secs(30);
/// How long to wait for messages to come back once all are published.
const SETTLE: Duration = Duration::from_secs(10);

/// A message the broker delivered to us.
#[derive(Debug, Clone)]
struct Got {
    topic: String,
    payload: Vec<u8>,
    qos: QoS,
    retain: bool,
}

/// What a session did.
#[derive(Debug, Default)]
struct Tally {
    own: Vec<Got>,
    others: Vec<Got>,
    pubacks: u64,
    acks_sent: u64,
    qos1_rtts: Vec<Duration>,
}

/// One MQTT session on a TCP stream.
struct Client<'d> {
    stream: Stream<'d>,
    rd: PacketReader,
    buf: Vec<u8>,
    pid: Pid,
    run_id: String,
    tally: Tally,
}

/// What a wait is for.
enum Want {
    Connack,
    Suback(Pid),
    Puback(Pid),
    Pingresp,
    Unsuback(Pid),
}

impl<'d> Client<'d> {
    fn send(&mut self, p: &Packet<'_>) -> Result<(), String> {
        mqtt::send(&self.stream, p, &mut self.buf)
            .map_err(|e| format!("send {:?}: {e}", p.get_type()))
    }

    fn next_pid(&mut self) -> Pid {
        self.pid = self.pid + 1;
        self.pid
    }

    /// Handle one incoming packet; returns it if it is what `want` asks for.
    /// PUBLISHes are recorded and acknowledged on the way.
    fn wait(&mut self, want: &Want) -> Result<Option<String>, String> {
        loop {
            let pkt = match self.rd.next(&self.stream) {
                Ok(Some(p)) => p,
                Ok(None) => return Err("the broker closed the connection".into()),
                Err(MqttError::Io(netdever::Error::Timeout)) => {
                    return Err("timed out waiting for the broker".into())
                }
                Err(e) => return Err(e.to_string()),
            };
            let mut ack = None;
            let done = match (&pkt, want) {
                (Packet::Publish(p), _) => {
                    let got = Got {
                        topic: p.topic_name.to_string(),
                        payload: p.payload.to_vec(),
                        qos: p.qospid.qos(),
                        retain: p.retain,
                    };
                    if let QosPid::AtLeastOnce(pid) = p.qospid {
                        ack = Some(pid);
                    }
                    let own =
                        std::str::from_utf8(&got.payload).is_ok_and(|s| s.ends_with(&self.run_id));
                    if own {
                        self.tally.own.push(got);
                    } else {
                        self.tally.others.push(got);
                    }
                    None
                }
                (Packet::Connack(c), Want::Connack) => {
                    if c.code != ConnectReturnCode::Accepted {
                        return Err(format!("the broker refused CONNECT: {:?}", c.code));
                    }
                    Some(format!("session present: {}", c.session_present))
                }
                (Packet::Suback(s), Want::Suback(pid)) if s.pid == *pid => {
                    let codes: Vec<String> = s
                        .return_codes
                        .iter()
                        .map(|c| match c {
                            SubscribeReturnCodes::Success(q) => {
                                format!("granted QoS {}", qos_level(*q))
                            }
                            SubscribeReturnCodes::Failure => "refused".into(),
                        })
                        .collect();
                    if s.return_codes.contains(&SubscribeReturnCodes::Failure) {
                        return Err(format!("the broker refused the subscription: {codes:?}"));
                    }
                    Some(codes.join(", "))
                }
                (Packet::Puback(p), Want::Puback(pid)) if p == pid => Some(String::new()),
                (Packet::Pingresp, Want::Pingresp) => Some(String::new()),
                (Packet::Unsuback(p), Want::Unsuback(pid)) if p == pid => Some(String::new()),
                (other, _) => {
                    return Err(format!("unexpected {:?} from the broker", other.get_type()))
                }
            };
            if let Some(pid) = ack {
                self.send(&Packet::Puback(pid))?;
                self.tally.acks_sent += 1;
            }
            if done.is_some() {
                return Ok(done);
            }
        }
    }

    fn wait_for(&mut self, want: Want) -> Result<String, String> {
        loop {
            if let Some(s) = self.wait(&want)? {
                return Ok(s);
            }
        }
    }

    fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS) -> Result<(), String> {
        let qospid = match qos {
            QoS::AtMostOnce => QosPid::AtMostOnce,
            _ => QosPid::AtLeastOnce(self.next_pid()),
        };
        self.send(&Packet::Publish(Publish {
            dup: false,
            qospid,
            retain: false,
            topic_name: topic,
            payload,
        }))?;
        if let QosPid::AtLeastOnce(pid) = qospid {
            let t0 = Instant::now();
            self.wait_for(Want::Puback(pid))
                .map_err(|e| format!("PUBACK for {topic} pid {}: {e}", pid.get()))?;
            self.tally.pubacks += 1;
            self.tally.qos1_rtts.push(t0.elapsed());
        }
        Ok(())
    }
}

/// Run `mqttclient` on `net`.
pub fn run(net: &Net, o: &Opts) -> Outcome {
    let count = o.num("--count")?.min(1000);
    let expect_others = o.num("--expect-others")?;
    let keep_alive = o.num("--keep-alive")?.min(u16::MAX as u64) as u16;
    let topic = text::get(&SPEC, "--topic");
    if topic.is_empty() || topic.contains(['+', '#']) || topic.len() > 200 {
        return Err(format!(
            "--topic must be a topic name (no wildcards, at most 200 bytes): {topic:?}"
        ));
    }
    let run_id = format!("{:08x}", rand::rngs::OsRng.next_u32());
    let client_id =
        text::get_opt(&SPEC, "--client-id").unwrap_or_else(|| format!("netdever-{run_id}"));
    let stop = AtomicBool::new(false);
    let state = Broker::new();
    let state = &state;
    std::thread::scope(|s| {
        let (target, broker) = match &net.peer {
            Some(peer) => {
                let when = StopWhen {
                    flag: &stop,
                    until: None,
                    max_clients: 0,
                };
                let h = broker::start(s, peer, o.port, when, state)
                    .map_err(|e| format!("peer broker: {e}"))?;
                (SocketAddr::from((net.peer_ip, o.port)), Some(h))
            }
            None => (o.peer.ok_or("--peer A.B.C.D:P is required")?, None),
        };
        let session = Session {
            target,
            client_id: &client_id,
            topic: &topic,
            run_id: &run_id,
            count,
            expect_others,
            keep_alive,
        };
        let r = session.run(&net.dev, o);
        stop.store(true, Ordering::Release);
        if let Some(h) = broker {
            let served = h.join().map_err(|_| "broker thread panicked".to_string())?;
            let st = &state.stats;
            o.say(format_args!(
                "peer broker: {} connects, {} publishes in, {} deliveries, {} PUBACKs, {} pings",
                st.connects.load(Ordering::Relaxed),
                st.publishes.load(Ordering::Relaxed),
                st.deliveries.load(Ordering::Relaxed),
                st.pubacks.load(Ordering::Relaxed),
                st.pings.load(Ordering::Relaxed)
            ));
            if r.is_ok() {
                served.check("peer broker")?;
            }
        }
        r
    })
}

/// The parameters of one session.
struct Session<'a> {
    target: SocketAddr,
    client_id: &'a str,
    topic: &'a str,
    run_id: &'a str,
    count: u64,
    expect_others: u64,
    keep_alive: u16,
}

impl Session<'_> {
    fn run(&self, dev: Dev<'_>, o: &Opts) -> Outcome {
        let t = self.target;
        o.say(format_args!(
            "connecting to mqtt://{t} as {}",
            self.client_id
        ));
        let mut stream = TcpStream::connect_timeout(dev, t, Duration::from_secs(10))
            .map_err(|e| format!("connecting to {t}: {e}"))?;
        stream.set_deadline(Some(dev.now() + LIMIT));
        // Small request/answer packets: do not let Nagle hold them back.
        stream
            .set_nodelay(true)
            .map_err(|e| format!("set_nodelay: {e}"))?;
        let mut c = Client {
            stream,
            rd: PacketReader::default(),
            buf: Vec::new(),
            pid: Pid::new(),
            run_id: self.run_id.to_string(),
            tally: Tally::default(),
        };
        let r = self.talk(&mut c, o);
        // Let the DISCONNECT (or whatever is queued) reach the broker.
        let _ = dev.set_sock_opt(c.stream.fd(), SockOpt::Linger(Some(Duration::from_secs(2))));
        drop(c);
        r
    }

    fn talk(&self, c: &mut Client<'_>, o: &Opts) -> Outcome {
        let start = Instant::now();
        c.send(&Packet::Connect(Connect {
            protocol: Protocol::MQTT311,
            keep_alive: self.keep_alive,
            client_id: self.client_id,
            clean_session: true,
            last_will: None,
            username: None,
            password: None,
        }))?;
        let info = c.wait_for(Want::Connack)?;
        o.say(format_args!("CONNACK: accepted ({info})"));

        let filter = format!("{}/#", self.topic);
        let pid = c.next_pid();
        let sub = mqtt::subscribe(pid, &[(&filter, QoS::AtLeastOnce)])?;
        c.send(&Packet::Subscribe(sub))?;
        let granted = c.wait_for(Want::Suback(pid))?;
        o.say(format_args!("SUBACK for {filter}: {granted}"));

        let (t0, t1) = (
            format!("{}/qos0", self.topic),
            format!("{}/qos1", self.topic),
        );
        for i in 0..self.count {
            let body = format!("qos0 #{i} run {}", self.run_id);
            c.publish(&t0, body.as_bytes(), QoS::AtMostOnce)?;
        }
        for i in 0..self.count {
            let body = format!("qos1 #{i} run {}", self.run_id);
            c.publish(&t1, body.as_bytes(), QoS::AtLeastOnce)?;
        }
        o.say(format_args!(
            "published {n} at QoS 0 to {t0} and {n} at QoS 1 to {t1}; {} PUBACKs",
            c.tally.pubacks,
            n = self.count
        ));

        // Wait until every message came back (PINGREQ keeps the wait moving:
        // each PINGRESP is a point where everything sent before it has been
        // handled by the broker).
        let want_own = 2 * self.count as usize;
        let settle = Instant::now() + SETTLE;
        let mut pings = 0u64;
        loop {
            c.send(&Packet::Pingreq)?;
            c.wait_for(Want::Pingresp)?;
            pings += 1;
            let own = distinct(&c.tally.own);
            if (own >= want_own && c.tally.others.len() as u64 >= self.expect_others)
                || Instant::now() >= settle
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        o.say(format_args!("PINGREQ answered {pings} times"));

        let pid = c.next_pid();
        let unsub = mqtt::unsubscribe(pid, &[&filter])?;
        c.send(&Packet::Unsubscribe(unsub))?;
        c.wait_for(Want::Unsuback(pid))?;
        c.send(&Packet::Disconnect)?;
        o.say(format_args!("UNSUBACK; DISCONNECT sent"));

        self.check(&c.tally, want_own)?;
        for g in &c.tally.others {
            o.say(format_args!(
                "from another client: {} {:?} (QoS {}{})",
                g.topic,
                String::from_utf8_lossy(&g.payload),
                qos_level(g.qos),
                if g.retain { ", retained" } else { "" }
            ));
        }
        let rtts = &c.tally.qos1_rtts;
        let avg = rtts.iter().sum::<Duration>() / (rtts.len().max(1) as u32);
        Ok(format!(
            "{n}+{n} published (QoS 0/1), {} PUBACKs, {} of {want_own} back, {} from others, QoS 1 rtt avg {} us, {:.2} s",
            c.tally.pubacks,
            distinct(&c.tally.own),
            c.tally.others.len(),
            avg.as_micros(),
            start.elapsed().as_secs_f64(),
            n = self.count
        ))
    }

    /// Every message published must have come back once at least, on the
    /// right topic and at the right QoS.
    fn check(&self, t: &Tally, want_own: usize) -> Result<(), String> {
        for (prefix, qos) in [("qos0", QoS::AtMostOnce), ("qos1", QoS::AtLeastOnce)] {
            let topic = format!("{}/{prefix}", self.topic);
            for i in 0..self.count {
                let body = format!("{prefix} #{i} run {}", self.run_id);
                match t.own.iter().find(|g| g.payload == body.as_bytes()) {
                    None => {
                        return Err(format!(
                            "{body:?} did not come back ({} of {want_own} did)",
                            distinct(&t.own)
                        ))
                    }
                    Some(g) if g.topic != topic => {
                        return Err(format!("{body:?} came back on topic {}", g.topic))
                    }
                    Some(g) if g.qos != qos => {
                        return Err(format!(
                            "{body:?} came back at QoS {}, published at {}",
                            qos_level(g.qos),
                            qos_level(qos)
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        if (t.others.len() as u64) < self.expect_others {
            return Err(format!(
                "expected {} messages from other clients, got {}",
                self.expect_others,
                t.others.len()
            ));
        }
        if t.acks_sent < self.count {
            return Err(format!(
                "only {} QoS 1 deliveries were acknowledged",
                t.acks_sent
            ));
        }
        Ok(())
    }
}

/// How many different payloads are in `got` (QoS 1 may deliver twice).
fn distinct(got: &[Got]) -> usize {
    let mut p: Vec<&[u8]> = got.iter().map(|g| g.payload.as_slice()).collect();
    p.sort();
    p.dedup();
    p.len()
}
