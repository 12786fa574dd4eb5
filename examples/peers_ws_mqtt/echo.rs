//! A TCP echo server with a thread per connection: the simulated peer of
//! `snake` (TinyGo's `snake/server`, `io.Copy(c, c)`).

use std::thread::{Scope, ScopedJoinHandle};
use std::time::Duration;

use netdever::Error;

use super::{listen, serve, Dev, Served, StopWhen, Stream, TICK};

/// Echo everything `stream` receives until the peer closes its side (or
/// `stopped()`).
pub fn echo_stream(stream: &Stream<'_>, stopped: &dyn Fn() -> bool) -> Result<u64, String> {
    stream
        .set_read_timeout(Some(TICK))
        .map_err(|e| format!("set_read_timeout: {e}"))?;
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| format!("set_write_timeout: {e}"))?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                stream
                    .write_all(&buf[..n])
                    .map_err(|e| format!("echo after {total} bytes: {e}"))?;
                total += n as u64;
            }
            Err(Error::Timeout) if !stopped() => {}
            Err(Error::Timeout) => return Ok(total),
            Err(e) => return Err(format!("recv after {total} bytes: {e}")),
        }
    }
}

/// An echo server on `port` of `dev` with room for `backlog` pending
/// connections.
pub fn start<'scope, 'env, 'd: 'env>(
    scope: &'scope Scope<'scope, 'env>,
    dev: Dev<'d>,
    port: u16,
    backlog: usize,
    stop: StopWhen<'env>,
) -> Result<ScopedJoinHandle<'scope, Served>, String> {
    let l = listen(dev, port, backlog)?;
    Ok(serve(scope, dev, l, stop, |stream, _peer, stopped| {
        echo_stream(&stream, stopped).map(|_| ())
    }))
}
