//! The websocket, MQTT, TLS and snake examples (`examples/apps/`), run in
//! process with the same `run` functions their binaries call:
//!
//! * on the built-in simulated network, with the simulated peers of
//!   `examples/peers_ws_mqtt` (always runs, no root);
//! * against real programs, on a TAP interface inside a network namespace
//!   the test creates (kernel side 10.89.0.1/24, our device 10.89.0.2/24):
//!   mosquitto with mosquitto_sub / mosquitto_pub, python's `websockets`
//!   (an echo server for `websocket_dial`, clients for
//!   `websocket_handler`) and a python TCP echo server for `snake`.
//!
//! The TAP tests need root, /dev/net/tun, `ip`, and the programs
//! (`apt-get install mosquitto mosquitto-clients python3-websockets`).
//! Missing ones skip the test with a printed reason, unless `CI=true` or
//! `NETDEVER_REQUIRE_PEERS=1`, which make them failures. Namespaces are
//! named `ndv-<tag>-<pid>-<n>` and deleted afterwards with every program
//! started in them, also when a test fails.
#![cfg(all(feature = "std", feature = "full-stack"))]

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

#[cfg(feature = "tap")]
mod tap {
    //! Against real programs, over a TAP in a fresh network namespace.

    use std::io::{BufRead, BufReader};
    use std::net::{Ipv4Addr, SocketAddr};
    use std::path::PathBuf;
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::support::{self, Netns};
    use super::{common, mqttclient, peers_ws_mqtt, snake, websocket_dial, websocket_handler};
    use common::{Net, Outcome, RunFn, Spec};

    const TAP: &str = "ndvws0";
    const KERNEL_IP: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 1);
    const DUT: &str = "10.89.0.2/24";

    /// Root, /dev/net/tun, `ip` and `programs`; `None` = skip.
    fn requirements(test: &str, programs: &[&str]) -> Option<()> {
        if let Some(missing) = support::netns_missing() {
            support::require(test, &missing, false).ok()?;
        }
        for p in programs {
            support::require(
                test,
                &format!("the `{p}` program"),
                support::find_program(p).is_some(),
            )
            .ok()?;
        }
        Some(())
    }

    /// A python3 that can `import websockets` (Debian's python3-websockets
    /// installs for /usr/bin/python3, which may not be the first on PATH).
    fn python_with_websockets() -> Option<PathBuf> {
        ["/usr/bin/python3", "python3"]
            .iter()
            .filter_map(|p| {
                if p.starts_with('/') {
                    Some(PathBuf::from(p)).filter(|p| p.exists())
                } else {
                    support::find_program(p)
                }
            })
            .find(|py| {
                support::run_with_timeout(
                    Command::new(py).args(["-c", "import websockets"]),
                    Duration::from_secs(20),
                )
                .is_ok_and(|o| o.status.success())
            })
    }

    /// A namespace with a persistent TAP whose kernel side is 10.89.0.1/24
    /// and up; the example attaches to it with `--tap`.
    fn netns_with_tap(tag: &str) -> Netns {
        let ns = Netns::new(tag).expect("create network namespace");
        ns.ip(&["tuntap", "add", "dev", TAP, "mode", "tap"])
            .expect("create the TAP in the namespace");
        ns.ip(&["addr", "add", &format!("{KERNEL_IP}/24"), "dev", TAP])
            .expect("address the kernel side");
        ns.ip(&["link", "set", TAP, "up"]).expect("set the TAP up");
        ns
    }

    /// Run an example in process on the namespace's TAP: parse `args` (the
    /// TAP options are added), build the network on a thread that entered
    /// the namespace, run, all bounded by `limit`.
    fn run_on_tap(
        ns: &Netns,
        spec: &'static Spec,
        text: &'static [&'static str],
        run: RunFn,
        args: &[&str],
        limit: Duration,
    ) -> Outcome {
        let mut argv: Vec<String> = vec!["--tap".into(), TAP.into(), "--ip".into(), DUT.into()];
        argv.extend(args.iter().map(|a| a.to_string()));
        let ns_name = ns.name().to_string();
        support::with_timeout(spec.name, limit, move || {
            let o = peers_ws_mqtt::text::parse(spec, text, argv)?.expect("not --help");
            let o2 = o.clone();
            let net = support::in_netns(&ns_name, move || Net::from_opts(&o2))
                .map_err(|e| format!("entering {ns_name}: {e}"))??;
            let r = run(&net, &o);
            drop(net);
            r
        })
    }

    /// Collect a child's output lines.
    fn collect<R: std::io::Read + Send + 'static>(r: R) -> Arc<Mutex<Vec<String>>> {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        lines
    }

    fn has_line(lines: &Arc<Mutex<Vec<String>>>, pat: &str) -> bool {
        lines.lock().unwrap().iter().any(|l| l.contains(pat))
    }

    /// Whether a TCP connect to `addr` from inside the namespace works.
    fn can_connect(ns: &Netns, addr: SocketAddr) -> bool {
        ns.run(move || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
        })
        .unwrap_or(false)
    }

    /// mosquitto in the namespace: our mqttclient connects, subscribes to
    /// its topics at QoS 1, publishes 5 messages at QoS 0 and 5 at QoS 1
    /// (each PUBACKed), gets all 10 back and the message mosquitto_pub
    /// retained before it came; mosquitto_sub, another client, sees all 10
    /// of ours; mosquitto's log shows our client.
    #[test]
    fn mqttclient_with_mosquitto() {
        let t = "mqttclient_with_mosquitto";
        if requirements(t, &["mosquitto", "mosquitto_sub", "mosquitto_pub"]).is_none() {
            return;
        }
        let ns = netns_with_tap("wsmq");
        let dir = std::env::temp_dir().join(ns.name());
        std::fs::create_dir_all(&dir).unwrap();
        struct RmDir(PathBuf);
        impl Drop for RmDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _rm = RmDir(dir.clone());
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener 1883 {KERNEL_IP}\nallow_anonymous true\npersistence false\nlog_dest stdout\nlog_type all\n"
            ),
        )
        .unwrap();
        let (_pid, out, _) = ns
            .spawn(
                ns.command(&["mosquitto", "-c", conf.to_str().unwrap(), "-v"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit()),
            )
            .expect("spawn mosquitto");
        let log = collect(out.unwrap());
        let broker = SocketAddr::from((KERNEL_IP, 1883));
        assert!(
            support::wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
                can_connect(&ns, broker)
            }),
            "mosquitto did not listen on {broker}: {:?}",
            log.lock().unwrap()
        );

        let host = KERNEL_IP.to_string();
        let retained = "retained hello from mosquitto_pub";
        let out = support::run_with_timeout(
            &mut ns.command(&[
                "mosquitto_pub",
                "-h",
                &host,
                "-p",
                "1883",
                "-q",
                "1",
                "-r",
                "-t",
                "netdever/mqttclient/retained",
                "-m",
                retained,
            ]),
            Duration::from_secs(20),
        )
        .expect("run mosquitto_pub");
        assert!(out.status.success(), "mosquitto_pub: {out:?}");

        // Another subscriber: the retained message + our 10.
        let (sub_pid, sub_out, _) = ns
            .spawn(
                ns.command(&[
                    "mosquitto_sub",
                    "-h",
                    &host,
                    "-p",
                    "1883",
                    "-q",
                    "1",
                    "-v",
                    "-d",
                    "-t",
                    "netdever/mqttclient/#",
                    "-C",
                    "11",
                    "-W",
                    "60",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
            )
            .expect("spawn mosquitto_sub");
        let sub = collect(sub_out.unwrap());
        assert!(
            support::wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
                has_line(&sub, "SUBACK")
            }),
            "mosquitto_sub did not subscribe: {:?}",
            sub.lock().unwrap()
        );

        let r = run_on_tap(
            &ns,
            &mqttclient::SPEC,
            mqttclient::TEXT,
            mqttclient::run,
            &[
                "--peer",
                "10.89.0.1:1883",
                "--count",
                "5",
                "--expect-others",
                "1",
                "--client-id",
                "netdever-tap-test",
            ],
            Duration::from_secs(90),
        );
        let s = r.unwrap_or_else(|e| {
            panic!(
                "mqttclient against mosquitto: {e}\nmosquitto log: {:?}",
                log.lock().unwrap()
            )
        });
        assert!(s.contains("5+5 published"), "{s}");
        assert!(s.contains("5 PUBACKs"), "{s}");
        assert!(s.contains("10 of 10 back"), "{s}");
        assert!(s.contains("1 from others"), "{s}");

        let st = ns.wait_child(sub_pid, Duration::from_secs(30));
        let lines = sub.lock().unwrap().clone();
        assert!(
            st.is_some_and(|s| s.success()),
            "mosquitto_sub got all 11 messages: {st:?} {lines:?}"
        );
        for (topic, prefix) in [("qos0", "qos0"), ("qos1", "qos1")] {
            for i in 0..5 {
                let want = format!("netdever/mqttclient/{topic} {prefix} #{i} run ");
                assert!(
                    lines.iter().any(|l| l.starts_with(&want)),
                    "mosquitto_sub saw {want:?}: {lines:?}"
                );
            }
        }
        assert!(
            lines
                .iter()
                .any(|l| l == &format!("netdever/mqttclient/retained {retained}")),
            "{lines:?}"
        );
        assert!(
            support::wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
                has_line(&log, "netdever-tap-test")
            }),
            "mosquitto's log names our client: {:?}",
            log.lock().unwrap()
        );
        drop(ns);
    }

    const WS_ECHO_SERVER: &str = "
import asyncio, sys, websockets
async def echo(ws):
    async for m in ws:
        await ws.send(m)
async def main():
    async with websockets.serve(echo, sys.argv[1], int(sys.argv[2]), ping_interval=None, max_size=2**20):
        print('ready', flush=True)
        await asyncio.sleep(90)
asyncio.run(main())
";

    /// python websockets' echo server: our websocket_dial's handshake,
    /// masked text and binary messages (small, and 60 KiB ones with a
    /// 16-bit length over many segments), fragments, ping and close all
    /// pass (websockets fails the connection on any unmasked frame).
    #[test]
    fn websocket_dial_with_python_websockets() {
        let t = "websocket_dial_with_python_websockets";
        if requirements(t, &[]).is_none() {
            return;
        }
        let py = python_with_websockets();
        if support::require(
            t,
            "python3 with the websockets package (python3-websockets)",
            py.is_some(),
        )
        .is_err()
        {
            return;
        }
        let py = py.unwrap();
        let ns = netns_with_tap("wsd");
        let host = KERNEL_IP.to_string();
        let (_pid, out, _) = ns
            .spawn(
                ns.command(&[py.to_str().unwrap(), "-c", WS_ECHO_SERVER, &host, "8765"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit()),
            )
            .expect("spawn the python websocket server");
        let (line, _rest) = support::read_line_timeout(out.unwrap(), Duration::from_secs(30))
            .expect("the python websocket server did not print `ready`");
        assert_eq!(line.trim(), "ready");

        for args in [
            &["--count", "20", "--size", "1000", "--path", "/echo"][..],
            &["--count", "4", "--size", "60K"][..],
        ] {
            let mut a = vec!["--peer", "10.89.0.1:8765"];
            a.extend_from_slice(args);
            let r = run_on_tap(
                &ns,
                &websocket_dial::SPEC,
                websocket_dial::TEXT,
                websocket_dial::run,
                &a,
                Duration::from_secs(90),
            );
            let s = r.unwrap_or_else(|e| panic!("websocket_dial {args:?} against python: {e}"));
            assert!(s.contains("messages echoed"), "{s}");
            assert!(s.contains("NormalClosure"), "{s}");
        }
        drop(ns);
    }

    const WS_CLIENTS: &str = "
import asyncio, os, sys, websockets
URI = sys.argv[1]
async def connect():
    for _ in range(150):
        try:
            return await websockets.connect(URI, ping_interval=None, max_size=2**20)
        except OSError:
            await asyncio.sleep(0.1)
    raise SystemExit('could not connect to ' + URI)
async def one(k):
    ws = await connect()
    try:
        for i in range(10):
            m = 'hello %d.%d' % (k, i)
            await ws.send(m)
            assert await ws.recv() == m, 'text echo'
        data = os.urandom(50000)
        await ws.send(data)
        assert await ws.recv() == data, 'binary echo'
        await ws.send(['frag', 'mented'])
        assert await ws.recv() == 'fragmented', 'fragmented echo'
        pong = await ws.ping(b'py-ping')
        await asyncio.wait_for(pong, 5)
    finally:
        await ws.close()
    assert ws.close_code == 1000, ws.close_code
    print('client %d ok' % k, flush=True)
async def main():
    await asyncio.wait_for(asyncio.gather(one(0), one(1)), 60)
    print('ok', flush=True)
asyncio.run(main())
";

    /// python websockets clients drive our websocket_handler: two at once,
    /// each with text, a 50 KB binary message, a fragmented message, a
    /// ping and the close handshake (code 1000 both ways).
    #[test]
    fn websocket_handler_with_python_clients() {
        let t = "websocket_handler_with_python_clients";
        if requirements(t, &[]).is_none() {
            return;
        }
        let py = python_with_websockets();
        if support::require(
            t,
            "python3 with the websockets package (python3-websockets)",
            py.is_some(),
        )
        .is_err()
        {
            return;
        }
        let py = py.unwrap();
        let ns = netns_with_tap("wsh");
        let (pid, out, _) = ns
            .spawn(
                ns.command(&[
                    py.to_str().unwrap(),
                    "-c",
                    WS_CLIENTS,
                    "ws://10.89.0.2:8080/chat",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
            )
            .expect("spawn the python websocket clients");
        let said = collect(out.unwrap());
        let r = run_on_tap(
            &ns,
            &websocket_handler::SPEC,
            &[],
            websocket_handler::run,
            &["--port", "8080", "--max-clients", "2", "--duration", "60"],
            Duration::from_secs(90),
        );
        let s = r.unwrap_or_else(|e| panic!("websocket_handler with python clients: {e}"));
        assert_eq!(s, "served 2 websocket clients");
        let st = ns.wait_child(pid, Duration::from_secs(20));
        assert!(
            st.is_some_and(|s| s.success()) && has_line(&said, "ok"),
            "python clients: {st:?} {:?}",
            said.lock().unwrap()
        );
        drop(ns);
    }

    /// `openssl s_server -www` with an ECDSA P-256 certificate for
    /// `tls.test` signed by a test CA: our tlsclient (feature `tls`:
    /// `SoftTls` over the TAP stack) gets `HTTP/1.0 200 ok` with `--ca`,
    /// and with `--insecure`; without either the certificate is refused,
    /// and with the wrong name too.
    #[cfg(feature = "tls")]
    #[test]
    fn tlsclient_with_openssl() {
        use super::tlsclient;
        let t = "tlsclient_with_openssl";
        if requirements(t, &["openssl"]).is_none() {
            return;
        }
        let ns = netns_with_tap("wst");
        let dir = std::env::temp_dir().join(ns.name());
        std::fs::create_dir_all(&dir).unwrap();
        struct RmDir(PathBuf);
        impl Drop for RmDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _rm = RmDir(dir.clone());
        let d = |f: &str| dir.join(f).to_str().unwrap().to_string();
        std::fs::write(
            d("srv.ext"),
            "subjectAltName=DNS:tls.test\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let steps: [&[&str]; 5] = [
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &d("ca.key"),
            ],
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                &d("ca.key"),
                "-sha256",
                "-days",
                "30",
                "-subj",
                "/CN=netdever test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-out",
                &d("ca.pem"),
            ],
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &d("srv.key"),
            ],
            &[
                "req",
                "-new",
                "-key",
                &d("srv.key"),
                "-subj",
                "/CN=tls.test",
                "-out",
                &d("srv.csr"),
            ],
            &[
                "x509",
                "-req",
                "-in",
                &d("srv.csr"),
                "-CA",
                &d("ca.pem"),
                "-CAkey",
                &d("ca.key"),
                "-CAcreateserial",
                "-days",
                "30",
                "-sha256",
                "-extfile",
                &d("srv.ext"),
                "-out",
                &d("srv.pem"),
            ],
        ];
        for args in steps {
            support::run_ok(Command::new("openssl").args(args))
                .unwrap_or_else(|e| panic!("openssl {args:?}: {e}"));
        }
        let accept = format!("{KERNEL_IP}:4433");
        let (_pid, out, _) = ns
            .spawn(
                ns.command(&[
                    "openssl",
                    "s_server",
                    "-accept",
                    &accept,
                    "-cert",
                    &d("srv.pem"),
                    "-key",
                    &d("srv.key"),
                    "-tls1_3",
                    "-www",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
            )
            .expect("spawn openssl s_server");
        let log = collect(out.unwrap());
        assert!(
            support::wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
                has_line(&log, "ACCEPT")
            }),
            "openssl s_server did not start: {:?}",
            log.lock().unwrap()
        );
        let ca = d("ca.pem");
        let go = |args: &[&str]| {
            let mut a = vec!["--peer", accept.as_str()];
            a.extend_from_slice(args);
            run_on_tap(
                &ns,
                &tlsclient::SPEC,
                tlsclient::TEXT,
                tlsclient::run,
                &a,
                Duration::from_secs(90),
            )
        };
        let s = go(&["--host", "tls.test", "--ca", &ca]).expect("tlsclient --ca");
        assert!(s.starts_with("HTTP/1.0 200 ok"), "{s}");
        let s = go(&["--host", "tls.test", "--insecure"]).expect("tlsclient --insecure");
        assert!(s.starts_with("HTTP/1.0 200 ok"), "{s}");
        // No CA: nothing to verify against. (Seen once as another TLS-level
        // refusal while netdever::tls was in flux; any such refusal will do.)
        let e = go(&["--host", "tls.test"]).expect_err("no CA: nothing to verify against");
        assert!(
            e.contains("certificate") || e.contains("TLS"),
            "refused by TLS, not by the transport: {e}"
        );
        let e = go(&["--host", "other.test", "--ca", &ca]).expect_err("wrong name");
        assert!(e.contains("certificate"), "{e}");
        drop(ns);
    }

    const TCP_ECHO: &str = "
import socketserver, sys, threading
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            d = self.request.recv(65536)
            if not d:
                return
            self.request.sendall(d)
class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 32
s = Server((sys.argv[1], int(sys.argv[2])), Echo)
threading.Timer(90, s.shutdown).start()
print('ready', flush=True)
s.serve_forever()
";

    /// A python thread-per-connection echo server: snake opens as many
    /// connections as its fd table allows (15 of 16) and runs messages
    /// through all of them.
    #[test]
    fn snake_with_python_echo() {
        let t = "snake_with_python_echo";
        if requirements(t, &["python3"]).is_none() {
            return;
        }
        let ns = netns_with_tap("wss");
        let host = KERNEL_IP.to_string();
        let (_pid, out, _) = ns
            .spawn(
                ns.command(&["python3", "-c", TCP_ECHO, &host, "9000"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit()),
            )
            .expect("spawn the python echo server");
        let (line, _rest) = support::read_line_timeout(out.unwrap(), Duration::from_secs(30))
            .expect("the python echo server did not print `ready`");
        assert_eq!(line.trim(), "ready");
        let r = run_on_tap(
            &ns,
            &snake::SPEC,
            &[],
            snake::run,
            &[
                "--peer",
                "10.89.0.1:9000",
                "--messages",
                "100",
                "--size",
                "1K",
            ],
            Duration::from_secs(90),
        );
        let s = r.unwrap_or_else(|e| panic!("snake against python: {e}"));
        assert!(s.starts_with("15 links x 100 msgs"), "{s}");
        drop(ns);
    }
}
