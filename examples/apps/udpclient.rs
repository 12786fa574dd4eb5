//! `udpclient`: send datagrams to a UDP echo server, check every reply,
//! print round-trip statistics (TinyGo's UDP client example).
//!
//! One datagram is in flight at a time: send, wait up to `--timeout-ms` for
//! the echo, check it byte for byte. On the simulated network the peer runs
//! the `udpecho` server; on a TAP link any echo server will do (for example
//! `socat UDP-LISTEN:8080,fork PIPE`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use netdever::{Deadline, Error, MsgFlags, Netdever};

use crate::common::cli::Extra;
use crate::common::pattern::Pattern;
use crate::common::{Net, Opts, Outcome, Spec};
use crate::udpecho;

/// Command line of `udpclient`.
pub const SPEC: Spec = Spec {
    name: "udpclient",
    about: "send datagrams to a UDP echo server, check the replies, print round-trip stats",
    server: false,
    default_port: 8080,
    extra: &[
        Extra {
            name: "--count",
            value: "N",
            default: "1000",
            help: "datagrams to send",
        },
        Extra {
            name: "--size",
            value: "BYTES",
            default: "64",
            help: "datagram size (8..=1472)",
        },
        Extra {
            name: "--timeout-ms",
            value: "MS",
            default: "500",
            help: "how long to wait for each reply",
        },
        Extra {
            name: "--max-loss",
            value: "N",
            default: "0",
            help: "fail if more than N datagrams go unanswered",
        },
    ],
};

/// Largest UDP payload in one Ethernet frame.
pub const MAX_SIZE: usize = 1472;

/// Round-trip results.
#[derive(Debug, Default)]
pub struct PingStats {
    /// Datagrams sent.
    pub sent: u64,
    /// Round-trip times of the datagrams answered in time.
    pub rtts: Vec<Duration>,
    /// Replies that came after their wait had ended.
    pub late: u64,
    /// Replies that did not match what was sent (or came from elsewhere).
    pub bad: u64,
}

impl PingStats {
    /// Datagrams not answered in time.
    pub fn lost(&self) -> u64 {
        self.sent - self.rtts.len() as u64
    }

    /// `Err` when replies were wrong or more than `max_loss` went missing.
    pub fn check(&self, max_loss: u64) -> Result<(), String> {
        if self.bad != 0 {
            return Err(format!("{} wrong replies ({})", self.bad, self.summary()));
        }
        if self.lost() > max_loss {
            return Err(format!(
                "{} datagrams lost ({})",
                self.lost(),
                self.summary()
            ));
        }
        Ok(())
    }

    /// `rtt min/avg/p99/max 30/41/80/200 us, 1000/1000 answered`.
    pub fn summary(&self) -> String {
        let answered = format!("{}/{} answered", self.rtts.len(), self.sent);
        if self.rtts.is_empty() {
            return answered;
        }
        let mut us: Vec<u128> = self.rtts.iter().map(|d| d.as_micros()).collect();
        us.sort_unstable();
        let avg = us.iter().sum::<u128>() / us.len() as u128;
        let p99 = us[(us.len() * 99).div_ceil(100).saturating_sub(1)];
        format!(
            "rtt min/avg/p99/max {}/{avg}/{p99}/{} us, {answered}",
            us[0],
            us[us.len() - 1]
        )
    }
}

/// Send `count` datagrams of `size` bytes to `target` one at a time and
/// wait up to `timeout` for each echo.
pub fn ping(
    dev: &dyn Netdever,
    target: SocketAddr,
    count: u64,
    size: usize,
    timeout: Duration,
    o: &Opts,
) -> Result<PingStats, String> {
    if !(8..=MAX_SIZE).contains(&size) {
        return Err(format!("datagram size must be 8..={MAX_SIZE}, got {size}"));
    }
    let fd = udpecho::bind(dev, 0)?;
    let pat = Pattern::new(0, MAX_SIZE);
    let mut out = vec![0u8; size];
    let mut buf = vec![0u8; 2048];
    let mut stats = PingStats::default();
    let mut last_report = Instant::now();
    let r = (|| {
        for seq in 0..count {
            // 4-byte sequence number, 4 bytes of its complement, then pattern.
            out[..4].copy_from_slice(&(seq as u32).to_be_bytes());
            out[4..8].copy_from_slice(&(!(seq as u32)).to_be_bytes());
            out[8..].copy_from_slice(pat.at(seq, size - 8));
            let t0 = Instant::now();
            let deadline = Deadline::after(dev.now(), timeout);
            dev.send_to(fd, &out, MsgFlags::NONE, target, deadline)
                .map_err(|e| format!("send_to {target} (datagram {seq}): {e}"))?;
            stats.sent += 1;
            loop {
                match dev.recv_from(fd, &mut buf, MsgFlags::NONE, deadline) {
                    Ok((n, from)) => {
                        if from != target || n < 8 {
                            stats.bad += 1;
                            continue;
                        }
                        let got = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes"));
                        if got == seq as u32 && buf[..n] == out[..] {
                            stats.rtts.push(t0.elapsed());
                            break;
                        } else if got < seq as u32 && n == size {
                            stats.late += 1;
                        } else {
                            stats.bad += 1;
                        }
                    }
                    Err(Error::Timeout) => break,
                    Err(e) => return Err(format!("recv_from (datagram {seq}): {e}")),
                }
            }
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                o.say(format_args!("{}/{count}: {}", seq + 1, stats.summary()));
            }
        }
        Ok(())
    })();
    let _ = dev.close(fd);
    r.map(|()| stats)
}

/// Run `udpclient` on `net`.
pub fn run(net: &Net, o: &Opts) -> Outcome {
    let count = o.num("--count")?;
    let size = o.num("--size")? as usize;
    let timeout = o.millis("--timeout-ms")?;
    let max_loss = o.num("--max-loss")?;
    let stop = AtomicBool::new(false);
    let stopped = || stop.load(Ordering::Acquire);
    let stats = udpecho::Stats::default();
    std::thread::scope(|s| {
        let target = match &net.peer {
            Some(peer) => {
                let fd = udpecho::bind(peer, o.port).map_err(|e| format!("peer: {e}"))?;
                let (stopped, stats) = (&stopped, &stats);
                s.spawn(move || udpecho::serve(peer, fd, stopped, stats));
                SocketAddr::from((net.peer_ip, o.port))
            }
            None => o.peer.ok_or("--peer A.B.C.D:P is required")?,
        };
        o.say(format_args!(
            "sending {count} datagrams of {size} bytes to {target}"
        ));
        let r = ping(&net.dev, target, count, size, timeout, o);
        stop.store(true, Ordering::Release);
        let p = r?;
        o.say(format_args!("{}", p.summary()));
        if p.late != 0 {
            o.say(format_args!("{} late replies", p.late));
        }
        p.check(max_loss)?;
        Ok(p.summary())
    })
}
