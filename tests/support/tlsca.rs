//! A throwaway PKI made at test time with the `openssl` CLI (ECDSA P-256),
//! and `openssl s_server -tls1_3 -rev` peers on 127.0.0.1 (every line comes
//! back reversed). Shared by the TLS tests: include it with
//! `#[path = "support/tlsca.rs"] mod tlsca;` next to `mod support;`.
//!
//! Certificates: a test CA and a `tls.test` server certificate it signs, an
//! impostor CA with the same name and its server certificate, a chain
//! through an intermediate CA, a certificate issued by a leaf, and two for
//! the name rules: one with many DNS names, a wildcard and IP addresses
//! (127.0.0.1, 10.89.0.1), one with only those IP addresses and no CN.
#![allow(dead_code)]

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use netdever::tls::pem_certificates;

/// The name every server certificate is for.
pub const HOST: &str = "tls.test";

/// The throwaway PKI, made once per test run.
pub struct Pki {
    /// Where the files are.
    pub dir: PathBuf,
}

impl Pki {
    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).to_string_lossy().into_owned()
    }

    /// The DER of a PEM certificate file.
    pub fn der(&self, file: &str) -> Vec<u8> {
        let pem = std::fs::read_to_string(self.dir.join(file)).expect("read PEM");
        pem_certificates(&pem).expect("PEM → DER").remove(0)
    }
}

pub const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:tls.test
[names]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:a.test,DNS:b.test,DNS:c.test,DNS:tls-names.test,DNS:*.wild.test,IP:127.0.0.1,IP:10.89.0.1
[iponly]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,IP:10.89.0.1
";

pub fn openssl(dir: &std::path::Path, args: &[&str]) {
    crate::support::run_ok(Command::new("openssl").current_dir(dir).args(args))
        .unwrap_or_else(|e| panic!("openssl {args:?}: {e}"));
}

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("tls-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create PKI dir");
        std::fs::write(dir.join("openssl.cnf"), OPENSSL_CNF).expect("write openssl.cnf");
        let key = |name: &str| {
            openssl(
                &dir,
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                    name,
                ],
            )
        };
        let root = |name: &str, cn: &str| {
            key(&format!("{name}.key"));
            openssl(
                &dir,
                &[
                    "req",
                    "-new",
                    "-x509",
                    "-key",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.pem"),
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN={cn}"),
                    "-config",
                    "openssl.cnf",
                    "-extensions",
                    "ca",
                ],
            );
        };
        let signed = |name: &str, subj: &str, issuer: &str, ext: &str, serial: &str| {
            key(&format!("{name}.key"));
            openssl(
                &dir,
                &[
                    "req",
                    "-new",
                    "-key",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    subj,
                    "-config",
                    "openssl.cnf",
                ],
            );
            openssl(
                &dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    &format!("{issuer}.pem"),
                    "-CAkey",
                    &format!("{issuer}.key"),
                    "-set_serial",
                    serial,
                    "-days",
                    "2",
                    "-out",
                    &format!("{name}.pem"),
                    "-extfile",
                    "openssl.cnf",
                    "-extensions",
                    ext,
                ],
            );
        };
        // The CA the dut trusts, and the server certificate it signs.
        root("ca", "netdever test CA");
        let cn = format!("/CN={HOST}");
        signed("server", &cn, "ca", "leaf", "0x1001");
        // An impostor CA with the very same name, and its server certificate.
        root("evil", "netdever test CA");
        signed("evil-server", &cn, "evil", "leaf", "0x1002");
        // A chain: root → intermediate CA → server.
        signed(
            "inter",
            "/CN=netdever test intermediate",
            "ca",
            "ca",
            "0x1003",
        );
        signed("inter-server", &cn, "inter", "leaf", "0x1004");
        // A "certificate" issued by a leaf (not a CA) that the CA signed.
        signed("forged", &cn, "server", "leaf", "0x1005");
        // Name rules: DNS SANs past the third, a wildcard, IP addresses.
        signed("names-server", "/CN=tls-names", "ca", "names", "0x1006");
        // IP addresses only, and no CN.
        signed("ip-server", "/O=netdever test", "ca", "iponly", "0x1007");
        Pki { dir }
    })
}

pub fn trusted() -> &'static [&'static [u8]] {
    static CAS: OnceLock<Vec<&'static [u8]>> = OnceLock::new();
    CAS.get_or_init(|| vec![&*Box::leak(pki().der("ca.pem").into_boxed_slice())])
}

// --------------------------------------------------------------------- servers

/// One `openssl s_server -rev` configuration.
pub struct Server {
    /// Certificate file.
    pub cert: &'static str,
    /// Key file.
    pub key: &'static str,
    /// Chain file sent along, if any.
    pub chain: Option<&'static str>,
}

/// The right certificate for `tls.test`, from the trusted CA.
pub const GOOD: Server = Server {
    cert: "server.pem",
    key: "server.key",
    chain: None,
};
/// A `tls.test` certificate from the impostor CA.
pub const EVIL: Server = Server {
    cert: "evil-server.pem",
    key: "evil-server.key",
    chain: None,
};
/// A `tls.test` certificate from an intermediate CA, sent with it.
pub const CHAIN: Server = Server {
    cert: "inter-server.pem",
    key: "inter-server.key",
    chain: Some("inter.pem"),
};
/// A `tls.test` certificate issued by the (non-CA) server certificate.
pub const FORGED: Server = Server {
    cert: "forged.pem",
    key: "forged.key",
    chain: Some("server.pem"),
};

/// A certificate for `a.test`, `b.test`, `c.test`, `tls-names.test`,
/// `*.wild.test`, 127.0.0.1 and 10.89.0.1 (CN `tls-names`).
pub const NAMES: Server = Server {
    cert: "names-server.pem",
    key: "names-server.key",
    chain: None,
};
/// A certificate for 127.0.0.1 and 10.89.0.1 only (no DNS name, no CN).
pub const IP_ONLY: Server = Server {
    cert: "ip-server.pem",
    key: "ip-server.key",
    chain: None,
};

/// The s_server command line for `s` listening on `accept`.
pub fn server_args(s: &Server, accept: &str) -> Vec<String> {
    server_args_mode(s, accept, "-rev")
}

/// The s_server command line for `s` on `accept` in `mode`: `-rev` (lines
/// come back reversed) or `-www` (an HTTP status page for `GET /`, then
/// the server closes the connection).
pub fn server_args_mode(s: &Server, accept: &str, mode: &str) -> Vec<String> {
    let pki = pki();
    let mut args: Vec<String> = [
        "openssl", "s_server", "-4", "-tls1_3", mode, "-accept", accept, "-cert",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend([pki.path(s.cert), "-key".into(), pki.path(s.key)]);
    if let Some(c) = s.chain {
        args.extend(["-cert_chain".into(), pki.path(c)]);
    }
    args
}

/// Wait (bounded) until s_server prints ACCEPT; a helper thread keeps
/// draining its stdout afterwards so it never blocks on a full pipe.
/// False if it exited or said nothing in time.
pub fn wait_accept(out: ChildStdout) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let end = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.trim() == "ACCEPT" => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

pub fn server_log(tag: &str) -> File {
    File::create(pki().dir.join(format!("s_server-{tag}.log"))).expect("server log")
}

/// s_server processes on the host's loopback, killed on drop.
#[derive(Default)]
pub struct LoopbackServers(pub Vec<Child>);

impl Drop for LoopbackServers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = crate::support::wait_child(c, Duration::from_secs(5));
        }
    }
}

impl LoopbackServers {
    /// Start `s` on a free port of 127.0.0.1 (a few tries: the port is
    /// picked before s_server binds it).
    pub fn spawn(&mut self, s: &Server) -> SocketAddr {
        self.spawn_mode(s, "-rev")
    }

    /// [`spawn`](Self::spawn) in another mode (see [`server_args_mode`]).
    pub fn spawn_mode(&mut self, s: &Server, mode: &str) -> SocketAddr {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let args = server_args_mode(s, &addr.to_string(), mode);
            let mut cmd = Command::new(&args[0]);
            cmd.args(&args[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(server_log(&format!("loopback-{port}")));
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; nothing else runs between
            // fork and exec. The server dies with the thread that started it.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let mut child = cmd.spawn().expect("spawn openssl s_server");
            let out = child.stdout.take().expect("piped");
            self.0.push(child);
            if wait_accept(out) {
                return addr;
            }
        }
        panic!("openssl s_server did not start on 127.0.0.1");
    }
}
