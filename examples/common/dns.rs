//! A minimal DNS responder: answers `A` queries from a fixed table, and
//! NXDOMAIN for everything else. The simulated peer runs it so examples can
//! use names (`peer.sim.test`); tests run it on a host UDP socket.

use std::net::Ipv4Addr;

/// Answer one DNS query with `lookup(name)`. `None` if `query` is not a
/// well-formed single-question query (it is then ignored).
pub fn answer(query: &[u8], lookup: &dyn Fn(&str) -> Option<Ipv4Addr>) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None; // too short, or a response
    }
    let qdcount = u16::from_be_bytes([query[4], query[5]]);
    if qdcount != 1 {
        return None;
    }
    // The question: labels, then type and class.
    let mut i = 12;
    let mut labels: Vec<String> = Vec::new();
    loop {
        let len = *query.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None; // compression is not used in questions
        }
        labels.push(String::from_utf8_lossy(query.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
    let qclass = u16::from_be_bytes([*query.get(i + 2)?, *query.get(i + 3)?]);
    let question_end = i + 4;
    let name = labels.join(".");
    let addr = if qclass == 1 { lookup(&name) } else { None };

    let mut r = Vec::with_capacity(question_end + 16);
    r.extend_from_slice(&query[..2]); // id
    let rd = query[2] & 0x01;
    r.push(0x84 | rd); // response, authoritative, RD copied
    let rcode = if addr.is_some() { 0 } else { 3 }; // NXDOMAIN
    r.push(0x80 | rcode); // RA
    r.extend_from_slice(&1u16.to_be_bytes()); // qdcount
    let answers: u16 = if addr.is_some() && qtype == 1 { 1 } else { 0 };
    r.extend_from_slice(&answers.to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]); // ns, ar
    r.extend_from_slice(&query[12..question_end]);
    if let (Some(a), 1) = (addr, answers) {
        r.extend_from_slice(&[0xc0, 12]); // pointer to the question's name
        r.extend_from_slice(&1u16.to_be_bytes()); // A
        r.extend_from_slice(&1u16.to_be_bytes()); // IN
        r.extend_from_slice(&60u32.to_be_bytes()); // TTL
        r.extend_from_slice(&4u16.to_be_bytes());
        r.extend_from_slice(&a.octets());
    }
    Some(r)
}

/// A lookup that maps `name` and every name under `suffix` to `addr`.
pub fn zone(suffix: &'static str, addr: Ipv4Addr) -> impl Fn(&str) -> Option<Ipv4Addr> {
    move |name: &str| (name == suffix || name.ends_with(&format!(".{suffix}"))).then_some(addr)
}

/// Build an `A` query for `name` with id `id` (for tests).
pub fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_a_and_nxdomain() {
        let look = zone("sim.test", Ipv4Addr::new(10, 0, 0, 2));
        let a = answer(&query(7, "Peer.Sim.Test"), &look).unwrap();
        assert_eq!(&a[..2], &7u16.to_be_bytes());
        assert_eq!(a[3] & 0x0f, 0);
        assert_eq!(&a[a.len() - 4..], &[10, 0, 0, 2]);
        let n = answer(&query(8, "example.com"), &look).unwrap();
        assert_eq!(n[3] & 0x0f, 3);
        assert!(answer(&a, &look).is_none(), "responses are ignored");
    }
}
