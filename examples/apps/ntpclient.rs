//! `ntpclient`: ask an NTP server for the time over SNTP and print it with
//! this host's clock offset (TinyGo's `examples/net/ntpclient`).
//!
//! The server is given by name (resolved with the device's DNS) or address;
//! the SNTP exchange is the `sntpc` crate's synchronous client over our
//! blocking [`UdpSocket`], through its `NtpUdpSocket` trait. Each of
//! `--count` requests prints the server time, the offset of this host's
//! clock from it, and the round trip.
//!
//! On the simulated network the peer resolves `time.sim.test` and serves
//! SNTP from this host's clock (so the offset is about zero); behind
//! `--passt` the default server is this host's port 123 (chronyd);
//! on a TAP link give `--server`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use netdever::net::UdpSocket;
use netdever::{AddressFamily, Netdever, SocketAddr};
use sntpc::{NtpContext, NtpTimestampGenerator, NtpUdpSocket};

use crate::common::cli::Extra;
use crate::common::peers::{dns_server, sntp_server};
use crate::common::sntp::format_utc;
use crate::common::{Board, Net, Opts, Outcome, Spec};

/// Command line of `ntpclient`.
pub const SPEC: Spec = Spec {
    name: "ntpclient",
    about: "get the time from an NTP server over SNTP; print it and this host's clock offset",
    server: false,
    default_port: 123,
    extra: &[
        Extra {
            name: "--server",
            value: "HOST[:PORT]",
            default: "",
            help: "NTP server, name or address (default: time.sim.test on the simulated network, this host behind --passt)",
        },
        Extra {
            name: "--count",
            value: "N",
            default: "3",
            help: "requests to make",
        },
        Extra {
            name: "--timeout-ms",
            value: "MS",
            default: "2000",
            help: "how long to wait for each answer",
        },
        Extra {
            name: "--max-offset-ms",
            value: "MS",
            default: "0",
            help: "fail if |offset| exceeds this (0: do not check)",
        },
    ],
};

/// Our UDP socket as sntpc's socket. Its read deadline bounds each wait.
struct Sock<'d>(UdpSocket<&'d dyn Netdever>);

impl NtpUdpSocket for Sock<'_> {
    async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> sntpc::Result<usize> {
        self.0.send_to(buf, addr).map_err(|_| sntpc::Error::Network)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> sntpc::Result<(usize, SocketAddr)> {
        self.0.recv_from(buf).map_err(|_| sntpc::Error::Network)
    }
}

/// Timestamps from this host's clock (UTC).
#[derive(Clone, Copy, Default)]
struct HostClock(Duration);

impl NtpTimestampGenerator for HostClock {
    fn init(&mut self) {
        self.0 = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
    }
    fn timestamp_sec(&self) -> u64 {
        self.0.as_secs()
    }
    fn timestamp_subsec_micros(&self) -> u32 {
        self.0.subsec_micros()
    }
}

/// `HOST[:PORT]`, with the default port.
fn split_server(s: &str, default_port: u16) -> Result<(String, u16), String> {
    match s.rsplit_once(':') {
        Some((h, p)) => Ok((
            h.to_string(),
            p.parse()
                .map_err(|_| format!("--server: bad port in {s:?}"))?,
        )),
        None => Ok((s.to_string(), default_port)),
    }
}

/// Run `ntpclient` on `net`.
pub fn run(net: &Net, o: &Opts) -> Outcome {
    let count = o.num("--count")?.max(1);
    let timeout = o.millis("--timeout-ms")?;
    let max_offset = o.millis("--max-offset-ms")?;
    let (host, port) = match o.text_opt("--server") {
        Some(s) => split_server(s, o.port)?,
        None => match (net.board, net.host_gateway()) {
            (Board::Sim, _) => ("time.sim.test".to_string(), o.port),
            (_, Some(gw)) => (gw.to_string(), o.port),
            _ => return Err("give the NTP server with --server HOST[:PORT]".into()),
        },
    };
    let host = net.device_host(&host);
    let Some(peer) = &net.peer else {
        return query(&net.dev, &host, port, count, timeout, max_offset, o);
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let dns = dns_server(s, peer, &stop)?;
        let ntp = sntp_server(s, peer, port, &stop)?;
        let r = query(&net.dev, &host, port, count, timeout, max_offset, o);
        stop.store(true, std::sync::atomic::Ordering::Release);
        let _ = dns.join();
        let served = ntp.join().map_err(|_| "SNTP server panicked".to_string())?;
        if r.is_ok() && served < count {
            return Err(format!("the peer served {served} of {count} requests"));
        }
        r
    })
}

fn query(
    dev: &dyn Netdever,
    host: &str,
    port: u16,
    count: u64,
    timeout: Duration,
    max_offset: Duration,
    o: &Opts,
) -> Outcome {
    let ip = dev
        .get_host_by_name(host, AddressFamily::Inet)
        .map_err(|e| format!("resolving {host}: {e}"))?;
    let server = SocketAddr::new(ip, port);
    o.say(format_args!("NTP server {host} = {server}"));
    let mut sock = UdpSocket::bind(dev, SocketAddr::from(([0, 0, 0, 0], 0)))
        .map_err(|e| format!("UDP socket: {e}"))?;
    let mut offsets = Vec::new();
    let mut last = String::new();
    for i in 0..count {
        sock.set_read_deadline(Some(dev.now() + timeout));
        let s = Sock(sock);
        let ctx = NtpContext::new(HostClock::default());
        let r = sntpc::sync::get_time(server, &s, ctx);
        sock = s.0;
        let t = r.map_err(|e| match e {
            sntpc::Error::Network => format!(
                "request {}: no answer from {server} within {} ms",
                i + 1,
                timeout.as_millis()
            ),
            e => format!("request {}: {e:?}", i + 1),
        })?;
        let micros = sntpc::fraction_to_microseconds(t.sec_fraction());
        let offset_ms = t.offset() as f64 / 1e3;
        last = format!(
            "{}, offset {offset_ms:+.3} ms, rtt {:.3} ms, stratum {}",
            format_utc(t.sec(), micros),
            t.roundtrip() as f64 / 1e3,
            t.stratum()
        );
        o.say(format_args!("time {last}"));
        offsets.push(t.offset());
        if i + 1 < count {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    if !max_offset.is_zero() {
        if let Some(&worst) = offsets.iter().max_by_key(|o| o.unsigned_abs()) {
            if worst.unsigned_abs() > max_offset.as_micros() as u64 {
                return Err(format!(
                    "clock offset {:.3} ms is over the {} ms allowed",
                    worst as f64 / 1e3,
                    max_offset.as_millis()
                ));
            }
        }
    }
    Ok(last)
}
