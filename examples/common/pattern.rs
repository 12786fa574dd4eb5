//! A deterministic byte stream, so a receiver can check every byte without
//! keeping a copy: byte `i` of stream `seed` is `(i + seed) % 251`.
//! (251 is prime, so the pattern does not line up with any buffer size.)

/// Period of the pattern.
const PERIOD: usize = 251;

/// A precomputed slice of the pattern, `chunk + PERIOD` long, from which any
/// `chunk`-sized window can be borrowed without copying.
pub struct Pattern {
    bytes: Vec<u8>,
    seed: u64,
    chunk: usize,
}

impl Pattern {
    /// A pattern for windows of up to `chunk` bytes.
    pub fn new(seed: u64, chunk: usize) -> Self {
        let bytes = (0..chunk + PERIOD).map(|i| (i % PERIOD) as u8).collect();
        Pattern { bytes, seed, chunk }
    }

    /// The `len` bytes (at most `chunk`) that start at stream offset `off`.
    pub fn at(&self, off: u64, len: usize) -> &[u8] {
        let start = ((off + self.seed) % PERIOD as u64) as usize;
        &self.bytes[start..start + len.min(self.chunk)]
    }

    /// The largest window [`at`](Self::at) hands out.
    pub fn chunk(&self) -> usize {
        self.chunk
    }

    /// Whether `data` is what the stream holds at offset `off`. `data` may be
    /// longer than `chunk`; it is checked piece by piece.
    pub fn check(&self, mut off: u64, data: &[u8]) -> bool {
        for piece in data.chunks(self.chunk) {
            if piece != self.at(off, piece.len()) {
                return false;
            }
            off += piece.len() as u64;
        }
        true
    }
}
