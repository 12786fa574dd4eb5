//! [`PcapLink`]: middleware that records every frame in a pcap file.
//!
//! Wrap any [`Link`] and every frame it transmits or receives is written to
//! a [`std::io::Write`] in the classic libpcap format (magic `0xa1b2c3d4` in
//! native byte order, version 2.4, snaplen 65535, link type 1 = Ethernet,
//! microsecond timestamps from [`SystemTime`]), readable by Wireshark and
//! tcpdump. Classic pcap has no direction field: sent and received frames
//! are interleaved in the order the link saw them.
//!
//! Only frames that really went through are recorded: a transmit the link
//! refused, or a receive that failed, leaves no record.
//!
//! The encoding is done here rather than with smoltcp's `PcapSink`: that
//! trait needs the `full-stack` feature (this module only needs `std`), its
//! `std::io::Write` implementation panics on write errors, and it uses a
//! 256 KiB snaplen. A failed write here never breaks the link: it is counted
//! in [`PcapStats::errors`], and since a partly written record would make
//! the rest of the file unreadable, recording stops after the first error
//! (later frames are counted in [`PcapStats::missed`]).
//!
//! Each record is flushed as soon as it is written, so a process that is
//! killed still leaves a readable file.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Link, LinkError};

/// Classic pcap magic number (microsecond timestamps).
pub const PCAP_MAGIC: u32 = 0xa1b2_c3d4;
/// Largest number of bytes recorded per frame.
pub const PCAP_SNAPLEN: u32 = 65535;
/// Link type of the records: Ethernet.
pub const PCAP_LINKTYPE_ETHERNET: u32 = 1;

/// Length of the global header.
const GLOBAL_HEADER_LEN: usize = 24;
/// Length of a record header.
const RECORD_HEADER_LEN: usize = 16;

/// Counters of a [`PcapLink`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PcapStats {
    /// Records written.
    pub records: u64,
    /// Bytes written, headers included.
    pub bytes: u64,
    /// Write or flush errors.
    pub errors: u64,
    /// Frames not recorded because an earlier write failed.
    pub missed: u64,
}

/// A [`Link`] wrapper that writes every frame to `W` as pcap.
pub struct PcapLink<L: Link, W: Write> {
    inner: L,
    sink: W,
    stats: PcapStats,
    failed: bool,
}

impl<L: Link, W: Write> core::fmt::Debug for PcapLink<L, W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PcapLink")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<L: Link> PcapLink<L, BufWriter<File>> {
    /// Record to a new file at `path` (truncating an existing one), through
    /// a `BufWriter` flushed after every record.
    pub fn create(link: L, path: impl AsRef<Path>) -> io::Result<Self> {
        let file = File::create(path)?;
        let mut this = PcapLink {
            inner: link,
            sink: BufWriter::new(file),
            stats: PcapStats::default(),
            failed: false,
        };
        // Unlike `new`, report a failure to write the header: the caller
        // asked for a file and can do something about it.
        this.sink.write_all(&global_header())?;
        this.sink.flush()?;
        this.stats.bytes = GLOBAL_HEADER_LEN as u64;
        Ok(this)
    }
}

impl<L: Link, W: Write> PcapLink<L, W> {
    /// Wrap `link`, recording to `sink`. The pcap global header is written
    /// at once (a failure is counted, not returned).
    pub fn new(link: L, sink: W) -> Self {
        let mut this = PcapLink {
            inner: link,
            sink,
            stats: PcapStats::default(),
            failed: false,
        };
        let header = global_header();
        this.write(&[&header[..]]);
        this
    }

    /// Counters.
    pub fn stats(&self) -> PcapStats {
        self.stats
    }

    /// The wrapped link.
    pub fn inner(&self) -> &L {
        &self.inner
    }

    /// The wrapped link, mutably.
    pub fn inner_mut(&mut self) -> &mut L {
        &mut self.inner
    }

    /// The sink.
    pub fn sink(&self) -> &W {
        &self.sink
    }

    /// Unwrap into the link and the sink.
    pub fn into_parts(self) -> (L, W) {
        (self.inner, self.sink)
    }

    /// Record one frame now (timestamped with the current time).
    fn record(&mut self, frame: &[u8]) {
        if self.failed {
            self.stats.missed += 1;
            return;
        }
        let captured = frame.len().min(PCAP_SNAPLEN as usize);
        let header = record_header(SystemTime::now(), captured, frame.len());
        if self.write(&[&header[..], &frame[..captured]]) {
            self.stats.records += 1;
        }
    }

    /// Write `parts` and flush; on failure count it and stop recording.
    fn write(&mut self, parts: &[&[u8]]) -> bool {
        let r = parts
            .iter()
            .try_for_each(|p| self.sink.write_all(p))
            .and_then(|()| self.sink.flush());
        match r {
            Ok(()) => {
                self.stats.bytes += parts.iter().map(|p| p.len() as u64).sum::<u64>();
                true
            }
            Err(_) => {
                self.stats.errors += 1;
                self.failed = true;
                false
            }
        }
    }
}

/// The 24-byte pcap global header.
fn global_header() -> [u8; GLOBAL_HEADER_LEN] {
    let mut h = [0u8; GLOBAL_HEADER_LEN];
    h[0..4].copy_from_slice(&PCAP_MAGIC.to_ne_bytes());
    h[4..6].copy_from_slice(&2u16.to_ne_bytes()); // version major
    h[6..8].copy_from_slice(&4u16.to_ne_bytes()); // version minor
                                                  // 8..12 thiszone = 0 (UTC), 12..16 sigfigs = 0
    h[16..20].copy_from_slice(&PCAP_SNAPLEN.to_ne_bytes());
    h[20..24].copy_from_slice(&PCAP_LINKTYPE_ETHERNET.to_ne_bytes());
    h
}

/// The 16-byte header of one record.
fn record_header(at: SystemTime, captured: usize, original: usize) -> [u8; RECORD_HEADER_LEN] {
    let t = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut h = [0u8; RECORD_HEADER_LEN];
    // Seconds wrap in 2106, as in every classic pcap file.
    h[0..4].copy_from_slice(&(t.as_secs() as u32).to_ne_bytes());
    h[4..8].copy_from_slice(&t.subsec_micros().to_ne_bytes());
    h[8..12].copy_from_slice(&(captured as u32).to_ne_bytes());
    h[12..16].copy_from_slice(&(original.min(u32::MAX as usize) as u32).to_ne_bytes());
    h
}

impl<L: Link, W: Write> Link for PcapLink<L, W> {
    fn hardware_addr(&self) -> [u8; 6] {
        self.inner.hardware_addr()
    }

    fn max_frame_len(&self) -> usize {
        self.inner.max_frame_len()
    }

    fn link_up(&mut self) -> bool {
        self.inner.link_up()
    }

    fn transmit(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        self.inner.transmit(frame)?;
        self.record(frame);
        Ok(())
    }

    fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
        let r = self.inner.receive(buf)?;
        if let Some(n) = r {
            self.record(&buf[..n.min(buf.len())]);
        }
        Ok(r)
    }

    fn rx_signal(&self) -> Option<std::sync::Arc<dyn super::RxSignal>> {
        self.inner.rx_signal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phy::memory::MemoryLink;
    use crate::phy::MAX_FRAME_LEN;
    use std::format;
    use std::vec;
    use std::vec::Vec;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
    }

    /// Parse a pcap file: check the global header, return each record's
    /// (seconds, micros, data).
    fn parse(file: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
        assert!(file.len() >= 24);
        assert_eq!(u32_at(file, 0), 0xa1b2c3d4);
        assert_eq!(u16::from_ne_bytes([file[4], file[5]]), 2);
        assert_eq!(u16::from_ne_bytes([file[6], file[7]]), 4);
        assert_eq!(u32_at(file, 8), 0);
        assert_eq!(u32_at(file, 12), 0);
        assert_eq!(u32_at(file, 16), 65535);
        assert_eq!(u32_at(file, 20), 1);
        let mut at = 24;
        let mut out = Vec::new();
        while at < file.len() {
            let (secs, micros) = (u32_at(file, at), u32_at(file, at + 4));
            let (incl, orig) = (
                u32_at(file, at + 8) as usize,
                u32_at(file, at + 12) as usize,
            );
            assert_eq!(incl, orig);
            assert!(micros < 1_000_000);
            at += 16;
            out.push((secs, micros, file[at..at + incl].to_vec()));
            at += incl;
        }
        assert_eq!(at, file.len(), "no trailing bytes");
        out
    }

    fn frame(dst: [u8; 6], len: usize, tag: u8) -> Vec<u8> {
        let mut f = vec![tag; len];
        f[..6].copy_from_slice(&dst);
        f
    }

    #[test]
    fn records_both_directions() {
        let (a, mut b) = MemoryLink::pair();
        let mut link = PcapLink::new(a, Vec::new());
        let (mac_a, mac_b) = (link.hardware_addr(), b.hardware_addr());
        assert_eq!(mac_a, [2, 0, 0, 0, 0, 1]);

        link.transmit(&frame(mac_b, 60, 1)).unwrap();
        b.transmit(&frame(mac_a, 1514, 2)).unwrap();
        let mut buf = [0u8; MAX_FRAME_LEN];
        assert_eq!(link.receive(&mut buf).unwrap(), Some(1514));
        assert_eq!(link.receive(&mut buf).unwrap(), None);
        link.inner().set_link_up(false);
        assert!(link.transmit(&frame(mac_b, 60, 3)).is_err());

        let stats = link.stats();
        assert_eq!((stats.records, stats.errors, stats.missed), (2, 0, 0));
        let (_, file) = link.into_parts();
        assert_eq!(stats.bytes, file.len() as u64);
        let recs = parse(&file);
        assert_eq!(recs.len(), 2, "the refused frame is not recorded");
        assert_eq!(recs[0].2, frame(mac_b, 60, 1));
        assert_eq!(recs[1].2, frame(mac_a, 1514, 2));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as u32;
        assert!(recs.iter().all(|r| r.0 <= now && r.0 + 60 > now));
        assert!((recs[0].0, recs[0].1) <= (recs[1].0, recs[1].1));
    }

    #[test]
    fn create_writes_a_file_flushed_per_record() {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("netdever-pcap-test-{}.pcap", std::process::id()));
        let (a, b) = MemoryLink::pair();
        let mut link = PcapLink::create(a, &path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len(), 24);
        link.transmit(&frame(b.hardware_addr(), 100, 7)).unwrap();
        // Readable while the link (and its BufWriter) is still alive.
        let recs = parse(&std::fs::read(&path).unwrap());
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].2.len(), 100);
        drop(link);
        std::fs::remove_file(&path).unwrap();
    }

    /// Fails every write after the first `ok` bytes.
    struct Flaky {
        ok: usize,
        data: Vec<u8>,
    }

    impl Write for Flaky {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.data.len() + buf.len() > self.ok {
                return Err(io::Error::other("disk full"));
            }
            self.data.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_errors_are_counted_not_fatal() {
        let (a, mut b) = MemoryLink::pair();
        let sink = Flaky {
            ok: 24 + 16 + 60,
            data: Vec::new(),
        };
        let mut link = PcapLink::new(a, sink);
        let mac_b = b.hardware_addr();
        for i in 0..4 {
            link.transmit(&frame(mac_b, 60, i)).unwrap();
        }
        let mut buf = [0u8; MAX_FRAME_LEN];
        for i in 0..4 {
            assert_eq!(b.receive(&mut buf).unwrap(), Some(60), "frame {i}");
        }
        let s = link.stats();
        assert_eq!((s.records, s.errors, s.missed), (1, 1, 2));
        assert_eq!(parse(&link.sink().data).len(), 1, "file still readable");
    }
}
