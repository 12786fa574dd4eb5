//! The UART: the driver's end ([`EspAtSerial`]) and the firmware's input
//! side (line assembly, `AT+CIPSEND` data, echo, `busy p...`).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{lock, Job, Shared};

/// What the firmware's input side is collecting.
#[derive(Debug, Default)]
pub(crate) enum InMode {
    /// Command lines.
    #[default]
    Command,
    /// `remaining` more bytes of `AT+CIPSEND` data.
    Data { remaining: usize, buf: Vec<u8> },
}

/// Bytes from the driver and the line being assembled.
#[derive(Default)]
pub(crate) struct InState {
    pub buf: VecDeque<u8>,
    pub mode: InMode,
    pub line: Vec<u8>,
    pub overflow: bool,
}

/// Longest command line the firmware accepts.
const LINE_MAX: usize = 512;

/// The firmware's input thread: turns driver bytes into jobs.
pub(crate) fn input_thread(shared: Arc<Shared>) {
    loop {
        let mut st = lock(&shared.inp);
        while st.buf.is_empty() {
            if shared.shutdown.load(Ordering::SeqCst) {
                return;
            }
            st = shared
                .inp_cv
                .wait_timeout(st, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let bytes: Vec<u8> = st.buf.drain(..).collect();
        let mut i = 0;
        while i < bytes.len() {
            let take_data = match &mut st.mode {
                InMode::Data { remaining, buf } => {
                    let n = (*remaining).min(bytes.len() - i);
                    buf.extend_from_slice(&bytes[i..i + n]);
                    *remaining -= n;
                    i += n;
                    *remaining == 0
                }
                InMode::Command => {
                    let b = bytes[i];
                    i += 1;
                    if b == b'\n' {
                        let mut line = std::mem::take(&mut st.line);
                        let overflow = std::mem::replace(&mut st.overflow, false);
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                        command_line(&shared, line, overflow);
                    } else if st.line.len() < LINE_MAX {
                        st.line.push(b);
                    } else {
                        st.overflow = true;
                    }
                    false
                }
            };
            if take_data {
                if let InMode::Data { buf, .. } = std::mem::take(&mut st.mode) {
                    shared.bus.transaction(0);
                    shared.bus.payload(buf.len());
                    if let Some(tx) = lock(&shared.jobs).as_ref() {
                        let _ = tx.send(Job::Data(buf));
                    }
                }
            }
        }
    }
}

/// A complete line from the driver: echo it, reject it when busy, or hand
/// it to the executor.
fn command_line(shared: &Shared, line: Vec<u8>, overflow: bool) {
    let gen = shared.gen();
    let trimmed_empty = line.iter().all(|b| b.is_ascii_whitespace());
    if trimmed_empty && !overflow {
        return;
    }
    shared.log_command(&line);
    shared.bus.transaction(0);
    let echo = lock(&shared.chip).echo;
    if echo {
        let mut e = line.clone();
        e.extend_from_slice(b"\r\n");
        shared.emit(gen, &e, 0);
    }
    let forced_busy = {
        let mut k = lock(&shared.knobs);
        if k.busy_next > 0 {
            k.busy_next -= 1;
            true
        } else {
            false
        }
    };
    if forced_busy || shared.executing.load(Ordering::SeqCst) {
        let msg: &[u8] = if shared.sending.load(Ordering::SeqCst) {
            b"busy s...\r\n"
        } else {
            b"busy p...\r\n"
        };
        shared.emit(gen, msg, 0);
        return;
    }
    if overflow {
        shared.emit(gen, b"\r\nERROR\r\n", 0);
        return;
    }
    shared.executing.store(true, Ordering::SeqCst);
    let sent = lock(&shared.jobs)
        .as_ref()
        .map(|tx| tx.send(Job::Command(line)).is_ok())
        .unwrap_or(false);
    if !sent {
        shared.executing.store(false, Ordering::SeqCst);
    }
}

/// Switch the input side to collect `n` bytes of `AT+CIPSEND` data.
pub(crate) fn expect_data(shared: &Shared, n: usize) {
    let mut st = lock(&shared.inp);
    st.mode = InMode::Data {
        remaining: n,
        buf: Vec::with_capacity(n),
    };
}

/// Back to command lines (a reset or an abandoned send).
pub(crate) fn command_mode(shared: &Shared) {
    let mut st = lock(&shared.inp);
    st.mode = InMode::Command;
    st.line.clear();
    st.overflow = false;
}

/// The driver's end of the UART: `embedded_io::Read + Write + ReadReady`.
///
/// Reads block until the chip has sent something and return at most the
/// configured chunk ([`EspAtEmu::set_max_read`](super::EspAtEmu::set_max_read)),
/// so tests can split the stream anywhere. After the emulator is dropped,
/// reads return end of file and writes fail.
pub struct EspAtSerial {
    shared: Arc<Shared>,
}

impl EspAtSerial {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        EspAtSerial { shared }
    }
}

impl core::fmt::Debug for EspAtSerial {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("EspAtSerial")
    }
}

impl embedded_io::ErrorType for EspAtSerial {
    type Error = embedded_io::ErrorKind;
}

impl embedded_io::Read for EspAtSerial {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut out = lock(&self.shared.out);
        loop {
            if !out.is_empty() {
                let max = self.shared.max_read.load(Ordering::SeqCst).max(1);
                let n = out.len().min(buf.len()).min(max);
                for (d, s) in buf.iter_mut().zip(out.drain(..n)) {
                    *d = s;
                }
                return Ok(n);
            }
            if self.shared.shutdown.load(Ordering::SeqCst) {
                return Ok(0);
            }
            out = self
                .shared
                .out_cv
                .wait_timeout(out, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl embedded_io::ReadReady for EspAtSerial {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(!lock(&self.shared.out).is_empty() || self.shared.shutdown.load(Ordering::SeqCst))
    }
}

impl embedded_io::Write for EspAtSerial {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        if self.shared.shutdown.load(Ordering::SeqCst) {
            return Err(embedded_io::ErrorKind::BrokenPipe);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        {
            let mut st = lock(&self.shared.inp);
            self.shared.bus.bytes(buf.len());
            st.buf.extend(buf.iter().copied());
            self.shared.inp_cv.notify_all();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}
