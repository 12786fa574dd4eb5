//! SSL client links (`AT+CIPSTART=..,"SSL",..`), their configuration
//! (`AT+CIPSSLCCONF`, `AT+CIPSSLCSNI`, `AT+CIPSSLCCN`) and the
//! manufacturing NVS partition that holds the CA certificates
//! (`AT+SYSMFG`).
//!
//! The TLS runs here, in the emulator, on the link's host TCP socket:
//! embedded-tls 0.19 (TLS 1.3, AES-128-GCM, secp256r1; ECDSA P-256/P-384
//! and Ed25519 certificates). One thread per SSL link runs the handshake
//! (while `AT+CIPSTART` waits for it, as on the chip) and then splits the
//! connection into a reader and a writer that feed the link's buffers like
//! the TCP reader and writer do.

use std::collections::BTreeMap;
use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use embedded_tls::blocking::{
    Aes128GcmSha256, Certificate, CertificateEntryRef, CertificateRef, CertificateVerifyRef,
    CryptoProvider, NoClock, TlsConfig, TlsConnection, TlsContext, TlsError, TlsVerifier,
};
use embedded_tls::pki::CertVerifier;
use rand_core::OsRng;

use super::args::{quote, Arg};
use super::net::{self, CloseMode, Link, Running};
use super::{lock, uart, Job, Seg, Shared};

/// The namespaces of the manufacturing NVS partition (`AT+SYSMFG?`), as
/// the manual lists them for ESP32 targets.
pub(crate) const NAMESPACES: &[&str] = &[
    "factory_param",
    "client_cert",
    "client_key",
    "client_ca",
    "server_cert",
    "server_key",
    "server_ca",
    "mqtt_cert",
    "mqtt_key",
    "mqtt_ca",
    "https_cert",
    "https_key",
    "https_ca",
    "wpa2_cert",
    "wpa2_key",
    "wpa2_ca",
    "wss_cert",
    "wss_key",
    "wss_ca",
];

/// Longest value one `AT+SYSMFG` write takes (an emulator bound).
pub(crate) const MFG_MAX: usize = 8192;

/// Longest `AT+CIPSSLCSNI` / `AT+CIPSSLCCN` name (the manual: 64 bytes).
const NAME_MAX: usize = 64;

/// Record buffers of one SSL link (the largest TLS record plus overhead).
const RECORD_BUF: usize = 16_640;

/// The SSL client settings of one link.
#[derive(Debug, Clone, Default)]
pub(crate) struct LinkConf {
    pub auth_mode: u8,
    pub pki: u8,
    pub ca: u8,
    pub sni: Option<String>,
    pub cn: Option<String>,
}

/// SSL state of the chip: per-link settings, the manufacturing NVS
/// partition, and the chip's log of failed handshakes.
#[derive(Default)]
pub(crate) struct SslState {
    pub conf: [LinkConf; 5],
    /// (namespace, key) → (type, value).
    pub mfg: BTreeMap<(String, String), (u8, Vec<u8>)>,
    pub log: Vec<String>,
}

impl SslState {
    /// A reset keeps what is in flash (the NVS partition, `AT+CIPSSLCCONF`
    /// which the manual says is saved in NVS) and forgets the rest.
    pub fn on_reset(&mut self) {
        for c in &mut self.conf {
            c.sni = None;
            c.cn = None;
        }
    }
}

/// The outcome of a command handled here.
pub(crate) enum Answer {
    /// Information lines, then `OK`.
    Ok(Vec<String>),
    /// `ERROR` with this ERR CODE subcategory.
    Error(u32),
    /// Already answered.
    Done,
}

const SUB_PARA_NUM: u32 = 0x06;
const SUB_PARA_INVALID: u32 = 0x07;
const SUB_EXEC_FAIL: u32 = 0x0A;

/// The links a set command addresses: `<link ID>` first in
/// multi-connection mode (5 = all), link 0 in single mode.
fn targets<'a>(shared: &Shared, a: &'a [Arg]) -> Option<(Vec<usize>, &'a [Arg])> {
    if shared.mux.load(Ordering::SeqCst) {
        match a.first()?.int()? {
            5 => Some(((0..5).collect(), &a[1..])),
            id @ 0..=4 => Some((vec![id as usize], &a[1..])),
            _ => None,
        }
    } else {
        Some((vec![0], a))
    }
}

fn shown_links(shared: &Shared) -> std::ops::Range<usize> {
    if shared.mux.load(Ordering::SeqCst) {
        0..5
    } else {
        0..1
    }
}

/// `AT+CIPSSLCCONF?`
pub(crate) fn sslcconf_query(shared: &Shared) -> Answer {
    let st = lock(&shared.ssl);
    Answer::Ok(
        shown_links(shared)
            .map(|i| {
                let c = &st.conf[i];
                format!("+CIPSSLCCONF:{i},{},{},{}", c.auth_mode, c.pki, c.ca)
            })
            .collect(),
    )
}

/// `AT+CIPSSLCCONF=[<link ID>,]<auth_mode>[,<pki_number>][,<ca_number>]`
pub(crate) fn sslcconf_set(shared: &Shared, a: &[Arg]) -> Answer {
    let Some((links, rest)) = targets(shared, a) else {
        return Answer::Error(SUB_PARA_INVALID);
    };
    if rest.is_empty() || rest.len() > 3 {
        return Answer::Error(SUB_PARA_NUM);
    }
    let Some(mode) = rest[0].int().filter(|m| (0..=3).contains(m)) else {
        return Answer::Error(SUB_PARA_INVALID);
    };
    let index = |i: usize| match rest.get(i) {
        None | Some(Arg::Empty) => Some(0u8),
        Some(Arg::Int(v)) if (0..=255).contains(v) => Some(*v as u8),
        _ => None,
    };
    let (Some(pki), Some(ca)) = (index(1), index(2)) else {
        return Answer::Error(SUB_PARA_INVALID);
    };
    let mut st = lock(&shared.ssl);
    for i in links {
        let c = &mut st.conf[i];
        c.auth_mode = mode as u8;
        c.pki = pki;
        c.ca = ca;
    }
    Answer::Ok(Vec::new())
}

/// Which of the two name settings.
#[derive(Clone, Copy)]
pub(crate) enum NameSetting {
    /// `AT+CIPSSLCSNI`
    Sni,
    /// `AT+CIPSSLCCN`
    CommonName,
}

impl NameSetting {
    fn tag(self) -> &'static str {
        match self {
            NameSetting::Sni => "+CIPSSLCSNI",
            NameSetting::CommonName => "+CIPSSLCCN",
        }
    }

    fn slot(self, c: &mut LinkConf) -> &mut Option<String> {
        match self {
            NameSetting::Sni => &mut c.sni,
            NameSetting::CommonName => &mut c.cn,
        }
    }
}

/// `AT+CIPSSLCSNI?` / `AT+CIPSSLCCN?`: one line per link with a name set.
pub(crate) fn name_query(shared: &Shared, which: NameSetting) -> Answer {
    let mut st = lock(&shared.ssl);
    let mut lines = Vec::new();
    for i in shown_links(shared) {
        if let Some(n) = which.slot(&mut st.conf[i]).clone() {
            lines.push(format!("{}:{i},{}", which.tag(), quote(&n)));
        }
    }
    Answer::Ok(lines)
}

/// `AT+CIPSSLCSNI=[<link ID>,]<"sni">` / `AT+CIPSSLCCN=[<link ID>,]<"common name">`
pub(crate) fn name_set(shared: &Shared, a: &[Arg], which: NameSetting) -> Answer {
    let Some((links, rest)) = targets(shared, a) else {
        return Answer::Error(SUB_PARA_INVALID);
    };
    let [Arg::Str(name)] = rest else {
        return Answer::Error(SUB_PARA_NUM);
    };
    if name.is_empty() || name.len() > NAME_MAX {
        return Answer::Error(SUB_PARA_INVALID);
    }
    let mut st = lock(&shared.ssl);
    for i in links {
        *which.slot(&mut st.conf[i]) = Some(name.clone());
    }
    Answer::Ok(Vec::new())
}

/// `AT+SYSMFG?`
pub(crate) fn sysmfg_query() -> Answer {
    Answer::Ok(
        NAMESPACES
            .iter()
            .map(|n| format!("+SYSMFG:\"{n}\""))
            .collect(),
    )
}

/// `AT+SYSMFG=<operation>,<"namespace">[,<"key">,<type>][,<value>]`:
/// 0 erase, 1 read, 2 write (types 7 and 8 take the value after `>`).
pub(crate) fn sysmfg_set(
    shared: &Arc<Shared>,
    rx: &mpsc::Receiver<Job>,
    gen: u64,
    a: &[Arg],
) -> Answer {
    let (Some(op), Some(ns)) = (a.first().and_then(Arg::int), a.get(1).and_then(Arg::str)) else {
        return Answer::Error(SUB_PARA_NUM);
    };
    if !NAMESPACES.contains(&ns) {
        return Answer::Error(SUB_PARA_INVALID);
    }
    let key = a.get(2).and_then(Arg::str);
    match (op, key) {
        (0, None) if a.len() == 2 => {
            lock(&shared.ssl).mfg.retain(|(n, _), _| n != ns);
            Answer::Ok(Vec::new())
        }
        (0, Some(k)) if a.len() == 3 => {
            match lock(&shared.ssl)
                .mfg
                .remove(&(ns.to_string(), k.to_string()))
            {
                Some(_) => Answer::Ok(Vec::new()),
                None => Answer::Error(SUB_EXEC_FAIL),
            }
        }
        (1, None) if a.len() == 2 => {
            let st = lock(&shared.ssl);
            Answer::Ok(
                st.mfg
                    .iter()
                    .filter(|((n, _), _)| n == ns)
                    .map(|((n, k), (t, _))| format!("+SYSMFG:\"{n}\",\"{k}\",{t}"))
                    .collect(),
            )
        }
        (1, Some(k)) => sysmfg_read(shared, gen, ns, k, &a[3..]),
        (2, Some(k)) if a.len() == 5 => sysmfg_write(shared, rx, gen, ns, k, &a[3], &a[4]),
        (0..=2, _) => Answer::Error(SUB_PARA_NUM),
        _ => Answer::Error(SUB_PARA_INVALID),
    }
}

fn sysmfg_read(shared: &Arc<Shared>, gen: u64, ns: &str, key: &str, range: &[Arg]) -> Answer {
    let Some((t, v)) = lock(&shared.ssl)
        .mfg
        .get(&(ns.to_string(), key.to_string()))
        .cloned()
    else {
        return Answer::Error(SUB_EXEC_FAIL);
    };
    let (off, len) = match range {
        [] => (0, v.len()),
        [Arg::Int(o), Arg::Int(l)] if *o >= 0 && *l > 0 => (*o as usize, *l as usize),
        _ => return Answer::Error(SUB_PARA_INVALID),
    };
    if off > v.len() {
        return Answer::Error(SUB_PARA_INVALID);
    }
    let part = &v[off..(off + len).min(v.len())];
    let mut seg = format!("+SYSMFG:\"{ns}\",\"{key}\",{t},{},", part.len()).into_bytes();
    seg.extend_from_slice(part);
    seg.extend_from_slice(b"\r\n");
    shared.reply(
        gen,
        vec![
            Seg {
                bytes: seg,
                payload: 0,
            },
            Seg::text(b"\r\nOK\r\n".to_vec()),
        ],
    );
    Answer::Done
}

fn sysmfg_write(
    shared: &Arc<Shared>,
    rx: &mpsc::Receiver<Job>,
    gen: u64,
    ns: &str,
    key: &str,
    ty: &Arg,
    value: &Arg,
) -> Answer {
    let slot = (ns.to_string(), key.to_string());
    if key.is_empty() || key.len() > 15 {
        return Answer::Error(SUB_PARA_INVALID); // NVS keys: at most 15 characters
    }
    let (Some(ty), Some(v)) = (ty.int(), value.int()) else {
        return Answer::Error(SUB_PARA_INVALID);
    };
    let fits = match ty {
        1 => (0..=255).contains(&v),
        2 => (-128..=127).contains(&v),
        3 => (0..=65535).contains(&v),
        4 => (-32768..=32767).contains(&v),
        5 => (0..=u32::MAX as i64).contains(&v),
        6 => (i32::MIN as i64..=i32::MAX as i64).contains(&v),
        7 | 8 => (1..=MFG_MAX as i64).contains(&v),
        _ => false,
    };
    if !fits {
        return Answer::Error(SUB_PARA_INVALID);
    }
    if ty < 7 {
        lock(&shared.ssl)
            .mfg
            .insert(slot, (ty as u8, v.to_string().into_bytes()));
        return Answer::Ok(Vec::new());
    }
    // Strings and blobs come after the prompt, like AT+CIPSEND data.
    let len = v as usize;
    uart::expect_data(shared, len);
    shared.reply_partial(
        gen,
        vec![
            Seg::text(b"\r\nOK\r\n".to_vec()),
            Seg::text(b"\r\n>".to_vec()),
        ],
    );
    let end = Instant::now() + Duration::from_secs(30);
    let data = loop {
        if shared.shutdown.load(Ordering::SeqCst) || shared.gen() != gen {
            return Answer::Done;
        }
        if Instant::now() >= end {
            uart::command_mode(shared);
            shared.executing.store(false, Ordering::SeqCst);
            return Answer::Done;
        }
        match rx.recv_timeout(net::TICK) {
            Ok(Job::Data(d)) => break d,
            Ok(Job::Command(_)) | Err(_) => {}
        }
    };
    lock(&shared.ssl).mfg.insert(slot, (ty as u8, data));
    Answer::Ok(Vec::new())
}

/// What one SSL handshake needs.
pub(crate) struct Params {
    /// Server Name Indication to send, if any.
    sni: Option<String>,
    /// Verify the server: trusted CAs (DER) and the name its certificate
    /// must carry (`None`: any name).
    verify: Option<(Vec<Vec<u8>>, Option<String>)>,
}

/// Log a failed handshake the way the chip's log port would, for tests.
pub(crate) fn log(shared: &Shared, what: String) {
    let mut st = lock(&shared.ssl);
    if st.log.len() < 1000 {
        st.log.push(what);
    }
}

/// The handshake parameters for link `id` connecting to `host`, from its
/// `AT+CIPSSLCCONF` / `AT+CIPSSLCSNI` / `AT+CIPSSLCCN` settings and the CA
/// certificates in the `client_ca` namespace.
pub(crate) fn params(shared: &Shared, id: u8, host: &str) -> Result<Params, String> {
    let st = lock(&shared.ssl);
    let c = st.conf[id as usize].clone();
    let is_ip = host.parse::<Ipv4Addr>().is_ok();
    let sni = c.sni.clone().or_else(|| (!is_ip).then(|| host.to_string()));
    let verify = match c.auth_mode {
        0 => None,
        2 => {
            let key = ("client_ca".to_string(), format!("client_ca.{}", c.ca));
            let Some((_, blob)) = st.mfg.get(&key) else {
                return Err(format!("no CA certificate in client_ca.{}", c.ca));
            };
            let cas = ca_certificates(blob);
            if cas.is_empty() {
                return Err(format!("client_ca.{} holds no certificate", c.ca));
            }
            // The name the certificate must carry: the common name if one
            // is set, else the name sent as SNI, else the host as given.
            let name = c.cn.clone().or(sni.clone()).unwrap_or(host.to_string());
            Some((cas, Some(name)))
        }
        m => {
            return Err(format!(
                "auth_mode {m} needs client certificates (not emulated)"
            ))
        }
    };
    Ok(Params { sni, verify })
}

/// The certificates of a `client_ca` value: PEM (one or more, a trailing
/// NUL allowed) or a single DER certificate.
fn ca_certificates(blob: &[u8]) -> Vec<Vec<u8>> {
    let text = blob.strip_suffix(&[0]).unwrap_or(blob);
    match std::str::from_utf8(text) {
        Ok(t) if t.contains("-----BEGIN CERTIFICATE-----") => {
            netdever::tls::pem_certificates(t).unwrap_or_default()
        }
        _ if text.first() == Some(&0x30) => vec![text.to_vec()],
        _ => Vec::new(),
    }
}

/// The I/O under embedded-tls: the link's host socket, retrying the
/// socket's short timeouts so a record is never cut, until the emulator
/// stops, the link is closed (reads), or the handshake bound passes.
#[derive(Clone)]
struct Io {
    s: Arc<TcpStream>,
    shared: Arc<Shared>,
    link: Arc<Link>,
    handshake_until: Arc<Mutex<Option<Instant>>>,
    /// Bytes read off the socket so far (what the TLS records cost).
    wire_in: Arc<std::sync::atomic::AtomicUsize>,
}

impl Io {
    fn give_up(&self, reading: bool) -> Option<embedded_io::ErrorKind> {
        if self.shared.shutdown.load(Ordering::SeqCst) || self.shared.gen() != self.link.gen {
            return Some(embedded_io::ErrorKind::Interrupted);
        }
        if reading && lock(&self.link.st).closed {
            return Some(embedded_io::ErrorKind::Interrupted);
        }
        if lock(&self.handshake_until).is_some_and(|t| Instant::now() >= t) {
            return Some(embedded_io::ErrorKind::TimedOut);
        }
        None
    }
}

fn kind(e: &io::Error) -> embedded_io::ErrorKind {
    match e.kind() {
        io::ErrorKind::ConnectionReset => embedded_io::ErrorKind::ConnectionReset,
        io::ErrorKind::BrokenPipe => embedded_io::ErrorKind::BrokenPipe,
        _ => embedded_io::ErrorKind::Other,
    }
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

impl embedded_io::ErrorType for Io {
    type Error = embedded_io::ErrorKind;
}

impl embedded_io::Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        loop {
            match (&*self.s).read(buf) {
                Ok(n) => {
                    self.wire_in.fetch_add(n, Ordering::SeqCst);
                    return Ok(n);
                }
                Err(e) if transient(&e) => {
                    if let Some(k) = self.give_up(true) {
                        return Err(k);
                    }
                }
                Err(e) => return Err(kind(&e)),
            }
        }
    }
}

impl embedded_io::Write for Io {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            match (&*self.s).write(buf) {
                Ok(n) => return Ok(n),
                Err(e) if transient(&e) => {
                    if let Some(k) = self.give_up(false) {
                        return Err(k);
                    }
                    if Instant::now() >= end {
                        return Err(embedded_io::ErrorKind::TimedOut);
                    }
                }
                Err(e) => return Err(kind(&e)),
            }
        }
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

type Suite = Aes128GcmSha256;
type Inner<'a> = CertVerifier<'a, Suite, NoClock, 8192>;

/// Verifies the server's chain against whichever trusted CA its top
/// certificate names as issuer, and the leaf against the expected name.
struct Verifier<'a> {
    cas: &'a [Vec<u8>],
    name: Option<&'a str>,
    inner: Option<Inner<'a>>,
    why: Option<String>,
}

impl<'a> Verifier<'a> {
    fn fail(&mut self, why: &str) -> TlsError {
        self.why = Some(why.to_string());
        TlsError::InvalidCertificate
    }
}

impl TlsVerifier<Suite> for Verifier<'_> {
    fn set_hostname_verification(&mut self, _hostname: &str) -> Result<(), TlsError> {
        Ok(()) // the name was fixed from the link's settings
    }

    fn verify_certificate(
        &mut self,
        transcript: &<Suite as embedded_tls::blocking::TlsCipherSuite>::Hash,
        cert: CertificateRef<'_>,
    ) -> Result<(), TlsError> {
        let Some(CertificateEntryRef::X509(top)) = cert.entries.last() else {
            return Err(self.fail("no X.509 certificate from the server"));
        };
        let Some(issuer) = der::names(top).map(|(issuer, _)| issuer) else {
            return Err(self.fail("unparsable server certificate"));
        };
        // Only CAs may sign certificates (mbedTLS checks basicConstraints).
        for e in cert.entries.iter().skip(1) {
            if !matches!(e, CertificateEntryRef::X509(c) if der::is_ca(c)) {
                return Err(self.fail("a certificate above the leaf is not a CA"));
            }
        }
        let cas = self.cas;
        let Some(ca) = cas
            .iter()
            .find(|ca| der::names(ca).is_some_and(|(_, subject)| subject == issuer))
        else {
            return Err(self.fail("the chain leads to no trusted CA"));
        };
        let mut inner = Inner::new(Certificate::X509(ca));
        if let Some(n) = self.name {
            if inner.set_hostname_verification(n).is_err() {
                return Err(self.fail("name too long"));
            }
        }
        match inner.verify_certificate(transcript, cert) {
            Ok(()) => {
                self.inner = Some(inner);
                Ok(())
            }
            Err(e) => Err(self.fail(&format!(
                "certificate verification failed ({e:?}; expected name {:?})",
                self.name
            ))),
        }
    }

    fn verify_signature(&mut self, verify: CertificateVerifyRef<'_>) -> Result<(), TlsError> {
        let r = match self.inner.as_mut() {
            Some(i) => i.verify_signature(verify),
            None => Err(TlsError::InvalidCertificate),
        };
        r.map_err(|_| self.fail("bad CertificateVerify signature"))
    }
}

struct Provider<'v, 'a> {
    verifier: Option<&'v mut Verifier<'a>>,
}

impl CryptoProvider for Provider<'_, '_> {
    type CipherSuite = Suite;
    type Signature = &'static [u8];

    fn rng(&mut self) -> impl rand_core::CryptoRngCore {
        OsRng
    }

    fn verifier(&mut self) -> Result<&mut impl TlsVerifier<Suite>, TlsError> {
        match &mut self.verifier {
            Some(v) => Ok(&mut **v),
            None => Err(TlsError::Unimplemented),
        }
    }
}

/// Lets the link's thread go on once the firmware has announced the link.
pub(crate) struct Go(mpsc::Sender<bool>);

impl Go {
    /// The link is on the chip's table: start moving data.
    pub fn start(self) {
        let _ = self.0.send(true);
    }
}

/// Run the handshake of SSL link `link` on its thread, waiting up to
/// `timeout` for it. `Ok` hands back what starts the data flow.
pub(crate) fn start(
    shared: &Arc<Shared>,
    link: &Arc<Link>,
    params: Params,
    timeout: Duration,
) -> Result<Go, String> {
    let Some(s) = link.tcp.as_ref().and_then(|s| s.try_clone().ok()) else {
        return Err("socket lost".into());
    };
    let (result_tx, result_rx) = mpsc::channel::<Result<(), String>>();
    let (go_tx, go_rx) = mpsc::channel::<bool>();
    let io = Io {
        s: Arc::new(s),
        shared: shared.clone(),
        link: link.clone(),
        handshake_until: Arc::new(Mutex::new(Some(Instant::now() + timeout))),
        wire_in: Arc::default(),
    };
    let (sh, l) = (shared.clone(), link.clone());
    link.threads.fetch_add(1, Ordering::SeqCst);
    let spawned = std::thread::Builder::new()
        .name(format!("espat-ssl{}", link.id))
        .spawn(move || {
            let _running = Running(&l);
            run_link(&sh, &l, io, params, result_tx, go_rx);
        });
    if spawned.is_err() {
        link.threads.fetch_sub(1, Ordering::SeqCst);
        return Err("no thread".into());
    }
    match result_rx.recv_timeout(timeout + Duration::from_secs(1)) {
        Ok(Ok(())) => Ok(Go(go_tx)),
        Ok(Err(why)) => Err(why),
        Err(_) => Err("handshake timed out".into()),
    }
}

fn run_link(
    shared: &Arc<Shared>,
    link: &Arc<Link>,
    io: Io,
    params: Params,
    result: mpsc::Sender<Result<(), String>>,
    go: mpsc::Receiver<bool>,
) {
    let mut rbuf = vec![0u8; RECORD_BUF];
    let mut wbuf = vec![0u8; RECORD_BUF];
    let mut config = TlsConfig::new();
    if let Some(sni) = params.sni.as_deref() {
        config = config.with_server_name(sni);
    }
    let (cas, name) = match &params.verify {
        Some((cas, name)) => (Some(cas.as_slice()), name.as_deref()),
        None => (None, None),
    };
    let mut verifier = cas.map(|cas| Verifier {
        cas,
        name,
        inner: None,
        why: None,
    });
    let mut tls: TlsConnection<'_, Io, Suite> =
        TlsConnection::new(io.clone(), &mut rbuf, &mut wbuf);
    let opened = tls.open(TlsContext::new(
        &config,
        Provider {
            verifier: verifier.as_mut(),
        },
    ));
    *lock(&io.handshake_until) = None;
    if let Err(e) = opened {
        let why = verifier
            .as_ref()
            .and_then(|v| v.why.clone())
            .unwrap_or_else(|| format!("handshake failed: {e:?}"));
        net::abort(&io.s);
        let _ = result.send(Err(why));
        return;
    }
    if result.send(Ok(())).is_err() {
        net::abort(&io.s);
        return;
    }
    // Wait until the firmware has put the link on its table.
    let go_on = loop {
        match go.recv_timeout(net::TICK) {
            Ok(v) => break v,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if shared.shutdown.load(Ordering::SeqCst) || shared.gen() != link.gen {
                    break false;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break false,
        }
    };
    if !go_on {
        net::abort(&io.s);
        return;
    }
    let end = std::thread::scope(|sc| {
        let (mut r, mut w) = tls.split();
        let wire_in = &io.wire_in;
        sc.spawn(move || reader(shared, link, &mut r, wire_in));
        writer(shared, link, &mut w)
    });
    match end {
        CloseMode::Graceful => {
            let _ = tls.close(); // close_notify
            let _ = io.s.shutdown(std::net::Shutdown::Both);
        }
        CloseMode::Abort => net::abort(&io.s),
    }
}

type Reader<'a> = embedded_tls::blocking::TlsReader<'a, Io, Suite>;
type Writer<'a> = embedded_tls::blocking::TlsWriter<'a, Io, Suite>;

/// Decrypted data to the link's buffer (or the host), like the TCP reader,
/// with what each piece cost on the wire (`wire_in` counts socket bytes).
fn reader(
    shared: &Arc<Shared>,
    link: &Arc<Link>,
    r: &mut Reader<'_>,
    wire_in: &std::sync::atomic::AtomicUsize,
) {
    use embedded_io::Read as _;
    let window = lock(&shared.world).recv_window;
    let mut buf = vec![0u8; 4096];
    loop {
        let Some(room) = net::reader_room(shared, link, window, buf.len()) else {
            return;
        };
        if room == 0 {
            continue;
        }
        let want = room.min(buf.len());
        let before = wire_in.load(Ordering::SeqCst);
        match r.read(&mut buf[..want]) {
            Ok(n) if n > 0 => {
                let wire = wire_in.load(Ordering::SeqCst) - before;
                net::deliver_wire(shared, link, net::link_remote(link), &buf[..n], Some(wire))
            }
            r => {
                if net::stopping(shared, link) || lock(&link.st).closed {
                    return;
                }
                // close_notify, TCP end or a broken stream: the peer is gone.
                let reset = !matches!(r, Ok(_) | Err(TlsError::ConnectionClosed));
                let empty = {
                    let mut st = lock(&link.st);
                    st.peer_eof = true;
                    if reset {
                        st.tx.clear();
                    }
                    Link::buffered(&st) == 0
                };
                if empty || !shared.passive.load(Ordering::SeqCst) {
                    net::closed_by_peer(shared, link);
                }
                return;
            }
        }
    }
}

/// Queued data out as TLS records, like the TCP writer; returns how the
/// link ends.
fn writer(shared: &Arc<Shared>, link: &Arc<Link>, w: &mut Writer<'_>) -> CloseMode {
    use embedded_io::Write as _;
    let mut chunk = Vec::with_capacity(4096);
    loop {
        if shared.shutdown.load(Ordering::SeqCst) {
            return CloseMode::Abort;
        }
        chunk.clear();
        let close = {
            let mut st = lock(&link.st);
            while st.tx.is_empty() && st.close.is_none() && !st.closed {
                if net::stopping(shared, link) {
                    break;
                }
                st = link
                    .cv
                    .wait_timeout(st, net::TICK)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if shared.gen() != link.gen || st.close == Some(CloseMode::Abort) {
                Some(CloseMode::Abort)
            } else if !st.tx.is_empty() {
                let n = st.tx.len().min(4096);
                chunk.extend(st.tx.iter().take(n).copied());
                None
            } else if st.close.is_some() || st.closed {
                Some(CloseMode::Graceful)
            } else {
                None
            }
        };
        if let Some(m) = close {
            return m;
        }
        if chunk.is_empty() {
            continue;
        }
        let sent = (|| {
            let mut off = 0;
            while off < chunk.len() {
                off += w.write(&chunk[off..])?;
            }
            w.flush()
        })();
        let mut st = lock(&link.st);
        match sent {
            Ok(()) => {
                let n = chunk.len().min(st.tx.len());
                st.tx.drain(..n);
                link.cv.notify_all();
            }
            Err(_) => {
                // The connection broke: what is queued can never go out.
                st.tx.clear();
                st.peer_eof = true;
                link.cv.notify_all();
                drop(st);
                return CloseMode::Abort;
            }
        }
    }
}

/// Just enough DER to pick the trusted CA a chain names.
mod der {
    /// One TLV: (tag, contents, the whole TLV, rest).
    type Tlv<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

    fn tlv(b: &[u8]) -> Option<Tlv<'_>> {
        let (&tag, rest) = b.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            first as usize
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 3 || rest.len() < n {
                return None;
            }
            let mut l = 0usize;
            for &x in &rest[..n] {
                l = (l << 8) | x as usize;
            }
            rest = &rest[n..];
            l
        };
        if rest.len() < len {
            return None;
        }
        let head = b.len() - rest.len();
        Some((tag, &rest[..len], &b[..head + len], &rest[len..]))
    }

    /// Whether a certificate's basicConstraints say it is a CA.
    pub fn is_ca(cert: &[u8]) -> bool {
        fn find(cert: &[u8]) -> Option<bool> {
            let (_, subject_and_rest) = issuer_and_rest(cert)?;
            let (_, _, _, mut rest) = tlv(subject_and_rest)?; // subject
            let (_, _, _, r) = tlv(rest)?; // subjectPublicKeyInfo
            rest = r;
            while !rest.is_empty() {
                let (tag, body, _, r) = tlv(rest)?;
                rest = r;
                if tag != 0xa3 {
                    continue; // issuerUniqueID, subjectUniqueID
                }
                let (0x30, mut exts, _, _) = tlv(body)? else {
                    return None;
                };
                while !exts.is_empty() {
                    let (_, ext, _, r) = tlv(exts)?;
                    exts = r;
                    let (0x06, oid, _, mut e) = tlv(ext)? else {
                        return None;
                    };
                    if oid != [0x55, 0x1d, 0x13] {
                        continue;
                    }
                    let (tag, v, _, r) = tlv(e)?;
                    if tag == 0x01 {
                        e = r; // critical
                        let (0x04, value, _, _) = tlv(e)? else {
                            return None;
                        };
                        return basic(value);
                    }
                    return if tag == 0x04 { basic(v) } else { None };
                }
            }
            Some(false)
        }
        fn basic(value: &[u8]) -> Option<bool> {
            let (0x30, seq, _, _) = tlv(value)? else {
                return None;
            };
            Some(matches!(tlv(seq), Some((0x01, [b], _, _)) if *b != 0))
        }
        find(cert).unwrap_or(false)
    }

    /// The issuer of a certificate, and what follows its validity (the
    /// subject onwards) in the tbsCertificate.
    fn issuer_and_rest(cert: &[u8]) -> Option<(&[u8], &[u8])> {
        let (0x30, body, _, _) = tlv(cert)? else {
            return None;
        };
        let (0x30, tbs, _, _) = tlv(body)? else {
            return None;
        };
        let mut rest = tbs;
        let (tag, _, _, r) = tlv(rest)?;
        if tag == 0xa0 {
            rest = r; // version
        }
        let (_, _, _, r) = tlv(rest)?; // serial
        let (_, _, _, r) = tlv(r)?; // signature algorithm
        let (_, _, issuer, r) = tlv(r)?;
        let (_, _, _, r) = tlv(r)?; // validity
        Some((issuer, r))
    }

    /// (issuer, subject) of a certificate, as encoded.
    pub fn names(cert: &[u8]) -> Option<(&[u8], &[u8])> {
        let (issuer, r) = issuer_and_rest(cert)?;
        let (_, _, subject, _) = tlv(r)?;
        Some((issuer, subject))
    }
}
