//! Servers the simulated peer runs for the client examples.

use std::net::{Ipv4Addr, SocketAddr};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Duration;

use netdever::{AddressFamily, MsgFlags, Netdever, Protocol, SockType};

use super::pattern::Pattern;
use super::within;

/// A TCP sink: listen on `port` now, then (on a thread of `scope`) accept
/// one connection, read it to the end while checking every byte against
/// pattern `seed`, and return how many bytes came. Everything is bounded by
/// `limit`.
pub fn tcp_sink<'scope, 'env>(
    scope: &'scope Scope<'scope, 'env>,
    dev: &'env dyn Netdever,
    port: u16,
    seed: u64,
    limit: Duration,
) -> Result<ScopedJoinHandle<'scope, Result<u64, String>>, String> {
    fn e(what: &'static str) -> impl Fn(netdever::Error) -> String {
        move |err| format!("peer: {what}: {err}")
    }
    let l = dev
        .socket(AddressFamily::Inet, SockType::Stream, Protocol::Tcp)
        .map_err(e("socket"))?;
    let bind = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    if let Err(err) = dev.bind(l, bind).and_then(|_| dev.listen(l, 1)) {
        let _ = dev.close(l);
        return Err(format!("peer: listening on port {port}: {err}"));
    }
    Ok(scope.spawn(move || {
        let deadline = within(dev, limit);
        let accepted = dev.accept(l, deadline);
        let _ = dev.close(l);
        let (c, _) = accepted.map_err(e("accept"))?;
        let pat = Pattern::new(seed, 64 * 1024);
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        let r = loop {
            match dev.recv(c, &mut buf, MsgFlags::NONE, deadline) {
                Ok(0) => break Ok(total),
                Ok(n) => {
                    if !pat.check(total, &buf[..n]) {
                        break Err(format!("peer: wrong data at offset {total}"));
                    }
                    total += n as u64;
                }
                Err(err) => break Err(format!("peer: recv after {total} bytes: {err}")),
            }
        };
        let _ = dev.close(c);
        r
    }))
}
