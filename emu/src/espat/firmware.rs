//! The command executor: one command at a time, like the AT firmware.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::args::{self, Arg, Command, Kind, ParseError};
use super::net::{self, CloseMode, Link, Proto, Server};
use super::ssl::{self, NameSetting};
use super::{lock, uart, Job, Seg, Shared, World};

/// The firmware's settings and tables.
pub(crate) struct Chip {
    pub echo: bool,
    pub cwmode: u8,
    pub sysmsg: u8,
    pub syslog: bool,
    pub sysstore: u8,
    pub wifi: bool,
    pub got_ip: bool,
    pub ssid: String,
    pub dhcp: bool,
    pub sta_ip: Ipv4Addr,
    pub sta_gw: Ipv4Addr,
    pub sta_mask: Ipv4Addr,
    pub links: [Option<Arc<Link>>; 5],
    pub server: Option<Server>,
    pub max_conn: usize,
}

impl Chip {
    pub fn new(w: &World) -> Chip {
        Chip {
            echo: true,
            cwmode: 1,
            sysmsg: 0,
            syslog: false,
            sysstore: 1,
            wifi: false,
            got_ip: false,
            ssid: String::new(),
            dhcp: true,
            sta_ip: w.station_ip,
            sta_gw: w.gateway,
            sta_mask: w.netmask,
            links: Default::default(),
            server: None,
            max_conn: 5,
        }
    }
}

/// ERR CODE subcategories (`ESP_AT_SUB_*`).
const SUB_NO_AT: u32 = 0x03;
const SUB_PARA_NUM: u32 = 0x06;
const SUB_PARA_INVALID: u32 = 0x07;
const SUB_PARA_PARSE: u32 = 0x08;
const SUB_UNSUPPORTED: u32 = 0x09;
const SUB_EXEC_FAIL: u32 = 0x0A;

/// A command's outcome.
enum Reply {
    /// Information lines (each without CR LF), then `OK`.
    Ok(Vec<Seg>),
    /// Information lines, then `ERROR` (with `ERR CODE` when `AT+SYSLOG=1`).
    Error(Vec<Seg>, u32),
    /// Already answered (or nothing to say).
    Done,
}

fn line(s: impl AsRef<str>) -> Seg {
    let mut b = s.as_ref().as_bytes().to_vec();
    b.extend_from_slice(b"\r\n");
    Seg::text(b)
}

/// A reply from the SSL commands (`ssl.rs`).
fn answer(a: ssl::Answer) -> Reply {
    match a {
        ssl::Answer::Ok(lines) => Reply::Ok(lines.into_iter().map(line).collect()),
        ssl::Answer::Error(sub) => err(sub),
        ssl::Answer::Done => Reply::Done,
    }
}

fn ok() -> Reply {
    Reply::Ok(Vec::new())
}

fn err(sub: u32) -> Reply {
    Reply::Error(Vec::new(), sub)
}

/// The executor thread.
pub(crate) fn executor_thread(shared: Arc<Shared>, rx: mpsc::Receiver<Job>) {
    loop {
        if shared.shutdown.load(Ordering::SeqCst) {
            return;
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Job::Command(line)) => {
                let gen = shared.gen();
                // A final reply (Shared::reply) lets the next command in.
                let reply = execute(&shared, &rx, gen, &line);
                send_reply(&shared, gen, reply);
            }
            Ok(Job::Data(_)) => {} // data nobody waits for (after a reset)
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn send_reply(shared: &Shared, gen: u64, reply: Reply) {
    match reply {
        Reply::Ok(mut segs) => {
            segs.push(Seg::text(b"\r\nOK\r\n".to_vec()));
            shared.reply(gen, segs);
        }
        Reply::Error(mut segs, sub) => {
            if lock(&shared.chip).syslog {
                segs.push(line(format!("ERR CODE:0x01{sub:02x}0000")));
            }
            segs.push(Seg::text(b"\r\nERROR\r\n".to_vec()));
            shared.reply(gen, segs);
        }
        Reply::Done => {}
    }
}

/// Sleep up to `d`, stopping early on shutdown or reset. Returns whether the
/// whole time passed.
fn nap(shared: &Shared, gen: u64, d: Duration) -> bool {
    let end = Instant::now() + d;
    loop {
        if shared.shutdown.load(Ordering::SeqCst) || shared.gen() != gen {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(net::TICK));
    }
}

fn execute(shared: &Arc<Shared>, rx: &mpsc::Receiver<Job>, gen: u64, raw: &[u8]) -> Reply {
    let cmd = match args::parse(raw) {
        Ok(c) => c,
        Err(ParseError::NoAt) => return err(SUB_NO_AT),
        Err(ParseError::Param) => return err(SUB_PARA_PARSE),
    };
    let Command { name, kind } = cmd;
    match (name.as_str(), kind) {
        ("", Kind::Execute) => ok(),
        ("E0", Kind::Execute) => {
            lock(&shared.chip).echo = false;
            ok()
        }
        ("E1", Kind::Execute) => {
            lock(&shared.chip).echo = true;
            ok()
        }
        ("+RST", Kind::Execute) | ("+RESTORE", Kind::Execute) => {
            send_reply(shared, gen, ok());
            reset(shared);
            Reply::Done
        }
        ("+GMR", Kind::Execute) => Reply::Ok(vec![
            line("AT version:3.4.0.0(netdever-emu)"),
            line("SDK version:emulated"),
            line("compile time(netdever):host"),
            line("Bin version:3.4.0(netdever-emu)"),
        ]),
        ("+SYSLOG", Kind::Query) => Reply::Ok(vec![line(format!(
            "+SYSLOG:{}",
            lock(&shared.chip).syslog as u8
        ))]),
        ("+SYSLOG", Kind::Set(a)) => match one_int(&a, 0, 1) {
            Some(v) => {
                lock(&shared.chip).syslog = v == 1;
                ok()
            }
            None => err(SUB_PARA_INVALID),
        },
        ("+SYSMSG", Kind::Query) => {
            Reply::Ok(vec![line(format!("+SYSMSG:{}", lock(&shared.chip).sysmsg))])
        }
        ("+SYSMSG", Kind::Set(a)) => match one_int(&a, 0, 7) {
            Some(v) => {
                lock(&shared.chip).sysmsg = v as u8;
                ok()
            }
            None => err(SUB_PARA_INVALID),
        },
        ("+SYSSTORE", Kind::Query) => Reply::Ok(vec![line(format!(
            "+SYSSTORE:{}",
            lock(&shared.chip).sysstore
        ))]),
        ("+SYSSTORE", Kind::Set(a)) => match one_int(&a, 0, 1) {
            Some(v) => {
                lock(&shared.chip).sysstore = v as u8;
                ok()
            }
            None => err(SUB_PARA_INVALID),
        },
        ("+CWMODE", Kind::Query) => {
            Reply::Ok(vec![line(format!("+CWMODE:{}", lock(&shared.chip).cwmode))])
        }
        ("+CWMODE", Kind::Set(a)) => {
            let Some(m) = a.first().and_then(Arg::int).filter(|m| (0..=3).contains(m)) else {
                return err(SUB_PARA_INVALID);
            };
            let lose = {
                let mut c = lock(&shared.chip);
                c.cwmode = m as u8;
                m & 1 == 0 && c.wifi
            };
            if lose {
                wifi_lost(shared);
            }
            ok()
        }
        ("+CWJAP", Kind::Set(a)) => cwjap(shared, gen, &a),
        ("+CWJAP", Kind::Query) => {
            let c = lock(&shared.chip);
            if c.wifi {
                Reply::Ok(vec![line(format!(
                    "+CWJAP:{},\"02:00:00:00:00:01\",6,-40,0,1,3,0,1",
                    args::quote(&c.ssid)
                ))])
            } else {
                Reply::Ok(vec![line("No AP")])
            }
        }
        ("+CWQAP", Kind::Execute) => {
            wifi_lost(shared);
            ok()
        }
        ("+CWDHCP", Kind::Query) => Reply::Ok(vec![line(format!(
            "+CWDHCP:{}",
            if lock(&shared.chip).dhcp { 3 } else { 2 }
        ))]),
        ("+CWDHCP", Kind::Set(a)) => {
            let (Some(op), Some(mode)) =
                (a.first().and_then(Arg::int), a.get(1).and_then(Arg::int))
            else {
                return err(SUB_PARA_NUM);
            };
            if mode & 1 != 0 && op == 1 {
                let w = lock(&shared.world);
                let mut c = lock(&shared.chip);
                c.dhcp = true;
                c.sta_ip = w.station_ip;
                c.sta_gw = w.gateway;
                c.sta_mask = w.netmask;
            } else if mode & 1 != 0 {
                lock(&shared.chip).dhcp = false;
            }
            ok()
        }
        ("+CIPSTA", Kind::Query) => {
            let c = lock(&shared.chip);
            let (ip, gw, mask) = if c.got_ip {
                (c.sta_ip, c.sta_gw, c.sta_mask)
            } else {
                (
                    Ipv4Addr::UNSPECIFIED,
                    Ipv4Addr::UNSPECIFIED,
                    Ipv4Addr::UNSPECIFIED,
                )
            };
            Reply::Ok(vec![
                line(format!("+CIPSTA:ip:\"{ip}\"")),
                line(format!("+CIPSTA:gateway:\"{gw}\"")),
                line(format!("+CIPSTA:netmask:\"{mask}\"")),
            ])
        }
        ("+CIPSTA", Kind::Set(a)) => {
            let ip = a
                .first()
                .and_then(Arg::str)
                .and_then(|s| s.parse::<Ipv4Addr>().ok());
            let gw = a.get(1).and_then(Arg::str).map(|s| s.parse::<Ipv4Addr>());
            let mask = a.get(2).and_then(Arg::str).map(|s| s.parse::<Ipv4Addr>());
            let Some(ip) = ip else {
                return err(SUB_PARA_INVALID);
            };
            let mut c = lock(&shared.chip);
            c.dhcp = false;
            c.sta_ip = ip;
            match (gw, mask) {
                (Some(Ok(g)), Some(Ok(m))) => {
                    c.sta_gw = g;
                    c.sta_mask = m;
                }
                (None, None) => {}
                _ => return err(SUB_PARA_INVALID),
            }
            ok()
        }
        ("+CIPSTAMAC", Kind::Query) => {
            let m = lock(&shared.world).mac;
            Reply::Ok(vec![line(format!("+CIPSTAMAC:\"{}\"", mac(m)))])
        }
        ("+CIFSR", Kind::Execute) => {
            let m = lock(&shared.world).mac;
            let c = lock(&shared.chip);
            let ip = if c.got_ip {
                c.sta_ip
            } else {
                Ipv4Addr::UNSPECIFIED
            };
            Reply::Ok(vec![
                line(format!("+CIFSR:STAIP,\"{ip}\"")),
                line(format!("+CIFSR:STAMAC,\"{}\"", mac(m))),
            ])
        }
        ("+CIPMUX", Kind::Query) => Reply::Ok(vec![line(format!(
            "+CIPMUX:{}",
            shared.mux.load(Ordering::SeqCst) as u8
        ))]),
        ("+CIPMUX", Kind::Set(a)) => {
            let Some(v) = one_int(&a, 0, 1) else {
                return err(SUB_PARA_INVALID);
            };
            let c = lock(&shared.chip);
            let busy = c.links.iter().any(|l| l.is_some()) || c.server.is_some();
            if busy && (v == 1) != shared.mux.load(Ordering::SeqCst) {
                return err(SUB_EXEC_FAIL);
            }
            shared.mux.store(v == 1, Ordering::SeqCst);
            ok()
        }
        ("+CIPRECVMODE", Kind::Query) => Reply::Ok(vec![line(format!(
            "+CIPRECVMODE:{}",
            shared.passive.load(Ordering::SeqCst) as u8
        ))]),
        ("+CIPRECVMODE", Kind::Set(a)) => match one_int(&a, 0, 1) {
            Some(v) => {
                shared.passive.store(v == 1, Ordering::SeqCst);
                ok()
            }
            None => err(SUB_PARA_INVALID),
        },
        ("+CIPDINFO", Kind::Query) => Reply::Ok(vec![line(format!(
            "+CIPDINFO:{}",
            if shared.dinfo.load(Ordering::SeqCst) {
                "TRUE"
            } else {
                "FALSE"
            }
        ))]),
        ("+CIPDINFO", Kind::Set(a)) => match one_int(&a, 0, 1) {
            Some(v) => {
                shared.dinfo.store(v == 1, Ordering::SeqCst);
                ok()
            }
            None => err(SUB_PARA_INVALID),
        },
        ("+CIPSERVERMAXCONN", Kind::Query) => Reply::Ok(vec![line(format!(
            "+CIPSERVERMAXCONN:{}",
            lock(&shared.chip).max_conn
        ))]),
        ("+CIPSERVERMAXCONN", Kind::Set(a)) => {
            let Some(v) = one_int(&a, 1, 5) else {
                return err(SUB_PARA_INVALID);
            };
            let mut c = lock(&shared.chip);
            if c.server.is_some() {
                return err(SUB_EXEC_FAIL);
            }
            c.max_conn = v as usize;
            ok()
        }
        ("+CIPSERVER", Kind::Query) => {
            let c = lock(&shared.chip);
            match &c.server {
                Some(s) => Reply::Ok(vec![line(format!("+CIPSERVER:1,{},\"TCP\"", s.port))]),
                None => Reply::Ok(vec![line("+CIPSERVER:0")]),
            }
        }
        ("+CIPSERVER", Kind::Set(a)) => cipserver(shared, &a),
        ("+CIPSTART", Kind::Set(a)) => cipstart(shared, gen, &a),
        ("+CIPSSLCCONF", Kind::Query) => answer(ssl::sslcconf_query(shared)),
        ("+CIPSSLCCONF", Kind::Set(a)) => answer(ssl::sslcconf_set(shared, &a)),
        ("+CIPSSLCSNI", Kind::Query) => answer(ssl::name_query(shared, NameSetting::Sni)),
        ("+CIPSSLCSNI", Kind::Set(a)) => answer(ssl::name_set(shared, &a, NameSetting::Sni)),
        ("+CIPSSLCCN", Kind::Query) => answer(ssl::name_query(shared, NameSetting::CommonName)),
        ("+CIPSSLCCN", Kind::Set(a)) => answer(ssl::name_set(shared, &a, NameSetting::CommonName)),
        ("+SYSMFG", Kind::Query) => answer(ssl::sysmfg_query()),
        ("+SYSMFG", Kind::Set(a)) => answer(ssl::sysmfg_set(shared, rx, gen, &a)),
        ("+CIPSEND", Kind::Set(a)) => cipsend(shared, rx, gen, &a),
        ("+CIPCLOSE", Kind::Set(a)) => {
            let Some(id) = a.first().and_then(Arg::int) else {
                return err(SUB_PARA_NUM);
            };
            if !shared.mux.load(Ordering::SeqCst) {
                return err(SUB_PARA_NUM);
            }
            cipclose(shared, id)
        }
        ("+CIPCLOSE", Kind::Execute) => {
            if shared.mux.load(Ordering::SeqCst) {
                return err(SUB_PARA_NUM);
            }
            cipclose(shared, 0)
        }
        ("+CIPRECVDATA", Kind::Set(a)) => ciprecvdata(shared, gen, &a),
        ("+CIPRECVLEN", Kind::Query) => {
            let c = lock(&shared.chip);
            let lens: Vec<String> = c
                .links
                .iter()
                .map(|l| match l {
                    Some(l) => l.recv_len(&lock(&l.st)).to_string(),
                    None => String::new(),
                })
                .collect();
            Reply::Ok(vec![line(format!("+CIPRECVLEN:{}", lens.join(",")))])
        }
        ("+CIPDOMAIN", Kind::Set(a)) => {
            let Some(name) = a.first().and_then(Arg::str) else {
                return err(SUB_PARA_INVALID);
            };
            if !lock(&shared.chip).got_ip {
                return err(SUB_EXEC_FAIL);
            }
            let table = lock(&shared.world).dns.clone();
            match net::resolve(&table, name) {
                Some(ip) => Reply::Ok(vec![line(format!("+CIPDOMAIN:\"{ip}\""))]),
                None => err(SUB_EXEC_FAIL),
            }
        }
        ("+CIPSTATE", Kind::Query) => {
            let c = lock(&shared.chip);
            let mut segs = Vec::new();
            for l in c.links.iter().flatten() {
                let r = lock(&l.st).remote;
                segs.push(line(format!(
                    "+CIPSTATE:{},\"{}\",\"{}\",{},{},{}",
                    l.id,
                    l.proto.name(),
                    r.ip(),
                    r.port(),
                    l.local.port(),
                    l.server as u8
                )));
            }
            Reply::Ok(segs)
        }
        ("+CIPSTATUS", Kind::Execute) => {
            let c = lock(&shared.chip);
            let stat = if !c.wifi {
                5
            } else if c.links.iter().any(|l| l.is_some()) {
                3
            } else {
                2
            };
            let mut segs = vec![line(format!("STATUS:{stat}"))];
            for l in c.links.iter().flatten() {
                let r = lock(&l.st).remote;
                segs.push(line(format!(
                    "+CIPSTATUS:{},\"{}\",\"{}\",{},{},{}",
                    l.id,
                    l.proto.name(),
                    r.ip(),
                    r.port(),
                    l.local.port(),
                    l.server as u8
                )));
            }
            Reply::Ok(segs)
        }
        ("+CIPTCPOPT", Kind::Set(a)) => {
            let Some(id) = a.first().and_then(Arg::int) else {
                return err(SUB_PARA_NUM);
            };
            let linger = a.get(1).and_then(Arg::int);
            let nodelay = a.get(2).and_then(Arg::int);
            let c = lock(&shared.chip);
            let targets: Vec<Arc<Link>> = if id == 5 {
                c.links.iter().flatten().cloned().collect()
            } else {
                match c.links.get(id as usize).and_then(|l| l.clone()) {
                    Some(l) => vec![l],
                    None => return err(SUB_PARA_INVALID),
                }
            };
            drop(c);
            for l in targets {
                let mut st = lock(&l.st);
                if let Some(v) = linger {
                    st.linger = v;
                }
                if let Some(v) = nodelay {
                    st.nodelay = v == 1;
                    if let Some(s) = &l.tcp {
                        let _ = s.set_nodelay(v == 1);
                    }
                }
            }
            ok()
        }
        _ => err(SUB_UNSUPPORTED),
    }
}

fn one_int(a: &[Arg], lo: i64, hi: i64) -> Option<i64> {
    match a {
        [Arg::Int(v)] if (lo..=hi).contains(v) => Some(*v),
        _ => None,
    }
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn cwjap(shared: &Arc<Shared>, gen: u64, a: &[Arg]) -> Reply {
    if lock(&shared.chip).cwmode & 1 == 0 {
        return err(SUB_EXEC_FAIL);
    }
    let (Some(ssid), Some(pwd)) = (a.first().and_then(Arg::str), a.get(1).and_then(Arg::str))
    else {
        return err(SUB_PARA_INVALID);
    };
    if lock(&shared.chip).wifi {
        wifi_lost(shared);
    }
    let (delay, want_ssid, want_pwd, present) = {
        let w = lock(&shared.world);
        (
            w.join_delay,
            w.ssid.clone(),
            w.passphrase.clone(),
            w.ap_present,
        )
    };
    if !nap(shared, gen, delay) {
        return Reply::Done;
    }
    let code = if !present || ssid != want_ssid {
        Some(3)
    } else if pwd != want_pwd {
        Some(2)
    } else {
        None
    };
    if let Some(code) = code {
        if lock(&shared.world).legacy_fail {
            shared.reply(
                gen,
                vec![
                    line(format!("+CWJAP:{code}")),
                    Seg::text(b"\r\nFAIL\r\n".to_vec()),
                ],
            );
            return Reply::Done;
        }
        return Reply::Error(vec![line(format!("+CWJAP:{code}"))], SUB_EXEC_FAIL);
    }
    {
        let mut c = lock(&shared.chip);
        c.wifi = true;
        c.ssid = ssid.to_string();
    }
    shared.emit(gen, b"WIFI CONNECTED\r\n", 0);
    lock(&shared.chip).got_ip = true;
    shared.emit(gen, b"WIFI GOT IP\r\n", 0);
    ok()
}

fn cipserver(shared: &Arc<Shared>, a: &[Arg]) -> Reply {
    let Some(mode) = a.first().and_then(Arg::int) else {
        return err(SUB_PARA_NUM);
    };
    if mode == 0 {
        let close_all = a.get(1).and_then(Arg::int) == Some(1);
        let victims: Vec<Arc<Link>> = {
            let mut c = lock(&shared.chip);
            if let Some(s) = c.server.take() {
                s.shut();
            }
            if close_all {
                let mut v = Vec::new();
                for slot in c.links.iter_mut() {
                    if slot.as_ref().is_some_and(|l| l.server) {
                        v.extend(slot.take());
                    }
                }
                v
            } else {
                Vec::new()
            }
        };
        for l in victims {
            close_link(shared, &l, CloseMode::Graceful);
            let msg = format!("{}CLOSED\r\n", net::prefix(shared, l.id));
            shared.emit(l.gen, msg.as_bytes(), 0);
        }
        return ok();
    }
    if mode != 1 || !shared.mux.load(Ordering::SeqCst) {
        return err(SUB_PARA_INVALID);
    }
    let port = match a.get(1) {
        None | Some(Arg::Empty) => 333,
        Some(Arg::Int(p)) if (1..=65535).contains(p) => *p as u16,
        _ => return err(SUB_PARA_INVALID),
    };
    match a.get(2) {
        None | Some(Arg::Empty) => {}
        Some(Arg::Str(t)) if t == "TCP" => {}
        _ => return err(SUB_EXEC_FAIL), // SSL servers: not emulated
    }
    let ip = {
        let c = lock(&shared.chip);
        if c.server.is_some() || !c.got_ip {
            return err(SUB_EXEC_FAIL);
        }
        c.sta_ip
    };
    match net::start_server(shared, SocketAddrV4::new(ip, port)) {
        Ok(s) => {
            lock(&shared.chip).server = Some(s);
            ok()
        }
        Err(_) => err(SUB_EXEC_FAIL),
    }
}

/// Split `AT+CIPSTART` parameters into the link id and the rest.
fn link_and_rest<'a>(shared: &Shared, a: &'a [Arg]) -> Option<(u8, &'a [Arg])> {
    if shared.mux.load(Ordering::SeqCst) {
        let id = a.first()?.int()?;
        if !(0..5).contains(&id) {
            return None;
        }
        Some((id as u8, &a[1..]))
    } else {
        Some((0, a))
    }
}

fn cipstart(shared: &Arc<Shared>, gen: u64, a: &[Arg]) -> Reply {
    let Some((id, rest)) = link_and_rest(shared, a) else {
        return err(SUB_PARA_INVALID);
    };
    let (Some(ty), Some(host), Some(rport)) = (
        rest.first().and_then(Arg::str),
        rest.get(1).and_then(Arg::str),
        rest.get(2).and_then(Arg::int),
    ) else {
        return err(SUB_PARA_INVALID);
    };
    if !(0..=65535).contains(&rport) {
        return err(SUB_PARA_INVALID);
    }
    let (sta_ip, in_use) = {
        let c = lock(&shared.chip);
        if !c.got_ip {
            return err(SUB_EXEC_FAIL);
        }
        (c.sta_ip, c.links[id as usize].is_some())
    };
    if in_use {
        return Reply::Error(vec![line("ALREADY CONNECTED")], SUB_EXEC_FAIL);
    }
    let (table, blackholes, connect_timeout) = {
        let w = lock(&shared.world);
        (w.dns.clone(), w.blackholes.clone(), w.connect_timeout)
    };
    let Some(rip) = net::resolve(&table, host) else {
        return err(SUB_EXEC_FAIL);
    };
    let remote = SocketAddrV4::new(rip, rport as u16);
    let mut go = None;
    let link = match ty {
        "TCP" | "SSL" => {
            if rport == 0 || rip.is_unspecified() {
                return err(SUB_PARA_INVALID);
            }
            if blackholes.contains(&rip) {
                nap(shared, gen, connect_timeout);
                return err(SUB_EXEC_FAIL);
            }
            let cancel = || shared.shutdown.load(Ordering::SeqCst) || shared.gen() != gen;
            match net::tcp_connect_from(
                SocketAddrV4::new(sta_ip, 0),
                remote,
                connect_timeout,
                cancel,
            ) {
                Ok(s) if ty == "TCP" => match Link::tcp(id, gen, false, s) {
                    Ok(l) => l,
                    Err(_) => return err(SUB_EXEC_FAIL),
                },
                Ok(s) => {
                    // The handshake runs while the command waits, as on the chip.
                    let started = ssl::params(shared, id, host).and_then(|p| {
                        let l = Link::ssl(id, gen, s).map_err(|e| e.to_string())?;
                        let g = ssl::start(shared, &l, p, connect_timeout)?;
                        Ok((l, g))
                    });
                    match started {
                        Ok((l, g)) => {
                            go = Some(g);
                            l
                        }
                        Err(why) => {
                            ssl::log(shared, format!("link {id} to {host}: {why}"));
                            return err(SUB_EXEC_FAIL);
                        }
                    }
                }
                Err(_) => return err(SUB_EXEC_FAIL),
            }
        }
        "UDP" => {
            let lport = match rest.get(3) {
                None | Some(Arg::Empty) => 0,
                Some(Arg::Int(p)) if (0..=65535).contains(p) => *p as u16,
                _ => return err(SUB_PARA_INVALID),
            };
            let mode = match rest.get(4) {
                None | Some(Arg::Empty) => 0,
                Some(Arg::Int(m)) if (0..=2).contains(m) => *m as u8,
                _ => return err(SUB_PARA_INVALID),
            };
            let Ok(u) = UdpSocket::bind(SocketAddrV4::new(sta_ip, lport)) else {
                return err(SUB_EXEC_FAIL);
            };
            if mode == 0 && !rip.is_unspecified() && rport != 0 && u.connect(remote).is_err() {
                return err(SUB_EXEC_FAIL);
            }
            if rip.is_broadcast() {
                let _ = u.set_broadcast(true);
            }
            match Link::udp(id, gen, u, remote, mode) {
                Ok(l) => l,
                Err(_) => return err(SUB_EXEC_FAIL),
            }
        }
        _ => return err(SUB_EXEC_FAIL), // "SSL" (and anything else): not emulated
    };
    let detailed = {
        let mut c = lock(&shared.chip);
        if shared.gen() != gen || c.links[id as usize].is_some() {
            return Reply::Error(vec![line("ALREADY CONNECTED")], SUB_EXEC_FAIL);
        }
        c.links[id as usize] = Some(link.clone());
        c.sysmsg & 2 != 0
    };
    let msg = if detailed {
        format!(
            "+LINK_CONN:0,{},\"{}\",0,\"{}\",{},{}",
            id,
            link.proto.name(),
            remote.ip(),
            remote.port(),
            link.local.port()
        )
    } else {
        format!("{}CONNECT", net::prefix(shared, id))
    };
    // The connect message and OK go out together; the link's threads start
    // after, so no +IPD can come before the CONNECT.
    send_reply(shared, gen, Reply::Ok(vec![line(msg)]));
    match go {
        Some(g) => g.start(),
        None => net::start_threads(shared, &link),
    }
    Reply::Done
}

fn get_link(shared: &Shared, id: i64) -> Option<Arc<Link>> {
    if !(0..5).contains(&id) {
        return None;
    }
    lock(&shared.chip).links[id as usize].clone()
}

fn cipsend(shared: &Arc<Shared>, rx: &mpsc::Receiver<Job>, gen: u64, a: &[Arg]) -> Reply {
    let mux = shared.mux.load(Ordering::SeqCst);
    let (id, rest) = if mux {
        match a.first().and_then(Arg::int) {
            Some(id) => (id, &a[1..]),
            None => return err(SUB_PARA_NUM),
        }
    } else {
        (0, a)
    };
    let Some(len) = rest.first().and_then(Arg::int) else {
        return err(SUB_PARA_NUM);
    };
    if !(1..=8192).contains(&len) {
        return err(SUB_PARA_INVALID);
    }
    let len = len as usize;
    let Some(link) = get_link(shared, id) else {
        return err(SUB_EXEC_FAIL);
    };
    let dest = match (rest.get(1), rest.get(2)) {
        (None, None) => None,
        (Some(Arg::Str(h)), Some(Arg::Int(p)))
            if link.proto == Proto::Udp && (1..=65535).contains(p) =>
        {
            let table = lock(&shared.world).dns.clone();
            match net::resolve(&table, h) {
                Some(ip) => Some(SocketAddrV4::new(ip, *p as u16)),
                None => return err(SUB_EXEC_FAIL),
            }
        }
        _ => return err(SUB_PARA_INVALID),
    };
    {
        let st = lock(&link.st);
        if st.closed || st.close.is_some() {
            return err(SUB_EXEC_FAIL);
        }
        if link.proto == Proto::Udp
            && dest.is_none()
            && (st.remote.port() == 0 || st.remote.ip().is_unspecified())
        {
            return err(SUB_EXEC_FAIL);
        }
    }
    uart::expect_data(shared, len);
    shared.reply_partial(
        gen,
        vec![
            Seg::text(b"\r\nOK\r\n".to_vec()),
            Seg::text(b"\r\n>".to_vec()),
        ],
    );
    // Wait for the data (the input side collects exactly `len` bytes).
    let end = Instant::now() + Duration::from_secs(30);
    let data = loop {
        if shared.shutdown.load(Ordering::SeqCst) || shared.gen() != gen {
            return Reply::Done;
        }
        if Instant::now() >= end {
            // The host never sent the data: back to commands.
            uart::command_mode(shared);
            shared.executing.store(false, Ordering::SeqCst);
            return Reply::Done;
        }
        match rx.recv_timeout(net::TICK) {
            Ok(Job::Data(d)) => break d,
            Ok(Job::Command(_)) => {}
            Err(_) => {}
        }
    };
    shared.sending.store(true, Ordering::SeqCst);
    let recv = format!("\r\nRecv {} bytes\r\n", data.len());
    let result: &[u8] = match link.proto {
        Proto::Udp => {
            let to = dest.unwrap_or_else(|| lock(&link.st).remote);
            let sent = link
                .udp
                .as_ref()
                .map(|u| {
                    if dest.is_some() || lock(&link.st).udp_mode != 0 {
                        u.send_to(&data, to)
                    } else {
                        u.send(&data).or_else(|_| u.send_to(&data, to))
                    }
                })
                .is_some_and(|r| r.is_ok_and(|n| n == data.len()));
            if sent {
                b"\r\nSEND OK\r\n"
            } else {
                b"\r\nSEND FAIL\r\n"
            }
        }
        Proto::Tcp | Proto::Ssl => {
            let (wait, cap) = {
                let w = lock(&shared.world);
                (w.send_wait, w.send_buffer)
            };
            let end = Instant::now() + wait;
            let mut st = lock(&link.st);
            loop {
                if st.closed || st.close.is_some() {
                    break b"\r\nSEND FAIL\r\n";
                }
                if st.tx.len() + data.len() <= cap.max(data.len()) {
                    st.tx.extend(data.iter().copied());
                    link.cv.notify_all();
                    break b"\r\nSEND OK\r\n";
                }
                let now = Instant::now();
                if now >= end || shared.gen() != gen || shared.shutdown.load(Ordering::SeqCst) {
                    break b"\r\nSEND FAIL\r\n";
                }
                st = link
                    .cv
                    .wait_timeout(st, (end - now).min(net::TICK))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    };
    shared.reply(
        gen,
        vec![Seg::text(recv.into_bytes()), Seg::text(result.to_vec())],
    );
    Reply::Done
}

fn ciprecvdata(shared: &Arc<Shared>, gen: u64, a: &[Arg]) -> Reply {
    if !shared.passive.load(Ordering::SeqCst) {
        return err(SUB_EXEC_FAIL);
    }
    let mux = shared.mux.load(Ordering::SeqCst);
    let (id, len) = if mux {
        (a.first().and_then(Arg::int), a.get(1).and_then(Arg::int))
    } else {
        (Some(0), a.first().and_then(Arg::int))
    };
    let (Some(id), Some(len)) = (id, len) else {
        return err(SUB_PARA_NUM);
    };
    if !(1..=0x7fff_ffff).contains(&len) {
        return err(SUB_PARA_INVALID);
    }
    let Some(link) = get_link(shared, id) else {
        return err(SUB_EXEC_FAIL);
    };
    let (data, from) = {
        let mut st = lock(&link.st);
        let remote = st.remote;
        let r = match link.proto {
            Proto::Tcp | Proto::Ssl => {
                let n = st.rx.len().min(len as usize);
                let mut left = n;
                while left > 0 {
                    let Some((plain, _)) = st.records.front_mut() else {
                        break;
                    };
                    let k = left.min(*plain);
                    *plain -= k;
                    left -= k;
                    if *plain == 0 {
                        st.records.pop_front();
                    }
                }
                (st.rx.drain(..n).collect::<Vec<u8>>(), remote)
            }
            Proto::Udp => match st.dgrams.pop_front() {
                Some((from, mut d)) => {
                    st.dgram_bytes -= d.len();
                    d.truncate(len as usize);
                    (d, from)
                }
                None => (Vec::new(), remote),
            },
        };
        st.ipd_reported = false;
        link.cv.notify_all();
        r
    };
    if data.is_empty() {
        return err(SUB_EXEC_FAIL);
    }
    let mut seg = format!("+CIPRECVDATA:{},", data.len()).into_bytes();
    if shared.dinfo.load(Ordering::SeqCst) {
        seg.extend_from_slice(format!("\"{}\",{},", from.ip(), from.port()).as_bytes());
    }
    seg.extend_from_slice(&data);
    let n = data.len();
    shared.reply(
        gen,
        vec![
            Seg {
                bytes: seg,
                payload: n,
            },
            Seg::text(b"\r\nOK\r\n".to_vec()),
        ],
    );
    net::after_read(shared, &link);
    Reply::Done
}

/// Take `link` off the chip: the writer flushes (graceful) or resets (abort).
fn close_link(_shared: &Shared, link: &Arc<Link>, mode: CloseMode) {
    let mut st = lock(&link.st);
    st.closed = true;
    if st.close.is_none() {
        st.close = Some(mode);
    }
    if mode == CloseMode::Abort {
        st.close = Some(CloseMode::Abort);
        st.tx.clear();
    }
    link.cv.notify_all();
    if link.proto.stream() && mode == CloseMode::Abort {
        if let Some(s) = &link.tcp {
            net::abort(s);
        }
    }
    drop(st);
    if link.proto == Proto::Udp {
        // The port must be free when CIPCLOSE answers (a bind may follow):
        // the caller's handle must be the last (it drops it right after).
        link.wait_released(Duration::from_secs(1));
    }
}

fn cipclose(shared: &Arc<Shared>, id: i64) -> Reply {
    let victims: Vec<Arc<Link>> = {
        let mut c = lock(&shared.chip);
        if id == 5 {
            c.links.iter_mut().filter_map(|l| l.take()).collect()
        } else if (0..5).contains(&id) {
            match c.links[id as usize].take() {
                Some(l) => vec![l],
                None => return err(SUB_EXEC_FAIL),
            }
        } else {
            return err(SUB_PARA_INVALID);
        }
    };
    let mut segs = Vec::new();
    for l in victims {
        let mode = if lock(&l.st).linger == 0 {
            CloseMode::Abort
        } else {
            CloseMode::Graceful
        };
        close_link(shared, &l, mode);
        segs.push(line(format!("{}CLOSED", net::prefix(shared, l.id))));
    }
    Reply::Ok(segs)
}

/// The station lost its AP (or left it): `WIFI DISCONNECT`, links reset
/// and reported `CLOSED`, server deleted.
pub(crate) fn wifi_lost(shared: &Arc<Shared>) {
    let gen = shared.gen();
    let was = {
        let mut c = lock(&shared.chip);
        let was = c.wifi;
        c.wifi = false;
        c.got_ip = false;
        was
    };
    if was {
        shared.emit(gen, b"WIFI DISCONNECT\r\n", 0);
    }
    let (links, server) = {
        let mut c = lock(&shared.chip);
        let links: Vec<Arc<Link>> = c.links.iter_mut().filter_map(|l| l.take()).collect();
        (links, c.server.take())
    };
    if let Some(s) = server {
        s.shut();
    }
    for l in links {
        close_link(shared, &l, CloseMode::Abort);
        let msg = format!("{}CLOSED\r\n", net::prefix(shared, l.id));
        shared.emit(gen, msg.as_bytes(), 0);
    }
}

/// Close every link and the server without a word (reset, shutdown).
pub(crate) fn close_everything(shared: &Shared, abort_all: bool) {
    let (links, server) = {
        let mut c = lock(&shared.chip);
        let links: Vec<Arc<Link>> = c.links.iter_mut().filter_map(|l| l.take()).collect();
        (links, c.server.take())
    };
    if let Some(s) = server {
        s.shut();
    }
    for l in links {
        close_link(
            shared,
            &l,
            if abort_all {
                CloseMode::Abort
            } else {
                CloseMode::Graceful
            },
        );
    }
}

/// Reset the chip: everything lost, defaults back, then boot noise and
/// `ready` after the boot time.
pub(crate) fn reset(shared: &Arc<Shared>) {
    let gen = {
        let _out = lock(&shared.out);
        shared.gen.fetch_add(1, Ordering::SeqCst) + 1
    };
    {
        let mut k = lock(&shared.knobs);
        k.held.clear();
        k.inject_next.clear();
        k.truncate_next = None;
        k.garble_next = false;
    }
    close_everything(shared, true);
    lock(&shared.ssl).on_reset();
    uart::command_mode(shared);
    {
        let w = lock(&shared.world);
        let mut c = lock(&shared.chip);
        *c = Chip::new(&w);
    }
    shared.passive.store(false, Ordering::SeqCst);
    shared.dinfo.store(false, Ordering::SeqCst);
    shared.mux.store(false, Ordering::SeqCst);
    shared.executing.store(false, Ordering::SeqCst);
    shared.sending.store(false, Ordering::SeqCst);
    let boot = lock(&shared.world).boot_time;
    boot_output(shared, gen, boot);
}

/// Boot noise (the ROM prints at another baud rate) and `ready`, `after`
/// from now (at once, before returning, when `after` is zero).
pub(crate) fn boot_output(shared: &Arc<Shared>, gen: u64, after: Duration) {
    fn banner(s: &Shared, gen: u64) {
        s.emit(
            gen,
            b"\xf8\x1e\x80\xfe\x00\x7f ets Jan  8 2013,rst cause:2\r\n\xe0\x0c\xfc\r\n",
            0,
        );
        s.emit(gen, b"\r\nready\r\n", 0);
    }
    if after.is_zero() {
        banner(shared, gen);
        return;
    }
    let s = shared.clone();
    let _ = std::thread::Builder::new()
        .name("espat-boot".into())
        .spawn(move || {
            if nap(&s, gen, after) {
                banner(&s, gen);
            }
        });
}
