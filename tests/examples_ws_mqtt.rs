//! The websocket, MQTT, TLS and snake examples (`examples/apps/`) on the
//! built-in simulated network, with the simulated peers of
//! `examples/peers_ws_mqtt` (no root), run in process with the same `run`
//! functions their binaries call; plus the option checks of `tlsclient`,
//! MQTT topic filters, and our websocket server glue fed one byte per TCP
//! segment.
//!
//! The same examples against real programs (mosquitto, python websockets,
//! `openssl s_server`, a python echo server) on every backend are cells of
//! the matrix: `tests/examples_matrix.rs`.
#![cfg(all(feature = "std", feature = "full-stack"))]

#[allow(unused_imports)] // the namespace helpers are not used here
mod support;

#[path = "../examples/common/mod.rs"]
mod common;
#[path = "../examples/peers_ws_mqtt/mod.rs"]
mod peers_ws_mqtt;

#[allow(dead_code)]
#[path = "../examples/apps/mqttclient.rs"]
mod mqttclient;
#[allow(dead_code)]
#[path = "../examples/apps/snake.rs"]
mod snake;
#[allow(dead_code)]
#[path = "../examples/apps/tlsclient.rs"]
mod tlsclient;
#[allow(dead_code)]
#[path = "../examples/apps/websocket_dial.rs"]
mod websocket_dial;
#[allow(dead_code)]
#[path = "../examples/apps/websocket_handler.rs"]
mod websocket_handler;

use std::time::Duration;

use common::{Net, Outcome, RunFn, Spec};
use peers_ws_mqtt::text;

/// Parse `args` as the example's command line (text options included) on
/// this thread and run it on a fresh simulated network.
fn run_sim(spec: &Spec, text: &[&str], run: RunFn, args: &[&str]) -> Outcome {
    let o = text::parse(spec, text, args.iter().map(|a| a.to_string()))?.expect("not --help");
    let net = Net::sim(None)?;
    let r = run(&net, &o);
    drop(net);
    r
}

/// [`run_sim`] with a hang guard.
fn sim(
    name: &'static str,
    spec: &'static Spec,
    text: &'static [&'static str],
    run: RunFn,
    args: &'static [&'static str],
) -> Outcome {
    support::with_timeout(name, Duration::from_secs(120), move || {
        run_sim(spec, text, run, args)
    })
}

#[test]
fn sim_websocket_dial() {
    let r = sim(
        "websocket_dial",
        &websocket_dial::SPEC,
        websocket_dial::TEXT,
        websocket_dial::run,
        &["--count", "12", "--size", "3000", "--path", "/chat"],
    );
    let s = r.expect("websocket_dial on the simulated network");
    assert!(s.contains("12 messages echoed"), "{s}");
    assert!(s.contains("NormalClosure"), "{s}");
}

#[test]
fn sim_websocket_dial_large_frames() {
    // 64 KiB binary messages: 64-bit length field, many TCP segments each.
    let r = sim(
        "websocket_dial large",
        &websocket_dial::SPEC,
        websocket_dial::TEXT,
        websocket_dial::run,
        &["--count", "4", "--size", "64K"],
    );
    let s = r.expect("websocket_dial with 64 KiB messages");
    assert!(s.contains("4 messages echoed"), "{s}");
}

#[test]
fn sim_websocket_handler() {
    let r = sim(
        "websocket_handler",
        &websocket_handler::SPEC,
        &[],
        websocket_handler::run,
        &["--clients", "3", "--count", "6"],
    );
    let s = r.expect("websocket_handler self-test");
    assert!(s.starts_with("3 clients"), "{s}");
}

#[test]
fn sim_mqttclient() {
    let r = sim(
        "mqttclient",
        &mqttclient::SPEC,
        mqttclient::TEXT,
        mqttclient::run,
        &[
            "--count",
            "7",
            "--topic",
            "test/sim",
            "--client-id",
            "sim-1",
        ],
    );
    let s = r.expect("mqttclient against the simulated broker");
    assert!(s.contains("7+7 published"), "{s}");
    assert!(s.contains("7 PUBACKs"), "{s}");
    assert!(s.contains("14 of 14 back"), "{s}");
}

#[test]
fn sim_mqttclient_rejects_wildcard_topic() {
    let r = sim(
        "mqttclient bad topic",
        &mqttclient::SPEC,
        mqttclient::TEXT,
        mqttclient::run,
        &["--topic", "a/+/b"],
    );
    assert!(r.is_err_and(|e| e.contains("no wildcards")));
}

#[test]
fn sim_snake_fills_the_fd_table() {
    let r = sim(
        "snake",
        &snake::SPEC,
        &[],
        snake::run,
        &["--messages", "60", "--size", "512"],
    );
    let s = r.expect("snake on the simulated network");
    // HostStack has 16 fds: 15 segments, one spare.
    assert!(s.starts_with("15 links x 60 msgs"), "{s}");
}

#[test]
fn sim_snake_short() {
    let r = sim(
        "snake short",
        &snake::SPEC,
        &[],
        snake::run,
        &["--links", "3", "--messages", "20"],
    );
    let s = r.expect("a 3-segment snake");
    assert!(s.starts_with("3 links x 20 msgs"), "{s}");
}

#[test]
fn sim_tlsclient_without_tls() {
    let r = sim(
        "tlsclient",
        &tlsclient::SPEC,
        tlsclient::TEXT,
        tlsclient::run,
        &["--host", "example.test"],
    );
    let e = r.expect_err("no TLS on the simulated network");
    if cfg!(feature = "tls") {
        // SoftTls gives the device TLS, but there is no TLS server.
        assert!(e.contains("needs a TLS peer"), "{e}");
    } else {
        assert!(e.contains(tlsclient::NO_TLS), "{e}");
    }
}

#[test]
fn tlsclient_trust_options() {
    let dir = std::env::temp_dir().join(format!("ndv-ws-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let pem = dir.join("ca.pem");
    std::fs::write(
        &pem,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let parse = |args: &[&str]| {
        let o = text::parse(
            &tlsclient::SPEC,
            tlsclient::TEXT,
            args.iter().map(|a| a.to_string()),
        )
        .unwrap()
        .unwrap();
        tlsclient::trust_config(&o)
    };
    let missing = parse(&["--ca", "/nonexistent/ca.pem"]);
    assert!(missing.is_err_and(|e| e.contains("/nonexistent/ca.pem")));
    let bad = parse(&["--ca", not_pem.to_str().unwrap()]);
    assert!(bad.is_err_and(|e| e.contains("no PEM certificate")));
    let both = parse(&["--ca", pem.to_str().unwrap(), "--insecure"]);
    assert!(both.is_err_and(|e| e.contains("contradict")));
    let ok = parse(&[&format!("--ca={}", pem.display())]).expect("a PEM CA file");
    assert!(ok.ca_pem.is_some() && !ok.insecure);
    let insecure = parse(&["--insecure"]).unwrap();
    assert!(insecure.insecure && insecure.ca_pem.is_none());
    // The CA check happens before anything touches the network.
    text::clear();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mqtt_topic_filters() {
    use peers_ws_mqtt::mqtt::{topic_matches, valid_filter};
    assert!(topic_matches("a/#", "a"));
    assert!(topic_matches("a/#", "a/b/c"));
    assert!(topic_matches("a/+/c", "a/b/c"));
    assert!(topic_matches("+/+", "a/b"));
    assert!(!topic_matches("a/+", "a/b/c"));
    assert!(!topic_matches("a/b", "a/b/c"));
    assert!(!topic_matches("#", "$SYS/uptime"));
    assert!(topic_matches("$SYS/#", "$SYS/uptime"));
    assert!(valid_filter("a/+/#"));
    assert!(valid_filter("#"));
    assert!(!valid_filter("a/b#"));
    assert!(!valid_filter("a/#/b"));
    assert!(!valid_filter("a+/b"));
    assert!(!valid_filter(""));
}

/// Our websocket server glue against a client that writes its request and
/// frames one byte per TCP segment: the opening handshake and the frames
/// must still come through, and an unmasked client frame must be refused
/// with close 1002.
#[test]
fn sim_ws_server_byte_by_byte_and_masking() {
    use embedded_websocket as ews;
    use netdever::net::TcpStream;
    use netdever::{Netdever, SocketAddr};
    use peers_ws_mqtt::ws::{self, Event};

    support::with_timeout("ws byte by byte", Duration::from_secs(60), || {
        let net = Net::sim(None).unwrap();
        let dev: &dyn Netdever = &net.dev;
        let peer: &dyn Netdever = net.peer.as_ref().unwrap();
        let l = peers_ws_mqtt::listen(dev, 9100, 2).unwrap();
        std::thread::scope(|s| {
            let server = s.spawn(move || {
                let (stream, _) = l.accept().map_err(|e| e.to_string())?;
                let mut c = ws::handshake(stream)?;
                let first = c.recv().map_err(|e| e.to_string())?;
                if first != Event::Text || c.payload() != b"split" {
                    return Err(format!("first frame: {first:?} {:?}", c.payload()));
                }
                c.echo(ews::WebSocketSendMessageType::Text)
                    .map_err(|e| e.to_string())?;
                match c.recv() {
                    Err(e) => Ok(e.to_string()),
                    Ok(ev) => Err(format!("an unmasked frame was taken: {ev:?}")),
                }
            });

            let target = SocketAddr::from(([10, 0, 0, 1], 9100));
            let mut cl = TcpStream::connect_timeout(peer, target, Duration::from_secs(5)).unwrap();
            cl.set_nodelay(true).unwrap();
            cl.set_deadline(Some(peer.now() + Duration::from_secs(20)));
            let dribble = |bytes: &[u8]| {
                for b in bytes {
                    cl.write_all(std::slice::from_ref(b)).unwrap();
                }
            };
            let mut codec = ews::WebSocketClient::new_client(rand::rngs::OsRng);
            let mut buf = [0u8; 1024];
            let opts = ews::WebSocketOptions {
                path: "/",
                host: "10.0.0.1",
                origin: "http://10.0.0.1",
                sub_protocols: None,
                additional_headers: None,
            };
            let (n, key) = codec.client_connect(&opts, &mut buf).unwrap();
            dribble(&buf[..n]);
            let mut resp = Vec::new();
            let accepted = loop {
                let mut b = [0u8; 512];
                let k = cl.read(&mut b).unwrap();
                assert!(k > 0, "server closed during the handshake");
                resp.extend_from_slice(&b[..k]);
                match codec.client_accept(&key, &resp) {
                    Ok((len, _)) => break len,
                    Err(ews::Error::HttpHeaderIncomplete) => continue,
                    Err(e) => panic!("handshake answer: {e:?}"),
                }
            };
            let mut rest = resp.split_off(accepted);
            let n = codec
                .write(
                    ews::WebSocketSendMessageType::Text,
                    true,
                    b"split",
                    &mut buf,
                )
                .unwrap();
            assert_eq!(buf[1] & 0x80, 0x80, "the codec masks client frames");
            dribble(&buf[..n]);
            // The echo: unmasked text frame "split".
            while rest.len() < 7 {
                let mut b = [0u8; 64];
                let k = cl.read(&mut b).unwrap();
                assert!(k > 0, "server closed before echoing");
                rest.extend_from_slice(&b[..k]);
            }
            assert_eq!(&rest[..7], b"\x81\x05split", "echo frame");
            // An unmasked text frame: the server must answer close 1002.
            cl.write_all(b"\x81\x02hi").unwrap();
            let mut close = Vec::new();
            while close.len() < 4 {
                let mut b = [0u8; 64];
                match cl.read(&mut b) {
                    Ok(0) => break,
                    Ok(k) => close.extend_from_slice(&b[..k]),
                    Err(e) => panic!("waiting for the close frame: {e}"),
                }
            }
            assert_eq!(
                &close[..4],
                b"\x88\x02\x03\xea",
                "close 1002 (protocol error)"
            );
            let why = server.join().unwrap().expect("server side");
            assert!(why.contains("unmasked"), "{why}");
        });
    });
}
