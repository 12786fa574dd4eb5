//! `tlsclient`: an HTTPS request over a `Protocol::Tls` socket, with the raw
//! [`Socketer`] calls only (TinyGo's `examples/net/tlsclient`): `socket`,
//! `connect` with the host name (SNI and the certificate's name check),
//! `send` the request, `recv` the response until the server closes.
//!
//! TLS is the device's business: a backend that has it (`Capabilities::tls`
//! is `Software` or `Firmware`) runs the handshake inside `connect`. One
//! without it refuses the socket with `ProtocolNotSupported`, and this
//! example then says "TLS not supported by this device" and fails.
//!
//! A device without TLS of its own is wrapped in `netdever::tls::SoftTls`
//! (TLS 1.3 in software over the device's TCP; feature `tls`) that trusts
//! the CA(s) in `--ca FILE` (PEM), or verifies nothing with `--insecure`
//! (see `examples/common/tls.rs`). Without the feature the two options are
//! checked but not applied. The simulated network has no TLS server: use a
//! TAP link with a real one (`openssl s_server -www`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use netdever::{
    AddressFamily, Deadline, Error, MsgFlags, Netdever, Protocol, SockType, Socketer, Sockfd,
    TlsSupport,
};

use crate::common::cli::Extra;
use crate::common::tls::{with_tls_device, Trust};
use crate::common::{Board, Net, Opts, Outcome, Spec};
use crate::peers_ws_mqtt::text;

/// Command line of `tlsclient`.
pub const SPEC: Spec = Spec {
    name: "tlsclient",
    about: "HTTPS GET over a Protocol::Tls socket with raw Socketer calls",
    server: false,
    default_port: 443,
    extra: &[
        Extra {
            name: "--host",
            value: "NAME",
            default: "none",
            help: "server name for SNI, the certificate check and Host (none: the --peer address)",
        },
        Extra {
            name: "--path",
            value: "PATH",
            default: "/",
            help: "path to GET",
        },
        Extra {
            name: "--ca",
            value: "FILE",
            default: "none",
            help: "trust the CA certificate(s) in this PEM file",
        },
        Extra {
            name: "--insecure",
            value: "",
            default: "false",
            help: "do not verify the server's certificate (testing only)",
        },
        Extra {
            name: "--max-bytes",
            value: "N",
            default: "1M",
            help: "stop reading the response after N bytes",
        },
    ],
};

/// The text-valued options of [`SPEC`].
pub const TEXT: &[&str] = &["--host", "--path", "--ca"];

/// Bound on the whole exchange.
const LIMIT: Duration = Duration::from_secs(30);

/// The message for a device without TLS.
pub const NO_TLS: &str = "TLS not supported by this device";

/// Read and check `--ca` / `--insecure`.
pub fn trust_config(o: &Opts) -> Result<Trust, String> {
    let ca = text::get_opt(&SPEC, "--ca");
    Trust::from_options(ca.as_deref(), o.flag("--insecure"))
}

/// Run `tlsclient` on `net`.
pub fn run(net: &Net, o: &Opts) -> Outcome {
    let trust = trust_config(o)?;
    let say = |a: std::fmt::Arguments<'_>| o.say(a);
    with_tls_device(&net.dev, &trust, &say, |dev| request(net, dev, o))
}

/// Open the `Protocol::Tls` socket on `dev` and run the request.
fn request(net: &Net, dev: &dyn Netdever, o: &Opts) -> Outcome {
    let path = text::get(&SPEC, "--path");
    let max_bytes = o.size("--max-bytes")?.max(1) as usize;
    let caps = dev.capabilities();
    o.say(format_args!("device TLS support: {:?}", caps.tls));
    let fd = match dev.socket(AddressFamily::Inet, SockType::Stream, Protocol::Tls) {
        Ok(fd) => fd,
        Err(Error::ProtocolNotSupported) => {
            let hint = if caps.tls == TlsSupport::None {
                " (Capabilities::tls is None)"
            } else {
                ""
            };
            return Err(format!(
                "{NO_TLS}: socket(Inet, Stream, Tls) is ProtocolNotSupported{hint}"
            ));
        }
        Err(e) => return Err(format!("socket(Inet, Stream, Tls): {e}")),
    };
    let r = if net.board == Board::Sim {
        Err("needs a TLS peer: the simulated network has none; use --tap or --passt".into())
    } else {
        match o.peer {
            Some(target) => {
                let host =
                    text::get_opt(&SPEC, "--host").unwrap_or_else(|| target.ip().to_string());
                exchange(dev, fd, target, &host, &path, max_bytes, o)
            }
            None => Err("--peer A.B.C.D:P is required".into()),
        }
    };
    let _ = dev.close(fd);
    r
}

/// Connect (TLS handshake), send a GET, read the response to the end.
fn exchange(
    dev: &dyn Socketer,
    fd: Sockfd,
    target: SocketAddr,
    host: &str,
    path: &str,
    max_bytes: usize,
    o: &Opts,
) -> Outcome {
    let deadline = Deadline::after(dev.now(), LIMIT);
    o.say(format_args!("connecting to {target} as {host} (TLS)"));
    let t0 = Instant::now();
    dev.connect(fd, Some(host), target, deadline)
        .map_err(|e| format!("connect {host} ({target}): {e}"))?;
    let handshake = t0.elapsed();
    o.say(format_args!(
        "TLS connection up in {:.1} ms",
        handshake.as_secs_f64() * 1e3
    ));

    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: netdever-tlsclient\r\nConnection: close\r\n\r\n"
    );
    let mut rest = req.as_bytes();
    while !rest.is_empty() {
        let n = dev
            .send(fd, rest, MsgFlags::NONE, deadline)
            .map_err(|e| format!("send: {e}"))?;
        rest = &rest[n..];
    }

    let mut resp = Vec::new();
    let mut buf = [0u8; 4096];
    while resp.len() < max_bytes {
        match dev.recv(fd, &mut buf, MsgFlags::NONE, deadline) {
            Ok(0) => break,
            Ok(n) => resp.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("recv after {} bytes: {e}", resp.len())),
        }
    }
    let text = String::from_utf8_lossy(&resp);
    let status = text.lines().next().unwrap_or("").to_string();
    if !status.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP response: {status:?}"));
    }
    let headers = text
        .split("\r\n\r\n")
        .next()
        .map_or(0, |h| h.lines().count().saturating_sub(1));
    o.say(format_args!(
        "{status} ({headers} headers, {} bytes)",
        resp.len()
    ));
    Ok(format!(
        "{status}, {} bytes, handshake {:.1} ms",
        resp.len(),
        handshake.as_secs_f64() * 1e3
    ))
}
